//! RTMP publish: FLV tag bodies (video_file_format_spec_v10_1 §E.4.2, §E.4.3) to hub frames.
//!
//! Sans-IO: the connection task feeds what the RTMP session reported and hands the outputs to
//! the hub's [`media::Publisher`].

use bytes::{BufMut, Bytes, BytesMut};
use media::avc::{nal_units, AvcDecoderConfig};
use media::flv::{
    audio_codec_name, audio_header, video_codec_name, video_header, AudioHeader, Packet, VideoHeader, AAC_HEADER_LEN, AVC_HEADER_LEN,
};
use media::{AudioConfig, MediaFrame, Timebase, VideoConfig};

/// Errors that refuse the publisher (sent back as an RTMP status message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IngestError {
    /// A video codec streamgate cannot carry to every egress.
    #[error("unsupported video codec {0}: streamgate carries H.264 (AVC) video")]
    UnsupportedVideo(String),
    /// An audio codec streamgate cannot carry to every egress.
    #[error("unsupported audio codec {0}: streamgate carries AAC audio")]
    UnsupportedAudio(String),
    /// The AVC sequence header did not parse.
    #[error("invalid AVC sequence header: {0}")]
    BadVideoConfig(#[from] media::avc::AvcError),
    /// The AAC sequence header did not parse.
    #[error("invalid AAC sequence header: {0}")]
    BadAudioConfig(#[from] media::aac::AacError),
    /// A media message too short for its header.
    #[error("truncated {0} message")]
    Truncated(&'static str),
}

/// What a message turned into.
#[derive(Debug)]
pub enum IngestOutput {
    /// A (possibly unchanged) video configuration.
    VideoConfig(VideoConfig),
    /// A (possibly unchanged) audio configuration.
    AudioConfig(AudioConfig),
    /// A frame.
    Frame(MediaFrame),
}

/// Converts one RTMP publisher's messages into hub inputs.
pub struct RtmpIngest {
    length_size: u8,
    last_raw: Option<u32>,
    wraps: i64,
}

impl Default for RtmpIngest {
    fn default() -> Self {
        Self::new()
    }
}

impl RtmpIngest {
    /// A fresh converter.
    pub fn new() -> Self {
        // NAL length prefixes are 4 bytes until an AVC sequence header says otherwise.
        Self {
            length_size: 4,
            last_raw: None,
            wraps: 0,
        }
    }

    /// Extends RTMP's wrapping 32-bit millisecond timestamps.
    fn unwrap_ts(&mut self, raw: u32) -> i64 {
        if let Some(last) = self.last_raw {
            if raw < last && last - raw > 0x8000_0000 {
                self.wraps += 1;
            } else if raw > last && raw - last > 0x8000_0000 && self.wraps > 0 {
                // A late message from before the wrap.
                return (self.wraps - 1) * (1 << 32) + i64::from(raw);
            }
        }
        self.last_raw = Some(raw);
        self.wraps * (1 << 32) + i64::from(raw)
    }

    /// A video message (FLV VIDEODATA).
    pub fn video(&mut self, timestamp: u32, payload: &Bytes) -> Result<Option<IngestOutput>, IngestError> {
        if payload.is_empty() {
            return Ok(None);
        }
        let (keyframe, packet, cts) = match video_header(payload) {
            VideoHeader::Avc {
                keyframe,
                packet,
                composition_ms,
            } => (keyframe, packet, i64::from(composition_ms)),
            VideoHeader::Command => return Ok(None), // video info/command frame
            VideoHeader::Enhanced(fourcc) => {
                let fourcc = String::from_utf8_lossy(&fourcc).trim_end_matches('\0').to_owned();
                return Err(IngestError::UnsupportedVideo(format!("'{fourcc}' (enhanced RTMP)")));
            }
            VideoHeader::OtherCodec(id) => return Err(IngestError::UnsupportedVideo(video_codec_name(id))),
            VideoHeader::Truncated => return Err(IngestError::Truncated("video")),
        };
        let dts = self.unwrap_ts(timestamp);
        match packet {
            Packet::SequenceHeader => {
                let record = AvcDecoderConfig::parse(&payload[AVC_HEADER_LEN..])?;
                self.length_size = record.length_size;
                let config = VideoConfig::from_avcc(payload.slice(AVC_HEADER_LEN..))?;
                Ok(Some(IngestOutput::VideoConfig(config)))
            }
            Packet::Data => {
                let body = payload.slice(AVC_HEADER_LEN..);
                if body.is_empty() {
                    return Ok(None);
                }
                let data = if self.length_size == 4 {
                    body
                } else {
                    self.to_four_byte_lengths(&body)?
                };
                Ok(Some(IngestOutput::Frame(MediaFrame::video(
                    dts + cts,
                    dts,
                    Timebase::MILLIS,
                    keyframe,
                    data,
                ))))
            }
            Packet::Other(_) => Ok(None), // end of sequence
        }
    }

    fn to_four_byte_lengths(&self, body: &[u8]) -> Result<Bytes, IngestError> {
        let mut out = BytesMut::with_capacity(body.len() + 16);
        for nal in nal_units(body, self.length_size) {
            let nal = nal?;
            out.put_u32(nal.len() as u32);
            out.put_slice(nal);
        }
        Ok(out.freeze())
    }

    /// An audio message (FLV AUDIODATA).
    pub fn audio(&mut self, timestamp: u32, payload: &Bytes) -> Result<Option<IngestOutput>, IngestError> {
        if payload.is_empty() {
            return Ok(None);
        }
        let packet = match audio_header(payload) {
            AudioHeader::Aac(p) => p,
            AudioHeader::OtherFormat(f) => return Err(IngestError::UnsupportedAudio(audio_codec_name(f))),
            AudioHeader::Truncated => return Err(IngestError::Truncated("audio")),
        };
        let ts = self.unwrap_ts(timestamp);
        match packet {
            Packet::SequenceHeader => Ok(Some(IngestOutput::AudioConfig(AudioConfig::from_asc(
                payload.slice(AAC_HEADER_LEN..),
            )?))),
            _ if payload.len() > AAC_HEADER_LEN => Ok(Some(IngestOutput::Frame(MediaFrame::audio(
                ts,
                Timebase::MILLIS,
                payload.slice(AAC_HEADER_LEN..),
            )))),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avc_seq_header() -> Bytes {
        let sps = [0x67, 0x42, 0x00, 0x1e, 0b1101_1010, 0b0000_1011, 0b0001_0011, 0b1001_0000];
        let rec = AvcDecoderConfig::from_parameter_sets(&sps, &[&[0x68, 0xce, 0x38, 0x80]]).unwrap();
        let mut b = BytesMut::from(&[0x17u8, 0, 0, 0, 0][..]);
        b.put_slice(&rec.to_bytes());
        b.freeze()
    }

    #[test]
    fn avc_config_and_frames() {
        let mut ing = RtmpIngest::new();
        match ing.video(0, &avc_seq_header()).unwrap() {
            Some(IngestOutput::VideoConfig(c)) => assert_eq!((c.info.width, c.info.height), (176, 144)),
            other => panic!("{other:?}"),
        }
        // Keyframe with composition offset 66 ms.
        let msg = Bytes::from_static(&[0x17, 1, 0, 0, 66, 0, 0, 0, 2, 0x65, 0x88]);
        match ing.video(1000, &msg).unwrap() {
            Some(IngestOutput::Frame(f)) => {
                assert!(f.keyframe);
                assert_eq!((f.dts, f.pts), (1000, 1066));
                assert_eq!(&f.data[..], &[0, 0, 0, 2, 0x65, 0x88]);
            }
            other => panic!("{other:?}"),
        }
        // Negative composition offset (SI24 -1).
        let msg = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0x41]);
        match ing.video(1033, &msg).unwrap() {
            Some(IngestOutput::Frame(f)) => assert_eq!((f.keyframe, f.pts), (false, 1032)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unsupported_codecs_refused_by_name() {
        let mut ing = RtmpIngest::new();
        assert_eq!(
            ing.video(0, &Bytes::from_static(&[0x1c, 0, 0, 0, 0])).unwrap_err(),
            IngestError::UnsupportedVideo("HEVC".into())
        );
        assert_eq!(
            ing.video(0, &Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1'])).unwrap_err(),
            IngestError::UnsupportedVideo("'hvc1' (enhanced RTMP)".into())
        );
        assert_eq!(
            ing.audio(0, &Bytes::from_static(&[0x2f, 0xff])).unwrap_err(),
            IngestError::UnsupportedAudio("MP3".into())
        );
        let e = ing.audio(0, &Bytes::from_static(&[0x2f])).unwrap_err();
        assert_eq!(e.to_string(), "unsupported audio codec MP3: streamgate carries AAC audio");
    }

    #[test]
    fn aac() {
        let mut ing = RtmpIngest::new();
        match ing.audio(0, &Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap() {
            Some(IngestOutput::AudioConfig(c)) => assert_eq!(c.info.sample_rate, 44100),
            other => panic!("{other:?}"),
        }
        match ing.audio(23, &Bytes::from_static(&[0xaf, 1, 0x21, 0x10])).unwrap() {
            Some(IngestOutput::Frame(f)) => assert_eq!((f.pts, &f.data[..]), (23, &[0x21u8, 0x10][..])),
            other => panic!("{other:?}"),
        }
        assert!(ing.audio(0, &Bytes::from_static(&[0xaf, 0, 0x16])).is_err());
    }

    #[test]
    fn malformed_video() {
        let mut ing = RtmpIngest::new();
        assert_eq!(
            ing.video(0, &Bytes::from_static(&[0x17, 1])).unwrap_err(),
            IngestError::Truncated("video")
        );
        assert!(matches!(
            ing.video(0, &Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2])),
            Err(IngestError::BadVideoConfig(_))
        ));
        assert!(ing.video(0, &Bytes::new()).unwrap().is_none());
    }

    #[test]
    fn timestamp_wrap() {
        let mut ing = RtmpIngest::new();
        assert_eq!(ing.unwrap_ts(0xffff_fff0), 0xffff_fff0);
        assert_eq!(ing.unwrap_ts(0x10), 0x1_0000_0010);
        assert_eq!(ing.unwrap_ts(0xffff_fff8), 0xffff_fff8); // late, from before the wrap
        assert_eq!(ing.unwrap_ts(0x20), 0x1_0000_0020);
    }
}
