//! H.264: AVCDecoderConfigurationRecord (ISO 14496-15 §5.3.3.1), SPS parsing (H.264 §7.3.2.1.1)
//! and Annex-B <-> length-prefixed conversion.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bits::{nal_to_rbsp, BitReader, OutOfBits};

/// NAL unit types we act on (H.264 Table 7-1).
pub mod nal {
    /// Coded slice of an IDR picture.
    pub const IDR: u8 = 5;
    /// Supplemental enhancement information.
    pub const SEI: u8 = 6;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
}

/// Errors from parsing H.264 configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AvcError {
    /// The record or NAL unit ended early.
    #[error("truncated H.264 data")]
    Truncated,
    /// configurationVersion is not 1.
    #[error("unsupported AVCDecoderConfigurationRecord version {0}")]
    BadVersion(u8),
    /// The record holds no SPS or no PPS.
    #[error("AVC configuration without SPS or PPS")]
    MissingParameterSets,
    /// An SPS field is out of the range the standard allows.
    #[error("invalid SPS: {0}")]
    InvalidSps(&'static str),
    /// A length prefix points past the end of the data.
    #[error("NAL unit length {0} exceeds the remaining {1} bytes")]
    BadNalLength(usize, usize),
}

impl From<OutOfBits> for AvcError {
    fn from(_: OutOfBits) -> Self {
        AvcError::Truncated
    }
}

/// What a viewer or the API needs to know about an H.264 stream, from its SPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvcInfo {
    /// profile_idc (66 baseline, 77 main, 100 high, ...).
    pub profile: u8,
    /// constraint_set flags byte.
    pub compatibility: u8,
    /// level_idc (31 = 3.1).
    pub level: u8,
    /// Display width in pixels (after cropping).
    pub width: u32,
    /// Display height in pixels (after cropping).
    pub height: u32,
}

impl AvcInfo {
    /// RFC 6381 codec string, e.g. `avc1.42e01f`.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile, self.compatibility, self.level)
    }
}

/// Parses an SPS NAL unit (with its one-byte NAL header).
pub fn parse_sps(nal: &[u8]) -> Result<AvcInfo, AvcError> {
    if nal.len() < 4 {
        return Err(AvcError::Truncated);
    }
    if nal[0] & 0x1f != nal::SPS {
        return Err(AvcError::InvalidSps("not an SPS NAL unit"));
    }
    let rbsp = nal_to_rbsp(&nal[1..]);
    let mut r = BitReader::new(&rbsp);
    let profile = r.bits(8)? as u8;
    let compatibility = r.bits(8)? as u8;
    let level = r.bits(8)? as u8;
    let _sps_id = r.ue()?;
    let mut chroma_format_idc = 1;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(AvcError::InvalidSps("chroma_format_idc"));
        }
        let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
        if separate_colour_plane {
            chroma_format_idc = 0; // ChromaArrayType = 0
        }
        let _bit_depth_luma = r.ue()?;
        let _bit_depth_chroma = r.ue()?;
        let _qpprime_bypass = r.flag()?;
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc != 3 { 8 } else { 12 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    let _log2_max_frame_num = r.ue()?;
    match r.ue()? {
        0 => {
            let _log2_max_poc_lsb = r.ue()?;
        }
        1 => {
            let _delta_always_zero = r.flag()?;
            let _offset_non_ref = r.se()?;
            let _offset_top_bottom = r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(AvcError::InvalidSps("num_ref_frames_in_pic_order_cnt_cycle"));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        _ => return Err(AvcError::InvalidSps("pic_order_cnt_type")),
    }
    let _max_num_ref_frames = r.ue()?;
    let _gaps = r.flag()?;
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        let _mb_adaptive = r.flag()?;
    }
    let _direct_8x8 = r.flag()?;
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.flag()? {
        cl = r.ue()?.into();
        cr = r.ue()?.into();
        ct = r.ue()?.into();
        cb = r.ue()?.into();
    }
    // §7.4.2.1.1: CropUnitX/CropUnitY from ChromaArrayType.
    let (sub_w, sub_h) = match chroma_format_idc {
        1 => (2, 2),
        2 => (2, 1),
        _ => (1, 1),
    };
    let frame_factor = if frame_mbs_only { 1 } else { 2 };
    let (crop_x, crop_y) = if chroma_format_idc == 0 {
        (1, frame_factor)
    } else {
        (sub_w, sub_h * frame_factor)
    };
    let full_w = width_mbs * 16;
    let full_h = height_map_units * 16 * frame_factor;
    let crop_w = crop_x * (cl + cr);
    let crop_h = crop_y * (ct + cb);
    if crop_w >= full_w || crop_h >= full_h || full_w > 16384 || full_h > 16384 {
        return Err(AvcError::InvalidSps("picture size"));
    }
    Ok(AvcInfo {
        profile,
        compatibility,
        level,
        width: (full_w - crop_w) as u32,
        height: (full_h - crop_h) as u32,
    })
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), AvcError> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            // §7.4.2.1.1: delta_scale is in -128..=127.
            if !(-128..=127).contains(&delta) {
                return Err(AvcError::InvalidSps("delta_scale"));
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        last = if next == 0 { last } else { next };
    }
    Ok(())
}

