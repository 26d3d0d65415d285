//! The replicated service catalog: one versioned [`NodeRecord`] per node, the local one owned
//! and bumped here, remote ones merged by version (newest wins). Tombstones keep records of
//! departed nodes from being brought back by a peer that has not heard of the departure.

use std::collections::BTreeMap;
use strata_proto::v1::{CatalogService, ClusterToken, NodeRecord, NodeSummary};

/// The records this node knows, its own included.
#[derive(Debug, Clone)]
pub struct Catalog {
    local_id: String,
    records: BTreeMap<String, NodeRecord>,
    /// Node id to (highest version removed, when removed in ms).
    tombstones: BTreeMap<String, (u64, u64)>,
}

/// What the anti-entropy comparison of two digests found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DigestDiff {
    /// Our records the peer lacks or has older.
    pub newer_here: Vec<String>,
    /// Ids the peer has newer than us.
    pub newer_there: Vec<String>,
}

impl Catalog {
    /// A catalog holding only the local record. Its version starts at `now_ms`, so a
    /// restarted agent's record supersedes the one its previous run gossiped.
    pub fn new(mut local: NodeRecord, now_ms: u64) -> Self {
        local.version = now_ms;
        local.updated_unix_ms = now_ms as i64;
        let local_id = local.id.clone();
        Self {
            records: BTreeMap::from([(local_id.clone(), local)]),
            local_id,
            tombstones: BTreeMap::new(),
        }
    }

    /// The record this node owns.
    pub fn local(&self) -> &NodeRecord {
        &self.records[&self.local_id]
    }

    /// Changes the local record through `change`; bumps the version only when the record
    /// really changed. Returns whether it did.
    pub fn update_local(&mut self, now_ms: u64, change: impl FnOnce(&mut NodeRecord)) -> bool {
        let Some(record) = self.records.get_mut(&self.local_id) else {
            return false;
        };
        let mut next = record.clone();
        change(&mut next);
        if next == *record {
            return false;
        }
        next.version = (record.version + 1).max(now_ms);
        next.updated_unix_ms = now_ms as i64;
        *record = next;
        true
    }

    /// Replaces the local services.
    pub fn set_services(&mut self, services: Vec<CatalogService>, now_ms: u64) -> bool {
        self.update_local(now_ms, |r| r.services = services)
    }

    /// Replaces the local summary.
    pub fn set_summary(&mut self, summary: NodeSummary, now_ms: u64) -> bool {
        self.update_local(now_ms, |r| r.summary = Some(summary))
    }

    /// Replaces the cluster-wide tokens the local record carries.
    pub fn set_tokens(&mut self, tokens: Vec<ClusterToken>, now_ms: u64) -> bool {
        self.update_local(now_ms, |r| r.tokens = tokens)
    }

    /// Marks the local node draining or not.
    pub fn set_draining(&mut self, draining: bool, now_ms: u64) -> bool {
        self.update_local(now_ms, |r| r.draining = draining)
    }

    /// Merges a remote record if it is newer than what we hold and not tombstoned.
    pub fn merge(&mut self, record: NodeRecord) -> bool {
        if record.id == self.local_id {
            return false;
        }
        if let Some((version, _)) = self.tombstones.get(&record.id)
            && record.version <= *version
        {
            return false;
        }
        match self.records.get(&record.id) {
            Some(held) if held.version >= record.version => false,
            _ => {
                self.tombstones.remove(&record.id);
                self.records.insert(record.id.clone(), record);
                true
            }
        }
    }

    /// Drops a remote record and remembers `version` so older copies stay out.
    pub fn remove(&mut self, id: &str, version: u64, now_ms: u64) -> bool {
        if id == self.local_id {
            return false;
        }
        let held = self.records.remove(id);
        let version = held.as_ref().map_or(version, |r| r.version.max(version));
        self.tombstones.insert(id.to_string(), (version, now_ms));
        held.is_some()
    }

    /// Forgets tombstones older than `keep_ms`.
    pub fn expire_tombstones(&mut self, now_ms: u64, keep_ms: u64) {
        self.tombstones
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < keep_ms);
    }

    /// A record by node id.
    pub fn get(&self, id: &str) -> Option<&NodeRecord> {
        self.records.get(id)
    }

    /// Every record, by node id.
    pub fn records(&self) -> &BTreeMap<String, NodeRecord> {
        &self.records
    }

    /// (node id, version) of every record, for anti-entropy.
    pub fn digest(&self) -> Vec<(String, u64)> {
        self.records
            .iter()
            .map(|(id, r)| (id.clone(), r.version))
            .collect()
    }

    /// The version held for a node, if any.
    pub fn version_of(&self, id: &str) -> Option<u64> {
        self.records.get(id).map(|r| r.version)
    }

    /// Compares a peer's digest with ours.
    pub fn diff(&self, theirs: &[(String, u64)]) -> DigestDiff {
        let theirs: BTreeMap<&str, u64> = theirs.iter().map(|(id, v)| (id.as_str(), *v)).collect();
        let mut diff = DigestDiff::default();
        for (id, record) in &self.records {
            if theirs.get(id.as_str()).is_none_or(|v| *v < record.version) {
                diff.newer_here.push(id.clone());
            }
        }
        for (id, version) in theirs {
            let tombstoned = self.tombstones.get(id).is_some_and(|(v, _)| version <= *v);
            if !tombstoned && self.version_of(id).is_none_or(|v| v < version) {
                diff.newer_there.push(id.to_string());
            }
        }
        diff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, version: u64) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            name: id.into(),
            version,
            ..Default::default()
        }
    }

    #[test]
    fn local_bumps_only_on_change() {
        let mut c = Catalog::new(record("a", 0), 100);
        assert_eq!(c.local().version, 100);
        assert!(!c.set_draining(false, 100));
        assert!(c.set_draining(true, 100));
        assert_eq!(c.local().version, 101);
        assert!(c.set_draining(false, 500));
        assert_eq!(c.local().version, 500);
    }

    #[test]
    fn merge_keeps_newest_and_respects_tombstones() {
        let mut c = Catalog::new(record("a", 0), 1);
        assert!(c.merge(record("b", 5)));
        assert!(!c.merge(record("b", 4)));
        assert!(!c.merge(record("a", 99)));
        assert!(c.remove("b", 0, 10));
        assert!(!c.merge(record("b", 5)));
        assert!(c.merge(record("b", 6)));
        let diff = c.diff(&[("b".into(), 7), ("c".into(), 1)]);
        assert_eq!(diff.newer_here, vec!["a".to_string()]);
        assert_eq!(diff.newer_there, vec!["b".to_string(), "c".to_string()]);
    }
}
