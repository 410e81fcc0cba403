//! FLV plays that reach axum's router: WebSocket-FLV, and the HTTP-FLV requests the socket fast
//! path ([`crate::flv_http`]) leaves to hyper (HEAD, HTTP/1.0, percent-escaped names, keys not
//! live yet, which wait up to `http.flv_wait_ms`). Every viewer runs the one viewer loop.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use egress::flv::FlvViewer;
use futures_util::SinkExt;
use media::{Hub, HubError, StreamKey, Subscriber};
use tokio::sync::{mpsc, watch};
use tracing::{info, Instrument};

use crate::config::{EgressSection, HttpSection};
use crate::counters::{Counters, ProtocolCounters};
use crate::respond::{flv_headers, plain, stream_key_or_400};
use crate::viewer_loop::{drive_viewer, End, ViewerSettings, ViewerSink};

/// Muxed chunks queued between an HTTP viewer's loop and hyper's body (the backlog stays in the
/// viewer's bounded hub queue, where the drop policy applies).
const BODY_QUEUE: usize = 16;

/// What FLV viewers need.
pub struct FlvService {
    pub hub: Hub,
    pub counters: Arc<Counters>,
    pub http: HttpSection,
    pub egress: EgressSection,
    pub shutdown: watch::Receiver<bool>,
}

impl FlvService {
    /// The viewer loop's settings for HTTP and WebSocket viewers.
    pub fn settings(&self) -> ViewerSettings {
        ViewerSettings {
            batch_window: Duration::from_millis(self.egress.write_coalesce_ms),
            stall: Duration::from_secs(self.http.viewer_stall_timeout_secs),
        }
    }
}

/// `GET|HEAD /{app}/{stream}.flv`, and the same URL upgraded to a WebSocket.
pub async fn play(st: Arc<FlvService>, app: &str, file: &str, method: &Method, ws: Option<WebSocketUpgrade>) -> Response {
    let Some(stream) = file.strip_suffix(".flv") else {
        return plain(StatusCode::NOT_FOUND, "unknown format: play URLs end in .flv or .m3u8");
    };
    let key = match stream_key_or_400(app, stream) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    if method == Method::HEAD {
        return if st.hub.is_live(&key) {
            flv_headers(Body::empty())
        } else {
            plain(StatusCode::NOT_FOUND, format!("{key} is not live"))
        };
    }
    let protocol = if ws.is_some() { "ws-flv" } else { "http-flv" };
    let sub = match subscribe_waiting(&st, &key, protocol).await {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::NOT_FOUND, e.to_string()),
    };
    let span = tracing::info_span!("play", %key, protocol);
    if let Some(ws) = ws {
        st.counters.ws_flv.connections.fetch_add(1, Ordering::Relaxed);
        return ws
            .on_upgrade(move |socket| {
                let sink = WsFlvSink { socket };
                run_viewer(sub, sink, st, |c| &c.ws_flv, "ws-flv").instrument(span)
            })
            .into_response();
    }
    st.counters.http_flv.connections.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(BODY_QUEUE);
    tokio::spawn(run_viewer(sub, BodySink { tx }, st, |c| &c.http_flv, "http-flv").instrument(span));
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    flv_headers(Body::from_stream(body))
}

/// Subscribes, waiting up to `http.flv_wait_ms` for a publisher.
async fn subscribe_waiting(st: &FlvService, key: &StreamKey, protocol: &'static str) -> Result<Subscriber, HubError> {
    let deadline = Instant::now() + Duration::from_millis(st.http.flv_wait_ms);
    loop {
        match st.hub.subscribe(key, protocol) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn run_viewer(
    mut sub: Subscriber,
    mut sink: impl ViewerSink,
    st: Arc<FlvService>,
    counters: fn(&Counters) -> &ProtocolCounters,
    protocol: &'static str,
) {
    info!("viewer joined");
    let counters = counters(&st.counters);
    let r = drive_viewer(
        &mut sub,
        &mut FlvViewer::new(),
        &mut sink,
        st.settings(),
        counters,
        st.shutdown.clone(),
    )
    .await;
    let why = r.unwrap_or_else(|e| e);
    info!(dropped = sub.dropped(), protocol, why, "viewer left");
}

/// An HTTP viewer behind hyper: chunks go to the response body, which hyper pulls only as fast
/// as the socket drains. The viewer is gone when hyper drops the body.
struct BodySink {
    tx: mpsc::Sender<Bytes>,
}

impl ViewerSink for BodySink {
    async fn write(&mut self, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
        for b in batch.drain(..) {
            self.tx
                .send(b)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        }
        Ok(())
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        // Nothing to read through hyper; the body being dropped is the viewer closing.
        self.tx.closed().await;
        Ok(0)
    }

    async fn on_input(&mut self, _: usize) -> Result<(), String> {
        Ok(())
    }

    async fn end(&mut self, _: End) {
        // Dropping the sender ends the body; hyper writes the last chunk.
    }
}

/// WS-FLV's side of the viewer loop: each muxed chunk one binary message, one flush a batch.
struct WsFlvSink {
    socket: WebSocket,
}

impl ViewerSink for WsFlvSink {
    async fn write(&mut self, batch: &mut Vec<Bytes>) -> std::io::Result<()> {
        for b in batch.drain(..) {
            self.socket.feed(Message::Binary(b)).await.map_err(std::io::Error::other)?;
        }
        self.socket.flush().await.map_err(std::io::Error::other)
    }

    async fn read(&mut self) -> std::io::Result<usize> {
        // Messages from the viewer mean nothing; a close (or a broken socket) ends it.
        Ok(match self.socket.recv().await {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => 0,
            Some(Ok(_)) => 1,
        })
    }

    async fn on_input(&mut self, _: usize) -> Result<(), String> {
        Ok(())
    }

    async fn end(&mut self, _: End) {
        let _ = self.socket.send(Message::Close(None)).await;
    }
}
