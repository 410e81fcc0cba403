//! The WebRTC shell: one UDP socket for every WebRTC session, one task driving the sans-IO
//! [`Endpoint`], and one media task per publishing session (depacketized frames -> transcoding
//! -> hub).
//!
//! HTTP routes speak sessions over the command channel: [`Command::Open`] creates a session
//! from an offer with a [`SessionSpec`] (what it receives and sends) and a [`Role`] (what it
//! becomes once connected), [`Command::Close`] ends one.
//!
//! * A playing session (WHEP) has a play task: hub events -> [`WebRtcViewer`] -> frames on the
//!   shared outgoing queue ([`OUT_QUEUE`]) -> `Endpoint::write` in the UDP task. The hub's
//!   per-viewer queue bounds what one slow session holds; a full outgoing queue (the UDP task
//!   behind) drops the frame, counts it, and that viewer skips to the next keyframe.
//! * A viewer's PLI/FIR goes to its play task, which asks the publisher for a keyframe (a
//!   WebRTC publisher answers within a round trip; RTMP publishers cannot be asked).
//! * When the stream ends, or turns out unsendable (B-frames), the play task ends the session.
//!
//! * The UDP task never waits on a publisher's media task: frames go through a bounded channel;
//!   when it is full the frame is dropped, counted, and the media task asks for a keyframe.
//! * Keyframe requests (RTCP PLI) come from the media task: periodically
//!   (`webrtc.pli_interval_ms`), after loss the stack could not repair, and when a viewer asks the
//!   hub for one, at most once per `webrtc.keyframe_request_min_ms`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use egress::webrtc::{SendFrame, WebRtcViewer};
use ingest::webrtc::pipeline::{HubOp, Pipeline};
use ingest::webrtc::simulcast::{LayerRates, Layers};
use media::frame::TrackKind;
use media::{Codec as MediaCodec, CodecSet, Publisher, Reservation, Subscriber};
use str0m::format::Codec;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tracing::{debug, info, trace, warn, Instrument};
use webrtc::endpoint::{
    CloseReason, Endpoint, EndpointConfig, EndpointEvent, FeedId, Negotiated, OfferError, Outputs, SessionId, SessionSpec, WriteError,
};
use webrtc::{Rid, RtpFrame, Track};

use crate::admission::Pending;
use crate::config::WebRtcSection;
use crate::forward::{FeedChange, ForwardError, NewFeed, Offered, SfuEvent};
use crate::pacing::Pacer;
use crate::StartError;

/// Frames queued between the UDP task and one publisher's media task.
const MEDIA_QUEUE: usize = 1024;
/// Frames queued from every play task to the UDP task.
pub const OUT_QUEUE: usize = 8192;
/// Outgoing frames written before the UDP task looks at its other inputs again.
const OUT_BATCH: usize = 256;
/// Datagrams taken from the socket in one go before the outputs are written.
const RECV_BATCH: usize = 65;
/// Longest wait of the UDP task between timer checks.
const MAX_TICK: Duration = Duration::from_millis(200);

/// What the HTTP side asks of the WebRTC task.
pub enum Command {
    /// A new session from an offer, doing what `spec` says. Until it connects (ICE and DTLS
    /// done) `pending` counts against the client's pending-session limits; then it takes its
    /// `role`.
    Open {
        sdp: String,
        spec: SessionSpec,
        role: Role,
        pending: Pending,
        reply: oneshot::Sender<Result<Accepted, OfferError>>,
    },
    /// Ends the session with this token (WHIP DELETE).
    Close { token: String, reply: oneshot::Sender<bool> },
    /// Ask a session's peer for a keyframe (from a publisher's media task): of one simulcast
    /// layer, or of its video.
    Keyframe { id: SessionId, layer: Option<Rid> },
    /// Ends a session (its play task stopped: the stream ended or cannot be sent).
    End { id: SessionId },
    /// A session the server offers, sending `feeds` (a room's subscribing peer connection);
    /// its offers after the first and its feeds' ends come as `events`.
    OpenOffered {
        feeds: Vec<NewFeed>,
        pending: Pending,
        events: mpsc::Sender<SfuEvent>,
        reply: oneshot::Sender<Result<Accepted, OfferError>>,
    },
    /// Adds or removes a feed of an offered session (the offer comes as an event).
    Change {
        token: String,
        change: FeedChange,
        reply: oneshot::Sender<Result<(), ForwardError>>,
    },
    /// The peer's answer to an offered session's latest offer; a bad one ends the session.
    Answer {
        token: String,
        sdp: String,
        reply: oneshot::Sender<Result<(), ForwardError>>,
    },
    /// A feed's play task stopped (its stream ended or cannot be sent).
    FeedEnded { id: SessionId, feed: FeedId, reason: String },
    /// An ICE restart of the session with this token, which its peer offered
    /// ([`Endpoint::restart`]): the answer goes back.
    Restart {
        token: String,
        sdp: String,
        reply: oneshot::Sender<Result<String, OfferError>>,
    },
}

/// What a session becomes once connected.
pub enum Role {
    /// Publishes the key it reserved: the key is claimed on connect (a publisher that connected
    /// first wins, and this session is closed), and what it receives goes to the hub.
    Publish(Reservation),
    /// Plays a live key (WHEP): subscribed when the offer came, so that what the viewer needs
    /// (a keyframe, the Opus rendition) is on its way while ICE and DTLS connect.
    Play { sub: Subscriber },
    /// Sends feeds (`Command::OpenOffered`).
    Forward,
}

impl Role {
    /// What the session is about, for the log.
    fn label(&self) -> String {
        match self {
            Role::Publish(r) => r.key().to_string(),
            Role::Play { sub } => sub.key().to_string(),
            Role::Forward => "(subscriber)".into(),
        }
    }
}

/// One frame for a session, from its play task.
pub struct Outgoing {
    id: SessionId,
    /// A feed of an offered session, or the session's own tracks.
    feed: Option<FeedId>,
    track: Track,
    wallclock: Instant,
    rtp_time: u64,
    data: Bytes,
    /// A video keyframe.
    keyframe: bool,
}

