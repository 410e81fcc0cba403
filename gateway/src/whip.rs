//! WHIP (RFC 9725): `POST /whip/{app}/{stream}` with an SDP offer creates a session
//! (`201 Created`, `Location`, SDP answer, ICE servers in `Link` headers); `DELETE` on the
//! Location ends it. Trickle ICE (`PATCH`) is not needed by an ICE-lite server and is answered
//! `405`, as the RFC allows.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::Router;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};
use webrtc::endpoint::{OfferError, SessionSpec};

use crate::admission::{Admission, Refusal};
use crate::config::WebRtcSection;
use crate::publish::{PublishRefusal, PublishRequest, Publishing};
use crate::respond::{plain, retry_after, stream_key_or_400};
use crate::webrtc_server::{Command, Role, WebRtcHandle};

/// What the WHIP routes need.
pub struct WhipService {
    pub publishing: Arc<Publishing>,
    pub webrtc: WebRtcHandle,
    /// Pending sessions per address and in all, offer rate.
    pub admission: Admission,
    pub config: WebRtcSection,
}

type St = Arc<WhipService>;

/// `/whip/{app}/{stream}` and its sessions.
pub fn routes(svc: St) -> Router {
    Router::new()
        .route("/whip/{app}/{stream}", routing::post(post).options(options))
        .route(
            "/whip/{app}/{stream}/{session}",
            routing::delete(delete).patch(patch).options(session_options),
        )
        .with_state(svc)
}

/// Largest SDP offer accepted (browsers send 5-15 KiB).
const MAX_OFFER: usize = 64 * 1024;
const ALLOW: &str = "OPTIONS, POST";
const ALLOW_SESSION: &str = "OPTIONS, DELETE, PATCH";

fn link_headers(st: &WhipService, h: &mut HeaderMap) {
    for url in &st.config.ice_servers {
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
async fn options(State(st): State<St>) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    r.headers_mut().insert("accept-post", HeaderValue::from_static("application/sdp"));
    link_headers(&st, r.headers_mut());
    r
}

/// `OPTIONS` on a session URL.
async fn session_options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW_SESSION));
    r
}

/// Seconds a refused client should wait: a pending session connects or lapses within the
/// reservation time.
fn retry_secs(st: &WhipService) -> u64 {
    st.config.connect_timeout_ms.div_ceil(1000).max(1)
}

/// The answer to an offer refused by the admission limits: 429 for what one client did, 503
/// when the server as a whole is at its limit; both say when to try again.
fn refused(st: &WhipService, refusal: Refusal) -> Response {
    let (status, secs) = match refusal {
        Refusal::PerAddress(_) => (StatusCode::TOO_MANY_REQUESTS, retry_secs(st)),
        Refusal::Rate => (StatusCode::TOO_MANY_REQUESTS, 1),
        Refusal::Total(_) => (StatusCode::SERVICE_UNAVAILABLE, retry_secs(st)),
    };
    let mut r = plain(status, refusal.to_string());
    retry_after(&mut r, secs);
    r
}

/// `POST /whip/{app}/{stream}`.
async fn post(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match stream_key_or_400(&app, &stream) {
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
    // The HTTP peer; a proxy's X-Forwarded-For is shown beside it, not trusted instead of it.
    let remote = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(xff) => format!("{peer} (x-forwarded-for {})", xff.chars().take(64).collect::<String>()),
        None => peer.to_string(),
    };
    let request = PublishRequest {
        key: key.clone(),
        protocol: "webrtc",
        remote,
        bearer: bearer(&headers),
    };
    let grant = match st.publishing.authorize(request) {
        Ok(g) => g,
        Err(_) => {
            let mut r = plain(StatusCode::UNAUTHORIZED, "a valid bearer token is required to publish");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    // Limits before the body is read: a flood costs a header parse per request.
    let pending = match st.admission.admit(peer.ip(), Instant::now()) {
        Ok(p) => p,
        Err(refusal) => {
            debug!(%key, %peer, "WHIP offer refused: {refusal}");
            return refused(&st, refusal);
        }
    };
    let sdp = match to_bytes(body, MAX_OFFER).await {
        Ok(b) => b,
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, format!("SDP offer larger than {MAX_OFFER} bytes")),
    };
    let Ok(sdp) = String::from_utf8(sdp.to_vec()) else {
        return plain(StatusCode::BAD_REQUEST, "SDP offer is not UTF-8");
    };
    // Until its session connects, the offer only reserves the key (a publisher that connects
    // first wins) and counts against the pending-session limits of its address.
    let reservation = match st.publishing.reserve(grant) {
        Ok(r) => r,
        Err(e @ PublishRefusal::KeyTaken(_)) => return plain(StatusCode::CONFLICT, e.to_string()),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let (reply, rx) = oneshot::channel();
    if st
        .webrtc
        .tx
        .send(Command::Open {
            sdp,
            spec: SessionSpec::receiver(),
            role: Role::Publish(reservation),
            pending,
            reply,
        })
        .await
        .is_err()
    {
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
            let mut r = plain(status, e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                retry_after(&mut r, retry_secs(&st));
            }
            return r;
        }
        _ => return plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC task did not answer"),
    };
    info!(%key, "WHIP session created, connecting");
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
async fn delete(State(st): State<St>, Path((_app, _stream, token)): Path<(String, String, String)>) -> Response {
    let (reply, rx) = oneshot::channel();
    if st.webrtc.tx.send(Command::Close { token, reply }).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC is shutting down");
    }
    match rx.await {
        Ok(true) => StatusCode::OK.into_response(),
        _ => plain(StatusCode::NOT_FOUND, "no such WHIP session"),
    }
}

/// `PATCH` (trickle ICE / ICE restart): not supported by this ICE-lite server.
async fn patch() -> Response {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not needed: the server is ICE-lite with all candidates in the answer",
    );
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS, DELETE"));
    r
}
