//! `flaky`: a heartbeat a second, then a crash (exit status 1) after $FLAKY_EVERY_MS.

use std::time::{Duration, Instant};

/// Runs until the simulated crash.
pub fn run() -> Result<(), String> {
    let every = Duration::from_millis(crate::env_number("FLAKY_EVERY_MS", 60_000)?.max(100));
    println!(
        "flaky {} started; crashing in {} ms",
        crate::identity(),
        every.as_millis()
    );
    let started = Instant::now();
    let mut beat = 0u64;
    while started.elapsed() < every {
        beat += 1;
        println!("heartbeat {beat}");
        std::thread::sleep(Duration::from_secs(1).min(every.saturating_sub(started.elapsed())));
    }
    eprintln!("simulated crash after {} ms", started.elapsed().as_millis());
    std::process::exit(1);
}
