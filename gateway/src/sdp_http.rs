//! What WHIP and WHEP share (RFC 9725 and the WHEP draft have the same resource model): the
//! offer's checks, opening a session on the WebRTC task, the `201 Created` answer with its
//! `Location` and ICE servers, `DELETE`, `OPTIONS`, and the admission refusals.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use media::StreamKey;
use tokio::sync::oneshot;
use tracing::{debug, warn};
use webrtc::endpoint::{OfferError, SessionSpec};

use crate::admission::{Admission, Pending, Refusal};
use crate::config::{TurnSection, WebRtcSection};
use crate::respond::{plain, retry_after, stream_key_or_400};
use crate::webrtc_server::{open_session, Accepted, Command, OpenFailure, Role, WebRtcHandle};

/// Largest SDP offer accepted (browsers send 5-15 KiB).
pub const MAX_OFFER: usize = 64 * 1024;
/// Methods on a session URL.
pub const ALLOW_SESSION: &str = "OPTIONS, DELETE, PATCH";

/// `Link: <url>; rel="ice-server"` for each configured ICE server; TURN servers with a
/// credential minted for this request (RFC 9725 §4.6; TURN REST as for the room).
fn link_headers(config: &WebRtcSection, turn: &TurnSection, h: &mut HeaderMap) {
    let now = crate::room::unix_ms() / 1000;
    for s in crate::room::turn::ice_servers(&config.ice_servers, turn, "webrtc", now) {
        for url in &s.urls {
            let v = match (&s.username, &s.credential) {
                (Some(u), Some(c)) => {
                    format!("<{url}>; rel=\"ice-server\"; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\"")
                }
                _ => format!("<{url}>; rel=\"ice-server\""),
            };
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(header::LINK, v);
            }
        }
    }
}

/// `OPTIONS` on an endpoint URL: what it allows, and its ICE servers.
pub fn options(config: &WebRtcSection, turn: &TurnSection, allow: &'static str) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r.headers_mut().insert("accept-post", HeaderValue::from_static("application/sdp"));
    link_headers(config, turn, r.headers_mut());
    r
}

/// `OPTIONS` on a session URL.
pub async fn session_options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW_SESSION));
    r
}

/// Seconds a refused client should wait: a pending session connects or lapses within the
/// connect time.
fn retry_secs(config: &WebRtcSection) -> u64 {
    config.connect_timeout_ms.div_ceil(1000).max(1)
}

/// The answer to an offer refused by the admission limits: 429 for what one client did, 503
/// when the server as a whole is at its limit; both say when to try again.
fn refused(config: &WebRtcSection, refusal: Refusal) -> Response {
    let (status, secs) = match refusal {
        Refusal::PerAddress(_) => (StatusCode::TOO_MANY_REQUESTS, retry_secs(config)),
        Refusal::Rate => (StatusCode::TOO_MANY_REQUESTS, 1),
        Refusal::Total(_) => (StatusCode::SERVICE_UNAVAILABLE, retry_secs(config)),
    };
    let mut r = plain(status, refusal.to_string());
    retry_after(&mut r, secs);
    r
}

/// Who an offer came from, for the answers and the log.
#[derive(Debug, Clone, Copy)]
pub struct Offerer<'a> {
    /// "WHIP" or "WHEP".
    pub protocol: &'static str,
    pub key: &'a StreamKey,
    pub peer: SocketAddr,
}

/// The stream key of an offer's URL, with its content type checked (400, 415).
pub fn offer_key(app: &str, stream: &str, headers: &HeaderMap, protocol: &str) -> Result<StreamKey, Box<Response>> {
    let key = stream_key_or_400(app, stream)?;
    check_content_type(headers, protocol)?;
    Ok(key)
}

/// The admission limits, checked before the body is read (a flood costs a header parse per
/// request): a pending-session guard, or the 429/503 answer.
pub fn admit(admission: &Admission, config: &WebRtcSection, from: Offerer<'_>) -> Result<Pending, Box<Response>> {
    admission.admit(from.peer.ip(), Instant::now()).map_err(|refusal| {
        debug!(key = %from.key, peer = %from.peer, "{} offer refused: {refusal}", from.protocol);
        Box::new(refused(config, refusal))
    })
}

