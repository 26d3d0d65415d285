//! One client connection: find an instance and connect (`connect`), forward both ways until
//! done, until the endpoint's drain deadline or until the connection falls silent
//! (`silence`), and write the access record.

use super::Shared;
use super::access::{AccessRecord, Outcome};
use super::copy::{Flow, transfer};
use super::silence::Silence;
use super::state::{ActiveGuard, Drain, EndpointState, ServiceState};
use crate::table::BalanceConfig;
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep, sleep_until, timeout};

/// How long a client waits for an available instance while a service has only draining
/// ones, before it fails as `no_healthy_instance`.
const DRAINING_ONLY_WAIT: Duration = Duration::from_secs(2);
/// First pause of a queued client whose connects all failed; it doubles up to
/// [`MAX_BACKOFF`], so a briefly failing service is retried soon and a failing one gently.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between two looks of a queued client (also when it waits for a free slot,
/// in case a wake-up was missed).
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Counts a client connection on its service while alive.
struct ClientGuard<'a>(&'a ServiceState);

impl<'a> ClientGuard<'a> {
    fn new(service: &'a ServiceState) -> Self {
        service.active.fetch_add(1, Ordering::Relaxed);
        service.total.fetch_add(1, Ordering::Relaxed);
        Self(service)
    }
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one accepted client connection to the end.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    service: Arc<ServiceState>,
    port_name: Arc<str>,
    client: TcpStream,
    peer: SocketAddr,
) {
    let accepted = Instant::now();
    let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let _counted = ClientGuard::new(&service);
    let config = &shared.config;
    let balance = service.balance();
    let _ = client.set_nodelay(true);

    let mut attempts = Attempts::default();
    let connected = connect(
        &shared,
        &service,
        &port_name,
        &balance,
        accepted,
        &mut attempts,
    )
    .await;

    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);
    let (outcome, endpoint) = match connected {
        Err(outcome) => {
            if outcome == Outcome::NoHealthyInstance {
                service.no_healthy.fetch_add(1, Ordering::Relaxed);
            }
            if matches!(outcome, Outcome::QueueFull | Outcome::QueueTimeout) {
                service.queue_failures.fetch_add(1, Ordering::Relaxed);
            }
            (outcome, attempts.last.take())
        }
        Ok((guard, backend)) => {
            let endpoint = guard.endpoint();
            let _ = backend.set_nodelay(true);
            let inbound = Flow {
                connection: &bytes_in,
                endpoint: &endpoint.bytes_in,
            };
            let outbound = Flow {
                connection: &bytes_out,
                endpoint: &endpoint.bytes_out,
            };
            let outcome = tokio::select! {
                result = transfer(config.copy_mode, &client, &backend, config.buffer_size, inbound, outbound) => match result {
                    Ok(()) => Outcome::Ok,
                    Err(error) => {
                        tracing::debug!(service = %service.name, instance = %endpoint.instance, %error, "connection ended by an error");
                        Outcome::Reset
                    }
                },
                () = drained(endpoint.drain_signal()) => Outcome::Drained,
                outcome = silent(&balance, &bytes_in, &bytes_out) => {
                    tracing::debug!(service = %service.name, instance = %endpoint.instance, ?outcome, "connection closed by a timeout");
                    outcome
                }
            };
            (outcome, Some(Arc::clone(endpoint)))
        }
    };
    shared.access.record(AccessRecord {
        time,
        service: service.name.clone(),
        port_name: port_name.to_string(),
        client: peer.to_string(),
        instance: endpoint.as_ref().map(|e| e.instance.clone()),
        node: endpoint.as_ref().map(|e| e.node.clone()),
        backend: endpoint
            .as_ref()
            .and_then(|e| e.addr(&port_name))
            .map(|a| a.to_string()),
        attempts: attempts.count,
        bytes_in: bytes_in.load(Ordering::Relaxed),
        bytes_out: bytes_out.load(Ordering::Relaxed),
        duration_ms: accepted.elapsed().as_secs_f64() * 1e3,
        outcome,
    });
}

/// The connect attempts of one client so far.
#[derive(Default)]
struct Attempts {
    count: u32,
    /// How the last attempt failed, and where.
    failure: Option<Outcome>,
    last: Option<Arc<EndpointState>>,
}

