//! Low-Latency HLS (RFC 8216bis) segmenter (sans-IO): hub events in, CMAF parts, segments and the
//! live media playlist out.
//!
//! * Every frame is held until the next one of its track arrives, so each sample's duration is
//!   exact (the cost is one frame interval of latency).
//! * A part closes as soon as one more frame of the driving track (video, or audio when there is
//!   no video) would take it past [`LlHlsConfig::part_target_ms`]; each part is one `moof` +
//!   `mdat` with both tracks' samples. A segment is its parts back to back; it starts on a video
//!   keyframe, the one closest to [`LlHlsConfig::target_duration_ms`] (as in classic HLS, see
//!   [`crate::hls::KeyframeCadence`]; after ten target durations without a keyframe, on any
//!   frame: memory stays bounded).
//! * Decode times run on one timeline (90 kHz video, sample-rate audio) that continues across a
//!   publisher restart; a real codec change or restart starts a segment flagged
//!   `EXT-X-DISCONTINUITY` with a new init segment (`EXT-X-MAP`).
//! * The playlist lists parts for the last three segments and the one being built, and a
//!   `EXT-X-PRELOAD-HINT` for the next part. [`LlSegmenter::ready`] tells whether a blocking
//!   reload (`_HLS_msn`, `_HLS_part`) can be answered; the gateway does the waiting.
//!
//! URIs are relative: `{prefix}{msn}.m4s` (segment), `{prefix}{msn}.{part}.m4s` (part),
//! `{prefix}init{id}.mp4` (init segment, `id` = the first segment that uses it).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use media::frame::{MediaFrame, Timebase, TrackKind};
use media::hub::HubEvent;

use crate::fmp4::{self, Sample, VIDEO_TIMESCALE};
use crate::hls::{
    format_program_date_time, trim_window, Configs, KeyframeCadence, Segmenting, WallAnchor, MAX_AUDIO_AHEAD_MS, MAX_SEGMENT_TARGETS,
};

/// LL-HLS settings.
#[derive(Debug, Clone)]
pub struct LlHlsConfig {
    /// Target segment duration, milliseconds (a segment ends at the keyframe closest to it).
    pub target_duration_ms: i64,
    /// Longest part, in milliseconds (`PART-TARGET`).
    pub part_target_ms: i64,
    /// Complete segments kept and listed.
    pub window: usize,
    /// Media sequence number of the first segment.
    pub first_sequence: u64,
}

impl Default for LlHlsConfig {
    fn default() -> Self {
        Self {
            target_duration_ms: 1000,
            part_target_ms: 200,
            window: 6,
            first_sequence: 0,
        }
    }
}

/// Segments whose parts are listed, before the one being built (RFC 8216bis §4.4.4.9: parts
/// older than three target durations are removed).
const LISTED_PART_SEGMENTS: usize = 3;
/// An audio timestamp further than this (in 90 kHz ticks) from where the previous frame's
/// samples end is a real gap: the audio timeline jumps to it. Closer ones are rounding.
const AUDIO_RESYNC_90K: i64 = 90_000 / 20;

/// Parts may run this much (90 kHz) past the part target: millisecond timestamps (RTMP) make
/// six 30 fps frames 199 to 201 ms. `PART-TARGET` lists the longest part made, so it stays true.
const PART_SLACK_90K: i64 = 3 * 90;

/// One part: a `moof` + `mdat`.
#[derive(Debug)]
pub struct Part {
    /// Seconds.
    pub duration: f64,
    /// Starts with a video keyframe (or the stream has no video).
    pub independent: bool,
    /// The fragment bytes.
    pub data: Bytes,
}

/// One segment: its parts back to back.
#[derive(Debug)]
pub struct LlSegment {
    /// Media sequence number.
    pub sequence: u64,
    /// Starts after a discontinuity.
    pub discontinuity: bool,
    /// The init segment it needs.
    pub init: u64,
    /// Wall clock of its first frame, Unix milliseconds.
    pub program_date_ms: i64,
    /// Its parts.
    pub parts: Vec<Arc<Part>>,
}

impl LlSegment {
    /// Seconds.
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }

    /// Bytes of the whole segment.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.data.len()).sum()
    }

    /// No parts.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// What a part request finds.
#[derive(Debug)]
pub enum PartLookup {
    /// The part.
    Ready(Arc<Part>),
    /// The next part to be produced: worth waiting for.
    Next,
    /// Not in the window and not next.
    Missing,
}

/// A video frame held until the next one gives its duration.
struct Held {
    /// Decode time on the shared 90 kHz timeline.
    at90: i64,
    composition_offset90: i64,
    keyframe: bool,
    data: Bytes,
}

/// The segment being built.
struct Building {
    segment: LlSegment,
    start90: i64,
    /// Arrival (Unix ms) of its first frame: the forced cut also counts wall time, since a
    /// publisher's timestamps may stop advancing (the hub holds back ones that go backwards).
    start_wall_ms: i64,
}

/// Samples per AAC frame (AAC-LC; the timescale is the AudioSpecificConfig's rate).
const AAC_FRAME: u32 = 1024;

