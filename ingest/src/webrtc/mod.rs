//! WebRTC ingest (WHIP): sans-IO pieces; the UDP socket and tasks live in the gateway.
//!
//! * [`client`]: a WHIP publisher for tests and load generation.
//! * [`loopback`]: a client and an endpoint wired together in memory (tests, fuzzing).
//! * [`endpoint`]: many str0m `Rtc` sessions on one UDP port, routed by ICE ufrag and address.
//! * [`h264`]: H.264 access units -> AVCC frames and sequence headers.
//! * [`audio`]: Opus -> AAC-LC.
//! * [`timing`]: RTP time -> hub timeline, A/V alignment from RTCP sender reports.
//! * [`transcode`]: VP8/VP9 -> H.264.
//! * [`pipeline`]: one publisher's media, from depacketized frames to hub operations.

pub mod audio;
pub mod client;
pub mod endpoint;
pub mod h264;
pub mod loopback;
pub mod pipeline;
pub mod timing;
pub mod transcode;
