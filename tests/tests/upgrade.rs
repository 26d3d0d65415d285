//! End to end: `strata-agent upgrade` hands a running agent over to a new process with no
//! failed request through the agent's own frontend, the services keep their pids and the old
//! agent exits; a new binary that cannot start leaves the old agent serving; SIGHUP reloads
//! the tokens file and the services dir, never kills the agent, and keeps the old settings
//! where a file is broken.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_tests::load::Load;
use strata_tests::{
    AgentProcess, agent_token, alive, binary, closed_port, http_get, start_test_agent, wait_until,
    web_spec,
};

fn services_dir(agent: &AgentProcess) -> std::path::PathBuf {
    let dir = agent.data_dir.join("services.d");
    std::fs::create_dir_all(&dir).expect("services dir");
    dir
}

fn wait_serving(front: SocketAddr) {
    wait_until(
        "web serves through the frontend",
        Duration::from_secs(30),
        || matches!(http_get(front, "/"), Ok((200, _))),
    );
}

/// A test agent running `instances` of web behind a frontend that serves: (dir, agent,
/// frontend address).
fn agent_with_web(name: &str, instances: u32) -> (tempfile::TempDir, AgentProcess, SocketAddr) {
    let (dir, agent) = start_test_agent(name);
    let frontend = closed_port();
    let spec = dir.path().join("web.toml");
    std::fs::write(
        &spec,
        web_spec("web", frontend, &format!("instances = {instances}\n")),
    )
    .expect("spec");
    let out = agent.strata(&["apply", spec.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let front = SocketAddr::new(agent.balancer, frontend);
    wait_serving(front);
    (dir, agent, front)
}

/// `strata [--token TOKEN] ARGS` against `agent`.
fn cli(agent: &AgentProcess, token: Option<&str>, args: &[&str]) -> Output {
    let mut all = Vec::new();
    if let Some(token) = token {
        all.extend(["--token", token]);
    }
    all.extend_from_slice(args);
    agent.strata(&all)
}

/// The pids of a service's instances, by instance index.
fn instance_pids(agent: &AgentProcess, token: Option<&str>, name: &str) -> Vec<(i64, i64)> {
    let out = cli(agent, token, &["service", name, "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut pids: Vec<(i64, i64)> = v["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["index"].as_i64().unwrap_or(-1),
                i["pid"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn upgrade(data_dir: &Path, extra: &[&str]) -> Output {
    Command::new(binary("strata-agent"))
        .arg("upgrade")
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env_remove("STRATA_CONFIG")
        .env_remove("STRATA_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run strata-agent upgrade")
}

/// The pid recorded in the data dir's lock: the agent that holds it.
fn lock_pid(data_dir: &Path) -> i32 {
    std::fs::read_to_string(data_dir.join("agent.lock"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The agent a handoff started (not the test's child): stopped by its pid when dropped,
/// before the test's agent handle stops the services.
struct Adopted(i32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let Some(pid) = rustix::process::Pid::from_raw(self.0) else {
            return;
        };
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while alive(self.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        while alive(self.0) && Instant::now() < deadline + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn upgrade_hands_over_every_socket_with_no_failed_request() {
    let (_dir, agent, front) = agent_with_web("upgrade", 2);
    wait_until("both instances run", Duration::from_secs(30), || {
        instance_pids(&agent, None, "web")
            .iter()
            .filter(|(_, p)| *p > 0)
            .count()
            == 2
    });
    let pids_before = instance_pids(&agent, None, "web");
    let old_pid = agent.pid() as i32;

    let load = Load::start(front, 2, Duration::ZERO, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(500));
    let out = upgrade(&agent.data_dir, &[]);
    let new_pid = lock_pid(&agent.data_dir);
    let _adopted = Adopted(new_pid);
    assert!(
        out.status.success(),
        "upgrade failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(new_pid, old_pid, "the lock names the new agent");
    wait_until("the old agent exits", Duration::from_secs(40), || {
        !alive(old_pid)
    });
    std::thread::sleep(Duration::from_millis(500));
    let report = load.stop();
    println!(
        "upgrade under a client loop: {} ok, {} failed; agent {old_pid} -> {new_pid}",
        report.ok, report.failed
    );
    assert!(report.ok > 50, "the client loop ran: {report:?}");
    assert_eq!(
        report.failed, 0,
        "failed requests during the upgrade: {report:?}"
    );

    // The new agent answers on the same API address, with the same instances and pids.
    assert!(alive(new_pid));
    assert_eq!(instance_pids(&agent, None, "web"), pids_before);
    let node = agent.json(&["node", "-o", "json"]);
    assert_eq!(node["id"].as_str(), Some(agent.node_id.as_str()), "{node}");
    let events = agent.strata(&["events", "--kind", "agent", "-o", "json"]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("agent.handed_over"), "{events}");
    // The HTTP endpoint moved over too.
    assert!(matches!(agent.http_get("/health"), Ok((200, _))));
}

#[test]
fn a_new_binary_that_cannot_start_leaves_the_old_agent_serving() {
    let (_dir, agent, front) = agent_with_web("upgrade-fails", 1);
    let load = Load::start(front, 1, Duration::ZERO, Duration::from_secs(30));

    let out = upgrade(&agent.data_dir, &["--binary", "/bin/false"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("keeps serving"), "{stderr}");
    assert!(
        stderr.contains("false") && stderr.contains("exit status: 1"),
        "{stderr}"
    );

    // A new agent that refuses its configuration: its own error comes back.
    let config = agent.data_dir.join("test-agent.toml");
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{good}bogus_setting = 1\n")).expect("config");
    let out = upgrade(&agent.data_dir, &[]);
    std::fs::write(&config, &good).expect("config");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bogus_setting"), "{stderr}");

    // A missing binary is refused before anything happens.
    let out = upgrade(&agent.data_dir, &["--binary", "/nonexistent/strata-agent"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let report = load.stop();
    assert_eq!(report.failed, 0, "{report:?}");
    assert_eq!(lock_pid(&agent.data_dir), agent.pid() as i32);
    assert!(matches!(http_get(front, "/"), Ok((200, _))));
    let events = agent.strata(&["events", "--kind", "agent.upgrade_failed", "-o", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&events.stdout)
            .matches("agent.upgrade_failed")
            .count(),
        2
    );
}

/// The newest `agent.reloaded` event's message and severity, once there are `count`.
fn reload_event(agent: &AgentProcess, token: &str, count: usize) -> (String, String) {
    let mut found = (String::new(), String::new());
    wait_until("the reload event", Duration::from_secs(10), || {
        let out = cli(
            agent,
            Some(token),
            &["events", "--kind", "agent.reloaded", "-o", "json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let events = v["events"].as_array().cloned().unwrap_or_default();
        if events.len() < count {
            return false;
        }
        let last = &events[events.len() - 1];
        found = (
            last["message"].as_str().unwrap_or_default().to_string(),
            last["severity"].as_str().unwrap_or_default().to_string(),
        );
        true
    });
    found
}

#[test]
fn sighup_reloads_tokens_and_services_and_keeps_old_settings_on_a_broken_file() {
    let (_dir, agent) = start_test_agent("reload");
    let pid = agent.pid() as i32;
    let ops = agent_token(&agent.data_dir, &["create", "ops", "--role", "admin"]);
    let ops = Some(ops.as_str());
    let services = services_dir(&agent);
    let frontend = closed_port();
    std::fs::write(
        services.join("web.toml"),
        web_spec("web", frontend, "instances = 1\n"),
    )
    .expect("spec");
    let ci = agent_token(&agent.data_dir, &["create", "ci", "--role", "read"]);

    agent.signal(rustix::process::Signal::HUP).expect("SIGHUP");
    let (message, severity) = reload_event(&agent, &ci, 1);
    assert_eq!(severity, "info", "{message}");
    assert!(message.contains("(2 tokens)"), "{message}");
    assert!(message.contains("web created"), "{message}");
    // The new token works, anonymous calls stay refused.
    assert!(cli(&agent, Some(&ci), &["services"]).status.success());
    assert!(!agent.strata(&["services"]).status.success());
    let front = SocketAddr::new(agent.balancer, frontend);
    wait_serving(front);

    // A broken config file and a broken spec: both named, nothing else changes.
    let config = agent.data_dir.join("test-agent.toml");
    let good = std::fs::read_to_string(&config).expect("config");
    std::fs::write(&config, format!("{good}log_level = \"loud=[\"\n")).expect("config");
    std::fs::write(
        services.join("bad.toml"),
        "name = \"bad\"\ncommand = [\"/bin/true\"]\ninstances = -1\n",
    )
    .expect("spec");
    let web_pids = instance_pids(&agent, ops, "web");
    agent.signal(rustix::process::Signal::HUP).expect("SIGHUP");
    let (message, severity) = reload_event(&agent, &ci, 2);
    std::fs::write(&config, &good).expect("config");
    assert_eq!(severity, "warning", "{message}");
    assert!(message.contains("failed (old settings kept)"), "{message}");
    assert!(message.contains("test-agent.toml: log_level"), "{message}");
    assert!(message.contains("bad.toml"), "{message}");
    assert!(message.contains("1 unchanged"), "{message}");
    assert!(
        !message.contains("log filter \""),
        "the filter stays: {message}"
    );

    // SIGHUP never kills the agent; the service and its frontend are untouched.
    assert!(alive(pid));
    assert_eq!(lock_pid(&agent.data_dir), pid);
    assert!(cli(&agent, Some(&ci), &["services"]).status.success());
    assert_eq!(instance_pids(&agent, ops, "web"), web_pids);
    assert!(matches!(http_get(front, "/"), Ok((200, _))));
}
