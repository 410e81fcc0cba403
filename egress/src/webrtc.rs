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
#[derive(Debug)]
pub struct WebRtcViewer {
    /// SPS and PPS of the current video configuration, in Annex B.
    parameter_sets: Option<Bytes>,
    /// Video waits for a keyframe (at the start, and after the still picture of [`Self::start`]).
    video_waits: bool,
    /// Audio waits for the first picture (streams with video).
    audio_waits: bool,
    last_h264_pts: Option<i64>,
}

impl WebRtcViewer {
    /// A viewer that has sent nothing.
    pub fn new(has_video: bool) -> Self {
        Self {
            parameter_sets: None,
            video_waits: true,
            audio_waits: has_video,
            last_h264_pts: None,
        }
    }

    /// Starts from what the hub replays to a new subscriber (configurations, then the cached
    /// GOP), without the burst a browser would show as a fast-forward: the GOP's keyframe goes
    /// alone, stamped at the newest replayed frame's time (the live edge), so a picture shows at
    /// once; when frames followed it in the cache, video then waits for the next live keyframe
    /// (they depend on the skipped ones). Audio starts live.
    pub fn start(&mut self, replay: Vec<HubEvent>, out: &mut Vec<SendFrame>) -> Result<(), Unsendable> {
        let mut key: Option<std::sync::Arc<MediaFrame>> = None;
        let mut newest = None;
        let mut after_key = false;
        for ev in replay {
            match ev {
                HubEvent::Frame(f) if f.track == TrackKind::Video && sendable(f.codec) => {
                    self.check_order(&f)?;
                    if key.is_none() && f.keyframe {
                        newest = Some(f.pts);
                        key = Some(f);
                    } else if key.is_some() {
                        newest = newest.max(Some(f.pts));
                        after_key = true;
                    }
                }
                HubEvent::Frame(_) => {}
                ev => self.on_event(ev, out)?,
            }
        }
        if let (Some(k), Some(pts)) = (key, newest) {
            if self.send(&k, pts, out) {
                self.video_waits = after_key;
                self.audio_waits = false;
            }
        }
        Ok(())
    }

    /// A video frame did not reach the session: video waits for the next keyframe (what
    /// follows depends on the lost frame).
    pub fn skip_to_keyframe(&mut self) {
        self.video_waits = true;
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

    /// Presentation going back in decode order is a B-frame (a constant composition offset,
    /// which some encoders send without B-frames, is not).
    fn check_order(&mut self, f: &MediaFrame) -> Result<(), Unsendable> {
        if f.codec == Codec::H264 {
            if self.last_h264_pts.is_some_and(|p| f.pts < p) {
                return Err(Unsendable::BFrames);
            }
            self.last_h264_pts = Some(f.pts);
        }
        Ok(())
    }

    fn on_frame(&mut self, f: &MediaFrame, out: &mut Vec<SendFrame>) -> Result<(), Unsendable> {
        if !sendable(f.codec) {
            // AAC, and whatever else is not a WebRTC codec.
            return Ok(());
        }
        self.check_order(f)?;
        match f.track {
            TrackKind::Video if self.video_waits && !f.keyframe => return Ok(()),
            TrackKind::Audio if self.audio_waits => return Ok(()),
            _ => {}
        }
        if self.send(f, f.pts, out) && f.track == TrackKind::Video {
            self.video_waits = false;
            self.audio_waits = false;
        }
        Ok(())
    }

    /// Appends `f` stamped at `pts` (in its timebase); false when there was nothing to send
    /// (H.264 before its configuration, or a malformed access unit).
    fn send(&mut self, f: &MediaFrame, pts: i64, out: &mut Vec<SendFrame>) -> bool {
        let clock = if f.track == TrackKind::Video { VIDEO_CLOCK } else { OPUS_CLOCK };
        let data = match f.codec {
            Codec::H264 => {
                let Some(ps) = &self.parameter_sets else { return false };
                f.muxed(crate::slots::WEBRTC, |f| annex_b(f, ps))
            }
            _ => f.data.clone(),
        };
        if data.is_empty() {
            return false;
        }
        out.push(SendFrame {
            track: f.track,
            codec: f.codec,
            rtp_time: u64::try_from(f.timebase.rescale(pts, clock)).unwrap_or(0),
            timeline_us: f.timebase.rescale(pts, Timebase { num: 1, den: 1_000_000 }),
            keyframe: f.keyframe,
            data,
        });
        true
    }
}

/// The codecs a WebRTC session sends.
fn sendable(c: Codec) -> bool {
    matches!(c, Codec::H264 | Codec::Vp8 | Codec::Vp9 | Codec::Opus)
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
    fn a_cached_gop_starts_with_its_keyframe_at_the_live_edge_then_the_next_keyframe() {
        let mut v = WebRtcViewer::new(true);
        let mut out = Vec::new();
        let key = |ms| frame(MediaFrame::video(ms, ms, Timebase::MILLIS, true, avcc(&[&[0x65, 1]])));
        let p = |ms| frame(MediaFrame::video(ms, ms, Timebase::MILLIS, false, avcc(&[&[0x41, 1]])));
        let opus = |ms: i64| {
            frame(MediaFrame::coded(
                Codec::Opus,
                ms * 48,
                ms * 48,
                OPUS_CLOCK,
                true,
                Bytes::from_static(b"op"),
            ))
        };
        let replay = vec![HubEvent::VideoConfig(video_config(PPS)), key(1000), opus(1010), p(1033), p(1066)];
        v.start(replay, &mut out).unwrap();
        assert_eq!(out.len(), 1, "the keyframe alone: {out:?}");
        assert!(out[0].keyframe);
        assert_eq!(out[0].rtp_time, 1066 * 90, "stamped at the newest cached frame");
        // Live: P frames that need the skipped ones wait; audio goes; the next keyframe resumes.
        v.on_event(p(1100), &mut out).unwrap();
        v.on_event(opus(1110), &mut out).unwrap();
        v.on_event(key(1133), &mut out).unwrap();
        v.on_event(p(1166), &mut out).unwrap();
        let got: Vec<_> = out[1..].iter().map(|f| (f.codec, f.keyframe, f.timeline_us / 1000)).collect();
        assert_eq!(
            got,
            [(Codec::Opus, true, 1110), (Codec::H264, true, 1133), (Codec::H264, false, 1166)]
        );

        // A cache holding only its keyframe: live frames follow it at once.
        let mut v = WebRtcViewer::new(true);
        let mut out = Vec::new();
        v.start(vec![HubEvent::VideoConfig(video_config(PPS)), key(0)], &mut out).unwrap();
        v.on_event(p(33), &mut out).unwrap();
        assert_eq!(out.iter().map(|f| f.rtp_time).collect::<Vec<_>>(), [0, 33 * 90]);

        // Nothing cached: wait for a keyframe as before.
        let mut v = WebRtcViewer::new(true);
        let mut out = Vec::new();
        v.start(vec![HubEvent::VideoConfig(video_config(PPS))], &mut out).unwrap();
        v.on_event(p(33), &mut out).unwrap();
        assert!(out.is_empty());
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
