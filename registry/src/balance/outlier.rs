//! Passive outlier detection for one endpoint: consecutive connect failures eject it for a
//! time that grows with repeated ejections (base × n, capped). A pure state machine fed with
//! outcomes and instants; the share limit is decided by the caller, who sees all endpoints.

use super::config::OutlierConfig;
use std::time::{Duration, Instant};

/// Ejection state of one endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outlier {
    consecutive_failures: u32,
    /// Ejections in a row without a healthy period in between.
    ejections: u32,
    /// End and length of the current ejection.
    ejected: Option<(Instant, Duration)>,
    /// When it last came back, and how long that ejection lasted.
    restored: Option<(Instant, Duration)>,
}

impl Outlier {
    /// Whether it must get no new connections at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected.is_some_and(|(until, _)| now < until)
    }

    /// End of the current ejection, if any (also when already past but not yet restored).
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected.map(|(until, _)| until)
    }

    /// Ejections in a row so far.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// A connect succeeded. A healthy period as long as the last ejection forgives the past.
    pub fn on_success(&mut self, now: Instant) {
        self.consecutive_failures = 0;
        if let Some((at, lasted)) = self.restored
            && now.saturating_duration_since(at) >= lasted
        {
            self.ejections = 0;
            self.restored = None;
        }
    }

    /// A connect failed. Returns the end of a new ejection when this failure ejects it;
    /// `may_eject` is false when the service already has its maximum share ejected.
    pub fn on_failure(
        &mut self,
        now: Instant,
        config: &OutlierConfig,
        may_eject: bool,
    ) -> Option<Instant> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        if self.is_ejected(now)
            || !may_eject
            || self.consecutive_failures < config.consecutive_failures.max(1)
        {
            return None;
        }
        self.ejections = self.ejections.saturating_add(1);
        let duration = config
            .base_ejection
            .saturating_mul(self.ejections)
            .min(config.max_ejection);
        let until = now + duration;
        self.ejected = Some((until, duration));
        self.consecutive_failures = 0;
        Some(until)
    }

    /// Ends the ejection if its time is over; true when it did.
    pub fn restore_if_due(&mut self, now: Instant) -> bool {
        match self.ejected {
            Some((until, lasted)) if now >= until => {
                self.ejected = None;
                self.restored = Some((now, lasted));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(25),
            max_ejected_percent: 50,
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let c = config();
        let t = Instant::now();
        let mut o = Outlier::default();
        assert_eq!(o.on_failure(t, &c, true), None);
        assert_eq!(o.on_failure(t, &c, true), None);
        o.on_success(t);
        assert_eq!(o.on_failure(t, &c, true), None);
        assert_eq!(o.on_failure(t, &c, true), None);
        assert_eq!(o.on_failure(t, &c, true), Some(t + Duration::from_secs(10)));
        assert!(o.is_ejected(t));
        assert!(!o.is_ejected(t + Duration::from_secs(10)));
    }

    #[test]
    fn share_limit_prevents_ejection() {
        let c = config();
        let t = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..10 {
            assert_eq!(o.on_failure(t, &c, false), None);
        }
        assert!(!o.is_ejected(t));
        // Once allowed, the accumulated failures eject at once.
        assert!(o.on_failure(t, &c, true).is_some());
    }

    #[test]
    fn repeated_ejections_grow_and_cap() {
        let c = config();
        let mut t = Instant::now();
        let mut o = Outlier::default();
        let mut lengths = Vec::new();
        for _ in 0..3 {
            let until = (0..3).find_map(|_| o.on_failure(t, &c, true)).unwrap();
            lengths.push(until - t);
            t = until;
            assert!(o.restore_if_due(t));
        }
        assert_eq!(
            lengths,
            [
                Duration::from_secs(10),
                Duration::from_secs(20),
                Duration::from_secs(25)
            ]
        );
        assert_eq!(o.ejections(), 3);
    }

    #[test]
    fn a_healthy_period_resets_the_multiplier() {
        let c = config();
        let t = Instant::now();
        let mut o = Outlier::default();
        let until = (0..3).find_map(|_| o.on_failure(t, &c, true)).unwrap();
        assert!(!o.restore_if_due(t));
        assert!(o.restore_if_due(until));
        o.on_success(until + Duration::from_secs(60));
        assert_eq!(o.ejections(), 0);
    }
}
