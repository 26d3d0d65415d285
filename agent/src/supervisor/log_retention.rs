//! Keeps the instance logs under `<data dir>/logs/` from growing for ever: the logs of a
//! service that was removed are deleted once it has been gone for the retention time, and
//! when all logs together take more than the cap, the oldest files are deleted first (never
//! the file a running instance writes). Every deletion is an event naming what went.
//!
//! A periodic sweep ([`spawn`]) does the file work on the blocking pool: [`scan`] reads the
//! directory tree, [`decide`] (pure) says what to do, [`carry_out`] does it. When a service's
//! logs are first found without their service, the sweep leaves a marker file in each
//! instance's log directory; its time is when the logs were orphaned, so the retention counts
//! from the removal (give or take one sweep) and survives agent restarts.

use super::manager::Supervisor;
use super::store::Store;
use crate::events::journal::{EventDraft, Journal};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strata_proto::v1::Severity;
use strata_shim::launch::LOG_FILE;
use tokio::task::JoinHandle;

/// Default time the logs of a removed service are kept.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default cap on all instance logs of an agent together.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 1 << 30;
/// Default time between two sweeps.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// The marker file whose time says since when an instance's logs have had no service.
const ORPHANED_MARKER: &str = ".orphaned";

/// How long logs are kept and how much of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// How long the logs of a removed service are kept.
    pub retention: Duration,
    /// The most bytes all instance logs may take together.
    pub max_total_bytes: u64,
    /// Time between two sweeps.
    pub sweep_interval: Duration,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            retention: DEFAULT_RETENTION,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }
}

/// One log file of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// `output.log` (`None`) or rotated `output.log.N`.
    pub rotated: Option<u32>,
    /// Its size.
    pub bytes: u64,
    /// Its last write.
    pub modified: SystemTime,
}

impl LogFile {
    /// Its file name.
    pub fn name(&self) -> String {
        match self.rotated {
            None => LOG_FILE.to_string(),
            Some(n) => format!("{LOG_FILE}.{n}"),
        }
    }
}

/// One instance's log directory as a sweep found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLogs {
    /// The service.
    pub service: String,
    /// The instance index.
    pub index: u32,
    /// Whether the service still exists on this agent.
    pub owned: bool,
    /// Whether the instance runs (its shim may be writing `output.log`).
    pub writing: bool,
    /// Since when the service has been gone, when a sweep noticed it (the marker's time).
    pub orphaned_since: Option<SystemTime>,
    /// Its log files.
    pub files: Vec<LogFile>,
}

impl InstanceLogs {
    /// `service/index`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.service, self.index)
    }

    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }
}

/// What a sweep does; `dir` and `file` index the scanned directories and their files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Note that the logs have no service any more (from now).
    MarkOrphaned { dir: usize },
    /// The service is back: the logs are its own again.
    Unmark { dir: usize },
    /// The service has been gone longer than the retention: delete the logs.
    Expire { dir: usize },
    /// All logs take more than the cap: delete this file, among the oldest.
    OverCap { dir: usize, file: usize },
}

/// What to do with the logs found in `dirs` at `now`. Logs of a removed service expire once
/// both its removal (as marked) and its last write are older than the retention. Then, if all
/// logs still take more than the cap, files are deleted oldest first (by last write; the
/// higher rotation number first among equals) until they fit; the file of an instance that
/// runs is never one of them.
pub fn decide(dirs: &[InstanceLogs], policy: &RetentionPolicy, now: SystemTime) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut expired = vec![false; dirs.len()];
    for (dir, logs) in dirs.iter().enumerate() {
        match (logs.owned, logs.orphaned_since) {
            (true, Some(_)) => actions.push(Action::Unmark { dir }),
            (true, None) => {}
            (false, None) => actions.push(Action::MarkOrphaned { dir }),
            (false, Some(since)) => {
                let last_write = logs.files.iter().map(|f| f.modified).max();
                let quiet_since = last_write.map_or(since, |w| w.max(since));
                if now
                    .duration_since(quiet_since)
                    .is_ok_and(|age| age >= policy.retention)
                {
                    expired[dir] = true;
                    actions.push(Action::Expire { dir });
                }
            }
        }
    }
    let mut total: u64 = dirs
        .iter()
        .zip(&expired)
        .filter(|(_, gone)| !**gone)
        .map(|(logs, _)| logs.bytes())
        .sum();
    if total <= policy.max_total_bytes {
        return actions;
    }
    let mut candidates: Vec<(usize, usize)> = Vec::new();
    for (dir, logs) in dirs.iter().enumerate() {
        if expired[dir] {
            continue;
        }
        for (file, f) in logs.files.iter().enumerate() {
            if f.rotated.is_some() || !logs.writing {
                candidates.push((dir, file));
            }
        }
    }
    candidates.sort_by_key(|&(dir, file)| {
        let f = &dirs[dir].files[file];
        (
            f.modified,
            std::cmp::Reverse(f.rotated.map_or(0, |n| u64::from(n) + 1)),
        )
    });
    for (dir, file) in candidates {
        if total <= policy.max_total_bytes {
            break;
        }
        total -= dirs[dir].files[file].bytes;
        actions.push(Action::OverCap { dir, file });
    }
    actions
}

