//! End to end: a cluster CA and certificates made by the real `strata-agent tls` commands,
//! two agents serving TLS in one gossip cluster, the CLI with and without the right
//! certificates, a request forwarded between agents over mutual TLS, and the rule that a
//! non-loopback API is never served in plaintext by accident.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use strata_tests::{AgentOptions, AgentProcess, binary, strata, wait_until};

const KEY: &str = "q2v0Ykq4b6m6o2Ck3qvP0bJx8m9D5Yt6d6WqXz3mJjE=";

fn agent_cmd(args: &[&str]) -> Output {
    let out = Command::new(binary("strata-agent"))
        .args(args)
        .env_remove("STRATA_DATA_DIR")
        .env_remove("STRATA_CONFIG")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run strata-agent: {e}"),
    }
}

fn ok(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `strata-agent tls ca` then `tls issue` for `names` (agents) and `operator` into `dir`.
fn make_pki(dir: &Path, cluster: &str, agents: &[&str], operator: &str) -> PathBuf {
    let d = dir.to_str().expect("utf-8 temp path");
    ok(
        agent_cmd(&["tls", "ca", "--dir", d, "--name", cluster]),
        "tls ca",
    );
    for name in agents {
        ok(
            agent_cmd(&[
                "tls", "issue", "--agent", name, "--ca-dir", d, "--dir", d, "--san", "::1",
            ]),
            "tls issue --agent",
        );
    }
    issue_operator(dir, operator, "admin", &["--days", "30"]);
    dir.to_path_buf()
}

/// `strata-agent tls issue --operator NAME --role ROLE EXTRA...` with the CA in `pki`, into
/// `pki`.
fn issue_operator(pki: &Path, name: &str, role: &str, extra: &[&str]) {
    let d = pki.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "tls",
        "issue",
        "--operator",
        name,
        "--role",
        role,
        "--ca-dir",
        d,
        "--dir",
        d,
    ];
    args.extend_from_slice(extra);
    ok(
        agent_cmd(&args),
        &format!("tls issue --operator {name} --role {role} {extra:?}"),
    );
}

fn tls_agent(root: &Path, pki: &Path, name: &str, join: Option<&AgentProcess>) -> AgentProcess {
    let file = |f: String| pki.join(f).to_string_lossy().into_owned();
    let mut extra_args = vec![
        "--gossip-key".to_string(),
        KEY.to_string(),
        "--tls-cert".into(),
        file(format!("{name}.pem")),
        "--tls-key".into(),
        file(format!("{name}-key.pem")),
        "--tls-ca".into(),
        file("ca.pem".into()),
    ];
    if let Some(seed) = join {
        extra_args.push("--join".into());
        extra_args.push(seed.gossip.to_string());
    }
    AgentProcess::start(
        &root.join(name),
        &AgentOptions {
            node_name: Some(name.to_string()),
            extra_args,
            env: vec![(
                "STRATA_LOG".into(),
                "info,strata_registry::driver=debug".into(),
            )],
            ..Default::default()
        },
    )
    .expect("agent with TLS starts")
}

/// `strata --ca CA [--cert NAME.pem --key NAME-key.pem] ARGS` against `agent`.
fn strata_tls(
    agent: &AgentProcess,
    ca: &Path,
    cert: Option<(&Path, &str)>,
    args: &[&str],
) -> Output {
    let mut all: Vec<String> = vec!["--ca".into(), ca.to_string_lossy().into_owned()];
    if let Some((dir, name)) = cert {
        all.push("--cert".into());
        all.push(
            dir.join(format!("{name}.pem"))
                .to_string_lossy()
                .into_owned(),
        );
        all.push("--key".into());
        all.push(
            dir.join(format!("{name}-key.pem"))
                .to_string_lossy()
                .into_owned(),
        );
    }
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    strata(&agent.grpc.to_string(), &all)
}

fn refused(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what} was accepted");
    assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{what}: one line: {stderr}"
    );
    stderr
}

