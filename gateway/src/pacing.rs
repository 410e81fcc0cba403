//! Keyframe request pacing (sans-IO): requests are collected and let through at most once per
//! interval, so that many viewers joining, an HLS segmenter waiting for a cut, and loss all at
//! once cost the publisher one keyframe, not a burst of them.

use std::time::{Duration, Instant};

/// Lets a pending request through at most once per `min_gap`.
#[derive(Debug, Clone)]
pub struct Pacer {
    min_gap: Duration,
    last: Option<Instant>,
    pending: bool,
}

impl Pacer {
    pub fn new(min_gap: Duration) -> Self {
        Self {
            min_gap,
            last: None,
            pending: false,
        }
    }

    /// Someone wants a keyframe.
    pub fn ask(&mut self) {
        self.pending = true;
    }

    /// True when a request should go out now (and counts it as sent): one is pending and the
    /// last went out at least `min_gap` ago.
    pub fn due(&mut self, now: Instant) -> bool {
        if !self.pending || self.last.is_some_and(|t| now.saturating_duration_since(t) < self.min_gap) {
            return false;
        }
        self.pending = false;
        self.last = Some(now);
        true
    }

    /// Nobody wants a keyframe any more (what asked was satisfied meanwhile): a pending ask is
    /// dropped, so it does not fire late into a fresh GOP.
    pub fn withdraw(&mut self) {
        self.pending = false;
    }

    /// The request could not be sent: it stays pending (the gap still counts from now).
    pub fn retry(&mut self) {
        self.pending = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_merged_and_spaced() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pacer::new(ms(500));
        assert!(!p.due(t0), "nothing asked");
        p.ask();
        p.ask();
        assert!(p.due(t0), "the first goes at once");
        assert!(!p.due(t0), "two asks, one request");
        p.ask();
        assert!(!p.due(t0 + ms(499)));
        assert!(p.due(t0 + ms(500)), "held until the gap is over, then sent");
        // A failed send is retried after the gap.
        p.ask();
        assert!(p.due(t0 + ms(1000)));
        p.retry();
        assert!(!p.due(t0 + ms(1400)));
        assert!(p.due(t0 + ms(1500)));
        assert!(!p.due(t0 + ms(9000)), "nothing pending");
        // An ask withdrawn before its gap is over never fires.
        p.ask();
        assert!(p.due(t0 + ms(9000)));
        p.ask();
        p.withdraw();
        assert!(!p.due(t0 + ms(9600)));
    }
}
