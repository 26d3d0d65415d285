//! systemd's file-descriptor store: under a unit with `FileDescriptorStoreMax=` (systemd then
//! sets `$FDSTORE`), the agent keeps a copy of every socket it serves on in the service
//! manager (`FDSTORE=1`), so that `systemctl restart` (a stop, then a start) never closes a
//! port. While no agent runs, the kernel queues new connections in the stored listening
//! sockets' backlogs; the next agent gets the sockets back as `LISTEN_FDS`/`LISTEN_FDNAMES`
//! and takes them like any inherited socket (`strata_registry::inherit`).
//!
//! The store is kept in step with the sockets the agent serves on: a frontend the balancer
//! opened is stored (named `frontend-PORT`), one it closed is removed (`FDSTOREREMOVE=1`) so
//! its port is released. systemd ignores a descriptor it already holds, so a restarted agent
//! storing its inherited sockets again adds nothing. When the unit stops for good, systemd
//! closes the store.

use crate::handoff::{self, ServedAddrs};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;
use strata_registry::inherit::SocketRole;

/// How often the store is brought in step with the agent's sockets.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// One stored socket: UDP or TCP, and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SocketKey {
    /// A UDP socket (else a listening TCP one).
    pub udp: bool,
    /// Where it is bound.
    pub addr: SocketAddr,
}

/// What to tell the service manager to bring its store in step.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StorePlan {
    /// Sockets to store, with their names.
    pub store: Vec<(SocketKey, String)>,
    /// Names to remove: frontends that are closed.
    pub remove: Vec<String>,
}

/// The store name of a socket: its role, and a frontend's port (so that it alone can be
/// removed).
pub fn store_name(role: SocketRole, addr: SocketAddr) -> String {
    match role {
        SocketRole::Frontend => format!("frontend-{}", addr.port()),
        other => other.as_str().to_string(),
    }
}

/// Compares what is stored with the sockets served now. Only frontends come and go; the
/// agent's own sockets live as long as it does and are never removed.
pub fn plan(stored: &BTreeMap<SocketKey, String>, served: &[(SocketKey, SocketRole)]) -> StorePlan {
    let store = served
        .iter()
        .filter(|(key, _)| !stored.contains_key(key))
        .map(|(key, role)| (*key, store_name(*role, key.addr)))
        .collect();
    let remove = stored
        .iter()
        .filter(|(key, name)| {
            name.starts_with("frontend-") && !served.iter().any(|(k, _)| k == *key)
        })
        .map(|(_, name)| name.clone())
        .collect();
    StorePlan { store, remove }
}

/// The agent's side of the store: where to send, and what it stored.
#[derive(Debug)]
pub struct FdStore {
    socket: OsString,
    stored: BTreeMap<SocketKey, String>,
}

impl FdStore {
    /// The store, when the service manager offers one (`$NOTIFY_SOCKET` and a positive
    /// `$FDSTORE`).
    pub fn from_env() -> Option<FdStore> {
        let socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty())?;
        let room: usize = std::env::var("FDSTORE").ok()?.trim().parse().ok()?;
        (room > 0).then_some(FdStore {
            socket,
            stored: BTreeMap::new(),
        })
    }

    /// Stores the sockets not stored yet and removes closed frontends; failures are logged
    /// and retried on the next call.
    pub fn sync(&mut self, sockets: Vec<(SocketRole, OwnedFd)>) {
        let served: Vec<(SocketKey, SocketRole, OwnedFd)> = sockets
            .into_iter()
            .filter_map(|(role, fd)| {
                let addr = rustix::net::getsockname(&fd)
                    .ok()
                    .and_then(|a| SocketAddr::try_from(a).ok())?;
                let udp =
                    rustix::net::sockopt::socket_type(&fd).ok()? == rustix::net::SocketType::DGRAM;
                Some((SocketKey { udp, addr }, role, fd))
            })
            .collect();
        let keys: Vec<(SocketKey, SocketRole)> =
            served.iter().map(|(key, role, _)| (*key, *role)).collect();
        let plan = plan(&self.stored, &keys);
        for (key, name) in plan.store {
            let Some((_, _, fd)) = served.iter().find(|(k, _, _)| *k == key) else {
                continue;
            };
            let message = format!("FDSTORE=1\nFDNAME={name}");
            match crate::notify::send_with_fd(&self.socket, &message, fd.as_fd()) {
                Ok(()) => {
                    tracing::debug!(%name, addr = %key.addr, "stored a socket with the service manager");
                    self.stored.insert(key, name);
                }
                Err(e) => {
                    tracing::warn!(%name, addr = %key.addr, error = %e, "cannot store a socket with the service manager")
                }
            }
        }
        for name in plan.remove {
            let message = format!("FDSTOREREMOVE=1\nFDNAME={name}");
            match crate::notify::send(&self.socket, &message) {
                Ok(()) => {
                    tracing::debug!(%name, "removed a closed frontend from the service manager's store");
                    self.stored.retain(|_, n| *n != name);
                }
                Err(e) => {
                    tracing::warn!(%name, error = %e, "cannot remove a socket from the service manager's store")
                }
            }
        }
    }
}

