//! The `strata.v1.Agent` gRPC service over the agent's shared state.

use super::gate::{Call, Gate, hold};
use crate::auth::audit::AuditEntry;
use crate::auth::{
    AUTHORIZATION_HEADER, Certified, Identity, ON_BEHALF_HEADER, Role, Via, on_behalf_value,
};
use crate::events::journal::EventDraft;
use crate::events::journal::EventQuery;
use crate::state::{AgentState, unix_now_ms};
use crate::supervisor::logs::{self, LineFilter, LogStream};
use crate::supervisor::manager::{Action, InstanceAction, SupervisorError};
use crate::supervisor::spec::Signal;
use crate::tls::CertKind;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use strata_proto::v1::agent_client::AgentClient;
use strata_proto::v1::agent_server::Agent;
use strata_proto::v1::control_service_request as control;
use strata_proto::v1::{
    AccessRecord, ApplySpecReply, ApplySpecRequest, BalancerReply, ClusterUpdate,
    ClusterUpdateKind, ControlServiceReply, ControlServiceRequest, DrainNodeReply,
    DrainNodeRequest, Event, ForceLeaveReply, ForceLeaveRequest, GetBalancerRequest,
    GetCatalogReply, GetCatalogRequest, GetMetricsRequest, GetNodeRequest, GetServiceRequest,
    HostMetrics, KeyringOp, KeyringReply, KeyringRequest, ListMembersReply, ListMembersRequest,
    ListServicesReply, ListServicesRequest, LogLine, LogStream as WireLogStream, MetricHistory,
    MetricHistoryRequest, NodeInfo, QueryEventsReply, QueryEventsRequest, RemoveServiceReply,
    RemoveServiceRequest, Role as WireRole, ServiceStatus, Severity, TailAccessLogRequest,
    TailLogsRequest, TopProcessesReply, TopProcessesRequest, Via as WireVia, WatchClusterRequest,
    WatchEventsRequest, WatchMetricsRequest, WhoAmIReply, WhoAmIRequest,
};
use strata_registry::cluster::Cluster;
use strata_registry::events::ClusterEvent;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Default and largest number of events one query returns, so a read stays bounded.
pub const DEFAULT_EVENT_LIMIT: u32 = 1000;
/// See [`DEFAULT_EVENT_LIMIT`].
pub const MAX_EVENT_LIMIT: u32 = 10_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Metadata set on a request one agent forwards to another: the forwarding agent's name.
const FORWARDED_HEADER: &str = "strata-forwarded-by";
/// How long forwarding waits for a peer agent to accept the connection.
const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Serves the Agent API from the shared state, forwarding node-scoped requests for other
/// nodes to their agents.
pub struct AgentService {
    state: Arc<AgentState>,
    gate: Arc<Gate>,
    peers: Mutex<HashMap<SocketAddr, Channel>>,
}

/// Requests that name a target node.
pub trait NodeScoped {
    /// The target node's name or id; empty for the contacted agent.
    fn node(&self) -> &str;
}

macro_rules! node_scoped {
    ($($t:ty),* $(,)?) => {
        $(impl NodeScoped for $t {
            fn node(&self) -> &str {
                &self.node
            }
        })*
    };
}

node_scoped!(
    GetNodeRequest,
    GetMetricsRequest,
    MetricHistoryRequest,
    WatchMetricsRequest,
    TopProcessesRequest,
    QueryEventsRequest,
    WatchEventsRequest,
    ListServicesRequest,
    GetServiceRequest,
    ApplySpecRequest,
    RemoveServiceRequest,
    ControlServiceRequest,
    TailLogsRequest,
    KeyringRequest,
    GetBalancerRequest,
    TailAccessLogRequest,
    DrainNodeRequest,
);

/// What the caller's verified client certificate says, if it showed one.
fn certified<R>(request: &Request<R>) -> Option<Certified> {
    let subject = crate::tls::peer_subject(request)?;
    match subject.kind {
        CertKind::Agent => Some(Certified::Agent(subject.name)),
        CertKind::Operator { role } => Some(Certified::Operator(subject.name, role)),
    }
}

