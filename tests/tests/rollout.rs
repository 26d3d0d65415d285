//! Health-gated operations under client traffic: a real service with an HTTP check behind
//! the agent's frontend, a client loop sending requests through it, and each routine
//! operation (restart, new version, version with scale-down, scale up and down, a version
//! that never passes) with zero failed requests. And one address: instances are told the
//! address the catalog publishes, and their checks dial it.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use strata_tests::load::Load;
use strata_tests::{AgentOptions, AgentProcess, binary, closed_port, start_test_agent, wait_until};

/// How long one client loop runs at most.
const LOOP_TIME: Duration = Duration::from_secs(180);
/// How long an operation may take to converge.
const CONVERGE: Duration = Duration::from_secs(90);

/// A client loop through `frontend`: one thread, one request per connection every 5 ms.
fn traffic(frontend: SocketAddr) -> Load {
    Load::start(frontend, 1, Duration::from_millis(5), LOOP_TIME)
}

/// Ends a client loop and asserts that every request succeeded (and that there were some).
fn assert_no_failures(load: Load, during: &str) {
    let report = load.stop();
    eprintln!("{during}: {} ok, {} failed", report.ok, report.failed);
    assert_eq!(
        report.failed,
        0,
        "{during}: {} of {} requests failed: {:?}",
        report.failed,
        report.ok + report.failed,
        report.first_failures
    );
    assert!(
        report.ok >= 50,
        "{during}: only {} requests were sent",
        report.ok
    );
}

/// One GET through the frontend on its own connection; Ok on a 200.
fn request(frontend: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&frontend, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if response.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!("answer: {:?}", response.lines().next()))
    }
}

/// A test agent, its dir, and the frontend port of its `web` service.
struct Fixture {
    agent: AgentProcess,
    dir: tempfile::TempDir,
    frontend: u16,
}

impl Fixture {
    fn start(name: &str) -> Fixture {
        let (dir, agent) = start_test_agent(name);
        Fixture {
            agent,
            dir,
            frontend: closed_port(),
        }
    }

    /// `web` at `version` with `instances`, an HTTP check, and a short update policy;
    /// `health_file` (when given) holds the status code its instances answer with. The drain
    /// is the default 2 s: the test server dies on SIGTERM with whatever waits in its accept
    /// backlog, and on a loaded machine 1 s did not always see that backlog served.
    fn spec(&self, version: &str, instances: u32, health_file: Option<&Path>) -> String {
        let server = binary("strata-test-server").display().to_string();
        let env = health_file
            .map(|f| format!("env = {{ HEALTH_FILE = \"{}\" }}\n", f.display()))
            .unwrap_or_default();
        format!(
            "name = \"web\"\nversion = \"{version}\"\ninstances = {instances}\n\
             command = [\"/bin/sh\", \"-c\", \"BIND_ADDR=$STRATA_IP exec {server}\"]\n{env}\
             [ports.http]\nfrontend = {}\n\
             [health]\nhttp = \"/\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 2\nfall = 2\ngrace = \"0s\"\n\
             [stop]\ndrain = \"2s\"\n\
             [update]\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"8s\"\n",
            self.frontend
        )
    }

    fn apply(&self, text: &str) -> Value {
        let path = self.dir.path().join("web.toml");
        std::fs::write(&path, text).expect("write spec");
        self.agent
            .json(&["apply", path.to_str().expect("path"), "-o", "json"])
    }

    fn service(&self) -> Value {
        self.agent.json(&["service", "web", "-o", "json"])
    }

    fn frontend(&self) -> SocketAddr {
        SocketAddr::new(self.agent.balancer, self.frontend)
    }

