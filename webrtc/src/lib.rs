//! streamgate's WebRTC transport (sans-IO): everything that happens on the one UDP port.
//!
//! * [`endpoint`]: many str0m `Rtc` sessions on one UDP port, routed by ICE ufrag and address;
//!   what they receive comes out as [`RtpFrame`]s. The gateway's UDP shell owns the socket.
//! * [`packetize`]: RTP payloads from media (RFC 6184 H.264).
//! * [`client`]: a WHIP publisher for tests and load generation (real ICE, DTLS, SRTP).
//! * [`loopback`]: a client and an endpoint wired together in memory on a virtual clock.
//!
//! It knows nothing of the hub or of codecs' configurations: `ingest` turns received frames into
//! hub frames, `egress` will turn hub frames into sent media.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use str0m::format::Codec;
pub use str0m::media::Rid;
pub use str0m::net::Transmit;

pub mod client;
pub mod endpoint;
pub mod loopback;
pub mod packetize;

/// Which kind of track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// 90 kHz.
    Video,
    /// 48 kHz.
    Audio,
}

/// A depacketized frame a session received.
#[derive(Debug, Clone)]
pub struct RtpFrame {
    /// Video (H.264 access unit, Annex-B, or a VP8/VP9 frame) or audio (one Opus packet).
    pub track: Track,
    /// The payload's codec (H.264, VP8, VP9 or Opus).
    pub codec: Codec,
    /// Extended RTP timestamp.
    pub rtp_time: u64,
    /// When its first packet arrived.
    pub arrival: Instant,
    /// False when packets before it were lost.
    pub contiguous: bool,
    /// Payload.
    pub data: Arc<[u8]>,
    /// Latest RTCP sender report of this track: NTP time and RTP timestamp.
    pub sender_report: Option<(SystemTime, u32)>,
    /// The simulcast layer (RTP stream id) it belongs to, when the publisher sends several.
    pub layer: Option<Rid>,
}
