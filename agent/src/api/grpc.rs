//! The `strata.v1.Agent` gRPC service over the agent's shared state.

use crate::events::journal::EventQuery;
use crate::state::AgentState;
use crate::supervisor::logs::{self, LineFilter, LogStream};
use crate::supervisor::manager::{Action, SupervisorError};
use crate::supervisor::spec::StopSignal;
use std::pin::Pin;
use std::sync::Arc;
use strata_proto::v1::agent_server::Agent;
use strata_proto::v1::{
    ApplySpecReply, ApplySpecRequest, ControlServiceReply, ControlServiceRequest, Event,
    GetMetricsRequest, GetNodeRequest, GetServiceRequest, HostMetrics, ListServicesReply,
    ListServicesRequest, LogLine, MetricHistory, MetricHistoryRequest, NodeInfo, QueryEventsReply,
    QueryEventsRequest, RemoveServiceReply, RemoveServiceRequest, ServiceStatus, Severity,
    TailLogsRequest, TopProcessesReply, TopProcessesRequest, WatchEventsRequest,
    WatchMetricsRequest,
};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Default and largest number of events one query returns, so a read stays bounded.
pub const DEFAULT_EVENT_LIMIT: u32 = 1000;
/// See [`DEFAULT_EVENT_LIMIT`].
pub const MAX_EVENT_LIMIT: u32 = 10_000;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves the Agent API from the shared state.
pub struct AgentService {
    state: Arc<AgentState>,
}

impl AgentService {
    /// A service reading `state`.
    pub fn new(state: Arc<AgentState>) -> Self {
        AgentService { state }
    }

    fn check_node(&self, node: &str) -> Result<(), Status> {
        if self.state.is_self(node) {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "node {node:?} is not known to agent {} (cluster membership is not enabled on this agent)",
                self.state.node_name
            )))
        }
    }
}

fn severity_of(value: i32, field: &str) -> Result<Severity, Status> {
    Severity::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field}: unknown severity {value}")))
}

/// The gRPC status for a supervisor error.
fn supervisor_status(error: SupervisorError) -> Status {
    match error {
        SupervisorError::InvalidSpec(e) => Status::invalid_argument(e.to_string()),
        SupervisorError::Invalid(m) => Status::invalid_argument(m),
        SupervisorError::NotFound(m) => Status::not_found(m),
        SupervisorError::Failed(m) => Status::internal(m),
    }
}

/// Parses a control request into an action.
fn parse_action(req: &ControlServiceRequest) -> Result<Action, Status> {
    match req.action.as_str() {
        "start" => Ok(Action::Start),
        "stop" => Ok(Action::Stop),
        "restart" => Ok(Action::Restart),
        "scale" => Ok(Action::Scale(req.count)),
        "signal" => StopSignal::parse(&req.signal).map(Action::Signal).ok_or_else(|| {
            Status::invalid_argument(format!(
                "signal: {:?} is not one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGKILL, SIGUSR1, SIGUSR2",
                req.signal
            ))
        }),
        other => Err(Status::invalid_argument(format!(
            "action: {other:?} is not one of start, stop, restart, scale, signal"
        ))),
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
            LogStream::Out => "out".into(),
            LogStream::Err => "err".into(),
        },
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

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_node(
        &self,
        request: Request<GetNodeRequest>,
    ) -> Result<Response<NodeInfo>, Status> {
        self.check_node(&request.get_ref().node)?;
        Ok(Response::new(self.state.node_info()))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<HostMetrics>, Status> {
        self.check_node(&request.get_ref().node)?;
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
        let req = request.into_inner();
        self.check_node(&req.node)?;
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
        self.check_node(&request.get_ref().node)?;
        let stream = WatchStream::new(self.state.latest.subscribe())
            .filter(|m| m.time_unix_ms != 0)
            .map(|m| Ok((*m).clone()));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn top_processes(
        &self,
        request: Request<TopProcessesRequest>,
    ) -> Result<Response<TopProcessesReply>, Status> {
        let req = request.into_inner();
        self.check_node(&req.node)?;
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
        let req = request.into_inner();
        self.check_node(&req.node)?;
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
        let req = request.into_inner();
        self.check_node(&req.node)?;
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
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesReply>, Status> {
        self.check_node(&request.get_ref().node)?;
        Ok(Response::new(ListServicesReply {
            services: self.state.supervisor.list().await,
            isolation: self.state.supervisor.isolation(),
        }))
    }

    async fn get_service(
        &self,
        request: Request<GetServiceRequest>,
    ) -> Result<Response<ServiceStatus>, Status> {
        let req = request.into_inner();
        self.check_node(&req.node)?;
        let status = self
            .state
            .supervisor
            .get(&req.name)
            .await
            .map_err(supervisor_status)?;
        Ok(Response::new(status))
    }

    async fn apply_spec(
        &self,
        request: Request<ApplySpecRequest>,
    ) -> Result<Response<ApplySpecReply>, Status> {
        let req = request.into_inner();
        self.check_node(&req.node)?;
        let report = self
            .state
            .supervisor
            .apply(&req.source, &req.spec_toml, req.dry_run)
            .await
            .map_err(supervisor_status)?;
        Ok(Response::new(ApplySpecReply {
            service: report.service,
            action: report.action.to_string(),
            changes: report.changes,
            applied: report.applied,
        }))
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceReply>, Status> {
        let req = request.into_inner();
        self.check_node(&req.node)?;
        let stopped = self
            .state
            .supervisor
            .remove(&req.name)
            .await
            .map_err(supervisor_status)?;
        Ok(Response::new(RemoveServiceReply {
            service: req.name,
            stopped_instances: stopped,
        }))
    }

    async fn control_service(
        &self,
        request: Request<ControlServiceRequest>,
    ) -> Result<Response<ControlServiceReply>, Status> {
        let req = request.into_inner();
        self.check_node(&req.node)?;
        let action = parse_action(&req)?;
        let supervisor = &self.state.supervisor;
        let message = supervisor
            .control(&req.service, req.instance, action)
            .await
            .map_err(supervisor_status)?;
        let service = supervisor.get(&req.service).await.ok();
        Ok(Response::new(ControlServiceReply { service, message }))
    }

    type TailLogsStream = BoxStream<LogLine>;

    async fn tail_logs(
        &self,
        request: Request<TailLogsRequest>,
    ) -> Result<Response<Self::TailLogsStream>, Status> {
        let req = request.into_inner();
        self.check_node(&req.node)?;
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
            .await
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
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
