//! `strata`: the operator's console and headless CLI for a Strata ecosystem.

use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
use std::process::ExitCode;
use strata_console::client::FailureKind;
use strata_console::{cli, tui};

fn main() -> ExitCode {
    // Run by the shell on Tab (COMPLETE=SHELL): prints the completions and exits.
    clap_complete::CompleteEnv::with_factory(cli::Cli::command).complete();
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
        Err(failure) if failure.kind == FailureKind::OutputClosed => end_by_sigpipe(),
        Err(failure) => {
            eprintln!("strata: {}", failure.message);
            ExitCode::from(failure.kind.code())
        }
    }
}

/// Ends the process as SIGPIPE ends `cat` when its reader has gone: quietly, by the signal,
/// so a shell sees 141 and `set -o pipefail` scripts see what they expect. Rust ignores
/// SIGPIPE (writes to sockets must fail, not kill), so its default action is restored first.
fn end_by_sigpipe() -> ExitCode {
    // SAFETY: setting a disposition to SIG_DFL and raising the signal run no handler code;
    // nothing is written any more.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    ExitCode::from(FailureKind::OutputClosed.code())
}
