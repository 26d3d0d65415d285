//! `worker`: four jobs a second, each some CPU work and a log line; with $WEB_ADDR, one
//! request a second to `web` as well.

use std::time::{Duration, Instant};

/// The pause between two jobs.
const JOB_EVERY: Duration = Duration::from_millis(250);

/// Rounds of the mixing function per job (a few milliseconds of CPU).
const ROUNDS_PER_JOB: u64 = 2_000_000;

/// Runs until the process ends.
pub fn run() -> Result<(), String> {
    let web = std::env::var("WEB_ADDR").ok();
    println!("worker {} started", crate::identity());
    let mut job: u64 = 0;
    loop {
        job += 1;
        let started = Instant::now();
        let sum = work(job);
        println!(
            "job {job} done in {} ms, checksum {sum:016x}",
            started.elapsed().as_millis()
        );
        if let Some(web) = web.as_deref()
            && job.is_multiple_of(4)
        {
            match crate::http::get(web, "/") {
                Ok((200, _)) => println!("web call ok"),
                Ok((status, body)) => eprintln!("web answered {status}: {}", body.trim()),
                Err(e) => eprintln!("web call failed: {e}"),
            }
        }
        std::thread::sleep(JOB_EVERY);
    }
}

/// Some CPU work: a xorshift mix seeded with the job number.
fn work(seed: u64) -> u64 {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    for _ in 0..ROUNDS_PER_JOB {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}
