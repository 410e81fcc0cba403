//! Many WebRTC sessions on one UDP port (sans-IO).
//!
//! A session receives the peer's tracks (a WHIP publisher), sends tracks to it (a WHEP viewer),
//! or both (a room participant): its [`SessionSpec`] says which. Each is a str0m [`Rtc`] in
//! ICE-lite mode with its own ICE credentials. A datagram
//! is routed in O(1): STUN by the local ufrag in its USERNAME, everything else (DTLS, SRTP,
//! SRTCP) by the source address learnt from an accepted STUN request. `Rtc::accepts` guards the
//! final hand-over, so a datagram never reaches a session it does not belong to; datagrams that
//! match nothing are counted and dropped.
//!
//! The shell (the gateway) owns the socket: it feeds [`Endpoint::handle_datagram`] and
//! [`Endpoint::handle_timeout`], writes media with [`Endpoint::write`], sends the
//! [`Outputs::transmits`], and acts on [`Outputs::events`]. Every call that changes a session
//! drains its `poll_output` before returning (str0m's contract).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Pt, Rid, Rids};
use str0m::net::{DatagramRecv, Protocol, Receive, Transmit};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};

use crate::{RtpFrame, Track};

/// Limits and addresses.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Host candidates to advertise (public address for 1:1 NAT, LAN address, loopback).
    pub candidates: Vec<SocketAddr>,
    /// Most sessions at once.
    pub max_sessions: usize,
    /// A session that is not connected after this long is dropped.
    pub connect_timeout: Duration,
    /// A connected session that received nothing for this long is ended.
    pub idle_timeout: Duration,
    /// Packets the video reorder buffer holds (at least the packets of the largest keyframe).
    pub video_reorder_packets: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            candidates: Vec::new(),
            max_sessions: 1000,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(4),
            video_reorder_packets: 400,
        }
    }
}

/// Identifies a session inside the endpoint.
pub type SessionId = u64;

/// Why an offer was refused (each maps to a WHIP 4xx/5xx).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The SDP does not parse.
    #[error("malformed SDP offer: {0}")]
    BadSdp(String),
    /// str0m refused the offer (no fingerprint, inconsistent BUNDLE, ...).
    #[error("offer not acceptable: {0}")]
    Rejected(String),
    /// No media line carries a codec we take.
    #[error("{0}")]
    NoCodec(String),
    /// Too many sessions.
    #[error("too many WebRTC sessions ({0})")]
    Full(usize),
    /// No address to advertise.
    #[error("no ICE candidate address configured")]
    NoCandidate,
    /// The session to restart is gone (it ended).
    #[error("no such WebRTC session")]
    NoSession,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Closed on request (WHIP DELETE, shutdown).
    Requested,
    /// ICE never completed.
    ConnectTimeout,
    /// Nothing received for `idle_timeout`.
    Idle,
    /// ICE disconnected or DTLS closed.
    Disconnected,
    /// The WebRTC stack reported an error.
    Error(String),
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Requested => f.write_str("closed on request"),
            Self::ConnectTimeout => f.write_str("ICE/DTLS did not complete in time"),
            Self::Idle => f.write_str("publisher went silent"),
            Self::Disconnected => f.write_str("peer disconnected"),
            Self::Error(e) => write!(f, "WebRTC error: {e}"),
        }
    }
}

/// Why media could not be written to a session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// No such session (it ended).
    #[error("no such WebRTC session")]
    NoSession,
    /// The session does not send this kind of track.
    #[error("the session sends no {0:?} track")]
    NotSending(Track),
    /// ICE and DTLS are not up yet (str0m would drop the media).
    #[error("the session is not connected yet")]
    NotConnected,
    /// The WebRTC stack refused the media.
    #[error("WebRTC: {0}")]
    Rtc(String),
    /// The feed's video is being skipped: its send queue was more than [`MAX_QUEUE_DELAY`]
    /// behind (the peer's bandwidth estimate is below what the feeds send), and the feed waits
    /// for a keyframe after the queue has drained.
    #[error("the peer's bandwidth is short: video skipped until a keyframe")]
    Congested,
}

/// The longest a feed's video may wait in its session's send queue (the pacer holds media to
/// the congestion control's estimate): beyond, its frames are skipped until the queue has
/// drained below [`RESUME_QUEUE_DELAY`] and a keyframe comes, so that latency and memory stay
/// bounded whatever the peer's bandwidth.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_millis(400);

/// How far behind a skipping feed's queue must have come back before a keyframe resumes it.
pub const RESUME_QUEUE_DELAY: Duration = Duration::from_millis(100);

/// What a new session does with media.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSpec {
    /// Take the tracks the peer sends: video in H.264 (VP8/VP9 when the offer has no H.264),
    /// audio in Opus.
    pub receive: bool,
    /// The video codec this session sends, if it sends video.
    pub send_video: Option<Codec>,
    /// The audio codec it sends (Opus), if it sends audio.
    pub send_audio: Option<Codec>,
    /// The session outlives ICE disconnection and silence this long (instead of ending at
    /// once, and after [`EndpointConfig::idle_timeout`]), so that its peer can come back on a
    /// new network with an ICE restart ([`Endpoint::restart`]): a room participant's
    /// publishing session keeps its stream.
    pub grace: Option<Duration>,
}

impl SessionSpec {
    /// A publisher's session (WHIP): receives, sends nothing.
    pub fn receiver() -> Self {
        Self {
            receive: true,
            ..Self::default()
        }
    }

    /// A viewer's session (WHEP): sends tracks in these codecs, receives nothing.
    pub fn sender(video: Option<Codec>, audio: Option<Codec>) -> Self {
        Self {
            receive: false,
            send_video: video,
            send_audio: audio,
            grace: None,
        }
    }

    fn sends(&self) -> bool {
        self.send_video.is_some() || self.send_audio.is_some()
    }
}

/// What happened, for the shell.
#[derive(Debug)]
pub enum EndpointEvent {
    /// ICE and DTLS are up.
    Connected(SessionId),
    /// A depacketized frame.
    Media(SessionId, RtpFrame),
    /// The peer asks for a keyframe on the video the session sends (RTCP PLI or FIR): on its
    /// single video track (`None`) or on a feed's.
    KeyframeRequest(SessionId, Option<FeedId>),
    /// The bandwidth towards the peer of a session the server offers, as its congestion
    /// control (TWCC) estimates it, in bits per second.
    Bitrate(SessionId, u64),
    /// The session is gone.
    Closed(SessionId, CloseReason),
}

/// Output of one call.
#[derive(Default)]
pub struct Outputs {
    /// Datagrams to send.
    pub transmits: Vec<Transmit>,
    /// Events.
    pub events: Vec<EndpointEvent>,
}

/// Counters over the endpoint's life.
#[derive(Debug, Default, Clone, Copy)]
pub struct EndpointCounters {
    /// Datagrams that matched no session.
    pub unroutable: u64,
    /// Datagrams that are neither STUN, DTLS, RTP nor RTCP.
    pub malformed: u64,
    /// Errors from sessions' `handle_input` (the datagram was dropped).
    pub input_errors: u64,
    /// RTP packets received (retransmissions included), all sessions.
    pub rtp_packets: u64,
    /// NACKs sent, all sessions.
    pub nacks: u64,
    /// PLIs sent, all sessions.
    pub plis: u64,
    /// RTP packets sent (retransmissions included), all sessions.
    pub rtp_packets_out: u64,
    /// NACKs received from peers we send to.
    pub nacks_in: u64,
    /// Keyframe requests (PLI and FIR) received from peers we send to.
    pub keyframe_requests_in: u64,
    /// Video frames of feeds skipped because their send queue was too far behind
    /// ([`WriteError::Congested`]).
    pub congestion_skipped: u64,
}

