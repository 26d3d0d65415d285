//! The host's figures in the API's terms: the newest sample, its history, a watch on new
//! samples, and the top processes.

use crate::state::AgentState;
use strata_proto::v1::{
    HostMetrics, MetricHistory, MetricHistoryRequest, TopProcessesReply, TopProcessesRequest,
};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Processes in each top list when the request does not say.
const DEFAULT_TOP: usize = 10;

/// The newest host sample; Unavailable before the first one.
pub fn metrics(state: &AgentState) -> Result<HostMetrics, Status> {
    let latest = state.latest();
    if latest.time_unix_ms == 0 {
        return Err(Status::unavailable(
            "the first host sample has not been collected yet; retry in a second",
        ));
    }
    Ok((*latest).clone())
}

/// The series a request asks for, between its times, at its step (or one that fits).
pub fn history(state: &AgentState, req: MetricHistoryRequest) -> Result<MetricHistory, Status> {
    let (from, to) = (req.from_unix_ms, req.to_unix_ms);
    if from > 0 && to > 0 && from > to {
        return Err(Status::invalid_argument(format!(
            "from_unix_ms ({from}) is after to_unix_ms ({to})"
        )));
    }
    if req.step_ms < 0 {
        return Err(Status::invalid_argument("step_ms must not be negative"));
    }
    let history = state
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
    Ok(MetricHistory {
        series,
        available,
        step_ms,
    })
}

/// Every new host sample, starting with the newest one taken.
pub fn watch(state: &AgentState) -> impl Stream<Item = Result<HostMetrics, Status>> + use<> {
    WatchStream::new(state.latest.subscribe())
        .filter(|m| m.time_unix_ms != 0)
        .map(|m| Ok((*m).clone()))
}

/// The processes using the most CPU and memory in the newest sample.
pub fn top_processes(state: &AgentState, req: TopProcessesRequest) -> TopProcessesReply {
    let latest = state.latest();
    let limit = match req.limit {
        0 => DEFAULT_TOP,
        n => n as usize,
    };
    TopProcessesReply {
        by_cpu: latest.top_cpu.iter().take(limit).cloned().collect(),
        by_memory: latest.top_memory.iter().take(limit).cloned().collect(),
        time_unix_ms: latest.time_unix_ms,
    }
}
