//! The Socket.IO shell of the room (socketioxide).
//!
//! socketioxide runs each event's handler in a task of its own, so two events read together
//! may be handled out of order. Here every event goes, in the order it was read, into its
//! socket's bounded inbox (the [`Queued`] extractor runs while the packet is read); one task per
//! socket takes them in order, with the socket's rate limit, and answers each in its ack (or a
//! `room:error` when the client asked for no ack). A full inbox answers `rate-limited` at once.
//! The inbox and the handlers are set up in the connect middleware, before the client hears
//! that it is connected and sends what it buffered. A socket with `room.flood_refusals` refused
//! events in 10 s is a flood: it gets a `flood` error and is disconnected (its send buffer holds
//! every answer until then, see `room.send_buffer_packets`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use serde::Deserialize;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, Event, HttpExtension, SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, FromMessageParts};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::{Sid, Socket};
use socketioxide::SocketIo;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, Instrument};

use super::peer::{self, MediaCmd};
use super::registry::{token, JoinRequest, Presence, RoomError};
use super::turn::ice_servers;
use super::{unix_ms, RoomService};

/// Events waiting in a socket's inbox.
const INBOX: usize = 32;

/// What reaches a socket's task.
enum Inbound {
    /// The handshake carried a resume token.
    Resume(String),
    Event {
        event: String,
        data: Result<Value, String>,
        ack: Option<AckSender>,
    },
}

/// A socket's inbox, kept in its extensions.
#[derive(Clone)]
struct Inbox(mpsc::Sender<Inbound>, Arc<std::sync::Mutex<Flood>>);

/// The window in which a socket's refused events are counted.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// Counts a socket's refused events (sans-IO).
#[derive(Debug)]
struct Flood {
    limit: u32,
    since: Option<Instant>,
    refused: u32,
}

/// What to do with a refused event.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// Answer it (`rate-limited`).
    Answer,
    /// The limit is reached: send `flood` and disconnect.
    Flood,
    /// The socket is being disconnected: nothing more to say.
    Silent,
}

impl Flood {
    fn new(limit: u32) -> Self {
        Flood {
            limit,
            since: None,
            refused: 0,
        }
    }

    fn refuse(&mut self, now: Instant) -> Refusal {
        if self.refused > self.limit {
            return Refusal::Silent;
        }
        if self.since.is_none_or(|t| now.duration_since(t) >= FLOOD_WINDOW) {
            self.since = Some(now);
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.limit {
            Refusal::Flood
        } else {
            Refusal::Answer
        }
    }
}

/// Counts a refused event of a socket; true when it is to be answered (`rate-limited`). The
/// refusal over the limit ends the socket as a flood ([`flood`]); later ones go unanswered.
fn refused(count: &std::sync::Mutex<Flood>, now: Instant, sock: impl FnOnce() -> SocketRef) -> bool {
    let Ok((verdict, limit)) = count.lock().map(|mut f| (f.refuse(now), f.limit)) else {
        return false;
    };
    match verdict {
        Refusal::Answer => true,
        Refusal::Flood => {
            flood(sock(), limit);
            false
        }
        Refusal::Silent => false,
    }
}

/// Ends a flooding socket: a `flood` error, then the disconnect.
fn flood(s: SocketRef, limit: u32) {
    info!(sid = %s.id, "flood: {limit} refused events in {} s; disconnected", FLOOD_WINDOW.as_secs());
    let e = RoomError::new(
        "flood",
        format!("more than {limit} refused events in {} s: disconnected", FLOOD_WINDOW.as_secs()),
    );
    let _ = s.emit("room:error", &e.json());
    // What is queued for the client is discarded when its transport closes: give the writer
    // time to send the answers and this error (it ignores the socket's events meanwhile).
    tokio::spawn(async move {
        tokio::time::sleep(FLOOD_FLUSH).await;
        let _ = s.disconnect();
    });
}

/// How long a flooding socket's queued packets have to be written before it is disconnected.
const FLOOD_FLUSH: Duration = Duration::from_secs(1);

/// Puts the event in its socket's inbox as it is read (see the module's doc).
struct QueuedLocal;

impl FromMessageParts<socketioxide::adapter::LocalAdapter> for QueuedLocal {
    type Error = Infallible;
    fn from_message_parts(
        s: &Arc<Socket<socketioxide::adapter::LocalAdapter>>,
        v: &mut socketioxide_core::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        let event = Event::from_message_parts(s, v, ack_id).map(|e| e.0).unwrap_or_default();
        let Ok(TryData(data)) = TryData::<Value>::from_message_parts(s, v, ack_id);
        let data = data.map_err(|e| e.to_string());
        let ack = ack_id
            .is_some()
            .then(|| AckSender::from_message_parts(s, v, ack_id))
            .and_then(Result::ok);
        let Some(Inbox(tx, count)) = s.extensions.get::<Inbox>() else {
            return Ok(QueuedLocal);
        };
        if let Err(mpsc::error::TrySendError::Full(Inbound::Event { event, ack, .. })) = tx.try_send(Inbound::Event { event, data, ack }) {
            if refused(&count, Instant::now(), || SocketRef::from(s.clone())) {
                let e = RoomError::new("rate-limited", format!("too many events waiting ({INBOX}); {event} dropped"));
                reply(s, ack, &event, Err(e));
            }
        }
        Ok(QueuedLocal)
    }
}

/// Answers an event: in its ack, else (an error) as `room:error`.
fn reply(s: &Socket<socketioxide::adapter::LocalAdapter>, ack: Option<AckSender>, event: &str, r: Result<Value, RoomError>) {
    let body = match &r {
        Ok(v) => {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("ok".into(), Value::Bool(true));
                v
            } else {
                json!({ "ok": true, "data": v })
            }
        }
        Err(e) => json!({ "ok": false, "error": e.json() }),
    };
    match (ack, r) {
        (Some(a), _) => {
            let _ = a.send(&body);
        }
        (None, Err(e)) => {
            let mut err = e.json();
            err["event"] = Value::String(event.chars().take(64).collect());
            let _ = s.emit("room:error", &err);
        }
        (None, Ok(_)) => {}
    }
}

