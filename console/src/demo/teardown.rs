//! Stopping everything the demo started: services through the API, then the agents by
//! pid, then — for safety — any instance process group still recorded in the agents' data
//! dirs (each pid checked against its start time), then the demo's cgroups.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use strata_proto::v1::agent_client::AgentClient;
use strata_proto::v1::{ListServicesRequest, RemoveServiceRequest};

/// How long removing one agent's services may take (frontend services drain first).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long leftover processes and cgroups get to disappear.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// A process the agent recorded for an instance: the service (leading a process group) and
/// its shim, each with its start time in clock ticks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Record {
    pub pid: i32,
    pub start_ticks: u64,
    pub shim_pid: i32,
    pub shim_start_ticks: u64,
}

/// Sends `signal` to process `pid`; a process that is gone already is not an error.
pub fn signal_pid(pid: u32, signal: rustix::process::Signal) {
    if let Some(p) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(p, signal);
    }
}

/// The instance records under `data_dir/services/*/instances/*/instance.json`.
pub fn instance_records(data_dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    let Ok(services) = std::fs::read_dir(data_dir.join("services")) else {
        return records;
    };
    for service in services.filter_map(Result::ok) {
        let Ok(instances) = std::fs::read_dir(service.path().join("instances")) else {
            continue;
        };
        for instance in instances.filter_map(Result::ok) {
            let Ok(bytes) = std::fs::read(instance.path().join("instance.json")) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                continue;
            };
            let int = |k: &str| v[k].as_i64().unwrap_or(0);
            records.push(Record {
                pid: int("pid") as i32,
                start_ticks: int("start_ticks") as u64,
                shim_pid: int("shim_pid") as i32,
                shim_start_ticks: int("shim_start_ticks") as u64,
            });
        }
    }
    records
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

/// SIGKILLs what is left of `records`: each service's process group and each shim whose
/// pid still has the recorded start time; waits until they are gone. Returns the pids that
/// had to be killed.
pub async fn kill_leftovers(records: &BTreeSet<Record>) -> Vec<i32> {
    let mut killed = Vec::new();
    for r in records {
        for (pid, ticks, group) in [
            (r.pid, r.start_ticks, true),
            (r.shim_pid, r.shim_start_ticks, false),
        ] {
            if pid <= 0 || start_ticks(pid) != Some(ticks) {
                continue;
            }
            let Some(p) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            let _ = if group {
                rustix::process::kill_process_group(p, rustix::process::Signal::KILL)
            } else {
                rustix::process::kill_process(p, rustix::process::Signal::KILL)
            };
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline
        && records.iter().any(|r| {
            start_ticks(r.pid) == Some(r.start_ticks)
                || start_ticks(r.shim_pid) == Some(r.shim_start_ticks)
        })
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killed
}

/// Field 22 of /proc/PID/stat (start time in clock ticks after boot), for a live process.
fn start_ticks(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.get(text.rfind(')')? + 2..)?;
    let mut fields = after.split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_from_instance_files() {
        let dir = tempfile::tempdir().unwrap();
        let inst = dir.path().join("services/web/instances/1");
        std::fs::create_dir_all(&inst).unwrap();
        std::fs::write(
            inst.join("instance.json"),
            r#"{"pid": 10, "start_ticks": 11, "shim_pid": 12, "shim_start_ticks": 13, "x": 1}"#,
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("services/api/instances/1")).unwrap();
        let records = instance_records(dir.path());
        assert_eq!(
            records,
            vec![Record {
                pid: 10,
                start_ticks: 11,
                shim_pid: 12,
                shim_start_ticks: 13
            }]
        );
    }

    #[test]
    fn start_ticks_identify_a_live_process() {
        let me = std::process::id() as i32;
        assert!(start_ticks(me).is_some());
        assert_eq!(start_ticks(0), None);
    }
}
