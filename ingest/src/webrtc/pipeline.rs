//! One WebRTC publisher's media: depacketized frames in, hub operations out.
//!
//! The hub must know a stream's tracks before viewers start (FLV headers announce them), so
//! operations are held back until every negotiated track has its configuration (video: the first
//! IDR with SPS/PPS; audio: the first decoded Opus packet), at most [`STARTUP_HOLD`] of media.
//! When released, audio older than the first video frame is discarded so both tracks start
//! together.
//!
//! Beside the H.264/AAC renditions every format takes, the publisher's own Opus, VP8 and VP9
//! frames go to the hub as they came (for WebRTC viewers, no transcoding), but only the codecs
//! some consumer wants ([`Pipeline::set_forward`], from the hub's demand).
//!
//! The transcoders (VP8/VP9 -> H.264, Opus -> AAC) run likewise only while some consumer takes
//! their output: from the start until the stream is released (so that it announces its
//! configurations), then while the demand holds H.264 (AAC), and [`RENDITION_IDLE`] after it
//! went (a viewer reloading does not restart them). A stopped rendition is reported
//! ([`HubOp::Stopped`]: its cached frames are stale); when demand comes back the transcoder
//! starts again on the publisher's next keyframe, which the pipeline asks for at once.

use std::time::SystemTime;

use str0m::format::Codec;

use media::frame::{AudioConfig, CodecSet, MediaFrame, Timebase, TrackKind, VideoConfig};

use super::audio::{opus_is_stereo, AacEncoderKind, AacFrame, AudioError, OpusToAac};
use super::h264::H264Track;
use super::timing::SessionTiming;
use super::transcode::{is_keyframe, H264Out, SourceCodec, VideoError, VpxToH264};
pub use webrtc::{RtpFrame, Track};

/// Longest stretch of media (by timestamp) held while waiting for the other track's config.
pub const STARTUP_HOLD_MS: i64 = 3000;

/// How long a transcoder runs on after the last consumer of its output went.
pub const RENDITION_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// An AAC frame's duration (1024 samples at 48 kHz), rounded up: audio that ends after the first
/// video frame starts is kept.
const AAC_FRAME_MS: i64 = 22;

const VIDEO_TB: Timebase = Timebase::MPEG;
const AUDIO_TB: Timebase = Timebase { num: 1, den: 48_000 };

/// What to do on the hub.
#[derive(Debug)]
pub enum HubOp {
    /// Set the video configuration.
    VideoConfig(VideoConfig),
    /// Set the audio configuration.
    AudioConfig(AudioConfig),
    /// Push a frame.
    Frame(MediaFrame),
    /// A rendition stopped (nobody took it): what the hub cached of this codec is stale.
    Stopped(media::Codec),
}

/// Per-publisher state.
pub struct Pipeline {
    timing: SessionTiming,
    video: H264Track,
    audio: Option<OpusToAac>,
    want_video: bool,
    want_audio: bool,
    audio_error: Option<String>,
    aac_encoder: AacEncoderKind,
    transcoder: Option<VpxToH264>,
    video_error: Option<String>,
    h264_out: Vec<H264Out>,
    last_sr: [Option<(SystemTime, u32)>; 2],
    held: Vec<HubOp>,
    released: bool,
    aac: Vec<AacFrame>,
    forward: CodecSet,
    /// Since when nobody took H.264 (index 0) and AAC (index 1) made by transcoding.
    unwanted_since: [Option<std::time::Instant>; 2],
    /// Transcoders started again after a stop, per rendition.
    restarts: [u64; 2],
}

impl Pipeline {
    /// A pipeline for the negotiated tracks.
    pub fn new(video: bool, audio: bool) -> Self {
        Self {
            timing: SessionTiming::new(),
            video: H264Track::new(),
            audio: None,
            want_video: video,
            want_audio: audio,
            audio_error: None,
            aac_encoder: AacEncoderKind::default(),
            transcoder: None,
            video_error: None,
            h264_out: Vec::new(),
            last_sr: [None, None],
            held: Vec::new(),
            released: false,
            aac: Vec::new(),
            forward: CodecSet::EMPTY,
            unwanted_since: [None, None],
            restarts: [0, 0],
        }
    }

    /// Times the transcoders were started again after a stop: (H.264, AAC).
    pub fn rendition_restarts(&self) -> (u64, u64) {
        (self.restarts[0], self.restarts[1])
    }

