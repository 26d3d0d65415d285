//! The member table the API shows: one entry per node id (the newest incarnation wins),
//! with status, since-when and name conflicts. It is derived from foca's view plus graceful
//! departures, which foca cannot tell apart from failures.

use super::identity::NodeIdentity;
use crate::events::ClusterEvent;
use std::collections::{BTreeMap, BTreeSet};
use strata_proto::v1::MemberStatus;

/// Where a member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Alive,
    Suspect,
    Down,
    Left,
}

impl Status {
    /// Alive or suspect: still routable.
    pub fn is_live(self) -> bool {
        MemberStatus::from(self).is_live()
    }

    fn from_foca(state: foca::State) -> Self {
        match state {
            foca::State::Alive => Status::Alive,
            foca::State::Suspect => Status::Suspect,
            foca::State::Down => Status::Down,
        }
    }
}

impl From<Status> for MemberStatus {
    fn from(status: Status) -> MemberStatus {
        match status {
            Status::Alive => MemberStatus::Alive,
            Status::Suspect => MemberStatus::Suspect,
            Status::Down => MemberStatus::Down,
            Status::Left => MemberStatus::Left,
        }
    }
}

/// One remote member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberEntry {
    pub identity: NodeIdentity,
    pub status: Status,
    /// When the status last changed, unix ms.
    pub since_ms: u64,
    /// Ids of other live nodes using the same name.
    pub conflict: Vec<String>,
}

/// Remote members by node id.
#[derive(Debug, Clone)]
pub struct Members {
    local: NodeIdentity,
    by_id: BTreeMap<String, MemberEntry>,
    departed: BTreeSet<(String, u64)>,
    conflicts: BTreeMap<String, BTreeSet<String>>,
}

impl Members {
    /// An empty table for the node `local`.
    pub fn new(local: NodeIdentity) -> Self {
        Self {
            local,
            by_id: BTreeMap::new(),
            departed: BTreeSet::new(),
            conflicts: BTreeMap::new(),
        }
    }

    /// Updates the local identity after an automatic rejoin.
    pub fn set_local(&mut self, local: NodeIdentity) {
        self.local = local;
    }

    /// Remote members by node id.
    pub fn entries(&self) -> &BTreeMap<String, MemberEntry> {
        &self.by_id
    }

    /// A member by node id.
    pub fn get(&self, id: &str) -> Option<&MemberEntry> {
        self.by_id.get(id)
    }

    /// Applies foca's current view of one member; returns events for what changed.
    pub fn observe(
        &mut self,
        identity: &NodeIdentity,
        state: foca::State,
        now_ms: u64,
        events: &mut Vec<ClusterEvent>,
    ) {
        if identity.id.is_empty() || identity.id == self.local.id {
            return;
        }
        let departed = self
            .departed
            .contains(&(identity.id.clone(), identity.bump));
        let status = if departed {
            Status::Left
        } else {
            Status::from_foca(state)
        };
        let name = identity.name.clone();
        match self.by_id.get_mut(&identity.id) {
            Some(entry) if entry.identity.bump > identity.bump => {}
            Some(entry) if entry.identity.bump == identity.bump => {
                if entry.status != status && !(entry.status == Status::Left && departed) {
                    entry.status = status;
                    entry.since_ms = now_ms;
                    events.push(status_event(status, name));
                }
            }
            Some(entry) => {
                if !status.is_live() && entry.status.is_live() {
                    // A newer incarnation we only hear of as down: keep it, report the change.
                    events.push(status_event(status, name.clone()));
                } else if status.is_live() {
                    events.push(ClusterEvent::Rejoined { name });
                }
                *entry = MemberEntry {
                    identity: identity.clone(),
                    status,
                    since_ms: now_ms,
                    conflict: Vec::new(),
                };
            }
            None => {
                if status.is_live() {
                    events.push(ClusterEvent::Joined { name });
                }
                self.by_id.insert(
                    identity.id.clone(),
                    MemberEntry {
                        identity: identity.clone(),
                        status,
                        since_ms: now_ms,
                        conflict: Vec::new(),
                    },
                );
            }
        }
    }

