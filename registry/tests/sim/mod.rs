//! A deterministic in-memory network for many sans-I/O gossip nodes: a simulated clock,
//! one priority queue of deliveries and timers, seeded loss, delay and partitions, and the
//! real sealing on every datagram and stream message.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;
use strata_proto::v1::{Algorithm, Health, InstanceState, MemberStatus};
use strata_proto::v1::{CatalogInstance, CatalogService, NodeRecord};
use strata_registry::events::ClusterEvent;
use strata_registry::membership::identity::NodeIdentity;
use strata_registry::node::{Node, NodeConfig, NodeTimer, Output, Timing};
use strata_registry::seal::{self, Keyring, OpenError};

pub enum Work {
    Datagram {
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        epoch: u32,
        timer: NodeTimer,
    },
    Request {
        from: usize,
        to: SocketAddr,
        bytes: Vec<u8>,
    },
    Reply {
        to: usize,
        from: SocketAddr,
        epoch: u32,
        bytes: Vec<u8>,
    },
    Push {
        to: SocketAddr,
        bytes: Vec<u8>,
    },
}

pub struct SimNode {
    pub node: Option<Node>,
    pub addr: SocketAddr,
    pub epoch: u32,
    pub keyring: Option<Keyring>,
    pub group: u8,
    pub events: Vec<ClusterEvent>,
    pub dropped: BTreeMap<OpenError, u64>,
}

pub struct Sim {
    pub now: u64,
    pub nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    work: BTreeMap<usize, Work>,
    seq: u64,
    pub loss: f64,
    pub delay_ms: (u64, u64),
    rng: fastrand::Rng,
    pub timing: Timing,
}