/// The LL-HLS segmenter for one stream.
pub struct LlSegmenter {
    config: LlHlsConfig,
    configs: Configs,
    /// The next segment needs a new init segment (configuration changed).
    new_init: bool,
    /// Init segments still referenced, by id.
    inits: VecDeque<(u64, Bytes)>,
    /// Added to incoming 90 kHz decode times (continues the timeline across restarts).
    shift90: i64,
    /// Timeline point of decode time 0; set by the first segment.
    origin90: Option<i64>,
    /// The restart shift is taken from the next frame.
    rebase: bool,
    /// End of the last committed sample, 90 kHz timeline.
    end90: i64,
    wall: WallAnchor,
    cadence: KeyframeCadence,
    held_video: Option<Held>,
    /// Where the next audio frame is expected, audio ticks.
    audio_next: Option<u64>,
    part_video: Vec<Sample>,
    part_audio: Vec<Sample>,
    fragment_sequence: u32,
    building: Option<Building>,
    next_sequence: u64,
    discontinuity_pending: bool,
    discontinuity_sequence: u64,
    segments: VecDeque<Arc<LlSegment>>,
    ended: bool,
    errors: u64,
}

impl LlSegmenter {
    /// An empty segmenter.
    pub fn new(config: LlHlsConfig) -> Self {
        let next_sequence = config.first_sequence;
        Self {
            config,
            configs: Configs::default(),
            new_init: true,
            inits: VecDeque::new(),
            shift90: 0,
            origin90: None,
            rebase: false,
            end90: 0,
            wall: WallAnchor::default(),
            cadence: KeyframeCadence::default(),
            held_video: None,
            audio_next: None,
            part_video: Vec::new(),
            part_audio: Vec::new(),
            fragment_sequence: 1,
            building: None,
            next_sequence,
            discontinuity_pending: false,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            ended: false,
            errors: 0,
        }
    }

    /// Frames or fragments that could not be written, or audio too far ahead of the video, dropped.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// Longest part allowed before the next frame closes it, 90 kHz.
    fn part_limit90(&self) -> i64 {
        self.config.part_target_ms * 90 + PART_SLACK_90K
    }

    /// Video gathered for the part so far, 90 kHz.
    fn part_video90(&self) -> i64 {
        self.part_video.iter().map(|s| i64::from(s.duration)).sum()
    }

    fn audio_rate(&self) -> i64 {
        self.configs.audio.as_ref().map_or(48_000, |a| i64::from(a.info.sample_rate.max(1)))
    }

    fn frame(&mut self, f: &MediaFrame, now_ms: i64) -> bool {
        let raw90 = f.timebase.rescale(f.dts, Timebase::MPEG);
        if std::mem::take(&mut self.rebase) {
            // A restarted publisher's clock starts anywhere: continue where the last one ended.
            self.shift90 = self.end90 - raw90;
        }
        let at90 = raw90 + self.shift90;
        let mut changed = false;
        match f.track {
            TrackKind::Video => {
                if let Some(prev) = self.held_video.take() {
                    changed |= self.commit_video(prev, at90);
                }
                if f.keyframe {
                    self.cadence.keyframe(at90 / 90);
                }
                changed |= self.boundary(at90, f.keyframe, now_ms);
                changed |= self.close_full_part();
                self.held_video = Some(Held {
                    at90,
                    composition_offset90: f.timebase.rescale(f.pts - f.dts, Timebase::MPEG),
                    keyframe: f.keyframe,
                    data: f.data.clone(),
                });
            }
            TrackKind::Audio => {
                let ahead = self.held_video.as_ref().is_some_and(|v| at90 > v.at90 + MAX_AUDIO_AHEAD_MS * 90);
                if ahead {
                    self.errors += 1;
                    return false;
                }
                if self.configs.video.is_none() {
                    changed |= self.boundary(at90, true, now_ms);
                }
                self.commit_audio(at90, f.data.clone());
                if self.configs.video.is_none() {
                    changed |= self.close_full_part();
                }
            }
        }
        changed
    }

    /// Before a frame of the driving track at `at90` is taken: ends the segment (and starts the
    /// next) if that frame starts one. Returns true when the playlist changed.
    fn boundary(&mut self, at90: i64, random_access: bool, now_ms: i64) -> bool {
        let start_new = match &self.building {
            None => random_access,
            Some(b) => {
                let elapsed_ms = (at90 - b.start90) / 90;
                let longest_ms = self.config.target_duration_ms * MAX_SEGMENT_TARGETS;
                let ends = self.cadence.ends_segment(elapsed_ms, self.config.target_duration_ms);
                (random_access && (ends || self.discontinuity_pending || self.new_init))
                    || elapsed_ms >= longest_ms
                    || now_ms - b.start_wall_ms >= longest_ms
            }
        };
        if !start_new {
            return false;
        }
        let changed = self.close_segment();
        if self.new_init {
            match fmp4::init_segment(self.configs.video.as_deref(), self.configs.audio.as_deref()) {
                Ok(bytes) => {
                    self.inits.push_back((self.next_sequence, bytes));
                    self.new_init = false;
                }
                Err(_) => {
                    self.errors += 1;
                    return changed;
                }
            }
        }
        self.origin90.get_or_insert(at90);
        let init = self.inits.back().map_or(0, |(id, _)| *id);
        let discontinuity = std::mem::take(&mut self.discontinuity_pending) && !self.segments.is_empty();
        self.building = Some(Building {
            segment: LlSegment {
                sequence: self.next_sequence,
                discontinuity,
                init,
                program_date_ms: self.wall.at(at90, now_ms),
                parts: Vec::new(),
            },
            start90: at90,
            start_wall_ms: now_ms,
        });
        self.next_sequence += 1;
        true
    }

