//! The HTTP router: each route module brings its routes and the state it needs; this module
//! merges them under one CORS layer and the fallbacks, and dispatches the URL that FLV and
//! classic HLS share (`/{app}/{file}`).

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::flv_play::{self, FlvService};
use crate::hls::{self, HlsService};
use crate::respond::{method_not_allowed, not_found};
use crate::state::AppState;
use crate::{api, metrics, pages, whep, whip};

/// The routes; `room` is the Socket.IO layer of `/socket.io/`.
pub fn router(st: &AppState, forwarder: Arc<crate::sfu::Forwarder>, room: socketioxide::layer::SocketIoLayer) -> Router {
    let allow = st.config.http.cors_allow_origin.as_str();
    let origin = match allow {
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
    let cors = if allow == "*" { cors.vary([]) } else { cors };
    let play = Router::new()
        .route("/{app}/{file}", get(play))
        .with_state((st.flv.clone(), st.hls.clone()));
    Router::new()
        .merge(api::routes(st.hub.clone()))
        .merge(metrics::routes(metrics::Sources {
            hub: st.hub.clone(),
            counters: st.counters.clone(),
            webrtc: st.webrtc_counters.clone(),
            hls: st.hls.clone(),
            webrtc_admission: st.webrtc_admission.clone(),
            rtmp_admission: st.rtmp_admission.clone(),
        }))
        .merge(play)
        .merge(hls::routes(st.hls.clone()))
        .merge(whip::routes(Arc::new(whip::WhipService {
            publishing: st.publishing.clone(),
            webrtc: st.webrtc.clone(),
            admission: st.webrtc_admission.clone(),
            config: st.config.webrtc.clone(),
            turn: st.config.turn.clone(),
        })))
        .merge(whep::routes(Arc::new(whep::WhepService {
            hub: st.hub.clone(),
            webrtc: st.webrtc.clone(),
            admission: st.webrtc_admission.clone(),
            config: st.config.webrtc.clone(),
            turn: st.config.turn.clone(),
        })))
        .merge(crate::sfu::routes(forwarder))
        .merge(pages::routes(pages::Pages {
            dir: st.config.http.player_dir.clone(),
        }))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Socket.IO takes `/socket.io/...` before the routes; CORS wraps its polling too.
        .layer(room)
        .layer(cors)
}

/// `/{app}/{file}`: classic HLS (`.m3u8`, `.ts`), else an FLV play (HTTP or WebSocket).
async fn play(
    State((flv, hls)): State<(Arc<FlvService>, Arc<HlsService>)>,
    Path((app, file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Some(r) = hls::classic(&hls, &app, &file, &method, &headers).await {
        return r;
    }
    flv_play::play(flv, &app, &file, &method, ws.ok()).await
}
