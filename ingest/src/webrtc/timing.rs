//! RTP timestamps -> the hub's timeline, with audio aligned to video by RTCP sender reports.
//!
//! Each track's timestamp is `base + (rtp - rtp0)` in its own clock (90 kHz video, 48 kHz
//! audio). Until sender reports arrive, `base` comes from the arrival time of the track's first
//! packet (arrival-time mapping). Once both tracks have a sender report (NTP <-> RTP), the audio
//! base is moved so that audio and video sampled at the same NTP instant get the same timestamp;
//! this is re-checked on every report, and applied when the error exceeds
//! [`REALIGN_THRESHOLD_MS`] (so RTP clock drift cannot accumulate). Video is the reference and
//! never moves.

use std::time::{Instant, SystemTime};

/// Timestamps start here, so that encoder priming (AAC starts 1024 samples early) stays positive.
pub const TIMELINE_START_MS: i64 = 100;
/// Audio is moved when sender reports say it is off by more than this.
pub const REALIGN_THRESHOLD_MS: i64 = 10;

pub use webrtc::Track;

#[derive(Debug, Clone, Copy)]
struct TrackClock {
    clock: i64,
    /// First RTP timestamp (extended) and the base it maps to.
    start: Option<(u64, i64)>,
    /// Last sender report: NTP time and the 32-bit RTP timestamp it maps to.
    sr: Option<(SystemTime, u32)>,
}

impl TrackClock {
    fn new(clock: i64) -> Self {
        Self {
            clock,
            start: None,
            sr: None,
        }
    }

    /// Sender's NTP time of the track's first RTP timestamp, in seconds relative to `epoch`.
    fn ntp_of_start(&self, epoch: SystemTime) -> Option<f64> {
        let (rtp0, _) = self.start?;
        let (ntp, sr_rtp) = self.sr?;
        let diff = (rtp0 as u32).wrapping_sub(sr_rtp) as i32;
        let ntp_s = match ntp.duration_since(epoch) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        Some(ntp_s + f64::from(diff) / self.clock as f64)
    }
}

/// The session's clock mapping.
#[derive(Debug)]
pub struct SessionTiming {
    origin: Option<Instant>,
    video: TrackClock,
    audio: TrackClock,
    realignments: u64,
}

impl Default for SessionTiming {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionTiming {
    /// No packets seen yet.
    pub fn new() -> Self {
        Self {
            origin: None,
            video: TrackClock::new(90_000),
            audio: TrackClock::new(48_000),
            realignments: 0,
        }
    }

    fn clock_mut(&mut self, track: Track) -> &mut TrackClock {
        match track {
            Track::Video => &mut self.video,
            Track::Audio => &mut self.audio,
        }
    }

    /// Timestamp (in the track's clock) of an RTP timestamp that arrived at `arrival`.
    pub fn pts(&mut self, track: Track, rtp: u64, arrival: Instant) -> i64 {
        let origin = *self.origin.get_or_insert(arrival);
        let tc = self.clock_mut(track);
        let clock = tc.clock;
        let (rtp0, base) = *tc.start.get_or_insert_with(|| {
            let since = arrival.saturating_duration_since(origin);
            let base = (since.as_micros() as i64) * clock / 1_000_000 + TIMELINE_START_MS * clock / 1000;
            (rtp, base)
        });
        base + (rtp as i64).wrapping_sub(rtp0 as i64)
    }

    /// A sender report for `track`: NTP time and RTP timestamp. Returns the audio correction in
    /// 48 kHz samples when audio was moved (to shift audio already buffered downstream).
    pub fn sender_report(&mut self, track: Track, ntp: SystemTime, rtp: u32) -> Option<i64> {
        self.clock_mut(track).sr = Some((ntp, rtp));
        let epoch = self.video.sr.map(|(t, _)| t)?;
        let v0 = self.video.ntp_of_start(epoch)?;
        let a0 = self.audio.ntp_of_start(epoch)?;
        let (_, vbase) = self.video.start?;
        let (arpt0, abase) = self.audio.start?;
        // Sender-side offset between the tracks' first samples, applied on our timeline.
        let want = vbase * 48_000 / 90_000 + ((a0 - v0) * 48_000.0).round() as i64;
        let delta = want - abase;
        if delta.abs() * 1000 / 48_000 < REALIGN_THRESHOLD_MS && self.realignments > 0 {
            return None;
        }
        if delta == 0 {
            self.realignments += 1;
            return None;
        }
        self.audio.start = Some((arpt0, want));
        self.realignments += 1;
        Some(delta)
    }

    /// How often audio was moved.
    pub fn realignments(&self) -> u64 {
        self.realignments
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn arrival_mapping_then_sender_reports_align_audio() {
        let t0 = Instant::now();
        let mut s = SessionTiming::new();
        // Video first packet at t0 with RTP 1000; audio arrives 30 ms later with RTP 5000.
        assert_eq!(s.pts(Track::Video, 1000, t0), 9000);
        assert_eq!(s.pts(Track::Video, 1000 + 3000, t0 + Duration::from_millis(40)), 12_000);
        let a = s.pts(Track::Audio, 5000, t0 + Duration::from_millis(30));
        assert_eq!(a, 4800 + 1440);
        // Sender reports say audio RTP 5000 was sampled 50 ms after video RTP 1000.
        let ntp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(s.sender_report(Track::Video, ntp + Duration::from_secs(1), 1000 + 90_000), None);
        let corr = s.sender_report(Track::Audio, ntp + Duration::from_millis(1050), 5000 + 48_000);
        assert_eq!(corr, Some(960));
        assert_eq!(s.pts(Track::Audio, 5000, t0), 4800 + 2400);
        // A later report within the threshold changes nothing.
        assert_eq!(
            s.sender_report(Track::Audio, ntp + Duration::from_millis(2052), 5000 + 96_000),
            None
        );
        // A drift beyond it is corrected.
        assert_eq!(
            s.sender_report(Track::Audio, ntp + Duration::from_millis(3070), 5000 + 144_000),
            Some(960)
        );
        assert_eq!(s.realignments(), 2);
    }

    #[test]
    fn rtp_wraparound_in_sender_report() {
        let t0 = Instant::now();
        let mut s = SessionTiming::new();
        let v0 = u64::from(u32::MAX) - 100;
        s.pts(Track::Video, v0, t0);
        s.pts(Track::Audio, 10, t0);
        let ntp = SystemTime::UNIX_EPOCH + Duration::from_secs(5_000_000);
        s.sender_report(Track::Video, ntp, (v0 as u32).wrapping_add(900));
        // Audio RTP 10 sampled at the same instant as video RTP v0: 10 ms before `ntp`.
        let corr = s.sender_report(Track::Audio, ntp - Duration::from_millis(10), 10);
        assert_eq!(corr, None, "already aligned by arrival");
        assert_eq!(s.pts(Track::Audio, 10, t0), 4800);
    }
}
