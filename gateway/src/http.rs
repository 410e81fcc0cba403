//! HTTP routes: HTTP-FLV, WebSocket-FLV, the stream API and Prometheus metrics.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use egress::flv::FlvViewer;
use futures_util::SinkExt;
use media::{HubError, StreamKey, Subscriber};
use serde_json::json;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tracing::{info, Instrument};

use crate::io::Batcher;
use crate::state::{ProtocolCounters, SharedState};
use crate::viewer_loop::{drive_viewer, End, ViewerSettings, ViewerSink};
use crate::whip;

pub fn router(state: SharedState) -> Router {
    let origin = match state.config.http.cors_allow_origin.as_str() {
        "*" => AllowOrigin::any(),
        o => AllowOrigin::exact(HeaderValue::from_str(o).unwrap_or(HeaderValue::from_static("null"))),
    };
    let cors = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::POST,
            Method::DELETE,
            Method::PATCH,
        ])
        .allow_headers(Any)
        .expose_headers([header::LOCATION, header::LINK, header::ETAG]);
    // With `*` the answer does not depend on the request's Origin: no `Vary: origin`, which would
    // split a CDN's cache per site, and which some CDNs refuse to cache at all (HLS segments).
    let cors = if state.config.http.cors_allow_origin == "*" {
        cors.vary([])
    } else {
        cors
    };
    Router::new()
        .route("/", get(index))
        .route("/api/v1/streams", get(api_streams))
        .route("/metrics", get(metrics))
        .route("/{app}/{file}", get(play))
        .route("/ll/{app}/{file}", get(crate::hls::ll))
        .route("/whip/{app}/{stream}", post(whip::post).options(whip::options))
        .route(
            "/whip/{app}/{stream}/{session}",
            delete(whip::delete).patch(whip::patch).options(whip::session_options),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(cors)
        .with_state(state)
}

async fn not_found() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "no such page: streams play at /{app}/{stream}.flv or .m3u8, the list is at /api/v1/streams",
    )
}

async fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "this URL does not take that method")
}

async fn index(State(st): State<SharedState>) -> impl IntoResponse {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>streamgate</title><h1>streamgate</h1>\
         <p>Publish with RTMP to <code>rtmp://HOST:PORT/{app}/{stream}</code>; watch at \
         <code>/{app}/{stream}.flv</code> (HTTP-FLV or WebSocket-FLV) or with RTMP.</p><h2>Live streams</h2><ul>",
    );
    for s in st.hub.streams() {
        let _ = write!(
            html,
            "<li><a href=\"/{k}.flv\">{k}</a> ({p})</li>",
            k = s.key,
            p = s.publisher.protocol
        );
    }
    html.push_str("</ul><p><a href=\"/api/v1/streams\">/api/v1/streams</a> · <a href=\"/metrics\">/metrics</a></p>");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html)
}

/// A short text/plain answer (errors of every HTTP route).
pub(crate) fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into() + "\n").into_response()
}

