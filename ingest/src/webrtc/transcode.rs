//! VP8/VP9 -> H.264 for publishers that do not send H.264 (ffmpeg-next: FFmpeg's VP8/VP9
//! decoders, libx264).
//!
//! * One transcoder per stream; its output goes to the hub once and is shared by every egress.
//! * x264 runs with `preset=veryfast`, `tune=zerolatency` (no B-frames, no lookahead, so a frame
//!   leaves the encoder in the same call it entered) on one thread, CRF 23 capped at
//!   [`MAX_BITRATE`].
//! * A source keyframe becomes an IDR (`forced-idr`), so PLIs and the periodic keyframe request
//!   reach viewers as they would with H.264 passthrough; x264 adds no keyframes of its own
//!   except at scene cuts and after [`MAX_GOP_FRAMES`].
//! * Output is Annex-B with SPS/PPS before every IDR, stamped with the source frame's RTP time:
//!   it goes through the same [`super::h264::H264Track`] as browser H.264.
//! * A resolution change (Chromium starts small) reopens the encoder at the new size, which
//!   starts with an IDR and a new SPS.
//! * After a gap, frames are not decoded until the next keyframe (and one is asked for).

use ffmpeg_next as ff;

/// Highest output bitrate (x264 VBV), bits per second.
pub const MAX_BITRATE: usize = 2_500_000;
/// The frame rate x264's rate control assumes (browsers capture at 30 fps; at 20 the VBV caps
/// at 2/3 of [`MAX_BITRATE`]).
pub const NOMINAL_FPS: i32 = 30;
/// Longest GOP x264 makes by itself (source keyframes come far more often).
pub const MAX_GOP_FRAMES: u32 = 600;

/// Which source codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCodec {
    /// VP8 (RFC 6386).
    Vp8,
    /// VP9.
    Vp9,
}

/// Transcoder errors (each ends this stream's video, not the process).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// FFmpeg lacks a codec.
    #[error("FFmpeg has no {0}")]
    CodecMissing(&'static str),
    /// FFmpeg refused to open or run a codec.
    #[error("{0}: {1}")]
    Ffmpeg(&'static str, ff::Error),
}

/// What the transcoder counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct TranscodeCounters {
    /// Source frames decoded.
    pub decoded: u64,
    /// Source frames that did not decode (dropped, a keyframe asked for).
    pub decode_errors: u64,
    /// Source frames skipped while waiting for a keyframe after a gap.
    pub skipped_waiting_keyframe: u64,
    /// H.264 frames out.
    pub encoded: u64,
    /// Encoder (re)opens: the first, then one per resolution change.
    pub encoder_opens: u64,
}

/// One H.264 access unit out: the source frame's RTP time and Annex-B bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H264Out {
    /// RTP timestamp (90 kHz) of the source frame.
    pub rtp_time: u64,
    /// Annex-B access unit (SPS/PPS in front of IDRs).
    pub annexb: Vec<u8>,
}

/// VP8/VP9 -> H.264 for one stream.
pub struct VpxToH264 {
    source: SourceCodec,
    decoder: ff::decoder::Video,
    encoder: Option<(ff::encoder::Video, u32, u32)>,
    decoded: ff::frame::Video,
    packet: ff::Packet,
    waiting_keyframe: bool,
    counters: TranscodeCounters,
}

