//! The end-to-end harness: starts the real `strata-agent` binary on loopback ports it
//! picks itself (its services run under the real `strata-shim` beside it), runs the real
//! `strata` binary against it, and stops only what it started.
//!
//! The binaries come from the workspace's target directory: the README's test command
//! builds them (`cargo build --workspace --bins`) before `cargo test` runs.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod impair;
pub mod load;
pub mod netns;
pub mod prereq;
pub mod sshd;

/// How long an agent may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of a workspace binary (`strata-agent`, `strata-shim`, `strata`) built next to the test
/// executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/debug/deps/<test> -> target/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// `strata-agent` alone in `dir` (a hard link, or a copy across file systems): an agent
/// without the `strata-shim` that belongs beside it.
pub fn agent_without_shim(dir: &Path) -> PathBuf {
    let lone = dir.join("strata-agent");
    let agent = binary("strata-agent");
    if let Err(link) = std::fs::hard_link(&agent, &lone)
        && let Err(copy) = std::fs::copy(&agent, &lone)
    {
        panic!(
            "cannot link ({link}) or copy ({copy}) {} to {}",
            agent.display(),
            lone.display()
        );
    }
    lone
}

/// A running agent started by a test; dropped, it is stopped (SIGKILL if still running).
pub struct AgentProcess {
    child: Child,
    /// The gRPC address the agent bound.
    pub grpc: SocketAddr,
    /// The HTTP address the agent bound.
    pub http: SocketAddr,
    /// The gossip address the agent bound.
    pub gossip: SocketAddr,
    /// The DNS address (UDP and TCP) the agent bound.
    pub dns: SocketAddr,
    /// The address the agent's balancer serves frontend ports on.
    pub balancer: std::net::IpAddr,
    /// The node id the agent reported.
    pub node_id: String,
    /// The data dir the agent uses.
    pub data_dir: PathBuf,
    stderr_path: PathBuf,
    /// When set, dropping stops only the agent and leaves its services to the next agent.
    keep_services: bool,
}

/// Options for starting an agent.
#[derive(Debug, Clone, Default)]
pub struct AgentOptions {
    /// Node name (`--node-name`); the hostname when `None`.
    pub node_name: Option<String>,
    /// Extra arguments after `run`.
    pub extra_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// More lines for the config file the harness writes (`[api]\nrate_per_client = 20\n`);
    /// unused when `extra_args` names a `--config` of its own.
    pub config: String,
    /// A command the agent is started through, `PREFIX... strata-agent run ...`, such as
    /// [`netns::TestNet::exec_prefix`]. It must exec the agent in its own process (as
    /// `nsenter` and `ip netns exec` do), so that the pid the test holds is the agent's.
    pub prefix: Vec<String>,
    /// Descriptors the agent inherits as 3, 4, ... with their names, described the way
    /// systemd passes its fd store (`LISTEN_FDS`, `LISTEN_FDNAMES`).
    pub inherited_fds: Vec<(String, std::sync::Arc<std::os::fd::OwnedFd>)>,
    /// The agent binary to start instead of the build's own, such as a copy
    /// `strata-agent install` put under a `--root` (with its `strata-shim` beside it).
    pub binary: Option<PathBuf>,
}

