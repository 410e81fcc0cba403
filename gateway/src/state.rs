//! Shared state handed to every listener.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use media::Hub;
use tokio::sync::watch;

use crate::config::Config;

/// Counters per egress/ingest protocol, for `/metrics`.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections closed because of a protocol error or bad input.
    pub errors: AtomicU64,
    /// Bytes written to peers.
    pub bytes_out: AtomicU64,
    /// Bytes read from peers.
    pub bytes_in: AtomicU64,
}

impl ProtocolCounters {
    pub fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub rtmp: ProtocolCounters,
    pub http_flv: ProtocolCounters,
    pub ws_flv: ProtocolCounters,
    /// RTMP connections closed because handshake and `connect` took too long.
    pub rtmp_connect_timeouts: AtomicU64,
}

/// Everything a connection needs.
pub struct AppState {
    pub config: Config,
    pub hub: Hub,
    pub counters: Counters,
    /// Flips to true on SIGINT/SIGTERM.
    pub shutdown: watch::Receiver<bool>,
    /// Commands to the WebRTC task.
    pub webrtc: crate::webrtc_server::WebRtcHandle,
    pub webrtc_counters: Arc<crate::webrtc_server::WebRtcCounters>,
    /// Decides who may publish (the WHIP bearer token today; a hook for real auth later).
    pub publish_auth: Box<dyn crate::auth::PublishAuth>,
    /// HLS segmenters (classic and LL-HLS), started on demand.
    pub hls: crate::hls::Hls,
    /// WebRTC sessions before they connect (pending per address and in all, offer rate).
    pub webrtc_admission: crate::admission::Admission,
    /// RTMP connections before handshake and `connect`.
    pub rtmp_admission: crate::admission::Admission,
}

pub type SharedState = Arc<AppState>;
