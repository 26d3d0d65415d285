//! Routine operations never drop traffic: a client loop through one agent's frontend keeps
//! every request answered while the agent that runs the service is stopped, killed, paused
//! and restarted, and while the service is restarted, upgraded, scaled and drained.
//!
//! One cluster of three agents on loopback: `t1` is where the clients come in (its
//! balancer), `t2` runs the service `web` (2 instances), `t3` takes a copy of it while `t2`
//! is drained. Every phase runs the loop from before the operation until after it settled
//! and records the failures; the test asserts at the end, so one run names every phase that
//! failed.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strata_tests::load::{Load, LoadReport};
use strata_tests::{AgentProcess, closed_port, start_named_agent, wait_until, web_spec};

/// How long one phase's client loop may run at most.
const PHASE_LIMIT: Duration = Duration::from_secs(180);
/// How long the agent of `t2` stays paused (SIGSTOP), longer than gossip takes to call it down.
const PAUSE: Duration = Duration::from_secs(30);
/// How long an operation may take to settle.
const SETTLE: Duration = Duration::from_secs(120);

/// The spec of `name` at `version` with `instances` instances behind `frontend`.
fn spec(name: &str, version: &str, instances: u32, frontend: u16) -> String {
    web_spec(
        name,
        frontend,
        &format!("version = \"{version}\"\ninstances = {instances}\n"),
    )
}

