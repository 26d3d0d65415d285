//! The HTTP endpoint: `GET /metrics` in the Prometheus text format and `GET /health`.

use super::health::Readiness;
use crate::metrics::node::NodeCollector;
use crate::metrics::prometheus::{self, AgentStats};
use crate::state::{AgentState, unix_now_ms};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use strata_exposition::{CONTENT_TYPE, Exposition, Kind};

/// The HTTP routes over the agent's state; `collect_interval` decides when the collector
/// counts as stalled for /health.
pub fn router(state: Arc<AgentState>, collect_interval: Duration) -> Router {
    let host_files = Arc::new(Mutex::new(NodeCollector::new()));
    Router::new()
        .route(
            "/metrics",
            get(move |s: State<Arc<AgentState>>| metrics(s, host_files.clone())),
        )
        .route(
            "/health",
            get(move |s: State<Arc<AgentState>>| health(s, collect_interval)),
        )
        .with_state(state)
}

/// Renders `/metrics`; the scrape-time host files are read on a blocking thread, one scrape
/// at a time.
async fn metrics(
    State(state): State<Arc<AgentState>>,
    host_files: Arc<Mutex<NodeCollector>>,
) -> impl IntoResponse {
    let latest = state.latest();
    let stats = state.stats.lock().map(|s| s.clone()).unwrap_or_default();
    let agent = AgentStats {
        version: env!("CARGO_PKG_VERSION").to_string(),
        start_time_unix_secs: state.started_unix_secs,
        last_collect_seconds: stats.last_collect_seconds,
        alerts_firing: stats.alerts_firing,
        processes: stats.processes,
    };
    let node = state.node_info();
    let rendered = tokio::task::spawn_blocking(move || {
        let mut host_files = host_files.lock().unwrap_or_else(PoisonError::into_inner);
        let mut w = Exposition::with_capacity(64 * 1024);
        prometheus::render(&latest, &mut host_files, &node, &agent, &mut w);
        w
    })
    .await;
    let mut w = match rendered {
        Ok(w) => w,
        Err(error) => {
            tracing::warn!(%error, "rendering /metrics failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "rendering metrics failed\n".to_owned(),
            );
        }
    };
    strata_registry::balance::write_prometheus(&state.balancer.stats(), &mut w);
    dns_metrics(&state.dns.stats(), &mut w);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        w.into_text(),
    )
}

/// Healthy when the collector produced a sample within the last five intervals (the rule
/// gRPC health follows too: `health.rs`).
async fn health(State(state): State<Arc<AgentState>>, interval: Duration) -> impl IntoResponse {
    let last = state.latest().time_unix_ms;
    let age_ms = unix_now_ms() - last;
    let (status, word) = match super::health::readiness(&state, interval) {
        Readiness::Ready => (StatusCode::OK, "ok"),
        Readiness::Starting => (StatusCode::OK, "starting"),
        Readiness::Stalled => (StatusCode::SERVICE_UNAVAILABLE, "collector stalled"),
    };
    let body = serde_json::json!({
        "status": word,
        "node_id": state.node_id,
        "node_name": state.node_name,
        "last_sample_age_ms": if last == 0 { serde_json::Value::Null } else { age_ms.into() },
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// The DNS server's counters.
fn dns_metrics(stats: &strata_registry::dns::DnsStats, w: &mut Exposition) {
    for (name, help, value) in [
        (
            "strata_dns_queries_total",
            "DNS queries answered.",
            stats.queries,
        ),
        (
            "strata_dns_nxdomain_total",
            "DNS answers that were NXDOMAIN.",
            stats.nxdomain,
        ),
        (
            "strata_dns_refused_total",
            "DNS queries refused (outside the domain).",
            stats.refused,
        ),
    ] {
        w.single(name, Kind::Counter, help, value);
    }
}
