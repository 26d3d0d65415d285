//! The handle the agent uses: starts the gossip node on real sockets and exposes members,
//! the catalog, the service table, events, keys and counters.

use crate::driver::{Command, Counters, Driver, LocalRecord, Shared, Snapshot, now_ms};
use crate::events::ClusterEvent;
use crate::inherit::SocketRole;
use crate::membership::identity::NodeIdentity;
use crate::node::{Node, NodeConfig, Timing};
use crate::seal::{KeyError, Keyring, KeyringInfo};
use crate::stream_tls::StreamTls;
use crate::table::ServiceTable;
use rand::TryRng as _;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use strata_proto::v1::{CatalogService, ClusterToken, Member, NodeRecord, NodeSummary};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// How the agent configures its gossip node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The agent's UUID, stable across restarts.
    pub node_id: String,
    pub node_name: String,
    /// UDP and TCP gossip bind address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// The address peers reach us at, when it differs from `bind`.
    pub advertise: Option<SocketAddr>,
    pub grpc_addr: SocketAddr,
    /// The address services here are reached at; defaults to the advertised ip.
    pub ip: Option<IpAddr>,
    /// Join addresses, `host:port`.
    pub join: Vec<String>,
    /// `None` runs insecure (dev only): packets unsealed.
    pub keyring: Option<Keyring>,
    pub tags: BTreeMap<String, String>,
    /// The services the first record carries: an agent restarting next to running services
    /// publishes them from its first packet on, never a record without them that would
    /// withdraw them for a moment.
    pub services: Vec<CatalogService>,
    pub agent_version: String,
    /// Protocol timings, including reap-after and anti-entropy interval.
    pub timing: Timing,
    /// Mutual TLS around the anti-entropy TCP streams; `None` uses plain TCP.
    pub tls: Option<StreamTls>,
}

/// Why the cluster could not start or refused a request.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the gossip thread: {0}")]
    Thread(std::io::Error),
    #[error("no member named {0}")]
    UnknownMember(String),
    #[error("member {0} is still alive or suspect; only down or left members can be removed")]
    MemberLive(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the gossip task has stopped")]
    Stopped,
}

/// Gossip traffic counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub packets_in: u64,
    pub packets_out: u64,
    /// UDP and TCP bytes, sealed, as on the wire.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub dropped_bad_key: u64,
    pub dropped_malformed: u64,
    pub dropped_oversized: u64,
    /// Unsealed packets in a sealed cluster, or sealed ones in an insecure cluster.
    pub dropped_unsealed: u64,
}

impl GossipStats {
    /// Every packet dropped, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_bad_key
            + self.dropped_malformed
            + self.dropped_oversized
            + self.dropped_unsealed
    }
}

/// A running gossip node; cheap to clone. Dropping every clone stops it without leaving
/// (peers detect a failure); call [`Cluster::leave`] to go gracefully.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    local: Arc<watch::Sender<LocalRecord>>,
    gossip_addr: SocketAddr,
}

/// Binds UDP and TCP on one port; with port 0, retries until a port is free for both.
/// Sockets inherited from a predecessor agent come first (see [`crate::inherit`]).
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), ClusterError> {
    let err = |addr, source| ClusterError::Bind { addr, source };
    if let Some(udp) = crate::inherit::take_udp(SocketRole::Gossip, addr) {
        let udp = UdpSocket::from_std(udp).map_err(|e| err(addr, e))?;
        let bound = udp.local_addr().map_err(|e| err(addr, e))?;
        let tcp = match crate::inherit::take_tcp(SocketRole::Gossip, bound) {
            Some(tcp) => TcpListener::from_std(tcp),
            None => TcpListener::bind(bound).await,
        }
        .map_err(|e| err(bound, e))?;
        return Ok((udp, tcp, bound));
    }
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(|e| err(addr, e))?;
        let bound = udp.local_addr().map_err(|e| err(addr, e))?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e) if addr.port() == 0 && attempt < 20 => {
                tracing::debug!(error = %e, %bound, "tcp port taken; picking another");
                attempt += 1;
            }
            Err(e) => return Err(err(bound, e)),
        }
    }
}

