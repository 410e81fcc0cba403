import { describe, it, expect, vi, afterEach } from 'vitest';
import { playWhep } from '../src/watch/whep.js';

class FakePc extends EventTarget {
  constructor() { super(); this.iceConnectionState = 'new'; this.transceivers = []; this.closed = false; }
  addTransceiver(kind, init) { this.transceivers.push([kind, init.direction]); }
  async createOffer() { return { type: 'offer', sdp: 'v=0 offer' }; }
  async setLocalDescription(d) { this.localDescription = d; }
  async setRemoteDescription(d) { this.remoteDescription = d; }
  set(st) { this.iceConnectionState = st; this.dispatchEvent(new Event('iceconnectionstatechange')); }
  close() { this.closed = true; }
}

function fakeEnv(response) {
  const pcs = [];
  const calls = [];
  return {
    pcs,
    calls,
    RTCPeerConnection: function Pc() { const pc = new FakePc(); pcs.push(pc); return pc; },
    MediaStream: class { constructor() { this.tracks = []; } addTrack(t) { this.tracks.push(t); } },
    fetch: async (url, init) => {
      calls.push([init.method, url, init.body]);
      if (init.method === 'DELETE') return { status: 200 };
      return { status: response.status, headers: { get: (h) => (h === 'Location' ? response.location : null) }, text: async () => response.body };
    },
    setTimeout: (...a) => setTimeout(...a),
    clearTimeout: (t) => clearTimeout(t),
    location: { href: 'http://gw:8080/watch/live/a' },
  };
}

const video = () => Object.assign(new EventTarget(), { srcObject: null });
const flush = () => new Promise((r) => setTimeout(r, 0));

afterEach(() => vi.useRealTimers());

describe('WHEP player', () => {
  it('posts a receive-only offer, applies the answer, plays, and deletes its session when stopped', async () => {
    const env = fakeEnv({ status: 201, location: '/whep/live/a/tok', body: 'v=0 answer' });
    const v = video();
    const ev = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn() };
    const p = playWhep(v, '/whep/live/a', ev, env, { iceTimeoutMs: 50 });
    await flush();
    const pc = env.pcs[0];
    expect(pc.transceivers).toEqual([['video', 'recvonly'], ['audio', 'recvonly']]);
    expect(env.calls[0]).toEqual(['POST', '/whep/live/a', 'v=0 offer']);
    expect(pc.remoteDescription).toEqual({ type: 'answer', sdp: 'v=0 answer' });
    pc.set('connected');
    pc.ontrack({ track: { kind: 'video' } });
    expect(v.srcObject.tracks).toHaveLength(1);
    v.dispatchEvent(new Event('playing'));
    expect(ev.onPlaying).toHaveBeenCalledTimes(1);
    await new Promise((r) => setTimeout(r, 80));
    expect(ev.onFailed).not.toHaveBeenCalled();
    p.stop();
    expect(pc.closed).toBe(true);
    expect(env.calls[1]).toEqual(['DELETE', 'http://gw:8080/whep/live/a/tok', undefined]);
  });

  it('says offline for a key that is not live, and why for a refusal', async () => {
    const off = fakeEnv({ status: 404, body: 'no such stream' });
    const ev = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn() };
    playWhep(video(), '/whep/live/a', ev, off);
    await flush();
    expect(ev.onOffline).toHaveBeenCalledTimes(1);
    const refused = fakeEnv({ status: 406, body: 'video: the stream is H.264, and the offer cannot receive it' });
    const ev2 = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn() };
    playWhep(video(), '/whep/live/a', ev2, refused);
    await flush();
    expect(ev2.onFailed).toHaveBeenCalledWith('http-406', 'video: the stream is H.264, and the offer cannot receive it');
  });

  it('fails with no-ice when ICE does not connect in time, and once only', async () => {
    const env = fakeEnv({ status: 201, location: '/whep/live/a/tok', body: 'v=0 answer' });
    const ev = { onPlaying: vi.fn(), onFailed: vi.fn(), onOffline: vi.fn() };
    playWhep(video(), '/whep/live/a', ev, env, { iceTimeoutMs: 30 });
    await flush();
    env.pcs[0].set('checking');
    await new Promise((r) => setTimeout(r, 60));
    expect(ev.onFailed).toHaveBeenCalledWith('no-ice', undefined);
    env.pcs[0].set('failed');
    expect(ev.onFailed).toHaveBeenCalledTimes(1);
  });
});
