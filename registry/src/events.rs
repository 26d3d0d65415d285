//! Cluster events for the agent's journal and watchers.

/// Something that happened in the cluster, as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node was seen for the first time.
    Joined { name: String },
    /// A suspected node refuted the suspicion.
    Alive { name: String },
    /// A node missed its probes; it may yet refute.
    Suspect { name: String },
    /// A node was declared failed: its instances left discovery.
    Down { name: String },
    /// A node left gracefully.
    Left { name: String },
    /// A node came back as a new incarnation (restart or rejoin after a false detection).
    Rejoined { name: String },
    /// Several live nodes use one name; they are kept apart by id.
    Conflict { name: String, ids: Vec<String> },
    /// A node's record changed (by node id).
    RecordChanged { node: String },
    /// A departed node was forgotten.
    Reaped { name: String },
    /// This node's identity was declared down and it rejoined as a new incarnation.
    SelfRejoined,
    /// Packets from `from` were refused (wrong cluster key, unsealed, malformed): reported
    /// at most once a minute per address, with how many more were refused since the last.
    Rejected {
        from: std::net::SocketAddr,
        reason: String,
        held_back: u64,
    },
}
