//! Headless subcommands: the same views and actions as the console, for people (tables)
//! and scripts (`-o json`, stable exit codes).

mod connect;
mod events;
mod failure;
mod format;
mod host;
mod services;

use clap::{Parser, Subcommand, ValueEnum};
pub use failure::{Failure, FailureKind};

/// Default agent address when neither `--agent` nor `STRATA_AGENT` is given.
pub const DEFAULT_AGENT: &str = "127.0.0.1:7700";

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
    #[command(subcommand)]
    pub command: Command,
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
        after_help = "Examples:\n  strata apply ./strata.toml --dry-run\n  strata apply ./strata.toml"
    )]
    Apply {
        /// The spec file (strata.toml).
        file: std::path::PathBuf,
        /// Validate and show the changes without applying them.
        #[arg(long)]
        dry_run: bool,
    },
    /// The services this agent supervises.
    #[command(after_help = "Example:\n  strata services -o json")]
    Services,
    /// One service and its instances.
    #[command(after_help = "Example:\n  strata service web")]
    Service {
        /// Service name.
        name: String,
    },
    /// Start a service (NAME) or one instance (NAME/INDEX).
    #[command(after_help = "Example:\n  strata start web/2")]
    Start {
        #[arg(value_parser = services::parse_target)]
        target: services::Target,
    },
    /// Stop a service or one instance; a stopped service stays stopped across agent restarts.
    #[command(after_help = "Example:\n  strata stop web")]
    Stop {
        #[arg(value_parser = services::parse_target)]
        target: services::Target,
    },
    /// Restart a service or one instance.
    #[command(after_help = "Example:\n  strata restart web")]
    Restart {
        #[arg(value_parser = services::parse_target)]
        target: services::Target,
    },
    /// Set the number of instances of a service.
    #[command(after_help = "Example:\n  strata scale web 4")]
    Scale {
        /// Service name.
        name: String,
        /// The new number of instances.
        count: u32,
    },
    /// Send a signal to a service's or an instance's processes.
    #[command(after_help = "Example:\n  strata signal web SIGHUP")]
    Signal {
        #[arg(value_parser = services::parse_target)]
        target: services::Target,
        /// SIGHUP, SIGUSR1, SIGTERM, ...
        signal: String,
    },
    /// Stop every instance of a service and forget its spec.
    #[command(after_help = "Example:\n  strata remove web")]
    Remove {
        /// Service name.
        name: String,
    },
    /// Print (and follow) the logs of a service or one instance.
    #[command(
        after_help = "Examples:\n  strata logs web -f\n  strata logs web/1 --lines 500 --grep 'error|warn'"
    )]
    Logs(services::LogsArgs),
}

/// Runs one subcommand.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let mut client = connect::connect(&cli.agent).await?;
    let agent = cli.agent.as_str();
    match cli.command {
        Command::Node => host::node(&mut client, agent, cli.output).await,
        Command::Metrics => host::metrics(&mut client, agent, cli.output).await,
        Command::Top { limit } => host::top(&mut client, agent, cli.output, limit).await,
        Command::Events(args) => events::events(&mut client, agent, cli.output, args).await,
        Command::Apply { file, dry_run } => {
            services::apply(&mut client, agent, cli.output, &file, dry_run).await
        }
        Command::Services => services::list(&mut client, agent, cli.output).await,
        Command::Service { name } => services::show(&mut client, agent, cli.output, &name).await,
        Command::Start { target } => {
            services::control(&mut client, agent, cli.output, &target, "start", 0, "").await
        }
        Command::Stop { target } => {
            services::control(&mut client, agent, cli.output, &target, "stop", 0, "").await
        }
        Command::Restart { target } => {
            services::control(&mut client, agent, cli.output, &target, "restart", 0, "").await
        }
        Command::Scale { name, count } => {
            let target = services::Target {
                service: name,
                instance: 0,
            };
            services::control(&mut client, agent, cli.output, &target, "scale", count, "").await
        }
        Command::Signal { target, signal } => {
            services::control(
                &mut client,
                agent,
                cli.output,
                &target,
                "signal",
                0,
                &signal,
            )
            .await
        }
        Command::Remove { name } => services::remove(&mut client, agent, cli.output, &name).await,
        Command::Logs(args) => services::logs(&mut client, agent, cli.output, args).await,
    }
}

/// Prints `value` as one pretty JSON document.
fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| {
        Failure::new(
            FailureKind::ActionFailed,
            format!("cannot encode JSON: {e}"),
        )
    })?;
    println!("{text}");
    Ok(())
}
