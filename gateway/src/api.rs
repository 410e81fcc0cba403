//! The stream list: `/streams` (a page for people) and `/api/v1/streams` (JSON); the server's
//! clock, `/api/v1/time`, which the watch page reads its latency against.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use media::Hub;
use serde_json::json;

/// `/streams` and `/api/v1/streams`.
pub fn routes(hub: Hub) -> Router {
    Router::new()
        .route("/streams", get(index))
        .route("/api/v1/streams", get(api_streams))
        .route("/api/v1/time", get(api_time))
        .with_state(hub)
}

/// `{"now_ms": Unix ms}`, never cached: the watch page takes the answer with the shortest round
/// trip of a few as the server's clock (the wall clock its playlists, FLV marks and RTCP sender
/// reports are stamped with).
async fn api_time() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(json!({ "now_ms": media::unix_ms() })))
}

async fn index(State(hub): State<Hub>) -> impl IntoResponse {
    let mut html = String::from(
        "<!doctype html><meta charset=utf-8><title>streamgate</title><h1>streamgate</h1>\
         <p>Publish with RTMP to <code>rtmp://HOST:PORT/{app}/{stream}</code>; watch at \
         <code>/{app}/{stream}.flv</code> (HTTP-FLV or WebSocket-FLV) or with RTMP.</p><h2>Live streams</h2><ul>",
    );
    for s in hub.streams() {
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

async fn api_streams(State(hub): State<Hub>) -> impl IntoResponse {
    let streams: Vec<_> = hub
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
                    // Frames out of decode order: browsers' WebRTC decoders cannot play them.
                    "bframes": s.reordered_video_frames > 0,
                    // A simulcast publisher's layers (smallest first); the stream carries the
                    // largest being sent.
                    "layers": s.layers,
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
    streams.extend(hub.connecting().into_iter().map(|c| {
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
