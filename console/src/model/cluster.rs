//! The cluster as the contacted agent sees it: gossip members and catalog records from
//! WatchCluster, and the node and service rows derived from them for the tables.

use super::query::{Query, cmp_f64, index};
use std::collections::{BTreeMap, HashMap, VecDeque};
use strata_proto::v1::{ClusterUpdate, Member, NodeRecord};

/// How many CPU samples each node's sparkline keeps.
pub const TREND_LEN: usize = 32;

/// Columns of the nodes table, in order; sort indexes refer to these.
pub const NODE_COLUMNS: [&str; 8] = [
    "NAME", "STATUS", "CPU", "MEM", "DISK", "LOAD", "TREND", "ALERTS",
];
/// Columns of the services table, in order.
pub const SERVICE_COLUMNS: [&str; 6] = ["NAME", "PASSING", "PORT", "VERSION", "RESTARTS", "NODES"];

/// One node in the nodes table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Gossip status: alive, suspect, down, left (or "unknown" with a record only).
    pub status: String,
    /// Unix ms of the last status change.
    pub since_ms: i64,
    /// CPU busy percent.
    pub cpu: f64,
    /// Memory used percent.
    pub mem: f64,
    /// Fullest filesystem, percent.
    pub disk: f64,
    /// Its mount point.
    pub worst_disk: String,
    /// 1-minute load average.
    pub load: f64,
    /// Firing alerts.
    pub alerts: u32,
    /// Drained: no new connections.
    pub draining: bool,
    /// Instances the node runs.
    pub instances: usize,
}

/// One service across the cluster, in the services table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceRow {
    /// Service name.
    pub name: String,
    /// Instances whose health is passing.
    pub passing: usize,
    /// All instances.
    pub total: usize,
    /// Instances in crashloop or failed state.
    pub broken: usize,
    /// Frontend ports, "http:8080".
    pub ports: String,
    /// Versions seen, comma-separated.
    pub version: String,
    /// Restarts of all instances, when a per-node status was fetched.
    pub restarts: Option<u32>,
    /// Node names running it.
    pub nodes: Vec<String>,
}

/// Members, records and the rows derived from them.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// Catalog records by node name.
    pub records: BTreeMap<String, NodeRecord>,
    /// CPU busy samples per node, newest last, for sparklines.
    pub trend: HashMap<String, VecDeque<u8>>,
    /// Restart totals per (service, node) from per-node status replies.
    pub restarts: HashMap<(String, String), u32>,
    /// Node rows, one per known node, in name order.
    pub nodes: Vec<NodeRow>,
    /// Service rows, in name order.
    pub services: Vec<ServiceRow>,
    /// Visible node rows (indexes into `nodes`) for `node_query`.
    pub node_index: Vec<usize>,
    /// Visible service rows for `service_query`.
    pub service_index: Vec<usize>,
    /// Visible members (names) for `member_query`, in name order.
    pub member_index: Vec<String>,
    /// Sort and filter of the nodes table.
    pub node_query: Query,
    /// Sort and filter of the services table.
    pub service_query: Query,
    /// Filter of the members table.
    pub member_query: Query,
    /// Rows need rebuilding.
    dirty: bool,
}

impl Cluster {
    /// Applies one WatchCluster message.
    pub fn apply(&mut self, update: ClusterUpdate) {
        match update.kind.as_str() {
            "snapshot" => {
                self.members = update
                    .members
                    .into_iter()
                    .map(|m| (m.name.clone(), m))
                    .collect();
                self.records.clear();
                for r in update.records {
                    self.add_record(r);
                }
            }
            "removed" => {
                self.members.remove(&update.node);
                self.records.remove(&update.node);
                self.trend.remove(&update.node);
            }
            _ => {
                for m in update.members {
                    self.members.insert(m.name.clone(), m);
                }
                for r in update.records {
                    self.add_record(r);
                }
            }
        }
        self.dirty = true;
    }