/// Runs `strata ARGS` against `agent` and panics with its stderr when it fails.
fn run(agent: &AgentProcess, args: &[&str]) {
    let out = agent.strata(args);
    assert!(
        out.status.success(),
        "strata {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn apply(agent: &AgentProcess, file: &Path, text: &str) {
    std::fs::write(file, text).expect("write spec");
    run(
        agent,
        &[
            "apply",
            file.to_str().expect("path"),
            "--wait",
            "--timeout",
            "120s",
        ],
    );
}

/// The instances of `service` on `agent`, as `strata service NAME -o json` lists them.
fn instances(agent: &AgentProcess, service: &str) -> Vec<Value> {
    let out = agent.strata(&["service", service, "-o", "json"]);
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|s| s["instances"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether `service` on `agent` has exactly `count` instances, all running and passing.
fn settled(agent: &AgentProcess, service: &str, count: usize) -> bool {
    let list = instances(agent, service);
    list.len() == count
        && list
            .iter()
            .all(|i| i["state"] == "running" && i["health"] == "passing")
}

/// The `(node, instance)` pairs `agent`'s balancer routes `service` to.
fn routed(agent: &AgentProcess, service: &str) -> Vec<(String, String)> {
    let out = agent.strata(&["balancer", "-o", "json"]);
    let stats: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    stats["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["draining"] != true)
        .map(|e| {
            (
                e["node"].as_str().unwrap_or_default().to_string(),
                e["instance"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The three agents and what the phases change.
struct Cluster {
    t1: AgentProcess,
    t2: Option<AgentProcess>,
    t3: AgentProcess,
    /// The spec file of `web` on `t2`.
    web_spec: PathBuf,
    frontend: u16,
    /// Last, so it is removed after the agents have stopped their services (fields drop in
    /// order, and an agent finds its services through the records in its data dir).
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let t1 = start_named_agent(dir.path(), "t1", None);
        let t2 = start_named_agent(dir.path(), "t2", Some(&t1));
        let t3 = start_named_agent(dir.path(), "t3", Some(&t1));
        let frontend = closed_port();
        let web_spec = dir.path().join("web.toml");
        apply(&t2, &web_spec, &spec("web", "1", 2, frontend));
        let cluster = Cluster {
            t1,
            t2: Some(t2),
            t3,
            web_spec,
            frontend,
            dir,
        };
        wait_until("t1 routes web to both instances on t2", SETTLE, || {
            routed(&cluster.t1, "web").len() == 2
        });
        cluster
    }

    fn t2(&self) -> &AgentProcess {
        self.t2.as_ref().expect("t2 runs")
    }

    /// Starts `t2` again on its data dir; it re-adopts its instances.
    fn restart_t2(&mut self) {
        let agent = start_named_agent(self.dir.path(), "t2", Some(&self.t1));
        self.t2 = Some(agent);
        self.wait_web(2);
    }

    /// Waits until `web` on `t2` has `count` passing instances and `t1` routes to them.
    fn wait_web(&self, count: usize) {
        wait_until("web settles on t2", SETTLE, || {
            settled(self.t2(), "web", count)
        });
        wait_until("t1 routes web to t2's instances", SETTLE, || {
            routed(&self.t1, "web")
                .iter()
                .filter(|(node, _)| node == "t2")
                .count()
                == count
        });
    }

    fn front(&self) -> SocketAddr {
        SocketAddr::new(self.t1.balancer, self.frontend)
    }

    /// Runs `operation` with the client loop going through `t1`'s frontend before, during
    /// and for a moment after it, and returns what the loop saw.
    fn under_load(&mut self, operation: impl FnOnce(&mut Cluster)) -> LoadReport {
        let load = Load::start(self.front(), 2, Duration::from_millis(2), PHASE_LIMIT);
        let warmup = Instant::now();
        while load.ok() < 20 && warmup.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        operation(self);
        std::thread::sleep(Duration::from_secs(1));
        load.stop()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The agents stop their services when dropped; a paused one is woken first.
        if let Some(t2) = &self.t2 {
            let _ = t2.signal(rustix::process::Signal::CONT);
        }
    }
}

#[test]
fn routine_operations_drop_no_request() {
    let mut cluster = Cluster::start();
    let mut results: Vec<(&str, LoadReport)> = Vec::new();

    results.push((
        "SIGTERM and restart of the agent running the instances",
        cluster.under_load(|c| {
            let t2 = c.t2.take().expect("t2");
            t2.terminate_keeping_services(Duration::from_secs(30))
                .expect("t2 stops on SIGTERM");
            std::thread::sleep(Duration::from_secs(2));
            c.restart_t2();
        }),
    ));

    results.push((
        "kill -9 and restart of the agent running the instances",
        cluster.under_load(|c| {
            let t2 = c.t2.take().expect("t2");
            t2.crash().expect("kill -9 of t2");
            std::thread::sleep(Duration::from_secs(2));
            c.restart_t2();
        }),
    ));

    results.push((
        "SIGSTOP of the agent running the instances for 30 s, then SIGCONT",
        cluster.under_load(|c| {
            c.t2()
                .signal(rustix::process::Signal::STOP)
                .expect("SIGSTOP t2");
            std::thread::sleep(PAUSE);
            c.t2()
                .signal(rustix::process::Signal::CONT)
                .expect("SIGCONT t2");
            c.wait_web(2);
        }),
    ));

    results.push((
        "strata restart of the service",
        cluster.under_load(|c| {
            run(c.t2(), &["restart", "web", "--wait", "--timeout", "120s"]);
            c.wait_web(2);
        }),
    ));

    results.push((
        "strata apply of a new version",
        cluster.under_load(|c| {
            apply(c.t2(), &c.web_spec, &spec("web", "2", 2, c.frontend));
            c.wait_web(2);
        }),
    ));

    results.push((
        "a new version that also scales 2 -> 1",
        cluster.under_load(|c| {
            apply(c.t2(), &c.web_spec, &spec("web", "3", 1, c.frontend));
            c.wait_web(1);
        }),
    ));

    results.push((
        "scale 1 -> 2 -> 6 -> 2",
        cluster.under_load(|c| {
            for count in [2, 6, 2] {
                run(
                    c.t2(),
                    &[
                        "scale",
                        "web",
                        &count.to_string(),
                        "--wait",
                        "--timeout",
                        "120s",
                    ],
                );
                c.wait_web(count);
            }
        }),
    ));

    results.push((
        "drain and undrain of the node (a copy of the service runs on t3)",
        cluster.under_load(|c| {
            let copy = c.dir.path().join("web-t3.toml");
            apply(&c.t3, &copy, &spec("web", "3", 1, c.frontend));
            wait_until("t1 routes web to t3 too", SETTLE, || {
                routed(&c.t1, "web").iter().any(|(node, _)| node == "t3")
            });
            run(&c.t1, &["drain", "t2"]);
            wait_until("t1 routes web only to t3", SETTLE, || {
                let routes = routed(&c.t1, "web");
                !routes.is_empty() && routes.iter().all(|(node, _)| node == "t3")
            });
            run(&c.t1, &["undrain", "t2"]);
            c.wait_web(2);
            run(&c.t3, &["remove", "web"]);
            wait_until("t1 routes web only to t2", SETTLE, || {
                let routes = routed(&c.t1, "web");
                routes.len() == 2 && routes.iter().all(|(node, _)| node == "t2")
            });
        }),
    ));

    let solo_front = closed_port();
    let solo_spec = cluster.dir.path().join("solo.toml");
    apply(cluster.t2(), &solo_spec, &spec("solo", "1", 1, solo_front));
    wait_until("t1 routes solo", SETTLE, || {
        routed(&cluster.t1, "solo").len() == 1
    });
    let solo_addr = SocketAddr::new(cluster.t1.balancer, solo_front);
    for (what, version) in [
        ("strata restart of a single-instance service", None),
        ("a new version of a single-instance service", Some("2")),
    ] {
        let load = Load::start(solo_addr, 2, Duration::from_millis(2), PHASE_LIMIT);
        std::thread::sleep(Duration::from_millis(500));
        match version {
            None => run(
                cluster.t2(),
                &["restart", "solo", "--wait", "--timeout", "120s"],
            ),
            Some(version) => apply(
                cluster.t2(),
                &solo_spec,
                &spec("solo", version, 1, solo_front),
            ),
        }
        wait_until("solo settles", SETTLE, || {
            settled(cluster.t2(), "solo", 1) && routed(&cluster.t1, "solo").len() == 1
        });
        std::thread::sleep(Duration::from_secs(1));
        results.push((what, load.stop()));
    }

    let failed: Vec<String> = results
        .iter()
        .filter(|(_, report)| report.failed > 0 || report.ok == 0)
        .map(|(what, report)| {
            format!(
                "{what}: {} failed of {} ({:?})",
                report.failed,
                report.failed + report.ok,
                report.first_failures
            )
        })
        .collect();
    for (what, report) in &results {
        eprintln!("{what}: {} ok, {} failed", report.ok, report.failed);
    }
    assert!(failed.is_empty(), "requests failed:\n{}", failed.join("\n"));
}
