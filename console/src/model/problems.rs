//! The overview's ranked list of what is wrong right now, derived from the cluster and
//! the event timeline: what, where, since when, and where to look.
//!
//! The list is kept up to date incrementally by [`Problems::update`]: each node's member
//! and record problems are cached and derived again only when the node changed, and the
//! timeline's only when events arrived or time moved an OOM kill out of its window.

use super::cluster::{Changes, Cluster};
use super::events::Timeline;
use std::cmp::Ordering;
use std::collections::HashMap;
use strata_proto::v1::{Health, InstanceState, MemberStatus};
use strata_proto::v1::{Member, NodeRecord};

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
    /// Where it was derived from (member 0, record 1, OOM kill 2, alert 3) and its place
    /// there: breaks ties of the ranking in derivation order, so the order is total.
    origin: (u8, usize),
}

/// The ranking: rank, then time, node and subject; ties in derivation order.
fn order(a: &Problem, b: &Problem) -> Ordering {
    (a.rank, a.since_ms, &a.node, &a.subject, a.origin)
        .cmp(&(b.rank, b.since_ms, &b.node, &b.subject, b.origin))
}

/// What the ranked problem list is derived from, cached between refreshes.
#[derive(Debug, Default)]
pub struct Problems {
    /// Member and record problems of each node that has any.
    by_node: HashMap<String, Vec<Problem>>,
    /// The timeline version `ooms` and `firing` are of; `None` when they are not listed.
    timeline_version: Option<u64>,
    /// Every OOM kill in the timeline, in timeline order, whether recent or not.
    ooms: Vec<Problem>,
    /// Indexes into `ooms` of those recent enough to be listed, ascending.
    live_ooms: Vec<usize>,
    /// Alerts firing at the end of the timeline.
    firing: Vec<Problem>,
    /// The list's previous buffer, reused when it is rebuilt.
    spare: Vec<Problem>,
}

impl Problems {
    /// Brings the ranked `list` up to date with the nodes `changes` names, the timeline
    /// and `now_ms`; `first_seen` remembers when each problem was first seen when the data
    /// carries no time of its own (keyed by kind, node and subject).
    pub fn update(
        &mut self,
        list: &mut Vec<Problem>,
        cluster: &Cluster,
        changes: &Changes,
        timeline: &Timeline,
        now_ms: i64,
        first_seen: &mut HashMap<String, i64>,
    ) {
        if changes.all {
            list.clear();
            self.by_node.clear();
            self.timeline_version = None;
        }
        let mut removed = Vec::new();
        let mut added = Vec::new();
        let mut key = String::new();
        for name in &changes.nodes {
            let new = node_problems(
                cluster.members.get(name),
                cluster.records.get(name),
                now_ms,
                first_seen,
                &mut key,
            );
            let old = match self.by_node.get_mut(name) {
                Some(old) if *old == new => continue,
                Some(old) => std::mem::take(old),
                None if new.is_empty() => continue,
                None => Vec::new(),
            };
            removed.extend(old);
            added.extend(new.iter().cloned());
            if new.is_empty() {
                self.by_node.remove(name);
            } else {
                self.by_node.insert(name.clone(), new);
            }
        }
        self.update_timeline(timeline, now_ms, &mut removed, &mut added);
        self.splice(list, &removed, added);
    }

