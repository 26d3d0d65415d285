//! `api`: answers every request with who it is; `/health` for the agent's checks.

use crate::http::{Response, serve};

/// Serves until the process ends.
pub fn run() -> Result<(), String> {
    let me = crate::identity();
    serve(move |path| match path {
        "/health" => Response::new(200, "ok\n"),
        _ => Response::new(200, format!("{me}\n")),
    })
}
