//! Gossip benchmark on real loopback UDP/TCP: N = 10, 50, 200 `Cluster`s in one process.
//! Prints registration spread time (median, p99), kill detection time, and gossip bytes/s
//! per node at rest and under churn. Bounded: a few trials per size, timeouts on every wait.

// Bench code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use strata_proto::v1::{CatalogInstance, CatalogService};
use strata_proto::v1::{Health, MemberStatus};
use strata_registry::cluster::{Cluster, ClusterConfig};
use strata_registry::node::Timing;
use strata_registry::seal::{Keyring, generate_key};

fn config(i: usize, key: &str, join: Option<SocketAddr>) -> ClusterConfig {
    ClusterConfig {
        node_id: format!("bench-{i}"),
        node_name: format!("b{i}"),
        bind: "127.0.0.1:0".parse().expect("addr"),
        advertise: None,
        grpc_addr: "127.0.0.1:7700".parse().expect("addr"),
        ip: None,
        join: join.map(|a| a.to_string()).into_iter().collect(),
        keyring: Some(Keyring::new(key).expect("key")),
        tags: Default::default(),
        services: Vec::new(),
        agent_version: "bench".into(),
        timing: Timing::default(),
        tls: None,
    }
}

fn service(version: u32) -> Vec<CatalogService> {
    vec![CatalogService {
        name: "svc".into(),
        version: version.to_string(),
        instances: vec![CatalogInstance {
            id: "svc/1".into(),
            health: Health::Passing as i32,
            version: version.to_string(),
            ports: [("http".to_string(), 8080)].into(),
            ..Default::default()
        }],
        ..Default::default()
    }]
}

fn bytes_out(nodes: &[Cluster]) -> u64 {
    nodes.iter().map(|n| n.stats().bytes_out).sum()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn wait(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

async fn run(n: usize) {
    let key = generate_key().expect("key");
    let first = Cluster::start(config(0, &key, None)).await.expect("start");
    let seed = first.gossip_addr();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(
            Cluster::start(config(i, &key, Some(seed)))
                .await
                .expect("start"),
        );
    }
    let joined = wait(Duration::from_secs(60), || {
        nodes.iter().all(|c| {
            c.members()
                .iter()
                .filter(|m| m.status() == MemberStatus::Alive)
                .count()
                == n
        })
    })
    .await;
    println!("N={n}: full membership after {joined:?}");

    let rest_from = bytes_out(&nodes);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rest = (bytes_out(&nodes) - rest_from) as f64 / 5.0 / n as f64;

    let tables: Vec<_> = nodes.iter().map(|c| c.table()).collect();
    let mut spreads = Vec::new();
    for trial in 1..=5u32 {
        let origin = &nodes[trial as usize % n];
        origin.set_services(service(trial));
        let version = trial.to_string();
        let took = wait(Duration::from_secs(10), || {
            tables.iter().all(|t| {
                t.borrow()
                    .services
                    .get("svc")
                    .is_some_and(|s| s.endpoints.iter().any(|e| e.version == version))
            })
        })
        .await;
        match took {
            Some(d) => spreads.push(d),
            None => println!("N={n}: trial {trial} did not reach every node in 10 s"),
        }
        origin.set_services(Vec::new());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    spreads.sort();

    let churn_from = bytes_out(&nodes);
    for round in 0..5u32 {
        nodes[1].set_services(service(100 + round));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let churn = (bytes_out(&nodes) - churn_from) as f64 / 5.0 / n as f64;

    let victim = nodes.pop().expect("victim");
    let victim_id = format!("bench-{}", n - 1);
    let killed = Instant::now();
    drop(victim);
    let detected = wait(Duration::from_secs(30), || {
        nodes.iter().all(|c| {
            c.members()
                .iter()
                .any(|m| m.id == victim_id && m.status() == MemberStatus::Down)
        })
    })
    .await
    .map(|_| killed.elapsed());

    if spreads.is_empty() {
        println!("N={n}: registration spread: no trial completed");
    } else {
        println!(
            "N={n}: registration reaches 100% of nodes: median {:?}, p99 {:?} ({} trials)",
            pct(&spreads, 0.5),
            pct(&spreads, 0.99),
            spreads.len()
        );
    }
    println!("N={n}: kill seen down by every node after {detected:?}");
    println!(
        "N={n}: gossip out per node: {:.0} B/s at rest, {:.0} B/s under churn (1 change/s)",
        rest, churn
    );
    for node in &nodes {
        node.leave().await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sizes: Vec<usize> = std::env::var("GOSSIP_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 50, 200]);
    for n in sizes {
        runtime.block_on(run(n));
    }
}
