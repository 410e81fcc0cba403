//! AAC -> Opus 48 kHz for WebRTC viewers of RTMP publishers (FFmpeg's AAC decoder,
//! libswresample and libopus through ffmpeg-next).
//!
//! * AAC frames go to the decoder behind an ADTS header built from the AudioSpecificConfig, so
//!   no decoder extradata is needed.
//! * Decoded audio is resampled to 48 kHz interleaved float (what libopus takes), mono or
//!   stereo as the source (more channels are downmixed to stereo), and cut into 20 ms frames
//!   (960 samples) in a FIFO.
//! * Output timestamps come from sample counts from the first frame's time; an input jump of
//!   more than [`RESYNC_SAMPLES`] from where the count says it should be (a publisher's
//!   timestamp reset, a long gap) restarts the count at the input's time.
//! * libopus' priming (312 samples, 6.5 ms) is kept in the stream: WebRTC has no pre-skip, and
//!   the encoder's packet times already account for it (a packet's time is that of its first
//!   decoded sample, priming included), so audio lines up with video.
//! * [`OpusRendition`] runs a transcoder only while a consumer wants Opus (the hub's demand) and
//!   drops it when the last one goes.

use bytes::Bytes;
use ffmpeg_next as ff;
use media::aac::AacInfo;
use media::frame::{AudioConfig, Codec, CodecSet, MediaFrame, Timebase, TrackKind};

/// Opus runs at 48 kHz here.
pub const OPUS_RATE: u32 = 48_000;
/// 20 ms frames.
pub const OPUS_FRAME: usize = 960;
/// An input timestamp this far (200 ms) from the sample count restarts the count.
pub const RESYNC_SAMPLES: i64 = 9_600;
const OPUS_TB: Timebase = Timebase { num: 1, den: 48_000 };

/// Transcoder errors (each ends this stream's Opus rendition, not the stream).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpusError {
    /// FFmpeg lacks a codec.
    #[error("FFmpeg has no {0}")]
    CodecMissing(&'static str),
    /// FFmpeg refused to open or run something.
    #[error("{0}: {1}")]
    Ffmpeg(&'static str, ff::Error),
    /// The AudioSpecificConfig cannot be put in an ADTS header.
    #[error("AAC configuration not supported for transcoding: {0:?}")]
    Config(AacInfo),
}

/// What the transcoder counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpusCounters {
    /// AAC frames decoded.
    pub aac_frames: u64,
    /// AAC frames that did not decode.
    pub decode_errors: u64,
    /// Opus packets made.
    pub opus_packets: u64,
    /// Times the sample count restarted at an input timestamp.
    pub resyncs: u64,
}

/// One Opus packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusPacket {
    /// Time of its first sample, 48 kHz.
    pub pts: i64,
    /// The packet.
    pub data: Bytes,
}

/// AAC -> Opus for one stream.
pub struct AacToOpus {
    info: AacInfo,
    decoder: ff::decoder::Audio,
    resampler: Option<ff::software::resampling::Context>,
    encoder: ff::encoder::Audio,
    channels: usize,
    layout: ff::ChannelLayout,
    /// Interleaved samples waiting for a full Opus frame.
    fifo: Vec<f32>,
    /// Time of the FIFO's first sample.
    fifo_pts: i64,
    /// Where the next input frame should start (48 kHz), from the sample count.
    next_in: Option<i64>,
    decoded: ff::frame::Audio,
    counters: OpusCounters,
}