    /// Whether the rendition of `codec` (H.264 or AAC, made by transcoding) should run now;
    /// false once nobody took it for [`RENDITION_IDLE`].
    fn rendition_wanted(&mut self, codec: media::Codec, now: std::time::Instant) -> bool {
        let i = usize::from(codec == media::Codec::Aac);
        if !self.released || self.forward.contains(codec) {
            self.unwanted_since[i] = None;
            return true;
        }
        let since = *self.unwanted_since[i].get_or_insert(now);
        now.duration_since(since) < RENDITION_IDLE
    }

    /// Which of the publisher's own codecs (Opus, VP8, VP9) to pass to the hub as they came:
    /// what consumers want now ([`media::Publisher::demand`]).
    pub fn set_forward(&mut self, wanted: CodecSet) {
        self.forward = wanted;
    }

    /// Chooses the AAC encoder (before the first audio packet).
    pub fn set_aac_encoder(&mut self, kind: AacEncoderKind) {
        self.aac_encoder = kind;
    }

    /// The H.264 track's state (counters).
    pub fn video(&self) -> &H264Track {
        &self.video
    }

    /// The audio transcoder, once started.
    pub fn audio(&self) -> Option<&OpusToAac> {
        self.audio.as_ref()
    }

    /// The VP8/VP9 -> H.264 transcoder, once started.
    pub fn transcoder(&self) -> Option<&VpxToH264> {
        self.transcoder.as_ref()
    }

    /// True when video is transcoded (each push may then take milliseconds of CPU).
    pub fn transcodes_video(&self) -> bool {
        self.transcoder.is_some()
    }

    /// Why video was given up, if it was.
    pub fn video_error(&self) -> Option<&str> {
        self.video_error.as_deref()
    }

    /// Why audio was given up, if it was.
    pub fn audio_error(&self) -> Option<&str> {
        self.audio_error.as_deref()
    }

    /// Takes one frame; appends hub operations to `ops`. Returns true when a keyframe should be
    /// requested from the sender.
    pub fn push(&mut self, f: RtpFrame, ops: &mut Vec<HubOp>) -> bool {
        let pts = self.push_original(&f, ops);
        self.push_renditions(f, pts, ops)
    }

    /// The first half of [`Pipeline::push`], cheap: the frame's time, and the publisher's own
    /// frame for those who take it. Returns the time, for [`Pipeline::push_renditions`]. Its
    /// operations can go to the hub before the renditions are made (a VP8 viewer does not wait
    /// for the H.264 transcoder).
    pub fn push_original(&mut self, f: &RtpFrame, ops: &mut Vec<HubOp>) -> i64 {
        let ti = usize::from(f.track == Track::Audio);
        if let Some((ntp, rtp)) = f.sender_report {
            if self.last_sr[ti] != f.sender_report {
                self.last_sr[ti] = f.sender_report;
                if let Some(delta) = self.timing.sender_report(f.track, ntp, rtp) {
                    if let Some(a) = &mut self.audio {
                        a.shift(delta);
                    }
                }
            }
        }
        let pts = self.timing.pts(f.track, f.rtp_time, f.arrival);
        // This frame's operations go straight to `ops`; while held back they move to `held`.
        let start = ops.len();
        self.forward_original(pts, f, ops);
        if !self.released {
            self.held.extend(ops.drain(start..));
        }
        pts
    }

    /// The second half of [`Pipeline::push`]: the H.264 and AAC renditions (parsing, or
    /// transcoding). True when a keyframe should be requested.
    pub fn push_renditions(&mut self, f: RtpFrame, pts: i64, ops: &mut Vec<HubOp>) -> bool {
        let start = ops.len();
        let mut want_keyframe = false;
        match f.track {
            Track::Video if f.codec == Codec::H264 => {
                want_keyframe = self.h264(pts, &f.data, f.contiguous, ops);
            }
            Track::Video if !self.rendition_wanted(media::Codec::H264, f.arrival) => {
                if self.transcoder.take().is_some() {
                    ops.push(HubOp::Stopped(media::Codec::H264));
                }
            }
            Track::Video => match self.transcode_video(&f) {
                Ok(want) => {
                    want_keyframe = want;
                    for o in std::mem::take(&mut self.h264_out) {
                        let out_pts = pts + (o.rtp_time as i64 - f.rtp_time as i64);
                        want_keyframe |= self.h264(out_pts, &o.annexb, true, ops);
                    }
                }
                Err(e) => {
                    // Video is lost for this stream; audio goes on.
                    self.video_error = Some(e.to_string());
                    self.transcoder = None;
                    self.want_video = false;
                }
            },
            Track::Audio if !self.rendition_wanted(media::Codec::Aac, f.arrival) => {
                if self.audio.take().is_some() {
                    ops.push(HubOp::Stopped(media::Codec::Aac));
                }
            }
            Track::Audio => {
                if let Err(e) = self.transcode(pts, &f.data, ops) {
                    // Audio is lost for this stream; video goes on.
                    self.audio_error = Some(e.to_string());
                    self.audio = None;
                    self.want_audio = false;
                }
            }
        }
        if !self.released {
            self.held.extend(ops.drain(start..));
            self.release_when_ready(ops);
        }
        want_keyframe
    }

