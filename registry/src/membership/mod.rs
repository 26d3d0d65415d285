//! SWIM membership: the identity nodes gossip under and the member table derived from
//! foca's view.

pub mod broadcasts;
pub mod identity;
pub mod members;
