//! The per-connection timeouts after the connect (HAProxy's `timeout client`/`timeout server`,
//! Envoy's tcp_proxy `idle_timeout`): a connection on which nothing moves either way for the
//! service's `idle_timeout` is closed, and so is one whose backend sends no first byte within
//! `response_timeout` of the client's first byte (a backend that accepts and never answers).
//! Pure: fed with the connection's byte counters and instants; the proxy polls it.

use super::access::Outcome;
use std::time::{Duration, Instant};

/// Shortest pause between two looks at the counters.
const MIN_CHECK: Duration = Duration::from_millis(10);
/// Longest pause between two looks: bounds how late an idle timeout of an hour is noticed.
const MAX_CHECK: Duration = Duration::from_secs(60);
/// Looks per timeout period: a timeout is noticed at most 1/8 of it late.
const CHECKS_PER_PERIOD: u32 = 8;

/// What the watch knows about one connection.
#[derive(Debug, Clone)]
pub(crate) struct Silence {
    idle: Duration,
    response: Duration,
    /// Bytes client→backend and backend→client at the last look.
    seen: (u64, u64),
    /// When a look last found the counters moved (or the connection began).
    last_activity: Instant,
    /// When a look first found client bytes forwarded while the backend had sent none.
    asked: Option<Instant>,
}

impl Silence {
    /// A connection connected at `now`; a zero duration turns that timeout off.
    pub fn new(idle: Duration, response: Duration, now: Instant) -> Self {
        Self {
            idle,
            response,
            seen: (0, 0),
            last_activity: now,
            asked: None,
        }
    }

    /// Whether the backend still owes its first byte (so the response timeout applies).
    fn awaiting_response(&self) -> bool {
        !self.response.is_zero() && self.seen.1 == 0
    }

    /// How long to wait before the next look; `None` when no timeout applies any more.
    pub fn next_check(&self) -> Option<Duration> {
        let response = self.awaiting_response().then_some(self.response);
        let idle = (!self.idle.is_zero()).then_some(self.idle);
        let period = response.into_iter().chain(idle).min()?;
        Some((period / CHECKS_PER_PERIOD).clamp(MIN_CHECK, MAX_CHECK))
    }

    /// Looks at the counters at `now`: the outcome to close the connection with, if one of
    /// the timeouts has passed.
    pub fn check(&mut self, bytes_in: u64, bytes_out: u64, now: Instant) -> Option<Outcome> {
        if (bytes_in, bytes_out) != self.seen {
            self.seen = (bytes_in, bytes_out);
            self.last_activity = now;
        }
        if bytes_in > 0 && bytes_out == 0 && self.asked.is_none() {
            self.asked = Some(now);
        }
        if self.awaiting_response()
            && self
                .asked
                .is_some_and(|at| now.saturating_duration_since(at) >= self.response)
        {
            return Some(Outcome::ResponseTimeout);
        }
        if !self.idle.is_zero() && now.saturating_duration_since(self.last_activity) >= self.idle {
            return Some(Outcome::IdleTimeout);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_backend_that_never_answers_times_out_after_the_clients_first_byte() {
        let t = Instant::now();
        let mut s = Silence::new(100 * S, 5 * S, t);
        // A client that has sent nothing yet is only subject to the idle timeout.
        assert_eq!(s.check(0, 0, t + 10 * S), None);
        assert_eq!(s.check(12, 0, t + 11 * S), None);
        assert_eq!(s.check(12, 0, t + 15 * S), None);
        assert_eq!(s.check(12, 0, t + 16 * S), Some(Outcome::ResponseTimeout));
    }

    #[test]
    fn once_the_backend_answered_only_the_idle_timeout_applies() {
        let t = Instant::now();
        let mut s = Silence::new(30 * S, 5 * S, t);
        assert_eq!(s.check(12, 0, t + S), None);
        assert_eq!(s.check(12, 1, t + 2 * S), None);
        assert_eq!(s.check(20, 1, t + 20 * S), None);
        assert_eq!(s.check(20, 1, t + 49 * S), None);
        assert_eq!(s.check(20, 1, t + 50 * S), Some(Outcome::IdleTimeout));
    }

    #[test]
    fn zero_turns_a_timeout_off() {
        let t = Instant::now();
        let mut s = Silence::new(Duration::ZERO, Duration::ZERO, t);
        assert_eq!(s.next_check(), None);
        assert_eq!(s.check(1, 0, t + 10_000 * S), None);
    }

    #[test]
    fn checks_come_often_enough_for_the_shortest_timeout_that_applies() {
        let t = Instant::now();
        let mut s = Silence::new(3600 * S, 60 * S, t);
        assert_eq!(s.next_check(), Some(Duration::from_millis(7500)));
        s.check(1, 1, t);
        assert_eq!(s.next_check(), Some(MAX_CHECK));
        let s = Silence::new(Duration::from_millis(8), Duration::ZERO, t);
        assert_eq!(s.next_check(), Some(MIN_CHECK));
    }
}
