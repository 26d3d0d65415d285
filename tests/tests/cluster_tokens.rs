//! End to end: cluster-wide tokens on three agents over loopback. A token made through one
//! agent works on another; revoked through a third, every agent refuses it within gossip time
//! (the time is printed); only admins make tokens; tokens expire; a scoped token changes only
//! the services its scope names, and nothing node-wide.

use std::process::Output;
use std::time::{Duration, Instant};
use strata_tests::{AgentProcess, agent_token, assert_refused, start_named_agent, wait_until};

/// Three agents in one cluster and their temp dir; the agents drop first.
struct Cluster {
    n1: AgentProcess,
    n2: AgentProcess,
    n3: AgentProcess,
    dir: tempfile::TempDir,
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = start_named_agent(dir.path(), "n1", None);
    let n2 = start_named_agent(dir.path(), "n2", Some(&n1));
    let n3 = start_named_agent(dir.path(), "n3", Some(&n1));
    for agent in [&n1, &n2, &n3] {
        wait_until("three members", Duration::from_secs(20), || {
            let members = agent.json(&["members", "-o", "json"]);
            members["members"].as_array().map_or(0, Vec::len) == 3
        });
    }
    Cluster { n1, n2, n3, dir }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// `strata token create ARGS` through `agent` with `token`: the secret.
fn create(agent: &AgentProcess, token: &str, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = agent.with_token(token, &all);
    assert!(
        out.status.success(),
        "token create {args:?}: {}",
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tokens_replicate_revoke_everywhere_expire_and_are_scoped() {
    let c = cluster();
    // Bootstrap: an admin token in n1's tokens.toml.
    let root = agent_token(&c.n1.data_dir, &["create", "root", "--role", "admin"]);

    let ci = create(&c.n1, &root, &["ci", "--role", "admin"]);
    wait_until(
        "n3 knows the token made on n1",
        Duration::from_secs(10),
        || c.n3.with_token(&ci, &["services"]).status.success(),
    );
    let listed = c.n2.json(&["--token", &ci, "token", "list", "-o", "json"]);
    let tokens = listed["tokens"].as_array().cloned().unwrap_or_default();
    assert_eq!(tokens.len(), 1, "{listed}");
    assert_eq!(tokens[0]["created_on"], "n1");
    assert_eq!(tokens[0]["created_by"], "root (token)");
    assert!(tokens[0].get("secret").is_none());
    assert_eq!(tokens[0]["sha256"].as_str().map(str::len), Some(64));

    // Only admins make tokens.
    let reader = create(&c.n2, &ci, &["reader", "--role", "read"]);
    wait_until("n1 knows reader", Duration::from_secs(10), || {
        c.n1.with_token(&reader, &["services"]).status.success()
    });
    assert_refused(
        &c.n1
            .with_token(&reader, &["token", "create", "x", "--role", "read"]),
        "token create needs the admin role",
    );

    // Revoked through n2: refused on n1 and n3 within gossip time.
    let out = c.n2.with_token(&ci, &["token", "revoke", "reader"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let revoked_at = Instant::now();
    let mut converged = Vec::new();
    for (name, agent) in [("n1", &c.n1), ("n3", &c.n3)] {
        wait_until(
            "the revocation reaches every agent",
            Duration::from_secs(10),
            || agent.with_token(&reader, &["services"]).status.code() == Some(5),
        );
        converged.push((name, revoked_at.elapsed()));
    }
    println!("revocation convergence (revoke on n2 until refused): {converged:?}");
    assert_refused(&c.n3.with_token(&reader, &["services"]), "was revoked at");

    // Tokens expire.
    let brief = create(&c.n3, &ci, &["brief", "--role", "read", "--expires", "2s"]);
    wait_until("n1 knows brief", Duration::from_secs(10), || {
        c.n1.with_token(&brief, &["services"]).status.success()
    });
    std::thread::sleep(Duration::from_millis(2100));
    assert_refused(&c.n1.with_token(&brief, &["services"]), "expired at");

    // A scoped token changes only its services, and nothing node-wide.
    let spec = |name: &str, tags: &str| {
        let path = c.dir.path().join(format!("{name}.toml"));
        let text =
            format!("name = \"{name}\"\ncommand = [\"/bin/sleep\", \"1000\"]\ntags = [{tags}]\n");
        std::fs::write(&path, text).expect("write spec");
        path.display().to_string()
    };
    for (name, tags) in [("web-a", ""), ("api", ""), ("billing", "\"team:payments\"")] {
        let out = c.n3.with_token(&ci, &["apply", &spec(name, tags)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let web = create(
        &c.n1,
        &ci,
        &["web-team", "--role", "admin", "--services", "web-*"],
    );
    let pay = create(
        &c.n1,
        &ci,
        &["pay", "--role", "operate", "--team", "payments"],
    );
    wait_until(
        "n3 knows the scoped tokens",
        Duration::from_secs(10),
        || {
            c.n3.with_token(&web, &["services"]).status.success()
                && c.n3.with_token(&pay, &["services"]).status.success()
        },
    );
    let ok = c.n1.with_token(&web, &["--node", "n3", "restart", "web-a"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_refused(
        &c.n3.with_token(&web, &["restart", "api"]),
        "outside the scope of token \"web-team\", which may change only services web-*",
    );
    assert_refused(
        &c.n3
            .with_token(&web, &["apply", &spec("api", "\"team:web\"")]),
        "outside the scope",
    );
    assert_refused(&c.n3.with_token(&web, &["drain", "n3"]), "node-wide");
    assert_refused(
        &c.n3.with_token(&web, &["token", "revoke", "ci"]),
        "outside the scope",
    );
    let ok = c.n3.with_token(&pay, &["restart", "billing"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert_refused(
        &c.n3.with_token(&pay, &["restart", "web-a"]),
        "team payments",
    );
    assert_refused(
        &c.n3.with_token(&pay, &["restart", "api"]),
        "outside the scope of token \"pay\"",
    );
    let audit = c.n3.json(&[
        "--token", &ci, "events", "--kind", "audit", "--limit", "1000", "-o", "json",
    ]);
    let denied = audit["events"].as_array().cloned().unwrap_or_default();
    assert!(
        denied.iter().any(|e| e["fields"]["who"] == "web-team"
            && e["fields"]["result"]
                .as_str()
                .is_some_and(|r| r.starts_with("denied: restart of service \"api\""))),
        "the scope refusal is audited"
    );
}
