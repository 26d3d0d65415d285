//! Passive outlier detection for one endpoint: consecutive failed connects eject it for a
//! time that grows with each ejection in a row and is capped. A sans-I/O state machine fed with
//! outcomes and instants; whether the service can spare it is decided by [`may_eject`], whose
//! caller sees all endpoints.
//!
//! Not every failed connect is evidence. A refusal, a reset or an unreachable host is: the
//! instance or its host said no. A connect timeout is ambiguous: a dead or cut-off host never
//! answers, but neither does a healthy instance whose accept queue is momentarily full (Linux
//! drops the SYN and the client would retransmit it after 1 s). The difference shows in the
//! other connects to the same instance: a busy one completes some while ours waits, a dead one
//! completes none. So a timeout during which another connect to the instance succeeded is
//! [`Failure::BusyTimeout`]: the client goes to another instance, but the instance is neither
//! counted against nor penalised (its load already counts in every picker). Only a
//! [`Failure::SilentTimeout`] counts like a refusal. And an instance is never ejected unless
//! another one is carrying load successfully (see [`may_eject`]).

use super::config::OutlierConfig;
use std::time::{Duration, Instant};

/// What one failed connect says about the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Refused, reset or unreachable.
    Refused,
    /// Timed out while another connect to it succeeded: busy, not gone.
    BusyTimeout,
    /// Timed out, and no connect to it succeeded meanwhile.
    SilentTimeout,
}

impl Failure {
    /// Whether it counts toward ejection (and the latency penalty).
    pub fn counts(self) -> bool {
        !matches!(self, Failure::BusyTimeout)
    }
}

/// Whether the service can spare one more ejected endpoint: some other endpoint is carrying
/// load successfully (its last connect did not fail), so the ejected one's share has somewhere
/// to go, and the share ejected stays within `max_percent` of the `available` endpoints.
pub(crate) fn may_eject(
    available: usize,
    ejected_others: usize,
    healthy_others: usize,
    max_percent: u8,
) -> bool {
    healthy_others > 0 && (ejected_others + 1) * 100 <= available * usize::from(max_percent)
}

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

    /// Failures since the last successful connect (0: its last connect worked).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
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
    /// `may_eject` is false when the service cannot spare it ([`may_eject`]).
    pub fn on_failure(
        &mut self,
        now: Instant,
        failure: Failure,
        config: &OutlierConfig,
        may_eject: bool,
    ) -> Option<Instant> {
        if !failure.counts() {
            return None;
        }
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
        assert_eq!(o.on_failure(t, Failure::Refused, &c, true), None);
        assert_eq!(o.on_failure(t, Failure::Refused, &c, true), None);
        o.on_success(t);
        assert_eq!(o.on_failure(t, Failure::Refused, &c, true), None);
        assert_eq!(o.on_failure(t, Failure::Refused, &c, true), None);
        assert_eq!(
            o.on_failure(t, Failure::Refused, &c, true),
            Some(t + Duration::from_secs(10))
        );
        assert!(o.is_ejected(t));
        assert!(!o.is_ejected(t + Duration::from_secs(10)));
    }

    #[test]
    fn busy_timeouts_never_count_silent_ones_do() {
        let c = config();
        let t = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..100 {
            assert_eq!(o.on_failure(t, Failure::BusyTimeout, &c, true), None);
        }
        assert_eq!(o.consecutive_failures(), 0);
        assert_eq!(o.on_failure(t, Failure::SilentTimeout, &c, true), None);
        assert_eq!(o.on_failure(t, Failure::BusyTimeout, &c, true), None);
        assert_eq!(o.on_failure(t, Failure::Refused, &c, true), None);
        assert!(o.on_failure(t, Failure::SilentTimeout, &c, true).is_some());
    }

    #[test]
    fn the_last_instances_carrying_load_are_never_ejected() {
        // Alone, or with every other one failing too: nowhere for its share to go.
        assert!(!may_eject(1, 0, 0, 100));
        assert!(!may_eject(3, 0, 0, 100));
        // Two instances, the other one fine: one of two is 50%.
        assert!(may_eject(2, 0, 1, 50));
        // The share limit: with one of four out, a second is 50%, a third is not.
        assert!(may_eject(4, 1, 2, 50));
        assert!(!may_eject(4, 2, 1, 50));
        assert!(!may_eject(10, 0, 9, 0));
    }

    #[test]
    fn share_limit_prevents_ejection() {
        let c = config();
        let t = Instant::now();
        let mut o = Outlier::default();
        for _ in 0..10 {
            assert_eq!(o.on_failure(t, Failure::Refused, &c, false), None);
        }
        assert!(!o.is_ejected(t));
        // Once allowed, the accumulated failures eject at once.
        assert!(o.on_failure(t, Failure::Refused, &c, true).is_some());
    }

    #[test]
    fn repeated_ejections_grow_and_cap() {
        let c = config();
        let mut t = Instant::now();
        let mut o = Outlier::default();
        let mut lengths = Vec::new();
        for _ in 0..3 {
            let until = (0..3)
                .find_map(|_| o.on_failure(t, Failure::Refused, &c, true))
                .unwrap();
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
        let until = (0..3)
            .find_map(|_| o.on_failure(t, Failure::Refused, &c, true))
            .unwrap();
        assert!(!o.restore_if_due(t));
        assert!(o.restore_if_due(until));
        o.on_success(until + Duration::from_secs(60));
        assert_eq!(o.ejections(), 0);
    }
}