    fn add_record(&mut self, record: NodeRecord) {
        let cpu = record.summary.as_ref().map_or(0.0, |s| s.cpu_busy_percent);
        let trend = self.trend.entry(record.name.clone()).or_default();
        if trend.len() == TREND_LEN {
            trend.pop_front();
        }
        trend.push_back(cpu.clamp(0.0, 100.0) as u8);
        self.records.insert(record.name.clone(), record);
    }

    /// Records the restart total of `service` on `node` from a per-node status.
    pub fn set_restarts(&mut self, service: &str, node: &str, restarts: u32) {
        let key = (service.to_string(), node.to_string());
        if self.restarts.get(&key) != Some(&restarts) {
            self.restarts.insert(key, restarts);
            self.dirty = true;
        }
    }

    /// Marks the indexes for rebuilding after a query change.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Rebuilds rows and indexes if anything changed since the last call; cheap otherwise.
    pub fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.rebuild_nodes();
        self.rebuild_services();
        self.member_index = self
            .members
            .values()
            .filter(|m| {
                self.member_query.matches(&format!(
                    "{} {} {} {}",
                    m.name, m.status, m.gossip_addr, m.grpc_addr
                ))
            })
            .map(|m| m.name.clone())
            .collect();
    }

    fn rebuild_nodes(&mut self) {
        let mut names: Vec<&String> = self.members.keys().collect();
        names.extend(
            self.records
                .keys()
                .filter(|n| !self.members.contains_key(*n)),
        );
        names.sort();
        self.nodes = names
            .into_iter()
            .map(|name| {
                let member = self.members.get(name);
                let record = self.records.get(name);
                let summary = record
                    .and_then(|r| r.summary.clone())
                    .or_else(|| member.and_then(|m| m.summary.clone()))
                    .unwrap_or_default();
                NodeRow {
                    name: name.clone(),
                    status: member.map_or("unknown".into(), |m| m.status.clone()),
                    since_ms: member.map_or(0, |m| m.since_unix_ms),
                    cpu: summary.cpu_busy_percent,
                    mem: summary.memory_used_percent,
                    disk: summary.worst_disk_used_percent,
                    worst_disk: summary.worst_disk,
                    load: summary.load1,
                    alerts: summary.alerts_firing,
                    draining: record.is_some_and(|r| r.draining)
                        || member.is_some_and(|m| m.draining),
                    instances: record
                        .map_or(0, |r| r.services.iter().map(|s| s.instances.len()).sum()),
                }
            })
            .collect();
        self.node_index = index(
            &self.nodes,
            &self.node_query,
            |r| format!("{} {} {}", r.name, r.status, r.worst_disk),
            |a, b, col| match col {
                1 => status_rank(&a.status).cmp(&status_rank(&b.status)),
                2 | 6 => cmp_f64(a.cpu, b.cpu),
                3 => cmp_f64(a.mem, b.mem),
                4 => cmp_f64(a.disk, b.disk),
                5 => cmp_f64(a.load, b.load),
                7 => a.alerts.cmp(&b.alerts),
                _ => a.name.cmp(&b.name),
            },
        );
    }

    fn rebuild_services(&mut self) {
        let mut by_name: BTreeMap<&str, ServiceRow> = BTreeMap::new();
        for record in self.records.values() {
            for s in &record.services {
                let row = by_name.entry(&s.name).or_insert_with(|| ServiceRow {
                    name: s.name.clone(),
                    ..ServiceRow::default()
                });
                row.total += s.instances.len();
                row.passing += s.instances.iter().filter(|i| i.health == "passing").count();
                row.broken += s
                    .instances
                    .iter()
                    .filter(|i| i.state == "crashloop" || i.state == "failed")
                    .count();
                if row.ports.is_empty() {
                    let mut ports: Vec<String> = s
                        .frontends
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect();
                    ports.sort();
                    row.ports = ports.join(",");
                }
                if !s.version.is_empty() && !row.version.split(',').any(|v| v == s.version) {
                    if !row.version.is_empty() {
                        row.version.push(',');
                    }
                    row.version.push_str(&s.version);
                }
                if let Some(r) = self.restarts.get(&(s.name.clone(), record.name.clone())) {
                    row.restarts = Some(row.restarts.unwrap_or(0) + r);
                }
                row.nodes.push(record.name.clone());
            }
        }
        self.services = by_name.into_values().collect();
        self.service_index = index(
            &self.services,
            &self.service_query,
            |r| format!("{} {} {}", r.name, r.version, r.nodes.join(" ")),
            |a, b, col| match col {
                1 => (a.passing * b.total.max(1)).cmp(&(b.passing * a.total.max(1))),
                2 => a.ports.cmp(&b.ports),
                3 => a.version.cmp(&b.version),
                4 => a.restarts.cmp(&b.restarts),
                5 => a.nodes.len().cmp(&b.nodes.len()),
                _ => a.name.cmp(&b.name),
            },
        );
    }

    /// Members by status: (alive, suspect, down).
    pub fn member_counts(&self) -> (usize, usize, usize) {
        let count = |s: &str| self.members.values().filter(|m| m.status == s).count();
        (count("alive"), count("suspect"), count("down"))
    }

    /// Instances by health across the catalog: (passing, warning, critical).
    pub fn health_counts(&self) -> (usize, usize, usize) {
        let (mut p, mut w, mut c) = (0, 0, 0);
        for i in self
            .records
            .values()
            .flat_map(|r| &r.services)
            .flat_map(|s| &s.instances)
        {
            match i.health.as_str() {
                "passing" => p += 1,
                "warning" => w += 1,
                "critical" => c += 1,
                _ => {}
            }
        }
        (p, w, c)
    }

    /// Names of members gossip considers alive, the ones node-scoped requests can reach.
    pub fn live_members(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.status == "alive")
            .map(|m| m.name.clone())
            .collect()
    }

    /// Nodes running `service` with how many instances each, in name order.
    pub fn service_nodes(&self, service: &str) -> Vec<(String, usize)> {
        self.records
            .values()
            .filter_map(|r| {
                let n: usize = r
                    .services
                    .iter()
                    .filter(|s| s.name == service)
                    .map(|s| s.instances.len())
                    .sum();
                r.services
                    .iter()
                    .any(|s| s.name == service)
                    .then(|| (r.name.clone(), n))
            })
            .collect()
    }
}

