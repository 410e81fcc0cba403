import { describe, it, expect } from 'vitest';
import { capabilities, playable, pick, start, step, START_TIMEOUT_MS, UP_AFTER_MS, RETRY_MS, OFFLINE_RETRY_MS } from '../src/watch/choose.js';
import { clockOffset, webrtcLatency, dateLatency, flvLatency, smoother, NTP_UNIX_MS } from '../src/watch/latency.js';

/// A window-like object with what a browser has.
function env({ rtc = true, codecs = ['video/H264', 'video/VP8', 'video/rtx'], getCapabilities = true, mse = true, mms = false, ws = true, nativeHls = false }) {
  const MS = { isTypeSupported: (t) => t.includes('avc1') };
  return {
    RTCPeerConnection: rtc ? function RTCPeerConnection() {} : undefined,
    RTCRtpReceiver: rtc && getCapabilities ? { getCapabilities: () => ({ codecs: codecs.map((mimeType) => ({ mimeType })) }) } : undefined,
    MediaSource: mse ? MS : undefined,
    ManagedMediaSource: mms ? MS : undefined,
    WebSocket: ws ? function WebSocket() {} : undefined,
    document: { createElement: () => ({ canPlayType: (t) => (nativeHls && t === 'application/vnd.apple.mpegurl' ? 'maybe' : '') }) },
  };
}

describe('protocol choice', () => {
  const browsers = [
    ['Chromium', env({}), ['webrtc', 'wsflv', 'flv', 'llhls', 'hls']],
    // iPhone Safari: WebRTC with H.264, no classic MSE (ManagedMediaSource from iOS 17.1), its own HLS.
    ['iOS Safari 16', env({ mse: false, nativeHls: true }), ['webrtc', 'hls-native']],
    ['iOS Safari 17.1+', env({ mse: false, mms: true, nativeHls: true }), ['webrtc', 'wsflv', 'flv', 'hls-native', 'llhls', 'hls']],
    // WeChat's in-app browser (iOS WKWebView): no RTCPeerConnection, no MSE, native HLS.
    ['WeChat in-app', env({ rtc: false, mse: false, nativeHls: true }), ['hls-native']],
    ['macOS Safari', env({ nativeHls: true }), ['webrtc', 'wsflv', 'flv', 'hls-native', 'llhls', 'hls']],
    ['Firefox without H.264', env({ codecs: ['video/VP8', 'video/VP9'] }), ['wsflv', 'flv', 'llhls', 'hls']],
    ['no MSE, no native HLS', env({ mse: false }), ['webrtc']],
    ['an old browser that cannot list its codecs', env({ getCapabilities: false }), ['webrtc', 'wsflv', 'flv', 'llhls', 'hls']],
    ['nothing', env({ rtc: false, mse: false }), []],
  ];
  for (const [name, e, want] of browsers) {
    it(name, () => {
      expect(playable(capabilities(e))).toEqual(want);
    });
  }

  it('takes WebRTC without H.264 for a VP8 publisher, and WebRTC for a stream without video', () => {
    const firefox = capabilities(env({ codecs: ['video/VP8'] }));
    expect(playable(firefox, { webrtcCodecs: ['vp8'] })[0]).toBe('webrtc');
    expect(playable(firefox, { video: false })[0]).toBe('webrtc');
  });

  it('maps ?protocol= to what the browser plays', () => {
    const chromium = playable(capabilities(env({})));
    const ios = playable(capabilities(env({ mse: false, nativeHls: true })));
    expect(pick('hls', chromium)).toBe('hls');
    expect(pick('hls', ios)).toBe('hls-native');
    expect(pick('wsflv', ios)).toBe(null);
    expect(pick('llhls', chromium)).toBe('llhls');
    expect(pick('hls-native', chromium)).toBe(null);
    expect(pick('bogus', chromium)).toBe(null);
  });
});

