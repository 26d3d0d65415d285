//! End to end: the real agent supervising real processes, driven by the real `strata` CLI.

use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};
use strata_tests::{
    AgentOptions, AgentProcess, alive, all_pids, binary, prereq, process_start_ticks,
    start_test_agent,
};

/// A test agent and its temp dir. Fields drop in order: the agent (which stops the services
/// it recorded in the dir) before the dir is deleted.
struct Fixture {
    agent: AgentProcess,
    dir: tempfile::TempDir,
}

fn start(name: &str) -> Fixture {
    let (dir, agent) = start_test_agent(name);
    Fixture { dir, agent }
}

impl Fixture {
    /// Writes a spec file and applies it; panics with the CLI's stderr when that fails.
    fn apply(&self, file: &str, text: &str) {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("write spec");
        let out = self.agent.strata(&["apply", path.to_str().expect("path")]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn service(&self, name: &str) -> Value {
        let out = self.agent.strata(&["service", name, "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn instance(&self, name: &str, index: usize) -> Value {
        self.service(name)["instances"][index - 1].clone()
    }

    /// Polls the service until `check` holds, or panics with the last state after `timeout`.
    fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.service(name);
            if check(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}: {s:#}\nagent stderr:\n{}",
                    self.agent.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        let out = self
            .agent
            .strata(&["events", "--kind", kind, "--limit", "1000", "-o", "json"]);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["events"].as_array().cloned().unwrap_or_default()
    }
}

fn state(s: &Value, i: usize) -> String {
    s["instances"][i]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn num(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

#[test]
fn crashes_restart_with_growing_backoff() {
    let f = start("sup-backoff");
    f.apply(
        "crash.toml",
        r#"name = "crash"
command = ["/bin/sh", "-c", "exit 3"]
[restart]
backoff_initial = "100ms"
backoff_max = "2s"
crashloop_after = 100
crashloop_window = "60s"
"#,
    );
    f.wait_for("crash", Duration::from_secs(20), "4 restarts", |s| {
        num(&s["instances"][0]["restarts"]) >= 4
    });
    let backoffs: Vec<String> = f
        .events("service.backoff")
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect();
    assert!(backoffs.len() >= 3, "{backoffs:?}");
    assert!(
        backoffs.iter().all(|m| m.contains("exited with code 3")),
        "{backoffs:?}"
    );
    let delays: Vec<f64> = backoffs.iter().filter_map(|m| delay_of(m)).collect();
    assert!(delays.len() >= 3, "{backoffs:?}");
    assert!(delays[2] > delays[0], "backoff grows: {delays:?}");
    let last = f.instance("crash", 1)["last_exit"].clone();
    assert_eq!(last["code"], 3);
}

/// The restart delay in seconds from a backoff event's message ("restarting in 150ms").
fn delay_of(message: &str) -> Option<f64> {
    let text = message.rsplit("restarting in ").next()?;
    let mut total = 0.0;
    for part in text.split_whitespace() {
        let split = part.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = part.split_at(split);
        let n: f64 = n.parse().ok()?;
        total += match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            _ => return None,
        };
    }
    Some(total)
}

#[test]
fn a_crash_loop_is_detected_and_held_and_never_stays_exited() {
    let f = start("sup-crashloop");
    f.apply(
        "loop.toml",
        r#"name = "looper"
command = ["/bin/sh", "-c", "exit 1"]
[restart]
backoff_initial = "10ms"
backoff_max = "20ms"
crashloop_after = 3
crashloop_window = "60s"
"#,
    );
    let s = f.wait_for("looper", Duration::from_secs(20), "crashloop", |s| {
        state(s, 0) == "crashloop"
    });
    let restarts = num(&s["instances"][0]["restarts"]);
    assert!(
        s["instances"][0]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("crash loop")
    );
    std::thread::sleep(Duration::from_millis(800));
    let later = f.instance("looper", 1);
    assert_eq!(later["state"], "crashloop", "held until an operator acts");
    assert_eq!(num(&later["restarts"]), restarts, "no restarts while held");
    assert_eq!(f.events("service.crashloop").len(), 1);

    f.apply(
        "never.toml",
        r#"name = "once"
command = ["/bin/sh", "-c", "exit 0"]
[restart]
policy = "never"
"#,
    );
    f.wait_for("once", Duration::from_secs(20), "exited", |s| {
        state(s, 0) == "exited"
    });
    std::thread::sleep(Duration::from_millis(500));
    let once = f.instance("once", 1);
    assert_eq!(once["state"], "exited");
    assert_eq!(num(&once["restarts"]), 0);
    assert_eq!(once["last_exit"]["code"], 0);
}

#[test]
fn stop_kills_a_background_grandchild_and_failed_start_is_reported() {
    let f = start("sup-stop");
    let gc_file = f.path("grandchild.pid");
    f.apply(
        "bg.toml",
        &format!(
            r#"name = "bg"
command = ["/bin/sh", "-c", "sleep 1000 & echo $! > {gc_file}; exec sleep 1000"]
[stop]
timeout = "2s"
"#
        ),
    );
    let s = f.wait_for("bg", Duration::from_secs(20), "running", |s| {
        state(s, 0) == "running"
    });
    let pid = num(&s["instances"][0]["pid"]) as i32;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !Path::new(&gc_file).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let grandchild: i32 = std::fs::read_to_string(&gc_file)
        .expect("gc pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(alive(pid) && alive(grandchild));
    let out = f.agent.strata(&["stop", "bg"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(&f.service("bg"), 0), "stopped");
    assert!(!alive(pid), "service stopped");
    assert!(!alive(grandchild), "grandchild stopped too");

    f.apply(
        "missing.toml",
        "name = \"missing\"\ncommand = [\"/nonexistent/program\"]\n",
    );
    let s = f.wait_for("missing", Duration::from_secs(20), "failed", |s| {
        state(s, 0) == "failed"
    });
    let reason = s["instances"][0]["reason"].as_str().unwrap_or("");
    assert!(reason.contains("/nonexistent/program"), "{reason}");
}

#[test]
fn no_zombies_after_200_restarts() {
    let f = start("sup-zombies");
    f.apply(
        "churn.toml",
        r#"name = "churn"
command = ["/bin/sh", "-c", "sleep 0.001 & exit 1"]
[restart]
backoff_initial = "0s"
backoff_max = "0s"
crashloop_after = 1000
crashloop_window = "1s"
"#,
    );
    f.wait_for("churn", Duration::from_secs(120), "200 restarts", |s| {
        num(&s["instances"][0]["restarts"]) >= 200
    });
    let out = f.agent.strata(&["stop", "churn"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let zombies = zombie_children_of(f.agent.pid() as i32);
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
}

/// Zombie processes whose parent is `parent`.
fn zombie_children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first() == Some(&"Z")
                && fields.get(1).and_then(|p| p.parse().ok()) == Some(parent)
        })
        .collect()
}

#[test]
fn health_checks_rise_and_fall_for_http_tcp_and_exec() {
    let f = start("sup-health");
    let server = binary("strata-test-server").display().to_string();
    let http_flag = f.path("http-status");
    let exec_flag = f.path("exec-status");
    let raw_flag = f.path("raw-status");
    std::fs::write(&http_flag, "200").expect("flag");
    std::fs::write(&exec_flag, "0").expect("flag");
    f.apply(
        "web.toml",
        &format!(
            r#"name = "web"
command = ["{server}"]
env = {{ HEALTH_FILE = "{http_flag}" }}
[ports.http]
[health]
http = "/health"
interval = "200ms"
timeout = "150ms"
rise = 2
fall = 2
grace = "0s"
"#
        ),
    );
    f.apply(
        "raw.toml",
        &format!(
            r#"name = "raw"
command = ["{server}"]
env = {{ HEALTH_FILE = "{raw_flag}" }}
[ports.main]
[health]
tcp = true
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 2
grace = "0s"
"#
        ),
    );
    f.apply(
        "job.toml",
        &format!(
            r#"name = "job"
command = ["/bin/sleep", "1000"]
[health]
exec = ["/bin/sh", "-c", "exit $(cat {exec_flag})"]
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 2
grace = "0s"
"#
        ),
    );
    let long = Duration::from_secs(20);
    let health = |s: &Value| {
        s["instances"][0]["health"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    f.wait_for("web", long, "web passing", |s| health(s) == "passing");
    f.wait_for("raw", long, "raw passing", |s| health(s) == "passing");
    f.wait_for("job", long, "job passing", |s| health(s) == "passing");

    std::fs::write(&http_flag, "503").expect("flag");
    let s = f.wait_for("web", long, "web critical", |s| health(s) == "critical");
    assert!(
        s["instances"][0]["health_output"]
            .as_str()
            .unwrap_or("")
            .contains("503"),
        "{s:#}"
    );
    std::fs::write(&http_flag, "429").expect("flag");
    f.wait_for("web", long, "web warning", |s| health(s) == "warning");
    std::fs::write(&http_flag, "200").expect("flag");
    f.wait_for("web", long, "web passing again", |s| health(s) == "passing");

    std::fs::write(&exec_flag, "1").expect("flag");
    f.wait_for("job", long, "job warning", |s| health(s) == "warning");
    std::fs::write(&exec_flag, "2").expect("flag");
    f.wait_for("job", long, "job critical", |s| health(s) == "critical");

    let out = f.agent.strata(&["signal", "raw", "SIGSTOP"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "SIGSTOP is not a signal a spec may send"
    );
    std::fs::write(&raw_flag, "down").expect("flag");
    let critical = f.wait_for("raw", long, "raw critical", |s| health(s) == "critical");
    assert!(critical["instances"][0]["health_output"].as_str().is_some());
    std::fs::write(&raw_flag, "200").expect("flag");
    f.wait_for("raw", long, "raw passing again", |s| health(s) == "passing");

    let kinds: Vec<String> = f
        .events("service.")
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    for kind in ["service.passing", "service.critical", "service.warning"] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}

#[test]
fn memory_limit_kills_a_hog_and_the_oom_is_reported() {
    if !Path::new("/sys/fs/cgroup/memory").is_dir()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    {
        prereq::missing("a memory cgroup controller", prereq::CGROUPS_HOW);
        return;
    }
    let f = start("sup-oom");
    f.apply(
        "hog.toml",
        r#"name = "hog"
command = ["/bin/sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"]
[resources]
memory_max = "32MiB"
[restart]
policy = "never"
"#,
    );
    let s = f.wait_for("hog", Duration::from_secs(30), "hog exited", |s| {
        state(s, 0) == "exited"
    });
    let services = f.agent.strata(&["services", "-o", "json"]);
    let isolation: Value = serde_json::from_slice(&services.stdout).expect("json");
    if !isolation["isolation"]
        .as_str()
        .unwrap_or("")
        .contains("memory")
    {
        prereq::missing(
            format_args!(
                "a memory controller in the agent's isolation (it has {})",
                isolation["isolation"]
            ),
            prereq::CGROUPS_HOW,
        );
        return;
    }
    assert_eq!(s["instances"][0]["last_exit"]["oom_killed"], true, "{s:#}");
    assert_eq!(f.events("service.oom_killed").len(), 1);
}

#[test]
fn agent_kill_9_and_restart_keeps_pids_and_logs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let options = AgentOptions {
        node_name: Some("sup-adopt".into()),
        ..Default::default()
    };
    let agent = AgentProcess::start(&data, &options).expect("agent");
    let spec = dir.path().join("ticker.toml");
    std::fs::write(
        &spec,
        r#"name = "ticker"
command = ["/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
instances = 2
"#,
    )
    .expect("spec");
    assert!(
        agent
            .strata(&["apply", spec.to_str().expect("path")])
            .status
            .success()
    );
    let running = |agent: &AgentProcess| -> Vec<i64> {
        let out = agent.strata(&["service", "ticker", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        v["instances"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["state"] == "running")
                    .map(|i| num(&i["pid"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    let two_running = |agent: &AgentProcess| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = running(agent);
            if pids.len() == 2 {
                return pids;
            }
            assert!(Instant::now() < deadline, "instances not running: {pids:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let pids = two_running(&agent);
    let starts: Vec<u64> = pids
        .iter()
        .map(|p| process_start_ticks(*p as i32).expect("alive"))
        .collect();
    agent.crash().expect("kill -9");
    std::thread::sleep(Duration::from_millis(500));
    for pid in &pids {
        assert!(
            alive(*pid as i32),
            "service {pid} survives the agent's death"
        );
    }
    let log = data.join("logs/ticker/1/output.log");
    let lines_while_down = std::fs::read_to_string(&log).expect("log").lines().count();
    std::thread::sleep(Duration::from_millis(500));
    let lines_later = std::fs::read_to_string(&log).expect("log").lines().count();
    assert!(
        lines_later > lines_while_down,
        "logging goes on while the agent is down"
    );

    let agent = AgentProcess::start(&data, &options).expect("agent restarts");
    let after = two_running(&agent);
    assert_eq!(after, pids, "same pids after the agent's restart");
    for (pid, ticks) in pids.iter().zip(&starts) {
        assert_eq!(
            process_start_ticks(*pid as i32),
            Some(*ticks),
            "not restarted"
        );
    }
    let out = agent.strata(&["logs", "ticker/1", "--lines", "5", "-o", "json"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    assert_eq!(
        agent
            .strata(&["events", "--kind", "service.adopted", "-o", "json"])
            .status
            .code(),
        Some(0)
    );
    let out = agent.strata(&["restart", "ticker/1", "--wait", "--timeout", "20s"]);
    assert!(out.status.success(), "an adopted instance can be restarted");
    let new = running(&agent);
    assert!(
        !new.contains(&pids[0]) || new.len() < 2,
        "instance 1 got a new pid: {new:?}"
    );
    assert!(!alive(pids[0] as i32));
}

#[test]
fn invalid_specs_are_rejected_whole_with_file_line_and_field() {
    let f = start("sup-invalid");
    f.apply(
        "good.toml",
        "name = \"good\"\ncommand = [\"/bin/sleep\", \"1000\"]\n[ports.http]\nfrontend = 18080\n",
    );
    let before = f.wait_for("good", Duration::from_secs(20), "running", |s| {
        state(s, 0) == "running"
    });
    let cases = [
        (
            "unknown.toml",
            "name = \"good\"\ncommand = [\"/bin/sleep\", \"1\"]\nbogus = 1\n",
            ":3: bogus: unknown field",
        ),
        (
            "duration.toml",
            "name = \"good\"\ncommand = [\"/bin/sleep\", \"1\"]\n[health]\nexec = [\"true\"]\ninterval = \"soon\"\n",
            ":5: health.interval: invalid duration",
        ),
        (
            "negative.toml",
            "name = \"good\"\ncommand = [\"/bin/sleep\", \"1\"]\ninstances = -1\n",
            ":3: instances: -1 is negative",
        ),
        (
            "empty.toml",
            "name = \"good\"\ncommand = []\n",
            ":2: command: must name a program",
        ),
        (
            "clash.toml",
            "name = \"other\"\ncommand = [\"/bin/sleep\", \"1\"]\n[ports.web]\nfrontend = 18080\n",
            ":4: ports.web.frontend: port 18080 is already the frontend of service \"good\"",
        ),
    ];
    for (file, text, expected) in cases {
        let path = f.dir.path().join(file);
        std::fs::write(&path, text).expect("write");
        let out = f.agent.strata(&["apply", path.to_str().expect("path")]);
        assert_eq!(out.status.code(), Some(2), "{file}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{file}{expected}")), "{file}: {err}");
    }
    let after = f.service("good");
    assert_eq!(
        after["instances"][0]["pid"], before["instances"][0]["pid"],
        "running service untouched"
    );
    let out = f.agent.strata(&["services", "-o", "json"]);
    let all: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(all["services"].as_array().map(Vec::len), Some(1));
}

#[test]
fn a_new_version_rolls_one_instance_at_a_time_and_scale_and_remove_work() {
    let f = start("sup-rolling");
    let server = binary("strata-test-server").display().to_string();
    let spec = |version: &str| {
        format!(
            r#"name = "api"
version = "{version}"
command = ["{server}"]
instances = 3
[ports.http]
[health]
http = "/"
interval = "100ms"
timeout = "90ms"
rise = 2
fall = 2
grace = "0s"
"#
        )
    };
    f.apply("api.toml", &spec("1"));
    let all_passing = |s: &Value| {
        s["instances"]
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|i| i["health"] == "passing"))
    };
    f.wait_for("api", Duration::from_secs(30), "3 passing", all_passing);
    let dry = f.dir.path().join("api2.toml");
    std::fs::write(&dry, spec("2")).expect("write");
    let out = f.agent.strata(&[
        "apply",
        dry.to_str().expect("path"),
        "--dry-run",
        "-o",
        "json",
    ]);
    let reply: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(reply["applied"], false);
    assert_eq!(reply["changes"][0], "version: 1 -> 2");
    assert_eq!(f.service("api")["version"], "1", "dry run changes nothing");

    f.apply("api2.toml", &spec("2"));
    let mut min_passing = usize::MAX;
    let mut max_running = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = f.service("api");
        let instances = s["instances"].as_array().cloned().unwrap_or_default();
        let serving = instances
            .iter()
            .filter(|i| i["health"] == "passing" && i["state"] == "running");
        min_passing = min_passing.min(serving.count());
        max_running = max_running.max(
            instances
                .iter()
                .filter(|i| i["state"] != "stopping")
                .count(),
        );
        if instances.len() == 3
            && instances
                .iter()
                .all(|i| i["version"] == "2" && i["health"] == "passing")
        {
            break;
        }
        assert!(Instant::now() < deadline, "rollout did not finish: {s:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Three instances: a new one starts (surge 1), passes, then an old one goes.
    assert_eq!(min_passing, 3, "never fewer passing than before");
    assert_eq!(max_running, 4, "one extra instance at a time");

    let out = f.agent.strata(&["scale", "api", "1"]);
    assert!(out.status.success());
    assert_eq!(
        f.service("api")["instances"].as_array().map(Vec::len),
        Some(1)
    );
    let out = f.agent.strata(&["remove", "api"]);
    assert!(out.status.success());
    assert_eq!(f.agent.strata(&["service", "api"]).status.code(), Some(4));
}

/// The pids of `name`'s first `n` instances, once they all run.
fn running_pids(f: &Fixture, name: &str, n: usize) -> Vec<i32> {
    f.wait_for(name, Duration::from_secs(20), "instances running", |s| {
        (0..n).all(|i| state(s, i) == "running")
    })["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| num(&i["pid"]) as i32)
        .collect()
}

/// The parent of `pid` (an instance's shim is its service's parent).
fn parent_of(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PPid:"))
                .and_then(|p| p.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The services `pids` and their shims, each with its start time.
fn with_shims(pids: &[i32]) -> Vec<(i32, u64)> {
    pids.iter()
        .flat_map(|p| [*p, parent_of(*p)])
        .map(|p| (p, process_start_ticks(p).expect("alive")))
        .collect()
}

/// Asserts that none of `processes` runs any more.
fn assert_gone(processes: &[(i32, u64)]) {
    for (pid, ticks) in processes {
        assert!(
            process_start_ticks(*pid) != Some(*ticks) || !alive(*pid),
            "{pid} is still running"
        );
    }
}

/// Starts an agent again on `data` (in `dir`), asserts that it starts `calm`'s two
/// instances anew (the specs outlive a stop of the services), and returns it.
fn restart_starts_calm_anew(
    data: &Path,
    dir: tempfile::TempDir,
    options: &AgentOptions,
    old: &[i32],
) -> Fixture {
    let agent = AgentProcess::start(data, options).expect("agent restarts");
    let f = Fixture { agent, dir };
    let after = running_pids(&f, "calm", 2);
    assert!(
        after.iter().all(|p| !old.contains(p)),
        "started anew: {after:?} vs {old:?}"
    );
    f
}

/// Runs `strata-agent stop-services --data-dir DATA_DIR ARGS`.
fn stop_services(data_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary("strata-agent"))
        .arg("stop-services")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("STRATA_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("strata-agent stop-services runs")
}

/// Stops what an agent recorded when dropped: the cleanup of a test that killed its agent.
struct LeftBehind<'a>(&'a Path);

impl Drop for LeftBehind<'_> {
    fn drop(&mut self) {
        strata_tests::stop_services_of(self.0);
    }
}

/// `strata-agent stop-services` stops what a killed agent left running, as the agent would:
/// refused while the agent runs; then the stop signal, SIGKILL past the stop timeout, and
/// each shim with its service. The specs stay: the next agent on the data dir starts the
/// services again.
#[test]
fn stop_services_stops_what_a_killed_agent_left_running() {
    let f = start("sup-leftover");
    f.apply(
        "calm.toml",
        "name = \"calm\"\ncommand = [\"/bin/sleep\", \"100000\"]\ninstances = 2\n",
    );
    let stubborn = "trap '' TERM; while true; do sleep 0.1; done";
    f.apply(
        "stubborn.toml",
        &format!(
            "name = \"stubborn\"\ncommand = [\"/bin/sh\", \"-c\", \"{stubborn}\"]\n\
             [stop]\ntimeout = \"1s\"\n"
        ),
    );
    let mut services = running_pids(&f, "calm", 2);
    services.extend(running_pids(&f, "stubborn", 1));
    let processes = with_shims(&services);
    let data = f.agent.data_dir.clone();

    let refused = stop_services(&data, &[]);
    assert_eq!(refused.status.code(), Some(3), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("in use by process {}", f.agent.pid())),
        "{stderr}"
    );
    for (pid, ticks) in &processes {
        assert_eq!(process_start_ticks(*pid), Some(*ticks), "{pid} untouched");
    }
    let second = AgentProcess::start(
        &data,
        &AgentOptions {
            node_name: Some("sup-leftover-2".into()),
            ..Default::default()
        },
    );
    let refused = format!("{:#}", second.err().expect("a second agent is refused"));
    assert!(refused.contains("in use by process"), "{refused}");

    let Fixture { agent, dir } = f;
    agent.crash().expect("kill -9");
    let _cleanup = LeftBehind(&data);
    let out = stop_services(&data, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let mut lines: Vec<String> = stdout
        .lines()
        .map(|l| l.split(" (").next().unwrap_or(l).to_string())
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "calm/1: stopped by SIGTERM",
            "calm/2: stopped by SIGTERM",
            "stubborn/1: killed by SIGKILL",
        ],
        "{stdout}"
    );
    assert_gone(&processes);
    let again = stop_services(&data, &[]);
    assert!(again.status.success(), "{again:?}");
    assert!(again.stdout.is_empty(), "{again:?}");

    let missing = stop_services(&dir.path().join("nope"), &[]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");

    let options = AgentOptions {
        node_name: Some("sup-leftover".into()),
        ..Default::default()
    };
    let f = restart_starts_calm_anew(&data, dir, &options, &services);
    // every instance recorded before the agent is killed again, so its cleanup finds them
    running_pids(&f, "stubborn", 1);
}

/// With `--stop-services-on-exit`, SIGTERM stops the services with the agent (services and
/// shims gone, an `agent.services_stopped` event); the next agent on the data dir starts them
/// again. Without the flag they keep running (`agent_kill_9_and_restart_keeps_pids_and_logs`).
#[test]
fn stop_services_on_exit_stops_them_with_the_agent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let options = AgentOptions {
        node_name: Some("sup-on-exit".into()),
        extra_args: vec!["--stop-services-on-exit".into()],
        ..Default::default()
    };
    let agent = AgentProcess::start(&data, &options).expect("agent");
    let f = Fixture { agent, dir };
    f.apply(
        "calm.toml",
        "name = \"calm\"\ncommand = [\"/bin/sleep\", \"100000\"]\ninstances = 2\n",
    );
    let services = running_pids(&f, "calm", 2);
    let processes = with_shims(&services);

    let status = f.agent.terminate(Duration::from_secs(30)).expect("SIGTERM");
    assert!(status.success(), "{status}");
    assert_gone(&processes);
    let f = restart_starts_calm_anew(&data, f.dir, &options, &services);
    let stopped = f.events("agent.services_stopped");
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    let message = stopped[0]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("calm/1: stopped by SIGTERM") && message.contains("calm/2"),
        "{message}"
    );
}
