//! Connects the agent to the gossip registry: publishes this node's services and summary
//! into its catalog record, and turns membership changes into journal events.

use crate::events::journal::{EventDraft, Journal};
use crate::state::AgentState;
use crate::supervisor::manager::Supervisor;
use std::sync::Arc;
use std::time::Duration;
use strata_proto::v1::{HostMetrics, NodeSummary, Severity};
use strata_registry::balance::{Balancer, BalancerEvent};
use strata_registry::cluster::Cluster;
use strata_registry::events::ClusterEvent;
use tokio::task::JoinHandle;

/// How often the summary is recomputed; it is only gossiped when it really changed.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(5);
/// Changes arriving this close together are published as one.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// The catalog summary of a sample, rounded so that noise is not a change: whole percents,
/// load to one decimal.
pub fn summary_of(m: &HostMetrics, alerts_firing: u32, cores: u32) -> NodeSummary {
    let round = |v: f64| v.round();
    let cpu = m
        .cpu
        .as_ref()
        .and_then(|c| c.total)
        .map(|t| t.busy)
        .unwrap_or(0.0);
    let memory = m
        .memory
        .as_ref()
        .filter(|mem| mem.total_bytes > 0)
        .map(|mem| mem.used_bytes as f64 * 100.0 / mem.total_bytes as f64)
        .unwrap_or(0.0);
    let worst = m
        .filesystems
        .iter()
        .max_by(|a, b| a.used_percent.total_cmp(&b.used_percent));
    NodeSummary {
        cpu_busy_percent: round(cpu),
        memory_used_percent: round(memory),
        worst_disk_used_percent: worst.map(|f| round(f.used_percent)).unwrap_or(0.0),
        worst_disk: worst.map(|f| f.mountpoint.clone()).unwrap_or_default(),
        load1: m
            .cpu
            .as_ref()
            .map(|c| (c.load1 * 10.0).round() / 10.0)
            .unwrap_or(0.0),
        alerts_firing,
        cores,
    }
}

/// Keeps this node's catalog record current: services on every supervisor change, the
/// summary every few seconds.
pub fn spawn_publisher(
    cluster: Cluster,
    supervisor: Arc<Supervisor>,
    state: Arc<AgentState>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = supervisor.subscribe_changes();
        let mut summary_timer = tokio::time::interval(SUMMARY_INTERVAL);
        let generation = *changes.borrow_and_update();
        cluster.set_services(supervisor.catalog_services());
        supervisor.mark_published(generation);
        let mut samples = state.latest.subscribe();
        if samples.wait_for(|m| m.time_unix_ms != 0).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    let generation = *changes.borrow_and_update();
                    cluster.set_services(supervisor.catalog_services());
                    supervisor.mark_published(generation);
                }
                _ = summary_timer.tick() => {
                    let latest = state.latest();
                    if latest.time_unix_ms != 0 {
                        let alerts = state.stats.lock().map(|s| s.alerts_firing as u32).unwrap_or(0);
                        cluster.set_summary(summary_of(&latest, alerts, state.facts.cores));
                    }
                }
            }
        }
    })
}

/// Records membership changes in the journal as `member.*` events.
pub fn spawn_event_recorder(cluster: &Cluster, journal: Journal) -> JoinHandle<()> {
    let mut events = cluster.subscribe();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "membership events were dropped");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if let Some(draft) = event_draft(&event)
                && let Err(e) = journal.append(draft)
            {
                tracing::warn!(error = %e, "cannot record a membership event");
            }
        }
    })
}

/// The audit record of gossip refused from `from`: who tried to talk to the cluster and why
/// it was not let in.
fn rejected_draft(from: std::net::SocketAddr, reason: &str, held_back: u64) -> EventDraft {
    EventDraft::new(
        crate::auth::audit::AUDIT_KIND,
        Severity::Warning,
        "cluster",
        format!("gossip from {from} refused: {reason}"),
    )
    .field("who", format!("gossip:{from}"))
    .field("via", "gossip")
    .field("from", from.to_string())
    .field("what", "gossip")
    .field("target", "cluster")
    .field("result", format!("denied: {reason}"))
    .field("arg.refused_since_last", held_back.to_string())
}

/// The journal event for a membership change; catalog updates are not journaled.
pub fn event_draft(event: &ClusterEvent) -> Option<EventDraft> {
    let (kind, severity, name, message) = match event {
        ClusterEvent::Joined { name } => (
            "member.joined",
            Severity::Info,
            name,
            format!("{name} joined the cluster"),
        ),
        ClusterEvent::Rejoined { name } => (
            "member.rejoined",
            Severity::Info,
            name,
            format!("{name} rejoined the cluster"),
        ),
        ClusterEvent::Suspect { name } => (
            "member.suspect",
            Severity::Warning,
            name,
            format!("{name} is suspected down"),
        ),
        ClusterEvent::Down { name } => (
            "member.down",
            Severity::Critical,
            name,
            format!("{name} is down: its instances left discovery"),
        ),
        ClusterEvent::Left { name } => (
            "member.left",
            Severity::Info,
            name,
            format!("{name} left the cluster"),
        ),
        ClusterEvent::Reaped { name } => (
            "member.reaped",
            Severity::Info,
            name,
            format!("{name} was forgotten"),
        ),
        ClusterEvent::Conflict { name, ids } => (
            "member.conflict",
            Severity::Critical,
            name,
            format!(
                "two live agents use the name {name}: ids {}",
                ids.join(", ")
            ),
        ),
        ClusterEvent::Alive { name } => (
            "member.alive",
            Severity::Info,
            name,
            format!("{name} is alive again"),
        ),
        ClusterEvent::Rejected {
            from,
            reason,
            held_back,
        } => return Some(rejected_draft(*from, reason, *held_back)),
        ClusterEvent::SelfRejoined => return None,
        ClusterEvent::RecordChanged { .. } => return None,
    };
    Some(EventDraft::new(
        kind,
        severity,
        format!("node:{name}"),
        message,
    ))
}

/// Records the balancer's listener problems and ejections in the journal.
pub fn spawn_balancer_recorder(balancer: &Balancer, journal: Journal) -> JoinHandle<()> {
    let mut events = balancer.subscribe_events();
    tokio::spawn(async move {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if let Some(draft) = balancer_event_draft(&event)
                && let Err(e) = journal.append(draft)
            {
                tracing::warn!(error = %e, "cannot record a balancer event");
            }
        }
    })
}

/// The journal event for a balancer event worth an operator's attention.
pub fn balancer_event_draft(event: &BalancerEvent) -> Option<EventDraft> {
    Some(match event {
        BalancerEvent::ListenFailed {
            service,
            port_name,
            port,
            error,
        } => EventDraft::new(
            "balancer.listen_failed",
            Severity::Critical,
            format!("service:{service}"),
            format!("frontend {port_name} of {service} cannot listen on port {port}: {error}"),
        ),
        BalancerEvent::Ejected {
            service,
            instance,
            node,
            duration_ms,
            ejections,
        } => EventDraft::new(
            "balancer.ejected",
            Severity::Warning,
            format!("service:{instance}"),
            format!(
                "{instance} on {node} ejected from {service} for {} ms after connect failures (ejection {ejections})",
                duration_ms
            ),
        ),
        BalancerEvent::Restored {
            service,
            instance,
            node,
        } => EventDraft::new(
            "balancer.restored",
            Severity::Info,
            format!("service:{instance}"),
            format!("{instance} on {node} is back in {service}"),
        ),
        BalancerEvent::Listening { .. } | BalancerEvent::Closed { .. } => return None,
    })
}