/// Every instance log directory under `root` (`<service>/<index>/`) with its files. `owned`
/// are the services that exist, `writing` the log directories of their instances.
pub fn scan(
    root: &Path,
    owned: &HashSet<String>,
    writing: &HashSet<PathBuf>,
) -> io::Result<Vec<InstanceLogs>> {
    let mut found = Vec::new();
    let services = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for service in services {
        let service = service?;
        let Ok(name) = service.file_name().into_string() else {
            continue;
        };
        if !service.file_type()?.is_dir() {
            continue;
        }
        for instance in fs::read_dir(service.path())? {
            let instance = instance?;
            let Some(index) = instance
                .file_name()
                .to_str()
                .and_then(|i| i.parse::<u32>().ok())
            else {
                continue;
            };
            if !instance.file_type()?.is_dir() {
                continue;
            }
            let dir = instance.path();
            found.push(InstanceLogs {
                service: name.clone(),
                index,
                owned: owned.contains(&name),
                writing: writing.contains(&dir),
                orphaned_since: modified(&dir.join(ORPHANED_MARKER))?,
                files: log_files(&dir)?,
            });
        }
    }
    Ok(found)
}

/// The time of the last write to `path`; None when it does not exist.
fn modified(path: &Path) -> io::Result<Option<SystemTime>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.modified()?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `output.log` and `output.log.N` in `dir`.
fn log_files(dir: &Path) -> io::Result<Vec<LogFile>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let rotated = if name == LOG_FILE {
            None
        } else {
            match name
                .strip_prefix(LOG_FILE)
                .and_then(|n| n.strip_prefix('.'))
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(n) => Some(n),
                None => continue,
            }
        };
        let meta = match entry.metadata() {
            Ok(meta) => meta,
            // Rotated away or deleted since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        files.push(LogFile {
            rotated,
            bytes: meta.len(),
            modified: meta.modified()?,
        });
    }
    Ok(files)
}

/// What one sweep deleted of one instance's logs, for its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// `service/index`.
    pub instance: String,
    /// Why: the service's retention ended, or the cap was reached.
    pub expired: bool,
    /// The files deleted.
    pub files: Vec<String>,
    /// Their bytes.
    pub bytes: u64,
}

/// Carries out `actions` on the logs under `root` that `dirs` describes. A file already gone
/// counts as deleted; any other failure is logged and the sweep goes on.
pub fn carry_out(root: &Path, dirs: &[InstanceLogs], actions: &[Action]) -> Vec<Deleted> {
    let mut deleted: Vec<Deleted> = Vec::new();
    let dir_of = |logs: &InstanceLogs| root.join(&logs.service).join(logs.index.to_string());
    for action in actions {
        match *action {
            Action::MarkOrphaned { dir } => {
                let marker = dir_of(&dirs[dir]).join(ORPHANED_MARKER);
                if let Err(e) = fs::write(&marker, b"") {
                    tracing::warn!(path = %marker.display(), error = %e, "cannot mark logs as orphaned");
                }
            }
            Action::Unmark { dir } => {
                remove(&dir_of(&dirs[dir]).join(ORPHANED_MARKER));
            }
            Action::Expire { dir } => {
                let logs = &dirs[dir];
                let path = dir_of(logs);
                for file in &logs.files {
                    if remove(&path.join(file.name())) {
                        note(&mut deleted, logs, true, file);
                    }
                }
                remove(&path.join(ORPHANED_MARKER));
                // Only when empty: a file this sweep did not know stays, and so does its dir.
                let _ = fs::remove_dir(&path);
                let _ = fs::remove_dir(root.join(&logs.service));
            }
            Action::OverCap { dir, file } => {
                let logs = &dirs[dir];
                let f = &logs.files[file];
                if remove(&dir_of(logs).join(f.name())) {
                    note(&mut deleted, logs, false, f);
                }
            }
        }
    }
    deleted
}

/// Adds a deleted file to the report of its instance.
fn note(deleted: &mut Vec<Deleted>, logs: &InstanceLogs, expired: bool, file: &LogFile) {
    let instance = logs.id();
    let at = match deleted
        .iter()
        .position(|d| d.instance == instance && d.expired == expired)
    {
        Some(at) => at,
        None => {
            deleted.push(Deleted {
                instance,
                expired,
                files: Vec::new(),
                bytes: 0,
            });
            deleted.len() - 1
        }
    };
    deleted[at].files.push(file.name());
    deleted[at].bytes += file.bytes;
}

