//! The network side: tasks that turn the agent's streams and replies into model
//! messages over a channel. The UI hands them [`Request`]s and never awaits the network.

use crate::client::ops::{Op, run_batch};
use crate::client::{Client, Connector};
use crate::format::now_ms;
use crate::model::Msg;
use crate::model::conn::backoff;
use crate::model::detail::Range;
use crate::model::logs::LogTarget;
use std::time::Duration;
use strata_proto::v1::MemberStatus;
use strata_proto::v1::{
    GetNodeRequest, GetServiceRequest, ListMembersRequest, LogLine, MetricHistoryRequest,
    QueryEventsRequest, TailLogsRequest, WatchClusterRequest, WatchEventsRequest,
    WatchMetricsRequest, WhoAmIRequest,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How often events are fetched from every member's journal.
const EVENT_POLL: Duration = Duration::from_secs(5);
/// Members asked per event round, so big clusters are not flooded with requests.
const EVENT_ROUND: usize = 64;
/// Log lines per message at most, and the flush interval of a partial batch.
const LOG_BATCH: usize = 2000;
const LOG_FLUSH: Duration = Duration::from_millis(50);

/// What the UI asks the network side for.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Follow logs of `target` on `nodes` into log generation `generation`.
    Logs {
        /// What.
        target: LogTarget,
        /// Nodes to tail (one stream each).
        nodes: Vec<String>,
        /// The log buffer generation.
        generation: u64,
    },
    /// Stop following logs.
    CloseLogs,
    /// Load and watch the node view's data.
    Node {
        /// Node name.
        name: String,
        /// History range.
        range: Range,
    },
    /// Stop watching the node.
    CloseNode,
    /// Fetch a service's status from each node.
    Service {
        /// Service.
        name: String,
        /// Nodes to ask.
        nodes: Vec<String>,
    },
    /// Run confirmed changes, reported as one result under `label`.
    Run {
        /// What the confirmation named.
        label: String,
        /// The calls.
        ops: Vec<Op>,
    },
}

/// The running network tasks.
pub struct Net {
    /// The agent as given, for failure messages.
    agent: String,
    tx: mpsc::Sender<Msg>,
    client: watch::Receiver<Option<Client>>,
    logs: Vec<JoinHandle<()>>,
    node: Option<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

impl Net {
    /// Starts the cluster and event tasks for the agent of `connector`.
    pub fn start(connector: Connector, tx: mpsc::Sender<Msg>) -> Net {
        let agent = connector.agent().to_string();
        let (client_tx, client) = watch::channel(None);
        let cluster = tokio::spawn(cluster_task(connector, tx.clone(), client_tx));
        let events = tokio::spawn(events_task(client.clone(), tx.clone()));
        let watch_events = tokio::spawn(watch_events_task(client.clone(), tx.clone()));
        Net {
            agent,
            tx,
            client,
            logs: Vec::new(),
            node: None,
            background: vec![cluster, events, watch_events],
        }
    }

    /// Handles one request without waiting for the network.
    pub fn handle(&mut self, request: Request) {
        match request {
            Request::Logs {
                target,
                nodes,
                generation,
            } => {
                self.close_logs();
                let nodes = if nodes.is_empty() {
                    vec![target.node.clone()]
                } else {
                    nodes
                };
                let prefix = nodes.len() > 1;
                for node in nodes {
                    let task = log_task(
                        self.client.clone(),
                        self.tx.clone(),
                        target.clone(),
                        node,
                        generation,
                        prefix,
                    );
                    self.logs.push(tokio::spawn(task));
                }
            }
            Request::CloseLogs => self.close_logs(),
            Request::Node { name, range } => {
                if let Some(h) = self.node.take() {
                    h.abort();
                }
                self.node = Some(tokio::spawn(node_task(
                    self.client.clone(),
                    self.tx.clone(),
                    name,
                    range,
                )));
            }
            Request::CloseNode => {
                if let Some(h) = self.node.take() {
                    h.abort();
                }
            }
            Request::Service { name, nodes } => {
                let (client, tx) = (self.client.borrow().clone(), self.tx.clone());
                tokio::spawn(async move {
                    for node in nodes {
                        let status = match client.clone() {
                            Some(mut c) => c
                                .get_service(GetServiceRequest {
                                    node: node.clone(),
                                    name: name.clone(),
                                })
                                .await
                                .map(|r| r.into_inner())
                                .map_err(|s| s.message().to_string()),
                            None => Err("not connected".to_string()),
                        };
                        let _ = tx
                            .send(Msg::Service {
                                name: name.clone(),
                                node,
                                status,
                            })
                            .await;
                    }
                });
            }
            Request::Run { label, ops } => {
                let (client, tx) = (self.client.borrow().clone(), self.tx.clone());
                let agent = self.agent.clone();
                tokio::spawn(async move {
                    let result = match client {
                        Some(mut c) => run_batch(&mut c, &agent, ops).await.map_err(|f| f.message),
                        None => Err("not connected to the agent".to_string()),
                    };
                    let _ = tx.send(Msg::ActionDone { label, result }).await;
                });
            }
        }
    }

