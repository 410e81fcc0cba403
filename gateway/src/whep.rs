//! WHEP (WebRTC-HTTP egress, draft-ietf-wish-whep): `POST /whep/{app}/{stream}` with an SDP
//! offer that receives creates a viewer session of a live key (`201 Created`, `Location`, SDP
//! answer, ICE servers in `Link` headers); `DELETE` on the Location ends it. Trickle ICE and
//! ICE restart (`PATCH`) are not needed by an ICE-lite server and are answered `405`.
//!
//! What the viewer is sent is decided here from the stream: its video in the publisher's own
//! codec when WebRTC can carry it and the offer takes it (a WHIP publisher's VP8 or VP9: no
//! transcoding), else H.264; its audio in Opus (a WebRTC publisher's own packets, or the AAC
//! of an RTMP publisher transcoded once per stream while WebRTC viewers exist). A stream with
//! B-frames is refused with the encoder setting to change: browsers show them out of order.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing;
use axum::Router;
use egress::webrtc::Unsendable;
use media::{Codec, CodecSet, Hub};
use str0m::format::Codec as RtcCodec;
use tracing::{debug, info};
use webrtc::endpoint::SessionSpec;

use crate::admission::Admission;
use crate::config::WebRtcSection;
use crate::respond::plain;
use crate::sdp_http;
use crate::webrtc_server::{Role, WebRtcHandle};

/// What the WHEP routes need.
pub struct WhepService {
    pub hub: Hub,
    pub webrtc: WebRtcHandle,
    /// Pending sessions per address and in all, offer rate.
    pub admission: Admission,
    pub config: WebRtcSection,
    /// TURN servers for the `Link` headers.
    pub turn: crate::config::TurnSection,
}

type St = Arc<WhepService>;

const ALLOW: &str = "OPTIONS, POST";

/// `/whep/{app}/{stream}` and its sessions.
pub fn routes(svc: St) -> Router {
    Router::new()
        .route("/whep/{app}/{stream}", routing::post(post).options(options))
        .route(
            "/whep/{app}/{stream}/{session}",
            routing::delete(delete).patch(sdp_http::patch).options(sdp_http::session_options),
        )
        .with_state(svc)
}

async fn options(State(st): State<St>) -> Response {
    sdp_http::options(&st.config, &st.turn, ALLOW)
}

/// The codecs a viewer of a stream is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub video: Option<Codec>,
    pub audio: Option<Codec>,
}

impl Plan {
    /// What the subscriber takes from the hub.
    pub fn codecs(&self) -> CodecSet {
        let v: Vec<Codec> = self.video.into_iter().chain(self.audio).collect();
        CodecSet::of(&v)
    }
}

/// Chooses the codecs for a viewer: video in the publisher's own VP8/VP9 when it has it and
/// the viewer `takes` it, else H.264 (when the stream has video); Opus audio when the
/// publisher can supply it.
pub fn plan(has_video: bool, has_audio: bool, supply: CodecSet, takes: impl Fn(Codec) -> bool) -> Plan {
    let video = if !has_video {
        None
    } else if supply.contains(Codec::Vp8) && takes(Codec::Vp8) {
        Some(Codec::Vp8)
    } else if supply.contains(Codec::Vp9) && takes(Codec::Vp9) {
        Some(Codec::Vp9)
    } else {
        Some(Codec::H264)
    };
    let audio = (has_audio && supply.contains(Codec::Opus)).then_some(Codec::Opus);
    Plan { video, audio }
}

/// What a viewer whose offer is `offer` takes: the codecs its `a=rtpmap:` lines name.
pub fn offer_takes(offer: &str) -> impl Fn(Codec) -> bool + '_ {
    move |c| match c {
        Codec::Vp8 => offer_has_codec(offer, "VP8"),
        Codec::Vp9 => offer_has_codec(offer, "VP9"),
        Codec::H264 => offer_has_codec(offer, "H264"),
        Codec::Opus => offer_has_codec(offer, "opus"),
        _ => false,
    }
}

/// True when an `a=rtpmap:` line of the offer names `codec` (case-insensitive).
fn offer_has_codec(offer: &str, codec: &str) -> bool {
    offer.lines().any(|l| {
        l.strip_prefix("a=rtpmap:")
            .and_then(|r| r.split_once(' '))
            .and_then(|(_, enc)| enc.split('/').next())
            .is_some_and(|name| name.trim().eq_ignore_ascii_case(codec))
    })
}