/// A session's last ingress statistics from str0m (cumulative), kept to add only the growth
/// to the endpoint's counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    /// RTP packets received, retransmissions included.
    pub packets: u64,
    /// NACKs sent.
    pub nacks: u64,
    /// PLIs sent.
    pub plis: u64,
}

/// What the offer negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// The session receives video (H.264, VP8 or VP9).
    pub video: bool,
    /// The session receives audio (Opus).
    pub audio: bool,
    /// The session sends video in this codec.
    pub send_video: Option<Codec>,
    /// The session sends audio in this codec.
    pub send_audio: Option<Codec>,
}

/// A session created from an offer.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its id in the endpoint.
    pub id: SessionId,
    /// The SDP answer.
    pub answer: String,
    /// What was negotiated.
    pub negotiated: Negotiated,
}

/// A track the session sends: where and with which payload type.
#[derive(Debug, Clone, Copy)]
struct SendTrack {
    mid: Mid,
    pt: Pt,
    clock: Frequency,
}

struct Session {
    rtc: Rtc,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    created: Instant,
    last_rx: Instant,
    deadline: Instant,
    connected: bool,
    video_mid: Option<Mid>,
    audio_mid: Option<Mid>,
    send_video: Option<SendTrack>,
    send_audio: Option<SendTrack>,
    stats: [SessionStats; 2],
    /// Egress statistics per sent track (video, audio), same scheme as `stats`.
    egress: [EgressSeen; 2],
    spec: SessionSpec,
    dead: Option<CloseReason>,
    /// Feeds of a session the server offers (a room's subscribing peer connection).
    feeds: Vec<Feed>,
    /// The server's offer awaiting the peer's answer.
    pending: Option<SdpPendingOffer>,
    next_feed: FeedId,
}

/// One feed of a session: a stream's video and/or audio, on m-lines of the server's offers.
#[derive(Debug, Clone)]
struct Feed {
    id: FeedId,
    /// The m-line and the codec wanted on it; the payload type once answered.
    video: Option<(Mid, Codec, Option<SendTrack>)>,
    audio: Option<(Mid, Codec, Option<SendTrack>)>,
    removed: bool,
    /// Its video is being skipped (see [`WriteError::Congested`]), with when a keyframe was
    /// last asked for (once the queue has drained).
    skipping: Option<Option<Instant>>,
}

/// A feed's id within its session.
pub type FeedId = u32;

/// What a feed sends: the stream it belongs to (the msid stream id the peer sees: the stream
/// key, with characters an msid cannot carry, such as "/", as ".") and its tracks' codecs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedSpec {
    /// The stream id the peer's tracks are grouped by.
    pub stream: String,
    /// The video codec, if the feed has video.
    pub video: Option<Codec>,
    /// The audio codec (Opus), if the feed has audio.
    pub audio: Option<Codec>,
}

/// Why a feed operation was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedError {
    /// No such session.
    #[error("no such WebRTC session")]
    NoSession,
    /// No such feed in the session.
    #[error("no such feed")]
    NoFeed,
    /// An offer is out and its answer has not come.
    #[error("an offer is waiting for its answer")]
    OfferPending,
    /// No offer is out.
    #[error("no offer is waiting for an answer")]
    NoOfferPending,
    /// The answer did not parse or fit the offer.
    #[error("bad SDP answer: {0}")]
    BadAnswer(String),
    /// The session is at its feed limit.
    #[error("a session sends at most {0} feeds")]
    TooMany(usize),
}

/// A peer's offer as str0m takes it, for a session doing what `spec` says: checked line by
/// line first (a clear error), and for a sending session with one `a=msid` stream: str0m names
/// each sent track's stream after the offer's `a=msid` (a browser's receive-only lines have
/// none, so each got a random one), and a browser synchronises audio with video only within one
/// stream.
fn parse_offer(offer: &str, spec: &SessionSpec) -> Result<SdpOffer, OfferError> {
    if let Some(why) = sdp_line_error(offer) {
        return Err(OfferError::BadSdp(why));
    }
    let text = if spec.sends() {
        with_msid(offer, SENT_STREAM)
    } else {
        offer.to_owned()
    };
    SdpOffer::from_sdp_string(&text).map_err(|e| OfferError::BadSdp(describe_parse_error(&text, &e.to_string())))
}

/// What to do with a feed's video frame at `now`, its send queue `behind` by that much (see
/// [`WriteError::Congested`]); `skipping` is the feed's state.
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    Send,
    Drop,
    /// Drop, and ask the publisher for a keyframe: the queue has drained.
    DropAndAsk,
}

/// How often a skipping feed asks again for the keyframe that resumes it.
const SKIP_KEYFRAME_EVERY: Duration = Duration::from_secs(1);

fn skip(skipping: &mut Option<Option<Instant>>, now: Instant, behind: Duration, keyframe: bool) -> Skip {
    match *skipping {
        None if behind > MAX_QUEUE_DELAY => {
            *skipping = Some(None);
            Skip::Drop
        }
        None => Skip::Send,
        Some(_) if behind > RESUME_QUEUE_DELAY => Skip::Drop,
        Some(_) if keyframe => {
            *skipping = None;
            Skip::Send
        }
        Some(Some(asked)) if now.saturating_duration_since(asked) < SKIP_KEYFRAME_EVERY => Skip::Drop,
        Some(_) => {
            *skipping = Some(Some(now));
            Skip::DropAndAsk
        }
    }
}

/// Where the congestion control of a session the server offers starts.
const INITIAL_ESTIMATE_KBPS: u64 = 600;

/// Most feeds one session sends (m-lines are never removed, so removed feeds count too).
pub const MAX_FEEDS: usize = 32;

