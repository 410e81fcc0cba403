// The play URLs of a stream key on this server (INTERFACE.md), with the latency each gives here
// (docs/benchmarks.md).

export function playUrls(key, { protocol = 'http:', host, hostname, rtmpPort = 1935 }) {
  const http = `${protocol}//${host}`;
  const ws = `${protocol === 'https:' ? 'wss:' : 'ws:'}//${host}`;
  return [
    { id: 'watch', label: 'Watch page', url: `${http}/watch/${key}`, latency: '' },
    { id: 'whep', label: 'WebRTC (WHEP)', url: `${http}/whep/${key}`, latency: '≈ 0.05 s' },
    { id: 'rtmp', label: 'RTMP', url: `rtmp://${hostname}:${rtmpPort}/${key}`, latency: '≈ 0.1 s' },
    { id: 'wsflv', label: 'WebSocket-FLV', url: `${ws}/${key}.flv`, latency: '≈ 0.3 s' },
    { id: 'flv', label: 'HTTP-FLV', url: `${http}/${key}.flv`, latency: '≈ 0.3–0.8 s' },
    { id: 'llhls', label: 'LL-HLS', url: `${http}/ll/${key}.m3u8`, latency: '≈ 1 s' },
    { id: 'hls', label: 'HLS', url: `${http}/${key}.m3u8`, latency: '≈ 2–3 s' },
  ];
}

/// The grid's columns for `n` tiles (portrait phones: at most 2).
export function gridColumns(n, portrait) {
  const c = n <= 1 ? 1 : n <= 4 ? 2 : n <= 9 ? 3 : 4;
  return portrait ? Math.min(c, n === 2 ? 1 : 2) : c;
}