    /// The publisher's own Opus/VP8/VP9 frame, if a consumer wants that codec.
    fn forward_original(&self, pts: i64, f: &RtpFrame, ops: &mut Vec<HubOp>) {
        let (codec, tb, key) = match f.codec {
            Codec::Opus => (media::Codec::Opus, AUDIO_TB, true),
            Codec::Vp8 => (media::Codec::Vp8, VIDEO_TB, is_keyframe(SourceCodec::Vp8, &f.data)),
            Codec::Vp9 => (media::Codec::Vp9, VIDEO_TB, is_keyframe(SourceCodec::Vp9, &f.data)),
            _ => return,
        };
        if self.forward.contains(codec) {
            let data = bytes::Bytes::from_owner(f.data.clone());
            ops.push(HubOp::Frame(MediaFrame::coded(codec, pts, pts, tb, key, data)));
        }
    }

    /// One H.264 access unit (Annex-B) to the hub; true when a keyframe should be requested.
    fn h264(&mut self, pts: i64, annexb: &[u8], contiguous: bool, ops: &mut Vec<HubOp>) -> bool {
        let r = self.video.push(annexb, contiguous);
        if let Some(cfg) = r.config {
            ops.push(HubOp::VideoConfig(cfg));
        }
        if let Some((data, key)) = r.frame {
            ops.push(HubOp::Frame(MediaFrame::video(pts, pts, VIDEO_TB, key, data)));
        }
        r.want_keyframe
    }

    fn transcode_video(&mut self, f: &RtpFrame) -> Result<bool, VideoError> {
        if self.video_error.is_some() {
            return Ok(false);
        }
        let source = match f.codec {
            Codec::Vp8 => SourceCodec::Vp8,
            Codec::Vp9 => SourceCodec::Vp9,
            _ => return Ok(false),
        };
        let (t, restarted) = match &mut self.transcoder {
            Some(t) => (t, false),
            None => {
                // After a stop: it starts at a keyframe, asked for now.
                let again = self.released;
                self.restarts[0] += u64::from(again);
                (self.transcoder.insert(VpxToH264::new(source)?), again)
            }
        };
        Ok(t.push(&f.data, f.contiguous, f.rtp_time, &mut self.h264_out)? || restarted)
    }

    fn transcode(&mut self, pts: i64, packet: &[u8], out: &mut Vec<HubOp>) -> Result<(), AudioError> {
        if self.audio_error.is_some() {
            return Ok(());
        }
        let a = match &mut self.audio {
            Some(a) => a,
            None => {
                let a = OpusToAac::with_encoder(opus_is_stereo(packet), self.aac_encoder)?;
                self.restarts[1] += u64::from(self.released);
                out.push(HubOp::AudioConfig(a.config().clone()));
                self.audio.insert(a)
            }
        };
        a.push(pts, packet, &mut self.aac)?;
        for f in self.aac.drain(..) {
            out.push(HubOp::Frame(MediaFrame::audio(f.pts, AUDIO_TB, f.data)));
        }
        Ok(())
    }

    fn release_when_ready(&mut self, ops: &mut Vec<HubOp>) {
        let has_video = self.video.config().is_some();
        let has_audio = self.audio.is_some();
        let ready = (has_video || !self.want_video) && (has_audio || !self.want_audio);
        let span_ms = held_span_ms(&self.held);
        if !ready && span_ms < STARTUP_HOLD_MS {
            return;
        }
        self.released = true;
        // Configurations first, then frames; audio before the first video frame is dropped.
        let first_video_ms = self.held.iter().find_map(|op| match op {
            HubOp::Frame(f) if f.track == TrackKind::Video => Some(f.pts_ms()),
            _ => None,
        });
        let held = std::mem::take(&mut self.held);
        let (configs, frames): (Vec<_>, Vec<_>) = held.into_iter().partition(|op| !matches!(op, HubOp::Frame(_)));
        ops.extend(configs);
        ops.extend(frames.into_iter().filter(|op| match (op, first_video_ms) {
            (HubOp::Frame(f), Some(v)) if f.track == TrackKind::Audio => f.pts_ms() + AAC_FRAME_MS >= v,
            _ => true,
        }));
    }
}

