//! `strata-agent install` and `uninstall`: put the agent on a bare-metal host (the binaries
//! `strata-agent` and `strata-shim`, config, dirs, systemd unit) and take it off again.
//!
//! `plan` computes the actions from the options and what is under the root now, without
//! touching anything; `exec` probes the root, then carries a plan out or prints it
//! (`--dry-run`). Both commands are idempotent: a second run reports every path unchanged.

pub mod exec;
pub mod plan;

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `strata-agent install`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Gossip address of an agent already in the cluster (repeatable).
    #[arg(long = "join", value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// The cluster key (`strata-agent keygen`); every host needs the same one. Without it the
    /// installed key is kept, or a new one is generated and printed (the first host). Give it
    /// in the environment to keep it out of the process list.
    #[arg(
        long,
        value_name = "KEY",
        env = "STRATA_GOSSIP_KEY",
        hide_env_values = true
    )]
    pub gossip_key: Option<String>,
    /// Name of this node [default: the hostname, looked up when the agent starts].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address of the gRPC API [default: 127.0.0.1:7700].
    #[arg(long, value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Address of /metrics and /health [default: 127.0.0.1:7702].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Gossip address (UDP and TCP) [default: this host's address on its default route, port 7701].
    #[arg(long, value_name = "ADDR")]
    pub gossip_addr: Option<SocketAddr>,
    /// The gossip address other hosts reach this one at, when it differs from --gossip-addr.
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    /// This agent's TLS certificate (`strata-agent tls issue --agent NAME`), absolute path;
    /// with --tls-key and --tls-ca the API serves TLS and agents use mutual TLS.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert, absolute path.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA certificate, absolute path.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the gRPC API in plaintext on a non-loopback --grpc-addr.
    #[arg(long)]
    pub insecure: bool,
    /// Install under this directory instead of / (systemd is then left alone).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print every file and command, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Overwrite an installed config that differs from what install would write.
    #[arg(long)]
    pub force: bool,
}

/// Flags of `strata-agent uninstall`.
#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Uninstall from under this directory instead of / (systemd is then left alone).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Also remove the service specs (/etc/strata/services.d) and the state (/var/lib/strata).
    #[arg(long)]
    pub purge: bool,
    /// Print every step, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Exit code when the request cannot be planned (bad option, a config that differs).
const EXIT_USAGE: u8 = 2;

/// Runs `strata-agent install`: 0 when installed (or unchanged), 2 when refused, 1 when a
/// step failed. `manual` is the agent's man page, installed beside the binary.
pub fn install(args: &InstallArgs, manual: String) -> ExitCode {
    let request = plan::Request {
        node_name: args.node_name.clone(),
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        gossip_addr: args.gossip_addr,
        advertise_addr: args.advertise_addr,
        join: args.join.clone(),
        gossip_key: args.gossip_key.clone(),
        tls_cert: args.tls_cert.clone(),
        tls_key: args.tls_key.clone(),
        tls_ca: args.tls_ca.clone(),
        insecure: args.insecure,
        force: args.force,
        manual,
    };
    let prepared = exec::prepare(&args.root, args.dry_run).and_then(|(current, host)| {
        exec::check_sources(&host)?;
        Ok((plan::plan_install(&request, &current, &host), host))
    });
    finish(prepared, args.dry_run, "strata-agent is installed as asked")
}

/// Runs `strata-agent uninstall`: 0 when removed (or already absent), 1 when a step failed.
pub fn uninstall(args: &UninstallArgs) -> ExitCode {
    let prepared = exec::prepare(&args.root, args.dry_run)
        .map(|(current, host)| (Ok(plan::plan_uninstall(&current, &host, args.purge)), host));
    finish(prepared, args.dry_run, "strata-agent is not installed")
}

fn finish(
    prepared: anyhow::Result<(Result<plan::Plan, plan::PlanError>, plan::Host)>,
    dry_run: bool,
    nothing_to_do: &str,
) -> ExitCode {
    let (plan, host) = match prepared {
        Ok((Ok(plan), host)) => (plan, host),
        Ok((Err(e), _)) => {
            eprintln!("strata-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("strata-agent: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let result = if dry_run {
        exec::show(&plan, nothing_to_do);
        Ok(())
    } else {
        exec::execute(&plan, &host, nothing_to_do)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