/// Deletes a file; true when it is gone.
fn remove(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a log file");
            false
        }
    }
}

/// The event for what a sweep deleted of one instance's logs.
pub fn event(deleted: &Deleted, policy: &RetentionPolicy) -> EventDraft {
    let Deleted {
        instance,
        expired,
        files,
        bytes,
    } = deleted;
    let size = format!("{:.1} MiB", *bytes as f64 / (1024.0 * 1024.0));
    let (kind, severity, message) = if *expired {
        (
            "logs.expired",
            Severity::Info,
            format!(
                "deleted the logs of {instance} ({} files, {size}): its service was removed more than {} ago (logs.retention)",
                files.len(),
                humantime::format_duration(policy.retention)
            ),
        )
    } else {
        (
            "logs.over_cap",
            Severity::Warning,
            format!(
                "deleted {} of {instance} ({size}): all service logs took more than logs.max_total_bytes ({} bytes); the oldest files go first",
                files.join(", "),
                policy.max_total_bytes
            ),
        )
    };
    EventDraft::new(kind, severity, format!("service:{instance}"), message)
        .field("files", files.join(","))
        .field("bytes", bytes.to_string())
}

/// Starts the periodic sweep of the instance logs in `data_dir`; it runs until aborted.
pub fn spawn(
    supervisor: &Arc<Supervisor>,
    journal: &Journal,
    data_dir: &Path,
    policy: RetentionPolicy,
) -> io::Result<JoinHandle<()>> {
    let root = Store::open(data_dir)?.logs_root().to_path_buf();
    let (supervisor, journal) = (supervisor.clone(), journal.clone());
    Ok(tokio::spawn(async move {
        let mut timer = tokio::time::interval(policy.sweep_interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            let mut owned = HashSet::new();
            let mut writing = HashSet::new();
            for service in supervisor.list() {
                if let Ok(dirs) = supervisor.log_dirs(&service.name, 0) {
                    writing.extend(dirs.into_iter().map(|(_, dir)| dir));
                }
                owned.insert(service.name);
            }
            let root = root.clone();
            let journal = journal.clone();
            let swept = tokio::task::spawn_blocking(move || {
                sweep(&root, &owned, &writing, &policy, &journal)
            })
            .await;
            match swept {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "log sweep failed"),
                Err(e) => tracing::warn!(error = %e, "log sweep did not finish"),
            }
        }
    }))
}

