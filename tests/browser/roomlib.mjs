// Room participants for the browser tests (room.test.mjs, loss.test.mjs): each in a Chromium
// context of its own, its camera a clock canvas n x 1e6 ms behind, so that each tile's picture
// says whose it is.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { sleep, root } from './lib.mjs';

const here = join(root, 'tests', 'browser');
const clockJs = readFileSync(join(here, 'clock.js'), 'utf8');

/// An init script: the camera is a clock canvas `offset` ms behind (the screen, for screen
/// sharing, one `offset` + 50e6 ms behind), the name is preset.
export function fakeCamera(offset, name) {
  return `${clockJs}
  window.readClock = readClock;
  (() => {
    ${name ? `localStorage.setItem('name', ${JSON.stringify(name)});` : ''}
    const md = navigator.mediaDevices;
    if (!md) return;
    const real = md.getUserMedia.bind(md);
    md.getUserMedia = async (c) => {
      const tracks = [];
      if (c && c.video) {
        const canvas = document.createElement('canvas');
        canvas.width = 640; canvas.height = 360;
        const ctx = canvas.getContext('2d');
        const draw = () => drawClock(ctx, 80, 60, ${offset});
        draw();
        setInterval(draw, 33);
        tracks.push(canvas.captureStream(30).getVideoTracks()[0]);
      }
      if (c && c.audio) tracks.push(...(await real({ audio: true })).getAudioTracks());
      return new MediaStream(tracks);
    };
    // The "screen": a clock 50 x 1e6 ms further behind than the camera's.
    md.getDisplayMedia = async () => {
      const canvas = document.createElement('canvas');
      canvas.width = 640; canvas.height = 360;
      const ctx = canvas.getContext('2d');
      const draw = () => drawClock(ctx, 80, 60, ${offset} + 50e6);
      draw();
      setInterval(draw, 33);
      return canvas.captureStream(30);
    };
  })();`;
}

/// A participant: its own browser context (storage, devices), the room page of `room`.
export async function participant(browser, base, n, name, path, viewport = { width: 1280, height: 800 }, contextOptions = {}) {
  const context = await browser.newContext({ viewport, ...contextOptions });
  await context.addInitScript({ content: fakeCamera(n * 1e6, path ? name : null) });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`${name} page error:`, e.message));
  if (path) await page.goto(`${base}${path}`);
  return { context, page, n, name };
}

/// What `p`'s page shows: per remote tile its key, state, whose clock its picture reads, and the
/// audio received (subscriber inbound-rtp).
export async function look(p) {
  return p.page.evaluate(async () => {
    const c = document.createElement('canvas');
    c.width = 320; c.height = 240;
    const ctx = c.getContext('2d', { willReadFrequently: true });
    const tiles = [...document.querySelectorAll('figure.tile')].map((f) => {
      const v = f.querySelector('video');
      let clock = null;
      if (v && v.videoWidth) {
        const ms = readClock(ctx, v);
        if (ms !== null) clock = (Date.now() % 2 ** 40) - ms;
      }
      return { key: f.dataset.key, self: f.classList.contains('self'), state: f.dataset.state, behind: clock, width: v?.videoWidth || 0, time: v?.currentTime || 0 };
    });
    let audio = 0, energy = 0;
    const pc = window.__room?.subscriber()?.pc;
    if (pc) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') { audio += s.totalSamplesReceived || 0; energy += s.totalAudioEnergy || 0; }
      });
    }
    const chat = [...document.querySelectorAll('[data-test=chat-message] p')].map((e) => e.textContent);
    return { url: location.pathname, tiles, audio, energy, chat, notices: [...document.querySelectorAll('[data-test=notice]')].map((e) => e.dataset.code) };
  });
}

/// Waits until `p` plays the picture of every participant in `others` (their clock reads back:
/// n x 1e6 ms behind, give or take a second); returns the look.
export async function waitSees(p, others, ms = 10000) {
  const deadline = Date.now() + ms;
  let l;
  for (;;) {
    l = await look(p);
    const ok = others.every((o) => l.tiles.some((t) => !t.self && t.behind !== null && Math.abs(t.behind - o.n * 1e6) < 1000));
    if (ok) return l;
    if (Date.now() > deadline) throw new Error(`${p.name} does not see ${others.map((o) => o.name)} within ${ms} ms: ${JSON.stringify(l)}`);
    await sleep(200);
  }
}

export async function waitFor(what, fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(200);
  }
}


/// The share panel's QR code on `page`, decoded with jsQR, and the watch link the panel shows.
export async function readQr(page) {
  await page.addScriptTag({ path: join(here, 'node_modules', 'jsqr', 'dist', 'jsQR.js') });
  return page.evaluate(async () => {
    const svg = document.querySelector('[data-test=qr] svg');
    const img = new Image();
    img.src = `data:image/svg+xml;base64,${btoa(new XMLSerializer().serializeToString(svg))}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = c.height = 400;
    const ctx = c.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, 400, 400);
    ctx.drawImage(img, 0, 0, 400, 400);
    const d = ctx.getImageData(0, 0, 400, 400);
    return { decoded: window.jsQR(d.data, 400, 400)?.data, shown: document.querySelector('[data-test=watch-url]').textContent };
  });
}
