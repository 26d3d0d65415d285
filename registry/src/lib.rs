//! Strata's communication layer: gossip membership (SWIM via foca) with sealed packets, the
//! replicated service catalog, the local load balancer and DNS.
//!
//! The catalog publishes a [`table::ServiceTable`] snapshot on every change; the balancer and
//! DNS read only that, so each part can be built and tested alone. The protocol lives in the
//! sans-I/O [`node::Node`]; [`cluster::Cluster`] drives it over UDP and TCP with tokio.

pub mod balance;
pub mod catalog;
pub mod cluster;
pub mod dns;
mod driver;
pub mod events;
pub mod inherit;
pub mod membership;
pub mod node;
pub mod publish;
pub mod seal;
pub mod stream_tls;
pub mod table;
pub mod throttle;
pub mod wire;
