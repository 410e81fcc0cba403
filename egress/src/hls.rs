//! Classic HLS (sans-IO): hub events in, MPEG-TS segments and a live media playlist out.
//!
//! * A segment starts on a video keyframe: the one that brings the current segment closest to
//!   the target duration, judged by the recent keyframe interval (see [`KeyframeCadence`];
//!   audio-only streams cut on any frame once the target is reached). It is cut anyway after ten
//!   target durations without one. Segments are shared `Bytes`; only the
//!   last [`HlsConfig::window`] are kept, so memory per stream is bounded by the window.
//! * A real change of codec configuration (new SPS/PPS bytes, another AudioSpecificConfig)
//!   starts a new segment flagged `EXT-X-DISCONTINUITY`; a configuration repeated unchanged does
//!   nothing. [`Segmenter::restart`] (the publisher came back) does the same, and media sequence
//!   numbers keep counting across it.
//! * [`Segmenter::end`] closes the last segment and adds `EXT-X-ENDLIST`.
//!
//! * Every segment carries `EXT-X-PROGRAM-DATE-TIME`: the wall clock of its first frame's arrival
//!   (see [`WallAnchor`]).
//!
//! The gateway runs one per stream on demand (gateway/src/hls.rs), through the [`Segmenting`]
//! trait it shares with the LL-HLS segmenter ([`crate::llhls`]).

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
    /// Target segment duration, milliseconds: a segment ends at the keyframe closest to it,
    /// never before half of it (see [`KeyframeCadence`]).
    pub target_duration_ms: i64,
    /// Segments kept and listed.
    pub window: usize,
    /// Media sequence number of the first segment (the gateway starts from the Unix time (in tenths of a second) so a
    /// restarted segmenter never reuses a URI a cache may still hold).
    pub first_sequence: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            target_duration_ms: 1000,
            window: 6,
            first_sequence: 0,
        }
    }
}

/// Audio further ahead of the last video frame than this is dropped: a publisher that quits
/// may flush many seconds of queued audio at once (FFmpeg does), which would otherwise stretch
/// the last segment far past its video.
pub(crate) const MAX_AUDIO_AHEAD_MS: i64 = 3000;

/// A segment is cut after this many target durations (of media time, or of wall time: a
/// publisher's timestamps may stop advancing) even without a keyframe (a publisher with a very
/// long or no keyframe interval), so memory stays bounded by the window; players that
/// were already playing decode on, new ones wait for the next keyframe.
pub(crate) const MAX_SEGMENT_TARGETS: i64 = 10;

/// Decides at which keyframe a segment ends.
///
/// Cutting at the first keyframe after the target makes a segment up to one keyframe interval
/// too long when a keyframe comes early: x264's scene-cut keyframes (FFmpeg's and OBS's default)
/// or a WebRTC encoder answering a loss. A 1 s target with a 1 s GOP then gives 1.9 s segments,
/// TARGETDURATION 2, and players that started two segments behind the edge stall. So a segment
/// also ends at a keyframe that comes before the target when waiting for the next one (one
/// recent keyframe interval away) would overshoot the target by more than cutting now falls
/// short of it, and never before half the target (at most two segments per target duration).
#[derive(Debug, Default)]
pub(crate) struct KeyframeCadence {
    last_ms: Option<i64>,
    /// The last few keyframe intervals, milliseconds (0: none yet).
    recent: [i64; 4],
    next: usize,
}

impl KeyframeCadence {
    /// A keyframe at `at_ms` (any clock; intervals that are not positive are ignored).
    pub(crate) fn keyframe(&mut self, at_ms: i64) {
        if let Some(last) = self.last_ms.replace(at_ms) {
            if at_ms > last {
                self.recent[self.next % self.recent.len()] = at_ms - last;
                self.next += 1;
            }
        }
    }

    /// Whether a segment that has lasted `elapsed_ms` ends at the keyframe just recorded.
    pub(crate) fn ends_segment(&self, elapsed_ms: i64, target_ms: i64) -> bool {
        // The longest recent interval: scene cuts and keyframe requests only shorten some.
        let gop = self.recent.iter().copied().max().unwrap_or(0);
        // elapsed >= target - gop / 2 (closer to the target now than at the next keyframe),
        // and elapsed >= target / 2. With no interval known (gop 0) that is the target itself.
        2 * elapsed_ms >= target_ms.max(2 * target_ms - gop)
    }
}

