//! Headless subcommands: the same views and actions as the console, for people (tables)
//! and scripts (`-o json`, stable exit codes).

mod connect;
mod events;
mod failure;
mod format;
mod host;

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
