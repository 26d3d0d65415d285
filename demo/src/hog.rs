//! `hog`: grows its memory steadily, touching every page, until its memory limit kills it.

use std::time::Duration;

/// A page: every one of them is written so it is really resident.
const PAGE: usize = 4096;

/// How often memory grows.
const STEP: Duration = Duration::from_millis(100);

/// Grows until killed, or gives up at $HOG_CAP_MIB.
pub fn run() -> Result<(), String> {
    let per_sec = crate::env_number("HOG_MIB_PER_SEC", 8)?.max(1);
    let cap = crate::env_number("HOG_CAP_MIB", 256)?;
    println!(
        "hog {} started: growing {per_sec} MiB/s until the memory limit stops it",
        crate::identity()
    );
    let step_bytes = (per_sec as usize * 1024 * 1024) / 10;
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut steps = 0u64;
    loop {
        let mut chunk = vec![0u8; step_bytes];
        for byte in chunk.iter_mut().step_by(PAGE) {
            *byte = 1;
        }
        held.push(chunk);
        total += step_bytes;
        steps += 1;
        if steps.is_multiple_of(10) {
            println!("holding {} MiB", total / (1024 * 1024));
        }
        if (total / (1024 * 1024)) as u64 >= cap {
            return Err(format!(
                "reached {cap} MiB without being stopped: is a memory limit in place?"
            ));
        }
        std::thread::sleep(STEP);
    }
}
