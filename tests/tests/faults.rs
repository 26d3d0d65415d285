//! Fault tolerance, end to end (issue 8). Five agents in five network namespaces joined by a
//! bridge run a service whose instances are spread over them; a client in the test sends
//! requests through one agent's balancer while faults are injected: `kill -9` of an agent, a
//! partition and its heal, packet loss and delay, an agent with the wrong gossip key. Two
//! more faults run against one agent on loopback: a full log directory, and `kill -9` of
//! the agent at random moments during `strata apply`.
//!
//! Packet loss and delay use `tc netem` where the kernel has it. Where it does not (this
//! project's machines and CI), the fault runs on a cluster of its own whose gossip passes
//! userspace relays ([`strata_tests::impair`]): each agent advertises its relay's address,
//! so every gossip packet to a node, UDP or TCP, crosses that node's relay.
//!
//! Each fault prints one row of a table: how long until it was detected, the client's
//! requests sent and failed meanwhile, and the data lost (must be none). The tests run one
//! at a time (they measure timings, and the machine has two cores).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use strata_tests::impair::{ImpairConfig, Relay, RelayStats};
use strata_tests::netns::TestNet;
use strata_tests::{
    AgentOptions, AgentProcess, agent_token, binary, process_start_ticks, wait_until,
};

const KEY: &str = "q2v0Ykq4b6m6o2Ck3qvP0bJx8m9D5Yt6d6WqXz3mJjE=";
const WRONG_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Ports every agent of the cluster uses inside its own namespace.
const GRPC_PORT: u16 = 7700;
const GOSSIP_PORT: u16 = 7701;
const HTTP_PORT: u16 = 7702;
/// The service's frontend port on every balancer.
const FRONTEND: u16 = 18500;
/// Instances per agent, on every agent but the first (the client's entry).
const INSTANCES_PER_NODE: usize = 2;
/// Agents in the cluster, plus one more namespace for the intruder with the wrong key.
const NODES: usize = 5;

