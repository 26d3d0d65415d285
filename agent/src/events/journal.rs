//! The durable event journal: every subsystem (alerts, the kernel log watch, the
//! supervisor, the API's audit trail) records what happened here, so `QueryEvents` can
//! answer after an agent restart and `WatchEvents` can stream events as they are written.
//!
//! Events are prost-encoded `Event` messages in a redb table keyed by their sequence number.
//! Each append is one committed (fsynced) write transaction, then a broadcast to live
//! subscribers. The file stays bounded: the oldest events are pruned by count and by age.
//!
//! redb calls block, but only for the few milliseconds of one small transaction. Async code
//! may call `append` and `query` directly for single events; bulk work (large queries,
//! `prune` of many events) belongs in `tokio::task::spawn_blocking`. `Journal` is a cheap
//! `Clone` handle, so it can be moved into such closures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use strata_proto::v1::{Event, Severity};
use tokio::sync::broadcast;
use tracing::{debug, warn};

/// Events by sequence number, prost-encoded.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// Small counters that must survive restarts even when every event was pruned.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
/// Events a query returns when it names no limit.
pub const DEFAULT_QUERY_LIMIT: usize = 1_000;
/// The most events one query returns, to bound the work and the reply.
pub const MAX_QUERY_LIMIT: usize = 10_000;
/// Appends between two automatic prunes.
const PRUNE_EVERY: u64 = 256;
/// Live subscribers lagging more than this many events lose the oldest ones.
const BROADCAST_CAPACITY: usize = 1_024;

/// How much history the journal keeps, so its file stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// The most events kept; older ones are pruned first.
    pub max_events: usize,
    /// Events older than this are pruned.
    pub max_age: Duration,
}

impl Default for JournalLimits {
    fn default() -> JournalLimits {
        JournalLimits {
            max_events: 100_000,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a caller knows about an event; the journal adds the sequence number, the node and,
/// when not given, the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    /// Dotted kind: "alert.firing", "kernel.oom_kill", ...
    pub kind: String,
    /// How much an operator should care.
    pub severity: Severity,
    /// What it is about: "filesystem:/var", "process:stress", ...
    pub subject: String,
    /// One line for people.
    pub message: String,
    /// Structured details for scripts.
    pub fields: HashMap<String, String>,
    /// When it happened; `None` means when it is appended.
    pub time_unix_ms: Option<i64>,
}

impl EventDraft {
    /// A draft without fields, timed at append.
    pub fn new(
        kind: impl Into<String>,
        severity: Severity,
        subject: impl Into<String>,
        message: impl Into<String>,
    ) -> EventDraft {
        EventDraft {
            kind: kind.into(),
            severity,
            subject: subject.into(),
            message: message.into(),
            fields: HashMap::new(),
            time_unix_ms: None,
        }
    }

    /// Adds one structured field.
    pub fn field(mut self, key: impl Into<String>, value: impl Into<String>) -> EventDraft {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// Sets the time the event happened.
    pub fn at(mut self, time_unix_ms: i64) -> EventDraft {
        self.time_unix_ms = Some(time_unix_ms);
        self
    }
}

/// A journal query, the local form of `QueryEventsRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only events at or after this time; 0 means all.
    pub since_unix_ms: i64,
    /// Only events at or above this severity; `Unspecified` means all.
    pub min_severity: Severity,
    /// Only kinds starting with this ("alert" matches "alert.firing"); empty means all.
    pub kind_prefix: String,
    /// Only events of this node; empty means all.
    pub node: String,
    /// The newest N matching events; 0 means `DEFAULT_QUERY_LIMIT`, capped at
    /// `MAX_QUERY_LIMIT`.
    pub limit: usize,
}

impl EventQuery {
    /// Whether an event passes the filters (the limit aside); also used by live watchers.
    pub fn matches(&self, event: &Event) -> bool {
        event.time_unix_ms >= self.since_unix_ms
            && event.severity >= self.min_severity as i32
            && event.kind.starts_with(&self.kind_prefix)
            && (self.node.is_empty() || event.node == self.node)
    }
}

/// Why the journal could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The directory for the database file could not be created.
    #[error("cannot create the directory of the event journal {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database file could not be opened or created.
    #[error("cannot open the event journal {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: redb::DatabaseError,
    },
    /// A journal that could not be opened could not be moved aside either.
    #[error("the event journal {path} is damaged ({reason}) and cannot be moved aside: {source}")]
    MoveAside {
        /// The database file.
        path: PathBuf,
        /// Why it could not be opened.
        reason: String,
        /// Why it could not be moved.
        source: std::io::Error,
    },
    /// Even a fresh journal could not be opened.
    #[error("a new event journal cannot be opened: {reason}")]
    Unusable {
        /// What went wrong.
        reason: String,
    },
    /// The journal was closed for good: the agent handed the data dir to its successor.
    #[error("the event journal is closed (this agent handed over to its successor)")]
    Closed,
    /// A database operation failed.
    #[error("event journal: cannot {action}: {source}")]
    Database {
        /// What the journal was doing.
        action: &'static str,
        /// The cause.
        source: redb::Error,
    },
}

