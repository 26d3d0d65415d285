//! End to end: the real agent binary monitoring this host, queried by the real `strata`
//! binary, by gRPC (with reflection) and by HTTP.

use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use strata_proto::v1::agent_client::AgentClient;
use strata_proto::v1::{MetricHistoryRequest, WatchMetricsRequest};
use strata_tests::{AgentOptions, AgentProcess, closed_port, prereq, start_test_agent, strata};

fn json(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "strata failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

fn meminfo_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .expect("meminfo key")
}

fn cpu_lines() -> u64 {
    let text = std::fs::read_to_string("/proc/stat").expect("stat");
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u64
}

/// Polls `strata metrics` until the first sample exists.
fn wait_for_metrics(agent: &AgentProcess) -> Value {
    for _ in 0..100 {
        let out = agent.strata(&["metrics", "-o", "json"]);
        if out.status.success() {
            return json(&out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no metrics sample within 10 s: {}", agent.stderr());
}

#[test]
fn node_json_reports_this_host() {
    let (_dir, agent) = start_test_agent("e2e-node");
    let node = json(&agent.strata(&["node", "-o", "json"]));
    assert_eq!(node["name"], "e2e-node");
    assert_eq!(node["id"], agent.node_id.as_str());
    let stored = std::fs::read_to_string(agent.data_dir.join("node-id")).expect("node-id file");
    assert_eq!(stored.trim(), agent.node_id);
    assert_eq!(node["cores"].as_u64(), Some(cpu_lines()));
    assert_eq!(
        node["memory_bytes"].as_u64(),
        Some(meminfo_kib("MemTotal:") * 1024)
    );
    assert_eq!(node["grpc_addr"], agent.grpc.to_string().as_str());
    assert!(!node["kernel"].as_str().unwrap_or("").is_empty());

    let table = agent.strata(&["node"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("e2e-node") && text.contains("Cores:"),
        "{text}"
    );
}

#[test]
fn metrics_json_matches_proc() {
    let (_dir, agent) = start_test_agent("e2e-metrics");
    let m = wait_for_metrics(&agent);
    assert_eq!(m["node_name"], "e2e-metrics");
    assert_eq!(
        m["memory"]["total_bytes"].as_u64(),
        Some(meminfo_kib("MemTotal:") * 1024)
    );
    assert_eq!(
        m["cpu"]["cores"].as_array().map(|c| c.len() as u64),
        Some(cpu_lines())
    );
    let fds_max = m["fds"]["max"].as_u64().unwrap_or(0);
    assert!(
        fds_max > 0,
        "fd max should be read from file-nr: {}",
        m["fds"]
    );
    let interfaces: Vec<&str> = m["networks"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["interface"].as_str()).collect())
        .unwrap_or_default();
    assert!(interfaces.contains(&"lo"), "{interfaces:?}");
    assert!(
        m["filesystems"].as_array().is_some_and(|f| !f.is_empty()),
        "at least one real filesystem"
    );

    let top = json(&agent.strata(&["top", "--limit", "3", "-o", "json"]));
    let by_memory = top["by_memory"].as_array().expect("by_memory");
    assert!(!by_memory.is_empty() && by_memory.len() <= 3);
    let rss: Vec<u64> = by_memory
        .iter()
        .filter_map(|p| p["rss_bytes"].as_u64())
        .collect();
    assert!(
        rss.windows(2).all(|w| w[0] >= w[1]),
        "sorted by memory: {rss:?}"
    );
}

#[test]
fn unreachable_agent_exits_3_and_names_the_address() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let out = strata(&addr, &["node"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, not a stack: {err}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = strata("not-an-address", &["node"]);
    assert_eq!(out.status.code(), Some(2));
    let out = strata("127.0.0.1:7700", &["node", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(strata_tests::binary("strata-agent"))
        .args(["run", "--dev", "--grpc-addr", "nowhere"])
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "node_name = \"n1\"\ncollect_interval = \"1s\"\nbogus = true\n",
    )
    .expect("write config");
    let out = std::process::Command::new(strata_tests::binary("strata-agent"))
        .args(["run", "--dev", "--config"])
        .arg(&config)
        .output()
        .expect("run agent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&config.display().to_string()), "{err}");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("bogus"), "{err}");
}

/// Runs `agent run --dev ...` with `shim` as extra arguments and `env`, and returns its exit
/// status and stderr; fails if it is still running after 20 s (it started without its shim).
fn agent_exit(
    agent: &Path,
    data_dir: &Path,
    shim: &[&OsStr],
    env: &[(&str, &OsStr)],
) -> (Option<i32>, String) {
    let stderr_path = data_dir.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = std::process::Command::new(agent)
        .args(["run", "--dev", "--grpc-addr", "127.0.0.1:0"])
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(shim)
        .env_remove("STRATA_SHIM_PATH")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            strata_tests::stop_services_of(data_dir);
            panic!("the agent started without a usable shim");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&stderr_path).expect("read stderr");
    (status.code(), err)
}

#[test]
fn the_agent_refuses_to_start_without_its_shim_and_says_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = strata_tests::binary("strata-agent");

    let missing = dir.path().join("no-such-shim");
    let flag = [OsStr::new("--shim-path"), missing.as_os_str()];
    let (code, err) = agent_exit(&agent, &dir.path().join("a"), &flag, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(err.contains("--shim-path"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let plain = dir.path().join("plain-file");
    std::fs::write(&plain, "#!/bin/sh\n").expect("write file");
    let env = [("STRATA_SHIM_PATH", plain.as_os_str())];
    let (code, err) = agent_exit(&agent, &dir.path().join("b"), &[], &env);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&plain.display().to_string()), "{err}");
    assert!(err.contains("cannot be executed"), "{err}");

    // By default the shim is the one next to the agent's binary: an agent alone in its
    // directory names the strata-shim it looked for there.
    let lone_dir = dir.path().join("bin");
    std::fs::create_dir(&lone_dir).expect("bin dir");
    let lone = strata_tests::agent_without_shim(&lone_dir);
    let (code, err) = agent_exit(&lone, &dir.path().join("c"), &[], &[]);
    assert_eq!(code, Some(1), "{err}");
    let expected = lone_dir.join("strata-shim");
    assert!(err.contains(&expected.display().to_string()), "{err}");
}

#[test]
fn config_file_is_applied_and_flags_win() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        "node_name = \"from-file\"\ncgroup_root = \"strata-test-flags\"\ninsecure_gossip = true\ngossip_addr = \"127.0.0.1:0\"\n\
         dns_addr = \"127.0.0.1:0\"\n[labels]\nrack = \"r9\"\n",
    )
    .expect("write config");
    let options = AgentOptions {
        node_name: None,
        extra_args: vec!["--config".into(), config.display().to_string()],
        env: vec![("STRATA_NODE_NAME".into(), "from-env".into())],
        ..Default::default()
    };
    let agent = AgentProcess::start(&dir.path().join("data"), &options).expect("agent starts");
    // The harness removes the cgroup root named here when the agent is dropped.
    std::fs::write(agent.data_dir.join("test-cgroup-root"), "strata-test-flags").expect("write");
    let node = json(&agent.strata(&["node", "-o", "json"]));
    assert_eq!(node["name"], "from-env", "env wins over the file");
    assert_eq!(node["labels"]["rack"], "r9");
}

#[test]
fn journal_and_identity_survive_a_restart_and_sigterm_is_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let options = AgentOptions {
        node_name: Some("e2e-restart".into()),
        ..Default::default()
    };
    let first = AgentProcess::start(&data, &options).expect("first start");
    let first_id = first.node_id.clone();
    let status = first.terminate(Duration::from_secs(15)).expect("stops");
    assert!(status.success(), "SIGTERM gives a clean exit: {status}");

    let second = AgentProcess::start(&data, &options).expect("second start");
    assert_eq!(second.node_id, first_id, "same node id after a restart");
    let events = json(&second.strata(&["events", "--kind", "agent", "-o", "json"]));
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["agent.started", "agent.stopped", "agent.started"]);
    let seqs: Vec<u64> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq keeps growing: {seqs:?}"
    );
}