/// What the gateway drives: a segmenter fed with hub events, told when the publisher leaves and
/// comes back.
pub trait Segmenting: Send + 'static {
    /// Takes one hub event that arrived at `now_ms` (Unix milliseconds). Returns true when the
    /// playlist changed.
    fn push(&mut self, ev: &HubEvent, now_ms: i64) -> bool;
    /// The publisher left: what is being built is closed and listed.
    fn flush(&mut self) -> bool;
    /// The publisher came back: the next segment starts a discontinuity, the sequence goes on,
    /// and an `EXT-X-ENDLIST` goes away.
    fn restart(&mut self) -> bool;
    /// The stream ended: the playlist gets `EXT-X-ENDLIST`.
    fn end(&mut self) -> bool;
    /// Complete segments in the window.
    fn len(&self) -> usize;
    /// No complete segment yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// True once [`Segmenting::end`] was called (and no restart since).
    fn is_ended(&self) -> bool;
    /// The live media playlist; URIs start with `prefix`.
    fn playlist(&self, prefix: &str) -> String;
    /// The configured target duration, milliseconds.
    fn target_duration_ms(&self) -> i64;
    /// How much media the segment being built holds, milliseconds (0 when none is).
    fn building_ms(&self) -> i64;
}

/// The codec configurations a segmenter muxes with. Browsers repeat SPS/PPS before every
/// keyframe: only a configuration that really differs counts as a change.
#[derive(Debug, Default)]
pub(crate) struct Configs {
    pub video: Option<Arc<VideoConfig>>,
    pub audio: Option<Arc<AudioConfig>>,
}

impl Configs {
    /// Takes a configuration event. `Some(replaced)` when it changed what we mux with
    /// (`replaced`: there was one before, so a discontinuity); None for frames and repeats.
    pub fn update(&mut self, ev: &HubEvent) -> Option<bool> {
        match ev {
            HubEvent::VideoConfig(c) if self.video.as_ref().is_none_or(|v| v.avcc != c.avcc) => {
                Some(self.video.replace(c.clone()).is_some())
            }
            HubEvent::AudioConfig(c) if self.audio.as_ref().is_none_or(|a| a.asc != c.asc) => Some(self.audio.replace(c.clone()).is_some()),
            _ => None,
        }
    }
}

/// Drops the segments beyond `window` from the front of `segments`; returns how many of them
/// started a discontinuity (what `EXT-X-DISCONTINUITY-SEQUENCE` counts).
pub(crate) fn trim_window<T>(segments: &mut VecDeque<Arc<T>>, window: usize, discontinuity: impl Fn(&T) -> bool) -> u64 {
    let mut dropped = 0;
    while segments.len() > window {
        if segments.pop_front().is_some_and(|old| discontinuity(&old)) {
            dropped += 1;
        }
    }
    dropped
}

/// Maps the media timeline (90 kHz) to the wall clock for `EXT-X-PROGRAM-DATE-TIME`: anchored at
/// the first segment's arrival time, re-anchored when the projection is more than a second off
/// the arrival time (a publisher restart, a drifting publisher clock).
#[derive(Debug, Default, Clone, Copy)]
pub struct WallAnchor {
    anchor: Option<(i64, i64)>,
}

impl WallAnchor {
    /// Wall clock (Unix ms) of media time `at90`, which arrived at `now_ms`.
    pub fn at(&mut self, at90: i64, now_ms: i64) -> i64 {
        if let Some((media90, wall_ms)) = self.anchor {
            let projected = wall_ms + (at90 - media90) / 90;
            if (projected - now_ms).abs() <= 1000 {
                return projected;
            }
        }
        self.anchor = Some((at90, now_ms));
        now_ms
    }
}

