//! A simulcast publisher's layers (RTP streams with their own `rid`, SSRC and RTP timestamp
//! base) to the one video track of its stream: the largest layer that is being sent, switched
//! only at that layer's keyframe, its RTP timestamps (and sender reports) moved onto one
//! timeline so that the switch is seamless for everything downstream (the pipeline's timing,
//! its transcoder, the hub).
//!
//! * Layer size: the picture size of its last keyframe (H.264 SPS, VP8 frame header); VP9
//!   keyframes are compared by their byte size (a larger picture makes a larger keyframe).
//! * A layer is sent while frames of it arrived within [`LAYER_IDLE`]; a publisher short of
//!   bandwidth stops its top layer first, and the track then goes on with the next one.
//! * The target layer's keyframe is asked for ([`Layers::wanted_keyframe`]) when a switch waits
//!   for one.
//! * Frames of the other layers are not used here (counted).

use std::time::{Duration, Instant};

use str0m::format::Codec;
use webrtc::{Rid, RtpFrame, Track};

use super::transcode::{is_keyframe, SourceCodec};

/// A layer with no frame for this long is no longer sent.
pub const LAYER_IDLE: Duration = Duration::from_millis(500);

const VIDEO_HZ: f64 = 90_000.0;

#[derive(Debug)]
struct Layer {
    rid: Rid,
    /// Picture area of its last keyframe (VP9: the keyframe's bytes).
    size: u64,
    last_arrival: Instant,
    /// Added to its RTP timestamps to put them on the track's timeline.
    offset: i64,
}

/// What was done with the layers' frames.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerCounters {
    /// Frames of the layer in use, passed on.
    pub passed: u64,
    /// Frames of the other layers.
    pub unused: u64,
    /// Switches from one layer to another.
    pub switches: u64,
}

/// The layers of one simulcast video track.
#[derive(Debug, Default)]
pub struct Layers {
    layers: Vec<Layer>,
    /// The layer in use.
    current: Option<usize>,
    timeline: Timeline,
    counters: LayerCounters,
}

impl Layers {
    /// No layer seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// What was done so far.
    pub fn counters(&self) -> LayerCounters {
        self.counters
    }

    /// The layers seen, smallest picture first (those of unknown size last).
    pub fn rids(&self) -> Vec<Rid> {
        let mut v: Vec<&Layer> = self.layers.iter().collect();
        v.sort_by_key(|l| if l.size == 0 { u64::MAX } else { l.size });
        v.into_iter().map(|l| l.rid).collect()
    }

    /// The layer in use, for the log.
    pub fn current(&self) -> Option<Rid> {
        self.current.map(|i| self.layers[i].rid)
    }

    /// Takes a frame; returns it (on the track's timeline) when it belongs to the layer in use.
    /// Frames without a layer, and audio, pass unchanged.
    pub fn push(&mut self, mut f: RtpFrame) -> Option<RtpFrame> {
        let (Track::Video, Some(rid)) = (f.track, f.layer) else {
            return Some(f);
        };
        let i = match self.layers.iter().position(|l| l.rid == rid) {
            Some(i) => i,
            None => {
                self.layers.push(Layer {
                    rid,
                    size: 0,
                    last_arrival: f.arrival,
                    offset: 0,
                });
                self.layers.len() - 1
            }
        };
        let key = keyframe_size(f.codec, &f.data);
        let layer = &mut self.layers[i];
        layer.last_arrival = f.arrival;
        if let Some(size) = key {
            layer.size = size;
        }
        if key.is_some() && self.current != Some(i) && self.best(f.arrival) == Some(i) {
            self.layers[i].offset = self.timeline.offset_for(&f);
            if self.current.is_some() {
                self.counters.switches += 1;
            }
            self.current = Some(i);
        }
        if self.current != Some(i) {
            self.counters.unused += 1;
            return None;
        }
        let offset = self.layers[i].offset;
        f.rtp_time = self.timeline.pass(&f, offset);
        f.sender_report = f.sender_report.map(|(ntp, rtp)| (ntp, (rtp as i64 + offset) as u32));
        self.counters.passed += 1;
        Some(f)
    }