impl VpxToH264 {
    /// A transcoder for `source`.
    pub fn new(source: SourceCodec) -> Result<Self, VideoError> {
        ff::init().map_err(|e| VideoError::Ffmpeg("init", e))?;
        ff::util::log::set_level(ff::util::log::Level::Fatal);
        let (id, name) = match source {
            SourceCodec::Vp8 => (ff::codec::Id::VP8, "VP8 decoder"),
            SourceCodec::Vp9 => (ff::codec::Id::VP9, "VP9 decoder"),
        };
        let codec = ff::decoder::find(id).ok_or(VideoError::CodecMissing(name))?;
        let mut ctx = ff::codec::Context::new_with_codec(codec);
        // One thread, no frame threading: a frame comes out of the call it went in.
        ctx.set_threading(ff::threading::Config {
            kind: ff::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        let decoder = ctx.decoder().video().map_err(|e| VideoError::Ffmpeg("opening the decoder", e))?;
        // Fail now, not at the first frame, when libx264 is missing.
        ff::encoder::find_by_name("libx264").ok_or(VideoError::CodecMissing("libx264 encoder"))?;
        Ok(Self {
            source,
            decoder,
            encoder: None,
            decoded: ff::frame::Video::empty(),
            packet: ff::Packet::empty(),
            waiting_keyframe: true,
            counters: TranscodeCounters::default(),
        })
    }

    /// Counters so far.
    pub fn counters(&self) -> TranscodeCounters {
        self.counters
    }

    /// Whether a source frame is a keyframe ([`is_keyframe`]).
    pub fn is_keyframe(&self, frame: &[u8]) -> bool {
        is_keyframe(self.source, frame)
    }

    /// Takes one source frame; appends H.264 access units to `out`. Returns true when a
    /// keyframe should be requested from the sender.
    pub fn push(&mut self, frame: &[u8], contiguous: bool, rtp_time: u64, out: &mut Vec<H264Out>) -> Result<bool, VideoError> {
        let key = self.is_keyframe(frame);
        if !contiguous {
            self.waiting_keyframe = true;
        }
        if self.waiting_keyframe && !key {
            self.counters.skipped_waiting_keyframe += 1;
            return Ok(true);
        }
        self.waiting_keyframe = false;
        let mut packet = ff::Packet::copy(frame);
        packet.set_pts(Some(rtp_time as i64));
        if self.decoder.send_packet(&packet).is_err() {
            self.counters.decode_errors += 1;
            self.waiting_keyframe = true;
            return Ok(true);
        }
        let mut want = false;
        loop {
            match self.decoder.receive_frame(&mut self.decoded) {
                Ok(()) => {}
                Err(ff::Error::Other {
                    errno: ff::util::error::EAGAIN,
                })
                | Err(ff::Error::Eof) => break,
                Err(_) => {
                    self.counters.decode_errors += 1;
                    self.waiting_keyframe = true;
                    want = true;
                    break;
                }
            }
            self.counters.decoded += 1;
            self.encode(key, out)?;
        }
        Ok(want)
    }

    fn encode(&mut self, key: bool, out: &mut Vec<H264Out>) -> Result<(), VideoError> {
        // 4:2:0 H.264 has even sizes: an odd last row or column (a simulcast layer of 960x540
        // at a quarter is 240x135) is cropped, in place (the planes stay as decoded).
        let (w, h) = (self.decoded.width() & !1, self.decoded.height() & !1);
        if w == 0 || h == 0 {
            return Ok(());
        }
        if (w, h) != (self.decoded.width(), self.decoded.height()) {
            self.decoded.set_width(w);
            self.decoded.set_height(h);
        }
        let reopen = self.encoder.as_ref().is_none_or(|(_, ew, eh)| (*ew, *eh) != (w, h));
        if reopen {
            self.encoder = Some((open_x264(w, h)?, w, h));
            self.counters.encoder_opens += 1;
        }
        let Some((enc, _, _)) = self.encoder.as_mut() else {
            return Ok(());
        };
        let pts = self.decoded.pts().or(self.decoded.timestamp());
        self.decoded.set_pts(pts);
        self.decoded.set_kind(if key || reopen {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        enc.send_frame(&self.decoded)
            .map_err(|e| VideoError::Ffmpeg("x264 refused a frame", e))?;
        while enc.receive_packet(&mut self.packet).is_ok() {
            let Some(data) = self.packet.data() else { continue };
            out.push(H264Out {
                rtp_time: self.packet.pts().unwrap_or_default().max(0) as u64,
                annexb: data.to_vec(),
            });
            self.counters.encoded += 1;
        }
        Ok(())
    }
}

fn open_x264(width: u32, height: u32) -> Result<ff::encoder::Video, VideoError> {
    let codec = ff::encoder::find_by_name("libx264").ok_or(VideoError::CodecMissing("libx264 encoder"))?;
    let mut enc = ff::codec::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| VideoError::Ffmpeg("creating the x264 encoder", e))?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(ff::format::Pixel::YUV420P);
    enc.set_time_base(ff::Rational::new(1, 90_000));
    enc.set_max_b_frames(0);
    enc.set_gop(MAX_GOP_FRAMES);
    enc.set_max_bit_rate(MAX_BITRATE);
    // x264 budgets its VBV per frame from the frame rate. Unset, libavcodec derives it from the
    // time base: 90000 fps, i.e. 2.5 Mbit/s / 90000 = 28 bits a frame, so once the initial
    // buffer was spent (about 18 s of a busy 640x480 canvas) every frame came out as skipped
    // macroblocks: a uniform grey picture. The timestamps stay in 90 kHz; this is the nominal
    // rate of browser capture.
    enc.set_frame_rate(Some(ff::Rational::new(NOMINAL_FPS, 1)));
    let mut opts = ff::Dictionary::new();
    opts.set("preset", "veryfast");
    opts.set("tune", "zerolatency");
    opts.set("profile", "main");
    opts.set("crf", "23");
    opts.set("forced-idr", "1");
    opts.set("threads", "1");
    opts.set(
        "x264-params",
        &format!("vbv-maxrate={}:vbv-bufsize={}", MAX_BITRATE / 1000, MAX_BITRATE / 1000),
    );
    enc.open_with(opts).map_err(|e| VideoError::Ffmpeg("opening the x264 encoder", e))
}

/// Whether a source frame is a keyframe, from its first bytes (VP8: RFC 6386 §9.1; VP9:
/// the uncompressed header's frame_type).
pub fn is_keyframe(source: SourceCodec, frame: &[u8]) -> bool {
    let Some(&b0) = frame.first() else { return false };
    match source {
        SourceCodec::Vp8 => b0 & 0x01 == 0,
        SourceCodec::Vp9 => {
            // frame_marker(2) profile_low(1) profile_high(1) [reserved(1) if profile 3]
            // show_existing_frame(1) frame_type(1)
            if b0 >> 6 != 0b10 {
                return false;
            }
            let profile = ((b0 >> 5) & 1) | (((b0 >> 4) & 1) << 1);
            let mut bit = 4 - 1;
            if profile == 3 {
                bit -= 1;
            }
            let show_existing = (b0 >> bit) & 1;
            if show_existing == 1 {
                return false;
            }
            (b0 >> (bit - 1)) & 1 == 0
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::webrtc::h264::H264Track;

    /// Settings of a libvpx VP8 test encode.
    struct Vp8Encode {
        width: u32,
        height: u32,
        fps: i32,
        gop: u32,
        bit_rate: usize,
        /// libvpx options beyond realtime with no lag.
        options: &'static [(&'static str, &'static str)],
    }

    /// `n` frames from libvpx, `paint(frame, i)` drawing picture `i`; (frame, key).
    fn vp8_encode(e: Vp8Encode, n: usize, mut paint: impl FnMut(&mut ff::frame::Video, usize)) -> Vec<(Vec<u8>, bool)> {
        ff::init().unwrap();
        let codec = ff::encoder::find_by_name("libvpx").expect("libvpx VP8 encoder");
        let mut enc = ff::codec::Context::new_with_codec(codec).encoder().video().unwrap();
        enc.set_width(e.width);
        enc.set_height(e.height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(ff::Rational::new(1, e.fps));
        enc.set_gop(e.gop);
        enc.set_bit_rate(e.bit_rate);
        let mut opts = ff::Dictionary::new();
        opts.set("deadline", "realtime");
        opts.set("lag-in-frames", "0");
        for (k, v) in e.options {
            opts.set(k, v);
        }
        let mut enc = enc.open_with(opts).unwrap();
        let mut frame = ff::frame::Video::new(ff::format::Pixel::YUV420P, e.width, e.height);
        let mut packet = ff::Packet::empty();
        let mut out = Vec::new();
        for i in 0..n {
            paint(&mut frame, i);
            frame.set_pts(Some(i as i64));
            enc.send_frame(&frame).unwrap();
            while enc.receive_packet(&mut packet).is_ok() {
                out.push((packet.data().unwrap().to_vec(), packet.is_key()));
            }
        }
        enc.send_eof().unwrap();
        while enc.receive_packet(&mut packet).is_ok() {
            out.push((packet.data().unwrap().to_vec(), packet.is_key()));
        }
        out
    }

    /// `n` VP8 frames of a moving pattern from libvpx, keyframe every `gop`; (frame, key).
    pub(crate) fn vp8_frames(width: u32, height: u32, n: usize, gop: u32) -> Vec<(Vec<u8>, bool)> {
        let e = Vp8Encode {
            width,
            height,
            fps: 20,
            gop,
            bit_rate: 500_000,
            options: &[],
        };
        vp8_encode(e, n, |frame, i| {
            for plane in 0..3 {
                let stride = frame.stride(plane);
                for (j, b) in frame.data_mut(plane).iter_mut().enumerate() {
                    *b = ((j % stride) as u32 * 3 + (j / stride) as u32 + i as u32 * 7) as u8;
                }
            }
        })
    }

    #[test]
    fn vp8_becomes_h264_frame_for_frame_with_idr_at_source_keyframes() {
        let mut frames = vp8_frames(320, 240, 12, 5);
        frames.extend(vp8_frames(640, 480, 6, 100));
        // Odd sizes (a quarter of 960x540) are cropped to even ones.
        frames.extend(vp8_frames(241, 135, 3, 100));
        assert_eq!(frames.len(), 21);
        let mut t = VpxToH264::new(SourceCodec::Vp8).unwrap();
        let mut track = H264Track::new();
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let mut keys = Vec::new();
        for (i, (f, key)) in frames.iter().enumerate() {
            assert_eq!(t.is_keyframe(f), *key);
            let rtp = 1000 + i as u64 * 4500;
            let want = t.push(f, true, rtp, &mut out).unwrap();
            assert!(!want);
            assert_eq!(out.len(), 1, "zerolatency: one frame out per frame in");
            let o = out.pop().unwrap();
            assert_eq!(o.rtp_time, rtp, "timestamps carried over");
            let r = track.push(&o.annexb, true);
            if let Some(c) = r.config {
                sizes.push((c.info.width, c.info.height));
            }
            let (_, k) = r.frame.expect("an H.264 frame");
            keys.push(k);
        }
        assert_eq!(
            sizes,
            [(320, 240), (640, 480), (240, 134)],
            "a new sequence header at the resolution change only"
        );
        let source_keys: Vec<bool> = frames.iter().map(|f| f.1).collect();
        assert_eq!(keys, source_keys, "IDR exactly where the source has keyframes");
        let c = t.counters();
        assert_eq!((c.decoded, c.encoded, c.encoder_opens, c.decode_errors), (21, 21, 3, 0));
    }

    /// `n` VP8 frames of big random blocks that change every frame (a picture that costs the
    /// encoder far more than the VBV cap), 30 fps.
    fn vp8_noise(width: u32, height: u32, n: usize) -> Vec<Vec<u8>> {
        let e = Vp8Encode {
            width,
            height,
            fps: 30,
            gop: 60,
            bit_rate: 8_000_000,
            options: &[("cpu-used", "8")],
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let frames = vp8_encode(e, n, |frame, _| {
            for plane in 0..3 {
                let stride = frame.stride(plane);
                let block = if plane == 0 { 16 } else { 8 };
                let rows = frame.plane_height(plane) as usize;
                let data = frame.data_mut(plane);
                for by in (0..rows).step_by(block) {
                    for bx in (0..stride).step_by(block) {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let v = 16 + (seed % 220) as u8;
                        for y in by..(by + block).min(rows) {
                            for x in bx..(bx + block).min(stride) {
                                data[y * stride + x] = v;
                            }
                        }
                    }
                }
            }
        });
        frames.into_iter().map(|(f, _)| f).collect()
    }

    /// Standard deviation of the luma of each decoded H.264 frame.
    fn luma_stddevs(access_units: &[Vec<u8>]) -> Vec<f64> {
        let codec = ff::decoder::find(ff::codec::Id::H264).unwrap();
        let mut dec = ff::codec::Context::new_with_codec(codec).decoder().video().unwrap();
        let mut frame = ff::frame::Video::empty();
        let mut out = Vec::new();
        let mut pull = |dec: &mut ff::decoder::Video, out: &mut Vec<f64>| {
            while dec.receive_frame(&mut frame).is_ok() {
                let (w, h, stride) = (frame.width() as usize, frame.height() as usize, frame.stride(0));
                let y = frame.data(0);
                let px: Vec<f64> = (0..h)
                    .step_by(4)
                    .flat_map(|r| (0..w).step_by(4).map(move |c| f64::from(y[r * stride + c])))
                    .collect();
                let mean = px.iter().sum::<f64>() / px.len() as f64;
                out.push((px.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / px.len() as f64).sqrt());
            }
        };
        for au in access_units {
            dec.send_packet(&ff::Packet::copy(au)).unwrap();
            pull(&mut dec, &mut out);
        }
        dec.send_eof().unwrap();
        pull(&mut dec, &mut out);
        out
    }

    /// The grey-picture defect of issue 14: with the frame rate unset, x264 took its VBV budget
    /// per frame from the 90 kHz time base (28 bits a frame at 2.5 Mbit/s), and a busy picture
    /// came out uniform grey once the initial buffer was spent.
    #[test]
    fn a_busy_picture_keeps_its_content_under_the_bitrate_cap() {
        let frames = vp8_noise(640, 480, 150);
        let mut t = VpxToH264::new(SourceCodec::Vp8).unwrap();
        let mut out = Vec::new();
        let mut aus = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            t.push(f, true, 90_000 * 1000 + i as u64 * 3000, &mut out).unwrap();
            aus.extend(out.drain(..).map(|o| o.annexb));
        }
        let sd = luma_stddevs(&aus);
        assert_eq!(sd.len(), frames.len());
        let flat: Vec<usize> = (0..sd.len()).filter(|&i| sd[i] < 20.0).collect();
        assert!(
            flat.is_empty(),
            "{} flat frames, from frame {:?} (luma stddev {:.1})",
            flat.len(),
            flat.first(),
            sd[flat[0]]
        );
        // And the cap holds: about MAX_BITRATE at 30 fps (VBV buffer of one second on top).
        let secs = frames.len() as f64 / 30.0;
        let rate = aus.iter().map(Vec::len).sum::<usize>() as f64 * 8.0 / secs;
        assert!(rate <= MAX_BITRATE as f64 * 1.5, "{rate:.0} bit/s");
    }

    #[test]
    fn after_a_gap_frames_wait_for_a_keyframe() {
        let frames = vp8_frames(160, 120, 8, 4);
        let mut t = VpxToH264::new(SourceCodec::Vp8).unwrap();
        let mut out = Vec::new();
        // Starting on an inter frame: skipped, keyframe wanted.
        assert!(t.push(&frames[1].0, true, 0, &mut out).unwrap());
        assert!(out.is_empty());
        assert!(!t.push(&frames[0].0, true, 1, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        // A gap: inter frames wait for the next keyframe (frame 4).
        assert!(t.push(&frames[2].0, false, 2, &mut out).unwrap());
        assert!(t.push(&frames[3].0, true, 3, &mut out).unwrap());
        assert_eq!(out.len(), 1);
        assert!(!t.push(&frames[4].0, true, 4, &mut out).unwrap());
        assert_eq!(out.len(), 2);
        // Garbage is a decode error, not a panic.
        let _ = t.push(&[0x50, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0], true, 5, &mut out);
        assert_eq!(t.counters().skipped_waiting_keyframe, 3);
    }

    #[test]
    fn vp8_and_vp9_keyframes_are_recognised() {
        let t = VpxToH264::new(SourceCodec::Vp8).unwrap();
        assert!(t.is_keyframe(&[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a]));
        assert!(!t.is_keyframe(&[0x51, 0x42]));
        assert!(!t.is_keyframe(&[]));
        let t = VpxToH264::new(SourceCodec::Vp9).unwrap();
        // Profile 0 keyframe: 10 0 0 0 0 (show_existing=0) 0 (key) ...
        assert!(t.is_keyframe(&[0x82, 0x49, 0x83, 0x42]));
        // Profile 0 inter frame: frame_type = 1.
        assert!(!t.is_keyframe(&[0x86, 0x00]));
        // show_existing_frame.
        assert!(!t.is_keyframe(&[0x88, 0x00]));
    }
}
