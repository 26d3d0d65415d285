//! Strata's communication layer: gossip membership (SWIM via foca) with sealed packets, the
//! replicated service catalog, the local load balancer and DNS.
//!
//! The catalog publishes a [`table::ServiceTable`] snapshot on every change; the balancer and
//! DNS read only that, so each part can be built and tested alone.

pub mod balance;
pub mod dns;
pub mod table;
