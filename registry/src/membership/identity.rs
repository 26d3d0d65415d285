//! The identity a node gossips under: a stable node id and name, where to reach it, and a
//! "bump" (start time in ms) so a restarted agent supersedes its old self instead of being
//! confused with it.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One incarnation of an agent in the SWIM membership.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// The agent's UUID, stable across restarts.
    pub id: String,
    /// Human name; two live ids with one name are reported as a conflict.
    pub name: String,
    /// Where its gossip socket (UDP and TCP) is reached.
    pub addr: SocketAddr,
    /// Start time in unix ms, raised on every automatic rejoin: newer wins.
    pub bump: u64,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}#{}", self.name, self.addr, self.bump)
    }
}

impl NodeIdentity {
    /// A placeholder for a join address whose node is not known yet: foca accepts an
    /// announce addressed to any identity with the receiver's address.
    pub fn seed(addr: SocketAddr) -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            addr,
            bump: 0,
        }
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = SocketAddr;

    /// Rejoin automatically with a higher bump after being wrongly declared down, so a
    /// false detection heals instead of leaving the node defunct.
    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Of two identities on one address, the later start wins (a restart replaces).
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.bump, &self.id) > (adversary.bump, &adversary.id)
    }
}
