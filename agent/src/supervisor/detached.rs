//! Stopping the instances an agent left running.
//!
//! Services outlive their agent by design: a restarted agent re-adopts them. When no agent
//! will (it was stopped for good, crashed, or hung and was killed), this stops every
//! instance the data dir's records name, as the agent would: the spec's stop signal to the
//! instance's process group, SIGKILL to the group once the spec's stop timeout passes, then
//! the shim gets [`SHIM_EXIT_GRACE`] to record the exit and end before it is SIGKILLed too.
//! Every process is verified by pid and start time before it is signalled, never found by
//! name. There is no drain: the agent that would withdraw the instances from balancers is not
//! running. The specs, desired state and records stay, so the next agent on the data dir
//! starts the services again, as after a reboot.
//!
//! Used by `strata-agent stop-services` and by `strata-agent run --stop-services-on-exit`.
//! [`step`] decides for one instance (sans-I/O, unit-tested); [`stop_all`] does the I/O.

use super::instance::{SHIM_EXIT_GRACE, kill_group, kill_pid, same_process};
use super::spec::{DEFAULT_STOP_TIMEOUT, parse_spec};
use super::store::{InstanceRecord, Store};
use std::io;
use std::time::{Duration, Instant};
use strata_proto::v1::Signal;

/// How often the processes are looked at while they stop.
const POLL: Duration = Duration::from_millis(20);

/// How an instance is stopped: its spec's `[stop]` signal and timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopRule {
    pub signal: Signal,
    pub timeout: Duration,
}

impl Default for StopRule {
    /// What a spec without `[stop]` gets; also used when the stored spec cannot be read.
    fn default() -> StopRule {
        StopRule {
            signal: Signal::Term,
            timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

/// One recorded instance to stop.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: String,
    pub index: u32,
    pub record: InstanceRecord,
    pub rule: StopRule,
}

impl Target {
    /// "web/1", as the agent names instances.
    pub fn id(&self) -> String {
        format!("{}/{}", self.service, self.index)
    }

    /// What `outcome` means for this instance, for people; `None` when it was not running.
    pub fn describe(&self, outcome: Outcome) -> Option<String> {
        let r = &self.record;
        Some(match outcome {
            Outcome::NotRunning => return None,
            Outcome::Stopped => format!("stopped by {} (pid {})", self.rule.signal.label(), r.pid),
            Outcome::Killed => format!("killed by SIGKILL (pid {}, shim {})", r.pid, r.shim_pid),
            Outcome::Survived => format!(
                "still running after SIGKILL (pid {}, shim {})",
                r.pid, r.shim_pid
            ),
        })
    }
}

/// Every instance `store` records, each with its spec's stop rule (the default rule where the
/// stored spec cannot be read or parsed: its instances are stopped all the same).
pub fn recorded(store: &Store) -> io::Result<Vec<Target>> {
    let (services, broken) = store.load_services()?;
    let readable = services.into_iter().map(|s| {
        let rule = parse_spec("spec.toml", &s.text)
            .map(|spec| StopRule {
                signal: spec.stop.signal,
                timeout: spec.stop.timeout,
            })
            .unwrap_or_default();
        (s.name, rule)
    });
    let unreadable = broken
        .into_iter()
        .map(|(name, _)| (name, StopRule::default()));
    let mut targets = Vec::new();
    for (service, rule) in readable.chain(unreadable) {
        for index in store.instance_indexes(&service) {
            if let Some(record) = store.load_instance(&service, index) {
                targets.push(Target {
                    service: service.clone(),
                    index,
                    record,
                    rule,
                });
            }
        }
    }
    Ok(targets)
}

/// Stops every instance `store` records (each given `timeout` instead of its spec's stop
/// timeout when set) and returns how each ended, for `strata-agent stop-services` and for the
/// agent's own exit with `--stop-services-on-exit`. Blocking.
pub fn stop_recorded(
    store: &Store,
    timeout: Option<Duration>,
) -> io::Result<Vec<(Target, Outcome)>> {
    let mut targets = recorded(store)?;
    if let Some(timeout) = timeout {
        for target in &mut targets {
            target.rule.timeout = timeout;
        }
    }
    let outcomes = stop_all(&targets);
    Ok(targets.into_iter().zip(outcomes).collect())
}

/// Which of an instance's two processes are still the ones recorded (same pid, same start
/// time, not a zombie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive {
    pub service: bool,
    pub shim: bool,
}

/// Where one instance's stop stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not looked at yet.
    Start,
    /// The stop signal went to the service's group; SIGKILL at `deadline`.
    Signalled { deadline: Instant },
    /// SIGKILL went to the service's group; given up at `deadline`.
    GroupKilled { deadline: Instant },
    /// The service is gone; its shim records the exit and ends by `deadline`, else SIGKILL.
    /// `killed` says whether the service needed SIGKILL.
    ShimEnding { deadline: Instant, killed: bool },
    /// SIGKILL went to the shim; given up at `deadline`.
    ShimKilled { deadline: Instant },
    /// Finished.
    Done(Outcome),
}