/// A request to send on to another agent, marked as forwarded by `origin`, carrying the
/// caller's token, or (for a caller identified otherwise) who this agent found it to be.
fn forward<R>(request: Request<R>, origin: &str, who: &Identity) -> Request<R> {
    let (metadata, _, message) = request.into_parts();
    let mut forwarded = Request::new(message);
    let headers = forwarded.metadata_mut();
    if let Some(token) = metadata.get(AUTHORIZATION_HEADER) {
        headers.insert(AUTHORIZATION_HEADER, token.clone());
    } else if who.via != Via::Open
        && let Ok(value) = on_behalf_value(who).parse()
    {
        headers.insert(ON_BEHALF_HEADER, value);
    }
    if let Ok(value) = origin.parse() {
        headers.insert(FORWARDED_HEADER, value);
    }
    forwarded
}

impl AgentService {
    /// A service reading `state`, with every call passing through `gate`.
    pub fn new(state: Arc<AgentState>, gate: Arc<Gate>) -> Self {
        AgentService {
            state,
            gate,
            peers: Mutex::new(HashMap::new()),
        }
    }

    /// Who makes `request`, if it may make `call` on `target` (empty: this node).
    fn admit<R>(&self, request: &Request<R>, call: Call, target: &str) -> Result<Identity, Status> {
        self.gate.admit(request, certified(request), call, target)
    }

    /// Where a node-scoped request is served: here (`None`), or by the named node's agent,
    /// whose client is returned. A request that was already forwarded once is never forwarded
    /// again, so a stale address cannot make a loop.
    fn route<R: NodeScoped>(
        &self,
        request: &Request<R>,
    ) -> Result<Option<AgentClient<Channel>>, Status> {
        let node = request.get_ref().node();
        if self.state.is_self(node) {
            return Ok(None);
        }
        if request.metadata().contains_key(FORWARDED_HEADER) {
            return Err(Status::not_found(format!(
                "node {node:?} is not agent {}, which this request was forwarded to",
                self.state.node_name
            )));
        }
        let (name, addr) = self.state.cluster.grpc_peer_of(node).ok_or_else(|| {
            Status::not_found(format!(
                "node {node:?} is not a live member of the cluster (see `strata members`)"
            ))
        })?;
        let mut peers = self
            .peers
            .lock()
            .map_err(|_| Status::internal("the peer connection cache is unavailable"))?;
        if let Some(channel) = peers.get(&addr) {
            return Ok(Some(AgentClient::new(channel.clone())));
        }
        let scheme = if self.state.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Status::internal(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(PEER_CONNECT_TIMEOUT);
        if let Some(tls) = &self.state.tls {
            // Peers are dialled by IP; their certificate is verified against the node name,
            // which every agent certificate carries as a DNS name (mutual TLS: this agent
            // presents its own certificate).
            endpoint = endpoint.tls_config(tls.peer(&name)).map_err(|e| {
                Status::internal(format!("cannot set up TLS to node {node:?}: {e}"))
            })?;
        }
        let channel = endpoint.connect_lazy();
        peers.insert(addr, channel.clone());
        Ok(Some(AgentClient::new(channel)))
    }
}

fn severity_of(value: i32, field: &str) -> Result<Severity, Status> {
    Severity::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field}: unknown severity {value}")))
}

