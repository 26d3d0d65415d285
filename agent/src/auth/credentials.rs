//! Failing closed: once an agent has had credentials (a token in `tokens.toml`, a cluster-wide
//! token, or TLS client authentication), a marker in its data dir says so, and from then on a
//! missing or unreadable `tokens.toml` refuses every token and every anonymous caller instead
//! of opening the agent. Only `strata-agent token reset` (local, with write access to the data
//! dir) removes the marker.

use super::tokens::{Stamp, stamp_of};
use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The marker's name inside the data dir.
pub const MARKER_FILE: &str = "credentials.seen";

/// What the marker remembers: that the agent has had credentials, and whether `tokens.toml`
/// was among them (then its absence is damage, not "no tokens").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    /// `tokens.toml` held tokens once.
    #[serde(default)]
    pub tokens_file: bool,
    /// When the agent first had credentials (Unix ms).
    #[serde(default)]
    pub since_unix_ms: i64,
}

/// The marker file of a data dir.
#[derive(Debug)]
pub struct MarkerFile {
    path: PathBuf,
    /// The marker as last read, with the file's stamp then: every API call asks, and the file
    /// is read again only when it changed (`token reset` from another process included).
    cached: Mutex<Option<(Stamp, Option<Marker>)>>,
}

impl MarkerFile {
    /// The marker in `data_dir`.
    pub fn in_dir(data_dir: &Path) -> MarkerFile {
        MarkerFile {
            path: data_dir.join(MARKER_FILE),
            cached: Mutex::new(None),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The marker; `None` when the agent never had credentials. A marker that is there but
    /// cannot be read counts as one that says everything (fail closed).
    pub fn read(&self) -> Option<Marker> {
        let Ok(stamp) = stamp_of(&self.path) else {
            return Some(Marker {
                tokens_file: true,
                since_unix_ms: 0,
            });
        };
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((held, marker)) = &*cached
            && *held == stamp
        {
            return marker.clone();
        }
        let marker = self.read_file();
        *cached = Some((stamp, marker.clone()));
        marker
    }

    fn read_file(&self) -> Option<Marker> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Some(toml::from_str(&text).unwrap_or(Marker {
                tokens_file: true,
                since_unix_ms: 0,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => Some(Marker {
                tokens_file: true,
                since_unix_ms: 0,
            }),
        }
    }

    /// Records that the agent has credentials (and that `tokens.toml` held some, with
    /// `tokens_file`); writes only when that is news. Atomic: write, fsync, rename.
    pub fn note(&self, tokens_file: bool) -> std::io::Result<()> {
        let held = self.read();
        if held.as_ref().is_some_and(|m| m.tokens_file || !tokens_file) {
            return Ok(());
        }
        let marker = Marker {
            tokens_file,
            since_unix_ms: held
                .map(|m| m.since_unix_ms)
                .filter(|t| *t > 0)
                .unwrap_or_else(crate::state::unix_now_ms),
        };
        let text = toml::to_string(&marker).map_err(std::io::Error::other)?;
        let text = format!(
            "# This agent has had API credentials: a missing or unreadable tokens.toml now refuses\n\
             # every token and anonymous caller. `strata-agent token reset` (as root) removes this.\n{text}"
        );
        write_atomic(&self.path, text.as_bytes())
    }

    /// Removes the marker; whether there was one.
    pub fn remove(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// What the agent found in `tokens.toml` at a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalFile {
    /// There is no file.
    Missing,
    /// The file is there but cannot be read or parsed: why.
    Unreadable(String),
    /// The file is there with this many tokens.
    Tokens(usize),
}

/// The state of the agent's credentials, decided from what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Callers must bring credentials (no anonymous admin).
    pub required: bool,
    /// Tokens cannot be checked, so every token is refused: why.
    pub damaged: Option<String>,
    /// The marker must be written: credentials exist and it does not say so yet (with
    /// whether `tokens.toml` holds some).
    pub note: Option<bool>,
}

/// Decides the credentials state: pure, so tests reach every case.
pub fn decide(
    marker: Option<&Marker>,
    local: &LocalFile,
    tokens_path: &Path,
    cluster_tokens: usize,
    certificates: bool,
) -> Verdict {
    let local_tokens = matches!(local, LocalFile::Tokens(n) if *n > 0);
    let damaged = match local {
        LocalFile::Unreadable(why) => Some(why.clone()),
        LocalFile::Missing if marker.is_some_and(|m| m.tokens_file) => Some(format!(
            "{} is missing, but this agent has had tokens there",
            tokens_path.display()
        )),
        LocalFile::Missing | LocalFile::Tokens(_) => None,
    };
    let has = local_tokens || cluster_tokens > 0 || certificates;
    let note = match marker {
        _ if !has => None,
        None => Some(local_tokens),
        Some(m) if local_tokens && !m.tokens_file => Some(true),
        Some(_) => None,
    };
    Verdict {
        required: has || marker.is_some() || damaged.is_some(),
        damaged,
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/data/tokens.toml";

    fn verdict(marker: Option<Marker>, local: LocalFile, cluster: usize, certs: bool) -> Verdict {
        decide(marker.as_ref(), &local, Path::new(PATH), cluster, certs)
    }

    fn marked(tokens_file: bool) -> Option<Marker> {
        Some(Marker {
            tokens_file,
            since_unix_ms: 1,
        })
    }

    #[test]
    fn an_agent_that_never_had_credentials_is_open() {
        let v = verdict(None, LocalFile::Missing, 0, false);
        assert_eq!((v.required, v.damaged, v.note), (false, None, None));
        let v = verdict(None, LocalFile::Tokens(0), 0, false);
        assert!(!v.required);
    }

    #[test]
    fn the_first_credential_closes_it_and_is_remembered() {
        let v = verdict(None, LocalFile::Tokens(1), 0, false);
        assert_eq!((v.required, v.note), (true, Some(true)));
        let v = verdict(None, LocalFile::Missing, 2, false);
        assert_eq!((v.required, v.note), (true, Some(false)));
        let v = verdict(None, LocalFile::Missing, 0, true);
        assert_eq!((v.required, v.note), (true, Some(false)));
        let v = verdict(marked(false), LocalFile::Tokens(1), 0, false);
        assert_eq!(v.note, Some(true), "the marker learns about tokens.toml");
        let v = verdict(marked(true), LocalFile::Tokens(1), 0, false);
        assert_eq!(v.note, None, "written once");
    }

    #[test]
    fn a_missing_or_broken_file_after_tokens_refuses_everything() {
        let v = verdict(marked(true), LocalFile::Missing, 0, false);
        assert!(v.required);
        assert!(v.damaged.unwrap().contains("/data/tokens.toml is missing"));
        let v = verdict(None, LocalFile::Unreadable("bad toml".into()), 0, false);
        assert_eq!((v.required, v.damaged.as_deref()), (true, Some("bad toml")));
        let v = verdict(marked(true), LocalFile::Tokens(0), 0, false);
        assert_eq!((v.required, v.damaged), (true, None), "all revoked: closed");
    }

    #[test]
    fn without_tokens_toml_ever_cluster_tokens_work_and_it_stays_closed() {
        let v = verdict(marked(false), LocalFile::Missing, 0, false);
        assert_eq!((v.required, v.damaged), (true, None));
    }

    #[test]
    fn the_marker_is_written_atomically_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = MarkerFile::in_dir(dir.path());
        assert_eq!(marker.read(), None);
        marker.note(false).unwrap();
        assert!(!marker.read().unwrap().tokens_file);
        marker.note(true).unwrap();
        assert!(marker.read().unwrap().tokens_file);
        std::fs::write(marker.path(), "not = [toml").unwrap();
        assert!(
            marker.read().unwrap().tokens_file,
            "unreadable: fail closed"
        );
        assert!(marker.remove().unwrap());
        assert!(!marker.remove().unwrap());
    }
}
