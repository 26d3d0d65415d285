//! `strata-agent leave` (and the first step of `uninstall`): asks the agent running on a data
//! dir to leave the cluster and waits until it has stopped. The agent is found by the data-dir
//! lock it holds ([`crate::data_lock`]) and asked by [`super::LEAVE_SIGNAL`]: whoever may
//! signal the agent's process (root, or its user) may withdraw the node, with no API
//! credentials, as `stop-services` works on the data dir; `strata leave NODE` is the API's way.

use super::LEAVE_SIGNAL;
use crate::data_lock::{DataDirLock, LockError};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code when the data dir does not exist or the arguments are wrong.
const EXIT_USAGE: u8 = 2;
/// Exit code when no agent runs on the data dir.
const EXIT_NOT_RUNNING: u8 = 3;
/// How often the lock is tried while waiting for the agent to exit.
const POLL: Duration = Duration::from_millis(100);

/// Arguments of `strata-agent leave`.
#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// The agent's data dir [default: as `strata-agent run`].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How long to wait for the agent to drain, leave and exit, e.g. "60s".
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = crate::config::parse_duration_arg)]
    timeout: Duration,
}

/// What a leave request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The agent with this pid left the cluster and exited.
    Left { pid: u32 },
    /// No agent holds the data dir: there was nothing to withdraw.
    NotRunning,
}

/// Why the agent could not be asked, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    #[error("{0}")]
    Lock(LockError),
    #[error(
        "{} is held by a process that did not write its pid into agent.lock; cannot tell which agent to ask",
        .0.display()
    )]
    UnknownHolder(PathBuf),
    #[error(
        "process {pid} holds {} but is not `strata-agent run` (a stop-services?); try again when it has finished",
        dir.display()
    )]
    NotAnAgent { pid: u32, dir: PathBuf },
    #[error("cannot signal agent process {pid}: {source}")]
    Signal { pid: u32, source: std::io::Error },
    #[error(
        "agent process {pid} was asked to leave but still runs after {}; see its log (journalctl -u strata-agent)",
        humantime::format_duration(*waited)
    )]
    TimedOut { pid: u32, waited: Duration },
}

/// Whether a command line (NUL-separated, as in `/proc/PID/cmdline`) is `strata-agent run`.
fn is_agent_run(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
    let Some(program) = args.next() else {
        return false;
    };
    let program = Path::new(std::str::from_utf8(program).unwrap_or_default());
    program
        .file_name()
        .is_some_and(|name| name.to_string_lossy().starts_with("strata-agent"))
        && args.next() == Some(b"run".as_slice())
}

/// Asks the agent holding `data_dir` to leave, then waits up to `timeout` for it to exit.
pub fn leave_running_agent(data_dir: &Path, timeout: Duration) -> Result<Outcome, LeaveError> {
    let pid = match DataDirLock::acquire(data_dir) {
        Ok(_free) => return Ok(Outcome::NotRunning),
        Err(LockError::Held { pid: Some(pid), .. }) => pid,
        Err(LockError::Held { path, .. }) => return Err(LeaveError::UnknownHolder(path)),
        Err(e) => return Err(LeaveError::Lock(e)),
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !is_agent_run(&cmdline) {
        return Err(LeaveError::NotAnAgent {
            pid,
            dir: data_dir.to_path_buf(),
        });
    }
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| LeaveError::Signal {
            pid,
            source: std::io::Error::other("not a valid pid"),
        })?;
    rustix::process::kill_process(target, LEAVE_SIGNAL).map_err(|e| LeaveError::Signal {
        pid,
        source: e.into(),
    })?;
    let started = Instant::now();
    loop {
        match DataDirLock::acquire(data_dir) {
            Ok(_free) => return Ok(Outcome::Left { pid }),
            Err(LockError::Held { .. }) if started.elapsed() < timeout => std::thread::sleep(POLL),
            Err(LockError::Held { .. }) => {
                return Err(LeaveError::TimedOut {
                    pid,
                    waited: timeout,
                });
            }
            Err(e) => return Err(LeaveError::Lock(e)),
        }
    }
}

/// Runs `strata-agent leave`: exit 0 when the agent left and stopped, 1 when it could not be
/// asked or did not stop in time, 2 when there is no such data dir, 3 when no agent runs on it.
pub fn run(args: &LeaveArgs) -> ExitCode {
    let dir = match crate::config::existing_data_dir(args.data_dir.as_deref()) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("strata-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match leave_running_agent(&dir, args.timeout) {
        Ok(Outcome::Left { pid }) => {
            println!(
                "agent {pid} on {} left the cluster and stopped; its services still run \
                 (strata-agent stop-services stops them)",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(Outcome::NotRunning) => {
            eprintln!(
                "strata-agent: no agent runs on {}; nothing to leave (a stopped agent's node \
                 is removed from another node with `strata force-leave NODE`)",
                dir.display()
            );
            ExitCode::from(EXIT_NOT_RUNNING)
        }
        Err(e) => {
            eprintln!("strata-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_agent_run_is_asked() {
        let yes: &[&[u8]] = &[
            b"/usr/local/bin/strata-agent\0run\0--config\0/etc/strata/agent.toml\0",
            b"strata-agent\0run\0",
            b"/tmp/target/debug/strata-agent\0run\0--dev\0",
        ];
        for cmdline in yes {
            assert!(
                is_agent_run(cmdline),
                "{:?}",
                String::from_utf8_lossy(cmdline)
            );
        }
        let no: &[&[u8]] = &[
            b"",
            b"/usr/local/bin/strata-agent\0stop-services\0",
            b"/usr/local/bin/strata-agent\0stop-services\0--data-dir\0run\0",
            b"/usr/bin/python3\0run\0",
        ];
        for cmdline in no {
            assert!(
                !is_agent_run(cmdline),
                "{:?}",
                String::from_utf8_lossy(cmdline)
            );
        }
    }

    #[test]
    fn a_free_data_dir_has_nothing_to_leave() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = leave_running_agent(dir.path(), Duration::from_secs(1)).unwrap();
        assert_eq!(outcome, Outcome::NotRunning);
    }
}
