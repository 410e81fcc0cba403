//! The rooms, their participants and chat (sans-IO): every call takes what happened and returns
//! what to tell whom ([`Effects`]); the Socket.IO shell (`room::signal`) sends it. Sockets are
//! an opaque `S` (socketioxide's `Sid` in the shell, numbers in the tests).
//!
//! Events and payloads are those of docs/room-protocol.md.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use media::StreamKey;
use serde::Serialize;
use serde_json::{json, Value};

use super::names::{display_name, peer_key, room_name, NameError};
use crate::config::RoomSection;

pub type ParticipantId = u64;

/// An error with a stable code for clients (docs/room-protocol.md) and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RoomError {
    pub code: &'static str,
    pub message: String,
}

impl RoomError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        RoomError {
            code,
            message: message.into(),
        }
    }

    pub fn json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

impl From<NameError> for RoomError {
    fn from(e: NameError) -> Self {
        let code = match e {
            NameError::EmptyName => "bad-name",
            _ => "bad-room-name",
        };
        RoomError::new(code, e.to_string())
    }
}

/// A participant's connection state, as others see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// In the room, its stream not (yet) live.
    Joining,
    /// Its stream is live.
    Live,
    /// Its socket dropped; it has `reconnect_grace_ms` to come back.
    Reconnecting,
}

/// What a participant says of itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Presence {
    #[serde(default)]
    pub muted: bool,
    #[serde(default)]
    pub camera_off: bool,
    #[serde(default)]
    pub screen: bool,
    #[serde(default)]
    pub speaking: bool,
}

struct Participant<S> {
    id: ParticipantId,
    room: String,
    key: StreamKey,
    name: String,
    /// Its stream is live in the hub.
    live: bool,
    presence: Presence,
    presence_seq: u64,
    /// The socket it speaks through; `None` while reconnecting.
    socket: Option<S>,
    /// Until when a reconnecting participant is kept.
    grace_until: Option<Instant>,
    resume: String,
    chat_tokens: f64,
    chat_at: Instant,
}

impl<S> Participant<S> {
    fn state(&self) -> PeerState {
        if self.socket.is_none() {
            PeerState::Reconnecting
        } else if self.live {
            PeerState::Live
        } else {
            PeerState::Joining
        }
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "peer": self.key.stream(),
            "key": self.key.to_string(),
            "name": self.name,
            "state": self.state(),
            "presence": self.presence,
        })
    }
}

/// A chat message.
#[derive(Debug, Clone, Serialize)]
pub struct ChatMessage {
    pub id: u64,
    pub from: ParticipantId,
    pub name: String,
    pub text: String,
    /// Unix milliseconds.
    pub ts: u64,
}

struct Room {
    participants: Vec<ParticipantId>,
    chat: VecDeque<ChatMessage>,
    /// Order of creation (ties in `random`).
    created: u64,
    /// Participants that ever joined (`p{n}` peer names).
    joins: usize,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit<S> {
    pub to: S,
    pub event: &'static str,
    pub data: Value,
}

/// What the media side must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaAction {
    /// `who` should receive `key` (its stream went live).
    Subscribe { who: ParticipantId, key: StreamKey },
    /// `who` should stop receiving `key` (its participant left).
    Unsubscribe { who: ParticipantId, key: StreamKey },
    /// `who` has left: close its sessions.
    Close(ParticipantId),
}

/// What a call asks of the shell.
#[derive(Debug, Default)]
pub struct Effects<S> {
    pub emits: Vec<Emit<S>>,
    pub media: Vec<MediaAction>,
    /// Sockets to disconnect (one replaced by a resume).
    pub disconnect: Vec<S>,
}

impl<S> Effects<S> {
    fn new() -> Self {
        Effects {
            emits: Vec::new(),
            media: Vec::new(),
            disconnect: Vec::new(),
        }
    }
}

/// What a join or resume returns to the socket.
#[derive(Debug, Clone)]
pub struct Joined {
    pub id: ParticipantId,
    pub room: String,
    pub key: StreamKey,
    /// The join payload (without the per-client ICE servers, which the shell adds).
    pub payload: Value,
}

