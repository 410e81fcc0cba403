//! `streamgate`: the gateway binary. Flags and configuration, logging, the runtime, signals and
//! the URLs to open; the gateway itself is the library (`lib.rs`).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Parser;
use streamgate::{Cli, Config};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    }
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
    let gw = streamgate::start(config).await?;
    let h = display_host(gw.http);
    let r = display_host(gw.rtmp);
    let (hp, rp) = (gw.http.port(), gw.rtmp.port());
    let udp = gw.webrtc_udp;
    println!("streamgate {} is running", env!("CARGO_PKG_VERSION"));
    match gw.https {
        Some(a) => {
            println!(
                "  video chat room  https://{}:{}/   (a room: /room/NAME)",
                display_host(a),
                a.port()
            );
            if let Some(f) = &gw.tls_fingerprint {
                println!("                   certificate SHA-256 {f}");
            }
            println!("                   also http://{h}:{hp}/ (cameras work there on localhost only)");
        }
        None => println!("  video chat room  http://{h}:{hp}/   (a room: /room/NAME; off localhost, cameras need --https)"),
    }
    println!("  publish (RTMP)   rtmp://{r}:{rp}/live/demo   (OBS: server rtmp://{r}:{rp}/live, key demo)");
    println!("  publish (WHIP)   http://{h}:{hp}/whip/live/demo   (WebRTC media on UDP {udp})");
    println!("  play RTMP        rtmp://{r}:{rp}/live/demo");
    println!("  play WebRTC      http://{h}:{hp}/whep/live/demo   (WHEP)");
    println!("  play HTTP-FLV    http://{h}:{hp}/live/demo.flv");
    println!("  play WS-FLV      ws://{h}:{hp}/live/demo.flv");
    println!("  play HLS         http://{h}:{hp}/live/demo.m3u8");
    println!("  play LL-HLS      http://{h}:{hp}/ll/live/demo.m3u8");
    println!("  stream list      http://{h}:{hp}/api/v1/streams");
    println!("  metrics          http://{h}:{hp}/metrics");
    println!("  try: ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine -c:v libx264 -tune zerolatency -g 30 -c:a aac -f flv rtmp://{r}:{rp}/live/demo");
    shutdown_signal().await;
    info!("shutting down");
    gw.shutdown().await;
    Ok(())
}
