//! AAC: AudioSpecificConfig (ISO 14496-3 §1.6.2.1) and ADTS headers (§1.A.2).

use bytes::Bytes;

/// Sampling frequencies by samplingFrequencyIndex (ISO 14496-3 Table 1.18).
pub const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Errors from parsing AAC configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AacError {
    /// Fewer than 2 bytes.
    #[error("truncated AudioSpecificConfig")]
    Truncated,
    /// samplingFrequencyIndex 13 or 14 (reserved).
    #[error("reserved sampling frequency index {0}")]
    BadFrequencyIndex(u8),
    /// audioObjectType 0.
    #[error("invalid audio object type {0}")]
    BadObjectType(u8),
}

/// What an AudioSpecificConfig says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacInfo {
    /// audioObjectType (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// channelConfiguration (1 mono, 2 stereo; 0 = defined in the PCE).
    pub channels: u8,
}

impl AacInfo {
    /// Parses an AudioSpecificConfig.
    pub fn parse(asc: &[u8]) -> Result<Self, AacError> {
        let mut r = crate::bits::BitReader::new(asc);
        let mut ot = r.bits(5).map_err(|_| AacError::Truncated)? as u8;
        if ot == 31 {
            ot = 32 + r.bits(6).map_err(|_| AacError::Truncated)? as u8;
        }
        if ot == 0 {
            return Err(AacError::BadObjectType(0));
        }
        let idx = r.bits(4).map_err(|_| AacError::Truncated)? as u8;
        let sample_rate = match idx {
            0..=12 => SAMPLE_RATES[usize::from(idx)],
            15 => r.bits(24).map_err(|_| AacError::Truncated)?,
            _ => return Err(AacError::BadFrequencyIndex(idx)),
        };
        let channels = r.bits(4).map_err(|_| AacError::Truncated)? as u8;
        Ok(Self {
            object_type: ot,
            sample_rate,
            channels,
        })
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// Builds a two-byte AudioSpecificConfig for a standard sampling rate.
    pub fn to_asc(&self) -> Option<Bytes> {
        let idx = SAMPLE_RATES.iter().position(|&r| r == self.sample_rate)? as u16;
        let ot = u16::from(self.object_type.min(30));
        let v = (ot << 11) | (idx << 7) | (u16::from(self.channels & 0x0f) << 3);
        Some(Bytes::copy_from_slice(&v.to_be_bytes()))
    }

    /// A 7-byte ADTS header (no CRC) for a raw frame of `payload_len` bytes (ISO 14496-3 §1.A.2.2).
    pub fn adts_header(&self, payload_len: usize) -> Option<[u8; 7]> {
        let idx = SAMPLE_RATES.iter().position(|&r| r == self.sample_rate)? as u8;
        let len = payload_len + 7;
        if len > 0x1fff {
            return None;
        }
        let profile = self.object_type.saturating_sub(1).min(3);
        let ch = self.channels & 7;
        Some([
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (profile << 6) | (idx << 2) | (ch >> 2),
            ((ch & 3) << 6) | ((len >> 11) as u8 & 3),
            (len >> 3) as u8,
            (((len & 7) as u8) << 5) | 0x1f,
            0xfc,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lc_44100_stereo() {
        // 0x12 0x10: object type 2, index 4 (44100), 2 channels.
        let info = AacInfo::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(
            info,
            AacInfo {
                object_type: 2,
                sample_rate: 44100,
                channels: 2
            }
        );
        assert_eq!(info.to_asc().unwrap().as_ref(), &[0x12, 0x10]);
        assert_eq!(info.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn lc_48000_mono() {
        let info = AacInfo {
            object_type: 2,
            sample_rate: 48000,
            channels: 1,
        };
        assert_eq!(info.to_asc().unwrap().as_ref(), &[0x11, 0x88]);
        assert_eq!(AacInfo::parse(&[0x11, 0x88]).unwrap(), info);
    }

    #[test]
    fn errors() {
        assert_eq!(AacInfo::parse(&[0x12]), Err(AacError::Truncated));
        assert_eq!(AacInfo::parse(&[]), Err(AacError::Truncated));
        assert_eq!(AacInfo::parse(&[0x16, 0x90]), Err(AacError::BadFrequencyIndex(13)));
        assert_eq!(AacInfo::parse(&[0x00, 0x10]), Err(AacError::BadObjectType(0)));
    }

    #[test]
    fn adts() {
        let info = AacInfo {
            object_type: 2,
            sample_rate: 44100,
            channels: 2,
        };
        // Frame of 100 bytes -> 107 total.
        assert_eq!(info.adts_header(100).unwrap(), [0xff, 0xf1, 0x50, 0x80, 0x0d, 0x7f, 0xfc]);
    }
}