    /// The largest layer being sent (its size known from a keyframe).
    fn best(&self, now: Instant) -> Option<usize> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.size > 0 && now.saturating_duration_since(l.last_arrival) < LAYER_IDLE)
            .max_by_key(|(_, l)| l.size)
            .map(|(i, _)| i)
    }

    /// The layer whose keyframe a switch waits for: a larger one than the layer in use, or any
    /// when the layer in use stopped.
    pub fn wanted_keyframe(&self, now: Instant) -> Option<Rid> {
        let current_sent = self
            .current
            .is_some_and(|c| now.saturating_duration_since(self.layers[c].last_arrival) < LAYER_IDLE);
        // A layer of unknown size may be the larger one: its keyframe tells.
        let unknown = self
            .layers
            .iter()
            .find(|l| l.size == 0 && now.saturating_duration_since(l.last_arrival) < LAYER_IDLE);
        match (self.best(now), current_sent) {
            (Some(b), _) if Some(b) != self.current => Some(self.layers[b].rid),
            (_, false) => self
                .layers
                .iter()
                .find(|l| now.saturating_duration_since(l.last_arrival) < LAYER_IDLE)
                .map(|l| l.rid),
            _ => unknown.map(|l| l.rid),
        }
    }
}

/// One timeline for frames of several layers: a layer switched to continues from the last
/// frame passed on, by arrival time.
#[derive(Debug, Default)]
struct Timeline {
    /// The last frame passed on: its timestamp on the timeline, and arrival.
    last: Option<(u64, Instant)>,
}

impl Timeline {
    /// The offset that puts `f` (the first frame of a layer switched to) right after the last
    /// frame passed on.
    fn offset_for(&self, f: &RtpFrame) -> i64 {
        let on_timeline = match self.last {
            Some((ts, at)) => ts as i64 + (f.arrival.saturating_duration_since(at).as_secs_f64() * VIDEO_HZ) as i64,
            None => f.rtp_time as i64,
        };
        on_timeline - f.rtp_time as i64
    }

    /// `f`'s time on the timeline, with its layer's offset; it is the last one passed on.
    fn pass(&mut self, f: &RtpFrame, offset: i64) -> u64 {
        let ts = (f.rtp_time as i64 + offset).max(0) as u64;
        self.last = Some((ts, f.arrival));
        ts
    }
}

/// One layer as a subscriber's choice sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerInfo {
    /// Its RTP stream id.
    pub rid: Rid,
    /// Picture area of its last keyframe (VP9: bytes); 0 before the first.
    pub size: u64,
    /// Its bitrate over the last second, bits per second.
    pub bitrate: u64,
    /// Frames of it arrived within [`LAYER_IDLE`].
    pub sent: bool,
    /// Sent for a second or more without a pause: its bitrate is a full second's.
    pub steady: bool,
}

/// A simulcast publisher's layers as they arrive: size and bitrate of each, for the
/// subscribers' choice ([`LayerPick`]).
#[derive(Debug, Default)]
pub struct LayerRates {
    layers: Vec<Rate>,
}

#[derive(Debug)]
struct Rate {
    rid: Rid,
    size: u64,
    last_arrival: Instant,
    /// When it was last (re)started after a pause.
    since: Instant,
    /// Bytes in the current and the previous half second, and when the current one began.
    bytes: [u64; 2],
    window: Instant,
}

const HALF_SECOND: Duration = Duration::from_millis(500);

impl LayerRates {
    /// Counts a frame of a layer (frames without a layer are not counted).
    pub fn push(&mut self, f: &RtpFrame) {
        let (Track::Video, Some(rid)) = (f.track, f.layer) else { return };
        let now = f.arrival;
        let i = match self.layers.iter().position(|l| l.rid == rid) {
            Some(i) => i,
            None => {
                self.layers.push(Rate {
                    rid,
                    size: 0,
                    last_arrival: now,
                    since: now,
                    bytes: [0, 0],
                    window: now,
                });
                self.layers.len() - 1
            }
        };
        let l = &mut self.layers[i];
        if let Some(size) = keyframe_size(f.codec, &f.data) {
            l.size = size;
        }
        if now.saturating_duration_since(l.last_arrival) >= LAYER_IDLE {
            l.since = now;
        }
        let since = now.saturating_duration_since(l.window);
        if since >= 2 * HALF_SECOND {
            l.bytes = [0, 0];
            l.window = now;
        } else if since >= HALF_SECOND {
            l.bytes = [0, l.bytes[0]];
            l.window += HALF_SECOND;
        }
        l.bytes[0] += f.data.len() as u64;
        l.last_arrival = now;
    }

