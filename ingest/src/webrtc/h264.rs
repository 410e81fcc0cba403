//! H.264 access units from WebRTC (Annex-B, parameter sets in-band) -> hub configs and frames.
//!
//! The RTP depacketizer (RFC 6184: single NAL, STAP-A, FU-A) is str0m's; it hands us one access
//! unit per RTP timestamp in Annex-B form. Here:
//! * SPS/PPS are taken from the stream. Browsers repeat them before every IDR; a new
//!   AVCDecoderConfigurationRecord is emitted only when their bytes really change.
//! * After a gap (`contiguous == false`) or before the first IDR, frames are dropped until the
//!   next IDR, and a keyframe is asked for.
//! * Frames leave in AVCC form (4-byte lengths) with SPS, PPS, AUD and filler removed.

use bytes::{BufMut, Bytes, BytesMut};
use media::avc::{annexb_nal_units, AvcDecoderConfig};
use media::frame::VideoConfig;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
/// Largest parameter set we keep (real ones are < 100 bytes).
const MAX_PARAM_SET: usize = 1024;

/// What one access unit produced.
#[derive(Debug, Default)]
pub struct AuOutput {
    /// A new configuration, to set before `frame`.
    pub config: Option<VideoConfig>,
    /// The frame in AVCC form and whether it is an IDR.
    pub frame: Option<(Bytes, bool)>,
    /// The depacketized stream cannot be decoded until the next IDR: ask the sender for one.
    pub want_keyframe: bool,
}

/// Counters of what was dropped, for stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct H264Counters {
    /// Access units dropped while waiting for an IDR.
    pub dropped_waiting_keyframe: u64,
    /// Parameter sets that did not parse (SPS) or were oversized.
    pub bad_parameter_sets: u64,
    /// Sequence headers emitted.
    pub configs: u64,
}

/// Per-track state.
#[derive(Debug)]
pub struct H264Track {
    sps: Option<Bytes>,
    pps: Vec<Bytes>,
    current: Option<VideoConfig>,
    /// `sps`/`pps` changed since the configuration was last built from them.
    params_changed: bool,
    /// The parameter sets in force build a configuration (an IDR can be decoded).
    params_usable: bool,
    waiting_keyframe: bool,
    counters: H264Counters,
}

impl Default for H264Track {
    fn default() -> Self {
        Self::new()
    }
}

impl H264Track {
    /// A track waiting for its first IDR.
    pub fn new() -> Self {
        Self {
            sps: None,
            pps: Vec::new(),
            current: None,
            params_changed: false,
            params_usable: false,
            waiting_keyframe: true,
            counters: H264Counters::default(),
        }
    }

    /// Counters so far.
    pub fn counters(&self) -> H264Counters {
        self.counters
    }

    /// The configuration in force.
    pub fn config(&self) -> Option<&VideoConfig> {
        self.current.as_ref()
    }

    /// Takes one Annex-B access unit. `contiguous` is false when packets before it were lost.
    pub fn push(&mut self, annexb: &[u8], contiguous: bool) -> AuOutput {
        let mut out = AuOutput::default();
        if !contiguous {
            self.waiting_keyframe = true;
        }
        let mut keyframe = false;
        let mut au_sps: Option<&[u8]> = None;
        let mut au_pps: Vec<&[u8]> = Vec::new();
        let mut body = BytesMut::with_capacity(annexb.len());
        for nal in annexb_nal_units(annexb) {
            let Some(&header) = nal.first() else { continue };
            match header & 0x1f {
                NAL_SPS => au_sps = Some(nal),
                NAL_PPS => au_pps.push(nal),
                NAL_AUD | NAL_FILLER => {}
                t => {
                    keyframe |= t == NAL_IDR;
                    body.put_u32(nal.len() as u32);
                    body.put_slice(nal);
                }
            }
        }
        if au_sps.is_some() || !au_pps.is_empty() {
            self.take_parameter_sets(au_sps, &au_pps);
        }
        if keyframe {
            // Browsers repeat SPS/PPS before every IDR: rebuild only when their bytes changed.
            if self.params_changed {
                self.params_changed = false;
                self.params_usable = match self.build_config() {
                    Some(cfg) => {
                        if self.current.as_ref() != Some(&cfg) {
                            self.current = Some(cfg.clone());
                            self.counters.configs += 1;
                            out.config = Some(cfg);
                        }
                        true
                    }
                    None => false,
                };
            }
            // An IDR without usable parameter sets cannot be decoded by anyone.
            self.waiting_keyframe = !self.params_usable;
        }
        if self.waiting_keyframe || body.is_empty() {
            if !body.is_empty() {
                self.counters.dropped_waiting_keyframe += 1;
                out.want_keyframe = true;
            }
            return out;
        }
        out.frame = Some((body.freeze(), keyframe));
        out
    }