/// Keeps the service manager's store in step with the agent's sockets, every
/// [`SYNC_INTERVAL`], when there is a store. Abort the task before the agent closes its
/// frontends on the way out: a socket closed by a stopping agent must stay stored.
pub fn spawn(served: ServedAddrs) -> Option<tokio::task::JoinHandle<()>> {
    let store = FdStore::from_env()?;
    tracing::info!("keeping the listening sockets in the service manager's fd store");
    Some(tokio::spawn(async move {
        let mut store = Some(store);
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        loop {
            tick.tick().await;
            let Some(mut current) = store.take() else {
                return;
            };
            let served = served.clone();
            let synced = tokio::task::spawn_blocking(move || {
                match handoff::served_sockets(&served) {
                    Ok(sockets) => current.sync(sockets),
                    Err(e) => tracing::warn!(error = %e, "cannot list the agent's sockets"),
                }
                current
            })
            .await;
            match synced {
                Ok(current) => store = Some(current),
                Err(e) => {
                    tracing::warn!(error = %e, "the fd store task failed");
                    return;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(udp: bool, addr: &str) -> SocketKey {
        SocketKey {
            udp,
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn new_sockets_are_stored_under_their_role_and_frontends_under_their_port() {
        let served = [
            (key(false, "127.0.0.1:7700"), SocketRole::Grpc),
            (key(true, "127.0.0.1:7701"), SocketRole::Gossip),
            (key(false, "127.0.0.1:7701"), SocketRole::Gossip),
            (key(false, "10.0.0.1:8080"), SocketRole::Frontend),
        ];
        let plan = plan(&BTreeMap::new(), &served);
        let names: Vec<&str> = plan.store.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["grpc", "gossip", "gossip", "frontend-8080"]);
        assert!(plan.remove.is_empty());
        for (_, name) in &plan.store {
            assert!(SocketRole::parse(name).is_some(), "{name} is read back");
        }
    }

    #[test]
    fn stored_sockets_are_not_sent_again_and_closed_frontends_are_removed() {
        let stored = BTreeMap::from([
            (key(false, "127.0.0.1:7700"), "grpc".to_string()),
            (key(false, "10.0.0.1:8080"), "frontend-8080".to_string()),
            (key(false, "10.0.0.1:8081"), "frontend-8081".to_string()),
        ]);
        let served = [
            (key(false, "10.0.0.1:8081"), SocketRole::Frontend),
            (key(false, "10.0.0.1:8082"), SocketRole::Frontend),
        ];
        let plan = plan(&stored, &served);
        assert_eq!(
            plan.store,
            vec![(key(false, "10.0.0.1:8082"), "frontend-8082".to_string())]
        );
        // The gRPC socket is the agent's own: it is never removed, even if not listed.
        assert_eq!(plan.remove, vec!["frontend-8080".to_string()]);
    }
}