/// A join request.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct JoinRequest {
    /// A room name; absent or `null` with `random`.
    #[serde(default)]
    pub room: Option<String>,
    #[serde(default)]
    pub random: bool,
    pub name: String,
}

/// All rooms.
pub struct Registry<S> {
    limits: RoomSection,
    rooms: BTreeMap<String, Room>,
    participants: HashMap<ParticipantId, Participant<S>>,
    by_socket: HashMap<S, ParticipantId>,
    by_resume: HashMap<String, ParticipantId>,
    lobby: HashSet<S>,
    next_id: ParticipantId,
    next_chat: u64,
    next_room: u64,
    /// The room list changed since it was last sent to the lobby.
    pub rooms_dirty: bool,
}

impl<S: Copy + Eq + Hash> Registry<S> {
    pub fn new(limits: RoomSection) -> Self {
        Registry {
            limits,
            rooms: BTreeMap::new(),
            participants: HashMap::new(),
            by_socket: HashMap::new(),
            by_resume: HashMap::new(),
            lobby: HashSet::new(),
            next_id: 1,
            next_chat: 1,
            next_room: 1,
            rooms_dirty: false,
        }
    }

    /// The participant that speaks through `sock`.
    pub fn participant_of(&self, sock: S) -> Option<ParticipantId> {
        self.by_socket.get(&sock).copied()
    }

    /// The socket of participant `id` (none while reconnecting).
    pub fn socket_of(&self, id: ParticipantId) -> Option<S> {
        self.participants.get(&id).and_then(|p| p.socket)
    }

    /// Every participant's key and whether it is marked live: what the shell polls the hub for.
    pub fn keys(&self) -> Vec<(ParticipantId, StreamKey, bool)> {
        self.participants.values().map(|p| (p.id, p.key.clone(), p.live)).collect()
    }

