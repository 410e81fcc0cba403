//! `streamgate`: the gateway binary. Wires ingest, the hub and egress to listeners.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admission;
mod auth;
mod config;
mod flv_http;
mod hls;
mod http;
mod io;
mod rtmp_server;
mod state;
mod webrtc_server;
mod whip;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use media::{Hub, HubConfig};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Config};
use crate::state::{AppState, Counters};

fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    }
}

/// A listener whose accepted sockets inherit a bounded kernel send buffer: what a viewer has not
/// read yet stays in its hub queue (where the drop policy applies), not in seconds of kernel
/// buffering that would add latency and memory per viewer.
fn bind_tcp(addr: SocketAddr, send_buffer: u32) -> Result<TcpListener> {
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
    Ok(socket.listen(1024)?)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let config = Config::load(&cli)?;
    if cli.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    // Multi-thread even with one worker: transcoding moves off it with `block_in_place`.
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if config.server.workers > 0 {
        rt.worker_threads(config.server.workers);
    }
    rt.enable_all().build().context("starting the runtime")?.block_on(run(config))
}

async fn run(config: Config) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.server.log).context("--log filter")?)
        .with_target(false)
        .init();

    let hub = Hub::new(HubConfig {
        queue_max_frames: config.hub.queue_max_frames,
        queue_max_bytes: config.hub.queue_max_bytes,
        gop_max_bytes: config.hub.gop_max_bytes,
        ..HubConfig::default()
    });
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let send_buffer = config.server.socket_send_buffer;
    let http_listener = bind_tcp(config.server.http, send_buffer).with_context(|| format!("binding HTTP {}", config.server.http))?;
    let rtmp_listener = bind_tcp(config.server.rtmp, send_buffer).with_context(|| format!("binding RTMP {}", config.server.rtmp))?;
    let http_addr = http_listener.local_addr()?;
    let rtmp_addr = rtmp_listener.local_addr()?;
    let (udp_socket, endpoint_config) = webrtc_server::bind(&config)?;
    let udp_addr = udp_socket.local_addr()?;
    let (webrtc, webrtc_rx) = webrtc_server::channel();
    let publish_auth = auth::from_config(&config);
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
    let state = Arc::new(AppState {
        config,
        hub,
        counters: Counters::default(),
        shutdown: shutdown_rx.clone(),
        webrtc,
        webrtc_counters: Default::default(),
        publish_auth,
        hls: Default::default(),
        webrtc_admission,
        rtmp_admission,
    });

    let h = display_host(http_addr);
    let r = display_host(rtmp_addr);
    let (hp, rp) = (http_addr.port(), rtmp_addr.port());
    println!("streamgate {} is running", env!("CARGO_PKG_VERSION"));
    println!("  home page        http://{h}:{hp}/");
    println!("  publish (RTMP)   rtmp://{r}:{rp}/live/demo   (OBS: server rtmp://{r}:{rp}/live, key demo)");
    println!("  publish (WHIP)   http://{h}:{hp}/whip/live/demo   (WebRTC media on UDP {udp_addr})");
    println!("  play RTMP        rtmp://{r}:{rp}/live/demo");
    println!("  play HTTP-FLV    http://{h}:{hp}/live/demo.flv");
    println!("  play WS-FLV      ws://{h}:{hp}/live/demo.flv");
    println!("  play HLS         http://{h}:{hp}/live/demo.m3u8");
    println!("  play LL-HLS      http://{h}:{hp}/ll/live/demo.m3u8");
    println!("  stream list      http://{h}:{hp}/api/v1/streams");
    println!("  metrics          http://{h}:{hp}/metrics");
    println!("  try: ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine -c:v libx264 -tune zerolatency -g 30 -c:a aac -f flv rtmp://{r}:{rp}/live/demo");
    info!(http = %http_addr, rtmp = %rtmp_addr, "listening");

    let rtmp_task = tokio::spawn(rtmp_server::serve(rtmp_listener, state.clone()));
    let webrtc_task = tokio::spawn(webrtc_server::serve(udp_socket, endpoint_config, webrtc_rx, state.clone()));
    // HTTP-FLV plays are served on the socket, the rest by axum's router behind hyper.
    let http_task = tokio::spawn(flv_http::serve(http_listener, http::router(state.clone()), state.clone()));

    shutdown_signal().await;
    info!("shutting down");
    let _ = shutdown_tx.send(true);
    // Publishers close, which ends every viewer's stream; give connections a moment to finish.
    let done = async {
        let _ = rtmp_task.await;
        let _ = webrtc_task.await;
        let _ = http_task.await;
    };
    if tokio::time::timeout(Duration::from_secs(5), done).await.is_err() {
        warn!("connections still open after 5 s; exiting");
    }
    Ok(())
}