fn held_span_ms(held: &[HubOp]) -> i64 {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for op in held {
        if let HubOp::Frame(f) = op {
            lo = lo.min(f.pts_ms());
            hi = hi.max(f.pts_ms());
        }
    }
    if lo > hi {
        0
    } else {
        hi - lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const SPS: &[u8] = include_bytes!("../../../media/testdata/openh264_640x480.sps");

    fn idr(extra: u8) -> Arc<[u8]> {
        let mut v = vec![0, 0, 0, 1];
        v.extend_from_slice(SPS);
        v.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80, 0, 0, 0, 1, 0x65, extra]);
        v.into()
    }

    fn frame(track: Track, rtp: u64, at: Instant, data: Arc<[u8]>) -> RtpFrame {
        RtpFrame {
            track,
            codec: if track == Track::Video { Codec::H264 } else { Codec::Opus },
            rtp_time: rtp,
            arrival: at,
            contiguous: true,
            data,
            sender_report: None,
            layer: None,
        }
    }

    #[test]
    fn video_only_is_released_at_first_idr() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(true, false);
        let mut ops = Vec::new();
        let want = p.push(frame(Track::Video, 0, t0, vec![0, 0, 0, 1, 0x41, 1].into()), &mut ops);
        assert!(want && ops.is_empty());
        p.push(frame(Track::Video, 3000, t0 + Duration::from_millis(33), idr(1)), &mut ops);
        assert!(matches!(ops[0], HubOp::VideoConfig(_)));
        match &ops[1] {
            HubOp::Frame(f) => assert!(f.keyframe && f.pts_ms() == 133),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn held_until_both_configs_and_early_audio_dropped() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(true, true);
        let mut ops = Vec::new();
        // Audio that does not decode still starts the transcoder (config known)...
        p.push(frame(Track::Audio, 0, t0, vec![0xfc, 0xff, 0xfe].into()), &mut ops);
        assert!(ops.is_empty(), "held until video has a config");
        p.push(frame(Track::Video, 90_000, t0 + Duration::from_millis(1000), idr(2)), &mut ops);
        let kinds: Vec<&str> = ops
            .iter()
            .map(|o| match o {
                HubOp::VideoConfig(_) => "v-config",
                HubOp::AudioConfig(_) => "a-config",
                HubOp::Frame(_) => "frame",
                HubOp::Stopped(_) => "stopped",
            })
            .collect();
        assert_eq!(kinds, ["a-config", "v-config", "frame"]);
    }

    /// Opus goes to the hub as it came only while someone wants it, beside the AAC made from it.
    #[test]
    fn original_opus_only_on_demand() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(false, true);
        let mut ops = Vec::new();
        let opus: Arc<[u8]> = vec![0xfc, 0xff, 0xfe].into();
        let codecs = |ops: &mut Vec<HubOp>| -> Vec<media::Codec> {
            ops.drain(..)
                .filter_map(|o| match o {
                    HubOp::Frame(f) => Some(f.codec),
                    _ => None,
                })
                .collect()
        };
        for i in 0..10u64 {
            p.push(
                frame(Track::Audio, i * 960, t0 + Duration::from_millis(i * 20), opus.clone()),
                &mut ops,
            );
        }
        assert!(!codecs(&mut ops).contains(&media::Codec::Opus), "nobody asked for Opus");
        p.set_forward(CodecSet::of(&[media::Codec::H264, media::Codec::Opus]));
        p.push(frame(Track::Audio, 9600, t0 + Duration::from_millis(200), opus.clone()), &mut ops);
        let opus_frames: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                HubOp::Frame(f) if f.codec == media::Codec::Opus => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(opus_frames.len(), 1);
        assert_eq!(&opus_frames[0].data[..], &opus[..], "the packet as it came");
        assert_eq!(opus_frames[0].timebase, AUDIO_TB);
        ops.clear();
        p.set_forward(CodecSet::FLV);
        p.push(frame(Track::Audio, 10560, t0 + Duration::from_millis(220), opus), &mut ops);
        assert!(!codecs(&mut ops).contains(&media::Codec::Opus));
    }

    #[test]
    fn hold_is_bounded_when_video_never_decodes() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(true, false);
        let mut ops = Vec::new();
        for i in 0..200u64 {
            p.push(frame(Track::Video, i * 3000, t0, vec![0, 0, 0, 1, 0x41, 1].into()), &mut ops);
        }
        assert!(ops.is_empty());
        assert!(p.held.is_empty(), "P-frames before an IDR are dropped, not held");
    }
}

