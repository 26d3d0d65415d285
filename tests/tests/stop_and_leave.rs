//! End to end: an agent that stops, is paused or restarts never withdraws its node's instances
//! from the other nodes' balancers and DNS (services outlive their agent); an explicit leave
//! (`strata-agent leave` on the host, `strata leave NODE` through the API) does.

use hickory_proto::op::ResponseCode;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_tests::{
    AgentProcess, agent_leave, closed_port, dns_a, http_get, start_named_agent, stop_services_of,
    wait_until, web_spec,
};

/// How long the test watches a stopped or paused agent's node after others see it down.
const WATCH_DOWN: Duration = Duration::from_secs(3);

/// Stops the services an agent of `data_dir` left running, once the test is done with them
/// (or failed): services outlive their agent, so the agent's own stop leaves them.
struct ServicesOf(PathBuf);

impl Drop for ServicesOf {
    fn drop(&mut self) {
        stop_services_of(&self.0);
    }
}

/// `node`'s status in `agent`'s member list ("" when it is not listed).
fn status_of(agent: &AgentProcess, node: &str) -> String {
    let v = agent.json(&["members", "-o", "json"]);
    v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == node)
        .and_then(|m| m["status"].as_str())
        .unwrap_or("")
        .to_string()
}

/// The instances of `web` on `node` in `agent`'s balancer that get new connections.
fn routed(agent: &AgentProcess, node: &str) -> Vec<String> {
    let out = agent.strata(&["balancer", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == "web")
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["node"] == node && e["draining"] != true)
        .filter_map(|e| e["instance"].as_str().map(str::to_string))
        .collect()
}

/// What `observer` offers a client of `web`: the instances its balancer routes to on `node`,
/// its DNS answer, and the status of a request through its frontend.
#[derive(Debug, PartialEq)]
struct Offer {
    routed: Vec<String>,
    dns: (ResponseCode, Vec<IpAddr>),
    frontend: Option<u16>,
}

fn offer(observer: &AgentProcess, node: &str, frontend: u16) -> Offer {
    Offer {
        routed: routed(observer, node),
        dns: dns_a(observer.dns, "web.service.strata.").expect("dns answer"),
        frontend: http_get(SocketAddr::new(observer.balancer, frontend), "/")
            .ok()
            .map(|(code, _)| code),
    }
}

fn serving() -> Offer {
    Offer {
        routed: vec!["web/1".to_string()],
        dns: (ResponseCode::NoError, vec![IpAddr::from([127, 0, 0, 1])]),
        frontend: Some(200),
    }
}

