//! The sans-I/O gossip node: SWIM membership (foca), the catalog and its dissemination
//! (piggybacked broadcasts, TCP pulls, anti-entropy) as one state machine fed datagrams,
//! stream messages, timer events and "now". It never touches a socket or a clock: the tokio
//! driver and the deterministic simulation both only move its [`Output`]s.

use crate::catalog::Catalog;
use crate::events::ClusterEvent;
use crate::membership::broadcasts::{self, Handler, Inbox};
use crate::membership::identity::NodeIdentity;
use crate::membership::members::{Members, Status};
use crate::publish;
use crate::seal::SEAL_OVERHEAD;
use crate::table::ServiceTable;
use crate::wire::{self, Broadcast, Datagram, Departure, Kind, Stream, Suspicion};
use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec};
use rand::SeedableRng as _;
use rand::rngs::SmallRng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;
use strata_proto::v1::{
    CatalogService, ClusterToken, Member, MemberStatus, NodeRecord, NodeSummary,
};

/// Encoded broadcasts up to this size carry the whole record; bigger ones are announced
/// and pulled over TCP, so a record is never truncated.
pub const INLINE_RECORD_MAX: usize = 600;
/// How many members known only from the catalog are announced to per housekeeping tick.
const ORPHAN_ANNOUNCES: usize = 3;
/// How long a pull of one node's record blocks another pull of the same version.
const PULL_RETRY_MS: u64 = 3_000;

/// Protocol timings; the defaults are memberlist's LAN profile, suspicion multiplier 4
/// included. A shorter suspicion (1.5) detected failures about twice as fast and held under
/// 10% loss, but under 20% loss with 100 ms delay it declared healthy nodes down (4 times in
/// 60 simulated minutes with 5 nodes, 25 times with 20); 4 gave none.
#[derive(Debug, Clone)]
pub struct Timing {
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long a direct probe waits before asking others to probe indirectly.
    pub probe_timeout: Duration,
    /// How many members probe indirectly (also the fanout of leave gossip).
    pub indirect_probes: usize,
    /// How often updates are gossiped, and to how many members.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// Suspicion lasts `multiplier * max(1, log10(n)) * probe_period` before down.
    pub suspicion_multiplier: f64,
    /// How often a node announces itself to members it sees down, so partitions heal.
    pub announce_down_interval: Duration,
    /// How long down or left members (and their records) are kept before being forgotten.
    pub reap_after: Duration,
    /// How often a digest is exchanged with a random live member.
    pub anti_entropy_interval: Duration,
    /// Join retry backoff: first wait and cap (doubling, with jitter).
    pub join_backoff_min: Duration,
    pub join_backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            suspicion_multiplier: 4.0,
            announce_down_interval: Duration::from_secs(10),
            reap_after: Duration::from_secs(3600),
            anti_entropy_interval: Duration::from_secs(5),
            join_backoff_min: Duration::from_millis(500),
            join_backoff_max: Duration::from_secs(30),
        }
    }
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub identity: NodeIdentity,
    /// The initial local record (id, name, addresses, tags, agent version).
    pub record: NodeRecord,
    pub timing: Timing,
    /// Resolved join addresses.
    pub seeds: Vec<SocketAddr>,
}

/// A timer the node asked for; give it back through [`Node::handle_timer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeTimer {
    Swim(foca::Timer<NodeIdentity>),
    AntiEntropy,
    Housekeeping,
    JoinRetry(u32),
}

/// Work for the I/O layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Seal and send one UDP datagram.
    Datagram { to: SocketAddr, payload: Vec<u8> },
    /// Open a TCP exchange: send `request`, feed the reply to [`Node::handle_stream_reply`],
    /// send back what that returns.
    Stream { to: SocketAddr, request: Vec<u8> },
    /// Call [`Node::handle_timer`] after this long.
    Timer { after: Duration, timer: NodeTimer },
    /// Report to subscribers.
    Event(ClusterEvent),
}

/// Why a datagram was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet of {0} bytes is over the datagram limit")]
    Oversized(usize),
}

/// Why a local request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("no member named {0}")]
    UnknownMember(String),
    #[error("member {0} is still alive or suspect; only down or left members can be removed")]
    MemberLive(String),
}

type Swim = Foca<NodeIdentity, PostcardCodec, SmallRng, Handler>;

