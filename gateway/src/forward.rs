//! The forwarding core's state in the WebRTC task: a session the server offers (a room
//! participant's subscribing peer connection) and the feeds it sends, each one live stream of
//! the hub (another participant's WHIP session, or any RTMP/WHIP publisher).
//!
//! * A feed's media is what its publisher sent, untouched: a WebRTC publisher's own VP8, VP9,
//!   H.264 and Opus (an RTMP publisher's H.264, and its AAC as Opus). str0m gives each feed
//!   its own SSRCs, sequence numbers and timestamps per subscriber, keeps the retransmission
//!   buffer and answers NACKs; the subscriber's PLI/FIR goes to the publisher through the hub
//!   (rate-limited there: `webrtc.keyframe_request_min_ms`).
//! * Feeds come and go by renegotiation: the server offers, the peer answers. One offer is out
//!   at a time; what is asked meanwhile is queued and goes out, as one offer, with the answer.
//! * A feed whose stream ends (the participant left) is removed by the server: the peer gets
//!   an `Ended` event and a new offer in which the feed's m-lines are inactive (its tracks end).
//! * A feed plays once its m-lines are answered and the session is connected; until then its hub
//!   subscription holds what the feed starts with (bounded by the hub).

use std::sync::Arc;
use std::time::Instant;

use ingest::webrtc::simulcast::LayerPick;
use media::{StreamKey, Subscriber};
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};
use webrtc::endpoint::{Endpoint, FeedError, FeedId, FeedSpec, OfferError, Outputs, SessionId, MAX_FEEDS};

use crate::webrtc_server::{spawn_play, PlayTarget, PlayTask, Shell};

/// Events of a subscribing session, for its signalling (the room, the `/sfu` WebSocket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfuEvent {
    /// A new offer to answer (feeds were added or removed).
    Offer(String),
    /// A feed's stream ended or cannot be sent; the next offer removes it.
    Ended { key: StreamKey, reason: String },
    /// The session is gone.
    Closed(String),
}

/// Events a session's signalling has not taken yet; a client that lets more pile up is not
/// reading, and its session is closed.
pub const EVENT_QUEUE: usize = 64;

/// Why a forwarding request was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("stream {0} is not live")]
    NotLive(StreamKey),
    #[error("stream {0} cannot be sent over WebRTC: {1}")]
    Unsendable(StreamKey, String),
    #[error("already subscribed to {0}")]
    AlreadySubscribed(StreamKey),
    #[error("not subscribed to {0}")]
    NotSubscribed(StreamKey),
    #[error("a session carries at most {0} feeds over its life")]
    TooMany(usize),
    #[error("no such subscribing session")]
    NoSession,
    #[error(transparent)]
    Feed(#[from] FeedError),
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error(transparent)]
    Refused(#[from] crate::admission::Refusal),
    #[error("WebRTC is shutting down")]
    Down,
}

/// A feed to add: the stream, its hub subscription (made by the caller, who has the hub) and
/// what the session sends of it.
pub struct NewFeed {
    pub key: StreamKey,
    pub sub: Subscriber,
    pub spec: FeedSpec,
}

/// A change of an offered session's feeds.
pub enum FeedChange {
    Subscribe(NewFeed),
    Unsubscribe(StreamKey),
}

enum SlotState {
    /// In an offer not answered yet, or answered while the session connects.
    Waiting(Subscriber),
    /// Being sent from the hub.
    Playing(PlayTask),
    /// Being sent straight from a simulcast publisher's session, one layer of it.
    Direct(Direct),
    /// Between the two (never seen outside a method).
    Moving,
}

struct Slot {
    id: FeedId,
    key: StreamKey,
    video: bool,
    audio: bool,
    /// Its m-lines were in an answered offer.
    answered: bool,
    state: SlotState,
}

/// A feed sent straight from a simulcast publisher's session in the WebRTC task (not through
/// the hub, which carries one layer): its layer chosen by the subscriber's bandwidth.
pub struct Direct {
    pub publisher: SessionId,
    /// A hub subscription that takes nothing: the viewer counts in the stream's statistics.
    _counted: Subscriber,
    pub pick: LayerPick,
    /// When its publisher was last asked for a keyframe for it.
    keyframe_asked: Option<Instant>,
}