/// A parsed AVCDecoderConfigurationRecord.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcDecoderConfig {
    /// AVCProfileIndication.
    pub profile: u8,
    /// profile_compatibility.
    pub compatibility: u8,
    /// AVCLevelIndication.
    pub level: u8,
    /// lengthSizeMinusOne + 1 (1, 2 or 4).
    pub length_size: u8,
    /// Sequence parameter sets (NAL units with header).
    pub sps: Vec<Bytes>,
    /// Picture parameter sets (NAL units with header).
    pub pps: Vec<Bytes>,
}

impl AvcDecoderConfig {
    /// Parses the record (ISO 14496-15 §5.3.3.1.2).
    pub fn parse(data: &[u8]) -> Result<Self, AvcError> {
        if data.len() < 7 {
            return Err(AvcError::Truncated);
        }
        if data[0] != 1 {
            return Err(AvcError::BadVersion(data[0]));
        }
        let length_size = (data[4] & 0x03) + 1;
        if length_size == 3 {
            return Err(AvcError::InvalidSps("lengthSizeMinusOne = 2"));
        }
        let mut pos = 5;
        let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, AvcError> {
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let len_bytes = data.get(*pos..*pos + 2).ok_or(AvcError::Truncated)?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                *pos += 2;
                let nal = data.get(*pos..*pos + len).ok_or(AvcError::Truncated)?;
                *pos += len;
                if !nal.is_empty() {
                    out.push(Bytes::copy_from_slice(nal));
                }
            }
            Ok(out)
        };
        let num_sps = usize::from(data[pos] & 0x1f);
        pos += 1;
        let sps = read_sets(num_sps, &mut pos)?;
        let num_pps = usize::from(*data.get(pos).ok_or(AvcError::Truncated)?);
        pos += 1;
        let pps = read_sets(num_pps, &mut pos)?;
        if sps.is_empty() || pps.is_empty() {
            return Err(AvcError::MissingParameterSets);
        }
        Ok(Self {
            profile: data[1],
            compatibility: data[2],
            level: data[3],
            length_size,
            sps,
            pps,
        })
    }

    /// Builds a record with 4-byte lengths from one SPS and its PPS list.
    pub fn from_parameter_sets(sps: &[u8], pps: &[&[u8]]) -> Result<Self, AvcError> {
        let info = parse_sps(sps)?;
        if pps.is_empty() {
            return Err(AvcError::MissingParameterSets);
        }
        Ok(Self {
            profile: info.profile,
            compatibility: info.compatibility,
            level: info.level,
            length_size: 4,
            sps: vec![Bytes::copy_from_slice(sps)],
            pps: pps.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
        })
    }

    /// What the first SPS says.
    pub fn info(&self) -> Result<AvcInfo, AvcError> {
        let sps = self.sps.first().ok_or(AvcError::MissingParameterSets)?;
        parse_sps(sps)
    }

    /// Serializes the record.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(1);
        b.put_u8(self.profile);
        b.put_u8(self.compatibility);
        b.put_u8(self.level);
        b.put_u8(0xfc | (self.length_size.saturating_sub(1) & 3));
        b.put_u8(0xe0 | (self.sps.len().min(31) as u8));
        for s in self.sps.iter().take(31) {
            b.put_u16(s.len() as u16);
            b.put_slice(s);
        }
        b.put_u8(self.pps.len().min(255) as u8);
        for p in self.pps.iter().take(255) {
            b.put_u16(p.len() as u16);
            b.put_slice(p);
        }
        b.freeze()
    }
}

