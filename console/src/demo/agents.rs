//! The demo's agents: one `strata-agent run --dev --stop-services-on-exit` per node (the
//! demo's services end with the demo), each with its own data dir, config file (port range,
//! cgroup root, balancer address), ports chosen by the kernel and read back from its ready
//! line.

use anyhow::{Context, Result, bail};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long an agent may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// First backend port of node 1; each node gets the next [`PORTS_PER_NODE`].
const FIRST_BACKEND_PORT: u16 = 24000;

/// Backend ports per node.
const PORTS_PER_NODE: u16 = 100;

/// What an agent's ready line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Ready {
    pub node: String,
    pub id: String,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub gossip: SocketAddr,
    pub dns: SocketAddr,
    pub balancer: IpAddr,
}

/// Parses `strata-agent ready node=N id=ID grpc=ADDR http=ADDR gossip=ADDR dns=ADDR balancer=IP`;
/// `None` for any other line.
pub fn parse_ready(line: &str) -> Option<Result<Ready>> {
    let rest = line.strip_prefix("strata-agent ready ")?;
    let field = |key: &str| -> Result<String> {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .with_context(|| format!("no {key}= in the ready line {line:?}"))
    };
    let parse = || -> Result<Ready> {
        Ok(Ready {
            node: field("node")?,
            id: field("id")?,
            grpc: field("grpc")?.parse().context("grpc")?,
            http: field("http")?.parse().context("http")?,
            gossip: field("gossip")?.parse().context("gossip")?,
            dns: field("dns")?.parse().context("dns")?,
            balancer: field("balancer")?.parse().context("balancer")?,
        })
    };
    Some(parse())
}

/// The balancer address of node `index` (1-based): 127.0.0.2, .3, .4, so that every node can
/// serve the same frontend ports.
pub fn balancer_addr(index: usize) -> IpAddr {
    IpAddr::from([127, 0, 0, 1 + index as u8])
}

/// The agent config file of node `index`: its own backend ports, cgroup root and loopback
/// addresses.
fn config_text(index: usize, cgroup_root: &str) -> String {
    let first = FIRST_BACKEND_PORT + (index as u16 - 1) * PORTS_PER_NODE;
    format!(
        "port_range = \"{first}-{}\"\ncgroup_root = \"{cgroup_root}\"\nbalancer_addr = \"{}\"\n\
         gossip_addr = \"127.0.0.1:0\"\ndns_addr = \"127.0.0.1:0\"\n",
        first + PORTS_PER_NODE - 1,
        balancer_addr(index)
    )
}

/// One running agent of the demo.
pub struct Agent {
    /// Node name: demo-1, demo-2, demo-3.
    pub name: String,
    /// Its data dir (under the demo's temp dir).
    pub data_dir: PathBuf,
    /// Its cgroup root, removed at teardown.
    pub cgroup_root: String,
    /// Where its stderr goes.
    pub log: PathBuf,
    /// Its process id.
    pub pid: u32,
    /// The addresses from its ready line, once it printed it.
    pub ready: Option<Ready>,
    child: Child,
}

impl Agent {
    /// Starts node `index` (1-based) under `root`, joining `join` when given; the agent is
    /// in its own process group, so a ctrl-c in the terminal reaches the demo, not it.
    pub fn spawn(
        agent_bin: &Path,
        root: &Path,
        index: usize,
        join: Option<SocketAddr>,
    ) -> Result<Agent> {
        let name = format!("demo-{index}");
        let data_dir = root.join(&name);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let cgroup_root = format!("strata-demo-{}-{index}", std::process::id());
        let config = data_dir.join("agent.toml");
        std::fs::write(&config, config_text(index, &cgroup_root))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let log = data_dir.join("agent.log");
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(agent_bin);
        cmd.arg("run")
            .arg("--dev")
            .arg("--stop-services-on-exit")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config)
            .args(["--node-name", &name])
            .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]);
        if let Some(seed) = join {
            cmd.arg("--join").arg(seed.to_string());
        }
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("STRATA_") && key != "STRATA_LOG" {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", agent_bin.display()))?;
        let pid = child.id().context("the agent has no pid")?;
        Ok(Agent {
            name,
            data_dir,
            cgroup_root,
            log,
            pid,
            ready: None,
            child,
        })
    }

    /// Waits for the ready line; then keeps reading the agent's stdout in the background.
    pub async fn wait_ready(&mut self) -> Result<&Ready> {
        let stdout = self.child.stdout.take().context("no stdout to read")?;
        let mut lines = BufReader::new(stdout).lines();
        let found = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(ready) = parse_ready(&line) {
                    return ready;
                }
            }
            bail!("the agent exited before it was ready")
        })
        .await;
        let ready = match found {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => return Err(e.context(self.log_tail())),
            Err(_) => bail!(
                "{} was not ready within {READY_TIMEOUT:?}; {}",
                self.name,
                self.log_tail()
            ),
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(self.ready.insert(ready))
    }

    /// Whether the agent exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to `timeout`, then SIGKILL.
    pub async fn stop(&mut self, timeout: Duration) -> Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        super::teardown::signal_pid(self.pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(timeout, self.child.wait())
            .await
            .is_err()
        {
            self.child.start_kill().ok();
            self.child.wait().await.context("waiting for the agent")?;
            bail!(
                "{} did not stop within {timeout:?} of SIGTERM and was killed",
                self.name
            );
        }
        Ok(())
    }

    /// The last lines of the agent's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(10)..].join("\n");
        format!("its log {}:\n{tail}", self.log.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_is_parsed_and_other_lines_are_not() {
        let line = "strata-agent ready node=demo-1 id=abc grpc=127.0.0.1:4000 http=127.0.0.1:4001 \
                    gossip=127.0.0.1:4002 dns=127.0.0.1:4003 balancer=127.0.0.2";
        let ready = parse_ready(line).unwrap().unwrap();
        assert_eq!(ready.node, "demo-1");
        assert_eq!(ready.grpc, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(ready.balancer, balancer_addr(1));
        assert!(parse_ready("starting").is_none());
        assert!(parse_ready("strata-agent ready node=x").unwrap().is_err());
    }

    #[test]
    fn every_node_has_its_own_ports_cgroup_and_balancer() {
        let text = config_text(2, "strata-demo-7-2");
        assert!(text.contains("port_range = \"24100-24199\""), "{text}");
        assert!(text.contains("balancer_addr = \"127.0.0.3\""), "{text}");
        assert!(text.contains("cgroup_root = \"strata-demo-7-2\""), "{text}");
        toml::from_str::<toml::Table>(&text).unwrap();
    }
}