/// Problem-first order of member statuses.
pub fn status_rank(status: &str) -> u8 {
    match status {
        "down" => 0,
        "suspect" => 1,
        "unknown" => 2,
        "left" => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{CatalogInstance, CatalogService, NodeSummary};

    fn record(name: &str, cpu: f64, services: Vec<CatalogService>) -> NodeRecord {
        NodeRecord {
            name: name.into(),
            summary: Some(NodeSummary {
                cpu_busy_percent: cpu,
                ..Default::default()
            }),
            services,
            ..Default::default()
        }
    }

    fn web(health: &str, state: &str) -> CatalogService {
        CatalogService {
            name: "web".into(),
            version: "1".into(),
            instances: vec![CatalogInstance {
                id: "web/1".into(),
                health: health.into(),
                state: state.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_then_record_updates_rows_and_trend() {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate {
            kind: "snapshot".into(),
            members: vec![Member {
                name: "n1".into(),
                status: "alive".into(),
                ..Default::default()
            }],
            records: vec![record("n1", 10.0, vec![web("passing", "running")])],
            ..Default::default()
        });
        c.apply(ClusterUpdate {
            kind: "record".into(),
            records: vec![record("n2", 50.0, vec![web("critical", "crashloop")])],
            ..Default::default()
        });
        c.refresh();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].status, "unknown");
        assert_eq!(c.services.len(), 1);
        assert_eq!(
            (
                c.services[0].passing,
                c.services[0].total,
                c.services[0].broken
            ),
            (1, 2, 1)
        );
        assert_eq!(c.health_counts(), (1, 0, 1));
        c.node_query.sort_by(2);
        c.node_query.descending = true;
        c.touch();
        c.refresh();
        assert_eq!(c.nodes[c.node_index[0]].name, "n2");
        c.apply(ClusterUpdate {
            kind: "removed".into(),
            node: "n2".into(),
            ..Default::default()
        });
        c.refresh();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.trend["n1"].len(), 1);
    }
}