/// The offer's content type is SDP, or the 415 answer.
fn check_content_type(headers: &HeaderMap, protocol: &str) -> Result<(), Box<Response>> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if ctype.trim().to_ascii_lowercase().starts_with("application/sdp") {
        Ok(())
    } else {
        Err(Box::new(plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{protocol} offers are sent as Content-Type: application/sdp"),
        )))
    }
}

/// The offer's body: at most [`MAX_OFFER`] bytes of UTF-8.
pub async fn read_offer(body: Body) -> Result<String, Response> {
    let sdp = to_bytes(body, MAX_OFFER)
        .await
        .map_err(|_| plain(StatusCode::PAYLOAD_TOO_LARGE, format!("SDP offer larger than {MAX_OFFER} bytes")))?;
    String::from_utf8(sdp.to_vec()).map_err(|_| plain(StatusCode::BAD_REQUEST, "SDP offer is not UTF-8"))
}

/// Opens a session on the WebRTC task; a refused offer is answered with its reason (400 for a
/// bad offer, 406 when no codec fits, 503 when the server is full) and logged.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    webrtc: &WebRtcHandle,
    config: &WebRtcSection,
    from: Offerer<'_>,
    sdp: String,
    spec: SessionSpec,
    role: Role,
    pending: Pending,
) -> Result<Accepted, Box<Response>> {
    match open_session(webrtc, sdp, spec, role, pending).await {
        Ok(a) => Ok(a),
        Err(OpenFailure::Down) => Err(Box::new(plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC is shutting down"))),
        Err(OpenFailure::NoAnswer) => Err(Box::new(plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC task did not answer"))),
        Err(OpenFailure::Refused(e)) => {
            let status = match &e {
                OfferError::BadSdp(_) | OfferError::Rejected(_) => StatusCode::BAD_REQUEST,
                OfferError::NoCodec(_) => StatusCode::NOT_ACCEPTABLE,
                OfferError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut r = plain(status, e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                retry_after(&mut r, retry_secs(config));
            }
            warn!(key = %from.key, peer = %from.peer, "{} offer refused: {e}", from.protocol);
            Err(Box::new(r))
        }
    }
}

/// `201 Created` with the answer, the session's `Location` (under `base`) and the ICE servers.
pub fn created(config: &WebRtcSection, turn: &TurnSection, base: &str, accepted: Accepted) -> Response {
    let location = format!("{base}/{}", accepted.token);
    let mut r = (StatusCode::CREATED, accepted.answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    link_headers(config, turn, h);
    r
}

/// `DELETE` on a session URL.
pub async fn delete(webrtc: &WebRtcHandle, token: String, what: &str) -> Response {
    let (reply, rx) = oneshot::channel();
    if webrtc.tx.send(Command::Close { token, reply }).await.is_err() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "WebRTC is shutting down");
    }
    match rx.await {
        Ok(true) => StatusCode::OK.into_response(),
        _ => plain(StatusCode::NOT_FOUND, format!("no such {what} session")),
    }
}

/// `PATCH` (trickle ICE / ICE restart): not supported by this ICE-lite server, as the RFC
/// allows; the answer says why.
pub async fn patch() -> Response {
    let mut r = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "trickle ICE is not needed: the server is ICE-lite with all candidates in the answer",
    );
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS, DELETE"));
    r
}

#[cfg(test)]
mod link_tests {
    use super::*;
    use crate::config::{Cli, Config};
    use clap::Parser;

    #[test]
    fn link_headers_carry_stun_and_minted_turn_credentials() {
        let mut cfg = Config::load(&Cli::parse_from(["streamgate"])).unwrap();
        cfg.webrtc.ice_servers = vec!["stun:stun.example.com:3478".into()];
        cfg.turn.urls = vec!["turn:turn.example.com:3478?transport=udp".into()];
        cfg.turn.secret = "s".into();
        let r = options(&cfg.webrtc, &cfg.turn, "OPTIONS, POST");
        let links: Vec<&str> = r.headers().get_all(header::LINK).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(links[0], "<stun:stun.example.com:3478>; rel=\"ice-server\"");
        assert!(
            links[1].starts_with("<turn:turn.example.com:3478?transport=udp>; rel=\"ice-server\"; username=\""),
            "{}",
            links[1]
        );
        assert!(
            links[1].contains(":webrtc\"; credential=\"") && links[1].ends_with("credential-type=\"password\""),
            "{}",
            links[1]
        );
    }
}