    /// Waits until `web` runs exactly `count` instances, all of `version` and passing, and
    /// the frontend answers; returns their pids.
    fn converged(&self, count: usize, version: &str) -> Vec<i64> {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let last = self.service();
            let instances = last["instances"].as_array().cloned().unwrap_or_default();
            if instances.len() == count
                && instances
                    .iter()
                    .all(|i| i["version"] == version && i["health"] == "passing")
                && request(self.frontend()).is_ok()
            {
                return instances.iter().filter_map(|i| i["pid"].as_i64()).collect();
            }
            assert!(
                Instant::now() < deadline,
                "web did not converge to {count} x {version}: {last:#}\nagent stderr:\n{}",
                self.agent.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        let v = self
            .agent
            .json(&["events", "--kind", kind, "--limit", "100", "-o", "json"]);
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Runs `strata ARGS` and asserts it succeeded; returns its stdout.
    fn strata_ok(&self, args: &[&str]) -> String {
        let out = self.agent.strata(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn restart_versions_and_scaling_of_two_instances_drop_no_request() {
    let f = Fixture::start("rollout-pair");
    f.apply(&f.spec("1", 2, None));
    let first = f.converged(2, "1");

    let load = traffic(f.frontend());
    let reply = f.strata_ok(&["restart", "web"]);
    assert!(reply.contains("web restarted"), "{reply}");
    let restarted = f.converged(2, "1");
    assert_no_failures(load, "strata restart of 2 instances");
    assert!(
        restarted.iter().all(|p| !first.contains(p)),
        "every instance was replaced: {first:?} -> {restarted:?}"
    );

    let load = traffic(f.frontend());
    let reply = f.apply(&f.spec("2", 2, None));
    assert!(
        reply["changes"]
            .as_array()
            .is_some_and(|c| c.iter().any(|l| l
                .as_str()
                .is_some_and(|l| l.starts_with("replacing 2 instance(s)")))),
        "{reply}"
    );
    f.converged(2, "2");
    assert_no_failures(load, "a new version of 2 instances");

    let load = traffic(f.frontend());
    f.apply(&f.spec("3", 1, None));
    f.converged(1, "3");
    assert_no_failures(load, "a new version that scales 2 -> 1");

    let load = traffic(f.frontend());
    f.strata_ok(&["scale", "web", "2"]);
    f.converged(2, "3");
    f.strata_ok(&["scale", "web", "6"]);
    f.converged(6, "3");
    f.strata_ok(&["scale", "web", "2"]);
    f.converged(2, "3");
    assert_no_failures(load, "scale 2 -> 6 -> 2");
    assert!(f.agent.strata(&["remove", "web"]).status.success());
}

#[test]
fn a_single_instance_restarts_and_upgrades_without_a_failed_request() {
    let f = Fixture::start("rollout-single");
    f.apply(&f.spec("1", 1, None));
    let first = f.converged(1, "1");

    let load = traffic(f.frontend());
    f.strata_ok(&["restart", "web"]);
    let restarted = f.converged(1, "1");
    assert_no_failures(load, "restart of a single instance");
    assert_ne!(first, restarted, "a new process serves");
    let index = f.service()["instances"][0]["index"].as_u64();
    assert_eq!(index, Some(2), "the surge instance took a new index");

    let load = traffic(f.frontend());
    f.apply(&f.spec("2", 1, None));
    f.converged(1, "2");
    assert_no_failures(load, "a new version of a single instance");
    assert!(f.agent.strata(&["remove", "web"]).status.success());
}

#[test]
fn a_version_that_never_passes_stops_with_the_old_instances_serving() {
    let f = Fixture::start("rollout-deadline");
    f.apply(&f.spec("1", 2, None));
    let old = f.converged(2, "1");
    let broken = f.dir.path().join("broken-health");
    std::fs::write(&broken, "503").expect("write health file");

    let load = traffic(f.frontend());
    f.apply(&f.spec("2", 2, Some(&broken)));
    wait_until("the update to be given up", Duration::from_secs(60), || {
        !f.events("service.update_failed").is_empty()
    });
    let event = f.events("service.update_failed").remove(0);
    let message = event["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("did not pass for 1s within the healthy deadline of 8s")
            && message.contains("2 instance(s) left as they were"),
        "{message}"
    );
    // The failed instance is drained and stopped; the old ones never were.
    let still = f.converged(2, "1");
    assert_eq!(still, old, "the old instances kept running");
    assert_no_failures(load, "a version that never passes");

    // A restart now replaces the old instances with the stored (broken) spec: it fails
    // the same way, and says so in its reply.
    let out = f.agent.strata(&["restart", "web"]);
    assert!(!out.status.success(), "a restart that cannot finish fails");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("update of web stopped"), "{stderr}");
    assert_eq!(f.converged(2, "1"), old);

    // Fixed: the next apply goes through.
    let load = traffic(f.frontend());
    f.apply(&f.spec("3", 2, None));
    f.converged(2, "3");
    assert_no_failures(load, "the fixed version");
    assert!(f.agent.strata(&["remove", "web"]).status.success());
}

#[test]
fn instances_are_told_the_published_address_and_checks_dial_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = AgentProcess::start(
        &dir.path().join("data"),
        &AgentOptions {
            node_name: Some("rollout-addr".into()),
            extra_args: vec!["--advertise-addr".into(), "127.0.0.2:7701".into()],
            ..Default::default()
        },
    )
    .expect("agent starts");
    let server = binary("strata-test-server").display().to_string();
    let frontend = closed_port();
    let spec = |address: &str| {
        format!(
            "name = \"bound\"\ninstances = 1\n\
             command = [\"/bin/sh\", \"-c\", \"echo ip=$STRATA_IP addr=$STRATA_ADDR_ADMIN_API; BIND_ADDR=$STRATA_IP exec {server}\"]\n\
             [ports.admin-api]\nfrontend = {frontend}\n\
             [health]\nhttp = \"/\"\ninterval = \"100ms\"\ntimeout = \"90ms\"\nrise = 1\nfall = 1\ngrace = \"0s\"\n{address}"
        )
    };
    let path = dir.path().join("bound.toml");
    std::fs::write(&path, spec("")).expect("write spec");
    agent.json(&["apply", path.to_str().expect("path"), "-o", "json"]);
    let mut service = Value::Null;
    wait_until("the service bound to $STRATA_IP to pass", CONVERGE, || {
        service = agent.json(&["service", "bound", "-o", "json"]);
        service["instances"][0]["health"] == "passing"
    });
    let port = service["instances"][0]["ports"]["admin-api"]
        .as_u64()
        .expect("a backend port");
    let logs = String::from_utf8_lossy(&agent.strata(&["logs", "bound"]).stdout).into_owned();
    assert!(
        logs.contains(&format!("ip=127.0.0.2 addr=127.0.0.2:{port}")),
        "{logs}"
    );
    assert!(
        logs.contains(&format!("serving 127.0.0.2:{port}")),
        "{logs}"
    );
    // Traffic goes where the check went: the balancer dials the published address.
    assert!(request(SocketAddr::new(agent.balancer, frontend)).is_ok());
    // A check told to dial loopback finds nothing there: it is the address that is checked.
    std::fs::write(&path, spec("address = \"127.0.0.1\"\n")).expect("write spec");
    agent.json(&["apply", path.to_str().expect("path"), "-o", "json"]);
    wait_until("the loopback check to fail", CONVERGE, || {
        let s = agent.json(&["service", "bound", "-o", "json"]);
        s["instances"][0]["health"] == "critical"
            && s["instances"][0]["health_output"]
                .as_str()
                .is_some_and(|o| o.contains(&format!("127.0.0.1:{port}")))
    });
    assert_eq!(
        agent.json(&["service", "bound", "-o", "json"])["health_check"],
        "http / on port admin-api at 127.0.0.1 every 100ms"
    );
    assert!(agent.strata(&["remove", "bound"]).status.success());
}
