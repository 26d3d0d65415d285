//! End to end: conflicting input is refused with the owner named and changes nothing.
//! Services-dir files own their names: a name in two files is applied from neither, `apply`
//! and `remove` through the API are refused naming the file, an agent restart or a reload
//! with unchanged files restarts nothing, and a file removed leaves its service running under
//! the API. A frontend port served for another service anywhere in the cluster, one of the
//! agent's own ports, one inside the backend range or repeated in a spec is refused, and so
//! are NUL bytes in what a program is given.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use strata_tests::{
    AgentOptions, AgentProcess, closed_port, start_named_agent, wait_until, web_spec,
};

fn services_dir(agent: &AgentProcess) -> PathBuf {
    let dir = agent.data_dir.join("services.d");
    std::fs::create_dir_all(&dir).expect("services dir");
    dir
}

/// The pids of `service`'s instances once `count` of them pass.
fn passing_pids(agent: &AgentProcess, service: &str, count: usize) -> Vec<i64> {
    let mut pids = Vec::new();
    wait_until(
        &format!("{count} passing instance(s) of {service}"),
        Duration::from_secs(30),
        || {
            let out = agent.strata(&["service", service, "-o", "json"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let instances = v["instances"].as_array().cloned().unwrap_or_default();
            pids = instances.iter().filter_map(|i| i["pid"].as_i64()).collect();
            instances.len() == count && instances.iter().all(|i| i["health"] == "passing")
        },
    );
    pids.sort_unstable();
    pids
}

/// The messages of every event of `kind` so far.
fn events(agent: &AgentProcess, kind: &str) -> Vec<String> {
    let v = agent.json(&["events", "--kind", kind, "-o", "json"]);
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Waits for the `count`th `agent.reloaded` event (the journal keeps them across agent
/// restarts) and returns its message.
fn reloaded(agent: &AgentProcess, count: usize) -> String {
    let mut found = String::new();
    wait_until("the reload event", Duration::from_secs(15), || {
        let all = events(agent, "agent.reloaded");
        found = all.last().cloned().unwrap_or_default();
        all.len() >= count
    });
    found
}

fn reload(agent: &AgentProcess, count: usize) -> String {
    agent.signal(rustix::process::Signal::HUP).expect("SIGHUP");
    reloaded(agent, count)
}

/// Asserts that an event of `kind` names `file` and says `what`.
fn assert_event(agent: &AgentProcess, kind: &str, file: &Path, what: &str) {
    let all = events(agent, kind);
    let file = file.display().to_string();
    assert!(
        all.iter().any(|m| m.contains(&file) && m.contains(what)),
        "{kind}: {all:?}"
    );
}

/// Stops the agent leaving its services running and starts it again on the same data dir.
fn restart(agent: AgentProcess, data: &Path, options: &AgentOptions) -> AgentProcess {
    agent
        .terminate_keeping_services(Duration::from_secs(20))
        .expect("agent stops");
    AgentProcess::start(data, options).expect("agent restarts")
}

/// `strata apply FILE` with `text` written to `dir/file`.
fn apply(agent: &AgentProcess, dir: &Path, file: &str, text: &str) -> Output {
    let path = dir.join(file);
    std::fs::write(&path, text).expect("write spec");
    agent.strata(&["apply", path.to_str().expect("path")])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn services_dir_files_own_their_names_and_unchanged_files_restart_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let options = AgentOptions {
        node_name: Some("owner".into()),
        ..Default::default()
    };
    let agent = AgentProcess::start(&data, &options).expect("agent");
    let services = services_dir(&agent);
    let frontend = closed_port();
    let web = services.join("web.toml");
    std::fs::write(&web, web_spec("web", frontend, "instances = 2\n")).expect("spec");
    let message = reload(&agent, 1);
    assert!(message.contains("web created"), "{message}");
    let pids = passing_pids(&agent, "web", 2);

    // The API may not change or remove what a file owns; the reply names the file.
    let v2 = web_spec("web", frontend, "instances = 2\nversion = \"2\"\n");
    let out = apply(&agent, dir.path(), "web-v2.toml", &v2);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "cannot apply service \"web\" through the API: the services-dir file {} defines it",
            web.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("edit that file, then reload the agent"),
        "{err}"
    );
    let out = agent.strata(&["remove", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&web.display().to_string()),
        "{}",
        stderr(&out)
    );

    // The same name in a second file: applied from neither, both named, nothing restarts.
    let copy = services.join("web-copy.toml");
    std::fs::write(&copy, &v2).expect("spec");
    let message = reload(&agent, 2);
    for file in [&web, &copy] {
        assert!(message.contains(&file.display().to_string()), "{message}");
    }
    assert!(
        message.contains("defined by more than one services-dir file"),
        "{message}"
    );
    assert_event(&agent, "service.invalid", &web, "keeps its current spec");
    assert_eq!(passing_pids(&agent, "web", 2), pids);
    let service = agent.json(&["service", "web", "-o", "json"]);
    assert_eq!(service["version"], "0", "the last good spec stays");

    // An agent restart with the duplicate still there applies neither and restarts nothing.
    let agent = restart(agent, &data, &options);
    assert_eq!(passing_pids(&agent, "web", 2), pids);
    assert_eq!(
        agent.json(&["service", "web", "-o", "json"])["version"],
        "0"
    );

    // The duplicate gone: unchanged, and a restart with an unchanged dir restarts nothing.
    std::fs::remove_file(&copy).expect("remove copy");
    let message = reload(&agent, 3);
    assert!(message.contains("(1 unchanged)"), "{message}");
    let agent = restart(agent, &data, &options);
    assert_eq!(passing_pids(&agent, "web", 2), pids);
    let message = reload(&agent, 4);
    assert!(message.contains("(1 unchanged)"), "{message}");
    assert_eq!(passing_pids(&agent, "web", 2), pids);

    // The file removed: the service keeps running, now under the API, and says so.
    std::fs::remove_file(&web).expect("remove file");
    reload(&agent, 5);
    assert_event(&agent, "service.released", &web, "keeps running");
    assert_eq!(passing_pids(&agent, "web", 2), pids);
    let out = agent.strata(&["remove", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The backend port range of a test agent, from its config.
fn backend_range(agent: &AgentProcess) -> (u16, u16) {
    let config = std::fs::read_to_string(agent.data_dir.join("test-agent.toml")).expect("config");
    let line = config
        .lines()
        .find_map(|l| l.strip_prefix("port_range = "))
        .expect("port_range");
    let (first, last) = line.trim_matches('"').split_once('-').expect("a range");
    (first.parse().expect("first"), last.parse().expect("last"))
}

#[test]
fn frontends_taken_anywhere_in_the_cluster_or_by_the_agent_and_nul_bytes_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = start_named_agent(dir.path(), "n1", None);
    let n2 = start_named_agent(dir.path(), "n2", Some(&n1));
    let frontend = closed_port();
    let out = apply(
        &n1,
        dir.path(),
        "alpha.toml",
        &web_spec("alpha", frontend, ""),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(
        "n2's catalog has alpha from n1",
        Duration::from_secs(30),
        || {
            let catalog = n2.json(&["catalog", "-o", "json"]);
            catalog["records"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| {
                    r["name"] == "n1"
                        && r["services"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|s| s["name"] == "alpha")
                })
        },
    );

    let refused = |text: &str, expected: &str| {
        let out = apply(&n2, dir.path(), "beta.toml", text);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{expected}: {err}");
        assert!(err.contains(expected), "{expected}: {err}");
    };
    refused(
        &web_spec("beta", frontend, ""),
        &format!(
            "ports.http.frontend: frontend {frontend} is already served for service \"alpha\" \
             on node \"n1\""
        ),
    );
    refused(
        &web_spec("beta", n2.grpc.port(), ""),
        &format!(
            "ports.http.frontend: port {} is this agent's own gRPC API port",
            n2.grpc.port()
        ),
    );
    refused(
        &web_spec("beta", n2.dns.port(), ""),
        "is this agent's own DNS port",
    );
    let (first, last) = backend_range(&n2);
    refused(
        &web_spec("beta", first + 1, ""),
        &format!("is inside the agent's backend port range {first}-{last}"),
    );
    let other = closed_port();
    refused(
        &format!(
            "{}[ports.admin]\nfrontend = {other}\n",
            web_spec("beta", other, "")
        ),
        &format!("port {other} is also the frontend of port"),
    );
    let plain = "name = \"beta\"\ncommand = [\"/bin/sleep\", \"1000\"]\n";
    refused(
        &plain.replace("\"1000\"", "\"10\\u000000\""),
        "beta.toml:2: command: argument 2 (\"10\\000\") contains a NUL byte",
    );
    refused(
        &format!("{plain}env = {{ GREETING = \"hi\\u0000there\" }}\n"),
        "beta.toml:3: env.GREETING: the value contains a NUL byte",
    );
    refused(
        &format!("{plain}workdir = \"/tmp\\u0000/x\"\n"),
        "beta.toml:3: workdir: the path contains a NUL byte",
    );
    assert_eq!(
        n2.json(&["services", "-o", "json"])["services"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "nothing refused was applied"
    );

    // Another port is fine, and alpha on n2 (the same service) may share its frontend.
    let out = apply(&n2, dir.path(), "beta.toml", &web_spec("beta", other, ""));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = apply(
        &n2,
        dir.path(),
        "alpha.toml",
        &web_spec("alpha", frontend, ""),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}
