//! One client connection: pick an endpoint, connect (trying other instances on failure, which
//! is safe because the client has sent nothing yet), forward both ways until done or until the
//! endpoint's drain deadline, and write the access record.

use super::Shared;
use super::access::{AccessRecord, Outcome};
use super::copy::{Flow, transfer};
use super::state::{ActiveGuard, Drain, ServiceState};
use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout};

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
    let _ = client.set_nodelay(true);

    let mut tried = Vec::new();
    let mut failure = Outcome::NoHealthyInstance;
    let mut connected = None;
    while tried.len() <= config.retries as usize {
        let Some(endpoint) = service.pick(&port_name, &tried, Instant::now()) else {
            break;
        };
        let guard = ActiveGuard::new(Arc::clone(&endpoint));
        tried.push(endpoint);
        let Some(addr) = guard.endpoint().addr(&port_name) else {
            continue;
        };
        let started = Instant::now();
        let result = timeout(config.connect_timeout, TcpStream::connect(addr)).await;
        let now = Instant::now();
        match result {
            Ok(Ok(stream)) => {
                service.connected(guard.endpoint(), now - started, now);
                connected = Some((guard, stream));
                break;
            }
            Ok(Err(error)) => {
                tracing::debug!(service = %service.name, instance = %guard.endpoint().instance, %addr, %error, "connect failed");
                failure = Outcome::ConnectFailed;
            }
            Err(_) => {
                tracing::debug!(service = %service.name, instance = %guard.endpoint().instance, %addr, "connect timed out");
                failure = Outcome::Timeout;
            }
        }
        if let Some(until) = service.connect_failed(
            guard.endpoint(),
            config.connect_timeout,
            &config.outlier,
            now,
        ) {
            shared.ejected(&service, guard.endpoint(), until, now);
        }
    }

    let bytes_in = AtomicU64::new(0);
    let bytes_out = AtomicU64::new(0);
    let (outcome, endpoint) = match connected {
        None => {
            if failure == Outcome::NoHealthyInstance {
                service.no_healthy.fetch_add(1, Ordering::Relaxed);
            }
            (failure, tried.last().cloned())
        }
        Some((guard, backend)) => {
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
        attempts: tried.len() as u32,
        bytes_in: bytes_in.load(Ordering::Relaxed),
        bytes_out: bytes_out.load(Ordering::Relaxed),
        duration_ms: accepted.elapsed().as_secs_f64() * 1e3,
        outcome,
    });
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
