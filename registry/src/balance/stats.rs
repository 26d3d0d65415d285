//! Counters as a serialisable snapshot for the agent's API, and as Prometheus text.

use super::state::{ServiceState, lock};
use crate::table::Algorithm;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};
use strata_exposition::{Exposition, Kind, Value};

/// Whether a frontend listener is serving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ListenerStatus {
    /// Accepting on `addr`.
    Listening { addr: String },
    /// Could not listen; `error` says why ("port 18080 on 127.0.0.1 is in use by another process").
    Failed { error: String },
}

/// One frontend listener of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStats {
    /// Port name in the service spec.
    pub port_name: String,
    /// Frontend port.
    pub port: u16,
    pub status: ListenerStatus,
}

/// One endpoint's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub instance: String,
    pub node: String,
    pub ip: String,
    pub local: bool,
    /// Draining: no new connections, open ones finish until the drain deadline.
    pub draining: bool,
    /// Connections open or being opened.
    pub active: u64,
    /// Connections attempted.
    pub total: u64,
    /// Failed connects.
    pub failures: u64,
    /// Bytes from clients to this endpoint.
    pub bytes_in: u64,
    /// Bytes from this endpoint to clients.
    pub bytes_out: u64,
    /// Peak-EWMA of connect latency (0 while unmeasured).
    pub connect_latency_ewma_ms: f64,
    /// Share of a full instance's connections it gets now: below 1 during its slow start.
    pub weight: f64,
    /// RFC 3339 end of the current ejection, if ejected.
    pub ejected_until: Option<String>,
    /// Ejections in a row so far.
    pub ejections: u32,
}

/// One service's counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    pub name: String,
    pub algorithm: Algorithm,
    pub prefer_local: bool,
    pub listeners: Vec<ListenerStats>,
    /// Client connections open.
    pub active: u64,
    /// Client connections accepted.
    pub total: u64,
    /// Client connections refused because no instance was eligible.
    pub no_healthy_instance: u64,
    /// Clients waiting in the queue for an instance now.
    pub queued: u64,
    /// Clients that waited in the queue.
    pub queued_total: u64,
    /// Clients that gave up in the queue (queue timeout) or found it full.
    pub queue_failures: u64,
    pub endpoints: Vec<EndpointStats>,
}

/// Everything the balancer counts, as one snapshot.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BalancerStats {
    pub services: Vec<ServiceStats>,
    /// Access records not written because the writer fell behind.
    pub access_log_dropped: u64,
}

fn wall_time(at: Instant, now: Instant) -> String {
    let wall = SystemTime::now() + at.saturating_duration_since(now);
    humantime::format_rfc3339_millis(wall).to_string()
}

/// Builds the snapshot from the live state.
pub(crate) fn collect(services: &[Arc<ServiceState>], access_log_dropped: u64) -> BalancerStats {
    let now = Instant::now();
    let services = services
        .iter()
        .map(|s| {
            let balance = s.balance();
            let listeners = lock(&s.listeners)
                .iter()
                .map(|(name, (port, status))| ListenerStats {
                    port_name: name.clone(),
                    port: *port,
                    status: status.clone(),
                })
                .collect();
            let endpoints = s
                .endpoints()
                .iter()
                .map(|e| EndpointStats {
                    instance: e.instance.clone(),
                    node: e.node.clone(),
                    ip: e.ip.to_string(),
                    local: e.local,
                    draining: e.is_draining(),
                    active: e.active.load(Ordering::Relaxed),
                    total: e.total.load(Ordering::Relaxed),
                    failures: e.failures.load(Ordering::Relaxed),
                    bytes_in: e.bytes_in.load(Ordering::Relaxed),
                    bytes_out: e.bytes_out.load(Ordering::Relaxed),
                    connect_latency_ewma_ms: e.latency_ms(now).unwrap_or(0.0),
                    weight: e.weight(now, balance.slow_start),
                    ejected_until: e.ejected_until(now).map(|at| wall_time(at, now)),
                    ejections: e.ejections(),
                })
                .collect();
            ServiceStats {
                name: s.name.clone(),
                algorithm: balance.algorithm,
                prefer_local: balance.prefer_local,
                listeners,
                active: s.active.load(Ordering::Relaxed),
                total: s.total.load(Ordering::Relaxed),
                no_healthy_instance: s.no_healthy.load(Ordering::Relaxed),
                queued: s.waiting() as u64,
                queued_total: s.queued_total.load(Ordering::Relaxed),
                queue_failures: s.queue_failures.load(Ordering::Relaxed),
                endpoints,
            }
        })
        .collect();
    BalancerStats {
        services,
        access_log_dropped,
    }
}

/// A family with one sample per `T` (a service, or an endpoint): what it is and how a
/// sample's value is read.
struct Family<T> {
    name: &'static str,
    kind: Kind,
    help: &'static str,
    value: fn(&T) -> Value,
}

