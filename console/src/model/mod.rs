//! The console's view of the cluster as pure data: network tasks turn streams into
//! [`Msg`]s, [`Model::update`] applies them, and views only read the model. Nothing here
//! knows about terminals or ratatui, so all of it is unit-tested without a screen.

pub mod cluster;
pub mod conn;
pub mod detail;
pub mod events;
pub mod fixture;
pub mod logs;
pub mod problems;
pub mod query;
pub mod tone;

use cluster::Cluster;
use conn::ConnState;
use detail::{NodeDetail, ServiceDetail};
use events::Timeline;
use logs::LogBuffer;
use problems::{Problem, Problems};
use std::collections::HashMap;
use strata_proto::v1::{
    ClusterUpdate, Event, HostMetrics, LogLine, MetricHistory, NodeInfo, Role, ServiceStatus, Via,
    WhoAmIReply,
};

/// Something that happened outside the UI: data from the agent or a connection change.
#[derive(Debug)]
pub enum Msg {
    /// The cluster stream is up.
    Connected,
    /// Who the agent takes the console to be.
    Access(WhoAmIReply),
    /// The cluster stream broke; the next attempt is at `retry_at_ms`.
    Disconnected {
        /// Why.
        error: String,
        /// Unix ms of the next attempt.
        retry_at_ms: i64,
    },
    /// One WatchCluster message.
    Cluster(ClusterUpdate),
    /// Events from one or more journals.
    Events(Vec<Event>),
    /// Log lines of stream generation `generation`, and lines dropped before them.
    Logs {
        /// The log buffer's generation the lines belong to.
        generation: u64,
        /// The lines.
        lines: Vec<LogLine>,
        /// Lines dropped because the console fell behind.
        dropped: u64,
    },
    /// The log stream of `generation` ended.
    LogsEnded {
        /// Generation.
        generation: u64,
        /// Why.
        reason: String,
    },
    /// Facts of a node.
    NodeInfo(String, NodeInfo),
    /// A live metrics sample of a node.
    NodeMetrics(String, Box<HostMetrics>),
    /// Metric history of a node.
    NodeHistory(String, MetricHistory),
    /// A node-view request failed.
    NodeError(String, String),
    /// One node's status of a service (or the error getting it).
    Service {
        /// Service name.
        name: String,
        /// Node asked.
        node: String,
        /// The reply.
        status: Result<ServiceStatus, String>,
    },
    /// An action finished: what it was and the agent's answer or error.
    ActionDone {
        /// "Restart service web on node n2".
        label: String,
        /// The agent's message, or its error.
        result: Result<String, String>,
    },
}

/// The outcome of the last action, shown until the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResult {
    /// What was done.
    pub label: String,
    /// The agent's message or error.
    pub result: Result<String, String>,
}

/// Everything the console knows.
#[derive(Debug, Default)]
pub struct Model {
    /// The agent address.
    pub agent: String,
    /// Unix ms of "now" for ages; set by ticks (fixed in tests).
    pub now_ms: i64,
    /// Connection state.
    pub conn: ConnState,
    /// Data is from a lost connection.
    pub stale: bool,
    /// Members and catalog.
    pub cluster: Cluster,
    /// Merged events.
    pub timeline: Timeline,
    /// The followed logs.
    pub logs: LogBuffer,
    /// The node being looked at.
    pub node: NodeDetail,
    /// The service being looked at.
    pub service: ServiceDetail,
    /// Current problems, ranked; kept up to date by [`Model::refresh`].
    pub problems: Vec<Problem>,
    /// What `problems` is derived from, cached between refreshes.
    problem_sources: Problems,
    /// When each problem without its own time was first seen.
    pub first_seen: HashMap<String, i64>,
    /// The last action's outcome.
    pub last_action: Option<ActionResult>,
    /// Actions sent and not yet answered.
    pub pending_actions: usize,
    /// Who the agent takes the console to be, once it said.
    pub access: Option<WhoAmIReply>,
}

impl Model {
    /// An empty model for `agent`.
    pub fn new(agent: &str, now_ms: i64) -> Model {
        Model {
            agent: agent.to_string(),
            now_ms,
            ..Model::default()
        }
    }

    /// Why the agent will refuse changes from this console, if it will: its credential
    /// holds only the read role.
    pub fn readonly_reason(&self) -> Option<String> {
        let access = self.access.as_ref()?;
        if access.role() != Role::Read {
            return None;
        }
        let who = match access.via() {
            Via::Token => format!("token {:?}", access.name),
            Via::Certificate => format!("certificate {:?}", access.name),
            _ => format!("{:?}", access.name),
        };
        Some(format!("{who} has the read role"))
    }

