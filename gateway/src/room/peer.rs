//! One task per participant: its publishing session (a WHIP-like session of the endpoint that
//! publishes `{room}/{peer}`) and its subscribing session (the forwarding API), with the offers
//! of the latter numbered (`session`, `seq`) so that a stale answer is refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media::StreamKey;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, Instrument};
use webrtc::endpoint::{OfferError, SessionSpec};

use super::registry::{ParticipantId, RoomError};
use super::RoomService;
use crate::admission::Refusal;
use crate::forward::{ForwardError, SfuEvent};
use crate::publish::{PublishRefusal, PublishRequest};
use crate::sfu::{Subscription, BROWSER_CODECS};
use crate::webrtc_server::{open_session, Command, OpenFailure, Role};

/// Commands a media task takes.
pub enum MediaCmd {
    /// The client's offer for its publishing peer connection; the answer goes back.
    Publish {
        sdp: String,
        /// An ICE restart of the publishing session (the client is back on a new network):
        /// the same session and stream; a new session if that one has ended.
        restart: bool,
        peer: SocketAddr,
        reply: oneshot::Sender<Result<String, RoomError>>,
    },
    /// Receive `key` (its stream went live).
    Subscribe(StreamKey),
    /// Stop receiving `key`.
    Unsubscribe(StreamKey),
    /// The client's answer to offer `seq` of subscribing session `session`.
    Answer {
        session: u64,
        seq: u64,
        sdp: String,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// The client lost its subscribing peer connection: a new session with every feed.
    Reopen { peer: SocketAddr },
    /// The participant has left.
    Close,
}

/// Commands waiting for a media task.
const QUEUE: usize = 64;

/// Starts participant `id`'s media task.
pub fn spawn(svc: &Arc<RoomService>, id: ParticipantId, key: StreamKey, peer: SocketAddr) -> mpsc::Sender<MediaCmd> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let span = tracing::info_span!("room", %key);
    let task = Media {
        svc: svc.clone(),
        id,
        key,
        peer,
        publishing: None,
        sub: None,
        session: 0,
        seq: 0,
        answered: true,
        wanted: BTreeSet::new(),
    };
    tokio::spawn(task.run(rx).instrument(span));
    tx
}

struct Media {
    svc: Arc<RoomService>,
    id: ParticipantId,
    key: StreamKey,
    peer: SocketAddr,
    /// The publishing session's token.
    publishing: Option<String>,
    sub: Option<Subscription>,
    /// The subscribing session's number (a new one means a new peer connection).
    session: u64,
    /// The latest offer's number in it.
    seq: u64,
    /// The latest offer was answered.
    answered: bool,
    /// The streams it should receive.
    wanted: BTreeSet<StreamKey>,
}

/// A refusal of the admission limits, for the client.
fn busy(r: Refusal) -> RoomError {
    RoomError::new("server-busy", r.to_string())
}

fn forward_error(e: ForwardError) -> RoomError {
    match e {
        ForwardError::Refused(r) => busy(r),
        ForwardError::Down => RoomError::new("server-busy", e.to_string()),
        e => RoomError::new("sdp-refused", e.to_string()),
    }
}

impl Media {
    async fn run(mut self, mut rx: mpsc::Receiver<MediaCmd>) {
        loop {
            let ev = async {
                match self.sub.as_mut() {
                    Some(s) => s.event().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    None | Some(MediaCmd::Close) => break,
                    Some(cmd) => self.command(cmd).await,
                },
                ev = ev => self.event(ev).await,
            }
        }
        self.close_publishing().await;
        // Dropping the subscription closes its session.
        info!("participant's sessions closed");
    }

