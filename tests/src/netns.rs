//! Network namespaces for fault tests: N node namespaces, each joined by a veth pair to a
//! bridge in a "switch" namespace of its own (so the host's network is left alone), plus
//! one veth from the test's own namespace into the bridge, so that the test and the
//! `strata` CLI reach every agent. Everything lives in a private subnet `10.213.X.0/24`
//! picked to clash with no route or address of the host.
//!
//! Names carry the test process's pid, so parallel test binaries never share a name, and a
//! [`TestNet`] removes everything it made when dropped (also when the test panics);
//! leftovers of a test process that was killed are removed by the next [`TestNet::create`].

use crate::prereq;
use anyhow::{Context, Result, bail};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Prefix of every namespace this module makes: `strata-t<PID>-sw`, `strata-t<PID>-n<I>`.
const NS_PREFIX: &str = "strata-t";
/// The bridge inside the switch namespace.
const BRIDGE: &str = "br0";
/// The node's end of its veth pair, inside the node namespace.
const NODE_IF: &str = "eth0";
/// The host's address in the subnet (the nodes get .1 to .N).
const HOST_OCTET: u8 = 254;

/// One node namespace.
#[derive(Debug, Clone)]
pub struct NodeNs {
    /// The namespace's name (`ip netns` / `/run/netns/NAME`).
    pub name: String,
    /// Its address in the test subnet.
    pub ip: Ipv4Addr,
    /// Its veth's other end, a port of the bridge in the switch namespace.
    port: String,
}

/// A test network: the switch, the node namespaces and the host's link to them.
#[derive(Debug)]
pub struct TestNet {
    switch: String,
    host_if: String,
    /// The test process's own address in the subnet.
    pub host_ip: Ipv4Addr,
    /// The node namespaces, in order (addresses .1, .2, ...).
    pub nodes: Vec<NodeNs>,
}

