//! End to end: `strata demo --headless` starts three joined agents with the demo services;
//! the real CLI sees the cluster and the catalog, `flaky` restarts, `web` answers through a
//! balancer and reaches `api`; after SIGINT nothing the demo started is left running.

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use strata_tests::{
    alive, all_pids, binary, http_get, process_start_ticks, stop_services_of, strata, wait_until,
};

/// How long the demo may take to start its agents and apply its services.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// How long the demo may take to stop everything after SIGINT.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One agent line of the banner.
#[derive(Debug)]
struct Node {
    name: String,
    pid: i32,
    grpc: String,
    balancer: IpAddr,
}

/// The running demo; dropped (on a failed assertion), it is interrupted, then killed, and
/// what it started is stopped by pid.
struct Demo {
    child: Child,
    dir: PathBuf,
    nodes: Vec<Node>,
    stderr: PathBuf,
    /// Processes the demo started, (pid, start ticks), once the test collected them.
    started: BTreeSet<(i32, u64)>,
}

impl Demo {
    fn start(log_dir: &Path) -> Demo {
        let stderr = log_dir.join("demo.stderr.log");
        let mut child = Command::new(binary("strata"))
            .args(["demo", "--headless", "--flaky-every", "2s"])
            .env_remove("STRATA_AGENT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("strata demo starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut demo = Demo {
            child,
            dir: PathBuf::new(),
            nodes: Vec::new(),
            stderr,
            started: BTreeSet::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no complete banner within {START_TIMEOUT:?}; stderr:\n{}",
                    demo.stderr_text()
                )
            });
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_string)
            };
            if let Some(dir) = field("dir") {
                demo.dir = PathBuf::from(dir);
            } else if let Some(name) = field("node") {
                demo.nodes.push(Node {
                    name,
                    pid: field("pid").and_then(|p| p.parse().ok()).expect("pid"),
                    grpc: field("grpc").expect("grpc"),
                    balancer: field("balancer").and_then(|b| b.parse().ok()).expect("ip"),
                });
            } else if line.starts_with("stop:") {
                return demo;
            }
        }
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = strata(&self.nodes[0].grpc, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn interrupt(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    }

    /// Waits for the demo to exit: its status, or `None` after `timeout`.
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.interrupt();
            if self.wait(STOP_TIMEOUT).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        for node in &self.nodes {
            self.started
                .extend(process_start_ticks(node.pid).map(|t| (node.pid, t)));
        }
        // What a broken teardown left, agents first (stop-services refuses while an agent
        // holds its data dir): services by process group, agents and shims alone.
        for &(pid, ticks) in &self.started {
            if process_start_ticks(pid) == Some(ticks)
                && let Some(p) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process_group(p, rustix::process::Signal::KILL);
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.nodes.iter().any(|n| alive(n.pid)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for node in &self.nodes {
            stop_services_of(&self.dir.join(&node.name));
        }
        std::thread::sleep(Duration::from_millis(300));
        for dir in demo_cgroups(self.child.id()) {
            for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// The cgroups of the demo with process id `demo_pid` (named `strata-demo-PID-N`), in
/// every hierarchy.
fn demo_cgroups(demo_pid: u32) -> Vec<PathBuf> {
    let prefix = format!("strata-demo-{demo_pid}-");
    let mut found = Vec::new();
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let top = hierarchy.path();
        for dir in [top.clone()].into_iter().chain(
            std::fs::read_dir(&top)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        ) {
            if dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            {
                found.push(dir);
            }
        }
    }
    found
}

/// Processes whose command line mentions `needle`: (pid, start ticks).
fn processes_mentioning(needle: &str) -> BTreeSet<(i32, u64)> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .filter_map(|pid| Some((pid, process_start_ticks(pid)?)))
        .collect()
}

/// The pids (with start ticks) of the service instances `node`'s agent reports running.
fn service_pids(demo: &Demo, node: &str) -> BTreeSet<(i32, u64)> {
    let v = demo.json(&["--node", node, "services", "-o", "json"]);
    v["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i32::try_from(i["pid"].as_i64()?).ok())
        .filter(|pid| *pid > 0)
        .filter_map(|pid| Some((pid, process_start_ticks(pid)?)))
        .collect()
}

#[test]
fn the_demo_runs_a_cluster_with_its_services_and_leaves_nothing_behind() {
    let logs = tempfile::tempdir().expect("temp dir");
    let mut demo = Demo::start(logs.path());
    let names: Vec<&str> = demo.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["demo-1", "demo-2", "demo-3"]);
    assert!(demo.dir.is_dir(), "the demo's dir {:?} exists", demo.dir);

    wait_until("three alive members", Duration::from_secs(30), || {
        let v = demo.json(&["members", "-o", "json"]);
        let alive = v["members"].as_array().into_iter().flatten();
        alive.filter(|m| m["status"] == "alive").count() == 3
    });

    let wanted: BTreeSet<&str> = ["api", "flaky", "hog", "web", "worker"].into();
    wait_until(
        "every demo service in the catalog",
        Duration::from_secs(30),
        || {
            let v = demo.json(&["catalog", "-o", "json"]);
            let names: BTreeSet<String> = v["records"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|r| r["services"].as_array().cloned().unwrap_or_default())
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect();
            wanted.iter().all(|w| names.contains(*w))
        },
    );

    let flaky_restarts = || {
        let v = demo.json(&["--node", "demo-3", "service", "flaky", "-o", "json"]);
        v["restarts"].as_u64().unwrap_or(0)
    };
    let first = flaky_restarts();
    wait_until("flaky restarts", Duration::from_secs(45), || {
        flaky_restarts() >= first + 2
    });

    let front = SocketAddr::new(demo.nodes[1].balancer, 18080);
    let mut last = String::new();
    wait_until(
        "web answers through demo-2's balancer",
        Duration::from_secs(30),
        || match http_get(front, "/") {
            Ok((200, body)) => {
                last = body;
                true
            }
            other => {
                last = format!("{other:?}");
                false
            }
        },
    );
    assert!(
        last.contains("-> api/1 on demo-"),
        "web reached api: {last}"
    );
    let (code, stats) = http_get(front, "/stats").expect("stats");
    let stats: Value = serde_json::from_str(&stats).expect("stats json");
    assert_eq!(code, 200);
    let (calls, failures) = (
        stats["api_calls"].as_u64().unwrap_or(0),
        stats["api_failures"].as_u64().unwrap_or(0),
    );
    assert!(calls > failures, "web's calls to api succeed: {stats}");

    let dir = demo.dir.to_string_lossy().to_string();
    let mut started: BTreeSet<(i32, u64)> = processes_mentioning(&dir);
    for node in &demo.nodes {
        started.insert((
            node.pid,
            process_start_ticks(node.pid).expect("agent alive"),
        ));
        started.extend(service_pids(&demo, &node.name));
    }
    demo.started.clone_from(&started);
    // At least the agents, and a shim and a service for web, worker and the three api;
    // flaky and hog may be between two runs.
    assert!(
        started.len() >= 3 + 2 * 5,
        "agents, shims and services found: {started:?}"
    );

    demo.interrupt();
    let status = demo
        .wait(STOP_TIMEOUT)
        .expect("the demo stops after SIGINT");
    assert!(
        status.success(),
        "demo exit: {status}\n{}",
        demo.stderr_text()
    );

    let left: Vec<i32> = started
        .iter()
        .filter(|(pid, ticks)| process_start_ticks(*pid) == Some(*ticks))
        .map(|(pid, _)| *pid)
        .collect();
    assert!(
        left.is_empty(),
        "still running: {left:?}\n{}",
        demo.stderr_text()
    );
    assert_eq!(
        processes_mentioning(&dir),
        BTreeSet::new(),
        "processes naming {dir}"
    );
    assert!(!demo.dir.exists(), "the demo's dir is removed");
    let cgroups = demo_cgroups(demo.child.id());
    assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
}
