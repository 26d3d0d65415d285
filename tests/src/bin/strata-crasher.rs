//! A program that crashes at once, for the restart-latency benchmark: it appends
//! `start_ns exit_ns` (wall clock, nanoseconds) to `$CRASH_LOG` and exits with status 1.
//! The gap between one run's exit and the next run's start is the supervisor's restart
//! latency, measured the same way for every supervisor.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let start = now_ns();
    if let Some(path) = std::env::var_os("CRASH_LOG")
        && let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(file, "{start} {}", now_ns());
    }
    std::process::exit(1);
}
