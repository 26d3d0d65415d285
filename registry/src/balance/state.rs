//! Live state of one service and its endpoints (counters, latency, ejection, draining), the
//! merge of a new table entry into it, and the eligibility rules in front of the pickers.

use super::config::OutlierConfig;
use super::ewma::PeakEwma;
use super::outlier::Outlier;
use super::pick::{Candidate, pick};
use super::stats::ListenerStatus;
use crate::table::{BalanceConfig, Endpoint, ServiceEntry};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Locks a mutex whose data stays consistent even if a holder panicked (plain counters).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether an endpoint takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    Active,
    /// No new connections; open ones are closed at the deadline.
    Draining {
        deadline: Instant,
    },
}

/// Latency estimate and ejection state, changed together on every connect.
#[derive(Debug)]
struct Health {
    latency: PeakEwma,
    outlier: Outlier,
}

/// One instance of a service as the balancer tracks it.
#[derive(Debug)]
pub(crate) struct EndpointState {
    pub instance: String,
    pub node: String,
    pub ip: IpAddr,
    pub ports: BTreeMap<String, u16>,
    pub local: bool,
    drain: watch::Sender<Drain>,
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub failures: AtomicU64,
    /// Client to backend.
    pub bytes_in: AtomicU64,
    /// Backend to client.
    pub bytes_out: AtomicU64,
    health: Mutex<Health>,
}

impl EndpointState {
    fn new(endpoint: &Endpoint, now: Instant) -> Self {
        Self {
            instance: endpoint.instance.clone(),
            node: endpoint.node.clone(),
            ip: endpoint.ip,
            ports: endpoint.ports.clone(),
            local: endpoint.local,
            drain: watch::Sender::new(Drain::Active),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            health: Mutex::new(Health {
                latency: PeakEwma::new(now),
                outlier: Outlier::default(),
            }),
        }
    }

    /// Same instance at the same place: its state (and open connections) carry over.
    fn same_target(&self, endpoint: &Endpoint) -> bool {
        self.instance == endpoint.instance
            && self.node == endpoint.node
            && self.ip == endpoint.ip
            && self.ports == endpoint.ports
            && self.local == endpoint.local
    }

    /// The backend address for a frontend's port name.
    pub fn addr(&self, port_name: &str) -> Option<SocketAddr> {
        self.ports
            .get(port_name)
            .map(|&port| SocketAddr::new(self.ip, port))
    }

    /// Whether it is draining (no new connections).
    pub fn is_draining(&self) -> bool {
        matches!(*self.drain.borrow(), Drain::Draining { .. })
    }

    /// Watches the drain state; a connection closes itself at the deadline.
    pub fn drain_signal(&self) -> watch::Receiver<Drain> {
        self.drain.subscribe()
    }

    fn start_draining(&self, deadline: Instant) {
        self.drain.send_if_modified(|d| match d {
            Drain::Active => {
                *d = Drain::Draining { deadline };
                true
            }
            Drain::Draining { .. } => false,
        });
    }

    fn reactivate(&self) {
        self.drain
            .send_if_modified(|d| std::mem::replace(d, Drain::Active) != Drain::Active);
    }

    /// Latency estimate in ms at `now`.
    pub fn latency_ms(&self, now: Instant) -> f64 {
        lock(&self.health).latency.get(now)
    }

    /// End of the current ejection, if ejected at `now`.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let health = lock(&self.health);
        health
            .outlier
            .is_ejected(now)
            .then(|| health.outlier.ejected_until())
            .flatten()
    }

    /// Ejections in a row so far.
    pub fn ejections(&self) -> u32 {
        lock(&self.health).outlier.ejections()
    }

    fn is_ejected(&self, now: Instant) -> bool {
        lock(&self.health).outlier.is_ejected(now)
    }

    /// Ends an ejection whose time is over; true when it did (the caller reports it).
    pub fn restore_if_due(&self, now: Instant) -> bool {
        lock(&self.health).outlier.restore_if_due(now)
    }
}

/// Counts a connection (open or being opened) to an endpoint while alive.
pub(crate) struct ActiveGuard(Arc<EndpointState>);

impl ActiveGuard {
    /// Marks one more connection on `endpoint`.
    pub fn new(endpoint: Arc<EndpointState>) -> Self {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        endpoint.total.fetch_add(1, Ordering::Relaxed);
        Self(endpoint)
    }

