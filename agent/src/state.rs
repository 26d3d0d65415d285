//! The agent's shared state: what the collector loop produces and the API and HTTP
//! endpoints read. One `Arc<AgentState>` is handed to every server.

use crate::events::journal::Journal;
use crate::facts::HostFacts;
use crate::metrics::history::History;
use crate::supervisor::manager::Supervisor;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use strata_proto::v1::{HostMetrics, NodeInfo};
use tokio::sync::watch;

/// The agent's own figures, for /metrics and the API.
#[derive(Debug, Clone, Default)]
pub struct CollectStats {
    /// How long the last sample took, in seconds.
    pub last_collect_seconds: f64,
    /// Alerts firing after the last evaluation.
    pub alerts_firing: u64,
    /// Bytes the metric history holds.
    pub history_bytes: u64,
    /// The last sample's processes and threads by state; None before the first.
    pub processes: Option<crate::metrics::processes::ProcessCounts>,
}

/// Everything the servers read; written by the collector loop.
pub struct AgentState {
    pub node_id: String,
    pub node_name: String,
    pub facts: HostFacts,
    pub labels: BTreeMap<String, String>,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub started: Instant,
    pub started_unix_secs: f64,
    pub latest: watch::Sender<Arc<HostMetrics>>,
    pub history: Mutex<History>,
    pub stats: Mutex<CollectStats>,
    pub journal: Journal,
    pub supervisor: Arc<Supervisor>,
    pub cluster: strata_registry::cluster::Cluster,
    /// The data dir, for state the API changes (the keyring).
    pub data_dir: std::path::PathBuf,
    pub balancer: strata_registry::balance::Balancer,
    pub dns: strata_registry::dns::DnsServer,
    /// TLS of the gRPC API and of the channels to peer agents; `None` is plaintext.
    pub tls: Option<Arc<crate::tls::AgentTls>>,
    /// Pulled to withdraw this node from the cluster and stop the agent.
    pub leave: crate::leave::LeaveSwitch,
}

impl AgentState {
    /// The node identity as the API returns it.
    pub fn node_info(&self) -> NodeInfo {
        let now_secs = unix_now_ms() / 1000;
        NodeInfo {
            id: self.node_id.clone(),
            name: self.node_name.clone(),
            hostname: self.facts.hostname.clone(),
            os: self.facts.os.clone(),
            kernel: self.facts.kernel.clone(),
            cores: self.facts.cores,
            memory_bytes: self.facts.memory_bytes,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_uptime_secs: self.started.elapsed().as_secs(),
            host_uptime_secs: (now_secs - self.facts.boot_time_unix_secs).max(0) as u64,
            boot_time_unix_secs: self.facts.boot_time_unix_secs,
            labels: self.labels.clone().into_iter().collect(),
            grpc_addr: self.grpc_addr.to_string(),
            http_addr: self.http_addr.to_string(),
        }
    }

    /// Whether `node` (a name or an id, empty for "this one") names this agent.
    pub fn is_self(&self, node: &str) -> bool {
        node.is_empty() || node == self.node_name || node == self.node_id
    }

    /// The newest sample (empty before the first collection).
    pub fn latest(&self) -> Arc<HostMetrics> {
        self.latest.borrow().clone()
    }
}

/// Milliseconds since the Unix epoch, the time unit of the whole API.
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
