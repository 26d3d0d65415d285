//! Headless subcommands: the same views and actions as the console, for people (tables)
//! and scripts (`-o json`, stable exit codes). This is the clap layer and the rendering of
//! what is read; connecting and every change are [`crate::client`].

mod balancer;
mod cluster;
mod docs;
mod events;
mod host;
mod names;
pub(crate) mod out;
mod services;
mod tokens;
mod words;

use crate::client::connect::{self, Connector, DEFAULT_AGENT};
use crate::client::ops::{Op, Spec, Target};
use crate::client::outcome::Outcome;
use crate::client::retry::RetryPolicy;
use crate::client::{Client, Failure, FailureKind};
use clap::{Parser, Subcommand, ValueEnum};
use strata_proto::v1::control_service_request::Action as ControlAction;
use strata_proto::v1::{KeyringOp, Signal};

/// The Strata console and CLI.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// Agent to talk to, HOST:PORT.
    #[arg(long, global = true, env = "STRATA_AGENT", default_value = DEFAULT_AGENT)]
    pub agent: String,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// The node a node-scoped command is about (name or id); the agent forwards to it.
    #[arg(long, global = true, default_value = "", add = names::nodes())]
    pub node: String,
    /// The cluster CA (PEM) the agent's certificate must chain to; given, TLS is used.
    #[arg(long, global = true, env = "STRATA_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate (PEM), e.g. from `strata-agent tls issue --operator NAME`.
    #[arg(long, global = true, env = "STRATA_CERT", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --cert.
    #[arg(long, global = true, env = "STRATA_KEY", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// A token sent as `authorization: Bearer TOKEN` with every request.
    #[arg(
        long,
        global = true,
        env = "STRATA_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Fail at once when the agent refuses a call for now (over its rate limit) instead of
    /// waiting the time it names and trying again (for at most 30 s).
    #[arg(long, global = true, env = "STRATA_NO_RETRY")]
    pub no_retry: bool,
    /// Console only: hide every action (start, stop, restart, scale, drain, apply, force-leave).
    #[arg(long)]
    pub readonly: bool,
    /// Console only: colours (NO_COLOR forces mono); the config file's theme when not given.
    #[arg(long, value_parser = ["dark", "light", "mono"])]
    pub theme: Option<String>,
    /// Console only: capture the mouse (clicks select rows, wheel scrolls); breaks text selection.
    #[arg(long)]
    pub mouse: bool,
    /// Without a subcommand, `strata` opens the console.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The TLS and token flags, for connecting.
    pub fn client_auth(&self) -> connect::ClientAuth {
        connect::ClientAuth {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            token: self.token.clone(),
        }
    }

    /// Whether refused calls are tried again (`--no-retry`).
    pub fn retry_policy(&self) -> RetryPolicy {
        if self.no_retry {
            RetryPolicy::Never
        } else {
            RetryPolicy::default()
        }
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document with stable field names, for scripts.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Identity and facts of the node the agent runs on.
    #[command(after_help = "Example:\n  strata node -o json")]
    Node,
    /// The newest host metrics: CPU, memory, filesystems, disks, network.
    #[command(after_help = "Example:\n  strata metrics --agent 10.0.0.5:7700")]
    Metrics,
    /// The processes using the most CPU and memory.
    #[command(after_help = "Example:\n  strata top --limit 5")]
    Top {
        /// How many processes per list.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Events from the agent's journal: alerts, kernel lines, agent lifecycle.
    #[command(
        after_help = "Examples:\n  strata events --since 1h --severity warn\n  strata events --kind alert -f"
    )]
    Events(events::EventsArgs),
    /// Validate a service spec and apply it (store it, then converge).
    #[command(
        after_help = "Examples:\n  strata apply ./strata.toml --dry-run\n  strata apply ./strata.toml --wait"
    )]
    Apply {
        /// The spec file (strata.toml).
        file: std::path::PathBuf,
        /// Validate and show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: services::WaitArgs,
    },
    /// The services this agent supervises.
    #[command(after_help = "Example:\n  strata services -o json")]
    Services,
    /// One service and its instances.
    #[command(after_help = "Example:\n  strata service web")]
    Service {
        /// Service name.
        #[arg(add = names::services())]
        name: String,
    },
    /// Start a service (NAME) or one instance (NAME/INDEX).
    #[command(
        after_help = "Examples:\n  strata start web/2\n  strata start web --wait --timeout 30s"
    )]
    Start {
        #[arg(value_parser = Target::parse, add = names::services())]
        target: Target,
        #[command(flatten)]
        wait: services::WaitArgs,
    },
    /// Stop a service or one instance; a stopped service stays stopped across agent restarts.
    #[command(after_help = "Example:\n  strata stop web")]
    Stop {
        #[arg(value_parser = Target::parse, add = names::services())]
        target: Target,
    },
    /// Restart a service or one instance.
    #[command(
        after_help = "Examples:\n  strata restart web\n  strata restart web --wait   # returns when every instance passes again"
    )]
    Restart {
        #[arg(value_parser = Target::parse, add = names::services())]
        target: Target,
        #[command(flatten)]
        wait: services::WaitArgs,
    },
    /// Set the number of instances of a service.
    #[command(after_help = "Examples:\n  strata scale web 4\n  strata scale web 4 --wait")]
    Scale {
        /// Service name.
        #[arg(add = names::services())]
        name: String,
        /// The new number of instances.
        count: u32,
        #[command(flatten)]
        wait: services::WaitArgs,
    },
    /// Send a signal to a service's or an instance's processes.
    #[command(after_help = "Example:\n  strata signal web SIGHUP")]
    Signal {
        #[arg(value_parser = Target::parse, add = names::services())]
        target: Target,
        /// SIGHUP, SIGUSR1, SIGTERM, ... (or HUP, usr1, term).
        #[arg(value_parser = words::signal())]
        signal: Signal,
    },
    /// Stop every instance of a service and forget its spec.
    #[command(after_help = "Example:\n  strata remove web")]
    Remove {
        /// Service name.
        #[arg(add = names::services())]
        name: String,
    },
    /// Print (and follow) the logs of a service or one instance.
    #[command(
        after_help = "Examples:\n  strata logs web -f\n  strata logs web/1 --lines 500 --grep 'error|warn'"
    )]
    Logs(services::LogsArgs),
    /// Cluster members as gossip sees them: status, incarnation, addresses.
    #[command(after_help = "Example:\n  strata members -o json")]
    Members,
    /// Who the agent takes you to be (token or certificate name) and your role.
    #[command(after_help = "Example:\n  STRATA_TOKEN=... strata whoami")]
    Whoami,
    /// The replicated service catalog: every instance on every node.
    #[command(after_help = "Example:\n  strata catalog")]
    Catalog,
    /// Drain a node: its instances get no new connections anywhere.
    #[command(after_help = "Example:\n  strata drain n2")]
    Drain {
        /// The node to drain.
        #[arg(add = names::nodes())]
        target: String,
    },
    /// Undo `strata drain`.
    #[command(after_help = "Example:\n  strata undrain n2")]
    Undrain {
        /// The node to undrain.
        #[arg(add = names::nodes())]
        target: String,
    },
    /// Withdraw a node from the cluster: it drains, leaves gossip and its agent stops (its
    /// services keep running). Stopping or restarting an agent never withdraws its node.
    #[command(
        after_help = "Other nodes remove the node's instances from their balancers and DNS once it has left; starting\nits agent again rejoins it. On the host itself, `strata-agent leave` does the same.\n\nExample:\n  strata leave n2"
    )]
    Leave {
        /// The node to withdraw.
        #[arg(add = names::nodes())]
        target: String,
    },
    /// Remove a down member from the cluster now.
    #[command(name = "force-leave", after_help = "Example:\n  strata force-leave n3")]
    ForceLeave {
        /// The down member.
        #[arg(add = names::nodes())]
        member: String,
    },
    /// The local balancer: listeners and per-instance figures.
    #[command(after_help = "Example:\n  strata balancer --node n2")]
    Balancer,
    /// The balancer's per-connection access log.
    #[command(
        name = "access-log",
        after_help = "Examples:\n  strata access-log web -f\n  strata access-log --lines 500 -o json"
    )]
    AccessLog {
        /// Only this service.
        #[arg(add = names::services())]
        service: Option<String>,
        /// Keep printing new connections.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many past records.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: u32,
    },
    /// Print a shell completion script: subcommands, flags and their values; with --dynamic,
    /// service, instance and node names too, asked of the agent on Tab.
    #[command(
        after_help = "Examples:\n  strata completions bash > /etc/bash_completion.d/strata\n  strata completions zsh > ~/.zfunc/_strata\n  echo 'source <(strata completions bash --dynamic)' >> ~/.bashrc"
    )]
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        /// A script that runs `strata` on Tab, so names come from the agent (`--agent` and
        /// the credentials typed, or STRATA_AGENT and the other variables). Source it at
        /// shell start rather than installing it, so it always matches the binary.
        #[arg(long)]
        dynamic: bool,
    },
    /// Write man pages (strata.1 and one per subcommand) into a directory.
    #[command(after_help = "Example:\n  strata man --dir /usr/local/share/man/man1")]
    Man {
        /// Where to write the pages.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Gossip keys on every live member (or --node): list, install, use (make primary), remove.
    #[command(
        after_help = "Key rotation:\n  strata keyring install NEWKEY\n  strata keyring use NEWKEY\n  strata keyring remove OLDKEY"
    )]
    Keyring {
        /// list, install, use or remove.
        #[arg(value_parser = words::keyring_op())]
        op: KeyringOp,
        /// The key (base64), for install, use and remove.
        // Its own id: the global `--key` (a certificate's key file) is already `key`.
        #[arg(id = "gossip_key", value_name = "KEY")]
        key: Option<String>,
    },
    /// A whole ecosystem on loopback (three agents, demo services) and the console on it.
    #[command(
        after_help = "Examples:\n  strata demo\n  strata demo --headless\n  strata demo --services ./specs --with-demo"
    )]
    Demo(crate::demo::DemoArgs),
    /// Cluster-wide API tokens: create (admin; the secret is printed once), list, revoke.
    #[command(subcommand)]
    Token(tokens::TokenCommand),
}

