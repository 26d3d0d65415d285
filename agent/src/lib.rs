//! The Strata host agent as a library: the binary `strata-agent` is a thin layer of
//! argument parsing over these modules, and the end-to-end tests drive the binary.

pub mod api;
pub mod auth;
pub mod cluster_link;
pub mod config;
pub mod data_lock;
pub mod events;
pub mod facts;
pub mod fd_store;
pub mod handoff;
/// Durable file writes; the shim's own helpers, shared so they are written once.
pub use strata_shim::fsutil;
pub mod identity;
pub mod install;
pub mod keyring_store;
pub mod leave;
pub mod manual;
pub mod metrics;
pub mod notify;
pub mod reload;
pub mod run;
pub mod sampler;
pub mod shim_binary;
pub mod state;
pub mod supervisor;
pub mod tls;
pub mod upgrade;