/// Iterates over the NAL units of a length-prefixed access unit.
pub fn nal_units(data: &[u8], length_size: u8) -> impl Iterator<Item = Result<&[u8], AvcError>> {
    let ls = usize::from(length_size.clamp(1, 4));
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        let Some(prefix) = data.get(pos..pos + ls) else {
            pos = data.len();
            return Some(Err(AvcError::Truncated));
        };
        let len = prefix.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        pos += ls;
        let remaining = data.len() - pos;
        if len > remaining {
            pos = data.len();
            return Some(Err(AvcError::BadNalLength(len, remaining)));
        }
        let nal = &data[pos..pos + len];
        pos += len;
        Some(Ok(nal))
    })
}

/// Splits an Annex-B byte stream (00 00 01 / 00 00 00 01 start codes) into NAL units.
pub fn annexb_nal_units(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
        // Trailing zero bytes belong to the next 4-byte start code (or are trailing_zero_8bits).
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.push(&data[s..end]);
        }
    }
    out
}

/// Annex-B -> 4-byte length-prefixed.
pub fn annexb_to_avcc(data: &[u8]) -> Bytes {
    let nals = annexb_nal_units(data);
    let mut out = BytesMut::with_capacity(data.len() + nals.len());
    for n in nals {
        out.put_u32(n.len() as u32);
        out.put_slice(n);
    }
    out.freeze()
}

/// Length-prefixed -> Annex-B with 4-byte start codes.
pub fn avcc_to_annexb(data: &[u8], length_size: u8) -> Result<Vec<u8>, AvcError> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in nal_units(data, length_size) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal?);
    }
    Ok(out)
}

