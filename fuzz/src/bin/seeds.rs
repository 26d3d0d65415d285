//! Writes the seed corpora of `gossip_packet` and `catalog_record` from real traffic: a peer
//! node joins the fuzzed node (the same node `gossip_packet` builds, so the conversation
//! replays exactly), gossips its record, exchanges digests and leaves. Every packet the
//! fuzzed node receives becomes a seed, plain, sealed with the fixed key, and for resealing.
//!
//! Run from `fuzz/`: `cargo +nightly fuzz build seeds && target/x86_64-unknown-linux-gnu/release/seeds`
//! (then `cargo fuzz cmin` each target). It is a binary of the fuzz crate rather than an
//! example so it reuses the fuzz build's instrumented dependencies instead of a second build.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use strata_fuzz::registry::{self, Mode, Route};
use strata_proto::v1::{
    Algorithm, CatalogInstance, CatalogService, Health, InstanceState, NodeRecord, NodeSummary,
};
use strata_registry::membership::identity::NodeIdentity;
use strata_registry::node::{Node, NodeConfig, NodeTimer, Output, Timing};
use strata_registry::seal;
use strata_registry::wire::{self, Datagram, Departure, Kind, Stream, Suspicion};

/// Simulated time step.
const STEP_MS: u64 = 200;

fn peer_identity() -> NodeIdentity {
    NodeIdentity {
        id: "7c1e4b2a-peer".into(),
        name: "peer".into(),
        addr: registry::seed_addr(),
        bump: registry::NOW_MS - 5_000,
    }
}

fn services(name: &str, frontend: u32, n: usize) -> Vec<CatalogService> {
    vec![CatalogService {
        name: name.into(),
        version: "1.0.0".into(),
        frontends: BTreeMap::from([("http".to_string(), frontend)])
            .into_iter()
            .collect(),
        algorithm: Algorithm::RoundRobin as i32,
        prefer_local: true,
        balance: None,
        tags: vec!["blue".into()],
        instances: (0..n)
            .map(|i| CatalogInstance {
                id: format!("{name}/{i}"),
                ports: [("http".to_string(), 20_000 + i as u32)]
                    .into_iter()
                    .collect(),
                health: if i == 0 {
                    Health::Passing
                } else {
                    Health::Critical
                } as i32,
                version: "1.0.0".into(),
                draining: i == 2,
                state: InstanceState::Running as i32,
            })
            .collect(),
    }]
}

/// Timers of one simulated node.
#[derive(Default)]
struct Clock(Vec<(u64, NodeTimer)>);

/// What the fuzzed node received, as `gossip_packet` frames (unsealed payloads).
#[derive(Default)]
struct Tape(Vec<(Route, Vec<u8>)>);