    fn close_logs(&mut self) {
        for h in self.logs.drain(..) {
            h.abort();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.close_logs();
        if let Some(h) = self.node.take() {
            h.abort();
        }
        for h in self.background.drain(..) {
            h.abort();
        }
    }
}

/// Waits until a client is available.
async fn client_of(rx: &mut watch::Receiver<Option<Client>>) -> Option<Client> {
    loop {
        if let Some(c) = rx.borrow_and_update().clone() {
            return Some(c);
        }
        rx.changed().await.ok()?;
    }
}

fn jitter() -> f64 {
    0.5 + fastrand::f64() * 0.5
}

async fn cluster_task(
    connector: Connector,
    tx: mpsc::Sender<Msg>,
    client_tx: watch::Sender<Option<Client>>,
) {
    let mut attempt = 0u32;
    loop {
        let error = match connector.connect().await {
            Err(f) => f.message,
            Ok(client) => match client
                .clone()
                .watch_cluster(WatchClusterRequest::default())
                .await
            {
                Err(s) => s.message().to_string(),
                Ok(reply) => {
                    attempt = 0;
                    let _ = client_tx.send(Some(client.clone()));
                    if tx.send(Msg::Connected).await.is_err() {
                        return;
                    }
                    if let Ok(access) = client.clone().who_am_i(WhoAmIRequest {}).await
                        && tx.send(Msg::Access(access.into_inner())).await.is_err()
                    {
                        return;
                    }
                    let mut stream = reply.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(update)) => {
                                if tx.send(Msg::Cluster(update)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break "the agent closed the stream".to_string(),
                            Err(s) => break s.message().to_string(),
                        }
                    }
                }
            },
        };
        let _ = client_tx.send(None);
        let delay = backoff(attempt, jitter());
        attempt = attempt.saturating_add(1);
        let retry_at_ms = now_ms() + delay.as_millis() as i64;
        if tx
            .send(Msg::Disconnected { error, retry_at_ms })
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

/// Polls every live member's journal (in rounds of [`EVENT_ROUND`]) for new events.
async fn events_task(mut rx: watch::Receiver<Option<Client>>, tx: mpsc::Sender<Msg>) {
    let mut since: std::collections::HashMap<String, i64> = Default::default();
    let mut cursor = 0usize;
    loop {
        let Some(mut client) = client_of(&mut rx).await else {
            return;
        };
        if let Ok(reply) = client.list_members(ListMembersRequest::default()).await {
            let live: Vec<String> = reply
                .into_inner()
                .members
                .into_iter()
                .filter(|m| m.status() == MemberStatus::Alive)
                .map(|m| m.name)
                .collect();
            let n = live.len();
            for k in 0..n.min(EVENT_ROUND) {
                let node = &live[(cursor + k) % n];
                let from = since.get(node).copied().unwrap_or(0);
                let req = QueryEventsRequest {
                    node: node.clone(),
                    since_unix_ms: from,
                    limit: 500,
                    ..Default::default()
                };
                if let Ok(reply) = client.query_events(req).await {
                    let events = reply.into_inner().events;
                    if let Some(last) = events.iter().map(|e| e.time_unix_ms).max() {
                        since.insert(node.clone(), last);
                    }
                    if !events.is_empty() && tx.send(Msg::Events(events)).await.is_err() {
                        return;
                    }
                }
            }
            cursor = cursor.wrapping_add(EVENT_ROUND);
        }
        tokio::time::sleep(EVENT_POLL).await;
    }
}

/// Streams the contacted agent's events as they happen.
async fn watch_events_task(mut rx: watch::Receiver<Option<Client>>, tx: mpsc::Sender<Msg>) {
    let mut attempt = 0;
    loop {
        let Some(mut client) = client_of(&mut rx).await else {
            return;
        };
        if let Ok(reply) = client.watch_events(WatchEventsRequest::default()).await {
            attempt = 0;
            let mut stream = reply.into_inner();
            while let Ok(Some(e)) = stream.message().await {
                if tx.send(Msg::Events(vec![e])).await.is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff(attempt, jitter())).await;
        attempt += 1;
    }
}

/// Tails one node's logs of `target`, in batches; when the console falls behind, whole
/// batches are dropped and counted instead of queueing without bound.
async fn log_task(
    mut rx: watch::Receiver<Option<Client>>,
    tx: mpsc::Sender<Msg>,
    target: LogTarget,
    node: String,
    generation: u64,
    prefix: bool,
) {
    let mut attempt = 0;
    let mut dropped = 0u64;
    let mut past = 200;
    loop {
        let Some(mut client) = client_of(&mut rx).await else {
            return;
        };
        let req = TailLogsRequest {
            node: node.clone(),
            service: target.service.clone(),
            instance: target.instance,
            lines: past,
            follow: true,
            grep: String::new(),
        };
        let reason = match client.tail_logs(req).await {
            Err(s) => s.message().to_string(),
            Ok(reply) => {
                attempt = 0;
                let mut stream = reply.into_inner();
                let mut batch: Vec<LogLine> = Vec::new();
                let mut flush = tokio::time::interval(LOG_FLUSH);
                loop {
                    tokio::select! {
                        line = stream.message() => match line {
                            Ok(Some(mut l)) => {
                                if prefix {
                                    l.instance = format!("{}@{node}", l.instance);
                                }
                                batch.push(l);
                                if batch.len() >= LOG_BATCH {
                                    send_batch(&tx, generation, &mut batch, &mut dropped);
                                }
                            }
                            Ok(None) => break "the log stream ended".to_string(),
                            Err(s) => break s.message().to_string(),
                        },
                        _ = flush.tick() => send_batch(&tx, generation, &mut batch, &mut dropped),
                    }
                }
            }
        };
        let _ = tx
            .send(Msg::LogsEnded {
                generation,
                reason: format!("{reason}; retrying"),
            })
            .await;
        tokio::time::sleep(backoff(attempt, jitter())).await;
        attempt += 1;
        past = 1;
    }
}

fn send_batch(
    tx: &mpsc::Sender<Msg>,
    generation: u64,
    batch: &mut Vec<LogLine>,
    dropped: &mut u64,
) {
    if batch.is_empty() && *dropped == 0 {
        return;
    }
    let lines = std::mem::take(batch);
    let n = lines.len() as u64;
    match tx.try_send(Msg::Logs {
        generation,
        lines,
        dropped: *dropped,
    }) {
        Ok(()) => *dropped = 0,
        Err(_) => *dropped += n,
    }
}

/// Loads a node's facts and history, then streams its metrics.
async fn node_task(
    mut rx: watch::Receiver<Option<Client>>,
    tx: mpsc::Sender<Msg>,
    name: String,
    range: Range,
) {
    let mut attempt = 0;
    loop {
        let Some(mut client) = client_of(&mut rx).await else {
            return;
        };
        if let Ok(info) = client.get_node(GetNodeRequest { node: name.clone() }).await {
            let _ = tx
                .send(Msg::NodeInfo(name.clone(), info.into_inner()))
                .await;
        }
        let now = now_ms();
        let available = client
            .get_metric_history(MetricHistoryRequest {
                node: name.clone(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().available)
            .unwrap_or_default();
        let series: Vec<String> = available
            .into_iter()
            .filter(|s| {
                s == "cpu.busy"
                    || s == "mem.used_percent"
                    || (s.starts_with("disk.") && s.ends_with("_bytes_per_sec"))
                    || (s.starts_with("net.")
                        && s.ends_with("_bytes_per_sec")
                        && !s.starts_with("net.lo."))
            })
            .collect();
        let req = MetricHistoryRequest {
            node: name.clone(),
            series,
            from_unix_ms: now - range.millis(),
            to_unix_ms: now,
            step_ms: 0,
        };
        match client.get_metric_history(req).await {
            Ok(h) => {
                let _ = tx
                    .send(Msg::NodeHistory(name.clone(), h.into_inner()))
                    .await;
            }
            Err(s) => {
                let _ = tx
                    .send(Msg::NodeError(name.clone(), s.message().to_string()))
                    .await;
            }
        }
        if let Ok(reply) = client
            .watch_metrics(WatchMetricsRequest { node: name.clone() })
            .await
        {
            attempt = 0;
            let mut stream = reply.into_inner();
            while let Ok(Some(m)) = stream.message().await {
                if tx
                    .send(Msg::NodeMetrics(name.clone(), Box::new(m)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        tokio::time::sleep(backoff(attempt, jitter())).await;
        attempt += 1;
    }
}
