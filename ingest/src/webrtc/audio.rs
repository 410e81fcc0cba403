//! Opus -> AAC-LC 48 kHz, with FFmpeg's decoders and encoder (ffmpeg-next).
//!
//! * Opus packets carry 2.5-120 ms (usually 20 ms = 960 samples); AAC frames take exactly 1024
//!   samples, so decoded PCM waits in a FIFO.
//! * Output timestamps come from sample counts: the first sample of each AAC frame is
//!   `fifo_pts`, advanced by 1024 per frame. Incoming packet timestamps only detect gaps: a gap
//!   up to [`MAX_CONCEAL_SAMPLES`] (a lost packet, or DTX silence) is filled with silence so the
//!   output stays continuous; a longer one restarts the FIFO at the new timestamp. Nothing else
//!   is added or dropped.
//! * Mono publishers give mono AAC (64 kb/s), stereo ones stereo (128 kb/s), decided from the
//!   first packet's TOC byte (RFC 6716 §3.1).
//! * Two AAC encoders ([`AacEncoderKind`]): Fraunhofer's FDK AAC (the default: 2.6x less CPU than
//!   FFmpeg's and the reference for quality) and FFmpeg's native encoder on its `fast` coder.
//! * Encoder delay, bounded and documented: the FIFO holds < 1024 samples (21.3 ms); FFmpeg's
//!   encoder outputs a frame one frame after its input (priming 1024 samples, 21.3 ms), FDK's
//!   after its `nDelay` (2048 samples at 48 kHz mono/stereo LC, 42.7 ms). Frame timestamps are
//!   corrected for that priming: the first frame is stamped one priming earlier than the first
//!   sample, so decoded audio lines up with video.

use std::collections::VecDeque;

use bytes::Bytes;
use ffmpeg_next as ff;
use media::aac::AacInfo;
use media::frame::AudioConfig;

/// Opus and AAC here run at 48 kHz.
pub const SAMPLE_RATE: u32 = 48_000;
/// Gaps up to one second are concealed with silence.
pub const MAX_CONCEAL_SAMPLES: i64 = 48_000;
const AAC_FRAME: usize = 1024;

/// Transcoder errors (each ends this stream's audio, not the process).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// FFmpeg lacks a codec.
    #[error("FFmpeg has no {0} codec")]
    CodecMissing(&'static str),
    /// FFmpeg refused to open or run a codec.
    #[error("{0}: {1}")]
    Ffmpeg(&'static str, ff::Error),
    /// The decoder produced something other than float planar samples.
    #[error("unexpected decoded sample format")]
    SampleFormat,
    /// The FDK AAC encoder failed.
    #[error("FDK AAC: {0}")]
    Fdk(String),
}

/// Which AAC encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AacEncoderKind {
    /// Fraunhofer FDK AAC (bundled, built from source by the `fdk-aac` crate).
    #[default]
    Fdk,
    /// FFmpeg's native AAC encoder (`aac_coder=fast`).
    Ffmpeg,
}

enum Encoder {
    Ffmpeg(ff::encoder::Audio),
    Fdk {
        enc: fdk_aac::enc::Encoder,
        /// Priming: samples before the first input sample in the decoded output.
        delay: i64,
        /// Timestamps of frames given to the encoder, oldest first.
        pending: VecDeque<i64>,
        pcm: Vec<i16>,
        out: Vec<u8>,
    },
}

/// One AAC frame with its timestamp in 48 kHz samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    /// Presentation time, 48 kHz.
    pub pts: i64,
    /// Raw AAC frame.
    pub data: Bytes,
}

/// What the transcoder counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct AudioCounters {
    /// Opus packets decoded.
    pub packets: u64,
    /// Silence samples inserted for lost packets.
    pub concealed_samples: u64,
    /// Packets that did not decode (treated as lost).
    pub decode_errors: u64,
    /// Late or duplicate packets skipped.
    pub late_packets: u64,
    /// Gaps too long to conceal (the FIFO restarted).
    pub restarts: u64,
    /// Silence inserted to move audio later (A/V realignment).
    pub realign_inserted: u64,
    /// Samples dropped to move audio earlier (A/V realignment).
    pub realign_dropped: u64,
}

