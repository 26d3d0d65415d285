//! The cluster as the contacted agent sees it: gossip members and catalog records from
//! WatchCluster, and the node and service rows derived from them for the tables.
//!
//! Rows are kept incrementally: [`Cluster::apply`] notes which nodes changed, and
//! [`Cluster::refresh`] rebuilds only their node rows and the service rows their records
//! contribute to, from per-(service, node) contributions cached when a record arrives.

use super::query::{Query, cmp_f64, sort_index};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use strata_proto::v1::{
    CatalogService, ClusterUpdate, ClusterUpdateKind, Health, Member, MemberStatus, NodeRecord,
};

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
    /// Gossip status (unknown for a node known from its record only).
    pub status: MemberStatus,
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

/// What one [`Cluster::refresh`] changed, for state derived further (the problem list).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// A snapshot replaced everything: derived state starts over from `nodes`.
    pub all: bool,
    /// Names of the nodes whose member or record changed (every node when `all`), in
    /// name order; a name may no longer be known (removed).
    pub nodes: Vec<String>,
}

/// Instances by health: passing, warning, critical.
type HealthCounts = (usize, usize, usize);

/// One listing of a service in a node's record, reduced to what its service row needs.
#[derive(Debug)]
struct Listing {
    total: usize,
    passing: usize,
    broken: usize,
    /// Sorted "name:port" frontends, comma-separated.
    ports: String,
    version: String,
}

impl Listing {
    fn of(s: &CatalogService) -> Listing {
        let mut ports: Vec<String> = s
            .frontends
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        ports.sort();
        Listing {
            total: s.instances.len(),
            passing: s
                .instances
                .iter()
                .filter(|i| i.health().is_passing())
                .count(),
            broken: s.instances.iter().filter(|i| i.state().is_broken()).count(),
            ports: ports.join(","),
            version: s.version.clone(),
        }
    }
}

/// Every listing of one service, by node name, and the sums its row shows.
#[derive(Debug, Default)]
struct ServiceListings {
    /// Listings of each node, in record order.
    by_node: BTreeMap<String, Vec<Listing>>,
    /// Instances, passing instances and broken instances of all listings.
    total: usize,
    passing: usize,
    broken: usize,
    /// Listings with frontends.
    with_ports: usize,
    /// Listings by their (non-empty) version.
    versions: HashMap<String, usize>,
    /// Listings whose version has a comma, which the version column cannot tell apart.
    comma_versions: usize,
}

impl ServiceListings {
    /// Adds a listing of the service on `node` after its others there.
    fn add(&mut self, node: &str, listing: Listing) {
        self.count(&listing, true);
        match self.by_node.get_mut(node) {
            Some(listings) => listings.push(listing),
            None => {
                self.by_node.insert(node.to_string(), vec![listing]);
            }
        }
    }

    /// Removes the listings of the service on `node`.
    fn remove(&mut self, node: &str) {
        for listing in self.by_node.remove(node).unwrap_or_default() {
            self.count(&listing, false);
        }
    }

    fn count(&mut self, l: &Listing, add: bool) {
        let sum = |to: &mut usize, n: usize| *to = if add { *to + n } else { to.saturating_sub(n) };
        sum(&mut self.total, l.total);
        sum(&mut self.passing, l.passing);
        sum(&mut self.broken, l.broken);
        sum(&mut self.with_ports, usize::from(!l.ports.is_empty()));
        sum(
            &mut self.comma_versions,
            usize::from(l.version.contains(',')),
        );
        if l.version.is_empty() {
            return;
        }
        match self.versions.get_mut(&l.version) {
            Some(n) if !add && *n <= 1 => {
                self.versions.remove(&l.version);
            }
            Some(n) => sum(n, 1),
            None if add => {
                self.versions.insert(l.version.clone(), 1);
            }
            None => {}
        }
    }
}