#[cfg(test)]
mod on_demand {
    use super::*;
    use std::time::{Duration, Instant};

    /// H.264 frames and stops among the operations (drained).
    fn h264_and_stops(ops: &mut Vec<HubOp>) -> (usize, usize) {
        let mut n = (0, 0);
        for op in ops.drain(..) {
            match op {
                HubOp::Frame(f) if f.codec == media::Codec::H264 => n.0 += 1,
                HubOp::Stopped(media::Codec::H264) => n.1 += 1,
                _ => {}
            }
        }
        n
    }

    #[test]
    fn vp8_is_transcoded_only_while_h264_is_taken() {
        // 20 fps, a keyframe every 2 s.
        let vp8 = super::super::transcode::tests::vp8_frames(160, 120, 400, 40);
        let t0 = Instant::now();
        let mut p = Pipeline::new(true, false);
        let mut ops = Vec::new();
        let push = |p: &mut Pipeline, i: usize, ops: &mut Vec<HubOp>| {
            let f = RtpFrame {
                track: Track::Video,
                codec: Codec::Vp8,
                rtp_time: i as u64 * 4500,
                arrival: t0 + Duration::from_millis(i as u64 * 50),
                contiguous: true,
                data: vp8[i].0.clone().into(),
                sender_report: None,
                layer: None,
            };
            p.push(f, ops)
        };
        // Nobody takes H.264, but the stream announces its configuration first (released at the
        // first frame, a keyframe); then the transcoder runs RENDITION_IDLE (5 s = 100 frames)
        // more and stops.
        for i in 0..40 {
            push(&mut p, i, &mut ops);
        }
        let (made, stops) = h264_and_stops(&mut ops);
        assert!(made >= 39 && stops == 0, "{made} {stops}");
        assert!(p.transcodes_video());
        for i in 40..200 {
            push(&mut p, i, &mut ops);
        }
        let (made, stops) = h264_and_stops(&mut ops);
        assert_eq!(stops, 1);
        assert!(
            (58..=63).contains(&made),
            "{made} H.264 frames in frames 40-199: it must stop at frame 101"
        );
        assert!(!p.transcodes_video());
        // An FLV viewer comes: a keyframe is asked for at once, H.264 resumes at it (frame 200
        // is one) and not before.
        p.set_forward(CodecSet::FLV);
        let mut first = None;
        for i in 201..260 {
            let want = push(&mut p, i, &mut ops);
            if i == 201 {
                assert!(want, "a keyframe is requested when the rendition starts again");
            }
            if first.is_none() && h264_and_stops(&mut ops).0 > 0 {
                first = Some(i);
            }
        }
        let next_key = (201..260).find(|&i| vp8[i].1).unwrap();
        assert_eq!(first, Some(next_key), "H.264 starts again at the next VP8 keyframe");
        assert_eq!(p.rendition_restarts(), (1, 0));
    }
}

#[cfg(test)]
mod on_demand_audio {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn aac_is_made_only_while_taken() {
        let t0 = Instant::now();
        let mut p = Pipeline::new(false, true);
        let mut ops = Vec::new();
        let opus: std::sync::Arc<[u8]> = vec![0xfc, 0xff, 0xfe].into();
        let mut stops = 0;
        for i in 0..400u64 {
            let f = RtpFrame {
                track: Track::Audio,
                codec: Codec::Opus,
                rtp_time: i * 960,
                arrival: t0 + Duration::from_millis(i * 20),
                contiguous: true,
                data: opus.clone(),
                sender_report: None,
                layer: None,
            };
            p.push(f, &mut ops);
            stops += ops.drain(..).filter(|o| matches!(o, HubOp::Stopped(media::Codec::Aac))).count();
            if i == 300 {
                assert_eq!(stops, 1, "stopped 5 s after the release");
                assert!(p.audio().is_none());
                p.set_forward(CodecSet::FLV);
            }
        }
        assert!(p.audio().is_some(), "made again once taken");
        assert_eq!(p.rendition_restarts(), (0, 1));
    }
}
