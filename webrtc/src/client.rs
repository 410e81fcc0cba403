//! Peers our tests and load generators put in front of the endpoint instead of a browser
//! (sans-IO): a WHIP publisher ([`WhipClient`]) and a viewer ([`WhepClient`]).
//!
//! It is a str0m [`Rtc`] in RTP mode, so it does real ICE, DTLS and SRTP, and the RTP payloads
//! it sends are exactly the bytes given to it: the byte tests craft STAP-A/FU-A packets, lose or
//! reorder them, and see what the endpoint's depacketizer makes of them; the load generator
//! sends prerecorded H.264 access units through [`WhipClient::send_h264`] (RFC 6184
//! packetization through [`crate::packetize`]).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive, Transmit};
use str0m::rtp::{ExtensionMap, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

use crate::packetize::packetize_h264;

/// Largest RTP payload the packetizer produces (leaves room for headers, SRTP tag and a
/// 1500-byte path MTU).
pub const MAX_PAYLOAD: usize = 1200;

/// Something the client could not do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The answer did not parse or did not match the offer.
    #[error("bad SDP answer: {0}")]
    Answer(String),
    /// The WebRTC stack failed.
    #[error("WebRTC: {0}")]
    Rtc(#[from] str0m::RtcError),
    /// The answer has no codec for a track we send.
    #[error("the answer has no payload type for {0}")]
    NoPayloadType(&'static str),
    /// A server's offer did not parse or could not be answered.
    #[error("bad SDP offer: {0}")]
    Offer(String),
}

#[derive(Debug, Clone, Copy)]
struct Track {
    mid: Mid,
    pt: Option<Pt>,
    seq: u64,
}

/// What the client saw since it was created.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientStats {
    /// Keyframe requests (PLI/FIR) from the endpoint.
    pub keyframe_requests: u64,
    /// RTP packets written.
    pub packets_sent: u64,
}

/// What both peers share: the str0m instance, its address, the offer awaiting its answer and
/// the connection's state.
struct Conn {
    rtc: Rtc,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    failed: bool,
    deadline: Instant,
}

impl Conn {
    /// A peer at `local` offering one media line per entry of `lines`; returns it, its offer
    /// and the lines' mids.
    fn offer(mut rtc: Rtc, now: Instant, local: SocketAddr, lines: &[(MediaKind, Direction)]) -> (Self, String, Vec<Mid>) {
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut api = rtc.sdp_api();
        let mids = lines
            .iter()
            .map(|&(kind, dir)| api.add_media(kind, dir, None, None, None))
            .collect();
        let (offer, pending) = match api.apply() {
            Some((o, p)) => (o.to_sdp_string(), Some(p)),
            None => (String::new(), None),
        };
        let conn = Self {
            rtc,
            local,
            pending,
            connected: false,
            failed: false,
            deadline: now,
        };
        (conn, offer, mids)
    }

    fn accept_answer(&mut self, answer: &str) -> Result<(), ClientError> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| ClientError::Answer(e.to_string()))?;
        let pending = self.pending.take().ok_or_else(|| ClientError::Answer("no offer pending".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    fn is_failed(&self) -> bool {
        self.failed || !self.rtc.is_alive()
    }

    /// An ICE restart from `local` (a new network): new ICE credentials and a host candidate
    /// there (the old one stays: str0m clears none when the answer comes, and the old network
    /// just stays silent); returns the offer.
    fn restart(&mut self, local: SocketAddr) -> Result<String, ClientError> {
        self.local = local;
        self.failed = false;
        let mut api = self.rtc.sdp_api();
        api.ice_restart(true);
        let (offer, pending) = api.apply().ok_or_else(|| ClientError::Answer("nothing to offer".into()))?;
        self.pending = Some(pending);
        if let Ok(c) = Candidate::host(local, "udp") {
            self.rtc.add_local_candidate(c);
        }
        Ok(offer.to_sdp_string())
    }

    /// A datagram from the endpoint (ignored when it is no STUN, DTLS, RTP or RTCP).
    fn datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        buf: &[u8],
        out: &mut Vec<Transmit>,
        on_event: impl FnMut(Event),
    ) -> Result<(), ClientError> {
        let Ok(contents) = DatagramRecv::try_from(buf) else {
            return Ok(());
        };
        let receive = Receive {
            proto: Protocol::Udp,
            source,
            destination: self.local,
            contents,
        };
        self.rtc.handle_input(Input::Receive(now, receive))?;
        self.drain(out, on_event)
    }

    fn timeout(&mut self, now: Instant, out: &mut Vec<Transmit>, on_event: impl FnMut(Event)) -> Result<(), ClientError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        self.drain(out, on_event)
    }

    /// Polls until str0m waits for time to pass; events other than the connection's go to
    /// `on_event`.
    fn drain(&mut self, out: &mut Vec<Transmit>, mut on_event: impl FnMut(Event)) -> Result<(), ClientError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.deadline = t;
                    return Ok(());
                }
                Output::Transmit(t) => out.push(t),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected)) => self.failed = true,
                Output::Event(e) => on_event(e),
            }
        }
    }
}