/// Runs the two nodes until `until_ms`, recording every input of the fuzzed node.
fn run(
    fuzzed: &mut Node,
    peer: &mut Node,
    clocks: &mut [Clock; 2],
    now: &mut u64,
    until_ms: u64,
    tape: &mut Tape,
) {
    let fuzzed_addr = registry::identity().addr;
    while *now < until_ms {
        // Deliver until quiet.
        for _ in 0..20 {
            let mut quiet = true;
            for side in 0..2 {
                let outputs = if side == 0 {
                    fuzzed.take_outputs()
                } else {
                    peer.take_outputs()
                };
                for output in outputs {
                    quiet = false;
                    match output {
                        Output::Timer { after, timer } => {
                            clocks[side]
                                .0
                                .push((*now + after.as_millis() as u64, timer));
                        }
                        Output::Datagram { to, payload } => {
                            if side == 1 && to == fuzzed_addr {
                                tape.0.push((Route::Udp, payload.clone()));
                                let _ = fuzzed.handle_datagram(&payload, *now);
                            } else if side == 0 && to == registry::seed_addr() {
                                let _ = peer.handle_datagram(&payload, *now);
                            }
                        }
                        Output::Stream { to, request } => {
                            if side == 1 && to == fuzzed_addr {
                                tape.0.push((Route::StreamRequest, request.clone()));
                                if let Ok(Some(reply)) =
                                    fuzzed.handle_stream_request(&request, *now)
                                    && let Ok(Some(push)) = peer.handle_stream_reply(&reply, *now)
                                {
                                    tape.0.push((Route::StreamRequest, push.clone()));
                                    let _ = fuzzed.handle_stream_request(&push, *now);
                                }
                            } else if side == 0 && to == registry::seed_addr() {
                                if let Ok(Some(reply)) = peer.handle_stream_request(&request, *now)
                                {
                                    tape.0.push((Route::StreamReply, reply.clone()));
                                    if let Ok(Some(push)) = fuzzed.handle_stream_reply(&reply, *now)
                                    {
                                        let _ = peer.handle_stream_request(&push, *now);
                                    }
                                }
                            }
                        }
                        Output::Event(_) => {}
                    }
                }
            }
            if quiet {
                break;
            }
        }
        *now += STEP_MS;
        tape.0
            .push((Route::Tick, vec![0; (STEP_MS / 100) as usize]));
        for side in 0..2 {
            let due: Vec<NodeTimer> = {
                let clock = &mut clocks[side].0;
                clock.sort_by_key(|(at, _)| *at);
                let split = clock.partition_point(|(at, _)| *at <= *now);
                clock.drain(..split).map(|(_, t)| t).collect()
            };
            for timer in due {
                if side == 0 {
                    fuzzed.handle_timer(timer, *now);
                } else {
                    peer.handle_timer(timer, *now);
                }
            }
        }
    }
}

/// Joins runs of ticks into one tick frame each (at most 59.9 s), so windows of
/// `MAX_PACKETS` frames hold more packets.
fn merge_ticks(frames: &[(Route, Vec<u8>)]) -> Vec<(Route, Vec<u8>)> {
    let mut out: Vec<(Route, Vec<u8>)> = Vec::new();
    for (route, payload) in frames {
        match out.last_mut() {
            Some((Route::Tick, last))
                if *route == Route::Tick && last.len() + payload.len() < 600 =>
            {
                last.extend_from_slice(payload);
            }
            _ => out.push((*route, payload.clone())),
        }
    }
    out
}