impl AgentProcess {
    /// Starts `strata-agent run` on 127.0.0.1 with ports chosen by the kernel, using
    /// `data_dir`, and waits for its ready line.
    pub fn start(data_dir: &Path, options: &AgentOptions) -> Result<AgentProcess> {
        std::fs::create_dir_all(data_dir)?;
        // The agent runs its services under the shim next to it; name the build step if not.
        binary("strata-shim");
        let stderr_path = data_dir.join("agent.stderr.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)?;
        let agent = options
            .binary
            .clone()
            .unwrap_or_else(|| binary("strata-agent"));
        let mut cmd = match options.prefix.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&agent);
                cmd
            }
            None => Command::new(&agent),
        };
        cmd.arg("run").arg("--data-dir").arg(data_dir);
        for flag in ["--grpc-addr", "--http-addr"] {
            if !options.extra_args.iter().any(|a| a == flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        if !options.extra_args.iter().any(|a| a == "--config") {
            let config = data_dir.join("test-agent.toml");
            std::fs::write(&config, test_config(data_dir) + &options.config)?;
            cmd.arg("--config").arg(config);
        }
        if let Some(name) = &options.node_name {
            cmd.args(["--node-name", name]);
        }
        cmd.args(&options.extra_args)
            .envs(options.env.iter().cloned())
            .env_remove("STRATA_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if !options.inherited_fds.is_empty() {
            pass_descriptors(&mut cmd, &options.inherited_fds);
        }
        let mut child = cmd.spawn().context("cannot start strata-agent")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with("strata-agent ready") => {
                    let field = |key: &str| -> Result<String> {
                        line.split_whitespace()
                            .find_map(|w| w.strip_prefix(key))
                            .map(str::to_string)
                            .with_context(|| format!("no {key} in {line:?}"))
                    };
                    return Ok(AgentProcess {
                        grpc: field("grpc=")?.parse()?,
                        http: field("http=")?.parse()?,
                        gossip: field("gossip=")?.parse()?,
                        dns: field("dns=")?.parse()?,
                        balancer: field("balancer=")?.parse()?,
                        node_id: field("id=")?,
                        data_dir: data_dir.to_path_buf(),
                        child,
                        stderr_path,
                        keep_services: false,
                    });
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    bail!("agent did not become ready within {READY_TIMEOUT:?}; stderr:\n{log}");
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9` of the agent alone: its services keep running for the next agent.
    pub fn crash(mut self) -> Result<()> {
        self.signal(rustix::process::Signal::KILL)?;
        self.child.wait()?;
        self.keep_services = true;
        Ok(())
    }

    /// Sends `signal` to the agent, by its pid.
    pub fn signal(&self, signal: rustix::process::Signal) -> Result<()> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32)
            .context("the agent has no valid pid")?;
        rustix::process::kill_process(pid, signal)
            .with_context(|| format!("cannot signal agent pid {}", self.child.id()))
    }

    /// What the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        self.signal(rustix::process::Signal::TERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("agent did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the agent to exit by itself (after `strata-agent leave`, or a
    /// signal the test sent), leaving its services running: the test stops them
    /// ([`stop_services_of`]) when it is done with them.
    pub fn wait_keeping_services(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        self.keep_services = true;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("agent did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status, leaving the services
    /// running as an operator's `systemctl stop` does.
    pub fn terminate_keeping_services(self, timeout: Duration) -> Result<std::process::ExitStatus> {
        self.signal(rustix::process::Signal::TERM)?;
        self.wait_keeping_services(timeout)
    }

    /// Runs the `strata` CLI against this agent.
    pub fn strata(&self, args: &[&str]) -> Output {
        strata(&self.grpc.to_string(), args)
    }

    /// Runs `strata --token TOKEN ARGS` against this agent.
    pub fn with_token(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec!["--token", token];
        all.extend_from_slice(args);
        self.strata(&all)
    }

    /// Runs `strata ARGS` against this agent and parses its stdout as one JSON document;
    /// panics with the CLI's stderr when the command fails.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.strata(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout) {
            Ok(value) => value,
            Err(e) => panic!("strata {args:?} did not print one JSON document: {e}"),
        }
    }

    /// `GET path` on the agent's HTTP address: (status code, body).
    pub fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.http, path)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep_services {
            stop_services_of(&self.data_dir);
        }
    }
}

/// Makes `cmd` start with `fds` as descriptors 3, 4, ... and `LISTEN_FDS`/`LISTEN_FDNAMES`
/// naming them, as systemd starts a unit with a file-descriptor store.
fn pass_descriptors(cmd: &mut Command, fds: &[(String, std::sync::Arc<std::os::fd::OwnedFd>)]) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let names: Vec<&str> = fds.iter().map(|(name, _)| name.as_str()).collect();
    cmd.env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"));
    let sources: Vec<i32> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) run, on
    // descriptors the test holds open for as long as the command exists.
    unsafe {
        cmd.pre_exec(move || {
            use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
            // First out of the way of 3.. (above every target), then into place; dup2
            // leaves the copies without close-on-exec, so the agent inherits them.
            let above = 3 + sources.len() as i32;
            let mut moved = Vec::with_capacity(sources.len());
            for fd in &sources {
                let copy = rustix::io::fcntl_dupfd_cloexec(BorrowedFd::borrow_raw(*fd), above)?;
                moved.push(copy);
            }
            for (i, copy) in moved.iter().enumerate() {
                let mut target = OwnedFd::from_raw_fd(3 + i as i32);
                let placed = rustix::io::dup2(copy, &mut target);
                let _ = target.into_raw_fd();
                placed?;
            }
            Ok(())
        });
    }
}

/// The config every test agent gets unless the test passes its own: a cgroup root and a
/// backend port range of its own, so agents of parallel tests never share either.
/// An agent restarted on the same data dir keeps its number, hence its cgroup root and port
/// range, so the services it re-adopts stay in cgroups that cleanup will find. The ranges
/// (20000-31999) lie below the kernel's ephemeral ports, where [`closed_port`] picks
/// frontends: an agent refuses a frontend inside its own backend range.
fn test_config(data_dir: &Path) -> String {
    let number_file = data_dir.join("test-agent-number");
    let n = std::fs::read_to_string(&number_file)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or_else(|| NEXT_AGENT.fetch_add(1, Ordering::Relaxed));
    std::fs::write(&number_file, n.to_string()).ok();
    let first = 20000 + (n % 120) * 100;
    std::fs::write(data_dir.join("test-cgroup-root"), cgroup_root_for(n)).ok();
    format!(
        "cgroup_root = \"{}\"\nport_range = \"{first}-{}\"\nservices_dir = \"{}\"\n\
         insecure_gossip = true\ngossip_addr = \"127.0.0.1:0\"\ndns_addr = \"127.0.0.1:0\"\n\
         balancer_addr = \"127.0.{}.{}\"\n",
        cgroup_root_for(n),
        first + 99,
        data_dir.join("services.d").display(),
        1 + n / 250,
        2 + n % 250
    )
}

static NEXT_AGENT: AtomicU32 = AtomicU32::new(0);

fn cgroup_root_for(n: u32) -> String {
    format!("strata-test-{}-{n}", std::process::id())
}

/// Stops what the agent of `data_dir` started, once that agent is gone: every instance its
/// records name, process group and shim, each verified by pid and start time, through
/// `strata-agent stop-services --timeout 0s` (the agent's own reading of its own records);
/// then removes the test's cgroups. Tests call it through `Drop`, after the agent is killed.
/// Never panics (it runs in `Drop`): a failure is printed.
pub fn stop_services_of(data_dir: &Path) {
    if data_dir.is_dir() {
        let out = Command::new(binary("strata-agent"))
            .args(["stop-services", "--timeout", "0s", "--data-dir"])
            .arg(data_dir)
            .env_remove("STRATA_DATA_DIR")
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "strata-agent stop-services --data-dir {} ({}): {}{}",
                data_dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run strata-agent stop-services: {e}"),
        }
    }
    if let Ok(root) = std::fs::read_to_string(data_dir.join("test-cgroup-root")) {
        std::thread::sleep(Duration::from_millis(200));
        remove_cgroups(root.trim());
    }
}

/// Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot.
pub fn process_start_ticks(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.get(text.rfind(')')? + 2..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| {
            t.rfind(')')
                .and_then(|i| t.get(i + 2..i + 3).map(str::to_string))
        })
        .is_some_and(|state| state != "Z")
}

/// Removes a test's cgroup directories (deepest first) in every mounted hierarchy.
fn remove_cgroups(root: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.filter_map(Result::ok) {
        let dir = h.path().join(root);
        if !dir.is_dir() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.filter_map(Result::ok) {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Starts an agent named `name` on loopback in a new temp dir (data in `DIR/data`). Bind
/// the pair as `let (dir, agent)`: locals drop in reverse, so the agent (and the services it
/// recorded) stops before its dir is deleted.
pub fn start_test_agent(name: &str) -> (tempfile::TempDir, AgentProcess) {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = AgentProcess::start(
        &dir.path().join("data"),
        &AgentOptions {
            node_name: Some(name.to_string()),
            ..Default::default()
        },
    )
    .expect("agent starts");
    (dir, agent)
}

/// Starts an agent named `name` with its data in `dir/name`, joining `join` when given.
pub fn start_named_agent(dir: &Path, name: &str, join: Option<&AgentProcess>) -> AgentProcess {
    let extra_args = join
        .map(|s| vec!["--join".to_string(), s.gossip.to_string()])
        .unwrap_or_default();
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

/// The pids of every process on this host, from `/proc`.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Replays every committed input of the fuzz target `target` (`fuzz/corpus/TARGET/`)
/// through `run`, the target's own entry point, and fails on the first that panics: the
/// regression check of fuzzing, on stable and without cargo-fuzz.
pub fn replay_fuzz_corpus(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for path in files {
        let bytes = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(outcome.is_ok(), "{target} panics on {}", path.display());
    }
}

/// Runs `strata-agent token ARGS --data-dir DATA_DIR` (create, add, list, revoke) and
/// returns its stdout (the new token, for `create`); panics with its stderr on failure.
pub fn agent_token(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("strata-agent"))
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run strata-agent token: {e}"),
    };
    assert!(
        out.status.success(),
        "strata-agent token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `strata-agent leave --data-dir DATA_DIR ARGS`: the agent running there leaves the
/// cluster and stops.
pub fn agent_leave(data_dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(binary("strata-agent"))
        .arg("leave")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("STRATA_DATA_DIR")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run strata-agent leave: {e}"),
    }
}

/// Asserts that `out` is a refusal (exit 5: Unauthenticated or PermissionDenied) whose
/// message contains `needle`.
pub fn assert_refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
}

/// Runs the `strata` CLI with `--agent agent` and `args`.
pub fn strata(agent: &str, args: &[&str]) -> Output {
    let out = Command::new(binary("strata"))
        .arg("--agent")
        .arg(agent)
        .args(args)
        .env_remove("STRATA_AGENT")
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_CA")
        .env_remove("STRATA_CERT")
        .env_remove("STRATA_KEY")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => out,
        Err(e) => panic!("cannot run strata: {e}"),
    }
}

/// A records for `name` from the DNS server at `server`: (response code, addresses).
pub fn dns_a(
    server: SocketAddr,
    name: &str,
) -> Result<(hickory_proto::op::ResponseCode, Vec<std::net::IpAddr>)> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    socket.send_to(&query.to_vec()?, server)?;
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf)?;
    let reply = Message::from_vec(&buf[..n])?;
    let ips = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
            _ => None,
        })
        .collect();
    Ok((reply.metadata.response_code, ips))
}

/// A minimal HTTP/1.0 GET, enough for /metrics and /health: (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers in the response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, body.to_string()))
}

/// The spec of a test web service named `name`: `strata-test-server` behind `frontend`, with
/// a fast HTTP check (a failure shows within half a second). `extra` holds more top-level
/// lines (`version = "2"`, `instances = 2`, `env = {...}`), each ending in a newline.
pub fn web_spec(name: &str, frontend: u16, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ncommand = [\"{}\"]\n{extra}[ports.http]\nfrontend = {frontend}\n\
         [health]\nhttp = \"/\"\ninterval = \"250ms\"\ntimeout = \"250ms\"\nrise = 1\nfall = 2\n\
         grace = \"0s\"\n",
        binary("strata-test-server").display()
    )
}

/// A port on 127.0.0.1 that nothing listens on right now (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1)
}

/// Polls `check` every 100 ms until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small tmpfs mounted by a test (a disk that fills up), unmounted when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "256k") at `dir`, creating it;
    /// `None` where mounting is not allowed, reported as a missing prerequisite
    /// ([`prereq::missing`]: a failure under CI, a printed skip elsewhere).
    #[track_caller]
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        if let Err(e) = std::fs::create_dir_all(dir) {
            panic!("cannot create {}: {e}", dir.display());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stdin(Stdio::null())
            .output();
        let refused = match out {
            Ok(out) if out.status.success() => {
                return Some(Tmpfs {
                    dir: dir.to_path_buf(),
                });
            }
            Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        prereq::missing(
            format_args!("a tmpfs mount ({refused})"),
            "run the tests as root (mount needs CAP_SYS_ADMIN), as CI does",
        );
        None
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// Runs `promtool check metrics` on `text` and returns its findings that node_exporter 1.5's
/// own output does not have too (empty when the text is acceptable). Accepted, because
/// compatibility with node_exporter's names wins over the lint: the camelCase of the meminfo
/// and netstat names (`node_memory_MemTotal_bytes`, `node_netstat_Tcp_InSegs`) and the `bits`
/// unit of the two entropy gauges.
pub fn promtool_findings_beyond_node_exporter(text: &str) -> Result<Vec<String>> {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting promtool")?;
    child
        .stdin
        .take()
        .context("promtool's stdin")?
        .write_all(text.as_bytes())
        .context("writing to promtool")?;
    let out = child.wait_with_output().context("waiting for promtool")?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut findings: Vec<String> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !node_exporter_lint_exception(l))
        .map(str::to_owned)
        .collect();
    // 0: clean; 3: lint findings only. Anything else is a parse error.
    if !matches!(out.status.code(), Some(0 | 3)) {
        findings.push(format!("promtool exited with {:?}", out.status.code()));
    }
    Ok(findings)
}

/// Whether one `promtool check metrics` finding is one node_exporter 1.5's output has too.
fn node_exporter_lint_exception(finding: &str) -> bool {
    let Some((name, message)) = finding.split_once(' ') else {
        return false;
    };
    let camel = message == "metric names should be written in 'snake_case' not 'camelCase'"
        && (name.starts_with("node_memory_") || name.starts_with("node_netstat_"));
    let bits = message == "use base unit \"bytes\" instead of \"bits\""
        && matches!(
            name,
            "node_entropy_available_bits" | "node_entropy_pool_size_bits"
        );
    camel || bits
}

/// The `/metrics` text of Debian's node_exporter run once with `args` (e.g. a fixture
/// `--path.sysfs` and the collectors to compare) on a free loopback port; the process is
/// stopped by its pid whatever happens.
pub fn node_exporter_output(args: &[String]) -> String {
    struct Started(std::process::Child);
    impl Drop for Started {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = closed_port();
    let _child = Started(
        Command::new(prereq::NODE_EXPORTER.name)
            .args(args)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut text = String::new();
    wait_until(
        "node_exporter to answer",
        Duration::from_secs(10),
        || match http_get(addr, "/metrics") {
            Ok((200, body)) => {
                text = body;
                true
            }
            _ => false,
        },
    );
    text
}
