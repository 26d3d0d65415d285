//! End to end: generic gRPC tooling against a real agent, through a client nobody here wrote
//! (Debian's python3-grpcio, `tests/python/grpc_client.py`): `grpc.health.v1.Health` as
//! Kubernetes probes and grpc_health_probe call it, and server reflection v1alpha and v1 as
//! grpcurl, grpcui, Postman and Evans list services.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strata_tests::{AgentProcess, agent_token, prereq, start_test_agent};

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

/// `grpc_client.py MODE ADDR PROTO_DIR OUT_DIR`, its stubs generated into a temp dir.
fn client(mode: &str, agent: &AgentProcess, stubs: &Path) -> Command {
    let mut cmd = Command::new(prereq::PYTHON);
    cmd.arg(python_dir().join("grpc_client.py"))
        .arg(mode)
        .arg(agent.grpc.to_string())
        .arg(python_dir().join("proto"))
        .arg(stubs)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null());
    cmd
}

fn have_python_grpc() -> bool {
    prereq::PY_GRPC.check() && prereq::PY_GRPC_TOOLS.check()
}

#[test]
fn health_and_reflection_answer_a_python_grpc_client_without_credentials() {
    if !have_python_grpc() {
        return;
    }
    let (dir, agent) = start_test_agent("tools");
    // With a token, strata.v1.Agent needs credentials; health and reflection do not.
    agent_token(&agent.data_dir, &["create", "ops", "--role", "admin"]);
    let stubs = tempfile::tempdir().unwrap();
    let out = client("report", &agent, stubs.path()).output().unwrap();
    assert!(
        out.status.success(),
        "grpc_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Watch streams the current status, then each change, until SERVING.
    let became = report["became_serving"].as_array().unwrap();
    assert_eq!(became.last().unwrap(), "SERVING", "{report}");
    assert!(
        became[..became.len() - 1]
            .iter()
            .all(|s| s == "NOT_SERVING"),
        "{report}"
    );
    let health = &report["health"];
    assert_eq!(health["check"][""], "SERVING", "{report}");
    assert_eq!(health["check"]["strata.v1.Agent"], "SERVING", "{report}");
    assert_eq!(health["unknown"], "NOT_FOUND", "{report}");
    assert_eq!(health["watch"], "SERVING", "{report}");

    for version in ["v1alpha", "v1"] {
        let reflection = &report[version];
        assert!(reflection.get("error").is_none(), "{version}: {report}");
        let services: Vec<&str> = reflection["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        for service in ["strata.v1.Agent", "grpc.health.v1.Health"] {
            assert!(services.contains(&service), "{version}: {services:?}");
        }
        let methods = reflection["agent_methods"].as_array().unwrap();
        for method in ["GetNode", "ApplySpec", "WatchMetrics"] {
            assert!(
                methods.iter().any(|m| m == method),
                "{version}: {methods:?}"
            );
        }
    }
    // Health is open; the agent's API is not.
    assert_eq!(report["agent_without_credentials"], "UNAUTHENTICATED");
    drop(agent);
    drop(dir);
}

#[test]
fn health_watch_says_not_serving_when_the_agent_stops_and_then_ends() {
    if !have_python_grpc() {
        return;
    }
    let (dir, agent) = start_test_agent("tools-stop");
    let stubs = tempfile::tempdir().unwrap();
    let mut watcher = client("watch", &agent, stubs.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut next = || lines.next().map(|l| l.unwrap());
    // NOT_SERVING until the first sample (if the Watch came that early), then SERVING.
    let mut line = next();
    while line.as_deref() == Some("NOT_SERVING") {
        line = next();
    }
    assert_eq!(line.as_deref(), Some("SERVING"));

    agent.terminate(Duration::from_secs(20)).unwrap();
    let rest: Vec<String> = std::iter::from_fn(next).collect();
    let _ = watcher.wait();
    assert_eq!(
        rest.first().map(String::as_str),
        Some("NOT_SERVING"),
        "{rest:?}"
    );
    // The stream ended with the server, not at the client's 60 s deadline.
    let end = rest.last().unwrap();
    assert!(
        end.starts_with("END") && end != "END DEADLINE_EXCEEDED",
        "{rest:?}"
    );
    drop(dir);
}
