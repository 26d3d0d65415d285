//! One agent per data dir. `strata-agent run` holds an exclusive lock on
//! `<data dir>/agent.lock` for its whole life, and `strata-agent stop-services` takes the same
//! lock, so it never stops instances under a running agent (which would restart them) and no
//! agent starts while it works. The kernel releases the lock when its holder exits, however
//! it exits (SIGKILL included), so a killed agent never leaves a stale lock behind.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// File name of the lock inside the data dir.
pub const LOCK_FILE: &str = "agent.lock";

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Why the data dir could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock: an agent runs on this data dir (or a `stop-services`).
    #[error("{} is in use by {}: it holds {}", dir.display(), holder(*pid), path.display())]
    Held {
        dir: PathBuf,
        path: PathBuf,
        /// The holder's pid, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The lock file cannot be opened or locked.
    #[error("cannot lock {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("process {pid} (an agent, or a stop-services)"),
        None => "another process (an agent, or a stop-services)".to_string(),
    }
}

impl DataDirLock {
    /// Takes the lock of `data_dir` without waiting, and writes this process's pid into the
    /// lock file for whoever finds it held.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        // Opened, never replaced: the lock belongs to this file, so the usual write-and-rename
        // would break it. Its content (a pid) only informs, so a torn write does no harm.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: data_dir.to_path_buf(),
                    path,
                    pid: text.trim().parse().ok(),
                });
            }
            Err(e) => return Err(io_error(e.into())),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(io_error)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        // A process that a parallel test forks shares the descriptor until it execs (which
        // closes it): give that a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = DataDirLock::acquire(dir.path()) {
            assert!(std::time::Instant::now() < deadline, "{e}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_missing_data_dir_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            DataDirLock::acquire(&missing),
            Err(LockError::Io { .. })
        ));
    }
}