/// The handshake's `auth`.
#[derive(Deserialize, Default)]
struct Auth {
    #[serde(default)]
    resume: Option<String>,
}

/// Builds the Socket.IO layer of `/socket.io/` and registers the room's handlers.
pub fn layer(svc: &Arc<RoomService>) -> SocketIoLayer {
    let c = &svc.config.room;
    let max = c.max_message_bytes;
    let (layer, io) = SocketIo::builder()
        .ping_interval(Duration::from_millis(c.ping_interval_ms))
        .ping_timeout(Duration::from_millis(c.ping_timeout_ms))
        .max_payload(max as u64)
        .ws_max_message_size(max)
        .ws_max_frame_size(max)
        .max_buffer_size(c.send_buffer_packets)
        .connect_timeout(Duration::from_secs(10))
        .build_layer();
    svc.set_io(io.clone());
    let on_connect = svc.clone();
    let middleware = move |s: SocketRef, TryData(auth): TryData<Auth>, addr: HttpExtension<ConnectInfo<SocketAddr>>| {
        let svc = on_connect.clone();
        async move { connect(svc, s, auth.unwrap_or_default(), addr.0 .0) }
    };
    io.ns("/", (async || {}).with(middleware));
    layer
}

/// Why a socket was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// A new socket: its inbox, handlers and task.
fn connect(svc: Arc<RoomService>, s: SocketRef, auth: Auth, addr: SocketAddr) -> Result<(), Refused> {
    if !svc.socket_opened(addr.ip()) {
        return Err(Refused(format!(
            "too many connections from {} (room.max_sockets_per_address = {})",
            addr.ip(),
            svc.config.room.max_sockets_per_address
        )));
    }
    let (tx, rx) = mpsc::channel(INBOX);
    if let Some(t) = auth.resume {
        let _ = tx.try_send(Inbound::Resume(t));
    }
    let count = Arc::new(std::sync::Mutex::new(Flood::new(svc.config.room.flood_refusals)));
    s.extensions.insert(Inbox(tx, count.clone()));
    s.on_fallback(async |_: QueuedLocal| {});
    s.on_disconnect(async |s: SocketRef| {
        // The task ends once it has handled what is in the inbox.
        s.extensions.remove::<Inbox>();
    });
    let sid = s.id;
    let span = tracing::info_span!("room-socket", %addr, %sid);
    tokio::spawn(client(svc, sid, addr, rx, count).instrument(span));
    Ok(())
}