    /// Adds the held frame to the part (closing the part first if this frame would take it past
    /// the target). True when a part was closed.
    fn commit_video(&mut self, h: Held, next90: i64) -> bool {
        let Some(origin) = self.origin90 else { return false };
        if self.building.is_none() || h.at90 < origin {
            return false;
        }
        // A stall (or a timestamp jump) does not make a long sample: at most one part target, and
        // the next part's tfdt places what follows where it belongs.
        let duration = (next90 - h.at90).clamp(1, self.config.part_target_ms * 90);
        let length = self.part_video90();
        let closed = length > 0 && length + duration > self.part_limit90() && self.close_part();
        self.end90 = self.end90.max(h.at90 + duration);
        self.part_video.push(Sample {
            decode_time: u64::try_from(h.at90 - origin).unwrap_or(0),
            duration: u32::try_from(duration).unwrap_or(u32::MAX),
            composition_offset: i32::try_from(h.composition_offset90).unwrap_or(0),
            keyframe: h.keyframe,
            data: h.data,
        });
        closed
    }

    fn commit_audio(&mut self, at90: i64, data: Bytes) {
        let Some(origin) = self.origin90 else { return };
        if self.building.is_none() || at90 < origin {
            return;
        }
        let rate = self.audio_rate();
        let measured = u64::try_from((at90 - origin) * rate / 90_000).unwrap_or(0);
        let tolerance = u64::try_from(AUDIO_RESYNC_90K * rate / 90_000).unwrap_or(0);
        // Sample-count timing: follow on from the previous frame unless the timestamp says there
        // was a real gap (millisecond timestamps would otherwise jitter every frame).
        let start = match self.audio_next {
            Some(expected) if measured.abs_diff(expected) < tolerance => expected,
            // A real gap: a run's samples are back to back, so the previous sample of this part
            // (if any) covers it; the next part's tfdt starts where the timestamps say anyway.
            Some(expected) if measured > expected => {
                if let Some(prev) = self.part_audio.last_mut() {
                    let gap = u32::try_from(measured - expected).unwrap_or(u32::MAX);
                    prev.duration = prev.duration.saturating_add(gap);
                }
                measured
            }
            // Behind where we are: only a new part may step back (else samples would overlap
            // inside one run); within a part, keep counting.
            Some(expected) if !self.part_audio.is_empty() => expected,
            _ => measured,
        };
        self.audio_next = Some(start + u64::from(AAC_FRAME));
        self.end90 = self.end90.max(at90 + i64::from(AAC_FRAME) * 90_000 / rate);
        self.part_audio.push(Sample {
            decode_time: start,
            duration: AAC_FRAME,
            composition_offset: 0,
            keyframe: true,
            data,
        });
    }

    /// Closes the part if one more frame of the driving track would take it past the target.
    fn close_full_part(&mut self) -> bool {
        let (length90, last90) = if self.configs.video.is_some() {
            (self.part_video90(), self.part_video.last().map_or(0, |s| i64::from(s.duration)))
        } else {
            let rate = self.audio_rate();
            let n = i64::try_from(self.part_audio.len()).unwrap_or(i64::MAX);
            let frame90 = i64::from(AAC_FRAME) * 90_000 / rate;
            (n * frame90, frame90)
        };
        if length90 == 0 || length90 + last90 <= self.part_limit90() {
            return false;
        }
        self.close_part()
    }

    /// Turns the samples gathered so far into a part of the segment being built.
    fn close_part(&mut self) -> bool {
        let duration = if self.part_video.is_empty() {
            self.part_audio.iter().map(|s| f64::from(s.duration)).sum::<f64>() / self.audio_rate() as f64
        } else {
            self.part_video90() as f64 / f64::from(VIDEO_TIMESCALE)
        };
        let Some(b) = &mut self.building else {
            self.part_video.clear();
            self.part_audio.clear();
            return false;
        };
        if self.part_video.is_empty() && self.part_audio.is_empty() {
            return false;
        }
        let independent = self.part_video.first().is_none_or(|s| s.keyframe);
        let video = std::mem::take(&mut self.part_video);
        let audio = std::mem::take(&mut self.part_audio);
        match fmp4::fragment(self.fragment_sequence, &video, &audio) {
            Ok(data) => {
                self.fragment_sequence = self.fragment_sequence.wrapping_add(1);
                b.segment.parts.push(Arc::new(Part {
                    duration,
                    independent,
                    data,
                }));
                true
            }
            Err(_) => {
                self.errors += 1;
                false
            }
        }
    }