/// Whether an Opus packet's TOC byte says stereo.
pub fn opus_is_stereo(packet: &[u8]) -> bool {
    packet.first().is_some_and(|toc| toc & 0x04 != 0)
}

/// Opus -> AAC for one stream.
pub struct OpusToAac {
    decoder: ff::decoder::Audio,
    encoder: Encoder,
    channels: usize,
    fifo: [Vec<f32>; 2],
    fifo_pts: i64,
    next_pts: Option<i64>,
    /// Samples still to drop from what is decoded next (a realignment larger than the FIFO).
    drop_debt: usize,
    config: AudioConfig,
    decoded: ff::frame::Audio,
    counters: AudioCounters,
}

impl OpusToAac {
    /// A transcoder giving stereo AAC if `stereo`, mono otherwise, with the default encoder.
    pub fn new(stereo: bool) -> Result<Self, AudioError> {
        Self::with_encoder(stereo, AacEncoderKind::default())
    }

    /// A transcoder with the given AAC encoder.
    pub fn with_encoder(stereo: bool, kind: AacEncoderKind) -> Result<Self, AudioError> {
        ff::init().map_err(|e| AudioError::Ffmpeg("init", e))?;
        // FFmpeg's own log lines (encoder statistics on close) would bypass tracing.
        ff::util::log::set_level(ff::util::log::Level::Error);
        let channels = if stereo { 2 } else { 1 };
        let dec_codec = ff::decoder::find(ff::codec::Id::OPUS).ok_or(AudioError::CodecMissing("Opus decoder"))?;
        // WebRTC gives no OpusHead, so FFmpeg's decoder would assume stereo and do twice the
        // synthesis work for the mono stream browsers send by default: say what we want.
        let mut options = ff::Dictionary::new();
        options.set("ch_layout", if stereo { "stereo" } else { "mono" });
        let decoder = ff::codec::Context::new_with_codec(dec_codec)
            .decoder()
            .open_with(options)
            .and_then(|d| d.audio())
            .map_err(|e| AudioError::Ffmpeg("opening the Opus decoder", e))?;
        let encoder = match kind {
            AacEncoderKind::Ffmpeg => Encoder::Ffmpeg(ffmpeg_aac(channels)?),
            AacEncoderKind::Fdk => fdk_aac_encoder(channels)?,
        };
        let info = AacInfo {
            object_type: 2,
            sample_rate: SAMPLE_RATE,
            channels: channels as u8,
        };
        let asc = info.to_asc().ok_or(AudioError::CodecMissing("AudioSpecificConfig"))?;
        let config = AudioConfig::from_asc(asc).map_err(|_| AudioError::CodecMissing("AudioSpecificConfig"))?;
        Ok(Self {
            decoder,
            encoder,
            channels,
            fifo: [Vec::with_capacity(4096), Vec::with_capacity(4096)],
            fifo_pts: 0,
            next_pts: None,
            drop_debt: 0,
            config,
            decoded: ff::frame::Audio::empty(),
            counters: AudioCounters::default(),
        })
    }

    /// The AAC configuration of the output.
    pub fn config(&self) -> &AudioConfig {
        &self.config
    }

    /// Counters so far.
    pub fn counters(&self) -> AudioCounters {
        self.counters
    }

