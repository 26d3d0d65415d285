//! Everything the CLI prints goes through here, so that output into a pipe whose reader has
//! gone (`strata events | head -3`) ends the CLI the way it ends `cat`, not with a panic in
//! `println!`. Rust ignores SIGPIPE so that writes to sockets fail instead of killing the
//! process, which the gRPC connection needs; a closed stdout becomes
//! [`FailureKind::OutputClosed`] instead, and `main` ends by SIGPIPE then.

use crate::client::{Failure, FailureKind};
use std::fmt::Display;
use std::io::Write;

/// Prints `text` and a newline on stdout.
pub fn line(text: impl Display) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")
        .and_then(|()| stdout.flush())
        .map_err(written)
}

/// Prints `bytes` as they are on stdout.
pub fn raw(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(written)
}

/// Prints `value` as one pretty JSON document.
pub fn json_document<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    line(serde_json::to_string_pretty(value).map_err(unencodable)?)
}

/// Prints `value` as one JSON object on one line, as streams do.
pub fn json_line<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    line(serde_json::to_string(value).map_err(unencodable)?)
}

fn unencodable(e: serde_json::Error) -> Failure {
    Failure::new(
        FailureKind::ActionFailed,
        format!("cannot encode JSON: {e}"),
    )
}

fn written(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => Failure::new(FailureKind::OutputClosed, ""),
        _ => Failure::new(
            FailureKind::ActionFailed,
            format!("cannot write to stdout: {e}"),
        ),
    }
}
