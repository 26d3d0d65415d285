//! Supervision of the frontend listeners: follows the service table, so that every
//! (service, port name) with a frontend port has a listener on `bind_ip:port`. Listeners of a
//! vanished service close at once (its open connections drain); a port that cannot be bound
//! marks only that service's listener as failed and is retried. Of two services claiming one
//! port, the first by name is served, on every node.

use super::state::{ServiceState, lock};
use super::stats::ListenerStatus;
use super::{BalancerEvent, Shared, proxy};
use crate::table::ServiceTable;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a failed listener tries to bind again.
const RETRY: Duration = Duration::from_secs(2);
/// Pending connections the kernel queues per frontend.
const BACKLOG: u32 = 4096;
/// Pause after an accept error (e.g. out of file descriptors) so the loop cannot spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// A listener task that is aborted (closing its socket) when dropped.
struct Listener {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs until the balancer is dropped: reconciles on every table change and retries failed
/// listeners every [`RETRY`].
pub(crate) async fn supervise(shared: Arc<Shared>, mut table: watch::Receiver<Arc<ServiceTable>>) {
    let mut listeners: BTreeMap<(String, String), Listener> = BTreeMap::new();
    let mut retry = tokio::time::interval(RETRY);
    let mut table_open = true;
    loop {
        let snapshot = Arc::clone(&table.borrow_and_update());
        // A port handed from one service to another must be free before it is bound again:
        // the closed listeners' sockets are gone once their aborted tasks have ended, so a
        // takeover never fails over to the retry and refuses clients meanwhile.
        for closing in close_unwanted(&shared, &snapshot, &mut listeners) {
            let _ = closing.await;
        }
        reconcile(&shared, &snapshot, &mut listeners);
        let any_failed = listeners.values().any(|l| l.task.is_none());
        tokio::select! {
            changed = table.changed(), if table_open => table_open = changed.is_ok(),
            _ = retry.tick(), if any_failed => {}
            () = std::future::pending::<()>(), if !table_open && !any_failed => {}
        }
    }
}

/// Takes out the listeners the table no longer wants on their port (the service or port
/// gone, or the port won by another service), each reported closed; returns their tasks,
/// aborted, to be awaited until their sockets are closed.
fn close_unwanted(
    shared: &Shared,
    table: &ServiceTable,
    listeners: &mut BTreeMap<(String, String), Listener>,
) -> Vec<JoinHandle<()>> {
    let winners = claim_winners(table);
    let wanted = |service: &str, port_name: &str, port: u16| {
        let frontend = table
            .services
            .get(service)
            .and_then(|s| s.frontends.get(port_name));
        frontend == Some(&port) && winners.get(&port).is_none_or(|w| *w == service)
    };
    let mut closing = Vec::new();
    listeners.retain(|(service, port_name), listener| {
        if wanted(service, port_name, listener.port) {
            return true;
        }
        shared.event(BalancerEvent::Closed {
            service: service.clone(),
            port_name: port_name.clone(),
            port: listener.port,
        });
        if let Some(task) = listener.task.take() {
            task.abort();
            closing.push(task);
        }
        false
    });
    closing
}

fn reconcile(
    shared: &Arc<Shared>,
    table: &ServiceTable,
    listeners: &mut BTreeMap<(String, String), Listener>,
) {
    let now = Instant::now();
    let config = &shared.config;
    let wanted = |name: &str| table.services.get(name).filter(|s| !s.frontends.is_empty());
    let services: Vec<Arc<ServiceState>> = {
        let mut services = lock(&shared.services);
        services.retain(|name, state| {
            let keep = wanted(name).is_some();
            if !keep {
                state.drain_all(config.drain_deadline, now);
            }
            keep
        });
        for (name, entry) in table.services.iter().filter(|(n, _)| wanted(n).is_some()) {
            match services.get(name) {
                Some(state) => state.update(entry, config.drain_deadline, now),
                None => {
                    services.insert(name.clone(), Arc::new(ServiceState::new(entry, now)));
                }
            }
        }
        services.values().cloned().collect()
    };

    let winners = claim_winners(table);
    for service in services {
        let Some(entry) = wanted(&service.name) else {
            continue;
        };
        lock(&service.listeners).retain(|port_name, _| entry.frontends.contains_key(port_name));
        for (port_name, &port) in &entry.frontends {
            let key = (service.name.clone(), port_name.clone());
            if listeners.get(&key).is_some_and(|l| l.task.is_some()) {
                continue;
            }
            let holder = listeners
                .iter()
                .find(|((s, p), l)| {
                    l.port == port && l.task.is_some() && (s, p) != (&key.0, &key.1)
                })
                .map(|((s, _), _)| s.clone());
            let winner = winners.get(&port).filter(|w| **w != service.name);
            let bound = match (winner, holder) {
                (Some(winner), _) => Err(format!(
                    "port {port} is also the frontend of service {winner}, which every node \
                     serves on it (of two services claiming one port, the first by name wins)"
                )),
                (None, Some(other)) => Err(format!(
                    "port {port} on {} is already the frontend of service {other}",
                    config.bind_ip
                )),
                (None, None) => {
                    bind(config.bind_ip, port).map_err(|e| describe(config.bind_ip, port, &e))
                }
            };
            let previous = lock(&service.listeners)
                .get(port_name)
                .map(|(p, s)| (*p, s.clone()));
            let (task, status) = match bound {
                Ok(listener) => {
                    let addr = listener
                        .local_addr()
                        .unwrap_or_else(|_| SocketAddr::new(config.bind_ip, port));
                    let task = tokio::spawn(accept_loop(
                        Arc::clone(shared),
                        Arc::clone(&service),
                        port_name.as_str().into(),
                        listener,
                    ));
                    tracing::info!(service = %service.name, %port_name, %addr, "frontend listening");
                    shared.event(BalancerEvent::Listening {
                        service: service.name.clone(),
                        port_name: port_name.clone(),
                        addr,
                    });
                    (
                        Some(task),
                        ListenerStatus::Listening {
                            addr: addr.to_string(),
                        },
                    )
                }
                Err(error) => {
                    let status = ListenerStatus::Failed {
                        error: error.clone(),
                    };
                    if previous != Some((port, status.clone())) {
                        tracing::warn!(service = %service.name, %port_name, %error, "frontend cannot listen");
                        shared.event(BalancerEvent::ListenFailed {
                            service: service.name.clone(),
                            port_name: port_name.clone(),
                            port,
                            error,
                        });
                    }
                    (None, status)
                }
            };
            lock(&service.listeners).insert(port_name.clone(), (port, status));
            listeners.insert(key, Listener { port, task });
        }
    }
}

/// Which service each frontend port is served for when two services claim it (applies on
/// two nodes within one gossip round, or on both sides of a partition): the first by name,
/// on every node alike, so that clients reach the same service whichever node they ask and
/// the loser's `balancer.listen_failed` event says why.
fn claim_winners(table: &ServiceTable) -> BTreeMap<u16, &str> {
    let mut winners = BTreeMap::new();
    for (name, entry) in &table.services {
        for port in entry.frontends.values() {
            winners.entry(*port).or_insert(name.as_str());
        }
    }
    winners
}

fn bind(ip: IpAddr, port: u16) -> io::Result<TcpListener> {
    let addr = SocketAddr::new(ip, port);
    if let Some(inherited) = crate::inherit::take_tcp(crate::inherit::SocketRole::Frontend, addr) {
        return TcpListener::from_std(inherited);
    }
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The operator's wording of a bind failure.
fn describe(ip: IpAddr, port: u16, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => format!("port {port} on {ip} is in use by another process"),
        io::ErrorKind::AddrNotAvailable => {
            format!("address {ip} is not configured on this host (port {port})")
        }
        io::ErrorKind::PermissionDenied => {
            format!("no permission to listen on port {port} on {ip}")
        }
        _ => format!("cannot listen on port {port} on {ip}: {error}"),
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    service: Arc<ServiceState>,
    port_name: Arc<str>,
    listener: TcpListener,
) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(proxy::serve(
                    Arc::clone(&shared),
                    Arc::clone(&service),
                    Arc::clone(&port_name),
                    client,
                    peer,
                ));
            }
            Err(error) => {
                tracing::warn!(service = %service.name, %port_name, %error, "accept failed");
                tokio::time::sleep(ACCEPT_PAUSE).await;
            }
        }
    }
}
