//! The Strata host agent as a library: the binary `strata-agent` is a thin layer of
//! argument parsing over these modules, and the end-to-end tests drive the binary.

pub mod events;
pub mod metrics;
