//! Egress: hub events muxed into what viewers' players read.
//!
//! Each format has a pure per-frame muxer whose output is cached on the frame
//! ([`media::MediaFrame::muxed`]), so a frame is muxed once per stream per format and every viewer
//! shares the bytes; and a small per-viewer state machine that adds the headers a viewer needs
//! when it joins or when the codec configuration changes.
//!
//! * [`flv`]: FLV for HTTP-FLV and WebSocket-FLV.
//! * [`rtmp_play`]: RTMP messages for players.
//! * [`ts`]: MPEG-TS for HLS segments.
//! * [`hls`]: the HLS segmenter and live playlist.
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod flv;
pub mod hls;
pub mod rtmp_play;
pub mod ts;
pub mod viewer;
