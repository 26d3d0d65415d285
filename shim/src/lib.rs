//! The per-instance shim, `strata-shim DIR`, and the protocol between it and the agent.
//!
//! The agent starts one shim per service instance, in its own session, so the instance
//! outlives the agent: when the agent is killed or restarted, the shim keeps the service's
//! stdout/stderr flowing into its log files, reaps it and records how it ended. The agent
//! re-attaches by pid (verified by start time) after its own restart.
//!
//! This crate is both sides' source of truth: the binary is the writer, and the agent's
//! supervisor reads with the same types, so the format of each file is written once. It
//! depends on std, libc and serde only (no async runtime), so that a shim costs little memory
//! per instance.
//!
//! # Protocol
//!
//! All files are in the instance directory DIR unless said otherwise.
//!
//! 1. The agent writes `launch.json` ([`launch::Launch`]: command, environment, working
//!    directory, log directory and rotation, open file limit, cgroup `cgroup.procs` files),
//!    removes any old `exit.json`, and starts `strata-shim DIR` in a new session with stdout
//!    a pipe.
//! 2. The shim writes `shim.pid` ([`launch::ShimPid`], text `SHIM_PID SHIM_START_TICKS`)
//!    before anything else, so a shim whose agent dies right now can still be found; start
//!    ticks are field 22 of `/proc/PID/stat` ([`launch::start_ticks`]).
//! 3. The shim starts the service in a new session and process group, in its cgroups, with
//!    its rlimit and nothing inherited, then rewrites `shim.pid` with the service's pid and
//!    start ticks appended, and prints one line on stdout: `started PID START_TICKS`, or
//!    `failed REASON` when the service could not be started (then it exits with status 1
//!    and writes no exit record). After that line its stdout is /dev/null: the agent may go
//!    away at any time.
//! 4. While the service runs, each line of its output is appended to `LOG_DIR/output.log`
//!    as `<RFC 3339 UTC time with milliseconds> <out|err> <text>` ([`logline`]), rotated by
//!    size to `output.log.1` (newest) ... `output.log.K` ([`logfile`]). Lines that cannot be
//!    written (a full disk) are dropped and counted, reported in `log-status`
//!    ([`logstatus::LogStatus`], a fixed-size record rewritten in place) and, once writing
//!    works again, in one `[strata] N log lines dropped: REASON` line on the err stream.
//!    When the spec's `[logs]` change, the agent writes `log-rotation.json`
//!    ([`launch::LogRotation`]) atomically and sends the shim SIGUSR1: rotation follows the
//!    new settings from the next line on, without a restart of the service.
//! 5. When the service has ended, the shim kills what is left of its process group and its
//!    re-parented descendants (it is their subreaper), drains the output pipes, writes
//!    `exit.json` ([`launch::ExitRecord`]) atomically and exits with status 0 (1 when the
//!    exit could not be recorded).
//!
//! The shim ignores SIGTERM, SIGINT and SIGHUP: it ends only when its service has. Any command
//! line but one directory (or `--help`, `--version`) gets the usage and exit status 2.

pub mod fsutil;
pub mod launch;
pub mod logfile;
pub mod logline;
pub mod logstatus;
pub mod run;

/// The name of the shim's binary; the agent looks for it next to its own.
pub const BIN_NAME: &str = "strata-shim";
