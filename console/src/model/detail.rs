//! The node and service being looked at: per-node facts, metric history and live samples
//! for the node view; every node's status of one service for the service view.

use std::collections::{BTreeMap, HashMap, VecDeque};
use strata_proto::v1::{HostMetrics, InstanceStatus, MetricHistory, NodeInfo, ServiceStatus};

/// Live samples the node view keeps beyond the history it fetched.
const LIVE_CAP: usize = 1024;

/// The history range of the node charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Range {
    /// The last 15 minutes.
    #[default]
    Minutes15,
    /// The last 24 hours.
    Hours24,
}

impl Range {
    /// Its length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Range::Minutes15 => 15 * 60_000,
            Range::Hours24 => 24 * 3_600_000,
        }
    }

    /// "15m" or "24h".
    pub fn label(self) -> &'static str {
        match self {
            Range::Minutes15 => "15m",
            Range::Hours24 => "24h",
        }
    }
}

/// Everything the node view shows about one node.
#[derive(Debug, Default)]
pub struct NodeDetail {
    /// Node name.
    pub name: String,
    /// Identity and facts.
    pub info: Option<NodeInfo>,
    /// The newest sample.
    pub latest: Option<HostMetrics>,
    /// Series name to (unix ms, average) points, oldest first.
    pub series: HashMap<String, VecDeque<(i64, f64)>>,
    /// The chart range.
    pub range: Range,
    /// The last request error, shown in the view.
    pub error: Option<String>,
}

impl NodeDetail {
    /// Replaces the series with fetched history.
    pub fn set_history(&mut self, history: MetricHistory) {
        self.series = history
            .series
            .into_iter()
            .map(|s| {
                let points = s.points.iter().map(|p| (p.time_unix_ms, p.avg)).collect();
                (s.name, points)
            })
            .collect();
    }

    /// Adds a live sample: the newest values and one point per charted series.
    pub fn add_sample(&mut self, m: HostMetrics) {
        let t = m.time_unix_ms;
        let mut push = |name: String, v: f64| {
            let s = self.series.entry(name).or_default();
            if s.back().is_none_or(|&(last, _)| last < t) {
                s.push_back((t, v));
                if s.len() > LIVE_CAP {
                    s.pop_front();
                }
            }
        };
        if let Some(cpu) = m.cpu.as_ref().and_then(|c| c.total.as_ref()) {
            push("cpu.busy".into(), cpu.busy);
        }
        if let Some(mem) = &m.memory
            && mem.total_bytes > 0
        {
            push(
                "mem.used_percent".into(),
                mem.used_bytes as f64 * 100.0 / mem.total_bytes as f64,
            );
        }
        for d in &m.disks {
            push(
                format!("disk.{}.read_bytes_per_sec", d.device),
                d.read_bytes_per_sec,
            );
            push(
                format!("disk.{}.write_bytes_per_sec", d.device),
                d.write_bytes_per_sec,
            );
        }
        for n in &m.networks {
            push(
                format!("net.{}.rx_bytes_per_sec", n.interface),
                n.rx_bytes_per_sec,
            );
            push(
                format!("net.{}.tx_bytes_per_sec", n.interface),
                n.tx_bytes_per_sec,
            );
        }
        self.latest = Some(m);
    }

    /// Sum of the series whose names start with `prefix` and end with `suffix`, aligned
    /// on time: the disk IO or network chart line.
    pub fn summed(&self, prefix: &str, suffix: &str) -> Vec<(i64, f64)> {
        let mut by_time: BTreeMap<i64, f64> = BTreeMap::new();
        for (name, points) in &self.series {
            if name.starts_with(prefix) && name.ends_with(suffix) {
                for &(t, v) in points {
                    *by_time.entry(t).or_default() += v;
                }
            }
        }
        by_time.into_iter().collect()
    }
}

/// One instance row of the service view: the instance and the node it runs on.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    /// The node.
    pub node: String,
    /// The instance status.
    pub instance: InstanceStatus,
}

/// Every node's status of one service.
#[derive(Debug, Default)]
pub struct ServiceDetail {
    /// Service name.
    pub name: String,
    /// Status per node.
    pub per_node: BTreeMap<String, ServiceStatus>,
    /// Errors per node.
    pub errors: BTreeMap<String, String>,
    /// All instances, node then index order.
    pub rows: Vec<InstanceRow>,
}

impl ServiceDetail {
    /// Stores one node's reply and rebuilds the rows.
    pub fn set(&mut self, node: &str, status: Result<ServiceStatus, String>) {
        match status {
            Ok(s) => {
                self.errors.remove(node);
                self.per_node.insert(node.to_string(), s);
            }
            Err(e) => {
                self.per_node.remove(node);
                self.errors.insert(node.to_string(), e);
            }
        }
        self.rows = self
            .per_node
            .iter()
            .flat_map(|(node, s)| {
                s.instances.iter().map(|i| InstanceRow {
                    node: node.clone(),
                    instance: i.clone(),
                })
            })
            .collect();
    }
}