    /// Closes the segment being built (with its last part) and trims the window.
    fn close_segment(&mut self) -> bool {
        let changed = self.close_part();
        let Some(b) = self.building.take() else {
            return changed;
        };
        if b.segment.parts.is_empty() {
            return changed;
        }
        self.segments.push_back(Arc::new(b.segment));
        self.discontinuity_sequence += trim_window(&mut self.segments, self.config.window, |s| s.discontinuity);
        // Init segments no listed segment needs any more.
        let oldest = self.segments.front().map_or(u64::MAX, |s| s.init);
        while self.inits.len() > 1 && self.inits.front().is_some_and(|(id, _)| *id < oldest) {
            self.inits.pop_front();
        }
        true
    }

    /// The held video frame goes into the part with the last frame's duration.
    fn commit_held(&mut self) {
        if let Some(h) = self.held_video.take() {
            let guess = self.part_video.last().map_or(3000, |s| i64::from(s.duration));
            let next = h.at90 + guess;
            self.commit_video(h, next);
        }
    }

    /// A complete segment in the window.
    pub fn segment(&self, sequence: u64) -> Option<Arc<LlSegment>> {
        self.segments.iter().find(|s| s.sequence == sequence).cloned()
    }

    /// An init segment still referenced.
    pub fn init(&self, id: u64) -> Option<Bytes> {
        self.inits.iter().find(|(i, _)| *i == id).map(|(_, b)| b.clone())
    }

    /// Part `part` of segment `sequence`.
    pub fn part(&self, sequence: u64, part: usize) -> PartLookup {
        if let Some(b) = &self.building {
            if b.segment.sequence == sequence {
                return match b.segment.parts.get(part) {
                    Some(p) => PartLookup::Ready(p.clone()),
                    None if part == b.segment.parts.len() && !self.ended => PartLookup::Next,
                    None => PartLookup::Missing,
                };
            }
        }
        if let Some(p) = self.segment(sequence).and_then(|s| s.parts.get(part).cloned()) {
            return PartLookup::Ready(p);
        }
        if self.building.is_none() && sequence == self.next_sequence && part == 0 && !self.ended {
            return PartLookup::Next;
        }
        PartLookup::Missing
    }

    /// The media sequence number the next blocking request may ask for at most (RFC 8216bis
    /// §6.2.5.2: more than two past the last segment is a 400).
    pub fn max_blocking_msn(&self) -> u64 {
        self.next_sequence.saturating_add(1)
    }

    /// The playlist already holds segment `msn` complete, or its part `part`: a blocking reload
    /// for them can be answered.
    pub fn ready(&self, msn: u64, part: Option<usize>) -> bool {
        if self.ended {
            return true;
        }
        let (building_msn, parts) = match &self.building {
            Some(b) => (b.segment.sequence, b.segment.parts.len()),
            None => (self.next_sequence, 0),
        };
        if msn < building_msn {
            return true;
        }
        match part {
            Some(p) => msn == building_msn && p < parts,
            None => false,
        }
    }
}

impl Segmenting for LlSegmenter {
    fn push(&mut self, ev: &HubEvent, now_ms: i64) -> bool {
        if let HubEvent::Frame(f) = ev {
            // The segments carry H.264 and AAC; other codecs travel past them.
            if !f.codec.is_flv_family() {
                return false;
            }
            return self.frame(f, now_ms);
        }
        if let Some(replaced) = self.configs.update(ev) {
            // A track added after output started (WHIP: audio before the first keyframe) needs
            // a discontinuity too: players cannot add a track to what they are playing.
            let started = self.building.is_some() || !self.segments.is_empty();
            self.discontinuity_pending |= replaced || started;
            self.new_init = true;
        }
        false
    }

    fn flush(&mut self) -> bool {
        self.commit_held();
        self.close_segment()
    }

    fn restart(&mut self) -> bool {
        let changed = self.flush();
        self.configs = Configs::default();
        self.new_init = true;
        self.discontinuity_pending = true;
        self.rebase = true;
        self.audio_next = None;
        self.ended = false;
        changed
    }

    fn end(&mut self) -> bool {
        let changed = self.flush();
        self.ended = true;
        changed
    }

    fn len(&self) -> usize {
        self.segments.len()
    }

    fn is_ended(&self) -> bool {
        self.ended
    }

