//! FLV muxing (video_file_format_spec_v10_1 Annex E): header, tags, PreviousTagSize. The tag
//! bodies' headers come from `media::flv`, which RTMP ingest reads them with.

use bytes::{BufMut, Bytes, BytesMut};
use media::flv::{aac_header, avc_header, Packet, AAC_HEADER_LEN, AVC_HEADER_LEN, SOUND_AAC};
use media::hub::Tracks;
use media::{AudioConfig, HubEvent, MediaFrame, TrackKind, VideoConfig};

use crate::viewer::{timestamp_ms, Step, ViewerState};
use rtmp::amf0::{self, Amf0Value};

/// FLV tag types.
pub mod tag {
    /// Audio tag.
    pub const AUDIO: u8 = 8;
    /// Video tag.
    pub const VIDEO: u8 = 9;
    /// Script data tag (onMetaData).
    pub const SCRIPT: u8 = 18;
}

/// The 9-byte FLV header followed by PreviousTagSize0.
pub fn header(tracks: Tracks) -> Bytes {
    let flags = (u8::from(tracks.audio) << 2) | u8::from(tracks.video);
    Bytes::copy_from_slice(&[b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
}

/// One tag (11-byte header, body, 4-byte PreviousTagSize) from body parts.
pub fn tag(tag_type: u8, timestamp: u32, body: &[&[u8]]) -> Bytes {
    let size: usize = body.iter().map(|b| b.len()).sum();
    let mut out = BytesMut::with_capacity(11 + size + 4);
    out.put_u8(tag_type);
    out.put_slice(&(size as u32).to_be_bytes()[1..]);
    out.put_slice(&timestamp.to_be_bytes()[1..]);
    out.put_u8((timestamp >> 24) as u8);
    out.put_slice(&[0, 0, 0]);
    for b in body {
        out.put_slice(b);
    }
    out.put_u32((11 + size) as u32);
    out.freeze()
}

/// VIDEODATA header for an AVC NALU packet: frame type, codec 7, packet type 1, SI24 composition time.
pub fn video_frame_prefix(frame: &MediaFrame) -> [u8; AVC_HEADER_LEN] {
    avc_header(frame.keyframe, Packet::Data, frame.pts_ms() - frame.dts_ms())
}

/// AUDIODATA header for raw AAC.
pub const AUDIO_FRAME_PREFIX: [u8; AAC_HEADER_LEN] = [SOUND_AAC << 4 | 0x0f, 1];

/// The tag of a frame, muxed once and shared by every FLV viewer. A keyframe that the hub
/// stamped with its arrival time carries it in a SEI NAL unit first ([`wall_clock_sei`]).
pub fn frame_tag(frame: &MediaFrame) -> Bytes {
    frame.muxed(crate::slots::FLV, |f| {
        let ts = timestamp_ms(f.dts_ms());
        match f.track {
            TrackKind::Video if f.keyframe && f.arrival_ms > 0 => {
                let sei = wall_clock_sei(f.arrival_ms);
                let len = (sei.len() as u32).to_be_bytes();
                tag(tag::VIDEO, ts, &[&video_frame_prefix(f), &len, &sei, &f.data])
            }
            TrackKind::Video => tag(tag::VIDEO, ts, &[&video_frame_prefix(f), &f.data]),
            TrackKind::Audio => tag(tag::AUDIO, ts, &[&AUDIO_FRAME_PREFIX, &f.data]),
        }
    })
}

/// The UUID of streamgate's wall-clock SEI (user_data_unregistered): the 16 bytes of
/// "streamgate-wall!" (ASCII).
pub const WALL_CLOCK_UUID: [u8; 16] = *b"streamgate-wall!";

/// An H.264 SEI NAL unit (type 6; ITU-T H.264 D.1.7 user_data_unregistered, payload type 5)
/// that says when the gateway received this keyframe: [`WALL_CLOCK_UUID`], then the Unix time
/// in milliseconds as 8 bytes big-endian. Decoders skip it; players read it (mpegts.js:
/// `SEI_ARRIVED`, with the frame's pts) to show how far behind live they are
/// (docs/protocols.md, FLV "Wall clock"). Emulation prevention bytes are inserted.
pub fn wall_clock_sei(unix_ms: i64) -> Vec<u8> {
    let mut rbsp = Vec::with_capacity(2 + 24 + 1);
    rbsp.push(5); // payload type: user_data_unregistered
    rbsp.push(24); // payload size: UUID + 8 bytes
    rbsp.extend_from_slice(&WALL_CLOCK_UUID);
    rbsp.extend_from_slice(&unix_ms.to_be_bytes());
    rbsp.push(0x80); // rbsp_trailing_bits
    let mut nal = Vec::with_capacity(rbsp.len() + 4);
    nal.push(0x06); // forbidden_zero_bit 0, nal_ref_idc 0, nal_unit_type 6 (SEI)
    let mut zeros = 0;
    for b in rbsp {
        if zeros >= 2 && b <= 3 {
            nal.push(3);
            zeros = 0;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        nal.push(b);
    }
    nal
}

/// AVC sequence header body.
pub fn video_config_body(c: &VideoConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + c.avcc.len());
    b.put_slice(&avc_header(true, Packet::SequenceHeader, 0));
    b.put_slice(&c.avcc);
    b.freeze()
}

/// AAC sequence header body.
pub fn audio_config_body(c: &AudioConfig) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + c.asc.len());
    b.put_slice(&aac_header(Packet::SequenceHeader));
    b.put_slice(&c.asc);
    b.freeze()
}