/// What a node's record contributes beyond its own row.
#[derive(Debug, Default)]
struct NodeContribution {
    /// The distinct services its record lists.
    services: Vec<String>,
    /// Its instances by health.
    health: HealthCounts,
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
    /// Restart totals from per-node status replies, by service, then by node.
    pub restarts: HashMap<String, HashMap<String, u32>>,
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
    /// A snapshot arrived: everything is derived again.
    reset: bool,
    /// Nodes whose member or record changed since the last refresh.
    changed: BTreeSet<String>,
    /// Members changed since the last refresh.
    members_changed: bool,
    /// Services whose restart totals changed since the last refresh.
    restarts_changed: BTreeSet<String>,
    /// A query changed: filters and indexes are computed again.
    requery: bool,
    /// Per node with a record: its services and health counts.
    contributions: HashMap<String, NodeContribution>,
    /// Per service: each node's listings of it, by node name.
    listings: HashMap<String, ServiceListings>,
    /// Whether each of `nodes` passes the node filter.
    node_match: Vec<bool>,
    /// Whether each of `services` passes the service filter.
    service_match: Vec<bool>,
    /// Instances by health across the catalog.
    health: HealthCounts,
}

impl Cluster {
    /// Applies one WatchCluster message.
    pub fn apply(&mut self, update: ClusterUpdate) {
        match update.kind() {
            ClusterUpdateKind::Snapshot => {
                self.members = update
                    .members
                    .into_iter()
                    .map(|m| (m.name.clone(), m))
                    .collect();
                self.records.clear();
                for r in update.records {
                    self.add_record(r);
                }
                self.reset = true;
            }
            ClusterUpdateKind::Removed => {
                self.members.remove(&update.node);
                self.records.remove(&update.node);
                self.trend.remove(&update.node);
                self.changed.insert(update.node);
                self.members_changed = true;
            }
            _ => {
                for m in update.members {
                    self.changed.insert(m.name.clone());
                    self.members.insert(m.name.clone(), m);
                    self.members_changed = true;
                }
                for r in update.records {
                    self.changed.insert(r.name.clone());
                    self.add_record(r);
                }
            }
        }
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
        let known = self.restarts.get(service).and_then(|m| m.get(node));
        if known != Some(&restarts) {
            self.restarts
                .entry(service.to_string())
                .or_default()
                .insert(node.to_string(), restarts);
            self.restarts_changed.insert(service.to_string());
        }
    }

    /// Marks the filters and indexes for rebuilding after a query change.
    pub fn touch(&mut self) {
        self.requery = true;
    }

    /// Brings rows and indexes up to date with what changed since the last call, and
    /// says which nodes that was; cheap when nothing did.
    pub fn refresh(&mut self) -> Changes {
        let all = std::mem::take(&mut self.reset);
        let nodes: Vec<String> = if all {
            self.changed.clear();
            self.nodes.clear();
            self.node_match.clear();
            self.services.clear();
            self.service_match.clear();
            self.contributions.clear();
            self.listings.clear();
            self.health = (0, 0, 0);
            let mut names: Vec<String> = self.members.keys().cloned().collect();
            names.extend(
                self.records
                    .keys()
                    .filter(|n| !self.members.contains_key(*n))
                    .cloned(),
            );
            names.sort();
            names
        } else {
            std::mem::take(&mut self.changed).into_iter().collect()
        };
        let requery = std::mem::take(&mut self.requery) || all;
        let members_changed = std::mem::take(&mut self.members_changed) || all;
        let mut touched: BTreeMap<String, Vec<&str>> = std::mem::take(&mut self.restarts_changed)
            .into_iter()
            .map(|s| (s, Vec::new()))
            .collect();

        let reindex_nodes = self.update_node_rows(&nodes, requery);
        for name in &nodes {
            self.update_contribution(name, &mut touched);
        }
        let reindex_services = self.update_service_rows(touched, requery);

        if reindex_nodes {
            let mut idx = std::mem::take(&mut self.node_index);
            idx.clear();
            idx.extend((0..self.nodes.len()).filter(|&i| self.node_match[i]));
            sort_index(&mut idx, &self.nodes, &self.node_query, node_cmp);
            self.node_index = idx;
        }
        if reindex_services {
            let mut idx = std::mem::take(&mut self.service_index);
            idx.clear();
            idx.extend((0..self.services.len()).filter(|&i| self.service_match[i]));
            sort_index(&mut idx, &self.services, &self.service_query, service_cmp);
            self.service_index = idx;
        }
        if members_changed || requery {
            let query = &self.member_query;
            self.member_index = self
                .members
                .values()
                .filter(|m| {
                    query.filter.is_empty()
                        || query.matches(&format!(
                            "{} {} {} {}",
                            m.name,
                            m.status(),
                            m.gossip_addr,
                            m.grpc_addr
                        ))
                })
                .map(|m| m.name.clone())
                .collect();
        }
        Changes { all, nodes }
    }

