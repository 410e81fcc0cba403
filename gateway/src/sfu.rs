//! The forwarding API (what the room uses): a subscribing session receives the tracks of any
//! live streams (a room's other participants, who publish with WHIP; or any RTMP/WHIP stream)
//! on one peer connection, and feeds are added and removed while it lives.
//!
//! [`Forwarder::open`] makes a [`Subscription`] with its first feeds and the server's offer;
//! [`Subscription::subscribe`] / [`Subscription::unsubscribe`] change its feeds (the new offer
//! comes as [`SfuEvent::Offer`]); [`Subscription::answer`] takes the peer's answer to each
//! offer; [`SfuEvent::Ended`] says a feed's stream ended (its removal is in the next offer).
//! Dropping the subscription closes the session.
//!
//! `GET /sfu` (WebSocket) carries this API as JSON text messages, for test pages and for
//! clients of our own; docs/protocols.md lists them. The room's Socket.IO events carry the
//! same calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use egress::webrtc::Unsendable;
use media::{Codec, CodecSet, Hub, StreamKey};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, Instrument};
use webrtc::endpoint::FeedSpec;

use crate::admission::Admission;
use crate::forward::{FeedChange, ForwardError, NewFeed, SfuEvent, EVENT_QUEUE};
use crate::webrtc_server::{Command, WebRtcHandle};
use crate::whep::{plan, rtc_codec};

/// What subscribing sessions need.
pub struct Forwarder {
    pub hub: Hub,
    pub webrtc: WebRtcHandle,
    /// Pending sessions per address and in all, offer rate (shared with WHIP and WHEP).
    pub admission: Admission,
}

/// What a browser receives when it does not say: VP8, VP9, H.264 and Opus.
pub const BROWSER_CODECS: CodecSet = CodecSet::of(&[Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Opus]);

impl Forwarder {
    /// A key's feed for a peer that takes `receives`: the publisher's own codecs where it can,
    /// subscribed now so that its keyframe is on its way while the peer answers.
    fn feed(&self, key: &StreamKey, receives: CodecSet) -> Result<NewFeed, ForwardError> {
        let stats = self.hub.stream(key).ok_or_else(|| ForwardError::NotLive(key.clone()))?;
        if stats.reordered_video_frames > 0 {
            return Err(ForwardError::Unsendable(key.clone(), Unsendable::BFrames.to_string()));
        }
        let plan = plan(stats.video.is_some(), stats.audio.is_some(), stats.supply, |c| receives.contains(c));
        // A simulcast publisher's feeds are sent by the WebRTC task straight from its session:
        // the subscription takes nothing, it counts the viewer and ends with the stream.
        let codecs = if stats.layers.is_empty() { plan.codecs() } else { CodecSet::EMPTY };
        let sub = self
            .hub
            .subscribe_to(key, "webrtc", codecs)
            .map_err(|_| ForwardError::NotLive(key.clone()))?;
        let spec = FeedSpec {
            stream: key.to_string(),
            video: plan.video.and_then(rtc_codec),
            audio: plan.audio.and_then(rtc_codec),
        };
        Ok(NewFeed {
            key: key.clone(),
            sub,
            spec,
        })
    }

    /// A subscribing session for `peer` sending `keys` (at least one); returns it and the
    /// server's offer. The session counts against `peer`'s pending sessions until it connects.
    pub async fn open(
        self: &Arc<Self>,
        peer: SocketAddr,
        keys: &[StreamKey],
        receives: CodecSet,
    ) -> Result<(Subscription, String), ForwardError> {
        // Feeds first: a key that is not live costs the client none of its offer rate.
        let feeds = keys.iter().map(|k| self.feed(k, receives)).collect::<Result<Vec<_>, _>>()?;
        let pending = self.admission.admit(peer.ip(), Instant::now()).map_err(ForwardError::Refused)?;
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (reply, rx) = oneshot::channel();
        let cmd = Command::OpenOffered {
            feeds,
            pending,
            events: events_tx,
            reply,
        };
        self.webrtc.tx.send(cmd).await.map_err(|_| ForwardError::Down)?;
        let accepted = ask(rx).await??;
        let sub = Subscription {
            token: accepted.token,
            forwarder: self.clone(),
            receives,
            events,
        };
        Ok((sub, accepted.answer))
    }
}