fn db_err<E: Into<redb::Error>>(action: &'static str) -> impl FnOnce(E) -> JournalError {
    move |e| JournalError::Database {
        action,
        source: e.into(),
    }
}

struct Inner {
    /// `None` only while it is being reopened after an I/O error.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    node: RwLock<String>,
    /// The next sequence number; held while writing so seq order is commit order and
    /// broadcast order.
    next_seq: Mutex<u64>,
    limits: JournalLimits,
    events: broadcast::Sender<Event>,
    /// Set by [`Journal::close`]: the database is never opened again by this process.
    closed: AtomicBool,
}

/// A handle on the event journal; clones share one database and one broadcast channel.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Journal {
    /// Opens (or creates) the journal at `path`, continuing its sequence numbers, and
    /// prunes what exceeds `limits`. Events get `node` as their node name.
    pub fn open(
        path: &Path,
        node: impl Into<String>,
        limits: JournalLimits,
    ) -> Result<Journal, JournalError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|source| JournalError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let txn = db.begin_write().map_err(db_err("begin a write"))?;
        let next_seq = {
            let events = txn.open_table(EVENTS).map_err(db_err("open the events"))?;
            let meta = txn
                .open_table(META)
                .map_err(db_err("open the meta table"))?;
            let after_last = events
                .last()
                .map_err(db_err("read the newest event"))?
                .map_or(1, |(seq, _)| seq.value() + 1);
            let stored = meta
                .get(NEXT_SEQ)
                .map_err(db_err("read the next sequence number"))?
                .map_or(1, |v| v.value());
            after_last.max(stored)
        };
        txn.commit().map_err(db_err("commit the tables"))?;
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let journal = Journal {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                path: path.to_path_buf(),
                node: RwLock::new(node.into()),
                next_seq: Mutex::new(next_seq),
                limits,
                events,
                closed: AtomicBool::new(false),
            }),
        };
        journal.prune(now_unix_ms())?;
        Ok(journal)
    }

    /// Runs `f` on the database. After a failed write (a full disk), redb refuses every
    /// transaction until the database is reopened; then it is reopened (which repairs it)
    /// and `f` tried once more, so the journal works again as soon as the disk does.
    fn with_db<T>(
        &self,
        f: impl Fn(&Database) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        {
            let db = self.inner.db.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(db) = db.as_ref() {
                match f(db) {
                    Err(JournalError::Database {
                        source: redb::Error::PreviousIo,
                        ..
                    }) => {}
                    other => return other,
                }
            }
        }
        let mut slot = self
            .inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // redb refuses a second handle on one file: close the broken one first.
        *slot = None;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(JournalError::Closed);
        }
        let db = Database::create(&self.inner.path).map_err(|source| JournalError::Open {
            path: self.inner.path.clone(),
            source,
        })?;
        warn!("reopened the event journal after an I/O error");
        let result = f(&db);
        *slot = Some(db);
        result
    }

    /// Closes the database file for good, so that another process (the agent this one hands
    /// over to) can open it; every later append or query fails with [`JournalError::Closed`].
    /// Waits for a transaction in progress to end.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        *self
            .inner
            .db
            .write()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Changes the node name stamped on events appended from now on.
    pub fn set_node(&self, node: impl Into<String>) {
        *self
            .inner
            .node
            .write()
            .unwrap_or_else(PoisonError::into_inner) = node.into();
    }

    /// Writes an event durably, then publishes it to subscribers; returns it as stored.
    pub fn append(&self, draft: EventDraft) -> Result<Event, JournalError> {
        let node = self
            .inner
            .node
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut next_seq = self
            .inner
            .next_seq
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let event = Event {
            seq: *next_seq,
            time_unix_ms: draft.time_unix_ms.unwrap_or_else(now_unix_ms),
            node,
            kind: draft.kind,
            severity: draft.severity as i32,
            subject: draft.subject,
            message: draft.message,
            fields: draft.fields,
        };
        let txn = self.with_db(|db| db.begin_write().map_err(db_err("begin a write")))?;
        {
            let mut events = txn.open_table(EVENTS).map_err(db_err("open the events"))?;
            events
                .insert(event.seq, event.encode_to_vec().as_slice())
                .map_err(db_err("insert an event"))?;
            let mut meta = txn
                .open_table(META)
                .map_err(db_err("open the meta table"))?;
            meta.insert(NEXT_SEQ, event.seq + 1)
                .map_err(db_err("store the next sequence number"))?;
        }
        txn.commit().map_err(db_err("commit an event"))?;
        *next_seq += 1;
        // No subscribers is fine: the event is in the journal.
        let _ = self.inner.events.send(event.clone());
        drop(next_seq);
        if event.seq.is_multiple_of(PRUNE_EVERY) {
            self.prune(event.time_unix_ms.max(now_unix_ms()))?;
        }
        Ok(event)
    }

    /// Every event appended from now on; a receiver that lags more than 1024 events gets
    /// `RecvError::Lagged` and can catch up with `query`.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The newest `limit` events matching the query, oldest first. The scan walks back from
    /// the newest event, so its cost is bounded by the journal's `max_events`.
    pub fn query(&self, query: &EventQuery) -> Result<Vec<Event>, JournalError> {
        let limit = match query.limit {
            0 => DEFAULT_QUERY_LIMIT,
            n => n.min(MAX_QUERY_LIMIT),
        };
        let txn = self.with_db(|db| db.begin_read().map_err(db_err("begin a read")))?;
        let table = txn.open_table(EVENTS).map_err(db_err("open the events"))?;
        let mut found = Vec::new();
        for entry in table.iter().map_err(db_err("scan the events"))?.rev() {
            let (seq, bytes) = entry.map_err(db_err("read an event"))?;
            match Event::decode(bytes.value()) {
                Ok(event) if query.matches(&event) => {
                    found.push(event);
                    if found.len() == limit {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(seq = seq.value(), error = %e, "skipping an undecodable event in the journal")
                }
            }
        }
        found.reverse();
        Ok(found)
    }

    /// Removes the events beyond `max_events` and those older than `max_age` before
    /// `now_unix_ms`; returns how many were removed. Runs on open and every few hundred
    /// appends; the agent may also call it from a timer.
    pub fn prune(&self, now_unix_ms: i64) -> Result<u64, JournalError> {
        let limits = self.inner.limits;
        let max_age_ms = i64::try_from(limits.max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_unix_ms.saturating_sub(max_age_ms);
        let txn = self.with_db(|db| db.begin_write().map_err(db_err("begin a write")))?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(EVENTS).map_err(db_err("open the events"))?;
            let len = table.len().map_err(db_err("count the events"))?;
            let max = u64::try_from(limits.max_events).unwrap_or(u64::MAX);
            let mut excess = len.saturating_sub(max);
            // Events are appended in time order (up to callers' own clocks), so the old
            // ones are at the front: stop at the first one that is young enough.
            loop {
                let Some((_, bytes)) = table.first().map_err(db_err("read the oldest event"))?
                else {
                    break;
                };
                let expired = excess > 0
                    || Event::decode(bytes.value()).map_or(true, |e| e.time_unix_ms < cutoff);
                drop(bytes);
                if !expired {
                    break;
                }
                table.pop_first().map_err(db_err("remove an old event"))?;
                excess = excess.saturating_sub(1);
                removed += 1;
            }
        }
        txn.commit().map_err(db_err("commit a prune"))?;
        if removed > 0 {
            debug!(removed, "pruned the event journal");
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &tempfile::TempDir, limits: JournalLimits) -> Journal {
        match Journal::open(&dir.path().join("journal.redb"), "node-a", limits) {
            Ok(j) => j,
            Err(e) => panic!("open: {e}"),
        }
    }

    fn append(j: &Journal, kind: &str, severity: Severity, time: i64) -> Event {
        match j.append(EventDraft::new(kind, severity, "memory", "m").at(time)) {
            Ok(e) => e,
            Err(e) => panic!("append: {e}"),
        }
    }

    fn query(j: &Journal, q: EventQuery) -> Vec<Event> {
        match j.query(&q) {
            Ok(events) => events,
            Err(e) => panic!("query: {e}"),
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn a_full_disk_fails_appends_without_harm_and_appends_work_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let Some(_tmpfs) = strata_tests::Tmpfs::mount(dir.path(), "4m") else {
            return;
        };
        let j = Journal::open(
            &dir.path().join("events.redb"),
            "n1",
            JournalLimits::default(),
        )
        .unwrap();
        append(&j, "before", Severity::Info, 1);
        let filler = dir.path().join("filler");
        let free = rustix::fs::statvfs(dir.path()).unwrap();
        let _ = std::fs::write(&filler, vec![0u8; (free.f_bavail * free.f_frsize) as usize]);
        let big = "x".repeat(64 * 1024);
        let mut failed = false;
        for _ in 0..200 {
            let draft = EventDraft::new("big", Severity::Info, "test", big.clone());
            if j.append(draft).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the disk never filled");
        std::fs::remove_file(&filler).unwrap();
        let after = j.append(EventDraft::new(
            "after",
            Severity::Info,
            "test",
            "space is back",
        ));
        assert!(after.is_ok(), "{after:?}");
        let kinds: Vec<String> = query(&j, EventQuery::default())
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| k != "big")
            .collect();
        assert_eq!(kinds, ["before", "after"]);
    }

    #[test]
    fn a_closed_journal_lets_another_handle_open_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(&dir, JournalLimits::default());
        append(&first, "a", Severity::Info, 1);
        first.close();
        assert!(matches!(
            first.append(EventDraft::new("b", Severity::Info, "s", "m")),
            Err(JournalError::Closed)
        ));
        let second = open(&dir, JournalLimits::default());
        assert_eq!(append(&second, "c", Severity::Info, 2).seq, 2);
    }

    #[test]
    fn append_assigns_seq_node_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, JournalLimits::default());
        let before = now_unix_ms();
        let e = j
            .append(
                EventDraft::new("kernel.oom_kill", Severity::Critical, "process:x", "killed")
                    .field("pid", "12"),
            )
            .unwrap();
        assert_eq!((e.seq, e.node.as_str()), (1, "node-a"));
        assert!(e.time_unix_ms >= before && e.time_unix_ms <= now_unix_ms());
        assert_eq!(e.fields["pid"], "12");
        j.set_node("node-b");
        assert_eq!(append(&j, "x", Severity::Info, 5).node, "node-b");
        let stored = query(&j, EventQuery::default());
        assert_eq!(stored[0], e);
    }

    #[test]
    fn query_filters_and_returns_the_newest_in_ascending_order() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, JournalLimits::default());
        append(&j, "alert.firing", Severity::Warning, 1_000); // 1
        append(&j, "alert.resolved", Severity::Info, 2_000); // 2
        append(&j, "kernel.oom_kill", Severity::Critical, 3_000); // 3
        append(&j, "alerts_other", Severity::Critical, 4_000); // 4
        append(&j, "alert.firing", Severity::Critical, 5_000); // 5

        let all = query(&j, EventQuery::default());
        assert_eq!(seqs(&all), vec![1, 2, 3, 4, 5]);
        let since = query(
            &j,
            EventQuery {
                since_unix_ms: 3_000,
                ..Default::default()
            },
        );
        assert_eq!(seqs(&since), vec![3, 4, 5]);
        let severe = query(
            &j,
            EventQuery {
                min_severity: Severity::Warning,
                ..Default::default()
            },
        );
        assert_eq!(seqs(&severe), vec![1, 3, 4, 5]);
        let alerts = query(
            &j,
            EventQuery {
                kind_prefix: "alert.".into(),
                ..Default::default()
            },
        );
        assert_eq!(seqs(&alerts), vec![1, 2, 5]);
        let newest = query(
            &j,
            EventQuery {
                limit: 2,
                ..Default::default()
            },
        );
        assert_eq!(seqs(&newest), vec![4, 5]);
        let combined = query(
            &j,
            EventQuery {
                kind_prefix: "alert".into(),
                min_severity: Severity::Critical,
                limit: 1,
                ..Default::default()
            },
        );
        assert_eq!(seqs(&combined), vec![5]);
        let other_node = query(
            &j,
            EventQuery {
                node: "node-z".into(),
                ..Default::default()
            },
        );
        assert!(other_node.is_empty());
    }

    #[test]
    fn events_and_seq_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = open(&dir, JournalLimits::default());
            append(&j, "a", Severity::Info, now_unix_ms());
            append(&j, "b", Severity::Info, now_unix_ms());
        }
        let j = open(&dir, JournalLimits::default());
        assert_eq!(append(&j, "c", Severity::Info, now_unix_ms()).seq, 3);
        let kinds: Vec<String> = query(&j, EventQuery::default())
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec!["a", "b", "c"]);
    }

    #[test]
    fn seq_continues_even_when_everything_was_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_events: 10,
            max_age: Duration::from_secs(60),
        };
        {
            let j = open(&dir, limits);
            append(&j, "old", Severity::Info, 1_000);
            append(&j, "old", Severity::Info, 2_000);
        }
        // Reopening prunes both (they are decades old); numbering must not restart.
        let j = open(&dir, limits);
        assert!(query(&j, EventQuery::default()).is_empty());
        assert_eq!(append(&j, "new", Severity::Info, now_unix_ms()).seq, 3);
    }

    #[test]
    fn prune_by_count_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(
            &dir,
            JournalLimits {
                max_events: 5,
                max_age: Duration::from_secs(3600),
            },
        );
        let now = now_unix_ms();
        for _ in 0..8 {
            append(&j, "x", Severity::Info, now);
        }
        assert_eq!(j.prune(now).unwrap(), 3);
        assert_eq!(seqs(&query(&j, EventQuery::default())), vec![4, 5, 6, 7, 8]);
    }

    #[test]
    fn prune_runs_by_itself_while_appending() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(
            &dir,
            JournalLimits {
                max_events: 10,
                max_age: Duration::from_secs(3600),
            },
        );
        let now = now_unix_ms();
        for _ in 0..PRUNE_EVERY {
            append(&j, "x", Severity::Info, now);
        }
        let kept = query(&j, EventQuery::default());
        assert_eq!(kept.len(), 10);
        assert_eq!(kept.last().map(|e| e.seq), Some(PRUNE_EVERY));
    }

    #[test]
    fn prune_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(
            &dir,
            JournalLimits {
                max_events: 100,
                max_age: Duration::from_secs(60),
            },
        );
        let now = now_unix_ms();
        append(&j, "old", Severity::Info, now - 120_000);
        append(&j, "old", Severity::Info, now - 61_000);
        append(&j, "young", Severity::Info, now - 30_000);
        append(&j, "new", Severity::Info, now);
        assert_eq!(j.prune(now).unwrap(), 2);
        let kinds: Vec<String> = query(&j, EventQuery::default())
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, vec!["young", "new"]);
        assert_eq!(j.prune(now).unwrap(), 0);
    }

    #[tokio::test]
    async fn subscribers_receive_appended_events() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(&dir, JournalLimits::default());
        let mut rx = j.subscribe();
        let writer = j.clone();
        let appended = tokio::task::spawn_blocking(move || {
            writer.append(EventDraft::new(
                "alert.firing",
                Severity::Warning,
                "load",
                "high load",
            ))
        })
        .await
        .unwrap()
        .unwrap();
        let received = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(received, appended);
        assert_eq!(received.subject, "load");
    }
}