/// What a cluster event means for a watching console; catalog changes carry the new record.
fn cluster_update(cluster: &Cluster, event: &ClusterEvent) -> Option<ClusterUpdate> {
    let now = unix_now_ms();
    match event {
        ClusterEvent::RecordChanged { node } => Some(ClusterUpdate {
            kind: ClusterUpdateKind::Record as i32,
            records: cluster
                .records()
                .into_iter()
                .filter(|r| &r.name == node || &r.id == node)
                .collect(),
            node: node.clone(),
            time_unix_ms: now,
            ..Default::default()
        }),
        ClusterEvent::Reaped { name } => Some(ClusterUpdate {
            kind: ClusterUpdateKind::Removed as i32,
            node: name.clone(),
            time_unix_ms: now,
            ..Default::default()
        }),
        ClusterEvent::SelfRejoined | ClusterEvent::Rejected { .. } => None,
        ClusterEvent::Joined { name }
        | ClusterEvent::Alive { name }
        | ClusterEvent::Rejoined { name }
        | ClusterEvent::Suspect { name }
        | ClusterEvent::Down { name }
        | ClusterEvent::Left { name }
        | ClusterEvent::Conflict { name, .. } => Some(ClusterUpdate {
            kind: ClusterUpdateKind::Member as i32,
            members: cluster
                .members()
                .into_iter()
                .filter(|m| &m.name == name)
                .collect(),
            node: name.clone(),
            time_unix_ms: now,
            ..Default::default()
        }),
    }
}

/// The gRPC status for a supervisor error.
fn supervisor_status(error: SupervisorError) -> Status {
    match error {
        SupervisorError::InvalidSpec(e) => Status::invalid_argument(e.to_string()),
        SupervisorError::Invalid(m) => Status::invalid_argument(m),
        SupervisorError::NotFound(m) => Status::not_found(m),
        SupervisorError::Conflict(m) => Status::failed_precondition(m),
        SupervisorError::Failed(m) => Status::internal(m),
    }
}

/// The supervisor's action for a control request.
fn parse_action(req: &ControlServiceRequest) -> Result<Action, Status> {
    match &req.action {
        Some(control::Action::Start(_)) => Ok(Action::Instance(InstanceAction::Start)),
        Some(control::Action::Stop(_)) => Ok(Action::Instance(InstanceAction::Stop)),
        Some(control::Action::Restart(_)) => Ok(Action::Instance(InstanceAction::Restart)),
        Some(control::Action::Scale(scale)) => Ok(Action::Scale(scale.count)),
        Some(control::Action::Signal(send)) => match Signal::try_from(send.signal) {
            Ok(signal) if signal != Signal::Unspecified => {
                Ok(Action::Instance(InstanceAction::Signal(signal)))
            }
            _ => Err(Status::invalid_argument(format!(
                "signal: {} is not one of {}",
                send.signal,
                Signal::choices()
            ))),
        },
        None => Err(Status::invalid_argument(
            "action: none given; one of start, stop, restart, scale, signal",
        )),
    }
}

/// Largest number of past lines one log request returns.
pub const MAX_LOG_LINES: u32 = 10_000;
/// How often a followed log is polled for new lines.
const LOG_POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

fn log_line(instance: &str, line: logs::LogLine) -> LogLine {
    LogLine {
        time_unix_ms: line.time_unix_ms,
        instance: instance.to_string(),
        stream: match line.stream {
            LogStream::Out => WireLogStream::Out,
            LogStream::Err => WireLogStream::Err,
        } as i32,
        text: line.text,
    }
}

type OpenedLogs = (Vec<LogLine>, Vec<(String, logs::Follower)>);

/// The last `lines` lines over every instance's log, merged by time, and (when following)
/// a follower per instance that continues exactly where the tail ended.
fn open_logs(
    dirs: &[(String, std::path::PathBuf)],
    lines: usize,
    follow: bool,
    make_filter: &dyn Fn() -> Result<Option<LineFilter>, Status>,
) -> Result<OpenedLogs, Status> {
    let mut past = Vec::new();
    let mut followers = Vec::new();
    for (id, dir) in dirs {
        let filter = make_filter()?;
        let found = if follow {
            let (found, follower) = logs::Follower::tail_and_follow(dir, lines, filter)
                .map_err(|e| Status::internal(format!("cannot read the logs of {id}: {e}")))?;
            followers.push((id.clone(), follower));
            found
        } else {
            logs::tail(dir, lines, filter.as_ref())
                .map_err(|e| Status::internal(format!("cannot read the logs of {id}: {e}")))?
        };
        past.extend(found.into_iter().map(|l| log_line(id, l)));
    }
    past.sort_by_key(|l| l.time_unix_ms);
    let skip = past.len().saturating_sub(lines);
    Ok((past.split_off(skip), followers))
}

