// The two peer connections of a participant: the publisher (the client offers, `pub:offer`)
// and the subscriber (the server offers, `sub:offer`; a new session number means a new peer
// connection). Offers are handled one at a time, in order; an offer older than one handled is
// skipped.

/// Puts H.264 first in a transceiver's codecs (HLS and FLV viewers then need no transcoding).
export function preferH264(codecs) {
  const h264 = codecs.filter((c) => /h264/i.test(c.mimeType));
  // Constrained baseline with packetization-mode=1 first: what every decoder takes.
  h264.sort((a, b) => score(b) - score(a));
  return [...h264, ...codecs.filter((c) => !/h264/i.test(c.mimeType))];
}

function score(c) {
  const f = c.sdpFmtpLine || '';
  return (f.includes('packetization-mode=1') ? 2 : 0) + (f.includes('42e01f') ? 1 : 0);
}

export class Publisher {
  constructor(RTC, config, stream, signalling) {
    this.pc = new RTC(config);
    this.signalling = signalling;
    this.senders = {};
    for (const track of stream.getTracks()) {
      const tr = this.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] });
      this.senders[track.kind] = tr.sender;
      if (track.kind === 'video' && tr.setCodecPreferences && globalThis.RTCRtpReceiver?.getCapabilities) {
        const caps = RTCRtpReceiver.getCapabilities('video');
        if (caps) {
          try { tr.setCodecPreferences(preferH264(caps.codecs)); } catch { /* keep the browser's order */ }
        }
      }
    }
  }

  async start() {
    const offer = await this.pc.createOffer();
    await this.pc.setLocalDescription(offer);
    const r = await this.signalling.request('pub:offer', { sdp: this.pc.localDescription.sdp });
    await this.pc.setRemoteDescription({ type: 'answer', sdp: r.sdp });
  }

  /// An ICE restart (the network changed): a new offer with new ICE credentials on the same
  /// server session, so the participant's stream goes on.
  async restart() {
    const offer = await this.pc.createOffer({ iceRestart: true });
    await this.pc.setLocalDescription(offer);
    const r = await this.signalling.request('pub:offer', { sdp: this.pc.localDescription.sdp, restart: true });
    await this.pc.setRemoteDescription({ type: 'answer', sdp: r.sdp });
  }

  /// Swaps the camera for another track (screen share) without renegotiating.
  replace(kind, track) {
    return this.senders[kind]?.replaceTrack(track);
  }

  close() {
    this.pc.close();
  }
}

export class Subscriber {
  /// `onTrack(streamId, track, stream)` for each remote track; `onState(state)`.
  constructor(RTC, config, signalling, { onTrack, onState }) {
    this.RTC = RTC;
    this.config = config;
    this.signalling = signalling;
    this.onTrack = onTrack;
    this.onState = onState || (() => {});
    this.pc = null;
    this.session = 0;
    this.seq = 0;
    this.chain = Promise.resolve();
    this.handled = 0;
  }

  /// A `sub:offer`; resolves once answered.
  offer(o) {
    this.chain = this.chain.then(() => this.answer(o)).catch((e) => this.onState('error', e));
    return this.chain;
  }

  async answer({ session, seq, sdp }) {
    if (session < this.session || (session === this.session && seq <= this.seq)) return; // stale
    if (session !== this.session) {
      this.pc?.close();
      this.pc = new this.RTC(this.config);
      this.pc.ontrack = (e) => this.onTrack(e.streams[0]?.id, e.track, e.streams[0]);
      this.pc.oniceconnectionstatechange = () => this.onState(this.pc.iceConnectionState);
      this.session = session;
    }
    this.seq = seq;
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    await this.signalling.request('sub:answer', { session, seq, sdp: this.pc.localDescription.sdp });
    this.handled += 1;
  }

  close() {
    this.pc?.close();
    this.pc = null;
  }
}

/// Calls `onLost()` when `pc`'s ICE is `failed`, or `disconnected` for `graceMs` (a browser
/// goes `disconnected` on a short loss and often comes back by itself), and again every
/// `retryMs` while it stays so; `onBack()` when it is connected again after that. Returns a
/// function that stops watching.
export function watchIce(pc, onLost, { graceMs = 2000, retryMs = 4000, onBack = () => {} } = {}) {
  let wasLost = false;
  let timer = null;
  const clear = () => { if (timer) { clearTimeout(timer); timer = null; } };
  const lost = () => {
    timer = setTimeout(lost, retryMs);
    wasLost = true;
    onLost();
  };
  const check = () => {
    const st = pc.iceConnectionState;
    if (st === 'connected' || st === 'completed' || st === 'closed') {
      clear();
      if (wasLost && st !== 'closed') onBack();
      wasLost = false;
    }
    else if (st === 'failed' && !timer) lost();
    else if (st === 'disconnected' && !timer) timer = setTimeout(lost, graceMs);
  };
  pc.addEventListener('iceconnectionstatechange', check);
  return () => {
    clear();
    pc.removeEventListener('iceconnectionstatechange', check);
  };
}