/// One gossip node's whole protocol state.
pub struct Node {
    swim: Swim,
    runtime: AccumulatingRuntime<NodeIdentity>,
    inbox: Inbox,
    members: Members,
    catalog: Catalog,
    timing: Timing,
    seeds: Vec<SocketAddr>,
    rng: fastrand::Rng,
    out: Vec<Output>,
    started_ms: u64,
    size_class: u32,
    pulling: BTreeMap<String, (u64, u64)>,
    orphans: BTreeMap<String, u64>,
    table: Arc<ServiceTable>,
    table_dirty: bool,
    table_changed: bool,
    left: bool,
    /// Members this node's own probes found failing: node id to (identity, incarnation).
    suspects: BTreeMap<String, (NodeIdentity, u16)>,
}

fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// foca's configuration for a cluster of `size` members with our timings.
fn swim_config(timing: &Timing, size: usize) -> foca::Config {
    let size =
        NonZeroU32::new(u32::try_from(size.max(1)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(size);
    config.probe_period = timing.probe_period;
    config.probe_rtt = timing.probe_timeout;
    config.num_indirect_probes = nonzero(timing.indirect_probes);
    config.suspect_to_down_after = timing
        .probe_period
        .mul_f64(timing.suspicion_multiplier * f64::from(size.get()).log10().max(1.0));
    config.remove_down_after = Some(timing.reap_after);
    config.max_packet_size = nonzero(wire::MAX_DATAGRAM - SEAL_OVERHEAD - 1);
    config.periodic_gossip = Some(foca::PeriodicParams {
        frequency: timing.gossip_interval,
        num_members: nonzero(timing.gossip_fanout),
    });
    config.max_transmissions = max_transmissions(size.get());
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: timing.announce_down_interval,
        num_members: nonzero(2),
    });
    config
}

/// How many times each update and broadcast is passed on: memberlist's
/// `4 * ceil(log10(n + 1))`. foca's `Config::new_lan` floors instead, which gives 1 for a
/// node configured at size 1 or 2 (every node at start, and a seed as a burst of joins
/// begins), so updates learnt then were passed on once and some members stayed unknown
/// to some nodes until a periodic announce happened to cover them.
fn max_transmissions(size: u32) -> NonZeroU8 {
    let tx = 4.0 * f64::from(size.saturating_add(1)).log10().ceil();
    // At most 4 * 10 for u32 sizes, so the cast cannot truncate.
    NonZeroU8::new(tx.clamp(1.0, 255.0) as u8).unwrap_or(NonZeroU8::MIN)
}

/// Rounds the cluster size so foca's config is only rebuilt when it matters.
fn size_class(size: usize) -> u32 {
    usize::BITS - size.leading_zeros()
}

impl Node {
    /// A node that starts joining `config.seeds` at once. `seed` drives every random choice.
    pub fn new(config: NodeConfig, seed: u64, now_ms: u64) -> Self {
        let inbox = Inbox::default();
        let swim = Foca::with_custom_broadcast(
            config.identity.clone(),
            swim_config(&config.timing, 1),
            SmallRng::seed_from_u64(seed),
            PostcardCodec,
            Handler::new(inbox.clone()),
        );
        let mut record = config.record;
        record.id = config.identity.id.clone();
        record.name = config.identity.name.clone();
        record.gossip_addr = config.identity.addr.to_string();
        let mut node = Self {
            swim,
            runtime: AccumulatingRuntime::new(),
            inbox,
            members: Members::new(config.identity),
            catalog: Catalog::new(record, now_ms),
            timing: config.timing,
            seeds: config.seeds,
            rng: fastrand::Rng::with_seed(seed ^ 0x5eed_cafe),
            out: Vec::new(),
            started_ms: now_ms,
            size_class: size_class(1),
            pulling: BTreeMap::new(),
            orphans: BTreeMap::new(),
            table: Arc::new(ServiceTable::default()),
            table_dirty: true,
            table_changed: false,
            left: false,
            suspects: BTreeMap::new(),
        };
        let first = node.jitter(node.timing.anti_entropy_interval);
        node.schedule(first, NodeTimer::AntiEntropy);
        node.schedule(Duration::from_secs(1), NodeTimer::Housekeeping);
        node.broadcast_local();
        node.announce_to_seeds(now_ms);
        node.schedule(node.timing.join_backoff_min, NodeTimer::JoinRetry(1));
        node
    }