    /// Rebuilds the rows of `names` in place (inserting or removing rows of nodes that
    /// appeared or went), and the filter matches of all rows when `requery`; true when
    /// the node index must be rebuilt.
    fn update_node_rows(&mut self, names: &[String], requery: bool) -> bool {
        let needle = self.node_query.filter.to_lowercase();
        let sort = self.node_query.sort;
        let mut reindex = requery;
        for name in names {
            let row = node_row(name, self.members.get(name), self.records.get(name));
            let at = self
                .nodes
                .binary_search_by(|r| r.name.as_str().cmp(name.as_str()));
            match (at, row) {
                (Ok(i), Some(row)) => {
                    let matched = node_matches(&needle, &row);
                    let was = self.node_match[i];
                    if was != matched || (matched && !same_node_key(&self.nodes[i], &row, sort)) {
                        reindex = true;
                    }
                    self.nodes[i] = row;
                    self.node_match[i] = matched;
                }
                (Ok(i), None) => {
                    self.nodes.remove(i);
                    self.node_match.remove(i);
                    reindex = true;
                }
                (Err(i), Some(row)) => {
                    self.node_match.insert(i, node_matches(&needle, &row));
                    self.nodes.insert(i, row);
                    reindex = true;
                }
                (Err(_), None) => {}
            }
        }
        if requery {
            for (row, matched) in self.nodes.iter().zip(self.node_match.iter_mut()) {
                *matched = node_matches(&needle, row);
            }
        }
        reindex
    }