/// One `gossip_packet` input: the mode byte, then the frames.
fn input(mode: Mode, frames: &[(Route, Vec<u8>)]) -> Vec<u8> {
    let ring = registry::keyring();
    let mut out = vec![mode as u8];
    for (route, payload) in frames {
        let bytes = match (mode, route) {
            (_, Route::Tick) => {
                out.extend_from_slice(&registry::frame(*route, payload));
                continue;
            }
            (Mode::Sealed, _) => seal::seal(Some(&ring), payload).expect("seal"),
            (Mode::Insecure, _) => seal::seal(None, payload).expect("frame"),
            (Mode::Reseal, _) => payload.clone(),
        };
        out.extend_from_slice(&registry::frame(*route, &bytes));
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut now = registry::NOW_MS;
    let mut fuzzed = registry::node();
    let mut peer = Node::new(
        NodeConfig {
            identity: peer_identity(),
            record: NodeRecord {
                grpc_addr: "127.0.0.1:7710".into(),
                ip: "127.0.0.2".into(),
                agent_version: "seed".into(),
                tags: [("rack".to_string(), "r7".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            timing: Timing::default(),
            seeds: Vec::new(),
        },
        2,
        now,
    );
    let mut clocks = [Clock::default(), Clock::default()];
    let mut tape = Tape::default();
    let mut records: Vec<NodeRecord> = Vec::new();
    run(
        &mut fuzzed,
        &mut peer,
        &mut clocks,
        &mut now,
        registry::NOW_MS + 3_000,
        &mut tape,
    );
    peer.set_services(services("web", 18080, 3), now);
    peer.set_summary(
        NodeSummary {
            cpu_busy_percent: 12.5,
            memory_used_percent: 40.0,
            worst_disk_used_percent: 71.0,
            worst_disk: "/".into(),
            load1: 0.3,
            alerts_firing: 1,
            cores: 4,
        },
        now,
    );
    run(
        &mut fuzzed,
        &mut peer,
        &mut clocks,
        &mut now,
        registry::NOW_MS + 8_000,
        &mut tape,
    );
    // A record too big to inline: announced, then pulled over TCP.
    records.extend(peer.records());
    peer.set_services(services("api", 18081, 40), now);
    run(
        &mut fuzzed,
        &mut peer,
        &mut clocks,
        &mut now,
        registry::NOW_MS + 14_000,
        &mut tape,
    );
    records.extend(peer.records());
    peer.set_draining(true, now);
    run(
        &mut fuzzed,
        &mut peer,
        &mut clocks,
        &mut now,
        registry::NOW_MS + 16_000,
        &mut tape,
    );
    peer.leave(now);
    run(
        &mut fuzzed,
        &mut peer,
        &mut clocks,
        &mut now,
        registry::NOW_MS + 17_000,
        &mut tape,
    );

    // Messages the conversation did not produce.
    let mut extra: Vec<(Route, Vec<u8>)> = Vec::new();
    let mut suspect = vec![Kind::Catalog as u8];
    suspect.extend(wire::encode(&Datagram::Suspect(Suspicion {
        member: registry::identity(),
        incarnation: 3,
        from: peer_identity(),
    })));
    extra.push((Route::Udp, suspect));
    let mut leave = vec![Kind::Catalog as u8];
    leave.extend(wire::encode(&Datagram::Leave(Departure {
        id: peer_identity().id,
        bump: peer_identity().bump,
        version: 9,
    })));
    extra.push((Route::Udp, leave));
    extra.push((
        Route::StreamRequest,
        wire::encode(&Stream::Digest(vec![
            (peer_identity().id, 5),
            (registry::identity().id, 1),
        ])),
    ));
    extra.push((
        Route::StreamRequest,
        wire::encode(&Stream::Pull(vec![registry::identity().id])),
    ));
    extra.push((
        Route::StreamReply,
        wire::encode(&Stream::Reply {
            records: peer.records().iter().map(wire::encode_record).collect(),
            want: vec![registry::identity().id],
        }),
    ));

    let dir = corpus.join("gossip_packet");
    let frames: Vec<(Route, Vec<u8>)> = tape.0.into_iter().collect();
    let packets: Vec<&(Route, Vec<u8>)> = frames
        .iter()
        .chain(&extra)
        .filter(|(r, _)| *r != Route::Tick)
        .collect();
    for mode in [Mode::Insecure, Mode::Sealed, Mode::Reseal] {
        // The conversation from the start, in windows of at most MAX_PACKETS frames.
        for (i, window) in merge_ticks(&frames)
            .chunks(registry::MAX_PACKETS)
            .take(4)
            .enumerate()
        {
            write(
                &dir,
                &format!("conversation-{mode:?}-{i}"),
                &input(mode, window),
            );
        }
        for (i, packet) in packets.iter().enumerate() {
            write(
                &dir,
                &format!("packet-{mode:?}-{i:03}"),
                &input(mode, std::slice::from_ref(*packet)),
            );
        }
    }

    let dir = corpus.join("catalog_record");
    records.extend(peer.records());
    records.extend(fuzzed.records());
    records.sort_by_key(wire::encode_record);
    records.dedup();
    records.push(NodeRecord {
        id: "conflict".into(),
        name: "peer".into(),
        gossip_addr: "[::1]:7701".into(),
        ip: "not-an-ip".into(),
        version: u64::MAX,
        services: services("dns", 70_000, 2),
        ..Default::default()
    });
    for (i, record) in records.iter().enumerate() {
        write(
            &dir,
            &format!("record-{i:02}"),
            &wire::encode_record(record),
        );
    }
    let addr: SocketAddr = registry::seed_addr();
    println!(
        "wrote {} gossip packets and {} records (peer at {addr})",
        packets.len() * 3,
        records.len()
    );
}
