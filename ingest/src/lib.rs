//! Ingest: each publisher protocol becomes the hub's frame model here.
//!
//! * [`rtmp`]: RTMP/FLV tag bodies (H.264 + AAC) -> configs and frames.
//! * [`opus`]: the Opus rendition of AAC audio, for WebRTC viewers (only while one exists).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod opus;
pub mod rtmp;
pub mod webrtc;
