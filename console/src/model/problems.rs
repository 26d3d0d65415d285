//! The overview's ranked list of what is wrong right now, derived from the cluster and
//! the event timeline: what, where, since when, and where to look.

use super::cluster::Cluster;
use super::events::Timeline;
use std::collections::HashMap;

/// How far back OOM kills count as current problems.
const OOM_WINDOW_MS: i64 = 3_600_000;
/// Filesystems at or above this percentage are a problem.
pub const DISK_FULL_PERCENT: f64 = 90.0;

/// Where a problem's one key leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jump {
    /// The logs of an instance (or service when instance is 0) on a node.
    Logs {
        /// Node.
        node: String,
        /// Service.
        service: String,
        /// Instance index, 0 for all.
        instance: u32,
    },
    /// The node view (metrics, filesystems, its events).
    Node(String),
    /// The events view filtered to a node.
    Events(String),
}

/// One current problem.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// 0 is the most urgent.
    pub rank: u8,
    /// Short kind: "node down", "crash loop", ...
    pub kind: &'static str,
    /// What it is about: "web/2", "/var 97%".
    pub subject: String,
    /// The node.
    pub node: String,
    /// Unix ms since when it is known (0 if unknown).
    pub since_ms: i64,
    /// Where Enter leads.
    pub jump: Jump,
}

/// Derives the ranked problems; `first_seen` remembers when each problem was first seen
/// when the data carries no time of its own (keyed by kind, node and subject).
pub fn problems(
    cluster: &Cluster,
    timeline: &Timeline,
    now_ms: i64,
    first_seen: &mut HashMap<String, i64>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut seen = |kind: &str, node: &str, subject: &str| -> i64 {
        *first_seen
            .entry(format!("{kind}|{node}|{subject}"))
            .or_insert(now_ms)
    };
    for m in cluster.members.values() {
        if m.status == "down" || m.status == "suspect" {
            out.push(Problem {
                rank: if m.status == "down" { 0 } else { 3 },
                kind: if m.status == "down" {
                    "node down"
                } else {
                    "node suspect"
                },
                subject: m.name.clone(),
                node: m.name.clone(),
                since_ms: m.since_unix_ms,
                jump: Jump::Events(m.name.clone()),
            });
        }
    }
    for r in cluster.records.values() {
        let live = cluster
            .members
            .get(&r.name)
            .is_none_or(|m| m.status == "alive");
        for s in &r.services {
            for i in &s.instances {
                let (rank, kind) = match (i.state.as_str(), i.health.as_str()) {
                    ("crashloop", _) => (1, "crash loop"),
                    ("failed", _) => (1, "failed instance"),
                    (_, "critical") if live => (2, "critical"),
                    _ => continue,
                };
                let index =
                    i.id.rsplit('/')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                out.push(Problem {
                    rank,
                    kind,
                    subject: i.id.clone(),
                    node: r.name.clone(),
                    since_ms: seen(kind, &r.name, &i.id),
                    jump: Jump::Logs {
                        node: r.name.clone(),
                        service: s.name.clone(),
                        instance: index,
                    },
                });
            }
        }
        if let Some(sum) = &r.summary
            && sum.worst_disk_used_percent >= DISK_FULL_PERCENT
        {
            let subject = format!("{} {:.0}%", sum.worst_disk, sum.worst_disk_used_percent);
            out.push(Problem {
                rank: 2,
                kind: "disk full",
                since_ms: seen("disk", &r.name, &sum.worst_disk),
                subject,
                node: r.name.clone(),
                jump: Jump::Node(r.name.clone()),
            });
        }
    }
    let mut firing: HashMap<(String, String), i64> = HashMap::new();
    for e in &timeline.events {
        match e.kind.as_str() {
            "alert.firing" => {
                firing.insert((e.node.clone(), e.subject.clone()), e.time_unix_ms);
            }
            "alert.resolved" => {
                firing.remove(&(e.node.clone(), e.subject.clone()));
            }
            "kernel.oom_kill" if now_ms - e.time_unix_ms <= OOM_WINDOW_MS => out.push(Problem {
                rank: 2,
                kind: "OOM kill",
                subject: e
                    .fields
                    .get("process")
                    .cloned()
                    .unwrap_or_else(|| e.subject.clone()),
                node: e.node.clone(),
                since_ms: e.time_unix_ms,
                jump: Jump::Events(e.node.clone()),
            }),
            _ => {}
        }
    }
    for ((node, subject), since) in firing {
        out.push(Problem {
            rank: 4,
            kind: "alert firing",
            subject,
            jump: Jump::Node(node.clone()),
            node,
            since_ms: since,
        });
    }
    out.sort_by(|a, b| {
        (a.rank, a.since_ms, &a.node, &a.subject).cmp(&(b.rank, b.since_ms, &b.node, &b.subject))
    });
    out
}

/// Firing alerts: those without a later resolve in the timeline.
pub fn firing_alerts(problems: &[Problem]) -> usize {
    problems.iter().filter(|p| p.kind == "alert firing").count()
}
