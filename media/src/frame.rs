//! The internal frame model: what every ingest produces and every egress consumes.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::aac::AacInfo;
use crate::avc::AvcInfo;

/// Which track a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Video (see the frame's [`Codec`]).
    Video,
    /// Audio (see the frame's [`Codec`]).
    Audio,
}

/// What a frame's payload is coded with. The hub carries any of them; each egress says which
/// it takes ([`Codec::is_flv_family`] for FLV, RTMP, MPEG-TS and fMP4 today).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// H.264 access unit in AVCC form (4-byte length prefixes).
    H264,
    /// One raw AAC frame (no ADTS).
    Aac,
    /// One Opus packet (RFC 7587).
    Opus,
    /// One VP8 frame (RFC 6386).
    Vp8,
    /// One VP9 frame.
    Vp9,
}

impl Codec {
    /// The track a codec's frames belong to.
    pub fn track(self) -> TrackKind {
        match self {
            Codec::H264 | Codec::Vp8 | Codec::Vp9 => TrackKind::Video,
            Codec::Aac | Codec::Opus => TrackKind::Audio,
        }
    }

    /// H.264 and AAC: what FLV, RTMP, MPEG-TS and fMP4 (as muxed here) carry.
    pub fn is_flv_family(self) -> bool {
        matches!(self, Codec::H264 | Codec::Aac)
    }

    /// Every codec, in a fixed order (its index).
    pub const ALL: [Codec; 5] = [Codec::H264, Codec::Aac, Codec::Opus, Codec::Vp8, Codec::Vp9];

    /// Its place in [`Codec::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A set of codecs: what a consumer takes, or what consumers want.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct CodecSet(u8);

impl CodecSet {
    /// No codec.
    pub const EMPTY: Self = Self(0);
    /// H.264 and AAC: what FLV, RTMP, HLS and LL-HLS viewers take.
    pub const FLV: Self = Self(1 << Codec::H264 as u8 | 1 << Codec::Aac as u8);

    /// The set of these codecs.
    pub const fn of(codecs: &[Codec]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < codecs.len() {
            bits |= 1 << codecs[i] as u8;
            i += 1;
        }
        Self(bits)
    }

    /// Whether `c` is in it.
    pub fn contains(self, c: Codec) -> bool {
        self.0 & (1 << c as u8) != 0
    }

    /// Both sets' codecs.
    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// As bits (for an atomic).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From [`CodecSet::bits`].
    pub fn from_bits(bits: u8) -> Self {
        Self(bits & ((1 << Codec::ALL.len()) - 1))
    }
}

/// The unit of a frame's timestamps: `num / den` seconds per tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timebase {
    /// Numerator (seconds).
    pub num: u32,
    /// Denominator.
    pub den: u32,
}

impl Timebase {
    /// Milliseconds: the RTMP/FLV timebase.
    pub const MILLIS: Timebase = Timebase { num: 1, den: 1000 };
    /// 90 kHz: the RTP video and MPEG-TS timebase.
    pub const MPEG: Timebase = Timebase { num: 1, den: 90_000 };

    /// Converts `ts` ticks of this timebase into `to` ticks, rounding to nearest.
    pub fn rescale(self, ts: i64, to: Timebase) -> i64 {
        if self == to {
            return ts;
        }
        let n = i128::from(ts) * i128::from(self.num) * i128::from(to.den);
        let d = i128::from(self.den) * i128::from(to.num);
        if d == 0 {
            return 0;
        }
        let q = if n >= 0 { (n + d / 2) / d } else { (n - d / 2) / d };
        q.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }
}

/// A slot for the muxed form of a frame that an egress format caches on the frame itself, so
/// that a frame is muxed once per stream per format and every viewer of that format shares the
/// bytes. The formats own their slots (`egress::slots`); `media` only holds [`MUX_SLOTS`] of
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MuxSlot(usize);

/// How many formats can cache muxed bytes on a frame.
pub const MUX_SLOTS: usize = 4;

impl MuxSlot {
    /// Slot `index`; out of range fails to compile where used in a `const`.
    pub const fn new(index: usize) -> Self {
        assert!(index < MUX_SLOTS, "MuxSlot index out of range");
        Self(index)
    }
}