#[test]
fn agents_serve_tls_and_forward_over_mutual_tls() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pki = make_pki(&tmp.path().join("pki"), "test", &["a", "b"], "alice");
    let other = make_pki(&tmp.path().join("other"), "other", &[], "mallory");
    let ca = pki.join("ca.pem");

    // Files are never overwritten silently, and keys are private.
    let again = agent_cmd(&["tls", "ca", "--dir", pki.to_str().expect("utf-8")]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join("a-key.pem"))
            .expect("key written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "agent key is private: {mode:o}");
    }

    let a = tls_agent(tmp.path(), &pki, "a", None);
    let b = tls_agent(tmp.path(), &pki, "b", Some(&a));

    // The operator's certificate works; the CA alone makes a TLS connection, but a TLS agent
    // wants a credential (a client certificate or a token) for every call.
    let node = strata_tls(&a, &ca, Some((&pki, "alice")), &["node", "-o", "json"]);
    ok(
        node.clone(),
        "strata node over TLS with a client certificate",
    );
    let v: serde_json::Value = serde_json::from_slice(&node.stdout).expect("json");
    assert_eq!(v["name"], "a");
    let anonymous = strata_tls(&a, &ca, None, &["node", "-o", "json"]);
    assert_eq!(anonymous.status.code(), Some(5), "no credential: exit 5");
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("requires credentials"));

    // Plaintext, a client certificate of another CA, and an agent checked against another CA
    // are all refused with one line.
    refused(&a.strata(&["node"]), "a plaintext client");
    let msg = refused(
        &strata_tls(&a, &ca, Some((&other, "mallory")), &["node"]),
        "a client certificate of another CA",
    );
    assert!(msg.contains("TLS"), "{msg}");
    refused(
        &strata_tls(&a, &other.join("ca.pem"), None, &["node"]),
        "an agent certificate checked against another CA",
    );

    // Both agents see each other, and a node-scoped request is forwarded from a to b over
    // mutual TLS.
    wait_until("a and b see each other", Duration::from_secs(20), || {
        let out = strata_tls(&a, &ca, Some((&pki, "alice")), &["members", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let alive = v["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["status"] == "alive").count())
            .unwrap_or(0);
        alive == 2
    });
    let through_a = || {
        strata_tls(
            &a,
            &ca,
            Some((&pki, "alice")),
            &["--node", "b", "node", "-o", "json"],
        )
    };
    wait_until("b's record reached a", Duration::from_secs(20), || {
        through_a().status.success()
    });
    let forwarded = through_a();
    ok(forwarded.clone(), "strata --node b node through a");
    let v: serde_json::Value = serde_json::from_slice(&forwarded.stdout).expect("json");
    assert_eq!(v["name"], "b");
    ok(
        strata_tls(&a, &ca, Some((&pki, "alice")), &["--node", "b", "services"]),
        "strata --node b services through a",
    );

    // b trusts a to say who the caller is: alice's forwarded change is audited on b as hers,
    // and a read-only operator certificate is refused there.
    let spec = tmp.path().join("idle.toml");
    std::fs::write(
        &spec,
        "name = \"idle\"\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    )
    .expect("spec");
    let spec = spec.to_string_lossy().into_owned();
    ok(
        strata_tls(
            &a,
            &ca,
            Some((&pki, "alice")),
            &["--node", "b", "apply", &spec],
        ),
        "alice applies on b through a",
    );
    let audit = strata_tls(
        &b,
        &ca,
        Some((&pki, "alice")),
        &["events", "--kind", "audit", "-o", "json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit json");
    let records = v["events"].as_array().cloned().unwrap_or_default();
    assert!(
        records.iter().any(|e| e["fields"]["who"] == "alice"
            && e["fields"]["via"] == "agent"
            && e["fields"]["what"] == "apply"
            && e["fields"]["result"] == "ok"),
        "{records:#?}"
    );
    issue_operator(&pki, "bob", "read", &[]);
    let weak = strata_tls(
        &a,
        &ca,
        Some((&pki, "bob")),
        &["--node", "b", "restart", "idle"],
    );
    assert_eq!(weak.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&weak.stderr).contains("restart needs the operate role"),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );
    // Operator certificates can be scoped like tokens; the scope travels with a forwarded call.
    for (name, glob) in [("carol", "idl*"), ("dave", "web-*")] {
        issue_operator(&pki, name, "operate", &["--services", glob]);
    }
    ok(
        strata_tls(
            &a,
            &ca,
            Some((&pki, "carol")),
            &["--node", "b", "restart", "idle"],
        ),
        "carol (services idl*) restarts idle on b",
    );
    let outside = strata_tls(
        &a,
        &ca,
        Some((&pki, "dave")),
        &["--node", "b", "restart", "idle"],
    );
    assert_eq!(outside.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("may change only services web-*"),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );
    ok(
        strata_tls(&b, &ca, Some((&pki, "alice")), &["remove", "idle"]),
        "alice removes idle on b",
    );

    // Anti-entropy runs over mutual TLS on the gossip port, and no handshake failed.
    wait_until("an anti-entropy exchange", Duration::from_secs(20), || {
        a.stderr().contains("stream reply received") || b.stderr().contains("stream reply received")
    });
    for agent in [&a, &b] {
        let log = agent.stderr();
        assert!(!log.contains("tls=false"), "{log}");
        assert!(!log.contains("TLS handshake"), "{log}");
    }
    drop(b);
}

#[test]
fn a_public_api_without_tls_or_insecure_refuses_to_start() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().to_string_lossy().into_owned();
    let out = agent_cmd(&[
        "run",
        "--data-dir",
        &data,
        "--grpc-addr",
        "0.0.0.0:0",
        "--insecure-gossip",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "grpc_addr",
        "--tls-cert",
        "--tls-key",
        "--tls-ca",
        "--insecure",
    ] {
        assert!(stderr.contains(field), "{field} in {stderr}");
    }
}
