//! Shell completions and man pages, generated from the same clap definition as the CLI so
//! they never drift from it.

use super::{Cli, out};
use crate::client::{Failure, FailureKind};
use clap::CommandFactory;
use std::path::Path;

/// `strata completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "strata", &mut script);
    out::raw(&script)
}

/// `strata man --dir DIR`: `strata.1` and `strata-<subcommand>.1` for every subcommand.
pub fn man_pages(dir: &Path) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        Failure::new(
            FailureKind::ActionFailed,
            format!("cannot write man pages to {}: {e}", dir.display()),
        )
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(fail)?;
    out::line(format!("man pages written to {}", dir.display()))
}
