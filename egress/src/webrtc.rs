//! Hub events to the frames a WebRTC session sends (sans-IO): what WHEP viewers and room
//! subscribers receive, handed to `webrtc::Endpoint::write` by the gateway's UDP shell.
//!
//! * H.264: access units go out in Annex B (str0m packetizes them per RFC 6184), with the
//!   stream's SPS and PPS in front of every IDR, so a browser can start or recover at any
//!   keyframe without a separate parameter-set message. The Annex B form is built once per
//!   frame ([`crate::slots::WEBRTC`]) and shared by every WebRTC viewer.
//! * Opus, VP8, VP9 (a WebRTC publisher's own frames): passed through as they came.
//! * AAC is not a WebRTC codec: its frames are left out (an AAC→Opus rendition is separate).
//! * A viewer starts at a video keyframe; audio before it is held back, so both start together.
//!   Timestamps are the hub's timeline in each codec's RTP clock (90 kHz video, 48 kHz Opus).

use bytes::Bytes;
use media::avc::{nal, nal_units, AvcDecoderConfig};
use media::{Codec, HubEvent, MediaFrame, Timebase, TrackKind, VideoConfig};

/// RTP clock of video.
pub const VIDEO_CLOCK: Timebase = Timebase::MPEG;
/// RTP clock of Opus.
pub const OPUS_CLOCK: Timebase = Timebase { num: 1, den: 48_000 };

/// One frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendFrame {
    /// Video or audio.
    pub track: TrackKind,
    /// H.264 (Annex B), VP8, VP9 or Opus.
    pub codec: Codec,
    /// Presentation time in the codec's RTP clock (non-negative).
    pub rtp_time: u64,
    /// Presentation time on the hub's timeline in microseconds (for the wallclock of RTCP
    /// sender reports, which lets the browser line audio up with video).
    pub timeline_us: i64,
    /// A video keyframe.
    pub keyframe: bool,
    /// The payload.
    pub data: Bytes,
}

/// Why a stream cannot be sent to a WebRTC viewer as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsendable {
    /// Frames out of decode order: browsers' WebRTC H.264 decoders show them out of order.
    #[error(
        "the stream has B-frames, which browsers cannot play over WebRTC: publish without them \
         (x264 bframes=0, FFmpeg -bf 0, OBS: B-frames 0, or -tune zerolatency)"
    )]
    BFrames,
}

/// One WebRTC viewer's state.
#[derive(Debug, Default)]
pub struct WebRtcViewer {
    /// SPS and PPS of the current video configuration, in Annex B.
    parameter_sets: Option<Bytes>,
    /// A keyframe went out (video-less streams start at once).
    started: bool,
    has_video: bool,
    last_h264_pts: Option<i64>,
}

impl WebRtcViewer {
    /// A viewer that has sent nothing.
    pub fn new(has_video: bool) -> Self {
        Self {
            has_video,
            ..Self::default()
        }
    }

    /// Appends what `ev` makes this viewer send. An error ends the viewer with its reason.
    pub fn on_event(&mut self, ev: HubEvent, out: &mut Vec<SendFrame>) -> Result<(), Unsendable> {
        match ev {
            HubEvent::VideoConfig(c) => {
                self.parameter_sets = Some(parameter_sets(&c));
                Ok(())
            }
            HubEvent::AudioConfig(_) => Ok(()),
            HubEvent::Frame(f) => self.on_frame(&f, out),
        }
    }

    fn on_frame(&mut self, f: &MediaFrame, out: &mut Vec<SendFrame>) -> Result<(), Unsendable> {
        let clock = match f.codec {
            Codec::H264 | Codec::Vp8 | Codec::Vp9 => VIDEO_CLOCK,
            Codec::Opus => OPUS_CLOCK,
            // AAC, and whatever else is not a WebRTC codec.
            _ => return Ok(()),
        };
        if f.codec == Codec::H264 {
            // Presentation going back in decode order is a B-frame (a constant composition
            // offset, which some encoders send without B-frames, is not).
            if self.last_h264_pts.is_some_and(|p| f.pts < p) {
                return Err(Unsendable::BFrames);
            }
            self.last_h264_pts = Some(f.pts);
        }
        if !self.started {
            if f.track == TrackKind::Video && f.keyframe {
                self.started = true;
            } else if self.has_video {
                return Ok(());
            }
        }
        let data = match f.codec {
            Codec::H264 => {
                let Some(ps) = &self.parameter_sets else { return Ok(()) };
                f.muxed(crate::slots::WEBRTC, |f| annex_b(f, ps))
            }
            _ => f.data.clone(),
        };
        if data.is_empty() {
            return Ok(());
        }
        out.push(SendFrame {
            track: f.track,
            codec: f.codec,
            rtp_time: u64::try_from(f.timebase.rescale(f.pts, clock)).unwrap_or(0),
            timeline_us: f.timebase.rescale(f.pts, Timebase { num: 1, den: 1_000_000 }),
            keyframe: f.keyframe,
            data,
        });
        Ok(())
    }
}

/// The configuration's SPS and PPS as Annex B.
fn parameter_sets(c: &VideoConfig) -> Bytes {
    let mut out = Vec::new();
    if let Ok(rec) = AvcDecoderConfig::parse(&c.avcc) {
        for ps in rec.sps.iter().chain(&rec.pps) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
    }
    Bytes::from(out)
}

