//! The agent's network faces: the gRPC API (`strata.v1.Agent`, with reflection v1 and
//! v1alpha and `grpc.health.v1.Health`) and the HTTP endpoint for Prometheus scrapes and
//! health checks.
//!
//! A gRPC call flows through one layer before any handler sees it: `grpc` hands each RPC to
//! `layer`, which asks the `gate` (identify, authorize, rate-limit, audit refusals) about the
//! call its request makes (`table`), forwards a request for another node to that node's agent
//! (`forward`), or runs the handler of its area (`host`, `events`, `services`, `cluster`,
//! `balancer`, `tokens`) and audits a change.

pub mod balancer;
pub mod cluster;
pub mod events;
pub mod forward;
pub mod gate;
pub mod grpc;
pub mod health;
pub mod host;
pub mod http;
pub mod layer;
pub mod services;
pub mod table;
pub mod tokens;

/// Largest number of past lines (log lines, access records) one request returns.
pub const MAX_LOG_LINES: u32 = 10_000;
/// Past lines a request gets when it does not say.
const DEFAULT_LOG_LINES: u32 = 100;

/// How many past lines a request for `requested` gets: 0 asks for the default.
fn past_lines(requested: u32) -> usize {
    let lines = match requested {
        0 => DEFAULT_LOG_LINES,
        n => n.min(MAX_LOG_LINES),
    };
    lines as usize
}
