//! Events: the durable journal every subsystem writes to, and the kernel log watch.

pub mod journal;
pub mod kmsg;
pub mod recover;
