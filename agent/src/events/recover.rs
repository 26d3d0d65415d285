//! The journal is history: one that cannot be opened never stops the agent (under systemd a
//! failing start is a crash loop of the node agent, and supervision matters more than the
//! record of it). A journal that cannot be opened, or that makes the database library panic,
//! is moved aside as `events.redb.damaged-<unix seconds>` and a fresh one is started; the
//! caller records, as the new journal's first event, what was found and where the old file is.

use super::journal::{Journal, JournalError, JournalLimits};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

/// What opening the journal found, for the first event of the journal that was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The file was there but empty (0 bytes): its history is gone.
    Empty,
    /// The file could not be opened (`reason`) and was moved to `moved_to`.
    Damaged { reason: String, moved_to: PathBuf },
}

impl Finding {
    /// One sentence for the event and the log.
    pub fn describe(&self, path: &Path) -> String {
        match self {
            Finding::Empty => format!(
                "the event journal {} was empty (0 bytes): earlier events are lost; a new journal was started",
                path.display()
            ),
            Finding::Damaged { reason, moved_to } => format!(
                "the event journal {} could not be opened ({reason}); it was moved to {} and a new journal was started",
                path.display(),
                moved_to.display()
            ),
        }
    }
}

/// Opens the journal at `path`, recovering from a damaged file as described above. Fails
/// only when no journal can be had at all (the directory cannot be created, or the damaged
/// file cannot be moved aside).
pub fn open_journal(
    path: &Path,
    node: &str,
    limits: JournalLimits,
) -> Result<(Journal, Option<Finding>), JournalError> {
    let was_empty = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
    let reason = match attempt(path, node, limits) {
        Ok(journal) => return Ok((journal, was_empty.then_some(Finding::Empty))),
        Err(Failure::Error(e @ JournalError::CreateDir { .. })) => return Err(e),
        Err(failure) => failure.to_string(),
    };
    let moved_to = damaged_name(path, unix_secs());
    std::fs::rename(path, &moved_to).map_err(|source| JournalError::MoveAside {
        path: path.to_path_buf(),
        reason: reason.clone(),
        source,
    })?;
    tracing::error!(path = %path.display(), moved_to = %moved_to.display(), %reason, "the event journal is damaged; starting a new one");
    let journal = attempt(path, node, limits).map_err(|failure| match failure {
        Failure::Error(e) => e,
        Failure::Panic(message) => JournalError::Unusable { reason: message },
    })?;
    Ok((journal, Some(Finding::Damaged { reason, moved_to })))
}

/// Where a damaged journal goes: beside it, named by the time it was found.
pub fn damaged_name(path: &Path, unix_secs: u64) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{unix_secs}"));
    path.with_file_name(name)
}

/// Why one attempt to open failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Error(JournalError),
    #[error("the database library panicked reading it: {0}")]
    Panic(String),
}

fn attempt(path: &Path, node: &str, limits: JournalLimits) -> Result<Journal, Failure> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| Journal::open(path, node, limits))) {
        Ok(opened) => opened.map_err(Failure::Error),
        Err(panic) => Err(Failure::Panic(
            panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string()),
        )),
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    fn limits() -> JournalLimits {
        JournalLimits::default()
    }

    fn all() -> crate::events::journal::EventQuery {
        crate::events::journal::EventQuery {
            limit: 1000,
            ..Default::default()
        }
    }

    /// A journal with a few events, closed.
    fn journal_with_events(path: &Path) {
        let journal = Journal::open(path, "n", limits()).unwrap();
        for i in 0..50 {
            let draft = crate::events::journal::EventDraft::new(
                "test.event",
                strata_proto::v1::Severity::Info,
                "test",
                format!("event {i} {}", "x".repeat(200)),
            );
            journal.append(draft).unwrap();
        }
        journal.close();
    }

    fn overwrite(path: &Path, at: u64, len: usize) {
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&vec![0xA5; len]).unwrap();
        file.sync_all().unwrap();
    }

    fn assert_recovered(dir: &Path, path: &Path) {
        let (journal, finding) = open_journal(path, "n", limits()).unwrap();
        let Some(Finding::Damaged { moved_to, .. }) = finding else {
            panic!("expected a damaged journal, got {finding:?}");
        };
        assert!(moved_to.exists(), "the damaged file is kept");
        assert!(moved_to.starts_with(dir));
        assert!(journal.query(&all()).unwrap().is_empty(), "a fresh journal");
    }

    #[test]
    fn a_healthy_journal_opens_with_nothing_to_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        journal_with_events(&path);
        let (journal, finding) = open_journal(&path, "n", limits()).unwrap();
        assert_eq!(finding, None);
        assert_eq!(journal.query(&all()).unwrap().len(), 50);
    }

    #[test]
    fn an_empty_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        std::fs::write(&path, b"").unwrap();
        let (_journal, finding) = open_journal(&path, "n", limits()).unwrap();
        assert_eq!(finding, Some(Finding::Empty));
    }

    #[test]
    fn a_damaged_header_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        journal_with_events(&path);
        overwrite(&path, 0, 512);
        assert_recovered(dir.path(), &path);
    }

    #[test]
    fn damaged_pages_are_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.redb");
        journal_with_events(&path);
        let len = std::fs::metadata(&path).unwrap().len();
        overwrite(&path, 4096, (len - 4096) as usize);
        assert_recovered(dir.path(), &path);
    }

    #[test]
    fn the_damaged_name_keeps_the_file_name_and_the_time() {
        assert_eq!(
            damaged_name(Path::new("/d/events.redb"), 17),
            PathBuf::from("/d/events.redb.damaged-17")
        );
    }
}