/// True when the access unit contains an IDR slice.
pub fn contains_idr(data: &[u8], length_size: u8) -> bool {
    nal_units(data, length_size).any(|n| matches!(n, Ok(n) if n.first().is_some_and(|h| h & 0x1f == nal::IDR)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS written by x264 (ffmpeg -c:v libx264 -s 1280x720, High profile, level 3.1).
    const X264_SPS_720P: &[u8] = include_bytes!("../testdata/x264_1280x720.sps");

    /// SPS written by OpenH264 in Chromium 156 for WebRTC (tests/browser/tools/capture_openh264_sps.mjs).
    const OPENH264_SPS_480P: &[u8] = include_bytes!("../testdata/openh264_640x480.sps");
    /// x264 at 320x180 (cropping: 180 is not a multiple of 16).
    const X264_SPS_180P: &[u8] = include_bytes!("../testdata/x264_320x180.sps");

    #[test]
    fn x264_sps() {
        let info = parse_sps(X264_SPS_720P).unwrap();
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.profile, 100);
        assert_eq!(info.level, 31);
        assert_eq!(info.codec_string(), "avc1.64001f");
    }

    #[test]
    fn x264_sps_cropped() {
        let info = parse_sps(X264_SPS_180P).unwrap();
        assert_eq!((info.width, info.height), (320, 180));
    }

    #[test]
    fn openh264_sps() {
        let info = parse_sps(OPENH264_SPS_480P).unwrap();
        assert_eq!((info.width, info.height), (640, 480));
        assert_eq!((info.profile, info.compatibility, info.level), (66, 0xc0, 31));
        assert_eq!(info.codec_string(), "avc1.42c01f");
    }

    #[test]
    fn sps_hand_vector() {
        // Baseline 3.0, 176x144 (11x9 macroblocks), POC type 2, no cropping.
        // 42 00 1e | ue(0)=1 | ue(0)=1 log2_max_frame_num-4 | ue(2)=011 poc type |
        // ue(1)=010 refs | 0 gaps | ue(10)=0001011 | ue(8)=0001001 | 1 frame_mbs_only | 1 direct | 0 crop | 0 vui | 1 stop
        let sps = [0x67, 0x42, 0x00, 0x1e, 0b1101_1010, 0b0000_1011, 0b0001_0011, 0b1001_0000];
        let info = parse_sps(&sps).unwrap();
        assert_eq!((info.width, info.height), (176, 144));
    }

    #[test]
    fn truncated_sps_is_an_error() {
        // The fields up to frame cropping end in byte 9; every shorter prefix must be refused.
        for n in 0..9 {
            assert!(parse_sps(&X264_SPS_720P[..n]).is_err(), "prefix {n}");
        }
        for n in 9..X264_SPS_720P.len() {
            let _ = parse_sps(&X264_SPS_720P[..n]); // must not panic
        }
    }

    #[test]
    fn hostile_scaling_list_is_refused() {
        // Found by cargo fuzz (avc_config): a delta_scale of 2^31 overflowed the arithmetic.
        let data = [
            0xc7, 0x76, 0x01, 0x00, 0x00, 0xc7, 0x76, 0x01, 0x00, 0x00, 0xc7, 0x23, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0, 0,
        ];
        let _ = parse_sps(&data);
        let mut sps = vec![0x67, 100, 0, 31];
        // ue(0) sps_id, ue(1) chroma 4:2:0, ue(0), ue(0), flag 0, scaling matrix present 1,
        // list 0 present 1, then se() with 31 leading zeros.
        sps.extend_from_slice(&[0b1010_1100, 0b1100_0000, 0, 0, 0, 0b0000_0001, 0xff, 0xff, 0xff, 0xff]);
        assert!(parse_sps(&sps).is_err());
    }

    #[test]
    fn record_round_trip() {
        let pps = [0x68u8, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        let rec = AvcDecoderConfig::from_parameter_sets(X264_SPS_720P, &[&pps]).unwrap();
        let bytes = rec.to_bytes();
        assert_eq!(&bytes[..6], &[1, 100, 0, 31, 0xff, 0xe1]);
        let back = AvcDecoderConfig::parse(&bytes).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.info().unwrap().width, 1280);
    }

    #[test]
    fn record_errors() {
        assert_eq!(AvcDecoderConfig::parse(&[1, 2, 3]), Err(AvcError::Truncated));
        assert_eq!(
            AvcDecoderConfig::parse(&[0, 66, 0, 30, 0xff, 0xe1, 0, 4]),
            Err(AvcError::BadVersion(0))
        );
        // Claims one SPS of 0x100 bytes with only 2 present.
        assert_eq!(
            AvcDecoderConfig::parse(&[1, 66, 0, 30, 0xff, 0xe1, 1, 0, 0x67, 0x42]),
            Err(AvcError::Truncated)
        );
        // No PPS.
        assert_eq!(
            AvcDecoderConfig::parse(&[1, 66, 0, 30, 0xff, 0xe1, 0, 2, 0x67, 0x42, 0]),
            Err(AvcError::MissingParameterSets)
        );
    }

    #[test]
    fn annexb_conversion() {
        let annexb = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 6];
        let avcc = annexb_to_avcc(&annexb);
        assert_eq!(&avcc[..], &[0, 0, 0, 3, 0x67, 1, 2, 0, 0, 0, 2, 0x68, 3, 0, 0, 0, 4, 0x65, 4, 5, 6]);
        assert!(contains_idr(&avcc, 4));
        let back = avcc_to_annexb(&avcc, 4).unwrap();
        assert_eq!(back, [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5, 6]);
    }

    #[test]
    fn bad_length_prefix() {
        let data = [0, 0, 0, 9, 0x65, 1];
        assert_eq!(avcc_to_annexb(&data, 4), Err(AvcError::BadNalLength(9, 2)));
        assert!(!contains_idr(&data, 4));
    }
}
