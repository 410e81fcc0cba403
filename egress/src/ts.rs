//! MPEG-TS muxer (ISO/IEC 13818-1) for HLS segments (sans-IO): hub frames in, 188-byte packets
//! out.
//!
//! * One program: PAT, PMT on [`PMT_PID`], H.264 (stream type 0x1b) on [`VIDEO_PID`], AAC in
//!   ADTS (0x0f) on [`AUDIO_PID`]; the PCR rides on the video PID (audio without video).
//! * Video access units become Annex-B with an access unit delimiter first and SPS/PPS before
//!   every IDR (what Safari and WeChat's player need to start on any segment); the first packet
//!   of an IDR carries the random-access indicator.
//! * Each PES carries one frame with PTS (and DTS for video); timestamps are the hub's, in
//!   90 kHz, wrapped to 33 bits. The PCR is written with every video PES, 10 ms before its DTS.
//! * Continuity counters run per PID across segments; [`TsMuxer::write_tables`] starts a
//!   segment.

use bytes::{BufMut, Bytes, BytesMut};
use media::aac::AacInfo;
use media::avc::{nal, nal_units, AvcDecoderConfig};
use media::frame::{AudioConfig, MediaFrame, Timebase, TrackKind, VideoConfig};

/// Size of a TS packet.
pub const PACKET: usize = 188;
/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 elementary stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC elementary stream.
pub const AUDIO_PID: u16 = 0x101;
/// The PCR runs this far (90 kHz) ahead of the video DTS.
const PCR_LEAD: i64 = 900;
const TS_MASK: i64 = (1 << 33) - 1;

/// Why a frame could not be muxed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TsError {
    /// The video configuration does not parse.
    #[error("bad AVC configuration: {0}")]
    VideoConfig(String),
    /// The audio configuration cannot be expressed in ADTS.
    #[error("AAC configuration not expressible in ADTS")]
    AudioConfig,
    /// A frame of a track the muxer was not set up for.
    #[error("no {0} track in this stream")]
    NoTrack(&'static str),
    /// A video frame whose NAL unit lengths do not add up.
    #[error("malformed AVC frame")]
    BadFrame,
}

/// The muxer for one stream.
pub struct TsMuxer {
    video: Option<AvcDecoderConfig>,
    audio: Option<AacInfo>,
    /// Continuity counters: PAT, PMT, video, audio.
    cc: [u8; 4],
    pes: BytesMut,
}

