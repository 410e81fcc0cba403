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
        }
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
        let mut want_keyframe = false;
        self.forward_original(pts, &f, ops);
        match f.track {
            Track::Video if f.codec == Codec::H264 => {
                want_keyframe = self.h264(pts, &f.data, f.contiguous, ops);
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
        let t = match &mut self.transcoder {
            Some(t) => t,
            None => self.transcoder.insert(VpxToH264::new(source)?),
        };
        t.push(&f.data, f.contiguous, f.rtp_time, &mut self.h264_out)
    }

    fn transcode(&mut self, pts: i64, packet: &[u8], out: &mut Vec<HubOp>) -> Result<(), AudioError> {
        if self.audio_error.is_some() {
            return Ok(());
        }
        let a = match &mut self.audio {
            Some(a) => a,
            None => {
                let a = OpusToAac::with_encoder(opus_is_stereo(packet), self.aac_encoder)?;
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
