//! The event journal in the API's terms: bounded queries and a filtered watch.

use crate::events::journal::EventQuery;
use crate::state::AgentState;
use strata_proto::v1::{Event, QueryEventsReply, QueryEventsRequest, Severity, WatchEventsRequest};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Default and largest number of events one query returns, so a read stays bounded.
pub const DEFAULT_EVENT_LIMIT: u32 = 1000;
/// See [`DEFAULT_EVENT_LIMIT`].
pub const MAX_EVENT_LIMIT: u32 = 10_000;

/// The journal's events that match a query, oldest first, at most [`MAX_EVENT_LIMIT`].
pub async fn query(
    state: &AgentState,
    req: QueryEventsRequest,
) -> Result<QueryEventsReply, Status> {
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
    let journal = state.journal.clone();
    let events = tokio::task::spawn_blocking(move || journal.query(&query))
        .await
        .map_err(|e| Status::internal(format!("event query did not finish: {e}")))?
        .map_err(|e| Status::internal(format!("event journal: {e}")))?;
    Ok(QueryEventsReply { events })
}

/// Every new event that matches the request, as it is recorded.
pub fn watch(
    state: &AgentState,
    req: WatchEventsRequest,
) -> Result<impl Stream<Item = Result<Event, Status>> + use<>, Status> {
    let min_severity = severity_of(req.min_severity, "min_severity")?;
    let kind = req.kind;
    Ok(
        BroadcastStream::new(state.journal.subscribe()).filter_map(move |item| match item {
            Ok(event) if event_matches(&event, min_severity, &kind) => Some(Ok(event)),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(n)) => {
                tracing::warn!(skipped = n, "an event watcher fell behind");
                None
            }
        }),
    )
}

fn severity_of(value: i32, field: &str) -> Result<Severity, Status> {
    Severity::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("{field}: unknown severity {value}")))
}

/// Whether `event` passes a severity floor and a kind prefix.
pub fn event_matches(event: &Event, min_severity: Severity, kind_prefix: &str) -> bool {
    event.severity >= min_severity as i32 && event.kind.starts_with(kind_prefix)
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
