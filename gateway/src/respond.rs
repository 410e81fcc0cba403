//! Answers every HTTP route shares (a leaf module: it imports no other route).

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use media::StreamKey;

/// A short text/plain answer (errors of every HTTP route).
pub fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into() + "\n").into_response()
}

/// The stream key of a URL, or the 400 answer naming what is wrong with it.
pub fn stream_key_or_400(app: &str, stream: &str) -> Result<StreamKey, Box<Response>> {
    StreamKey::new(app, stream).map_err(|e| Box::new(plain(StatusCode::BAD_REQUEST, format!("bad stream name: {e}"))))
}

/// An FLV play's response: content type and no caching.
pub fn flv_headers(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    r
}

/// Sets `Retry-After`.
pub fn retry_after(r: &mut Response, secs: u64) {
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
}

/// The router's answer to an unknown page.
pub async fn not_found() -> Response {
    plain(
        StatusCode::NOT_FOUND,
        "no such page: streams play at /{app}/{stream}.flv or .m3u8, the list is at /api/v1/streams",
    )
}

/// The router's answer to a known page asked with a method it does not take.
pub async fn method_not_allowed() -> Response {
    plain(StatusCode::METHOD_NOT_ALLOWED, "this URL does not take that method")
}
