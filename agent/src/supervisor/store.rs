//! The supervisor's durable state in the data dir: every spec it was given (the original
//! text, so errors and diffs refer to what the user wrote), the operator's wishes (stopped,
//! scaled) and one record per running instance, so a restarted agent can re-adopt it.
//!
//! Layout under `<data dir>/services/<name>/`:
//! `spec.toml`, `desired.json`, `instances/<index>/` (shim files and `instance.json`).
//! Logs live apart, under `<data dir>/logs/<name>/<index>/`, so they can sit on their own disk.
//! Every file is written atomically (write, fsync, rename) before it is acted on.

use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// File name of a stored spec.
const SPEC_FILE: &str = "spec.toml";
/// File name of a service's desired state.
const DESIRED_FILE: &str = "desired.json";
/// File name of an instance's runtime record.
const INSTANCE_FILE: &str = "instance.json";

/// What the operator wants of a service beyond its spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    /// Where the spec came from: a file path, or "api".
    pub source: String,
    /// Stopped by an operator: stays stopped across agent restarts.
    #[serde(default)]
    pub stopped: bool,
    /// Instances set by `scale`, overriding the spec's count until the next apply.
    #[serde(default)]
    pub scaled_to: Option<u32>,
}

/// What the agent must know to re-adopt a running instance after its own restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub shim_pid: i32,
    pub shim_start_ticks: u64,
    pub pid: i32,
    pub start_ticks: u64,
    pub ports: BTreeMap<String, u16>,
    pub started_unix_ms: i64,
    pub restarts: u32,
    pub version: String,
    /// Whether its shim takes new log settings on SIGUSR1 (shims before that would die of
    /// the signal, so theirs are never sent one).
    #[serde(default)]
    pub reloads_logs: bool,
}

/// One stored service as loaded at start.
#[derive(Debug, Clone)]
pub struct StoredService {
    pub name: String,
    pub text: String,
    pub desired: Desired,
}

/// A stored service that cannot be loaded: (name, reason).
pub type BrokenService = (String, String);

/// The supervisor's directory tree.
#[derive(Debug, Clone)]
pub struct Store {
    services: PathBuf,
    logs: PathBuf,
}

impl Store {
    fn under(data_dir: &Path) -> Store {
        Store {
            services: data_dir.join("services"),
            logs: data_dir.join("logs"),
        }
    }

