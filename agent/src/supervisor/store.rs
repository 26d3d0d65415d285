//! The supervisor's durable state in the data dir: every spec it was given (the original
//! text, so errors and diffs refer to what the user wrote), the operator's wishes (stopped,
//! scaled) and one record per running instance, so a restarted agent can re-adopt it.
//!
//! Layout under `<data dir>/services/<name>/`:
//! `spec.toml`, `desired.json`, `instances/<index>/` (shim files and `instance.json`).
//! Logs live apart, under `<data dir>/logs/<name>/<index>/`, so they can sit on their own disk.
//! Every file is written atomically (write, fsync, rename) before it is acted on.
//!
//! `spec.toml` and `desired.json` carry a checksum ([`super::sealed`]), and each save keeps
//! the copy it replaces, when that one was good, as `spec.toml.prev` / `desired.json.prev`.
//! A file found damaged at load is recovered from its previous copy; failing that, the
//! caller learns it is lost ([`Loaded`]) and holds the service as unmanaged.

use super::sealed::{seal_json, seal_text, unseal_json, unseal_text};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// File name of a stored spec.
const SPEC_FILE: &str = "spec.toml";
/// File name of a service's desired state.
const DESIRED_FILE: &str = "desired.json";
/// Suffix of the previous good copy of a spec or desired state.
const PREV_SUFFIX: &str = ".prev";
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

/// A stored file found damaged at load: which, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub reason: String,
}

/// How one of a service's stored files was loaded.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded<T> {
    /// The file was good (or written by an older agent, without a checksum).
    Good(T),
    /// The file was damaged; its previous good copy, `from`, was used and put back in its
    /// place, and the damaged file kept as `moved_to` (when it could be moved).
    Recovered {
        value: T,
        damage: Damage,
        from: PathBuf,
        moved_to: Option<PathBuf>,
    },
    /// The file was damaged and no previous good copy could be used.
    Lost(Damage),
}

impl<T> Loaded<T> {
    /// The value, unless it is lost.
    pub fn value(&self) -> Option<&T> {
        match self {
            Loaded::Good(value) | Loaded::Recovered { value, .. } => Some(value),
            Loaded::Lost(_) => None,
        }
    }

    /// What was found damaged, when nothing could be used.
    pub fn lost(&self) -> Option<&Damage> {
        match self {
            Loaded::Lost(damage) => Some(damage),
            _ => None,
        }
    }
}

/// One stored service as loaded at start.
#[derive(Debug, Clone)]
pub struct StoredService {
    pub name: String,
    /// The spec's text, as the operator wrote it.
    pub spec: Loaded<String>,
    pub desired: Loaded<Desired>,
}

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

    /// The directory every service's directory is in (`<data dir>/services`).
    pub fn services_root(&self) -> &Path {
        &self.services
    }

    fn service_dir(&self, name: &str) -> PathBuf {
        self.services.join(name)
    }

    /// The directory holding a service's instance directories.
    pub fn instances_dir(&self, name: &str) -> PathBuf {
        self.service_dir(name).join("instances")
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

    /// The path of a service's stored spec (what an event about its damage names).
    pub fn spec_path(&self, name: &str) -> PathBuf {
        self.service_dir(name).join(SPEC_FILE)
    }

    /// Stores a spec's text and desired state, durably, before anything acts on them.
    pub fn save_service(&self, name: &str, text: &str, desired: &Desired) -> io::Result<()> {
        let dir = self.service_dir(name);
        std::fs::create_dir_all(&dir)?;
        save_keeping_previous(&dir.join(SPEC_FILE), seal_text(text).as_bytes(), |b| {
            unseal_text(b).map(drop)
        })?;
        self.save_desired(name, desired)
    }

    /// Stores a service's desired state.
    pub fn save_desired(&self, name: &str, desired: &Desired) -> io::Result<()> {
        let json = seal_json(desired).map_err(io::Error::other)?;
        save_keeping_previous(&self.service_dir(name).join(DESIRED_FILE), &json, |b| {
            unseal_json::<Desired>(b).map(drop)
        })
    }

    /// Every stored service, each file checked and recovered from its previous copy where
    /// damaged; `check_spec` says whether a spec's text is still a valid spec. A directory
    /// with neither a spec nor a previous copy nor an instance is skipped (a removal that
    /// was under way).
    pub fn load_services(
        &self,
        check_spec: impl Fn(&str) -> Result<(), String>,
    ) -> io::Result<Vec<StoredService>> {
        let mut services = Vec::new();
        let mut names: Vec<String> = std::fs::read_dir(&self.services)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let dir = self.service_dir(&name);
            let spec = load_file(&dir.join(SPEC_FILE), |bytes| {
                let text = unseal_text(bytes)?;
                check_spec(&text).map_err(|e| format!("it is no longer a valid spec: {e}"))?;
                Ok(text)
            });
            let spec = match spec {
                Some(spec) => spec,
                None if self.instance_indexes(&name).is_empty() => continue,
                None => Loaded::Lost(Damage {
                    path: dir.join(SPEC_FILE),
                    reason: "it is missing".into(),
                }),
            };
            let desired = load_file(&dir.join(DESIRED_FILE), unseal_json::<Desired>)
                .unwrap_or(Loaded::Good(Desired::default()));
            services.push(StoredService {
                name,
                spec,
                desired,
            });
        }
        Ok(services)
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

/// `path` + `.prev`.
fn previous_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(PREV_SUFFIX);
    PathBuf::from(name)
}