impl Session {
    /// A session nothing has happened to yet.
    fn new(rtc: Rtc, ufrag: String, now: Instant, spec: SessionSpec) -> Self {
        Self {
            rtc,
            ufrag,
            addrs: Vec::new(),
            created: now,
            last_rx: now,
            deadline: now,
            connected: false,
            video_mid: None,
            audio_mid: None,
            send_video: None,
            send_audio: None,
            stats: [SessionStats::default(); 2],
            egress: [EgressSeen::default(); 2],
            spec,
            dead: None,
            feeds: Vec::new(),
            pending: None,
            next_feed: 1,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct EgressSeen {
    packets: u64,
    nacks: u64,
    keyframe_requests: u64,
}

/// Most source addresses one session may be reached from.
const MAX_ADDRS_PER_SESSION: usize = 8;

/// The endpoint.
pub struct Endpoint {
    config: EndpointConfig,
    sessions: HashMap<SessionId, Session>,
    by_ufrag: HashMap<String, SessionId>,
    by_addr: HashMap<SocketAddr, SessionId>,
    next_id: SessionId,
    counters: EndpointCounters,
    /// The latest time a caller gave (datagrams, timeouts): a send queue's age is taken
    /// against it.
    now: Option<Instant>,
}

impl Endpoint {
    /// An endpoint with no sessions.
    pub fn new(config: EndpointConfig) -> Self {
        Self {
            config,
            sessions: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            next_id: 1,
            counters: EndpointCounters::default(),
            now: None,
        }
    }

    fn clock(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
    }

    /// Counters.
    pub fn counters(&self) -> EndpointCounters {
        self.counters
    }

    /// Sessions alive.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Refuses a new session when the endpoint is full or has no address to offer.
    fn check_room(&self) -> Result<(), OfferError> {
        if self.sessions.len() >= self.config.max_sessions {
            return Err(OfferError::Full(self.config.max_sessions));
        }
        if self.config.candidates.is_empty() {
            return Err(OfferError::NoCandidate);
        }
        Ok(())
    }

    /// The endpoint's addresses as a new session's host candidates.
    fn add_candidates(&self, rtc: &mut Rtc) {
        for addr in &self.config.candidates {
            match Candidate::host(*addr, "udp") {
                Ok(c) => {
                    rtc.add_local_candidate(c);
                }
                Err(e) => tracing::warn!(%addr, error = %e, "ICE candidate refused"),
            }
        }
    }

    /// Accepts an offer: a new session doing what `spec` says, and its SDP answer.
    pub fn accept_offer(&mut self, now: Instant, offer: &str, spec: &SessionSpec, out: &mut Outputs) -> Result<Accepted, OfferError> {
        self.check_room()?;
        let mids: Vec<Mid> = offer
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
            .filter(|m| !m.is_empty() && m.len() <= 16)
            .map(Mid::from)
            .collect();
        let lines = offered_lines(offer);
        // What the peer sends (for a receiving session) and what it can receive (for a sending one).
        let sends_kind = |k: &str| lines.iter().any(|l| l.kind == k && l.sends);
        let receives_kind = |k: &str| lines.iter().any(|l| l.kind == k && l.receives);
        // Received H.264 is passed through; VP8/VP9 are transcoded, so they are answered only
        // when the offer has no H.264 we take (str0m would otherwise answer in the offer's order).
        let offers_h264 = offers_h264_mode1(offer);
        let offer = parse_offer(offer, spec)?;
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .set_reordering_size_video(self.config.video_reorder_packets)
            .set_stats_interval(Some(Duration::from_secs(1)));
        let receive_vpx = spec.receive && !offers_h264;
        let h264 = spec.receive || spec.send_video == Some(Codec::H264);
        let vp8 = receive_vpx || spec.send_video == Some(Codec::Vp8);
        let vp9 = receive_vpx || spec.send_video == Some(Codec::Vp9);
        if spec.receive || spec.send_audio == Some(Codec::Opus) {
            cfg = cfg.enable_opus(true, false);
        }
        if h264 {
            // Every H.264 profile browsers offer, packetization-mode 1 only (FU-A/STAP-A), each
            // with an RTX payload type so that NACKed packets can be resent.
            let cc = cfg.codec_config();
            for (pt, rtx, profile) in H264_PROFILES {
                cc.add_h264(pt.into(), Some(rtx.into()), true, profile);
            }
        }
        cfg = cfg.enable_vp8(vp8).enable_vp9(vp9);
        let mut rtc = cfg.build(now);
        self.add_candidates(&mut rtc);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| OfferError::Rejected(e.to_string()))?;
        let mut session = Session::new(rtc, ufrag.clone(), now, spec.clone());
        let id = self.next_id;
        self.next_id += 1;
        for mid in mids {
            pick_tracks(&mut session, mid, spec);
        }
        drain(id, &mut session, &mut self.counters, out);
        let negotiated = Negotiated {
            video: session.video_mid.is_some(),
            audio: session.audio_mid.is_some(),
            send_video: spec.send_video.filter(|_| session.send_video.is_some()),
            send_audio: spec.send_audio.filter(|_| session.send_audio.is_some()),
        };
        let receives = negotiated.video || negotiated.audio;
        let sends = negotiated.send_video.is_some() || negotiated.send_audio.is_some();
        if spec.receive && !spec.sends() {
            // A track the publisher sends but we cannot take would vanish silently: refuse.
            if sends_kind("video") && !negotiated.video {
                return Err(OfferError::NoCodec(
                    "video: the offer has none of H.264 (packetization-mode=1), VP8 or VP9".into(),
                ));
            }
            if sends_kind("audio") && !negotiated.audio {
                return Err(OfferError::NoCodec("audio: the offer has no Opus".into()));
            }
        }
        if spec.sends() {
            // A viewer must get every track the stream has that it asked for.
            if let Some(c) = spec.send_video.filter(|_| receives_kind("video") && session.send_video.is_none()) {
                return Err(OfferError::NoCodec(format!(
                    "video: the stream is {}, and the offer cannot receive it",
                    codec_name(c)
                )));
            }
            if let Some(c) = spec.send_audio.filter(|_| receives_kind("audio") && session.send_audio.is_none()) {
                return Err(OfferError::NoCodec(format!(
                    "audio: the stream is {}, and the offer cannot receive it",
                    codec_name(c)
                )));
            }
        }
        if !receives && !sends {
            return Err(OfferError::NoCodec(if spec.sends() {
                "the offer has no audio or video line that can receive the stream".into()
            } else {
                "the offer has no audio or video line to receive".into()
            }));
        }
        self.by_ufrag.insert(ufrag, id);
        self.sessions.insert(id, session);
        Ok(Accepted {
            id,
            answer: answer.to_sdp_string(),
            negotiated,
        })
    }

    /// Writes one frame on a track the session sends: an H.264 access unit (Annex B, which
    /// str0m packetizes per RFC 6184), a VP8/VP9 frame or an Opus packet. `rtp_time` is in the
    /// codec's clock (90 kHz video, 48 kHz Opus); `wallclock` is when the frame was captured
    /// (for the RTCP sender reports that let the receiver synchronise audio and video).
    pub fn write(
        &mut self,
        id: SessionId,
        track: Track,
        wallclock: Instant,
        rtp_time: u64,
        data: &[u8],
        out: &mut Outputs,
    ) -> Result<(), WriteError> {
        let s = self.sessions.get_mut(&id).ok_or(WriteError::NoSession)?;
        let t = match track {
            Track::Video => s.send_video,
            Track::Audio => s.send_audio,
        }
        .ok_or(WriteError::NotSending(track))?;
        self.write_on(id, t, track, wallclock, rtp_time, data, out)
    }

    /// An ICE restart of session `id`, which its peer offered (a publisher back on a new
    /// network: the room's `pub:offer` with `restart`): the peer's new offer, with new ICE
    /// credentials, on the same session, its tracks and its stream. Returns the answer (new local
    /// credentials; the same candidates). The addresses learnt before are forgotten: the peer's
    /// checks on the new credentials route to the session.
    pub fn restart(&mut self, now: Instant, id: SessionId, offer: &str, out: &mut Outputs) -> Result<String, OfferError> {
        let s = self.sessions.get_mut(&id).ok_or(OfferError::NoSession)?;
        if s.dead.is_some() {
            return Err(OfferError::NoSession);
        }
        let parsed = parse_offer(offer, &s.spec)?;
        let answer = s
            .rtc
            .sdp_api()
            .accept_offer(parsed)
            .map_err(|e| OfferError::Rejected(e.to_string()))?;
        let ufrag = s.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != s.ufrag {
            self.by_ufrag.remove(&s.ufrag);
            self.by_ufrag.insert(ufrag.clone(), id);
            s.ufrag = ufrag;
        }
        for a in s.addrs.drain(..) {
            if self.by_addr.get(&a) == Some(&id) {
                self.by_addr.remove(&a);
            }
        }
        s.last_rx = now;
        drain(id, s, &mut self.counters, out);
        Ok(answer.to_sdp_string())
    }

    fn destination_for(&self, source: SocketAddr) -> SocketAddr {
        let c = &self.config.candidates;
        c.iter()
            .find(|a| a.ip().is_loopback() == source.ip().is_loopback() && a.is_ipv4() == source.is_ipv4())
            .or_else(|| c.first())
            .copied()
            .unwrap_or(source)
    }

    /// Routes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, buf: &[u8], out: &mut Outputs) {
        self.clock(now);
        let contents = match DatagramRecv::try_from(buf) {
            Ok(c) => c,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        let destination = self.destination_for(source);
        let mut id = self.by_addr.get(&source).copied();
        let mut stun = false;
        if id.is_none() {
            if let Ok(msg) = str0m::ice::StunMessage::parse(buf) {
                stun = true;
                if let Some((local, _)) = msg.split_username() {
                    id = self.by_ufrag.get(local).copied();
                }
            }
        }
        let Some(id) = id else {
            self.counters.unroutable += 1;
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            self.counters.unroutable += 1;
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );
        if !s.rtc.accepts(&input) {
            self.counters.unroutable += 1;
            return;
        }
        s.last_rx = now;
        if let Err(e) = s.rtc.handle_input(input) {
            self.counters.input_errors += 1;
            tracing::debug!(session = id, error = %e, "datagram refused");
        }
        if stun && !s.addrs.contains(&source) && s.addrs.len() < MAX_ADDRS_PER_SESSION {
            s.addrs.push(source);
            self.by_addr.insert(source, id);
        }
        drain(id, s, &mut self.counters, out);
        // Only this session can have died here; timers reap the others.
        self.remove_if_dead(id, out);
    }

    /// The earliest instant a session needs [`Endpoint::handle_timeout`].
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sessions.values().map(|s| s.deadline).min()
    }

    /// Drives timers: str0m's own, and connect/idle timeouts.
    pub fn handle_timeout(&mut self, now: Instant, out: &mut Outputs) {
        self.clock(now);
        for (&id, s) in self.sessions.iter_mut() {
            if s.dead.is_none() {
                if !s.connected && now.saturating_duration_since(s.created) > self.config.connect_timeout {
                    s.dead = Some(CloseReason::ConnectTimeout);
                } else if s.connected
                    && now.saturating_duration_since(s.last_rx) > s.spec.grace.unwrap_or_default().max(self.config.idle_timeout)
                {
                    s.dead = Some(CloseReason::Idle);
                }
            }
            if s.dead.is_some() || s.deadline > now {
                continue;
            }
            if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                s.dead = Some(CloseReason::Error(e.to_string()));
                continue;
            }
            drain(id, s, &mut self.counters, out);
        }
        self.reap(out);
    }

