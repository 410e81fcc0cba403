import { describe, it, expect } from 'vitest';
import { EventEmitter } from 'node:events';
import { Signalling, RequestError } from '../src/room/signalling.js';
import { Subscriber, preferH264 } from '../src/room/peers.js';

/// A socket.io-client stand-in: records emits and answers them from `answers`.
function fakeSocket(answers = {}) {
  const s = new EventEmitter();
  s.sent = [];
  s.timeout = () => ({
    emitWithAck: async (ev, data) => {
      s.sent.push([ev, data]);
      const a = answers[ev];
      if (a === 'hang') throw new Error('timeout');
      return typeof a === 'function' ? a(data) : a ?? { ok: true };
    },
  });
  s.disconnect = () => {};
  return s;
}

function memory() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
}

describe('signalling', () => {
  it('sends the resume token in auth, keeps the rotated one, forgets it on leave', async () => {
    const storage = memory();
    let opts;
    const sock = fakeSocket({ 'room:join': { ok: true, resume: 'tok1' } });
    const sig = new Signalling((o) => { opts = o; return sock; }, () => {}, { storage });
    const auth = () => new Promise((r) => opts.auth(r));
    expect(await auth()).toEqual({});
    await sig.request('room:join', { room: 't', name: 'a' });
    expect(await auth()).toEqual({ resume: 'tok1' });
    sock.emit('room:resumed', { resume: 'tok2' });
    expect(await auth()).toEqual({ resume: 'tok2' });
    expect(storage.getItem('streamgate.resume')).toBe('tok2');
    // A reload starts with the stored token.
    let opts2;
    new Signalling((o) => { opts2 = o; return fakeSocket(); }, () => {}, { storage });
    expect(await new Promise((r) => opts2.auth(r))).toEqual({ resume: 'tok2' });
    await sig.request('room:leave');
    expect(await auth()).toEqual({});
  });

  it('turns refusals and timeouts into coded errors', async () => {
    const sock = fakeSocket({ 'room:join': { ok: false, error: { code: 'room-full', message: 'full' } }, 'chat:send': 'hang' });
    const sig = new Signalling(() => sock, () => {});
    await expect(sig.request('room:join', {})).rejects.toMatchObject({ code: 'room-full' });
    const e = await sig.request('chat:send', {}).catch((x) => x);
    expect(e).toBeInstanceOf(RequestError);
    expect(e.code).toBe('timeout');
  });

  it('passes server events and connection changes on', () => {
    const sock = fakeSocket();
    const seen = [];
    new Signalling(() => sock, (e, d) => seen.push([e, d]));
    sock.emit('peer:joined', { id: 2 });
    sock.emit('disconnect', 'transport close');
    sock.emit('not-ours', {});
    expect(seen).toEqual([['peer:joined', { id: 2 }], ['disconnected', { reason: 'transport close' }]]);
  });
});

/// A scripted RTCPeerConnection: records what was set; createAnswer echoes the offer.
class FakePC {
  static made = [];
  constructor() { this.log = []; this.closed = false; FakePC.made.push(this); }
  async setRemoteDescription(d) { await null; this.log.push(['remote', d.sdp]); this.remote = d; }
  async createAnswer() { return { type: 'answer', sdp: `answer to ${this.remote.sdp}` }; }
  async setLocalDescription(d) { this.localDescription = d; this.log.push(['local', d.sdp]); }
  close() { this.closed = true; }
}

describe('subscriber offers', () => {
  it('answers in order, skips stale ones, makes a new peer connection for a new session', async () => {
    FakePC.made = [];
    const sock = fakeSocket();
    const sig = new Signalling(() => sock, () => {});
    const sub = new Subscriber(FakePC, {}, sig, { onTrack: () => {} });
    sub.offer({ session: 1, seq: 1, sdp: 'o1' });
    sub.offer({ session: 1, seq: 2, sdp: 'o2' });
    sub.offer({ session: 1, seq: 1, sdp: 'late duplicate' });
    await sub.offer({ session: 2, seq: 1, sdp: 'n1' });
    await sub.offer({ session: 1, seq: 3, sdp: 'old session' });
    const answers = sock.sent.filter(([e]) => e === 'sub:answer').map(([, d]) => [d.session, d.seq, d.sdp]);
    expect(answers).toEqual([[1, 1, 'answer to o1'], [1, 2, 'answer to o2'], [2, 1, 'answer to n1']]);
    expect(FakePC.made).toHaveLength(2);
    expect(FakePC.made[0].closed).toBe(true);
  });
});

describe('codec order', () => {
  it('puts H.264 (packetization-mode 1, baseline) first', () => {
    const c = [
      { mimeType: 'video/VP8' },
      { mimeType: 'video/H264', sdpFmtpLine: 'packetization-mode=0;profile-level-id=42e01f' },
      { mimeType: 'video/H264', sdpFmtpLine: 'packetization-mode=1;profile-level-id=42e01f' },
      { mimeType: 'video/VP9' },
    ];
    const o = preferH264(c);
    expect(o.map((x) => x.mimeType)).toEqual(['video/H264', 'video/H264', 'video/VP8', 'video/VP9']);
    expect(o[0].sdpFmtpLine).toContain('packetization-mode=1');
  });
});