/// Writes `bytes` to `path` atomically, first keeping the file it replaces as `path.prev`
/// when `good` accepts it (a damaged file never displaces a good previous copy). The old
/// file stays in place until the rename: it is linked, not moved, to its new name.
fn save_keeping_previous(
    path: &Path,
    bytes: &[u8],
    good: impl Fn(&[u8]) -> Result<(), String>,
) -> io::Result<()> {
    if let Ok(current) = std::fs::read(path)
        && current != bytes
        && good(&current).is_ok()
    {
        let prev = previous_of(path);
        let mut staged = prev.as_os_str().to_os_string();
        staged.push(".tmp");
        let staged = PathBuf::from(staged);
        let _ = std::fs::remove_file(&staged);
        std::fs::hard_link(path, &staged)?;
        std::fs::rename(&staged, &prev)?;
    }
    write_atomic(path, bytes)
}

/// Puts the good copy `bytes` back at `path`, keeping a damaged file there beside it as
/// `<name>.damaged-<unix seconds>`; returns where it went. Best effort: the value is in
/// memory either way, and a failure here only means the next start recovers again.
fn restore(path: &Path, bytes: &[u8]) -> Option<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".damaged-{secs}"));
    let moved_to = PathBuf::from(name);
    let moved = std::fs::rename(path, &moved_to).is_ok().then_some(moved_to);
    if let Err(e) = write_atomic(path, bytes) {
        tracing::warn!(path = %path.display(), error = %e, "cannot put the previous good copy back");
    }
    moved
}