/// `EXT-X-PROGRAM-DATE-TIME` value: ISO 8601 UTC with milliseconds.
pub fn format_program_date_time(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_date(secs.div_euclid(86_400));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01 (H. Hinnant's algorithm).
pub fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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
    /// Wall clock of its first frame, Unix milliseconds.
    pub program_date_ms: i64,
    /// The MPEG-TS bytes.
    pub data: Bytes,
}

/// The segmenter for one stream.
pub struct Segmenter {
    config: HlsConfig,
    configs: Configs,
    muxer: Option<TsMuxer>,
    current: BytesMut,
    current_start_ms: Option<i64>,
    current_program_date_ms: i64,
    /// Arrival (Unix ms) of the current segment's first frame (see [`MAX_SEGMENT_TARGETS`]).
    current_start_wall_ms: i64,
    wall: WallAnchor,
    cadence: KeyframeCadence,
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
            next_sequence: config.first_sequence,
            config,
            configs: Configs::default(),
            muxer: None,
            current: BytesMut::new(),
            current_start_ms: None,
            current_program_date_ms: 0,
            current_start_wall_ms: 0,
            wall: WallAnchor::default(),
            cadence: KeyframeCadence::default(),
            last_frame_ms: 0,
            discontinuity_pending: false,
            current_discontinuity: false,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            ended: false,
            errors: 0,
        }
    }

    /// Frames that could not be muxed (malformed) or ran too far ahead of the video, dropped.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    fn frame(&mut self, f: &MediaFrame, now_ms: i64) -> bool {
        let at = f.timebase.rescale(f.dts, Timebase::MILLIS);
        let has_video = self.configs.video.is_some();
        // Nothing before the first keyframe (a segment must start decodable).
        let boundary = match f.track {
            TrackKind::Video => f.keyframe,
            TrackKind::Audio => !has_video,
        };
        let driver = f.track == TrackKind::Video || !has_video;
        if !driver && self.current_start_ms.is_some() && at > self.last_frame_ms + MAX_AUDIO_AHEAD_MS {
            self.errors += 1;
            return false;
        }
        if boundary && has_video {
            self.cadence.keyframe(at);
        }
        let mut finished = false;
        let target = self.config.target_duration_ms;
        let needs_new = match self.current_start_ms {
            None => boundary,
            Some(start) => {
                (boundary && (self.cadence.ends_segment(at - start, target) || self.discontinuity_pending || self.muxer.is_none()))
                    || (driver && at - start >= target * MAX_SEGMENT_TARGETS)
                    || (driver && now_ms - self.current_start_wall_ms >= target * MAX_SEGMENT_TARGETS)
            }
        };
        if needs_new {
            finished = self.finish(at);
            if self.muxer.is_none() {
                match TsMuxer::new(self.configs.video.as_deref(), self.configs.audio.as_deref()) {
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
            self.current_start_wall_ms = now_ms;
            self.current_program_date_ms = self.wall.at(at * 90, now_ms);
            self.current_discontinuity = std::mem::take(&mut self.discontinuity_pending) && !self.segments.is_empty();
        }
        if self.current_start_ms.is_none() {
            return finished;
        }
        let Some(m) = &mut self.muxer else { return finished };
        match m.write_frame(f, &mut self.current) {
            // Segment times follow the video (audio may run ahead in a burst).
            Ok(()) if driver => self.last_frame_ms = at,
            Ok(()) => {}
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
            program_date_ms: self.current_program_date_ms,
            data: self.current.split().freeze(),
        };
        self.next_sequence += 1;
        self.segments.push_back(Arc::new(seg));
        self.discontinuity_sequence += trim_window(&mut self.segments, self.config.window, |s| s.discontinuity);
        true
    }

    /// A segment still in the window.
    pub fn segment(&self, sequence: u64) -> Option<Arc<Segment>> {
        self.segments.iter().find(|s| s.sequence == sequence).cloned()
    }
}

impl Segmenting for Segmenter {
    fn push(&mut self, ev: &HubEvent, now_ms: i64) -> bool {
        if let HubEvent::Frame(f) = ev {
            // The segments carry H.264 and AAC; other codecs travel past them.
            if !f.codec.is_flv_family() {
                return false;
            }
            return self.frame(f, now_ms);
        }
        if let Some(replaced) = self.configs.update(ev) {
            // A track added after output started needs a discontinuity too: players cannot add
            // a track to what they are playing.
            let started = self.current_start_ms.is_some() || !self.segments.is_empty();
            self.discontinuity_pending |= replaced || started;
            self.muxer = None;
        }
        false
    }