    /// The live keys of `id`'s room, other than its own.
    pub fn live_others(&self, id: ParticipantId) -> Vec<StreamKey> {
        let Some(p) = self.participants.get(&id) else { return vec![] };
        self.rooms
            .get(&p.room)
            .map(|r| {
                r.participants
                    .iter()
                    .filter(|o| **o != id)
                    .filter_map(|o| self.participants.get(o))
                    .filter(|o| o.live)
                    .map(|o| o.key.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The room list (`rooms:list`).
    pub fn list(&self) -> Value {
        let rooms: Vec<Value> = self
            .rooms
            .iter()
            .map(|(name, r)| json!({ "name": name, "participants": r.participants.len(), "max": self.limits.max_participants }))
            .collect();
        json!({ "rooms": rooms })
    }

    /// `sock` wants room list updates.
    pub fn watch_lobby(&mut self, sock: S) {
        self.lobby.insert(sock);
    }

    /// `rooms:update` to every lobby socket, if the list changed.
    pub fn lobby_update(&mut self) -> Vec<Emit<S>> {
        if !std::mem::take(&mut self.rooms_dirty) {
            return vec![];
        }
        let list = self.list();
        self.lobby
            .iter()
            .map(|s| Emit {
                to: *s,
                event: "rooms:update",
                data: list.clone(),
            })
            .collect()
    }

    /// To every connected participant of `room` but `except`.
    fn to_room(&self, room: &str, except: ParticipantId, event: &'static str, data: Value, out: &mut Effects<S>) {
        let Some(r) = self.rooms.get(room) else { return };
        for id in &r.participants {
            if *id == except {
                continue;
            }
            if let Some(s) = self.participants.get(id).and_then(|p| p.socket) {
                out.emits.push(Emit {
                    to: s,
                    event,
                    data: data.clone(),
                });
            }
        }
    }

    /// The room `random` picks: the fullest that has space (ties: the oldest), else a new one.
    fn random_room(&mut self) -> String {
        let max = self.limits.max_participants;
        let pick = self
            .rooms
            .iter()
            .filter(|(_, r)| r.participants.len() < max)
            .max_by_key(|(_, r)| (r.participants.len(), std::cmp::Reverse(r.created)))
            .map(|(n, _)| n.clone());
        pick.unwrap_or_else(|| loop {
            let n = format!("r-{:04x}", rand_u16());
            if !self.rooms.contains_key(&n) {
                break n;
            }
        })
    }

    /// `sock` joins a room as `req.name`; `taken(key)` says the hub has the key already (live or
    /// connecting). `resume` is the new participant's resume token.
    pub fn join(
        &mut self,
        sock: S,
        req: &JoinRequest,
        taken: impl Fn(&StreamKey) -> bool,
        resume: String,
        now: Instant,
    ) -> Result<(Joined, Effects<S>), RoomError> {
        if self.by_socket.contains_key(&sock) {
            return Err(RoomError::new(
                "already-in-room",
                "this connection is in a room already: leave it first",
            ));
        }
        let name = display_name(&req.name, self.limits.name_max_chars)?;
        let room = match (&req.room, req.random) {
            (Some(r), _) if !r.is_empty() => room_name(r)?,
            (_, true) => self.random_room(),
            _ => return Err(RoomError::new("bad-room-name", "give a room name, or random: true")),
        };
        match self.rooms.get(&room) {
            Some(r) if r.participants.len() >= self.limits.max_participants => {
                return Err(RoomError::new(
                    "room-full",
                    format!("room {room} is full ({} participants)", self.limits.max_participants),
                ))
            }
            None if self.rooms.len() >= self.limits.max_rooms => {
                return Err(RoomError::new(
                    "too-many-rooms",
                    format!("the server has {} rooms, its limit", self.limits.max_rooms),
                ))
            }
            _ => {}
        }
        let created = self.next_room;
        let r = self.rooms.entry(room.clone()).or_insert_with(|| Room {
            participants: Vec::new(),
            chat: VecDeque::new(),
            created,
            joins: 0,
        });
        if r.created == created {
            self.next_room += 1;
        }
        r.joins += 1;
        let ordinal = r.joins;
        let in_room: HashSet<String> = r
            .participants
            .iter()
            .filter_map(|id| self.participants.get(id))
            .map(|p| p.key.stream().to_string())
            .collect();
        let peer = peer_key(&name, ordinal, |k| {
            in_room.contains(k) || StreamKey::new(&room, k).map(|key| taken(&key)).unwrap_or(true)
        });
        let key = StreamKey::new(&room, &peer).map_err(|_| RoomError::new("bad-name", "no stream key can be made of this name"))?;
        let id = self.next_id;
        self.next_id += 1;
        let p = Participant {
            id,
            room: room.clone(),
            key: key.clone(),
            name,
            live: false,
            presence: Presence::default(),
            presence_seq: 0,
            socket: Some(sock),
            grace_until: None,
            resume: resume.clone(),
            chat_tokens: 5.0,
            chat_at: now,
        };
        let mut fx = Effects::new();
        self.to_room(&room, id, "peer:joined", p.json(), &mut fx);
        self.participants.insert(id, p);
        self.by_socket.insert(sock, id);
        self.by_resume.insert(resume, id);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.participants.push(id);
        }
        self.rooms_dirty = true;
        // The newcomer receives whoever is live already.
        for key in self.live_others(id) {
            fx.media.push(MediaAction::Subscribe { who: id, key });
        }
        let joined = self.joined(id);
        Ok((joined, fx))
    }

    /// The join (or resume) payload of `id`.
    fn joined(&self, id: ParticipantId) -> Joined {
        let p = &self.participants[&id];
        let r = &self.rooms[&p.room];
        let others: Vec<Value> = r
            .participants
            .iter()
            .filter(|o| **o != id)
            .filter_map(|o| self.participants.get(o))
            .map(|o| o.json())
            .collect();
        let payload = json!({
            "room": p.room,
            "self": p.json(),
            "participants": others,
            "chat": r.chat,
            "resume": p.resume,
            "limits": {
                "maxParticipants": self.limits.max_participants,
                "chatMaxChars": self.limits.chat_max_chars,
                "nameMaxChars": self.limits.name_max_chars,
                "reconnectGraceMs": self.limits.reconnect_grace_ms,
            },
        });
        Joined {
            id,
            room: p.room.clone(),
            key: p.key.clone(),
            payload,
        }
    }

    /// `id` is gone for good (left, or its grace ran out).
    fn remove(&mut self, id: ParticipantId, reason: &str) -> Effects<S> {
        let mut fx = Effects::new();
        let Some(p) = self.participants.remove(&id) else { return fx };
        if let Some(s) = p.socket {
            self.by_socket.remove(&s);
        }
        self.by_resume.remove(&p.resume);
        let mut empty = false;
        if let Some(r) = self.rooms.get_mut(&p.room) {
            r.participants.retain(|o| *o != id);
            empty = r.participants.is_empty();
        }
        self.to_room(&p.room, id, "peer:left", json!({ "id": id, "reason": reason }), &mut fx);
        if let Some(r) = self.rooms.get(&p.room) {
            for o in &r.participants {
                fx.media.push(MediaAction::Unsubscribe {
                    who: *o,
                    key: p.key.clone(),
                });
            }
        }
        if empty {
            self.rooms.remove(&p.room);
        }
        fx.media.push(MediaAction::Close(id));
        self.rooms_dirty = true;
        fx
    }

    /// `sock` leaves its room (at once, no grace).
    pub fn leave(&mut self, sock: S) -> Result<Effects<S>, RoomError> {
        let id = self.participant_of(sock).ok_or_else(not_in_room)?;
        Ok(self.remove(id, "left"))
    }

    /// `sock` closed: its participant is reconnecting until `now + grace`.
    pub fn disconnected(&mut self, sock: S, now: Instant) -> Effects<S> {
        self.lobby.remove(&sock);
        let mut fx = Effects::new();
        let Some(id) = self.by_socket.remove(&sock) else { return fx };
        let grace = Duration::from_millis(self.limits.reconnect_grace_ms);
        let Some(p) = self.participants.get_mut(&id) else { return fx };
        p.socket = None;
        p.grace_until = Some(now + grace);
        let (room, data) = (p.room.clone(), p.json());
        self.to_room(&room, id, "peer:updated", data, &mut fx);
        fx
    }

    /// A new socket resumes the participant of `token`; the token rotates to `next`.
    pub fn resume(&mut self, sock: S, token: &str, next: String) -> Result<(Joined, Effects<S>), RoomError> {
        let id = self
            .by_resume
            .get(token)
            .copied()
            .ok_or_else(|| RoomError::new("resume-expired", "that session has ended: join again"))?;
        if self.by_socket.contains_key(&sock) {
            return Err(RoomError::new("already-in-room", "this connection is in a room already"));
        }
        let mut fx = Effects::new();
        let Some(p) = self.participants.get_mut(&id) else {
            return Err(RoomError::new("resume-expired", "that session has ended"));
        };
        if let Some(old) = p.socket.replace(sock) {
            // The old socket has not noticed it is dead yet: it is replaced.
            self.by_socket.remove(&old);
            fx.disconnect.push(old);
        }
        p.grace_until = None;
        self.by_resume.remove(token);
        p.resume = next.clone();
        self.by_resume.insert(next, id);
        self.by_socket.insert(sock, id);
        let (room, data) = (p.room.clone(), p.json());
        self.to_room(&room, id, "peer:updated", data, &mut fx);
        Ok((self.joined(id), fx))
    }

    /// Reconnecting participants whose grace ran out have left.
    pub fn expire(&mut self, now: Instant) -> Effects<S> {
        let gone: Vec<ParticipantId> = self
            .participants
            .values()
            .filter(|p| p.grace_until.is_some_and(|t| t <= now))
            .map(|p| p.id)
            .collect();
        let mut fx = Effects::new();
        for id in gone {
            let f = self.remove(id, "timeout");
            fx.emits.extend(f.emits);
            fx.media.extend(f.media);
        }
        fx
    }

    /// The hub says `id`'s stream is (or is no longer) live.
    pub fn set_live(&mut self, id: ParticipantId, live: bool) -> Effects<S> {
        let mut fx = Effects::new();
        let Some(p) = self.participants.get_mut(&id) else { return fx };
        if p.live == live {
            return fx;
        }
        p.live = live;
        let (room, data, key) = (p.room.clone(), p.json(), p.key.clone());
        if let Some(s) = p.socket {
            fx.emits.push(Emit {
                to: s,
                event: "self:updated",
                data: data.clone(),
            });
        }
        self.to_room(&room, id, "peer:updated", data, &mut fx);
        if live {
            if let Some(r) = self.rooms.get(&room) {
                for o in r.participants.iter().filter(|o| **o != id) {
                    fx.media.push(MediaAction::Subscribe { who: *o, key: key.clone() });
                }
            }
        }
        fx
    }

    /// `sock`'s participant says what it does; an update older than the last one is dropped.
    pub fn presence(&mut self, sock: S, seq: u64, presence: Presence) -> Result<Effects<S>, RoomError> {
        let id = self.participant_of(sock).ok_or_else(not_in_room)?;
        let mut fx = Effects::new();
        let Some(p) = self.participants.get_mut(&id) else {
            return Err(not_in_room());
        };
        if seq <= p.presence_seq || p.presence == presence {
            p.presence_seq = p.presence_seq.max(seq);
            return Ok(fx);
        }
        p.presence_seq = seq;
        p.presence = presence;
        let (room, data) = (p.room.clone(), p.json());
        self.to_room(&room, id, "peer:updated", data, &mut fx);
        Ok(fx)
    }

    /// `sock`'s participant says `text` in its room at Unix ms `ts`.
    pub fn chat(&mut self, sock: S, text: &str, ts: u64, now: Instant) -> Result<(ChatMessage, Effects<S>), RoomError> {
        let id = self.participant_of(sock).ok_or_else(not_in_room)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(RoomError::new("bad-payload", "an empty chat message"));
        }
        let n = text.chars().count();
        if n > self.limits.chat_max_chars {
            return Err(RoomError::new(
                "too-large",
                format!("a chat message is at most {} characters, not {n}", self.limits.chat_max_chars),
            ));
        }
        let rate = self.limits.chat_per_second;
        let Some(p) = self.participants.get_mut(&id) else {
            return Err(not_in_room());
        };
        p.chat_tokens = (p.chat_tokens + now.saturating_duration_since(p.chat_at).as_secs_f64() * rate).min(5.0);
        p.chat_at = now;
        if p.chat_tokens < 1.0 {
            return Err(RoomError::new("rate-limited", format!("at most {rate} chat messages per second")));
        }
        p.chat_tokens -= 1.0;
        let msg = ChatMessage {
            id: self.next_chat,
            from: id,
            name: p.name.clone(),
            text: text.chars().filter(|c| !c.is_control() || *c == '\n').collect(),
            ts,
        };
        self.next_chat += 1;
        let room = p.room.clone();
        let mut fx = Effects::new();
        let data = serde_json::to_value(&msg).unwrap_or_default();
        self.to_room(&room, id, "chat:message", data, &mut fx);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.chat.push_back(msg.clone());
            while r.chat.len() > self.limits.chat_history {
                r.chat.pop_front();
            }
        }
        Ok((msg, fx))
    }
}

fn not_in_room() -> RoomError {
    RoomError::new("not-in-room", "join a room first")
}

/// A random 16-bit number (room names of `random`).
fn rand_u16() -> u16 {
    let mut b = [0u8; 2];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        return 0;
    }
    u16::from_le_bytes(b)
}