/// Loads `path` with `parse`, falling back to its previous copy; `None` when neither exists.
fn load_file<T>(path: &Path, parse: impl Fn(&[u8]) -> Result<T, String>) -> Option<Loaded<T>> {
    let prev = previous_of(path);
    let reason = match std::fs::read(path) {
        Ok(bytes) => match parse(&bytes) {
            Ok(value) => return Some(Loaded::Good(value)),
            Err(reason) => reason,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound && !prev.exists() => return None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => "it is missing".to_string(),
        Err(e) => format!("it cannot be read ({e})"),
    };
    let damage = |reason| Damage {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read(&prev) {
        Ok(bytes) => match parse(&bytes) {
            Ok(value) => Some(Loaded::Recovered {
                value,
                damage: damage(reason),
                moved_to: restore(path, &bytes),
                from: prev,
            }),
            Err(why) => Some(Loaded::Lost(damage(format!(
                "{reason}; its previous copy {} is no good either: {why}",
                prev.display()
            )))),
        },
        Err(_) => Some(Loaded::Lost(damage(format!(
            "{reason}; there is no previous copy"
        )))),
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
        let services = reopened.load_services(any_spec).unwrap();
        assert_eq!(services.len(), 1);
        assert_eq!(
            services[0].spec,
            Loaded::Good("name = \"echo\"".to_string())
        );
        assert_eq!(services[0].desired, Loaded::Good(desired));
        assert_eq!(reopened.load_instance("echo", 2), Some(record));
        assert_eq!(reopened.instance_indexes("echo"), vec![2]);

        reopened.remove_service("echo").unwrap();
        assert!(reopened.load_services(any_spec).unwrap().is_empty());
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

    fn any_spec(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn only_valid(text: &str) -> Result<(), String> {
        match text.starts_with("name") {
            true => Ok(()),
            false => Err("no name".into()),
        }
    }

    fn desired(source: &str) -> Desired {
        Desired {
            source: source.into(),
            ..Desired::default()
        }
    }

    fn damage(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x55;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn each_save_keeps_the_previous_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .save_service("a", "name = 1", &desired("one"))
            .unwrap();
        assert!(!dir.path().join("services/a/spec.toml.prev").exists());
        store
            .save_service("a", "name = 2", &desired("two"))
            .unwrap();
        let prev = std::fs::read(dir.path().join("services/a/spec.toml.prev")).unwrap();
        assert_eq!(unseal_text(&prev), Ok("name = 1".to_string()));
        let prev = std::fs::read(dir.path().join("services/a/desired.json.prev")).unwrap();
        assert_eq!(unseal_json::<Desired>(&prev), Ok(desired("one")));
        // a damaged current file never displaces the good previous copy
        damage(&store.spec_path("a"));
        store
            .save_service("a", "name = 3", &desired("three"))
            .unwrap();
        let prev = std::fs::read(dir.path().join("services/a/spec.toml.prev")).unwrap();
        assert_eq!(unseal_text(&prev), Ok("name = 1".to_string()));
    }

    #[test]
    fn a_damaged_file_is_recovered_from_its_previous_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .save_service("a", "name = 1", &desired("one"))
            .unwrap();
        store
            .save_service("a", "name = 2", &desired("two"))
            .unwrap();
        damage(&store.spec_path("a"));
        damage(&dir.path().join("services/a/desired.json"));
        let services = store.load_services(any_spec).unwrap();
        let Loaded::Recovered {
            value,
            damage: found,
            from,
            moved_to,
        } = &services[0].spec
        else {
            panic!("{:?}", services[0].spec);
        };
        assert_eq!(value, "name = 1");
        assert_eq!(found.path, store.spec_path("a"));
        assert!(found.reason.contains("checksum"), "{}", found.reason);
        assert_eq!(from, &dir.path().join("services/a/spec.toml.prev"));
        assert!(
            moved_to.as_ref().is_some_and(|m| m.exists()),
            "the damaged file is kept"
        );
        // the good copy is back in place: the next load finds nothing wrong
        let again = store.load_services(any_spec).unwrap();
        assert_eq!(again[0].spec, Loaded::Good("name = 1".to_string()));
        assert_eq!(services[0].desired.value(), Some(&desired("one")));
    }

    #[test]
    fn a_spec_that_no_longer_parses_is_recovered_or_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .save_service("a", "name = 1", &desired("one"))
            .unwrap();
        store.save_service("a", "bad", &desired("two")).unwrap();
        store.save_service("b", "bad", &desired("b")).unwrap();
        let services = store.load_services(only_valid).unwrap();
        assert_eq!(
            services[0].spec.value().map(String::as_str),
            Some("name = 1")
        );
        let Loaded::Lost(lost) = &services[1].spec else {
            panic!("{:?}", services[1].spec);
        };
        assert!(
            lost.reason.contains("no longer a valid spec"),
            "{}",
            lost.reason
        );
        assert!(lost.reason.contains("no previous copy"), "{}", lost.reason);
    }

    #[test]
    fn files_of_older_agents_load_and_a_missing_spec_with_instances_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = dir.path().join("services/old");
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join(SPEC_FILE), "name = \"old\"").unwrap();
        std::fs::write(old.join(DESIRED_FILE), r#"{"source":"x","stopped":true}"#).unwrap();
        std::fs::create_dir_all(dir.path().join("services/gone/instances/1")).unwrap();
        std::fs::create_dir_all(dir.path().join("services/removed")).unwrap();
        let services = store.load_services(any_spec).unwrap();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gone", "old"]);
        assert!(matches!(&services[0].spec, Loaded::Lost(d) if d.reason == "it is missing"));
        assert_eq!(services[1].spec, Loaded::Good("name = \"old\"".into()));
        assert!(services[1].desired.value().is_some_and(|d| d.stopped));
    }
}