/// Runs one subcommand.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Completions { shell, dynamic }) => return docs::completions(shell, dynamic),
        Some(Command::Man { dir }) => return docs::man_pages(&dir),
        Some(Command::Demo(args)) => return crate::demo::run(args).await,
        _ => {}
    }
    let mut client = Connector::new(&cli.agent, &cli.client_auth())?
        .with_retry(cli.retry_policy())
        .connect()
        .await?;
    let agent = cli.agent.as_str();
    let (c, out, node) = (&mut client, cli.output, cli.node.as_str());
    let Some(command) = cli.command else {
        return Err(Failure::new(FailureKind::Usage, "no subcommand"));
    };
    match command {
        Command::Node => host::node(c, agent, out, node).await,
        Command::Metrics => host::metrics(c, agent, out, node).await,
        Command::Top { limit } => host::top(c, agent, out, node, limit).await,
        Command::Events(args) => events::events(c, agent, out, node, args).await,
        Command::Apply {
            file,
            dry_run,
            wait,
        } => {
            let op = Op::apply(node, Spec::File(file), dry_run);
            match change(c, agent, out, op).await? {
                Outcome::Apply(reply) => {
                    let target = Target::service(&reply.service);
                    wait.wait(c, agent, node, &target).await
                }
                _ => Ok(()),
            }
        }
        Command::Services => services::list(c, agent, out, node).await,
        Command::Service { name } => services::show(c, agent, out, node, &name).await,
        Command::Start { target, wait } => {
            let op = Op::control(node, &target, ControlAction::start());
            change(c, agent, out, op).await?;
            wait.wait(c, agent, node, &target).await
        }
        Command::Stop { target } => {
            let op = Op::control(node, &target, ControlAction::stop());
            change(c, agent, out, op).await.map(drop)
        }
        Command::Restart { target, wait } => {
            let op = Op::control(node, &target, ControlAction::restart());
            change(c, agent, out, op).await?;
            wait.wait(c, agent, node, &target).await
        }
        Command::Scale { name, count, wait } => {
            let target = Target::service(&name);
            let op = Op::control(node, &target, ControlAction::scale(count));
            change(c, agent, out, op).await?;
            wait.wait(c, agent, node, &target).await
        }
        Command::Signal { target, signal } => {
            let op = Op::control(node, &target, ControlAction::signal(signal));
            change(c, agent, out, op).await.map(drop)
        }
        Command::Remove { name } => {
            let op = Op::remove(node, &name);
            change(c, agent, out, op).await.map(drop)
        }
        Command::Logs(args) => services::logs(c, agent, out, node, args).await,
        Command::Members => cluster::members(c, agent, out).await,
        Command::Whoami => cluster::whoami(c, agent, out).await,
        Command::Balancer => balancer::balancer(c, agent, out, node).await,
        Command::AccessLog {
            service,
            follow,
            lines,
        } => balancer::access_log(c, agent, out, node, service, lines, follow).await,
        Command::Catalog => cluster::catalog(c, agent, out).await,
        Command::Drain { target } => {
            let op = Op::drain(&target, true);
            change(c, agent, out, op).await.map(drop)
        }
        Command::Undrain { target } => {
            let op = Op::drain(&target, false);
            change(c, agent, out, op).await.map(drop)
        }
        Command::Leave { target } => {
            let op = Op::leave(&target);
            change(c, agent, out, op).await.map(drop)
        }
        Command::ForceLeave { member } => {
            let op = Op::force_leave(&member);
            change(c, agent, out, op).await.map(drop)
        }
        Command::Keyring { op, key } => {
            let op = Op::keyring(node, op, key)?;
            change(c, agent, out, op).await.map(drop)
        }
        Command::Token(command) => tokens::run(c, agent, out, command).await,
        Command::Completions { .. } | Command::Man { .. } | Command::Demo(_) => Ok(()),
    }
}

/// Runs one change and prints what it did: the agent's reply as JSON, or its message. A
/// change that failed on some of its nodes fails after printing every node's result.
async fn change(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    op: Op,
) -> Result<Outcome, Failure> {
    let outcome = op.run(client, agent).await?;
    print_as(output, &outcome, Outcome::message)?;
    match outcome.failure() {
        Some(failure) => Err(failure),
        None => Ok(outcome),
    }
}

/// Prints a reply for scripts (one JSON document) or for people (what `render` makes of it).
fn print_as<T: serde::Serialize>(
    output: OutputFormat,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    match output {
        OutputFormat::Json => out::json_document(value),
        OutputFormat::Table => out::line(render(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn keyring_takes_its_key_beside_the_global_key_flag() {
        let cli = Cli::try_parse_from(["strata", "keyring", "install", "a2V5"]).unwrap();
        match cli.command {
            Some(Command::Keyring { op, key }) => {
                assert_eq!((op, key.as_deref()), (KeyringOp::Install, Some("a2V5")))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cli.key, None, "--key is the client certificate's key");
    }
}
