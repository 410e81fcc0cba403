import { describe, it, expect, vi, afterEach } from 'vitest';
import { watchIce } from '../src/room/peers.js';

/// A peer connection's ICE state, as far as watchIce looks at it.
class FakePc extends EventTarget {
  constructor() { super(); this.iceConnectionState = 'connected'; }
  set(st) { this.iceConnectionState = st; this.dispatchEvent(new Event('iceconnectionstatechange')); }
}

afterEach(() => vi.useRealTimers());

describe('ICE watchdog', () => {
  it('waits out a short disconnection, acts on a long one and on failure, retries, and tells when back', () => {
    vi.useFakeTimers();
    const pc = new FakePc();
    const lost = vi.fn();
    const back = vi.fn();
    const stop = watchIce(pc, lost, { graceMs: 2000, retryMs: 4000, onBack: back });
    // A blip: disconnected for 1 s, then connected again: nothing.
    pc.set('disconnected');
    vi.advanceTimersByTime(1000);
    pc.set('connected');
    vi.advanceTimersByTime(5000);
    expect(lost).not.toHaveBeenCalled();
    expect(back).not.toHaveBeenCalled();
    // Disconnected for good: once after 2 s, then every 4 s.
    pc.set('disconnected');
    vi.advanceTimersByTime(1999);
    expect(lost).toHaveBeenCalledTimes(0);
    vi.advanceTimersByTime(1);
    expect(lost).toHaveBeenCalledTimes(1);
    pc.set('checking');
    vi.advanceTimersByTime(8000);
    expect(lost).toHaveBeenCalledTimes(3);
    pc.set('connected');
    expect(back).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(10000);
    expect(lost).toHaveBeenCalledTimes(3);
    // Failed: at once.
    pc.set('failed');
    expect(lost).toHaveBeenCalledTimes(4);
    // Stopped: nothing more.
    stop();
    vi.advanceTimersByTime(10000);
    pc.set('failed');
    expect(lost).toHaveBeenCalledTimes(4);
  });

  it('does nothing for a closed connection', () => {
    vi.useFakeTimers();
    const pc = new FakePc();
    const lost = vi.fn();
    watchIce(pc, lost);
    pc.set('closed');
    vi.advanceTimersByTime(10000);
    expect(lost).not.toHaveBeenCalled();
  });
});
