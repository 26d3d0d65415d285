//! End to end: the Ansible role `assets/ansible/roles/strata_agent`, run by the real
//! `ansible-playbook` over ssh against three "hosts" that are network namespaces, each with
//! its own `sshd` (tests/src/sshd.rs), each installing into its own `--root`. The first run
//! installs the binaries, config, TLS files and a token; a second run and a `--check` run
//! report no change; then the installed agents are started in their namespaces from the
//! installed config and `strata members` sees one cluster of three.

use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use strata_tests::netns::TestNet;
use strata_tests::sshd::{self, Sshd};
use strata_tests::{AgentOptions, AgentProcess, binary, prereq, strata, wait_until};

const KEY: &str = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
/// The read token the role installs on every host.
const TOKEN: &str = "3f1c0c4f6f1e4b0c9e5a7d2b8c6a4e1f0d3b5a7c9e2f4d6b";
/// Bound on one `ansible-playbook` run.
const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(180);
const HOSTS: usize = 3;

fn under(root: &Path, host_path: &str) -> PathBuf {
    root.join(host_path.trim_start_matches('/'))
}

fn ansible_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/ansible")
}

fn agent_cmd(args: &[&str]) {
    let out = Command::new(binary("strata-agent"))
        .args(args)
        .env_remove("STRATA_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("strata-agent runs");
    assert!(
        out.status.success(),
        "strata-agent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The inventory: one host per namespace, each with its own root, TLS pair and remote tmp.
fn inventory(net: &TestNet, tmp: &Path, pki: &Path) -> serde_json::Value {
    let mut hosts = serde_json::Map::new();
    for (i, node) in net.nodes.iter().enumerate() {
        let name = format!("n{}", i + 1);
        hosts.insert(
            name.clone(),
            json!({
                "ansible_host": node.ip.to_string(),
                "ansible_remote_tmp": tmp.join("remote-tmp").join(&name),
                "strata_agent_root": tmp.join("roots").join(&name),
                "strata_agent_grpc_addr": format!("{}:7700", node.ip),
                "strata_agent_tls_cert_src": pki.join(format!("{name}.pem")),
                "strata_agent_tls_key_src": pki.join(format!("{name}-key.pem")),
            }),
        );
    }
    json!({
        "strata_agents": {
            "hosts": hosts,
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": tmp.join("client_key"),
                "ansible_ssh_args": format!(
                    "-o ControlMaster=auto -o ControlPersist=30s -o ControlPath={}",
                    control_path(tmp).display()
                ),
                "ansible_ssh_common_args": format!(
                    "-o UserKnownHostsFile={} -o StrictHostKeyChecking=no -o BatchMode=yes \
                     -o IdentitiesOnly=yes -o ConnectTimeout=5",
                    tmp.join("known_hosts").display()
                ),
                "ansible_python_interpreter": "/usr/bin/python3",
                "strata_agent_binary_dir": tmp.join("bin"),
                "strata_agent_gossip_key": KEY,
                "strata_agent_tls_ca_src": pki.join("ca.pem"),
                "strata_agent_tokens": [{"name": "test", "role": "read", "secret": TOKEN}],
            }
        }
    })
}

/// Where ssh keeps the connection to each host open between tasks and runs (`%h`: its IP).
fn control_path(tmp: &Path) -> PathBuf {
    tmp.join("cp-%h")
}

/// The ssh connections Ansible left open (ControlPersist); dropped, each is closed with
/// `ssh -O exit`, so nothing of the test outlives it.
struct ControlMasters<'a>(Vec<String>, &'a Path);

impl Drop for ControlMasters<'_> {
    fn drop(&mut self) {
        for host in &self.0 {
            let _ = Command::new("ssh")
                .arg("-o")
                .arg(format!("ControlPath={}", control_path(self.1).display()))
                .args(["-O", "exit", host])
                .stdin(Stdio::null())
                .output();
        }
    }
}