impl AacToOpus {
    /// A transcoder for AAC described by `config`.
    pub fn new(config: &AudioConfig) -> Result<Self, OpusError> {
        let info = config.info;
        if info.adts_header(0).is_none() {
            return Err(OpusError::Config(info));
        }
        ff::init().map_err(|e| OpusError::Ffmpeg("init", e))?;
        ff::util::log::set_level(ff::util::log::Level::Error);
        let channels = if info.channels == 1 { 1 } else { 2 };
        let layout = ff::ChannelLayout::default(channels as i32);
        let dec_codec = ff::decoder::find(ff::codec::Id::AAC).ok_or(OpusError::CodecMissing("AAC decoder"))?;
        let decoder = ff::codec::Context::new_with_codec(dec_codec)
            .decoder()
            .audio()
            .map_err(|e| OpusError::Ffmpeg("opening the AAC decoder", e))?;
        let enc_codec = ff::encoder::find_by_name("libopus").ok_or(OpusError::CodecMissing("libopus encoder"))?;
        let mut enc = ff::codec::Context::new_with_codec(enc_codec)
            .encoder()
            .audio()
            .map_err(|e| OpusError::Ffmpeg("creating the Opus encoder", e))?;
        enc.set_rate(OPUS_RATE as i32);
        enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Packed));
        enc.set_channel_layout(layout);
        enc.set_bit_rate(if channels == 2 { 96_000 } else { 64_000 });
        enc.set_time_base(ff::Rational::new(1, OPUS_RATE as i32));
        let encoder = enc
            .open_as(enc_codec)
            .map_err(|e| OpusError::Ffmpeg("opening the Opus encoder", e))?;
        Ok(Self {
            info,
            decoder,
            resampler: None,
            encoder,
            channels,
            layout,
            fifo: Vec::with_capacity(OPUS_FRAME * 4),
            fifo_pts: 0,
            next_in: None,
            decoded: ff::frame::Audio::empty(),
            counters: OpusCounters::default(),
        })
    }

    /// Counters so far.
    pub fn counters(&self) -> OpusCounters {
        self.counters
    }

    /// Takes one raw AAC frame whose first sample is at `pts` (48 kHz); appends finished Opus
    /// packets to `out`.
    pub fn push(&mut self, pts: i64, frame: &[u8], out: &mut Vec<OpusPacket>) -> Result<(), OpusError> {
        let Some(header) = self.info.adts_header(frame.len()) else {
            // Too large for ADTS (8 KiB): not an AAC frame a real encoder makes.
            self.counters.decode_errors += 1;
            return Ok(());
        };
        match self.next_in {
            Some(expected) if (pts - expected).abs() <= RESYNC_SAMPLES => {}
            Some(_) => {
                self.counters.resyncs += 1;
                self.fifo.clear();
                self.fifo_pts = pts;
            }
            None => self.fifo_pts = pts,
        }
        let mut packet = Vec::with_capacity(frame.len() + 7);
        packet.extend_from_slice(&header);
        packet.extend_from_slice(frame);
        if self.decoder.send_packet(&ff::Packet::copy(&packet)).is_err() {
            self.counters.decode_errors += 1;
            return Ok(());
        }
        let mut samples_in = 0;
        while self.decoder.receive_frame(&mut self.decoded).is_ok() {
            self.counters.aac_frames += 1;
            samples_in += self.decoded.samples();
            self.resample()?;
        }
        let rate = i64::from(self.info.sample_rate.max(1));
        let duration = if samples_in > 0 { samples_in as i64 } else { 1024 } * i64::from(OPUS_RATE) / rate;
        self.next_in = Some(pts + duration);
        self.encode(out)
    }

    /// Appends the decoded frame to the FIFO at 48 kHz, interleaved.
    fn resample(&mut self) -> Result<(), OpusError> {
        let d = &self.decoded;
        let src_rate = d.rate();
        let src_layout = if d.channel_layout().is_empty() {
            ff::ChannelLayout::default(d.channels() as i32)
        } else {
            d.channel_layout()
        };
        let stale = self.resampler.as_ref().is_none_or(|r| {
            let i = r.input();
            i.rate != src_rate || i.format != d.format() || i.channel_layout != src_layout
        });
        if stale {
            let r = ff::software::resampling::Context::get(
                d.format(),
                src_layout,
                src_rate,
                ff::format::Sample::F32(ff::format::sample::Type::Packed),
                self.layout,
                OPUS_RATE,
            )
            .map_err(|e| OpusError::Ffmpeg("resampler", e))?;
            self.resampler = Some(r);
        }
        let Some(r) = self.resampler.as_mut() else { return Ok(()) };
        // Room for every sample the input makes at 48 kHz plus what the filter held back, so
        // nothing stays buffered inside the resampler between frames.
        let room = d.samples() * OPUS_RATE as usize / src_rate.max(1) as usize + 64;
        let mut o = ff::frame::Audio::new(ff::format::Sample::F32(ff::format::sample::Type::Packed), room, self.layout);
        r.run(d, &mut o).map_err(|e| OpusError::Ffmpeg("resampling", e))?;
        let n = o.samples() * self.channels;
        // Packed: every channel's samples interleaved in the first data plane.
        let data = o.data(0);
        let floats = data.len() / 4;
        for i in 0..n.min(floats) {
            let b = [data[i * 4], data[i * 4 + 1], data[i * 4 + 2], data[i * 4 + 3]];
            self.fifo.push(f32::from_ne_bytes(b));
        }
        Ok(())
    }

    fn encode(&mut self, out: &mut Vec<OpusPacket>) -> Result<(), OpusError> {
        let per_frame = OPUS_FRAME * self.channels;
        while self.fifo.len() >= per_frame {
            let mut f = ff::frame::Audio::new(ff::format::Sample::F32(ff::format::sample::Type::Packed), OPUS_FRAME, self.layout);
            f.set_rate(OPUS_RATE);
            f.set_pts(Some(self.fifo_pts));
            {
                let data = f.data_mut(0);
                for (i, v) in self.fifo[..per_frame].iter().enumerate() {
                    data[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
                }
            }
            self.fifo.drain(..per_frame);
            self.fifo_pts += OPUS_FRAME as i64;
            self.encoder.send_frame(&f).map_err(|e| OpusError::Ffmpeg("Opus encoding", e))?;
            let mut pkt = ff::Packet::empty();
            while self.encoder.receive_packet(&mut pkt).is_ok() {
                if let (Some(pts), Some(data)) = (pkt.pts(), pkt.data()) {
                    self.counters.opus_packets += 1;
                    out.push(OpusPacket {
                        pts,
                        data: Bytes::copy_from_slice(data),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The Opus rendition of an AAC stream, made only while wanted.
#[derive(Default)]
pub struct OpusRendition {
    config: Option<AudioConfig>,
    transcoder: Option<AacToOpus>,
    error: Option<String>,
    packets: Vec<OpusPacket>,
    /// Transcoders started (each time demand came back).
    pub starts: u64,
}

impl OpusRendition {
    /// Nothing running.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream's AAC configuration changed: the next frame starts a fresh transcoder.
    pub fn set_config(&mut self, config: &AudioConfig) {
        if self.config.as_ref() != Some(config) {
            self.config = Some(config.clone());
            self.transcoder = None;
            self.error = None;
        }
    }

    /// Why the rendition stopped, if it failed.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// True while a transcoder runs.
    pub fn running(&self) -> bool {
        self.transcoder.is_some()
    }

    /// The running transcoder's counters.
    pub fn counters(&self) -> Option<OpusCounters> {
        self.transcoder.as_ref().map(AacToOpus::counters)
    }

    /// Takes an AAC frame of the stream; appends Opus frames to `out` while `demand` holds
    /// Opus. Without demand the transcoder is dropped.
    pub fn push(&mut self, frame: &MediaFrame, demand: CodecSet, out: &mut Vec<MediaFrame>) {
        if frame.codec != Codec::Aac || frame.track != TrackKind::Audio {
            return;
        }
        if !demand.contains(Codec::Opus) {
            self.transcoder = None;
            return;
        }
        if self.error.is_some() {
            return;
        }
        if self.transcoder.is_none() {
            let Some(config) = &self.config else { return };
            match AacToOpus::new(config) {
                Ok(t) => {
                    self.starts += 1;
                    self.transcoder = Some(t);
                }
                Err(e) => {
                    self.error = Some(e.to_string());
                    return;
                }
            }
        }
        let Some(t) = self.transcoder.as_mut() else { return };
        let pts = frame.timebase.rescale(frame.pts, OPUS_TB);
        if let Err(e) = t.push(pts, &frame.data, &mut self.packets) {
            self.error = Some(e.to_string());
            self.transcoder = None;
        }
        for p in self.packets.drain(..) {
            out.push(MediaFrame::coded(Codec::Opus, p.pts, p.pts, OPUS_TB, true, p.data));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AAC-LC frames of a 440 Hz tone from FFmpeg's encoder, with their AudioSpecificConfig.
    fn aac_frames(rate: u32, channels: i32, n: usize) -> (AudioConfig, Vec<Vec<u8>>) {
        ff::init().unwrap();
        let codec = ff::encoder::find(ff::codec::Id::AAC).unwrap();
        let mut enc = ff::codec::Context::new_with_codec(codec).encoder().audio().unwrap();
        enc.set_rate(rate as i32);
        enc.set_format(ff::format::Sample::F32(ff::format::sample::Type::Planar));
        enc.set_channel_layout(ff::ChannelLayout::default(channels));
        enc.set_bit_rate(96_000);
        enc.set_time_base(ff::Rational::new(1, rate as i32));
        let mut enc = enc.open_as(codec).unwrap();
        let mut out = Vec::new();
        let mut t = 0usize;
        while out.len() < n {
            let mut f = ff::frame::Audio::new(
                ff::format::Sample::F32(ff::format::sample::Type::Planar),
                1024,
                ff::ChannelLayout::default(channels),
            );
            f.set_rate(rate);
            f.set_pts(Some(t as i64));
            for ch in 0..channels as usize {
                for (i, s) in f.plane_mut::<f32>(ch).iter_mut().enumerate() {
                    *s = ((t + i) as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin() * 0.3;
                }
            }
            t += 1024;
            enc.send_frame(&f).unwrap();
            let mut p = ff::Packet::empty();
            while enc.receive_packet(&mut p).is_ok() {
                out.push(p.data().unwrap().to_vec());
            }
        }
        let info = AacInfo {
            object_type: 2,
            sample_rate: rate,
            channels: channels as u8,
        };
        (AudioConfig::from_asc(info.to_asc().unwrap()).unwrap(), out)
    }

    /// Decodes Opus packets with FFmpeg's decoder; returns the samples of channel 0.
    fn decode_opus(packets: &[OpusPacket], channels: usize) -> Vec<f32> {
        let codec = ff::decoder::find(ff::codec::Id::OPUS).unwrap();
        let mut opts = ff::Dictionary::new();
        opts.set("ch_layout", if channels == 2 { "stereo" } else { "mono" });
        let mut dec = ff::codec::Context::new_with_codec(codec)
            .decoder()
            .open_with(opts)
            .unwrap()
            .audio()
            .unwrap();
        let mut f = ff::frame::Audio::empty();
        let mut pcm = Vec::new();
        for p in packets {
            dec.send_packet(&ff::Packet::copy(&p.data)).unwrap();
            while dec.receive_frame(&mut f).is_ok() {
                pcm.extend_from_slice(&f.plane::<f32>(0)[..f.samples()]);
            }
        }
        pcm
    }

    /// Zero crossings per second of the decoded signal: 880 for a 440 Hz tone.
    fn crossings_per_second(pcm: &[f32]) -> f64 {
        let n = pcm.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        n as f64 / (pcm.len() as f64 / 48_000.0)
    }

    #[test]
    fn a_44100_stereo_tone_comes_out_as_48k_opus_of_the_same_tone() {
        for (rate, ch) in [(44_100u32, 2), (48_000, 1)] {
            let (config, frames) = aac_frames(rate, ch, 200);
            let mut t = AacToOpus::new(&config).unwrap();
            let mut out = Vec::new();
            for (i, f) in frames.iter().enumerate() {
                let pts = 90_000 + (i as i64 * 1024 * 48_000) / i64::from(rate);
                t.push(pts, f, &mut out).unwrap();
            }
            let seconds = 200.0 * 1024.0 / f64::from(rate);
            let expected = (seconds * 48_000.0 / 960.0) as usize;
            assert!(
                out.len() + 3 >= expected && out.len() <= expected,
                "{rate}: {} packets, {expected} expected",
                out.len()
            );
            for w in out.windows(2) {
                assert_eq!(w[1].pts - w[0].pts, 960, "{rate}: continuous 20 ms packets");
            }
            assert!((out[0].pts - 90_000).abs() <= 400, "{rate}: first packet at {}", out[0].pts);
            assert_eq!(t.counters().decode_errors, 0);
            // What a browser would hear: the tone, not silence or noise.
            let pcm = decode_opus(&out, ch as usize);
            let steady = &pcm[48_000 / 2..pcm.len() - 4800];
            let rms = (steady.iter().map(|v| v * v).sum::<f32>() / steady.len() as f32).sqrt();
            assert!(rms > 0.1 && rms < 0.4, "{rate}: rms {rms}");
            let z = crossings_per_second(steady);
            assert!((z - 880.0).abs() < 20.0, "{rate}: {z} zero crossings per second");
        }
    }

    #[test]
    fn a_timestamp_jump_restarts_the_count_and_garbage_is_counted() {
        let (config, frames) = aac_frames(48_000, 1, 60);
        let mut t = AacToOpus::new(&config).unwrap();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let jump = if i >= 30 { 480_000 } else { 0 };
            t.push(i as i64 * 1024 + jump, f, &mut out).unwrap();
        }
        assert_eq!(t.counters().resyncs, 1);
        assert!(out.iter().any(|p| p.pts >= 480_000 + 30 * 1024 - 960));
        t.push(70 * 1024 + 480_000, b"\xde\xad\xbe\xef not aac", &mut out).unwrap();
        t.push(71 * 1024 + 480_000, &vec![0u8; 9000], &mut out).unwrap();
        assert!(t.counters().decode_errors >= 1);
    }

    #[test]
    fn the_rendition_runs_only_while_opus_is_wanted() {
        let (config, frames) = aac_frames(48_000, 1, 40);
        let mut r = OpusRendition::new();
        r.set_config(&config);
        let mut out = Vec::new();
        let opus = CodecSet::of(&[Codec::Opus]);
        for (i, f) in frames.iter().enumerate() {
            let frame = MediaFrame::audio(i as i64 * 1024, Timebase { num: 1, den: 48_000 }, Bytes::from(f.clone()));
            let demand = if (10..30).contains(&i) {
                opus.union(CodecSet::FLV)
            } else {
                CodecSet::FLV
            };
            r.push(&frame, demand, &mut out);
            assert_eq!(r.running(), (10..30).contains(&i), "frame {i}");
        }
        assert!(out.len() >= 15 && out.iter().all(|f| f.codec == Codec::Opus), "{}", out.len());
        assert_eq!(r.starts, 1);
    }
}
