//! `strata demo`: a whole ecosystem on loopback, and the console on it.
//!
//! Three agents (`demo-1..3`) run in dev mode under one temporary dir, each with its own
//! data dir, kernel-chosen ports, backend port range, cgroup root and balancer address
//! (127.0.0.2, .3, .4, so that every node serves the same frontend ports), joined into one
//! gossip cluster through `demo-1`. The demo services (`strata-demo web|api|worker|flaky|hog`,
//! specs embedded from `assets/demo/`) or the user's own specs (`--services DIR`) are applied
//! to them, then the console (`strata --agent <demo-1>`) runs in the terminal; with
//! `--headless` the addresses are printed instead. When the console exits, or on SIGINT or
//! SIGTERM, everything the demo started is stopped ([`teardown`]) and the temp dir removed.

mod agents;
mod specs;
mod teardown;

use crate::cli::out;
use crate::client::ops::{Op, Spec};
use crate::client::{ClientAuth, Failure, FailureKind, connect};
use agents::Agent;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Child;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// How long the agents get to exit after SIGTERM.
const AGENT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the console gets to exit after SIGTERM.
const CONSOLE_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the demo looks at its console and agents while it runs.
const POLL: Duration = Duration::from_millis(200);

/// Flags of `strata demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Run without the console: print the agents' addresses and run until interrupted.
    #[arg(long)]
    pub headless: bool,
    /// Run the specs (every `*.toml`) in DIR in the demo cluster instead of the demo
    /// services. A spec runs on demo-1; one with `instances` > 1 is spread over the nodes.
    #[arg(long, value_name = "DIR")]
    pub services: Option<PathBuf>,
    /// With --services: run the demo services as well.
    #[arg(long, requires = "services")]
    pub with_demo: bool,
    /// How often the `flaky` demo service crashes.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub flaky_every: Duration,
}

/// Runs the demo until the console exits or the demo is interrupted, then stops it all.
pub async fn run(args: DemoArgs) -> Result<(), Failure> {
    let usage = |e: anyhow::Error| Failure::new(FailureKind::Usage, format!("demo: {e:#}"));
    let exe = std::env::current_exe()
        .context("cannot find the strata binary")
        .map_err(usage)?;
    let with_demo = args.services.is_none() || args.with_demo;
    let bin = binaries_dir(&exe, with_demo).map_err(usage)?;
    let user = match &args.services {
        Some(dir) => specs::read_dir(dir).map_err(usage)?,
        None => Vec::new(),
    };
    let stop = stop_signals()
        .context("cannot handle SIGINT and SIGTERM")
        .map_err(usage)?;
    let root = tempfile::Builder::new()
        .prefix("strata-demo-")
        .tempdir()
        .context("cannot create the demo's temp dir")
        .map_err(usage)?;
    let mut demo = Demo {
        agent_bin: bin.join("strata-agent"),
        agents: Vec::new(),
        console: None,
    };
    let plan = Plan {
        bin: &bin,
        exe: &exe,
        root: root.path(),
        with_demo,
        user: &user,
        args: &args,
    };
    let outcome = {
        let mut stopped = stop.clone();
        tokio::select! {
            r = demo.start_and_run(&plan, stop) => r,
            _ = stopped.wait_for(|s| *s) => Ok(()),
        }
    };
    eprintln!("strata demo: stopping everything the demo started...");
    let cleanup = demo.teardown().await;
    let removed = root.close().context("cannot remove the demo's temp dir");
    match (outcome, cleanup.and(removed)) {
        (Ok(()), Ok(())) => {
            eprintln!("strata demo: stopped; nothing is left running");
            Ok(())
        }
        (Err(e), _) | (Ok(()), Err(e)) => Err(Failure::new(
            FailureKind::ActionFailed,
            format!("demo: {e:#}"),
        )),
    }
}

