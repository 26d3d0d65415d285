//! Stopping everything the demo started: services through the API, then the agents by pid
//! (SIGTERM; they run with `--stop-services-on-exit`), then — for an agent that had to be
//! killed — any instance it still records, through `strata-agent stop-services` (the
//! agent's own code: each pid checked against its start time), then the demo's cgroups.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use strata_proto::v1::agent_client::AgentClient;
use strata_proto::v1::{ListServicesRequest, RemoveServiceRequest};

/// How long removing one agent's services may take (frontend services drain first).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long leftover processes and cgroups get to disappear.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sends `signal` to process `pid`; a process that is gone already is not an error.
pub fn signal_pid(pid: u32, signal: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, signal);
    }
}

/// Removes every service of the agent at `grpc`, so that it stops their instances.
pub async fn remove_services(grpc: std::net::SocketAddr) -> Result<Vec<String>> {
    let mut client = AgentClient::connect(format!("http://{grpc}"))
        .await
        .with_context(|| format!("cannot reach the agent at {grpc}"))?;
    let work = async {
        let services = client
            .list_services(ListServicesRequest::default())
            .await
            .context("listing services")?
            .into_inner()
            .services;
        let mut removed = Vec::new();
        for service in services {
            client
                .remove_service(RemoveServiceRequest {
                    node: String::new(),
                    name: service.name.clone(),
                })
                .await
                .with_context(|| format!("removing {}", service.name))?;
            removed.push(service.name);
        }
        anyhow::Ok(removed)
    };
    tokio::time::timeout(REMOVE_TIMEOUT, work)
        .await
        .with_context(|| format!("removing the services of {grpc} took over {REMOVE_TIMEOUT:?}"))?
}

/// Kills what an agent that has exited left running in `data_dir`: every instance its
/// records still name, with `strata-agent stop-services --timeout 0s`. Returns the lines it
/// printed, one per instance it had to kill.
pub async fn kill_leftovers(agent_bin: &Path, data_dir: &Path) -> Result<Vec<String>> {
    let out = tokio::process::Command::new(agent_bin)
        .args(["stop-services", "--timeout", "0s", "--data-dir"])
        .arg(data_dir)
        .env_remove("STRATA_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} stop-services", agent_bin.display()))?;
    if !out.status.success() {
        bail!(
            "strata-agent stop-services --data-dir {} failed ({}): {}",
            data_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Removes cgroup `root` (an agent's `cgroup_root`) and the groups below it in every mounted
/// cgroup hierarchy, retrying while processes are still leaving.
pub async fn remove_cgroups(root: &str) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dirs: BTreeSet<std::path::PathBuf> = mounts
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let mount = left.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| Path::new(mount).join(root))
        })
        .filter(|dir| dir.is_dir())
        .collect();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for dir in dirs {
        loop {
            match remove_tree(&dir) {
                Ok(()) => break,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e)
                        .with_context(|| format!("cannot remove cgroup {}", dir.display()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

/// Removes a cgroup directory and its child groups, deepest first (cgroup directories are
/// removed with rmdir; their files go with them).
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.filter_map(Result::ok) {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