    fn playlist(&self, prefix: &str) -> String {
        let longest = self.segments.iter().map(|s| s.duration()).fold(0.0, f64::max);
        let target = (longest.round() as i64).max((self.config.target_duration_ms + 500) / 1000).max(1);
        // RFC 8216bis: no listed part may be longer than PART-TARGET.
        let longest_part = self
            .segments
            .iter()
            .map(|s| s.as_ref())
            .chain(self.building.as_ref().map(|b| &b.segment))
            .flat_map(|s| s.parts.iter())
            .map(|p| p.duration)
            .fold(0.0, f64::max);
        let part_target = (self.config.part_target_ms as f64 / 1000.0).max((longest_part * 1000.0).ceil() / 1000.0);
        let mut p = String::with_capacity(512 + 512 * self.segments.len());
        p.push_str("#EXTM3U\n#EXT-X-VERSION:6\n");
        let _ = writeln!(p, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(
            p,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            3.0 * part_target
        );
        let _ = writeln!(p, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let first = self.segments.front().map_or(self.next_sequence, |s| s.sequence);
        let _ = writeln!(p, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(p, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        let listed_from = self.segments.len().saturating_sub(LISTED_PART_SEGMENTS);
        let mut map = None;
        let mut header = |p: &mut String, s: &LlSegment| {
            if s.discontinuity {
                p.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if map != Some(s.init) {
                let _ = writeln!(p, "#EXT-X-MAP:URI=\"{prefix}init{}.mp4\"", s.init);
                map = Some(s.init);
            }
            let _ = writeln!(p, "#EXT-X-PROGRAM-DATE-TIME:{}", format_program_date_time(s.program_date_ms));
        };
        let parts = |p: &mut String, s: &LlSegment| {
            for (i, part) in s.parts.iter().enumerate() {
                let _ = write!(
                    p,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{prefix}{}.{i}.m4s\"",
                    part.duration, s.sequence
                );
                p.push_str(if part.independent { ",INDEPENDENT=YES\n" } else { "\n" });
            }
        };
        for (i, s) in self.segments.iter().enumerate() {
            header(&mut p, s);
            if i >= listed_from {
                parts(&mut p, s);
            }
            let _ = writeln!(p, "#EXTINF:{:.5},\n{prefix}{}.m4s", s.duration(), s.sequence);
        }
        if let Some(b) = &self.building {
            if !b.segment.parts.is_empty() {
                header(&mut p, &b.segment);
                parts(&mut p, &b.segment);
            }
        }
        if self.ended {
            p.push_str("#EXT-X-ENDLIST\n");
        } else {
            let (msn, part) = match &self.building {
                Some(b) => (b.segment.sequence, b.segment.parts.len()),
                None => (self.next_sequence, 0),
            };
            let _ = writeln!(p, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}{msn}.{part}.m4s\"");
        }
        p
    }

    fn target_duration_ms(&self) -> i64 {
        self.config.target_duration_ms
    }

    fn building_ms(&self) -> i64 {
        self.building.as_ref().map_or(0, |b| (self.end90 - b.start90) / 90)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{audio_config, video_config, PPS};
    use bytes::BufMut;
    use mp4_atom::{Any, Decode, TrunSamples};

    /// 30 fps video at 90 kHz, keyframe every `gop` frames, plus 48 kHz AAC with millisecond
    /// timestamps (as RTMP gives), covering frames `from..to`.
    fn feed(s: &mut LlSegmenter, from: i64, to: i64, gop: i64, offset90: i64) {
        feed_keys(s, from, to, |i| i % gop == 0, offset90);
    }

    /// As [`feed`], with keyframes where `key(frame index)`.
    fn feed_keys(s: &mut LlSegmenter, from: i64, to: i64, key: impl Fn(i64) -> bool, offset90: i64) {
        let mut next_audio = (from * 3000 + 1919) / 1920;
        for i in from..to {
            let t = i * 3000 + offset90;
            let mut b = bytes::BytesMut::new();
            b.put_u32(4);
            b.put_slice(&[if key(i) { 0x65 } else { 0x41 }, 1, 2, 3]);
            let f = MediaFrame::video(t + 3000, t, Timebase::MPEG, key(i), b.freeze());
            s.push(&HubEvent::Frame(Arc::new(f)), t / 90);
            // Audio frames due before the next video frame (1920 ticks of 90 kHz each).
            while next_audio * 1920 < (i + 1) * 3000 {
                let ms = (next_audio * 1920 + offset90) / 90;
                let f = MediaFrame::audio(ms, Timebase::MILLIS, Bytes::from_static(&[0x21, 0, 0]));
                s.push(&HubEvent::Frame(Arc::new(f)), ms);
                next_audio += 1;
            }
        }
    }

    fn started() -> LlSegmenter {
        let mut s = LlSegmenter::new(LlHlsConfig::default());
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        s
    }

    /// (track id, tfdt, sample durations) of each traf of a fragment.
    fn trafs(data: &[u8]) -> Vec<(u32, u64, Vec<u32>)> {
        let Any::Moof(moof) = Any::decode(&mut &data[..]).unwrap() else {
            panic!("moof")
        };
        moof.traf
            .iter()
            .map(|t| {
                let TrunSamples::Explicit(e) = &t.trun[0].samples else { panic!() };
                let d = e.iter().map(|s| s.duration.unwrap()).collect();
                (t.tfhd.track_id, t.tfdt.as_ref().unwrap().base_media_decode_time, d)
            })
            .collect()
    }

    /// Frames of codecs the CMAF fragments do not carry here (a publisher's original Opus or
    /// VP8) leave the parts and segments exactly as they are without them.
    #[test]
    fn frames_of_other_codecs_leave_the_parts_alone() {
        let mut plain = started();
        feed(&mut plain, 0, 120, 30, 0);
        let mut mixed = started();
        for i in 0..120 {
            let t = i * 3000;
            let opus = MediaFrame::coded(
                media::Codec::Opus,
                t + 100,
                t + 100,
                Timebase::MPEG,
                true,
                Bytes::from_static(&[0xfc]),
            );
            let vp8 = MediaFrame::coded(media::Codec::Vp8, t, t, Timebase::MPEG, i % 7 == 0, Bytes::from_static(&[0x10]));
            assert!(!mixed.push(&HubEvent::Frame(Arc::new(opus)), t / 90));
            assert!(!mixed.push(&HubEvent::Frame(Arc::new(vp8)), t / 90));
            feed(&mut mixed, i, i + 1, 30, 0);
        }
        assert_eq!(mixed.playlist("x"), plain.playlist("x"));
        let bytes = |s: &LlSegmenter| {
            s.segments
                .iter()
                .flat_map(|seg| seg.parts.iter().map(|p| p.data.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(bytes(&mixed), bytes(&plain));
    }

    #[test]
    fn an_early_scene_cut_keyframe_ends_the_segment() {
        let mut s = started();
        // 1 s GOP at 30 fps; a scene cut at 1.9 s restarts it (2.9, 3.9 s ...).
        feed_keys(&mut s, 0, 150, |i| i == 0 || i == 30 || (i >= 57 && (i - 57) % 30 == 0), 0);
        let durations: Vec<f64> = s.segments.iter().map(|seg| (seg.duration() * 1000.0).round()).collect();
        // At the first keyframe after 1 s, the second segment would last 1.9 s.
        assert_eq!(durations, [1000.0, 900.0, 1000.0, 1000.0, 1000.0], "{}", s.playlist(""));
    }

    #[test]
    fn parts_hold_the_target_and_segments_start_on_keyframes() {
        let mut s = started();
        feed(&mut s, 0, 100, 30, 0);
        // 1 s keyframe interval: segments of exactly 1 s, five parts of 0.2 s (6 frames).
        assert_eq!(s.len(), 3);
        for seg in &s.segments {
            assert!((seg.duration() - 1.0).abs() < 1e-9, "{}", seg.duration());
            assert_eq!(seg.parts.len(), 5);
            assert!(seg.parts[0].independent);
            assert!(seg.parts[1..].iter().all(|p| !p.independent));
            assert!(seg.parts.iter().all(|p| (p.duration - 0.2).abs() < 1e-9));
        }
        // Decode times run on without gaps across parts and segments; audio in 1024-sample
        // steps although its timestamps were rounded to milliseconds.
        let mut video_next = 0;
        let mut audio_next = 0;
        for seg in &s.segments {
            for part in &seg.parts {
                for (track, tfdt, durations) in trafs(&part.data) {
                    let next = if track == fmp4::VIDEO_TRACK {
                        &mut video_next
                    } else {
                        &mut audio_next
                    };
                    assert_eq!(tfdt, *next, "track {track}");
                    *next += durations.iter().map(|&d| u64::from(d)).sum::<u64>();
                    if track == fmp4::AUDIO_TRACK {
                        assert!(durations.iter().all(|&d| d == 1024));
                    } else {
                        assert!(durations.iter().all(|&d| d == 3000));
                    }
                }
            }
        }
        let p = s.playlist("cam-");
        assert!(p.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n"), "{p}");
        assert!(
            p.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.600\n"),
            "{p}"
        );
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"), "{p}");
        assert!(p.contains("#EXT-X-MAP:URI=\"cam-init0.mp4\"\n"), "{p}");
        assert_eq!(p.matches("#EXT-X-MAP").count(), 1);
        assert!(
            p.contains("#EXT-X-PART:DURATION=0.20000,URI=\"cam-0.0.m4s\",INDEPENDENT=YES\n"),
            "{p}"
        );
        assert!(p.contains("#EXTINF:1.00000,\ncam-2.m4s\n"), "{p}");
        assert!(p.contains("#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:01.000Z\n"), "{p}");
        // Segment 3 is being built: frames 90..99 make one closed part; the next is hinted.
        assert!(p.contains("URI=\"cam-3.0.m4s\",INDEPENDENT=YES\n"), "{p}");
        assert!(p.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"cam-3.1.m4s\"\n"), "{p}");
        assert!(s.init(0).is_some());
        // Blocking reload and part lookups.
        assert!(s.ready(2, None));
        assert!(s.ready(3, Some(0)));
        assert!(!s.ready(3, Some(1)));
        assert!(!s.ready(3, None));
        assert_eq!(s.max_blocking_msn(), 5);
        assert!(matches!(s.part(3, 0), PartLookup::Ready(_)));
        assert!(matches!(s.part(3, 1), PartLookup::Next));
        assert!(matches!(s.part(3, 2), PartLookup::Missing));
        assert!(matches!(s.part(1, 4), PartLookup::Ready(_)));
        assert!(matches!(s.part(1, 5), PartLookup::Missing));
        // The window bounds memory; parts are listed for the last three segments only.
        feed(&mut s, 100, 400, 30, 0);
        assert_eq!(s.len(), 6);
        let p = s.playlist("x");
        let first = s.segments.front().unwrap().sequence;
        assert!(p.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first}\n")));
        assert!(!p.contains(&format!("URI=\"x{first}.0.m4s\"")), "{p}");
        assert!(p.contains(&format!("URI=\"x{}.0.m4s\"", first + 3)), "{p}");
        assert!(s.segment(0).is_none());
        assert!(s.end());
        let p = s.playlist("x");
        assert!(p.ends_with("#EXT-X-ENDLIST\n") && !p.contains("PRELOAD-HINT"), "{p}");
        assert!(s.ready(u64::MAX, None), "an ended playlist answers every blocking request");
    }

    #[test]
    fn a_restart_continues_the_timeline_after_a_discontinuity() {
        let mut s = started();
        feed(&mut s, 0, 60, 30, 0);
        s.end();
        let last = s.segments.back().unwrap().clone();
        let video_end: u64 = trafs(&last.parts.last().unwrap().data)
            .iter()
            .find(|t| t.0 == fmp4::VIDEO_TRACK)
            .map(|t| t.1 + t.2.iter().map(|&d| u64::from(d)).sum::<u64>())
            .unwrap();
        // The publisher comes back with its clock at 500 s and a new PPS.
        s.restart();
        assert!(!s.playlist("x").contains("ENDLIST"));
        s.push(&HubEvent::VideoConfig(video_config(&[0x68, 0xee, 0x3c, 0x80])), 0);
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        feed(&mut s, 0, 60, 30, 500 * 90_000);
        let p = s.playlist("x");
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{p}");
        let after = s.segments.iter().find(|seg| seg.discontinuity).unwrap();
        assert_eq!(after.sequence, last.sequence + 1, "the sequence goes on");
        assert!(
            p.contains(&format!("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"xinit{}.mp4\"\n", after.sequence)),
            "{p}"
        );
        let first = trafs(&after.parts[0].data);
        let video = first.iter().find(|t| t.0 == fmp4::VIDEO_TRACK).unwrap();
        // Decode time continues where the last publisher ended (audio may have ended a little later).
        assert!((video_end..video_end + 3000).contains(&video.1), "{} after {video_end}", video.1);
    }

    #[test]
    fn a_repeated_configuration_is_not_a_discontinuity() {
        let mut s = started();
        feed(&mut s, 0, 45, 15, 0);
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        feed(&mut s, 45, 90, 15, 0);
        assert!(!s.playlist("s").contains("DISCONTINUITY"));
        s.push(&HubEvent::VideoConfig(video_config(&[0x68, 0xee, 0x3c, 0x80])), 0);
        feed(&mut s, 90, 150, 15, 0);
        let p = s.playlist("s");
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{p}");
        assert_eq!(p.matches("#EXT-X-MAP").count(), 2, "{p}");
    }

    #[test]
    fn audio_only_streams_cut_parts_on_audio() {
        let mut s = LlSegmenter::new(LlHlsConfig::default());
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        for i in 0..200 {
            let f = MediaFrame::audio(i * 64 / 3, Timebase::MILLIS, Bytes::from_static(&[0x21, 0]));
            s.push(&HubEvent::Frame(Arc::new(f)), 0);
        }
        assert!(s.len() >= 3);
        for seg in &s.segments {
            let d: Vec<f64> = seg.parts.iter().map(|p| p.duration).collect();
            // RFC 8216bis: at least 85 % of the part target, except a segment's last part.
            let (last, rest) = seg.parts.split_last().unwrap();
            assert!(
                rest.iter().all(|p| p.independent && p.duration <= 0.2 && p.duration >= 0.17),
                "{d:?}"
            );
            assert!(last.independent && last.duration <= 0.2, "{d:?}");
            assert!((1.0..1.1).contains(&seg.duration()), "{}", seg.duration());
        }
    }

    #[test]
    fn millisecond_timestamps_still_make_six_frame_parts() {
        let mut s = started();
        for i in 0..200i64 {
            let ms = i * 1000 / 30;
            let mut b = bytes::BytesMut::new();
            b.put_u32(2);
            b.put_slice(&[if i % 30 == 0 { 0x65 } else { 0x41 }, 0]);
            let f = MediaFrame::video(ms, ms, Timebase::MILLIS, i % 30 == 0, b.freeze());
            s.push(&HubEvent::Frame(Arc::new(f)), ms);
        }
        for seg in &s.segments {
            let frames: Vec<usize> = seg.parts.iter().map(|p| trafs(&p.data)[0].2.len()).collect();
            assert_eq!(frames, vec![6; 5]);
        }
        let p = s.playlist("");
        let target: f64 = p
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
            .unwrap()
            .parse()
            .unwrap();
        assert!((0.2..=0.203).contains(&target), "{target}");
        let longest = s
            .segments
            .iter()
            .flat_map(|seg| seg.parts.iter())
            .map(|p| p.duration)
            .fold(0.0, f64::max);
        assert!(longest <= target, "{longest} > PART-TARGET {target}");
    }

    #[test]
    fn a_burst_of_audio_at_the_end_does_not_stretch_the_last_segment() {
        let mut s = started();
        feed(&mut s, 0, 60, 30, 0);
        for i in 0..2400 {
            let ms = 2000 + i * 21;
            let f = MediaFrame::audio(ms, Timebase::MILLIS, Bytes::from_static(&[0x21, 0]));
            s.push(&HubEvent::Frame(Arc::new(f)), ms);
        }
        assert!(s.errors() > 2000);
        s.flush();
        assert!(s.segments.iter().all(|seg| seg.duration() <= 1.1), "{}", s.playlist(""));
        let p = s.playlist("");
        assert!(p.contains("#EXTINF:1.00000,\n1.m4s\n"), "{p}");
    }

    #[test]
    fn no_keyframe_for_a_minute_still_bounds_memory() {
        let mut s = started();
        feed(&mut s, 0, 2000, 100_000, 0);
        assert_eq!(s.len(), 6);
        for seg in &s.segments {
            assert!((seg.duration() - 10.0).abs() < 0.05, "{}", seg.duration());
        }
        let building = s.building.as_ref().map_or(0, |b| b.segment.len());
        assert!(building < 100_000);
        assert!(s.playlist("").contains("#EXT-X-TARGETDURATION:10\n"));
    }

    fn key_or_delta(ms: i64, key: bool) -> HubEvent {
        let mut b = bytes::BytesMut::new();
        b.put_u32(2);
        b.put_slice(&[if key { 0x65 } else { 0x41 }, 0]);
        HubEvent::Frame(Arc::new(MediaFrame::video(ms, ms, Timebase::MILLIS, key, b.freeze())))
    }

    #[test]
    fn timestamps_that_stop_advancing_still_cut_segments_by_wall_time() {
        let mut s = started();
        // A keyframe at 1 s, then every frame stamped the same (the hub holds back timestamps
        // that go backwards) while 70 s of wall time pass.
        for i in 0..2100i64 {
            s.push(&key_or_delta(1000, i == 0), 1000 + i * 33);
        }
        assert!(s.len() >= 5, "{}", s.playlist(""));
        let building = s.building.as_ref().map_or(0, |b| b.segment.len() + b.segment.parts.len());
        assert!(building < 100_000);
    }

    #[test]
    fn a_stall_does_not_inflate_the_part_target_and_an_audio_gap_stays_in_place() {
        let mut s = started();
        feed(&mut s, 0, 60, 30, 0);
        // Video stalls for 3 s, then goes on.
        feed(&mut s, 150, 240, 30, 0);
        let p = s.playlist("");
        assert!(p.contains("#EXT-X-PART-INF:PART-TARGET=0.200\n"), "{p}");
        assert!(s
            .segments
            .iter()
            .flat_map(|seg| seg.parts.iter())
            .all(|part| part.duration <= 0.2 + 1e-9));
        // Audio: 200 ms missing in the middle of a part; the sample before the gap covers it so
        // that the run's samples stay where their timestamps say.
        let mut a = LlSegmenter::new(LlHlsConfig::default());
        a.push(&HubEvent::AudioConfig(audio_config()), 0);
        let frame = |ms: i64| HubEvent::Frame(Arc::new(MediaFrame::audio(ms, Timebase::MILLIS, Bytes::from_static(&[0x21, 0]))));
        for i in 0..4 {
            a.push(&frame(i * 64 / 3), 0);
        }
        for i in 14..200 {
            a.push(&frame(i * 64 / 3), 0);
        }
        let first = &a.segments[0].parts[0];
        let (_, tfdt, durations) = trafs(&first.data).remove(0);
        assert_eq!(tfdt, 0);
        // Frame 14 is stamped 298 ms (millisecond timestamps): 14304 samples in.
        let at14 = (14 * 64 / 3) * 48;
        assert_eq!(i64::from(durations[3]), at14 - 3 * 1024, "{durations:?}");
        let next = trafs(&a.segments[0].parts[1].data).remove(0);
        assert_eq!(next.1, durations.iter().map(|&d| u64::from(d)).sum::<u64>());
    }

    #[test]
    fn a_track_added_after_output_started_is_a_discontinuity() {
        let mut s = LlSegmenter::new(LlHlsConfig::default());
        s.push(&HubEvent::AudioConfig(audio_config()), 0);
        for i in 0..100 {
            let f = MediaFrame::audio(i * 64 / 3, Timebase::MILLIS, Bytes::from_static(&[0x21, 0]));
            s.push(&HubEvent::Frame(Arc::new(f)), 0);
        }
        assert!(s.len() >= 1);
        s.push(&HubEvent::VideoConfig(video_config(PPS)), 0);
        feed(&mut s, 70, 160, 30, 0);
        let p = s.playlist("");
        assert_eq!(p.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{p}");
        assert_eq!(p.matches("#EXT-X-MAP").count(), 2, "{p}");
    }
}