    /// The endpoint it counts on.
    pub fn endpoint(&self) -> &Arc<EndpointState> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One service: its balancing settings, endpoints, listeners' status and counters.
#[derive(Debug)]
pub(crate) struct ServiceState {
    pub name: String,
    balance: Mutex<BalanceConfig>,
    /// Available endpoints followed by draining ones still listed as unavailable.
    endpoints: Mutex<Arc<Vec<Arc<EndpointState>>>>,
    turn: AtomicUsize,
    rng: Mutex<fastrand::Rng>,
    /// Serialises ejection decisions so that the share limit holds under concurrent failures.
    ejecting: Mutex<()>,
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub no_healthy: AtomicU64,
    /// Port name to (frontend port, status).
    pub listeners: Mutex<BTreeMap<String, (u16, ListenerStatus)>>,
}

impl ServiceState {
    /// A service seen for the first time.
    pub fn new(entry: &ServiceEntry, now: Instant) -> Self {
        let state = Self {
            name: entry.name.clone(),
            balance: Mutex::new(entry.balance),
            endpoints: Mutex::new(Arc::new(Vec::new())),
            turn: AtomicUsize::new(0),
            rng: Mutex::new(fastrand::Rng::new()),
            ejecting: Mutex::new(()),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            no_healthy: AtomicU64::new(0),
            listeners: Mutex::new(BTreeMap::new()),
        };
        state.update(entry, Duration::ZERO, now);
        state
    }

    /// The balancing settings in force.
    pub fn balance(&self) -> BalanceConfig {
        *lock(&self.balance)
    }

    /// A snapshot of the endpoints.
    pub fn endpoints(&self) -> Arc<Vec<Arc<EndpointState>>> {
        lock(&self.endpoints).clone()
    }

    /// Merges a new table entry: new endpoints appear, ones moved to `unavailable` or gone
    /// start draining (gone ones are also forgotten), returning ones take connections again.
    pub fn update(&self, entry: &ServiceEntry, drain_deadline: Duration, now: Instant) {
        *lock(&self.balance) = entry.balance;
        let deadline = now + drain_deadline;
        let old = self.endpoints();
        let find = |e: &Endpoint| old.iter().find(|s| s.same_target(e)).cloned();
        let mut next = Vec::with_capacity(entry.endpoints.len() + entry.unavailable.len());
        for endpoint in &entry.endpoints {
            let state =
                find(endpoint).unwrap_or_else(|| Arc::new(EndpointState::new(endpoint, now)));
            state.reactivate();
            next.push(state);
        }
        for endpoint in &entry.unavailable {
            if let Some(state) = find(endpoint) {
                state.start_draining(deadline);
                next.push(state);
            }
        }
        for state in old.iter() {
            if !next.iter().any(|s| Arc::ptr_eq(s, state)) {
                state.start_draining(deadline);
            }
        }
        *lock(&self.endpoints) = Arc::new(next);
    }

    /// Every endpoint drains: the service left the table.
    pub fn drain_all(&self, drain_deadline: Duration, now: Instant) {
        for state in self.endpoints().iter() {
            state.start_draining(now + drain_deadline);
        }
    }

    /// Chooses an endpoint for a new connection on `port_name`, skipping those already tried.
    /// Eligible: not draining, not ejected, serving that port; local ones first when the
    /// service prefers local and one is eligible.
    pub fn pick(
        &self,
        port_name: &str,
        tried: &[Arc<EndpointState>],
        now: Instant,
    ) -> Option<Arc<EndpointState>> {
        let endpoints = self.endpoints();
        let balance = self.balance();
        let mut eligible: Vec<&Arc<EndpointState>> = endpoints
            .iter()
            .filter(|e| {
                !e.is_draining()
                    && e.ports.contains_key(port_name)
                    && !tried.iter().any(|t| Arc::ptr_eq(t, e))
                    && !e.is_ejected(now)
            })
            .collect();
        if balance.prefer_local && eligible.iter().any(|e| e.local) {
            eligible.retain(|e| e.local);
        }
        let candidates: Vec<Candidate> = eligible
            .iter()
            .map(|e| Candidate {
                active: e.active.load(Ordering::Relaxed),
                latency_ms: e.latency_ms(now),
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let index = pick(balance.algorithm, &candidates, turn, &mut lock(&self.rng))?;
        eligible.get(index).map(|e| Arc::clone(e))
    }

    /// Records a successful connect and its latency.
    pub fn connected(&self, endpoint: &EndpointState, latency: Duration, now: Instant) {
        let mut health = lock(&endpoint.health);
        health.latency.observe(latency.as_secs_f64() * 1e3, now);
        health.outlier.on_success(now);
    }

    /// Records a failed connect (its latency sample is the penalty `penalty`). Returns the end
    /// of a new ejection when this failure ejects the endpoint.
    pub fn connect_failed(
        &self,
        endpoint: &EndpointState,
        penalty: Duration,
        config: &OutlierConfig,
        now: Instant,
    ) -> Option<Instant> {
        endpoint.failures.fetch_add(1, Ordering::Relaxed);
        let _deciding = lock(&self.ejecting);
        let endpoints = self.endpoints();
        let available: Vec<_> = endpoints.iter().filter(|e| !e.is_draining()).collect();
        let ejected = available
            .iter()
            .filter(|e| !std::ptr::eq(e.as_ref(), endpoint) && e.is_ejected(now))
            .count();
        let may_eject =
            (ejected + 1) * 100 <= available.len() * usize::from(config.max_ejected_percent);
        let mut health = lock(&endpoint.health);
        health.latency.observe(penalty.as_secs_f64() * 1e3, now);
        health.outlier.on_failure(now, config, may_eject)
    }
}