/// One socket's events, in order.
async fn client(svc: Arc<RoomService>, sid: Sid, addr: SocketAddr, mut rx: mpsc::Receiver<Inbound>, count: Arc<std::sync::Mutex<Flood>>) {
    debug!("room socket connected");
    let c = &svc.config.room;
    let (rate, burst) = (c.events_per_second, c.events_burst as f64);
    let (mut tokens, mut at) = (burst, Instant::now());
    let mut refused_at: Option<Instant> = None;
    while let Some(m) = rx.recv().await {
        let Some(sock) = svc.socket(sid) else { break };
        match m {
            Inbound::Resume(t) => {
                if let Err(e) = resume(&svc, sid, addr, &t) {
                    let _ = sock.emit("room:error", &e.json());
                }
            }
            Inbound::Event { event, data, ack } => {
                let now = Instant::now();
                tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(burst);
                at = now;
                let r = if tokens < 1.0 {
                    if !refused(&count, now, || sock.clone()) {
                        continue;
                    }
                    // Every request is answered (its sender is waiting for the ack); of those
                    // that wait for none, one error a second tells a flooding client.
                    if ack.is_none() && refused_at.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                        continue;
                    }
                    refused_at = Some(now);
                    Err(RoomError::new("rate-limited", format!("at most {rate} events per second")))
                } else {
                    tokens -= 1.0;
                    match data {
                        Ok(d) => handle(&svc, sid, addr, &event, d).await,
                        Err(e) => Err(RoomError::new("bad-payload", format!("{event}: {e}"))),
                    }
                };
                if let Err(e) = &r {
                    debug!("{event} refused: {}: {}", e.code, e.message);
                }
                reply(&sock, ack, &event, r);
            }
        }
    }
    svc.socket_closed(addr.ip());
    let fx = svc.registry().disconnected(sid, Instant::now());
    svc.apply(fx);
    debug!("room socket closed");
}

fn payload<T: serde::de::DeserializeOwned>(event: &str, v: Value) -> Result<T, RoomError> {
    serde_json::from_value(v).map_err(|e| RoomError::new("bad-payload", format!("{event}: {e}")))
}

#[derive(Deserialize)]
struct PresenceMsg {
    seq: u64,
    #[serde(flatten)]
    presence: Presence,
}

#[derive(Deserialize)]
struct ChatMsg {
    text: String,
}

#[derive(Deserialize)]
struct OfferMsg {
    sdp: String,
    /// An ICE restart of the publishing session.
    #[serde(default)]
    restart: bool,
}

#[derive(Deserialize)]
struct AnswerMsg {
    session: u64,
    seq: u64,
    sdp: String,
}