    /// The layers, smallest first (those of unknown size last).
    pub fn layers(&self, now: Instant) -> Vec<LayerInfo> {
        let mut v: Vec<LayerInfo> = self
            .layers
            .iter()
            .map(|l| {
                let into = now.saturating_duration_since(l.window);
                // The last full half second and the current one so far, as a rate per second.
                let span = (HALF_SECOND + into).as_secs_f64();
                let bitrate = if into < 2 * HALF_SECOND {
                    ((l.bytes[0] + l.bytes[1]) as f64 * 8.0 / span) as u64
                } else {
                    0
                };
                LayerInfo {
                    rid: l.rid,
                    size: l.size,
                    bitrate,
                    sent: now.saturating_duration_since(l.last_arrival) < LAYER_IDLE,
                    steady: now.saturating_duration_since(l.since) >= 2 * HALF_SECOND,
                }
            })
            .collect();
        v.sort_by_key(|l| if l.size == 0 { u64::MAX } else { l.size });
        v
    }
}

/// How much of its budget a layer may use, per cent: the rest is room for the estimate's
/// swings (and audio).
const LAYER_FIT_PERCENT: u64 = 85;
/// How much of its budget the layer in use may take before a switch down, per cent: the
/// sender paces at 1.1 x the estimate, and a layer's rate swings with its keyframes.
const LAYER_KEEP_PERCENT: u64 = 115;
/// Least time between two switches up (a switch down happens at once).
const UP_AFTER: Duration = Duration::from_secs(2);

/// One subscriber's choice among a simulcast publisher's layers: the largest whose bitrate fits
/// its bandwidth budget, switched at that layer's keyframe, the timestamps it sends continuous
/// across switches (the subscriber sees one stream).
#[derive(Debug, Default)]
pub struct LayerPick {
    current: Option<Rid>,
    target: Option<Rid>,
    offset: i64,
    timeline: Timeline,
    budget: Option<u64>,
    last_switch: Option<Instant>,
    switches: u64,
}

impl LayerPick {
    /// Nothing sent yet; starts on the smallest layer until a budget is known.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer being sent.
    pub fn current(&self) -> Option<Rid> {
        self.current
    }

    /// Layer switches so far.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// The subscriber's bandwidth for this feed, bits per second.
    pub fn set_budget(&mut self, bps: u64) {
        self.budget = Some(bps);
    }

    /// Chooses the layer to go to from the layers' sizes and rates: up to a larger layer that
    /// fits the budget with room to spare (not within [`UP_AFTER`] of the last switch), down
    /// as soon as the layer in use takes more than [`LAYER_KEEP_PERCENT`] of it.
    pub fn choose(&mut self, layers: &[LayerInfo], now: Instant) {
        let known: Vec<&LayerInfo> = layers.iter().filter(|l| l.sent && l.size > 0).collect();
        let Some(smallest) = known.first() else { return };
        let Some(budget) = self.budget else {
            self.target.get_or_insert(smallest.rid);
            return;
        };
        // A layer that just started has not shown its rate yet: not one to go up to.
        let roomy = |l: &LayerInfo| l.steady && l.bitrate * 100 <= budget * LAYER_FIT_PERCENT;
        let best = known.iter().rev().find(|l| roomy(l)).unwrap_or(smallest);
        let rank = |rid: Rid| known.iter().position(|l| l.rid == rid);
        let current = self.current.and_then(|c| known.iter().find(|l| l.rid == c));
        self.target = Some(match current {
            // The layer in use still fits: up only when a larger one fits with room, and not
            // right after a switch.
            Some(c) if c.bitrate * 100 <= budget * LAYER_KEEP_PERCENT => {
                let settled = self.last_switch.is_none_or(|t| now.saturating_duration_since(t) >= UP_AFTER);
                if rank(best.rid) > rank(c.rid) && settled {
                    best.rid
                } else {
                    c.rid
                }
            }
            _ => best.rid,
        });
    }

    /// The layer whose keyframe a switch waits for.
    pub fn wanted_keyframe(&self) -> Option<Rid> {
        self.target.filter(|t| Some(*t) != self.current)
    }

