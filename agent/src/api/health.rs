//! Whether the agent is ready, one rule for both faces: HTTP `GET /health` and gRPC's
//! `grpc.health.v1.Health` (Check and Watch, served by `tonic-health`), which Kubernetes gRPC
//! probes, `grpc_health_probe`, Consul and Envoy gRPC checks call.
//!
//! The agent is ready while its collector produces samples (the last one is at most five
//! collect intervals old, and at least 5 s). gRPC health answers for the whole server (`""`)
//! and for `strata.v1.Agent`: NOT_SERVING until the first sample, SERVING while ready,
//! NOT_SERVING again when the collector stalls and from the moment the agent starts to stop.
//! HTTP `/health` keeps answering 200 "starting" during the first intervals, as before.
//!
//! Health is outside the API layer's table: it reads no data but this status and changes
//! nothing, so it needs no credentials (probes have none). It is bounded on its own: a Watch
//! holds one of [`MAX_WATCHES`] places, and every Watch ends when the server shuts down.

use crate::state::{AgentState, unix_now_ms};
use std::sync::Arc;
use std::time::Duration;
use strata_proto::v1::agent_server::SERVICE_NAME as AGENT_SERVICE;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::pb::health_check_response::ServingStatus as WatchStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

/// Health Watch streams open at once, agent-wide; more get RESOURCE_EXHAUSTED.
pub const MAX_WATCHES: usize = 64;

/// The names health answers for: the whole server and the agent's API.
const SERVED: [&str; 2] = ["", AGENT_SERVICE];

/// Where the agent stands, from its collector's last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// A sample within the last five intervals.
    Ready,
    /// No sample yet, within the first five intervals.
    Starting,
    /// No recent sample: the collector is stuck.
    Stalled,
}

/// Decides readiness from the last sample's time (0: none yet), now, and the time since the
/// agent started (all in milliseconds).
pub fn judge(last_ms: i64, now_ms: i64, since_start_ms: i64, interval: Duration) -> Readiness {
    let stale_after_ms = (interval.as_millis() as i64 * 5).max(5_000);
    if last_ms != 0 && now_ms - last_ms <= stale_after_ms {
        Readiness::Ready
    } else if last_ms == 0 && since_start_ms <= stale_after_ms {
        Readiness::Starting
    } else {
        Readiness::Stalled
    }
}

/// The agent's readiness now.
pub fn readiness(state: &AgentState, interval: Duration) -> Readiness {
    judge(
        state.latest().time_unix_ms,
        unix_now_ms(),
        state.started.elapsed().as_millis() as i64,
        interval,
    )
}

/// What gRPC health says for a readiness, once the agent is or is not stopping.
pub fn serving_status(readiness: Readiness, stopping: bool) -> ServingStatus {
    match readiness {
        Readiness::Ready if !stopping => ServingStatus::Serving,
        _ => ServingStatus::NotServing,
    }
}

/// `grpc.health.v1.Health` over tonic-health's service, with bounded Watch streams that end
/// when the server shuts down.
pub struct AgentHealth {
    inner: HealthService,
    watches: Arc<Semaphore>,
    shutdown: watch::Receiver<bool>,
}

#[tonic::async_trait]
impl Health for AgentHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = super::gate::ReplyStream<HealthCheckResponse>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let permit = Arc::clone(&self.watches).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{MAX_WATCHES} health watches are open; use Check or retry later"
            ))
        })?;
        let statuses = self.inner.watch(request).await?.into_inner();
        let until_shutdown = UntilShutdown::new(statuses, self.shutdown.clone());
        Ok(Response::new(super::gate::hold(until_shutdown, permit)))
    }
}

/// A Watch stream that ends when the server shuts down, saying NOT_SERVING first: the
/// statuses already set are looked at before the shutdown signal (a fair merge of the two
/// could end the stream first), and a watcher that was last told anything else is told
/// NOT_SERVING before the end, whether or not the status set at the stop reached it.
struct UntilShutdown<S> {
    statuses: S,
    shutdown: WatchStream<bool>,
    /// Whether the last status yielded was NOT_SERVING.
    said_not_serving: bool,
    ended: bool,
}

impl<S> UntilShutdown<S> {
    fn new(statuses: S, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            statuses,
            shutdown: WatchStream::new(shutdown),
            said_not_serving: false,
            ended: false,
        }
    }
}

/// One Watch message.
type WatchItem = Result<HealthCheckResponse, Status>;

