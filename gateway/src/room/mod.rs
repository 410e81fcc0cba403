//! The chat room: rooms, presence and chat over Socket.IO (`/socket.io/`, socketioxide), each
//! participant publishing `{room}/{peer}` on a WebRTC session of the one endpoint (as WHIP
//! does) and receiving the others' streams on one subscribing session (the forwarding API of
//! `sfu`). docs/room-protocol.md has the events.
//!
//! - [`registry`]: the rooms (sans-IO: calls in, messages out);
//! - [`names`]: room names and the peer names made of display names (sans-IO);
//! - [`turn`]: TURN REST credentials;
//! - [`signal`]: the Socket.IO shell (one ordered inbox and task per socket);
//! - [`peer`]: one task per participant owning its sessions.

pub mod names;
pub mod peer;
pub mod registry;
pub mod signal;
pub mod turn;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use media::Hub;
use serde_json::Value;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use socketioxide::SocketIo;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info};

use crate::admission::Admission;
use crate::config::Config;
use crate::publish::Publishing;
use crate::sfu::Forwarder;
use crate::webrtc_server::WebRtcHandle;
use registry::{Effects, MediaAction, ParticipantId, Registry};

/// What the room needs of the gateway.
pub struct RoomService {
    pub registry: Mutex<Registry<Sid>>,
    /// Taken out at shutdown before it is closed (socketioxide panics on a lookup after).
    io: RwLock<Option<SocketIo>>,
    pub hub: Hub,
    pub forwarder: Arc<Forwarder>,
    pub publishing: Arc<Publishing>,
    pub webrtc: WebRtcHandle,
    pub admission: Admission,
    pub config: Config,
    /// The RTMP port, for the share URLs.
    pub rtmp_port: u16,
    /// Each participant's media task.
    media: Mutex<HashMap<ParticipantId, mpsc::Sender<peer::MediaCmd>>>,
    /// Open sockets per client address.
    sockets: Mutex<HashMap<IpAddr, usize>>,
}

/// Locks a mutex, also after a panic elsewhere (the registry's calls leave it consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unix milliseconds.
pub fn unix_ms() -> u64 {
    u64::try_from(media::unix_ms()).unwrap_or(0)
}

impl RoomService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hub: Hub,
        forwarder: Arc<Forwarder>,
        publishing: Arc<Publishing>,
        webrtc: WebRtcHandle,
        admission: Admission,
        config: Config,
        rtmp_port: u16,
    ) -> Arc<Self> {
        Arc::new(RoomService {
            registry: Mutex::new(Registry::new(config.room.clone())),
            io: RwLock::new(None),
            hub,
            forwarder,
            publishing,
            webrtc,
            admission,
            config,
            rtmp_port,
            media: Mutex::new(HashMap::new()),
            sockets: Mutex::new(HashMap::new()),
        })
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry<Sid>> {
        lock(&self.registry)
    }

    /// The socket `sid`, if it is open (and the server is not shutting down).
    pub fn socket(&self, sid: Sid) -> Option<SocketRef> {
        let io = self.io.read().unwrap_or_else(|e| e.into_inner());
        io.as_ref()?.get_socket(sid)
    }

    fn set_io(&self, io: SocketIo) {
        *self.io.write().unwrap_or_else(|e| e.into_inner()) = Some(io);
    }

    /// Sends `event` to socket `sid` (a socket that is gone is skipped).
    pub fn emit(&self, sid: Sid, event: &str, data: &Value) {
        if let Some(s) = self.socket(sid) {
            if let Err(e) = s.emit(event, data) {
                // A client that lets 128 packets pile up is not reading: it reconnects.
                debug!(%sid, "room emit {event} failed: {e}");
                let _ = s.disconnect();
            }
        }
    }

    /// Sends `event` to participant `id`'s socket, if it has one.
    pub fn emit_to(&self, id: ParticipantId, event: &str, data: &Value) {
        let sid = self.registry().socket_of(id);
        if let Some(sid) = sid {
            self.emit(sid, event, data);
        }
    }

    /// Carries out what the registry asked.
    pub fn apply(&self, fx: Effects<Sid>) {
        for e in &fx.emits {
            self.emit(e.to, e.event, &e.data);
        }
        for s in fx.disconnect {
            if let Some(sock) = self.socket(s) {
                let _ = sock.disconnect();
            }
        }
        for m in fx.media {
            let (who, cmd) = match m {
                MediaAction::Subscribe { who, key } => (who, peer::MediaCmd::Subscribe(key)),
                MediaAction::Unsubscribe { who, key } => (who, peer::MediaCmd::Unsubscribe(key)),
                MediaAction::Close(who) => {
                    if let Some(tx) = lock(&self.media).remove(&who) {
                        let _ = tx.try_send(peer::MediaCmd::Close);
                    }
                    continue;
                }
            };
            let tx = lock(&self.media).get(&who).cloned();
            if let Some(tx) = tx {
                // A full queue: the participant's task is far behind; it reopens on its own.
                let _ = tx.try_send(cmd);
            }
        }
    }

    /// Participant `id`'s media task.
    pub fn media_of(&self, id: ParticipantId) -> Option<mpsc::Sender<peer::MediaCmd>> {
        lock(&self.media).get(&id).cloned()
    }

    fn add_media(&self, id: ParticipantId, tx: mpsc::Sender<peer::MediaCmd>) {
        lock(&self.media).insert(id, tx);
    }

    /// Counts a socket of `ip`; false when it has too many.
    fn socket_opened(&self, ip: IpAddr) -> bool {
        let mut s = lock(&self.sockets);
        let n = s.entry(ip).or_default();
        if *n >= self.config.room.max_sockets_per_address {
            return false;
        }
        *n += 1;
        true
    }

    fn socket_closed(&self, ip: IpAddr) {
        let mut s = lock(&self.sockets);
        if let Some(n) = s.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&ip);
            }
        }
    }

    /// Every 100 ms: participants whose stream went live or ended, reconnect graces that ran
    /// out, the lobby's room list (at most once a second).
    pub async fn tick(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_lobby = Instant::now();
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => break,
            }
            let keys = self.registry().keys();
            let changes: Vec<(ParticipantId, bool)> = keys
                .into_iter()
                .filter_map(|(id, key, was)| {
                    // Live: its first keyframe is in (a feed needs its tracks).
                    let live = self.hub.stream(&key).is_some_and(|s| s.video.is_some() || s.audio.is_some());
                    (live != was).then_some((id, live))
                })
                .collect();
            let now = Instant::now();
            let fx = {
                let mut r = self.registry();
                let mut fx = r.expire(now);
                for (id, live) in changes {
                    let f = r.set_live(id, live);
                    fx.emits.extend(f.emits);
                    fx.media.extend(f.media);
                }
                if now.duration_since(last_lobby) >= Duration::from_secs(1) {
                    let lobby = r.lobby_update();
                    if !lobby.is_empty() {
                        last_lobby = now;
                    }
                    fx.emits.extend(lobby);
                }
                fx
            };
            self.apply(fx);
        }
        info!("room service stopping");
        let io = self.io.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(io) = io {
            io.close().await;
        }
        let all: Vec<_> = lock(&self.media).drain().collect();
        for (_, tx) in all {
            let _ = tx.try_send(peer::MediaCmd::Close);
        }
    }
}
