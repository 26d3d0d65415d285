//! `strata-agent`: the Strata host daemon.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;
use strata_agent::config::{self, FileConfig, RunArgs};
use strata_agent::reload::{LogControl, Reloader};

/// The Strata host agent: monitors this host, and serves the Strata API.
#[derive(Debug, Parser)]
#[command(name = "strata-agent", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent in the foreground until SIGTERM or SIGINT (or `strata-agent leave`);
    /// SIGHUP reloads, SIGUSR2 hands over to a new agent (see `upgrade`).
    #[command(
        after_help = "Examples:\n  strata-agent run --dev\n  strata-agent run --config /etc/strata/agent.toml\n  STRATA_NODE_NAME=n1 strata-agent run --data-dir /tmp/n1 --grpc-addr 127.0.0.1:7710"
    )]
    Run(Box<RunArgs>),
    /// Stop every service instance an agent left running in its data dir (services outlive
    /// their agent). For when no agent runs there: refused while one does.
    #[command(
        after_help = "Each instance gets its spec's stop signal and, past its stop timeout, SIGKILL, as the agent\nwould stop it; each process is checked by pid and start time. A shim the agent started but had\nnot recorded when it died (found by its shim.pid) is stopped too. The specs stay: the next agent\non the data dir starts the services again.\n\nExit codes: 0 nothing is left running, 1 a process outlived SIGKILL or the records cannot be\nread, 2 no such data dir, 3 an agent runs on the data dir.\n\nExamples:\n  strata-agent stop-services\n  strata-agent stop-services --data-dir /tmp/n1 --timeout 0s"
    )]
    StopServices(strata_agent::supervisor::stop_services::StopServicesArgs),
    /// Hand the running agent over to a new process (a new binary, or the same one) without
    /// closing any of its ports: the new agent inherits every listening socket and re-adopts
    /// the services; the old one drains its open connections and exits.
    #[command(
        after_help = "The running agent (found by the pid in <data dir>/agent.lock) gets SIGUSR2, starts the new\nbinary with its sockets, and keeps serving until the new agent serves. If the new binary cannot\nstart (bad binary, bad config), the old agent keeps serving and this command fails with the\nnew agent's error. Under systemd the new agent becomes the unit's main process.\n\nExit codes: 0 the new agent serves, 1 it failed or did not answer in time, 2 wrong arguments,\n3 no agent runs on the data dir.\n\nExamples:\n  strata-agent upgrade --binary /usr/local/bin/strata-agent.new\n  strata-agent upgrade --data-dir /tmp/n1          # restart on the same binary"
    )]
    Upgrade(strata_agent::upgrade::UpgradeArgs),
    /// Withdraw this node from the cluster: the agent running on the data dir drains its
    /// instances from every balancer, leaves gossip and stops; its services keep running.
    /// A plain stop (SIGTERM, systemctl stop/restart) leaves nothing: the instances stay routable.
    #[command(
        after_help = "The agent is found by the lock it holds on its data dir and asked with SIGUSR1, so whoever may\nsignal it (root, or its user) may withdraw the node; `strata leave NODE` does the same through\nthe API (admin role). Other nodes remove its instances from their balancers and DNS at once.\nUnder systemd the unit stays stopped until it is started again, which rejoins the node.\n\nExit codes: 0 the agent left and stopped, 1 it could not be asked or did not stop in time,\n2 no such data dir, 3 no agent runs on the data dir.\n\nExamples:\n  strata-agent leave\n  strata-agent leave --data-dir /tmp/n1 --timeout 2m"
    )]
    Leave(strata_agent::leave::command::LeaveArgs),
    /// Print the agent's version.
    #[command(after_help = "Example:\n  strata-agent version")]
    Version,
    /// Print a new random cluster key (32 bytes, base64) for --gossip-key.
    #[command(after_help = "Example:\n  strata-agent run --gossip-key \"$(strata-agent keygen)\"")]
    Keygen,
    /// The cluster CA and its certificates, for TLS on the gRPC API and between agents.
    #[command(
        subcommand,
        after_help = "Examples:\n  strata-agent tls ca --name prod\n  strata-agent tls issue --agent n1 --san 10.0.0.5\n  strata-agent tls issue --operator alice --role admin"
    )]
    Tls(strata_agent::tls::command::TlsCommand),
    /// Install the agent on this host: its binary and strata-shim beside it, config, dirs and
    /// a systemd unit, started when systemd runs the host.
    #[command(
        after_help = "Examples:\n  strata-agent install                       # the first host: prints a new cluster key\n  strata-agent install --join 10.0.0.1:7701 --gossip-key KEY\n  strata-agent install --root /mnt/image --dry-run"
    )]
    Install(Box<strata_agent::install::InstallArgs>),
    /// Remove the agent from this host (keeps service specs and state unless --purge).
    #[command(after_help = "Examples:\n  strata-agent uninstall\n  strata-agent uninstall --purge")]
    Uninstall(strata_agent::install::UninstallArgs),
    /// API tokens: create (printed once, stored hashed), add, list, revoke.
    #[command(
        after_help = "Examples:\n  strata-agent token create ci --role operate\n  strata-agent token list\n  strata-agent token revoke ci"
    )]
    Token(strata_agent::auth::command::TokenArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Example:\n  strata-agent completions bash > /etc/bash_completion.d/strata-agent"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (strata-agent.1 and one per subcommand) into a directory.
    #[command(after_help = "Example:\n  strata-agent man --dir /usr/local/share/man/man1")]
    Man {
        /// Where to write the pages.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
}

/// Exit code for a configuration or usage error, the same as clap's.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run(_)) {
        end_quietly_on_a_closed_pipe();
    }
    match cli.command {
        Command::Version => {
            println!("strata-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Keygen => match strata_registry::seal::generate_key() {
            Ok(key) => {
                println!("{key}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("strata-agent: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => run(*args),
        Command::StopServices(args) => strata_agent::supervisor::stop_services::run(&args),
        Command::Upgrade(args) => strata_agent::upgrade::run(&args),
        Command::Leave(args) => strata_agent::leave::command::run(&args),
        Command::Tls(command) => strata_agent::tls::command::run(&command),
        Command::Install(args) => {
            let manual = strata_agent::manual::main_page(Cli::command());
            strata_agent::install::install(&args, String::from_utf8_lossy(&manual).into_owned())
        }
        Command::Uninstall(args) => strata_agent::install::uninstall(&args),
        Command::Token(args) => strata_agent::auth::command::run(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "strata-agent",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man { dir } => {
            // The main page again, with the sections clap does not know about.
            let page = strata_agent::manual::main_page(Cli::command());
            let written = std::fs::create_dir_all(&dir)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
                .and_then(|()| std::fs::write(dir.join("strata-agent.1"), page));
            match written {
                Ok(()) => {
                    println!("man pages written to {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "strata-agent: cannot write man pages to {}: {e}",
                        dir.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Restores SIGPIPE's default action for the one-shot subcommands (install, token, tls,
/// ...), so their output into a pipe whose reader has gone (`strata-agent install --dry-run |
/// head`) ends them as it ends `cat`, instead of a panic in `println!`. Rust ignores SIGPIPE
/// so that a write to a closed socket fails instead of killing the process; `run`, which
/// serves sockets, keeps that, and the one-shot subcommands write to no socket.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called first in main, before any other thread exists; setting a disposition
    // to SIG_DFL runs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(args: RunArgs) -> ExitCode {
    // SAFETY: no other thread runs yet, and descriptors named in the environment were
    // handed to this process by its parent (a previous agent, or systemd).
    let (predecessor, inherit_problems) = unsafe { strata_agent::handoff::receive_from_env() };
    let fail = |predecessor: Option<strata_agent::handoff::Predecessor>, message: String, code| {
        eprintln!("strata-agent: {message}");
        if let Some(predecessor) = predecessor {
            predecessor.failed(&message);
        }
        ExitCode::from(code)
    };
    let file = match &args.config {
        Some(path) => match config::load_file(path) {
            Ok(file) => file,
            Err(e) => return fail(predecessor, e.to_string(), EXIT_USAGE),
        },
        None => FileConfig::default(),
    };
    let hostname = strata_agent::facts::HostFacts::read().hostname;
    let config = match config::resolve(&args, file, &hostname) {
        Ok(config) => config,
        Err(e) => return fail(predecessor, e.to_string(), EXIT_USAGE),
    };
    // The logger starts once the configuration says which format; what went wrong before
    // that goes to stderr as plain text.
    let log = LogControl::init(config.log_format);
    for problem in inherit_problems {
        tracing::warn!(%problem, "inherited descriptors");
    }
    if let Err(e) = log.apply(&config.log_level) {
        return fail(predecessor, e, EXIT_USAGE);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .thread_name("strata-agent")
        .enable_all()
        .build()
        .context("cannot start the async runtime");
    let launch = strata_agent::run::Launch {
        config,
        reloader: Reloader::new(args, hostname, Some(log)),
        predecessor,
    };
    let result = runtime.and_then(|rt| rt.block_on(strata_agent::run::run(launch)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