    /// Records a graceful departure; returns whether the member's status changed.
    pub fn depart(
        &mut self,
        id: &str,
        bump: u64,
        now_ms: u64,
        events: &mut Vec<ClusterEvent>,
    ) -> bool {
        if id == self.local.id || !self.departed.insert((id.to_string(), bump)) {
            return false;
        }
        match self.by_id.get_mut(id) {
            Some(entry) if entry.identity.bump == bump && entry.status != Status::Left => {
                entry.status = Status::Left;
                entry.since_ms = now_ms;
                events.push(ClusterEvent::Left {
                    name: entry.identity.name.clone(),
                });
                true
            }
            _ => false,
        }
    }

    /// Removes members down or left for longer than `after_ms`; returns their ids.
    pub fn reap(
        &mut self,
        now_ms: u64,
        after_ms: u64,
        events: &mut Vec<ClusterEvent>,
    ) -> Vec<String> {
        let expired: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, e)| !e.status.is_live() && now_ms.saturating_sub(e.since_ms) >= after_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            if let Some(entry) = self.by_id.remove(id) {
                events.push(ClusterEvent::Reaped {
                    name: entry.identity.name,
                });
            }
        }
        expired
    }

    /// Removes down or left members with this name now; returns their ids, or `None` when a
    /// member of that name is live or none exists.
    pub fn force_leave(
        &mut self,
        name: &str,
        events: &mut Vec<ClusterEvent>,
    ) -> Option<Vec<String>> {
        let matching: Vec<&MemberEntry> = self
            .by_id
            .values()
            .filter(|e| e.identity.name == name)
            .collect();
        if matching.is_empty() || matching.iter().any(|e| e.status.is_live()) {
            return None;
        }
        let ids: Vec<String> = matching.iter().map(|e| e.identity.id.clone()).collect();
        for id in &ids {
            self.by_id.remove(id);
        }
        events.push(ClusterEvent::Reaped {
            name: name.to_string(),
        });
        Some(ids)
    }

    /// Recomputes name conflicts among live nodes (the local one included); reports new ones.
    pub fn refresh_conflicts(&mut self, events: &mut Vec<ClusterEvent>) {
        let mut by_name: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        by_name
            .entry(self.local.name.clone())
            .or_default()
            .insert(self.local.id.clone());
        for entry in self.by_id.values().filter(|e| e.status.is_live()) {
            by_name
                .entry(entry.identity.name.clone())
                .or_default()
                .insert(entry.identity.id.clone());
        }
        by_name.retain(|_, ids| ids.len() > 1);
        for entry in self.by_id.values_mut() {
            entry.conflict = by_name
                .get(&entry.identity.name)
                .filter(|_| entry.status.is_live())
                .map(|ids| {
                    ids.iter()
                        .filter(|id| **id != entry.identity.id)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
        }
        for (name, ids) in &by_name {
            if self.conflicts.get(name) != Some(ids) {
                events.push(ClusterEvent::Conflict {
                    name: name.clone(),
                    ids: ids.iter().cloned().collect(),
                });
            }
        }
        self.conflicts = by_name;
    }

    /// Ids of other live nodes using the local node's name.
    pub fn local_conflict(&self) -> Vec<String> {
        self.conflicts
            .get(&self.local.name)
            .map(|ids| {
                ids.iter()
                    .filter(|id| **id != self.local.id)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn status_event(status: Status, name: String) -> ClusterEvent {
    match status {
        Status::Alive => ClusterEvent::Alive { name },
        Status::Suspect => ClusterEvent::Suspect { name },
        Status::Down => ClusterEvent::Down { name },
        Status::Left => ClusterEvent::Left { name },
    }
}