    /// Opens (creating) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        let store = Store::under(data_dir);
        std::fs::create_dir_all(&store.services)?;
        std::fs::create_dir_all(&store.logs)?;
        Ok(store)
    }

    /// Opens the store under `data_dir` without creating anything, for reading what an agent
    /// left; `None` when `data_dir` holds no store.
    pub fn open_existing(data_dir: &Path) -> Option<Store> {
        let store = Store::under(data_dir);
        store.services.is_dir().then_some(store)
    }

    fn service_dir(&self, name: &str) -> PathBuf {
        self.services.join(name)
    }

    /// The directory of one instance's shim files.
    pub fn instance_dir(&self, name: &str, index: u32) -> PathBuf {
        self.service_dir(name)
            .join("instances")
            .join(index.to_string())
    }

    /// The directory every instance's logs live under, for the log retention sweep.
    pub fn logs_root(&self) -> &Path {
        &self.logs
    }

    /// The directory of one instance's log files.
    pub fn log_dir(&self, name: &str, index: u32) -> PathBuf {
        self.logs.join(name).join(index.to_string())
    }

    /// Stores a spec's text and desired state, durably, before anything acts on them.
    pub fn save_service(&self, name: &str, text: &str, desired: &Desired) -> io::Result<()> {
        let dir = self.service_dir(name);
        std::fs::create_dir_all(&dir)?;
        write_atomic(&dir.join(SPEC_FILE), text.as_bytes())?;
        self.save_desired(name, desired)
    }

    /// Stores a service's desired state.
    pub fn save_desired(&self, name: &str, desired: &Desired) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(desired).map_err(io::Error::other)?;
        write_atomic(&self.service_dir(name).join(DESIRED_FILE), &json)
    }

    /// Every stored service. A service whose files cannot be read is skipped and reported
    /// in the second list as (name, reason).
    pub fn load_services(&self) -> io::Result<(Vec<StoredService>, Vec<BrokenService>)> {
        let mut services = Vec::new();
        let mut broken = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&self.services)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let dir = self.service_dir(&name);
            let text = match std::fs::read_to_string(dir.join(SPEC_FILE)) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    broken.push((name, format!("cannot read {SPEC_FILE}: {e}")));
                    continue;
                }
            };
            let desired = match std::fs::read(dir.join(DESIRED_FILE)) {
                Ok(bytes) => match serde_json::from_slice(&bytes) {
                    Ok(d) => d,
                    Err(e) => {
                        broken.push((name, format!("{DESIRED_FILE} is corrupt: {e}")));
                        continue;
                    }
                },
                Err(_) => Desired::default(),
            };
            services.push(StoredService {
                name,
                text,
                desired,
            });
        }
        Ok((services, broken))
    }

    /// Forgets a service: its spec, desired state and instance records (logs are kept).
    pub fn remove_service(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.service_dir(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Stores an instance's runtime record.
    pub fn save_instance(&self, name: &str, index: u32, record: &InstanceRecord) -> io::Result<()> {
        let dir = self.instance_dir(name, index);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        write_atomic(&dir.join(INSTANCE_FILE), &json)
    }

    /// The runtime record of an instance, if one is stored and readable.
    pub fn load_instance(&self, name: &str, index: u32) -> Option<InstanceRecord> {
        let bytes = std::fs::read(self.instance_dir(name, index).join(INSTANCE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Indexes of the instances that have a directory (running or not).
    pub fn instance_indexes(&self, name: &str) -> Vec<u32> {
        let mut indexes: Vec<u32> = std::fs::read_dir(self.service_dir(name).join("instances"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        indexes.sort_unstable();
        indexes
    }

    /// Deletes an instance's runtime record (it no longer runs).
    pub fn clear_instance(&self, name: &str, index: u32) {
        let _ = std::fs::remove_file(self.instance_dir(name, index).join(INSTANCE_FILE));
    }

    /// Deletes an instance's whole directory (scaled down or removed).
    pub fn remove_instance(&self, name: &str, index: u32) {
        let _ = std::fs::remove_dir_all(self.instance_dir(name, index));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_instances_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let desired = Desired {
            source: "/srv/echo/strata.toml".into(),
            stopped: true,
            scaled_to: Some(3),
        };
        store
            .save_service("echo", "name = \"echo\"", &desired)
            .unwrap();
        let record = InstanceRecord {
            shim_pid: 10,
            shim_start_ticks: 11,
            pid: 12,
            start_ticks: 13,
            ports: [("http".to_string(), 20001)].into_iter().collect(),
            started_unix_ms: 14,
            restarts: 2,
            version: "1.0".into(),
            reloads_logs: true,
        };
        store.save_instance("echo", 2, &record).unwrap();

        let reopened = Store::open(dir.path()).unwrap();
        let (services, broken) = reopened.load_services().unwrap();
        assert!(broken.is_empty());
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].text, "name = \"echo\"");
        assert_eq!(services[0].desired, desired);
        assert_eq!(reopened.load_instance("echo", 2), Some(record));
        assert_eq!(reopened.instance_indexes("echo"), vec![2]);

        reopened.remove_service("echo").unwrap();
        assert!(reopened.load_services().unwrap().0.is_empty());
    }

    #[test]
    fn a_record_from_before_live_log_changes_reads_as_unable_to_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let instance = dir.path().join("services/old/instances/1");
        std::fs::create_dir_all(&instance).unwrap();
        std::fs::write(
            instance.join(INSTANCE_FILE),
            r#"{"shim_pid":1,"shim_start_ticks":2,"pid":3,"start_ticks":4,"ports":{},"started_unix_ms":5,"restarts":0,"version":"1"}"#,
        )
        .unwrap();
        let record = store.load_instance("old", 1).unwrap();
        assert!(!record.reloads_logs);
        assert_eq!(record.pid, 3);
    }

    #[test]
    fn a_corrupt_desired_file_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_service("a", "x", &Desired::default()).unwrap();
        store.save_service("b", "y", &Desired::default()).unwrap();
        std::fs::write(dir.path().join("services/a/desired.json"), "{not json").unwrap();
        let (services, broken) = store.load_services().unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(broken[0].0, "a");
    }
}
