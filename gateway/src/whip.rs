//! WHIP (RFC 9725): `POST /whip/{app}/{stream}` with an SDP offer creates a session
//! (`201 Created`, `Location`, SDP answer, ICE servers in `Link` headers); `DELETE` on the
//! Location ends it. Trickle ICE (`PATCH`) is not needed by an ICE-lite server and is answered
//! `405`, as the RFC allows.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing;
use axum::Router;
use tracing::info;
use webrtc::endpoint::SessionSpec;

use crate::admission::Admission;
use crate::config::WebRtcSection;
use crate::publish::{PublishRefusal, PublishRequest, Publishing};
use crate::respond::plain;
use crate::sdp_http;
use crate::webrtc_server::{Role, WebRtcHandle};

/// What the WHIP routes need.
pub struct WhipService {
    pub publishing: Arc<Publishing>,
    pub webrtc: WebRtcHandle,
    /// Pending sessions per address and in all, offer rate.
    pub admission: Admission,
    pub config: WebRtcSection,
    /// TURN servers for the `Link` headers.
    pub turn: crate::config::TurnSection,
}

type St = Arc<WhipService>;

/// `/whip/{app}/{stream}` and its sessions.
pub fn routes(svc: St) -> Router {
    Router::new()
        .route("/whip/{app}/{stream}", routing::post(post).options(options))
        .route(
            "/whip/{app}/{stream}/{session}",
            routing::delete(delete).patch(sdp_http::patch).options(sdp_http::session_options),
        )
        .with_state(svc)
}

const ALLOW: &str = "OPTIONS, POST";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `OPTIONS /whip/{app}/{stream}`: what the endpoint allows, and its ICE servers.
async fn options(State(st): State<St>) -> Response {
    sdp_http::options(&st.config, &st.turn, ALLOW)
}

/// `POST /whip/{app}/{stream}`.
async fn post(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match sdp_http::offer_key(&app, &stream, &headers, "WHIP") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let from = sdp_http::Offerer {
        protocol: "WHIP",
        key: &key,
        peer,
    };
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
    let pending = match sdp_http::admit(&st.admission, &st.config, from) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let sdp = match sdp_http::read_offer(body).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Until its session connects, the offer only reserves the key (a publisher that connects
    // first wins) and counts against the pending-session limits of its address.
    let reservation = match st.publishing.reserve(grant) {
        Ok(r) => r,
        Err(e @ PublishRefusal::KeyTaken(_)) => return plain(StatusCode::CONFLICT, e.to_string()),
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let opened = sdp_http::open(
        &st.webrtc,
        &st.config,
        from,
        sdp,
        SessionSpec::receiver(),
        Role::Publish(reservation),
        pending,
    );
    let accepted = match opened.await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    info!(%key, "WHIP session created, connecting");
    sdp_http::created(&st.config, &st.turn, &format!("/whip/{app}/{stream}"), accepted)
}

/// `DELETE /whip/{app}/{stream}/{session}`.
async fn delete(State(st): State<St>, Path((_app, _stream, token)): Path<(String, String, String)>) -> Response {
    sdp_http::delete(&st.webrtc, token, "WHIP").await
}
