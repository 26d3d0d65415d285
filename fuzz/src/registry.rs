//! Fuzz entry points of the registry: gossip packets (opened and decoded the way the driver
//! does) and catalog node records (decoded, merged and published the way a node does).

use foca::BroadcastHandler as _;
use std::net::SocketAddr;
use strata_proto::v1::NodeRecord;
use strata_registry::catalog::Catalog;
use strata_registry::membership::broadcasts::{self, Handler, Inbox};
use strata_registry::membership::identity::NodeIdentity;
use strata_registry::membership::members::Members;
use strata_registry::node::{Node, NodeConfig, NodeTimer, Output, Timing};
use strata_registry::publish;
use strata_registry::seal::{self, Keyring, OpenError, SEAL_OVERHEAD};
use strata_registry::wire::{self, Broadcast, MAX_DATAGRAM, MAX_FRAME, Stream};

/// The cluster key of the sealed modes (the bytes 0, 1, ..., 31).
pub const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// "Now" when the fuzzed node starts.
pub const NOW_MS: u64 = 1_700_000_000_000;
/// Most packets (frames) one input feeds, so an input stays fast.
pub const MAX_PACKETS: usize = 32;
/// Most timers one tick fires.
const MAX_TIMERS_PER_TICK: usize = 64;

/// How `gossip_packet` opens the packets of an input (its first byte, modulo 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Insecure (dev) cluster: packets are opened without a keyring.
    Insecure = 0,
    /// Sealed cluster: packets are opened with the fixed keyring ([`KEY`]).
    Sealed = 1,
    /// Each payload is sealed with [`KEY`] first, then opened (must round-trip) and fed:
    /// lets the fuzzer reach the decoders of a sealed cluster, which random bytes never
    /// authenticate against.
    Reseal = 2,
}

/// Where a frame of a `gossip_packet` input goes (its route byte, modulo 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// A UDP datagram: `Driver::on_datagram`.
    Udp = 0,
    /// A TCP frame read by the serving side: `Node::handle_stream_request`.
    StreamRequest = 1,
    /// A TCP frame read by the requesting side: `Node::handle_stream_reply`.
    StreamReply = 2,
    /// No payload: time moves on by `len * 100 ms` (`len % 600`) and due timers fire.
    Tick = 3,
}

/// The cluster keyring of the sealed modes.
pub fn keyring() -> Keyring {
    Keyring::new(KEY).expect("the fixed key is valid")
}

/// The identity of the fuzzed node.
pub fn identity() -> NodeIdentity {
    NodeIdentity {
        id: "0f0f0f0f-fuzz-node".into(),
        name: "fuzz".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 7701)),
        bump: NOW_MS,
    }
}

/// The join address of the fuzzed node.
pub fn seed_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7702))
}

/// The fuzzed node: fresh for every input, so a crash replays from its input alone.
pub fn node() -> Node {
    let config = NodeConfig {
        identity: identity(),
        record: NodeRecord {
            grpc_addr: "127.0.0.1:7700".into(),
            ip: "127.0.0.1".into(),
            agent_version: "fuzz".into(),
            ..Default::default()
        },
        timing: Timing::default(),
        seeds: vec![seed_addr()],
    };
    Node::new(config, 1, NOW_MS)
}

/// One frame of a `gossip_packet` input: route byte, length (u16 little-endian), payload.
/// A [`Route::Tick`] frame has no payload: its length field is the number of 100 ms steps.
pub fn frame(route: Route, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut out = vec![route as u8];
    out.extend_from_slice(&len.to_le_bytes());
    if route != Route::Tick {
        out.extend_from_slice(&payload[..usize::from(len)]);
    }
    out
}

