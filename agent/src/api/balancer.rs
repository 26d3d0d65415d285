//! The balancer's figures and access log in the API's terms.

use strata_proto::v1::{
    AccessOutcome, AccessRecord, BalancerEndpoint, BalancerListener, BalancerReply,
    BalancerService, ListenerState, TailAccessLogRequest,
};
use strata_registry::balance::{self, Balancer, BalancerStats, ListenerStatus};
use strata_registry::table::ServiceTable;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

/// The access log (one service's records, or all): the last records, then new ones when
/// following. A service the catalog does not know is NotFound, as for every other call.
pub async fn tail_access_log(
    balancer: &Balancer,
    table: &ServiceTable,
    req: TailAccessLogRequest,
) -> Result<impl Stream<Item = Result<AccessRecord, Status>> + use<>, Status> {
    let service = (!req.service.is_empty()).then_some(req.service);
    if let Some(name) = &service
        && !table.services.contains_key(name)
    {
        return Err(Status::not_found(format!(
            "no service named {name} in the catalog (`strata access-log` without a name shows every service's records)"
        )));
    }
    let records = balancer
        .tail_access(service, super::past_lines(req.lines), req.follow)
        .await
        .map_err(|e| Status::internal(format!("cannot read the access log: {e}")))?;
    Ok(ReceiverStream::new(records).map(|record| Ok(access_record(&record))))
}

/// The balancer's statistics as the API returns them.
pub fn balancer_reply(stats: &BalancerStats) -> BalancerReply {
    BalancerReply {
        services: stats
            .services
            .iter()
            .map(|s| BalancerService {
                name: s.name.clone(),
                algorithm: s.algorithm as i32,
                prefer_local: s.prefer_local,
                listeners: s
                    .listeners
                    .iter()
                    .map(|l| {
                        let (state, detail) = match &l.status {
                            ListenerStatus::Listening { addr } => {
                                (ListenerState::Listening, addr.clone())
                            }
                            ListenerStatus::Failed { error } => {
                                (ListenerState::Failed, error.clone())
                            }
                        };
                        BalancerListener {
                            port_name: l.port_name.clone(),
                            port: u32::from(l.port),
                            state: state as i32,
                            detail,
                        }
                    })
                    .collect(),
                active: s.active,
                total: s.total,
                no_healthy_instance: s.no_healthy_instance,
                endpoints: s
                    .endpoints
                    .iter()
                    .map(|e| BalancerEndpoint {
                        instance: e.instance.clone(),
                        node: e.node.clone(),
                        ip: e.ip.clone(),
                        local: e.local,
                        draining: e.draining,
                        active: e.active,
                        total: e.total,
                        failures: e.failures,
                        bytes_in: e.bytes_in,
                        bytes_out: e.bytes_out,
                        connect_latency_ewma_ms: e.connect_latency_ewma_ms,
                        ejected_until: e.ejected_until.clone().unwrap_or_default(),
                        ejections: e.ejections,
                    })
                    .collect(),
            })
            .collect(),
        access_log_dropped: stats.access_log_dropped,
    }
}

/// One access log record as the API returns it.
fn access_record(r: &balance::AccessRecord) -> AccessRecord {
    AccessRecord {
        time: r.time.clone(),
        service: r.service.clone(),
        port_name: r.port_name.clone(),
        client: r.client.clone(),
        instance: r.instance.clone().unwrap_or_default(),
        node: r.node.clone().unwrap_or_default(),
        backend: r.backend.clone().unwrap_or_default(),
        attempts: r.attempts,
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        duration_ms: r.duration_ms,
        outcome: AccessOutcome::from(r.outcome) as i32,
    }
}