pub fn service(name: &str, node: usize, instances: usize) -> CatalogService {
    CatalogService {
        name: name.into(),
        version: "1".into(),
        frontends: [("http".to_string(), 9000)].into(),
        algorithm: Algorithm::RoundRobin as i32,
        instances: (0..instances)
            .map(|i| CatalogInstance {
                id: format!("{name}/{node}-{i}"),
                ports: [("http".to_string(), 10_000 + i as u32)].into(),
                health: Health::Passing as i32,
                version: "1".into(),
                draining: false,
                state: InstanceState::Running as i32,
            })
            .collect(),
        ..Default::default()
    }
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        Self {
            now: 1_700_000_000_000,
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            work: BTreeMap::new(),
            seq: 0,
            loss: 0.0,
            delay_ms: (1, 5),
            rng: fastrand::Rng::with_seed(seed),
            timing: Timing::default(),
        }
    }

    pub fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 20_000 + i as u16))
    }

    /// Adds node `i` (id `node-i`, name `name`) joining node 0.
    pub fn spawn(&mut self, name: &str, keyring: Option<Keyring>) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode {
            node: None,
            addr: Self::addr(i),
            epoch: 0,
            keyring,
            group: 0,
            events: Vec::new(),
            dropped: BTreeMap::new(),
        });
        self.boot(i, &format!("node-{i}"), name, self.now);
        i
    }

    /// (Re)starts node `i` with this identity and start time.
    pub fn boot(&mut self, i: usize, id: &str, name: &str, bump: u64) {
        self.boot_with(i, id, name, bump, Vec::new());
    }

    /// (Re)starts node `i` whose first record already carries `services`, as an agent
    /// restarting next to running services does.
    pub fn boot_with(
        &mut self,
        i: usize,
        id: &str,
        name: &str,
        bump: u64,
        services: Vec<CatalogService>,
    ) {
        let identity = NodeIdentity {
            id: id.into(),
            name: name.into(),
            addr: self.nodes[i].addr,
            bump,
        };
        let config = NodeConfig {
            identity,
            record: NodeRecord {
                grpc_addr: format!("127.0.0.1:{}", 30_000 + i),
                ip: "127.0.0.1".into(),
                agent_version: "test".into(),
                services,
                ..Default::default()
            },
            timing: self.timing.clone(),
            seeds: if i == 0 { vec![] } else { vec![Self::addr(0)] },
        };
        let seed = self.rng.u64(..);
        self.nodes[i].epoch += 1;
        self.nodes[i].node = Some(Node::new(config, seed, self.now));
        self.flush(i);
    }

    pub fn kill(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].epoch += 1;
    }

    pub fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].node.as_mut().expect("node is running")
    }

    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, u64) -> R) -> R {
        let now = self.now;
        let r = f(self.node(i), now);
        self.flush(i);
        r
    }

    fn push(&mut self, at: u64, work: Work) {
        self.seq += 1;
        self.work.insert(self.seq as usize, work);
        self.queue.push(Reverse((at, self.seq, self.seq as usize)));
    }

    fn delay(&mut self) -> u64 {
        self.rng.u64(self.delay_ms.0..=self.delay_ms.1)
    }

    fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn reachable(&mut self, from: usize, to: SocketAddr) -> bool {
        let Some(to) = self.index_of(to) else {
            return false;
        };
        self.nodes[from].group == self.nodes[to].group && self.rng.f64() >= self.loss
    }

    fn seal_from(&self, i: usize, payload: &[u8]) -> Vec<u8> {
        seal::seal(self.nodes[i].keyring.as_ref(), payload).expect("seal")
    }

    fn open_at(&mut self, i: usize, bytes: &[u8]) -> Option<Vec<u8>> {
        match seal::open(self.nodes[i].keyring.as_ref(), bytes) {
            Ok(payload) => Some(payload),
            Err(reason) => {
                *self.nodes[i].dropped.entry(reason).or_default() += 1;
                None
            }
        }
    }

    /// Moves node `i`'s outputs into the queue.
    pub fn flush(&mut self, i: usize) {
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let outputs = node.take_outputs();
        let epoch = self.nodes[i].epoch;
        for output in outputs {
            match output {
                Output::Datagram { to, payload } => {
                    if self.reachable(i, to) {
                        let bytes = self.seal_from(i, &payload);
                        let at = self.now + self.delay();
                        self.push(at, Work::Datagram { to, bytes });
                    }
                }
                Output::Timer { after, timer } => {
                    let at = self.now + after.as_millis() as u64;
                    self.push(
                        at,
                        Work::Timer {
                            node: i,
                            epoch,
                            timer,
                        },
                    );
                }
                Output::Stream { to, request } => {
                    if self.reachable(i, to) {
                        let bytes = self.seal_from(i, &request);
                        let at = self.now + self.delay();
                        self.push(at, Work::Request { from: i, to, bytes });
                    }
                }
                Output::Event(event) => self.nodes[i].events.push(event),
            }
        }
    }

    fn step(&mut self, work: Work) {
        let now = self.now;
        match work {
            Work::Datagram { to, bytes } => {
                let Some(i) = self.index_of(to) else { return };
                if self.nodes[i].node.is_none() {
                    return;
                }
                if let Some(payload) = self.open_at(i, &bytes) {
                    let _ = self.node(i).handle_datagram(&payload, now);
                    self.flush(i);
                }
            }
            Work::Timer { node, epoch, timer } => {
                if self.nodes[node].epoch == epoch && self.nodes[node].node.is_some() {
                    self.node(node).handle_timer(timer, now);
                    self.flush(node);
                }
            }
            Work::Request { from, to, bytes } => {
                let Some(i) = self.index_of(to) else { return };
                if self.nodes[i].node.is_none() {
                    return;
                }
                let Some(payload) = self.open_at(i, &bytes) else {
                    return;
                };
                let reply = self.node(i).handle_stream_request(&payload, now);
                self.flush(i);
                if let Ok(Some(reply)) = reply
                    && self.reachable(i, self.nodes[from].addr)
                {
                    {
                        let bytes = self.seal_from(i, &reply);
                        let at = now + self.delay();
                        let epoch = self.nodes[from].epoch;
                        self.push(
                            at,
                            Work::Reply {
                                to: from,
                                from: to,
                                epoch,
                                bytes,
                            },
                        );
                    }
                }
            }
            Work::Reply {
                to,
                from,
                epoch,
                bytes,
            } => {
                if self.nodes[to].epoch != epoch || self.nodes[to].node.is_none() {
                    return;
                }
                let Some(payload) = self.open_at(to, &bytes) else {
                    return;
                };
                let push = self.node(to).handle_stream_reply(&payload, now);
                self.flush(to);
                if let Ok(Some(push)) = push {
                    let bytes = self.seal_from(to, &push);
                    let at = now + self.delay();
                    self.push(at, Work::Push { to: from, bytes });
                }
            }
            Work::Push { to, bytes } => {
                let Some(i) = self.index_of(to) else { return };
                if self.nodes[i].node.is_none() {
                    return;
                }
                if let Some(payload) = self.open_at(i, &bytes) {
                    let _ = self.node(i).handle_stream_request(&payload, now);
                    self.flush(i);
                }
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d.as_millis() as u64;
        while let Some(Reverse((at, _, key))) = self.queue.peek().copied() {
            if at > end {
                break;
            }
            self.queue.pop();
            self.now = self.now.max(at);
            if let Some(work) = self.work.remove(&key) {
                self.step(work);
            }
        }
        self.now = end;
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].node.is_some())
            .collect()
    }

    /// (id, status) of every member node `i` sees, itself included.
    pub fn view(&mut self, i: usize) -> Vec<(String, MemberStatus)> {
        self.node(i)
            .members()
            .into_iter()
            .map(|m| (m.id.clone(), m.status()))
            .collect()
    }

    pub fn records(&mut self, i: usize) -> Vec<NodeRecord> {
        self.node(i).records()
    }

    /// Whether every running node holds the same records and sees every other running
    /// node alive.
    pub fn converged(&mut self) -> bool {
        let running = self.running();
        let first = self.records(running[0]);
        running.clone().into_iter().all(|i| {
            let alive = self
                .view(i)
                .iter()
                .filter(|(_, s)| *s == MemberStatus::Alive)
                .count();
            alive == running.len() && self.records(i) == first
        })
    }

    /// Runs until converged, in steps of one second, at most `max`.
    pub fn run_until_converged(&mut self, max: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now - start < max.as_millis() as u64 {
            self.run_for(Duration::from_secs(1));
            if self.converged() {
                return Some(Duration::from_millis(self.now - start));
            }
        }
        None
    }
}
