//! One owner task per service, seen from outside: leaving instances are published as
//! draining (while their processes still run) and stop in parallel while reads keep being
//! answered; spec changes that need no restart (health, tags, balancing, frontends, log
//! rotation) take effect on the running processes.

use serde_json::Value;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use strata_tests::{AgentProcess, alive, binary, closed_port, start_test_agent, wait_until};

fn apply(agent: &AgentProcess, dir: &std::path::Path, file: &str, text: &str) -> Value {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write spec");
    let out = agent.strata(&["apply", path.to_str().expect("path"), "-o", "json"]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn pids(service: &Value) -> Vec<i64> {
    service["instances"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["pid"].as_i64()).collect())
        .unwrap_or_default()
}

/// The element of the JSON array `list` whose `name` is `name` (null when none is).
fn named(list: &Value, name: &str) -> Value {
    list.as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_default()
}

/// The instances of `service` in the agent's own catalog record.
fn catalog_instances(agent: &AgentProcess, service: &str) -> Vec<Value> {
    let catalog = agent.json(&["catalog", "-o", "json"]);
    catalog["records"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["services"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["name"] == service)
        .flat_map(|s| s["instances"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn scale_down_publishes_draining_first_and_stops_instances_in_parallel() {
    let (dir, agent) = start_test_agent("owner-scale");
    let server = binary("strata-test-server").display().to_string();
    let frontend = closed_port();
    apply(
        &agent,
        dir.path(),
        "web.toml",
        &format!(
            "name = \"web\"\ncommand = [\"{server}\"]\ninstances = 8\n[ports.http]\nfrontend = {frontend}\n\
             [stop]\ndrain = \"3s\"\n"
        ),
    );
    let mut before = Value::Null;
    wait_until("8 running instances", Duration::from_secs(30), || {
        before = agent.json(&["service", "web", "-o", "json"]);
        pids(&before).iter().filter(|p| **p > 0).count() == 8
    });
    let leaving: Vec<i32> = before["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .filter(|i| i["index"].as_u64() != Some(1))
        .filter_map(|i| i["pid"].as_i64().map(|p| p as i32))
        .collect();
    assert_eq!(leaving.len(), 7);

    let mut scale = std::process::Command::new(binary("strata"))
        .args(["--agent", &agent.grpc.to_string(), "scale", "web", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata scale");
    // While the scale-down runs, reads are answered, all seven leaving instances are
    // stopping at once, and the catalog shows them draining while their processes still run.
    wait_until(
        "7 instances draining at once, still running",
        Duration::from_secs(20),
        || {
            let service = agent.json(&["service", "web", "-o", "json"]);
            let stopping = service["instances"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["state"] == "stopping")
                .count();
            let draining = catalog_instances(&agent, "web")
                .iter()
                .filter(|i| i["draining"] == true && i["health"] == "critical")
                .count();
            let running = leaving.iter().filter(|p| alive(**p)).count();
            stopping == 7 && draining == 7 && running == 7
        },
    );
    let status = scale.wait().expect("scale ends");
    assert!(status.success(), "strata scale failed");
    let after = agent.json(&["service", "web", "-o", "json"]);
    assert_eq!(after["instances"].as_array().map(Vec::len), Some(1));
    assert!(
        leaving.iter().all(|p| !alive(*p)),
        "every leaving instance was stopped"
    );
    let out = agent.strata(&["remove", "web"]);
    assert!(out.status.success());
}

#[test]
fn health_tags_balance_frontend_and_log_changes_apply_without_a_restart() {
    let (dir, agent) = start_test_agent("owner-live");
    let server = binary("strata-test-server").display().to_string();
    let (first, second) = (closed_port(), closed_port());
    let spec = |health: &str, tags: &str, algorithm: &str, frontend: u16| {
        format!(
            "name = \"api\"\ncommand = [\"{server}\"]\ninstances = 2\ntags = [{tags}]\n\
             [ports.http]\nfrontend = {frontend}\n[health]\n{health}\ninterval = \"100ms\"\n\
             timeout = \"90ms\"\nrise = 1\nfall = 1\ngrace = \"0s\"\n[balance]\nalgorithm = \"{algorithm}\"\n"
        )
    };
    let http = "http = \"/\"";
    apply(
        &agent,
        dir.path(),
        "api.toml",
        &spec(http, "\"a\"", "p2c_ewma", first),
    );
    let passing = |s: &Value| {
        s["instances"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a.iter().all(|i| i["health"] == "passing"))
    };
    let mut service = Value::Null;
    wait_until("2 passing instances", Duration::from_secs(30), || {
        service = agent.json(&["service", "api", "-o", "json"]);
        passing(&service)
    });
    let started = pids(&service);

    // A check that fails: the running instances turn critical, with the same processes.
    let failing = "exec = [\"/bin/sh\", \"-c\", \"exit 2\"]";
    let reply = apply(
        &agent,
        dir.path(),
        "api.toml",
        &spec(failing, "\"a\"", "p2c_ewma", first),
    );
    assert_eq!(reply["action"], "updated");
    assert!(
        reply["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|l| l == "no restart: health take effect live")),
        "{reply}"
    );
    wait_until("the new check fails", Duration::from_secs(20), || {
        service = agent.json(&["service", "api", "-o", "json"]);
        service["instances"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["health"] == "critical"))
    });
    assert_eq!(pids(&service), started, "no restart for a health change");
    assert_eq!(
        service["health_check"],
        "exec /bin/sh -c exit 2 every 100ms"
    );

    // Back to HTTP, with new tags, a new algorithm and a moved frontend: catalog only.
    let reply = apply(
        &agent,
        dir.path(),
        "api.toml",
        &spec(http, "\"b\"", "round_robin", second),
    );
    assert_eq!(reply["action"], "updated", "{reply}");
    wait_until("passing again", Duration::from_secs(20), || {
        service = agent.json(&["service", "api", "-o", "json"]);
        passing(&service)
    });
    assert_eq!(pids(&service), started, "no restart for catalog changes");
    wait_until(
        "the balancer serves the new frontend with the new algorithm",
        Duration::from_secs(20),
        || {
            let balancer = agent.json(&["balancer", "-o", "json"]);
            named(&balancer["services"], "api")["algorithm"] == "round_robin"
                && matches!(
                    strata_tests::http_get(SocketAddr::new(agent.balancer, second), "/"),
                    Ok((200, _))
                )
        },
    );
    let catalog = agent.json(&["catalog", "-o", "json"]);
    let api = named(&catalog["records"][0]["services"], "api");
    assert_eq!(api["tags"], serde_json::json!(["b"]));
    assert_eq!(api["frontends"]["http"], second);
    assert_eq!(
        pids(&agent.json(&["service", "api", "-o", "json"])),
        started
    );

    // New log rotation: each running shim takes it and says so in the instance's log.
    let reply = apply(
        &agent,
        dir.path(),
        "api.toml",
        &format!(
            "{}[logs]\nmax_bytes = \"64KiB\"\nkeep = 2\n",
            spec(http, "\"b\"", "round_robin", second)
        ),
    );
    assert!(
        reply["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|l| l == "no restart: logs take effect live")),
        "{reply}"
    );
    for index in [1, 2] {
        wait_until(
            "the shim to take the new log rotation",
            Duration::from_secs(20),
            || {
                let out = agent.strata(&["logs", &format!("api/{index}"), "--lines", "1000"]);
                String::from_utf8_lossy(&out.stdout)
                    .contains("[strata] log rotation now at 65536 bytes, keeping 2 files")
            },
        );
    }
    assert_eq!(
        pids(&agent.json(&["service", "api", "-o", "json"])),
        started
    );
    let out = agent.strata(&["remove", "api"]);
    assert!(out.status.success());
}