/// Whether `event` passes a severity floor and a kind prefix.
pub fn event_matches(event: &Event, min_severity: Severity, kind_prefix: &str) -> bool {
    event.severity >= min_severity as i32 && event.kind.starts_with(kind_prefix)
}

impl AgentService {
    /// Audits a served change with its outcome, then hands the outcome back.
    async fn audited<T>(
        &self,
        who: Identity,
        call: Call,
        target: String,
        args: Vec<(String, String)>,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let entry = AuditEntry {
            who,
            what: call.what.to_string(),
            target,
            args,
        };
        self.gate.audit(entry, result.as_ref().map(|_| ())).await;
        result
    }
}

/// The reply to an apply.
fn apply_reply(report: crate::supervisor::manager::ApplyReport) -> ApplySpecReply {
    ApplySpecReply {
        service: report.service,
        action: report.action as i32,
        changes: report.changes,
        applied: report.applied,
    }
}

/// A short fingerprint of a secret or a document for audit records: the first 16 hex digits
/// of its SHA-256, so records can tell versions (and keys) apart without holding them.
fn fingerprint(text: &str) -> String {
    crate::auth::tokens::hash(text)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        let who = self.admit(&request, Call::read("node"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .get_node(forward(request, &self.state.node_name, &who))
                .await;
        }
        Ok(Response::new(self.state.node_info()))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<HostMetrics>, Status> {
        let who = self.admit(&request, Call::read("metrics"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .get_metrics(forward(request, &self.state.node_name, &who))
                .await;
        }
        let latest = self.state.latest();
        if latest.time_unix_ms == 0 {
            return Err(Status::unavailable(
                "the first host sample has not been collected yet; retry in a second",
            ));
        }
        Ok(Response::new((*latest).clone()))
    }

    async fn get_metric_history(
        &self,
        request: Request<MetricHistoryRequest>,
    ) -> Result<Response<MetricHistory>, Status> {
        let who = self.admit(&request, Call::read_heavy("metric history"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .get_metric_history(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let (from, to) = (req.from_unix_ms, req.to_unix_ms);
        if from > 0 && to > 0 && from > to {
            return Err(Status::invalid_argument(format!(
                "from_unix_ms ({from}) is after to_unix_ms ({to})"
            )));
        }
        if req.step_ms < 0 {
            return Err(Status::invalid_argument("step_ms must not be negative"));
        }
        let history = self
            .state
            .history
            .lock()
            .map_err(|_| Status::internal("metric history is unavailable"))?;
        let available = history.available();
        if let Some(unknown) = req.series.iter().find(|s| !available.contains(s)) {
            return Err(Status::not_found(format!(
                "no history for series {unknown:?}; ask with no series to list the {} available",
                available.len()
            )));
        }
        let step_ms = history.step_for(from, to, req.step_ms);
        let series = history.query(&req.series, from, to, req.step_ms);
        Ok(Response::new(MetricHistory {
            series,
            available,
            step_ms,
        }))
    }

    type WatchMetricsStream = BoxStream<HostMetrics>;

    async fn watch_metrics(
        &self,
        request: Request<WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let who = self.admit(&request, Call::read_heavy("watch metrics"), "")?;
        let permit = self.gate.stream_permit()?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .watch_metrics(forward(request, &self.state.node_name, &who))
                .await
                .map(|r| Response::new(hold(r.into_inner(), permit)));
        }
        let stream = WatchStream::new(self.state.latest.subscribe())
            .filter(|m| m.time_unix_ms != 0)
            .map(|m| Ok((*m).clone()));
        Ok(Response::new(hold(stream, permit)))
    }

    async fn top_processes(
        &self,
        request: Request<TopProcessesRequest>,
    ) -> Result<Response<TopProcessesReply>, Status> {
        let who = self.admit(&request, Call::read("top"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .top_processes(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let latest = self.state.latest();
        let limit = if req.limit == 0 {
            10
        } else {
            req.limit as usize
        };
        Ok(Response::new(TopProcessesReply {
            by_cpu: latest.top_cpu.iter().take(limit).cloned().collect(),
            by_memory: latest.top_memory.iter().take(limit).cloned().collect(),
            time_unix_ms: latest.time_unix_ms,
        }))
    }

    async fn query_events(
        &self,
        request: Request<QueryEventsRequest>,
    ) -> Result<Response<QueryEventsReply>, Status> {
        let who = self.admit(&request, Call::read_heavy("events"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .query_events(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let min_severity = severity_of(req.min_severity, "min_severity")?;
        let limit = match req.limit {
            0 => DEFAULT_EVENT_LIMIT,
            n => n.min(MAX_EVENT_LIMIT),
        };
        let query = EventQuery {
            since_unix_ms: req.since_unix_ms,
            min_severity,
            kind_prefix: req.kind,
            node: String::new(),
            limit: limit as usize,
        };
        let journal = self.state.journal.clone();
        let events = tokio::task::spawn_blocking(move || journal.query(&query))
            .await
            .map_err(|e| Status::internal(format!("event query did not finish: {e}")))?
            .map_err(|e| Status::internal(format!("event journal: {e}")))?;
        Ok(Response::new(QueryEventsReply { events }))
    }

    type WatchEventsStream = BoxStream<Event>;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let who = self.admit(&request, Call::read_heavy("watch events"), "")?;
        let permit = self.gate.stream_permit()?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .watch_events(forward(request, &self.state.node_name, &who))
                .await
                .map(|r| Response::new(hold(r.into_inner(), permit)));
        }
        let req = request.into_inner();
        let min_severity = severity_of(req.min_severity, "min_severity")?;
        let kind = req.kind;
        let stream =
            BroadcastStream::new(self.state.journal.subscribe()).filter_map(
                move |item| match item {
                    Ok(event) if event_matches(&event, min_severity, &kind) => Some(Ok(event)),
                    Ok(_) => None,
                    Err(BroadcastStreamRecvError::Lagged(n)) => {
                        tracing::warn!(skipped = n, "an event watcher fell behind");
                        None
                    }
                },
            );
        Ok(Response::new(hold(stream, permit)))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesReply>, Status> {
        let who = self.admit(&request, Call::read("services"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .list_services(forward(request, &self.state.node_name, &who))
                .await;
        }
        Ok(Response::new(ListServicesReply {
            services: self.state.supervisor.list(),
            isolation: self.state.supervisor.isolation(),
        }))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<ServiceStatus>, Status> {
        let who = self.admit(&request, Call::read("service"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .get_service(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let status = self
            .state
            .supervisor
            .get(&req.name)
            .map_err(supervisor_status)?;
        Ok(Response::new(status))
    }

    async fn apply_spec(
        &self,
        request: Request<ApplySpecRequest>,
    ) -> Result<Response<ApplySpecReply>, Status> {
        let call = Call::change("apply", Role::Admin);
        let target = format!("spec:{}", request.get_ref().source);
        let who = self.admit(&request, call, &target)?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .apply_spec(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let result = self
            .state
            .supervisor
            .apply(&req.source, &req.spec_toml, req.dry_run)
            .await
            .map_err(supervisor_status);
        if req.dry_run {
            return result.map(|report| Response::new(apply_reply(report)));
        }
        let target = match &result {
            Ok(report) => format!("service:{}", report.service),
            Err(_) => target,
        };
        let mut args = vec![
            ("source".to_string(), req.source.clone()),
            ("spec_sha256".to_string(), fingerprint(&req.spec_toml)),
        ];
        if let Ok(report) = &result {
            args.push(("action".into(), report.action.to_string()));
        }
        self.audited(who, call, target, args, result)
            .await
            .map(|report| Response::new(apply_reply(report)))
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceReply>, Status> {
        let call = Call::change("remove", Role::Admin);
        let target = format!("service:{}", request.get_ref().name);
        let who = self.admit(&request, call, &target)?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .remove_service(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let result = self
            .state
            .supervisor
            .remove(&req.name)
            .await
            .map_err(supervisor_status);
        self.audited(who, call, target, Vec::new(), result)
            .await
            .map(|stopped| {
                Response::new(RemoveServiceReply {
                    service: req.name,
                    stopped_instances: stopped,
                })
            })
    }

    async fn control_service(
        &self,
        request: Request<ControlServiceRequest>,
    ) -> Result<Response<ControlServiceReply>, Status> {
        let req = request.get_ref();
        let verb = req.action.as_ref().map_or("control", control::Action::verb);
        let call = Call::change(verb, Role::Operate);
        let target = match req.instance {
            0 => format!("service:{}", req.service),
            n => format!("service:{}/{n}", req.service),
        };
        let who = self.admit(&request, call, &target)?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .control_service(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let mut args = Vec::new();
        match &req.action {
            Some(control::Action::Scale(scale)) => {
                args.push(("count".to_string(), scale.count.to_string()))
            }
            Some(control::Action::Signal(send)) => args.push((
                "signal".to_string(),
                Signal::from_wire(send.signal).label().to_string(),
            )),
            _ => {}
        }
        let supervisor = &self.state.supervisor;
        let result = match parse_action(&req) {
            Ok(action) => supervisor
                .control(&req.service, req.instance, action)
                .await
                .map_err(supervisor_status),
            Err(status) => Err(status),
        };
        let message = self.audited(who, call, target, args, result).await?;
        let service = supervisor.get(&req.service).ok();
        Ok(Response::new(ControlServiceReply { service, message }))
    }

    type TailLogsStream = BoxStream<LogLine>;

    async fn tail_logs(
        &self,
        request: Request<TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, Status> {
        let who = self.admit(&request, Call::read_heavy("logs"), "")?;
        let permit = self.gate.stream_permit()?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .tail_logs(forward(request, &self.state.node_name, &who))
                .await
                .map(|r| Response::new(hold(r.into_inner(), permit)));
        }
        let req = request.into_inner();
        let grep = req.grep.clone();
        let make_filter = move || -> Result<Option<LineFilter>, Status> {
            if grep.is_empty() {
                return Ok(None);
            }
            LineFilter::new(&grep)
                .map(Some)
                .map_err(|e| Status::invalid_argument(format!("grep: {e}")))
        };
        make_filter()?;
        let dirs = self
            .state
            .supervisor
            .log_dirs(&req.service, req.instance)
            .map_err(supervisor_status)?;
        let lines = match req.lines {
            0 => 100,
            n => n.min(MAX_LOG_LINES),
        } as usize;
        let follow = req.follow;
        let (past, mut followers) =
            tokio::task::spawn_blocking(move || open_logs(&dirs, lines, follow, &make_filter))
                .await
                .map_err(|e| Status::internal(format!("log read did not finish: {e}")))??;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<LogLine, Status>>(256);
        tokio::spawn(async move {
            for line in past {
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if followers.is_empty() {
                return;
            }
            let mut timer = tokio::time::interval(LOG_POLL_INTERVAL);
            loop {
                timer.tick().await;
                for (id, follower) in followers.iter_mut() {
                    let new = follower.poll_new().unwrap_or_default();
                    for line in new {
                        if tx.send(Ok(log_line(id, line))).await.is_err() {
                            return;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(Response::new(hold(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            permit,
        )))
    }

    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersReply>, Status> {
        self.admit(&request, Call::read("members"), "")?;
        let cluster = &self.state.cluster;
        Ok(Response::new(ListMembersReply {
            members: cluster.members(),
            dropped_packets: cluster.stats().dropped_total(),
        }))
    }

    async fn get_catalog(
        &self,
        request: Request<GetCatalogRequest>,
    ) -> Result<Response<GetCatalogReply>, Status> {
        self.admit(&request, Call::read_heavy("catalog"), "")?;
        Ok(Response::new(GetCatalogReply {
            records: self.state.cluster.records(),
        }))
    }

    type WatchClusterStream = BoxStream<ClusterUpdate>;

    async fn watch_cluster(
        &self,
        request: Request<WatchClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        self.admit(&request, Call::read_heavy("watch cluster"), "")?;
        let permit = self.gate.stream_permit()?;
        let cluster = self.state.cluster.clone();
        let mut events = cluster.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ClusterUpdate, Status>>(64);
        tokio::spawn(async move {
            let snapshot = ClusterUpdate {
                kind: ClusterUpdateKind::Snapshot as i32,
                members: cluster.members(),
                records: cluster.records(),
                node: String::new(),
                time_unix_ms: unix_now_ms(),
            };
            if tx.send(Ok(snapshot)).await.is_err() {
                return;
            }
            loop {
                let update = match events.recv().await {
                    Ok(event) => cluster_update(&cluster, &event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        Some(ClusterUpdate {
                            kind: ClusterUpdateKind::Snapshot as i32,
                            members: cluster.members(),
                            records: cluster.records(),
                            node: String::new(),
                            time_unix_ms: unix_now_ms(),
                        })
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if let Some(update) = update
                    && tx.send(Ok(update)).await.is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(hold(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            permit,
        )))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeReply>, Status> {
        let drain = request.get_ref().drain;
        let call = Call::change(if drain { "drain" } else { "undrain" }, Role::Operate);
        let target = format!("node:{}", self.state.node_name);
        let who = self.admit(&request, call, &target)?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .drain_node(forward(request, &self.state.node_name, &who))
                .await;
        }
        self.state.cluster.set_draining(drain);
        let (kind, word) = if drain {
            ("node.drained", "drained")
        } else {
            ("node.undrained", "undrained")
        };
        let draft = EventDraft::new(
            kind,
            Severity::Info,
            target.clone(),
            format!("node {} {word} by {}", self.state.node_name, who.name),
        );
        if let Err(e) = self.state.journal.append(draft) {
            tracing::warn!(error = %e, "cannot record the drain event");
        }
        self.audited(who, call, target, Vec::new(), Ok(())).await?;
        Ok(Response::new(DrainNodeReply {
            node: self.state.node_name.clone(),
            draining: drain,
        }))
    }

    async fn force_leave(
        &self,
        request: Request<ForceLeaveRequest>,
    ) -> Result<Response<ForceLeaveReply>, Status> {
        let call = Call::change("force-leave", Role::Admin);
        let target = format!("node:{}", request.get_ref().member);
        let who = self.admit(&request, call, &target)?;
        let req = request.into_inner();
        let result = self
            .state
            .cluster
            .force_leave(&req.member)
            .map_err(|e| Status::failed_precondition(e.to_string()));
        if result.is_ok() {
            let draft = EventDraft::new(
                "member.force_left",
                Severity::Info,
                target.clone(),
                format!("{} was removed from the cluster by force-leave", req.member),
            );
            if let Err(e) = self.state.journal.append(draft) {
                tracing::warn!(error = %e, "cannot record the force-leave event");
            }
        }
        self.audited(who, call, target, Vec::new(), result).await?;
        Ok(Response::new(ForceLeaveReply { member: req.member }))
    }

    async fn keyring(
        &self,
        request: Request<KeyringRequest>,
    ) -> Result<Response<KeyringReply>, Status> {
        let op = request.get_ref().op();
        let call = match op {
            KeyringOp::List => Call::read("keyring list"),
            KeyringOp::Install => Call::change("keyring install", Role::Admin),
            KeyringOp::Use => Call::change("keyring use", Role::Admin),
            KeyringOp::Remove => Call::change("keyring remove", Role::Admin),
            KeyringOp::Unspecified => {
                return Err(Status::invalid_argument(
                    "op: none given; one of list, install, use, remove",
                ));
            }
        };
        let who = self.admit(&request, call, "keyring")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .keyring(forward(request, &self.state.node_name, &who))
                .await;
        }
        let req = request.into_inner();
        let cluster = &self.state.cluster;
        if call.role == Role::Admin {
            let result = match op {
                KeyringOp::Install => cluster.install_key(&req.key),
                KeyringOp::Use => cluster.use_key(&req.key),
                _ => cluster.remove_key(&req.key),
            }
            .map_err(|e| Status::invalid_argument(e.to_string()))
            .and_then(|()| {
                crate::keyring_store::save(&self.state.data_dir, cluster).map_err(|e| {
                    Status::internal(format!("the keyring changed but was not stored: {e}"))
                })
            });
            let args = vec![("key_sha256".to_string(), fingerprint(&req.key))];
            self.audited(who, call, "keyring".into(), args, result)
                .await?;
        }
        let info = cluster.keyring().ok_or_else(|| {
            Status::failed_precondition(
                "this agent gossips without a key (--insecure-gossip or --dev)",
            )
        })?;
        Ok(Response::new(KeyringReply {
            keys: info.keys,
            primary: info.primary,
            dropped_packets: cluster.stats().dropped_total(),
        }))
    }

    async fn get_balancer(
        &self,
        request: Request<GetBalancerRequest>,
    ) -> Result<Response<BalancerReply>, Status> {
        let who = self.admit(&request, Call::read("balancer"), "")?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .get_balancer(forward(request, &self.state.node_name, &who))
                .await;
        }
        Ok(Response::new(super::balancer::balancer_reply(
            &self.state.balancer.stats(),
        )))
    }

    type TailAccessLogStream = BoxStream<AccessRecord>;

    async fn tail_access_log(
        &self,
        request: Request<TailAccessLogRequest>,
    ) -> Result<Response<Self::TailAccessLogStream>, Status> {
        let who = self.admit(&request, Call::read_heavy("access log"), "")?;
        let permit = self.gate.stream_permit()?;
        if let Some(mut peer) = self.route(&request)? {
            return peer
                .tail_access_log(forward(request, &self.state.node_name, &who))
                .await
                .map(|r| Response::new(hold(r.into_inner(), permit)));
        }
        let req = request.into_inner();
        let lines = match req.lines {
            0 => 100,
            n => n.min(MAX_LOG_LINES),
        } as usize;
        let service = (!req.service.is_empty()).then_some(req.service.clone());
        let mut live = req.follow.then(|| self.state.balancer.subscribe_access());
        let dir = self.state.access_log_dir.clone();
        let filter = service.clone();
        let past = tokio::task::spawn_blocking(move || {
            strata_registry::balance::read_access_log(&dir, filter.as_deref(), lines)
        })
        .await
        .map_err(|e| Status::internal(format!("access log read did not finish: {e}")))?
        .map_err(|e| Status::internal(format!("cannot read the access log: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<AccessRecord, Status>>(256);
        tokio::spawn(async move {
            for record in &past {
                if tx
                    .send(Ok(super::balancer::access_record(record)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                match live.recv().await {
                    Ok(record) => {
                        if service.as_ref().is_some_and(|s| *s != record.service) {
                            continue;
                        }
                        if tx
                            .send(Ok(super::balancer::access_record(&record)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(hold(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            permit,
        )))
    }

    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIReply>, Status> {
        let who = self.admit(&request, Call::read("whoami"), "")?;
        Ok(Response::new(WhoAmIReply {
            name: who.name,
            role: WireRole::from(who.role) as i32,
            via: WireVia::from(who.via) as i32,
            credentials_required: self.gate.credentials_required(),
            node: self.state.node_name.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_filter_uses_severity_floor_and_kind_prefix() {
        let event = Event {
            kind: "alert.firing".into(),
            severity: Severity::Warning as i32,
            ..Default::default()
        };
        assert!(event_matches(&event, Severity::Unspecified, ""));
        assert!(event_matches(&event, Severity::Warning, "alert"));
        assert!(!event_matches(&event, Severity::Critical, ""));
        assert!(!event_matches(&event, Severity::Info, "kernel"));
    }
}