    /// Replaces what node `name`'s record contributes to service rows and health counts,
    /// noting in `touched` each service whose listings on `name` changed.
    fn update_contribution<'a>(
        &mut self,
        name: &'a str,
        touched: &mut BTreeMap<String, Vec<&'a str>>,
    ) {
        let mut touch = |service: &str| match touched.get_mut(service) {
            Some(nodes) => nodes.push(name),
            None => {
                touched.insert(service.to_string(), vec![name]);
            }
        };
        if let Some(old) = self.contributions.remove(name) {
            self.health.0 -= old.health.0;
            self.health.1 -= old.health.1;
            self.health.2 -= old.health.2;
            for service in &old.services {
                if let Some(listings) = self.listings.get_mut(service) {
                    listings.remove(name);
                }
                touch(service);
            }
        }
        let Some(record) = self.records.get(name) else {
            return;
        };
        let mut new = NodeContribution::default();
        for s in &record.services {
            for i in &s.instances {
                match i.health() {
                    Health::Passing => new.health.0 += 1,
                    Health::Warning => new.health.1 += 1,
                    Health::Critical => new.health.2 += 1,
                    Health::Unknown => {}
                }
            }
            let listings = match self.listings.get_mut(&s.name) {
                Some(listings) => listings,
                None => self.listings.entry(s.name.clone()).or_default(),
            };
            if !listings.by_node.contains_key(name) {
                new.services.push(s.name.clone());
                touch(&s.name);
            }
            listings.add(name, Listing::of(s));
        }
        self.health.0 += new.health.0;
        self.health.1 += new.health.1;
        self.health.2 += new.health.2;
        self.contributions.insert(name.to_string(), new);
    }

    /// Rebuilds the rows of the `touched` services from their listings, first syncing
    /// their node lists for the nodes named; true when the service index must be rebuilt.
    fn update_service_rows(&mut self, touched: BTreeMap<String, Vec<&str>>, requery: bool) -> bool {
        let needle = self.service_query.filter.to_lowercase();
        let mut reindex = requery;
        for (service, nodes) in touched {
            let at = self
                .services
                .binary_search_by(|r| r.name.as_str().cmp(service.as_str()));
            let listings = match self.listings.get(&service) {
                Some(listings) if !listings.by_node.is_empty() => listings,
                _ => {
                    self.listings.remove(&service);
                    if let Ok(i) = at {
                        self.services.remove(i);
                        self.service_match.remove(i);
                        reindex = true;
                    }
                    continue;
                }
            };
            let i = match at {
                Ok(i) => i,
                Err(i) => {
                    self.services.insert(
                        i,
                        ServiceRow {
                            name: service.clone(),
                            ..ServiceRow::default()
                        },
                    );
                    self.service_match.insert(i, false);
                    i
                }
            };
            let row = &mut self.services[i];
            for node in nodes {
                let count = listings.by_node.get(node).map_or(0, Vec::len);
                sync_nodes(&mut row.nodes, node, count);
            }
            summarize(row, listings, self.restarts.get(&service));
            self.service_match[i] = service_matches(&needle, row);
            reindex = true;
        }
        if requery {
            for (row, matched) in self.services.iter().zip(self.service_match.iter_mut()) {
                *matched = service_matches(&needle, row);
            }
        }
        reindex
    }

    /// Members by status: (alive, suspect, down).
    pub fn member_counts(&self) -> (usize, usize, usize) {
        let count = |s| self.members.values().filter(|m| m.status() == s).count();
        (
            count(MemberStatus::Alive),
            count(MemberStatus::Suspect),
            count(MemberStatus::Down),
        )
    }

    /// Instances by health across the catalog as of the last [`Cluster::refresh`]:
    /// (passing, warning, critical).
    pub fn health_counts(&self) -> (usize, usize, usize) {
        self.health
    }

    /// Names of members gossip considers alive, the ones node-scoped requests can reach.
    pub fn live_members(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.status() == MemberStatus::Alive)
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

/// The row of node `name` from its member and record, if it has either.
fn node_row(name: &str, member: Option<&Member>, record: Option<&NodeRecord>) -> Option<NodeRow> {
    if member.is_none() && record.is_none() {
        return None;
    }
    let summary = record
        .and_then(|r| r.summary.as_ref())
        .or_else(|| member.and_then(|m| m.summary.as_ref()));
    Some(NodeRow {
        name: name.to_string(),
        status: member.map_or(MemberStatus::Unknown, Member::status),
        since_ms: member.map_or(0, |m| m.since_unix_ms),
        cpu: summary.map_or(0.0, |s| s.cpu_busy_percent),
        mem: summary.map_or(0.0, |s| s.memory_used_percent),
        disk: summary.map_or(0.0, |s| s.worst_disk_used_percent),
        worst_disk: summary.map(|s| s.worst_disk.clone()).unwrap_or_default(),
        load: summary.map_or(0.0, |s| s.load1),
        alerts: summary.map_or(0, |s| s.alerts_firing),
        draining: record.is_some_and(|r| r.draining) || member.is_some_and(|m| m.draining),
        instances: record.map_or(0, |r| r.services.iter().map(|s| s.instances.len()).sum()),
    })
}

