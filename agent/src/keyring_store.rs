//! The gossip keyring as the agent keeps it: keys installed or rotated through the API are
//! stored in the data dir (atomically, mode 0600) and win over the configured key on restart,
//! so a rotation survives the agent's restart.

use crate::fsutil::write_atomic;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use strata_registry::cluster::Cluster;
use strata_registry::seal::Keyring;

/// File name of the stored keyring inside the data dir.
pub const KEYRING_FILE: &str = "keyring.json";

#[derive(Debug, Serialize, Deserialize)]
struct StoredKeyring {
    primary: String,
    keys: Vec<String>,
}

/// The keyring to start with: the stored one when present, else one from `configured`.
pub fn load(data_dir: &Path, configured: Option<&str>) -> anyhow::Result<Option<Keyring>> {
    use anyhow::Context;
    let path = data_dir.join(KEYRING_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: StoredKeyring = serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is corrupt; remove it to use the configured key",
                    path.display()
                )
            })?;
            let mut keyring = Keyring::new(&stored.primary)
                .with_context(|| format!("{}: bad primary key", path.display()))?;
            for key in stored.keys.iter().filter(|k| **k != stored.primary) {
                keyring
                    .install(key)
                    .with_context(|| format!("{}: bad key", path.display()))?;
            }
            Ok(Some(keyring))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => match configured {
            Some(key) => Ok(Some(Keyring::new(key).context("gossip_key")?)),
            None => Ok(None),
        },
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Stores the cluster's current keyring.
pub fn save(data_dir: &Path, cluster: &Cluster) -> io::Result<()> {
    let Some((primary, keys)) = cluster.export_keys() else {
        return Ok(());
    };
    let json =
        serde_json::to_vec_pretty(&StoredKeyring { primary, keys }).map_err(io::Error::other)?;
    let path = data_dir.join(KEYRING_FILE);
    write_atomic(&path, &json)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
}