    /// Takes the work produced so far.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.out)
    }

    /// The current SWIM identity (its bump changes after an automatic rejoin).
    pub fn identity(&self) -> &NodeIdentity {
        self.swim.identity()
    }

    /// Feeds one opened datagram.
    pub fn handle_datagram(&mut self, payload: &[u8], now_ms: u64) -> Result<(), PacketError> {
        if self.left {
            return Ok(());
        }
        if payload.len() > wire::MAX_DATAGRAM {
            return Err(PacketError::Oversized(payload.len()));
        }
        let (&kind, body) = payload
            .split_first()
            .ok_or_else(|| PacketError::Malformed("empty".into()))?;
        let result = match Kind::from_byte(kind) {
            Some(Kind::Swim) => match self.swim.handle_data(body, &mut self.runtime) {
                Ok(()) => Ok(()),
                Err(
                    e @ (foca::Error::Decode(_)
                    | foca::Error::MalformedPacket
                    | foca::Error::CustomBroadcast(_)),
                ) => Err(PacketError::Malformed(e.to_string())),
                Err(foca::Error::DataTooBig) => Err(PacketError::Oversized(body.len())),
                Err(e) => {
                    tracing::trace!(error = %e, "swim packet ignored");
                    Ok(())
                }
            },
            Some(Kind::Catalog) => match wire::decode::<Datagram>(body) {
                Ok(Datagram::Leave(departure)) => {
                    self.add_broadcast(&Broadcast::Left(departure.clone()));
                    self.apply_departure(&departure, now_ms);
                    Ok(())
                }
                Ok(Datagram::Suspect(suspicion)) => {
                    self.refute(suspicion);
                    Ok(())
                }
                Err(e) => Err(PacketError::Malformed(e.to_string())),
            },
            None => Err(PacketError::Malformed(format!("unknown kind {kind}"))),
        };
        self.after_swim(now_ms);
        result
    }

    /// Reacts to a timer this node scheduled.
    pub fn handle_timer(&mut self, timer: NodeTimer, now_ms: u64) {
        if self.left {
            return;
        }
        match timer {
            NodeTimer::Swim(timer) => {
                if self.is_refuted_suspicion(&timer) {
                    tracing::debug!(?timer, "suspicion refuted before its timeout; not sent on");
                } else if let Err(e) = self.swim.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!(error = %e, "swim timer");
                }
            }
            NodeTimer::AntiEntropy => {
                self.anti_entropy();
                let next = self.jitter(self.timing.anti_entropy_interval);
                self.schedule(next, NodeTimer::AntiEntropy);
            }
            NodeTimer::Housekeeping => {
                self.housekeeping(now_ms);
                self.notify_suspects();
                self.schedule(Duration::from_secs(1), NodeTimer::Housekeeping);
            }
            NodeTimer::JoinRetry(attempt) => {
                if self.swim.num_members() == 0 && !self.seeds.is_empty() {
                    self.announce_to_seeds(now_ms);
                    let wait = self
                        .timing
                        .join_backoff_min
                        .saturating_mul(1 << attempt.min(16))
                        .min(self.timing.join_backoff_max);
                    let wait = self.jitter(wait);
                    self.schedule(wait, NodeTimer::JoinRetry(attempt + 1));
                }
            }
        }
        self.after_swim(now_ms);
    }

    /// Answers a TCP request (digest or pull) or applies a push; `None` means no reply.
    pub fn handle_stream_request(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, PacketError> {
        let message =
            wire::decode_stream(bytes).map_err(|e| PacketError::Malformed(e.to_string()))?;
        let reply = match message {
            Stream::Digest(theirs) => {
                let diff = self.catalog.diff(&theirs);
                Some(Stream::Reply {
                    records: self.encoded_records(&diff.newer_here),
                    want: diff.newer_there,
                })
            }
            Stream::Pull(ids) => Some(Stream::Reply {
                records: self.encoded_records(&ids),
                want: Vec::new(),
            }),
            Stream::Push(records) => {
                self.merge_encoded(&records, now_ms);
                None
            }
            Stream::Reply { .. } => {
                return Err(PacketError::Malformed("reply as a request".into()));
            }
        };
        self.after_swim(now_ms);
        Ok(reply.map(|m| wire::encode(&m)))
    }

    /// Applies the reply to a stream request this node sent; returns a push to send back.
    pub fn handle_stream_reply(
        &mut self,
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, PacketError> {
        let message =
            wire::decode_stream(bytes).map_err(|e| PacketError::Malformed(e.to_string()))?;
        let Stream::Reply { records, want } = message else {
            return Err(PacketError::Malformed("expected a reply".into()));
        };
        self.merge_encoded(&records, now_ms);
        self.after_swim(now_ms);
        Ok((!want.is_empty()).then(|| wire::encode(&Stream::Push(self.encoded_records(&want)))))
    }

    /// Replaces the local services; gossips only a real change.
    pub fn set_services(&mut self, services: Vec<CatalogService>, now_ms: u64) {
        if self.catalog.set_services(services, now_ms) {
            self.local_changed(now_ms);
        }
    }

    /// Replaces the local summary; gossips only a real change.
    pub fn set_summary(&mut self, summary: NodeSummary, now_ms: u64) {
        if self.catalog.set_summary(summary, now_ms) {
            self.local_changed(now_ms);
        }
    }

    /// Replaces the cluster-wide tokens the local record carries; gossips only a real change.
    pub fn set_tokens(&mut self, tokens: Vec<ClusterToken>, now_ms: u64) {
        if self.catalog.set_tokens(tokens, now_ms) {
            self.local_changed(now_ms);
        }
    }

    /// Marks the local node draining or not.
    pub fn set_draining(&mut self, draining: bool, now_ms: u64) {
        if self.catalog.set_draining(draining, now_ms) {
            self.local_changed(now_ms);
        }
    }

    /// Forgets a down or left member now.
    pub fn force_leave(&mut self, name: &str, now_ms: u64) -> Result<(), NodeError> {
        let mut events = Vec::new();
        let ids = self.members.force_leave(name, &mut events).ok_or_else(|| {
            if self
                .members
                .entries()
                .values()
                .any(|e| e.identity.name == name)
            {
                NodeError::MemberLive(name.to_string())
            } else {
                NodeError::UnknownMember(name.to_string())
            }
        })?;
        for id in ids {
            self.catalog.remove(&id, 0, now_ms);
        }
        self.emit(events);
        self.table_dirty = true;
        Ok(())
    }

    /// Leaves gracefully: tells every live member directly, gossips the departure, and stops.
    pub fn leave(&mut self, now_ms: u64) {
        if self.left {
            return;
        }
        let identity = self.identity().clone();
        let departure = Departure {
            id: identity.id,
            bump: identity.bump,
            version: self.catalog.local().version,
        };
        self.add_broadcast(&Broadcast::Left(departure.clone()));
        let mut payload = vec![Kind::Catalog as u8];
        payload.extend(wire::encode(&Datagram::Leave(departure)));
        let live: Vec<SocketAddr> = self
            .members
            .entries()
            .values()
            .filter(|e| e.status.is_live())
            .map(|e| e.identity.addr)
            .collect();
        for to in live {
            self.out.push(Output::Datagram {
                to,
                payload: payload.clone(),
            });
        }
        if let Err(e) = self.swim.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave");
        }
        self.after_swim(now_ms);
        self.left = true;
    }

    /// The members, this node first, in the API's shape.
    pub fn members(&self) -> Vec<Member> {
        let local = self.catalog.local();
        let identity = self.identity();
        let mut out = vec![Member {
            id: identity.id.clone(),
            name: identity.name.clone(),
            gossip_addr: identity.addr.to_string(),
            grpc_addr: local.grpc_addr.clone(),
            status: if self.left {
                MemberStatus::Left
            } else {
                MemberStatus::Alive
            } as i32,
            incarnation: identity.bump,
            since_unix_ms: self.started_ms as i64,
            tags: local.tags.clone(),
            summary: local.summary.clone(),
            draining: local.draining,
            record_version: local.version,
            conflict: self.members.local_conflict().join(","),
        }];
        for entry in self.members.entries().values() {
            let record = self.catalog.get(&entry.identity.id);
            out.push(Member {
                id: entry.identity.id.clone(),
                name: entry.identity.name.clone(),
                gossip_addr: entry.identity.addr.to_string(),
                grpc_addr: record.map(|r| r.grpc_addr.clone()).unwrap_or_default(),
                status: MemberStatus::from(entry.status) as i32,
                incarnation: entry.identity.bump,
                since_unix_ms: entry.since_ms as i64,
                tags: record.map(|r| r.tags.clone()).unwrap_or_default(),
                summary: record.and_then(|r| r.summary.clone()),
                draining: record.is_some_and(|r| r.draining),
                record_version: record.map_or(0, |r| r.version),
                conflict: entry.conflict.join(","),
            });
        }
        out
    }

    /// Every record in the catalog, by node id.
    pub fn records(&self) -> Vec<NodeRecord> {
        self.catalog.records().values().cloned().collect()
    }

    /// The status of a member by id, if known.
    pub fn status_of(&self, id: &str) -> Option<Status> {
        self.members.get(id).map(|e| e.status)
    }

    /// The service table, rebuilt if anything relevant changed since the last call.
    pub fn table(&mut self) -> Arc<ServiceTable> {
        if self.table_dirty {
            self.table_dirty = false;
            let mut next = publish::build(self.identity(), self.catalog.records(), &self.members);
            next.generation = self.table.generation;
            if next != *self.table {
                next.generation += 1;
                self.table = Arc::new(next);
                self.table_changed = true;
            }
        }
        self.table.clone()
    }

    /// The table if it changed since the last call of this method.
    pub fn changed_table(&mut self) -> Option<Arc<ServiceTable>> {
        let table = self.table();
        std::mem::take(&mut self.table_changed).then_some(table)
    }

    /// Whether `timer` would turn a suspect down although it has refuted the suspicion
    /// (or was replaced by a newer identity) since the timer was set.
    ///
    /// foca 2.0 checks the incarnation before declaring the member down, but then sends it
    /// `TurnUndead` (with `notify_down_members`, which `Config::new_lan` enables) whether or
    /// not the check passed. The member, alive and refuted, takes that as "the cluster thinks
    /// we're down" and renews its identity, so every refuted suspicion ended in a rejoin.
    /// Such a timer has nothing else to do in foca, so it is dropped here.
    fn is_refuted_suspicion(&self, timer: &foca::Timer<NodeIdentity>) -> bool {
        let foca::Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return false;
        };
        !self
            .swim
            .iter_membership_state()
            .any(|m| m.id() == member_id && m.incarnation() == *incarnation)
    }

    /// Tells each member this node still suspects, at the incarnation it suspected, so it
    /// can refute even if no gossip about the suspicion reaches it; forgets the rest.
    fn notify_suspects(&mut self) {
        let suspects = std::mem::take(&mut self.suspects);
        for (id, (member, incarnation)) in suspects {
            let still = self.swim.iter_membership_state().any(|m| {
                m.id() == &member
                    && m.incarnation() == incarnation
                    && m.state() == foca::State::Suspect
            });
            if still {
                self.notify_suspect(member.clone(), incarnation);
                self.suspects.insert(id, (member, incarnation));
            }
        }
    }

    fn notify_suspect(&mut self, member: NodeIdentity, incarnation: u16) {
        let to = member.addr;
        let notice = Datagram::Suspect(Suspicion {
            member,
            incarnation,
            from: self.identity().clone(),
        });
        let mut payload = vec![Kind::Catalog as u8];
        payload.extend(wire::encode(&notice));
        self.out.push(Output::Datagram { to, payload });
    }

    /// Handles a suspicion of this node sent by the member that holds it: foca refutes it
    /// (raising the incarnation, a no-op if already refuted), and an announce carries the
    /// new incarnation in its header straight back to that member.
    fn refute(&mut self, suspicion: Suspicion) {
        if suspicion.member != *self.identity() || suspicion.from.addr == self.identity().addr {
            return;
        }
        tracing::debug!(from = ?suspicion.from, "suspected; refuting");
        let own = foca::Member::new(
            suspicion.member,
            suspicion.incarnation,
            foca::State::Suspect,
        );
        if let Err(e) = self
            .swim
            .apply_many(std::iter::once(own), true, &mut self.runtime)
        {
            tracing::debug!(error = %e, "refute");
        }
        if let Err(e) = self.swim.announce(suspicion.from, &mut self.runtime) {
            tracing::debug!(error = %e, "announce refutation");
        }
    }

    fn schedule(&mut self, after: Duration, timer: NodeTimer) {
        self.out.push(Output::Timer { after, timer });
    }

    fn jitter(&mut self, base: Duration) -> Duration {
        base.mul_f64(0.75 + self.rng.f64() / 2.0)
    }

    fn emit(&mut self, events: Vec<ClusterEvent>) {
        self.out.extend(events.into_iter().map(Output::Event));
    }

    fn announce_to_seeds(&mut self, now_ms: u64) {
        let own = self.identity().addr;
        for seed in self.seeds.clone() {
            if seed != own
                && let Err(e) = self
                    .swim
                    .announce(NodeIdentity::seed(seed), &mut self.runtime)
            {
                tracing::debug!(error = %e, %seed, "announce");
            }
        }
        self.after_swim(now_ms);
    }

    fn add_broadcast(&mut self, item: &Broadcast) {
        if let Err(e) = self.swim.add_broadcast(&wire::encode(item)) {
            tracing::debug!(error = %e, "add broadcast");
        }
    }

    /// Gossips the local record, inline when it fits, else as an announcement to pull.
    fn broadcast_local(&mut self) {
        let record = self.catalog.local();
        let inline = Broadcast::Record(wire::encode_record(record));
        let item = if wire::encode(&inline).len() <= INLINE_RECORD_MAX {
            inline
        } else {
            Broadcast::Announce {
                id: record.id.clone(),
                version: record.version,
                addr: self.identity().addr,
            }
        };
        self.add_broadcast(&item);
    }

    fn local_changed(&mut self, now_ms: u64) {
        self.broadcast_local();
        let name = self.identity().name.clone();
        self.out
            .push(Output::Event(ClusterEvent::RecordChanged { node: name }));
        self.table_dirty = true;
        if let Err(e) = self.swim.broadcast(&mut self.runtime) {
            tracing::debug!(error = %e, "broadcast");
        }
        self.after_swim(now_ms);
    }

    fn encoded_records(&self, ids: &[String]) -> Vec<Vec<u8>> {
        let mut budget = wire::MAX_FRAME / 2;
        ids.iter()
            .filter_map(|id| self.catalog.get(id))
            .map(wire::encode_record)
            .take_while(|bytes| {
                budget = budget.saturating_sub(bytes.len() + 8);
                budget > 0
            })
            .collect()
    }

    fn merge_encoded(&mut self, records: &[Vec<u8>], now_ms: u64) {
        for bytes in records {
            match wire::decode_record(bytes) {
                Ok(record) => self.merge(record, now_ms),
                Err(e) => tracing::debug!(error = %e, "bad record"),
            }
        }
    }

    fn merge(&mut self, record: NodeRecord, now_ms: u64) {
        let (id, name) = (record.id.clone(), record.name.clone());
        if self.catalog.merge(record) {
            self.pulling.remove(&id);
            self.table_dirty = true;
            self.out
                .push(Output::Event(ClusterEvent::RecordChanged { node: name }));
            if self.members.get(&id).is_some() {
                self.orphans.remove(&id);
            } else {
                self.orphans.entry(id).or_insert(now_ms);
            }
        }
    }

    fn apply_departure(&mut self, departure: &Departure, now_ms: u64) {
        let mut events = Vec::new();
        self.members
            .depart(&departure.id, departure.bump, now_ms, &mut events);
        if self
            .catalog
            .remove(&departure.id, departure.version, now_ms)
        {
            self.table_dirty = true;
        }
        if !events.is_empty() {
            self.table_dirty = true;
            self.members.refresh_conflicts(&mut events);
        }
        self.emit(events);
    }

    fn apply_broadcast(&mut self, item: Broadcast, now_ms: u64) {
        match item {
            Broadcast::Record(bytes) => {
                if let Ok(record) = wire::decode_record(&bytes) {
                    self.merge(record, now_ms);
                }
            }
            Broadcast::Announce { id, version, addr } => {
                let behind = self.catalog.version_of(&id).is_none_or(|v| v < version);
                let pulling = self.pulling.get(&id).is_some_and(|(v, at)| {
                    *v >= version && now_ms.saturating_sub(*at) < PULL_RETRY_MS
                });
                if behind && !pulling && id != self.identity().id {
                    self.pulling.insert(id.clone(), (version, now_ms));
                    self.out.push(Output::Stream {
                        to: addr,
                        request: wire::encode(&Stream::Pull(vec![id])),
                    });
                }
            }
            Broadcast::Left(departure) => self.apply_departure(&departure, now_ms),
        }
    }

    /// Moves foca's output into ours and folds its view into the member table.
    fn after_swim(&mut self, now_ms: u64) {
        while let Some((to, data)) = self.runtime.to_send() {
            let mut payload = Vec::with_capacity(data.len() + 1);
            payload.push(Kind::Swim as u8);
            payload.extend_from_slice(&data);
            self.out.push(Output::Datagram {
                to: to.addr,
                payload,
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            if let foca::Timer::ChangeSuspectToDown {
                member_id,
                incarnation,
                ..
            } = &timer
            {
                self.suspects
                    .insert(member_id.id.clone(), (member_id.clone(), *incarnation));
                self.notify_suspect(member_id.clone(), *incarnation);
            }
            self.schedule(after, NodeTimer::Swim(timer));
        }
        let mut events = Vec::new();
        while let Some(notification) = self.runtime.to_notify() {
            if let OwnedNotification::Rejoin(identity) = notification {
                tracing::info!(?identity, "declared down; rejoined as a new incarnation");
                self.members.set_local(identity);
                events.push(ClusterEvent::SelfRejoined);
                self.broadcast_local();
            }
        }
        for item in broadcasts::drain(&self.inbox) {
            self.apply_broadcast(item, now_ms);
        }
        let before = events.len();
        for member in self.swim.iter_membership_state() {
            self.members
                .observe(member.id(), member.state(), now_ms, &mut events);
        }
        if events.len() > before {
            self.table_dirty = true;
            self.members.refresh_conflicts(&mut events);
        }
        self.emit(events);
        let class = size_class(self.swim.num_members() + 1);
        if class != self.size_class {
            self.size_class = class;
            let config = swim_config(&self.timing, self.swim.num_members() + 1);
            if let Err(e) = self.swim.set_config(config) {
                tracing::debug!(error = %e, "swim config");
            }
        }
        // Timers or sends produced by the config change.
        while let Some((to, data)) = self.runtime.to_send() {
            let mut payload = vec![Kind::Swim as u8];
            payload.extend_from_slice(&data);
            self.out.push(Output::Datagram {
                to: to.addr,
                payload,
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.schedule(after, NodeTimer::Swim(timer));
        }
    }

    /// Announces to a few nodes whose records arrived (by gossip or anti-entropy) but whom
    /// SWIM does not know: both learn of each other from the announce and its feed, so a
    /// membership gap closes once the catalog's full-state sync has crossed it.
    fn announce_to_orphans(&mut self) {
        let own = self.identity().addr;
        let catalog = &self.catalog;
        let addrs = self.orphans.keys().filter_map(|id| {
            catalog
                .get(id)
                .and_then(|r| r.gossip_addr.parse::<SocketAddr>().ok())
                .filter(|addr| *addr != own)
        });
        for addr in self.rng.choose_multiple(addrs, ORPHAN_ANNOUNCES) {
            if let Err(e) = self
                .swim
                .announce(NodeIdentity::seed(addr), &mut self.runtime)
            {
                tracing::debug!(error = %e, %addr, "announce to a node known from the catalog");
            }
        }
    }

    fn anti_entropy(&mut self) {
        let live: Vec<SocketAddr> = self
            .members
            .entries()
            .values()
            .filter(|e| e.status == Status::Alive)
            .map(|e| e.identity.addr)
            .collect();
        if live.is_empty() {
            return;
        }
        let to = live[self.rng.usize(..live.len())];
        self.out.push(Output::Stream {
            to,
            request: wire::encode(&Stream::Digest(self.catalog.digest())),
        });
    }

    fn housekeeping(&mut self, now_ms: u64) {
        let reap_ms = u64::try_from(self.timing.reap_after.as_millis()).unwrap_or(u64::MAX);
        let mut events = Vec::new();
        for id in self.members.reap(now_ms, reap_ms, &mut events) {
            self.catalog.remove(&id, 0, now_ms);
            self.table_dirty = true;
        }
        self.catalog
            .expire_tombstones(now_ms, reap_ms.saturating_mul(2));
        let local = self.identity().id.clone();
        for id in self.catalog.records().keys() {
            if *id != local && self.members.get(id).is_none() {
                self.orphans.entry(id.clone()).or_insert(now_ms);
            }
        }
        let members = &self.members;
        self.orphans.retain(|id, _| members.get(id).is_none());
        let expired: Vec<String> = self
            .orphans
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) >= reap_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.orphans.remove(&id);
            self.catalog.remove(&id, 0, now_ms);
        }
        self.announce_to_orphans();
        self.pulling
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < PULL_RETRY_MS);
        self.emit(events);
    }
}
