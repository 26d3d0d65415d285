//! Counters as a serialisable snapshot for the agent's API, and as Prometheus text.

use super::state::{ServiceState, lock};
use crate::table::Algorithm;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

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

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// The balancer's part of the agent's `/metrics`, in the Prometheus text format
/// (`strata_balancer_*` families, each with HELP and TYPE).
pub fn render_prometheus(stats: &BalancerStats) -> String {
    let mut out = String::new();
    let svc = |s: &ServiceStats| format!("service=\"{}\"", label(&s.name));
    let ep = |s: &ServiceStats, e: &EndpointStats| {
        format!(
            "service=\"{}\",service_instance=\"{}\",node=\"{}\"",
            label(&s.name),
            label(&e.instance),
            label(&e.node)
        )
    };
    let per_service = |f: &dyn Fn(&ServiceStats) -> f64| -> Vec<(String, f64)> {
        stats.services.iter().map(|s| (svc(s), f(s))).collect()
    };
    let per_endpoint = |f: &dyn Fn(&EndpointStats) -> f64| -> Vec<(String, f64)> {
        stats
            .services
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |e| (ep(s, e), f(e))))
            .collect()
    };
    let listeners: Vec<(String, f64)> = stats
        .services
        .iter()
        .flat_map(|s| {
            s.listeners.iter().map(move |l| {
                let up = matches!(l.status, ListenerStatus::Listening { .. });
                (
                    format!(
                        "{},port_name=\"{}\",port=\"{}\"",
                        svc(s),
                        label(&l.port_name),
                        l.port
                    ),
                    f64::from(u8::from(up)),
                )
            })
        })
        .collect();
    family(
        &mut out,
        "strata_balancer_listener_up",
        "gauge",
        "Whether the frontend listener is accepting (0: failed to listen).",
        &listeners,
    );
    family(
        &mut out,
        "strata_balancer_client_connections_active",
        "gauge",
        "Client connections open on the service's frontends.",
        &per_service(&|s| s.active as f64),
    );
    family(
        &mut out,
        "strata_balancer_client_connections_total",
        "counter",
        "Client connections accepted on the service's frontends.",
        &per_service(&|s| s.total as f64),
    );
    family(
        &mut out,
        "strata_balancer_no_healthy_instance_total",
        "counter",
        "Client connections closed because no instance was eligible.",
        &per_service(&|s| s.no_healthy_instance as f64),
    );
    family(
        &mut out,
        "strata_balancer_queued_connections",
        "gauge",
        "Client connections waiting in the service's queue for an instance.",
        &per_service(&|s| s.queued as f64),
    );
    family(
        &mut out,
        "strata_balancer_queued_connections_total",
        "counter",
        "Client connections that waited in the service's queue.",
        &per_service(&|s| s.queued_total as f64),
    );
    family(
        &mut out,
        "strata_balancer_queue_failures_total",
        "counter",
        "Client connections closed by the queue timeout or a full queue.",
        &per_service(&|s| s.queue_failures as f64),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_connections_active",
        "gauge",
        "Connections open or being opened to the endpoint.",
        &per_endpoint(&|e| e.active as f64),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_connections_total",
        "counter",
        "Connections attempted to the endpoint.",
        &per_endpoint(&|e| e.total as f64),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_connect_failures_total",
        "counter",
        "Failed connects to the endpoint.",
        &per_endpoint(&|e| e.failures as f64),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_received_bytes_total",
        "counter",
        "Bytes from clients forwarded to the endpoint.",
        &per_endpoint(&|e| e.bytes_in as f64),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_sent_bytes_total",
        "counter",
        "Bytes from the endpoint forwarded to clients.",
        &per_endpoint(&|e| e.bytes_out as f64),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_connect_latency_ewma_seconds",
        "gauge",
        "Peak-EWMA of the endpoint's connect latency.",
        &per_endpoint(&|e| e.connect_latency_ewma_ms / 1e3),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_weight",
        "gauge",
        "The endpoint's slow-start weight (1: full share of new connections).",
        &per_endpoint(&|e| e.weight),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_ejected",
        "gauge",
        "Whether the endpoint is ejected by outlier detection.",
        &per_endpoint(&|e| f64::from(u8::from(e.ejected_until.is_some()))),
    );
    family(
        &mut out,
        "strata_balancer_endpoint_draining",
        "gauge",
        "Whether the endpoint is draining (no new connections).",
        &per_endpoint(&|e| f64::from(u8::from(e.draining))),
    );
    let _ = writeln!(
        out,
        "# HELP strata_balancer_access_log_dropped_total Access records dropped because the writer fell behind."
    );
    let _ = writeln!(
        out,
        "# TYPE strata_balancer_access_log_dropped_total counter"
    );
    let _ = writeln!(
        out,
        "strata_balancer_access_log_dropped_total {}",
        stats.access_log_dropped
    );
    out
}