impl TsMuxer {
    /// A muxer for a stream with these tracks.
    pub fn new(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Result<Self, TsError> {
        let video = video
            .map(|v| AvcDecoderConfig::parse(&v.avcc).map_err(|e| TsError::VideoConfig(e.to_string())))
            .transpose()?;
        let audio = audio.map(|a| a.info);
        if let Some(a) = &audio {
            a.adts_header(0).ok_or(TsError::AudioConfig)?;
        }
        Ok(Self {
            video,
            audio,
            cc: [0; 4],
            pes: BytesMut::new(),
        })
    }

    fn pcr_pid(&self) -> u16 {
        if self.video.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// Writes the PAT and the PMT (at the start of every segment).
    pub fn write_tables(&mut self, out: &mut BytesMut) {
        // PAT: program 1 -> PMT_PID.
        let mut pat = Vec::with_capacity(16);
        pat.extend_from_slice(&[0x00, 0x01, 0xc1, 0x00, 0x00]); // tsid 1, version 0, current
        pat.extend_from_slice(&[0x00, 0x01]); // program_number 1
        pat.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
        self.write_section(0, 0x00, &pat, out);
        // PMT.
        let mut pmt = Vec::with_capacity(32);
        pmt.extend_from_slice(&[0x00, 0x01, 0xc1, 0x00, 0x00]); // program 1, version 0, current
        pmt.extend_from_slice(&(0xe000 | self.pcr_pid()).to_be_bytes());
        pmt.extend_from_slice(&[0xf0, 0x00]); // program_info_length 0
        if self.video.is_some() {
            pmt.push(0x1b);
            pmt.extend_from_slice(&(0xe000 | VIDEO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xf0, 0x00]);
        }
        if self.audio.is_some() {
            pmt.push(0x0f);
            pmt.extend_from_slice(&(0xe000 | AUDIO_PID).to_be_bytes());
            pmt.extend_from_slice(&[0xf0, 0x00]);
        }
        self.write_section(PMT_PID, 0x02, &pmt, out);
    }

    /// A PSI section (table id, then `body` after the section length) in one packet.
    fn write_section(&mut self, pid: u16, table_id: u8, body: &[u8], out: &mut BytesMut) {
        let mut section = Vec::with_capacity(body.len() + 8);
        section.push(table_id);
        let len = (body.len() + 4) as u16; // + CRC
        section.extend_from_slice(&(0xb000 | len).to_be_bytes());
        section.extend_from_slice(body);
        let crc = crc32_mpeg2(&section);
        section.extend_from_slice(&crc.to_be_bytes());
        let i = if pid == 0 { 0 } else { 1 };
        let cc = self.next_cc(i);
        let start = out.len();
        out.put_u8(0x47);
        out.put_u16(0x4000 | pid); // payload_unit_start
        out.put_u8(0x10 | cc);
        out.put_u8(0); // pointer_field
        out.put_slice(&section);
        out.resize(start + PACKET, 0xff);
    }

    fn next_cc(&mut self, i: usize) -> u8 {
        let c = self.cc[i];
        self.cc[i] = (c + 1) & 0x0f;
        c
    }

    /// Muxes one frame.
    pub fn write_frame(&mut self, f: &MediaFrame, out: &mut BytesMut) -> Result<(), TsError> {
        let pts = f.timebase.rescale(f.pts, Timebase::MPEG);
        let dts = f.timebase.rescale(f.dts, Timebase::MPEG);
        match f.track {
            TrackKind::Video => {
                let cfg = self.video.as_ref().ok_or(TsError::NoTrack("video"))?;
                let mut es = BytesMut::with_capacity(f.data.len() + 64);
                es.put_slice(&[0, 0, 0, 1, 0x09, 0xf0]);
                if f.keyframe {
                    for ps in cfg.sps.iter().chain(cfg.pps.iter()) {
                        es.put_slice(&[0, 0, 0, 1]);
                        es.put_slice(ps);
                    }
                }
                for nal in nal_units(&f.data, cfg.length_size) {
                    let nal = nal.map_err(|_| TsError::BadFrame)?;
                    // Our own AUD goes first; parameter sets of a keyframe are already there.
                    match nal.first().map(|h| h & 0x1f) {
                        Some(nal::AUD) | None => continue,
                        Some(nal::SPS | nal::PPS) if f.keyframe => continue,
                        _ => {}
                    }
                    es.put_slice(&[0, 0, 0, 1]);
                    es.put_slice(nal);
                }
                self.pes.clear();
                write_pes_header(&mut self.pes, 0xe0, pts, Some(dts), 0);
                self.pes.put_slice(&es);
                let pcr = Some((dts - PCR_LEAD).max(0));
                let pes = self.pes.split().freeze();
                self.packetize(VIDEO_PID, &pes, pcr, f.keyframe, out);
            }
            TrackKind::Audio => {
                let info = self.audio.as_ref().ok_or(TsError::NoTrack("audio"))?;
                let adts = info.adts_header(f.data.len()).ok_or(TsError::AudioConfig)?;
                self.pes.clear();
                write_pes_header(&mut self.pes, 0xc0, pts, None, adts.len() + f.data.len());
                self.pes.put_slice(&adts);
                self.pes.put_slice(&f.data);
                let pcr = (self.video.is_none()).then_some(pts);
                let pes = self.pes.split().freeze();
                self.packetize(AUDIO_PID, &pes, pcr, true, out);
            }
        }
        Ok(())
    }

    /// Splits a PES into TS packets; the first may carry a PCR and the random-access flag, the
    /// last is padded with adaptation-field stuffing.
    fn packetize(&mut self, pid: u16, pes: &Bytes, pcr: Option<i64>, random_access: bool, out: &mut BytesMut) {
        let i = if pid == VIDEO_PID { 2 } else { 3 };
        let mut rest = &pes[..];
        let mut first = true;
        while !rest.is_empty() {
            let cc = self.next_cc(i);
            // Adaptation field contents (after its length byte).
            let mut af: Vec<u8> = Vec::new();
            if first && (pcr.is_some() || random_access) {
                let mut flags = 0u8;
                if random_access {
                    flags |= 0x40;
                }
                if pcr.is_some() {
                    flags |= 0x10;
                }
                af.push(flags);
                if let Some(p) = pcr {
                    let base = (p & TS_MASK) as u64;
                    af.extend_from_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        (((base & 1) << 7) as u8) | 0x7e,
                        0x00,
                    ]);
                }
            }
            let af_total = if af.is_empty() { 0 } else { 1 + af.len() };
            let room = PACKET - 4 - af_total;
            let take = rest.len().min(room);
            // Stuffing so the packet is exactly 188 bytes.
            let stuff = room - take;
            let mut af_len = af_total;
            if stuff > 0 {
                if af.is_empty() {
                    // A one-byte adaptation field is just its length (0); longer ones need flags.
                    if stuff == 1 {
                        af_len = 1;
                    } else {
                        af.push(0x00);
                        af.resize(stuff - 1, 0xff);
                        af_len = stuff;
                    }
                } else {
                    af.resize(af.len() + stuff, 0xff);
                    af_len = af_total + stuff;
                }
            }
            out.put_u8(0x47);
            let pusi = if first { 0x4000 } else { 0 };
            out.put_u16(pusi | pid);
            let control = if af_len > 0 { 0x30 } else { 0x10 };
            out.put_u8(control | cc);
            if af_len > 0 {
                out.put_u8((af_len - 1) as u8);
                out.put_slice(&af[..af_len - 1]);
            }
            out.put_slice(&rest[..take]);
            rest = &rest[take..];
            first = false;
        }
    }
}

