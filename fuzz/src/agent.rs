//! Fuzz entry points of the agent: service specs and the agent's config file, TOML text to
//! validated values.

use std::time::{Duration, Instant};
use strata_agent::config::{self, RunArgs};
use strata_agent::supervisor::health::HealthTracker;
use strata_agent::supervisor::policy::{Decision, ExitKind, RestartTracker};
use strata_agent::supervisor::spec;

/// The `spec_parse` target: a service spec, parsed and validated whole, then checked for
/// frontend conflicts against itself under another name (as the supervisor does with the
/// specs it already runs), and its timings used the way the supervisor uses them: a health
/// tracker, restart decisions, the rolling restart's wait budget.
pub fn spec_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match spec::parse_spec("fuzz.toml", text) {
        Ok(parsed) => {
            assert!(spec::valid_name(&parsed.name));
            assert!(parsed.instances <= spec::MAX_INSTANCES);
            assert!(spec::check_conflicts(&parsed, "fuzz.toml", text, [&parsed]).is_ok());
            let now = Instant::now();
            if let Some(health) = &parsed.health {
                let _ = HealthTracker::new(health, now);
                // manager.rs: how long a rolling restart waits for an instance to pass.
                let _ = health.grace + health.interval * (health.rise + health.fall + 2);
            }
            let mut restarts = RestartTracker::with_rng(fastrand::Rng::with_seed(1));
            for exit in [ExitKind::Failure, ExitKind::Success, ExitKind::OomKilled] {
                if let Decision::Restart { after } =
                    restarts.on_exit(&parsed.restart, exit, Duration::ZERO, now)
                {
                    // instance.rs: when the backoff ends.
                    let _ = now + after;
                }
            }
            // instance.rs: how long a stopping instance drains, then may take to exit.
            let _ = now + parsed.stop.drain + parsed.stop.timeout;
            let mut other = parsed.clone();
            other.name = format!("{}-other", parsed.name);
            let clash = spec::check_conflicts(&parsed, "fuzz.toml", text, [&other]);
            let has_frontend = parsed.ports.values().any(|p| p.frontend.is_some());
            assert_eq!(clash.is_err(), has_frontend);
            if let Err(e) = clash {
                let _ = e.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// The `config_parse` target: the agent's config file, parsed, then resolved over default
/// flags, as a normal and as a `--dev` agent.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = config::parse_file(text) else {
        return;
    };
    for dev in [false, true] {
        let args = RunArgs {
            dev,
            ..RunArgs::default()
        };
        match config::resolve(&args, file.clone(), "fuzz-host") {
            Ok(resolved) => {
                // The gossip driver schedules foca's remove-down timer this far ahead.
                let _ = Instant::now() + resolved.reap_after;
                assert!(resolved.port_range.start() <= resolved.port_range.end());
                assert!((1..=100).contains(&resolved.top_processes));
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
}