/// One access unit (video) or one AAC frame (audio).
///
/// Video `data` is a sequence of NAL units each prefixed by a 4-byte big-endian length
/// (ISO 14496-15 "AVCC" form, as in FLV and MP4). Audio `data` is one raw AAC frame (no ADTS).
#[derive(Debug)]
pub struct MediaFrame {
    /// Video or audio (follows from `codec`).
    pub track: TrackKind,
    /// What the payload is coded with.
    pub codec: Codec,
    /// Presentation timestamp in `timebase` units.
    pub pts: i64,
    /// Decode timestamp in `timebase` units.
    pub dts: i64,
    /// Unit of `pts` and `dts`.
    pub timebase: Timebase,
    /// An IDR access unit (video); always true for audio.
    pub keyframe: bool,
    /// The payload, shared by reference count.
    pub data: Bytes,
    /// The wall clock (Unix ms) at which the hub took it; 0 before. FLV stamps it on keyframes
    /// for players' latency readouts (`egress::flv::wall_clock_sei`).
    pub arrival_ms: i64,
    muxed: [OnceLock<Bytes>; MUX_SLOTS],
}

impl MediaFrame {
    /// A video access unit in AVCC (4-byte length prefixed) form.
    pub fn video(pts: i64, dts: i64, timebase: Timebase, keyframe: bool, data: Bytes) -> Self {
        Self::coded(Codec::H264, pts, dts, timebase, keyframe, data)
    }

    /// A raw AAC frame.
    pub fn audio(pts: i64, timebase: Timebase, data: Bytes) -> Self {
        Self::coded(Codec::Aac, pts, pts, timebase, true, data)
    }

    /// A frame of any codec (audio frames are all keyframes).
    pub fn coded(codec: Codec, pts: i64, dts: i64, timebase: Timebase, keyframe: bool, data: Bytes) -> Self {
        let track = codec.track();
        Self {
            track,
            codec,
            pts,
            dts,
            timebase,
            keyframe: keyframe || track == TrackKind::Audio,
            data,
            arrival_ms: 0,
            muxed: Default::default(),
        }
    }

    /// Decode time in milliseconds.
    pub fn dts_ms(&self) -> i64 {
        self.timebase.rescale(self.dts, Timebase::MILLIS)
    }

    /// Presentation time in milliseconds.
    pub fn pts_ms(&self) -> i64 {
        self.timebase.rescale(self.pts, Timebase::MILLIS)
    }

    /// The muxed form of this frame for `slot`, computed by the first viewer that needs it and
    /// shared by all later ones.
    pub fn muxed(&self, slot: MuxSlot, mux: impl FnOnce(&MediaFrame) -> Bytes) -> Bytes {
        self.muxed[slot.0].get_or_init(|| mux(self)).clone()
    }
}

/// H.264 configuration: the AVCDecoderConfigurationRecord and what its SPS says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoConfig {
    /// The AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1), as in FLV and MP4 `avcC`.
    pub avcc: Bytes,
    /// Parsed from the first SPS.
    pub info: AvcInfo,
    muxed: OnceLockBytes,
}

impl VideoConfig {
    /// The codec this configuration is for (an `avcC` is H.264's).
    pub fn codec(&self) -> Codec {
        Codec::H264
    }

    /// Parses and validates an AVCDecoderConfigurationRecord.
    pub fn from_avcc(avcc: Bytes) -> Result<Self, crate::avc::AvcError> {
        let record = crate::avc::AvcDecoderConfig::parse(&avcc)?;
        let info = record.info()?;
        Ok(Self {
            avcc,
            info,
            muxed: OnceLockBytes::default(),
        })
    }

    /// Cached muxed form (see [`MediaFrame::muxed`]).
    pub fn muxed(&self, slot: MuxSlot, mux: impl FnOnce(&VideoConfig) -> Bytes) -> Bytes {
        self.muxed.0[slot.0].get_or_init(|| mux(self)).clone()
    }
}