/// Orders node rows by the nodes table's column `col`.
fn node_cmp(a: &NodeRow, b: &NodeRow, col: usize) -> std::cmp::Ordering {
    match col {
        1 => a.status.attention().cmp(&b.status.attention()),
        2 | 6 => cmp_f64(a.cpu, b.cpu),
        3 => cmp_f64(a.mem, b.mem),
        4 => cmp_f64(a.disk, b.disk),
        5 => cmp_f64(a.load, b.load),
        7 => a.alerts.cmp(&b.alerts),
        _ => a.name.cmp(&b.name),
    }
}

/// Whether two rows of a node have the same key for the nodes table's column `col`, so
/// replacing one by the other leaves the sorted index as it is.
fn same_node_key(a: &NodeRow, b: &NodeRow, col: usize) -> bool {
    match col {
        1 => a.status == b.status,
        2 | 6 => a.cpu.to_bits() == b.cpu.to_bits(),
        3 => a.mem.to_bits() == b.mem.to_bits(),
        4 => a.disk.to_bits() == b.disk.to_bits(),
        5 => a.load.to_bits() == b.load.to_bits(),
        7 => a.alerts == b.alerts,
        _ => a.name == b.name,
    }
}

/// Orders service rows by the services table's column `col`.
fn service_cmp(a: &ServiceRow, b: &ServiceRow, col: usize) -> std::cmp::Ordering {
    match col {
        1 => (a.passing * b.total.max(1)).cmp(&(b.passing * a.total.max(1))),
        2 => a.ports.cmp(&b.ports),
        3 => a.version.cmp(&b.version),
        4 => a.restarts.cmp(&b.restarts),
        5 => a.nodes.len().cmp(&b.nodes.len()),
        _ => a.name.cmp(&b.name),
    }
}

/// Whether a node row passes the lower-case filter `needle`.
fn node_matches(needle: &str, r: &NodeRow) -> bool {
    needle.is_empty()
        || format!("{} {} {}", r.name, r.status, r.worst_disk)
            .to_lowercase()
            .contains(needle)
}

/// Whether a service row passes the lower-case filter `needle`.
fn service_matches(needle: &str, r: &ServiceRow) -> bool {
    needle.is_empty()
        || format!("{} {} {}", r.name, r.version, r.nodes.join(" "))
            .to_lowercase()
            .contains(needle)
}

/// Makes `node` appear `count` times in the name-ordered `nodes`.
fn sync_nodes(nodes: &mut Vec<String>, node: &str, count: usize) {
    let start = nodes.partition_point(|n| n.as_str() < node);
    let have = nodes[start..].iter().take_while(|n| *n == node).count();
    if have < count {
        nodes.splice(
            start..start,
            std::iter::repeat_n(node.to_string(), count - have),
        );
    } else if have > count {
        nodes.drain(start..start + have - count);
    }
}

