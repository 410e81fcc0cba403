//! A WHIP publisher (sans-IO): the peer our tests and load generator put in front of the
//! endpoint instead of a browser.
//!
//! It is a str0m [`Rtc`] in RTP mode, so it does real ICE, DTLS and SRTP, and the RTP payloads
//! it sends are exactly the bytes given to it: the byte tests craft STAP-A/FU-A packets, lose or
//! reorder them, and see what the endpoint's depacketizer makes of them; the load generator
//! sends prerecorded H.264 access units through [`WhipClient::send_h264`] (RFC 6184
//! packetization through [`crate::packetize`]).

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid, Pt};
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

/// One publishing peer.
pub struct WhipClient {
    rtc: Rtc,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    video: Option<Track>,
    audio: Option<Track>,
    connected: bool,
    failed: bool,
    deadline: Instant,
    stats: ClientStats,
}

impl WhipClient {
    /// A publisher that will send from `local`, with an H.264 and/or an Opus track; returns
    /// it and its SDP offer. `extensions` replaces the standard RTP header extension map
    /// (tests use it to send hostile extension values).
    pub fn new(now: Instant, local: SocketAddr, video: bool, audio: bool, extensions: Option<ExtensionMap>) -> (Self, String) {
        let mut cfg = Rtc::builder().set_rtp_mode(true).clear_codecs().enable_opus(true, false);
        if let Some(map) = extensions {
            cfg = cfg.set_extension_map(map);
        }
        cfg.codec_config().add_h264(108.into(), Some(109.into()), true, 0x42e01f);
        let mut rtc = cfg.build(now);
        if let Ok(c) = Candidate::host(local, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut api = rtc.sdp_api();
        let v = video.then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None));
        let a = audio.then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let (offer, pending) = match api.apply() {
            Some((o, p)) => (o.to_sdp_string(), Some(p)),
            None => (String::new(), None),
        };
        let track = |mid| Track { mid, pt: None, seq: 1 };
        let client = Self {
            rtc,
            local,
            pending,
            video: v.map(track),
            audio: a.map(track),
            connected: false,
            failed: false,
            deadline: now,
            stats: ClientStats::default(),
        };
        (client, offer)
    }

    /// Applies the endpoint's answer; ICE starts.
    pub fn accept_answer(&mut self, answer: &str) -> Result<(), ClientError> {
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| ClientError::Answer(e.to_string()))?;
        let pending = self.pending.take().ok_or_else(|| ClientError::Answer("no offer pending".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        for (track, name) in [(&mut self.video, "video"), (&mut self.audio, "audio")] {
            if let Some(t) = track {
                let pt = self.rtc.media(t.mid).and_then(|m| m.remote_pts().first().copied());
                t.pt = Some(pt.ok_or(ClientError::NoPayloadType(name))?);
            }
        }
        Ok(())
    }

    /// True once ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// True when the connection failed or was closed.
    pub fn is_failed(&self) -> bool {
        self.failed || !self.rtc.is_alive()
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// When [`WhipClient::handle_timeout`] is due.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A datagram from the endpoint.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        let Ok(contents) = DatagramRecv::try_from(buf) else {
            return Ok(());
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        self.rtc.handle_input(input)?;
        self.drain(out)
    }

    /// Drives timers.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        self.drain(out)
    }

    fn drain(&mut self, out: &mut Vec<Transmit>) -> Result<(), ClientError> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => {
                    self.deadline = t;
                    return Ok(());
                }
                Output::Transmit(t) => out.push(t),
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::IceConnectionStateChange(IceConnectionState::Disconnected)) => self.failed = true,
                Output::Event(Event::KeyframeRequest(_)) => self.stats.keyframe_requests += 1,
                Output::Event(_) => {}
            }
        }
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
        let mut api = self.rtc.direct_api();
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
