//! WHIP (RFC 9725): `POST /whip/{app}/{stream}` with an SDP offer creates a session
//! (`201 Created`, `Location`, SDP answer, ICE servers in `Link` headers); `DELETE` on the
//! Location ends it. Trickle ICE (`PATCH`) is not needed by an ICE-lite server and is answered
//! `405`, as the RFC allows.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ingest::webrtc::endpoint::OfferError;
use media::hub::PublisherInfo;
use media::HubError;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::http::plain;
use crate::state::SharedState;
use crate::webrtc_server::Command;

/// Largest SDP offer accepted (browsers send 5-15 KiB).
const MAX_OFFER: usize = 64 * 1024;
const ALLOW: &str = "OPTIONS, POST";
const ALLOW_SESSION: &str = "OPTIONS, DELETE, PATCH";

fn link_headers(st: &SharedState, h: &mut HeaderMap) {
    for url in &st.config.webrtc.ice_servers {
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"ice-server\"")) {
            h.append(header::LINK, v);
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `OPTIONS /whip/{app}/{stream}`: what the endpoint allows, and its ICE servers.
pub async fn options(State(st): State<SharedState>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    r.headers_mut().insert("accept-post", HeaderValue::from_static("application/sdp"));
    link_headers(&st, r.headers_mut());
    r
}

/// `OPTIONS` on a session URL.
pub async fn session_options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW_SESSION));
    r
}

/// `POST /whip/{app}/{stream}`.
pub async fn post(
    State(st): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match crate::http::stream_key_or_400(&app, &stream) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.trim().to_ascii_lowercase().starts_with("application/sdp") {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "WHIP offers are sent as Content-Type: application/sdp",
        );
    }
    if !st.publish_auth.allow_publish(&key, "webrtc", bearer(&headers)) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "a valid bearer token is required to publish");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let sdp = match to_bytes(body, MAX_OFFER).await {
        Ok(b) => b,
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("SDP offer larger than {MAX_OFFER} bytes")),
    };
    let Ok(sdp) = String::from_utf8(sdp.to_vec()) else {
        return plain(StatusCode::BAD_REQUEST, "SDP offer is not UTF-8");
    };
    // The HTTP peer; a proxy's X-Forwarded-For is shown beside it, not trusted instead of it.
    let remote = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(xff) => format!("{peer} (x-forwarded-for {})", xff.chars().take(64).collect::<String>()),
        None => peer.to_string(),
    };
    let publisher = match st.hub.publish(
        key.clone(),
        PublisherInfo {
            protocol: "webrtc",
            remote,
        },
    ) {
        Ok(p) => p,
        Err(e @ HubError::AlreadyPublishing(_)) => return plain(StatusCode::CONFLICT, e.to_string()),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (reply, rx) = oneshot::channel();
    if st.webrtc.tx.send(Command::Offer { sdp, publisher, reply }).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC is shutting down");
    }
    let accepted = match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(Ok(a))) => a,
        Ok(Ok(Err(e))) => {
            let status = match &e {
                OfferError::BadSdp(_) | OfferError::Rejected(_) => StatusCode::BAD_REQUEST,
                OfferError::NoCodec(_) => StatusCode::NOT_ACCEPTABLE,
                OfferError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            warn!(%key, "WHIP offer refused: {e}");
            return plain(status, e.to_string());
        }
        _ => return plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC task did not answer"),
    };
    info!(%key, "WHIP session created");
    let location = format!("/whip/{app}/{stream}/{}", accepted.token);
    let mut r = (StatusCode::CREATED, accepted.answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    link_headers(&st, h);
    r
}

/// `DELETE /whip/{app}/{stream}/{session}`.
pub async fn delete(State(st): State<SharedState>, Path((_app, _stream, token)): Path<(String, String, String)>) -> Response {
    let (reply, rx) = oneshot::channel();
    if st.webrtc.tx.send(Command::Delete { token, reply }).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC is shutting down");
    }
    match rx.await {
        Ok(true) => StatusCode::OK.into_response(),
        _ => plain(StatusCode::NOT_FOUND, "no such WHIP session"),
    }
}

/// `PATCH` (trickle ICE / ICE restart): not supported by this ICE-lite server.
pub async fn patch() -> Response {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not needed: the server is ICE-lite with all candidates in the answer",
    );
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS, DELETE"));
    r
}
