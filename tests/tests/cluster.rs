//! End to end: several real agents on loopback form one gossip cluster, replicate their
//! catalogs, forward node-scoped requests, and keep out an agent with the wrong key.

use std::time::Duration;
use strata_tests::{AgentOptions, AgentProcess, wait_until};

const KEY: &str = "q2v0Ykq4b6m6o2Ck3qvP0bJx8m9D5Yt6d6WqXz3mJjE=";
const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn agent(
    dir: &std::path::Path,
    name: &str,
    key: &str,
    join: Option<&AgentProcess>,
) -> AgentProcess {
    let mut extra_args = vec!["--gossip-key".to_string(), key.to_string()];
    if let Some(seed) = join {
        extra_args.push("--join".into());
        extra_args.push(seed.gossip.to_string());
    }
    AgentProcess::start(
        &dir.join(name),
        &AgentOptions {
            node_name: Some(name.to_string()),
            extra_args,
            ..Default::default()
        },
    )
    .expect("agent starts")
}

fn statuses(agent: &AgentProcess) -> Vec<(String, String)> {
    let v = agent.json(&["members", "-o", "json"]);
    let mut list: Vec<(String, String)> = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    list.sort();
    list
}

fn catalog_services(agent: &AgentProcess) -> Vec<String> {
    let v = agent.json(&["catalog", "-o", "json"]);
    let mut names: Vec<String> = v["records"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| {
            let node = r["name"].as_str().unwrap_or("").to_string();
            r["services"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |s| format!("{}@{}", s["name"].as_str().unwrap_or(""), node))
        })
        .collect();
    names.sort();
    names
}

#[test]
fn five_agents_form_a_cluster_replicate_and_survive_a_kill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = agent(dir.path(), "c1", KEY, None);
    let mut agents = vec![first];
    for i in 2..=5 {
        let a = agent(dir.path(), &format!("c{i}"), KEY, Some(&agents[0]));
        agents.push(a);
    }
    let everyone_alive = |a: &AgentProcess| {
        let s = statuses(a);
        s.len() == 5 && s.iter().all(|(_, st)| st == "alive")
    };
    wait_until(
        "5 alive members everywhere",
        Duration::from_secs(30),
        || agents.iter().all(everyone_alive),
    );

    for (i, a) in agents.iter().enumerate() {
        let spec = dir.path().join(format!("svc{i}.toml"));
        std::fs::write(
            &spec,
            format!(
                "name = \"svc{}\"\ncommand = [\"/bin/sleep\", \"1000\"]\n",
                i + 1
            ),
        )
        .expect("spec");
        assert!(
            a.strata(&["apply", spec.to_str().expect("path")])
                .status
                .success()
        );
    }
    let expected: Vec<String> = (1..=5).map(|i| format!("svc{i}@c{i}")).collect();
    wait_until(
        "every catalog holds every service",
        Duration::from_secs(30),
        || agents.iter().all(|a| catalog_services(a) == expected),
    );

    let remote = agents[0].json(&["--node", "c3", "services", "-o", "json"]);
    assert_eq!(remote["services"][0]["name"], "svc3", "forwarded to c3");
    assert_eq!(remote["services"][0]["node"], "c3");
    let node = agents[0].json(&["--node", "c4", "node", "-o", "json"]);
    assert_eq!(node["name"], "c4");
    let out = agents[0].strata(&["--node", "nowhere", "services"]);
    assert_eq!(out.status.code(), Some(4), "unknown node is not found");

    let victim = agents.remove(4);
    let victim_dir = victim.data_dir.clone();
    victim.crash().expect("kill -9");
    wait_until("c5 down everywhere", Duration::from_secs(30), || {
        agents
            .iter()
            .all(|a| statuses(a).contains(&("c5".to_string(), "down".to_string())))
    });
    let events = agents[0].json(&["events", "--kind", "member", "-o", "json"]);
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "member.down")),
        "{events:#}"
    );

    let back = AgentProcess::start(
        &victim_dir,
        &AgentOptions {
            node_name: Some("c5".into()),
            extra_args: vec![
                "--gossip-key".into(),
                KEY.into(),
                "--join".into(),
                agents[0].gossip.to_string(),
            ],
            ..Default::default()
        },
    )
    .expect("c5 restarts");
    agents.push(back);
    wait_until("c5 alive again everywhere", Duration::from_secs(30), || {
        agents.iter().all(everyone_alive)
    });
    wait_until(
        "svc5 back in every catalog",
        Duration::from_secs(30),
        || agents.iter().all(|a| catalog_services(a) == expected),
    );
}

