//! Counters per protocol that listeners add to and `/metrics` reads (a leaf module).

use std::sync::atomic::{AtomicU64, Ordering};

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

/// The TCP protocols' counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub rtmp: ProtocolCounters,
    pub http_flv: ProtocolCounters,
    pub ws_flv: ProtocolCounters,
    /// RTMP connections closed because handshake and `connect` took too long.
    pub rtmp_connect_timeouts: AtomicU64,
}
