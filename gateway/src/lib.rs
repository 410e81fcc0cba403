//! streamgate as a library: [`start`] binds every listener of a [`Config`] and serves until
//! [`Gateway::shutdown`]; the `streamgate` binary (`main.rs`) is a thin shell around it (flags,
//! logging, signals, the URLs it prints). Tests start gateways in-process with it, on port 0.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
mod api;
mod auth;
pub mod config;
mod counters;
mod flv_http;
mod flv_play;
mod forward;
mod hls;
mod http;
mod io;
mod metrics;
mod pacing;
mod pages;
mod publish;
mod respond;
mod room;
mod rtmp_server;
mod sdp_http;
mod sfu;
mod state;
#[cfg(test)]
mod testutil;
mod tls;
mod viewer_loop;
mod webrtc_server;
mod whep;
mod whip;

/// Request parsing that sees raw bytes from the network, sans-IO: the fuzz targets' entry
/// points (`fuzz/fuzz_targets/http_head.rs`, `hls_name.rs`).
pub mod parse {
    pub use crate::flv_http::{classify, Head};
    pub use crate::hls::policy::{blocking_query, classic_name, ll_name, names_rebuild, BlockAt, ClassicName, LlName, LlObject};
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use media::{Hub, HubConfig};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use crate::config::{Cli, Config, ConfigError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not bind its address (in use, no permission, no such address).
    #[error("binding {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A bound socket could not be set up.
    #[error("setting up {what}: {source}")]
    Socket { what: &'static str, source: std::io::Error },
    /// The HTTPS listener's certificate or key.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}
use crate::counters::Counters;
use crate::flv_play::FlvService;
use crate::hls::HlsService;
use crate::state::AppState;

/// A listener whose accepted sockets inherit a bounded kernel send buffer: what a viewer has not
/// read yet stays in its hub queue (where the drop policy applies), not in seconds of kernel
/// buffering that would add latency and memory per viewer.
fn bind_tcp(addr: SocketAddr, send_buffer: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer)?;
    }
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A running gateway.
pub struct Gateway {
    /// The HTTP listener's address (HTTP-FLV, WS-FLV, HLS, WHIP, API, metrics).
    pub http: SocketAddr,
    /// The RTMP listener's address.
    pub rtmp: SocketAddr,
    /// The WebRTC media UDP socket's address.
    pub webrtc_udp: SocketAddr,
    /// The HTTPS listener, and its certificate's SHA-256.
    pub https: Option<SocketAddr>,
    pub tls_fingerprint: Option<String>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Binds the listeners of `config` (port 0 picks a free port; see the addresses on the result)
/// and starts serving on the current tokio runtime.
pub async fn start(config: Config) -> Result<Gateway, StartError> {
    let hub = Hub::new(HubConfig {
        queue_max_frames: config.hub.queue_max_frames,
        queue_max_bytes: config.hub.queue_max_bytes,
        gop_max_bytes: config.hub.gop_max_bytes,
        ..HubConfig::default()
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let send_buffer = config.server.socket_send_buffer;
    let bind = |what, addr| bind_tcp(addr, send_buffer).map_err(|source| StartError::Bind { what, addr, source });
    let http_listener = bind("HTTP", config.server.http)?;
    let rtmp_listener = bind("RTMP", config.server.rtmp)?;
    let local = |what, r: std::io::Result<SocketAddr>| r.map_err(|source| StartError::Socket { what, source });
    let http = local("HTTP", http_listener.local_addr())?;
    // HTTPS: bound and its certificate loaded (or made) before anything starts.
    let https = match config.server.https {
        Some(addr) => {
            let listener = bind("HTTPS", addr)?;
            let s = &config.server;
            let tls = match (&s.tls_cert, &s.tls_key) {
                (Some(c), Some(k)) => tls::from_files(c, k)?,
                _ => {
                    let mut ips = s.public_ips();
                    if !addr.ip().is_unspecified() {
                        ips.push(addr.ip());
                    }
                    tls::self_signed(tls::self_signed_names(&ips))?
                }
            };
            let bound = local("HTTPS", listener.local_addr())?;
            Some((listener, tls, bound))
        }
        None => None,
    };
    let rtmp = local("RTMP", rtmp_listener.local_addr())?;
    let (udp_socket, endpoint_config) = webrtc_server::bind(&config)?;
    let webrtc_udp = local("WebRTC UDP", udp_socket.local_addr())?;
    let (webrtc, webrtc_inputs) = webrtc_server::channel();
    let publishing = Arc::new(publish::Publishing::new(hub.clone(), auth::from_config(&config)));
    let webrtc_admission = admission::Admission::new(admission::Limits {
        per_address: config.webrtc.max_pending_per_address,
        total: config.webrtc.max_pending,
        rate_per_sec: config.webrtc.offers_per_second_per_address,
        burst: config.webrtc.offers_burst_per_address,
    });
    let rtmp_admission = admission::Admission::new(admission::Limits {
        per_address: config.rtmp.max_pending_per_address,
        total: config.rtmp.max_pending,
        rate_per_sec: 0.0,
        burst: 1,
    });
    let counters = Arc::new(Counters::default());
    let webrtc_counters = Arc::new(webrtc_server::WebRtcCounters::default());
    let shell = Arc::new(webrtc_server::Shell {
        config: config.webrtc.clone(),
        counters: webrtc_counters.clone(),
        handle: webrtc.clone(),
        shutdown: shutdown_rx.clone(),
        hub: hub.clone(),
    });
    let hls = Arc::new(HlsService {
        hub: hub.clone(),
        streams: Default::default(),
        config: config.hls.clone(),
    });
    let flv = Arc::new(FlvService {
        hub: hub.clone(),
        counters: counters.clone(),
        http: config.http.clone(),
        egress: config.egress.clone(),
        shutdown: shutdown_rx.clone(),
    });
    let state = Arc::new(AppState {
        config,
        hub,
        counters,
        shutdown: shutdown_rx,
        webrtc,
        webrtc_counters,
        publishing,
        hls,
        flv: flv.clone(),
        webrtc_admission,
        rtmp_admission,
    });
    let forwarder = Arc::new(sfu::Forwarder {
        hub: state.hub.clone(),
        webrtc: state.webrtc.clone(),
        admission: state.webrtc_admission.clone(),
    });
    let rooms = room::RoomService::new(
        state.hub.clone(),
        forwarder.clone(),
        state.publishing.clone(),
        state.webrtc.clone(),
        state.webrtc_admission.clone(),
        state.config.clone(),
        rtmp.port(),
    );
    let room_layer = room::signal::layer(&rooms);
    info!(%http, %rtmp, %webrtc_udp, "listening");
    let mut tasks = vec![
        tokio::spawn(rtmp_server::serve(rtmp_listener, state.clone())),
        tokio::spawn(webrtc_server::serve(udp_socket, endpoint_config, webrtc_inputs, shell)),
        // HTTP-FLV plays are served on the socket, the rest by axum's router behind hyper.
        tokio::spawn(rooms.tick(state.shutdown.clone())),
    ];
    let router = http::router(&state, forwarder, room_layer);
    let (https_addr, tls_fingerprint) = match https {
        Some((listener, tls, bound)) => {
            info!(https = %bound, "listening");
            tasks.push(tokio::spawn(tls::serve(listener, tls.acceptor, router.clone(), flv.clone())));
            (Some(bound), Some(tls.fingerprint))
        }
        None => (None, None),
    };
    tasks.push(tokio::spawn(flv_http::serve(http_listener, router, flv)));
    Ok(Gateway {
        http,
        https: https_addr,
        tls_fingerprint,
        rtmp,
        webrtc_udp,
        shutdown: shutdown_tx,
        tasks,
    })
}

impl Gateway {
    /// Stops accepting, ends every publisher (which ends every viewer's stream) and waits up to
    /// 5 s for connections to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let done = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), done).await.is_err() {
            warn!("connections still open after 5 s; exiting");
        }
    }
}