/// `onMetaData` script data describing the stream.
pub fn metadata_body(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut props = vec![("duration".to_owned(), Amf0Value::Number(0.0))];
    if let Some(v) = video {
        props.push(("width".into(), Amf0Value::Number(f64::from(v.info.width))));
        props.push(("height".into(), Amf0Value::Number(f64::from(v.info.height))));
        props.push(("videocodecid".into(), Amf0Value::Number(7.0)));
    }
    if let Some(a) = audio {
        props.push(("audiocodecid".into(), Amf0Value::Number(10.0)));
        props.push(("audiosamplerate".into(), Amf0Value::Number(f64::from(a.info.sample_rate))));
        props.push(("audiosamplesize".into(), Amf0Value::Number(16.0)));
        props.push(("stereo".into(), Amf0Value::Boolean(a.info.channels >= 2)));
    }
    props.push((
        "encoder".into(),
        Amf0Value::string(concat!("streamgate ", env!("CARGO_PKG_VERSION"))),
    ));
    amf0::encode_all(&[Amf0Value::string("onMetaData"), Amf0Value::EcmaArray(props)]).freeze()
}

/// Per-viewer FLV state: header and metadata before the first frame, a sequence header when
/// (and only when) the configuration changes, then the shared frame tags.
#[derive(Default)]
pub struct FlvViewer {
    state: ViewerState,
}

impl FlvViewer {
    /// A viewer that has received nothing yet.
    pub fn new() -> Self {
        Self { state: ViewerState::new() }
    }

    /// True once the FLV header went out.
    pub fn started(&self) -> bool {
        self.state.started()
    }