    /// Notes in `removed` and `added` how the listed OOM kills and alerts change.
    fn update_timeline(
        &mut self,
        timeline: &Timeline,
        now_ms: i64,
        removed: &mut Vec<Problem>,
        added: &mut Vec<Problem>,
    ) {
        let version = timeline.version();
        if self.timeline_version == Some(version) {
            let live = recent(&self.ooms, now_ms);
            if live != self.live_ooms {
                for &i in &self.live_ooms {
                    if live.binary_search(&i).is_err() {
                        removed.push(self.ooms[i].clone());
                    }
                }
                for &i in &live {
                    if self.live_ooms.binary_search(&i).is_err() {
                        added.push(self.ooms[i].clone());
                    }
                }
                self.live_ooms = live;
            }
            return;
        }
        let (ooms, firing) = from_timeline(timeline);
        if self.timeline_version.is_some() {
            let old = std::mem::replace(&mut self.ooms, ooms);
            removed.extend(
                old.into_iter()
                    .enumerate()
                    .filter(|(i, _)| self.live_ooms.binary_search(i).is_ok())
                    .map(|(_, p)| p),
            );
            removed.append(&mut self.firing);
        } else {
            self.ooms = ooms;
        }
        self.firing = firing;
        self.live_ooms = recent(&self.ooms, now_ms);
        self.timeline_version = Some(version);
        added.extend(self.firing.iter().cloned());
        added.extend(self.live_ooms.iter().map(|&i| self.ooms[i].clone()));
    }

    /// Takes `removed` out of the ranked `list` and merges `added` in, in one pass.
    fn splice(&mut self, list: &mut Vec<Problem>, removed: &[Problem], mut added: Vec<Problem>) {
        if removed.is_empty() && added.is_empty() {
            return;
        }
        let mut gone: Vec<usize> = removed
            .iter()
            .filter_map(|p| list.binary_search_by(|q| order(q, p)).ok())
            .collect();
        gone.sort_unstable();
        added.sort_by(order);
        let mut old = std::mem::replace(list, std::mem::take(&mut self.spare));
        list.clear();
        list.reserve(old.len() + added.len());
        let mut gone = gone.into_iter().peekable();
        let mut added = added.into_iter().peekable();
        for (i, p) in old.drain(..).enumerate() {
            if gone.next_if_eq(&i).is_some() {
                continue;
            }
            while let Some(a) = added.next_if(|a| order(a, &p).is_lt()) {
                list.push(a);
            }
            list.push(p);
        }
        list.extend(added);
        self.spare = old;
    }
}

/// When the problem `kind` of `subject` on `node` was first seen, `now_ms` if just now;
/// `key` is scratch space for the map key.
fn seen(
    first_seen: &mut HashMap<String, i64>,
    key: &mut String,
    now_ms: i64,
    kind: &str,
    node: &str,
    subject: &str,
) -> i64 {
    key.clear();
    for part in [kind, "|", node, "|", subject] {
        key.push_str(part);
    }
    if let Some(&t) = first_seen.get(key.as_str()) {
        return t;
    }
    first_seen.insert(key.clone(), now_ms);
    now_ms
}

/// The problems of one node: its member's status, its instances and its disk.
fn node_problems(
    member: Option<&Member>,
    record: Option<&NodeRecord>,
    now_ms: i64,
    first_seen: &mut HashMap<String, i64>,
    key: &mut String,
) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Some(m) = member
        && (m.status() == MemberStatus::Down || m.status() == MemberStatus::Suspect)
    {
        let down = m.status() == MemberStatus::Down;
        out.push(Problem {
            rank: if down { 0 } else { 3 },
            kind: if down { "node down" } else { "node suspect" },
            subject: m.name.clone(),
            node: m.name.clone(),
            since_ms: m.since_unix_ms,
            jump: Jump::Events(m.name.clone()),
            origin: (0, 0),
        });
    }
    let Some(r) = record else {
        return out;
    };
    let live = member.is_none_or(|m| m.status() == MemberStatus::Alive);
    for s in &r.services {
        for i in &s.instances {
            let Some((rank, kind)) = instance_problem(i.state(), i.health(), live) else {
                continue;
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
                since_ms: seen(first_seen, key, now_ms, kind, &r.name, &i.id),
                jump: Jump::Logs {
                    node: r.name.clone(),
                    service: s.name.clone(),
                    instance: index,
                },
                origin: (1, out.len()),
            });
        }
    }
    if let Some(sum) = &r.summary
        && sum.worst_disk_used_percent >= DISK_FULL_PERCENT
    {
        out.push(Problem {
            rank: 2,
            kind: "disk full",
            since_ms: seen(first_seen, key, now_ms, "disk", &r.name, &sum.worst_disk),
            subject: format!("{} {:.0}%", sum.worst_disk, sum.worst_disk_used_percent),
            node: r.name.clone(),
            jump: Jump::Node(r.name.clone()),
            origin: (1, out.len()),
        });
    }
    out
}

