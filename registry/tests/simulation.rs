//! Whole-cluster simulations of the sans-I/O node: convergence, failure detection,
//! partitions, loss, big records, restarts, name conflicts and sealing, all deterministic.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use sim::{Sim, service};
use std::time::Duration;
use strata_proto::v1::MemberStatus;
use strata_registry::events::ClusterEvent;
use strata_registry::membership::members::Status;
use strata_registry::seal::{Keyring, OpenError, generate_key};

fn cluster(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(seed);
    for i in 0..n {
        sim.spawn(&format!("n{i}"), None);
        sim.with(i, |node, now| {
            node.set_services(vec![service("web", i, 1)], now)
        });
        sim.run_for(Duration::from_millis(50));
    }
    sim
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn fifty_nodes_converge_to_one_membership_and_equal_catalogs() {
    let mut sim = cluster(50, 1);
    let took = sim.run_until_converged(secs(60));
    assert!(took.is_some(), "50 nodes did not converge in 60 s");
    assert_eq!(sim.records(7).len(), 50);
    let table = sim.node(13).table();
    assert_eq!(table.services["web"].endpoints.len(), 50);
    assert_eq!(
        table.services["web"]
            .endpoints
            .iter()
            .filter(|e| e.local)
            .count(),
        1
    );
    assert_eq!(table.nodes.len(), 50);
}

#[test]
fn a_killed_node_is_seen_down_by_all_and_keeps_its_instances_until_reaped() {
    let mut sim = Sim::new(2);
    sim.timing.reap_after = secs(60);
    for i in 0..10 {
        sim.spawn(&format!("n{i}"), None);
        sim.with(i, |node, now| {
            node.set_services(vec![service("web", i, 1)], now)
        });
        sim.run_for(Duration::from_millis(50));
    }
    assert!(sim.run_until_converged(secs(30)).is_some());
    sim.kill(3);
    sim.run_for(secs(15));
    for i in sim.running() {
        let status = sim.node(i).status_of("node-3");
        assert_eq!(status, Some(Status::Down), "node {i}");
        let table = sim.node(i).table();
        assert_eq!(
            table.services["web"].endpoints.len(),
            10,
            "a down agent's instances stay routable on node {i}"
        );
        assert!(!table.nodes["n3"].alive);
        assert!(
            sim.records(i).iter().any(|r| r.id == "node-3"),
            "down record kept until reaped"
        );
    }
    sim.run_for(secs(60));
    for i in sim.running() {
        let table = sim.node(i).table();
        assert_eq!(
            table.services["web"].endpoints.len(),
            9,
            "reaped on node {i}"
        );
        assert!(!table.nodes.contains_key("n3"));
        assert!(!sim.records(i).iter().any(|r| r.id == "node-3"));
    }
}

#[test]
fn a_partition_heals_into_one_cluster_without_ghosts() {
    let mut sim = cluster(16, 3);
    assert!(sim.run_until_converged(secs(30)).is_some());
    for i in 8..16 {
        sim.nodes[i].group = 1;
    }
    sim.run_for(secs(40));
    assert_eq!(sim.node(0).status_of("node-12"), Some(Status::Down));
    assert_eq!(sim.node(12).status_of("node-0"), Some(Status::Down));
    sim.with(12, |node, now| {
        node.set_services(vec![service("web", 12, 2)], now)
    });
    for node in &mut sim.nodes {
        node.group = 0;
    }
    let healed = sim.run_until_converged(secs(120));
    assert!(healed.is_some(), "partition did not heal in 120 s");
    for i in 0..16 {
        let view = sim.view(i);
        assert_eq!(view.len(), 16, "no duplicate members on node {i}");
        assert_eq!(sim.records(i).len(), 16, "no ghost records on node {i}");
        assert_eq!(sim.node(i).table().services["web"].endpoints.len(), 17);
    }
}

#[test]
fn ten_percent_loss_for_ten_minutes_gives_no_false_down() {
    let mut sim = cluster(20, 4);
    assert!(sim.run_until_converged(secs(30)).is_some());
    for node in &mut sim.nodes {
        node.events.clear();
    }
    sim.loss = 0.10;
    sim.run_for(secs(600));
    let suspicions = sim
        .nodes
        .iter()
        .flat_map(|n| &n.events)
        .filter(|e| matches!(e, ClusterEvent::Suspect { .. }))
        .count();
    assert!(suspicions > 0, "10% loss never made a probe fail");
    let downs: Vec<(usize, &ClusterEvent)> = sim
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.events.iter().map(move |e| (i, e)))
        .filter(|(_, e)| matches!(e, ClusterEvent::Down { .. } | ClusterEvent::SelfRejoined))
        .collect();
    assert!(downs.is_empty(), "false failures: {downs:?}");

    // Under the same loss, a node that really died is still declared down by everyone.
    sim.kill(7);
    sim.run_for(secs(20));
    for i in sim.running() {
        assert_eq!(
            sim.node(i).status_of("node-7"),
            Some(Status::Down),
            "node {i}"
        );
    }
    sim.loss = 0.0;
    assert!(sim.run_until_converged(secs(30)).is_some());
}

