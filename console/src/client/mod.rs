//! The console's one way to an agent, shared by the CLI, the TUI and the demo: the
//! connection ([`connect`]), why a call failed and its exit code ([`failure`]), every change
//! an operator can make ([`ops`]), the question the console confirms it with ([`change`]),
//! what it reports ([`outcome`]) and, for the changes that converge, the wait
//! ([`converge`]); a call the agent refused for now is sent again ([`retry`]).

pub mod change;
pub mod connect;
pub mod converge;
pub mod failure;
pub mod ops;
pub mod outcome;
pub mod retry;

pub use connect::{Client, ClientAuth, Connector};
pub use failure::{Failure, FailureKind};