/// Every OOM kill of the timeline (in timeline order) and the alerts still firing at
/// its end: those without a later resolve.
/// The problem an instance is, if any: its rank and kind. A critical check counts only on
/// a live node (a down node's instances are its own problem).
fn instance_problem(
    state: InstanceState,
    health: Health,
    live: bool,
) -> Option<(u8, &'static str)> {
    match (state, health) {
        (InstanceState::Crashloop, _) => Some((1, "crash loop")),
        (InstanceState::Failed, _) => Some((1, "failed instance")),
        (_, Health::Critical) if live => Some((2, "critical")),
        _ => None,
    }
}

fn from_timeline(timeline: &Timeline) -> (Vec<Problem>, Vec<Problem>) {
    let mut ooms = Vec::new();
    let mut firing: HashMap<(&str, &str), i64> = HashMap::new();
    for (at, e) in timeline.events.iter().enumerate() {
        match e.kind.as_str() {
            "alert.firing" => {
                firing.insert((&e.node, &e.subject), e.time_unix_ms);
            }
            "alert.resolved" => {
                firing.remove(&(e.node.as_str(), e.subject.as_str()));
            }
            "kernel.oom_kill" => ooms.push(Problem {
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
                origin: (2, at),
            }),
            _ => {}
        }
    }
    let firing = firing
        .into_iter()
        .map(|((node, subject), since)| Problem {
            rank: 4,
            kind: "alert firing",
            subject: subject.to_string(),
            jump: Jump::Node(node.to_string()),
            node: node.to_string(),
            since_ms: since,
            origin: (3, 0),
        })
        .collect();
    (ooms, firing)
}

/// Indexes of the OOM kills in `ooms` recent enough at `now_ms` to be problems.
fn recent(ooms: &[Problem], now_ms: i64) -> Vec<usize> {
    (0..ooms.len())
        .filter(|&i| now_ms - ooms[i].since_ms <= OOM_WINDOW_MS)
        .collect()
}

