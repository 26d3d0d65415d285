//! Restart decisions: what to do when an instance exits.
//!
//! Sans-I/O, like foca: [`RestartTracker`] is fed exits and the current time and answers with a
//! [`Decision`]; the supervisor core does the waiting and the starting. That keeps the policy
//! testable with synthetic clocks and a seeded random source.
//!
//! Rules:
//! - `never` stays down; `on-failure` stays down after a clean exit (code 0); `always` restarts
//!   after any exit.
//! - Backoff is exponential: `backoff_initial * 2^attempt`, capped at `backoff_max`, with
//!   "equal jitter": half of the delay is fixed and the other half is random, so the wait lies
//!   in `[delay/2, delay]`. Restarting instances thus never synchronise, yet never restart
//!   sooner than half the nominal delay.
//! - A run that lasted at least `stable_after` resets the backoff to `backoff_initial`.
//! - Crash loop: when `crashloop_after` unstable exits fall within `crashloop_window`, the
//!   answer is [`Decision::CrashLoop`], and it stays so until an operator calls
//!   [`RestartTracker::reset`]. An exit is unstable when it failed (non-zero code, signal, OOM
//!   kill, failed start) or when it ran shorter than `stable_after` — so that an `always`
//!   service exiting 0 at once is caught as well.
//! - `backoff_initial = 0` restarts at once (the doubling of zero stays zero). Then the
//!   crash-loop rule is the only protection against a busy loop, and it always applies:
//!   after at most `crashloop_after` quick exits the instance is held.

use crate::supervisor::spec::{RestartPolicy, RestartSpec};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How an instance ended, as the supervisor saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// Exit code 0.
    Success,
    /// A non-zero exit code.
    Failure,
    /// Killed by this signal (not by the OOM killer).
    Signal(i32),
    /// Killed by the kernel's OOM killer (the memory limit was hit).
    OomKilled,
}

impl ExitKind {
    /// Whether the exit counts as a failure for `on-failure` and the crash-loop rule.
    pub fn is_failure(self) -> bool {
        self != ExitKind::Success
    }
}

/// What the supervisor should do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start the instance again after this delay (which may be zero).
    Restart { after: Duration },
    /// Too many quick failures: keep the instance down until an operator acts.
    CrashLoop,
    /// The policy says the instance stays down.
    Stay,
}

/// The restart state of one instance: backoff attempt, recent failures, crash-loop hold.
#[derive(Debug)]
pub struct RestartTracker {
    /// Exponent of the next backoff; zeroed by a stable run or [`RestartTracker::reset`].
    attempt: u32,
    /// Every restart decided since the tracker was made.
    restarts: u32,
    /// When the recent unstable exits happened, oldest first.
    unstable: VecDeque<Instant>,
    crashloop: bool,
    rng: fastrand::Rng,
}

impl Default for RestartTracker {
    fn default() -> Self {
        RestartTracker::new()
    }
}

impl RestartTracker {
    /// A tracker whose jitter comes from a randomly seeded source.
    pub fn new() -> RestartTracker {
        RestartTracker::with_rng(fastrand::Rng::new())
    }

    /// A tracker with a given random source, so tests can reproduce the jitter.
    pub fn with_rng(rng: fastrand::Rng) -> RestartTracker {
        RestartTracker {
            attempt: 0,
            restarts: 0,
            unstable: VecDeque::new(),
            crashloop: false,
            rng,
        }
    }

    /// Decides what follows an exit that happened at `now` after running for `ran_for`.
    pub fn on_exit(
        &mut self,
        spec: &RestartSpec,
        exit: ExitKind,
        ran_for: Duration,
        now: Instant,
    ) -> Decision {
        let wants_restart = match spec.policy {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => exit.is_failure(),
            RestartPolicy::Always => true,
        };
        if !wants_restart {
            return Decision::Stay;
        }
        if self.crashloop {
            return Decision::CrashLoop;
        }

        let stable = ran_for >= spec.stable_after;
        if stable {
            self.attempt = 0;
        }
        if exit.is_failure() || !stable {
            self.unstable.push_back(now);
        }
        while let Some(&oldest) = self.unstable.front() {
            if now.saturating_duration_since(oldest) > spec.crashloop_window {
                self.unstable.pop_front();
            } else {
                break;
            }
        }
        if self.unstable.len() >= spec.crashloop_after as usize {
            self.crashloop = true;
            return Decision::CrashLoop;
        }

        let delay = self.jittered(nominal_backoff(spec, self.attempt));
        self.attempt = self.attempt.saturating_add(1);
        self.restarts = self.restarts.saturating_add(1);
        Decision::Restart { after: delay }
    }

