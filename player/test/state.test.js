import { describe, it, expect } from 'vitest';
import { initialState, reduce, CHAT_KEEP, streamIdOf } from '../src/room/state.js';

const P = (id, extra = {}) => ({ id, peer: `p${id}`, key: `t1/p${id}`, name: `P${id}`, state: 'joining', presence: {}, ...extra });
const joined = (chat = []) => ({ room: 't1', self: P(1), participants: [P(2)], chat, iceServers: [{ urls: ['stun:x'] }], iceTransportPolicy: 'relay', ports: { rtmp: 1935 }, limits: {}, resume: 'r' });

describe('room state', () => {
  it('joins, sees others come, change and go', () => {
    const s = reduce(initialState(), 'joined', joined());
    expect(s.phase).toBe('joined');
    expect(s.peers.map((p) => p.id)).toEqual([2]);
    expect(s.iceTransportPolicy).toBe('relay');
    reduce(s, 'peer:joined', P(3));
    reduce(s, 'peer:updated', P(3, { state: 'live' }));
    expect(s.peers.find((p) => p.id === 3).state).toBe('live');
    reduce(s, 'peer:updated', P(1, { state: 'live' }));
    expect(s.self.state).toBe('live');
    expect(s.peers).toHaveLength(2);
    reduce(s, 'peer:left', { id: 2, reason: 'left' });
    expect(s.peers.map((p) => p.id)).toEqual([3]);
  });

  it('keeps chat ordered, without duplicates, bounded', () => {
    const s = reduce(initialState(), 'joined', joined([{ id: 5, text: 'old' }]));
    reduce(s, 'chat:message', { id: 7, text: 'b' });
    reduce(s, 'chat:sent', { id: 6, text: 'a' });
    reduce(s, 'chat:message', { id: 7, text: 'b' });
    expect(s.chat.map((m) => m.id)).toEqual([5, 6, 7]);
    for (let i = 0; i < CHAT_KEEP + 10; i++) reduce(s, 'chat:message', { id: 100 + i, text: 'x' });
    expect(s.chat).toHaveLength(CHAT_KEEP);
    expect(s.chat.at(-1).id).toBe(100 + CHAT_KEEP + 9);
  });

  it('goes reconnecting on a drop, back on resume with the missed chat, lost when the resume expired', () => {
    const s = reduce(initialState(), 'joined', joined([{ id: 1, text: 'a' }]));
    reduce(s, 'disconnected', {});
    expect(s.phase).toBe('reconnecting');
    reduce(s, 'room:resumed', joined([{ id: 1, text: 'a' }, { id: 2, text: 'b' }]));
    expect(s.phase).toBe('joined');
    expect(s.chat.map((m) => m.id)).toEqual([1, 2]);
    reduce(s, 'disconnected', {});
    reduce(s, 'resume-failed', { code: 'resume-expired', message: 'x' });
    expect(s.phase).toBe('lost');
  });

  it('a refused join goes back to idle with the error', () => {
    const s = initialState();
    s.phase = 'joining';
    reduce(s, 'error', { code: 'room-full', message: 'full' });
    expect(s.phase).toBe('idle');
    expect(s.error.code).toBe('room-full');
  });

  it('maps keys to msid stream ids', () => {
    expect(streamIdOf('t1/ann')).toBe('t1.ann');
  });
});
