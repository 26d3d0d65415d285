//! End to end: API tokens and roles on a real agent, driven by the real `strata` CLI:
//! who is refused with which exit code and message, what lands in the audit journal, and
//! that a flood of calls does not stop the agent from supervising.

use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_proto::v1::QueryEventsRequest;
use strata_proto::v1::agent_client::AgentClient;
use strata_tests::{AgentProcess, agent_token, binary, start_test_agent, wait_until};
use tonic::Code;

/// A test agent and its temp dir; the agent drops first.
struct Fixture {
    agent: AgentProcess,
    dir: tempfile::TempDir,
}

fn start(name: &str) -> Fixture {
    let (dir, agent) = start_test_agent(name);
    Fixture { agent, dir }
}

impl Fixture {
    /// `strata-agent token create NAME --role ROLE` on the agent's data dir: the token.
    fn token(&self, name: &str, role: &str) -> String {
        agent_token(&self.agent.data_dir, &["create", name, "--role", role])
    }

    /// `strata --token TOKEN ARGS`.
    fn with_token(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec!["--token", token];
        all.extend_from_slice(args);
        self.agent.strata(&all)
    }

    fn write(&self, file: &str, text: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("write spec");
        path.display().to_string()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Asserts `out` was refused with exit code 5 and a message containing `needle`.
fn refused(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(5), "{}", stderr(out));
    assert!(
        stderr(out).contains(needle),
        "{needle:?} not in {}",
        stderr(out)
    );
}

fn sleeper(name: &str) -> String {
    format!("name = \"{name}\"\ncommand = [\"/bin/sleep\", \"1000\"]\n")
}

#[test]
fn tokens_roles_refusals_and_audit() {
    let f = start("auth-roles");
    let spec = f.write("web.toml", &sleeper("web"));
    assert!(
        f.agent.strata(&["apply", &spec]).status.success(),
        "open before any token"
    );

    let reader = f.token("reader", "read");
    let operator = f.token("operator", "operate");
    let admin = f.token("admin", "admin");

    refused(&f.agent.strata(&["services"]), "requires credentials");
    refused(
        &f.with_token("strata_not-a-real-token-at-all", &["services"]),
        "not valid on agent auth-roles",
    );

    assert!(f.with_token(&reader, &["services"]).status.success());
    assert!(f.with_token(&reader, &["logs", "web"]).status.success());
    refused(
        &f.with_token(&reader, &["restart", "web"]),
        "restart needs the operate role; token \"reader\" has the read role",
    );
    refused(
        &f.with_token(&operator, &["apply", &spec]),
        "apply needs the admin role",
    );
    let restarted = f.with_token(&operator, &["restart", "web"]);
    assert!(restarted.status.success(), "{}", stderr(&restarted));
    let other = f.write("api.toml", &sleeper("api"));
    let applied = f.with_token(&admin, &["apply", &other]);
    assert!(applied.status.success(), "{}", stderr(&applied));

    let who = Command::new(binary("strata"))
        .args(["--agent", &f.agent.grpc.to_string(), "whoami", "-o", "json"])
        .env("STRATA_TOKEN", &operator)
        .stdin(Stdio::null())
        .output()
        .expect("strata whoami");
    let who: Value = serde_json::from_slice(&who.stdout).expect("whoami json");
    assert_eq!(
        (who["name"].as_str(), who["role"].as_str()),
        (Some("operator"), Some("operate"))
    );

    let out = f.with_token(
        &reader,
        &["events", "--kind", "audit", "--limit", "1000", "-o", "json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let audit: Value = serde_json::from_slice(&out.stdout).expect("events json");
    let records = audit["events"].as_array().cloned().unwrap_or_default();
    let find = |who: &str, what: &str, result: &str| {
        records.iter().any(|e| {
            e["fields"]["who"] == who
                && e["fields"]["what"] == what
                && e["fields"]["result"]
                    .as_str()
                    .is_some_and(|r| r.starts_with(result))
        })
    };
    assert!(
        find("anonymous", "apply", "ok"),
        "open apply audited: {records:#?}"
    );
    assert!(find("anonymous", "services", "denied"), "no token audited");
    assert!(
        find("unknown-token", "services", "denied"),
        "wrong token audited"
    );
    assert!(find("reader", "restart", "denied"), "weak token audited");
    assert!(find("operator", "apply", "denied"));
    assert!(find("operator", "restart", "ok"));
    assert!(find("admin", "apply", "ok"));
    let restart = records
        .iter()
        .find(|e| e["fields"]["who"] == "operator" && e["fields"]["what"] == "restart")
        .expect("restart record");
    assert_eq!(restart["fields"]["target"], "service:web");
    assert_eq!(restart["fields"]["via"], "token");
    let anonymous = records
        .iter()
        .find(|e| e["fields"]["who"] == "anonymous" && e["fields"]["what"] == "services")
        .expect("anonymous refusal");
    assert_eq!(
        anonymous["fields"]["via"], "none",
        "no credential was shown"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&reader[..20]),
        "no secrets in the journal"
    );

    agent_token(&f.agent.data_dir, &["revoke", "reader"]);
    refused(&f.with_token(&reader, &["services"]), "not valid");
}

#[test]
fn a_flood_of_calls_does_not_stop_supervision() {
    let f = start("auth-flood");
    let spec = f.write("web.toml", &sleeper("web"));
    assert!(f.agent.strata(&["apply", &spec]).status.success());
    let flooder = f.token("flooder", "read");
    let ops = f.token("ops", "admin");
    let pid_of = |f: &Fixture| -> i64 {
        let out = f.with_token(&ops, &["service", "web", "-o", "json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["instances"][0]["pid"].as_i64().unwrap_or(0)
    };
    wait_until("web runs", Duration::from_secs(10), || pid_of(&f) > 0);
    let first = pid_of(&f);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = format!("http://{}", f.agent.grpc);
    let flood = runtime.spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(6);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let addr = addr.clone();
            let bearer = format!("Bearer {flooder}");
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut limited) = (0u32, 0u32);
                let Ok(mut client) = AgentClient::connect(addr).await else {
                    return (ok, limited);
                };
                for _ in 0..5_000 {
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut request = tonic::Request::new(QueryEventsRequest {
                        limit: 10_000,
                        ..Default::default()
                    });
                    if let Ok(value) = bearer.parse() {
                        request.metadata_mut().insert("authorization", value);
                    }
                    match client.query_events(request).await {
                        Ok(_) => ok += 1,
                        Err(s) if s.code() == Code::ResourceExhausted => limited += 1,
                        Err(_) => {}
                    }
                }
                (ok, limited)
            }));
        }
        let mut totals = (0u32, 0u32);
        for task in tasks {
            if let Ok((ok, limited)) = task.await {
                totals = (totals.0 + ok, totals.1 + limited);
            }
        }
        totals
    });

    std::thread::sleep(Duration::from_millis(500));
    let killed = rustix::process::Pid::from_raw(first as i32).expect("pid");
    rustix::process::kill_process(killed, rustix::process::Signal::KILL).expect("kill web");
    wait_until(
        "web restarted during the flood",
        Duration::from_secs(15),
        || {
            let pid = pid_of(&f);
            pid > 0 && pid != first
        },
    );
    let (ok, limited) = runtime.block_on(flood).expect("flood");
    println!("flood: {ok} calls served, {limited} refused by the rate limit");
    assert!(ok > 0, "the flood's first calls are served");
    assert!(limited > 0, "the rate limit refused part of the flood");
    assert!(
        f.with_token(&ops, &["node"]).status.success(),
        "the agent still answers"
    );
}