/// One fault at a time: timings are the point, and there are two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// One row of the report table.
fn report(fault: &str, detect: &str, sent: usize, failed: usize, lost: &str) {
    println!(
        "FAULT | {fault:<44} | detect {detect:>22} | requests {sent:>5} sent {failed:>4} failed | data lost: {lost}"
    );
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// The client: requests through one balancer, bounded in count and time.

/// Sends `GET /` through a balancer every 50 ms on a thread of its own, recording each
/// outcome, until stopped, `MAX_REQUESTS` were sent, or `MAX_TIME` has passed.
struct Client {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<(Instant, bool)>>>,
    thread: Option<JoinHandle<()>>,
}

const MAX_REQUESTS: usize = 20_000;
const MAX_TIME: Duration = Duration::from_secs(600);

impl Client {
    fn start(target: SocketAddr) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = stop.clone();
            let outcomes = outcomes.clone();
            std::thread::spawn(move || {
                let began = Instant::now();
                for _ in 0..MAX_REQUESTS {
                    if stop.load(Ordering::Relaxed) || began.elapsed() > MAX_TIME {
                        break;
                    }
                    let at = Instant::now();
                    let ok = request(target);
                    outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((at, ok));
                    std::thread::sleep(Duration::from_millis(50).saturating_sub(at.elapsed()));
                }
            })
        };
        Client {
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    /// (sent, failed) among the requests started in `[from, to)`.
    fn window(&self, from: Instant, to: Instant) -> (usize, usize) {
        let outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        let inside: Vec<bool> = outcomes
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, ok)| *ok)
            .collect();
        (inside.len(), inside.iter().filter(|ok| !**ok).count())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One HTTP request; true for a 200 answer within the time limits.
fn request(target: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_secs(3)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(stream, "GET / HTTP/1.0\r\nHost: faults\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("status 200\n")
}

// ---------------------------------------------------------------------------------------
// The cluster in namespaces.

/// Five agents in five namespaces. Fields drop in order: the agents (and their services)
/// first, then the relays, then the namespaces, then the data dirs.
struct Cluster {
    agents: Vec<Option<AgentProcess>>,
    /// One gossip relay per node when the gossip is relayed (its address is what the node
    /// advertises), else empty.
    relays: Vec<Relay>,
    /// Pass-through relays from the host's address to the instances' backend ports, when
    /// the gossip is relayed: a node's service address is the ip it advertises, the host's.
    backends: Vec<Relay>,
    net: TestNet,
    dir: tempfile::TempDir,
}

/// Every agent's command line past `run`, in one place. When the agent requires TLS or
/// `--insecure` for a non-loopback gRPC address, add `--insecure` here. `advertise` holds
/// each node's relay address when the gossip is relayed (empty otherwise): node `i`
/// advertises `advertise[i]`, and joins through node 1's.
fn node_args(net: &TestNet, i: usize, key: &str, advertise: &[SocketAddr]) -> Vec<String> {
    let ip = net.nodes[i].ip;
    let mut args: Vec<String> = vec![
        "--grpc-addr".into(),
        format!("{ip}:{GRPC_PORT}"),
        "--http-addr".into(),
        format!("{ip}:{HTTP_PORT}"),
        "--gossip-addr".into(),
        format!("{ip}:{GOSSIP_PORT}"),
        "--balancer-addr".into(),
        ip.to_string(),
        "--dns-addr".into(),
        "127.0.0.1:0".into(),
        "--gossip-key".into(),
        key.into(),
        "--insecure".into(),
    ];
    if let Some(addr) = advertise.get(i) {
        args.push("--advertise-addr".into());
        args.push(addr.to_string());
    }
    if i > 0 {
        args.push("--join".into());
        args.push(match advertise.first() {
            Some(addr) => addr.to_string(),
            None => format!("{}:{GOSSIP_PORT}", net.nodes[0].ip),
        });
    }
    args
}

fn node_name(i: usize) -> String {
    format!("f{}", i + 1)
}

fn start_node(
    net: &TestNet,
    dir: &Path,
    i: usize,
    key: &str,
    advertise: &[SocketAddr],
) -> AgentProcess {
    AgentProcess::start(
        &dir.join(node_name(i)),
        &AgentOptions {
            node_name: Some(node_name(i)),
            extra_args: node_args(net, i, key, advertise),
            prefix: net.exec_prefix(i),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("agent {} starts: {e:#}", node_name(i)))
}

/// Member name -> status as `agent` sees it; empty when it cannot be asked.
fn statuses(agent: &AgentProcess) -> BTreeMap<String, String> {
    let out = agent.strata(&["members", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The instances of `web` in `agent`'s catalog, as (node, instance id, ip), with one
/// entry per record found, so duplicates show.
fn catalog_instances(agent: &AgentProcess) -> Option<Vec<(String, String, String)>> {
    let out = agent.strata(&["catalog", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut found = Vec::new();
    for record in v["records"].as_array()? {
        let node = record["name"].as_str().unwrap_or("").to_string();
        let ip = record["ip"].as_str().unwrap_or("").to_string();
        for service in record["services"].as_array().into_iter().flatten() {
            if service["name"] != "web" {
                continue;
            }
            for instance in service["instances"].as_array().into_iter().flatten() {
                let id = instance["id"].as_str().unwrap_or("").to_string();
                found.push((node.clone(), id, ip.clone()));
            }
        }
    }
    found.sort();
    Some(found)
}

/// The balancer endpoints of `web` on `agent`, as (node, instance).
fn balancer_endpoints(agent: &AgentProcess) -> Option<BTreeSet<(String, String)>> {
    let out = agent.strata(&["balancer", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let web = v["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "web")?;
    Some(
        web["endpoints"]
            .as_array()?
            .iter()
            .map(|e| {
                (
                    e["node"].as_str().unwrap_or("").to_string(),
                    e["instance"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
    )
}

/// How many of `web`'s instances on `node` `agent`'s balancer lists.
fn listed_on(agent: &AgentProcess, node: &str) -> usize {
    balancer_endpoints(agent)
        .unwrap_or_default()
        .iter()
        .filter(|(n, _)| n == node)
        .count()
}

/// (instance id, pid) of `web` on `agent` itself.
fn local_pids(agent: &AgentProcess) -> Vec<(String, i64)> {
    let out = agent.strata(&["service", "web", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut pids: Vec<(String, i64)> = v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["id"].as_str().unwrap_or("").to_string(),
                i["pid"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    pids.sort();
    pids
}

/// `namespaces` node namespaces (the cluster uses the first `NODES`); `None` where
/// namespaces cannot be made (a failure under CI, a printed skip elsewhere).
fn test_net(namespaces: usize) -> Option<TestNet> {
    match TestNet::create(namespaces) {
        Ok(net) => net,
        Err(e) => panic!("cannot build the test network: {e:#}"),
    }
}

impl Cluster {
    /// Starts the cluster on `net` and the service, and waits until the whole catalog is
    /// everywhere and every instance passes. With `relayed`, the gossip to each node passes
    /// a relay of its own, passing through until impaired.
    fn start(net: TestNet, relayed: bool) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut relays = Vec::new();
        if relayed {
            for (i, node) in net.nodes.iter().enumerate().take(NODES) {
                let relay = Relay::start(
                    SocketAddr::new(net.host_ip.into(), 0),
                    SocketAddr::new(node.ip.into(), GOSSIP_PORT),
                    ImpairConfig {
                        loss: 0.2,
                        delay: Duration::from_millis(100),
                        seed: 0x5eed + i as u64,
                        impaired: false,
                        ..Default::default()
                    },
                )
                .expect("gossip relay");
                relays.push(relay);
            }
        }
        let mut cluster = Cluster {
            agents: Vec::new(),
            relays,
            backends: Vec::new(),
            net,
            dir,
        };
        for i in 0..NODES {
            let agent = cluster.start_node(i, KEY);
            cluster.agents.push(Some(agent));
        }
        wait_until(
            "5 alive members everywhere",
            Duration::from_secs(60),
            || {
                cluster.live().all(|a| {
                    let s = statuses(a);
                    s.len() == NODES && s.values().all(|st| st == "alive")
                })
            },
        );
        let spec = cluster.dir.path().join("web.toml");
        // Checks dial the published address; with relayed gossip that is the host's relay,
        // which exists only once the backends' ports are known, so they check the instance
        // in its own namespace instead.
        let check_address = if relayed {
            "address = \"127.0.0.1\"\n"
        } else {
            ""
        };
        std::fs::write(
            &spec,
            format!(
                r#"name = "web"
command = ["{}"]
instances = {INSTANCES_PER_NODE}
env = {{ BIND_ADDR = "0.0.0.0" }}
[ports.http]
frontend = {FRONTEND}
[health]
http = "/"
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 2
grace = "0s"
{check_address}"#,
                binary("strata-test-server").display()
            ),
        )
        .expect("spec");
        for agent in cluster.live().skip(1) {
            let out = agent.strata(&["apply", spec.to_str().expect("path"), "--wait"]);
            assert!(
                out.status.success(),
                "apply: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if relayed {
            cluster.relay_backends();
        }
        wait_until(
            "every balancer has every instance",
            Duration::from_secs(60),
            || {
                cluster.live().all(|a| {
                    balancer_endpoints(a).map(|e| e.len()) == Some((NODES - 1) * INSTANCES_PER_NODE)
                })
            },
        );
        cluster
    }

    /// Starts agent `i` (0-based) on its namespace, advertising its relay if it has one.
    fn start_node(&self, i: usize, key: &str) -> AgentProcess {
        let advertise: Vec<SocketAddr> = self.relays.iter().map(Relay::addr).collect();
        start_node(&self.net, self.dir.path(), i, key, &advertise)
    }

    /// The address node `i`'s instances are published at: its own, or with relayed gossip
    /// the one it advertises (the agent takes the service ip from the advertised address).
    fn service_ip(&self, i: usize) -> String {
        match self.relays.get(i) {
            Some(relay) => relay.addr().ip().to_string(),
            None => self.net.nodes[i].ip.to_string(),
        }
    }

    /// With relayed gossip every node publishes the host's address for its instances, so
    /// the host relays each instance's backend port (unimpaired) to the node that runs it.
    /// The ranges of backend ports differ from agent to agent, so no two clash.
    fn relay_backends(&mut self) {
        let host = self.net.host_ip;
        let mut backends = Vec::new();
        for (i, agent) in self.agents.iter().enumerate().skip(1) {
            let agent = agent.as_ref().expect("agent running");
            let v = agent.json(&["service", "web", "-o", "json"]);
            for instance in v["instances"].as_array().into_iter().flatten() {
                let port = instance["ports"]["http"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .unwrap_or_else(|| panic!("no http port in {instance}"));
                let relay = Relay::start(
                    SocketAddr::new(host.into(), port),
                    SocketAddr::new(self.net.nodes[i].ip.into(), port),
                    ImpairConfig {
                        impaired: false,
                        ..Default::default()
                    },
                )
                .expect("backend relay");
                backends.push(relay);
            }
        }
        assert_eq!(backends.len(), (NODES - 1) * INSTANCES_PER_NODE);
        self.backends = backends;
    }

    /// The relays' counters added up.
    fn relay_totals(&self) -> RelayStats {
        self.relays
            .iter()
            .map(Relay::stats)
            .fold(RelayStats::default(), |a, s| RelayStats {
                forwarded: a.forwarded + s.forwarded,
                dropped: a.dropped + s.dropped,
                overflow: a.overflow + s.overflow,
                tcp_connections: a.tcp_connections + s.tcp_connections,
                tcp_bytes: a.tcp_bytes + s.tcp_bytes,
            })
    }

    fn live(&self) -> impl Iterator<Item = &AgentProcess> {
        self.agents.iter().flatten()
    }

    fn agent(&self, i: usize) -> &AgentProcess {
        self.agents[i].as_ref().expect("agent running")
    }

    /// The client's entry: agent 1's balancer, never faulted.
    fn frontend(&self) -> SocketAddr {
        SocketAddr::new(self.net.nodes[0].ip.into(), FRONTEND)
    }

    /// Every agent agrees on one cluster with the whole service: every member alive, one
    /// record per node, each instance once, at its node's address.
    fn converged(&self) -> Result<(), String> {
        let expected: Vec<(String, String, String)> = {
            let mut all = Vec::new();
            for i in 1..NODES {
                for index in 1..=INSTANCES_PER_NODE {
                    all.push((node_name(i), format!("web/{index}"), self.service_ip(i)));
                }
            }
            all.sort();
            all
        };
        for agent in self.live() {
            let s = statuses(agent);
            if s.len() != NODES || s.values().any(|st| st != "alive") {
                return Err(format!("members seen by {}: {s:?}", agent.grpc));
            }
            let found = catalog_instances(agent);
            if found.as_ref() != Some(&expected) {
                return Err(format!("catalog of {}: {found:?}", agent.grpc));
            }
            let endpoints = balancer_endpoints(agent);
            let want: BTreeSet<(String, String)> = expected
                .iter()
                .map(|(n, i, _)| (n.clone(), i.clone()))
                .collect();
            if endpoints.as_ref() != Some(&want) {
                return Err(format!("balancer of {}: {endpoints:?}", agent.grpc));
            }
        }
        Ok(())
    }

    fn wait_converged(&self, what: &str, timeout: Duration) -> Duration {
        let began = Instant::now();
        let mut last = Ok(());
        while began.elapsed() < timeout {
            last = self.converged();
            if last.is_ok() {
                return began.elapsed();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: not converged after {timeout:?}: {last:?}");
    }
}

/// All the network faults on one cluster, each asserted and reported on its own.
#[test]
fn network_faults_in_five_namespaces() {
    let _serial = serial();
    let Some(net) = test_net(NODES + 1) else {
        return;
    };
    let mut cluster = Cluster::start(net, false);
    let client = Client::start(cluster.frontend());
    wait_until("the client's first answer", Duration::from_secs(20), || {
        client
            .window(Instant::now() - Duration::from_secs(60), Instant::now())
            .0
            > 0
    });

    wrong_gossip_key(&cluster, &client);
    refused_clients(&cluster, &client);
    agent_kill_9(&mut cluster, &client);
    partition_and_heal(&cluster, &client);
    match cluster.net.netem_available() {
        Ok(()) => loss_and_delay(&cluster, &client, Impairment::Netem),
        Err(reason) => println!(
            "loss and delay: tc netem is not available here ({reason}); the fault runs \
             through userspace relays in loss_and_delay_through_relays"
        ),
    }
    let (sent, failed) = client.window(Instant::now() - Duration::from_secs(3600), Instant::now());
    println!("client total: {sent} requests, {failed} failed");
}

/// A node with the wrong gossip key is refused: nobody lists it, it lists nobody, and its
/// packets are dropped and counted.
fn wrong_gossip_key(cluster: &Cluster, client: &Client) {
    let began = Instant::now();
    let dropped = |a: &AgentProcess| {
        let v = a.json(&["members", "-o", "json"]);
        v["dropped_packets"].as_u64().unwrap_or(0)
    };
    let before = dropped(cluster.agent(0));
    let intruder = cluster.start_node(NODES, WRONG_KEY);
    let t0 = Instant::now();
    wait_until(
        "the intruder's packets are dropped",
        Duration::from_secs(20),
        || dropped(cluster.agent(0)) > before,
    );
    let detect = t0.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    for agent in cluster.live() {
        let s = statuses(agent);
        assert!(
            !s.contains_key(&node_name(NODES)),
            "{} admitted the intruder: {s:?}",
            agent.grpc
        );
    }
    assert_eq!(
        statuses(&intruder).len(),
        1,
        "the intruder sees nobody but itself"
    );
    let intruder_gossip = intruder.gossip.ip().to_string();
    wait_until(
        "the refused gossip is audited",
        Duration::from_secs(10),
        || {
            events(cluster.agent(0), "audit").iter().any(|e| {
                e["fields"]["what"] == "gossip"
                    && e["fields"]["from"]
                        .as_str()
                        .is_some_and(|f| f.starts_with(&intruder_gossip))
            })
        },
    );
    drop(intruder);
    cluster
        .converged()
        .unwrap_or_else(|e| panic!("after the intruder: {e}"));
    let (sent, failed) = client.window(began, Instant::now());
    report(
        "wrong gossip key refused",
        &format!("{} (drop)", secs(detect)),
        sent,
        failed,
        "none",
    );
}

/// A client with no token and a client whose token may only read, trying a restart: both
/// refused (exit 5) and both audited; the service is untouched.
fn refused_clients(cluster: &Cluster, client: &Client) {
    let began = Instant::now();
    let agent = cluster.agent(1);
    let pids_before = local_pids(agent);
    assert!(!pids_before.is_empty(), "web runs on {}", agent.grpc);
    let reader = agent_token(&agent.data_dir, &["create", "reader", "--role", "read"]);
    let admin = agent_token(&agent.data_dir, &["create", "auditor", "--role", "admin"]);

    let t0 = Instant::now();
    let anonymous = agent.strata(&["restart", "web"]);
    let weak = agent.strata(&["--token", &reader, "restart", "web"]);
    let detect = t0.elapsed();
    for (who, out, needle) in [
        ("no token", &anonymous, "requires credentials"),
        ("read token", &weak, "restart needs the operate role"),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{who}: {stderr}");
        assert!(stderr.contains(needle), "{who}: {stderr}");
    }
    let out = agent.strata(&[
        "--token", &admin, "events", "--kind", "audit", "--limit", "1000", "-o", "json",
    ]);
    let audit: Value = serde_json::from_slice(&out.stdout).expect("audit json");
    let records = audit["events"].as_array().cloned().unwrap_or_default();
    for who in ["anonymous", "reader"] {
        assert!(
            records.iter().any(|e| e["fields"]["who"] == who
                && e["fields"]["what"] == "restart"
                && e["fields"]["target"] == "service:web"
                && e["fields"]["result"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("denied"))),
            "{who}'s refused restart is audited: {records:#?}"
        );
    }
    agent_token(&agent.data_dir, &["revoke", "reader"]);
    agent_token(&agent.data_dir, &["revoke", "auditor"]);
    // An agent that has had tokens stays closed without them; the later phases call it
    // without one, so it is opened again as an operator would.
    agent_token(&agent.data_dir, &["reset"]);
    assert_eq!(
        local_pids(agent),
        pids_before,
        "the service was not restarted"
    );
    let (sent, failed) = client.window(began, Instant::now());
    report(
        "no token / read token restart refused",
        &format!("{} (refused)", secs(detect)),
        sent,
        failed,
        "none",
    );
}

/// `kill -9` of one agent: every other node sees it down within seconds, and its instances
/// stay in every balancer (services outlive their agent); restarted, it re-adopts its
/// services (same pids) and rejoins.
fn agent_kill_9(cluster: &mut Cluster, client: &Client) {
    let victim = NODES - 1;
    let name = node_name(victim);
    let pids_before = local_pids(cluster.agent(victim));
    assert_eq!(pids_before.len(), INSTANCES_PER_NODE, "{pids_before:?}");
    let starts: Vec<Option<u64>> = pids_before
        .iter()
        .map(|(_, pid)| process_start_ticks(*pid as i32))
        .collect();
    let agent = cluster.agents[victim].take().expect("victim");
    let t0 = Instant::now();
    agent.crash().expect("kill -9");
    wait_until(
        "every other node sees the victim down",
        Duration::from_secs(30),
        || {
            cluster
                .live()
                .all(|a| statuses(a).get(&name).map(String::as_str) == Some("down"))
        },
    );
    let detect = t0.elapsed();
    assert!(
        detect < Duration::from_secs(10),
        "took {detect:?} to see it down"
    );
    for a in cluster.live() {
        assert_eq!(
            listed_on(a, &name),
            INSTANCES_PER_NODE,
            "{}: a down agent's instances stay in the balancer",
            a.grpc
        );
    }
    let back = cluster.start_node(victim, KEY);
    cluster.agents[victim] = Some(back);
    let rejoin = cluster.wait_converged("rejoin after kill -9", Duration::from_secs(60));
    let pids_after = local_pids(cluster.agent(victim));
    assert_eq!(pids_after, pids_before, "services were restarted");
    let starts_after: Vec<Option<u64>> = pids_after
        .iter()
        .map(|(_, pid)| process_start_ticks(*pid as i32))
        .collect();
    assert_eq!(starts_after, starts, "same processes, not reused pids");
    let (sent, failed) = client.window(t0, Instant::now());
    report(
        "agent kill -9 (then restart)",
        &format!("{} (rejoin {})", secs(detect), secs(rejoin)),
        sent,
        failed,
        "none (same pids)",
    );
}

/// A partition of one namespace: the others mark it down and keep its instances in their
/// tables (passive health ejects them while unreachable); healed, everything converges to
/// one cluster with no duplicate or ghost instances.
fn partition_and_heal(cluster: &Cluster, client: &Client) {
    let cut = NODES - 2;
    let name = node_name(cut);
    let t0 = Instant::now();
    cluster.net.set_link(cut, false).expect("link down");
    let others: Vec<&AgentProcess> = cluster
        .agents
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != cut)
        .filter_map(|(_, a)| a.as_ref())
        .collect();
    wait_until("the others mark it down", Duration::from_secs(30), || {
        others
            .iter()
            .all(|a| statuses(a).get(&name).map(String::as_str) == Some("down"))
    });
    let detect = t0.elapsed();
    for a in &others {
        assert_eq!(
            listed_on(a, &name),
            INSTANCES_PER_NODE,
            "{}: a down node's instances stay in the table",
            a.grpc
        );
    }
    std::thread::sleep(Duration::from_secs(5));
    cluster.net.set_link(cut, true).expect("link up");
    let heal = cluster.wait_converged("heal after partition", Duration::from_secs(90));
    let (sent, failed) = client.window(t0, Instant::now());
    report(
        "partition of one namespace, then heal",
        &format!("{} (heal {})", secs(detect), secs(heal)),
        sent,
        failed,
        "none (no ghost/duplicate)",
    );
}

/// How the loss and delay are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impairment {
    /// `tc netem` on every node's link: every packet towards a node, gossip or not.
    Netem,
    /// The cluster's gossip relays: every gossip packet (UDP and TCP) towards a node.
    Relays,
}

const LOSS_PERCENT: u32 = 20;
const DELAY_MS: u32 = 100;
const IMPAIRED_FOR: Duration = Duration::from_secs(120);

/// 20% loss and 100 ms delay towards every node for two minutes: no healthy node declared
/// down (no `member.down` event anywhere, never `down` or `left` in any member list), and
/// afterwards everything converges.
fn loss_and_delay(cluster: &Cluster, client: &Client, how: Impairment) {
    let t0 = Instant::now();
    let t0_unix_ms = unix_ms();
    let before = cluster.relay_totals();
    match how {
        Impairment::Netem => cluster.net.impair(LOSS_PERCENT, DELAY_MS).expect("netem"),
        Impairment::Relays => cluster.relays.iter().for_each(|r| r.set_impaired(true)),
    }
    let mut downs = Vec::new();
    let mut suspects = BTreeSet::new();
    while t0.elapsed() < IMPAIRED_FOR {
        for agent in cluster.live() {
            for (member, status) in statuses(agent) {
                if status == "down" || status == "left" {
                    downs.push(format!("{} saw {member} {status}", agent.grpc));
                } else if status == "suspect" {
                    suspects.insert(format!("{} saw {member} suspect", agent.grpc));
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    match how {
        Impairment::Netem => cluster.net.repair().expect("netem removed"),
        Impairment::Relays => cluster.relays.iter().for_each(|r| r.set_impaired(false)),
    }
    let (sent, failed) = client.window(t0, Instant::now());
    let after = cluster.relay_totals();
    let settle = cluster.wait_converged("after loss and delay", Duration::from_secs(60));
    let mut suspect_events = 0;
    for agent in cluster.live() {
        let events = agent.json(&["events", "--kind", "member", "-o", "json"]);
        for e in events["events"].as_array().into_iter().flatten() {
            if e["time_unix_ms"].as_i64().unwrap_or(0) < t0_unix_ms {
                continue;
            }
            if e["kind"] == "member.down" {
                downs.push(format!("{}: {}", agent.grpc, e["message"]));
            } else if e["kind"] == "member.suspect" {
                suspect_events += 1;
            }
        }
    }
    let fault = match how {
        Impairment::Netem => "20% loss + 100 ms delay, 2 min (netem)",
        Impairment::Relays => "20% loss + 100 ms delay, 2 min (relays)",
    };
    report(
        fault,
        &format!("n/a (settle {})", secs(settle)),
        sent,
        failed,
        "none",
    );
    if how == Impairment::Relays {
        let forwarded = after.forwarded - before.forwarded;
        let dropped = after.dropped - before.dropped;
        println!(
            "FAULT |   relays while impaired: {forwarded} datagrams forwarded, {dropped} dropped \
             ({:.1}%), {} dropped on a full queue; {} TCP connections, {} TCP bytes",
            100.0 * dropped as f64 / (forwarded + dropped).max(1) as f64,
            after.overflow - before.overflow,
            after.tcp_connections - before.tcp_connections,
            after.tcp_bytes - before.tcp_bytes,
        );
    }
    println!(
        "FAULT |   members: {} down/left seen, {} suspect sightings, {suspect_events} \
         member.suspect events",
        downs.len(),
        suspects.len()
    );
    for s in &suspects {
        println!("  {s}");
    }
    assert!(downs.is_empty(), "healthy nodes declared down: {downs:?}");
}

/// Loss and delay where the kernel has no netem: a cluster of its own whose gossip passes
/// userspace relays, one per node. It converges with the relays passing through, then they
/// drop 20% of the datagrams and delay every datagram and TCP chunk by 100 ms for two
/// minutes while the client keeps sending requests through a balancer. Where netem works,
/// `network_faults_in_five_namespaces` runs the fault with netem instead.
#[test]
fn loss_and_delay_through_relays() {
    let _serial = serial();
    let Some(net) = test_net(NODES) else {
        return;
    };
    if net.netem_available().is_ok() {
        println!("tc netem works here: loss and delay ran with netem in the other test");
        return;
    }
    let cluster = Cluster::start(net, true);
    cluster.wait_converged("relayed cluster", Duration::from_secs(60));

    // The gossip really goes through the relays: every node's relay forwards datagrams,
    // and anti-entropy (every 5 s) opens TCP connections through them.
    let before: Vec<RelayStats> = cluster.relays.iter().map(Relay::stats).collect();
    let tcp_before = cluster.relay_totals().tcp_connections;
    wait_until(
        "gossip over every relay, UDP and TCP",
        Duration::from_secs(20),
        || {
            let udp = cluster
                .relays
                .iter()
                .zip(&before)
                .all(|(r, b)| r.stats().forwarded > b.forwarded + 5);
            udp && cluster.relay_totals().tcp_connections > tcp_before
        },
    );
    for (i, relay) in cluster.relays.iter().enumerate() {
        println!(
            "relay of {} at {} -> {}: {:?}",
            node_name(i),
            relay.addr(),
            relay.target(),
            relay.stats()
        );
    }
    let advertised: Vec<String> = cluster.agent(1).json(&["members", "-o", "json"])["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{} at {}", m["name"], m["gossip_addr"]))
        .collect();
    println!("members seen by {}: {advertised:?}", node_name(1));

    let client = Client::start(cluster.frontend());
    wait_until("the client's first answer", Duration::from_secs(20), || {
        client
            .window(Instant::now() - Duration::from_secs(60), Instant::now())
            .0
            > 0
    });
    loss_and_delay(&cluster, &client, Impairment::Relays);
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Faults of one agent, on loopback.

fn loopback_agent(data: &Path, name: &str) -> AgentProcess {
    AgentProcess::start(
        data,
        &AgentOptions {
            node_name: Some(name.into()),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("agent {name} starts: {e:#}"))
}

/// The events of `kind` (a prefix) the agent recorded.
fn events(agent: &AgentProcess, kind: &str) -> Vec<Value> {
    let out = agent.strata(&["events", "--kind", kind, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["events"].as_array().cloned().unwrap_or_default()
}

/// The first event of exactly `kind`, once there is one.
fn wait_event(agent: &AgentProcess, kind: &str, timeout: Duration) -> (Duration, Value) {
    let began = Instant::now();
    loop {
        if let Some(e) = events(agent, kind).into_iter().find(|e| e["kind"] == kind) {
            return (began.elapsed(), e);
        }
        assert!(
            began.elapsed() < timeout,
            "no {kind} event within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The log directory fills up: the agent and the service keep running, an event says log
/// lines are being dropped, and logging resumes when space returns.
#[test]
fn a_full_log_directory() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let Some(_tmpfs) = strata_tests::Tmpfs::mount(&data.join("logs"), "256k") else {
        return;
    };
    let filler = data.join("logs").join("filler");
    std::fs::write(&filler, vec![b'x'; 200 * 1024]).expect("filler");
    let agent = loopback_agent(&data, "logfull");
    let agent_pid = agent.pid() as i32;
    let spec = dir.path().join("chatty.toml");
    std::fs::write(
        &spec,
        r#"name = "chatty"
command = ["/bin/sh", "-c", "i=0; while true; do echo \"line $i ........................................................\"; i=$((i+1)); echo $i > progress; sleep 0.005; done"]
[logs]
max_bytes = "10MiB"
keep = 1
"#,
    )
    .expect("spec");
    let t0 = Instant::now();
    let out = agent.strata(&["apply", spec.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, dropped) = wait_event(&agent, "service.log_dropped", Duration::from_secs(60));
    let detect = t0.elapsed();
    assert_eq!(dropped["severity"], "warning", "{dropped:#}");
    let count: u64 = dropped["fields"]["dropped"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(count > 0, "{dropped:#}");

    // Both keep running, and the service is not blocked on its output. The shell empties
    // the progress file before it writes the next number: read until there is one.
    let progress = || -> u64 {
        let mut value = None;
        wait_until(
            "a number in the progress file",
            Duration::from_secs(5),
            || {
                value = std::fs::read_to_string(data.join("services/chatty/instances/1/progress"))
                    .ok()
                    .and_then(|t| t.trim().parse().ok());
                value.is_some()
            },
        );
        value.unwrap_or(0)
    };
    let pid = local_pid(&agent, "chatty");
    let before = progress();
    std::thread::sleep(Duration::from_secs(1));
    assert!(progress() > before + 20, "the service is blocked");
    assert!(strata_tests::alive(agent_pid), "the agent died");
    assert_eq!(
        local_pid(&agent, "chatty"),
        pid,
        "the service was restarted"
    );

    let t1 = Instant::now();
    std::fs::remove_file(&filler).expect("space returns");
    let (_, resumed) = wait_event(&agent, "service.log_resumed", Duration::from_secs(30));
    let resume = t1.elapsed();
    let lost: u64 = resumed["fields"]["dropped"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(lost >= count, "{resumed:#}");
    wait_until("fresh lines in the log", Duration::from_secs(10), || {
        let out = agent.strata(&["logs", "chatty", "--lines", "400", "-o", "json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.contains("log lines dropped: No space left on device")
            && text.lines().last().is_some_and(|l| l.contains("line "))
    });
    assert_eq!(
        local_pid(&agent, "chatty"),
        pid,
        "the service was restarted"
    );
    report(
        "log directory full (tmpfs), then space back",
        &format!("{} (resume {})", secs(detect), secs(resume)),
        0,
        0,
        &format!("none; {lost} log lines dropped, counted"),
    );
}

/// The pid of instance 1 of `service` on `agent`, once it runs.
fn local_pid(agent: &AgentProcess, service: &str) -> i64 {
    let mut pid = 0;
    wait_until("the instance runs", Duration::from_secs(20), || {
        let out = agent.strata(&["service", service, "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        pid = v["instances"][0]["pid"].as_i64().unwrap_or(0);
        v["instances"][0]["state"] == "running" && pid > 0
    });
    pid
}

/// A small xorshift generator: random moments without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Shims of `data_dir`'s instances that are alive: more than one per instance would be
/// an orphan left by a kill.
fn live_shims(data_dir: &Path) -> Vec<i32> {
    let needle = data_dir.join("services").display().to_string();
    strata_tests::all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first().is_some_and(|a| a.ends_with("/strata-shim"))
                && args.get(1).is_some_and(|a| a.starts_with(&needle))
                && strata_tests::alive(*pid)
        })
        .collect()
}

/// `kill -9` of the agent at random moments during `strata apply`, 100 times: the stored
/// spec is always whole, the old one or the new one, and the new one whenever apply said
/// it succeeded; the restarted agent runs what is stored, and no process is orphaned.
#[test]
fn kill_9_during_apply_100_times() {
    let _serial = serial();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let spec_text = |v: u32| {
        format!(
            "name = \"flip\"\nversion = \"{v}\"\ncommand = [\"/bin/sleep\", \"100000\"]\n\
             env = {{ FLIP = \"{}\" }}\n",
            "v".repeat(v as usize * 50)
        )
    };
    let texts = [spec_text(1), spec_text(2)];
    let spec_file = dir.path().join("flip.toml");
    std::fs::write(&spec_file, &texts[0]).expect("spec");
    let mut agent = loopback_agent(&data, "applykill");
    let out = agent.strata(&["apply", spec_file.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored_path = data.join("services/flip/spec.toml");
    let mut rng = Rng::seeded();
    let (mut applied, mut interrupted, mut restart_total) = (0, 0, Duration::ZERO);
    let mut problems = Vec::new();
    let began = Instant::now();
    for round in 0..100 {
        let new = (round + 1) % 2;
        std::fs::write(&spec_file, &texts[new]).expect("spec");
        let mut cli = std::process::Command::new(binary("strata"))
            .args(["--agent", &agent.grpc.to_string(), "apply"])
            .arg(&spec_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("strata apply");
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        agent.crash().expect("kill -9");
        let ok = cli.wait().expect("cli").success();
        let stored = std::fs::read_to_string(&stored_path).unwrap_or_default();
        // The stored spec is the applied text under its checksum line.
        let which = texts.iter().position(|t| stored.ends_with(t.as_str()));
        match which {
            None => problems.push(format!("round {round}: stored spec is neither: {stored:?}")),
            Some(w) if ok && w != new => problems.push(format!(
                "round {round}: apply succeeded but the old spec is stored"
            )),
            Some(_) => {}
        }
        if ok {
            applied += 1;
        } else {
            interrupted += 1;
        }
        let desired = std::fs::read(data.join("services/flip/desired.json")).unwrap_or_default();
        if serde_json::from_slice::<Value>(&desired).is_err() {
            problems.push(format!("round {round}: desired.json is corrupt"));
        }
        let t = Instant::now();
        agent = loopback_agent(&data, "applykill");
        restart_total += t.elapsed();
        let running = agent.json(&["service", "flip", "-o", "json"]);
        let want = format!("{}", which.unwrap_or(0) + 1);
        if running["version"] != want.as_str() {
            problems.push(format!(
                "round {round}: the agent runs version {} but {want} is stored",
                running["version"]
            ));
        }
    }
    local_pid(&agent, "flip");
    std::thread::sleep(Duration::from_secs(1));
    let shims = live_shims(&data);
    if shims.len() != 1 {
        problems.push(format!(
            "{} live shims for one instance: {shims:?}",
            shims.len()
        ));
    }
    let strays = events(&agent, "service.stray_stopped").len();
    report(
        "kill -9 during strata apply, 100 times",
        &format!("restart avg {}", secs(restart_total / 100)),
        applied + interrupted,
        interrupted,
        &format!("{} problems", problems.len()),
    );
    println!(
        "apply: {applied} completed before the kill, {interrupted} interrupted, \
         {strays} unrecorded shims stopped, in {:?}",
        began.elapsed()
    );
    assert!(problems.is_empty(), "{problems:#?}");
}