/// A session that was created: its token and the answer (or, offered, the offer).
pub struct Accepted {
    pub token: String,
    pub answer: String,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct WebRtcCounters {
    pub sessions: AtomicU64,
    pub sessions_active: AtomicU64,
    /// Sessions that connected.
    pub sessions_connected: AtomicU64,
    /// Sessions dropped because ICE/DTLS did not complete within the reservation time.
    pub sessions_connect_timeouts: AtomicU64,
    /// Sessions that connected after another publisher had claimed their key (closed).
    pub sessions_key_taken: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub datagrams_unroutable: AtomicU64,
    pub datagrams_malformed: AtomicU64,
    pub frames_dropped_queue: AtomicU64,
    pub keyframe_requests: AtomicU64,
    pub nacks: AtomicU64,
    pub plis: AtomicU64,
    pub rtp_packets: AtomicU64,
    /// Video frames pushed to the hub.
    pub video_frames: AtomicU64,
    /// Video frames dropped because packets before them were lost for good (until the next IDR).
    pub video_frames_unrepaired: AtomicU64,
    /// Playing (WHEP) sessions that connected.
    pub play_sessions: AtomicU64,
    /// Frames written to playing sessions.
    pub frames_out: AtomicU64,
    /// Frames to playing sessions dropped because the outgoing queue was full.
    pub frames_dropped_out: AtomicU64,
    /// Video frames of feeds skipped because the subscriber's send queue was too far behind
    /// its bandwidth estimate (until it drained and a keyframe came).
    pub frames_skipped_congested: AtomicU64,
    /// RTP packets sent.
    pub rtp_packets_out: AtomicU64,
    /// NACKs and keyframe requests received from viewers.
    pub nacks_in: AtomicU64,
    pub keyframe_requests_in: AtomicU64,
}

/// Handle used by HTTP routes and the session tasks.
#[derive(Clone)]
pub struct WebRtcHandle {
    pub tx: mpsc::Sender<Command>,
    /// Frames for playing sessions.
    pub out: mpsc::Sender<Outgoing>,
}

/// Why the WebRTC task opened no session for an offer.
pub enum OpenFailure {
    /// The offer was refused (bad SDP, no codec, server full).
    Refused(OfferError),
    /// The task is gone (shutdown).
    Down,
    /// The task did not answer within 5 s.
    NoAnswer,
}

/// Opens a session for `sdp` on the WebRTC task (`Command::Open`): what WHIP, WHEP and the
/// room's publishers share; each maps the failure to its own answer.
pub async fn open_session(
    webrtc: &WebRtcHandle,
    sdp: String,
    spec: SessionSpec,
    role: Role,
    pending: Pending,
) -> Result<Accepted, OpenFailure> {
    let (reply, rx) = oneshot::channel();
    let cmd = Command::Open {
        sdp,
        spec,
        role,
        pending,
        reply,
    };
    webrtc.tx.send(cmd).await.map_err(|_| OpenFailure::Down)?;
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(r)) => r.map_err(OpenFailure::Refused),
        _ => Err(OpenFailure::NoAnswer),
    }
}

/// Addresses advertised as ICE host candidates for a socket bound to `bind`: the public
/// addresses when there are any (then no interface address is guessed: a container's or a
/// private one would only leak), else the interface that routes outwards; and loopback or the
/// bound address.
pub fn candidate_addrs(bind: SocketAddr, public_ips: &[IpAddr]) -> Vec<SocketAddr> {
    let port = bind.port();
    let mut out: Vec<SocketAddr> = public_ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
    if bind.ip().is_unspecified() {
        // The address of the interface that routes outwards (no packet is sent), then loopback.
        if public_ips.is_empty() {
            if let Some(ip) = primary_ip() {
                out.push(SocketAddr::new(ip, port));
            }
        }
        out.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    } else if !public_ips.contains(&bind.ip()) {
        out.push(bind);
    }
    let mut seen = Vec::new();
    out.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    out
}

