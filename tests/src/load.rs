//! A client load loop for traffic-continuity tests: a few threads make one HTTP request per
//! connection to an address, as fast as the target answers (bounded in count and time), and
//! count what succeeded and what failed, keeping the first failures for the assertion message.

use crate::http_get;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Requests one loop makes at most, across its threads.
const MAX_REQUESTS: u64 = 400_000;
/// How many failures a report keeps word for word.
const KEPT_FAILURES: usize = 10;

/// What a load loop saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests answered with 200.
    pub ok: u64,
    /// Requests that failed: connect error, reset, timeout or another status.
    pub failed: u64,
    /// The first failures, with the time since the loop started.
    pub first_failures: Vec<String>,
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    first_failures: Mutex<Vec<String>>,
}

/// A running load loop; [`Load::stop`] ends it and reports.
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `threads` clients requesting `GET /` from `target` until stopped, `max_time`
    /// passes, or the loop has made [`MAX_REQUESTS`]. Each pauses `pause` between requests.
    pub fn start(target: SocketAddr, threads: usize, pause: Duration, max_time: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let started = Instant::now();
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                let counts = counts.clone();
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < max_time {
                        let done = counts.ok.load(Ordering::Relaxed)
                            + counts.failed.load(Ordering::Relaxed);
                        if done >= MAX_REQUESTS {
                            break;
                        }
                        match http_get(target, "/") {
                            Ok((200, _)) => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            outcome => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                let what = match outcome {
                                    Ok((code, _)) => format!("status {code}"),
                                    Err(e) => format!("{e:#}"),
                                };
                                if let Ok(mut kept) = counts.first_failures.lock()
                                    && kept.len() < KEPT_FAILURES
                                {
                                    kept.push(format!(
                                        "at {:.2}s: {what}",
                                        started.elapsed().as_secs_f64()
                                    ));
                                }
                            }
                        }
                        std::thread::sleep(pause);
                    }
                })
            })
            .collect();
        Load {
            stop,
            counts,
            threads,
        }
    }

    /// Requests answered with 200 so far.
    pub fn ok(&self) -> u64 {
        self.counts.ok.load(Ordering::Relaxed)
    }

    /// Ends the loop and reports what it saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
        LoadReport {
            ok: self.counts.ok.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            first_failures: self
                .counts
                .first_failures
                .lock()
                .map(|k| k.clone())
                .unwrap_or_default(),
        }
    }
}
