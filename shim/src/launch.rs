//! The files the agent and a shim exchange: what to run, and how it ended.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

/// File name of the launch description inside an instance directory.
pub const LAUNCH_FILE: &str = "launch.json";
/// File name of the exit record inside an instance directory.
pub const EXIT_FILE: &str = "exit.json";
/// File name of the shim's own pid record inside an instance directory ([`ShimPid`]).
pub const SHIM_PID_FILE: &str = "shim.pid";
/// File name of the current log file inside the log directory; rotated files get `.1`, `.2`, ...
pub const LOG_FILE: &str = "output.log";

/// Everything a shim needs to start one service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Program and arguments; the program is looked up in PATH when it has no slash.
    pub command: Vec<String>,
    /// The complete environment of the service (nothing is inherited).
    pub env: Vec<(String, String)>,
    /// Working directory; the instance directory when absent.
    pub workdir: Option<PathBuf>,
    /// Directory of the log files.
    pub log_dir: PathBuf,
    /// Rotate the log when it would grow past this many bytes.
    pub log_max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub log_keep: u32,
    /// RLIMIT_NOFILE for the service, when set.
    pub nofile: Option<u64>,
    /// `cgroup.procs` files the service's pid is written to before it runs its program
    /// (one for cgroup v2, one per controller for v1; empty without cgroups).
    pub cgroup_procs: Vec<PathBuf>,
}

/// File name of new log rotation settings ([`LogRotation`]) inside an instance directory:
/// written atomically by the agent, then taken by the shim on SIGUSR1.
pub const LOG_ROTATION_FILE: &str = "log-rotation.json";

/// How the log is rotated, changed while the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// Rotate the log when it would grow past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: u32,
}

/// How a service process ended, as the shim saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The service's pid.
    pub pid: i32,
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// The signal that ended it, when a signal did.
    pub signal: Option<i32>,
    /// Whether it dumped core.
    pub core_dumped: bool,
    /// When the shim saw it end, Unix milliseconds.
    pub exited_unix_ms: i64,
}

/// Who runs an instance, as written by the shim itself: its own pid and start time the
/// moment it starts, then its service's once that runs. The agent records the same in its
/// instance record, but only after the shim reported; a shim the agent started and then
/// died before recording is found through this file, so it is never left running unseen.
///
/// Text: `SHIM_PID SHIM_START_TICKS [PID START_TICKS]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimPid {
    /// The shim's pid.
    pub shim_pid: i32,
    /// The shim's start time, clock ticks after boot.
    pub shim_start_ticks: u64,
    /// The service's pid and start time, once it was started.
    pub service: Option<(i32, u64)>,
}

impl ShimPid {
    /// The file's text.
    pub fn encode(&self) -> String {
        match self.service {
            Some((pid, ticks)) => format!(
                "{} {} {pid} {ticks}\n",
                self.shim_pid, self.shim_start_ticks
            ),
            None => format!("{} {}\n", self.shim_pid, self.shim_start_ticks),
        }
    }

    /// Parses the file's text; `None` for anything else.
    pub fn parse(text: &str) -> Option<ShimPid> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        let shim_pid = i32::try_from(num(0)?).ok()?;
        let shim_start_ticks = num(1)?;
        let service = match fields.len() {
            2 => None,
            4 => Some((i32::try_from(num(2)?).ok()?, num(3)?)),
            _ => return None,
        };
        Some(ShimPid {
            shim_pid,
            shim_start_ticks,
            service,
        })
    }
}

/// When process `pid` started: field 22 (starttime, clock ticks after boot) of
/// `/proc/PID/stat`. With the pid it names one process for good, as pids are reused.
pub fn start_ticks(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("no command name"))?;
    // Field 3 (state) is the first one after the name; starttime is field 22.
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("no start time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_pid_round_trips_and_rejects_garbage() {
        let starting = ShimPid {
            shim_pid: 10,
            shim_start_ticks: 11,
            service: None,
        };
        let running = ShimPid {
            service: Some((12, 13)),
            ..starting
        };
        assert_eq!(ShimPid::parse(&starting.encode()), Some(starting));
        assert_eq!(ShimPid::parse(&running.encode()), Some(running));
        for bad in ["", "10", "10 11 12", "-1 11", "10 11 12 13 14", "a b"] {
            assert_eq!(ShimPid::parse(bad), None, "{bad:?}");
        }
    }
}