/// A PES header with PTS (and DTS when it differs or is given); `payload_len` 0 = unbounded.
fn write_pes_header(out: &mut BytesMut, stream_id: u8, pts: i64, dts: Option<i64>, payload_len: usize) {
    let dts = dts.filter(|d| *d != pts);
    let header_data = if dts.is_some() { 10 } else { 5 };
    out.put_slice(&[0, 0, 1, stream_id]);
    let len = payload_len + 3 + header_data;
    out.put_u16(if payload_len == 0 || len > 0xffff { 0 } else { len as u16 });
    out.put_u8(0x80); // marker bits '10', no scrambling
    out.put_u8(if dts.is_some() { 0xc0 } else { 0x80 });
    out.put_u8(header_data as u8);
    put_timestamp(out, if dts.is_some() { 0x3 } else { 0x2 }, pts);
    if let Some(d) = dts {
        put_timestamp(out, 0x1, d);
    }
}

/// A 33-bit timestamp in the 5-byte PES form, with its 4-bit prefix.
fn put_timestamp(out: &mut BytesMut, prefix: u8, ts: i64) {
    let t = (ts & TS_MASK) as u64;
    out.put_u8((prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1);
    out.put_u16((((t >> 15) & 0x7fff) as u16) << 1 | 1);
    out.put_u16(((t & 0x7fff) as u16) << 1 | 1);
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, initial 0xFFFFFFFF, not reflected, no final XOR).
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{audio_config, video_config, PPS};

    #[test]
    fn crc_of_the_standard_check_string() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn pat_and_pmt_bytes() {
        let mut m = TsMuxer::new(Some(&video_config(PPS)), Some(&audio_config())).unwrap();
        let mut out = BytesMut::new();
        m.write_tables(&mut out);
        assert_eq!(out.len(), 2 * PACKET);
        // PAT: the classic bytes every muxer writes for program 1 on PID 0x1000.
        assert_eq!(
            &out[..21],
            &[
                0x47, 0x40, 0x00, 0x10, 0x00, 0x00, 0xb0, 0x0d, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xf0, 0x00, 0x2a, 0xb1, 0x04,
                0xb2
            ]
        );
        assert!(out[21..PACKET].iter().all(|b| *b == 0xff));
        let pmt = &out[PACKET..];
        assert_eq!(&pmt[..4], &[0x47, 0x50, 0x00, 0x10]);
        let section_len = (usize::from(pmt[6] & 0x0f) << 8) | usize::from(pmt[7]);
        let section = &pmt[5..8 + section_len];
        assert_eq!(crc32_mpeg2(section), 0, "a section with its CRC checks to zero");
        // PCR on the video PID, then H.264 and AAC streams.
        assert_eq!(&section[8..10], &[0xe1, 0x00]);
        assert_eq!(&section[12..17], &[0x1b, 0xe1, 0x00, 0xf0, 0x00]);
        assert_eq!(&section[17..22], &[0x0f, 0xe1, 0x01, 0xf0, 0x00]);
        // Continuity counters advance per PID.
        m.write_tables(&mut out);
        assert_eq!(out[2 * PACKET + 3] & 0x0f, 1);
    }

    #[test]
    fn pes_timestamps_and_pcr() {
        let mut m = TsMuxer::new(Some(&video_config(PPS)), None).unwrap();
        let mut out = BytesMut::new();
        // 1 s in milliseconds = 90,000 ticks; pts 40 ms after dts.
        let mut frame = BytesMut::new();
        frame.put_u32(5);
        frame.put_slice(&[0x65, 1, 2, 3, 4]);
        let f = MediaFrame::video(1040, 1000, Timebase::MILLIS, true, frame.freeze());
        m.write_frame(&f, &mut out).unwrap();
        assert_eq!(out.len(), PACKET);
        let p = &out[..];
        assert_eq!(&p[..3], &[0x47, 0x41, 0x00], "PUSI on PID 0x100");
        assert_eq!(p[3] & 0x30, 0x30, "adaptation field and payload");
        let af_len = usize::from(p[4]);
        assert_eq!(p[5], 0x50, "random access + PCR");
        // PCR base = 90,000 - 900.
        let base =
            (u64::from(p[6]) << 25) | (u64::from(p[7]) << 17) | (u64::from(p[8]) << 9) | (u64::from(p[9]) << 1) | (u64::from(p[10]) >> 7);
        assert_eq!(base, 89_100);
        let pes = &p[5 + af_len..];
        assert_eq!(&pes[..4], &[0, 0, 1, 0xe0]);
        assert_eq!(&pes[4..6], &[0, 0], "video PES length unbounded");
        assert_eq!(&pes[6..9], &[0x80, 0xc0, 10]);
        // PTS 93,600 with prefix 0011, DTS 90,000 with prefix 0001.
        let ts = |b: &[u8]| {
            (u64::from(b[0] >> 1 & 7) << 30)
                | (u64::from(b[1]) << 22)
                | (u64::from(b[2] >> 1) << 15)
                | (u64::from(b[3]) << 7)
                | u64::from(b[4] >> 1)
        };
        assert_eq!(pes[9] >> 4, 0x3);
        assert_eq!(ts(&pes[9..14]), 93_600);
        assert_eq!(pes[14] >> 4, 0x1);
        assert_eq!(ts(&pes[14..19]), 90_000);
        // AUD, SPS, PPS, then the IDR slice.
        let es = &pes[19..];
        assert_eq!(&es[..6], &[0, 0, 0, 1, 0x09, 0xf0]);
        assert_eq!(es[10] & 0x1f, 7);
        assert!(es.ends_with(&[0, 0, 0, 1, 0x65, 1, 2, 3, 4]));
    }

    #[test]
    fn large_frames_span_packets_with_counters_and_stuffing() {
        let mut m = TsMuxer::new(Some(&video_config(PPS)), Some(&audio_config())).unwrap();
        let mut out = BytesMut::new();
        for size in [1usize, 183, 184, 185, 1000, 5000] {
            let mut frame = BytesMut::new();
            frame.put_u32(size as u32);
            frame.put_u8(0x41);
            frame.put_bytes(0xab, size - 1);
            let f = MediaFrame::video(0, 0, Timebase::MILLIS, false, frame.freeze());
            out.clear();
            m.write_frame(&f, &mut out).unwrap();
            assert_eq!(out.len() % PACKET, 0, "size {size}");
            let a = MediaFrame::audio(0, Timebase::MILLIS, Bytes::from(vec![0x21; size.min(2000)]));
            m.write_frame(&a, &mut out).unwrap();
            assert_eq!(out.len() % PACKET, 0, "size {size}");
            assert!(out.chunks(PACKET).all(|p| p[0] == 0x47));
        }
        // Malformed AVCC: a length past the end.
        let bad = MediaFrame::video(0, 0, Timebase::MILLIS, false, Bytes::from_static(&[0, 0, 1, 0, 0x41]));
        assert_eq!(m.write_frame(&bad, &mut out), Err(TsError::BadFrame));
        let mut audio_only = TsMuxer::new(None, Some(&audio_config())).unwrap();
        let v = MediaFrame::video(0, 0, Timebase::MILLIS, true, Bytes::from_static(&[0, 0, 0, 1, 0x65]));
        assert_eq!(audio_only.write_frame(&v, &mut out), Err(TsError::NoTrack("video")));
    }
}