/// Stripped copies of the built `strata-agent` and `strata-shim` in `dir`: what the role
/// ships over ssh to three hosts is then tens of megabytes, not hundreds.
fn strip_binaries(dir: &Path) {
    std::fs::create_dir_all(dir).expect("bin dir");
    for name in ["strata-agent", "strata-shim"] {
        let out = Command::new("strip")
            .arg("-o")
            .arg(dir.join(name))
            .arg(binary(name))
            .output()
            .expect("strip runs");
        assert!(
            out.status.success(),
            "strip {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `ansible-playbook -f 3 -i INVENTORY site.yml EXTRA...` within [`PLAYBOOK_TIMEOUT`]
/// (its process group killed after that) and returns its output and how long it took.
fn playbook(tmp: &Path, extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let stdout = tmp.join("ansible.out");
    let stderr = tmp.join("ansible.err");
    let mut child = Command::new("ansible-playbook")
        .args(["-f", "3", "-i"])
        .arg(tmp.join("inventory.yml"))
        .arg(ansible_dir().join("site.yml"))
        .args(extra)
        .env("ANSIBLE_CONFIG", ansible_dir().join("ansible.cfg"))
        .env("ANSIBLE_HOME", tmp.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", tmp.join("ansible-local"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "False")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_TIMEOUT", "10")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("ansible-playbook starts");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ansible-playbook") {
            break status;
        }
        if started.elapsed() > PLAYBOOK_TIMEOUT {
            if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.wait();
            panic!(
                "ansible-playbook did not finish within {PLAYBOOK_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&stdout).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: std::fs::read(&stdout).unwrap_or_default(),
        stderr: std::fs::read(&stderr).unwrap_or_default(),
    };
    (out, started.elapsed())
}

/// The PLAY RECAP's counters per host: `n1 : ok=7 changed=4 unreachable=0 failed=0 ...`.
fn recap(out: &Output) -> BTreeMap<String, BTreeMap<String, u32>> {
    let text = String::from_utf8_lossy(&out.stdout);
    let tail = text.split("PLAY RECAP").nth(1).unwrap_or("");
    tail.lines()
        .filter_map(|line| {
            let (host, counters) = line.split_once(" : ")?;
            let counters = counters
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect();
            Some((host.trim().to_string(), counters))
        })
        .collect()
}

/// Asserts the run succeeded on every host, and `changed` says whether it may change things.
fn assert_run(out: &Output, what: &str, changes: bool) {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    assert!(
        !text.contains(KEY),
        "{what} logged the cluster key:\n{text}"
    );
    assert!(!text.contains(TOKEN), "{what} logged the token:\n{text}");
    let recap = recap(out);
    assert_eq!(recap.len(), HOSTS, "{what}: recap of every host:\n{text}");
    for (host, counters) in &recap {
        let get = |k: &str| counters.get(k).copied().unwrap_or(u32::MAX);
        assert_eq!(
            (get("failed"), get("unreachable")),
            (0, 0),
            "{what} on {host}:\n{text}"
        );
        if changes {
            assert!(
                get("changed") > 0,
                "{what} changed nothing on {host}:\n{text}"
            );
        } else {
            assert_eq!(get("changed"), 0, "{what} changed {host}:\n{text}");
        }
    }
}

#[test]
fn the_role_installs_three_hosts_over_ssh_idempotently_into_one_cluster() {
    for program in [
        prereq::ANSIBLE_PLAYBOOK,
        prereq::SSHD,
        prereq::SSH_KEYGEN,
        prereq::SSH,
        prereq::STRIP,
    ] {
        if !program.check() {
            return;
        }
    }
    // Locals drop in reverse: agents, then sshds, then the namespaces, then the temp dir.
    let tmp = tempfile::tempdir().expect("temp dir");
    let t = tmp.path();
    let Some(net) = TestNet::create(HOSTS).expect("test network") else {
        return;
    };
    sshd::keygen(&t.join("client_key")).expect("client key");
    strip_binaries(&t.join("bin"));
    let sshds: Vec<Sshd> = net
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            Sshd::start(
                &node.name,
                node.ip,
                &t.join(format!("sshd{}", i + 1)),
                &t.join("client_key.pub"),
            )
            .expect("sshd starts")
        })
        .collect();
    let masters = ControlMasters(net.nodes.iter().map(|n| n.ip.to_string()).collect(), t);

    let pki = t.join("pki");
    let p = pki.to_str().expect("utf-8 temp path");
    agent_cmd(&["tls", "ca", "--dir", p, "--name", "ansible-test"]);
    for (i, node) in net.nodes.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let ip = node.ip.to_string();
        agent_cmd(&[
            "tls", "issue", "--agent", &name, "--ca-dir", p, "--dir", p, "--san", &ip,
        ]);
    }
    let roots: Vec<PathBuf> = (1..=HOSTS)
        .map(|i| t.join("roots").join(format!("n{i}")))
        .collect();
    for root in &roots {
        std::fs::create_dir_all(root).expect("root dir");
    }
    std::fs::write(
        t.join("inventory.yml"),
        inventory(&net, t, &pki).to_string(),
    )
    .expect("inventory");

    let (first, took_first) = playbook(t, &[]);
    assert_run(&first, "the first run", true);
    for (i, root) in roots.iter().enumerate() {
        let config = std::fs::read_to_string(under(root, "/etc/strata/agent.toml"))
            .expect("installed config");
        let others: Vec<String> = net
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("\"{}:7701\"", n.ip))
            .collect();
        for line in [
            format!("node_name = \"n{}\"", i + 1),
            format!("gossip_addr = \"{}:7701\"", net.nodes[i].ip),
            format!("join = [{}]", others.join(", ")),
            "tls_cert = \"/etc/strata/tls/agent.pem\"".to_string(),
        ] {
            assert!(
                config.lines().any(|l| l == line),
                "{line} not in:\n{config}"
            );
        }
        for file in [
            "/usr/local/bin/strata-agent",
            "/usr/local/bin/strata-shim",
            "/etc/strata/tls/agent-key.pem",
            "/etc/strata/tls/ca.pem",
            "/var/lib/strata/tokens.toml",
        ] {
            assert!(
                under(root, file).is_file(),
                "{file} missing under n{}",
                i + 1
            );
        }
        let key_mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(under(root, "/etc/strata/tls/agent-key.pem"))
                .expect("key")
                .permissions(),
        );
        assert_eq!(key_mode & 0o777, 0o600, "the TLS key is private");
    }

    let (second, took_second) = playbook(t, &[]);
    assert_run(&second, "the second run", false);
    let (check, took_check) = playbook(t, &["--check"]);
    assert_run(&check, "a --check run", false);
    println!(
        "ansible-playbook -f 3 over ssh: first run {took_first:.1?}, second {took_second:.1?}, \
         --check {took_check:.1?}"
    );
    drop(masters);
    drop(sshds);

    // The installed agents, each in its namespace, from the installed config; the paths it
    // names (data, services, TLS) are the host's, so flags point them under the root.
    let agents: Vec<AgentProcess> = roots
        .iter()
        .enumerate()
        .map(|(i, root)| start_installed(&net, i, root))
        .collect();
    let ca = pki.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 temp path");
    let members = |agent: &AgentProcess| -> Vec<String> {
        let out = strata(
            &agent.grpc.to_string(),
            &["--ca", ca, "--token", TOKEN, "members", "-o", "json"],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let mut alive: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["status"] == "alive")
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        alive.sort();
        alive
    };
    let want = vec!["n1".to_string(), "n2".into(), "n3".into()];
    for agent in &agents {
        wait_until(
            "every agent sees all three alive",
            Duration::from_secs(30),
            || members(agent) == want,
        );
    }
}

