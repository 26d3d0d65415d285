//! Peak-EWMA of connect latency (Finagle/Linkerd): a slower sample takes effect at once, faster
//! samples pull the estimate down gradually, and without samples it decays toward zero so that
//! a once-slow endpoint is tried again. An endpoint that has no estimate (new, or back from an
//! ejection) says so, and the picker assumes the service's typical latency for it: assuming
//! zero would send it every new connection.

use std::time::{Duration, Instant};

/// Time constant of the decay.
const DECAY: Duration = Duration::from_secs(10);

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
        self.estimate_ms.map(|e| e * self.weight(now))
    }

    /// Adds one sample taken at `now`.
    pub fn observe(&mut self, sample_ms: f64, now: Instant) {
        self.estimate_ms = Some(match self.get(now) {
            Some(current) if sample_ms <= current => {
                let w = self.weight(now);
                current * w + sample_ms * (1.0 - w)
            }
            _ => sample_ms,
        });
        self.updated = now;
    }

    /// Forgets the estimate (the endpoint returns from an ejection as if new).
    pub fn reset(&mut self, now: Instant) {
        *self = Self::new(now);
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
        assert_eq!(e.get(t0), None);
        e.observe(2.0, t0);
        assert_eq!(e.get(t0), Some(2.0));
        e.observe(100.0, t0);
        assert_eq!(e.get(t0), Some(100.0));
        let later = t0 + Duration::from_secs(10);
        let decayed = e.get(later).unwrap();
        assert!((decayed - 100.0 / std::f64::consts::E).abs() < 1e-9);
        e.reset(later);
        assert_eq!(e.get(later), None);
    }

    #[test]
    fn faster_samples_pull_down_gradually() {
        let t0 = Instant::now();
        let mut e = PeakEwma::new(t0);
        e.observe(10.0, t0);
        let t1 = t0 + Duration::from_millis(100);
        e.observe(1.0, t1);
        let v = e.get(t1).unwrap();
        assert!(v < 10.0 && v > 1.0, "{v}");
    }
}