    async fn command(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::Publish { sdp, restart, peer, reply } => {
                self.peer = peer;
                let restarted = match (&self.publishing, restart) {
                    (Some(token), true) => self.restart(token.clone(), sdp.clone()).await,
                    _ => None,
                };
                let r = match restarted {
                    Some(r) => r,
                    None => self.publish(sdp).await,
                };
                let _ = reply.send(r);
            }
            MediaCmd::Subscribe(key) => {
                if self.wanted.insert(key.clone()) {
                    self.subscribe(key).await;
                }
            }
            MediaCmd::Unsubscribe(key) => {
                if self.wanted.remove(&key) {
                    if let Some(s) = &self.sub {
                        // Its stream may have ended already (then the feed is gone).
                        if let Err(e) = s.unsubscribe(&key).await {
                            debug!(%key, "unsubscribe: {e}");
                        }
                    }
                }
            }
            MediaCmd::Answer { session, seq, sdp, reply } => {
                let r = if session != self.session || seq != self.seq || self.answered {
                    Err(RoomError::new(
                        "stale-answer",
                        format!(
                            "the latest offer is {}/{}; this answer is to {session}/{seq}",
                            self.session, self.seq
                        ),
                    ))
                } else if let Some(s) = &self.sub {
                    self.answered = true;
                    s.answer(sdp).await.map_err(forward_error)
                } else {
                    Err(RoomError::new("stale-answer", "that session has closed"))
                };
                let _ = reply.send(r);
            }
            MediaCmd::Reopen { peer } => {
                self.peer = peer;
                self.sub = None;
                self.reopen().await;
            }
            MediaCmd::Close => {}
        }
    }

    /// Opens the publishing session for the client's offer (closing an earlier one first: a
    /// republish after the peer connection failed keeps the key).
    async fn publish(&mut self, sdp: String) -> Result<String, RoomError> {
        self.close_publishing().await;
        let svc = &self.svc;
        let grant = svc
            .publishing
            .authorize(PublishRequest {
                key: self.key.clone(),
                protocol: "room",
                remote: self.peer.to_string(),
                bearer: None,
            })
            .map_err(|e| RoomError::new("not-allowed", e.to_string()))?;
        let pending = svc.admission.admit(self.peer.ip(), Instant::now()).map_err(busy)?;
        let reservation = svc.publishing.reserve(grant).map_err(|e| match e {
            e @ PublishRefusal::KeyTaken(_) => RoomError::new("key-taken", e.to_string()),
            e => RoomError::new("server-busy", e.to_string()),
        })?;
        // The session outlives an ICE drop for the reconnect grace: the client restarts ICE on
        // it and the stream goes on.
        let spec = SessionSpec {
            grace: Some(Duration::from_millis(svc.config.room.reconnect_grace_ms)),
            ..SessionSpec::receiver()
        };
        let accepted = match open_session(&svc.webrtc, sdp, spec, Role::Publish(reservation), pending).await {
            Ok(a) => a,
            Err(OpenFailure::Refused(e)) => {
                let code = match e {
                    OfferError::Full(_) => "server-busy",
                    _ => "sdp-refused",
                };
                return Err(RoomError::new(code, e.to_string()));
            }
            Err(OpenFailure::Down | OpenFailure::NoAnswer) => return Err(RoomError::new("server-busy", "WebRTC is shutting down")),
        };
        info!("publishing session created, connecting");
        self.publishing = Some(accepted.token);
        Ok(accepted.answer)
    }

    /// An ICE restart of the publishing session; `None` when that session is gone (then the
    /// offer opens a new one).
    async fn restart(&mut self, token: String, sdp: String) -> Option<Result<String, RoomError>> {
        let (reply, rx) = oneshot::channel();
        self.svc.webrtc.tx.send(Command::Restart { token, sdp, reply }).await.ok()?;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(Ok(answer))) => {
                info!("publishing session: ICE restart");
                Some(Ok(answer))
            }
            Ok(Ok(Err(OfferError::NoSession))) => None,
            Ok(Ok(Err(e))) => Some(Err(RoomError::new("sdp-refused", e.to_string()))),
            _ => Some(Err(RoomError::new("server-busy", "WebRTC is shutting down"))),
        }
    }

    async fn close_publishing(&mut self) {
        if let Some(token) = self.publishing.take() {
            let (reply, rx) = oneshot::channel();
            if self.svc.webrtc.tx.send(Command::Close { token, reply }).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
            }
        }
    }

    /// Adds `key` to the subscribing session, or opens one.
    async fn subscribe(&mut self, key: StreamKey) {
        let Some(s) = &self.sub else { return self.reopen().await };
        match s.subscribe(&key).await {
            Ok(()) => {}
            Err(ForwardError::TooMany(_)) | Err(ForwardError::NoSession) => self.reopen().await,
            Err(ForwardError::AlreadySubscribed(_)) => {}
            Err(e) => {
                debug!(%key, "subscribe: {e}");
                self.wanted.remove(&key);
            }
        }
    }

    /// A new subscribing session with every wanted stream that is live; its offer goes out.
    async fn reopen(&mut self) {
        self.sub = None;
        let live: Vec<StreamKey> = self.wanted.iter().filter(|k| self.svc.hub.stream(k).is_some()).cloned().collect();
        self.wanted.retain(|k| live.contains(k));
        if live.is_empty() {
            return;
        }
        match self.svc.forwarder.open(self.peer, &live, BROWSER_CODECS).await {
            Ok((sub, offer)) => {
                self.sub = Some(sub);
                self.session += 1;
                self.seq = 0;
                self.offer(offer);
            }
            Err(e) => {
                debug!("subscribing session refused: {e}");
                let err = forward_error(e);
                self.svc.emit_to(self.id, "room:error", &err.json());
            }
        }
    }

    fn offer(&mut self, sdp: String) {
        self.seq += 1;
        self.answered = false;
        let data = json!({ "session": self.session, "seq": self.seq, "sdp": sdp });
        self.svc.emit_to(self.id, "sub:offer", &data);
    }

    async fn event(&mut self, ev: Option<SfuEvent>) {
        match ev {
            Some(SfuEvent::Offer(sdp)) => self.offer(sdp),
            Some(SfuEvent::Ended { key, reason }) => {
                self.wanted.remove(&key);
                let data = json!({ "session": self.session, "key": key.to_string(), "reason": reason });
                self.svc.emit_to(self.id, "sub:ended", &data);
            }
            Some(SfuEvent::Closed(reason)) => self.closed(reason, true).await,
            // The forwarding is gone (shutdown): nothing to reopen.
            None => self.closed("the session ended".into(), false).await,
        }
    }

    /// The subscribing session is gone (ICE lost: the client is on a new network, or it
    /// stopped answering): the client is told, and a new one is opened if there is anything to
    /// receive (its offer comes with the next session number). A client that never connects
    /// gets one every `webrtc.connect_timeout_ms`, the time each takes to fail.
    async fn closed(&mut self, reason: String, reopen: bool) {
        info!("subscribing session {} closed: {reason}", self.session);
        self.sub = None;
        let data = json!({ "session": self.session, "reason": reason });
        self.svc.emit_to(self.id, "sub:closed", &data);
        if reopen {
            self.reopen().await;
        }
    }
}
