//! Live state of one service and its endpoints (counters, latency, ejection, slow start,
//! draining), the merge of a new table entry into it, the eligibility rules in front of the
//! pickers, and the service's queue of clients waiting for an instance.

use super::config::OutlierConfig;
use super::ewma::PeakEwma;
use super::outlier::{Failure, Outlier, may_eject};
use super::pick::{Candidate, pick};
use super::slow_start;
use super::stats::ListenerStatus;
use crate::table::{BalanceConfig, Endpoint, ServiceEntry};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, watch};

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

/// Latency estimate, ejection and slow-start state, changed together on every connect.
#[derive(Debug)]
struct Health {
    latency: PeakEwma,
    outlier: Outlier,
    /// When the last connect to it succeeded: a timeout that began before is not evidence
    /// that it is gone.
    last_connected: Option<Instant>,
    /// Start of its slow start (a join, a return, the end of an ejection); `None`: full weight.
    warm_from: Option<Instant>,
    /// Smooth round-robin credit, changed only under the service's picker lock.
    credit: f64,
}

impl Health {
    fn new(now: Instant, warm_from: Option<Instant>) -> Self {
        Self {
            latency: PeakEwma::new(now),
            outlier: Outlier::default(),
            last_connected: None,
            warm_from,
            credit: 0.0,
        }
    }

    /// Starts over as a cold instance from `from`: slow start, no latency estimate.
    fn warm_up(&mut self, from: Instant, now: Instant) {
        self.warm_from = Some(from);
        self.latency.reset(now);
        self.credit = 0.0;
    }
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
    /// The service's wake-up for queued clients, told when a connection here ends.
    freed: Arc<Notify>,
}