    /// Appends the byte chunks this event produces for the viewer.
    pub fn on_event(&mut self, ev: HubEvent, out: &mut Vec<Bytes>) {
        self.state.on_event(ev, |step| match step {
            Step::Start { tracks, video, audio, ts } => {
                out.push(header(tracks));
                // FFmpeg's FLV demuxer treats a script tag as stream metadata only at timestamp
                // 0; at any other time it surfaces as a data stream.
                out.push(tag(tag::SCRIPT, 0, &[&metadata_body(video, audio)]));
                if let Some(v) = video {
                    out.push(tag(tag::VIDEO, ts, &[&video_config_body(v)]));
                }
                if let Some(a) = audio {
                    out.push(tag(tag::AUDIO, ts, &[&audio_config_body(a)]));
                }
            }
            Step::VideoConfig(c, ts) => out.push(tag(tag::VIDEO, ts, &[&video_config_body(c)])),
            Step::AudioConfig(c, ts) => out.push(tag(tag::AUDIO, ts, &[&audio_config_body(c)])),
            Step::Frame(f) => out.push(frame_tag(f)),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use media::Timebase;

    #[test]
    fn header_flags() {
        assert_eq!(
            &header(Tracks { video: true, audio: true })[..],
            b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"
        );
        assert_eq!(header(Tracks { video: false, audio: true })[4], 0x04);
        assert_eq!(header(Tracks { video: true, audio: false })[4], 0x01);
    }

    #[test]
    fn video_tag_hand_vector() {
        // Keyframe, dts 0x01020304 ms (extended byte 0x01), pts = dts + 40, one 2-byte NAL.
        let f = MediaFrame::video(
            0x0102_0304 + 40,
            0x0102_0304,
            Timebase::MILLIS,
            true,
            Bytes::from_static(&[0, 0, 0, 2, 0x65, 0xaa]),
        );
        let t = frame_tag(&f);
        let expected: &[u8] = &[
            9, 0, 0, 11, // type, data size 5 + 6
            0x02, 0x03, 0x04, 0x01, // timestamp lower 24 bits, then the upper 8
            0, 0, 0, // stream id
            0x17, 1, 0, 0, 40, // key AVC NALU, cts 40
            0, 0, 0, 2, 0x65, 0xaa, // data
            0, 0, 0, 22, // previous tag size 11 + 11
        ];
        assert_eq!(&t[..], expected);
        // Cached: the same allocation again.
        assert_eq!(frame_tag(&f).as_ptr(), t.as_ptr());
    }

    #[test]
    fn a_stamped_keyframe_carries_its_arrival_in_a_sei_first() {
        let mut f = MediaFrame::video(40, 0, Timebase::MILLIS, true, Bytes::from_static(&[0, 0, 0, 2, 0x65, 0xaa]));
        f.arrival_ms = 1_800_000_000_123;
        let t = frame_tag(&f);
        let body = &t[11..t.len() - 4];
        assert_eq!(&body[..5], &[0x17, 1, 0, 0, 40]);
        let len = u32::from_be_bytes(body[5..9].try_into().unwrap()) as usize;
        let sei = &body[9..9 + len];
        assert_eq!(sei, &wall_clock_sei(1_800_000_000_123)[..]);
        // Today's Unix ms begin 00 00 01: escaped as 00 00 03 01.
        let rbsp = unescape(&sei[1..]);
        assert_eq!(sei[0], 0x06);
        assert_eq!(&rbsp[..2], &[5, 24]);
        assert_eq!(&rbsp[2..18], b"streamgate-wall!");
        assert_eq!(i64::from_be_bytes(rbsp[18..26].try_into().unwrap()), 1_800_000_000_123);
        assert_eq!(rbsp[26..], [0x80]);
        // Then the frame's own NAL units, unchanged.
        assert_eq!(&body[9 + len..], &[0, 0, 0, 2, 0x65, 0xaa]);
        // Interframes and unstamped keyframes carry none.
        let mut p = MediaFrame::video(80, 40, Timebase::MILLIS, false, Bytes::from_static(&[0, 0, 0, 2, 0x41, 0xaa]));
        p.arrival_ms = 1_800_000_000_163;
        assert_eq!(frame_tag(&p).len(), 11 + 5 + 6 + 4);
    }

    #[test]
    fn the_wall_clock_sei_escapes_start_code_patterns() {
        // 00 00 00 01 00 00 00 00: an emulation prevention byte before each third byte <= 3
        // that follows two zeros.
        let sei = wall_clock_sei(0x0000_0001_0000_0000);
        assert_eq!(&sei[19..], &[0, 0, 3, 0, 1, 0, 0, 3, 0, 0, 0x80]);
        // Unescaped, it reads back.
        let rbsp = unescape(&sei[1..]);
        assert_eq!(i64::from_be_bytes(rbsp[18..26].try_into().unwrap()), 0x0000_0001_0000_0000);
        // Without zero runs nothing is added.
        assert_eq!(wall_clock_sei(0x0123_4567_89ab_cdef).len(), 1 + 2 + 16 + 8 + 1);
    }

    /// EBSP to RBSP: drops each 03 that follows two zeros (as decoders do).
    fn unescape(ebsp: &[u8]) -> Vec<u8> {
        let mut rbsp = Vec::new();
        let mut zeros = 0;
        for &b in ebsp {
            if zeros >= 2 && b == 3 {
                zeros = 0;
                continue;
            }
            zeros = if b == 0 { zeros + 1 } else { 0 };
            rbsp.push(b);
        }
        rbsp
    }

    #[test]
    fn audio_tag_hand_vector() {
        let f = MediaFrame::audio(23, Timebase::MILLIS, Bytes::from_static(&[0x21, 0x10]));
        assert_eq!(
            &frame_tag(&f)[..],
            &[8, 0, 0, 4, 0, 0, 23, 0, 0, 0, 0, 0xaf, 1, 0x21, 0x10, 0, 0, 0, 15]
        );
    }

    #[test]
    fn negative_composition_time() {
        let f = MediaFrame::video(90, 100, Timebase::MILLIS, false, Bytes::from_static(&[0, 0, 0, 1, 0x41]));
        assert_eq!(video_frame_prefix(&f), [0x27, 1, 0xff, 0xff, 0xf6]);
    }

    fn audio_config() -> Arc<AudioConfig> {
        Arc::new(AudioConfig::from_asc(Bytes::from_static(&[0x12, 0x10])).unwrap())
    }

    #[test]
    fn audio_only_viewer() {
        let mut v = FlvViewer::new();
        let mut out = Vec::new();
        v.on_event(HubEvent::AudioConfig(audio_config()), &mut out);
        assert!(out.is_empty());
        v.on_event(
            HubEvent::Frame(Arc::new(MediaFrame::audio(5, Timebase::MILLIS, Bytes::from_static(&[1])))),
            &mut out,
        );
        assert_eq!(out.len(), 4); // header, onMetaData, AAC sequence header, frame
        assert_eq!(out[0][4], 0x04, "audio-only header flags");
        assert_eq!(out[1][0], tag::SCRIPT);
        let meta = amf0::decode_all(&out[1][11..out[1].len() - 4]).unwrap();
        assert_eq!(meta[0].as_str(), Some("onMetaData"));
        assert_eq!(meta[1].get("audiosamplerate").and_then(Amf0Value::as_f64), Some(44100.0));
        assert!(meta[1].get("width").is_none());
        assert_eq!(&out[2][11..13], &[0xaf, 0]);
        // Same config again is not in the event stream (the hub dedups); a changed one is sent.
        out.clear();
        let c48 = Arc::new(AudioConfig::from_asc(Bytes::from_static(&[0x11, 0x90])).unwrap());
        v.on_event(HubEvent::AudioConfig(c48), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][4..7], &[0, 0, 5], "config tag carries the viewer's current timestamp");
    }

    /// A publisher's original Opus (or VP8) travels in the hub beside its AAC (H.264); FLV
    /// carries only the latter, and the others do not disturb it.
    #[test]
    fn frames_of_codecs_flv_does_not_carry_pass_by() {
        let mut v = FlvViewer::new();
        let mut out = Vec::new();
        v.on_event(HubEvent::AudioConfig(audio_config()), &mut out);
        let opus = MediaFrame::coded(media::Codec::Opus, 0, 0, Timebase::MILLIS, true, Bytes::from_static(&[0xfc]));
        v.on_event(HubEvent::Frame(Arc::new(opus)), &mut out);
        assert!(out.is_empty(), "no start for a frame FLV cannot carry");
        v.on_event(
            HubEvent::Frame(Arc::new(MediaFrame::audio(5, Timebase::MILLIS, Bytes::from_static(&[1])))),
            &mut out,
        );
        assert_eq!(out.len(), 4, "header, metadata, sequence header, the AAC frame");
        let vp8 = MediaFrame::coded(media::Codec::Vp8, 10, 10, Timebase::MILLIS, true, Bytes::from_static(&[0x10]));
        v.on_event(HubEvent::Frame(Arc::new(vp8)), &mut out);
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn video_only_viewer_header() {
        let sps = [0x67, 0x42, 0x00, 0x1e, 0b1101_1010, 0b0000_1011, 0b0001_0011, 0b1001_0000];
        let rec = media::avc::AvcDecoderConfig::from_parameter_sets(&sps, &[&[0x68, 0xce, 0x38, 0x80]]).unwrap();
        let vc = Arc::new(VideoConfig::from_avcc(rec.to_bytes()).unwrap());
        let mut v = FlvViewer::new();
        let mut out = Vec::new();
        v.on_event(HubEvent::VideoConfig(vc), &mut out);
        let key = MediaFrame::video(0, 0, Timebase::MILLIS, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
        v.on_event(HubEvent::Frame(Arc::new(key)), &mut out);
        assert_eq!(out[0][4], 0x01, "video-only header flags");
        let meta = amf0::decode_all(&out[1][11..out[1].len() - 4]).unwrap();
        assert_eq!(meta[1].get("width").and_then(Amf0Value::as_f64), Some(176.0));
        assert!(meta[1].get("audiocodecid").is_none());
    }

    #[test]
    fn frames_without_config_are_held_back() {
        let mut v = FlvViewer::new();
        let mut out = Vec::new();
        v.on_event(
            HubEvent::Frame(Arc::new(MediaFrame::video(
                0,
                0,
                Timebase::MILLIS,
                true,
                Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            ))),
            &mut out,
        );
        assert!(out.is_empty());
        assert!(!v.started());
    }
}