/// One publishing peer.
pub struct WhipClient {
    conn: Conn,
    video: Option<Track>,
    audio: Option<Track>,
    stats: ClientStats,
}

impl WhipClient {
    /// Restarts ICE from a new address `local` (the publisher moved networks); returns the
    /// offer, whose answer goes to [`WhipClient::accept_answer`].
    pub fn restart_ice(&mut self, local: SocketAddr) -> Result<String, ClientError> {
        self.conn.restart(local)
    }

    /// A publisher that will send from `local`, with an H.264 and/or an Opus track; returns
    /// it and its SDP offer. `extensions` replaces the standard RTP header extension map
    /// (tests use it to send hostile extension values).
    pub fn new(now: Instant, local: SocketAddr, video: bool, audio: bool, extensions: Option<ExtensionMap>) -> (Self, String) {
        let mut cfg = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false);
        if let Some(map) = extensions {
            cfg = cfg.set_extension_map(map);
        }
        cfg.codec_config().add_h264(108.into(), Some(109.into()), true, 0x42e01f);
        let lines: Vec<_> = [(video, MediaKind::Video), (audio, MediaKind::Audio)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, kind)| (kind, Direction::SendOnly))
            .collect();
        let (conn, offer, mids) = Conn::offer(cfg.build(now), now, local, &lines);
        let mut mids = mids.into_iter();
        let mut track = |on: bool| on.then(|| mids.next()).flatten().map(|mid| Track { mid, pt: None, seq: 1 });
        let client = Self {
            video: track(video),
            audio: track(audio),
            conn,
            stats: ClientStats::default(),
        };
        (client, offer)
    }

    /// Applies the endpoint's answer; ICE starts.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), ClientError> {
        self.conn.accept_answer(answer)?;
        for (track, name) in [(&mut self.video, "video"), (&mut self.audio, "audio")] {
            if let Some(t) = track {
                let pt = self.conn.rtc.media(t.mid).and_then(|m| m.remote_pts().first().copied());
                t.pt = Some(pt.ok_or(ClientError::NoPayloadType(name))?);
            }
        }
        Ok(())
    }

    /// True once ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.conn.connected
    }

    /// True when the connection failed or was closed.
    pub fn is_failed(&self) -> bool {
        self.conn.is_failed()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// When [`WhipClient::handle_timeout`] is due.
    pub fn deadline(&self) -> Instant {
        self.conn.deadline
    }

    /// A datagram from the endpoint.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let stats = &mut self.stats;
        self.conn.datagram(now, source, buf, out, |e| count_event(stats, e))
    }

    /// Drives timers.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let stats = &mut self.stats;
        self.conn.timeout(now, out, |e| count_event(stats, e))
    }

    fn drain(&mut self, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let stats = &mut self.stats;
        self.conn.drain(out, |e| count_event(stats, e))
    }

    /// Writes one raw RTP packet on the video track. `seq` overrides the next sequence
    /// number (to reorder or skip); the track continues after the highest one written.
    pub fn write_video_rtp(
        &mut self,
        now: Instant,
        seq: Option<u64>,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
        out: &mut Vec<Transmit>,
    ) -> Result<(), ClientError> {
        self.write_rtp(MediaKind::Video, now, seq, rtp_time, marker, payload)?;
        self.drain(out)
    }

    /// Writes one Opus packet (one frame) on the audio track.
    pub fn send_opus(&mut self, now: Instant, rtp_time: u32, payload: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        self.write_rtp(MediaKind::Audio, now, None, rtp_time, false, payload)?;
        self.drain(out)
    }

    /// Packetizes one H.264 access unit (NAL units without start codes) per RFC 6184: SPS and
    /// PPS together in one STAP-A, other NAL units alone when they fit, FU-A when they do not.
    /// The last packet carries the marker bit.
    pub fn send_h264(&mut self, now: Instant, rtp_time: u32, nalus: &[&[u8]], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let packets = packetize_h264(nalus, MAX_PAYLOAD);
        for (i, payload) in packets.iter().enumerate() {
            self.write_rtp(MediaKind::Video, now, None, rtp_time, i + 1 == packets.len(), payload)?;
        }
        self.drain(out)
    }

    fn write_rtp(
        &mut self,
        kind: MediaKind,
        now: Instant,
        seq: Option<u64>,
        rtp_time: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        let (track, name) = match kind {
            MediaKind::Video => (&mut self.video, "video"),
            MediaKind::Audio => (&mut self.audio, "audio"),
        };
        let t = track.as_mut().ok_or(ClientError::NoPayloadType(name))?;
        let pt = t.pt.ok_or(ClientError::NoPayloadType(name))?;
        let seq = seq.unwrap_or(t.seq);
        t.seq = t.seq.max(seq + 1);
        let mid = t.mid;
        let mut api = self.conn.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else {
            return Err(ClientError::NoPayloadType(name));
        };
        let w = RtpWrite::new(pt, SeqNo::from(seq), rtp_time, now, payload.to_vec())
            .marker(marker)
            .nackable(true);
        tx.write_rtp(w);
        self.stats.packets_sent += 1;
        Ok(())
    }
}