/// `GET|HEAD /{app}/{stream}.flv`, and the same URL upgraded to a WebSocket.
async fn play(
    State(st): State<SharedState>,
    Path((app, file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = ws.ok();
    if let Some(r) = crate::hls::classic(&st, &app, &file, &method, &headers).await {
        return r;
    }
    let Some(stream) = file.strip_suffix(".flv") else {
        return plain(StatusCode::NOT_FOUND, "unknown format: play URLs end in .flv or .m3u8");
    };
    let key = match stream_key_or_400(&app, stream) {
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
            .on_upgrade(move |socket| async move { ws_flv(socket, sub, st).instrument(span).await })
            .into_response();
    }
    st.counters.http_flv.connections.fetch_add(1, Ordering::Relaxed);
    span.in_scope(|| info!("viewer joined"));
    flv_headers(Body::from_stream(flv_stream(sub, st)))
}

/// The stream key of a URL, or the 400 answer naming what is wrong with it.
pub(crate) fn stream_key_or_400(app: &str, stream: &str) -> Result<StreamKey, Box<Response>> {
    StreamKey::new(app, stream).map_err(|e| Box::new(plain(StatusCode::BAD_REQUEST, format!("bad stream name: {e}"))))
}

fn flv_headers(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    r
}

/// Subscribes, waiting up to `http.flv_wait_ms` for a publisher.
async fn subscribe_waiting(st: &SharedState, key: &StreamKey, protocol: &'static str) -> Result<Subscriber, HubError> {
    let deadline = Instant::now() + Duration::from_millis(st.config.http.flv_wait_ms);
    loop {
        match st.hub.subscribe(key, protocol) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The FLV byte stream of one HTTP viewer. The body is pulled by hyper only as fast as the socket
/// drains, so a slow viewer's backlog stays in its bounded hub queue.
fn flv_stream(sub: Subscriber, st: SharedState) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    let viewer = FlvViewer::new();
    let batcher = Batcher::new(Duration::from_millis(st.config.egress.write_coalesce_ms));
    let state = (sub, viewer, VecDeque::<Bytes>::new(), st, batcher);
    futures_util::stream::unfold(state, move |(mut sub, mut viewer, mut pending, st, mut batcher)| async move {
        loop {
            // Everything ready is yielded without waiting, and hyper writes it with one writev.
            if let Some(b) = pending.pop_front() {
                st.counters.http_flv.add_out(b.len());
                return Some((Ok(b), (sub, viewer, pending, st, batcher)));
            }
            let mut out = Vec::new();
            batcher.next(&mut sub, |ev| viewer.on_event(ev, &mut out)).await?;
            pending.extend(out);
        }
    })
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

async fn ws_flv(socket: WebSocket, mut sub: Subscriber, st: SharedState) {
    info!("viewer joined");
    let settings = ViewerSettings {
        batch_window: Duration::from_millis(st.config.egress.write_coalesce_ms),
        stall: Duration::from_secs(st.config.http.viewer_stall_timeout_secs),
    };
    let mut sink = WsFlvSink { socket };
    let r = drive_viewer(
        &mut sub,
        &mut FlvViewer::new(),
        &mut sink,
        settings,
        &st.counters.ws_flv,
        st.shutdown.clone(),
    )
    .await;
    let why = r.unwrap_or_else(|e| e);
    info!(dropped = sub.dropped(), protocol = "ws-flv", why, "viewer left");
}

async fn api_streams(State(st): State<SharedState>) -> impl IntoResponse {
    let streams: Vec<_> = st
        .hub
        .streams()
        .into_iter()
        .map(|s| {
            let viewers: serde_json::Map<String, serde_json::Value> = s.viewers.iter().map(|(p, n)| ((*p).to_owned(), json!(n))).collect();
            let total: usize = s.viewers.iter().map(|(_, n)| n).sum();
            json!({
                "key": s.key.to_string(),
                "app": s.key.app(),
                "stream": s.key.stream(),
                "state": "live",
                "publisher": { "protocol": s.publisher.protocol, "remote": s.publisher.remote },
                "started_unix_ms": s.started.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                "video": s.video.as_ref().map(|v| json!({
                    "codec": v.info.codec_string(),
                    "width": v.info.width,
                    "height": v.info.height,
                    "profile": v.info.profile,
                    "level": v.info.level,
                })),
                "audio": s.audio.as_ref().map(|a| json!({
                    "codec": a.info.codec_string(),
                    "sample_rate": a.info.sample_rate,
                    "channels": a.info.channels,
                })),
                "bitrate_in": s.bitrate_in,
                "bytes_in": s.bytes_in,
                "frames_in": { "video": s.video_frames, "audio": s.audio_frames },
                "viewers": viewers,
                "viewers_total": total,
                "dropped_frames": s.dropped_frames,
                "queue_overflows": s.overflows,
                "timestamp_fixes": s.timestamp_fixes,
                "keyframe_requests": s.keyframe_requests,
                "max_viewer_queue": { "frames": s.max_viewer_queue.0, "bytes": s.max_viewer_queue.1 },
            })
        })
        .collect();
    // Keys reserved by WebRTC publishers that are still connecting: listed, not live (no media,
    // play URLs answer as for any key nobody publishes).
    let mut streams = streams;
    streams.extend(st.hub.connecting().into_iter().map(|c| {
        json!({
            "key": c.key.to_string(),
            "app": c.key.app(),
            "stream": c.key.stream(),
            "state": "connecting",
            "publisher": { "protocol": c.publisher.protocol, "remote": c.publisher.remote },
            "started_unix_ms": c.since.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
            "video": null,
            "audio": null,
            "viewers_total": 0,
        })
    }));
    Json(json!({ "streams": streams }))
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Appends one metric family in the Prometheus text format (0.0.4).
fn family(m: &mut String, name: &str, kind: &str, help: &str, samples: impl IntoIterator<Item = (String, u64)>) {
    let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(m, "{name}{labels} {value}");
    }
}

async fn metrics(State(st): State<SharedState>) -> impl IntoResponse {
    let mut m = String::new();
    let streams = st.hub.streams();
    let totals = st.hub.totals();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let one = |v: u64| [(String::new(), v)];
    let per_stream = |f: &dyn Fn(&media::hub::StreamStats) -> u64| -> Vec<(String, u64)> {
        streams
            .iter()
            .map(|s| (format!("{{stream=\"{}\"}}", escape_label(&s.key.to_string())), f(s)))
            .collect()
    };
    family(&mut m, "streamgate_streams", "gauge", "Live streams.", one(streams.len() as u64));
    family(
        &mut m,
        "streamgate_hls_segmenters",
        "gauge",
        "Streams with a running HLS segmenter.",
        one(st.hls.len() as u64),
    );
    let w = &st.webrtc_counters;
    family(
        &mut m,
        "streamgate_webrtc_sessions_total",
        "counter",
        "WHIP sessions created.",
        one(load(&w.sessions)),
    );
    family(
        &mut m,
        "streamgate_webrtc_sessions",
        "gauge",
        "WHIP sessions alive.",
        one(load(&w.sessions_active)),
    );
    family(
        &mut m,
        "streamgate_webrtc_sessions_pending",
        "gauge",
        "WebRTC sessions created and not yet connected (their keys reserved, not live).",
        one(st.webrtc_admission.pending() as u64),
    );
    family(
        &mut m,
        "streamgate_webrtc_sessions_ended_total",
        "counter",
        "WebRTC sessions that connected, lapsed (ICE/DTLS not done within webrtc.connect_timeout_ms), or connected after another publisher took their key.",
        [
            ("{result=\"connected\"}".to_owned(), load(&w.sessions_connected)),
            ("{result=\"connect_timeout\"}".to_owned(), load(&w.sessions_connect_timeouts)),
            ("{result=\"key_taken\"}".to_owned(), load(&w.sessions_key_taken)),
        ],
    );
    family(
        &mut m,
        "streamgate_rtmp_connections_pending",
        "gauge",
        "RTMP connections in handshake or connect.",
        one(st.rtmp_admission.pending() as u64),
    );
    family(
        &mut m,
        "streamgate_rtmp_connect_timeouts_total",
        "counter",
        "RTMP connections closed because handshake and connect took longer than rtmp.connect_timeout_secs.",
        one(load(&st.counters.rtmp_connect_timeouts)),
    );
    let refused = |a: &crate::admission::Admission| -> Vec<(String, u64)> {
        let c = a.counters();
        [
            ("per_address", &c.refused_per_address),
            ("rate", &c.refused_rate),
            ("total", &c.refused_total),
        ]
        .iter()
        .map(|(limit, v)| (format!("{{limit=\"{limit}\"}}"), load(v)))
        .collect()
    };
    family(
        &mut m,
        "streamgate_webrtc_offers_refused_total",
        "counter",
        "WHIP offers refused by the admission limits: pending sessions per address (429), offers per second per address (429), pending sessions in all (503).",
        refused(&st.webrtc_admission),
    );
    family(
        &mut m,
        "streamgate_rtmp_connections_refused_total",
        "counter",
        "RTMP connections closed at once by the admission limits: pending per address, pending in all.",
        refused(&st.rtmp_admission).into_iter().filter(|(l, _)| !l.contains("rate")),
    );
    family(
        &mut m,
        "streamgate_webrtc_datagrams_in_total",
        "counter",
        "UDP datagrams received.",
        one(load(&w.datagrams_in)),
    );
    family(
        &mut m,
        "streamgate_webrtc_bytes_in_total",
        "counter",
        "UDP bytes received.",
        one(load(&w.bytes_in)),
    );
    family(
        &mut m,
        "streamgate_webrtc_datagrams_dropped_total",
        "counter",
        "UDP datagrams dropped: matching no session, or not STUN/DTLS/RTP/RTCP.",
        [
            ("{reason=\"unroutable\"}".to_owned(), load(&w.datagrams_unroutable)),
            ("{reason=\"malformed\"}".to_owned(), load(&w.datagrams_malformed)),
        ],
    );
    family(
        &mut m,
        "streamgate_webrtc_rtp_packets_total",
        "counter",
        "RTP packets received, retransmissions included.",
        one(load(&w.rtp_packets)),
    );
    family(
        &mut m,
        "streamgate_webrtc_nacks_total",
        "counter",
        "RTCP NACKs sent to publishers.",
        one(load(&w.nacks)),
    );
    family(
        &mut m,
        "streamgate_webrtc_plis_total",
        "counter",
        "RTCP PLIs sent to publishers.",
        one(load(&w.plis)),
    );
    family(
        &mut m,
        "streamgate_webrtc_video_frames_total",
        "counter",
        "WebRTC video frames: pushed to the hub, or dropped after a loss NACK could not repair (until the next keyframe).",
        [
            ("{result=\"delivered\"}".to_owned(), load(&w.video_frames)),
            ("{result=\"unrepaired\"}".to_owned(), load(&w.video_frames_unrepaired)),
        ],
    );
    family(
        &mut m,
        "streamgate_webrtc_frames_dropped_total",
        "counter",
        "Depacketized frames dropped because a publisher's media task fell behind.",
        one(load(&w.frames_dropped_queue)),
    );
    family(
        &mut m,
        "streamgate_streams_published_total",
        "counter",
        "Streams published.",
        one(load(&totals.streams_published)),
    );
    family(
        &mut m,
        "streamgate_publish_refused_total",
        "counter",
        "Publishers refused (key taken).",
        one(load(&totals.publish_refused)),
    );
    family(
        &mut m,
        "streamgate_dropped_frames_total",
        "counter",
        "Frames dropped for slow viewers.",
        one(load(&totals.dropped_frames)),
    );
    family(
        &mut m,
        "streamgate_stream_bytes_in_total",
        "counter",
        "Payload bytes from the publisher.",
        per_stream(&|s| s.bytes_in),
    );
    family(
        &mut m,
        "streamgate_stream_bitrate_in",
        "gauge",
        "Incoming bits per second.",
        per_stream(&|s| s.bitrate_in),
    );
    family(
        &mut m,
        "streamgate_stream_dropped_frames_total",
        "counter",
        "Frames dropped for slow viewers.",
        per_stream(&|s| s.dropped_frames),
    );
    let viewers = streams.iter().flat_map(|s| {
        let key = escape_label(&s.key.to_string());
        s.viewers
            .iter()
            .map(move |(p, n)| (format!("{{stream=\"{key}\",protocol=\"{p}\"}}"), *n as u64))
    });
    family(
        &mut m,
        "streamgate_stream_viewers",
        "gauge",
        "Viewers per stream and protocol.",
        viewers,
    );
    let protocols = [
        ("rtmp", &st.counters.rtmp),
        ("http-flv", &st.counters.http_flv),
        ("ws-flv", &st.counters.ws_flv),
    ];
    let per_protocol = |f: &dyn Fn(&ProtocolCounters) -> u64| -> Vec<(String, u64)> {
        protocols
            .iter()
            .map(|(name, c)| (format!("{{protocol=\"{name}\"}}"), f(c)))
            .collect()
    };
    family(
        &mut m,
        "streamgate_connections_total",
        "counter",
        "Connections accepted.",
        per_protocol(&|c| load(&c.connections)),
    );
    family(
        &mut m,
        "streamgate_connection_errors_total",
        "counter",
        "Connections closed for bad input.",
        per_protocol(&|c| load(&c.errors)),
    );
    family(
        &mut m,
        "streamgate_bytes_out_total",
        "counter",
        "Bytes sent.",
        per_protocol(&|c| load(&c.bytes_out)),
    );
    family(
        &mut m,
        "streamgate_bytes_in_total",
        "counter",
        "Bytes received.",
        per_protocol(&|c| load(&c.bytes_in)),
    );
    let hls = |f: &dyn Fn(&crate::hls::HlsCounters, usize) -> u64| -> Vec<(String, u64)> {
        let kinds = [("hls", &st.hls.classic.counters), ("ll-hls", &st.hls.ll.counters)];
        kinds
            .iter()
            .flat_map(|(kind, c)| {
                crate::hls::Object::ALL
                    .iter()
                    .filter(move |o| *kind == "ll-hls" || matches!(o, crate::hls::Object::Playlist | crate::hls::Object::Segment))
                    .map(move |o| (format!("{{kind=\"{kind}\",object=\"{}\"}}", o.name()), f(c, *o as usize)))
            })
            .collect()
    };
    family(
        &mut m,
        "streamgate_hls_responses_total",
        "counter",
        "HLS responses served with their body (200), by kind and object.",
        hls(&|c, i| load(&c.served[i])),
    );
    family(
        &mut m,
        "streamgate_hls_bytes_out_total",
        "counter",
        "HLS body bytes served, by kind and object.",
        hls(&|c, i| load(&c.bytes[i])),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m)
}