    /// Applies one message. Cheap: derived rows are rebuilt by [`Model::refresh`].
    pub fn update(&mut self, msg: Msg) {
        match msg {
            Msg::Connected => {
                self.conn = ConnState::Connected;
                self.stale = false;
            }
            Msg::Disconnected { error, retry_at_ms } => {
                self.conn = ConnState::Reconnecting { retry_at_ms, error };
                self.stale = true;
            }
            Msg::Access(reply) => self.access = Some(reply),
            Msg::Cluster(update) => self.cluster.apply(update),
            Msg::Events(events) => self.timeline.merge(events),
            Msg::Logs {
                generation,
                lines,
                dropped,
            } => {
                let before = self.logs.len();
                self.logs.push(generation, lines, dropped);
                let added = self.logs.len().saturating_sub(before);
                self.logs.hold(added);
            }
            Msg::LogsEnded { generation, reason } => {
                if generation == self.logs.generation {
                    self.logs.ended = Some(reason);
                }
            }
            Msg::NodeInfo(name, info) if name == self.node.name => self.node.info = Some(info),
            Msg::NodeMetrics(name, m) if name == self.node.name => self.node.add_sample(*m),
            Msg::NodeHistory(name, h) if name == self.node.name => self.node.set_history(h),
            Msg::NodeError(name, e) if name == self.node.name => self.node.error = Some(e),
            Msg::NodeInfo(..)
            | Msg::NodeMetrics(..)
            | Msg::NodeHistory(..)
            | Msg::NodeError(..) => {}
            Msg::Service { name, node, status } => {
                if let Ok(s) = &status {
                    self.cluster.set_restarts(&name, &node, s.restarts);
                }
                if name == self.service.name {
                    self.service.set(&node, status);
                }
            }
            Msg::ActionDone { label, result } => {
                self.pending_actions = self.pending_actions.saturating_sub(1);
                self.last_action = Some(ActionResult { label, result });
            }
        }
    }

    /// Rebuilds derived rows, indexes and problems where their inputs changed (only the
    /// rows and problems of nodes that changed); called once per render tick, never per
    /// message.
    pub fn refresh(&mut self) {
        let changes = self.cluster.refresh();
        self.timeline.refresh();
        self.problem_sources.update(
            &mut self.problems,
            &self.cluster,
            &changes,
            &self.timeline,
            self.now_ms,
            &mut self.first_seen,
        );
    }

    /// Opens the node view's data for `name`, keeping the range.
    pub fn open_node(&mut self, name: &str) {
        let range = self.node.range;
        self.node = NodeDetail {
            name: name.to_string(),
            range,
            ..NodeDetail::default()
        };
    }

    /// Opens the service view's data for `name`.
    pub fn open_service(&mut self, name: &str) {
        if self.service.name != name {
            self.service = ServiceDetail {
                name: name.to_string(),
                ..ServiceDetail::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_problems_are_ranked_with_the_down_node_first() {
        let m = fixture::model();
        let kinds: Vec<&str> = m.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.first(), Some(&"node down"), "{kinds:?}");
        for k in ["crash loop", "disk full", "OOM kill", "alert firing"] {
            assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
        }
        let disk = m
            .problems
            .iter()
            .find(|p| p.kind == "disk full")
            .map(|p| p.subject.clone());
        assert_eq!(disk.as_deref(), Some("/var 97%"));
    }

    #[test]
    fn disconnect_marks_data_stale_until_reconnected() {
        let mut m = Model::new("a:1", 0);
        m.update(Msg::Disconnected {
            error: "refused".into(),
            retry_at_ms: 5000,
        });
        assert!(m.stale);
        m.update(Msg::Connected);
        assert!(!m.stale);
        assert_eq!(m.conn, ConnState::Connected);
    }

    #[test]
    fn service_replies_feed_detail_and_restart_totals() {
        let mut m = fixture::model();
        m.open_service("web");
        m.update(Msg::Service {
            name: "web".into(),
            node: "n1".into(),
            status: Ok(ServiceStatus {
                name: "web".into(),
                restarts: 4,
                ..Default::default()
            }),
        });
        m.refresh();
        let web = m
            .cluster
            .services
            .iter()
            .find(|s| s.name == "web")
            .and_then(|s| s.restarts);
        assert_eq!(web, Some(4 + 5), "n1 now 4, n2 5 from the fixture");
        assert!(m.service.per_node.contains_key("n1"));
    }
}
