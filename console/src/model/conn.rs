//! The connection to the agent as data: its state for the header, and the reconnect
//! backoff (capped exponential with jitter) as a pure function the network tasks call.

use std::time::Duration;

/// First reconnect delay.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Where the connection to the agent stands, as the header shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConnState {
    /// The first connection attempt is under way.
    #[default]
    Connecting,
    /// The cluster stream is up.
    Connected,
    /// The stream broke; the next attempt is at `retry_at_ms`, data shown is stale.
    Reconnecting {
        /// Unix ms of the next attempt.
        retry_at_ms: i64,
        /// Why the last attempt failed.
        error: String,
    },
}

/// The delay before reconnect attempt `attempt` (0-based): doubles from
/// [`BACKOFF_INITIAL`] up to [`BACKOFF_MAX`], then scaled by `jitter` in 0.5..=1.0 so
/// many consoles do not reconnect in step. `jitter` is a parameter to keep this pure.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(16));
    let nominal = BACKOFF_INITIAL.saturating_mul(factor).min(BACKOFF_MAX);
    nominal.mul_f64(jitter.clamp(0.5, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        assert_eq!(backoff(0, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(3, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(10, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_MAX);
    }

    #[test]
    fn jitter_shortens_but_never_below_half() {
        assert_eq!(backoff(2, 0.5), Duration::from_millis(500));
        assert_eq!(backoff(2, 0.0), Duration::from_millis(500));
        assert!(backoff(0, 0.75) < backoff(0, 1.0));
    }
}
