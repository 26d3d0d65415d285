//! Withdrawing this node from the cluster on purpose. Stopping, restarting or crashing the
//! agent never withdraws anything: services outlive their agent, so other nodes keep routing
//! to them (docs/ARCHITECTURE.md, "Stop, crash and leave"). Leaving is asked for explicitly,
//! by `strata leave NODE` (the `Leave` RPC), by `strata-agent leave` or `uninstall` on the
//! host (the [`LEAVE_SIGNAL`] to the agent holding the data dir), or by `leave_on_stop` for
//! hosts that do not come back. Every path ends in [`withdraw`], then the agent stops.

pub mod command;

use std::time::Duration;
use strata_registry::cluster::Cluster;
use tokio::sync::watch;

/// The signal `strata-agent leave` sends the agent holding the data dir: leave, then stop.
/// SIGUSR1 is HAProxy's "soft stop"; SIGTERM and SIGINT stop without leaving.
pub const LEAVE_SIGNAL: rustix::process::Signal = rustix::process::Signal::USR1;

/// The one request to leave: who asked, first asker wins. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LeaveSwitch {
    asked: watch::Sender<Option<String>>,
    drain: Duration,
}

impl LeaveSwitch {
    /// A switch nobody has pulled; a leave drains for `drain` before leaving gossip.
    pub fn new(drain: Duration) -> LeaveSwitch {
        LeaveSwitch {
            asked: watch::channel(None).0,
            drain,
        }
    }

    /// How long the node drains before it leaves gossip.
    pub fn drain(&self) -> Duration {
        self.drain
    }

    /// Asks the agent to leave on behalf of `by`; false when it already was asked.
    pub fn request(&self, by: &str) -> bool {
        self.asked.send_if_modified(|asked| {
            if asked.is_some() {
                return false;
            }
            *asked = Some(by.to_string());
            true
        })
    }

    /// Resolves with who asked, once someone has.
    pub async fn requested(&self) -> String {
        let mut asked = self.asked.subscribe();
        let by = asked
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|by| by.clone());
        match by {
            Some(by) => by,
            // Unreachable while `self` holds the sender; never resolve rather than leave.
            None => std::future::pending().await,
        }
    }

    /// Turns every [`LEAVE_SIGNAL`] into a request, from now on.
    pub fn watch_signal(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut signals = signal(SignalKind::from_raw(LEAVE_SIGNAL.as_raw()))?;
        let switch = self.clone();
        tokio::spawn(async move {
            while signals.recv().await.is_some() {
                switch.request("SIGUSR1 (strata-agent leave)");
            }
        });
        Ok(())
    }
}

/// Leaves the cluster gracefully: drains the node (every balancer stops giving its instances
/// new connections, and a node that misses the departure still holds a drained record), waits
/// `drain` for that to spread, then gossips the departure, after which every node removes its
/// instances from its balancer and DNS.
pub async fn withdraw(cluster: &Cluster, drain: Duration) {
    cluster.set_draining(true);
    tracing::info!(drain = %humantime::format_duration(drain), "draining before leaving the cluster");
    tokio::time::sleep(drain).await;
    cluster.leave().await;
    tracing::info!("left the cluster");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_wins_and_wakes_the_waiter() {
        let switch = LeaveSwitch::new(Duration::from_secs(2));
        let waiter = tokio::spawn({
            let switch = switch.clone();
            async move { switch.requested().await }
        });
        assert!(switch.request("token \"ops\""));
        assert!(!switch.request("SIGUSR1 (strata-agent leave)"));
        assert_eq!(waiter.await.unwrap(), "token \"ops\"");
        assert_eq!(switch.requested().await, "token \"ops\"");
    }
}
