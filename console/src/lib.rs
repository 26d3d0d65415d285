//! The Strata operator's tools as a library, so the `strata` binary stays a thin layer of
//! argument parsing and the console's model and views can be benchmarked and tested.

pub mod cli;
pub mod client;
pub mod demo;
pub mod format;
pub mod model;
pub mod tui;