#[test]
fn prometheus_endpoint_serves_valid_text_and_health() {
    let (_dir, agent) = start_test_agent("e2e-prom");
    wait_for_metrics(&agent);
    let (code, health) = agent.http_get("/health").expect("GET /health");
    assert_eq!(code, 200, "{health}");
    assert!(health.contains("\"ok\""), "{health}");

    let (code, body) = agent.http_get("/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let memtotal = meminfo_kib("MemTotal:") * 1024;
    let line = body
        .lines()
        .find(|l| l.starts_with("node_memory_MemTotal_bytes "))
        .expect("node_memory_MemTotal_bytes");
    let value: f64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("value");
    assert_eq!(value as u64, memtotal);
    assert!(
        body.contains("node_cpu_seconds_total{"),
        "cpu seconds exported"
    );
    assert!(body.contains("strata_agent_info{"), "agent info exported");

    if prereq::PROMTOOL.check() {
        let findings =
            strata_tests::promtool_findings_beyond_node_exporter(&body).expect("promtool runs");
        assert!(
            findings.is_empty(),
            "promtool check metrics found more than node_exporter's own exceptions:\n{}",
            findings.join("\n")
        );
    }
}

#[tokio::test]
async fn grpc_history_stream_and_reflection() {
    let (_dir, agent) = start_test_agent("e2e-grpc");
    let mut client = AgentClient::connect(format!("http://{}", agent.grpc))
        .await
        .expect("connect");

    let mut stream = client
        .watch_metrics(WatchMetricsRequest::default())
        .await
        .expect("watch")
        .into_inner();
    let mut times = Vec::new();
    while times.len() < 3 {
        let sample = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a sample within 10 s")
            .expect("stream ok")
            .expect("stream open");
        times.push(sample.time_unix_ms);
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");

    let history = client
        .get_metric_history(MetricHistoryRequest {
            series: vec!["cpu.busy".into(), "mem.used_percent".into()],
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner();
    assert!(history.available.iter().any(|s| s == "cpu.busy"));
    assert_eq!(history.series.len(), 2);
    assert!(
        history.series.iter().all(|s| s.points.len() >= 2),
        "{:?}",
        history.series
    );
    let unknown = client
        .get_metric_history(MetricHistoryRequest {
            series: vec!["no.such.series".into()],
            ..Default::default()
        })
        .await
        .expect_err("unknown series");
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", agent.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect reflection");
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"strata.v1.Agent"), "{names:?}");
}

/// `strata-agent man` writes a main page with EXIT STATUS, EXAMPLES and an ENVIRONMENT
/// section that lists the variables its flags read.
#[test]
fn the_agent_man_page_has_exit_status_environment_and_examples() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(strata_tests::binary("strata-agent"))
        .args(["man", "--dir"])
        .arg(dir.path())
        .output()
        .expect("strata-agent man");
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("strata-agent.1")).expect("the page");
    for needle in [
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
        "\\fBSTRATA_GOSSIP_KEY\\fR",
        "\\fBSTRATA_DATA_DIR\\fR",
        "\\fBSTRATA_LOG\\fR",
    ] {
        assert!(page.contains(needle), "{needle} missing:\n{page}");
    }
    assert!(dir.path().join("strata-agent-run.1").exists());
}