/// The gossip thread: builds its runtime, binds, reports the handle's half on `ready`,
/// then drives the node until every handle is gone or it stops.
fn run_driver(config: ClusterConfig, ready: oneshot::Sender<Result<Cluster, ClusterError>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(ClusterError::Thread(e)));
            return;
        }
    };
    runtime.block_on(async move {
        match start_driver(config).await {
            Ok((cluster, driver)) => {
                if ready.send(Ok(cluster)).is_ok() {
                    driver.run().await;
                }
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
}

/// Binds the sockets and builds the node, the driver and the handle for it.
async fn start_driver(config: ClusterConfig) -> Result<(Cluster, Driver), ClusterError> {
    let (udp, tcp, bound) = bind(config.bind).await?;
    let advertise = config.advertise.unwrap_or(bound);
    let mut seeds = Vec::new();
    for join in &config.join {
        match tokio::net::lookup_host(join.as_str()).await {
            Ok(addrs) => seeds.extend(addrs.filter(|a| *a != advertise)),
            Err(e) => tracing::warn!(join = %join, error = %e, "cannot resolve join address"),
        }
    }
    let now = now_ms();
    let identity = NodeIdentity {
        id: config.node_id.clone(),
        name: config.node_name.clone(),
        addr: advertise,
        bump: now,
    };
    let record = NodeRecord {
        grpc_addr: config.grpc_addr.to_string(),
        ip: config.ip.unwrap_or(advertise.ip()).to_string(),
        tags: config.tags.clone().into_iter().collect(),
        services: config.services.clone(),
        agent_version: config.agent_version.clone(),
        ..Default::default()
    };
    let mut seed = [0u8; 8];
    if let Err(e) = rand::rngs::SysRng.try_fill_bytes(&mut seed) {
        tracing::warn!(error = %e, "no OS randomness; seeding gossip from the clock");
        seed = now.to_le_bytes();
    }
    let mut node = Node::new(
        NodeConfig {
            identity,
            record,
            timing: config.timing.clone(),
            seeds,
        },
        u64::from_le_bytes(seed),
        now,
    );
    let (table, _) = watch::channel(node.table());
    let (events, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        keyring: RwLock::new(config.keyring),
        counters: Counters::default(),
        snapshot: RwLock::new(Snapshot {
            members: node.members(),
            records: node.records(),
        }),
        table,
        events,
        tls: config.tls,
    });
    let (command_tx, commands) = mpsc::channel(1024);
    let (local, local_rx) = watch::channel(LocalRecord::default());
    let driver = Driver::new(
        node,
        Arc::new(udp),
        tcp,
        shared.clone(),
        commands,
        command_tx.downgrade(),
        local_rx,
    );
    tracing::info!(%bound, %advertise, "gossip started");
    let cluster = Cluster {
        shared,
        commands: command_tx,
        local: Arc::new(local),
        gossip_addr: advertise,
    };
    Ok((cluster, driver))
}

impl Cluster {
    /// Binds UDP and TCP, starts the driver on a thread of its own and starts joining in
    /// the background.
    ///
    /// The driver runs on its own thread and single-threaded runtime, apart from the
    /// caller's: the failure detector's probes, acks and refutations must keep their timing
    /// while the rest of the agent is busy. A caller whose workers block (a slow fsync, a
    /// long scan) would otherwise stall this node's gossip, and its peers would declare it
    /// down although it is healthy.
    pub async fn start(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new()
            .name("gossip".into())
            .spawn(move || run_driver(config, ready))
            .map_err(ClusterError::Thread)?;
        started.await.map_err(|_| ClusterError::Stopped)?
    }

    /// The address peers reach this node at (the bound port when configured with 0).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    fn snapshot(&self) -> Snapshot {
        self.shared
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every member, this node first.
    pub fn members(&self) -> Vec<Member> {
        self.snapshot().members
    }

    /// The catalog: one record per known node.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.snapshot().records
    }

    /// The service table, updated on every relevant change.
    pub fn table(&self) -> watch::Receiver<Arc<ServiceTable>> {
        self.shared.table.subscribe()
    }

    /// Membership and catalog events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.shared.events.subscribe()
    }

    /// Publishes this node's services; gossips only a real change. Never lost: the latest
    /// call wins, even when the gossip task is busy.
    pub fn set_services(&self, services: Vec<CatalogService>) {
        self.local.send_modify(|l| l.services = Some(services));
    }

    /// Publishes this node's summary; gossips only a real change.
    pub fn set_summary(&self, summary: NodeSummary) {
        self.local.send_modify(|l| l.summary = Some(summary));
    }

    /// Marks this node draining: its instances stop getting new connections.
    pub fn set_draining(&self, draining: bool) {
        self.local.send_modify(|l| l.draining = Some(draining));
    }

    /// Publishes the cluster-wide tokens this node knows; gossips only a real change.
    pub fn set_tokens(&self, tokens: Vec<ClusterToken>) {
        self.local.send_modify(|l| l.tokens = Some(tokens));
    }

    /// Forgets a down or left member now.
    pub fn force_leave(&self, name: &str) -> Result<(), ClusterError> {
        let members = self.members();
        let matching: Vec<&Member> = members.iter().skip(1).filter(|m| m.name == name).collect();
        if matching.is_empty() {
            return Err(ClusterError::UnknownMember(name.to_string()));
        }
        if matching.iter().any(|m| m.status().is_live()) {
            return Err(ClusterError::MemberLive(name.to_string()));
        }
        self.commands
            .try_send(Command::ForceLeave(name.to_string()))
            .map_err(|_| ClusterError::Stopped)
    }

    /// Key fingerprints, or `None` in insecure mode.
    pub fn keyring(&self) -> Option<KeyringInfo> {
        let keyring = self
            .shared
            .keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        keyring.as_ref().map(Keyring::info)
    }

    /// The installed keys (base64, primary first) for the agent's keyring file.
    pub fn export_keys(&self) -> Option<(String, Vec<String>)> {
        let keyring = self
            .shared
            .keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        keyring.as_ref().map(Keyring::export)
    }

    fn with_keyring(
        &self,
        f: impl FnOnce(&mut Keyring) -> Result<(), KeyError>,
    ) -> Result<(), ClusterError> {
        let mut keyring = self
            .shared
            .keyring
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(f(keyring.as_mut().ok_or(KeyError::Insecure)?)?)
    }

    /// Installs a key that opens packets (step 1 of a rotation, on every node).
    pub fn install_key(&self, b64: &str) -> Result<(), ClusterError> {
        self.with_keyring(|k| k.install(b64))
    }

    /// Seals with an installed key from now on (step 2).
    pub fn use_key(&self, b64: &str) -> Result<(), ClusterError> {
        self.with_keyring(|k| k.use_primary(b64))
    }

    /// Removes an old key (step 3); the primary cannot be removed.
    pub fn remove_key(&self, b64: &str) -> Result<(), ClusterError> {
        self.with_keyring(|k| k.remove(b64))
    }

    /// Traffic and drop counters.
    pub fn stats(&self) -> GossipStats {
        let c = &self.shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        GossipStats {
            packets_in: get(&c.packets_in),
            packets_out: get(&c.packets_out),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            dropped_bad_key: get(&c.dropped_bad_key),
            dropped_malformed: get(&c.dropped_malformed),
            dropped_oversized: get(&c.dropped_oversized),
            dropped_unsealed: get(&c.dropped_unsealed),
        }
    }

    /// The gRPC address of a live node (name or id), for forwarding requests.
    pub fn grpc_addr_of(&self, node: &str) -> Option<SocketAddr> {
        self.grpc_peer_of(node).map(|(_, addr)| addr)
    }

    /// The name and gRPC address of a live node (name or id): the name is what the node's
    /// TLS certificate is verified against when it is dialled by address.
    pub fn grpc_peer_of(&self, node: &str) -> Option<(String, SocketAddr)> {
        self.members()
            .into_iter()
            .filter(|m| m.status().is_live())
            .find(|m| m.id == node || m.name == node)
            .and_then(|m| Some((m.name, m.grpc_addr.parse().ok()?)))
    }

    /// Stops the driver task without leaving: peers keep this node as it is until its next
    /// agent (which takes over the gossip socket) or their failure detector says otherwise.
    pub async fn stop(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Stop(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
    }

    /// Leaves gracefully (peers see `left` at once) and stops the driver task.
    pub async fn leave(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
    }
}