#[test]
fn twenty_percent_loss_and_100ms_delay_give_no_false_down() {
    let mut sim = cluster(5, 2);
    assert!(sim.run_until_converged(secs(30)).is_some());
    for node in &mut sim.nodes {
        node.events.clear();
    }
    sim.loss = 0.20;
    sim.delay_ms = (100, 100);
    sim.run_for(secs(1200));
    let events = || sim.nodes.iter().flat_map(|n| &n.events);
    let suspicions = events()
        .filter(|e| matches!(e, ClusterEvent::Suspect { .. }))
        .count();
    assert!(suspicions > 100, "the loss made probes fail: {suspicions}");
    let downs: Vec<&ClusterEvent> = events()
        .filter(|e| matches!(e, ClusterEvent::Down { .. } | ClusterEvent::SelfRejoined))
        .collect();
    assert!(downs.is_empty(), "false failures: {downs:?}");
}

#[test]
fn a_suspect_that_refutes_in_time_is_never_turned_down() {
    let mut sim = cluster(8, 10);
    assert!(sim.run_until_converged(secs(30)).is_some());
    for node in &mut sim.nodes {
        node.events.clear();
    }
    // Cut node 3 off for less than the suspicion timeout (4 s at 8 nodes): probes of it
    // fail and it is suspected, then it can talk again and refutes.
    sim.nodes[3].group = 1;
    sim.run_for(Duration::from_millis(2500));
    sim.nodes[3].group = 0;
    sim.run_for(secs(20));
    let events: Vec<&ClusterEvent> = sim.nodes.iter().flat_map(|n| &n.events).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ClusterEvent::Suspect { name } if name == "n3")),
        "n3 was never suspected: {events:?}"
    );
    let downs: Vec<&&ClusterEvent> = events
        .iter()
        .filter(|e| matches!(e, ClusterEvent::Down { .. } | ClusterEvent::SelfRejoined))
        .collect();
    assert!(
        downs.is_empty(),
        "refuted suspicion ended in a down: {downs:?}"
    );
    assert!(sim.converged());
}

#[test]
fn a_record_bigger_than_a_datagram_converges_through_pulls() {
    let mut sim = cluster(12, 5);
    assert!(sim.run_until_converged(secs(30)).is_some());
    sim.with(4, |node, now| {
        node.set_services(vec![service("big", 4, 60)], now)
    });
    let size = prost::Message::encoded_len(
        &sim.records(4)
            .into_iter()
            .find(|r| r.id == "node-4")
            .unwrap(),
    );
    assert!(size > 1200, "record is only {size} bytes");
    sim.run_for(secs(3));
    for i in 0..12 {
        assert_eq!(
            sim.node(i).table().services["big"].endpoints.len(),
            60,
            "node {i}"
        );
    }
    assert!(sim.converged());
}

#[test]
fn a_restarted_node_replaces_its_old_self() {
    let mut sim = cluster(8, 6);
    assert!(sim.run_until_converged(secs(30)).is_some());
    let old_version = sim
        .records(0)
        .iter()
        .find(|r| r.id == "node-5")
        .unwrap()
        .version;
    sim.kill(5);
    sim.run_for(secs(2));
    let bump = sim.now;
    sim.boot(5, "node-5", "n5", bump);
    sim.with(5, |node, now| {
        node.set_services(vec![service("api", 5, 1)], now)
    });
    assert!(sim.run_until_converged(secs(30)).is_some());
    for i in 0..8 {
        let members = sim.node(i).members();
        let five: Vec<_> = members.iter().filter(|m| m.id == "node-5").collect();
        assert_eq!(five.len(), 1);
        assert_eq!(five[0].incarnation, bump);
        assert_eq!(five[0].status(), MemberStatus::Alive);
        let record = sim
            .records(i)
            .into_iter()
            .find(|r| r.id == "node-5")
            .unwrap();
        assert!(record.version > old_version);
        assert!(record.services.iter().any(|s| s.name == "api"));
        assert!(!record.services.iter().any(|s| s.name == "web"));
    }
}

#[test]
fn a_restart_next_to_running_services_never_withdraws_them() {
    let mut sim = cluster(5, 10);
    assert!(sim.run_until_converged(secs(30)).is_some());
    sim.kill(4);
    sim.run_for(secs(8));
    assert_eq!(sim.node(0).status_of("node-4"), Some(Status::Down));
    let bump = sim.now;
    sim.boot_with(4, "node-4", "n4", bump, vec![service("web", 4, 1)]);
    for _ in 0..300 {
        sim.run_for(Duration::from_millis(10));
        for i in 0..4 {
            let endpoints = sim.node(i).table().services["web"].endpoints.len();
            assert_eq!(endpoints, 5, "node {i} at {} ms", sim.now - bump);
        }
    }
    assert!(sim.run_until_converged(secs(30)).is_some());
    assert!(sim.node(0).table().nodes["n4"].alive);
}