/// Brings a service row's totals, ports, versions and restarts up to date with its
/// listings (its nodes are kept by [`sync_nodes`]): ports are the first listing's with
/// frontends and versions the distinct ones in order of appearance, by node name.
fn summarize(
    row: &mut ServiceRow,
    listings: &ServiceListings,
    restarts: Option<&HashMap<String, u32>>,
) {
    row.total = listings.total;
    row.passing = listings.passing;
    row.broken = listings.broken;
    let all = || listings.by_node.values().flatten();
    let ports = if listings.with_ports == 0 {
        ""
    } else {
        all()
            .map(|l| l.ports.as_str())
            .find(|p| !p.is_empty())
            .unwrap_or_default()
    };
    if row.ports != ports {
        row.ports = ports.to_string();
    }
    if listings.comma_versions == 0 && listings.versions.len() <= 1 {
        let version = listings.versions.keys().next().map_or("", String::as_str);
        if row.version != version {
            row.version = version.to_string();
        }
    } else {
        row.version.clear();
        for l in all() {
            if !l.version.is_empty() && !row.version.split(',').any(|v| v == l.version) {
                if !row.version.is_empty() {
                    row.version.push(',');
                }
                row.version.push_str(&l.version);
            }
        }
    }
    row.restarts = None;
    for (node, r) in restarts.into_iter().flatten() {
        for _ in listings.by_node.get(node).into_iter().flatten() {
            row.restarts = Some(row.restarts.unwrap_or(0) + r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{CatalogInstance, CatalogService, InstanceState, NodeSummary};

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

    fn web(health: Health, state: InstanceState) -> CatalogService {
        CatalogService {
            name: "web".into(),
            version: "1".into(),
            instances: vec![CatalogInstance {
                id: "web/1".into(),
                health: health as i32,
                state: state as i32,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn snapshot_then_record_updates_rows_and_trend() {
        let mut c = Cluster::default();
        c.apply(ClusterUpdate {
            kind: ClusterUpdateKind::Snapshot as i32,
            members: vec![Member {
                name: "n1".into(),
                status: MemberStatus::Alive as i32,
                ..Default::default()
            }],
            records: vec![record(
                "n1",
                10.0,
                vec![web(Health::Passing, InstanceState::Running)],
            )],
            ..Default::default()
        });
        c.apply(ClusterUpdate {
            kind: ClusterUpdateKind::Record as i32,
            records: vec![record(
                "n2",
                50.0,
                vec![web(Health::Critical, InstanceState::Crashloop)],
            )],
            ..Default::default()
        });
        c.refresh();
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].status, MemberStatus::Unknown);
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
            kind: ClusterUpdateKind::Removed as i32,
            node: "n2".into(),
            ..Default::default()
        });
        c.refresh();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.trend["n1"].len(), 1);
    }
}

#[cfg(test)]
mod incremental_tests {
    use super::*;
    use strata_proto::v1::{CatalogInstance, InstanceState, NodeSummary};

    fn random_record(rng: &mut fastrand::Rng, n: usize) -> NodeRecord {
        let services = (0..rng.usize(0..4))
            .map(|_| {
                let s = rng.usize(0..5);
                CatalogService {
                    name: format!("svc-{s}"),
                    version: ["", "1", "2", "1,2"][rng.usize(0..4)].into(),
                    frontends: if rng.bool() {
                        [("http".to_string(), 8000 + s as u32)].into()
                    } else {
                        Default::default()
                    },
                    instances: (0..rng.usize(0..3))
                        .map(|i| CatalogInstance {
                            id: format!("svc-{s}/{i}"),
                            health: [Health::Passing, Health::Warning, Health::Critical]
                                [rng.usize(0..3)] as i32,
                            state: [
                                InstanceState::Running,
                                InstanceState::Crashloop,
                                InstanceState::Failed,
                            ][rng.usize(0..3)] as i32,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }
            })
            .collect();
        NodeRecord {
            name: format!("n{n}"),
            summary: Some(NodeSummary {
                cpu_busy_percent: rng.usize(0..4) as f64 * 25.0,
                worst_disk_used_percent: rng.usize(0..3) as f64 * 45.0,
                worst_disk: "/".into(),
                ..Default::default()
            }),
            services,
            ..Default::default()
        }
    }

    fn random_member(rng: &mut fastrand::Rng, n: usize) -> Member {
        Member {
            name: format!("n{n}"),
            status: [
                MemberStatus::Alive,
                MemberStatus::Suspect,
                MemberStatus::Down,
                MemberStatus::Left,
            ][rng.usize(0..4)] as i32,
            ..Default::default()
        }
    }

    /// Service rows as the console derived them before rows were kept incrementally.
    fn services_from_scratch(c: &Cluster) -> Vec<ServiceRow> {
        let mut by_name: BTreeMap<&str, ServiceRow> = BTreeMap::new();
        for record in c.records.values() {
            for s in &record.services {
                let row = by_name.entry(&s.name).or_insert_with(|| ServiceRow {
                    name: s.name.clone(),
                    ..ServiceRow::default()
                });
                row.total += s.instances.len();
                row.passing += s
                    .instances
                    .iter()
                    .filter(|i| i.health().is_passing())
                    .count();
                row.broken += s.instances.iter().filter(|i| i.state().is_broken()).count();
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
                if let Some(r) = c.restarts.get(&s.name).and_then(|m| m.get(&record.name)) {
                    row.restarts = Some(row.restarts.unwrap_or(0) + r);
                }
                row.nodes.push(record.name.clone());
            }
        }
        by_name.into_values().collect()
    }

    /// A cluster built from scratch out of `c`'s members, records and restarts.
    fn rebuilt(c: &Cluster) -> Cluster {
        let mut fresh = Cluster {
            node_query: c.node_query.clone(),
            service_query: c.service_query.clone(),
            member_query: c.member_query.clone(),
            ..Cluster::default()
        };
        fresh.apply(ClusterUpdate {
            kind: ClusterUpdateKind::Snapshot as i32,
            members: c.members.values().cloned().collect(),
            records: c.records.values().cloned().collect(),
            ..Default::default()
        });
        for (service, nodes) in &c.restarts {
            for (node, r) in nodes {
                fresh.set_restarts(service, node, *r);
            }
        }
        fresh.refresh();
        fresh
    }

    #[test]
    fn incremental_rows_match_a_rebuild_after_every_change() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut c = Cluster::default();
        c.apply(ClusterUpdate {
            kind: ClusterUpdateKind::Snapshot as i32,
            members: (0..6).map(|n| random_member(&mut rng, n)).collect(),
            records: (0..6).map(|n| random_record(&mut rng, n)).collect(),
            ..Default::default()
        });
        c.refresh();
        for step in 0..400 {
            let n = rng.usize(0..10);
            match rng.usize(0..10) {
                0 => c.apply(ClusterUpdate {
                    kind: ClusterUpdateKind::Removed as i32,
                    node: format!("n{n}"),
                    ..Default::default()
                }),
                1 | 2 => c.apply(ClusterUpdate {
                    kind: ClusterUpdateKind::Member as i32,
                    members: vec![random_member(&mut rng, n)],
                    ..Default::default()
                }),
                3 => c.set_restarts(
                    &format!("svc-{}", rng.usize(0..5)),
                    &format!("n{n}"),
                    rng.u32(0..4),
                ),
                4 => {
                    c.node_query.sort = rng.usize(0..NODE_COLUMNS.len());
                    c.node_query.descending = rng.bool();
                    c.node_query.filter = ["", "n1", "down", "/"][rng.usize(0..4)].into();
                    c.service_query.sort = rng.usize(0..SERVICE_COLUMNS.len());
                    c.service_query.filter = ["", "svc-1", "n2", "2"][rng.usize(0..4)].into();
                    c.member_query.filter = ["", "alive"][rng.usize(0..2)].into();
                    c.touch();
                }
                _ => c.apply(ClusterUpdate {
                    kind: ClusterUpdateKind::Record as i32,
                    records: vec![random_record(&mut rng, n)],
                    ..Default::default()
                }),
            }
            if rng.usize(0..3) == 0 {
                continue;
            }
            c.refresh();
            let fresh = rebuilt(&c);
            assert_eq!(c.nodes, fresh.nodes, "step {step}");
            assert_eq!(c.services, fresh.services, "step {step}");
            assert_eq!(c.services, services_from_scratch(&c), "step {step}");
            assert_eq!(c.node_index, fresh.node_index, "step {step}");
            assert_eq!(c.service_index, fresh.service_index, "step {step}");
            assert_eq!(c.member_index, fresh.member_index, "step {step}");
            assert_eq!(c.health_counts(), fresh.health_counts(), "step {step}");
        }
    }
}