/// Least time between two keyframe requests for one feed sent straight from a publisher.
const DIRECT_KEYFRAME_GAP: std::time::Duration = std::time::Duration::from_millis(300);

impl Direct {
    /// True when the publisher may be asked for a keyframe for this feed now (it then counts
    /// as asked): at most one request per [`DIRECT_KEYFRAME_GAP`].
    pub fn keyframe_due(&mut self, now: Instant) -> bool {
        let due = self
            .keyframe_asked
            .is_none_or(|t| now.saturating_duration_since(t) >= DIRECT_KEYFRAME_GAP);
        if due {
            self.keyframe_asked = Some(now);
        }
        due
    }
}

/// A session the server offers and its feeds.
pub struct Offered {
    events: mpsc::Sender<SfuEvent>,
    slots: Vec<Slot>,
    /// Queued for the next offer.
    add: Vec<NewFeed>,
    remove: Vec<FeedId>,
    /// Feeds offered over the session's life (m-lines are never removed).
    lines: usize,
    /// An offer is out.
    awaiting: bool,
    connected: bool,
}

impl Offered {
    /// A session whose first offer (carrying `feeds`, with the endpoint's `ids`) is out.
    pub fn new(events: mpsc::Sender<SfuEvent>, ids: Vec<FeedId>, feeds: Vec<NewFeed>) -> Self {
        let mut s = Self {
            events,
            slots: Vec::new(),
            add: Vec::new(),
            remove: Vec::new(),
            lines: 0,
            awaiting: true,
            connected: false,
        };
        s.offered(ids, feeds);
        s
    }

    fn offered(&mut self, ids: Vec<FeedId>, feeds: Vec<NewFeed>) {
        self.lines += feeds.len();
        for (id, f) in ids.into_iter().zip(feeds) {
            self.slots.push(Slot {
                id,
                key: f.key,
                video: f.spec.video.is_some(),
                audio: f.spec.audio.is_some(),
                answered: false,
                state: SlotState::Waiting(f.sub),
            });
        }
    }

    /// The keys sent or about to be.
    pub fn keys(&self) -> impl Iterator<Item = &StreamKey> {
        self.slots.iter().map(|s| &s.key).chain(self.add.iter().map(|f| &f.key))
    }

    /// Queues a feed for the next offer.
    pub fn subscribe(&mut self, feed: NewFeed) -> Result<(), ForwardError> {
        if self.keys().any(|k| *k == feed.key) {
            return Err(ForwardError::AlreadySubscribed(feed.key));
        }
        if self.lines + self.add.len() >= MAX_FEEDS {
            return Err(ForwardError::TooMany(MAX_FEEDS));
        }
        self.add.push(feed);
        Ok(())
    }

    /// Stops sending a key's feed (at once) and queues its removal for the next offer.
    pub fn unsubscribe(&mut self, key: &StreamKey) -> Result<(), ForwardError> {
        if let Some(i) = self.add.iter().position(|f| f.key == *key) {
            self.add.remove(i);
            return Ok(());
        }
        let i = self
            .slots
            .iter()
            .position(|s| s.key == *key)
            .ok_or_else(|| ForwardError::NotSubscribed(key.clone()))?;
        let slot = self.slots.remove(i);
        self.remove.push(slot.id);
        Ok(())
    }

    /// A feed's play task ended (the stream ended or cannot be sent): the peer is told, and the
    /// feed goes with the next offer.
    pub fn ended(&mut self, feed: FeedId, reason: String) -> bool {
        let Some(i) = self.slots.iter().position(|s| s.id == feed) else {
            return true;
        };
        let slot = self.slots.remove(i);
        self.remove.push(slot.id);
        self.tell(SfuEvent::Ended { key: slot.key, reason })
    }

