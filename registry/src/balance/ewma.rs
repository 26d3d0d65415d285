//! Connect latency per endpoint, after Finagle/Linkerd's peak-EWMA: a failed connect (its
//! penalty sample) takes effect at once, and without samples the estimate fades toward zero so
//! that a once-slow endpoint is tried again.
//!
//! Successful connect times are averaged over about [`SMOOTHING`] instead of peak-taken: a
//! connect to a healthy instance nearby takes tens of microseconds, and a sample of tens of
//! milliseconds is nearly always the balancer's own scheduling delay on a busy host. Taken as
//! a peak it made one of two equal instances look 50 times slower for the ten seconds it took
//! to fade, and p2c_ewma sent the other one most connections (a 68/32 split under overload).
//! An endpoint that has no estimate (new, or back from an ejection) says so, and the picker
//! assumes the service's typical latency for it: assuming zero would send it every new
//! connection.

use std::time::{Duration, Instant};

/// Time constant of the fade without samples (and of a penalty's).
const DECAY: Duration = Duration::from_secs(10);
/// Time constant over which successful connect times are averaged.
const SMOOTHING: Duration = Duration::from_secs(1);

/// The estimate for one endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakEwma {
    /// `None` until the first sample.
    estimate_ms: Option<f64>,
    updated: Instant,
}

impl PeakEwma {
    /// An unmeasured endpoint.
    pub fn new(now: Instant) -> Self {
        Self {
            estimate_ms: None,
            updated: now,
        }
    }

    /// The estimate as of `now`, `None` while unmeasured.
    pub fn get(&self, now: Instant) -> Option<f64> {
        self.estimate_ms.map(|e| e * self.fade(now, DECAY))
    }

    /// A successful connect that took `sample_ms`, at `now`: averaged in.
    pub fn observe(&mut self, sample_ms: f64, now: Instant) {
        let next = match self.get(now) {
            None => sample_ms,
            Some(current) => {
                let keep = self.fade(now, SMOOTHING);
                current * keep + sample_ms * (1.0 - keep)
            }
        };
        self.estimate_ms = Some(next);
        self.updated = now;
    }

    /// A failed connect, counted as taking `sample_ms`: takes effect at once when higher.
    pub fn penalize(&mut self, sample_ms: f64, now: Instant) {
        let current = self.get(now).unwrap_or(0.0);
        self.estimate_ms = Some(current.max(sample_ms));
        self.updated = now;
    }

    /// Forgets the estimate (the endpoint returns from an ejection as if new).
    pub fn reset(&mut self, now: Instant) {
        *self = Self::new(now);
    }

    /// The share of the estimate left after the time since the last sample, for `constant`.
    fn fade(&self, now: Instant, constant: Duration) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (-elapsed / constant.as_secs_f64()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_penalty_is_taken_at_once_and_fades() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        assert_eq!(e.get(t0), None);
        e.observe(2.0, t0);
        assert_eq!(e.get(t0), Some(2.0));
        e.penalize(100.0, t0);
        assert_eq!(e.get(t0), Some(100.0));
        let later = t0 + Duration::from_secs(10);
        let faded = e.get(later).unwrap();
        assert!((faded - 100.0 / std::f64::consts::E).abs() < 1e-9);
        e.reset(later);
        assert_eq!(e.get(later), None);
    }

    #[test]
    fn one_slow_success_among_fast_ones_barely_moves_the_average() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        let mut t = t0;
        for i in 0..2000 {
            t += Duration::from_millis(1);
            e.observe(if i == 1000 { 50.0 } else { 0.05 }, t);
        }
        let v = e.get(t).unwrap();
        assert!(v < 0.2, "{v}");
    }

    #[test]
    fn a_lasting_slowdown_shows_within_seconds() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(0.05, t0);
        let mut t = t0;
        for _ in 0..300 {
            t += Duration::from_millis(10);
            e.observe(20.0, t);
        }
        let v = e.get(t).unwrap();
        assert!(v > 15.0, "{v}");
    }
}