/// Splits the next frame off `data`: (route, length field, payload, rest). The last frame's
/// payload is cut short if the input ends first.
fn next_frame(data: &[u8]) -> Option<(Route, u16, &[u8], &[u8])> {
    let (&route, rest) = data.split_first()?;
    let route = match route % 4 {
        0 => Route::Udp,
        1 => Route::StreamRequest,
        2 => Route::StreamReply,
        _ => Route::Tick,
    };
    let len = match rest {
        [lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
        [lo] => u16::from(*lo),
        [] => 0,
    };
    let rest = rest.get(2..).unwrap_or_default();
    if route == Route::Tick {
        return Some((route, len, &[], rest));
    }
    let (payload, rest) = rest.split_at(usize::from(len).min(rest.len()));
    Some((route, len, payload, rest))
}

/// Timers the node asked for, by due time.
#[derive(Default)]
struct Timers(Vec<(u64, u64, NodeTimer)>, u64);

impl Timers {
    /// Takes the node's outputs, keeping its timers and checking what it would send.
    fn collect(&mut self, node: &mut Node, now_ms: u64) {
        for output in node.take_outputs() {
            match output {
                Output::Timer { after, timer } => {
                    let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
                    self.1 += 1;
                    self.0.push((now_ms.saturating_add(after), self.1, timer));
                }
                Output::Stream { request, .. } => {
                    assert!(
                        request.len() + SEAL_OVERHEAD <= MAX_FRAME,
                        "stream request over the frame limit"
                    );
                }
                Output::Datagram { .. } | Output::Event(_) => {}
            }
        }
    }

    /// The earliest timer due at `now_ms`, if any.
    fn due(&mut self, now_ms: u64) -> Option<NodeTimer> {
        let (index, _) = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, (at, _, _))| *at <= now_ms)
            .min_by_key(|(_, (at, seq, _))| (*at, *seq))?;
        Some(self.0.swap_remove(index).2)
    }
}

/// Opens `packet` as the driver does, then hands the payload to `feed`.
fn open_and(keyring: Option<&Keyring>, packet: &[u8], feed: impl FnOnce(&[u8])) {
    if let Ok(payload) = seal::open(keyring, packet) {
        feed(&payload);
    }
}

/// The `gossip_packet` target: a fresh node fed a sequence of packets.
///
/// Input: a mode byte ([`Mode`], modulo 3), then up to [`MAX_PACKETS`] frames (see
/// [`frame`]). Each packet goes through the driver's checks (size limit, `seal::open`) into
/// the sans-I/O node's decoders, as UDP datagrams, TCP requests or TCP replies.
pub fn gossip_packet(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mode = match mode % 3 {
        0 => Mode::Insecure,
        1 => Mode::Sealed,
        _ => Mode::Reseal,
    };
    let ring = keyring();
    let keyring = (mode != Mode::Insecure).then_some(&ring);
    let mut node = node();
    let mut now = NOW_MS;
    let mut timers = Timers::default();
    timers.collect(&mut node, now);
    for _ in 0..MAX_PACKETS {
        let Some((route, len, payload, next)) = next_frame(rest) else {
            break;
        };
        rest = next;
        let resealed;
        let packet = if mode == Mode::Reseal && route != Route::Tick {
            resealed = seal::seal(Some(&ring), payload).expect("sealing works");
            assert_eq!(resealed.len(), payload.len() + SEAL_OVERHEAD);
            assert_eq!(seal::open(Some(&ring), &resealed).as_deref(), Ok(payload));
            assert_eq!(
                seal::open(None, &resealed),
                Err(OpenError::UnexpectedSealed)
            );
            resealed.as_slice()
        } else {
            payload
        };
        match route {
            Route::Udp => {
                if packet.len() <= MAX_DATAGRAM {
                    open_and(keyring, packet, |p| {
                        let _ = node.handle_datagram(p, now);
                    });
                }
            }
            Route::StreamRequest | Route::StreamReply => {
                if packet.len() <= MAX_FRAME {
                    open_and(keyring, packet, |p| {
                        let answer = if route == Route::StreamRequest {
                            node.handle_stream_request(p, now)
                        } else {
                            node.handle_stream_reply(p, now)
                        };
                        if let Ok(Some(answer)) = answer {
                            assert!(
                                answer.len() + SEAL_OVERHEAD <= MAX_FRAME,
                                "stream answer over the frame limit"
                            );
                        }
                    });
                }
            }
            Route::Tick => {
                now += u64::from(len % 600) * 100;
                for _ in 0..MAX_TIMERS_PER_TICK {
                    let Some(timer) = timers.due(now) else {
                        break;
                    };
                    node.handle_timer(timer, now);
                    timers.collect(&mut node, now);
                }
            }
        }
        timers.collect(&mut node, now);
        let _ = node.changed_table();
    }
    let _ = node.members();
    let _ = node.records();
}

