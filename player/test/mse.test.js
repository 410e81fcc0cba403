import { describe, it, expect, vi, afterEach } from 'vitest';
import { playFlv, playHls, watchStall, wallMark, MPEGTS_CONFIG } from '../src/watch/mse.js';

const video = () => Object.assign(new EventTarget(), { currentTime: 0, paused: false, play: async () => {} });

/// mpegts.js as the page uses it.
function fakeMpegts() {
  const handlers = {};
  const lib = {
    Events: { ERROR: 'error', SEI_ARRIVED: 'sei_arrived', LOADING_COMPLETE: 'loading_complete' },
    created: null,
    createPlayer: (src, cfg) => {
      lib.created = { src, cfg };
      return { on: (e, f) => { handlers[e] = f; }, attachMediaElement() {}, load() {}, play: async () => {}, destroy: () => { lib.destroyed = true; } };
    },
    emit: (e, ...a) => handlers[e](...a),
  };
  return lib;
}

afterEach(() => vi.useRealTimers());

/// A SEI as mpegts.js parses it: user_data_unregistered, uuid, the 8-byte wall clock.
function sei(uuid, wall, pts) {
  const user = new Uint8Array(8);
  new DataView(user.buffer).setBigInt64(0, wall);
  return { type: 5, size: 24, uuid: new Uint8Array([...uuid].map((c) => c.charCodeAt(0))), user_data: user, pts };
}

describe('wall-clock SEI', () => {
  it('reads the gateway\'s marks and nothing else', () => {
    expect(wallMark(sei('streamgate-wall!', 1_800_000_000_123n, 7))).toEqual({ pts: 7, wall: 1_800_000_000_123 });
    expect(wallMark(sei('streamgate-wall?', 1n, 7))).toBe(null);
    expect(wallMark({ type: 6 })).toBe(null);
    expect(wallMark(null)).toBe(null);
  });
});

describe('FLV player', () => {
  it('plays a live FLV with the measured settings, reads wall-clock marks, and maps errors', () => {
    const m = fakeMpegts();
    const v = video();
    const ev = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn(), onMark: vi.fn() };
    const p = playFlv(v, 'ws://gw/live/a.flv', ev, m);
    expect(m.created).toEqual({ src: { type: 'flv', isLive: true, url: 'ws://gw/live/a.flv' }, cfg: MPEGTS_CONFIG });
    m.emit('sei_arrived', sei('streamgate-wall!', 1_800_000_000_123n, 4000));
    m.emit('sei_arrived', sei('someone-else-sei', 1n, 4040));
    expect(ev.onMark.mock.calls).toEqual([[{ pts: 4000, wall: 1_800_000_000_123 }]]);
    v.dispatchEvent(new Event('playing'));
    expect(ev.onPlaying).toHaveBeenCalledTimes(1);
    m.emit('error', 'NetworkError', 'HttpStatusCodeInvalid', { code: 500, msg: 'boom' });
    m.emit('error', 'NetworkError', 'HttpStatusCodeInvalid', { code: 502 });
    expect(ev.onFailed.mock.calls).toEqual([['http-500', 'boom']]);
    p.stop();
    expect(m.destroyed).toBe(true);
  });

  it('says offline on 404', () => {
    const m = fakeMpegts();
    const ev = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn() };
    playFlv(video(), 'http://gw/live/a.flv', ev, m);
    m.emit('error', 'NetworkError', 'HttpStatusCodeInvalid', { code: 404 });
    expect(ev.onOffline).toHaveBeenCalledTimes(1);
    expect(ev.onFailed).not.toHaveBeenCalled();
  });
});

describe('HLS player', () => {
  it('maps fatal errors and ignores the others', () => {
    const handlers = {};
    class Hls {
      constructor(cfg) { Hls.cfg = cfg; }
      on(e, f) { handlers[e] = f; }
      attachMedia() {}
      loadSource(u) { Hls.url = u; }
      destroy() {}
    }
    Hls.Events = { ERROR: 'hlsError' };
    const ev = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn() };
    playHls(video(), '/ll/live/a.m3u8', ev, Hls, { lowLatency: true });
    expect([Hls.cfg.lowLatencyMode, Hls.url]).toEqual([true, '/ll/live/a.m3u8']);
    handlers.hlsError('hlsError', { fatal: false, details: 'bufferStalledError' });
    expect(ev.onFailed).not.toHaveBeenCalled();
    handlers.hlsError('hlsError', { fatal: true, details: 'manifestLoadError', response: { code: 404 } });
    expect(ev.onOffline).toHaveBeenCalledTimes(1);
  });
});

describe('stall watchdog', () => {
  it('counts stills of a second and gives up after stallMs', () => {
    vi.useFakeTimers();
    const v = video();
    const onStall = vi.fn();
    const w = watchStall(v, onStall, { stallMs: 3000, everyMs: 500 });
    for (let i = 0; i < 4; i++) { v.currentTime += 0.5; vi.advanceTimersByTime(500); }
    expect(w.stalls()).toBe(0);
    vi.advanceTimersByTime(1000); // still for 1 s: one stall
    expect(w.stalls()).toBe(1);
    v.currentTime += 0.5;
    vi.advanceTimersByTime(500);
    vi.advanceTimersByTime(3000);
    expect(onStall).toHaveBeenCalledTimes(1);
    expect(w.stalls()).toBe(2);
    // Paused is not stalled.
    v.paused = true;
    vi.advanceTimersByTime(10000);
    expect(onStall).toHaveBeenCalledTimes(1);
    w.stop();
  });
});
