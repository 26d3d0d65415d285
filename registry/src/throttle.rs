//! Reports thinned out per key: the first occurrence is reported at once, later ones within
//! the interval are counted and the count rides on the next report. Keeps a flood (of bad
//! packets, of refused calls) from becoming a flood of journal records.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Per-key report throttle with a bounded number of keys.
#[derive(Debug)]
pub struct Throttle<K> {
    interval: Duration,
    max_keys: usize,
    seen: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// At most one report per key per `interval`, remembering at most `max_keys` keys.
    pub fn new(interval: Duration, max_keys: usize) -> Throttle<K> {
        Throttle {
            interval,
            max_keys,
            seen: HashMap::new(),
        }
    }

    /// Whether an occurrence of `key` at `now` is reported; `Some(n)` carries how many
    /// were held back since the last report.
    pub fn admit(&mut self, key: &K, now: Instant) -> Option<u64> {
        let interval = self.interval;
        if self.seen.len() >= self.max_keys && !self.seen.contains_key(key) {
            self.seen
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < interval);
            if self.seen.len() >= self.max_keys {
                return None;
            }
        }
        match self.seen.get_mut(key) {
            Some((at, held)) if now.saturating_duration_since(*at) < interval => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let report = *held;
                *at = now;
                *held = 0;
                Some(report)
            }
            None => {
                self.seen.insert(key.clone(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_report_per_interval_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(1), 16);
        let t0 = Instant::now();
        assert_eq!(t.admit(&"x", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(t.admit(&"x", t0 + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(t.admit(&"y", t0), Some(0), "keys are apart");
        assert_eq!(t.admit(&"x", t0 + Duration::from_secs(2)), Some(5));
    }

    #[test]
    fn keys_are_bounded() {
        let mut t = Throttle::new(Duration::from_secs(60), 4);
        let t0 = Instant::now();
        for k in 0..4 {
            assert_eq!(t.admit(&k, t0), Some(0));
        }
        assert_eq!(t.admit(&99, t0), None, "full of recent keys: not reported");
        assert_eq!(t.admit(&99, t0 + Duration::from_secs(61)), Some(0));
        assert!(t.seen.len() <= 4);
    }
}
