//! Writing and reading the PEM files of `strata-agent tls`: atomic writes, private keys
//! readable by their owner only, and no silent overwrite.

use super::issue::Pem;
use crate::fsutil::write_atomic_mode;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// File name of the cluster CA certificate.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the cluster CA's private key.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// A file operation that failed, naming the file.
#[derive(Debug, Error)]
pub enum FileError {
    /// The file is there and `--force` was not given.
    #[error("{0} already exists; give --force to replace it")]
    Exists(PathBuf),
    /// Reading, writing or creating the directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Where a certificate and its key go: `DIR/NAME.pem` and `DIR/NAME-key.pem`.
pub fn pair_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

/// Writes `pem` to `cert` (mode 0644) and `key` (mode 0600), creating the directory.
/// Refuses, before writing anything, when either file exists and `force` is false.
pub fn write_pair(pem: &Pem, cert: &Path, key: &Path, force: bool) -> Result<(), FileError> {
    if !force {
        for path in [cert, key] {
            if path.exists() {
                return Err(FileError::Exists(path.to_path_buf()));
            }
        }
    }
    if let Some(dir) = cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| FileError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    write(key, &pem.key, 0o600)?;
    write(cert, &pem.cert, 0o644)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), FileError> {
    write_atomic_mode(path, text.as_bytes(), mode).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // A replaced file keeps the mode it was created with; make sure of the one asked for.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        FileError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Reads a PEM file as text.
pub fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|source| FileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_private_and_nothing_is_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair_paths(&dir.path().join("tls"), "n1");
        let pem = Pem {
            cert: "C1".into(),
            key: "K1".into(),
        };
        write_pair(&pem, &cert, &key, false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&cert), 0o644);
        let again = Pem {
            cert: "C2".into(),
            key: "K2".into(),
        };
        let err = write_pair(&again, &cert, &key, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(read(&key).unwrap(), "K1");
        write_pair(&again, &cert, &key, true).unwrap();
        assert_eq!(read(&cert).unwrap(), "C2");
        assert_eq!(mode(&key), 0o600);
    }
}
