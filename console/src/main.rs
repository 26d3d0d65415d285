//! `strata`: the operator's console and headless CLI for a Strata ecosystem.

use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use std::process::ExitCode;
use strata_console::{cli, tui};

fn main() -> ExitCode {
    end_quietly_on_a_closed_pipe();
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

/// Restores SIGPIPE's default action, which Rust's runtime sets to "ignore": output into a
/// pipe whose reader has gone (`strata events | head -3`) then ends the process the way it
/// ends `cat` or `ls`, quietly with the conventional status (128 + 13 in a shell), instead of
/// a panic in `println!`. Sockets are not affected: Rust sends on them with `MSG_NOSIGNAL`,
/// and child processes get the default action anyway.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: called first in main, before any other thread exists; setting a signal's
    // disposition to SIG_DFL runs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
