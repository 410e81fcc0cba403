//! Classic HLS (sans-IO): hub events in, MPEG-TS segments and a live media playlist out.
//!
//! * A segment starts on a video keyframe once the current one has lasted at least the target
//!   duration (audio-only streams cut on any frame). Segments are shared `Bytes`; only the
//!   last [`HlsConfig::window`] are kept, so memory per stream is bounded by the window.
//! * A real change of codec configuration (new SPS/PPS bytes, another AudioSpecificConfig)
//!   starts a new segment flagged `EXT-X-DISCONTINUITY`; a configuration repeated unchanged does
//!   nothing. [`Segmenter::restart`] (the publisher came back) does the same, and media sequence
//!   numbers keep counting across it.
//! * [`Segmenter::end`] closes the last segment and adds `EXT-X-ENDLIST`.
//!
//! The gateway runs one per stream on demand (gateway/src/hls.rs). Not yet (issue 5): LL-HLS,
//! `EXT-X-PROGRAM-DATE-TIME`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use media::frame::{AudioConfig, MediaFrame, Timebase, TrackKind, VideoConfig};
use media::hub::HubEvent;

use crate::ts::TsMuxer;

/// Segmenting settings.
#[derive(Debug, Clone)]
pub struct HlsConfig {
    /// Shortest segment, in milliseconds (a segment ends at the first keyframe after it).
    pub target_duration_ms: i64,
    /// Segments kept and listed.
    pub window: usize,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            target_duration_ms: 1000,
            window: 6,
        }
    }
}

/// One finished segment.
#[derive(Debug)]
pub struct Segment {
    /// Media sequence number.
    pub sequence: u64,
    /// Duration in milliseconds (first frame to the next segment's first frame).
    pub duration_ms: i64,
    /// Starts after a discontinuity (new codec configuration, publisher restart).
    pub discontinuity: bool,
    /// The MPEG-TS bytes.
    pub data: Bytes,
}

/// The segmenter for one stream.
pub struct Segmenter {
    config: HlsConfig,
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    muxer: Option<TsMuxer>,
    current: BytesMut,
    current_start_ms: Option<i64>,
    last_frame_ms: i64,
    next_sequence: u64,
    discontinuity_pending: bool,
    current_discontinuity: bool,
    discontinuity_sequence: u64,
    segments: VecDeque<Arc<Segment>>,
    ended: bool,
    errors: u64,
}

impl Segmenter {
    /// An empty segmenter.
    pub fn new(config: HlsConfig) -> Self {
        Self {
            config,
            video: None,
            audio: None,
            muxer: None,
            current: BytesMut::new(),
            current_start_ms: None,
            last_frame_ms: 0,
            next_sequence: 0,
            discontinuity_pending: false,
            current_discontinuity: false,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            ended: false,
            errors: 0,
        }
    }

    /// Frames that could not be muxed (malformed), dropped.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Takes one hub event. Returns true when a segment was finished (the playlist changed).
    pub fn push(&mut self, ev: &HubEvent) -> bool {
        match ev {
            HubEvent::VideoConfig(c) => {
                if self.video.as_ref().is_none_or(|v| v.avcc != c.avcc) {
                    self.discontinuity_pending |= self.video.replace(c.clone()).is_some();
                    self.muxer = None;
                }
                false
            }
            HubEvent::AudioConfig(c) => {
                if self.audio.as_ref().is_none_or(|a| a.asc != c.asc) {
                    self.discontinuity_pending |= self.audio.replace(c.clone()).is_some();
                    self.muxer = None;
                }
                false
            }
            HubEvent::Frame(f) => self.frame(f),
        }
    }

    /// The publisher went away and came back: the next segment starts a discontinuity.
    pub fn restart(&mut self) -> bool {
        let finished = self.finish(self.last_frame_ms);
        self.discontinuity_pending = true;
        self.ended = false;
        self.muxer = None;
        finished
    }

    /// The stream ended: the last segment is closed and the playlist gets `EXT-X-ENDLIST`.
    pub fn end(&mut self) -> bool {
        let finished = self.finish(self.last_frame_ms);
        self.ended = true;
        finished
    }

