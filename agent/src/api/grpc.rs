//! The `strata.v1.Agent` gRPC service over the agent's shared state.

use crate::events::journal::EventQuery;
use crate::state::AgentState;
use std::pin::Pin;
use std::sync::Arc;
use strata_proto::v1::agent_server::Agent;
use strata_proto::v1::{
    Event, GetMetricsRequest, GetNodeRequest, HostMetrics, MetricHistory, MetricHistoryRequest,
    NodeInfo, QueryEventsReply, QueryEventsRequest, Severity, TopProcessesReply,
    TopProcessesRequest, WatchEventsRequest, WatchMetricsRequest,
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