    /// Asks a publisher for a keyframe (RTCP PLI): of one simulcast layer, or (`None`) of its
    /// video (every layer of a simulcast publisher). False if the session or its video is gone.
    pub fn request_keyframe(&mut self, id: SessionId, layer: Option<Rid>, out: &mut Outputs) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        let Some(mid) = s.video_mid else {
            return false;
        };
        let rids: Vec<Option<Rid>> = match (layer, s.rtc.media(mid).map(|m| m.rids_rx())) {
            (Some(r), _) => vec![Some(r)],
            (None, Some(Rids::Specific(v))) => v.iter().copied().map(Some).collect(),
            (None, _) => vec![None],
        };
        let sent = match s.rtc.writer(mid) {
            Some(mut w) if w.is_request_keyframe_possible(KeyframeRequestKind::Pli) => {
                // Every layer is asked (no short circuit).
                let asked: Vec<bool> = rids
                    .into_iter()
                    .map(|rid| w.request_keyframe(rid, KeyframeRequestKind::Pli).is_ok())
                    .collect();
                asked.contains(&true)
            }
            _ => false,
        };
        drain(id, s, &mut self.counters, out);
        sent
    }

    /// Ends a session (WHIP DELETE, shutdown).
    pub fn close(&mut self, id: SessionId, out: &mut Outputs) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.rtc.disconnect();
            s.dead.get_or_insert(CloseReason::Requested);
            drain(id, s, &mut self.counters, out);
        }
        self.remove_if_dead(id, out);
    }

    /// A session the server offers (a room's subscribing peer connection), sending `feeds`;
    /// returns its id, the feeds' ids and the offer. The peer's answer goes to
    /// [`Endpoint::accept_answer`]; later feeds come and go by new offers
    /// ([`Endpoint::add_feed`], [`Endpoint::remove_feed`]).
    pub fn offer_session(
        &mut self,
        now: Instant,
        feeds: &[FeedSpec],
        out: &mut Outputs,
    ) -> Result<(SessionId, Vec<FeedId>, String), OfferError> {
        self.check_room()?;
        if feeds.is_empty() || feeds.len() > MAX_FEEDS {
            return Err(OfferError::NoCodec(format!("a session offers 1 to {MAX_FEEDS} feeds")));
        }
        let creds = IceCreds::new();
        let ufrag = creds.ufrag.clone();
        let mut cfg = Rtc::builder()
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .clear_codecs()
            .set_stats_interval(Some(Duration::from_secs(1)))
            // Congestion control towards the peer: what a simulcast feed's layer is chosen by.
            .enable_bwe(Some(Bitrate::kbps(INITIAL_ESTIMATE_KBPS)))
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_vp9(true);
        let cc = cfg.codec_config();
        for (pt, rtx, profile) in H264_PROFILES {
            cc.add_h264(pt.into(), Some(rtx.into()), true, profile);
        }
        let mut rtc = cfg.build(now);
        self.add_candidates(&mut rtc);
        let mut session = Session::new(rtc, ufrag.clone(), now, SessionSpec::default());
        let (ids, offer) = offer_feeds(&mut session, feeds, &[]).ok_or_else(|| OfferError::Rejected("nothing to offer".into()))?;
        let id = self.next_id;
        self.next_id += 1;
        drain(id, &mut session, &mut self.counters, out);
        self.by_ufrag.insert(ufrag, id);
        self.sessions.insert(id, session);
        Ok((id, ids, offer))
    }

    /// Adds a feed to a session the server offered; returns its id and the new offer.
    pub fn add_feed(&mut self, id: SessionId, feed: &FeedSpec, out: &mut Outputs) -> Result<(FeedId, String), FeedError> {
        let (ids, offer) = self.change_feeds(id, std::slice::from_ref(feed), &[], out)?;
        Ok((ids[0], offer))
    }

    /// Stops a feed (its m-lines become inactive: the peer's tracks end); returns the new offer.
    pub fn remove_feed(&mut self, id: SessionId, feed: FeedId, out: &mut Outputs) -> Result<String, FeedError> {
        Ok(self.change_feeds(id, &[], &[feed], out)?.1)
    }

    /// Adds feeds and stops others (their m-lines become inactive: the peer's tracks end) in one
    /// offer; returns the new feeds' ids and the offer. Nothing changes when an id is unknown
    /// or the feed limit would be passed.
    pub fn change_feeds(
        &mut self,
        id: SessionId,
        add: &[FeedSpec],
        remove: &[FeedId],
        out: &mut Outputs,
    ) -> Result<(Vec<FeedId>, String), FeedError> {
        let s = self.sessions.get_mut(&id).ok_or(FeedError::NoSession)?;
        if s.pending.is_some() {
            return Err(FeedError::OfferPending);
        }
        if s.feeds.len() + add.len() > MAX_FEEDS {
            return Err(FeedError::TooMany(MAX_FEEDS));
        }
        if add.is_empty() && remove.is_empty() {
            return Err(FeedError::NoFeed);
        }
        if !remove.iter().all(|r| s.feeds.iter().any(|f| f.id == *r && !f.removed)) {
            return Err(FeedError::NoFeed);
        }
        let mut mids = Vec::new();
        for f in s.feeds.iter_mut().filter(|f| remove.contains(&f.id)) {
            f.removed = true;
            mids.extend([f.video.as_ref().map(|v| v.0), f.audio.as_ref().map(|a| a.0)].into_iter().flatten());
        }
        let r = offer_feeds(s, add, &mids).ok_or(FeedError::NoFeed);
        drain(id, s, &mut self.counters, out);
        r
    }

    /// The peer's answer to the server's latest offer: the feeds it took can be written.
    pub fn accept_answer(&mut self, id: SessionId, answer: &str, out: &mut Outputs) -> Result<(), FeedError> {
        let s = self.sessions.get_mut(&id).ok_or(FeedError::NoSession)?;
        let pending = s.pending.take().ok_or(FeedError::NoOfferPending)?;
        let answer = SdpAnswer::from_sdp_string(answer).map_err(|e| FeedError::BadAnswer(describe_parse_error(answer, &e.to_string())))?;
        s.rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| FeedError::BadAnswer(excerpt(&e.to_string(), 200)))?;
        let mut feeds = std::mem::take(&mut s.feeds);
        for f in feeds.iter_mut().filter(|f| !f.removed) {
            for t in [&mut f.video, &mut f.audio].into_iter().flatten() {
                if t.2.is_none() {
                    t.2 = negotiated_track(&mut s.rtc, t.0, t.1);
                }
            }
        }
        s.feeds = feeds;
        drain(id, s, &mut self.counters, out);
        self.remove_if_dead(id, out);
        Ok(())
    }

    /// The rate a session the server offers would like to send at (its feeds' best layers):
    /// its congestion control probes for it; `minimum` is kept up with padding (the next
    /// layer's rate, so that the estimate can grow to it).
    pub fn set_bitrate(&mut self, id: SessionId, minimum: u64, desired: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.rtc.bwe().set_bitrate(Bitrate::bps(minimum.min(desired)), Bitrate::bps(desired));
        }
    }

    /// Writes one frame on a feed's track (as [`Endpoint::write`] does for a session's single
    /// track). `keyframe`: a video keyframe. Video is skipped while the session's send queue
    /// is too far behind ([`WriteError::Congested`]; a keyframe request for the feed comes
    /// out once it has drained).
    #[allow(clippy::too_many_arguments)]
    pub fn write_feed(
        &mut self,
        id: SessionId,
        feed: FeedId,
        track: Track,
        wallclock: Instant,
        rtp_time: u64,
        data: &[u8],
        keyframe: bool,
        out: &mut Outputs,
    ) -> Result<(), WriteError> {
        let s = self.sessions.get_mut(&id).ok_or(WriteError::NoSession)?;
        let f = s
            .feeds
            .iter_mut()
            .find(|f| f.id == feed && !f.removed)
            .ok_or(WriteError::NotSending(track))?;
        let t = match track {
            Track::Video => f.video.as_ref(),
            Track::Audio => f.audio.as_ref(),
        }
        .and_then(|t| t.2)
        .ok_or(WriteError::NotSending(track))?;
        if let (Track::Video, true, Some(now)) = (track, s.connected, self.now) {
            let behind = s
                .rtc
                .direct_api()
                .stream_tx_by_mid(t.mid, None)
                .and_then(|st| st.queue_info()?.first_unsent())
                .map(|at| now.saturating_duration_since(at))
                .unwrap_or_default();
            match skip(&mut f.skipping, now, behind, keyframe) {
                Skip::Send => {}
                Skip::Drop => {
                    self.counters.congestion_skipped += 1;
                    return Err(WriteError::Congested);
                }
                Skip::DropAndAsk => {
                    self.counters.congestion_skipped += 1;
                    out.events.push(EndpointEvent::KeyframeRequest(id, Some(feed)));
                    return Err(WriteError::Congested);
                }
            }
        }
        self.write_on(id, t, track, wallclock, rtp_time, data, out)
    }

    /// Writes a frame on a negotiated send track of session `id` (`write`, `write_feed`).
    #[allow(clippy::too_many_arguments)]
    fn write_on(
        &mut self,
        id: SessionId,
        t: SendTrack,
        track: Track,
        wallclock: Instant,
        rtp_time: u64,
        data: &[u8],
        out: &mut Outputs,
    ) -> Result<(), WriteError> {
        let s = self.sessions.get_mut(&id).ok_or(WriteError::NoSession)?;
        if !s.connected {
            return Err(WriteError::NotConnected);
        }
        let r = match s.rtc.writer(t.mid) {
            Some(w) => w
                .write(t.pt, wallclock, MediaTime::new(rtp_time, t.clock), data.to_vec())
                .map_err(|e| WriteError::Rtc(e.to_string())),
            None => Err(WriteError::NotSending(track)),
        };
        drain(id, s, &mut self.counters, out);
        self.remove_if_dead(id, out);
        r
    }

    /// Removes every session marked dead (timers may mark any of them).
    fn reap(&mut self, out: &mut Outputs) {
        let dead: Vec<SessionId> = self.sessions.iter().filter(|(_, s)| s.dead.is_some()).map(|(id, _)| *id).collect();
        for id in dead {
            self.remove_if_dead(id, out);
        }
    }

    /// Removes one session if it is marked dead, with its routes, and reports it closed.
    fn remove_if_dead(&mut self, id: SessionId, out: &mut Outputs) {
        if self.sessions.get(&id).is_none_or(|s| s.dead.is_none()) {
            return;
        }
        if let Some(s) = self.sessions.remove(&id) {
            self.by_ufrag.remove(&s.ufrag);
            for a in &s.addrs {
                if self.by_addr.get(a) == Some(&id) {
                    self.by_addr.remove(a);
                }
            }
            out.events
                .push(EndpointEvent::Closed(id, s.dead.unwrap_or(CloseReason::Disconnected)));
        }
    }
}