/// Checks `observer`'s offer of `node`'s instance until `node` is seen `down` and for
/// [`WATCH_DOWN`] after: it must never change. Returns how long detection took.
fn stays_served_until_down_and_after(
    observer: &AgentProcess,
    node: &str,
    frontend: u16,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let mut down_at = None;
    loop {
        let seen = offer(observer, node, frontend);
        assert_eq!(seen, serving(), "{what}: after {:?}", started.elapsed());
        if down_at.is_none() && status_of(observer, node) == "down" {
            down_at = Some(started.elapsed());
        }
        match down_at {
            Some(at) if started.elapsed() > at + WATCH_DOWN => return at,
            None if started.elapsed() > Duration::from_secs(30) => {
                panic!("{what}: {node} never seen down")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn write_spec(dir: &Path, frontend: u16) -> PathBuf {
    let spec = dir.join("web.toml");
    std::fs::write(&spec, web_spec("web", frontend, "")).expect("spec");
    spec
}

#[test]
fn stop_pause_and_restart_keep_instances_routable_and_leave_withdraws_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let observer = start_named_agent(dir.path(), "s1", None);
    // Declared before the agent: dropped after it, once no agent holds the data dir.
    let owner_dir = dir.path().join("s2");
    let _services = ServicesOf(owner_dir.clone());
    let owner = start_named_agent(dir.path(), "s2", Some(&observer));
    let frontend = closed_port();
    let spec = write_spec(dir.path(), frontend);
    let applied = owner.strata(&["apply", spec.to_str().expect("path")]);
    assert!(applied.status.success(), "{applied:?}");
    wait_until(
        "s1 routes web to s2 and answers for it in DNS",
        Duration::from_secs(30),
        || offer(&observer, "s2", frontend) == serving(),
    );

    // A hung agent: paused past the down timeout, its instance stays routed.
    owner
        .signal(rustix::process::Signal::STOP)
        .expect("SIGSTOP");
    let detect = stays_served_until_down_and_after(&observer, "s2", frontend, "paused agent");
    let catalog = observer.strata(&["catalog"]);
    let text = String::from_utf8_lossy(&catalog.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("web/1") && l.contains("node down: last published, still routed")),
        "the CLI says the node is down, not plainly healthy:\n{text}"
    );
    owner
        .signal(rustix::process::Signal::CONT)
        .expect("SIGCONT");
    wait_until("s2 alive again", Duration::from_secs(30), || {
        status_of(&observer, "s2") == "alive"
    });
    println!("paused agent seen down after {detect:?}; its instance stayed routed throughout");

    // A stopped agent (SIGTERM, as systemctl stop): it does not leave.
    let status = owner
        .terminate_keeping_services(Duration::from_secs(15))
        .expect("stops");
    assert!(status.success(), "{status:?}");
    assert_ne!(status_of(&observer, "s2"), "left", "a stop is not a leave");
    let detect = stays_served_until_down_and_after(&observer, "s2", frontend, "stopped agent");
    println!("stopped agent seen down after {detect:?}; its instance stayed routed throughout");

    // Restarted on its data dir, it re-adopts the instance; then `strata-agent leave`.
    let owner = start_named_agent(dir.path(), "s2", Some(&observer));
    wait_until("s2 rejoined and serving", Duration::from_secs(30), || {
        status_of(&observer, "s2") == "alive" && offer(&observer, "s2", frontend) == serving()
    });
    let started = Instant::now();
    let left = agent_leave(&owner_dir, &["--timeout", "30s"]);
    assert!(
        left.status.success(),
        "strata-agent leave: {}",
        String::from_utf8_lossy(&left.stderr)
    );
    let status = owner
        .wait_keeping_services(Duration::from_secs(5))
        .expect("the agent stopped after leaving");
    assert!(status.success(), "{status:?}");
    println!("strata-agent leave took {:?}", started.elapsed());
    assert_eq!(status_of(&observer, "s2"), "left");
    let gone = offer(&observer, "s2", frontend);
    assert!(gone.routed.is_empty(), "{gone:?}");
    assert_eq!(gone.dns.0, ResponseCode::NXDomain, "{gone:?}");
    assert_ne!(gone.frontend, Some(200), "{gone:?}");
    let events = observer.json(&["events", "--kind", "member", "-o", "json"]);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"member.left"), "{kinds:?}");

    // Nothing left to ask: exit 3.
    let again = agent_leave(&owner_dir, &[]);
    assert_eq!(again.status.code(), Some(3), "{again:?}");
}

#[test]
fn strata_leave_withdraws_a_node_through_the_api() {
    let dir = tempfile::tempdir().expect("temp dir");
    let observer = start_named_agent(dir.path(), "l1", None);
    let _services = ServicesOf(dir.path().join("l2"));
    let leaver = start_named_agent(dir.path(), "l2", Some(&observer));
    let frontend = closed_port();
    let spec = write_spec(dir.path(), frontend);
    let applied = leaver.strata(&["apply", spec.to_str().expect("path")]);
    assert!(applied.status.success(), "{applied:?}");
    wait_until("l1 routes web to l2", Duration::from_secs(30), || {
        offer(&observer, "l2", frontend) == serving()
    });

    let out = observer.strata(&["leave", "l2", "-o", "json"]);
    assert!(
        out.status.success(),
        "strata leave: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: Value = serde_json::from_slice(&out.stdout).expect("json reply");
    assert_eq!(reply["node"], "l2", "{reply}");
    let status = leaver
        .wait_keeping_services(Duration::from_secs(15))
        .expect("the agent stopped after leaving");
    assert!(status.success(), "{status:?}");
    wait_until("l1 sees l2 left", Duration::from_secs(5), || {
        status_of(&observer, "l2") == "left"
    });
    let gone = offer(&observer, "l2", frontend);
    assert!(gone.routed.is_empty(), "{gone:?}");
    assert_eq!(gone.dns.0, ResponseCode::NXDomain, "{gone:?}");
    let log = std::fs::read_to_string(dir.path().join("l2/agent.stderr.log")).unwrap_or_default();
    assert!(
        log.contains("leave asked by") && log.contains("left the cluster"),
        "the agent says who asked and that it left:\n{log}"
    );
}