    fn frame(&mut self, f: &MediaFrame) -> bool {
        let at = f.timebase.rescale(f.dts, Timebase::MILLIS);
        let has_video = self.video.is_some();
        // Nothing before the first keyframe (a segment must start decodable).
        let boundary = match f.track {
            TrackKind::Video => f.keyframe,
            TrackKind::Audio => !has_video,
        };
        let mut finished = false;
        let needs_new = match self.current_start_ms {
            None => boundary,
            Some(start) => boundary && (at - start >= self.config.target_duration_ms || self.discontinuity_pending || self.muxer.is_none()),
        };
        if needs_new {
            finished = self.finish(at);
            if self.muxer.is_none() {
                match TsMuxer::new(self.video.as_deref(), self.audio.as_deref()) {
                    Ok(m) => self.muxer = Some(m),
                    Err(_) => {
                        self.errors += 1;
                        return finished;
                    }
                }
            }
            if let Some(m) = &mut self.muxer {
                m.write_tables(&mut self.current);
            }
            self.current_start_ms = Some(at);
            self.current_discontinuity = std::mem::take(&mut self.discontinuity_pending) && self.next_sequence > 0;
        }
        if self.current_start_ms.is_none() {
            return finished;
        }
        let Some(m) = &mut self.muxer else { return finished };
        match m.write_frame(f, &mut self.current) {
            Ok(()) => self.last_frame_ms = at,
            Err(_) => self.errors += 1,
        }
        finished
    }

    /// Closes the current segment at `end_ms`.
    fn finish(&mut self, end_ms: i64) -> bool {
        let Some(start) = self.current_start_ms.take() else {
            return false;
        };
        if self.current.is_empty() {
            return false;
        }
        let discontinuity = std::mem::take(&mut self.current_discontinuity);
        let seg = Segment {
            sequence: self.next_sequence,
            duration_ms: (end_ms - start).max(1),
            discontinuity,
            data: self.current.split().freeze(),
        };
        self.next_sequence += 1;
        self.segments.push_back(Arc::new(seg));
        while self.segments.len() > self.config.window {
            if let Some(old) = self.segments.pop_front() {
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
            }
        }
        true
    }