/// AAC configuration: the AudioSpecificConfig and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioConfig {
    /// AudioSpecificConfig (ISO 14496-3 §1.6.2.1).
    pub asc: Bytes,
    /// Parsed fields.
    pub info: AacInfo,
    muxed: OnceLockBytes,
}

impl AudioConfig {
    /// The codec this configuration is for (an AudioSpecificConfig is AAC's).
    pub fn codec(&self) -> Codec {
        Codec::Aac
    }

    /// Parses and validates an AudioSpecificConfig.
    pub fn from_asc(asc: Bytes) -> Result<Self, crate::aac::AacError> {
        let info = AacInfo::parse(&asc)?;
        Ok(Self {
            asc,
            info,
            muxed: OnceLockBytes::default(),
        })
    }

    /// Cached muxed form (see [`MediaFrame::muxed`]).
    pub fn muxed(&self, slot: MuxSlot, mux: impl FnOnce(&AudioConfig) -> Bytes) -> Bytes {
        self.muxed.0[slot.0].get_or_init(|| mux(self)).clone()
    }
}

/// Cache slots; equality ignores them (two configs are equal when their bytes are).
#[derive(Debug, Clone, Default)]
struct OnceLockBytes([OnceLock<Bytes>; MUX_SLOTS]);

impl PartialEq for OnceLockBytes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for OnceLockBytes {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_say_their_codec() {
        let v = MediaFrame::video(0, 0, Timebase::MILLIS, false, Bytes::new());
        assert_eq!((v.codec, v.track), (Codec::H264, TrackKind::Video));
        let a = MediaFrame::audio(0, Timebase::MILLIS, Bytes::new());
        assert_eq!((a.codec, a.track, a.keyframe), (Codec::Aac, TrackKind::Audio, true));
        let o = MediaFrame::coded(Codec::Opus, 0, 0, Timebase::MPEG, false, Bytes::new());
        assert_eq!((o.track, o.keyframe), (TrackKind::Audio, true), "audio frames are all keyframes");
        let p = MediaFrame::coded(Codec::Vp8, 0, 0, Timebase::MPEG, true, Bytes::new());
        assert_eq!(p.track, TrackKind::Video);
        assert!(Codec::H264.is_flv_family() && Codec::Aac.is_flv_family());
        assert!(!Codec::Opus.is_flv_family() && !Codec::Vp8.is_flv_family() && !Codec::Vp9.is_flv_family());
    }

    #[test]
    fn each_slot_caches_its_own_bytes() {
        const A: MuxSlot = MuxSlot::new(0);
        const B: MuxSlot = MuxSlot::new(MUX_SLOTS - 1);
        let f = MediaFrame::audio(0, Timebase::MILLIS, Bytes::from_static(b"x"));
        let mut calls = 0;
        for _ in 0..3 {
            assert_eq!(
                f.muxed(A, |_| {
                    calls += 1;
                    Bytes::from_static(b"a")
                }),
                "a"
            );
        }
        assert_eq!(f.muxed(B, |_| Bytes::from_static(b"b")), "b");
        assert_eq!(calls, 1, "muxed once per slot");
    }

    #[test]
    fn rescale_rounds() {
        assert_eq!(Timebase::MPEG.rescale(90_000, Timebase::MILLIS), 1000);
        assert_eq!(Timebase::MILLIS.rescale(33, Timebase::MPEG), 2970);
        let rtp_audio = Timebase { num: 1, den: 48_000 };
        assert_eq!(rtp_audio.rescale(1024, Timebase::MILLIS), 21);
        assert_eq!(rtp_audio.rescale(-1024, Timebase::MILLIS), -21);
    }

    #[test]
    fn muxed_once() {
        let f = MediaFrame::audio(0, Timebase::MILLIS, Bytes::from_static(b"x"));
        let mut calls = 0;
        let a = f.muxed(MuxSlot::new(0), |_| {
            calls += 1;
            Bytes::from_static(b"tag")
        });
        let b = f.muxed(MuxSlot::new(0), |_| unreachable!("muxed twice"));
        assert_eq!(calls, 1);
        assert_eq!(a.as_ptr(), b.as_ptr());
    }
}
