//! `strata-agent upgrade`: asks the agent running on a data dir to hand over to a new
//! process (a new binary, or the same one) without closing any of its ports, and waits for
//! the outcome. The request reaches the agent nginx-style, as root-local administration:
//! a request file in the data dir, then SIGUSR2 to the pid the data-dir lock records. The
//! agent answers in a result file (see [`crate::handoff`] for what happens in between).
//! A plain `kill -USR2 PID` upgrades to the binary the agent was started from.

use crate::data_lock::{DataDirLock, LockError};
use crate::fsutil;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The request the command leaves for the agent, in the data dir.
pub const REQUEST_FILE: &str = "upgrade.request";
/// The agent's answer, in the data dir.
pub const RESULT_FILE: &str = "upgrade.result";
/// How long the old agent drains its open proxied connections by default.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Exit code when the new agent failed (the old one keeps serving) or did not answer.
const EXIT_FAILED: u8 = 1;
/// Exit code for wrong arguments (a missing binary, no data dir).
const EXIT_USAGE: u8 = 2;
/// Exit code when no agent runs on the data dir.
const EXIT_NO_AGENT: u8 = 3;

/// What `strata-agent upgrade` asks of the running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRequest {
    /// Matches the answer to the request.
    pub id: String,
    /// The binary to start; `None`: the one the agent was started from.
    pub binary: Option<PathBuf>,
    /// How long the old agent waits for its open proxied connections to end.
    pub drain_ms: u64,
}

/// How a handoff ended, as the old agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum UpgradeOutcome {
    /// The new agent serves; the old one drains and exits.
    Ready { old_pid: u32, new_pid: u32 },
    /// The new agent did not start; the old one still serves (unless `old_stopped`).
    Failed { error: String, old_stopped: bool },
}

/// The answer in [`RESULT_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeResult {
    /// The request's id; `None` for an upgrade started by a bare SIGUSR2.
    pub id: Option<String>,
    #[serde(flatten)]
    pub outcome: UpgradeOutcome,
}

/// Takes (reads and removes) the pending request in `data_dir`, if any.
pub fn take_request(data_dir: &Path) -> Option<UpgradeRequest> {
    let path = data_dir.join(REQUEST_FILE);
    let text = std::fs::read_to_string(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    match serde_json::from_str(&text) {
        Ok(request) => Some(request),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable upgrade request");
            None
        }
    }
}

/// Writes the answer for whoever waits on it.
pub fn write_result(data_dir: &Path, result: &UpgradeResult) {
    let path = data_dir.join(RESULT_FILE);
    let written = serde_json::to_vec(result)
        .map_err(std::io::Error::other)
        .and_then(|bytes| fsutil::write_atomic(&path, &bytes));
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the upgrade result");
    }
}

/// Arguments of `strata-agent upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The new agent binary [default: the binary the running agent was started from].
    #[arg(long, value_name = "FILE")]
    binary: Option<PathBuf>,
    /// The running agent's data dir [default: the config file's, else as `strata-agent run`].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The agent's config file, to find its data dir.
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// How long to wait for the new agent to serve.
    #[arg(long, default_value = "120s", value_parser = crate::config::parse_duration_arg)]
    timeout: Duration,
    /// How long the old agent lets its open proxied connections finish before it exits.
    #[arg(long, default_value = "30s", value_parser = crate::config::parse_duration_arg)]
    drain_timeout: Duration,
}

/// Runs `strata-agent upgrade`: exit 0 when the new agent serves, 1 when it failed (the old
/// one keeps serving) or did not answer in time, 2 for wrong arguments, 3 when no agent runs
/// on the data dir.
pub fn run(args: &UpgradeArgs) -> ExitCode {
    match upgrade(args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err((code, message)) => {
            eprintln!("strata-agent: {message}");
            ExitCode::from(code)
        }
    }
}