#[test]
fn two_nodes_with_one_name_are_reported_as_a_conflict() {
    let mut sim = cluster(4, 7);
    let dup = sim.spawn("n1", None);
    assert!(sim.run_until_converged(secs(30)).is_some());
    let members = sim.node(0).members();
    let same: Vec<_> = members.iter().filter(|m| m.name == "n1").collect();
    assert_eq!(same.len(), 2, "never merged");
    assert!(same.iter().all(|m| !m.conflict.is_empty()));
    assert!(sim.nodes[0].events.iter().any(|e| matches!(
        e,
        ClusterEvent::Conflict { name, ids } if name == "n1" && ids.len() == 2
    )));
    let own = sim.node(dup).members();
    assert_eq!(own[0].conflict, "node-1");
}

#[test]
fn a_graceful_leave_is_seen_at_once_and_its_record_goes() {
    let mut sim = cluster(6, 8);
    assert!(sim.run_until_converged(secs(30)).is_some());
    sim.with(2, |node, now| node.leave(now));
    sim.run_for(Duration::from_millis(50));
    for i in [0, 1, 3, 4, 5] {
        assert_eq!(sim.node(i).status_of("node-2"), Some(Status::Left));
        assert!(!sim.records(i).iter().any(|r| r.id == "node-2"));
        let table = sim.node(i).table();
        assert_eq!(
            table.services["web"].endpoints.len(),
            5,
            "withdrawn on node {i}"
        );
        assert!(
            !table.services["web"]
                .unavailable
                .iter()
                .any(|e| e.node == "n2")
        );
    }
    sim.kill(2);
    sim.run_for(secs(20));
    for i in [0, 1, 3, 4, 5] {
        assert_eq!(sim.node(i).status_of("node-2"), Some(Status::Left));
        assert!(
            !sim.records(i).iter().any(|r| r.id == "node-2"),
            "no ghost record"
        );
    }
    sim.with(0, |node, now| node.force_leave("n2", now))
        .unwrap();
    assert_eq!(sim.node(0).status_of("node-2"), None);
    assert!(
        sim.with(0, |node, now| node.force_leave("n1", now))
            .is_err()
    );
}

#[test]
fn sealing_drops_wrong_keys_and_rotation_keeps_the_cluster_connected() {
    let old = generate_key().unwrap();
    let mut sim = Sim::new(9);
    for i in 0..6 {
        sim.spawn(&format!("n{i}"), Some(Keyring::new(&old).unwrap()));
        sim.run_for(Duration::from_millis(50));
    }
    let intruder = sim.spawn(
        "intruder",
        Some(Keyring::new(&generate_key().unwrap()).unwrap()),
    );
    let plain = sim.spawn("plain", None);
    sim.run_for(secs(20));
    for i in 0..6 {
        let view = sim.view(i);
        assert_eq!(view.len(), 6, "only keyed nodes admitted on node {i}");
    }
    assert!(
        sim.nodes[0]
            .dropped
            .get(&OpenError::BadKey)
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(
        sim.nodes[0]
            .dropped
            .get(&OpenError::Unsealed)
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert!(
        sim.nodes[plain]
            .dropped
            .get(&OpenError::UnexpectedSealed)
            .is_none_or(|n| *n == 0)
    );
    sim.kill(intruder);
    sim.kill(plain);

    let new = generate_key().unwrap();
    for node in &mut sim.nodes[..6] {
        node.keyring.as_mut().unwrap().install(&new).unwrap();
    }
    sim.run_for(secs(2));
    for node in &mut sim.nodes[..6] {
        node.keyring.as_mut().unwrap().use_primary(&new).unwrap();
    }
    sim.run_for(secs(2));
    let before: u64 = sim.nodes[..6]
        .iter()
        .map(|n| n.dropped.values().sum::<u64>())
        .sum();
    for node in &mut sim.nodes[..6] {
        node.keyring.as_mut().unwrap().remove(&old).unwrap();
    }
    sim.run_for(secs(20));
    let after: u64 = sim.nodes[..6]
        .iter()
        .map(|n| n.dropped.values().sum::<u64>())
        .sum();
    assert_eq!(before, after, "no packet dropped during rotation");
    for i in 0..6 {
        assert!(sim.view(i).iter().all(|(_, s)| *s == MemberStatus::Alive));
    }
}

#[test]
fn fifty_nodes_started_at_once_converge_within_ten_seconds() {
    let mut sim = Sim::new(11);
    for i in 0..50 {
        sim.spawn(&format!("n{i}"), None);
    }
    let took = sim.run_until_converged(secs(10));
    assert!(
        took.is_some(),
        "a burst of 50 joins did not converge in 10 s"
    );
}