/// The directory of the Strata binaries, checked to hold `strata-agent` and the
/// `strata-shim` its services run under (and `strata-demo` when the demo services run); a
/// missing one is an error that says how to build it.
fn binaries_dir(exe: &Path, with_demo: bool) -> Result<PathBuf> {
    let dir = exe.parent().context("the strata binary has no directory")?;
    let needed: &[&str] = if with_demo {
        &["strata-agent", "strata-shim", "strata-demo"]
    } else {
        &["strata-agent", "strata-shim"]
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} missing from {}; build every binary first: `cargo build --release --bins` \
             (then run ./target/release/strata demo), or `cargo build --bins` for a debug build",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
}

/// A watch that turns true on the first SIGINT or SIGTERM; later ones are absorbed, so a
/// second ctrl-c does not cut the teardown short.
fn stop_signals() -> std::io::Result<watch::Receiver<bool>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            let _ = tx.send(true);
        }
    });
    Ok(rx)
}

/// What to start, decided before anything starts.
struct Plan<'a> {
    bin: &'a Path,
    exe: &'a Path,
    root: &'a Path,
    with_demo: bool,
    user: &'a [specs::UserSpec],
    args: &'a DemoArgs,
}

/// Everything the demo started, for the teardown.
struct Demo {
    /// The `strata-agent` binary the agents run.
    agent_bin: PathBuf,
    agents: Vec<Agent>,
    console: Option<Child>,
}

