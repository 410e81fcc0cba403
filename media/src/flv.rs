//! FLV tag bodies (video_file_format_spec_v10_1 §E.4.2 VIDEODATA, §E.4.3 AUDIODATA): the one
//! place that knows their header bytes. RTMP ingest reads them ([`video_header`],
//! [`audio_header`]); FLV and RTMP play write them ([`avc_header`], [`aac_header`]); RTMP push
//! will write them too. Tag framing (the 11-byte tag header, PreviousTagSize) is FLV-file
//! business and stays in `egress::flv`.

/// SoundFormat 10: AAC.
pub const SOUND_AAC: u8 = 10;
/// CodecID 7: AVC.
pub const CODEC_AVC: u8 = 7;

/// AVCPacketType / AACPacketType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// AVCDecoderConfigurationRecord / AudioSpecificConfig.
    SequenceHeader,
    /// NAL units / a raw AAC frame.
    Data,
    /// AVC end of sequence (or a packet type FLV does not define).
    Other(u8),
}

impl Packet {
    fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::SequenceHeader,
            1 => Self::Data,
            other => Self::Other(other),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Self::SequenceHeader => 0,
            Self::Data => 1,
            Self::Other(b) => b,
        }
    }
}

/// What a VIDEODATA header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoHeader {
    /// AVC: the payload follows the 5-byte header.
    Avc {
        /// FrameType 1 (keyframe).
        keyframe: bool,
        /// AVCPacketType.
        packet: Packet,
        /// CompositionTime (SI24), milliseconds.
        composition_ms: i32,
    },
    /// FrameType 5: video info/command frame (no picture).
    Command,
    /// Enhanced RTMP (IsExHeader): the FourCC that follows.
    Enhanced([u8; 4]),
    /// Another legacy CodecID.
    OtherCodec(u8),
    /// Too short for its header.
    Truncated,
}

/// Reads a VIDEODATA header; the AVC payload starts at [`AVC_HEADER_LEN`].
pub fn video_header(body: &[u8]) -> VideoHeader {
    let Some(&b0) = body.first() else {
        return VideoHeader::Truncated;
    };
    if b0 & 0x80 != 0 {
        let mut fourcc = [0u8; 4];
        if let Some(f) = body.get(1..5) {
            fourcc.copy_from_slice(f);
        }
        return VideoHeader::Enhanced(fourcc);
    }
    let (frame_type, codec) = (b0 >> 4, b0 & 0x0f);
    if codec != CODEC_AVC {
        return VideoHeader::OtherCodec(codec);
    }
    if frame_type == 5 {
        return VideoHeader::Command;
    }
    let Some(h) = body.get(1..AVC_HEADER_LEN) else {
        return VideoHeader::Truncated;
    };
    let raw = (u32::from(h[1]) << 16) | (u32::from(h[2]) << 8) | u32::from(h[3]);
    VideoHeader::Avc {
        keyframe: frame_type == 1,
        packet: Packet::from_byte(h[0]),
        composition_ms: (raw << 8) as i32 >> 8,
    }
}

/// Bytes of an AVC VIDEODATA header.
pub const AVC_HEADER_LEN: usize = 5;

/// An AVC VIDEODATA header; the composition time is clamped to SI24.
pub fn avc_header(keyframe: bool, packet: Packet, composition_ms: i64) -> [u8; AVC_HEADER_LEN] {
    let cts = composition_ms.clamp(-(1 << 23), (1 << 23) - 1) as i32;
    let c = cts.to_be_bytes();
    let frame_type: u8 = if keyframe { 1 } else { 2 };
    [frame_type << 4 | CODEC_AVC, packet.byte(), c[1], c[2], c[3]]
}

/// What an AUDIODATA header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioHeader {
    /// AAC: the payload follows the 2-byte header.
    Aac(Packet),
    /// Another SoundFormat.
    OtherFormat(u8),
    /// Too short for its header.
    Truncated,
}