/// Runs `ip ARGS`; an error carries its stderr.
fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl TestNet {
    /// Makes `nodes` namespaces joined to one bridge. `Ok(None)` when this machine cannot
    /// (not root, no `ip`, or `ip netns add` refused), reported as a missing prerequisite
    /// ([`prereq::missing`]: a failure under CI, a printed skip elsewhere).
    #[track_caller]
    pub fn create(nodes: usize) -> Result<Option<TestNet>> {
        if !prereq::root("network namespaces") || !prereq::IP.check() {
            return Ok(None);
        }
        remove_stale();
        let pid = std::process::id();
        let switch = format!("{NS_PREFIX}{pid}-sw");
        if let Err(e) = ip(&["netns", "add", &switch]) {
            prereq::missing(
                format_args!("network namespaces ({e:#})"),
                "a kernel and a sandbox that let root run `ip netns add`",
            );
            return Ok(None);
        }
        let subnet = free_subnet().context("no free 10.213.X.0/24 subnet")?;
        let mut net = TestNet {
            switch,
            host_if: format!("s{pid}h"),
            host_ip: Ipv4Addr::new(10, 213, subnet, HOST_OCTET),
            nodes: Vec::new(),
        };
        // From here on, `net` removes what was made if a step fails.
        net.build(nodes, subnet)?;
        Ok(Some(net))
    }

    fn build(&mut self, nodes: usize, subnet: u8) -> Result<()> {
        let sw = self.switch.clone();
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", BRIDGE, "up"])?;
        for i in 1..=nodes {
            let octet = u8::try_from(i).context("too many nodes")?;
            let node = NodeNs {
                name: format!("{NS_PREFIX}{}-n{i}", std::process::id()),
                ip: Ipv4Addr::new(10, 213, subnet, octet),
                port: format!("n{i}"),
            };
            ip(&["netns", "add", &node.name])?;
            self.nodes.push(node.clone());
            let ns = node.name.as_str();
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n", ns, "link", "add", NODE_IF, "type", "veth", "peer", "name", &node.port,
                "netns", &sw,
            ])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{}/24", node.ip),
                "dev",
                NODE_IF,
            ])?;
            ip(&["-n", ns, "link", "set", NODE_IF, "up"])?;
            ip(&["-n", &sw, "link", "set", &node.port, "master", BRIDGE])?;
            ip(&["-n", &sw, "link", "set", &node.port, "up"])?;
        }
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", "host", "master", BRIDGE])?;
        ip(&["-n", &sw, "link", "set", "host", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_ip),
            "dev",
            &self.host_if,
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        Ok(())
    }

    /// The command prefix that runs a program inside node `i`'s namespace (0-based), for
    /// [`crate::AgentOptions::prefix`]. `nsenter --net` enters the network namespace only:
    /// `ip netns exec` would also remount `/sys`, which hides `/sys/fs/cgroup` from the
    /// agent. Both exec the program, so its pid is the one the test started.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        vec![
            "nsenter".into(),
            format!("--net=/run/netns/{}", self.nodes[i].name),
            "--".into(),
        ]
    }

    /// Cuts node `i` off the network (its interface down), or reconnects it.
    pub fn set_link(&self, i: usize, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.nodes[i].name, "link", "set", NODE_IF, state])
    }

    /// Whether `tc qdisc ... netem` works here (the kernel may lack `sch_netem`); the
    /// reason when it does not.
    pub fn netem_available(&self) -> Result<(), String> {
        let port = self
            .nodes
            .first()
            .map(|n| n.port.clone())
            .unwrap_or_default();
        let sw = self.switch.as_str();
        match run(
            "tc",
            &[
                "-n", sw, "qdisc", "add", "dev", &port, "root", "netem", "delay", "1ms",
            ],
        ) {
            Ok(()) => {
                let _ = run("tc", &["-n", sw, "qdisc", "del", "dev", &port, "root"]);
                Ok(())
            }
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Adds `netem loss LOSS% delay DELAY_MS ms` to every node's link, on the bridge side,
    /// so every packet towards a node (from another node or from the host) crosses it once.
    pub fn impair(&self, loss_percent: u32, delay_ms: u32) -> Result<()> {
        for node in &self.nodes {
            run(
                "tc",
                &[
                    "-n",
                    &self.switch,
                    "qdisc",
                    "add",
                    "dev",
                    &node.port,
                    "root",
                    "netem",
                    "loss",
                    &format!("{loss_percent}%"),
                    "delay",
                    &format!("{delay_ms}ms"),
                ],
            )?;
        }
        Ok(())
    }

    /// Removes what [`TestNet::impair`] added.
    pub fn repair(&self) -> Result<()> {
        for node in &self.nodes {
            run(
                "tc",
                &[
                    "-n",
                    &self.switch,
                    "qdisc",
                    "del",
                    "dev",
                    &node.port,
                    "root",
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Deleting a namespace deletes its ends of the veth pairs, and with them their peers.
        for node in &self.nodes {
            let _ = ip(&["netns", "del", &node.name]);
        }
        let _ = ip(&["netns", "del", &self.switch]);
        if ip_output(&["link", "show", &self.host_if]).contains(&self.host_if) {
            let _ = ip(&["link", "del", &self.host_if]);
        }
    }
}

/// A `10.213.X.0/24` that no route or address of this host (or of another test run) uses.
fn free_subnet() -> Option<u8> {
    let used = format!(
        "{}\n{}",
        ip_output(&["-4", "route", "show", "table", "all"]),
        ip_output(&["-4", "addr", "show"])
    );
    let start = (std::process::id() % 200) as u8;
    (0..200u8)
        .map(|k| 20 + (start + k) % 200)
        .find(|x| !used.contains(&format!("10.213.{x}.")))
}

/// Removes the namespaces and host links of test processes that no longer exist.
fn remove_stale() {
    for line in ip_output(&["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(NS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
            let host_if = format!("s{pid}h");
            if ip_output(&["link", "show", &host_if]).contains(&host_if) {
                let _ = ip(&["link", "del", &host_if]);
            }
        }
    }
}