fn primary_ip() -> Option<IpAddr> {
    let s = StdUdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Binds the UDP port (with a large receive buffer) and says which candidates to advertise.
pub fn bind(config: &crate::config::Config) -> Result<(UdpSocket, EndpointConfig), StartError> {
    let bind = config.server.webrtc_udp;
    let setup = |source| StartError::Socket {
        what: "WebRTC UDP",
        source,
    };
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(bind),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(setup)?;
    if config.webrtc.udp_receive_buffer > 0 {
        if let Err(e) = sock.set_recv_buffer_size(config.webrtc.udp_receive_buffer as usize) {
            warn!("SO_RCVBUF: {e}");
        }
    }
    sock.bind(&bind.into()).map_err(|source| StartError::Bind {
        what: "WebRTC UDP",
        addr: bind,
        source,
    })?;
    sock.set_nonblocking(true).map_err(setup)?;
    let std_sock: StdUdpSocket = sock.into();
    let socket = UdpSocket::from_std(std_sock).map_err(setup)?;
    let local = socket.local_addr().map_err(setup)?;
    let public_ips = config.server.public_ips();
    let w = &config.webrtc;
    let config = EndpointConfig {
        candidates: candidate_addrs(local, &public_ips),
        max_sessions: w.max_sessions,
        connect_timeout: Duration::from_millis(w.connect_timeout_ms),
        idle_timeout: Duration::from_millis(w.idle_timeout_ms),
        video_reorder_packets: w.video_reorder_packets,
    };
    info!(udp = %local, candidates = ?config.candidates, "WebRTC listening");
    Ok((socket, config))
}

/// What the WebRTC task receives.
pub struct Inputs {
    commands: mpsc::Receiver<Command>,
    out: mpsc::Receiver<Outgoing>,
}

/// The channels between HTTP routes, session tasks and the WebRTC task.
pub fn channel() -> (WebRtcHandle, Inputs) {
    let (tx, commands) = mpsc::channel(256);
    let (out_tx, out) = mpsc::channel(OUT_QUEUE);
    (WebRtcHandle { tx, out: out_tx }, Inputs { commands, out })
}

struct Live {
    token: String,
    /// The key it publishes or plays, for the log.
    key: String,
    negotiated: Negotiated,
    /// Until the session connects: its role and its admission guard.
    connecting: Option<(Role, Pending)>,
    /// Once connected as a publisher and the key claimed: the media task's queue.
    media: Option<mpsc::Sender<RtpFrame>>,
    /// Once connected as a viewer: its play task.
    play: Option<PlayTask>,
    /// A session the server offers: its feeds.
    offered: Option<Offered>,
    /// A simulcast publisher: its layers' sizes and rates.
    rates: Option<LayerRates>,
    /// A simulcast publisher: the feeds sent straight from it (subscribing session, feed).
    direct: Vec<(SessionId, FeedId)>,
}

impl Live {
    fn new(token: String, role: Role, pending: Pending, negotiated: Negotiated, offered: Option<Offered>) -> Self {
        Self {
            token,
            key: role.label(),
            negotiated,
            connecting: Some((role, pending)),
            media: None,
            play: None,
            offered,
            rates: None,
            direct: Vec::new(),
        }
    }
}

/// A play task and how to reach it.
pub struct PlayTask {
    /// The viewer asked for a keyframe.
    pub keyframe: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlayTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the WebRTC task and its media tasks need.
pub struct Shell {
    pub config: WebRtcSection,
    pub counters: Arc<WebRtcCounters>,
    /// For media tasks' keyframe requests.
    pub handle: WebRtcHandle,
    pub shutdown: watch::Receiver<bool>,
    /// The input bitrates of the feeds a subscriber is sent from the hub (its bandwidth budget).
    pub hub: media::Hub,
}

/// Runs the WebRTC task until shutdown.
pub async fn serve(socket: UdpSocket, config: EndpointConfig, inputs: Inputs, st: Arc<Shell>) {
    let Inputs {
        commands: mut rx,
        out: mut out_rx,
    } = inputs;
    let mut ep = Endpoint::new(config);
    let mut udp = match UdpOut::new(&socket) {
        Ok(u) => u,
        Err(e) => {
            warn!("WebRTC UDP socket: {e}; WebRTC is off");
            return;
        }
    };
    let counters = &st.counters;
    let mut shutdown = st.shutdown.clone();
    let mut live: HashMap<SessionId, Live> = HashMap::new();
    let mut buf = vec![0u8; 2048];
    let mut out = Outputs::default();
    loop {
        let now = Instant::now();
        let deadline = ep.next_deadline().unwrap_or(now + MAX_TICK).min(now + MAX_TICK);
        // Without sessions there is nothing to time out: no tick (each wake-up of an idle
        // gateway costs ~100 µs of context switching on a VM: 1.3 ms/s idle with a 200 ms tick).
        let ticking = !ep.is_empty();
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                // Take what else is queued (up to a bound) before writing.
                let mut next = r.map_err(|e| debug!("WebRTC UDP receive: {e}")).ok();
                let mut taken = 0;
                while let Some((n, src)) = next {
                    counters.datagrams_in.fetch_add(1, Ordering::Relaxed);
                    counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    ep.handle_datagram(Instant::now(), src, &buf[..n], &mut out);
                    taken += 1;
                    next = if taken < RECV_BATCH { socket.try_recv_from(&mut buf).ok() } else { None };
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Command::Open { sdp, spec, role, pending, reply } => {
                        let r = ep.accept_offer(Instant::now(), &sdp, &spec, &mut out);
                        let r = r.map(|a| {
                            let token = random_token();
                            live.insert(a.id, Live::new(token.clone(), role, pending, a.negotiated, None));
                            counters.sessions.fetch_add(1, Ordering::Relaxed);
                            Accepted { token, answer: a.answer }
                        });
                        let _ = reply.send(r);
                    }
                    Command::OpenOffered { feeds, pending, events, reply } => {
                        let specs: Vec<_> = feeds.iter().map(|f| f.spec.clone()).collect();
                        let r = ep.offer_session(Instant::now(), &specs, &mut out).map(|(id, ids, offer)| {
                            let token = random_token();
                            let offered = Offered::new(events, ids, feeds);
                            live.insert(id, Live::new(token.clone(), Role::Forward, pending, Negotiated::default(), Some(offered)));
                            counters.sessions.fetch_add(1, Ordering::Relaxed);
                            Accepted { token, answer: offer }
                        });
                        let _ = reply.send(r);
                    }
                    Command::Change { token, change, reply } => {
                        let r = match offered_by_token(&mut live, &token) {
                            Some((id, o)) => match change {
                                FeedChange::Subscribe(feed) => o.subscribe(feed),
                                FeedChange::Unsubscribe(key) => o.unsubscribe(&key),
                            }
                            .map(|()| {
                                if !o.renegotiate(&mut ep, id, &mut out) {
                                    ep.close(id, &mut out);
                                }
                            }),
                            None => Err(ForwardError::NoSession),
                        };
                        let _ = reply.send(r);
                    }
                    Command::Answer { token, sdp, reply } => {
                        let r = match offered_by_token(&mut live, &token) {
                            Some((id, o)) => match ep.accept_answer(id, &sdp, &mut out) {
                                Ok(()) => {
                                    o.answered();
                                    start_feeds(&mut live, id, &st);
                                    let renegotiated = live
                                        .get_mut(&id)
                                        .and_then(|l| l.offered.as_mut())
                                        .is_none_or(|o| o.renegotiate(&mut ep, id, &mut out));
                                    if !renegotiated {
                                        ep.close(id, &mut out);
                                    }
                                    Ok(())
                                }
                                Err(e) => {
                                    if o.awaiting() {
                                        // The offer is spent: the session cannot go on.
                                        warn!(session = id, "bad answer, closing the session: {e}");
                                        ep.close(id, &mut out);
                                    }
                                    Err(e.into())
                                }
                            },
                            None => Err(ForwardError::NoSession),
                        };
                        let _ = reply.send(r);
                    }
                    Command::FeedEnded { id, feed, reason } => {
                        if let Some(o) = live.get_mut(&id).and_then(|l| l.offered.as_mut()) {
                            if !(o.ended(feed, reason) && o.renegotiate(&mut ep, id, &mut out)) {
                                ep.close(id, &mut out);
                            }
                        }
                    }
                    Command::Restart { token, sdp, reply } => {
                        let found = session_by_token(&live, &token);
                        let r = match found {
                            Some(id) => ep.restart(Instant::now(), id, &sdp, &mut out),
                            None => Err(OfferError::NoSession),
                        };
                        if let (Some(id), Ok(_)) = (found, &r) {
                            info!(session = id, "ICE restart");
                        }
                        let _ = reply.send(r);
                    }
                    Command::Close { token, reply } => {
                        let found = session_by_token(&live, &token);
                        if let Some(id) = found {
                            ep.close(id, &mut out);
                        }
                        let _ = reply.send(found.is_some());
                    }
                    Command::Keyframe { id, layer } => {
                        if ep.request_keyframe(id, layer, &mut out) {
                            counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Command::End { id } => ep.close(id, &mut out),
                }
            }
            f = out_rx.recv() => {
                let mut next = f;
                let mut taken = 0;
                while let Some(f) = next {
                    let r = match f.feed {
                        None => ep.write(f.id, f.track, f.wallclock, f.rtp_time, &f.data, &mut out),
                        Some(feed) => ep.write_feed(f.id, feed, f.track, f.wallclock, f.rtp_time, &f.data, f.keyframe, &mut out),
                    };
                    match r {
                        Ok(()) => {
                            counters.frames_out.fetch_add(1, Ordering::Relaxed);
                        }
                        // The session ended, or the feed: its play task is being stopped.
                        Err(WriteError::NoSession) => {}
                        Err(WriteError::NotSending(_)) if f.feed.is_some() => {}
                        Err(WriteError::Congested) => {
                            counters.frames_skipped_congested.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => debug!(session = f.id, "WebRTC write: {e}"),
                    }
                    taken += 1;
                    next = if taken < OUT_BATCH { out_rx.try_recv().ok() } else { None };
                }
            }
            _ = tokio::time::sleep_until(deadline.into()), if ticking => {
                ep.handle_timeout(Instant::now(), &mut out);
            }
            _ = shutdown.changed() => {
                let ids: Vec<SessionId> = live.keys().copied().collect();
                for id in ids {
                    ep.close(id, &mut out);
                }
                flush(&socket, &mut udp, &mut out, &mut live, &st, &mut ep).await;
                break;
            }
        }
        flush(&socket, &mut udp, &mut out, &mut live, &st, &mut ep).await;
    }
}

/// Sends what the endpoint wrote and acts on its events, until it has nothing more to say
/// (closing a session whose key was taken writes more).
async fn flush(
    socket: &UdpSocket,
    udp: &mut UdpOut,
    out: &mut Outputs,
    live: &mut HashMap<SessionId, Live>,
    st: &Arc<Shell>,
    ep: &mut Endpoint,
) {
    loop {
        send_transmits(socket, udp, out).await;
        if out.events.is_empty() {
            break;
        }
        for action in handle_events(out, live, st) {
            act(action, ep, out, live, st);
        }
    }
    let counters = &st.counters;
    counters.sessions_active.store(live.len() as u64, Ordering::Relaxed);
    let c = ep.counters();
    counters.datagrams_unroutable.store(c.unroutable, Ordering::Relaxed);
    counters.datagrams_malformed.store(c.malformed, Ordering::Relaxed);
    counters.nacks.store(c.nacks, Ordering::Relaxed);
    counters.plis.store(c.plis, Ordering::Relaxed);
    counters.rtp_packets.store(c.rtp_packets, Ordering::Relaxed);
    counters.rtp_packets_out.store(c.rtp_packets_out, Ordering::Relaxed);
    counters.nacks_in.store(c.nacks_in, Ordering::Relaxed);
    counters.keyframe_requests_in.store(c.keyframe_requests_in, Ordering::Relaxed);
}

/// The socket's sending side: datagrams to one peer go out together with UDP GSO (one
/// `sendmsg` for the packets of a frame to a viewer: the kernel's per-call cost, a third of
/// the gateway's CPU with one call per packet, is paid once per frame), where the kernel has it.
pub struct UdpOut {
    state: quinn_udp::UdpSocketState,
    buf: Vec<u8>,
}

impl UdpOut {
    /// Sending state for `socket`.
    pub fn new(socket: &UdpSocket) -> std::io::Result<Self> {
        let state = quinn_udp::UdpSocketState::new(socket.into())?;
        info!(gso_segments = state.max_gso_segments(), "WebRTC UDP sending");
        Ok(Self { state, buf: Vec::new() })
    }
}

/// Largest UDP payload of one GSO send.
const GSO_MAX_BYTES: usize = 65_000;

/// Sends `out`'s datagrams: runs of datagrams to the same address with the same size (the last
/// may be shorter) as one GSO send each.
async fn send_transmits(socket: &UdpSocket, udp: &mut UdpOut, out: &mut Outputs) {
    let ts = std::mem::take(&mut out.transmits);
    let max_segments = udp.state.max_gso_segments();
    let mut i = 0;
    while i < ts.len() {
        let first = &ts[i];
        let seg = first.contents.len();
        let limit = max_segments.min(GSO_MAX_BYTES / seg.max(1)).max(1);
        let mut j = i + 1;
        while j < ts.len() && j - i < limit && ts[j].destination == first.destination && ts[j].contents.len() <= seg {
            j += 1;
            if ts[j - 1].contents.len() < seg {
                break;
            }
        }
        let contents: &[u8] = if j - i == 1 {
            &first.contents
        } else {
            udp.buf.clear();
            for t in &ts[i..j] {
                udp.buf.extend_from_slice(&t.contents);
            }
            &udp.buf
        };
        let transmit = quinn_udp::Transmit {
            destination: first.destination,
            ecn: None,
            contents,
            segment_size: (j - i > 1).then_some(seg),
            src_ip: None,
        };
        let send = || socket.try_io(tokio::io::Interest::WRITABLE, || udp.state.try_send(socket.into(), &transmit));
        let mut r = send();
        if r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock) {
            // The kernel buffer is full: wait once rather than drop handshake packets.
            if socket.writable().await.is_ok() {
                r = send();
            }
        }
        if let Err(e) = r {
            debug!(to = %first.destination, datagrams = j - i, "WebRTC UDP send: {e}");
        }
        i = j;
    }
}

/// Acts on the endpoint's events; returns what is then to be done with the endpoint.
fn handle_events(out: &mut Outputs, live: &mut HashMap<SessionId, Live>, st: &Arc<Shell>) -> Vec<Action> {
    let counters = &st.counters;
    let mut actions = Vec::new();
    for ev in out.events.drain(..) {
        match ev {
            EndpointEvent::Media(id, frame) => {
                let Some(l) = live.get_mut(&id) else { continue };
                if frame.layer.is_some() {
                    l.rates.get_or_insert_with(LayerRates::default).push(&frame);
                }
                if !l.direct.is_empty() {
                    forward_direct(id, &frame, live, &mut actions);
                }
                if let Some(media) = live.get(&id).and_then(|l| l.media.as_ref()) {
                    if media.try_send(frame).is_err() {
                        counters.frames_dropped_queue.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            EndpointEvent::Connected(id) => {
                let Some(l) = live.get_mut(&id) else { continue };
                // The admission guard goes; the role starts.
                let Some((role, _pending)) = l.connecting.take() else { continue };
                counters.sessions_connected.fetch_add(1, Ordering::Relaxed);
                match role {
                    Role::Publish(reservation) => match reservation.claim() {
                        // The reservation becomes the key, unless a publisher that connected
                        // first has it.
                        Ok(publisher) => {
                            info!(key = %l.key, session = id, "WebRTC publisher connected");
                            let (mtx, mrx) = mpsc::channel(MEDIA_QUEUE);
                            let span = tracing::info_span!("whip", key = %l.key, session = id);
                            tokio::spawn(media_task(id, publisher, l.negotiated, mrx, st.clone()).instrument(span));
                            l.media = Some(mtx);
                        }
                        Err(e) => {
                            counters.sessions_key_taken.fetch_add(1, Ordering::Relaxed);
                            warn!(key = %l.key, session = id, "WebRTC publisher connected too late: {e} (another publisher connected first)");
                            actions.push(Action::Close(id));
                        }
                    },
                    Role::Play { sub } => {
                        info!(key = %l.key, session = id, "WebRTC viewer connected");
                        counters.play_sessions.fetch_add(1, Ordering::Relaxed);
                        let target = PlayTarget { id, feed: None };
                        let (video, audio) = (l.negotiated.send_video.is_some(), l.negotiated.send_audio.is_some());
                        l.play = Some(spawn_play(target, sub, video, audio, st, &l.key));
                    }
                    Role::Forward => {
                        info!(session = id, "WebRTC subscriber connected");
                        counters.play_sessions.fetch_add(1, Ordering::Relaxed);
                        if let Some(o) = l.offered.as_mut() {
                            o.connected();
                        }
                        start_feeds(live, id, st);
                    }
                }
            }
            EndpointEvent::Bitrate(id, bps) => {
                trace!(session = id, estimate = bps, "bandwidth estimate");
                if let Some(a) = budget(id, bps, live, &st.hub) {
                    actions.push(a);
                }
            }
            EndpointEvent::KeyframeRequest(id, feed) => {
                // A feed sent straight from a publisher: its layer's keyframe, from there.
                let direct = feed.and_then(|feed| live.get_mut(&id)?.offered.as_mut()?.direct(feed));
                if let Some(d) = direct {
                    if d.keyframe_due(Instant::now()) {
                        actions.push(Action::Keyframe {
                            id: d.publisher,
                            layer: d.pick.current(),
                        });
                    }
                    continue;
                }
                let l = live.get(&id);
                let notify = match feed {
                    None => l.and_then(|l| l.play.as_ref()).map(|p| &p.keyframe),
                    Some(feed) => l.and_then(|l| l.offered.as_ref()).and_then(|o| o.keyframe(feed)),
                };
                if let Some(n) = notify {
                    n.notify_one();
                }
            }
            EndpointEvent::Closed(id, reason) => {
                if let Some(l) = live.remove(&id) {
                    if let Some(o) = &l.offered {
                        o.tell(SfuEvent::Closed(reason.to_string()));
                    }
                    for (sub, feed) in &l.direct {
                        actions.push(Action::Ended {
                            id: *sub,
                            feed: *feed,
                            reason: "the publisher left".into(),
                        });
                    }
                    let who = if l.play.is_some() || l.offered.is_some() {
                        "viewer"
                    } else {
                        "publisher"
                    };
                    match reason {
                        CloseReason::Requested | CloseReason::Disconnected => {
                            info!(key = %l.key, session = id, "WebRTC {who} left: {reason}")
                        }
                        CloseReason::ConnectTimeout => {
                            counters.sessions_connect_timeouts.fetch_add(1, Ordering::Relaxed);
                            info!(key = %l.key, session = id, "WebRTC offer lapsed, the key is free: {reason}")
                        }
                        _ => warn!(key = %l.key, session = id, "WebRTC {who} ended: {reason}"),
                    }
                }
            }
        }
    }
    actions
}

/// What handling the endpoint's events leads to, done with the endpoint afterwards.
enum Action {
    Close(SessionId),
    /// A frame of a feed sent straight from a publisher.
    Write {
        id: SessionId,
        feed: FeedId,
        track: Track,
        wallclock: Instant,
        rtp_time: u64,
        data: Arc<[u8]>,
        keyframe: bool,
    },
    /// Ask a publisher for a keyframe (of one layer).
    Keyframe {
        id: SessionId,
        layer: Option<Rid>,
    },
    /// What a subscribing session's congestion control should probe for.
    Bitrate {
        id: SessionId,
        minimum: u64,
        desired: u64,
    },
    /// A feed sent straight from a publisher that left.
    Ended {
        id: SessionId,
        feed: FeedId,
        reason: String,
    },
}

/// What a feed's audio takes of the subscriber's bandwidth (Opus, with headers).
const AUDIO_BPS: u64 = 64_000;

fn act(action: Action, ep: &mut Endpoint, out: &mut Outputs, live: &mut HashMap<SessionId, Live>, st: &Arc<Shell>) {
    let counters = &st.counters;
    match action {
        Action::Close(id) => ep.close(id, out),
        Action::Write {
            id,
            feed,
            track,
            wallclock,
            rtp_time,
            data,
            keyframe,
        } => match ep.write_feed(id, feed, track, wallclock, rtp_time, &data, keyframe, out) {
            Ok(()) => {
                counters.frames_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(WriteError::Congested) => {
                counters.frames_skipped_congested.fetch_add(1, Ordering::Relaxed);
            }
            // Not connected or answered yet, or going: nothing to send it on.
            Err(e) => debug!(session = id, feed, "forwarding: {e}"),
        },
        Action::Keyframe { id, layer } => {
            if ep.request_keyframe(id, layer, out) {
                counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        Action::Bitrate { id, minimum, desired } => ep.set_bitrate(id, minimum, desired),
        Action::Ended { id, feed, reason } => {
            if let Some(o) = live.get_mut(&id).and_then(|l| l.offered.as_mut()) {
                if !(o.ended(feed, reason) && o.renegotiate(ep, id, out)) {
                    ep.close(id, out);
                }
            }
        }
    }
}

/// Starts an offered session's answered feeds, those of simulcast publishers straight from
/// their sessions.
fn start_feeds(live: &mut HashMap<SessionId, Live>, id: SessionId, st: &Arc<Shell>) {
    let sources: HashMap<String, SessionId> = live
        .iter()
        .filter(|(_, l)| l.rates.is_some() && l.media.is_some())
        .map(|(pid, l)| (l.key.clone(), *pid))
        .collect();
    let Some(o) = live.get_mut(&id).and_then(|l| l.offered.as_mut()) else {
        return;
    };
    let direct = o.start(id, st, |k| sources.get(&k.to_string()).copied());
    for (publisher, feed) in direct {
        if let Some(p) = live.get_mut(&publisher) {
            p.direct.push((id, feed));
        }
    }
}

/// A frame of a simulcast publisher to the feeds sent straight from it: each takes the layer
/// its bandwidth allows.
fn forward_direct(publisher: SessionId, frame: &RtpFrame, live: &mut HashMap<SessionId, Live>, actions: &mut Vec<Action>) {
    let Some(p) = live.get(&publisher) else { return };
    let now = frame.arrival;
    let layers = p.rates.as_ref().map(|r| r.layers(now)).unwrap_or_default();
    let subs = p.direct.clone();
    let mut gone = Vec::new();
    for (sub, feed) in subs {
        let Some(d) = live.get_mut(&sub).and_then(|l| l.offered.as_mut()).and_then(|o| o.direct(feed)) else {
            gone.push((sub, feed));
            continue;
        };
        if frame.track == Track::Video {
            d.pick.choose(&layers, now);
        }
        if let Some(rtp_time) = d.pick.push(frame) {
            actions.push(Action::Write {
                id: sub,
                feed,
                track: frame.track,
                wallclock: frame.arrival,
                rtp_time,
                data: frame.data.clone(),
                keyframe: frame.track == Track::Video && ingest::webrtc::simulcast::is_video_keyframe(frame.codec, &frame.data),
            });
        }
        if let Some(rid) = d.pick.wanted_keyframe() {
            if d.keyframe_due(now) {
                actions.push(Action::Keyframe {
                    id: publisher,
                    layer: Some(rid),
                });
            }
        }
    }
    if !gone.is_empty() {
        if let Some(p) = live.get_mut(&publisher) {
            p.direct.retain(|x| !gone.contains(x));
        }
    }
}

/// A subscribing session's bandwidth estimate: what is left after the feeds sent from the hub
/// (their input bitrates) is shared by the feeds sent straight from publishers. Returns what its
/// congestion control should probe for: twice what its feeds send (the top layers of the
/// direct ones), so that the estimate ramps up to a room's worth of feeds in a second or two
/// instead of creeping up from its start (the pacer holds media to the estimate).
fn budget(id: SessionId, bps: u64, live: &mut HashMap<SessionId, Live>, hub: &media::Hub) -> Option<Action> {
    let o = live.get_mut(&id)?.offered.as_mut()?;
    let from_hub: u64 = o.playing().filter_map(|k| hub.bitrate_in(k)).sum();
    let n = o.directs().count() as u64;
    if n == 0 && from_hub == 0 {
        return None;
    }
    let per_feed = bps.saturating_sub(from_hub + AUDIO_BPS * n) / n.max(1);
    let publishers: Vec<SessionId> = o
        .directs()
        .map(|d| {
            d.pick.set_budget(per_feed);
            d.publisher
        })
        .collect();
    let now = Instant::now();
    let top = |p: &SessionId| {
        let rates = live.get(p)?.rates.as_ref()?;
        rates.layers(now).iter().filter(|l| l.sent).map(|l| l.bitrate).max()
    };
    // Twice the top layers: the estimate keeps room above what is sent (a keyframe, a busier
    // picture) instead of settling on it.
    let desired: u64 = (publishers.iter().filter_map(top).sum::<u64>() + from_hub) * 2 + AUDIO_BPS * n;
    debug!(session = id, estimate = bps, from_hub, per_feed, desired, "subscriber bandwidth");
    Some(Action::Bitrate { id, minimum: 0, desired })
}

async fn media_task(id: SessionId, publisher: Publisher, neg: Negotiated, mut rx: mpsc::Receiver<RtpFrame>, st: Arc<Shell>) {
    let w = &st.config;
    let min_gap = Duration::from_millis(w.keyframe_request_min_ms);
    let periodic = (w.pli_interval_ms > 0).then(|| Duration::from_millis(w.pli_interval_ms));
    let mut pipeline = Pipeline::new(neg.video, neg.audio);
    // A simulcast publisher's layers become one video track.
    let mut layers = Layers::new();
    let mut layer_wanted: Option<Rid> = None;
    let mut layer_used: Option<Rid> = None;
    let mut layers_told: Vec<String> = Vec::new();
    pipeline.set_aac_encoder(w.aac_encoder.into());
    let mut keyframes = Pacer::new(min_gap);
    let mut ops = Vec::new();
    // Without a periodic request the interval's branch is disabled; its period is then unused.
    let period = periodic.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut audio_error_logged = false;
    let mut video_error_logged = false;
    let mut unrepaired_seen = 0;
    let counters = &st.counters;
    // H.264 and AAC are made from anything; the publisher's own codecs are added as they come.
    let mut supply = CodecSet::FLV;
    publisher.set_supply(supply);
    let multi_thread = tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
    loop {
        tokio::select! {
            f = rx.recv() => {
                let Some(f) = f else { break };
                let simulcast = f.layer.is_some();
                let passed = layers.push(f);
                if simulcast {
                    if let Some(rid) = layers.wanted_keyframe(Instant::now()) {
                        layer_wanted = Some(rid);
                        keyframes.ask();
                    }
                }
                let Some(f) = passed else { continue };
                if simulcast {
                    let rids: Vec<String> = layers.rids().iter().map(|r| r.to_string()).collect();
                    if rids != layers_told {
                        publisher.set_layers(rids.clone());
                        layers_told = rids;
                    }
                    if layers.current() != layer_used {
                        layer_used = layers.current();
                        info!(layer = ?layer_used, "simulcast: the stream now carries this layer");
                    }
                }
                // VP8/VP9 -> H.264 takes milliseconds per frame: off the async workers' hands.
                let heavy = f.track == Track::Video && f.codec != Codec::H264 && multi_thread;
                let own = match f.codec {
                    Codec::Opus => Some(MediaCodec::Opus),
                    Codec::Vp8 => Some(MediaCodec::Vp8),
                    Codec::Vp9 => Some(MediaCodec::Vp9),
                    _ => None,
                };
                if let Some(c) = own.filter(|c| !supply.contains(*c)) {
                    supply = supply.union(CodecSet::of(&[c]));
                    publisher.set_supply(supply);
                }
                // The publisher's own codecs go to the hub only while a consumer wants them.
                pipeline.set_forward(publisher.demand());
                // The publisher's own frame first: its viewers do not wait for the transcoder.
                let pts = pipeline.push_original(&f, &mut ops);
                apply(&publisher, &mut ops, counters, pipeline.transcodes_video());
                let wants_keyframe = if heavy {
                    tokio::task::block_in_place(|| pipeline.push_renditions(f, pts, &mut ops))
                } else {
                    pipeline.push_renditions(f, pts, &mut ops)
                };
                if wants_keyframe {
                    keyframes.ask();
                }
                apply(&publisher, &mut ops, counters, pipeline.transcodes_video());
                let unrepaired = pipeline.video().counters().dropped_waiting_keyframe
                    + pipeline.transcoder().map_or(0, |t| t.counters().skipped_waiting_keyframe);
                counters.video_frames_unrepaired.fetch_add(unrepaired - unrepaired_seen, Ordering::Relaxed);
                unrepaired_seen = unrepaired;
                if !video_error_logged {
                    if let Some(e) = pipeline.video_error() {
                        warn!("video stopped: {e}");
                        video_error_logged = true;
                    }
                }
                if !audio_error_logged {
                    if let Some(e) = pipeline.audio_error() {
                        warn!("audio stopped: {e}");
                        audio_error_logged = true;
                    }
                }
            }
            _ = publisher.keyframe_requested() => keyframes.ask(),
            _ = tick.tick(), if periodic.is_some() => keyframes.ask(),
        }
        if keyframes.due(Instant::now()) {
            // A layer a switch waits for, else the one in use (else the video).
            let layer = layer_wanted.take().or(layers.current());
            if st.handle.tx.try_send(Command::Keyframe { id, layer }).is_err() {
                keyframes.retry();
            }
        }
    }
    let c = pipeline.video().counters();
    let a = pipeline.audio().map(|a| a.counters()).unwrap_or_default();
    if let Some(t) = pipeline.transcoder() {
        let t = t.counters();
        info!(
            decoded = t.decoded,
            encoded = t.encoded,
            decode_errors = t.decode_errors,
            skipped_waiting_keyframe = t.skipped_waiting_keyframe,
            "VP8/VP9 -> H.264 transcoder ended"
        );
    }
    info!(
        sequence_headers = c.configs,
        dropped_waiting_keyframe = c.dropped_waiting_keyframe,
        opus_packets = a.packets,
        concealed_samples = a.concealed_samples,
        realign_inserted = a.realign_inserted,
        realign_dropped = a.realign_dropped,
        simulcast_switches = layers.counters().switches,
        simulcast_unused = layers.counters().unused,
        "WebRTC stream ended"
    );
}

/// Hands a media task's hub operations to the hub.
fn apply(publisher: &Publisher, ops: &mut Vec<HubOp>, counters: &WebRtcCounters, transcoded: bool) {
    for op in ops.drain(..) {
        match op {
            HubOp::VideoConfig(c) => {
                info!(width = c.info.width, height = c.info.height, codec = %c.info.codec_string(), transcoded, "video configuration");
                publisher.set_video_config(c);
            }
            HubOp::AudioConfig(c) => {
                info!(channels = c.info.channels, "audio: Opus -> AAC");
                publisher.set_audio_config(c);
            }
            HubOp::Stopped(c) => {
                info!(codec = ?c, "transcoding stopped: nobody takes it (it starts again on demand, at a keyframe)");
                publisher.drop_cached(c);
            }
            HubOp::Frame(f) => {
                if f.track == TrackKind::Video {
                    counters.video_frames.fetch_add(1, Ordering::Relaxed);
                }
                publisher.push(f, Instant::now())
            }
        }
    }
}

/// Where a play task's frames go: a session's own tracks (WHEP) or one of its feeds.
#[derive(Debug, Clone, Copy)]
pub struct PlayTarget {
    pub id: SessionId,
    pub feed: Option<FeedId>,
}

/// Starts the play task of a WHEP session or of a feed, sending `video` and/or `audio`.
pub fn spawn_play(target: PlayTarget, sub: Subscriber, video: bool, audio: bool, st: &Arc<Shell>, key: &str) -> PlayTask {
    let keyframe = Arc::new(Notify::new());
    let span = match target.feed {
        None => tracing::info_span!("whep", %key, session = target.id),
        Some(feed) => tracing::info_span!("feed", %key, session = target.id, feed),
    };
    let task = tokio::spawn(play_task(target, sub, video, audio, keyframe.clone(), st.clone()).instrument(span));
    PlayTask { keyframe, task }
}

/// The session with this token (WHIP/WHEP DELETE, an ICE restart). Signalling is rare: a scan
/// of the live sessions beats a second map to keep in step.
fn session_by_token(live: &HashMap<SessionId, Live>, token: &str) -> Option<SessionId> {
    live.iter().find(|(_, l)| l.token == token).map(|(id, _)| *id)
}

/// The offered session with this token.
fn offered_by_token<'a>(live: &'a mut HashMap<SessionId, Live>, token: &str) -> Option<(SessionId, &'a mut Offered)> {
    let id = session_by_token(live, token)?;
    Some((id, live.get_mut(&id)?.offered.as_mut()?))
}

/// A play task: the hub's frames of its stream, as the session sends them, onto the outgoing
/// queue; when the stream ends or cannot be sent, ends the session (WHEP) or tells the WebRTC
/// task that the feed ended.
async fn play_task(target: PlayTarget, mut sub: Subscriber, video: bool, audio: bool, keyframe: Arc<Notify>, st: Arc<Shell>) {
    let PlayTarget { id, feed } = target;
    let out = st.handle.out.clone();
    let counters = &st.counters;
    let mut viewer = WebRtcViewer::new(video);
    let mut frames = Vec::new();
    // What queued up while connecting: the configurations, the cached GOP, live frames since.
    let mut replay = Vec::new();
    let mut ended = false;
    loop {
        match sub.try_recv() {
            Some(Some(ev)) => replay.push(ev),
            Some(None) => {
                ended = true;
                break;
            }
            None => break,
        }
    }
    // A WebRTC publisher answers with a keyframe within a round trip (rate-limited there).
    sub.request_keyframe();
    let mut result = viewer.start(replay, &mut frames);
    // Frame times on the hub's timeline, mapped to this task's clock for RTCP sender reports
    // (one mapping for both tracks keeps them in sync).
    let mut base: Option<(Instant, i64)> = None;
    while result.is_ok() && !ended {
        for f in frames.drain(..) {
            let (t0, us0) = *base.get_or_insert((Instant::now(), f.timeline_us));
            let wallclock = wallclock(t0, us0, &f);
            let track = if f.track == TrackKind::Video { Track::Video } else { Track::Audio };
            let is_video = track == Track::Video;
            if !is_video && !audio {
                // The offer took no audio.
                continue;
            }
            let msg = Outgoing {
                id,
                feed,
                track,
                wallclock,
                rtp_time: f.rtp_time,
                data: f.data,
                keyframe: f.keyframe,
            };
            if out.try_send(msg).is_err() {
                counters.frames_dropped_out.fetch_add(1, Ordering::Relaxed);
                if is_video {
                    // What follows depends on the lost frame.
                    viewer.skip_to_keyframe();
                    sub.request_keyframe();
                }
            }
        }
        tokio::select! {
            ev = sub.recv() => match ev {
                Some(ev) => {
                    result = viewer.on_event(ev, &mut frames);
                    // Take what else is queued before writing.
                    while result.is_ok() {
                        match sub.try_recv() {
                            Some(Some(ev)) => result = viewer.on_event(ev, &mut frames),
                            Some(None) => { ended = true; break; }
                            None => break,
                        }
                    }
                }
                None => ended = true,
            },
            _ = keyframe.notified() => sub.request_keyframe(),
        }
    }
    let reason = match result {
        Err(e) => {
            warn!("WebRTC viewer ended: {e}");
            e.to_string()
        }
        Ok(()) => {
            info!("stream ended, closing the WebRTC viewer");
            "the stream ended".to_string()
        }
    };
    let cmd = match feed {
        None => Command::End { id },
        Some(feed) => Command::FeedEnded { id, feed, reason },
    };
    let _ = st.handle.tx.send(cmd).await;
}

/// The capture time of a frame for RTCP sender reports: its place on the hub's timeline
/// relative to the session's first frame.
fn wallclock(t0: Instant, us0: i64, f: &SendFrame) -> Instant {
    let d = f.timeline_us - us0;
    if d >= 0 {
        t0 + Duration::from_micros(d as u64)
    } else {
        t0.checked_sub(Duration::from_micros(d.unsigned_abs())).unwrap_or(t0)
    }
}

/// 128 random bits from the ICE credential generator (a CSPRNG), as a URL-safe token.
fn random_token() -> String {
    let a = str0m::IceCreds::new();
    format!("{}{}", a.ufrag, a.pass)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect()
}

#[cfg(test)]
mod candidate_tests {
    use super::*;

    #[test]
    fn public_addresses_only_when_given() {
        let any: SocketAddr = "0.0.0.0:8000".parse().unwrap();
        let ips: Vec<IpAddr> = vec!["203.0.113.1".parse().unwrap(), "198.51.100.2".parse().unwrap()];
        let c = candidate_addrs(any, &ips);
        let want: Vec<SocketAddr> = ["203.0.113.1:8000", "198.51.100.2:8000", "127.0.0.1:8000"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(c, want, "no guessed interface address beside the public ones");
        let bound: SocketAddr = "10.0.0.5:8000".parse().unwrap();
        assert_eq!(candidate_addrs(bound, &[]), [bound]);
        let own: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "203.0.113.1".parse().unwrap()];
        assert_eq!(candidate_addrs(bound, &own).len(), 2, "the bound address once");
    }
}