/// Finds an instance and connects to it, trying again elsewhere and waiting rather than
/// failing while that can help (HAProxy's retries, `maxconn` and `timeout queue`):
///
/// - a round tries up to `1 + retries` instances, each at most once (the client has sent
///   nothing yet, so a new attempt is safe);
/// - when a round ends without a connection (every instance at `max_conns`, ejected, or its
///   connects failed), the client takes a place in the service's queue (at most `max_queue`)
///   and tries another round when a connection of the service ends or the endpoints change
///   (queued clients are woken oldest first), or after a pause that grows while its connects
///   keep failing;
/// - it gives up `queue_timeout` after its accept. A new client queues behind waiting ones.
///
/// A service with no endpoint at all fails at once, as does every failure when `max_queue`
/// is 0. One with only draining endpoints (stopping, critical, on a drained node) waits at
/// most [`DRAINING_ONLY_WAIT`]: long enough for a replacement published a moment later (a
/// catalog update in flight), short enough that a service that is really down fails fast.
async fn connect(
    shared: &Shared,
    service: &Arc<ServiceState>,
    port_name: &str,
    balance: &BalanceConfig,
    accepted: Instant,
    attempts: &mut Attempts,
) -> Result<(ActiveGuard, TcpStream), Outcome> {
    let deadline = accepted + balance.queue_timeout;
    let mut place = None;
    let mut backoff = FIRST_BACKOFF;
    // Behind waiting clients, unless the queue is full (then this one may as well look).
    let mut behind_others = (1..balance.max_queue as usize).contains(&service.waiting());
    loop {
        // Registered before looking, so that a slot freed meanwhile is not missed.
        let freed = service.freed();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let before = attempts.count;
        if !behind_others
            && let Some(connected) = round(shared, service, port_name, balance, attempts).await
        {
            return Ok(connected);
        }
        behind_others = false;
        let failed_connects = attempts.count > before;
        let give_up = attempts.failure.unwrap_or(Outcome::NoHealthyInstance);
        let now = Instant::now();
        let nothing_to_wait_for = !service.has_endpoints()
            || (!service.has_available_endpoints() && now >= accepted + DRAINING_ONLY_WAIT);
        if balance.max_queue == 0 || nothing_to_wait_for || (now >= deadline && place.is_none()) {
            return Err(give_up);
        }
        if now >= deadline {
            return Err(Outcome::QueueTimeout);
        }
        if place.is_none() {
            place = Some(service.enter_queue().ok_or(Outcome::QueueFull)?);
        }
        let left = deadline - now;
        if failed_connects {
            // Failing instances: a pause, not every freed slot (our own failed attempt
            // frees one), so a refusing instance is not hammered.
            sleep(jittered(backoff).min(left)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            tokio::select! {
                () = &mut freed => {}
                () = sleep(MAX_BACKOFF.min(left)) => {}
            }
        }
    }
}

/// `pause` plus up to half of it again, so clients that failed together do not all retry
/// in the same instant.
fn jittered(pause: Duration) -> Duration {
    pause + pause.mul_f64(fastrand::f64() / 2.0)
}

/// One round of connect attempts; records each failure on its endpoint (which may eject it).
async fn round(
    shared: &Shared,
    service: &Arc<ServiceState>,
    port_name: &str,
    balance: &BalanceConfig,
    attempts: &mut Attempts,
) -> Option<(ActiveGuard, TcpStream)> {
    let mut tried: Vec<Arc<EndpointState>> = Vec::new();
    while tried.len() <= balance.retries as usize {
        let endpoint = service.pick(port_name, &tried, Instant::now())?;
        let guard = ActiveGuard::new(Arc::clone(&endpoint));
        tried.push(endpoint);
        let addr = guard.endpoint().addr(port_name)?;
        attempts.count += 1;
        attempts.last = Some(Arc::clone(guard.endpoint()));
        let started = Instant::now();
        let result = timeout(balance.connect_timeout, TcpStream::connect(addr)).await;
        let now = Instant::now();
        let timed_out = match result {
            Ok(Ok(stream)) => {
                service.connected(guard.endpoint(), now - started, now);
                return Some((guard, stream));
            }
            Ok(Err(error)) => {
                tracing::debug!(service = %service.name, instance = %guard.endpoint().instance, %addr, %error, "connect failed");
                attempts.failure = Some(Outcome::ConnectFailed);
                false
            }
            Err(_) => {
                tracing::debug!(service = %service.name, instance = %guard.endpoint().instance, %addr, "connect timed out");
                attempts.failure = Some(Outcome::Timeout);
                true
            }
        };
        if let Some(until) = service.connect_failed(
            guard.endpoint(),
            started,
            timed_out,
            &shared.config.outlier,
            now,
        ) {
            shared.ejected(service, guard.endpoint(), until, now);
        }
    }
    None
}

/// Completes with the outcome when the connection falls silent past the service's idle or
/// response timeout (never when both are off).
async fn silent(balance: &BalanceConfig, bytes_in: &AtomicU64, bytes_out: &AtomicU64) -> Outcome {
    let mut silence = Silence::new(
        balance.idle_timeout,
        balance.response_timeout,
        Instant::now(),
    );
    loop {
        let Some(pause) = silence.next_check() else {
            return pending().await;
        };
        sleep(pause).await;
        let seen = (
            bytes_in.load(Ordering::Relaxed),
            bytes_out.load(Ordering::Relaxed),
        );
        if let Some(outcome) = silence.check(seen.0, seen.1, Instant::now()) {
            return outcome;
        }
    }
}

/// Completes at the endpoint's drain deadline (never while it is active).
async fn drained(mut signal: watch::Receiver<Drain>) {
    loop {
        let state = *signal.borrow_and_update();
        match state {
            Drain::Active => {
                if signal.changed().await.is_err() {
                    pending::<()>().await;
                }
            }
            Drain::Draining { deadline } => {
                tokio::select! {
                    () = sleep_until(deadline.into()) => return,
                    changed = signal.changed() => if changed.is_err() {
                        sleep_until(deadline.into()).await;
                        return;
                    },
                }
            }
        }
    }
}
