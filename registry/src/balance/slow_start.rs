//! Slow start (HAProxy `slowstart`, Envoy `slow_start_window`): an instance that joins a
//! service, comes back from draining or an ejection, or whose node is reachable again, does not
//! take its full share of new connections at once. Its weight ramps linearly from
//! [`MIN_WEIGHT`] to 1 over the service's window, and every picker divides its preference by
//! that weight, so a cold instance warms up instead of being flooded (and ejected again).

use std::time::{Duration, Instant};

/// Weight at the start of the ramp (Envoy's `min_weight_percent` default): low enough to
/// protect a cold instance, high enough that it is tried and measured at once.
pub(crate) const MIN_WEIGHT: f64 = 0.1;

/// The weight at `now` of an endpoint warming up since `since` (`None`: not warming, or the
/// ramp is over), for a window of `window` (zero: no slow start).
pub(crate) fn weight(since: Option<Instant>, now: Instant, window: Duration) -> f64 {
    let Some(since) = since else {
        return 1.0;
    };
    if window.is_zero() {
        return 1.0;
    }
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    (elapsed / window.as_secs_f64()).clamp(MIN_WEIGHT, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramps_linearly_from_the_floor_to_full() {
        let t = Instant::now();
        let w = Duration::from_secs(10);
        let at = |s: u64| weight(Some(t), t + Duration::from_secs(s), w);
        assert_eq!(at(0), MIN_WEIGHT);
        assert_eq!(at(1), MIN_WEIGHT);
        assert!((at(5) - 0.5).abs() < 1e-9);
        assert_eq!(at(10), 1.0);
        assert_eq!(at(100), 1.0);
    }

    #[test]
    fn no_window_or_no_start_is_full_weight() {
        let t = Instant::now();
        assert_eq!(weight(Some(t), t, Duration::ZERO), 1.0);
        assert_eq!(weight(None, t, Duration::from_secs(10)), 1.0);
    }

    #[test]
    fn a_start_in_the_future_holds_the_floor() {
        // An ejected endpoint warms from the end of its ejection.
        let t = Instant::now();
        let later = t + Duration::from_secs(5);
        assert_eq!(weight(Some(later), t, Duration::from_secs(10)), MIN_WEIGHT);
    }
}