pub fn rtc_codec(c: Codec) -> Option<RtcCodec> {
    match c {
        Codec::H264 => Some(RtcCodec::H264),
        Codec::Vp8 => Some(RtcCodec::Vp8),
        Codec::Vp9 => Some(RtcCodec::Vp9),
        Codec::Opus => Some(RtcCodec::Opus),
        _ => None,
    }
}

/// `POST /whep/{app}/{stream}`.
async fn post(
    State(st): State<St>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((app, stream)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = match sdp_http::offer_key(&app, &stream, &headers, "WHEP") {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let from = sdp_http::Offerer {
        protocol: "WHEP",
        key: &key,
        peer,
    };
    let Some(stats) = st.hub.stream(&key) else {
        return plain(StatusCode::NOT_FOUND, format!("stream {key} is not live"));
    };
    if stats.reordered_video_frames > 0 {
        debug!(%key, %peer, "WHEP refused: B-frames");
        return plain(StatusCode::NOT_ACCEPTABLE, format!("stream {key}: {}", Unsendable::BFrames));
    }
    let pending = match sdp_http::admit(&st.admission, &st.config, from) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let sdp = match sdp_http::read_offer(body).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let plan = plan(stats.video.is_some(), stats.audio.is_some(), stats.supply, offer_takes(&sdp));
    // Subscribed now, so that what the viewer needs (the publisher's own codec, the Opus
    // rendition, a keyframe) is on its way while ICE and DTLS connect.
    let sub = match st.hub.subscribe_to(&key, "webrtc", plan.codecs()) {
        Ok(s) => s,
        Err(e) => return plain(StatusCode::NOT_FOUND, e.to_string()),
    };
    let spec = SessionSpec::sender(plan.video.and_then(rtc_codec), plan.audio.and_then(rtc_codec));
    let role = Role::Play { sub };
    let accepted = match sdp_http::open(&st.webrtc, &st.config, from, sdp, spec, role, pending).await {
        Ok(a) => a,
        Err(r) => return *r,
    };
    info!(%key, %peer, video = ?plan.video, audio = ?plan.audio, "WHEP session created, connecting");
    sdp_http::created(&st.config, &st.turn, &format!("/whep/{app}/{stream}"), accepted)
}

/// `DELETE /whep/{app}/{stream}/{session}`.
async fn delete(State(st): State<St>, Path((_app, _stream, token)): Path<(String, String, String)>) -> Response {
    sdp_http::delete(&st.webrtc, token, "WHEP").await
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";

    #[test]
    fn the_publishers_own_codec_when_the_offer_takes_it() {
        let vp8 = CodecSet::of(&[Codec::H264, Codec::Aac, Codec::Vp8, Codec::Opus]);
        assert_eq!(
            plan(true, true, vp8, offer_takes(OFFER)),
            Plan {
                video: Some(Codec::Vp8),
                audio: Some(Codec::Opus)
            }
        );
        let h264_only = OFFER.replace("a=rtpmap:96 VP8/90000\r\n", "");
        assert_eq!(plan(true, true, vp8, offer_takes(&h264_only)).video, Some(Codec::H264));
        // RTMP: H.264, and Opus only once the publisher says it can make it.
        assert_eq!(
            plan(true, true, CodecSet::FLV, offer_takes(OFFER)),
            Plan {
                video: Some(Codec::H264),
                audio: None
            }
        );
        let rtmp = CodecSet::FLV.union(CodecSet::of(&[Codec::Opus]));
        assert_eq!(plan(true, true, rtmp, offer_takes(OFFER)).audio, Some(Codec::Opus));
        assert_eq!(
            plan(false, true, rtmp, offer_takes(OFFER)),
            Plan {
                video: None,
                audio: Some(Codec::Opus)
            }
        );
        assert_eq!(
            plan(true, true, rtmp, offer_takes(OFFER)).codecs(),
            CodecSet::of(&[Codec::H264, Codec::Opus])
        );
    }

    #[test]
    fn codec_names_are_read_from_rtpmap_lines_only() {
        assert!(offer_has_codec("a=rtpmap:96 vp8/90000", "VP8"));
        assert!(!offer_has_codec("a=fmtp:96 VP8/90000", "VP8"));
        assert!(!offer_has_codec("a=rtpmap:96", "VP8"));
        assert!(!offer_has_codec("a=rtpmap:97 rtx/90000", "VP8"));
    }
}
