//! The service table: what discovery knows right now, in the shape the balancer and DNS
//! consume. The catalog produces a new `Arc<ServiceTable>` on every relevant change and
//! publishes it on a `tokio::sync::watch` channel; readers never lock the catalog.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// How a service's connections are spread over its instances (`[balance]` in the spec): the
/// contract's enum, whose `Unspecified` runs as p2c_ewma (power of two choices over a
/// peak-EWMA of connect latency, Linkerd's default).
pub use strata_proto::v1::Algorithm;

/// Per-service balancing settings (the spec's `[balance]` table), carried in the catalog with
/// the service so that every node's balancer applies the same ones. The defaults and the
/// reasons for them are in `balance/config.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceConfig {
    pub algorithm: Algorithm,
    /// Use instances on the same node first while any of them is passing.
    pub prefer_local: bool,
    /// One connect attempt gives up after this long; another instance is tried.
    pub connect_timeout: Duration,
    /// Other instances tried after a failed connect, before the client waits in the queue.
    pub retries: u32,
    /// Instances that join or come back ramp from 10% to their full weight over this window
    /// (zero: at once).
    pub slow_start: Duration,
    /// Connections one balancer keeps open or opening to one instance (0: no limit).
    pub max_conns: u32,
    /// Clients one balancer holds waiting for an instance (0: they fail at once).
    pub max_queue: u32,
    /// How long a client may wait for an instance, counted from its accept.
    pub queue_timeout: Duration,
    /// A connection with no bytes either way for this long is closed (zero: never).
    pub idle_timeout: Duration,
    /// The backend's first byte must come within this long of the client's first byte
    /// (zero: no limit).
    pub response_timeout: Duration,
}

/// One instance of a service as discovery sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// "web/1".
    pub instance: String,
    /// Name of the node it runs on.
    pub node: String,
    /// The node's advertised address.
    pub ip: IpAddr,
    /// Port name to backend port.
    pub ports: BTreeMap<String, u16>,
    /// Whether it runs on the node that reads this table.
    pub local: bool,
    pub version: String,
    pub tags: Vec<String>,
}

/// A service and where its traffic may go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub name: String,
    /// Port name to the static frontend port the balancer serves on every node.
    pub frontends: BTreeMap<String, u16>,
    pub balance: BalanceConfig,
    /// Passing, not draining, on nodes that have not left (their agent may be suspect or
    /// down: see [`NodeEntry::alive`]): these get new connections.
    pub endpoints: Vec<Endpoint>,
    /// Known but not to get new connections (draining, on a drained node, or not passing);
    /// open connections to them may finish.
    pub unavailable: Vec<Endpoint>,
    /// The instances of `unavailable` that are there only because their health is `warning`
    /// (copies): DNS answers them unless `dns_only_passing` (Consul's `only_passing`), the
    /// balancer never sends them new connections.
    #[serde(default)]
    pub warning: Vec<Endpoint>,
}

/// A cluster member as DNS and the balancer need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub id: String,
    pub ip: IpAddr,
    /// The node's agent is alive or suspect; false when it is down, has left, or is known
    /// only from the catalog. Its instances stay in the table until it leaves or is reaped
    /// (services outlive their agent), so readers that care whether an endpoint's agent
    /// answers look its node up here.
    pub alive: bool,
}

/// Everything discovery knows, as one immutable snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceTable {
    /// Increases with every change.
    pub generation: u64,
    pub services: BTreeMap<String, ServiceEntry>,
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Every frontend port a published record claims, with who claims it (sorted), so that
    /// an apply can be refused a port another service is served on anywhere in the cluster.
    #[serde(default)]
    pub frontend_claims: BTreeMap<u16, Vec<FrontendClaim>>,
}

/// One node's record publishing a service with a frontend port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FrontendClaim {
    pub service: String,
    /// The name of the node whose record claims it.
    pub node: String,
}
