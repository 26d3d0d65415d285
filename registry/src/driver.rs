//! The tokio driver: moves bytes between sockets and the sans-I/O [`Node`], schedules its
//! timers, seals and opens every packet, and publishes snapshots for the [`crate::cluster`]
//! handle. No protocol decisions are made here.

use crate::events::ClusterEvent;
use crate::node::{Node, NodeTimer, Output};
use crate::seal::{self, Keyring, OpenError};
use crate::stream_tls::{self, Io, StreamTls};
use crate::table::ServiceTable;
use crate::throttle::Throttle;
use crate::wire::{MAX_DATAGRAM, MAX_FRAME};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use strata_proto::v1::{CatalogService, ClusterToken, Member, NodeRecord, NodeSummary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};

/// How long one TCP exchange may take.
const STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Packet and byte counters, by direction and drop reason.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub packets_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped_bad_key: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_oversized: AtomicU64,
    pub dropped_unsealed: AtomicU64,
}

impl Counters {
    fn drop_open(&self, reason: OpenError) {
        let counter = match reason {
            OpenError::BadKey => &self.dropped_bad_key,
            OpenError::Unsealed | OpenError::UnexpectedSealed => &self.dropped_unsealed,
            OpenError::Truncated | OpenError::Malformed => &self.dropped_malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the handle reads without reaching into the driver task.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    pub members: Vec<Member>,
    pub records: Vec<NodeRecord>,
}

/// State shared by the driver task and the handle.
pub(crate) struct Shared {
    pub keyring: RwLock<Option<Keyring>>,
    pub counters: Counters,
    pub snapshot: RwLock<Snapshot>,
    pub table: watch::Sender<Arc<ServiceTable>>,
    pub events: broadcast::Sender<ClusterEvent>,
    /// Mutual TLS around the TCP streams; `None` runs them over plain TCP.
    pub tls: Option<StreamTls>,
}

impl Shared {
    fn seal(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let keyring = self.keyring.read().unwrap_or_else(PoisonError::into_inner);
        seal::seal(keyring.as_ref(), payload)
            .inspect_err(|e| tracing::warn!(error = %e, "cannot seal"))
            .ok()
    }

    fn open(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        let keyring = self.keyring.read().unwrap_or_else(PoisonError::into_inner);
        seal::open(keyring.as_ref(), packet).inspect_err(|reason| self.counters.drop_open(*reason))
    }
}

/// What this node publishes about itself in its catalog record. The handle overwrites it
/// on a watch channel and the driver applies the latest value, so a change is never lost
/// to a full queue: the newest state always wins and is eventually gossiped.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalRecord {
    pub services: Option<Vec<CatalogService>>,
    pub summary: Option<NodeSummary>,
    pub draining: Option<bool>,
    pub tokens: Option<Vec<ClusterToken>>,
}

/// Requests from the handle and the stream tasks to the driver task.
pub(crate) enum Command {
    ForceLeave(String),
    Leave(oneshot::Sender<()>),
    /// Stop without leaving (the agent hands its socket to its successor).
    Stop(oneshot::Sender<()>),
    StreamRequest(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
    StreamReply(Vec<u8>, oneshot::Sender<Option<Vec<u8>>>),
}

/// Unix time in ms.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Datagrams fed from the socket before due timers fire, at most: enough for what piles
/// up in a stall of seconds, bounded so a flood cannot hold the timers back.
const MAX_DRAIN: usize = 1024;

/// How often refused packets from one address are reported.
const REJECT_REPORT_INTERVAL: Duration = Duration::from_secs(60);
/// Addresses whose refused packets are tracked at most.
const MAX_REJECT_SOURCES: usize = 256;

/// The driver task's state.
pub(crate) struct Driver {
    pub node: Node,
    pub udp: Arc<UdpSocket>,
    pub tcp: TcpListener,
    pub shared: Arc<Shared>,
    pub commands: mpsc::Receiver<Command>,
    /// Weak, so dropping every handle stops the task (like a crash: no leave).
    pub command_tx: mpsc::WeakSender<Command>,
    /// The latest services, summary and drain flag the handle set.
    local: watch::Receiver<LocalRecord>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: BTreeMap<u64, NodeTimer>,
    seq: u64,
    rejects: Throttle<std::net::IpAddr>,
}

impl Driver {
    pub fn new(
        node: Node,
        udp: Arc<UdpSocket>,
        tcp: TcpListener,
        shared: Arc<Shared>,
        commands: mpsc::Receiver<Command>,
        command_tx: mpsc::WeakSender<Command>,
        local: watch::Receiver<LocalRecord>,
    ) -> Self {
        Self {
            node,
            udp,
            tcp,
            shared,
            commands,
            command_tx,
            local,
            timers: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            rejects: Throttle::new(REJECT_REPORT_INTERVAL, MAX_REJECT_SOURCES),
        }
    }

