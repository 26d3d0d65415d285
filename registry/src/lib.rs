//! Strata's communication layer: gossip membership, the replicated service catalog,
//! the local load balancer and DNS. Filled by the registry and balancer work; for now it
//! only names the crate's place in the workspace.

/// The version of the registry protocol this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
