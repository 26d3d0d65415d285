//! The JSON of every `strata` subcommand keeps its field names: each document's shape (every
//! field path with its JSON type, arrays merged over their elements, map keys folded) is
//! snapshot-tested against a real agent with a real service. Values are not part of a shape,
//! so the snapshots do not depend on the host or the time.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
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
             [health]\nhttp = \"/\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\ngrace = \"0s\"\n[stop]\ndrain = \"0s\"\n",
            binary("strata-test-server").display()
        ),
    )
    .expect("spec");
    let path = spec.to_str().expect("path");
    insta::assert_snapshot!(
        "apply_dry_run",
        shape(&json(&agent, &["apply", path, "--dry-run", "-o", "json"]))
    );
    insta::assert_snapshot!(
        "apply",
        shape(&json(&agent, &["apply", path, "-o", "json"]))
    );
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
        let mut doc = json(&agent, &full);
        if let Some(fields) = doc.as_object_mut() {
            // Pressure stall information exists only where the kernel has PSI.
            fields.remove("pressure");
        }
        insta::assert_snapshot!(name, shape(&doc));
    }
    insta::assert_snapshot!(
        "logs",
        shape(&json_lines(
            &agent,
            &["logs", "web", "--lines", "5", "-o", "json"]
        ))
    );
    insta::assert_snapshot!(
        "access_log",
        shape(&json_lines(&agent, &["access-log", "web", "-o", "json"]))
    );
    insta::assert_snapshot!(
        "remove",
        shape(&json(&agent, &["remove", "web", "-o", "json"]))
    );
}
