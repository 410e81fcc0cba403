//! What the listeners share. Route modules take only their part of it (see `http::router`).

use std::sync::Arc;

use media::Hub;
use tokio::sync::watch;

use crate::admission::Admission;
use crate::config::Config;
use crate::counters::Counters;
use crate::flv_play::FlvService;
use crate::hls::HlsService;
use crate::publish::Publishing;
use crate::webrtc_server::{WebRtcCounters, WebRtcHandle};

/// Everything a listener needs.
pub struct AppState {
    pub config: Config,
    pub hub: Hub,
    pub counters: Arc<Counters>,
    /// Flips to true on SIGINT/SIGTERM.
    pub shutdown: watch::Receiver<bool>,
    /// Commands to the WebRTC task.
    pub webrtc: WebRtcHandle,
    pub webrtc_counters: Arc<WebRtcCounters>,
    /// The one publish path of every protocol (policy, then the key).
    pub publishing: Arc<Publishing>,
    /// HLS segmenters (classic and LL-HLS), started on demand.
    pub hls: Arc<HlsService>,
    /// FLV viewers (HTTP and WebSocket).
    pub flv: Arc<FlvService>,
    /// WebRTC sessions before they connect (pending per address and in all, offer rate).
    pub webrtc_admission: Admission,
    /// RTMP connections before handshake and `connect`.
    pub rtmp_admission: Admission,
}

pub type SharedState = Arc<AppState>;