/// What to do to an instance's processes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// The stop signal to the service's process group.
    Signal(Signal),
    /// SIGKILL to the service's process group.
    KillGroup,
    /// SIGKILL to the shim.
    KillShim,
}

/// How an instance's stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Neither process was running.
    NotRunning,
    /// Both ended after the stop signal.
    Stopped,
    /// The service or its shim had to be SIGKILLed.
    Killed,
    /// A process outlived SIGKILL (stuck in the kernel, say).
    Survived,
}

/// The next phase of one instance's stop, and what to do now, given which of its processes
/// are alive at `now`.
pub fn step(phase: Phase, alive: Alive, now: Instant, rule: StopRule) -> (Phase, Option<Act>) {
    let wait_for_shim = |killed: bool| match alive.shim {
        true => Phase::ShimEnding {
            deadline: now + SHIM_EXIT_GRACE,
            killed,
        },
        false if killed => Phase::Done(Outcome::Killed),
        false => Phase::Done(Outcome::Stopped),
    };
    match phase {
        Phase::Start if alive.service => (
            Phase::Signalled {
                deadline: now + rule.timeout,
            },
            Some(Act::Signal(rule.signal)),
        ),
        Phase::Start if alive.shim => (wait_for_shim(false), None),
        Phase::Start => (Phase::Done(Outcome::NotRunning), None),
        Phase::Signalled { .. } if !alive.service => (wait_for_shim(false), None),
        Phase::Signalled { deadline } if now >= deadline => (
            Phase::GroupKilled {
                deadline: now + SHIM_EXIT_GRACE,
            },
            Some(Act::KillGroup),
        ),
        Phase::GroupKilled { .. } if !alive.service => (wait_for_shim(true), None),
        Phase::GroupKilled { deadline } if now >= deadline => {
            (Phase::Done(Outcome::Survived), None)
        }
        Phase::ShimEnding { killed, .. } if !alive.shim => (
            Phase::Done(if killed {
                Outcome::Killed
            } else {
                Outcome::Stopped
            }),
            None,
        ),
        Phase::ShimEnding { deadline, .. } if now >= deadline => (
            Phase::ShimKilled {
                deadline: now + SHIM_EXIT_GRACE,
            },
            Some(Act::KillShim),
        ),
        Phase::ShimKilled { .. } if !alive.shim => (Phase::Done(Outcome::Killed), None),
        Phase::ShimKilled { deadline } if now >= deadline => (Phase::Done(Outcome::Survived), None),
        waiting => (waiting, None),
    }
}

