//! The GOP cache: what a viewer who joins now receives first, so that its first frame decodes.
//!
//! * With video: the frames since the latest keyframe, and the audio stamped from that
//!   keyframe's time on. Arrival order is not time order: audio stamped before the keyframe may
//!   arrive after it (a publisher paces a large keyframe out over tens of milliseconds), and
//!   audio stamped after it may arrive before it. The first is left out, the second carried in.
//!   A GOP larger than the limits is not kept (viewers then wait for the next keyframe).
//! * Audio only: the latest `audio_only_frames` frames.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::frame::{Codec, CodecSet, MediaFrame, TrackKind};

/// Bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GopLimits {
    /// Payload bytes of the largest GOP kept.
    pub max_bytes: usize,
    /// Frames of the largest GOP kept.
    pub max_frames: usize,
    /// Frames kept of an audio-only stream.
    pub audio_only_frames: usize,
}

/// The frames a new viewer starts with.
#[derive(Debug, Default)]
pub struct GopCache {
    frames: VecDeque<Arc<MediaFrame>>,
    bytes: usize,
}

impl GopCache {
    /// Takes a frame the publisher sent; `has_video` says whether the stream carries video.
    pub fn push(&mut self, frame: &Arc<MediaFrame>, has_video: bool, limits: GopLimits) {
        let len = frame.data.len();
        if !has_video {
            self.frames.push_back(frame.clone());
            self.bytes += len;
            while self.frames.len() > limits.audio_only_frames {
                if let Some(old) = self.frames.pop_front() {
                    self.bytes -= old.data.len();
                }
            }
            return;
        }
        if frame.track == TrackKind::Video && frame.keyframe {
            let key_ms = frame.pts_ms();
            let carried: Vec<Arc<MediaFrame>> = self
                .frames
                .iter()
                .filter(|f| f.track == TrackKind::Audio && f.pts_ms() >= key_ms)
                .cloned()
                .collect();
            self.frames.clear();
            self.bytes = len;
            self.frames.push_back(frame.clone());
            for f in carried {
                self.bytes += f.data.len();
                self.frames.push_back(f);
            }
        } else if let Some(key_ms) = self.frames.front().map(|k| k.pts_ms()) {
            if frame.track == TrackKind::Video || frame.pts_ms() >= key_ms {
                self.bytes += len;
                self.frames.push_back(frame.clone());
            }
        }
        if self.bytes > limits.max_bytes || self.frames.len() > limits.max_frames {
            self.clear();
        }
    }

    /// The cached frames, oldest first.
    pub fn frames(&self) -> impl Iterator<Item = &Arc<MediaFrame>> {
        self.frames.iter()
    }

    /// True when a new viewer would have to wait for the next keyframe.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Forgets the frames of one codec (a rendition that stopped).
    pub fn remove_codec(&mut self, codec: Codec) {
        self.frames.retain(|f| f.codec != codec);
        self.bytes = self.frames.iter().map(|f| f.data.len()).sum();
    }

    /// Forgets everything (the publisher left, or the GOP outgrew the limits).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.bytes = 0;
    }
}

/// One GOP cache per video codec a stream carries (its H.264 rendition and a WebRTC
/// publisher's own VP8, whose keyframes fall at other times), each with the audio from its
/// keyframe on; an audio-only stream has one cache of recent audio. A subscriber starts from the
/// cache of the video codec it takes.
#[derive(Debug, Default)]
pub struct Gops {
    video: Vec<(Codec, GopCache)>,
    audio_only: GopCache,
}

impl Gops {
    /// Takes a frame the publisher sent (see [`GopCache::push`]).
    pub fn push(&mut self, frame: &Arc<MediaFrame>, has_video: bool, limits: GopLimits) {
        if !has_video {
            self.audio_only.push(frame, false, limits);
            return;
        }
        match frame.track {
            TrackKind::Video => {
                let i = match self.video.iter().position(|(c, _)| *c == frame.codec) {
                    Some(i) => i,
                    None => {
                        self.video.push((frame.codec, GopCache::default()));
                        self.video.len() - 1
                    }
                };
                self.video[i].1.push(frame, true, limits);
            }
            TrackKind::Audio => {
                for (_, c) in &mut self.video {
                    c.push(frame, true, limits);
                }
            }
        }
    }

    /// What a subscriber taking `codecs` starts with: the cache of the first video codec it
    /// takes that has one (the audio-only cache without video), filtered to its codecs.
    pub fn frames_for(&self, codecs: CodecSet) -> impl Iterator<Item = &Arc<MediaFrame>> {
        let cache = self
            .video
            .iter()
            .find(|(c, g)| codecs.contains(*c) && !g.is_empty())
            .map(|(_, g)| g)
            .unwrap_or(&self.audio_only);
        cache.frames().filter(move |f| codecs.contains(f.codec))
    }

    /// Payload bytes held (shared frames counted in each cache that holds them).
    pub fn bytes(&self) -> usize {
        self.audio_only.bytes() + self.video.iter().map(|(_, g)| g.bytes()).sum::<usize>()
    }

