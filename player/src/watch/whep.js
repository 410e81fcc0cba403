// WHEP playback for the watch page (issue 17): one receive-only peer connection, the offer
// POSTed to /whep/{key}, the answer applied; DELETE on the session's Location when stopped.
// What goes wrong is reported once, as a reason the fallback can show: the stream is not live
// (`offline`), the server refused (`http-NNN`, with its text), no ICE within `iceTimeoutMs`
// (`no-ice`), ICE failed later (`ice-failed`).

export const ICE_TIMEOUT_MS = 5000;

/// Starts playing `url` (the WHEP endpoint) into `video`. `events`: {onPlaying(), onFailed(reason,
/// detail), onOffline()}. Returns {stop(), pc}. `env` gives RTCPeerConnection, fetch and timers
/// (the window; tests pass fakes).
export function playWhep(video, url, events, env = globalThis, { iceTimeoutMs = ICE_TIMEOUT_MS } = {}) {
  const pc = new env.RTCPeerConnection({});
  let location = null;
  let done = false;
  let timer = null;
  const once = (fn) => (...args) => {
    if (done) return;
    done = true;
    env.clearTimeout(timer);
    fn(...args);
  };
  const failed = once((reason, detail) => events.onFailed(reason, detail));
  const offline = once(() => events.onOffline());
  const stream = new env.MediaStream();
  pc.addTransceiver('video', { direction: 'recvonly', streams: [stream] });
  pc.addTransceiver('audio', { direction: 'recvonly', streams: [stream] });
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    if (video.srcObject !== stream) video.srcObject = stream;
  };
  pc.addEventListener('iceconnectionstatechange', () => {
    const st = pc.iceConnectionState;
    if (st === 'connected' || st === 'completed') env.clearTimeout(timer);
    if (st === 'failed') failed('ice-failed');
  });
  const onPlaying = () => {
    if (!done) events.onPlaying();
  };
  video.addEventListener('playing', onPlaying);

  (async () => {
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const r = await env.fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
      if (r.status === 404) return offline();
      if (r.status !== 201) return failed(`http-${r.status}`, (await r.text().catch(() => '')).slice(0, 300));
      location = new URL(r.headers.get('Location'), new URL(url, env.location?.href)).toString();
      await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
      timer = env.setTimeout(() => {
        const st = pc.iceConnectionState;
        if (st !== 'connected' && st !== 'completed') failed('no-ice');
      }, iceTimeoutMs);
    } catch (e) {
      failed('error', String(e?.message || e));
    }
  })();

  return {
    pc,
    stop() {
      done = true;
      env.clearTimeout(timer);
      video.removeEventListener('playing', onPlaying);
      pc.close();
      if (location) env.fetch(location, { method: 'DELETE' }).catch(() => {});
    },
  };
}
