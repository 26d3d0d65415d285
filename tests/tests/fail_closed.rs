//! End to end: an agent that has had tokens fails closed. Deleting `tokens.toml` under a
//! running agent refuses every token and every anonymous caller and writes one critical audit
//! event; a restart with the file still gone stays closed; only `strata-agent token reset`
//! opens it again.

use std::process::{Command, Output, Stdio};
use std::time::Duration;
use strata_tests::{AgentOptions, AgentProcess, agent_token, assert_refused, binary, wait_until};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The critical `credentials` audit records in the agent's journal, read with `token`.
fn critical_records(agent: &AgentProcess, token: &str) -> Vec<serde_json::Value> {
    let out = agent.with_token(
        token,
        &[
            "events",
            "--kind",
            "audit",
            "--severity",
            "critical",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let events: serde_json::Value = serde_json::from_slice(&out.stdout).expect("events json");
    events["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["fields"]["what"] == "credentials")
        .collect()
}

fn start(data_dir: &std::path::Path) -> AgentProcess {
    AgentProcess::start(
        data_dir,
        &AgentOptions {
            node_name: Some("closed".into()),
            ..Default::default()
        },
    )
    .expect("agent starts")
}

#[test]
fn a_deleted_token_file_closes_the_agent_until_token_reset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let agent = start(&data);
    let admin = agent_token(&agent.data_dir, &["create", "admin", "--role", "admin"]);
    assert!(agent.with_token(&admin, &["services"]).status.success());

    std::fs::remove_file(data.join("tokens.toml")).expect("delete tokens.toml");
    for out in [
        agent.with_token(&admin, &["services"]),
        agent.strata(&["services"]),
        agent.strata(&["apply", "/dev/null"]),
    ] {
        assert_refused(&out, "tokens.toml is missing");
    }
    // The damage is recorded once (the agent also checks every second), not per call.
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..5 {
        let _ = agent.strata(&["services"]);
    }
    // A new token file opens it to its tokens again (and the recovery is recorded).
    let reader = agent_token(&agent.data_dir, &["create", "reader", "--role", "read"]);
    // The old file's token is gone with it.
    assert_refused(&agent.with_token(&admin, &["services"]), "not valid");
    let records = critical_records(&agent, &reader);
    assert_eq!(
        records.len(),
        1,
        "one critical record per change: {records:?}"
    );
    assert!(
        records[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("refuses every token"),
        "{records:?}"
    );

    // Gone again, and the agent restarts: it stays closed.
    std::fs::remove_file(data.join("tokens.toml")).expect("delete tokens.toml");
    agent
        .terminate(Duration::from_secs(20))
        .expect("agent stops");
    let agent = start(&data);
    assert_refused(&agent.strata(&["services"]), "tokens.toml is missing");

    // Only `token reset` opens it, saying what it did.
    let reset = Command::new(binary("strata-agent"))
        .args(["token", "reset", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::null())
        .output()
        .expect("strata-agent token reset");
    assert!(reset.status.success(), "{}", stderr(&reset));
    assert!(stderr(&reset).contains("removed"), "{}", stderr(&reset));
    wait_until("the agent is open again", Duration::from_secs(5), || {
        agent.strata(&["services"]).status.success()
    });
}