impl<S> Stream for UntilShutdown<S>
where
    S: Stream<Item = WatchItem> + Unpin,
{
    type Item = WatchItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchItem>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = std::pin::Pin::new(&mut self.statuses).poll_next(cx) {
            self.ended = item.is_none();
            self.said_not_serving =
                matches!(&item, Some(Ok(r)) if r.status() == WatchStatus::NotServing);
            return Poll::Ready(item);
        }
        loop {
            match std::pin::Pin::new(&mut self.shutdown).poll_next(cx) {
                Poll::Ready(Some(false)) => continue,
                // Shut down, or the server that would say so is gone.
                Poll::Ready(Some(true) | None) => {
                    self.ended = true;
                    if self.said_not_serving {
                        return Poll::Ready(None);
                    }
                    let last = HealthCheckResponse {
                        status: WatchStatus::NotServing as i32,
                    };
                    return Poll::Ready(Some(Ok(last)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The health service for the gRPC server, NOT_SERVING until the task it spawns sees the
/// agent ready. The task follows readiness every `interval` and on each sample, and says
/// NOT_SERVING for good once `stopping` is true; Watch streams end when `shutdown` is.
pub async fn serve(
    state: Arc<AgentState>,
    interval: Duration,
    stopping: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
) -> (HealthServer<AgentHealth>, JoinHandle<()>) {
    // The reporter starts with "" SERVING: no probe may see that before the first sample.
    let reporter = HealthReporter::new();
    for name in SERVED {
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    let service = AgentHealth {
        inner: HealthService::from_health_reporter(reporter.clone()),
        watches: Arc::new(Semaphore::new(MAX_WATCHES)),
        shutdown,
    };
    let task = tokio::spawn(follow(reporter, state, interval, stopping));
    (HealthServer::new(service), task)
}

/// Keeps the reporter's statuses at what the agent's readiness says.
async fn follow(
    reporter: HealthReporter,
    state: Arc<AgentState>,
    interval: Duration,
    mut stopping: watch::Receiver<bool>,
) {
    let mut samples = state.latest.subscribe();
    let mut said = Some(ServingStatus::NotServing);
    loop {
        let stop = *stopping.borrow_and_update();
        let status = serving_status(readiness(&state, interval), stop);
        if said != Some(status) {
            for name in SERVED {
                reporter.set_service_status(name, status).await;
            }
            tracing::info!(%status, "gRPC health");
            said = Some(status);
        }
        if stop {
            return;
        }
        tokio::select! {
            _ = samples.changed() => {}
            _ = stopping.changed() => {}
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a Watch yields, by status, when `statuses` were set and then the server
    /// shut down, before the stream was looked at.
    async fn watched(statuses: &[WatchStatus]) -> Vec<WatchStatus> {
        use tokio_stream::StreamExt;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        for status in statuses {
            let reply = HealthCheckResponse {
                status: *status as i32,
            };
            tx.send(Ok(reply)).await.unwrap();
        }
        let (_stop, stopped) = watch::channel(true);
        let stream = UntilShutdown::new(tokio_stream::wrappers::ReceiverStream::new(rx), stopped);
        let seen: Vec<WatchItem> = tokio::time::timeout(SECOND, stream.collect())
            .await
            .expect("the stream ends at shutdown");
        drop(tx);
        seen.into_iter().map(|r| r.unwrap().status()).collect()
    }

    #[tokio::test]
    async fn a_watch_ends_at_shutdown_after_every_status_set_and_always_on_not_serving() {
        use WatchStatus::{NotServing, Serving};
        // Statuses already set come first, and NOT_SERVING is not said twice.
        assert_eq!(watched(&[Serving, NotServing]).await, [Serving, NotServing]);
        // The stop's NOT_SERVING had not reached the stream: it is said before the end.
        assert_eq!(watched(&[Serving]).await, [Serving, NotServing]);
        assert_eq!(watched(&[]).await, [NotServing]);
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn ready_while_samples_are_recent() {
        assert_eq!(judge(10_000, 10_500, 60_000, SECOND), Readiness::Ready);
        assert_eq!(judge(10_000, 15_000, 60_000, SECOND), Readiness::Ready);
        assert_eq!(judge(10_000, 15_001, 60_000, SECOND), Readiness::Stalled);
        // Five intervals when they are longer than a second.
        assert_eq!(judge(10_000, 19_000, 60_000, 2 * SECOND), Readiness::Ready);
    }

    #[test]
    fn starting_until_the_first_sample_then_stalled() {
        assert_eq!(judge(0, 1_000, 1_000, SECOND), Readiness::Starting);
        assert_eq!(judge(0, 5_000, 5_000, SECOND), Readiness::Starting);
        assert_eq!(judge(0, 6_000, 6_000, SECOND), Readiness::Stalled);
    }

    #[test]
    fn grpc_serves_only_when_ready_and_not_stopping() {
        use Readiness::*;
        for (readiness, stopping, status) in [
            (Ready, false, ServingStatus::Serving),
            (Ready, true, ServingStatus::NotServing),
            (Starting, false, ServingStatus::NotServing),
            (Stalled, false, ServingStatus::NotServing),
            (Stalled, true, ServingStatus::NotServing),
        ] {
            assert_eq!(serving_status(readiness, stopping), status);
        }
    }
}