#[test]
fn an_agent_with_the_wrong_key_is_not_admitted_and_leave_is_seen_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = agent(dir.path(), "k1", KEY, None);
    let b = agent(dir.path(), "k2", KEY, Some(&a));
    let intruder = agent(dir.path(), "k3", OTHER_KEY, Some(&a));
    wait_until("k1 and k2 see each other", Duration::from_secs(20), || {
        statuses(&a).len() == 2 && statuses(&b).len() == 2
    });
    std::thread::sleep(Duration::from_secs(2));
    let names: Vec<String> = statuses(&a).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["k1", "k2"], "the intruder is not a member");
    assert_eq!(statuses(&intruder).len(), 1, "the intruder sees nobody");
    let members = &a.json(&["members", "-o", "json"]);
    assert!(
        members["dropped_packets"].as_u64().unwrap_or(0) > 0,
        "its packets were dropped and counted"
    );
    let audit = &a.json(&["events", "--kind", "audit", "-o", "json"]);
    let refused = audit["events"].as_array().cloned().unwrap_or_default();
    let gossip = refused
        .iter()
        .find(|e| e["fields"]["what"] == "gossip")
        .unwrap_or_else(|| panic!("the refused gossip is audited: {refused:#?}"));
    assert_eq!(
        gossip["fields"]["from"].as_str(),
        Some(intruder.gossip.to_string().as_str()),
        "{gossip:#?}"
    );
    assert!(
        gossip["fields"]["result"]
            .as_str()
            .is_some_and(|r| r.starts_with("denied: no installed key")),
        "{gossip:#?}"
    );

    // A plain stop would keep k2 a member (down): leaving is explicit.
    let left = strata_tests::agent_leave(&b.data_dir, &[]);
    assert!(left.status.success(), "{left:?}");
    let status = b.terminate(Duration::from_secs(15)).expect("stopped");
    assert!(status.success());
    wait_until("k2 left", Duration::from_secs(10), || {
        statuses(&a).contains(&("k2".to_string(), "left".to_string())) || statuses(&a).len() == 1
    });
    let events = &a.json(&["events", "--kind", "member", "-o", "json"]);
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["kind"].as_str()).collect())
        .unwrap_or_default();
    assert!(kinds.contains(&"member.left"), "{kinds:?}");
    assert!(
        !kinds.contains(&"member.down"),
        "a graceful leave is not a failure: {kinds:?}"
    );
}

/// Every node's primary key and number of keys, from `strata keyring list -o json`.
fn keyrings(agent: &AgentProcess) -> Vec<(String, usize)> {
    let v = agent.json(&["keyring", "list", "-o", "json"]);
    let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
    let primary = |n: &serde_json::Value| n["primary"].as_str().unwrap_or("").to_string();
    let keys = |n: &serde_json::Value| n["keys"].as_array().map_or(0, Vec::len);
    nodes.iter().map(|n| (primary(n), keys(n))).collect()
}

#[test]
fn a_key_rotation_with_the_cli_keeps_the_cluster_and_admits_the_new_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = agent(dir.path(), "r1", KEY, None);
    let b = agent(dir.path(), "r2", KEY, Some(&a));
    let all_alive = |n: usize| {
        let s = statuses(&a);
        s.len() == n && s.iter().all(|(_, st)| st == "alive")
    };
    wait_until("r1 and r2 alive", Duration::from_secs(20), || all_alive(2));
    // Under load, a request forwarded to r2 right after it shows alive failed once in CI.
    wait_until("both keyrings answer", Duration::from_secs(20), || {
        a.strata(&["keyring", "list"]).status.success()
    });
    let before = keyrings(&a);
    assert_eq!(before.len(), 2, "{before:?}");
    let old = before[0].0.clone();
    assert!(
        before.iter().all(|(p, n)| *p == old && *n == 1),
        "{before:?}"
    );

    for step in [["install", OTHER_KEY], ["use", OTHER_KEY], ["remove", KEY]] {
        let out = a.strata(&["keyring", step[0], step[1]]);
        assert!(
            out.status.success(),
            "keyring {}: {}",
            step[0],
            String::from_utf8_lossy(&out.stderr)
        );
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("r1") && table.contains("r2"), "{table}");
    }
    let after = keyrings(&b);
    assert_eq!(after.len(), 2, "{after:?}");
    let new = after[0].0.clone();
    assert_ne!(new, old, "the new key is primary");
    assert!(after.iter().all(|(p, n)| *p == new && *n == 1), "{after:?}");

    let newcomer = agent(dir.path(), "r3", OTHER_KEY, Some(&a));
    wait_until(
        "r3 admitted with the new key",
        Duration::from_secs(20),
        || all_alive(3) && statuses(&newcomer).len() == 3,
    );
}