fn count_event(stats: &mut ClientStats, e: Event) {
    if let Event::KeyframeRequest(_) = e {
        stats.keyframe_requests += 1;
    }
}

/// A frame a viewer received, depacketized by str0m.
#[derive(Debug, Clone)]
pub struct ReceivedFrame {
    /// Video or audio.
    pub track: crate::Track,
    /// Its codec.
    pub codec: Codec,
    /// RTP timestamp (extended) in the codec's clock.
    pub rtp_time: u64,
    /// The payload: an H.264 access unit in Annex B, a VP8/VP9 frame, an Opus packet.
    pub data: Vec<u8>,
    /// False when packets before it were lost.
    pub contiguous: bool,
}

/// One viewing peer, as a browser doing WHEP: a str0m [`Rtc`] in frame mode that offers to
/// receive video (H.264 and VP8) and audio (Opus), and keeps what it receives.
pub struct WhepClient {
    conn: Conn,
    video: Option<Mid>,
    /// Frames received, in order.
    pub frames: Vec<ReceivedFrame>,
}

impl WhepClient {
    /// A viewer at `local` with a video and/or an audio line; returns it and its offer.
    pub fn new(now: Instant, local: SocketAddr, video: bool, audio: bool) -> (Self, String) {
        let mut cfg = Rtc::builder().clear_codecs().enable_opus(true, false).enable_vp8(true);
        cfg.codec_config().add_h264(108.into(), Some(109.into()), true, 0x42e01f);
        let lines: Vec<_> = [(video, MediaKind::Video), (audio, MediaKind::Audio)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, kind)| (kind, Direction::RecvOnly))
            .collect();
        let (conn, offer, mids) = Conn::offer(cfg.build(now), now, local, &lines);
        let client = Self {
            conn,
            video: video.then(|| mids.first().copied()).flatten(),
            frames: Vec::new(),
        };
        (client, offer)
    }

    /// A viewer at `local` that answers a server's offer (servers whose viewers do not offer,
    /// e.g. Janus' streaming plugin, compared in bench/whep.sh); returns it and its answer.
    pub fn answer(now: Instant, local: SocketAddr, offer: &str) -> Result<(Self, String), ClientError> {
        let mut cfg = Rtc::builder().clear_codecs().enable_opus(true, false).enable_vp8(true);
        cfg.codec_config().add_h264(108.into(), Some(109.into()), true, 0x42e01f);
        let mut rtc = cfg.build(now);
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| ClientError::Offer(e.to_string()))?;
        let answer = rtc.sdp_api().accept_offer(offer)?.to_sdp_string();
        let conn = Conn {
            rtc,
            local,
            pending: None,
            connected: false,
            failed: false,
            deadline: now,
        };
        let client = Self {
            conn,
            video: None,
            frames: Vec::new(),
        };
        Ok((client, answer))
    }

    /// Answers a later offer of the server (tracks added or stopped).
    pub fn accept_offer(&mut self, offer: &str, out: &mut Vec<Transmit>) -> Result<String, ClientError> {
        let offer = SdpOffer::from_sdp_string(offer).map_err(|e| ClientError::Offer(e.to_string()))?;
        let answer = self.conn.rtc.sdp_api().accept_offer(offer)?.to_sdp_string();
        let frames = &mut self.frames;
        self.conn.drain(out, |e| keep_frame(frames, e))?;
        Ok(answer)
    }

    /// Applies the endpoint's answer; ICE starts.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), ClientError> {
        self.conn.accept_answer(answer)
    }

    /// True once ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.conn.connected
    }

    /// True when the connection failed or was closed.
    pub fn is_failed(&self) -> bool {
        self.conn.is_failed()
    }

    /// When [`WhepClient::handle_timeout`] is due.
    pub fn deadline(&self) -> Instant {
        self.conn.deadline
    }

    /// A datagram from the endpoint.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let frames = &mut self.frames;
        self.conn.datagram(now, source, buf, out, |e| keep_frame(frames, e))
    }

    /// Drives timers.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let frames = &mut self.frames;
        self.conn.timeout(now, out, |e| keep_frame(frames, e))
    }

    /// Asks the endpoint for a keyframe (RTCP PLI), as a browser does when it joins or loses one.
    pub fn request_keyframe(&mut self, out: &mut Vec<Transmit>) -> Result<bool, ClientError> {
        let Some(mid) = self.video else { return Ok(false) };
        let sent = match self.conn.rtc.writer(mid) {
            Some(mut w) if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) => {
                w.request_keyframe(None, KeyframeRequestKind::Pli)?;
                true
            }
            _ => false,
        };
        let frames = &mut self.frames;
        self.conn.drain(out, |e| keep_frame(frames, e))?;
        Ok(sent)
    }
}

fn keep_frame(frames: &mut Vec<ReceivedFrame>, e: Event) {
    if let Event::MediaData(d) = e {
        let codec = d.params.spec().codec;
        let track = if codec.is_audio() {
            crate::Track::Audio
        } else {
            crate::Track::Video
        };
        frames.push(ReceivedFrame {
            track,
            codec,
            rtp_time: d.time.numer(),
            data: d.data.to_vec(),
            contiguous: d.contiguous,
        });
    }
}
