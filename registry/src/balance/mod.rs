//! The local load balancer: every agent listens on each service's frontend port (on its own
//! loopback address) and forwards each connection to a healthy instance anywhere in the
//! cluster — the SmartStack / Consul Connect "upstream on a local port" model, inside the agent.
//!
//! Layers, each testable alone (after linkerd2-proxy): the [`ServiceTable`] from discovery →
//! listener supervision (`listener`) → per-service state and eligibility (`state`) → pickers
//! (`pick`, over peak-EWMA latency from `ewma` and slow-start weights from `slow_start`) →
//! outlier ejection (`outlier`) → connect with retries and the queue (`proxy`) → byte copy or
//! splice(2) (`copy`, `splice`) under idle and response timeouts (`silence`) → access log
//! (`access`) and counters (`stats`).

mod access;
mod config;
mod copy;
mod ewma;
mod listener;
mod outlier;
mod pick;
mod proxy;
mod silence;
mod slow_start;
mod splice;
mod state;
mod stats;
#[cfg(test)]
mod tests;

pub use access::{AccessRecord, Outcome};
pub use config::{AccessLogConfig, BalancerConfig, CopyMode, OutlierConfig};
pub use stats::{
    BalancerStats, EndpointStats, ListenerStats, ListenerStatus, ServiceStats, write_prometheus,
};

use crate::table::ServiceTable;
use access::AccessLog;
use serde::{Deserialize, Serialize};
use state::{EndpointState, ServiceState, lock};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Events a subscriber may keep up to before it skips.
const EVENT_QUEUE: usize = 256;

/// Something an operator should hear about, as it happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum BalancerEvent {
    /// A frontend listener started.
    Listening {
        service: String,
        port_name: String,
        addr: SocketAddr,
    },
    /// A frontend could not listen; other services are unaffected and it is retried.
    ListenFailed {
        service: String,
        port_name: String,
        port: u16,
        error: String,
    },
    /// A frontend listener closed because its service or port left the table.
    Closed {
        service: String,
        port_name: String,
        port: u16,
    },
    /// Outlier detection ejected an endpoint for `duration_ms` (the `ejections`-th time in a row).
    Ejected {
        service: String,
        instance: String,
        node: String,
        duration_ms: u64,
        ejections: u32,
    },
    /// An ejected endpoint's time is over; it takes connections again.
    Restored {
        service: String,
        instance: String,
        node: String,
    },
}

/// Why a balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum BalanceError {
    #[error("cannot open the access log in {dir}: {source}")]
    AccessLog {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// State shared by the supervisor, the listeners and the connections.
#[derive(Debug)]
pub(crate) struct Shared {
    config: BalancerConfig,
    services: Mutex<BTreeMap<String, Arc<ServiceState>>>,
    events: broadcast::Sender<BalancerEvent>,
    access: AccessLog,
}

impl Shared {
    fn event(&self, event: BalancerEvent) {
        let _ = self.events.send(event);
    }

    /// Reports an ejection and schedules the endpoint's return.
    fn ejected(
        &self,
        service: &Arc<ServiceState>,
        endpoint: &Arc<EndpointState>,
        until: Instant,
        now: Instant,
    ) {
        let duration = until.saturating_duration_since(now);
        tracing::warn!(service = %service.name, instance = %endpoint.instance, ?duration, "endpoint ejected");
        self.event(BalancerEvent::Ejected {
            service: service.name.clone(),
            instance: endpoint.instance.clone(),
            node: endpoint.node.clone(),
            duration_ms: duration.as_millis() as u64,
            ejections: endpoint.ejections(),
        });
        let events = self.events.clone();
        let service = Arc::clone(service);
        let endpoint = Arc::clone(endpoint);
        tokio::spawn(async move {
            tokio::time::sleep_until(until.into()).await;
            if endpoint.restore_if_due(Instant::now()) {
                tracing::info!(service = %service.name, instance = %endpoint.instance, "endpoint restored");
                service.wake_all();
                let _ = events.send(BalancerEvent::Restored {
                    service: service.name.clone(),
                    instance: endpoint.instance.clone(),
                    node: endpoint.node.clone(),
                });
            }
        });
    }
}

/// The running balancer of one agent. Dropping it closes every listener; connections already
/// open finish on their own.
#[derive(Debug)]
pub struct Balancer {
    shared: Arc<Shared>,
    supervisor: JoinHandle<()>,
}

impl Balancer {
    /// Starts following `table` (must be called within a Tokio runtime). Listeners appear as
    /// services with frontend ports appear.
    pub fn start(
        config: BalancerConfig,
        table: watch::Receiver<Arc<ServiceTable>>,
    ) -> Result<Self, BalanceError> {
        let access = AccessLog::start(config.access_log.as_ref()).map_err(|source| {
            BalanceError::AccessLog {
                dir: config
                    .access_log
                    .as_ref()
                    .map(|a| a.dir.clone())
                    .unwrap_or_default(),
                source,
            }
        })?;
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            config,
            services: Mutex::new(BTreeMap::new()),
            events,
            access,
        });
        let supervisor = tokio::spawn(listener::supervise(Arc::clone(&shared), table));
        Ok(Self { shared, supervisor })
    }

    /// Listener, ejection and restoration events from now on.
    pub fn subscribe_events(&self) -> broadcast::Receiver<BalancerEvent> {
        self.shared.events.subscribe()
    }

    /// Access records from now on, as connections end.
    pub fn subscribe_access(&self) -> broadcast::Receiver<AccessRecord> {
        self.shared.access.subscribe()
    }

    /// The last `lines` access records (only `service`'s when given), then with `follow`
    /// each new one; see `access`.
    pub async fn tail_access(
        &self,
        service: Option<String>,
        lines: usize,
        follow: bool,
    ) -> std::io::Result<tokio::sync::mpsc::Receiver<AccessRecord>> {
        self.shared.access.tail(service, lines, follow).await
    }

    /// A snapshot of every counter, for the agent's API and `/metrics`.
    pub fn stats(&self) -> BalancerStats {
        let services: Vec<_> = lock(&self.shared.services).values().cloned().collect();
        stats::collect(&services, self.shared.access.dropped())
    }
}

impl Balancer {
    /// Closes every frontend listener and follows the table no more; connections already
    /// open finish on their own (see [`Balancer::stats`] for how many). For an agent that
    /// handed its listening sockets to its successor and now drains.
    pub fn close_listeners(&self) {
        self.supervisor.abort();
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}
