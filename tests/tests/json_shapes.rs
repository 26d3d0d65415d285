//! The JSON of every `strata` subcommand keeps its field names: each document's shape (every
//! field path with its JSON type, arrays merged over their elements, map keys folded) is
//! snapshot-tested against a real agent with a real service. Values are not part of a shape,
//! so the snapshots do not depend on the host or the time.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use strata_proto::v1::{
    AccessOutcome, Algorithm, ApplyAction, Health, InstanceState, ListenerState, LogStream,
    MemberStatus, Role,
};
use strata_tests::{AgentOptions, AgentProcess, binary};

/// Proto map fields: their keys are data, not field names.
const MAP_FIELDS: [&str; 5] = ["labels", "ports", "frontend_ports", "frontends", "fields"];

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn walk(path: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let entry = out
        .entry(if path.is_empty() {
            ".".into()
        } else {
            path.to_string()
        })
        .or_default();
    if !entry.split('|').any(|k| k == kind(v)) {
        if !entry.is_empty() {
            entry.push('|');
        }
        entry.push_str(kind(v));
    }
    match v {
        Value::Object(map) => {
            let is_map = path
                .rsplit('.')
                .next()
                .is_some_and(|last| MAP_FIELDS.contains(&last))
                || (path.ends_with(".tags") && !map.is_empty());
            for (key, child) in map {
                let key = if is_map { "{key}" } else { key.as_str() };
                walk(&format!("{path}.{key}"), child, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(&format!("{path}[]"), item, out);
            }
        }
        _ => {}
    }
}

/// The shape of a JSON document, one `path: type` line per field.
fn shape(v: &Value) -> String {
    let mut out = BTreeMap::new();
    walk("", v, &mut out);
    out.iter().map(|(p, k)| format!("{p}: {k}\n")).collect()
}

/// The words an enum field may hold in JSON, by field name (`state` is an instance's or a
/// listener's; process states under `top` are the kernel's letters and are left out).
fn words_of(key: &str) -> Option<Vec<&'static str>> {
    fn labels<T: Copy>(all: &[T], label: fn(T) -> &'static str) -> Vec<&'static str> {
        all.iter().map(|v| label(*v)).collect()
    }
    Some(match key {
        "state" => {
            let mut words = labels(InstanceState::ALL, InstanceState::label);
            words.extend(labels(ListenerState::ALL, ListenerState::label));
            words
        }
        "health" => labels(Health::ALL, Health::label),
        "status" => labels(MemberStatus::ALL, MemberStatus::label),
        "algorithm" => labels(Algorithm::ALL, Algorithm::label),
        "action" => labels(ApplyAction::ALL, ApplyAction::label),
        "stream" => labels(LogStream::ALL, LogStream::label),
        "outcome" => labels(AccessOutcome::ALL, AccessOutcome::label),
        "role" => labels(Role::ALL, Role::label),
        _ => return None,
    })
}

/// Checks that every enum field of `v` is one of its words (never a number, never
/// "unspecified"); returns the enum fields seen.
fn check_words(path: &str, v: &Value, seen: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            for (key, child) in map {
                if path.contains("top_") || path.contains("by_") {
                    continue;
                }
                if let Some(words) = words_of(key) {
                    let word = child.as_str().unwrap_or_default();
                    assert!(
                        words.contains(&word) && word != "unspecified",
                        "{path}.{key} is {child}, not one of {words:?}"
                    );
                    seen.insert(key.clone(), word.to_string());
                }
                check_words(&format!("{path}.{key}"), child, seen);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| check_words(path, i, seen)),
        _ => {}
    }
}