    fn take_parameter_sets(&mut self, sps: Option<&[u8]>, pps: &[&[u8]]) {
        if let Some(sps) = sps {
            if sps.len() > MAX_PARAM_SET || media::avc::parse_sps(sps).is_err() {
                self.counters.bad_parameter_sets += 1;
            } else if self.sps.as_deref() != Some(sps) {
                self.sps = Some(Bytes::copy_from_slice(sps));
                self.params_changed = true;
            }
        }
        if !pps.is_empty() {
            if pps.iter().any(|p| p.len() > MAX_PARAM_SET || p.len() < 2) {
                self.counters.bad_parameter_sets += 1;
            } else if self.pps.len() != pps.len() || self.pps.iter().zip(pps).any(|(a, b)| a.as_ref() != *b) {
                self.pps = pps.iter().map(|p| Bytes::copy_from_slice(p)).collect();
                self.params_changed = true;
            }
        }
    }

    fn build_config(&mut self) -> Option<VideoConfig> {
        let sps = self.sps.as_ref()?;
        let pps: Vec<&[u8]> = self.pps.iter().map(|p| p.as_ref()).collect();
        let rec = match AvcDecoderConfig::from_parameter_sets(sps, &pps) {
            Ok(r) => r,
            Err(_) => {
                self.counters.bad_parameter_sets += 1;
                return None;
            }
        };
        match VideoConfig::from_avcc(rec.to_bytes()) {
            Ok(c) => Some(c),
            Err(_) => {
                self.counters.bad_parameter_sets += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // SPS of Chromium's OpenH264 at 640x480 (constrained baseline) and 320x240 (from the
    // media crate's testdata), with a PPS.
    const SPS_480: &[u8] = include_bytes!("../../../media/testdata/openh264_640x480.sps");
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for n in nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn waits_for_idr_then_emits_config_once() {
        let mut t = H264Track::new();
        let p = t.push(&au(&[&[0x41, 0x9a, 1, 2]]), true);
        assert!(p.frame.is_none() && p.want_keyframe);
        let k = t.push(&au(&[&[0x09, 0xf0], SPS_480, PPS, &[0x65, 0x88, 1, 2, 3]]), true);
        let cfg = k.config.expect("config on first IDR");
        assert_eq!((cfg.info.width, cfg.info.height), (640, 480));
        let (data, key) = k.frame.expect("frame");
        assert!(key);
        // AUD, SPS, PPS stripped; IDR kept with a 4-byte length.
        assert_eq!(&data[..], &[0, 0, 0, 5, 0x65, 0x88, 1, 2, 3]);
        // The browser repeats SPS/PPS before the next IDR: no new config.
        let k2 = t.push(&au(&[SPS_480, PPS, &[0x65, 0x88, 4]]), true);
        assert!(k2.config.is_none());
        assert!(k2.frame.is_some());
        let p2 = t.push(&au(&[&[0x41, 0x9a, 5]]), true);
        assert_eq!(p2.frame.map(|f| f.1), Some(false));
        assert_eq!(t.counters().configs, 1);
    }

    #[test]
    fn gap_drops_until_next_idr() {
        let mut t = H264Track::new();
        t.push(&au(&[SPS_480, PPS, &[0x65, 1]]), true);
        let lost = t.push(&au(&[&[0x41, 2]]), false);
        assert!(lost.frame.is_none() && lost.want_keyframe);
        assert!(t.push(&au(&[&[0x41, 3]]), true).frame.is_none());
        let k = t.push(&au(&[SPS_480, PPS, &[0x65, 4]]), true);
        assert!(k.config.is_none(), "same parameter sets after a gap: no new sequence header");
        assert!(k.frame.is_some());
        assert_eq!(t.counters().dropped_waiting_keyframe, 2);
    }

    #[test]
    fn changed_pps_gives_one_new_config() {
        let mut t = H264Track::new();
        t.push(&au(&[SPS_480, PPS, &[0x65, 1]]), true);
        let k = t.push(&au(&[SPS_480, &[0x68, 0xce, 0x3c, 0x81], &[0x65, 2]]), true);
        assert!(k.config.is_some());
        let k = t.push(&au(&[SPS_480, &[0x68, 0xce, 0x3c, 0x81], &[0x65, 3]]), true);
        assert!(k.config.is_none());
    }

    #[test]
    fn idr_without_parameter_sets_is_not_forwarded() {
        let mut t = H264Track::new();
        let k = t.push(&au(&[&[0x65, 1]]), true);
        assert!(k.frame.is_none() && k.want_keyframe);
        let bad = t.push(&au(&[&[0x67, 0xff], PPS, &[0x65, 1]]), true);
        assert!(bad.frame.is_none());
        assert!(t.counters().bad_parameter_sets >= 1);
    }
}