/// One event of a socket.
async fn handle(svc: &Arc<RoomService>, sid: Sid, addr: SocketAddr, event: &str, data: Value) -> Result<Value, RoomError> {
    let now = Instant::now();
    match event {
        "rooms:list" => {
            let mut r = svc.registry();
            r.watch_lobby(sid);
            Ok(r.list())
        }
        "room:join" => {
            let req: JoinRequest = payload(event, data)?;
            let hub = svc.hub.clone();
            let connecting: Vec<media::StreamKey> = hub.connecting().into_iter().map(|c| c.key).collect();
            let taken = |k: &media::StreamKey| hub.stream(k).is_some() || connecting.contains(k);
            let (joined, fx) = svc.registry().join(sid, &req, taken, token(), now)?;
            info!(key = %joined.key, "joined room {}", joined.room);
            let tx = peer::spawn(svc, joined.id, joined.key.clone(), addr);
            svc.add_media(joined.id, tx);
            svc.apply(fx);
            Ok(welcome(svc, joined.payload, &joined.key))
        }
        "room:leave" => {
            let fx = svc.registry().leave(sid)?;
            svc.apply(fx);
            Ok(json!({}))
        }
        "presence" => {
            let m: PresenceMsg = payload(event, data)?;
            let fx = svc.registry().presence(sid, m.seq, m.presence)?;
            svc.apply(fx);
            Ok(json!({}))
        }
        "chat:send" => {
            let m: ChatMsg = payload(event, data)?;
            let (msg, fx) = svc.registry().chat(sid, &m.text, unix_ms(), now)?;
            svc.apply(fx);
            Ok(json!({ "id": msg.id, "ts": msg.ts }))
        }
        "pub:offer" => {
            let m: OfferMsg = payload(event, data)?;
            let (reply, rx) = oneshot::channel();
            media_cmd(
                svc,
                sid,
                MediaCmd::Publish {
                    sdp: m.sdp,
                    restart: m.restart,
                    peer: addr,
                    reply,
                },
            )
            .await?;
            let answer = rx.await.map_err(|_| gone())??;
            Ok(json!({ "sdp": answer }))
        }
        "sub:answer" => {
            let m: AnswerMsg = payload(event, data)?;
            let (reply, rx) = oneshot::channel();
            let cmd = MediaCmd::Answer {
                session: m.session,
                seq: m.seq,
                sdp: m.sdp,
                reply,
            };
            media_cmd(svc, sid, cmd).await?;
            rx.await.map_err(|_| gone())??;
            Ok(json!({}))
        }
        "sub:restart" => {
            media_cmd(svc, sid, MediaCmd::Reopen { peer: addr }).await?;
            Ok(json!({}))
        }
        // The server is ICE-lite: its candidates are in its SDP, and the client's are learnt
        // from their checks (as WHIP PATCH, docs/protocols.md).
        "ice:candidate" => Ok(json!({})),
        _ => Err(RoomError::new(
            "unknown-event",
            format!("no event {:?}", event.chars().take(64).collect::<String>()),
        )),
    }
}

fn gone() -> RoomError {
    RoomError::new("not-in-room", "the participant has left")
}

/// Sends `cmd` to the media task of `sid`'s participant.
async fn media_cmd(svc: &RoomService, sid: Sid, cmd: MediaCmd) -> Result<(), RoomError> {
    let id = svc
        .registry()
        .participant_of(sid)
        .ok_or_else(|| RoomError::new("not-in-room", "join a room first"))?;
    let tx = svc.media_of(id).ok_or_else(gone)?;
    tx.send(cmd).await.map_err(|_| gone())
}

/// A resume on a new socket.
fn resume(svc: &Arc<RoomService>, sid: Sid, addr: SocketAddr, t: &str) -> Result<(), RoomError> {
    let (joined, fx) = svc.registry().resume(sid, t, token())?;
    info!(key = %joined.key, "resumed in room {}", joined.room);
    svc.apply(fx);
    let _ = addr;
    let welcome = welcome(svc, joined.payload, &joined.key);
    svc.emit(sid, "room:resumed", &welcome);
    Ok(())
}

/// The join payload with what is per client: ICE servers (fresh TURN credentials), the ICE
/// transport policy, the ports of the share URLs.
fn welcome(svc: &RoomService, mut payload: Value, key: &media::StreamKey) -> Value {
    let cfg = &svc.config;
    let name = format!("{}.{}", key.app(), key.stream());
    let servers = ice_servers(&cfg.webrtc.ice_servers, &cfg.turn, &name, unix_ms() / 1000);
    payload["iceServers"] = serde_json::to_value(servers).unwrap_or_default();
    payload["iceTransportPolicy"] = Value::String(cfg.turn.ice_transport_policy.clone());
    payload["ports"] = json!({ "rtmp": svc.rtmp_port });
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_the_refusal_beyond_the_limit_in_the_window() {
        let t0 = Instant::now();
        let mut f = Flood::new(3);
        assert_eq!(f.refuse(t0), Refusal::Answer);
        assert_eq!(f.refuse(t0), Refusal::Answer);
        // A new window starts the count again.
        let t1 = t0 + FLOOD_WINDOW;
        for _ in 0..3 {
            assert_eq!(f.refuse(t1), Refusal::Answer);
        }
        assert_eq!(f.refuse(t1 + Duration::from_secs(9)), Refusal::Flood);
        // Once a flood, silent, also in a later window.
        assert_eq!(f.refuse(t1 + Duration::from_secs(9)), Refusal::Silent);
        assert_eq!(f.refuse(t1 + FLOOD_WINDOW * 5), Refusal::Silent);
    }
}
