//! Per-client rate limits: a token bucket per caller, so one client's flood of expensive
//! calls is refused early instead of crowding out everyone else (and the supervisor).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How much one client may spend: `per_second` units refill, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Units a client regains per second.
    pub per_second: f64,
    /// The most units a client can hold (its allowance for a burst).
    pub burst: f64,
}

impl Default for RateLimits {
    /// 400 units a second, bursts of 800: a cheap call costs 1, an expensive one 10, so a
    /// script's loop of changes (about 30 `strata apply` processes a second) is never slowed,
    /// while a client flooding the agent is.
    fn default() -> Self {
        RateLimits {
            per_second: 400.0,
            burst: 800.0,
        }
    }
}

/// What a call costs against its client's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// A lookup served from memory.
    Cheap,
    /// Reads files or the journal, opens a stream, or changes state.
    Expensive,
}

impl Cost {
    fn units(self) -> f64 {
        match self {
            Cost::Cheap => 1.0,
            Cost::Expensive => 10.0,
        }
    }
}

/// Clients tracked at most; idle (full) buckets are dropped beyond this.
const MAX_CLIENTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: f64,
    at: Instant,
}

/// Token buckets keyed by client.
pub struct RateLimiter {
    limits: RateLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter with `limits` for every client.
    pub fn new(limits: RateLimits) -> RateLimiter {
        RateLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Charges `cost` to `client` at `now`: `Err` says how long until the call would fit.
    pub fn charge(&self, client: &str, cost: Cost, now: Instant) -> Result<(), Duration> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let limits = self.limits;
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client) {
            buckets.retain(|_, b| refilled(limits, *b, now) < limits.burst);
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket {
            units: limits.burst,
            at: now,
        });
        let units = refilled(limits, *bucket, now);
        let needed = cost.units();
        if units >= needed {
            *bucket = Bucket {
                units: units - needed,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { units, at: now };
            let wait = (needed - units) / limits.per_second.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }
}

fn refilled(limits: RateLimits, bucket: Bucket, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    (bucket.units + elapsed * limits.per_second).min(limits.burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_its_rate() {
        let limiter = RateLimiter::new(RateLimits {
            per_second: 10.0,
            burst: 20.0,
        });
        let t0 = Instant::now();
        assert!(limiter.charge("a", Cost::Expensive, t0).is_ok());
        assert!(limiter.charge("a", Cost::Expensive, t0).is_ok());
        let wait = limiter.charge("a", Cost::Expensive, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(
            limiter.charge("b", Cost::Expensive, t0).is_ok(),
            "clients are apart"
        );
        let later = t0 + Duration::from_millis(500);
        assert!(limiter.charge("a", Cost::Cheap, later).is_ok());
        assert!(limiter.charge("a", Cost::Expensive, later).is_err());
        assert!(
            limiter
                .charge("a", Cost::Expensive, t0 + Duration::from_secs(2))
                .is_ok()
        );
    }

    #[test]
    fn idle_clients_are_forgotten_beyond_the_cap() {
        let limiter = RateLimiter::new(RateLimits::default());
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS + 10 {
            let now = t0 + Duration::from_secs(i as u64 / 100);
            let _ = limiter.charge(&format!("c{i}"), Cost::Cheap, now);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= MAX_CLIENTS);
    }
}