    /// Moves audio by `delta` samples (A/V realignment from RTCP sender reports) without
    /// breaking the AAC timeline: a positive delta inserts that much silence, a negative one
    /// drops that many samples, so timestamps stay continuous (1024 per frame) and a player
    /// that plays audio by sample count rather than by timestamp stays in sync as well. Before
    /// any audio, or for a move of more than [`MAX_CONCEAL_SAMPLES`], the timeline jumps instead.
    pub fn shift(&mut self, delta: i64) {
        let Some(next) = &mut self.next_pts else {
            self.fifo_pts += delta;
            return;
        };
        *next += delta;
        if delta.abs() > MAX_CONCEAL_SAMPLES {
            self.fifo_pts += delta;
            if let Encoder::Fdk { pending, .. } = &mut self.encoder {
                for p in pending.iter_mut() {
                    *p += delta;
                }
            }
            return;
        }
        if delta > 0 {
            let d = delta as usize;
            for ch in 0..self.channels {
                let len = self.fifo[ch].len();
                self.fifo[ch].resize(len + d, 0.0);
            }
            self.counters.realign_inserted += d as u64;
        } else {
            let d = delta.unsigned_abs() as usize;
            let now = d.min(self.fifo[0].len());
            for ch in 0..self.channels {
                let len = self.fifo[ch].len();
                self.fifo[ch].truncate(len - now);
            }
            self.drop_debt += d - now;
            self.counters.realign_dropped += d as u64;
        }
    }

    /// Samples between a frame's first input sample and where it appears in the decoded output.
    pub fn priming(&self) -> i64 {
        match &self.encoder {
            Encoder::Ffmpeg(_) => AAC_FRAME as i64,
            Encoder::Fdk { delay, .. } => *delay,
        }
    }

    /// Takes one Opus packet whose first sample is at `pts` (48 kHz); appends finished AAC
    /// frames to `out`.
    pub fn push(&mut self, pts: i64, packet: &[u8], out: &mut Vec<AacFrame>) -> Result<(), AudioError> {
        match self.next_pts {
            None => self.fifo_pts = pts,
            Some(expected) => {
                let gap = pts - expected;
                if gap < -(AAC_FRAME as i64) / 2 {
                    // Older than what we already have: a duplicate or a very late packet.
                    self.counters.late_packets += 1;
                    return Ok(());
                }
                if gap > MAX_CONCEAL_SAMPLES {
                    self.counters.restarts += 1;
                    self.fifo[0].clear();
                    self.fifo[1].clear();
                    self.fifo_pts = pts;
                } else if gap > 0 {
                    self.counters.concealed_samples += gap as u64;
                    for ch in 0..self.channels {
                        self.fifo[ch].resize(self.fifo[ch].len() + gap as usize, 0.0);
                    }
                }
            }
        }
        let decoded = self.decode(packet)?;
        if decoded == 0 {
            // Undecodable: the next packet's gap is concealed.
            if self.next_pts.is_none() {
                self.next_pts = Some(pts);
            }
        } else {
            self.next_pts = Some(pts + decoded as i64);
        }
        self.drain(out)
    }

