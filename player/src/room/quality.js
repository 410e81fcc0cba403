// Connection quality of a received participant, from two getStats() snapshots of its video
// (inbound-rtp): loss, frame rate and jitter over the interval, in LiveKit's spirit.

export function quality(prev, cur, ms) {
  if (!prev || !cur || ms <= 0) return 'unknown';
  const frames = (cur.framesDecoded ?? 0) - (prev.framesDecoded ?? 0);
  if (frames <= 0 && ms >= 3000) return 'lost';
  const recv = (cur.packetsReceived ?? 0) - (prev.packetsReceived ?? 0);
  const lost = Math.max(0, (cur.packetsLost ?? 0) - (prev.packetsLost ?? 0));
  const loss = recv + lost > 0 ? lost / (recv + lost) : 0;
  const fps = (frames * 1000) / ms;
  const jitter = cur.jitter ?? 0;
  if (frames <= 0) return 'unknown';
  if (loss > 0.1 || fps < 8 || jitter > 0.1) return 'poor';
  if (loss > 0.02 || fps < 18 || jitter > 0.03) return 'fair';
  return 'good';
}