/// An AVCC access unit (4-byte lengths, as in the hub) as Annex B; an IDR gets the parameter
/// sets in front unless it carries its own. Malformed units give nothing.
fn annex_b(f: &MediaFrame, parameter_sets: &[u8]) -> Bytes {
    let mut units = Vec::new();
    for n in nal_units(&f.data, 4) {
        match n {
            Ok(n) if !n.is_empty() => units.push(n),
            Ok(_) => {}
            Err(_) => return Bytes::new(),
        }
    }
    let kind = |n: &&[u8]| n[0] & 0x1f;
    let idr = units.iter().any(|n| kind(n) == nal::IDR);
    let own_sps = units.iter().any(|n| kind(n) == nal::SPS);
    let mut out = Vec::with_capacity(f.data.len() + parameter_sets.len() + 16);
    if idr && !own_sps {
        out.extend_from_slice(parameter_sets);
    }
    for n in units.into_iter().filter(|n| kind(n) != nal::AUD) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testutil::{audio_config, video_config, PPS};

    fn avcc(nalus: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for n in nalus {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
        }
        Bytes::from(v)
    }

    fn frame(f: MediaFrame) -> HubEvent {
        HubEvent::Frame(Arc::new(f))
    }

    #[test]
    fn h264_starts_at_a_keyframe_with_parameter_sets_in_front() {
        let mut v = WebRtcViewer::new(true);
        let mut out = Vec::new();
        let cfg = video_config(PPS);
        let sps = AvcDecoderConfig::parse(&cfg.avcc).unwrap().sps[0].clone();
        v.on_event(HubEvent::VideoConfig(cfg), &mut out).unwrap();
        v.on_event(HubEvent::AudioConfig(audio_config()), &mut out).unwrap();
        let opus = |ms: i64| MediaFrame::coded(Codec::Opus, ms * 48, ms * 48, OPUS_CLOCK, true, Bytes::from_static(b"op"));
        // Before the first keyframe: nothing (a P frame, audio).
        v.on_event(
            frame(MediaFrame::video(0, 0, Timebase::MILLIS, false, avcc(&[&[0x41, 1]]))),
            &mut out,
        )
        .unwrap();
        v.on_event(frame(opus(10)), &mut out).unwrap();
        assert!(out.is_empty());
        let idr = avcc(&[&[0x09, 0xf0], &[0x65, 0x88, 0x84]]);
        v.on_event(frame(MediaFrame::video(33, 33, Timebase::MILLIS, true, idr)), &mut out)
            .unwrap();
        v.on_event(frame(MediaFrame::audio(40, Timebase::MILLIS, Bytes::from_static(b"aac"))), &mut out)
            .unwrap();
        v.on_event(frame(opus(40)), &mut out).unwrap();
        v.on_event(
            frame(MediaFrame::video(66, 66, Timebase::MILLIS, false, avcc(&[&[0x41, 2]]))),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 3, "IDR, Opus, P; AAC left out: {out:?}");
        let mut want = vec![0, 0, 0, 1];
        want.extend_from_slice(&sps);
        want.extend_from_slice(&[0, 0, 0, 1]);
        want.extend_from_slice(PPS);
        want.extend_from_slice(&[0, 0, 0, 1, 0x65, 0x88, 0x84]);
        assert_eq!(&out[0].data[..], &want[..], "SPS, PPS, IDR; the AUD dropped");
        assert_eq!((out[0].rtp_time, out[0].timeline_us, out[0].keyframe), (33 * 90, 33_000, true));
        assert_eq!((out[1].codec, out[1].rtp_time), (Codec::Opus, 40 * 48));
        assert_eq!(&out[2].data[..], &[0, 0, 0, 1, 0x41, 2]);
    }

    #[test]
    fn b_frames_are_refused_with_the_setting_to_change() {
        let mut v = WebRtcViewer::new(true);
        let mut out = Vec::new();
        v.on_event(HubEvent::VideoConfig(video_config(PPS)), &mut out).unwrap();
        let p = |pts, dts| frame(MediaFrame::video(pts, dts, Timebase::MILLIS, false, avcc(&[&[0x41, 1]])));
        // A constant offset passes; presentation going back is a B-frame.
        v.on_event(p(100, 33), &mut out).unwrap();
        v.on_event(p(200, 66), &mut out).unwrap();
        let e = v.on_event(p(133, 67), &mut out).unwrap_err();
        assert!(e.to_string().contains("-bf 0"), "{e}");
    }

    #[test]
    fn vp8_and_audio_only_streams_pass_through() {
        let mut v = WebRtcViewer::new(true);
        let mut out = Vec::new();
        let vp8 = |key, ts| MediaFrame::coded(Codec::Vp8, ts, ts, VIDEO_CLOCK, key, Bytes::from_static(b"\x50vp8"));
        v.on_event(frame(vp8(false, 0)), &mut out).unwrap();
        v.on_event(frame(vp8(true, 3000)), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].codec, out[0].rtp_time, &out[0].data[..]),
            (Codec::Vp8, 3000, &b"\x50vp8"[..])
        );
        // Without video, audio goes at once.
        let mut a = WebRtcViewer::new(false);
        a.on_event(
            frame(MediaFrame::coded(Codec::Opus, 960, 960, OPUS_CLOCK, true, Bytes::from_static(b"o"))),
            &mut out,
        )
        .unwrap();
        assert_eq!(out.len(), 2);
    }
}