/// One media section of an offer, from the offerer's side.
struct OfferedLine<'a> {
    kind: &'a str,
    /// The offerer sends on it (sendrecv or sendonly).
    sends: bool,
    /// The offerer receives on it (sendrecv or recvonly).
    receives: bool,
}

/// The offer's enabled media sections (port not 0) and their directions (RFC 8866 section
/// 6.7: sendrecv when none is given).
fn offered_lines(sdp: &str) -> Vec<OfferedLine<'_>> {
    let mut out: Vec<OfferedLine<'_>> = Vec::new();
    let mut enabled = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut f = m.split(' ');
            let kind = f.next().unwrap_or("");
            enabled = f.next().is_some_and(|port| port != "0");
            if enabled {
                out.push(OfferedLine {
                    kind,
                    sends: true,
                    receives: true,
                });
            }
            continue;
        }
        let Some(l) = out.last_mut().filter(|_| enabled) else { continue };
        match line {
            "a=sendonly" => (l.sends, l.receives) = (true, false),
            "a=recvonly" => (l.sends, l.receives) = (false, true),
            "a=inactive" => (l.sends, l.receives) = (false, false),
            "a=sendrecv" => (l.sends, l.receives) = (true, true),
            _ => {}
        }
    }
    out
}

/// Records which of the session's media lines it receives on and sends on (the first enabled
/// line of each kind for each direction), and the payload type of each sent codec.
fn pick_tracks(s: &mut Session, mid: Mid, spec: &SessionSpec) {
    let Some(m) = s.rtc.media(mid) else { return };
    if m.disabled() {
        return;
    }
    let (kind, dir) = (m.kind(), m.direction());
    if spec.receive && dir.is_receiving() {
        match kind {
            MediaKind::Video if s.video_mid.is_none() => s.video_mid = Some(mid),
            MediaKind::Audio if s.audio_mid.is_none() => s.audio_mid = Some(mid),
            _ => {}
        }
    }
    if !dir.is_sending() {
        return;
    }
    let (want, slot) = match kind {
        MediaKind::Video => (spec.send_video, &mut s.send_video),
        MediaKind::Audio => (spec.send_audio, &mut s.send_audio),
    };
    let Some(want) = want.filter(|_| slot.is_none()) else { return };
    let Some(w) = s.rtc.writer(mid) else { return };
    let found = w
        .payload_params()
        .find(|p| p.spec().codec == want)
        .map(|p| (p.pt(), p.spec().clock_rate));
    if let Some((pt, clock)) = found {
        *slot = Some(SendTrack { mid, pt, clock });
        // str0m stops answering NACKs once resends pass 15 % of what a stream sent in the last
        // second; a viewer on a 5 %-loss link asks again for what was lost twice and passes
        // that, then freezes until a keyframe (which an RTMP publisher cannot be asked for).
        if let Some(tx) = s.rtc.direct_api().stream_tx_by_mid(mid, None) {
            tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
        }
    }
}

