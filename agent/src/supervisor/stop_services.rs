//! `strata-agent stop-services`: stops every service instance an agent left running in its
//! data dir (see [`super::detached`]), for when no agent runs there: after the agent was
//! stopped, crashed or was killed. It refuses while an agent holds the data dir
//! ([`crate::data_lock`]): that agent would restart what this stops.

use super::detached::{self, Outcome};
use super::store::Store;
use crate::data_lock::{DataDirLock, LockError};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code when the data dir does not exist or the arguments are wrong.
const EXIT_USAGE: u8 = 2;
/// Exit code when an agent runs on the data dir.
const EXIT_AGENT_RUNNING: u8 = 3;

/// Arguments of `strata-agent stop-services`.
#[derive(Debug, Args)]
pub struct StopServicesArgs {
    /// The agent's data dir [default: as `strata-agent run`].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// How long every instance gets after its stop signal before SIGKILL, e.g. "5s"; "0s"
    /// kills at once [default: each spec's [stop] timeout].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration_arg)]
    timeout: Option<Duration>,
}

/// Runs `strata-agent stop-services`: one line on stdout per instance that was running (none
/// when nothing ran: stdout stays empty and stderr says so); exit 0 when none is left
/// running, 1 when one outlived SIGKILL or the records cannot be read, 2 when the data dir
/// does not exist, 3 when an agent runs on it.
pub fn run(args: &StopServicesArgs) -> ExitCode {
    let dir = match crate::config::existing_data_dir(args.data_dir.as_deref()) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("strata-agent: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let nothing_ran = || {
        eprintln!(
            "no service instance recorded in {} was running",
            dir.display()
        )
    };
    let Some(store) = Store::open_existing(&dir) else {
        nothing_ran();
        return ExitCode::SUCCESS;
    };
    let _lock = match DataDirLock::acquire(&dir) {
        Ok(lock) => lock,
        Err(e @ LockError::Held { .. }) => {
            eprintln!(
                "strata-agent: {e}. Stop that agent first (it would restart what this stops), \
                 or remove or stop the services through its API"
            );
            return ExitCode::from(EXIT_AGENT_RUNNING);
        }
        Err(e) => {
            eprintln!("strata-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stopped = match detached::stop_recorded(&store, args.timeout) {
        Ok(stopped) => stopped,
        Err(e) => {
            eprintln!(
                "strata-agent: cannot read the service records in {}: {e}",
                dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let mut survived = false;
    let mut ran = false;
    for (target, outcome) in &stopped {
        let Some(what) = target.describe(*outcome) else {
            continue;
        };
        survived |= *outcome == Outcome::Survived;
        ran = true;
        println!("{}: {what}", target.id());
    }
    if !ran {
        nothing_ran();
    }
    if survived {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
