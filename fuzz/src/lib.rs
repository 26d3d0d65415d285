//! The entry points of Strata's fuzz targets, as plain functions of the input bytes.
//!
//! Each module is also compiled into the main workspace's tests (`#[path]`), which replay
//! every file of `fuzz/corpus/<target>/` through the same function on stable, so a
//! regression is caught by `cargo test` without nightly or cargo-fuzz.

pub mod agent;
pub mod registry;
