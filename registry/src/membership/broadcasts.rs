//! foca's custom broadcast handler for the catalog: decides which piggybacked items are new
//! (and so worth passing on) and queues them for the node to apply. A newer version of a
//! node's record invalidates older ones still waiting to be sent.

use crate::wire::{self, Broadcast, DecodeError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::identity::NodeIdentity;

/// Received items waiting for the node to apply them.
pub type Inbox = Arc<Mutex<Vec<Broadcast>>>;

/// Takes every queued item.
pub fn drain(inbox: &Inbox) -> Vec<Broadcast> {
    std::mem::take(&mut *inbox.lock().unwrap_or_else(PoisonError::into_inner))
}

/// What a broadcast is about, for invalidation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// A record (inline or announced) of a node at a version.
    Node { id: String, version: u64 },
    /// A graceful departure of one incarnation.
    Left { id: String, bump: u64 },
}

impl foca::Invalidates for Key {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (Key::Node { id: a, version: x }, Key::Node { id: b, version: y }) => a == b && x >= y,
            (Key::Left { id: a, bump: x }, Key::Left { id: b, bump: y }) => a == b && x >= y,
            (Key::Left { id: a, .. }, Key::Node { id: b, .. }) => a == b,
            (Key::Node { .. }, Key::Left { .. }) => false,
        }
    }
}

/// Keeps the newest version seen per node so stale items stop spreading.
pub struct Handler {
    inbox: Inbox,
    versions: BTreeMap<String, u64>,
    departed: BTreeSet<(String, u64)>,
}

impl Handler {
    /// A handler that queues new items into `inbox`.
    pub fn new(inbox: Inbox) -> Self {
        Self {
            inbox,
            versions: BTreeMap::new(),
            departed: BTreeSet::new(),
        }
    }

    fn fresh_version(&mut self, id: &str, version: u64) -> bool {
        match self.versions.get(id) {
            Some(seen) if *seen >= version => false,
            _ => {
                self.versions.insert(id.to_string(), version);
                true
            }
        }
    }
}

impl foca::BroadcastHandler<NodeIdentity> for Handler {
    type Key = Key;
    type Error = DecodeError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeIdentity>,
    ) -> Result<Option<Key>, DecodeError> {
        let item: Broadcast = wire::decode(data)?;
        let key = match &item {
            Broadcast::Record(bytes) => {
                let record = wire::decode_record(bytes)?;
                self.fresh_version(&record.id, record.version)
                    .then_some(Key::Node {
                        id: record.id,
                        version: record.version,
                    })
            }
            Broadcast::Announce { id, version, .. } => {
                self.fresh_version(id, *version).then(|| Key::Node {
                    id: id.clone(),
                    version: *version,
                })
            }
            Broadcast::Left(departure) => self
                .departed
                .insert((departure.id.clone(), departure.bump))
                .then(|| Key::Left {
                    id: departure.id.clone(),
                    bump: departure.bump,
                }),
        };
        if key.is_some() && sender.is_some() {
            self.inbox
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(item);
        }
        Ok(key)
    }
}
