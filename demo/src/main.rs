//! `strata-demo`: the microservices of `strata demo`, one small program per subcommand.
//!
//! - `web`    HTTP on $STRATA_IP:$PORT; each request calls `api` at $API_ADDR (the local
//!   balancer's frontend) and reports failures: a log line each, a count at `/stats`.
//! - `api`    HTTP on $STRATA_IP:$PORT; answers who it is.
//! - `worker` a steady stream of log lines with some CPU work per job; with $WEB_ADDR it also
//!   sends one request a second to `web`, so the whole chain carries traffic.
//! - `flaky`  crashes (exit status 1) every $FLAKY_EVERY_MS milliseconds (default a minute).
//! - `hog`    grows its memory by $HOG_MIB_PER_SEC (default 8) MiB a second, touching every
//!   page, until its memory limit kills it; it gives up by itself at $HOG_CAP_MIB (default
//!   256) so that a host without a limit is not thrashed.
//!
//! Std only, loopback only: the programs are as plain as a service can be.

mod api;
mod flaky;
mod hog;
mod http;
mod web;
mod worker;

use std::process::ExitCode;

/// Usage text for a missing or unknown subcommand.
const USAGE: &str = "usage: strata-demo web|api|worker|flaky|hog";

fn main() -> ExitCode {
    let Some(command) = std::env::args().nth(1) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "web" => web::run(),
        "api" => api::run(),
        "worker" => worker::run(),
        "flaky" => flaky::run(),
        "hog" => hog::run(),
        other => {
            eprintln!("unknown service {other:?}; {USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata-demo {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The value of environment variable `name`, or `default` when it is unset.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Environment variable `name` as a number, `default` when unset; an error names a bad value.
fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("${name} = {text:?} is not a whole number")),
    }
}

/// Who this instance is, from the variables the agent sets: "api/2 on demo-1".
fn identity() -> String {
    format!(
        "{} on {}",
        env_or("STRATA_INSTANCE", "?"),
        env_or("STRATA_NODE", "?")
    )
}
