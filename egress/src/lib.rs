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
//! * [`fmp4`], [`llhls`]: CMAF fragments and the Low-Latency HLS segmenter.
//! * [`webrtc`]: the frames a WebRTC session sends (H.264 in Annex B, Opus, VP8, VP9).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod llhls;
pub mod rtmp_play;
pub mod ts;
pub mod viewer;
pub mod webrtc;

/// The frame slots ([`media::MuxSlot`]) each format caches its muxed bytes in. A new format
/// takes the next free index here; `media` does not know the formats.
pub mod slots {
    use media::MuxSlot;

    /// One FLV tag plus its trailing PreviousTagSize (HTTP-FLV and WebSocket-FLV).
    pub const FLV: MuxSlot = MuxSlot::new(0);
    /// The RTMP chunks of one message as sent to players.
    pub const RTMP_PLAY: MuxSlot = MuxSlot::new(1);
    /// An H.264 access unit in Annex B, parameter sets in front of an IDR (WebRTC).
    pub const WEBRTC: MuxSlot = MuxSlot::new(2);
}

/// Codec configurations the unit tests share.
#[cfg(test)]
pub(crate) mod testutil {
    use std::sync::Arc;

    use bytes::Bytes;
    use media::avc::AvcDecoderConfig;
    use media::frame::{AudioConfig, VideoConfig};

    /// 1280x720 x264 SPS with the given PPS.
    pub fn video_config(pps: &[u8]) -> Arc<VideoConfig> {
        let sps = include_bytes!("../../media/testdata/x264_1280x720.sps");
        let rec = AvcDecoderConfig::from_parameter_sets(sps, &[pps]).unwrap();
        Arc::new(VideoConfig::from_avcc(rec.to_bytes()).unwrap())
    }

    /// The PPS most tests use.
    pub const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];

    /// AAC-LC 48 kHz stereo.
    pub fn audio_config() -> Arc<AudioConfig> {
        Arc::new(AudioConfig::from_asc(Bytes::from_static(&[0x11, 0x90])).unwrap())
    }
}