/// Packets kept per sent stream for retransmission (1 s of 4 Mbit/s video). Each viewer's
/// stack holds its own copies, so this is most of a viewer's memory.
const RTX_CACHE_PACKETS: usize = 512;
/// How old a packet can be and still be resent: a resend later than this comes after the
/// browser's jitter buffer gave the frame up (it waits a few round trips at most).
const RTX_CACHE_AGE: Duration = Duration::from_secs(1);
/// Resends stop while they are more than this share of a stream's bytes (the last second).
const RTX_RATIO_CAP: f32 = 0.4;

/// H.264 profiles offered and answered (packetization-mode 1, each with an RTX payload type).
const H264_PROFILES: [(u8, u8, u32); 5] = [
    (108, 109, 0x42e01f),
    (127, 121, 0x42001f),
    (123, 119, 0x4d001f),
    (114, 115, 0x64001f),
    (116, 117, 0x640c1f),
];

/// Adds feeds' m-lines to one offer of the session and makes the `inactive` ones inactive
/// (str0m keeps changes in the `SdpApi` that made them until `apply`); returns the new feeds'
/// ids and the offer.
fn offer_feeds(s: &mut Session, specs: &[FeedSpec], inactive: &[Mid]) -> Option<(Vec<FeedId>, String)> {
    let mut api = s.rtc.sdp_api();
    for mid in inactive {
        api.set_direction(*mid, Direction::Inactive);
    }
    let mut ids = Vec::with_capacity(specs.len());
    for feed in specs {
        let id = s.next_feed;
        s.next_feed += 1;
        // An msid is a token ("/" is not a token character): a stream key's "/" becomes ".".
        let stream: String = feed
            .stream
            .chars()
            .take(64)
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '.' })
            .collect();
        let mut line = |kind: MediaKind, codec: Codec, name: &str| {
            let mid = api.add_media(
                kind,
                Direction::SendOnly,
                Some(stream.clone()),
                Some(format!("{stream}-{name}")),
                None,
            );
            (mid, codec, None)
        };
        let video = feed.video.map(|c| line(MediaKind::Video, c, "video"));
        let audio = feed.audio.map(|c| line(MediaKind::Audio, c, "audio"));
        s.feeds.push(Feed {
            id,
            video,
            audio,
            removed: false,
            skipping: None,
        });
        ids.push(id);
    }
    let (offer, pending) = api.apply()?;
    s.pending = Some(pending);
    Some((ids, offer.to_sdp_string()))
}

/// The payload type the answer gave `codec` on `mid`.
fn negotiated_track(rtc: &mut Rtc, mid: Mid, codec: Codec) -> Option<SendTrack> {
    let w = rtc.writer(mid)?;
    let t = w.payload_params().find(|p| p.spec().codec == codec).map(|p| SendTrack {
        mid,
        pt: p.pt(),
        clock: p.spec().clock_rate,
    })?;
    if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
        tx.set_rtx_cache(RTX_CACHE_PACKETS, RTX_CACHE_AGE, Some(RTX_RATIO_CAP));
    }
    Some(t)
}

/// The stream id of what a session sends.
const SENT_STREAM: &str = "streamgate";

/// The offer with `a=msid:{stream} {kind}` in every audio/video section that has none.
fn with_msid(offer: &str, stream: &str) -> String {
    let mut out = String::with_capacity(offer.len() + 128);
    let mut section: Option<(&str, bool)> = None;
    let flush = |out: &mut String, section: Option<(&str, bool)>| {
        if let Some((kind, false)) = section {
            out.push_str(&format!("a=msid:{stream} {kind}\r\n"));
        }
    };
    for line in offer.split_inclusive('\n') {
        let l = line.trim_end();
        if let Some(rest) = l.strip_prefix("m=") {
            flush(&mut out, section);
            let kind = rest.split(' ').next().unwrap_or("");
            section = matches!(kind, "audio" | "video").then_some((if kind == "audio" { "audio" } else { "video" }, false));
        } else if l.starts_with("a=msid:") {
            if let Some((_, has)) = &mut section {
                *has = true;
            }
        }
        out.push_str(line);
        if !line.ends_with('\n') {
            out.push_str("\r\n");
        }
    }
    flush(&mut out, section);
    out
}

fn codec_name(c: Codec) -> &'static str {
    match c {
        Codec::H264 => "H.264",
        Codec::Vp8 => "VP8",
        Codec::Vp9 => "VP9",
        Codec::Opus => "Opus",
        _ => "in a codec we do not send",
    }
}

/// At most `max` characters of `s` for a message, with control characters shown as `?`.
fn excerpt(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().count() > max {
        out.push_str("...");
    }
    out
}

/// The first line that is not `<letter>=<value>` (RFC 8866 section 5), or a first line other
/// than `v=0`, described for a person: "line 3: expected `<letter>=<value>`, found `...`".
fn sdp_line_error(sdp: &str) -> Option<String> {
    let body = sdp.trim_end_matches(['\r', '\n']);
    if body.is_empty() {
        return Some("the offer is empty".into());
    }
    for (i, line) in body.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i == 0 && line != "v=0" {
            return Some(format!("line 1: expected `v=0`, found `{}`", excerpt(line, 40)));
        }
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' {
            return Some(format!(
                "line {}: expected `<letter>=<value>`, found `{}`",
                i + 1,
                excerpt(line, 40)
            ));
        }
    }
    None
}

/// str0m's parse error made fit for a person. It comes from combine, which reports the position
/// as a memory address ("Parse error at PointerOffset(0x7f..)") followed by lines such as
/// "Unexpected `x`" and "Expected `y`". The address becomes a line number of `sdp` (the parser
/// reads `sdp` in place); no address or parser internals are kept.
fn describe_parse_error(sdp: &str, parser: &str) -> String {
    let line = parser
        .split("PointerOffset(0x")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .and_then(|addr| addr.checked_sub(sdp.as_ptr() as usize))
        .filter(|&off| off <= sdp.len())
        .map(|off| sdp.as_bytes()[..off].iter().filter(|&&b| b == b'\n').count() + 1);
    let mut unexpected = false;
    let details: Vec<String> = parser
        .lines()
        .map(str::trim)
        // The position line, and combine's name for the rule ("sdp line").
        .filter(|l| !l.is_empty() && !l.contains("Parse error at") && !l.contains("0x") && *l != "sdp line")
        // The first unexpected token says it; the others are the same error seen by outer rules.
        .filter(|l| !l.starts_with("Unexpected") || !std::mem::replace(&mut unexpected, true))
        .map(|l| {
            let mut l = excerpt(l, 160);
            if let Some(first) = l.get_mut(0..1) {
                first.make_ascii_lowercase();
            }
            l
        })
        .collect();
    let what = if details.is_empty() {
        "not valid SDP".to_owned()
    } else {
        details.join("; ")
    };
    match line {
        Some(n) => format!("line {n}: {what}"),
        None => what,
    }
}