/// The WebRTC task's reply, within 5 s.
async fn ask<T>(rx: oneshot::Receiver<T>) -> Result<T, ForwardError> {
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(r)) => Ok(r),
        _ => Err(ForwardError::Down),
    }
}

/// A subscribing session; dropping it closes the session.
pub struct Subscription {
    token: String,
    forwarder: Arc<Forwarder>,
    receives: CodecSet,
    events: mpsc::Receiver<SfuEvent>,
}

impl Subscription {
    /// Adds `key`'s feed; its offer comes as an event.
    pub async fn subscribe(&self, key: &StreamKey) -> Result<(), ForwardError> {
        let feed = self.forwarder.feed(key, self.receives)?;
        self.change(FeedChange::Subscribe(feed)).await
    }

    /// Removes `key`'s feed; its offer comes as an event.
    pub async fn unsubscribe(&self, key: &StreamKey) -> Result<(), ForwardError> {
        self.change(FeedChange::Unsubscribe(key.clone())).await
    }

    async fn change(&self, change: FeedChange) -> Result<(), ForwardError> {
        let token = self.token.clone();
        self.call(|reply| Command::Change { token, change, reply }).await
    }

    /// The peer's answer to the latest offer. A bad answer closes the session.
    pub async fn answer(&self, sdp: String) -> Result<(), ForwardError> {
        let token = self.token.clone();
        self.call(|reply| Command::Answer { token, sdp, reply }).await
    }

    /// Sends the WebRTC task a command and waits for its reply.
    async fn call(&self, cmd: impl FnOnce(oneshot::Sender<Result<(), ForwardError>>) -> Command) -> Result<(), ForwardError> {
        let (reply, rx) = oneshot::channel();
        self.forwarder.webrtc.tx.send(cmd(reply)).await.map_err(|_| ForwardError::Down)?;
        ask(rx).await?
    }

    /// The next event; `None` once the session is gone.
    pub async fn event(&mut self) -> Option<SfuEvent> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let (reply, _) = oneshot::channel();
        let token = std::mem::take(&mut self.token);
        // A full command queue means the task is far behind; the session then times out idle.
        let _ = self.forwarder.webrtc.tx.try_send(Command::Close { token, reply });
    }
}

/// Largest message a client sends (an SDP answer with every codec is ~10 KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// Most requests a client makes per second; beyond, its requests are refused.
const REQUESTS_PER_SEC: u32 = 20;

/// `/sfu`.
pub fn routes(fwd: Arc<Forwarder>) -> Router {
    Router::new().route("/sfu", get(upgrade)).with_state(fwd)
}

#[derive(Deserialize)]
struct SfuQuery {
    /// Codecs the client receives, comma-separated (`vp8,vp9,h264,opus`); all by default.
    codecs: Option<String>,
}

/// The codecs of a `codecs=` list; unknown names are ignored, Opus is always taken.
fn receivable(list: Option<&str>) -> CodecSet {
    let Some(list) = list else { return BROWSER_CODECS };
    let mut v = vec![Codec::Opus];
    for name in list.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        match name.as_str() {
            "vp8" => v.push(Codec::Vp8),
            "vp9" => v.push(Codec::Vp9),
            "h264" => v.push(Codec::H264),
            _ => {}
        }
    }
    CodecSet::of(&v)
}

async fn upgrade(
    State(fwd): State<Arc<Forwarder>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<SfuQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let receives = receivable(q.codecs.as_deref());
    let span = tracing::info_span!("sfu", %peer);
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(fwd, peer, receives, socket).instrument(span))
        .into_response()
}

/// A client's message.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMsg {
    Subscribe { keys: Vec<String> },
    Unsubscribe { key: String },
    Answer { sdp: String },
}

