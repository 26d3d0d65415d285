//! The node's stable identity: a random id created on first start and kept in the data dir,
//! so a renamed or re-addressed host is still recognised as the same node.

use crate::fsutil::write_atomic;
use std::path::Path;
use thiserror::Error;

/// File name of the node id inside the data dir.
pub const NODE_ID_FILE: &str = "node-id";

/// Why the node id could not be loaded or created.
#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} does not hold a node id (expected a UUID, found {found:?}); remove it to create a new one"
    )]
    Invalid { path: String, found: String },
}

/// Returns the node id stored in `data_dir`, creating and storing a new one on first start.
pub fn load_or_create_node_id(data_dir: &Path) -> Result<String, IdentityError> {
    let path = data_dir.join(NODE_ID_FILE);
    let shown = path.display().to_string();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            uuid::Uuid::parse_str(id)
                .map(|u| u.to_string())
                .map_err(|_| IdentityError::Invalid {
                    path: shown,
                    found: id.chars().take(64).collect(),
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = uuid::Uuid::new_v4().to_string();
            write_atomic(&path, format!("{id}\n").as_bytes()).map_err(|source| {
                IdentityError::Write {
                    path: shown,
                    source,
                }
            })?;
            Ok(id)
        }
        Err(source) => Err(IdentityError::Read {
            path: shown,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_node_id(dir.path()).unwrap();
        let second = load_or_create_node_id(dir.path()).unwrap();
        assert_eq!(first, second);
        assert!(uuid::Uuid::parse_str(&first).is_ok());
    }

    #[test]
    fn a_corrupt_id_file_is_reported_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "garbage").unwrap();
        let err = load_or_create_node_id(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not hold a node id"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(NODE_ID_FILE)).unwrap(),
            "garbage"
        );
    }
}
