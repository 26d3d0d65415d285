//! The console's one way to an agent, shared by the CLI, the TUI and the demo: the
//! connection ([`connect`]) and why a call failed, with its exit code ([`failure`]).

pub mod connect;
pub mod failure;

pub use connect::{Client, ClientAuth, Connector};
pub use failure::{Failure, FailureKind};
