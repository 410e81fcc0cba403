// The watch page's other players (issue 17): FLV over WebSocket or HTTP with mpegts.js, HLS and
// LL-HLS with hls.js, and the browser's own HLS. Each reports, once, why it gave up, in the
// fallback's terms; each reports `playing` on the first frame. The libraries come in as
// arguments (the page imports them; tests pass fakes).

/// The low-latency settings the FLV tests measured (tests/browser/latency.html, README):
/// catch up by playing faster, seek only when far behind.
export const MPEGTS_CONFIG = {
  enableWorker: false,
  enableStashBuffer: false,
  stashInitialSize: 32 * 1024,
  lazyLoad: false,
  autoCleanupSourceBuffer: true,
  liveSync: true,
  liveSyncMaxLatency: 0.3,
  liveSyncTargetLatency: 0.15,
  liveSyncPlaybackRate: 1.2,
  liveBufferLatencyChasing: true,
  liveBufferLatencyMaxLatency: 0.5,
  liveBufferLatencyMinRemain: 0.2,
};

/// Reports a player's end once: failed, offline, or stopped by the page (then nothing).
function reporter(events) {
  let done = false;
  return {
    failed: (reason, detail) => { if (!done) { done = true; events.onFailed(reason, detail); } },
    offline: () => { if (!done) { done = true; events.onOffline(); } },
    stop: () => { done = true; },
    get done() { return done; },
  };
}

function onFirstFrame(video, events, r) {
  const f = () => { if (!r.done) events.onPlaying(); };
  video.addEventListener('playing', f);
  return () => video.removeEventListener('playing', f);
}

/// The UUID of the gateway's wall-clock SEI (egress::flv::WALL_CLOCK_UUID).
const WALL_UUID = 'streamgate-wall!';

/// A wall-clock mark from an H.264 SEI as mpegts.js hands it (`SEI_ARRIVED`: user_data_unregistered
/// with its uuid, user_data and the frame's pts in ms): {pts, wall}, or null if it is not ours.
export function wallMark(sei) {
  if (!sei || sei.type !== 5 || !sei.uuid || sei.uuid.length !== 16 || !sei.user_data || sei.user_data.length < 8) return null;
  if (String.fromCharCode(...sei.uuid) !== WALL_UUID || !Number.isFinite(sei.pts)) return null;
  const d = new DataView(sei.user_data.buffer, sei.user_data.byteOffset, 8);
  const wall = Number(d.getBigInt64(0));
  return Number.isFinite(wall) && wall > 0 ? { pts: sei.pts, wall } : null;
}

/// FLV (`url` ws:// or http://) with mpegts.js. `events.onMark({pts, wall})`: the gateway's
/// wall-clock marks (a SEI in each keyframe: when the gateway received it). mpegts.js gives the
/// SEI's pts on the same timeline as the video element's currentTime.
export function playFlv(video, url, events, mpegts) {
  const r = reporter(events);
  const player = mpegts.createPlayer({ type: 'flv', isLive: true, url }, MPEGTS_CONFIG);
  player.on(mpegts.Events.ERROR, (type, detail, info) => {
    if (info?.code === 404) return r.offline();
    r.failed(info?.code ? `http-${info.code}` : String(detail || type), info?.msg);
  });
  player.on(mpegts.Events.SEI_ARRIVED, (sei) => {
    const m = wallMark(sei);
    if (m) events.onMark?.(m);
  });
  player.on(mpegts.Events.LOADING_COMPLETE, () => r.offline()); // the stream ended
  const off = onFirstFrame(video, events, r);
  player.attachMediaElement(video);
  player.load();
  Promise.resolve(player.play()).catch(() => {});
  return { stop() { r.stop(); off(); player.destroy(); } };
}

/// HLS or LL-HLS with hls.js. `events.onDate(ms)`: the program date of the picture shown.
export function playHls(video, url, events, Hls, { lowLatency }) {
  const r = reporter(events);
  const hls = new Hls({ lowLatencyMode: lowLatency, enableWorker: false });
  hls.on(Hls.Events.ERROR, (_, d) => {
    if (!d.fatal) return;
    const code = d.response?.code;
    if (code === 404) return r.offline();
    r.failed(code ? `http-${code}` : String(d.details), d.reason);
  });
  const off = onFirstFrame(video, events, r);
  hls.attachMedia(video);
  hls.loadSource(url);
  Promise.resolve(video.play()).catch(() => {});
  return { stop() { r.stop(); off(); hls.destroy(); }, playingDate: () => hls.playingDate?.getTime?.() ?? null };
}

/// The browser's own HLS (iOS Safari, WeChat's in-app browser).
export function playNativeHls(video, url, events) {
  const r = reporter(events);
  const off = onFirstFrame(video, events, r);
  const onError = () => r.failed('media-error', video.error?.message);
  video.addEventListener('error', onError);
  video.src = url;
  Promise.resolve(video.play()).catch(() => {});
  return {
    stop() { r.stop(); off(); video.removeEventListener('error', onError); video.removeAttribute('src'); video.load?.(); },
    // Safari: getStartDate() is the program date of currentTime 0.
    playingDate: () => {
      const d = video.getStartDate?.()?.getTime?.();
      return Number.isFinite(d) ? d + video.currentTime * 1000 : null;
    },
  };
}

/// Calls `onStall()` when a playing `video`'s time has not moved for `stallMs` (checked every
/// `everyMs`). Returns {stop(), stalls()} (how many times it stood still for a second or more).
export function watchStall(video, onStall, { stallMs = 5000, everyMs = 500, env = globalThis } = {}) {
  let last = video.currentTime;
  let still = 0;
  let stalls = 0;
  let counted = false;
  const t = env.setInterval(() => {
    if (video.paused || video.currentTime !== last) {
      last = video.currentTime;
      still = 0;
      counted = false;
      return;
    }
    still += everyMs;
    if (still >= 1000 && !counted) { stalls += 1; counted = true; }
    if (still >= stallMs) { still = 0; onStall(); }
  }, everyMs);
  return { stop: () => env.clearInterval(t), stalls: () => stalls };
}
