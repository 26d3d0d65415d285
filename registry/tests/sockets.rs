//! Real `Cluster`s on 127.0.0.1: join, discovery through the table, graceful leave, and a
//! node with the wrong key kept out.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;
use strata_proto::v1::{CatalogInstance, CatalogService};
use strata_proto::v1::{Health, MemberStatus};
use strata_registry::cluster::{Cluster, ClusterConfig};
use strata_registry::events::ClusterEvent;
use strata_registry::node::Timing;
use strata_registry::seal::{Keyring, generate_key};

fn config(i: usize, key: &str, join: Option<SocketAddr>) -> ClusterConfig {
    ClusterConfig {
        node_id: format!("id-{i}"),
        node_name: format!("n{i}"),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        grpc_addr: format!("127.0.0.1:{}", 7700 + i).parse().unwrap(),
        ip: None,
        join: join.map(|a| a.to_string()).into_iter().collect(),
        keyring: Some(Keyring::new(key).unwrap()),
        tags: Default::default(),
        services: Vec::new(),
        agent_version: "test".into(),
        timing: Timing {
            anti_entropy_interval: Duration::from_secs(1),
            ..Timing::default()
        },
        tls: None,
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_join_discover_leave_and_keep_out_wrong_keys() {
    let key = generate_key().unwrap();
    let first = Cluster::start(config(0, &key, None)).await.unwrap();
    let seed = first.gossip_addr();
    assert_ne!(seed.port(), 0);
    let mut nodes = vec![first];
    for i in 1..4 {
        nodes.push(Cluster::start(config(i, &key, Some(seed))).await.unwrap());
    }
    for (i, node) in nodes.iter().enumerate() {
        node.set_services(vec![CatalogService {
            name: "web".into(),
            instances: vec![CatalogInstance {
                id: format!("web/{i}"),
                ports: [("http".to_string(), 8000 + i as u32)].into(),
                health: Health::Passing as i32,
                ..Default::default()
            }],
            ..Default::default()
        }]);
    }
    let mut table = nodes[3].table();
    until("4 endpoints on n3", || {
        table
            .borrow_and_update()
            .services
            .get("web")
            .is_some_and(|s| s.endpoints.len() == 4)
    })
    .await;
    until("4 alive members on n0", || {
        nodes[0]
            .members()
            .iter()
            .filter(|m| m.status() == MemberStatus::Alive)
            .count()
            == 4
    })
    .await;
    // A member is seen alive before its record has arrived: wait for the record too.
    until("n2's record on n0", || {
        nodes[0].grpc_addr_of("n2").is_some()
    })
    .await;
    assert_eq!(
        nodes[0].grpc_addr_of("n2"),
        Some("127.0.0.1:7702".parse().unwrap())
    );

    let intruder = Cluster::start(config(9, &generate_key().unwrap(), Some(seed)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        nodes[0].members().iter().all(|m| m.name != "n9"),
        "wrong key admitted"
    );
    assert!(nodes[0].stats().dropped_bad_key > 0);
    assert_eq!(intruder.members().len(), 1);
    intruder.leave().await;

    let mut events = nodes[0].subscribe();
    nodes[2].leave().await;
    until("n2 left on n0", || {
        nodes[0]
            .members()
            .iter()
            .any(|m| m.name == "n2" && m.status() == MemberStatus::Left)
    })
    .await;
    let mut saw_left = false;
    while let Ok(event) = events.try_recv() {
        saw_left |= matches!(event, strata_registry::events::ClusterEvent::Left { ref name } if name == "n2");
    }
    assert!(saw_left);
    assert!(nodes[0].records().iter().all(|r| r.id != "id-2"));
    assert!(
        nodes[0].force_leave("n1").is_err(),
        "live members are not force-left"
    );
    let stats = nodes[1].stats();
    assert!(stats.packets_in > 0 && stats.bytes_out > 0);
    for node in [&nodes[0], &nodes[1], &nodes[3]] {
        node.leave().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_local_changes_ends_with_the_last_one_published() {
    let key = generate_key().unwrap();
    let node = Cluster::start(config(0, &key, None)).await.unwrap();
    // Far more changes than any queue would hold, faster than the gossip task applies them.
    for version in 0..20_000 {
        node.set_services(vec![CatalogService {
            name: "web".into(),
            version: version.to_string(),
            ..Default::default()
        }]);
        node.set_draining(version % 2 == 0);
    }
    until("the last services and drain flag in the record", || {
        node.records().first().is_some_and(|r| {
            r.services.first().is_some_and(|s| s.version == "19999") && !r.draining
        })
    })
    .await;
}

/// A node's gossip keeps its timing while the runtime that started it is blocked: with the
/// only worker of node 0's runtime stuck for twice the suspicion timeout (4 s at three
/// nodes), its peers never suspect it. On the caller's runtime, its probes, acks and
/// refutations would stop with that worker and the peers would declare it down.
#[test]
fn gossip_runs_on_while_the_starting_runtime_is_blocked() {
    let key = generate_key().unwrap();
    let runtimes: Vec<tokio::runtime::Runtime> = (0..3)
        .map(|_| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .collect();
    let first = runtimes[0]
        .block_on(Cluster::start(config(0, &key, None)))
        .unwrap();
    let seed = first.gossip_addr();
    let peers: Vec<Cluster> = (1..3)
        .map(|i| {
            runtimes[i]
                .block_on(Cluster::start(config(i, &key, Some(seed))))
                .unwrap()
        })
        .collect();
    let all_alive = |node: &Cluster| {
        node.members()
            .iter()
            .filter(|m| m.status() == MemberStatus::Alive)
            .count()
            == 3
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !(all_alive(&first) && peers.iter().all(all_alive)) {
        assert!(std::time::Instant::now() < deadline, "never converged");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut events: Vec<_> = peers.iter().map(Cluster::subscribe).collect();

    runtimes[0].spawn(async { std::thread::sleep(Duration::from_secs(8)) });
    std::thread::sleep(Duration::from_secs(9));

    for (peer, events) in peers.iter().zip(&mut events) {
        while let Ok(event) = events.try_recv() {
            assert!(
                !matches!(
                    &event,
                    ClusterEvent::Suspect { name } | ClusterEvent::Down { name } if name == "n0"
                ),
                "{}: {event:?}",
                peer.gossip_addr()
            );
        }
        assert!(all_alive(peer), "{:?}", peer.members());
    }
}
