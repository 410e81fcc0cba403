//! WebRTC ingest (WHIP): what a publisher's received frames become on the hub. The transport
//! (the endpoint on the one UDP port, the test client) is the `webrtc` crate; the socket and
//! tasks live in the gateway.
//!
//! * [`h264`]: H.264 access units -> AVCC frames and sequence headers.
//! * [`audio`]: Opus -> AAC-LC.
//! * [`timing`]: RTP time -> hub timeline, A/V alignment from RTCP sender reports.
//! * [`transcode`]: VP8/VP9 -> H.264.
//! * [`pipeline`]: one publisher's media, from depacketized frames to hub operations.

pub mod audio;
pub mod h264;
pub mod pipeline;
pub mod simulcast;
pub mod timing;
pub mod transcode;