fn upgrade(args: &UpgradeArgs) -> Result<String, (u8, String)> {
    let usage = |m: String| (EXIT_USAGE, m);
    let dir = match (&args.data_dir, &args.config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => crate::config::load_file(config)
            .map_err(|e| usage(e.to_string()))?
            .data_dir
            .unwrap_or_else(crate::config::default_data_dir),
        (None, None) => crate::config::default_data_dir(),
    };
    if !dir.is_dir() {
        return Err(usage(format!(
            "no data dir at {} (give the agent's --data-dir)",
            dir.display()
        )));
    }
    let binary = match &args.binary {
        None => None,
        Some(binary) => Some(check_binary(binary).map_err(usage)?),
    };
    let pid = match DataDirLock::acquire(&dir) {
        Ok(_free) => {
            return Err((
                EXIT_NO_AGENT,
                format!(
                    "no agent runs on {}: start one with `strata-agent run`",
                    dir.display()
                ),
            ));
        }
        Err(LockError::Held { pid: Some(pid), .. }) => pid,
        Err(e) => return Err((EXIT_FAILED, e.to_string())),
    };
    let id = uuid::Uuid::new_v4().to_string();
    let request = UpgradeRequest {
        id: id.clone(),
        binary,
        drain_ms: u64::try_from(args.drain_timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let result_path = dir.join(RESULT_FILE);
    let _ = std::fs::remove_file(&result_path);
    let bytes = serde_json::to_vec(&request).map_err(|e| (EXIT_FAILED, e.to_string()))?;
    fsutil::write_atomic(&dir.join(REQUEST_FILE), &bytes).map_err(|e| {
        (
            EXIT_FAILED,
            format!("cannot write the upgrade request in {}: {e}", dir.display()),
        )
    })?;
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| (EXIT_FAILED, format!("the lock names no valid pid ({pid})")))?;
    rustix::process::kill_process(target, rustix::process::Signal::USR2)
        .map_err(|e| (EXIT_FAILED, format!("cannot signal agent pid {pid}: {e}")))?;
    let deadline = Instant::now() + args.timeout;
    loop {
        if let Some(result) = read_result(&result_path).filter(|r| r.id.as_deref() == Some(&id)) {
            return match result.outcome {
                UpgradeOutcome::Ready { old_pid, new_pid } => Ok(format!(
                    "upgraded: agent {new_pid} serves (agent {old_pid} drains its connections and exits)"
                )),
                UpgradeOutcome::Failed {
                    error,
                    old_stopped: false,
                } => Err((
                    EXIT_FAILED,
                    format!("upgrade failed, agent {pid} keeps serving: {error}"),
                )),
                UpgradeOutcome::Failed {
                    error,
                    old_stopped: true,
                } => Err((
                    EXIT_FAILED,
                    format!(
                        "upgrade failed after agent {pid} had handed over, so it exits (the service manager restarts it): {error}"
                    ),
                )),
            };
        }
        if Instant::now() > deadline {
            return Err((
                EXIT_FAILED,
                format!(
                    "agent {pid} did not report within {}; see its log",
                    humantime::format_duration(args.timeout)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_result(path: &Path) -> Option<UpgradeResult> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The binary as an absolute path, when it is an executable file.
fn check_binary(binary: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let path =
        std::fs::canonicalize(binary).map_err(|e| format!("--binary {}: {e}", binary.display()))?;
    let meta = std::fs::metadata(&path).map_err(|e| format!("--binary {}: {e}", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "--binary {}: not an executable file",
            path.display()
        ));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_taken_once_and_results_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_request(dir.path()), None);
        let request = UpgradeRequest {
            id: "r1".into(),
            binary: Some("/usr/local/bin/strata-agent".into()),
            drain_ms: 1000,
        };
        std::fs::write(
            dir.path().join(REQUEST_FILE),
            serde_json::to_vec(&request).unwrap(),
        )
        .unwrap();
        assert_eq!(take_request(dir.path()), Some(request));
        assert_eq!(take_request(dir.path()), None);
        let result = UpgradeResult {
            id: Some("r1".into()),
            outcome: UpgradeOutcome::Failed {
                error: "boom".into(),
                old_stopped: false,
            },
        };
        write_result(dir.path(), &result);
        assert_eq!(read_result(&dir.path().join(RESULT_FILE)), Some(result));
    }

    #[test]
    fn only_an_executable_file_is_a_binary() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_binary(&dir.path().join("none")).unwrap_err();
        assert!(err.starts_with("--binary"), "{err}");
        assert!(
            check_binary(dir.path())
                .unwrap_err()
                .contains("not an executable")
        );
        assert!(check_binary(Path::new("/bin/sh")).is_ok());
    }
}
