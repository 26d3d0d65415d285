//! Peak-EWMA of connect latency (Finagle/Linkerd): a slower sample takes effect at once, faster
//! samples pull the estimate down gradually, and without samples it decays toward zero so that
//! a once-slow endpoint is tried again.

use std::time::{Duration, Instant};

/// Time constant of the decay.
const DECAY: Duration = Duration::from_secs(10);

/// The estimate for one endpoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeakEwma {
    estimate_ms: f64,
    updated: Instant,
}

impl PeakEwma {
    /// An unmeasured endpoint (0 ms, so that it gets tried).
    pub fn new(now: Instant) -> Self {
        Self {
            estimate_ms: 0.0,
            updated: now,
        }
    }

    /// The estimate as of `now`.
    pub fn get(&self, now: Instant) -> f64 {
        self.estimate_ms * self.weight(now)
    }

    /// Adds one sample taken at `now`.
    pub fn observe(&mut self, sample_ms: f64, now: Instant) {
        let current = self.get(now);
        self.estimate_ms = if sample_ms > current {
            sample_ms
        } else {
            let w = self.weight(now);
            current * w + sample_ms * (1.0 - w)
        };
        self.updated = now;
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (-elapsed / DECAY.as_secs_f64()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_taken_at_once_and_decays() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(2.0, t0);
        assert_eq!(e.get(t0), 2.0);
        e.observe(100.0, t0);
        assert_eq!(e.get(t0), 100.0);
        let later = t0 + Duration::from_secs(10);
        assert!((e.get(later) - 100.0 / std::f64::consts::E).abs() < 1e-9);
    }

    #[test]
    fn faster_samples_pull_down_gradually() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(10.0, t0);
        let t1 = t0 + Duration::from_millis(100);
        e.observe(1.0, t1);
        let v = e.get(t1);
        assert!(v < 10.0 && v > 1.0, "{v}");
    }
}
