//! `web`: each request calls `api` at $API_ADDR through the local balancer; a failed call is
//! logged and counted, and `/stats` serves the counts as JSON.

use crate::http::{Response, get, serve};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Request and failure counters.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    api_calls: AtomicU64,
    api_failures: AtomicU64,
}

/// Serves until the process ends.
pub fn run() -> Result<(), String> {
    let api = std::env::var("API_ADDR").map_err(|_| "$API_ADDR is not set".to_string())?;
    let me = crate::identity();
    let stats = Arc::new(Stats::default());
    serve(move |path| match path {
        "/health" => Response::new(200, "ok\n"),
        "/stats" => Response::new(
            200,
            format!(
                "{{\"requests\":{},\"api_calls\":{},\"api_failures\":{}}}\n",
                stats.requests.load(Ordering::Relaxed),
                stats.api_calls.load(Ordering::Relaxed),
                stats.api_failures.load(Ordering::Relaxed)
            ),
        ),
        _ => {
            stats.requests.fetch_add(1, Ordering::Relaxed);
            stats.api_calls.fetch_add(1, Ordering::Relaxed);
            match get(&api, "/") {
                Ok((200, body)) => Response::new(200, format!("web {me} -> {body}")),
                Ok((status, _)) => failed(&stats, &format!("api answered {status}")),
                Err(e) => failed(&stats, &e),
            }
        }
    })
}

/// Logs and counts a failed call to api, and answers 502.
fn failed(stats: &Stats, why: &str) -> Response {
    let n = stats.api_failures.fetch_add(1, Ordering::Relaxed) + 1;
    eprintln!("api call failed ({n} so far): {why}");
    Response::new(502, format!("api call failed: {why}\n"))
}
