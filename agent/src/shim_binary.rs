//! Where the agent finds `strata-shim`, the binary every service instance runs under, and the
//! check that it is there when the agent starts: a missing shim stops the agent at once with
//! what to do, instead of failing every service start later.

use anyhow::Context;
use std::io;
use std::path::{Path, PathBuf};
use strata_shim::BIN_NAME;
use thiserror::Error;

/// How the operator makes the shim available; part of every error.
const FIX: &str = "install strata-shim next to strata-agent (`cargo build --bins` builds both, \
                   `strata-agent install` installs both), or give its path with --shim-path, \
                   STRATA_SHIM_PATH or shim_path in the config file";

/// Why the shim binary cannot be used.
#[derive(Debug, Error)]
pub enum ShimBinaryError {
    /// Nothing is at the path.
    #[error("the shim binary {} does not exist: {FIX}", .0.display())]
    Missing(PathBuf),
    /// Something other than a file is at the path.
    #[error("the shim binary {} is not a file: {FIX}", .0.display())]
    NotAFile(PathBuf),
    /// The file cannot be executed by this agent.
    #[error("the shim binary {} cannot be executed ({source}): make it executable (chmod 755), or {FIX}", path.display())]
    NotExecutable {
        /// The shim's path.
        path: PathBuf,
        /// Why it cannot be executed.
        source: io::Error,
    },
    /// The path cannot be inspected.
    #[error("cannot inspect the shim binary {} ({source}): {FIX}", path.display())]
    Unreadable {
        /// The shim's path.
        path: PathBuf,
        /// Why it cannot be inspected.
        source: io::Error,
    },
}

/// The shim to run: `configured` (the `shim_path` setting) made absolute against `cwd`, or,
/// when it is not set, the one [`beside`] the agent's binary `agent_exe`.
pub fn resolve(configured: Option<&Path>, agent_exe: &Path, cwd: &Path) -> PathBuf {
    match configured {
        Some(path) => cwd.join(path),
        None => beside(agent_exe),
    }
}

/// `strata-shim` in the directory of the agent's binary `agent_exe`: where the agent looks by
/// default, and where `strata-agent install` puts it.
pub fn beside(agent_exe: &Path) -> PathBuf {
    agent_exe.with_file_name(BIN_NAME)
}

/// Checks that `path` is a file this process may execute.
pub fn check(path: &Path) -> Result<(), ShimBinaryError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ShimBinaryError::Missing(path.to_path_buf()));
        }
        Err(source) => {
            return Err(ShimBinaryError::Unreadable {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(ShimBinaryError::NotAFile(path.to_path_buf()));
    }
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|e| {
        ShimBinaryError::NotExecutable {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })
}

/// The shim this agent runs, checked: [`resolve`] against the running binary and working
/// directory, then [`check`].
pub fn locate(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    let agent_exe = std::env::current_exe().context("cannot find the agent's own binary")?;
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let path = resolve(configured, &agent_exe, &cwd);
    check(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_default_is_next_to_the_agent_and_a_setting_is_made_absolute() {
        let exe = Path::new("/usr/local/bin/strata-agent");
        let cwd = Path::new("/srv");
        assert_eq!(
            resolve(None, exe, cwd),
            Path::new("/usr/local/bin/strata-shim")
        );
        assert_eq!(
            resolve(Some(Path::new("/opt/shim")), exe, cwd),
            Path::new("/opt/shim")
        );
        assert_eq!(
            resolve(Some(Path::new("bin/strata-shim")), exe, cwd),
            Path::new("/srv/bin/strata-shim")
        );
    }

    #[test]
    fn only_an_executable_file_passes_and_errors_say_how_to_fix_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("strata-shim");
        let err = check(&missing).unwrap_err();
        assert!(matches!(err, ShimBinaryError::Missing(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains(&missing.display().to_string()), "{text}");
        assert!(text.contains("--shim-path"), "{text}");

        let err = check(dir.path()).unwrap_err();
        assert!(matches!(err, ShimBinaryError::NotAFile(_)), "{err}");

        std::fs::write(&missing, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = check(&missing).unwrap_err();
        assert!(
            matches!(err, ShimBinaryError::NotExecutable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod"), "{err}");

        std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o755)).unwrap();
        check(&missing).unwrap();
    }
}