impl Demo {
    /// Starts the agents and the services, then the console (or prints the addresses), and
    /// returns when the console exits or `stop` turns true. Every child is recorded in `self`
    /// as soon as it exists, so the teardown finds it even when this is cancelled midway.
    async fn start_and_run(
        &mut self,
        plan: &Plan<'_>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut contexts = Vec::new();
        let mut seed = None;
        for index in 1..=specs::NODES {
            self.agents
                .push(Agent::spawn(&self.agent_bin, plan.root, index, seed)?);
            let agent = self.agents.last_mut().context("no agent")?;
            let ready = agent.wait_ready().await?;
            seed = seed.or(Some(ready.gossip));
            contexts.push(specs::NodeContext {
                bin: plan.bin.to_path_buf(),
                balancer: ready.balancer,
                flaky_every: plan.args.flaky_every,
            });
        }
        for placement in specs::plan(plan.with_demo, plan.user, &contexts)? {
            self.apply(&placement).await?;
        }
        let first = self
            .agents
            .first()
            .and_then(|a| a.ready.clone())
            .context("no agent")?;
        if plan.args.headless {
            self.print_addresses(plan);
        } else {
            let console = tokio::process::Command::new(plan.exe)
                .arg("--agent")
                .arg(first.grpc.to_string())
                .env_remove("STRATA_AGENT")
                // the demo's agents serve plaintext on loopback: no TLS or token from outside
                .env_remove("STRATA_CA")
                .env_remove("STRATA_CERT")
                .env_remove("STRATA_KEY")
                .env_remove("STRATA_TOKEN")
                .kill_on_drop(true)
                .spawn()
                .context("cannot start the console")?;
            self.console = Some(console);
        }
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            if let Some(console) = &mut self.console
                && let Some(status) = console.try_wait().context("waiting for the console")?
            {
                self.console = None;
                if status.success() {
                    return Ok(());
                }
                bail!("the console exited with {status}");
            }
            for agent in &mut self.agents {
                if let Some(status) = agent.exited() {
                    bail!("{} exited ({status}); {}", agent.name, agent.log_tail());
                }
            }
            let _ = tokio::time::timeout(POLL, stop.changed()).await;
        }
    }

    /// Applies one spec to its node.
    async fn apply(&self, placement: &specs::Placement) -> Result<()> {
        let agent = self
            .agents
            .get(placement.node - 1)
            .context("no such node")?;
        let ready = agent.ready.as_ref().context("the agent is not ready")?;
        let address = ready.grpc.to_string();
        // the demo's agents serve plaintext on loopback: no TLS or token
        let mut client = connect::connect(&address, &ClientAuth::default())
            .await
            .with_context(|| format!("cannot reach {} at {address}", agent.name))?;
        let spec = Spec::Text {
            source: placement.source.clone(),
            toml: placement.text.clone(),
        };
        Op::apply("", spec, false)
            .run(&mut client, &address)
            .await
            .with_context(|| format!("cannot apply {} to {}", placement.source, agent.name))?;
        Ok(())
    }

    /// The headless banner: one line per agent, where to point a console, how to stop.
    /// Printed once; without a reader (`| head -1`) the demo runs on all the same.
    fn print_addresses(&self, plan: &Plan<'_>) {
        let mut lines = vec![format!(
            "strata demo: {} agents on loopback, dir={}",
            self.agents.len(),
            plan.root.display()
        )];
        for (agent, ready) in self
            .agents
            .iter()
            .filter_map(|a| Some((a, a.ready.as_ref()?)))
        {
            lines.push(format!(
                "  node={} pid={} grpc={} http={} gossip={} dns={} balancer={}",
                ready.node,
                agent.pid,
                ready.grpc,
                ready.http,
                ready.gossip,
                ready.dns,
                ready.balancer
            ));
        }
        let first = self.agents.first().and_then(|a| a.ready.as_ref());
        if plan.with_demo {
            lines.push(format!("services: {}", specs::demo_names().join(", ")));
            if let Some(first) = first {
                lines.push(format!(
                    "web: http://{}:18080/ (on every node's balancer)",
                    first.balancer
                ));
            }
        }
        if let Some(first) = first {
            lines.push(format!("console: strata --agent {}", first.grpc));
        }
        lines.push("stop: ctrl-c".to_string());
        if out::line(lines.join("\n")).is_err() {
            eprintln!("strata demo: the banner could not be printed; the demo runs on");
        }
    }

    /// Stops the console, removes every service, stops the agents, kills what they still
    /// record as running and removes the cgroups. Goes through every step even when one
    /// fails, and reports the first failure.
    async fn teardown(&mut self) -> Result<()> {
        let mut problems: Vec<String> = Vec::new();
        if let Some(mut console) = self.console.take() {
            if let Some(pid) = console.id() {
                teardown::signal_pid(pid, rustix::process::Signal::TERM);
            }
            if tokio::time::timeout(CONSOLE_STOP_TIMEOUT, console.wait())
                .await
                .is_err()
            {
                let _ = console.kill().await;
            }
        }
        let mut removals = tokio::task::JoinSet::new();
        for agent in &self.agents {
            if let Some(ready) = &agent.ready {
                let (name, grpc) = (agent.name.clone(), ready.grpc);
                removals.spawn(async move {
                    teardown::remove_services(grpc)
                        .await
                        .with_context(|| format!("{name}: cannot remove its services"))
                });
            }
        }
        while let Some(joined) = removals.join_next().await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => problems.push(format!("{e:#}")),
                Err(e) => problems.push(format!("removing services: {e}")),
            }
        }
        for agent in &mut self.agents {
            if let Err(e) = agent.stop(AGENT_STOP_TIMEOUT).await {
                problems.push(format!("{e:#}"));
            }
        }
        for agent in &self.agents {
            match teardown::kill_leftovers(&self.agent_bin, &agent.data_dir).await {
                Ok(killed) => {
                    for line in killed {
                        eprintln!("strata demo: {}: killed a leftover: {line}", agent.name);
                    }
                }
                Err(e) => problems.push(format!("{}: {e:#}", agent.name)),
            }
        }
        for agent in &self.agents {
            if let Err(e) = teardown::remove_cgroups(&agent.cgroup_root).await {
                problems.push(format!("{e:#}"));
            }
        }
        match problems.first() {
            None => Ok(()),
            Some(first) => bail!("{first}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_needs_the_agent_its_shim_and_the_demo_services() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["strata", "strata-agent"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let exe = dir.path().join("strata");
        let err = binaries_dir(&exe, true).unwrap_err().to_string();
        assert!(err.starts_with("strata-shim, strata-demo missing"), "{err}");
        assert!(err.contains("cargo build --release --bins"), "{err}");
        std::fs::write(dir.path().join("strata-shim"), b"").unwrap();
        assert_eq!(binaries_dir(&exe, false).unwrap(), dir.path());
        let err = binaries_dir(&exe, true).unwrap_err().to_string();
        assert!(err.starts_with("strata-demo missing"), "{err}");
    }
}
