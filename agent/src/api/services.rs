//! The supervisor's services in the API's terms: list, status, apply, remove, control, and
//! the services' logs.

use crate::state::AgentState;
use crate::supervisor::log_tail::{self, InstanceLine};
use crate::supervisor::logs::{Followed, Gap, LineFilter, LogStream};
use crate::supervisor::manager::{Action, ApplyReport, InstanceAction, SupervisorError};
use crate::supervisor::spec::Signal;
use strata_proto::v1::control_service_request as control;
use strata_proto::v1::{
    ApplySpecReply, ApplySpecRequest, ControlServiceReply, ControlServiceRequest,
    GetServiceRequest, ListServicesReply, LogGap, LogLine, LogStream as WireLogStream,
    RemoveServiceReply, RemoveServiceRequest, ServiceStatus, TailLogsRequest,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// Every service on this agent.
pub fn list(state: &AgentState) -> ListServicesReply {
    ListServicesReply {
        services: state.supervisor.list(),
        isolation: state.supervisor.isolation(),
    }
}

/// One service's status.
pub fn get(state: &AgentState, req: GetServiceRequest) -> Result<ServiceStatus, Status> {
    state.supervisor.get(&req.name).map_err(supervisor_status)
}

/// Checks a spec and, unless it is a dry run, stores it and acts on it.
pub async fn apply(state: &AgentState, req: ApplySpecRequest) -> Result<ApplySpecReply, Status> {
    let report = state
        .supervisor
        .apply(&req.source, &req.spec_toml, req.dry_run)
        .await
        .map_err(supervisor_status)?;
    Ok(apply_reply(report))
}

/// Stops a service's instances and forgets it.
pub async fn remove(
    state: &AgentState,
    req: RemoveServiceRequest,
) -> Result<RemoveServiceReply, Status> {
    let stopped = state
        .supervisor
        .remove(&req.name)
        .await
        .map_err(supervisor_status)?;
    Ok(RemoveServiceReply {
        service: req.name,
        stopped_instances: stopped,
    })
}

/// Starts, stops, restarts, scales or signals a service or one instance.
pub async fn control(
    state: &AgentState,
    req: ControlServiceRequest,
) -> Result<ControlServiceReply, Status> {
    let supervisor = &state.supervisor;
    let message = supervisor
        .control(&req.service, req.instance, parse_action(&req)?)
        .await
        .map_err(supervisor_status)?;
    let service = supervisor.get(&req.service).ok();
    Ok(ControlServiceReply { service, message })
}

/// A service's log (or one instance's): the last lines, then new ones when following.
pub async fn tail_logs(
    state: &AgentState,
    req: TailLogsRequest,
) -> Result<impl Stream<Item = Result<LogLine, Status>> + use<>, Status> {
    let filter = match req.grep.as_str() {
        "" => None,
        grep => Some(
            LineFilter::new(grep).map_err(|e| Status::invalid_argument(format!("grep: {e}")))?,
        ),
    };
    let dirs = state
        .supervisor
        .log_dirs(&req.service, req.instance)
        .map_err(supervisor_status)?;
    let lines = log_tail::open(dirs, super::past_lines(req.lines), req.follow, filter)
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(ReceiverStream::new(lines).map(|line| Ok(log_line(line))))
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

/// The reply to an apply.
fn apply_reply(report: ApplyReport) -> ApplySpecReply {
    ApplySpecReply {
        service: report.service,
        action: report.action as i32,
        changes: report.changes,
        applied: report.applied,
    }
}

/// A log line (or gap) as the API sends it. A gap is stamped with the time it was sent and
/// carries its description as text for clients that do not know `gap`.
fn log_line(tailed: InstanceLine) -> LogLine {
    let InstanceLine { instance, entry } = tailed;
    match entry {
        Followed::Line(line) => LogLine {
            time_unix_ms: line.time_unix_ms,
            instance,
            stream: match line.stream {
                LogStream::Out => WireLogStream::Out,
                LogStream::Err => WireLogStream::Err,
            } as i32,
            text: line.text,
            gap: None,
        },
        Followed::Gap(Gap { lines, uncounted }) => {
            let gap = LogGap { lines, uncounted };
            LogLine {
                time_unix_ms: crate::state::unix_now_ms(),
                instance,
                stream: WireLogStream::Unspecified as i32,
                text: gap.describe(),
                gap: Some(gap),
            }
        }
    }
}