    /// Decodes into the FIFO; returns the number of samples added.
    fn decode(&mut self, packet: &[u8]) -> Result<usize, AudioError> {
        if packet.is_empty() {
            return Ok(0);
        }
        let pkt = ff::Packet::copy(packet);
        if self.decoder.send_packet(&pkt).is_err() {
            self.counters.decode_errors += 1;
            return Ok(0);
        }
        self.counters.packets += 1;
        let mut added = 0;
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            let f = &self.decoded;
            if f.format() != ff::format::Sample::F32(ff::format::sample::Type::Planar) || f.planes() == 0 {
                return Err(AudioError::SampleFormat);
            }
            let n = f.samples();
            let planes = f.planes();
            for ch in 0..self.channels {
                let plane = f.plane::<f32>(ch.min(planes - 1));
                self.fifo[ch].extend_from_slice(&plane[..n.min(plane.len())]);
            }
            added += n;
            if self.drop_debt > 0 {
                let d = self.drop_debt.min(n);
                for ch in 0..self.channels {
                    let len = self.fifo[ch].len();
                    self.fifo[ch].truncate(len - d);
                }
                self.drop_debt -= d;
            }
        }
        Ok(added)
    }

    fn drain(&mut self, out: &mut Vec<AacFrame>) -> Result<(), AudioError> {
        while self.fifo[0].len() >= AAC_FRAME {
            let pts = self.fifo_pts;
            self.fifo_pts += AAC_FRAME as i64;
            match &mut self.encoder {
                Encoder::Ffmpeg(enc) => {
                    let layout = ff::ChannelLayout::default(self.channels as i32);
                    let mut frame = ff::frame::Audio::new(ff::format::Sample::F32(ff::format::sample::Type::Planar), AAC_FRAME, layout);
                    frame.set_rate(SAMPLE_RATE);
                    frame.set_pts(Some(pts));
                    for ch in 0..self.channels {
                        frame.plane_mut::<f32>(ch)[..AAC_FRAME].copy_from_slice(&self.fifo[ch][..AAC_FRAME]);
                    }
                    enc.send_frame(&frame).map_err(|e| AudioError::Ffmpeg("AAC encoding", e))?;
                    let mut pkt = ff::Packet::empty();
                    while enc.receive_packet(&mut pkt).is_ok() {
                        if let (Some(pts), Some(data)) = (pkt.pts(), pkt.data()) {
                            out.push(AacFrame {
                                pts,
                                data: Bytes::copy_from_slice(data),
                            });
                        }
                    }
                }
                Encoder::Fdk {
                    enc,
                    delay,
                    pending,
                    pcm,
                    out: buf,
                } => {
                    // Interleaved 16-bit, as FDK takes it, straight from the FIFO.
                    pcm.clear();
                    if self.channels == 2 {
                        for (l, r) in self.fifo[0][..AAC_FRAME].iter().zip(&self.fifo[1][..AAC_FRAME]) {
                            pcm.push(to_i16(*l));
                            pcm.push(to_i16(*r));
                        }
                    } else {
                        pcm.extend(self.fifo[0][..AAC_FRAME].iter().map(|v| to_i16(*v)));
                    }
                    pending.push_back(pts);
                    let info = enc.encode(pcm, buf).map_err(|e| AudioError::Fdk(e.to_string()))?;
                    if info.output_size > 0 {
                        if let Some(p) = pending.pop_front() {
                            out.push(AacFrame {
                                pts: p - *delay,
                                data: Bytes::copy_from_slice(&buf[..info.output_size]),
                            });
                        }
                    }
                }
            }
            for ch in 0..self.channels {
                self.fifo[ch].drain(..AAC_FRAME);
            }
        }
        Ok(())
    }
}

fn to_i16(v: f32) -> i16 {
    (v.clamp(-1.0, 1.0) * 32767.0) as i16
}

fn ffmpeg_aac(channels: usize) -> Result<ff::encoder::Audio, AudioError> {
    let enc_codec = ff::encoder::find(ff::codec::Id::AAC).ok_or(AudioError::CodecMissing("AAC encoder"))?;
    let mut enc = ff::codec::Context::new_with_codec(enc_codec)
        .encoder()
        .audio()
        .map_err(|e| AudioError::Ffmpeg("creating the AAC encoder", e))?;
    enc.set_rate(SAMPLE_RATE as i32);
    enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
    enc.set_channel_layout(ff::ChannelLayout::default(channels as i32));
    enc.set_bit_rate(64_000 * channels);
    enc.set_time_base(ff::Rational::new(1, SAMPLE_RATE as i32));
    // The "fast" coder: a third of the default two-loop search's CPU (bench/whip.sh
    // transcode), at a quality difference that does not matter for live speech and music.
    let mut opts = ff::Dictionary::new();
    opts.set("aac_coder", "fast");
    enc.open_as_with(enc_codec, opts)
        .map_err(|e| AudioError::Ffmpeg("opening the AAC encoder", e))
}