    /// Runs until the node has left.
    pub async fn run(mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut local_open = true;
        self.dispatch().await;
        loop {
            let deadline = self
                .timers
                .peek()
                .map_or_else(|| Instant::now() + Duration::from_secs(3600), |t| t.0.0);
            tokio::select! {
                received = self.udp.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(e) => tracing::debug!(error = %e, "udp receive"),
                },
                () = tokio::time::sleep_until(deadline) => {
                    self.drain_received(&mut buf);
                    self.on_timers();
                }
                changed = self.local.changed(), if local_open => match changed {
                    Ok(()) => self.on_local(),
                    // Every handle is gone; the command channel closes with them.
                    Err(_) => local_open = false,
                },
                command = self.commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.node.leave(now_ms());
                        self.dispatch().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(Command::Stop(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => return,
                },
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, _)) => {
                        if let Some(commands) = self.command_tx.upgrade() {
                            tokio::spawn(serve_stream(stream, self.shared.clone(), commands));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "tcp accept"),
                },
            }
            self.dispatch().await;
        }
    }

    fn on_datagram(&mut self, packet: &[u8], from: SocketAddr) {
        let counters = &self.shared.counters;
        counters.packets_in.fetch_add(1, Ordering::Relaxed);
        counters
            .bytes_in
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        if packet.len() > MAX_DATAGRAM {
            counters.dropped_oversized.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let payload = match self.shared.open(packet) {
            Ok(payload) => payload,
            Err(reason) => {
                if let Some(held_back) = self.rejects.admit(&from.ip(), std::time::Instant::now()) {
                    let _ = self.shared.events.send(ClusterEvent::Rejected {
                        from,
                        reason: reason.to_string(),
                        held_back,
                    });
                }
                return;
            }
        };
        if let Err(e) = self.node.handle_datagram(&payload, now_ms()) {
            tracing::debug!(error = %e, "datagram dropped");
            let counter = match e {
                crate::node::PacketError::Oversized(_) => &counters.dropped_oversized,
                crate::node::PacketError::Malformed(_) => &counters.dropped_malformed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Feeds the datagrams already waiting in the socket, up to [`MAX_DRAIN`], before due
    /// timers fire. After a stall (a starved CPU, a stopped process) the acks and
    /// refutations that arrived in time must count before a probe or suspicion timer
    /// that was due meanwhile decides a member failed.
    fn drain_received(&mut self, buf: &mut [u8]) {
        for _ in 0..MAX_DRAIN {
            match self.udp.try_recv_from(buf) {
                Ok((len, from)) => self.on_datagram(&buf[..len], from),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive");
                    return;
                }
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(timer) = self.pending.remove(&seq) {
                self.node.handle_timer(timer, now_ms());
            }
        }
    }

    /// Applies the latest local record; the node gossips only what really changed.
    fn on_local(&mut self) {
        let now = now_ms();
        let LocalRecord {
            services,
            summary,
            draining,
            tokens,
        } = self.local.borrow_and_update().clone();
        if let Some(services) = services {
            self.node.set_services(services, now);
        }
        if let Some(summary) = summary {
            self.node.set_summary(summary, now);
        }
        if let Some(draining) = draining {
            self.node.set_draining(draining, now);
        }
        if let Some(tokens) = tokens {
            self.node.set_tokens(tokens, now);
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = now_ms();
        match command {
            Command::ForceLeave(name) => {
                if let Err(e) = self.node.force_leave(&name, now) {
                    tracing::info!(error = %e, "force-leave");
                }
            }
            Command::StreamRequest(bytes, reply) => {
                let answer = self.node.handle_stream_request(&bytes, now);
                if let Err(e) = &answer {
                    tracing::debug!(error = %e, "stream request");
                    self.shared
                        .counters
                        .dropped_malformed
                        .fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(answer.ok().flatten());
            }
            Command::StreamReply(bytes, push) => {
                let answer = self.node.handle_stream_reply(&bytes, now);
                if let Err(e) = &answer {
                    tracing::debug!(error = %e, "stream reply");
                    self.shared
                        .counters
                        .dropped_malformed
                        .fetch_add(1, Ordering::Relaxed);
                }
                let _ = push.send(answer.ok().flatten());
            }
            Command::Leave(_) | Command::Stop(_) => {}
        }
    }

    /// Performs the node's outputs and publishes what changed.
    async fn dispatch(&mut self) {
        let mut changed = false;
        for output in self.node.take_outputs() {
            match output {
                Output::Datagram { to, payload } => {
                    let Some(packet) = self.shared.seal(&payload) else {
                        continue;
                    };
                    let counters = &self.shared.counters;
                    counters.packets_out.fetch_add(1, Ordering::Relaxed);
                    counters
                        .bytes_out
                        .fetch_add(packet.len() as u64, Ordering::Relaxed);
                    if let Err(e) = self.udp.try_send_to(&packet, to) {
                        tracing::debug!(error = %e, %to, "udp send");
                    }
                }
                Output::Stream { to, request } => {
                    if let Some(commands) = self.command_tx.upgrade() {
                        tokio::spawn(open_stream(to, request, self.shared.clone(), commands));
                    }
                }
                Output::Timer { after, timer } => {
                    self.seq += 1;
                    self.pending.insert(self.seq, timer);
                    self.timers
                        .push(Reverse((Instant::now() + after, self.seq)));
                }
                Output::Event(event) => {
                    changed = true;
                    let _ = self.shared.events.send(event);
                }
            }
        }
        if let Some(table) = self.node.changed_table() {
            changed = true;
            self.shared.table.send_replace(table);
        }
        if changed {
            let snapshot = Snapshot {
                members: self.node.members(),
                records: self.node.records(),
            };
            *self
                .shared
                .snapshot
                .write()
                .unwrap_or_else(PoisonError::into_inner) = snapshot;
        }
    }
}

/// Reads one length-prefixed sealed frame, bounded by [`MAX_FRAME`].
async fn read_frame(stream: &mut Box<dyn Io>, shared: &Shared) -> Option<Vec<u8>> {
    let len = stream.read_u32().await.ok()? as usize;
    if len > MAX_FRAME {
        shared
            .counters
            .dropped_oversized
            .fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let mut frame = vec![0u8; len];
    stream.read_exact(&mut frame).await.ok()?;
    shared
        .counters
        .bytes_in
        .fetch_add(len as u64 + 4, Ordering::Relaxed);
    shared.open(&frame).ok()
}

/// Seals and writes one length-prefixed frame.
async fn write_frame(stream: &mut Box<dyn Io>, shared: &Shared, payload: &[u8]) -> Option<()> {
    let frame = shared.seal(payload)?;
    let len = u32::try_from(frame.len())
        .ok()
        .filter(|l| *l as usize <= MAX_FRAME)?;
    stream.write_u32(len).await.ok()?;
    stream.write_all(&frame).await.ok()?;
    // TLS may hold the last record back until flushed; plain TCP flushes at once.
    stream.flush().await.ok()?;
    shared
        .counters
        .bytes_out
        .fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
    Some(())
}

/// Asks the driver task and waits for its answer.
async fn ask(
    commands: &mpsc::Sender<Command>,
    make: impl FnOnce(oneshot::Sender<Option<Vec<u8>>>) -> Command,
) -> Option<Vec<u8>> {
    let (tx, rx) = oneshot::channel();
    commands.send(make(tx)).await.ok()?;
    rx.await.ok().flatten()
}

/// Server side of a push/pull exchange: request, reply, optional push.
async fn serve_stream(stream: TcpStream, shared: Arc<Shared>, commands: mpsc::Sender<Command>) {
    let exchange = async {
        let mut stream = stream_tls::accept(shared.tls.as_ref(), stream).await?;
        let request = read_frame(&mut stream, &shared).await?;
        let reply = ask(&commands, |tx| Command::StreamRequest(request, tx)).await?;
        write_frame(&mut stream, &shared, &reply).await?;
        let push = read_frame(&mut stream, &shared).await?;
        ask(&commands, |tx| Command::StreamRequest(push, tx)).await;
        Some(())
    };
    let _ = timeout(STREAM_TIMEOUT, exchange).await;
}

/// Client side of a push/pull exchange.
async fn open_stream(
    to: SocketAddr,
    request: Vec<u8>,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
) {
    let exchange = async {
        let mut stream = stream_tls::connect(shared.tls.as_ref(), to).await?;
        write_frame(&mut stream, &shared, &request).await?;
        let reply = read_frame(&mut stream, &shared).await?;
        tracing::debug!(%to, tls = shared.tls.is_some(), "stream reply received");
        let push = ask(&commands, |tx| Command::StreamReply(reply, tx)).await?;
        write_frame(&mut stream, &shared, &push).await
    };
    if timeout(STREAM_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tracing::trace!(%to, "stream exchange ended early");
    }
}
