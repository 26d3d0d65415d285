//! Stopping the instances an agent left running (and the shims it started without living to
//! record them).
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_proto::v1::Signal;
use strata_shim::launch::{SHIM_PID_FILE, ShimPid};

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

/// An instance's two processes, each with its start time (clock ticks after boot); a pid of
/// 0 is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pids {
    pub pid: i32,
    pub start_ticks: u64,
    pub shim_pid: i32,
    pub shim_start_ticks: u64,
}

impl From<&InstanceRecord> for Pids {
    fn from(r: &InstanceRecord) -> Pids {
        Pids {
            pid: r.pid,
            start_ticks: r.start_ticks,
            shim_pid: r.shim_pid,
            shim_start_ticks: r.shim_start_ticks,
        }
    }
}

impl From<&ShimPid> for Pids {
    fn from(s: &ShimPid) -> Pids {
        let (pid, start_ticks) = s.service.unwrap_or((0, 0));
        Pids {
            pid,
            start_ticks,
            shim_pid: s.shim_pid,
            shim_start_ticks: s.shim_start_ticks,
        }
    }
}

/// One instance to stop.
#[derive(Debug, Clone)]
pub struct Target {
    pub service: String,
    pub index: u32,
    pub pids: Pids,
    pub rule: StopRule,
    /// For a shim no record names (its agent died between starting and recording it): its
    /// `shim.pid`, read again while it is stopped, since it may still be starting the service.
    pub unrecorded: Option<PathBuf>,
}

impl Target {
    /// "web/1", as the agent names instances.
    pub fn id(&self) -> String {
        format!("{}/{}", self.service, self.index)
    }

    /// What `outcome` means for this instance, for people; `None` when it was not running.
    pub fn describe(&self, outcome: Outcome) -> Option<String> {
        let r = &self.pids;
        let what = match outcome {
            Outcome::NotRunning => return None,
            Outcome::Stopped => format!("stopped by {} (pid {})", self.rule.signal.label(), r.pid),
            Outcome::Killed => format!("killed by SIGKILL (pid {}, shim {})", r.pid, r.shim_pid),
            Outcome::Survived => format!(
                "still running after SIGKILL (pid {}, shim {})",
                r.pid, r.shim_pid
            ),
        };
        Some(match self.unrecorded {
            Some(_) => format!("{what}; a shim no record named"),
            None => what,
        })
    }
}

/// Every instance `store` records, each with its spec's stop rule (the default rule where the
/// stored spec cannot be read or parsed: its instances are stopped all the same), and every
/// shim an instance directory's `shim.pid` names that no record does.
pub fn recorded(store: &Store) -> io::Result<Vec<Target>> {
    let services = store.load_services(|text| {
        parse_spec("spec.toml", text)
            .map(drop)
            .map_err(|e| e.to_string())
    })?;
    let mut targets = Vec::new();
    for stored in services {
        let rule = stored
            .spec
            .value()
            .and_then(|text| parse_spec("spec.toml", text).ok())
            .map(|spec| StopRule {
                signal: spec.stop.signal,
                timeout: spec.stop.timeout,
            })
            .unwrap_or_default();
        let service = stored.name;
        for index in store.instance_indexes(&service) {
            let recorded = store.load_instance(&service, index).map(|r| Pids::from(&r));
            let target = |pids, unrecorded| Target {
                service: service.clone(),
                index,
                pids,
                rule,
                unrecorded,
            };
            if let Some(pids) = recorded {
                targets.push(target(pids, None));
            }
            let file = store.instance_dir(&service, index).join(SHIM_PID_FILE);
            if let Some(stray) = read_shim_pid(&file).map(|s| Pids::from(&s))
                && recorded.is_none_or(|r| {
                    (r.shim_pid, r.shim_start_ticks) != (stray.shim_pid, stray.shim_start_ticks)
                })
            {
                targets.push(target(stray, Some(file)));
            }
        }
    }
    Ok(targets)
}

fn read_shim_pid(file: &Path) -> Option<ShimPid> {
    ShimPid::parse(&std::fs::read_to_string(file).ok()?)
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
    Ok(targets
        .into_iter()
        .zip(outcomes)
        .map(|(target, (outcome, pids))| (Target { pids, ..target }, outcome))
        .collect())
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
        // Only a shim no record named can name its service this late: it was still starting.
        Phase::ShimEnding { .. } if alive.service => (
            Phase::Signalled {
                deadline: now + rule.timeout,
            },
            Some(Act::Signal(rule.signal)),
        ),
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

/// Stops every target at once and returns how each ended, with its pids as finally known (an
/// unrecorded shim may name its service meanwhile), in the order given. Blocking: takes up to
/// the longest stop timeout plus two shim grace periods.
pub fn stop_all(targets: &[Target]) -> Vec<(Outcome, Pids)> {
    let mut phases = vec![Phase::Start; targets.len()];
    let mut pids: Vec<Pids> = targets.iter().map(|t| t.pids).collect();
    loop {
        let now = Instant::now();
        for ((target, phase), r) in targets.iter().zip(phases.iter_mut()).zip(pids.iter_mut()) {
            if r.pid <= 0
                && let Some(file) = &target.unrecorded
                && let Some(named) = read_shim_pid(file).map(|s| Pids::from(&s))
                && (named.shim_pid, named.shim_start_ticks) == (r.shim_pid, r.shim_start_ticks)
            {
                *r = named;
            }
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
        let outcomes: Option<Vec<(Outcome, Pids)>> = phases
            .iter()
            .zip(&pids)
            .map(|(phase, pids)| match phase {
                Phase::Done(outcome) => Some((*outcome, *pids)),
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
        let cases: [(&str, Vec<Look>, Outcome); 7] = [
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
                "a shim no record named names its service while it ends",
                vec![
                    (0, false, true, None),
                    (1, true, true, SIGNAL),
                    (2, false, false, None),
                ],
                Outcome::Stopped,
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
        let shim_pid = |index, text: &str| {
            std::fs::write(store.instance_dir("web", index).join(SHIM_PID_FILE), text).unwrap()
        };
        // the recorded shim's own file adds nothing; a shim nobody recorded is found
        shim_pid(2, "1 2 3 4\n");
        std::fs::create_dir_all(store.instance_dir("web", 3)).unwrap();
        shim_pid(3, "21 22\n");
        let found: Vec<(String, StopRule, Pids, bool)> = recorded(&store)
            .unwrap()
            .into_iter()
            .map(|t| (t.id(), t.rule, t.pids, t.unrecorded.is_some()))
            .collect();
        let web = StopRule {
            signal: Signal::Int,
            timeout: Duration::from_secs(2),
        };
        let pids = Pids::from(&record);
        let stray = Pids {
            pid: 0,
            start_ticks: 0,
            shim_pid: 21,
            shim_start_ticks: 22,
        };
        assert_eq!(
            found,
            [
                ("odd/1".to_string(), StopRule::default(), pids, false),
                ("web/2".to_string(), web, pids, false),
                ("web/3".to_string(), web, stray, true),
            ]
        );
    }
}