    fn flush(&mut self) -> bool {
        self.finish(self.last_frame_ms)
    }

    fn restart(&mut self) -> bool {
        let finished = self.flush();
        // The new publisher's configurations arrive first on its subscription.
        self.configs = Configs::default();
        self.discontinuity_pending = true;
        self.ended = false;
        self.muxer = None;
        finished
    }

    fn end(&mut self) -> bool {
        let finished = self.flush();
        self.ended = true;
        finished
    }

    fn len(&self) -> usize {
        self.segments.len()
    }

    fn is_ended(&self) -> bool {
        self.ended
    }

    /// Segment URIs are `{prefix}{sequence}.ts`.
    fn playlist(&self, prefix: &str) -> String {
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
            let _ = writeln!(p, "#EXT-X-PROGRAM-DATE-TIME:{}", format_program_date_time(s.program_date_ms));
            let _ = writeln!(p, "#EXTINF:{}.{:03},", s.duration_ms / 1000, s.duration_ms % 1000);
            let _ = writeln!(p, "{prefix}{}.ts", s.sequence);
        }
        if self.ended {
            p.push_str("#EXT-X-ENDLIST\n");
        }
        p
    }

    fn target_duration_ms(&self) -> i64 {
        self.config.target_duration_ms
    }

    fn building_ms(&self) -> i64 {
        self.current_start_ms.map_or(0, |start| self.last_frame_ms - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{audio_config, video_config, PPS};
    use bytes::BufMut;

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
            s.push(&video(t, i % gop == 0), 0);
            s.push(&audio(t + 5), 0);
        }
    }

    #[test]
    fn segments_start_on_keyframes_after_the_target_duration() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        // Frames before the first keyframe are not segmented.
        s.push(&video(0, false), 0);
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

    /// Frames of codecs MPEG-TS does not carry here (a publisher's original Opus, VP8) leave
    /// the segments as they would be without them.
    #[test]
    fn frames_of_other_codecs_leave_the_segments_alone() {
        let run = |with_others: bool| {
            let mut s = Segmenter::new(HlsConfig::default());
            s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
            s.push(&HubEvent::AudioConfig(audio_config()), 0);
            for i in 0..100 {
                let t = i * 40;
                if with_others {
                    let opus = MediaFrame::coded(
                        media::Codec::Opus,
                        t + 2,
                        t + 2,
                        Timebase::MILLIS,
                        true,
                        Bytes::from_static(&[0xfc]),
                    );
                    let vp8 = MediaFrame::coded(media::Codec::Vp8, t, t, Timebase::MILLIS, i % 7 == 3, Bytes::from_static(&[0x10]));
                    assert!(!s.push(&HubEvent::Frame(Arc::new(opus)), 0));
                    assert!(!s.push(&HubEvent::Frame(Arc::new(vp8)), 0));
                }
                s.push(&video(t, i % 25 == 0), 0);
                s.push(&audio(t + 5), 0);
            }
            s.segments.iter().map(|seg| seg.data.clone()).collect::<Vec<_>>()
        };
        let plain = run(false);
        assert_eq!(plain.len(), 3);
        assert_eq!(run(true), plain);
    }

    #[test]
    fn an_early_scene_cut_keyframe_ends_the_segment_instead_of_doubling_it() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        // x264 with a 1 s GOP (25 frames) and scene cuts: a scene-cut keyframe restarts the
        // GOP count. Keyframes at 0, 1, 1.96 (scene cut), 2.96, 3.24 (scene cut: too early to
        // cut), 4.24, 5.24 s.
        let keys = [0, 25, 49, 74, 81, 106, 131];
        for i in 0..150 {
            let t = i * 40;
            s.push(&video(t, keys.contains(&i)), 0);
            s.push(&audio(t + 5), 0);
        }
        let durations: Vec<i64> = s.segments.iter().map(|seg| seg.duration_ms).collect();
        // Cut at the first keyframe after 1 s, the 1.96 s keyframe gave a 1.96 s segment.
        assert_eq!(durations, [1000, 960, 1000, 1280, 1000], "{}", s.playlist(""));
        assert!(s.playlist("").contains("#EXT-X-TARGETDURATION:1\n"));
    }

    #[test]
    fn a_segment_ends_at_the_keyframe_closest_to_the_target() {
        let mut c = KeyframeCadence::default();
        // No interval known yet: the target itself.
        c.keyframe(0);
        assert!(!c.ends_segment(999, 1000));
        assert!(c.ends_segment(1000, 1000));
        // Keyframes every 0.6 s: 0.6 s is 0.4 short, the next one 0.2 over: wait.
        c.keyframe(600);
        assert!(!c.ends_segment(600, 1000));
        assert!(c.ends_segment(700, 1000));
        // A 2 s GOP never cuts before half the target.
        c.keyframe(2600);
        assert!(!c.ends_segment(499, 1000));
        assert!(c.ends_segment(500, 1000));
        // A restart's clock going back is not an interval.
        c.keyframe(100);
        assert!(c.ends_segment(500, 1000));
    }

    #[test]
    fn only_a_real_configuration_change_is_a_discontinuity() {
        let mut s = Segmenter::new(HlsConfig::default());
        let cfg = video_config(PPS);
        s.push(&HubEvent::VideoConfig(cfg.clone()), 0);
        feed(&mut s, 0, 60, 15);
        // The same configuration again (browsers repeat SPS/PPS): nothing.
        s.push(&HubEvent::VideoConfig(cfg), 0);
        feed(&mut s, 2400, 60, 15);
        assert!(!s.playlist("s").contains("DISCONTINUITY"));
        // A new PPS: exactly one discontinuity.
        s.push(&HubEvent::VideoConfig(video_config(&[0x68, 0xee, 0x3c, 0x80])), 0);
        feed(&mut s, 4800, 60, 15);
        assert_eq!(s.playlist("s").matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        // A publisher restart: another one, and the sequence goes on.
        let before = s.next_sequence;
        s.restart();
        s.push(&HubEvent::VideoConfig(video_config(&[0x68, 0xee, 0x3c, 0x80])), 0);
        feed(&mut s, 0, 60, 15);
        assert!(s.next_sequence > before);
        assert_eq!(s.playlist("s").matches("#EXT-X-DISCONTINUITY\n").count(), 2);
    }

    #[test]
    fn audio_only_streams_are_cut_on_any_frame() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        for i in 0..200 {
            s.push(&audio(i * 21), 0);
        }
        assert!(s.segments.len() >= 3);
        assert!(s.segments.iter().all(|seg| (1000..1100).contains(&seg.duration_ms)));
    }

    #[test]
    fn a_burst_of_audio_at_the_end_does_not_stretch_the_last_segment() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        feed(&mut s, 0, 50, 25);
        // The publisher quits and its encoder flushes 50 s of queued audio at once.
        for i in 0..2400 {
            s.push(&audio(2000 + i * 21), 0);
        }
        assert!(s.errors() > 2000);
        s.flush();
        assert!(s.segments.iter().all(|seg| seg.duration_ms <= 1100), "{}", s.playlist(""));
    }

    #[test]
    fn no_keyframe_for_a_minute_still_bounds_memory() {
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        // One keyframe, then 66 s of delta frames.
        feed(&mut s, 0, 1650, 100_000);
        assert_eq!(s.segments.len(), 6);
        assert!(
            s.segments.iter().all(|seg| (10_000..=10_040).contains(&seg.duration_ms)),
            "{}",
            s.playlist("")
        );
        assert!(s.current.len() < 200_000);
    }

    #[test]
    fn stuck_timestamps_and_added_tracks() {
        // Timestamps that stop advancing: segments are still cut by wall time.
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        s.push(&video(1000, true), 1000);
        for i in 1..2100 {
            s.push(&video(1000, false), 1000 + i * 33);
        }
        assert!(s.segments.len() >= 5);
        assert!(s.current.len() < 200_000);
        // Audio first, video added later: one discontinuity where the video starts.
        let mut s = Segmenter::new(HlsConfig::default());
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        for i in 0..100 {
            s.push(&audio(i * 21), 0);
        }
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        feed(&mut s, 2100, 100, 25);
        assert_eq!(s.playlist("").matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{}", s.playlist(""));
    }
}