    /// Segments in the window.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// True once [`Segmenter::end`] was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// True before the first segment is finished.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// A segment still in the window.
    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        self.segments.iter().find(|s| s.sequence == sequence).cloned()
    }

    /// The live media playlist; segment URIs are `{prefix}{sequence}.ts`.
    pub fn playlist(&self, prefix: &str) -> String {
        let longest = self
            .segments
            .iter()
            .map(|s| s.duration_ms)
            .max()
            .unwrap_or(self.config.target_duration_ms);
        // RFC 8216 §4.3.3.1: each EXTINF rounded to the nearest integer is <= the target.
        let target = (longest + 500) / 1000;
        let mut p = String::with_capacity(256 + 64 * self.segments.len());
        p.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(p, "#EXT-X-TARGETDURATION:{}", target.max(1));
        let first = self.segments.front().map_or(self.next_sequence, |s| s.sequence);
        let _ = writeln!(p, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(p, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        for s in &self.segments {
            if s.discontinuity {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(p, "#EXTINF:{}.{:03},", s.duration_ms / 1000, s.duration_ms % 1000);
            let _ = writeln!(p, "{prefix}{}.ts", s.sequence);
        }
        if self.ended {
            p.push_str("#EXT-X-ENDLIST\n");
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use media::avc::AvcDecoderConfig;

    fn video_config(pps: &[u8]) -> Arc<VideoConfig> {
        let sps = include_bytes!("../../media/testdata/x264_1280x720.sps");
        let rec = AvcDecoderConfig::from_parameter_sets(sps, &[pps]).unwrap();
        Arc::new(VideoConfig::from_avcc(rec.to_bytes()).unwrap())
    }

    fn audio_config() -> Arc<AudioConfig> {
        Arc::new(AudioConfig::from_asc(Bytes::from_static(&[0x11, 0x90])).unwrap())
    }

    fn video(ms: i64, key: bool) -> HubEvent {
        let mut b = BytesMut::new();
        b.put_u32(4);
        b.put_slice(&[if key { 0x65 } else { 0x41 }, 1, 2, 3]);
        HubEvent::Frame(Arc::new(MediaFrame::video(ms, ms, Timebase::MILLIS, key, b.freeze())))
    }

    fn audio(ms: i64) -> HubEvent {
        HubEvent::Frame(Arc::new(MediaFrame::audio(ms, Timebase::MILLIS, Bytes::from_static(&[0x21, 0x00]))))
    }

    /// 25 fps video with a keyframe every `gop` frames and audio, from `from` ms for `n` frames.
    fn feed(s: &mut Segmenter, from: i64, n: i64, gop: i64) {
        for i in 0..n {
            let t = from + i * 40;
            s.push(&video(t, i % gop == 0));
            s.push(&audio(t + 5));
        }
    }

    #[test]
    fn segments_start_on_keyframes_after_the_target_duration() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(&[0x68, 0xeb, 0xe3, 0xcb])));
        s.push(&HubEvent::AudioConfig(audio_config()));
        // Frames before the first keyframe are not segmented.
        s.push(&video(0, false));
        // Keyframes every 0.6 s: segments are cut at 1.2 s, the first keyframe after 1 s.
        feed(&mut s, 40, 100, 15);
        let p = s.playlist("seg");
        assert!(
            p.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"),
            "{p}"
        );
        assert!(p.contains("#EXTINF:1.200,\nseg0.ts\n"), "{p}");
        assert_eq!(s.segments.len(), 3);
        assert!(!p.contains("ENDLIST"));
        // Every segment starts with PAT, PMT, then a keyframe PES.
        for seg in &s.segments {
            assert_eq!(&seg.data[..3], &[0x47, 0x40, 0x00], "PAT first");
            assert_eq!(seg.data[3] & 0xf0, 0x10);
            assert_eq!(seg.data.len() % 188, 0);
            assert_eq!(seg.data[2 * 188 + 5] & 0x40, 0x40, "random access indicator");
        }
        // The window bounds memory; sequence numbers keep counting.
        feed(&mut s, 4040, 400, 15);
        assert_eq!(s.segments.len(), 6);
        let first = s.segments.front().unwrap().sequence;
        assert!(s.playlist("x").contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")));
        assert!(s.segment(0).is_none(), "left the window");
        assert!(s.segment(first).is_some());
        assert!(s.end());
        assert!(s.playlist("x").ends_with("#EXT-X-ENDLIST\n"));
    }

    #[test]
    fn only_a_real_configuration_change_is_a_discontinuity() {
        let mut s = Segmenter::new(HlsConfig::default());
        let cfg = video_config(&[0x68, 0xeb, 0xe3, 0xcb]);
        s.push(&HubEvent::VideoConfig(cfg.clone()));
        feed(&mut s, 0, 60, 15);
        // The same configuration again (browsers repeat SPS/PPS): nothing.
        s.push(&HubEvent::VideoConfig(cfg));
        feed(&mut s, 2400, 60, 15);
        assert!(!s.playlist("s").contains("DISCONTINUITY"));
        // A new PPS: exactly one discontinuity.
        s.push(&HubEvent::VideoConfig(video_config(&[0x68, 0xee, 0x3c, 0x80])));
        feed(&mut s, 4800, 60, 15);
        assert_eq!(s.playlist("s").matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        // A publisher restart: another one, and the sequence goes on.
        let before = s.next_sequence;
        s.restart();
        feed(&mut s, 0, 60, 15);
        assert!(s.next_sequence > before);
        assert_eq!(s.playlist("s").matches("#EXT-X-DISCONTINUITY\n").count(), 2);
    }

    #[test]
    fn audio_only_streams_are_cut_on_any_frame() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::AudioConfig(audio_config()));
        for i in 0..200 {
            s.push(&audio(i * 21));
        }
        assert!(s.segments.len() >= 3);
        assert!(s.segments.iter().all(|seg| (1000..1100).contains(&seg.duration_ms)));
    }
}