    /// Lifts a crash-loop hold and starts the backoff afresh: the operator's "try again".
    pub fn reset(&mut self) {
        self.crashloop = false;
        self.unstable.clear();
        self.attempt = 0;
    }

    /// Counts a restart an operator asked for, so displays show every restart.
    pub fn count_restart(&mut self) {
        self.restarts = self.restarts.saturating_add(1);
    }

    /// Carries the restart count over from a previous agent, after adoption.
    pub fn set_restarts(&mut self, restarts: u32) {
        self.restarts = restarts;
    }

    /// Total restarts decided, for status displays.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Restarts since the last stable run: the exponent of the next backoff.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether the instance is held in crash loop.
    pub fn in_crashloop(&self) -> bool {
        self.crashloop
    }

    /// Equal jitter: half of `delay` fixed, the other half uniformly random.
    fn jittered(&mut self, delay: Duration) -> Duration {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let random = self.rng.u64(0..=nanos - half);
        Duration::from_nanos(half + random)
    }
}

/// `backoff_initial * 2^attempt`, capped at `backoff_max`, without overflow.
fn nominal_backoff(spec: &RestartSpec, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    spec.backoff_initial
        .checked_mul(factor)
        .unwrap_or(spec.backoff_max)
        .min(spec.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: RestartPolicy) -> RestartSpec {
        RestartSpec {
            policy,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            crashloop_after: 5,
            crashloop_window: Duration::from_secs(60),
            stable_after: Duration::from_secs(10),
        }
    }

    fn seeded() -> RestartTracker {
        RestartTracker::with_rng(fastrand::Rng::with_seed(7))
    }

    fn after(d: Decision) -> Duration {
        match d {
            Decision::Restart { after } => after,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    const QUICK: Duration = Duration::from_millis(50);

    #[test]
    fn backoff_doubles_within_jitter_bounds_and_caps() {
        let mut spec = spec(RestartPolicy::Always);
        spec.crashloop_after = 1000;
        let mut t = seeded();
        let start = Instant::now();
        let mut nominal = Duration::from_millis(100);
        for i in 0..16u32 {
            let d = after(t.on_exit(
                &spec,
                ExitKind::Failure,
                QUICK,
                start + Duration::from_secs(i.into()),
            ));
            assert!(
                d >= nominal / 2 && d <= nominal,
                "attempt {i}: {d:?} outside [{:?}, {nominal:?}]",
                nominal / 2
            );
            nominal = (nominal * 2).min(spec.backoff_max);
        }
        assert_eq!(nominal, Duration::from_secs(30));
        assert_eq!(t.restarts(), 16);
        assert_eq!(t.attempt(), 16);
    }

    #[test]
    fn jitter_varies_and_is_reproducible_with_a_seed() {
        let mut spec = spec(RestartPolicy::Always);
        spec.crashloop_after = 1000;
        let now = Instant::now();
        let run = |seed| {
            let mut t = RestartTracker::with_rng(fastrand::Rng::with_seed(seed));
            (0..12)
                .map(|_| {
                    let d = after(t.on_exit(&spec, ExitKind::Failure, QUICK, now));
                    t.reset();
                    d
                })
                .collect::<Vec<_>>()
        };
        let a = run(1);
        assert_eq!(a, run(1));
        assert!(a.iter().any(|d| *d != a[0]), "no jitter in {a:?}");
        for d in &a {
            assert!(*d >= Duration::from_millis(50) && *d <= Duration::from_millis(100));
        }
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let spec = spec(RestartPolicy::Always);
        let mut t = seeded();
        let now = Instant::now();
        for _ in 0..3 {
            t.on_exit(&spec, ExitKind::Failure, QUICK, now);
        }
        assert_eq!(t.attempt(), 3);
        let d = after(t.on_exit(&spec, ExitKind::Failure, Duration::from_secs(10), now));
        assert!(d <= Duration::from_millis(100), "{d:?}");
        assert_eq!(t.attempt(), 1);
    }

    #[test]
    fn crashloop_after_n_failures_in_the_window_and_held_until_reset() {
        let spec = spec(RestartPolicy::Always);
        let mut t = seeded();
        let start = Instant::now();
        for i in 0..4u64 {
            let at = start + Duration::from_secs(i * 10);
            assert!(matches!(
                t.on_exit(&spec, ExitKind::Failure, QUICK, at),
                Decision::Restart { .. }
            ));
        }
        let fifth = start + Duration::from_secs(40);
        assert_eq!(
            t.on_exit(&spec, ExitKind::Signal(11), QUICK, fifth),
            Decision::CrashLoop
        );
        assert!(t.in_crashloop());
        // Held: even a clean, long run does not lift it.
        assert_eq!(
            t.on_exit(
                &spec,
                ExitKind::Success,
                Duration::from_secs(3600),
                fifth + Duration::from_secs(3600)
            ),
            Decision::CrashLoop
        );
        t.reset();
        assert!(!t.in_crashloop());
        assert!(matches!(
            t.on_exit(&spec, ExitKind::Failure, QUICK, fifth),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn failures_spread_beyond_the_window_are_no_crashloop() {
        let spec = spec(RestartPolicy::Always);
        let mut t = seeded();
        let start = Instant::now();
        for i in 0..20u64 {
            let at = start + Duration::from_secs(i * 16);
            assert!(
                matches!(
                    t.on_exit(&spec, ExitKind::Failure, QUICK, at),
                    Decision::Restart { .. }
                ),
                "exit {i}"
            );
        }
    }

    #[test]
    fn never_and_on_failure_semantics() {
        let now = Instant::now();
        let mut t = seeded();
        let never = spec(RestartPolicy::Never);
        for exit in [ExitKind::Success, ExitKind::Failure, ExitKind::OomKilled] {
            assert_eq!(t.on_exit(&never, exit, QUICK, now), Decision::Stay);
        }
        let on_failure = spec(RestartPolicy::OnFailure);
        assert_eq!(
            t.on_exit(&on_failure, ExitKind::Success, QUICK, now),
            Decision::Stay
        );
        for exit in [ExitKind::Failure, ExitKind::Signal(9), ExitKind::OomKilled] {
            assert!(
                matches!(
                    t.on_exit(&on_failure, exit, QUICK, now),
                    Decision::Restart { .. }
                ),
                "{exit:?}"
            );
        }
        let always = spec(RestartPolicy::Always);
        let mut t = seeded();
        assert!(matches!(
            t.on_exit(&always, ExitKind::Success, Duration::from_secs(60), now),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn oom_kills_count_toward_crashloop() {
        let spec = spec(RestartPolicy::OnFailure);
        let mut t = seeded();
        let now = Instant::now();
        for _ in 0..4 {
            assert!(matches!(
                t.on_exit(&spec, ExitKind::OomKilled, Duration::from_secs(30), now),
                Decision::Restart { .. }
            ));
        }
        assert_eq!(
            t.on_exit(&spec, ExitKind::OomKilled, Duration::from_secs(30), now),
            Decision::CrashLoop
        );
    }

    #[test]
    fn zero_initial_backoff_restarts_at_once_until_crashloop() {
        let mut spec = spec(RestartPolicy::Always);
        spec.backoff_initial = Duration::ZERO;
        let mut t = seeded();
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(
                t.on_exit(&spec, ExitKind::Failure, QUICK, now),
                Decision::Restart {
                    after: Duration::ZERO
                }
            );
        }
        assert_eq!(
            t.on_exit(&spec, ExitKind::Failure, QUICK, now),
            Decision::CrashLoop
        );
    }

    #[test]
    fn quick_clean_exits_under_always_are_caught_as_a_loop() {
        let mut spec = spec(RestartPolicy::Always);
        spec.backoff_initial = Duration::ZERO;
        let mut t = seeded();
        let now = Instant::now();
        let decisions: Vec<_> = (0..5)
            .map(|_| t.on_exit(&spec, ExitKind::Success, QUICK, now))
            .collect();
        assert_eq!(decisions[4], Decision::CrashLoop, "{decisions:?}");
        // Long clean runs are not a loop.
        let mut t = seeded();
        for _ in 0..20 {
            assert!(matches!(
                t.on_exit(&spec, ExitKind::Success, Duration::from_secs(10), now),
                Decision::Restart { .. }
            ));
        }
    }
}