/// Firing alerts: those without a later resolve in the timeline.
pub fn firing_alerts(problems: &[Problem]) -> usize {
    problems.iter().filter(|p| p.kind == "alert firing").count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Model, Msg};
    use strata_proto::v1::ClusterUpdateKind;
    use strata_proto::v1::{
        CatalogInstance, CatalogService, ClusterUpdate, Event, NodeSummary, Severity,
    };

    /// The problem list as the console derived it before it was kept incrementally.
    fn from_scratch(
        cluster: &Cluster,
        timeline: &Timeline,
        now_ms: i64,
        first_seen: &mut HashMap<String, i64>,
    ) -> Vec<Problem> {
        let origin = (0, 0);
        let mut out = Vec::new();
        let mut seen = |kind: &str, node: &str, subject: &str| -> i64 {
            *first_seen
                .entry(format!("{kind}|{node}|{subject}"))
                .or_insert(now_ms)
        };
        for m in cluster.members.values() {
            if m.status() == MemberStatus::Down || m.status() == MemberStatus::Suspect {
                out.push(Problem {
                    rank: if m.status() == MemberStatus::Down {
                        0
                    } else {
                        3
                    },
                    kind: if m.status() == MemberStatus::Down {
                        "node down"
                    } else {
                        "node suspect"
                    },
                    subject: m.name.clone(),
                    node: m.name.clone(),
                    since_ms: m.since_unix_ms,
                    jump: Jump::Events(m.name.clone()),
                    origin,
                });
            }
        }
        for r in cluster.records.values() {
            let live = cluster
                .members
                .get(&r.name)
                .is_none_or(|m| m.status() == MemberStatus::Alive);
            for s in &r.services {
                for i in &s.instances {
                    let Some((rank, kind)) = instance_problem(i.state(), i.health(), live) else {
                        continue;
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
                        origin,
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
                    origin,
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
                "kernel.oom_kill" if now_ms - e.time_unix_ms <= OOM_WINDOW_MS => {
                    out.push(Problem {
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
                        origin,
                    })
                }
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
                origin,
            });
        }
        out.sort_by(|a, b| {
            (a.rank, a.since_ms, &a.node, &a.subject)
                .cmp(&(b.rank, b.since_ms, &b.node, &b.subject))
        });
        out
    }

    fn without_origin(list: &[Problem]) -> Vec<Problem> {
        list.iter()
            .map(|p| Problem {
                origin: (0, 0),
                ..p.clone()
            })
            .collect()
    }

    #[test]
    fn incremental_problems_match_a_rebuild_after_every_change() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut m = Model::new("a:1", 10_000_000);
        let mut first_seen = HashMap::new();
        let mut seq = 0;
        for step in 0..400 {
            let n = rng.usize(0..8);
            let node = format!("n{n}");
            match rng.usize(0..8) {
                0 => m.update(Msg::Cluster(ClusterUpdate {
                    kind: ClusterUpdateKind::Removed as i32,
                    node: node.clone(),
                    ..Default::default()
                })),
                1 | 2 => m.update(Msg::Cluster(ClusterUpdate {
                    kind: ClusterUpdateKind::Member as i32,
                    members: vec![Member {
                        name: node.clone(),
                        status: [
                            MemberStatus::Alive,
                            MemberStatus::Suspect,
                            MemberStatus::Down,
                        ][rng.usize(0..3)] as i32,
                        since_unix_ms: rng.i64(0..3) * 1000,
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                3 => {
                    seq += 1;
                    let kind =
                        ["alert.firing", "alert.resolved", "kernel.oom_kill"][rng.usize(0..3)];
                    m.update(Msg::Events(vec![Event {
                        node: node.clone(),
                        seq,
                        time_unix_ms: m.now_ms - rng.i64(0..3) * 2_000_000,
                        kind: kind.into(),
                        severity: Severity::Warning as i32,
                        subject: ["memory", "filesystem:/"][rng.usize(0..2)].into(),
                        ..Default::default()
                    }]));
                }
                4 => m.now_ms += rng.i64(0..3) * 1_000_000,
                5 if rng.usize(0..20) == 0 => m.update(Msg::Cluster(ClusterUpdate {
                    kind: ClusterUpdateKind::Snapshot as i32,
                    members: m.cluster.members.values().cloned().collect(),
                    records: m.cluster.records.values().cloned().collect(),
                    ..Default::default()
                })),
                _ => {
                    let services = (0..rng.usize(0..3))
                        .map(|s| CatalogService {
                            name: format!("s{s}"),
                            instances: (0..rng.usize(0..3))
                                .map(|i| CatalogInstance {
                                    id: format!("s{s}/{i}"),
                                    health: [Health::Passing, Health::Critical][rng.usize(0..2)]
                                        as i32,
                                    state: [
                                        InstanceState::Running,
                                        InstanceState::Crashloop,
                                        InstanceState::Failed,
                                    ][rng.usize(0..3)]
                                        as i32,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect();
                    m.update(Msg::Cluster(ClusterUpdate {
                        kind: ClusterUpdateKind::Record as i32,
                        records: vec![NodeRecord {
                            name: node.clone(),
                            summary: Some(NodeSummary {
                                worst_disk_used_percent: rng.usize(0..2) as f64 * 95.0,
                                worst_disk: "/".into(),
                                ..Default::default()
                            }),
                            services,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }));
                }
            }
            m.refresh();
            let expected = from_scratch(&m.cluster, &m.timeline, m.now_ms, &mut first_seen);
            assert_eq!(without_origin(&m.problems), expected, "step {step}");
            assert_eq!(m.first_seen, first_seen, "step {step}");
        }
    }
}
