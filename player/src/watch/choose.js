// The watch page's choice of protocol (issue 17): what this browser can play, best (lowest
// latency) first, and the fallback between them. Plain functions over plain data, so that
// vitest runs them over a table of browsers; the page feeds them what its players report.

/// Every protocol, best first. `hls-native` is the browser's own HLS (iOS Safari, WeChat's
/// in-app browser); `llhls` and `hls` are hls.js over MSE.
export const PROTOCOLS = ['webrtc', 'wsflv', 'flv', 'hls-native', 'llhls', 'hls'];

/// The protocols' names (the same in every language).
export const PROTOCOL_NAMES = { webrtc: 'WebRTC', wsflv: 'WebSocket-FLV', flv: 'HTTP-FLV', 'hls-native': 'HLS', llhls: 'LL-HLS', hls: 'HLS' };

/// What the picker and `?protocol=` may name (`hls` is native HLS where hls.js cannot run).
export const PICKABLE = ['webrtc', 'wsflv', 'flv', 'llhls', 'hls'];

/// What a browser can do, read from `env` (a window: RTCPeerConnection, RTCRtpReceiver,
/// MediaSource or ManagedMediaSource, WebSocket, a video element's canPlayType).
export function capabilities(env) {
  const rtc = typeof env.RTCPeerConnection === 'function';
  let rtcCodecs = null; // unknown: the browser cannot say (it is taken to have H.264 and VP8)
  const caps = rtc && env.RTCRtpReceiver?.getCapabilities?.('video');
  if (caps) rtcCodecs = [...new Set(caps.codecs.map((c) => c.mimeType.toLowerCase()))];
  const MS = env.ManagedMediaSource || env.MediaSource || env.WebKitMediaSource;
  let mse = false;
  try {
    mse = !!MS && typeof MS.isTypeSupported === 'function' && MS.isTypeSupported('video/mp4; codecs="avc1.42E01E,mp4a.40.2"');
  } catch { /* no MSE */ }
  let nativeHls = false;
  try {
    const v = env.document?.createElement('video');
    nativeHls = !!v?.canPlayType && v.canPlayType('application/vnd.apple.mpegurl') !== '';
  } catch { /* no video element */ }
  return { rtc, rtcCodecs, mse, ws: typeof env.WebSocket === 'function', nativeHls };
}

/// The protocols `caps` can play, best first. `webrtcCodecs`: the video codecs the stream can
/// be sent in over WebRTC (`h264` for an RTMP publisher; a WebRTC publisher's own, e.g. `vp8`);
/// `video: false` for a stream without video.
export function playable(caps, { webrtcCodecs = ['h264'], video = true } = {}) {
  const out = [];
  const rtcVideo = !video || caps.rtcCodecs === null || webrtcCodecs.some((c) => caps.rtcCodecs.includes(`video/${c.toLowerCase()}`));
  if (caps.rtc && rtcVideo) out.push('webrtc');
  if (caps.mse && caps.ws) out.push('wsflv');
  if (caps.mse) out.push('flv');
  if (caps.nativeHls) out.push('hls-native');
  if (caps.mse) out.push('llhls', 'hls');
  return out;
}

/// The protocol `?protocol=` (or the picker) names, as this browser plays it; null if it
/// cannot (the page says so and plays its automatic choice).
export function pick(name, available) {
  if (name === 'hls' && !available.includes('hls') && available.includes('hls-native')) return 'hls-native';
  return PICKABLE.includes(name) && available.includes(name) ? name : null;
}

/// How long a protocol may take to play its first frame before the next one is tried.
export const START_TIMEOUT_MS = 8000;
/// After playing this long on a lower protocol, the best one is tried again (doubling after
/// each failed try, up to UP_MAX_MS).
export const UP_AFTER_MS = 30000;
export const UP_MAX_MS = 300000;
/// When every protocol failed, or the stream is not live: how soon to try again.
export const RETRY_MS = 5000;
export const OFFLINE_RETRY_MS = 1000;

/// The fallback (sans-IO). `start(order, now, { forced })` gives the first state; `step(state,
/// event, now)` the next, for the events the page's player reports:
///   {type: 'playing'}                 the first frame is shown
///   {type: 'failed', reason}          the player gave up (no ICE, HTTP error, decode error, stall)
///   {type: 'offline'}                 the stream is not live (404): wait for it
///   {type: 'tick'}                    time passed (timeouts, going back up)
/// and the user's {type: 'pick', protocol} (null: automatic). The page (re)starts its player on
/// `state.protocol` whenever `state.attempt` changes; `state.phase` is `trying`, `playing`,
/// `waiting` (not live) or `failed` (nothing plays: `retryAt`); `state.reasons` says why each
/// protocol was left, for the readout.
export function start(order, now, { forced = null } = {}) {
  return attempt({ order, forced, index: 0, phase: 'trying', attempt: 0, since: now, reasons: {}, upAt: null, upEvery: UP_AFTER_MS, retryAt: null, protocol: null }, forced ? Math.max(0, order.indexOf(forced)) : 0, now);
}

function attempt(s, index, now) {
  return { ...s, index, protocol: s.order[index] ?? null, phase: s.order.length ? 'trying' : 'failed', attempt: s.attempt + 1, since: now, retryAt: s.order.length ? null : now + RETRY_MS };
}

export function step(s, ev, now) {
  switch (ev.type) {
    case 'pick': {
      const forced = ev.protocol && s.order.includes(ev.protocol) ? ev.protocol : null;
      return attempt({ ...s, forced, upAt: null, upEvery: UP_AFTER_MS }, forced ? s.order.indexOf(forced) : 0, now);
    }
    case 'playing':
      if (s.phase !== 'trying') return s;
      return { ...s, phase: 'playing', since: now, upAt: !s.forced && s.index > 0 ? now + s.upEvery : null };
    case 'offline':
      // Not a failure of the protocol: the publisher is not there. Wait, then start over at the best.
      return { ...s, phase: 'waiting', protocol: null, retryAt: now + OFFLINE_RETRY_MS };
    case 'failed':
      return fail(s, ev.reason || 'error', now);
    case 'tick':
      if ((s.phase === 'waiting' || s.phase === 'failed') && s.retryAt !== null && now >= s.retryAt) {
        return attempt(s, s.forced ? s.order.indexOf(s.forced) : 0, now);
      }
      if (s.phase === 'trying' && now - s.since >= START_TIMEOUT_MS) return fail(s, 'timeout', now);
      if (s.phase === 'playing' && s.upAt !== null && now >= s.upAt) {
        // Back up: the best protocol again; if it fails the fallback comes down the list again,
        // and waits twice as long before the next try.
        return attempt({ ...s, upEvery: Math.min(s.upEvery * 2, UP_MAX_MS), upAt: null }, 0, now);
      }
      return s;
    default:
      return s;
  }
}

function fail(s, reason, now) {
  if (s.phase !== 'trying' && s.phase !== 'playing') return s;
  const reasons = { ...s.reasons, [s.protocol]: reason };
  if (s.forced) {
    // The user's choice: no other protocol; again after a while.
    return { ...s, reasons, phase: 'failed', retryAt: now + RETRY_MS };
  }
  const next = s.index + 1;
  if (next >= s.order.length) return { ...s, reasons, phase: 'failed', protocol: null, retryAt: now + RETRY_MS };
  return attempt({ ...s, reasons }, next, now);
}