    /// The RTP time to send a frame at, or `None` when it is not sent (another layer, or the
    /// target's frames before its keyframe). Audio and frames without a layer pass.
    pub fn push(&mut self, f: &RtpFrame) -> Option<u64> {
        let (Track::Video, Some(rid)) = (f.track, f.layer) else {
            return Some(f.rtp_time);
        };
        if Some(rid) == self.target && Some(rid) != self.current && keyframe_size(f.codec, &f.data).is_some() {
            self.offset = self.timeline.offset_for(f);
            if self.current.is_some() {
                self.switches += 1;
                self.last_switch = Some(f.arrival);
            }
            self.current = Some(rid);
        }
        if Some(rid) != self.current {
            return None;
        }
        Some(self.timeline.pass(f, self.offset))
    }
}

/// Whether a video frame (H.264 in Annex B, VP8, VP9) is a keyframe.
pub fn is_video_keyframe(codec: Codec, data: &[u8]) -> bool {
    keyframe_size(codec, data).is_some()
}

/// The size of a keyframe's picture (area in pixels; VP9: its byte size), or `None` when the
/// frame is not a keyframe.
fn keyframe_size(codec: Codec, data: &[u8]) -> Option<u64> {
    match codec {
        Codec::H264 => {
            let nals = media::avc::annexb_nal_units(data);
            if !nals.iter().any(|n| n.first().is_some_and(|b| b & 0x1f == 5)) {
                return None;
            }
            let sps = nals.iter().find(|n| n.first().is_some_and(|b| b & 0x1f == 7));
            // An IDR without its SPS: its size is unknown but it is a keyframe.
            Some(
                sps.and_then(|s| media::avc::parse_sps(s).ok())
                    .map_or(1, |i| u64::from(i.width) * u64::from(i.height)),
            )
        }
        Codec::Vp8 => {
            if !is_keyframe(SourceCodec::Vp8, data) || data.len() < 10 || data[3..6] != [0x9d, 0x01, 0x2a] {
                return None;
            }
            let w = u16::from_le_bytes([data[6], data[7]]) & 0x3fff;
            let h = u16::from_le_bytes([data[8], data[9]]) & 0x3fff;
            Some(u64::from(w) * u64::from(h))
        }
        Codec::Vp9 => is_keyframe(SourceCodec::Vp9, data).then_some(data.len() as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A VP8 frame of layer `rid`: a keyframe of w x h, or an interframe.
    fn vp8(rid: &str, rtp: u64, at: Instant, key: Option<(u16, u16)>) -> RtpFrame {
        let data: Vec<u8> = match key {
            Some((w, h)) => [
                &[0x50u8, 0x42, 0x00, 0x9d, 0x01, 0x2a][..],
                &w.to_le_bytes(),
                &h.to_le_bytes(),
                &[0; 50],
            ]
            .concat(),
            None => vec![0x51, 0x42, 0x00, 1, 2, 3],
        };
        RtpFrame {
            track: Track::Video,
            codec: Codec::Vp8,
            rtp_time: rtp,
            arrival: at,
            contiguous: true,
            data: Arc::from(data),
            sender_report: None,
            layer: Some(Rid::from(rid)),
        }
    }

    #[test]
    fn the_largest_layer_is_used_from_its_keyframe_on_one_timeline() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut l = Layers::new();
        // The small layer starts (its own timestamp base), the large one's first frames are not
        // keyframes: the small one is used.
        assert_eq!(l.push(vp8("l", 1000, ms(0), Some((160, 120)))).map(|f| f.rtp_time), Some(1000));
        assert!(l.push(vp8("h", 500_000, ms(1), None)).is_none());
        assert_eq!(
            l.wanted_keyframe(ms(1)),
            Some(Rid::from("h")),
            "the unknown layer's keyframe is asked for"
        );
        assert_eq!(l.push(vp8("l", 4000, ms(33), None)).map(|f| f.rtp_time), Some(4000));
        // The large one's keyframe: the switch, 33 ms after the last frame passed on.
        let f = l.push(vp8("h", 506_000, ms(66), Some((640, 480)))).unwrap();
        assert_eq!(f.rtp_time, 4000 + 2970, "continues the timeline by arrival");
        assert_eq!(l.push(vp8("h", 509_000, ms(99), None)).unwrap().rtp_time, 4000 + 2970 + 3000);
        assert!(l.push(vp8("l", 7000, ms(99), None)).is_none());
        assert!(
            l.push(vp8("l", 10_000, ms(132), Some((160, 120)))).is_none(),
            "a smaller keyframe does not switch back"
        );
        assert_eq!(l.wanted_keyframe(ms(132)), None);
        // The large layer stops (the publisher is short of bandwidth): the small one's next
        // keyframe takes over, asked for.
        for n in 0..40u64 {
            assert!(l.push(vp8("l", 13_000 + 3000 * n, ms(165 + 33 * n), None)).is_none());
        }
        let now = ms(165 + 33 * 39);
        assert_eq!(l.wanted_keyframe(now), Some(Rid::from("l")));
        let f = l
            .push(vp8("l", 200_000, now + Duration::from_millis(33), Some((160, 120))))
            .unwrap();
        let before = 4000 + 2970 + 3000;
        let gap = (f.rtp_time - before) as f64 / 90.0;
        assert!(
            (gap - (165.0 + 33.0 * 40.0 - 99.0)).abs() < 2.0,
            "{gap} ms after the last frame passed on"
        );
        assert_eq!(l.counters().switches, 2);
        assert_eq!(l.current(), Some(Rid::from("l")));
    }

    #[test]
    fn a_subscriber_gets_the_largest_layer_its_budget_allows() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut rates = LayerRates::default();
        // 30 fps for 1 s: l about 200 kbit/s, m 600, h 1800 (keyframe first, then interframes).
        let mut young = Vec::new();
        for n in 0..32u64 {
            for (rid, size, bytes) in [("l", (240, 136), 800usize), ("m", (480, 270), 2500), ("h", (960, 540), 7500)] {
                let mut f = vp8(rid, 3000 * n, ms(33 * n), (n == 0).then_some(size));
                f.data = Arc::from([&f.data[..], &vec![0u8; bytes][..]].concat());
                rates.push(&f);
            }
            if n == 10 {
                young = rates.layers(ms(340));
            }
        }
        // Layers sent for a third of a second have not shown their rates: none to go up to.
        let mut early = LayerPick::new();
        early.set_budget(10_000_000);
        early.choose(&young, ms(340));
        assert_eq!(early.wanted_keyframe(), Some(Rid::from("l")), "{young:?}");
        let layers = rates.layers(ms(1030));
        let rids: Vec<String> = layers.iter().map(|l| l.rid.to_string()).collect();
        assert_eq!(rids, ["l", "m", "h"], "smallest first");
        assert!((1_700_000..2_100_000).contains(&layers[2].bitrate), "{layers:?}");

        let mut pick = LayerPick::new();
        pick.choose(&layers, ms(990));
        assert_eq!(pick.wanted_keyframe(), Some(Rid::from("l")), "no budget yet: the smallest");
        assert!(pick.push(&vp8("l", 90_000, ms(1000), None)).is_none(), "waits for a keyframe");
        assert_eq!(pick.push(&vp8("l", 93_000, ms(1033), Some((240, 136)))), Some(93_000));
        // A 1 Mbit/s budget: m fits, h does not.
        pick.set_budget(1_000_000);
        pick.choose(&layers, ms(1040));
        assert_eq!(pick.wanted_keyframe(), Some(Rid::from("m")));
        assert_eq!(
            pick.push(&vp8("l", 96_000, ms(1066), None)),
            Some(96_000),
            "the old layer until the switch"
        );
        assert_eq!(pick.push(&vp8("m", 7_000_000, ms(1099), Some((480, 270)))), Some(96_000 + 2970));
        assert!(pick.push(&vp8("l", 99_000, ms(1099), None)).is_none());
        // More budget: up again, but not within 2 s of the last switch.
        pick.set_budget(5_000_000);
        pick.choose(&layers, ms(1500));
        assert_eq!(pick.wanted_keyframe(), None);
        pick.choose(&layers, ms(3200));
        assert_eq!(pick.wanted_keyframe(), Some(Rid::from("h")));
        // Less: down at once.
        pick.set_budget(300_000);
        pick.choose(&layers, ms(3300));
        assert_eq!(pick.wanted_keyframe(), Some(Rid::from("l")));
        assert_eq!(pick.switches(), 1);
    }

    #[test]
    fn frames_without_layers_pass_unchanged() {
        let mut l = Layers::new();
        let mut f = vp8("x", 1234, Instant::now(), None);
        f.layer = None;
        assert_eq!(l.push(f).unwrap().rtp_time, 1234);
        assert_eq!(l.counters(), LayerCounters::default());
    }
}