/// One sweep: scan, decide, delete, record.
fn sweep(
    root: &Path,
    owned: &HashSet<String>,
    writing: &HashSet<PathBuf>,
    policy: &RetentionPolicy,
    journal: &Journal,
) -> io::Result<()> {
    let dirs = scan(root, owned, writing)?;
    let actions = decide(&dirs, policy, SystemTime::now());
    for deleted in carry_out(root, &dirs, &actions) {
        tracing::info!(instance = %deleted.instance, files = ?deleted.files, bytes = deleted.bytes, expired = deleted.expired, "deleted logs");
        if let Err(e) = journal.append(event(&deleted, policy)) {
            tracing::warn!(error = %e, "cannot record a log deletion");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn at(days_ago: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + 100 * DAY - days_ago * DAY
    }

    fn now() -> SystemTime {
        at(0)
    }

    fn file(rotated: Option<u32>, bytes: u64, days_ago: u32) -> LogFile {
        LogFile {
            rotated,
            bytes,
            modified: at(days_ago),
        }
    }

    fn logs(
        service: &str,
        owned: bool,
        orphaned_days_ago: Option<u32>,
        files: Vec<LogFile>,
    ) -> InstanceLogs {
        InstanceLogs {
            service: service.into(),
            index: 1,
            owned,
            writing: owned,
            orphaned_since: orphaned_days_ago.map(at),
            files,
        }
    }

    fn policy(max_total_bytes: u64) -> RetentionPolicy {
        RetentionPolicy {
            retention: 7 * DAY,
            max_total_bytes,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
        }
    }

    #[test]
    fn removed_services_logs_are_marked_then_expire_after_the_retention() {
        let dirs = vec![
            // Running: nothing to do.
            logs("live", true, None, vec![file(None, 10, 0)]),
            // Back after a removal: the marker goes.
            logs("back", true, Some(9), vec![file(None, 10, 0)]),
            // Just removed: marked now, though its last write is old.
            logs("new-orphan", false, None, vec![file(None, 10, 30)]),
            // Removed 8 days ago, quiet since: expires.
            logs(
                "old-orphan",
                false,
                Some(8),
                vec![file(None, 10, 9), file(Some(1), 10, 10)],
            ),
            // Removed 8 days ago but written to 2 days ago (its shim was slow to stop): kept.
            logs("late-writer", false, Some(8), vec![file(None, 10, 2)]),
            // Removed 6 days ago: kept.
            logs("recent", false, Some(6), vec![file(None, 10, 6)]),
        ];
        assert_eq!(
            decide(&dirs, &policy(u64::MAX), now()),
            vec![
                Action::Unmark { dir: 1 },
                Action::MarkOrphaned { dir: 2 },
                Action::Expire { dir: 3 },
            ]
        );
    }

    #[test]
    fn over_the_cap_the_oldest_files_go_first_but_never_a_file_being_written() {
        let mut idle = logs("idle", true, None, vec![file(None, 100, 50)]);
        idle.writing = false;
        let dirs = vec![
            logs(
                "web",
                true,
                None,
                vec![
                    file(None, 100, 0),
                    file(Some(1), 100, 1),
                    file(Some(2), 100, 3),
                    // Same time as .2: the higher number is the older.
                    file(Some(3), 100, 3),
                ],
            ),
            // A very old file an instance still writes: never deleted.
            logs("quiet", true, None, vec![file(None, 100, 60)]),
            // An instance that does not run: even its output.log may go.
            idle,
            // Expired: its bytes do not count against the cap.
            logs("gone", false, Some(30), vec![file(None, 1000, 30)]),
        ];
        // 600 bytes kept against a cap of 350: the three oldest candidates go.
        assert_eq!(
            decide(&dirs, &policy(350), now()),
            vec![
                Action::Expire { dir: 3 },
                Action::OverCap { dir: 2, file: 0 },
                Action::OverCap { dir: 0, file: 3 },
                Action::OverCap { dir: 0, file: 2 },
            ]
        );
        // Under the cap nothing but the expiry.
        assert_eq!(
            decide(&dirs, &policy(600), now()),
            vec![Action::Expire { dir: 3 }]
        );
        // A cap that cannot be met deletes every candidate and stops there.
        let all = decide(&dirs, &policy(0), now());
        assert_eq!(all.len(), 1 + 4);
        assert!(!all.contains(&Action::OverCap { dir: 0, file: 0 }));
        assert!(!all.contains(&Action::OverCap { dir: 1, file: 0 }));
    }

    #[test]
    fn a_sweep_marks_deletes_and_reports_what_it_deleted() {
        let root = tempfile::tempdir().unwrap();
        let write = |service: &str, names: &[&str]| {
            let dir = root.path().join(service).join("1");
            fs::create_dir_all(&dir).unwrap();
            for name in names {
                fs::write(dir.join(name), vec![b'x'; 100]).unwrap();
            }
            dir
        };
        let web = write(
            "web",
            &["output.log", "output.log.1", "output.log.2", "notes.txt"],
        );
        write("gone", &["output.log", "output.log.1"]);
        let owned: HashSet<String> = ["web".to_string()].into();
        let writing: HashSet<PathBuf> = [web.clone()].into();

        // First sweep: "gone" is marked; nothing is deleted (no cap reached).
        let dirs = scan(root.path(), &owned, &writing).unwrap();
        assert_eq!(dirs.len(), 2);
        let web_logs = dirs.iter().find(|d| d.service == "web").unwrap();
        assert_eq!(web_logs.files.len(), 3, "only log files count");
        assert!(web_logs.writing);
        let actions = decide(&dirs, &policy(u64::MAX), SystemTime::now());
        assert!(carry_out(root.path(), &dirs, &actions).is_empty());
        assert!(root.path().join("gone/1").join(ORPHANED_MARKER).exists());

        // Later, past the retention and over a cap of 250 bytes.
        let dirs = scan(root.path(), &owned, &writing).unwrap();
        let later = SystemTime::now() + 8 * DAY;
        let actions = decide(&dirs, &policy(250), later);
        let mut deleted = carry_out(root.path(), &dirs, &actions);
        deleted.sort_by(|a, b| a.instance.cmp(&b.instance));
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        assert_eq!(deleted[0].instance, "gone/1");
        assert!(deleted[0].expired);
        assert_eq!(deleted[0].bytes, 200);
        assert!(
            !root.path().join("gone").exists(),
            "the emptied dirs go too"
        );
        assert_eq!(deleted[1].instance, "web/1");
        assert!(!deleted[1].expired);
        assert_eq!(deleted[1].files.len(), 1);
        assert!(web.join("output.log").exists() && web.join("notes.txt").exists());

        let event = event(&deleted[1], &policy(250));
        assert_eq!(event.kind, "logs.over_cap");
        assert_eq!(event.subject, "service:web/1");
        assert!(
            event.message.contains(&deleted[1].files[0]),
            "{}",
            event.message
        );
        let event = super::event(&deleted[0], &policy(250));
        assert_eq!(event.kind, "logs.expired");
        assert!(
            event
                .message
                .starts_with("deleted the logs of gone/1 (2 files"),
            "{}",
            event.message
        );
    }
}