/// The balancer's part of the agent's `/metrics` (`strata_balancer_*` families), written
/// into `w`.
pub fn write_prometheus(stats: &BalancerStats, w: &mut Exposition) {
    let name = "strata_balancer_listener_up";
    w.family(
        name,
        Kind::Gauge,
        "Whether the frontend listener is accepting (0: failed to listen).",
    );
    for s in &stats.services {
        for l in &s.listeners {
            let up = matches!(l.status, ListenerStatus::Listening { .. });
            let port = l.port.to_string();
            let labels = [
                ("service", s.name.as_str()),
                ("port_name", l.port_name.as_str()),
                ("port", port.as_str()),
            ];
            w.sample(name, &labels, up);
        }
    }
    let services: [Family<ServiceStats>; 6] = [
        Family {
            name: "strata_balancer_client_connections_active",
            kind: Kind::Gauge,
            help: "Client connections open on the service's frontends.",
            value: |s| s.active.into(),
        },
        Family {
            name: "strata_balancer_client_connections_total",
            kind: Kind::Counter,
            help: "Client connections accepted on the service's frontends.",
            value: |s| s.total.into(),
        },
        Family {
            name: "strata_balancer_no_healthy_instance_total",
            kind: Kind::Counter,
            help: "Client connections closed because no instance was eligible.",
            value: |s| s.no_healthy_instance.into(),
        },
        Family {
            name: "strata_balancer_queued_connections",
            kind: Kind::Gauge,
            help: "Client connections waiting in the service's queue for an instance.",
            value: |s| s.queued.into(),
        },
        Family {
            name: "strata_balancer_queued_connections_total",
            kind: Kind::Counter,
            help: "Client connections that waited in the service's queue.",
            value: |s| s.queued_total.into(),
        },
        Family {
            name: "strata_balancer_queue_failures_total",
            kind: Kind::Counter,
            help: "Client connections closed by the queue timeout or a full queue.",
            value: |s| s.queue_failures.into(),
        },
    ];
    for family in services {
        w.family(family.name, family.kind, family.help);
        for s in &stats.services {
            w.sample(family.name, &[("service", &s.name)], (family.value)(s));
        }
    }
    let endpoints: [Family<EndpointStats>; 9] = [
        Family {
            name: "strata_balancer_endpoint_connections_active",
            kind: Kind::Gauge,
            help: "Connections open or being opened to the endpoint.",
            value: |e| e.active.into(),
        },
        Family {
            name: "strata_balancer_endpoint_connections_total",
            kind: Kind::Counter,
            help: "Connections attempted to the endpoint.",
            value: |e| e.total.into(),
        },
        Family {
            name: "strata_balancer_endpoint_connect_failures_total",
            kind: Kind::Counter,
            help: "Failed connects to the endpoint.",
            value: |e| e.failures.into(),
        },
        Family {
            name: "strata_balancer_endpoint_received_bytes_total",
            kind: Kind::Counter,
            help: "Bytes from clients forwarded to the endpoint.",
            value: |e| e.bytes_in.into(),
        },
        Family {
            name: "strata_balancer_endpoint_sent_bytes_total",
            kind: Kind::Counter,
            help: "Bytes from the endpoint forwarded to clients.",
            value: |e| e.bytes_out.into(),
        },
        Family {
            name: "strata_balancer_endpoint_connect_latency_ewma_seconds",
            kind: Kind::Gauge,
            help: "Peak-EWMA of the endpoint's connect latency.",
            value: |e| (e.connect_latency_ewma_ms / 1e3).into(),
        },
        Family {
            name: "strata_balancer_endpoint_weight",
            kind: Kind::Gauge,
            help: "The endpoint's slow-start weight (1: full share of new connections).",
            value: |e| e.weight.into(),
        },
        Family {
            name: "strata_balancer_endpoint_ejected",
            kind: Kind::Gauge,
            help: "Whether the endpoint is ejected by outlier detection.",
            value: |e| e.ejected_until.is_some().into(),
        },
        Family {
            name: "strata_balancer_endpoint_draining",
            kind: Kind::Gauge,
            help: "Whether the endpoint is draining (no new connections).",
            value: |e| e.draining.into(),
        },
    ];
    for family in endpoints {
        w.family(family.name, family.kind, family.help);
        for s in &stats.services {
            for e in &s.endpoints {
                let labels = [
                    ("service", s.name.as_str()),
                    ("service_instance", e.instance.as_str()),
                    ("node", e.node.as_str()),
                ];
                w.sample(family.name, &labels, (family.value)(e));
            }
        }
    }
    w.single(
        "strata_balancer_access_log_dropped_total",
        Kind::Counter,
        "Access records dropped because the writer fell behind.",
        stats.access_log_dropped,
    );
}