/// A message to the client.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ServerMsg<'a> {
    Offer { sdp: &'a str },
    Ended { key: String, reason: &'a str },
    Error { message: String },
    Closed { reason: &'a str },
}

impl ServerMsg<'_> {
    fn text(&self) -> Message {
        Message::Text(serde_json::to_string(self).unwrap_or_default().into())
    }
}

/// One client: its messages become calls, the session's events become messages. The session
/// is opened by the first `subscribe` and closed with the socket.
async fn serve(fwd: Arc<Forwarder>, peer: SocketAddr, receives: CodecSet, mut ws: WebSocket) {
    info!("SFU client connected");
    let mut session: Option<Subscription> = None;
    let mut window = (Instant::now(), 0u32);
    loop {
        let ev = async {
            match session.as_mut() {
                Some(s) => s.event().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = ws.recv() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(Message::Binary(_))) => {
                        let e = ServerMsg::Error { message: "messages are JSON text".into() };
                        if ws.send(e.text()).await.is_err() { break }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let now = Instant::now();
                if now.duration_since(window.0) >= Duration::from_secs(1) {
                    window = (now, 0);
                }
                window.1 += 1;
                let r = if window.1 > REQUESTS_PER_SEC {
                    Err(format!("more than {REQUESTS_PER_SEC} requests per second"))
                } else {
                    handle(&fwd, peer, receives, &mut session, &text).await
                };
                let reply = match r {
                    Ok(Some(offer)) => ServerMsg::Offer { sdp: &offer }.text(),
                    Ok(None) => continue,
                    Err(message) => {
                        debug!("SFU request refused: {message}");
                        ServerMsg::Error { message }.text()
                    }
                };
                if ws.send(reply).await.is_err() { break }
            }
            ev = ev => {
                let msg = match &ev {
                    Some(SfuEvent::Offer(sdp)) => ServerMsg::Offer { sdp },
                    Some(SfuEvent::Ended { key, reason }) => ServerMsg::Ended { key: key.to_string(), reason },
                    Some(SfuEvent::Closed(reason)) => ServerMsg::Closed { reason },
                    None => ServerMsg::Closed { reason: "the session ended" },
                };
                if ws.send(msg.text()).await.is_err() || matches!(ev, None | Some(SfuEvent::Closed(_))) {
                    break;
                }
            }
        }
    }
    info!("SFU client left");
}

/// Acts on one message; returns the offer of a session it opened.
async fn handle(
    fwd: &Arc<Forwarder>,
    peer: SocketAddr,
    receives: CodecSet,
    session: &mut Option<Subscription>,
    text: &str,
) -> Result<Option<String>, String> {
    let msg: ClientMsg = serde_json::from_str(text).map_err(|e| format!("bad message: {e}"))?;
    let parse = |k: &str| StreamKey::parse(k).map_err(|e| format!("stream key {k:?}: {e}"));
    match msg {
        ClientMsg::Subscribe { keys } => {
            let keys = keys.iter().map(|k| parse(k)).collect::<Result<Vec<_>, _>>()?;
            if keys.is_empty() {
                return Err("subscribe names at least one stream key".into());
            }
            match session {
                None => {
                    let (s, offer) = fwd.open(peer, &keys, receives).await.map_err(|e| e.to_string())?;
                    *session = Some(s);
                    Ok(Some(offer))
                }
                Some(s) => {
                    for k in &keys {
                        s.subscribe(k).await.map_err(|e| e.to_string())?;
                    }
                    Ok(None)
                }
            }
        }
        ClientMsg::Unsubscribe { key } => {
            let s = session.as_ref().ok_or("nothing is subscribed")?;
            s.unsubscribe(&parse(&key)?).await.map_err(|e| e.to_string())?;
            Ok(None)
        }
        ClientMsg::Answer { sdp } => {
            let s = session.as_ref().ok_or("no offer was made")?;
            s.answer(sdp).await.map_err(|e| e.to_string())?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivable_codecs_come_from_the_query() {
        assert_eq!(receivable(None), BROWSER_CODECS);
        let h264 = receivable(Some("H264, nonsense"));
        assert!(h264.contains(Codec::H264) && h264.contains(Codec::Opus));
        assert!(!h264.contains(Codec::Vp8));
    }

    #[test]
    fn client_messages_parse_and_refuse_unknown_types() {
        let m: ClientMsg = serde_json::from_str(r#"{"type":"subscribe","keys":["room/a"]}"#).unwrap();
        assert!(matches!(m, ClientMsg::Subscribe { keys } if keys == ["room/a"]));
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"publish"}"#).is_err());
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"answer"}"#).is_err());
    }
}