/// `record` with NaNs of its summary made 0, for comparisons (NaN is not equal to itself;
/// maps encode in any order, so the encoded bytes cannot be compared either).
fn without_nan(mut record: NodeRecord) -> NodeRecord {
    if let Some(summary) = &mut record.summary {
        for value in [
            &mut summary.cpu_busy_percent,
            &mut summary.memory_used_percent,
            &mut summary.worst_disk_used_percent,
            &mut summary.load1,
        ] {
            if value.is_nan() {
                *value = 0.0;
            }
        }
    }
    record
}

/// The `catalog_record` target: one prost-encoded `NodeRecord` from a peer, through every
/// path a record takes: the broadcast handler, `wire::decode_record`, the catalog's merge,
/// anti-entropy digests, the service table, and a node receiving it in a TCP push.
pub fn catalog_record(data: &[u8]) {
    let local = identity();
    let sender = NodeIdentity {
        id: "peer".into(),
        name: "peer".into(),
        addr: seed_addr(),
        bump: 1,
    };

    // Inline in a broadcast: foca hands the item to the handler, which queues it.
    let inbox = Inbox::default();
    let mut handler = Handler::new(inbox.clone());
    let item = wire::encode(&Broadcast::Record(data.to_vec()));
    let accepted = handler.receive_item(&item, Some(&sender));
    let queued = broadcasts::drain(&inbox);
    assert_eq!(
        queued.len(),
        usize::from(matches!(accepted, Ok(Some(_)))),
        "a new record is queued once"
    );

    let decoded = wire::decode_record(data);
    assert_eq!(accepted.is_ok(), decoded.is_ok());
    if let Ok(record) = decoded {
        assert!(!record.id.is_empty() && record.id.len() <= wire::MAX_NAME);
        assert!(!record.name.is_empty() && record.name.len() <= wire::MAX_NAME);
        let again = wire::decode_record(&wire::encode_record(&record));
        assert_eq!(
            again.map(without_nan).as_ref(),
            Ok(&without_nan(record.clone())),
            "a decoded record re-encodes to itself"
        );

        let mut catalog = Catalog::new(
            NodeRecord {
                id: local.id.clone(),
                name: local.name.clone(),
                ..Default::default()
            },
            NOW_MS,
        );
        let is_local = record.id == local.id;
        assert_eq!(catalog.merge(record.clone()), !is_local);
        assert!(
            !catalog.merge(record.clone()),
            "merging twice changes nothing"
        );
        let digest = catalog.digest();
        let diff = catalog.diff(&digest);
        assert!(diff.newer_here.is_empty() && diff.newer_there.is_empty());
        let _ = Catalog::new(record.clone(), NOW_MS).diff(&digest);

        let mut members = Members::new(local.clone());
        let peer = NodeIdentity {
            id: record.id.clone(),
            name: record.name.clone(),
            addr: record.gossip_addr.parse().unwrap_or_else(|_| seed_addr()),
            bump: 1,
        };
        let mut events = Vec::new();
        members.observe(&peer, foca::State::Alive, NOW_MS, &mut events);
        members.refresh_conflicts(&mut events);
        let table = publish::build(&local, catalog.records(), &members);
        assert!(table.nodes.contains_key(&local.name));

        catalog.remove(&record.id, record.version, NOW_MS + 1);
        assert!(!catalog.merge(record), "a tombstone keeps an old copy out");
    }

    // In a TCP push: the node decodes, merges and publishes it.
    let mut node = node();
    let push = wire::encode(&Stream::Push(vec![data.to_vec()]));
    assert_eq!(node.handle_stream_request(&push, NOW_MS + 1), Ok(None));
    let _ = node.changed_table();
    let _ = node.members();
}