impl EndpointState {
    fn new(endpoint: &Endpoint, now: Instant, warm: bool, freed: Arc<Notify>) -> Self {
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
            health: Mutex::new(Health::new(now, warm.then_some(now))),
            freed,
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

    /// Takes new connections again; true when it was draining.
    fn reactivate(&self) -> bool {
        self.drain
            .send_if_modified(|d| std::mem::replace(d, Drain::Active) != Drain::Active)
    }

    /// Latency estimate in ms at `now` (`None` while unmeasured).
    pub fn latency_ms(&self, now: Instant) -> Option<f64> {
        lock(&self.health).latency.get(now)
    }

    /// Slow-start weight at `now` for a window of `window`.
    pub fn weight(&self, now: Instant, window: Duration) -> f64 {
        slow_start::weight(lock(&self.health).warm_from, now, window)
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

    /// Not ejected, and its last connect did not fail.
    fn is_carrying_load(&self, now: Instant) -> bool {
        let health = lock(&self.health);
        !health.outlier.is_ejected(now) && health.outlier.consecutive_failures() == 0
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
    /// A connection slot is free: the longest-waiting queued client (if any) tries again.
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
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
    /// Held for a whole pick: the random draws and the round-robin credits.
    picker: Mutex<fastrand::Rng>,
    /// Wakes queued clients: one when a connection ends, all when the endpoints change.
    freed: Arc<Notify>,
    /// Clients waiting in the queue now.
    waiting: AtomicUsize,
    /// Serialises ejection decisions so that the share limit holds under concurrent failures.
    ejecting: Mutex<()>,
    pub active: AtomicU64,
    pub total: AtomicU64,
    pub no_healthy: AtomicU64,
    /// Clients that waited in the queue.
    pub queued_total: AtomicU64,
    /// Clients that gave up in the queue (timeout) or found it full.
    pub queue_failures: AtomicU64,
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
            picker: Mutex::new(fastrand::Rng::new()),
            freed: Arc::new(Notify::new()),
            waiting: AtomicUsize::new(0),
            ejecting: Mutex::new(()),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            no_healthy: AtomicU64::new(0),
            queued_total: AtomicU64::new(0),
            queue_failures: AtomicU64::new(0),
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
    /// Endpoints that join a service already running, and returning ones, slow-start; the
    /// first endpoints of a service (a starting balancer) take their full share at once.
    pub fn update(&self, entry: &ServiceEntry, drain_deadline: Duration, now: Instant) {
        *lock(&self.balance) = entry.balance;
        let deadline = now + drain_deadline;
        let old = self.endpoints();
        let joining = !old.is_empty();
        let find = |e: &Endpoint| old.iter().find(|s| s.same_target(e)).cloned();
        let mut next = Vec::with_capacity(entry.endpoints.len() + entry.unavailable.len());
        for endpoint in &entry.endpoints {
            let state = find(endpoint).unwrap_or_else(|| {
                Arc::new(EndpointState::new(
                    endpoint,
                    now,
                    joining,
                    Arc::clone(&self.freed),
                ))
            });
            if state.reactivate() {
                lock(&state.health).warm_up(now, now);
            }
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
        self.wake_all();
    }

    /// Every queued client looks again (the endpoints changed, or one returned).
    pub fn wake_all(&self) {
        self.freed.notify_waiters();
    }

    /// Whether the service has any endpoint at all, available or draining.
    pub fn has_endpoints(&self) -> bool {
        !lock(&self.endpoints).is_empty()
    }

    /// Whether the service has an endpoint that may take new connections (not draining,
    /// though perhaps at its limit, ejected or refusing for a moment).
    pub fn has_available_endpoints(&self) -> bool {
        lock(&self.endpoints).iter().any(|e| !e.is_draining())
    }

    /// Every endpoint drains: the service left the table.
    pub fn drain_all(&self, drain_deadline: Duration, now: Instant) {
        for state in self.endpoints().iter() {
            state.start_draining(now + drain_deadline);
        }
    }

    /// Chooses an endpoint for a new connection on `port_name`, skipping those already tried.
    /// Eligible: not draining, not ejected, serving that port, below the service's
    /// `max_conns`; local ones first when the service prefers local and one is eligible.
    pub fn pick(
        &self,
        port_name: &str,
        tried: &[Arc<EndpointState>],
        now: Instant,
    ) -> Option<Arc<EndpointState>> {
        let endpoints = self.endpoints();
        let balance = self.balance();
        let below_limit = |e: &EndpointState| {
            balance.max_conns == 0
                || e.active.load(Ordering::Relaxed) < u64::from(balance.max_conns)
        };
        let mut eligible: Vec<&Arc<EndpointState>> = endpoints
            .iter()
            .filter(|e| {
                !e.is_draining()
                    && e.ports.contains_key(port_name)
                    && !tried.iter().any(|t| Arc::ptr_eq(t, e))
                    && below_limit(e)
                    && !e.is_ejected(now)
            })
            .collect();
        if balance.prefer_local && eligible.iter().any(|e| e.local) {
            eligible.retain(|e| e.local);
        }
        let mut rng = lock(&self.picker);
        let mut credits = Vec::with_capacity(eligible.len());
        let candidates: Vec<Candidate> = eligible
            .iter()
            .map(|e| {
                let health = lock(&e.health);
                credits.push(health.credit);
                Candidate {
                    active: e.active.load(Ordering::Relaxed),
                    latency_ms: health.latency.get(now),
                    weight: slow_start::weight(health.warm_from, now, balance.slow_start),
                }
            })
            .collect();
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let index = pick(balance.algorithm, &candidates, &mut credits, turn, &mut rng)?;
        for (e, credit) in eligible.iter().zip(credits) {
            lock(&e.health).credit = credit;
        }
        eligible.get(index).map(|e| Arc::clone(e))
    }

    /// Completes when a connection of the service ends (oldest waiter first) or its
    /// endpoints change (every waiter).
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }

    /// Clients waiting in the queue now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// A place in the queue, or `None` when `max_queue` clients already wait.
    pub fn enter_queue(&self) -> Option<QueuePlace<'_>> {
        let max = self.balance().max_queue as usize;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.queued_total.fetch_add(1, Ordering::Relaxed);
        Some(QueuePlace(self))
    }

    /// Records a successful connect and its latency.
    pub fn connected(&self, endpoint: &EndpointState, latency: Duration, now: Instant) {
        let mut health = lock(&endpoint.health);
        health.latency.observe(latency.as_secs_f64() * 1e3, now);
        health.outlier.on_success(now);
        health.last_connected = Some(now);
    }

    /// Records a failed connect that began at `started`: `timed_out` when it got no answer,
    /// else it was refused, reset or unreachable. A counted failure adds the connect timeout
    /// as a latency sample. Returns the end of a new ejection when this failure ejects the
    /// endpoint (it then slow-starts from that end, unmeasured).
    pub fn connect_failed(
        &self,
        endpoint: &EndpointState,
        started: Instant,
        timed_out: bool,
        config: &OutlierConfig,
        now: Instant,
    ) -> Option<Instant> {
        endpoint.failures.fetch_add(1, Ordering::Relaxed);
        let penalty = self.balance().connect_timeout;
        let _deciding = lock(&self.ejecting);
        let endpoints = self.endpoints();
        let others: Vec<_> = endpoints
            .iter()
            .filter(|e| !e.is_draining() && !std::ptr::eq(e.as_ref(), endpoint))
            .collect();
        let ejected_others = others.iter().filter(|e| e.is_ejected(now)).count();
        let healthy_others = others.iter().filter(|e| e.is_carrying_load(now)).count();
        let spare = may_eject(
            others.len() + 1,
            ejected_others,
            healthy_others,
            config.max_ejected_percent,
        );
        let mut health = lock(&endpoint.health);
        let failure = match (timed_out, health.last_connected) {
            (false, _) => Failure::Refused,
            (true, Some(at)) if at > started => Failure::BusyTimeout,
            (true, _) => Failure::SilentTimeout,
        };
        if failure.counts() {
            health.latency.penalize(penalty.as_secs_f64() * 1e3, now);
        }
        let until = health.outlier.on_failure(now, failure, config, spare)?;
        health.warm_up(until, now);
        Some(until)
    }
}

/// A client's place in its service's queue; leaving it (on drop) makes room.
pub(crate) struct QueuePlace<'a>(&'a ServiceState);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