/// Whether an SDP offer has an H.264 payload type with packetization-mode=1.
fn offers_h264_mode1(sdp: &str) -> bool {
    let h264_pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, codec)| codec.trim_end().eq_ignore_ascii_case("H264/90000"))
        .map(|(pt, _)| pt)
        .collect();
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter_map(|l| l.split_once(' '))
        .any(|(pt, params)| h264_pts.contains(&pt) && params.split(';').any(|p| p.trim() == "packetization-mode=1"))
}

/// Polls a session until it waits for time to pass (str0m's contract after every mutation).
fn drain(id: SessionId, s: &mut Session, counters: &mut EndpointCounters, out: &mut Outputs) {
    loop {
        match s.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                s.deadline = t;
                break;
            }
            Ok(Output::Transmit(t)) => out.transmits.push(t),
            Ok(Output::Event(e)) => on_event(id, s, e, counters, out),
            Err(e) => {
                s.dead.get_or_insert(CloseReason::Error(e.to_string()));
                break;
            }
        }
    }
    if !s.rtc.is_alive() {
        s.dead.get_or_insert(CloseReason::Disconnected);
    }
}

fn on_event(id: SessionId, s: &mut Session, e: Event, counters: &mut EndpointCounters, out: &mut Outputs) {
    match e {
        Event::Connected => {
            s.connected = true;
            out.events.push(EndpointEvent::Connected(id));
        }
        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
            if s.spec.grace.is_none() {
                s.dead.get_or_insert(CloseReason::Disconnected);
            } else {
                tracing::debug!(session = id, "ICE disconnected: waiting for a restart");
            }
        }
        Event::MediaAdded(m) => {
            let spec = s.spec.clone();
            pick_tracks(s, m.mid, &spec);
        }
        Event::KeyframeRequest(r) if s.send_video.is_some_and(|t| t.mid == r.mid) => {
            out.events.push(EndpointEvent::KeyframeRequest(id, None));
        }
        Event::KeyframeRequest(r) => {
            let feed = s
                .feeds
                .iter()
                .find(|f| !f.removed && f.video.as_ref().is_some_and(|v| v.0 == r.mid));
            if let Some(f) = feed {
                out.events.push(EndpointEvent::KeyframeRequest(id, Some(f.id)));
            }
        }
        Event::EgressBitrateEstimate(BweKind::Twcc { estimate, .. }) => {
            out.events.push(EndpointEvent::Bitrate(id, estimate.as_u64()));
        }
        Event::MediaData(d) => {
            let codec = d.params.spec().codec;
            let track = if Some(d.mid) == s.video_mid && matches!(codec, Codec::H264 | Codec::Vp8 | Codec::Vp9) {
                Track::Video
            } else if Some(d.mid) == s.audio_mid && codec == Codec::Opus {
                Track::Audio
            } else {
                return;
            };
            out.events.push(EndpointEvent::Media(
                id,
                RtpFrame {
                    track,
                    codec,
                    rtp_time: d.time.numer(),
                    arrival: d.network_time,
                    contiguous: d.contiguous,
                    data: d.data,
                    sender_report: d.last_sender_info.map(|si| (si.ntp_time, si.rtp_time.numer() as u32)),
                    layer: d.rid,
                },
            ));
        }
        Event::MediaIngressStats(st) => {
            let i = if Some(st.mid) == s.video_mid { 0 } else { 1 };
            let old = s.stats[i];
            counters.rtp_packets += st.packets.saturating_sub(old.packets);
            counters.nacks += st.nacks.saturating_sub(old.nacks);
            counters.plis += st.plis.saturating_sub(old.plis);
            s.stats[i] = SessionStats {
                packets: st.packets,
                nacks: st.nacks,
                plis: st.plis,
            };
        }
        Event::MediaEgressStats(st) => {
            let i = if s.send_video.is_some_and(|t| t.mid == st.mid) { 0 } else { 1 };
            let old = s.egress[i];
            let now = EgressSeen {
                packets: st.packets,
                nacks: st.nacks,
                keyframe_requests: st.plis + st.firs,
            };
            counters.rtp_packets_out += now.packets.saturating_sub(old.packets);
            counters.nacks_in += now.nacks.saturating_sub(old.nacks);
            counters.keyframe_requests_in += now.keyframe_requests.saturating_sub(old.keyframe_requests);
            s.egress[i] = now;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = include_str!("../testdata/chromium156_offer.sdp");

    #[test]
    fn a_feed_behind_skips_video_until_drained_and_a_keyframe() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut st = None;
        // Within the limit: sent, keyframe or not.
        assert_eq!(skip(&mut st, t0, ms(390), false), Skip::Send);
        // Beyond: skipped, also keyframes while the queue is still behind.
        assert_eq!(skip(&mut st, t0, ms(410), false), Skip::Drop);
        assert_eq!(skip(&mut st, t0, ms(300), true), Skip::Drop);
        // Drained: one keyframe request, then drops until a keyframe (asked again each second).
        assert_eq!(skip(&mut st, t0 + ms(50), ms(50), false), Skip::DropAndAsk);
        assert_eq!(skip(&mut st, t0 + ms(100), ms(0), false), Skip::Drop);
        assert_eq!(skip(&mut st, t0 + ms(1050), ms(0), false), Skip::DropAndAsk);
        assert_eq!(skip(&mut st, t0 + ms(1100), ms(0), true), Skip::Send);
        assert_eq!(st, None);
        assert_eq!(skip(&mut st, t0 + ms(1150), ms(0), false), Skip::Send);
    }

    fn endpoint() -> Endpoint {
        Endpoint::new(EndpointConfig {
            candidates: vec!["127.0.0.1:8000".parse().unwrap()],
            max_sessions: 2,
            ..EndpointConfig::default()
        })
    }

    /// A publisher's offer accepted: (id, answer, negotiated).
    fn receive(ep: &mut Endpoint, now: Instant, sdp: &str, out: &mut Outputs) -> Result<(SessionId, String, Negotiated), OfferError> {
        ep.accept_offer(now, sdp, &SessionSpec::receiver(), out)
            .map(|a| (a.id, a.answer, a.negotiated))
    }

    /// A tiny deterministic generator for hostile bytes (no rand crate).
    fn noise(seed: &mut u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                *seed as u8
            })
            .collect()
    }

    /// A browser puts audio and video in sync only within one stream: a viewer's tracks share
    /// the answer's msid stream id.
    #[test]
    fn a_sending_sessions_tracks_are_one_stream() {
        let mut ep = endpoint();
        let offer: String = OFFER
            .lines()
            .filter(|l| !l.starts_with("a=ssrc") && !l.starts_with("a=msid:"))
            .map(|l| if l == "a=sendonly" { "a=recvonly" } else { l })
            .map(|l| format!("{l}\r\n"))
            .collect();
        let mut out = Outputs::default();
        let spec = SessionSpec::sender(Some(Codec::H264), Some(Codec::Opus));
        let a = ep.accept_offer(Instant::now(), &offer, &spec, &mut out).unwrap();
        let streams: Vec<&str> = a
            .answer
            .lines()
            .filter_map(|l| l.strip_prefix("a=msid:"))
            .filter_map(|m| m.split(' ').next())
            .collect();
        assert_eq!(streams, ["streamgate", "streamgate"], "{}", a.answer);
        assert_eq!(
            with_msid("v=0\r\nm=video 9 x 96\r\na=msid:s t\r\nm=application 9 x\r\n", "g")
                .matches("a=msid")
                .count(),
            1
        );
    }

    #[test]
    fn chromium_offer_gets_h264_and_opus() {
        let mut ep = endpoint();
        let mut out = Outputs::default();
        let (_, answer, neg) = receive(&mut ep, Instant::now(), OFFER, &mut out).unwrap();
        assert_eq!((neg.video, neg.audio, neg.send_video, neg.send_audio), (true, true, None, None));
        assert!(answer.contains("a=ice-lite"));
        assert!(answer.contains("H264/90000"));
        assert!(answer.contains("opus/48000"));
        assert!(!answer.contains("VP8/90000"), "only codecs we take are answered");
        assert!(answer.contains("127.0.0.1 8000 typ host"), "{answer}");
        assert!(answer.contains("packetization-mode=1"));
    }

    #[test]
    fn offers_we_cannot_take_are_refused_with_a_reason() {
        let mut ep = endpoint();
        let mut out = Outputs::default();
        let now = Instant::now();
        assert!(matches!(
            receive(&mut ep, now, "v=0\r\nnonsense", &mut out),
            Err(OfferError::BadSdp(_))
        ));
        // Video without H.264, VP8 or VP9 (renamed away): refused, naming what is missing.
        let av1_only = OFFER
            .replace("H264/90000", "H26X/90000")
            .replace("VP8/90000", "VP8X/90000")
            .replace("VP9/90000", "VP9X/90000");
        match receive(&mut ep, now, &av1_only, &mut out) {
            Err(OfferError::NoCodec(m)) => assert!(m.contains("H.264") && m.contains("VP8"), "{m}"),
            other => panic!("{:?}", other.map(|r| r.2)),
        }
        match receive(&mut ep, now, &OFFER.replace("opus/48000", "opux/48000"), &mut out) {
            Err(OfferError::NoCodec(m)) => assert!(m.contains("Opus"), "{m}"),
            other => panic!("{:?}", other.map(|r| r.2)),
        }
        assert!(ep.is_empty(), "refused offers leave no session");
        let no_fingerprint: String = OFFER
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert!(receive(&mut ep, now, &no_fingerprint, &mut out).is_err());
        // Session limit.
        receive(&mut ep, now, OFFER, &mut out).unwrap();
        receive(&mut ep, now, OFFER, &mut out).unwrap();
        assert!(matches!(receive(&mut ep, now, OFFER, &mut out), Err(OfferError::Full(2))));
    }

    /// What a person reads for a malformed offer: the line and what is wrong, never a memory
    /// address or Rust debug text.
    #[test]
    fn malformed_offers_are_described_by_line() {
        let mut ep = endpoint();
        let now = Instant::now();
        let bad = |ep: &mut Endpoint, sdp: &str| match receive(ep, now, sdp, &mut Outputs::default()) {
            Err(e @ OfferError::BadSdp(_)) => e.to_string(),
            other => panic!("{sdp:?}: {:?}", other.map(|r| r.2)),
        };
        assert_eq!(
            bad(&mut ep, "v=0 garbage"),
            "malformed SDP offer: line 1: expected `v=0`, found `v=0 garbage`"
        );
        assert_eq!(bad(&mut ep, ""), "malformed SDP offer: the offer is empty");
        assert_eq!(
            bad(&mut ep, "v=0\r\nthis is not sdp"),
            "malformed SDP offer: line 2: expected `<letter>=<value>`, found `this is not sdp`"
        );
        // Lines of the right shape that the parser refuses: its position becomes a line number
        // (of the media section, for what is missing in one), with the parser's reason.
        let m = bad(&mut ep, &OFFER.replacen("a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8", 1));
        assert_eq!(m, "malformed SDP offer: line 8: missing a=rtp_map:96 for mid: 0");
        let t = bad(&mut ep, &OFFER.replacen("t=0 0", "t=zero", 1));
        assert!(t.starts_with("malformed SDP offer: line 4: unexpected `z`; expected "), "{t}");
        for m in [m, t] {
            assert!(!m.contains("0x") && !m.contains("PointerOffset") && !m.contains('\n'), "{m}");
        }
        assert!(ep.is_empty());
    }

    #[test]
    fn vp8_is_answered_only_without_h264() {
        let mut ep = endpoint();
        let mut out = Outputs::default();
        let now = Instant::now();
        assert!(offers_h264_mode1(OFFER));
        let no_h264 = OFFER.replace("H264/90000", "H26X/90000");
        assert!(!offers_h264_mode1(&no_h264));
        let (_, answer, neg) = receive(&mut ep, now, &no_h264, &mut out).unwrap();
        assert_eq!((neg.video, neg.audio, neg.send_video, neg.send_audio), (true, true, None, None));
        assert!(answer.contains("VP8/90000"), "{answer}");
        assert!(!answer.contains("H264/90000"));
        // H.264 with packetization-mode=0 only is not H.264 we take.
        let mode0 = OFFER.replace("packetization-mode=1", "packetization-mode=0");
        assert!(!offers_h264_mode1(&mode0));
    }

    #[test]
    fn hostile_datagrams_are_dropped_and_counted() {
        let mut ep = endpoint();
        let mut out = Outputs::default();
        let now = Instant::now();
        let (id, _, _) = receive(&mut ep, now, OFFER, &mut out).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let src: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        for i in 0..20_000 {
            let len = 1 + (i * 7919) % 1500;
            let mut d = noise(&mut seed, len);
            match i % 4 {
                0 => d[0] = 0x80, // RTP/RTCP-looking
                1 => d[0] = 22,   // DTLS-looking
                2 if len >= 20 => {
                    // STUN binding request with a magic cookie and a garbage body
                    d[0] = 0;
                    d[1] = 1;
                    d[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
                }
                _ => {}
            }
            ep.handle_datagram(now, src, &d, &mut out);
        }
        let c = ep.counters();
        assert_eq!(c.unroutable + c.malformed, 20_000, "{c:?}");
        assert!(out.events.iter().all(|e| !matches!(e, EndpointEvent::Media(..))));
        assert_eq!(ep.len(), 1, "the session survives");
        assert!(ep.by_addr.is_empty(), "no address learnt from garbage");
        // The session is dropped when ICE never completes.
        ep.handle_timeout(now + Duration::from_secs(16), &mut out);
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, EndpointEvent::Closed(i, CloseReason::ConnectTimeout) if *i == id)));
        assert!(ep.is_empty() && ep.by_ufrag.is_empty());
    }

    #[test]
    fn close_frees_the_session() {
        let mut ep = endpoint();
        let mut out = Outputs::default();
        let (id, _, _) = receive(&mut ep, Instant::now(), OFFER, &mut out).unwrap();
        ep.close(id, &mut out);
        assert!(ep.is_empty());
        assert!(out
            .events
            .iter()
            .any(|e| matches!(e, EndpointEvent::Closed(i, CloseReason::Requested) if *i == id)));
        assert!(!ep.request_keyframe(id, None, &mut out));
    }
}