describe('fallback', () => {
  const order = ['webrtc', 'wsflv', 'flv', 'llhls', 'hls'];

  it('goes down the list on failures and timeouts, with the reasons', () => {
    let s = start(order, 0);
    expect([s.protocol, s.phase, s.attempt]).toEqual(['webrtc', 'trying', 1]);
    s = step(s, { type: 'failed', reason: 'no-ice' }, 5000);
    expect([s.protocol, s.phase, s.attempt]).toEqual(['wsflv', 'trying', 2]);
    // No first frame within the start timeout: the next one.
    s = step(s, { type: 'tick' }, 5000 + START_TIMEOUT_MS - 1);
    expect(s.protocol).toBe('wsflv');
    s = step(s, { type: 'tick' }, 5000 + START_TIMEOUT_MS);
    expect(s.protocol).toBe('flv');
    s = step(s, { type: 'playing' }, 14000);
    expect(s.phase).toBe('playing');
    expect(s.reasons).toEqual({ webrtc: 'no-ice', wsflv: 'timeout' });
    // A stall while playing: the next one.
    s = step(s, { type: 'failed', reason: 'stall' }, 20000);
    expect(s.protocol).toBe('llhls');
  });

  it('goes back up after playing a while lower, waiting twice as long after each failed try', () => {
    let s = start(order, 0);
    s = step(s, { type: 'failed', reason: 'no-ice' }, 1000);
    s = step(s, { type: 'playing' }, 2000);
    expect(s.upAt).toBe(2000 + UP_AFTER_MS);
    s = step(s, { type: 'tick' }, 2000 + UP_AFTER_MS);
    expect([s.protocol, s.phase]).toEqual(['webrtc', 'trying']);
    // It still fails: down again, and the next try up is twice as far.
    s = step(s, { type: 'failed', reason: 'no-ice' }, 40000);
    s = step(s, { type: 'playing' }, 41000);
    expect([s.protocol, s.upAt]).toEqual(['wsflv', 41000 + 2 * UP_AFTER_MS]);
    // WebRTC works again: it stays there, and nothing goes up from the top.
    s = step(s, { type: 'tick' }, 41000 + 2 * UP_AFTER_MS);
    s = step(s, { type: 'playing' }, 200000);
    expect([s.protocol, s.phase, s.upAt]).toEqual(['webrtc', 'playing', null]);
  });

  it('waits for a stream that is not live, and starts over at the best when it is', () => {
    let s = start(order, 0);
    s = step(s, { type: 'offline' }, 100);
    expect([s.phase, s.protocol]).toEqual(['waiting', null]);
    s = step(s, { type: 'tick' }, 100 + OFFLINE_RETRY_MS - 1);
    expect(s.phase).toBe('waiting');
    s = step(s, { type: 'tick' }, 100 + OFFLINE_RETRY_MS);
    expect([s.phase, s.protocol]).toEqual(['trying', 'webrtc']);
  });

  it('when everything failed, tries again from the best', () => {
    let s = start(['flv', 'hls'], 0);
    s = step(s, { type: 'failed', reason: 'http-500' }, 10);
    s = step(s, { type: 'failed', reason: 'http-500' }, 20);
    expect([s.phase, s.retryAt]).toEqual(['failed', 20 + RETRY_MS]);
    s = step(s, { type: 'tick' }, 20 + RETRY_MS);
    expect([s.phase, s.protocol]).toEqual(['trying', 'flv']);
    expect(start([], 0).phase).toBe('failed');
  });

  it('keeps to a protocol the user picked, and goes automatic again', () => {
    let s = start(order, 0, { forced: 'llhls' });
    expect(s.protocol).toBe('llhls');
    s = step(s, { type: 'failed', reason: 'http-404' }, 10);
    expect([s.phase, s.protocol]).toEqual(['failed', 'llhls']);
    s = step(s, { type: 'tick' }, 10 + RETRY_MS);
    expect([s.phase, s.protocol]).toEqual(['trying', 'llhls']);
    s = step(s, { type: 'playing' }, 20 + RETRY_MS);
    expect(s.upAt).toBe(null);
    s = step(s, { type: 'pick', protocol: null }, 30000);
    expect([s.protocol, s.forced]).toEqual(['webrtc', null]);
    s = step(s, { type: 'pick', protocol: 'hls' }, 31000);
    expect(s.protocol).toBe('hls');
  });
});


describe('latency readout', () => {
  it('learns the server clock from the sample with the shortest round trip', () => {
    // The server is 500 ms ahead; one sample took 300 ms, the other 20 ms (10 each way).
    const samples = [
      { sent: 1000, server: 1000 + 500 + 150, received: 1300 },
      { sent: 2000, server: 2000 + 500 + 10, received: 2020 },
    ];
    expect(clockOffset(samples)).toEqual({ offset: 500, rtt: 20 });
    expect(clockOffset([])).toBe(null);
    expect(clockOffset([{ sent: 5, server: 1, received: 4 }])).toBe(null);
  });

  it('reads each protocol against the server clock', () => {
    const now = 1_800_000_000_000;
    const offset = 200; // the server is 200 ms ahead of this page
    // WebRTC: what plays was captured 100 ms ago on the server's clock.
    expect(webrtcLatency({ estimatedPlayoutTimestamp: now + offset - 100 + NTP_UNIX_MS, now, offset })).toBe(100);
    expect(webrtcLatency({ estimatedPlayoutTimestamp: undefined, now, offset })).toBe(null);
    // HLS: the picture shown has program date 2.5 s ago.
    expect(dateLatency({ playingDate: now + offset - 2500, now, offset })).toBe(2500);
    // FLV: a keyframe at 10 000 ms arrived 1 s ago (server clock); the player shows 10.7 s:
    // 300 ms behind.
    const mark = { pts: 10000, wall: now + offset - 1000 };
    expect(flvLatency({ mark, currentTime: 10.7, now, offset })).toBeCloseTo(300, 6);
    expect(flvLatency({ mark: null, currentTime: 1, now, offset })).toBe(null);
  });

  it('smooths with a running median', () => {
    const s = smoother(3);
    expect(s(null)).toBe(null);
    expect(s(100)).toBe(100);
    expect(s(900)).toBe(500);
    expect(s(110)).toBe(110);
    expect(s(120)).toBe(120);
    expect(s(null)).toBe(120);
  });
});
