//! The files the agent and a shim exchange: what to run, and how it ended.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// File name of the launch description inside an instance directory.
pub const LAUNCH_FILE: &str = "launch.json";
/// File name of the exit record inside an instance directory.
pub const EXIT_FILE: &str = "exit.json";
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