/// Stops every target at once and returns how each ended, in the order given. Blocking:
/// takes up to the longest stop timeout plus two shim grace periods.
pub fn stop_all(targets: &[Target]) -> Vec<Outcome> {
    let mut phases = vec![Phase::Start; targets.len()];
    loop {
        let now = Instant::now();
        for (target, phase) in targets.iter().zip(phases.iter_mut()) {
            let r = &target.record;
            let alive = Alive {
                service: same_process(r.pid, r.start_ticks),
                shim: same_process(r.shim_pid, r.shim_start_ticks),
            };
            let (next, act) = step(*phase, alive, now, target.rule);
            match act {
                Some(Act::Signal(signal)) => kill_group(
                    r.pid,
                    rustix::process::Signal::from_named_raw(signal.number())
                        .unwrap_or(rustix::process::Signal::TERM),
                ),
                Some(Act::KillGroup) => kill_group(r.pid, rustix::process::Signal::KILL),
                Some(Act::KillShim) => kill_pid(r.shim_pid, r.shim_start_ticks),
                None => {}
            }
            *phase = next;
        }
        let outcomes: Option<Vec<Outcome>> = phases
            .iter()
            .map(|p| match p {
                Phase::Done(outcome) => Some(*outcome),
                _ => None,
            })
            .collect();
        if let Some(outcomes) = outcomes {
            return outcomes;
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: StopRule = StopRule {
        signal: Signal::Int,
        timeout: Duration::from_secs(3),
    };

    fn alive(service: bool, shim: bool) -> Alive {
        Alive { service, shim }
    }

    const SIGNAL: Option<Act> = Some(Act::Signal(Signal::Int));
    const KILL_GROUP: Option<Act> = Some(Act::KillGroup);
    const KILL_SHIM: Option<Act> = Some(Act::KillShim);

    /// One look at an instance: seconds after the start, whether the service and the shim are
    /// alive, and the act expected then.
    type Look = (u64, bool, bool, Option<Act>);

    #[test]
    fn each_instance_is_signalled_then_killed_as_its_processes_end_or_not() {
        let g = SHIM_EXIT_GRACE.as_secs();
        let cases: [(&str, Vec<Look>, Outcome); 6] = [
            (
                "nothing runs",
                vec![(0, false, false, None)],
                Outcome::NotRunning,
            ),
            (
                "the service ends on its stop signal, its shim after it",
                vec![
                    (0, true, true, SIGNAL),
                    (1, true, true, None),
                    (2, false, true, None),
                    (2, false, false, None),
                ],
                Outcome::Stopped,
            ),
            (
                "the service outlasts its stop timeout (3 s): its group is killed",
                vec![
                    (0, true, true, SIGNAL),
                    (2, true, true, None),
                    (3, true, true, KILL_GROUP),
                    (3, false, false, None),
                ],
                Outcome::Killed,
            ),
            (
                "the shim does not end after its service",
                vec![
                    (0, true, true, SIGNAL),
                    (1, false, true, None),
                    (1 + g, false, true, KILL_SHIM),
                    (1 + g, false, false, None),
                ],
                Outcome::Killed,
            ),
            (
                "a shim alone gets its grace, then SIGKILL",
                vec![
                    (0, false, true, None),
                    (g, false, true, KILL_SHIM),
                    (g, false, false, None),
                ],
                Outcome::Killed,
            ),
            (
                "a service that outlives SIGKILL is reported",
                vec![
                    (0, true, true, SIGNAL),
                    (3, true, true, KILL_GROUP),
                    (3 + g, true, true, None),
                ],
                Outcome::Survived,
            ),
        ];
        let t0 = Instant::now();
        for (case, looks, outcome) in cases {
            let mut phase = Phase::Start;
            for (secs, service, shim, want) in looks {
                let now = t0 + Duration::from_secs(secs);
                let (next, act) = step(phase, alive(service, shim), now, RULE);
                assert_eq!(act, want, "{case}: at {secs} s");
                phase = next;
            }
            assert_eq!(phase, Phase::Done(outcome), "{case}");
        }
    }

    #[test]
    fn a_zero_timeout_kills_at_the_next_look() {
        let rule = StopRule {
            timeout: Duration::ZERO,
            ..RULE
        };
        let now = Instant::now();
        let (phase, act) = step(Phase::Start, alive(true, true), now, rule);
        assert_eq!(act, Some(Act::Signal(Signal::Int)));
        assert_eq!(
            step(phase, alive(true, true), now, rule).1,
            Some(Act::KillGroup)
        );
    }

    #[test]
    fn records_of_every_service_are_found_with_their_stop_rule() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let desired = super::super::store::Desired::default();
        let spec = "name = \"web\"\ncommand = [\"/bin/true\"]\n[stop]\nsignal = \"SIGINT\"\ntimeout = \"2s\"\n";
        store.save_service("web", spec, &desired).unwrap();
        store.save_service("odd", "not a spec", &desired).unwrap();
        let record = InstanceRecord {
            shim_pid: 1,
            shim_start_ticks: 2,
            pid: 3,
            start_ticks: 4,
            ports: Default::default(),
            started_unix_ms: 0,
            restarts: 0,
            version: String::new(),
            reloads_logs: true,
        };
        store.save_instance("web", 2, &record).unwrap();
        store.save_instance("odd", 1, &record).unwrap();
        std::fs::create_dir_all(store.instance_dir("web", 3)).unwrap();
        let found: Vec<(String, StopRule)> = recorded(&store)
            .unwrap()
            .into_iter()
            .map(|t| (t.id(), t.rule))
            .collect();
        assert_eq!(
            found,
            [
                ("odd/1".to_string(), StopRule::default()),
                (
                    "web/2".to_string(),
                    StopRule {
                        signal: Signal::Int,
                        timeout: Duration::from_secs(2)
                    }
                ),
            ]
        );
    }
}