    /// Forgets what is cached of `codec`: a rendition stopped, and a viewer who comes later must
    /// wait for its next keyframe rather than start from a stale GOP.
    pub fn remove_codec(&mut self, codec: Codec) {
        match codec.track() {
            TrackKind::Video => self.video.retain(|(c, _)| *c != codec),
            TrackKind::Audio => {
                for (_, g) in &mut self.video {
                    g.remove_codec(codec);
                }
                self.audio_only.remove_codec(codec);
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.video.clear();
        self.audio_only.clear();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::frame::Timebase;

    const LIMITS: GopLimits = GopLimits {
        max_bytes: 1000,
        max_frames: 10,
        audio_only_frames: 3,
    };

    fn v(ts: i64, key: bool, size: usize) -> Arc<MediaFrame> {
        Arc::new(MediaFrame::video(ts, ts, Timebase::MILLIS, key, Bytes::from(vec![0u8; size])))
    }

    fn a(ts: i64) -> Arc<MediaFrame> {
        Arc::new(MediaFrame::audio(ts, Timebase::MILLIS, Bytes::from_static(b"aac")))
    }

    fn times(c: &GopCache) -> Vec<(TrackKind, i64)> {
        c.frames().map(|f| (f.track, f.dts)).collect()
    }

    #[test]
    fn starts_at_the_latest_keyframe_with_audio_from_its_time() {
        let mut c = GopCache::default();
        c.push(&v(0, false, 10), true, LIMITS);
        assert!(c.is_empty(), "nothing before the first keyframe");
        for f in [v(100, true, 50), a(90), a(120), v(133, false, 10)] {
            c.push(&f, true, LIMITS);
        }
        // Audio stamped before the keyframe that arrived after it is left out.
        assert_eq!(
            times(&c),
            [(TrackKind::Video, 100), (TrackKind::Audio, 120), (TrackKind::Video, 133)]
        );
        // Audio stamped after the next keyframe that arrived before it is carried over.
        c.push(&a(210), true, LIMITS);
        c.push(&v(200, true, 50), true, LIMITS);
        assert_eq!(times(&c), [(TrackKind::Video, 200), (TrackKind::Audio, 210)]);
        assert_eq!(c.bytes(), 53);
    }

    #[test]
    fn an_oversized_gop_is_dropped_until_the_next_keyframe() {
        let mut c = GopCache::default();
        c.push(&v(0, true, 600), true, LIMITS);
        c.push(&v(33, false, 600), true, LIMITS);
        assert!(c.is_empty() && c.bytes() == 0);
        c.push(&v(66, false, 10), true, LIMITS);
        assert!(c.is_empty(), "no keyframe to start from");
        c.push(&v(100, true, 10), true, LIMITS);
        assert_eq!(c.frames().count(), 1);
        for i in 0..10 {
            c.push(&v(133 + i, false, 1), true, LIMITS);
        }
        assert!(c.is_empty(), "more than max_frames");
    }

    #[test]
    fn each_video_codec_starts_from_its_own_keyframe() {
        let mut g = Gops::default();
        let vp8 = |ts: i64, key: bool| {
            Arc::new(MediaFrame::coded(
                Codec::Vp8,
                ts,
                ts,
                Timebase::MILLIS,
                key,
                Bytes::from_static(b"vp8"),
            ))
        };
        // The H.264 rendition's keyframe comes 10 ms after the VP8 keyframe it was made from;
        // the VP8 keyframe after it must not take the H.264 start away.
        for f in [v(0, true, 10), a(5), vp8(10, true), v(20, false, 10), vp8(30, false), a(35)] {
            g.push(&f, true, LIMITS);
        }
        let h264: Vec<_> = g.frames_for(CodecSet::FLV).map(|f| (f.codec, f.dts)).collect();
        assert_eq!(h264, [(Codec::H264, 0), (Codec::Aac, 5), (Codec::H264, 20), (Codec::Aac, 35)]);
        let webrtc: Vec<_> = g
            .frames_for(CodecSet::of(&[Codec::Vp8, Codec::Aac]))
            .map(|f| (f.codec, f.dts))
            .collect();
        assert_eq!(webrtc, [(Codec::Vp8, 10), (Codec::Vp8, 30), (Codec::Aac, 35)]);
        // A subscriber of a codec nobody sent yet starts with nothing.
        assert_eq!(g.frames_for(CodecSet::of(&[Codec::Vp9])).count(), 0);
        // A stopped rendition leaves nothing stale behind.
        g.remove_codec(Codec::H264);
        assert_eq!(g.frames_for(CodecSet::FLV).count(), 0);
        g.remove_codec(Codec::Aac);
        assert_eq!(g.frames_for(CodecSet::of(&[Codec::Vp8, Codec::Aac])).count(), 2);
        g.clear();
        assert_eq!(g.bytes(), 0);
    }

    #[test]
    fn audio_only_keeps_the_latest_frames() {
        let mut c = GopCache::default();
        for ts in 0..5 {
            c.push(&a(ts * 23), false, LIMITS);
        }
        assert_eq!(times(&c), [(TrackKind::Audio, 46), (TrackKind::Audio, 69), (TrackKind::Audio, 92)]);
        assert_eq!(c.bytes(), 9);
    }
}