/// Reads an AUDIODATA header; the AAC payload starts at [`AAC_HEADER_LEN`].
pub fn audio_header(body: &[u8]) -> AudioHeader {
    let Some(&b0) = body.first() else {
        return AudioHeader::Truncated;
    };
    if b0 >> 4 != SOUND_AAC {
        return AudioHeader::OtherFormat(b0 >> 4);
    }
    match body.get(1) {
        Some(&p) => AudioHeader::Aac(Packet::from_byte(p)),
        None => AudioHeader::Truncated,
    }
}

/// Bytes of an AAC AUDIODATA header.
pub const AAC_HEADER_LEN: usize = 2;

/// An AAC AUDIODATA header (SoundRate, SoundSize and SoundType are fixed for AAC: 44 kHz,
/// 16-bit, stereo; the AudioSpecificConfig says the truth).
pub fn aac_header(packet: Packet) -> [u8; AAC_HEADER_LEN] {
    [SOUND_AAC << 4 | 0x0f, packet.byte()]
}

/// A legacy video CodecID for a person.
pub fn video_codec_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "VP6".into(),
        5 => "VP6 alpha".into(),
        6 => "Screen video 2".into(),
        12 => "HEVC".into(),
        13 => "AV1".into(),
        other => format!("id {other}"),
    }
}

/// A SoundFormat for a person.
pub fn audio_codec_name(id: u8) -> String {
    match id {
        0 | 3 => "linear PCM".into(),
        1 => "ADPCM".into(),
        2 | 14 => "MP3".into(),
        4..=6 => "Nellymoser".into(),
        7 => "G.711 A-law".into(),
        8 => "G.711 mu-law".into(),
        11 => "Speex".into(),
        13 => "Opus".into(),
        other => format!("id {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What is written reads back the same (the two sides can no longer drift apart).
    #[test]
    fn headers_round_trip() {
        for (key, packet, cts) in [
            (true, Packet::SequenceHeader, 0),
            (true, Packet::Data, 66),
            (false, Packet::Data, -10),
            (false, Packet::Data, (1 << 23) - 1),
        ] {
            let h = avc_header(key, packet, cts);
            assert_eq!(
                video_header(&h),
                VideoHeader::Avc {
                    keyframe: key,
                    packet,
                    composition_ms: cts as i32
                }
            );
        }
        assert_eq!(avc_header(true, Packet::SequenceHeader, 0), [0x17, 0, 0, 0, 0]);
        assert_eq!(avc_header(false, Packet::Data, -10), [0x27, 1, 0xff, 0xff, 0xf6]);
        assert_eq!(avc_header(false, Packet::Data, 1 << 40), [0x27, 1, 0x7f, 0xff, 0xff], "clamped");
        assert_eq!(aac_header(Packet::SequenceHeader), [0xaf, 0]);
        assert_eq!(aac_header(Packet::Data), [0xaf, 1]);
        assert_eq!(audio_header(&aac_header(Packet::Data)), AudioHeader::Aac(Packet::Data));
    }

    #[test]
    fn other_and_short_headers() {
        assert_eq!(video_header(&[]), VideoHeader::Truncated);
        assert_eq!(video_header(&[0x17, 1]), VideoHeader::Truncated);
        assert_eq!(video_header(&[0x57, 0]), VideoHeader::Command);
        assert_eq!(video_header(&[0x1c, 1, 0, 0, 0]), VideoHeader::OtherCodec(12));
        assert_eq!(video_header(b"\x90hvc1"), VideoHeader::Enhanced(*b"hvc1"));
        assert_eq!(video_header(&[0x90]), VideoHeader::Enhanced([0; 4]));
        assert_eq!(audio_header(&[0x2f, 1]), AudioHeader::OtherFormat(2));
        assert_eq!(audio_header(&[0xaf]), AudioHeader::Truncated);
        assert_eq!(video_codec_name(12), "HEVC");
        assert_eq!(audio_codec_name(13), "Opus");
    }
}