/// A random token of 128 bits, hex (resume tokens).
pub fn token() -> String {
    let mut b = [0u8; 16];
    let _ = aws_lc_rs::rand::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RoomSection {
        RoomSection {
            max_participants: 3,
            max_rooms: 2,
            max_message_bytes: 100_000,
            chat_max_chars: 20,
            name_max_chars: 16,
            chat_history: 2,
            events_per_second: 10.0,
            events_burst: 20,
            flood_refusals: 200,
            send_buffer_packets: 1024,
            chat_per_second: 2.0,
            reconnect_grace_ms: 1000,
            ping_interval_ms: 5000,
            ping_timeout_ms: 5000,
            max_sockets_per_address: 20,
        }
    }

    fn req(room: Option<&str>, name: &str) -> JoinRequest {
        JoinRequest {
            room: room.map(String::from),
            random: room.is_none(),
            name: name.into(),
        }
    }

    fn to(fx: &Effects<u32>, sock: u32) -> Vec<&'static str> {
        fx.emits.iter().filter(|e| e.to == sock).map(|e| e.event).collect()
    }

    #[test]
    fn join_live_leave() {
        let now = Instant::now();
        let mut r = Registry::<u32>::new(limits());
        let (a, fx) = r.join(1, &req(Some("t1"), "Ann"), |_| false, token(), now).unwrap();
        assert!(fx.emits.is_empty());
        assert_eq!(a.key.to_string(), "t1/ann");
        // The hub has t1/bob already (an RTMP publisher): Bob gets bob-2.
        let (b, fx) = r
            .join(2, &req(Some("t1"), "Bob"), |k| k.to_string() == "t1/bob", token(), now)
            .unwrap();
        assert_eq!(b.key.to_string(), "t1/bob-2");
        assert_eq!(to(&fx, 1), ["peer:joined"]);
        assert_eq!(b.payload["participants"].as_array().unwrap().len(), 1);
        assert_eq!(b.payload["participants"][0]["state"], "joining");
        // Ann's stream goes live: Bob is told, and subscribes to it.
        let fx = r.set_live(a.id, true);
        assert_eq!(to(&fx, 2), ["peer:updated"]);
        assert_eq!(to(&fx, 1), ["self:updated"]);
        assert_eq!(
            fx.media,
            [MediaAction::Subscribe {
                who: b.id,
                key: a.key.clone()
            }]
        );
        assert_eq!(r.live_others(b.id), vec![a.key.clone()]);
        assert!(r.live_others(a.id).is_empty());
        // A third with "random" lands in t1 (the only room with space), and receives Ann.
        let (c, fx) = r.join(3, &req(None, "王"), |_| false, token(), now).unwrap();
        assert_eq!(
            fx.media,
            [MediaAction::Subscribe {
                who: c.id,
                key: a.key.clone()
            }]
        );
        assert_eq!(c.room, "t1");
        assert_eq!(c.key.to_string(), "t1/p3");
        // Full now.
        let e = r.join(4, &req(Some("t1"), "Dan"), |_| false, token(), now).unwrap_err();
        assert_eq!(e.code, "room-full");
        // random makes a new room when all are full; then the server's room limit.
        let (d, _) = r.join(4, &req(None, "Dan"), |_| false, token(), now).unwrap();
        assert!(d.room.starts_with("r-"), "{}", d.room);
        let e = r.join(5, &req(Some("other"), "Eve"), |_| false, token(), now).unwrap_err();
        assert_eq!(e.code, "too-many-rooms");
        // Ann leaves: the others are told, and drop her feed; her sessions close.
        let fx = r.leave(1).unwrap();
        assert_eq!(to(&fx, 2), ["peer:left"]);
        assert_eq!(to(&fx, 3), ["peer:left"]);
        assert!(fx.media.contains(&MediaAction::Close(a.id)));
        assert!(fx.media.contains(&MediaAction::Unsubscribe {
            who: b.id,
            key: a.key.clone()
        }));
        assert_eq!(r.leave(1).unwrap_err().code, "not-in-room");
        // The lobby hears of it once.
        r.watch_lobby(9);
        assert_eq!(r.lobby_update().len(), 1);
        assert!(r.lobby_update().is_empty());
        let list = r.list();
        assert_eq!(list["rooms"][1]["name"], "t1");
        assert_eq!(list["rooms"][1]["participants"], 2);
    }

    #[test]
    fn bad_requests() {
        let now = Instant::now();
        let mut r = Registry::<u32>::new(limits());
        for (q, code) in [
            (req(Some("api"), "x"), "bad-room-name"),
            (req(Some("a/b"), "x"), "bad-room-name"),
            (req(Some("ok"), " \u{200B} "), "bad-name"),
            (
                JoinRequest {
                    room: None,
                    random: false,
                    name: "x".into(),
                },
                "bad-room-name",
            ),
        ] {
            assert_eq!(r.join(1, &q, |_| false, token(), now).unwrap_err().code, code, "{q:?}");
        }
        r.join(1, &req(Some("ok"), "x"), |_| false, token(), now).unwrap();
        assert_eq!(
            r.join(1, &req(Some("ok"), "y"), |_| false, token(), now).unwrap_err().code,
            "already-in-room"
        );
        assert_eq!(r.chat(2, "hi", 0, now).unwrap_err().code, "not-in-room");
    }

    #[test]
    fn chat_history_and_limits() {
        let t0 = Instant::now();
        let mut r = Registry::<u32>::new(limits());
        r.join(1, &req(Some("t"), "a"), |_| false, token(), t0).unwrap();
        r.join(2, &req(Some("t"), "b"), |_| false, token(), t0).unwrap();
        let (m, fx) = r.chat(1, " hello ", 1000, t0).unwrap();
        assert_eq!(m.text, "hello");
        assert_eq!(to(&fx, 2), ["chat:message"]);
        assert!(to(&fx, 1).is_empty(), "the sender has its ack");
        assert_eq!(r.chat(1, &"x".repeat(21), 0, t0).unwrap_err().code, "too-large");
        assert_eq!(r.chat(1, "   ", 0, t0).unwrap_err().code, "bad-payload");
        // A burst of 5, then 2 per second.
        for _ in 0..4 {
            r.chat(1, "m", 0, t0).unwrap();
        }
        assert_eq!(r.chat(1, "m", 0, t0).unwrap_err().code, "rate-limited");
        r.chat(1, "later", 0, t0 + Duration::from_millis(500)).unwrap();
        // History keeps the last 2 for a late joiner.
        let (c, _) = r.join(3, &req(Some("t"), "c"), |_| false, token(), t0).unwrap();
        let chat = c.payload["chat"].as_array().unwrap();
        assert_eq!(chat.len(), 2);
        assert_eq!(chat[1]["text"], "later");
    }

    #[test]
    fn reconnect_within_grace_and_after() {
        let t0 = Instant::now();
        let mut r = Registry::<u32>::new(limits());
        let (a, _) = r.join(1, &req(Some("t"), "a"), |_| false, "tok-a".into(), t0).unwrap();
        r.join(2, &req(Some("t"), "b"), |_| false, token(), t0).unwrap();
        let fx = r.disconnected(1, t0);
        assert_eq!(to(&fx, 2), ["peer:updated"]);
        assert_eq!(fx.emits[0].data["state"], "reconnecting");
        assert!(r.expire(t0 + Duration::from_millis(900)).emits.is_empty());
        // Back on socket 3 with its token: same participant and key, a new token.
        let (back, fx) = r.resume(3, "tok-a", "tok-a2".into()).unwrap();
        assert_eq!((back.id, back.key.clone()), (a.id, a.key.clone()));
        assert_eq!(back.payload["resume"], "tok-a2");
        assert_eq!(fx.emits[0].data["state"], "joining");
        assert_eq!(
            r.resume(4, "tok-a", "x".into()).unwrap_err().code,
            "resume-expired",
            "a token is used once"
        );
        // A resume while the old socket still looks open replaces it.
        let (_, fx) = r.resume(5, "tok-a2", "tok-a3".into()).unwrap();
        assert_eq!(fx.disconnect, [3]);
        assert_eq!(r.participant_of(5), Some(a.id));
        assert_eq!(r.participant_of(3), None);
        // Past the grace, it has left.
        r.disconnected(5, t0);
        let fx = r.expire(t0 + Duration::from_millis(1000));
        assert_eq!(to(&fx, 2), ["peer:left"]);
        assert_eq!(fx.emits[0].data["reason"], "timeout");
        assert!(r.resume(6, "tok-a3", "y".into()).is_err());
    }

    #[test]
    fn presence_keeps_the_newest() {
        let t0 = Instant::now();
        let mut r = Registry::<u32>::new(limits());
        r.join(1, &req(Some("t"), "a"), |_| false, token(), t0).unwrap();
        r.join(2, &req(Some("t"), "b"), |_| false, token(), t0).unwrap();
        let muted = Presence {
            muted: true,
            ..Default::default()
        };
        assert_eq!(to(&r.presence(1, 2, muted).unwrap(), 2), ["peer:updated"]);
        // An older update (handlers may run out of order) changes nothing.
        assert!(r.presence(1, 1, Presence::default()).unwrap().emits.is_empty());
        assert!(r.presence(1, 3, muted).unwrap().emits.is_empty(), "no change, no event");
    }
}
