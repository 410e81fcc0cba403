// The pages' routes from location.pathname (no router library): '/', '/room/{room}',
// '/watch/{app}/{stream}'.
import { ref } from 'vue';

export function parseRoute(pathname) {
  const m = /^\/room\/([^/]+)\/?$/.exec(pathname);
  if (m) return { name: 'room', room: decodeURIComponent(m[1]) };
  const w = /^\/watch\/([^/]+)\/([^/]+)\/?$/.exec(pathname);
  if (w) return { name: 'watch', app: decodeURIComponent(w[1]), stream: decodeURIComponent(w[2]) };
  if (pathname === '/' || pathname === '') return { name: 'home' };
  return { name: 'notfound' };
}

export const route = ref(parseRoute(typeof location === 'undefined' ? '/' : location.pathname));

export function go(path) {
  history.pushState({}, '', path);
  route.value = parseRoute(location.pathname);
}

if (typeof window !== 'undefined') {
  window.addEventListener('popstate', () => { route.value = parseRoute(location.pathname); });
}