    /// The peer answered the offer that was out.
    pub fn answered(&mut self) {
        self.awaiting = false;
        for s in &mut self.slots {
            s.answered = true;
        }
    }

    /// An offer is waiting for its answer.
    pub fn awaiting(&self) -> bool {
        self.awaiting
    }

    /// ICE and DTLS are up.
    pub fn connected(&mut self) {
        self.connected = true;
    }

    /// Starts the answered feeds once the session is connected: straight from the publisher's
    /// session when `simulcast_source` names one for the key (returned, to be registered with
    /// it), else from the hub by a play task.
    pub fn start(
        &mut self,
        id: SessionId,
        st: &Arc<Shell>,
        simulcast_source: impl Fn(&StreamKey) -> Option<SessionId>,
    ) -> Vec<(SessionId, FeedId)> {
        let mut direct = Vec::new();
        if !self.connected {
            return direct;
        }
        for s in self.slots.iter_mut().filter(|s| s.answered) {
            if let SlotState::Waiting(_) = s.state {
                let SlotState::Waiting(sub) = std::mem::replace(&mut s.state, SlotState::Moving) else {
                    continue;
                };
                if let Some(publisher) = simulcast_source(&s.key) {
                    info!(key = %s.key, session = id, feed = s.id, publisher, "forwarding a simulcast layer");
                    s.state = SlotState::Direct(Direct {
                        publisher,
                        _counted: sub,
                        pick: LayerPick::new(),
                        keyframe_asked: None,
                    });
                    direct.push((publisher, s.id));
                    continue;
                }
                info!(key = %s.key, session = id, feed = s.id, "forwarding");
                let target = PlayTarget { id, feed: Some(s.id) };
                s.state = SlotState::Playing(spawn_play(target, sub, s.video, s.audio, st, &s.key.to_string()));
            }
        }
        direct
    }

    /// A feed sent straight from a publisher.
    pub fn direct(&mut self, feed: FeedId) -> Option<&mut Direct> {
        self.slots.iter_mut().find(|s| s.id == feed).and_then(|s| match &mut s.state {
            SlotState::Direct(d) => Some(d),
            _ => None,
        })
    }

    /// The feeds sent straight from publishers.
    pub fn directs(&mut self) -> impl Iterator<Item = &mut Direct> {
        self.slots.iter_mut().filter_map(|s| match &mut s.state {
            SlotState::Direct(d) => Some(d),
            _ => None,
        })
    }

    /// The keys of the feeds sent from the hub.
    pub fn playing(&self) -> impl Iterator<Item = &StreamKey> {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, SlotState::Playing(_)))
            .map(|s| &s.key)
    }

    /// The peer asked for a keyframe of a feed.
    pub fn keyframe(&self, feed: FeedId) -> Option<&Arc<Notify>> {
        self.slots.iter().find(|s| s.id == feed).and_then(|s| match &s.state {
            SlotState::Playing(p) => Some(&p.keyframe),
            _ => None,
        })
    }

    /// Sends what is queued as one offer, unless an offer is out. False when the session must
    /// close: the offer could not be made or the peer is not reading its events.
    pub fn renegotiate(&mut self, ep: &mut Endpoint, id: SessionId, out: &mut Outputs) -> bool {
        if self.awaiting || (self.add.is_empty() && self.remove.is_empty()) {
            return true;
        }
        let specs: Vec<FeedSpec> = self.add.iter().map(|f| f.spec.clone()).collect();
        match ep.change_feeds(id, &specs, &self.remove, out) {
            Ok((ids, offer)) => {
                debug!(session = id, added = specs.len(), removed = self.remove.len(), "renegotiating");
                let add = std::mem::take(&mut self.add);
                self.offered(ids, add);
                self.remove.clear();
                self.awaiting = true;
                self.tell(SfuEvent::Offer(offer))
            }
            Err(e) => {
                warn!(session = id, "renegotiation failed: {e}");
                false
            }
        }
    }

    /// Tells the peer's signalling; false when it is not reading.
    pub fn tell(&self, ev: SfuEvent) -> bool {
        self.events.try_send(ev).is_ok()
    }
}
