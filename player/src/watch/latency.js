// How far behind live the watch page is (issue 17): the gateway's wall clock, as the page
// learns it, against the wall clock the gateway stamped on the picture being shown. Plain
// functions over numbers; the page reads the inputs from its player.

/// The server's clock from request samples (NTP's way): each sample is {sent, server, received}
/// in ms (`sent`/`received` on this page's clock, `server` what the gateway said). The sample
/// with the shortest round trip wins; returns {offset, rtt} where server time = local + offset,
/// or null without samples.
export function clockOffset(samples) {
  let best = null;
  for (const s of samples) {
    const rtt = s.received - s.sent;
    if (rtt < 0 || !Number.isFinite(s.server)) continue;
    if (!best || rtt < best.rtt) best = { offset: s.server + rtt / 2 - s.received, rtt };
  }
  return best;
}

/// NTP's epoch (1900) to Unix (1970), in ms.
export const NTP_UNIX_MS = 2208988800000;

/// WebRTC: Chromium's `estimatedPlayoutTimestamp` (inbound-rtp stats, NTP ms) is the capture
/// time, on the sender's clock, of what plays now; the gateway's RTCP sender reports put its
/// own wall clock there. Latency = server now - that.
export function webrtcLatency({ estimatedPlayoutTimestamp, now, offset }) {
  if (!estimatedPlayoutTimestamp) return null;
  return now + offset - (estimatedPlayoutTimestamp - NTP_UNIX_MS);
}

/// HLS (hls.js or native): the program date time of the picture shown (`EXT-X-PROGRAM-DATE-TIME`
/// of its segment plus its offset in it), in Unix ms.
export function dateLatency({ playingDate, now, offset }) {
  if (!playingDate) return null;
  return now + offset - playingDate;
}

/// FLV (HTTP or WebSocket): the gateway's wall-clock SEI pairs a keyframe's pts (ms) with the
/// wall clock it arrived at (`wall`, Unix ms); mpegts.js gives that pts on the timeline of the
/// video element's `currentTime` (s). Latency = server now - (wall + shown - pts).
export function flvLatency({ mark, currentTime, now, offset }) {
  if (!mark || !Number.isFinite(currentTime)) return null;
  return now + offset - (mark.wall + (currentTime * 1000 - mark.pts));
}

/// A readout that does not jump about: the median of the last `n` values.
export function smoother(n = 9) {
  const values = [];
  return (v) => {
    if (v === null || !Number.isFinite(v)) return values.length ? median(values) : null;
    values.push(v);
    if (values.length > n) values.shift();
    return median(values);
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