fn json(agent: &AgentProcess, args: &[&str]) -> Value {
    let out = agent.strata(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// JSON-lines output (logs, access-log, events -f) as one array.
fn json_lines(agent: &AgentProcess, args: &[&str]) -> Value {
    let out = agent.strata(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Value::Array(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
    )
}

#[test]
fn every_subcommands_json_keeps_its_field_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = AgentProcess::start(
        &dir.path().join("data"),
        &AgentOptions {
            node_name: Some("shapes".into()),
            ..Default::default()
        },
    )
    .expect("agent");
    let frontend = strata_tests::closed_port();
    let spec = dir.path().join("web.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"web\"\nversion = \"1\"\ncommand = [\"{}\"]\ninstances = 2\n[ports.http]\nfrontend = {frontend}\n\
             [health]\nhttp = \"/\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\ngrace = \"0s\"\n[stop]\ndrain = \"0s\"\n\
             [update]\nsurge = false\n",
            binary("strata-test-server").display()
        ),
    )
    .expect("spec");
    let path = spec.to_str().expect("path");
    let mut words = BTreeMap::new();
    let mut doc = |args: &[&str]| {
        let doc = json(&agent, args);
        check_words("", &doc, &mut words);
        doc
    };
    insta::assert_snapshot!(
        "apply_dry_run",
        shape(&doc(&["apply", path, "--dry-run", "-o", "json"]))
    );
    insta::assert_snapshot!("apply", shape(&doc(&["apply", path, "-o", "json"])));
    let out = agent.strata(&["restart", "web", "--wait", "--timeout", "30s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        strata_tests::http_get(std::net::SocketAddr::new(agent.balancer, frontend), "/"),
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "frontend never served");
        std::thread::sleep(Duration::from_millis(100));
    }

    for (name, args) in [
        ("node", vec!["node"]),
        ("metrics", vec!["metrics"]),
        ("top", vec!["top", "--limit", "3"]),
        ("events", vec!["events", "--limit", "50"]),
        ("services", vec!["services"]),
        ("service", vec!["service", "web"]),
        ("members", vec!["members"]),
        ("catalog", vec!["catalog"]),
        ("balancer", vec!["balancer"]),
        ("restart", vec!["restart", "web/1"]),
        ("scale", vec!["scale", "web", "1"]),
        ("stop", vec!["stop", "web"]),
        ("start", vec!["start", "web"]),
        ("drain", vec!["drain", "shapes"]),
        ("undrain", vec!["undrain", "shapes"]),
    ] {
        let mut full = args.clone();
        full.extend(["-o", "json"]);
        let mut doc = doc(&full);
        if let Some(fields) = doc.as_object_mut() {
            // Pressure stall information exists only where the kernel has PSI.
            fields.remove("pressure");
        }
        insta::assert_snapshot!(name, shape(&doc));
    }
    let logs = json_lines(&agent, &["logs", "web", "--lines", "5", "-o", "json"]);
    let access = json_lines(&agent, &["access-log", "web", "-o", "json"]);
    insta::assert_snapshot!("remove", shape(&doc(&["remove", "web", "-o", "json"])));
    check_words("", &logs, &mut words);
    insta::assert_snapshot!("logs", shape(&logs));
    check_words("", &access, &mut words);
    insta::assert_snapshot!("access_log", shape(&access));
    // Last: the first token closes the agent to anonymous callers.
    let created = json(
        &agent,
        &[
            "token",
            "create",
            "ci",
            "--role",
            "admin",
            "--expires",
            "30d",
            "-o",
            "json",
        ],
    );
    check_words("", &created, &mut words);
    insta::assert_snapshot!("token_create", shape(&created));
    let secret = created["secret"].as_str().expect("the secret, once");
    for (name, args) in [
        ("token_list", ["token", "list"]),
        ("token_revoke", ["token", "revoke"]),
    ] {
        let mut full = vec!["--token", secret];
        full.extend(args);
        if name == "token_revoke" {
            full.push("ci");
        }
        full.extend(["-o", "json"]);
        let doc = json(&agent, &full);
        check_words("", &doc, &mut words);
        insta::assert_snapshot!(name, shape(&doc));
    }
    let keys: Vec<&str> = words.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "action",
            "algorithm",
            "health",
            "outcome",
            "role",
            "state",
            "status",
            "stream"
        ],
        "every enum field was seen as a word: {words:?}"
    );
}
