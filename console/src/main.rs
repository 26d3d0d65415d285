//! `strata`: the operator's console and headless CLI for a Strata ecosystem.

use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use std::process::ExitCode;
use strata_console::{cli, tui};

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let args = match cli::Cli::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("strata: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = if args.command.is_none() {
        let agent_given = matches.value_source("agent") != Some(ValueSource::DefaultValue);
        runtime.block_on(tui::run(tui::Options {
            agent: agent_given.then(|| args.agent.clone()),
            auth: args.client_auth(),
            readonly: args.readonly,
            theme: args.theme.clone(),
            mouse: args.mouse,
        }))
    } else {
        runtime.block_on(cli::run(args))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("strata: {}", failure.message);
            ExitCode::from(failure.kind.code())
        }
    }
}