/// Starts the agent installed under `root` in node `i`'s namespace.
fn start_installed(net: &TestNet, i: usize, root: &Path) -> AgentProcess {
    let installed =
        std::fs::read_to_string(under(root, "/etc/strata/agent.toml")).expect("installed config");
    let data_dir = under(root, "/var/lib/strata");
    // A cgroup root of this test's own, removed by the harness when the agent is dropped.
    let cgroup_root = format!("strata-test-{}-ansible-{i}", std::process::id());
    std::fs::write(data_dir.join("test-cgroup-root"), &cgroup_root).expect("cgroup root file");
    let config = data_dir.join("test-agent.toml");
    std::fs::write(
        &config,
        format!("{installed}cgroup_root = \"{cgroup_root}\"\n"),
    )
    .expect("config");
    let path = |host_path: &str| under(root, host_path).display().to_string();
    let extra_args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--grpc-addr".into(),
        format!("{}:7700", net.nodes[i].ip),
        "--http-addr".into(),
        "127.0.0.1:7702".into(),
        "--services-dir".into(),
        path("/etc/strata/services.d"),
        "--tls-cert".into(),
        path("/etc/strata/tls/agent.pem"),
        "--tls-key".into(),
        path("/etc/strata/tls/agent-key.pem"),
        "--tls-ca".into(),
        path("/etc/strata/tls/ca.pem"),
    ];
    AgentProcess::start(
        &data_dir,
        &AgentOptions {
            binary: Some(under(root, "/usr/local/bin/strata-agent")),
            prefix: net.exec_prefix(i),
            extra_args,
            ..Default::default()
        },
    )
    .expect("the installed agent starts in its namespace")
}
