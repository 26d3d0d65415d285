//! Damaged desired state never loses or duplicates a running instance: with a service of two
//! instances running, the agent is stopped, one piece of its state is damaged (the stored
//! spec with and without its previous copy, the desired state, one `instance.json`, the whole
//! `instances/` directory, the whole service directory), and the agent starts again. Each time the same processes run, no
//! more and no fewer, and an event names the damaged file; a service held unmanaged is
//! managed again by `strata apply`.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use strata_tests::{AgentOptions, AgentProcess, all_pids, closed_port, wait_until, web_spec};

/// argv of a process, NUL-split.
fn argv(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Every process of the service: its shims (found by argv naming its instance directories)
/// and the services they run (their children).
fn processes_of(data: &Path, service: &str) -> BTreeSet<i32> {
    let dir = data.join("services").join(service).join("instances");
    let needle = format!("{}/", dir.display());
    let pids = all_pids();
    let shims: BTreeSet<i32> = pids
        .iter()
        .copied()
        .filter(|pid| {
            let args = argv(*pid);
            args.first().is_some_and(|a| a.ends_with("/strata-shim"))
                && args.get(1).is_some_and(|a| a.starts_with(&needle))
        })
        .collect();
    let children = pids.iter().copied().filter(|p| shims.contains(&ppid(*p)));
    shims.iter().copied().chain(children).collect()
}

/// The service's instance pids as the agent reports them, sorted.
fn reported_pids(agent: &AgentProcess) -> Vec<i64> {
    let service: Value = agent.json(&["service", "web", "-o", "json"]);
    let mut pids: Vec<i64> = service["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|i| i["pid"].as_i64())
        .filter(|p| *p > 0)
        .collect();
    pids.sort_unstable();
    pids
}

fn events(agent: &AgentProcess, kind: &str) -> Vec<Value> {
    let events: Value = agent.json(&["events", "-o", "json", "--kind", kind, "--limit", "1000"]);
    events["events"].as_array().cloned().unwrap_or_default()
}

/// Waits for an event of `kind` whose message names `file`.
fn wait_for_event(agent: &AgentProcess, kind: &str, file: &Path) -> Value {
    let file = file.display().to_string();
    let mut found = Value::Null;
    wait_until(
        &format!("a {kind} event naming {file}"),
        Duration::from_secs(30),
        || {
            found = events(agent, kind)
                .into_iter()
                .find(|e| {
                    e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(&file))
                })
                .unwrap_or_default();
            !found.is_null()
        },
    );
    found
}

fn apply(agent: &AgentProcess, spec: &Path) {
    let out = agent.strata(&["apply", spec.to_str().expect("path"), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Overwrites bytes in the middle of a file, as a bad disk would.
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).expect("file to damage");
    let (at, len) = (bytes.len() / 2, bytes.len());
    for b in &mut bytes[at..(at + 8).min(len)] {
        *b = b'#';
    }
    std::fs::write(path, bytes).expect("damage");
}

struct Setup {
    agent: Option<AgentProcess>,
    options: AgentOptions,
    data: std::path::PathBuf,
    /// Processes of the service before each damage.
    processes: BTreeSet<i32>,
    reported: Vec<i64>,
    /// Last: dropped after the agent, which stops the services.
    _dir: tempfile::TempDir,
}

impl Setup {
    fn agent(&self) -> &AgentProcess {
        self.agent.as_ref().expect("agent")
    }

    /// Stops the agent (services keep running), damages with `how`, starts it again, and
    /// checks that the same processes run and the agent reports exactly them.
    fn restart_after(&mut self, what: &str, how: impl FnOnce(&Path)) {
        if let Some(agent) = self.agent.take() {
            agent
                .terminate_keeping_services(Duration::from_secs(30))
                .expect("the agent stops");
        }
        how(&self.data);
        let agent = AgentProcess::start(&self.data, &self.options)
            .unwrap_or_else(|e| panic!("the agent starts after {what}: {e:#}"));
        self.agent = Some(agent);
        let reported = &self.reported;
        let agent = self.agent();
        wait_until(
            &format!("web is supervised again after {what}"),
            Duration::from_secs(30),
            || reported_pids(agent) == *reported,
        );
        // Give a duplicate the time it would take to start, then count.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            processes_of(&self.data, "web"),
            self.processes,
            "{what}: the same processes run, none lost, none added"
        );
        assert_eq!(reported_pids(self.agent()), self.reported, "{what}");
    }
}

#[test]
fn damaged_state_loses_and_duplicates_no_instance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("agent");
    let options = AgentOptions {
        node_name: Some("state".into()),
        ..Default::default()
    };
    let agent = AgentProcess::start(&data, &options).expect("agent starts");
    let frontend = closed_port();
    let spec_a = dir.path().join("a.toml");
    std::fs::write(&spec_a, web_spec("web", frontend, "instances = 2\n")).expect("spec");
    apply(&agent, &spec_a);
    // A second apply (a catalog-only change, from another file) leaves previous copies of
    // both the spec and the desired state.
    let spec_b = dir.path().join("b.toml");
    let tagged = web_spec("web", frontend, "instances = 2\ntags = [\"b\"]\n");
    std::fs::write(&spec_b, tagged).expect("spec");
    apply(&agent, &spec_b);
    let reported = reported_pids(&agent);
    assert_eq!(reported.len(), 2);
    let processes = processes_of(&data, "web");
    assert_eq!(processes.len(), 4, "two shims and two services");
    let mut setup = Setup {
        agent: Some(agent),
        options,
        data: data.clone(),
        processes,
        reported,
        _dir: dir,
    };
    let service_dir = data.join("services/web");
    let spec_file = service_dir.join("spec.toml");
    let desired_file = service_dir.join("desired.json");

    // The spec, with a previous good copy: recovered from it.
    setup.restart_after("a damaged spec.toml", |_| damage(&spec_file));
    let event = wait_for_event(setup.agent(), "service.recovered", &spec_file);
    assert_eq!(event["severity"], "warning", "{event:#}");
    let service: Value = setup.agent().json(&["service", "web", "-o", "json"]);
    assert_eq!(
        service["tags"],
        serde_json::json!([]),
        "the previous spec runs"
    );

    // The desired state, with a previous good copy: recovered from it.
    setup.restart_after("a damaged desired.json", |_| damage(&desired_file));
    wait_for_event(setup.agent(), "service.recovered", &desired_file);

    // One instance record deleted: found by its shim and cgroup, adopted.
    let record = service_dir.join("instances/1/instance.json");
    setup.restart_after("a deleted instance.json", |_| {
        std::fs::remove_file(&record).expect("remove instance.json")
    });
    wait_for_event(setup.agent(), "service.rediscovered", &record);
    assert!(record.exists(), "the record is written again");

    // The whole instances directory deleted: both found and adopted.
    let instances = service_dir.join("instances");
    setup.restart_after("a deleted instances/ directory", |_| {
        std::fs::remove_dir_all(&instances).expect("remove instances/")
    });
    for index in [1, 2] {
        let record = instances.join(format!("{index}/instance.json"));
        wait_for_event(setup.agent(), "service.rediscovered", &record);
    }

    // The spec without a previous copy: held unmanaged, its instances still supervised.
    setup.restart_after("a damaged spec.toml without a previous copy", |_| {
        std::fs::remove_file(service_dir.join("spec.toml.prev")).expect("remove the copy");
        damage(&spec_file);
    });
    let event = wait_for_event(setup.agent(), "service.unmanaged", &spec_file);
    assert_eq!(event["severity"], "critical", "{event:#}");
    let service: Value = setup.agent().json(&["service", "web", "-o", "json"]);
    let why = service["unmanaged"].as_str().unwrap_or_default();
    assert!(why.contains("spec.toml"), "{service:#}");
    let list = setup.agent().strata(&["services"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("unmanaged"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    let refused = setup.agent().strata(&["restart", "web"]);
    assert!(
        !refused.status.success(),
        "nothing restarts while unmanaged"
    );

    // `strata apply` manages it again: the same instances become its instances.
    apply(setup.agent(), &spec_a);
    wait_for_event(setup.agent(), "service.readopted", &spec_a);
    let service: Value = setup.agent().json(&["service", "web", "-o", "json"]);
    assert_eq!(service["unmanaged"].as_str().unwrap_or_default(), "");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        processes_of(&data, "web"),
        setup.processes,
        "re-adopted, not replaced"
    );
    assert_eq!(reported_pids(setup.agent()), setup.reported);

    // The whole service directory deleted: its shims are found, the instances adopted and
    // held unmanaged; `strata apply` manages them again.
    setup.restart_after("a deleted service directory", |_| {
        std::fs::remove_dir_all(&service_dir).expect("remove services/web")
    });
    let event = wait_for_event(setup.agent(), "service.unmanaged", &service_dir);
    assert_eq!(event["severity"], "critical", "{event:#}");
    apply(setup.agent(), &spec_a);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        processes_of(&data, "web"),
        setup.processes,
        "re-adopted, not replaced"
    );
    assert_eq!(reported_pids(setup.agent()), setup.reported);
}