fn fdk_aac_encoder(channels: usize) -> Result<Encoder, AudioError> {
    use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, EncoderParams, Transport};
    let enc = fdk_aac::enc::Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(64_000 * channels as u32),
        sample_rate: SAMPLE_RATE,
        transport: Transport::Raw,
        channels: if channels == 2 { ChannelMode::Stereo } else { ChannelMode::Mono },
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .map_err(|e| AudioError::Fdk(e.to_string()))?;
    let info = enc.info().map_err(|e| AudioError::Fdk(e.to_string()))?;
    Ok(Encoder::Fdk {
        enc,
        delay: i64::from(info.nDelay),
        pending: VecDeque::new(),
        pcm: Vec::with_capacity(AAC_FRAME * 2),
        out: vec![0; 8192],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opus packets from FFmpeg's libopus encoder (20 ms, mono, 440 Hz), generated in the test
    /// with FFmpeg's own encoder so no binary test data is needed.
    fn opus_packets(n: usize, stereo: bool) -> Vec<Vec<u8>> {
        ff::init().unwrap();
        let codec = ff::encoder::find_by_name("libopus").unwrap();
        let ch = if stereo { 2 } else { 1 };
        let mut enc = ff::codec::Context::new_with_codec(codec).encoder().audio().unwrap();
        enc.set_rate(48_000);
        enc.set_format(ff::format::Sample::I16(ff::format::sample::Type::Packed));
        enc.set_channel_layout(ff::ChannelLayout::default(ch));
        enc.set_bit_rate(32_000);
        enc.set_time_base(ff::Rational::new(1, 48_000));
        let mut enc = enc.open_as(codec).unwrap();
        let mut out = Vec::new();
        let mut t = 0usize;
        while out.len() < n {
            let mut f = ff::frame::Audio::new(
                ff::format::Sample::I16(ff::format::sample::Type::Packed),
                960,
                ff::ChannelLayout::default(ch),
            );
            f.set_pts(Some(t as i64));
            let buf = f.plane_mut::<i16>(0);
            for (i, s) in buf.iter_mut().enumerate() {
                let k = t + i / ch as usize;
                *s = ((k as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin() * 8000.0) as i16;
            }
            t += 960;
            enc.send_frame(&f).unwrap();
            let mut p = ff::Packet::empty();
            while enc.receive_packet(&mut p).is_ok() {
                out.push(p.data().unwrap().to_vec());
            }
        }
        out
    }

    const ENCODERS: [AacEncoderKind; 2] = [AacEncoderKind::Fdk, AacEncoderKind::Ffmpeg];

    /// Decodes AAC frames with FFmpeg's decoder (each behind an ADTS header built from the
    /// AudioSpecificConfig): the number of samples out.
    fn decode_aac(asc: &[u8], frames: &[AacFrame]) -> usize {
        let codec = ff::decoder::find(ff::codec::Id::AAC).unwrap();
        let mut dec = ff::codec::Context::new_with_codec(codec).decoder().audio().unwrap();
        let mut n = 0;
        let mut f = ff::frame::Audio::empty();
        for fr in frames {
            let mut adts = adts_header(fr.data.len(), asc);
            adts.extend_from_slice(&fr.data);
            if dec.send_packet(&ff::Packet::copy(&adts)).is_ok() {
                while dec.receive_frame(&mut f).is_ok() {
                    n += f.samples();
                }
            }
        }
        n
    }

    /// An ADTS header for a raw frame (AAC-LC, 48 kHz, channels from the ASC).
    fn adts_header(len: usize, asc: &[u8]) -> Vec<u8> {
        let channels = (asc[1] >> 3) & 0x0f;
        let full = len + 7;
        vec![
            0xff,
            0xf1,
            (1 << 6) | (3 << 2) | (channels >> 2),
            ((channels & 3) << 6) | (full >> 11) as u8,
            (full >> 3) as u8,
            (((full & 7) << 5) as u8) | 0x1f,
            0xfc,
        ]
    }

    #[test]
    fn continuous_timestamps_from_sample_counts() {
        let pkts = opus_packets(100, false);
        assert!(!opus_is_stereo(&pkts[0]));
        for kind in ENCODERS {
            let mut t = OpusToAac::with_encoder(false, kind).unwrap();
            assert_eq!(t.config().info.channels, 1);
            let mut out = Vec::new();
            for (i, p) in pkts.iter().enumerate() {
                t.push(10_000 + i as i64 * 960, p, &mut out).unwrap();
            }
            // 96,000 samples in: 93 full AAC frames through the FIFO, the encoder holds its delay.
            assert!(out.len() >= 90, "{kind:?}: {}", out.len());
            assert_eq!(out[0].pts, 10_000 - t.priming(), "{kind:?}: priming accounted for");
            assert!(t.priming() >= 1024 && t.priming() <= 3072, "{kind:?}: {}", t.priming());
            for w in out.windows(2) {
                assert_eq!(w[1].pts - w[0].pts, 1024);
            }
            assert_eq!(t.counters().concealed_samples, 0);
            // Real AAC: FFmpeg's decoder takes every frame.
            let asc = t.config().asc.clone();
            assert_eq!(decode_aac(&asc, &out), out.len() * 1024, "{kind:?}");
        }
    }

    #[test]
    fn realignment_keeps_the_timeline_continuous() {
        let pkts = opus_packets(60, false);
        let mut t = OpusToAac::with_encoder(false, AacEncoderKind::Fdk).unwrap();
        let mut out = Vec::new();
        let mut offset = 0i64;
        for (i, p) in pkts.iter().enumerate() {
            if i == 20 {
                // Sender reports say audio must be 10 ms later: later packets are stamped so.
                t.shift(480);
                offset += 480;
            }
            if i == 40 {
                // ... and then 30 ms earlier (more than the FIFO holds: the rest is dropped
                // from what is decoded next).
                t.shift(-1440);
                offset -= 1440;
            }
            t.push(i as i64 * 960 + offset, p, &mut out).unwrap();
        }
        for w in out.windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 1024, "no jump in the AAC timeline");
        }
        let c = t.counters();
        assert_eq!(
            (c.realign_inserted, c.realign_dropped, c.concealed_samples, c.late_packets),
            (480, 1440, 0, 0)
        );
        // Samples in the output = decoded + inserted - dropped (up to what the encoder and
        // the FIFO still hold).
        let decoded = 60 * 960 + 480 - 1440;
        let emitted = out.len() as i64 * 1024;
        assert!(
            decoded - emitted >= 0 && decoded - emitted < 1024 + t.priming() + 1024,
            "{decoded} vs {emitted}"
        );
    }

    #[test]
    fn lost_packet_is_concealed_and_stays_continuous() {
        let pkts = opus_packets(50, true);
        assert!(opus_is_stereo(&pkts[0]));
        for kind in ENCODERS {
            lost_packet_case(&pkts, kind);
        }
    }

    fn lost_packet_case(pkts: &[Vec<u8>], kind: AacEncoderKind) {
        let mut t = OpusToAac::with_encoder(true, kind).unwrap();
        let mut out = Vec::new();
        for (i, p) in pkts.iter().enumerate() {
            if i == 10 || i == 11 {
                continue; // lost
            }
            t.push(i as i64 * 960, p, &mut out).unwrap();
        }
        assert_eq!(t.counters().concealed_samples, 1920);
        for w in out.windows(2) {
            assert_eq!(w[1].pts - w[0].pts, 1024);
        }
        // A duplicate is skipped; a garbage packet does not stop the stream.
        t.push(20 * 960, &pkts[20], &mut out).unwrap();
        assert_eq!(t.counters().late_packets, 1);
        t.push(50 * 960, &[0xff, 0xff, 0xff], &mut out).unwrap();
        t.push(51 * 960, &pkts[0], &mut out).unwrap();
        // A gap of more than a second restarts the FIFO instead of inserting a minute of silence.
        t.push(60 * 48_000, &pkts[1], &mut out).unwrap();
        assert_eq!(t.counters().restarts, 1);
    }
}
