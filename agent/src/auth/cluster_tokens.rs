//! Cluster-wide tokens: made and revoked through any agent by an admin, carried by every
//! node's catalog record, merged by every agent and stored in its data dir
//! (`cluster-tokens.json`), so a restarted or new agent knows them and a departed node takes
//! none with it.
//!
//! The set is a state CRDT by name. One creation of a name (its `created_unix_ms` and hash) is
//! an incarnation; of two records for a name, the newer incarnation wins, and within one
//! incarnation a revoked record beats a live one (revocation is sticky). Every tie is broken by
//! the encoded bytes, so merging is commutative, associative and idempotent: agents that saw
//! the same records hold the same set, whatever the order.

use super::role::Role;
use super::scope::Scope;
use super::tokens::{self, hash};
use crate::fsutil::write_atomic;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;
use strata_proto::v1::{ClusterToken, Role as WireRole, TokenScope};
use strata_registry::cluster::Cluster;
use strata_registry::events::ClusterEvent;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The file the merged set is kept in, inside the data dir.
pub const CLUSTER_TOKENS_FILE: &str = "cluster-tokens.json";
/// Cluster tokens one agent keeps at most: bounds what a peer's record can make it hold.
const MAX_TOKENS: usize = 1000;
/// Changes arriving this close together are merged as one.
const DEBOUNCE: Duration = Duration::from_millis(20);
/// How often the set is merged from the catalog even without a change event.
const RESYNC_INTERVAL: Duration = Duration::from_secs(5);
/// How long the record of an expired token is kept (for `strata token list`) before every
/// agent forgets it. Safe, unlike forgetting a revocation: any copy a peer still holds is of
/// the same incarnation, so it is expired too and refused on arrival.
const EXPIRED_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// Why a cluster token could not be made, revoked or stored.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTokenError {
    /// A bad name, role, expiry or scope: names the field.
    #[error("{0}")]
    Invalid(String),
    /// A live token of that name exists.
    #[error("a cluster token named {0:?} exists (revoke it first)")]
    Exists(String),
    /// No token of that name.
    #[error("no cluster token named {0:?}")]
    NotFound(String),
    /// Already revoked.
    #[error("cluster token {0:?} is already revoked")]
    Revoked(String),
    /// The data dir could not be written: nothing changed.
    #[error("cannot store the cluster tokens in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The OS gave no randomness.
    #[error("{0}")]
    Random(String),
}

/// What a cluster token says about a secret shown to this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// It is valid: name, role and scope.
    Valid(tokens::Token),
    /// It was revoked: the message says when and by whom.
    Revoked(String),
    /// It expired: the message says when.
    Expired(String),
}

/// Where in a record's ordering a token stands: the greatest wins a merge.
fn rank(t: &ClusterToken) -> (i64, &str, bool, Reverse<i64>, Vec<u8>) {
    (
        t.created_unix_ms,
        t.sha256.as_str(),
        t.revoked_unix_ms > 0,
        Reverse(t.revoked_unix_ms),
        t.encode_to_vec(),
    )
}

/// Checks a record from a peer (or a file): a bad one is never taken in.
fn check(t: &ClusterToken) -> Result<(), String> {
    tokens::check_name(&t.name).map_err(|p| format!("name {:?}: {p}", t.name))?;
    if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("token {:?}: sha256 must be 64 hex digits", t.name));
    }
    if role_of(t).is_none() {
        return Err(format!("token {:?}: no role", t.name));
    }
    scope_of(t).check()
}

fn role_of(t: &ClusterToken) -> Option<Role> {
    match WireRole::from_wire(t.role) {
        WireRole::Read => Some(Role::Read),
        WireRole::Operate => Some(Role::Operate),
        WireRole::Admin => Some(Role::Admin),
        WireRole::Unspecified => None,
    }
}

/// A token's scope, from its record.
pub fn scope_of(t: &ClusterToken) -> Scope {
    let scope = t.scope.clone().unwrap_or_default();
    Scope {
        services: scope.services,
        team: Some(scope.team).filter(|t| !t.is_empty()),
    }
}

/// The record form of a scope.
pub fn wire_scope(scope: &Scope) -> Option<TokenScope> {
    (!scope.is_unscoped()).then(|| TokenScope {
        services: scope.services.clone(),
        team: scope.team.clone().unwrap_or_default(),
    })
}

/// Whether the record of `t` is forgotten at `now_ms`: it expired over a week ago.
fn forgotten(t: &ClusterToken, now_ms: i64) -> bool {
    t.expires_unix_ms > 0 && now_ms > t.expires_unix_ms.saturating_add(EXPIRED_KEPT_MS)
}

/// Merges `incoming` into `set` at `now_ms`; whether the set changed. Records that fail their
/// checks, new names beyond the bound, and tokens long expired (held or incoming) are left
/// out.
pub fn merge(
    set: &mut BTreeMap<String, ClusterToken>,
    incoming: impl IntoIterator<Item = ClusterToken>,
    now_ms: i64,
) -> bool {
    let held = set.len();
    set.retain(|_, t| !forgotten(t, now_ms));
    let mut changed = set.len() != held;
    for token in incoming {
        if let Err(e) = check(&token) {
            tracing::debug!(error = %e, "cluster token left out");
            continue;
        }
        if forgotten(&token, now_ms) {
            continue;
        }
        match set.get(&token.name) {
            Some(held) if rank(held) >= rank(&token) => {}
            None if set.len() >= MAX_TOKENS => {
                tracing::warn!(name = %token.name, "too many cluster tokens; one left out");
            }
            _ => {
                set.insert(token.name.clone(), token);
                changed = true;
            }
        }
    }
    changed
}

/// When a millisecond time is, in words for messages (UTC, RFC 3339).
fn when(unix_ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// What the token record whose hash is `digest` says at `now_ms`, if there is one.
pub fn judge(
    set: &BTreeMap<String, ClusterToken>,
    digest: &[u8; 32],
    now_ms: i64,
) -> Option<Found> {
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut found = None;
    for token in set.values() {
        if tokens::same_bytes(token.sha256.as_bytes(), hex.as_bytes()) {
            found = Some(token);
        }
    }
    let token = found?;
    if token.revoked_unix_ms > 0 {
        return Some(Found::Revoked(format!(
            "cluster token {:?} was revoked at {} by {} on agent {}",
            token.name,
            when(token.revoked_unix_ms),
            token.revoked_by,
            token.revoked_on
        )));
    }
    if token.expires_unix_ms > 0 && now_ms >= token.expires_unix_ms {
        return Some(Found::Expired(format!(
            "cluster token {:?} expired at {} (an admin makes a new one with `strata token create`)",
            token.name,
            when(token.expires_unix_ms)
        )));
    }
    Some(Found::Valid(tokens::Token {
        name: token.name.clone(),
        role: role_of(token)?,
        sha256: *digest,
        scope: scope_of(token),
    }))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokensFile {
    tokens: Vec<ClusterToken>,
}

/// The cluster tokens this agent knows, kept in its data dir.
pub struct ClusterTokens {
    path: PathBuf,
    node: String,
    set: RwLock<Arc<BTreeMap<String, ClusterToken>>>,
    /// Serialises changes (merge, create, revoke) so each is stored before the next.
    write: Mutex<()>,
    changed: watch::Sender<u64>,
}

/// What a new token is to be.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// How long it is valid; `None`: until revoked.
    pub expires_in: Option<Duration>,
    /// What it may change.
    pub scope: Scope,
}

impl ClusterTokens {
    /// The set stored in `data_dir` for the agent `node`. A file that cannot be read is moved
    /// aside (`.damaged-<ms>`) and the agent starts with none (it learns them again from its
    /// peers); the second value says what was found.
    pub fn open(data_dir: &Path, node: &str) -> (ClusterTokens, Option<String>) {
        let path = data_dir.join(CLUSTER_TOKENS_FILE);
        let mut set = BTreeMap::new();
        let finding = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<TokensFile>(&bytes) {
                Ok(file) => {
                    merge(&mut set, file.tokens, crate::state::unix_now_ms());
                    None
                }
                Err(e) => Some(set_aside(&path, &e.to_string())),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(set_aside(&path, &e.to_string())),
        };
        let (changed, _) = watch::channel(0);
        let store = ClusterTokens {
            path,
            node: node.to_string(),
            set: RwLock::new(Arc::new(set)),
            write: Mutex::new(()),
            changed,
        };
        (store, finding)
    }

    /// The set as it is now, by name.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, ClusterToken>> {
        self.set
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many tokens (revoked ones included) it holds.
    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    /// What the set says about `secret` now.
    pub fn lookup(&self, secret: &str) -> Option<Found> {
        judge(&self.snapshot(), &hash(secret), crate::state::unix_now_ms())
    }

    /// Applies `change` to a copy of the set, stores it and only then makes it current.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, ClusterToken>) -> Result<T, ClusterTokenError>,
    ) -> Result<T, ClusterTokenError> {
        let _writing = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = (*self.snapshot()).clone();
        let result = change(&mut next)?;
        if next != *self.snapshot() {
            let file = TokensFile {
                tokens: next.values().cloned().collect(),
            };
            let text = serde_json::to_vec_pretty(&file)
                .map_err(|e| ClusterTokenError::Invalid(e.to_string()))?;
            let io = |source| ClusterTokenError::Io {
                path: self.path.clone(),
                source,
            };
            write_atomic(&self.path, &text).map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
                .map_err(io)?;
            *self.set.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(result)
    }

    /// Merges records learned from the catalog; whether anything changed.
    pub fn merge(
        &self,
        incoming: impl IntoIterator<Item = ClusterToken>,
    ) -> Result<bool, ClusterTokenError> {
        self.change(|set| Ok(merge(set, incoming, crate::state::unix_now_ms())))
    }

    /// Makes a token for `by` and returns its record and secret (shown once).
    pub fn create(
        &self,
        new: NewToken,
        by: &str,
    ) -> Result<(ClusterToken, String), ClusterTokenError> {
        tokens::check_name(&new.name)
            .map_err(|p| ClusterTokenError::Invalid(format!("name {:?}: {p}", new.name)))?;
        new.scope.check().map_err(ClusterTokenError::Invalid)?;
        let secret =
            tokens::generate_secret().map_err(|e| ClusterTokenError::Random(e.to_string()))?;
        let now = crate::state::unix_now_ms();
        let token = self.change(|set| {
            let previous = set.get(&new.name);
            if let Some(held) = previous
                && held.revoked_unix_ms == 0
                && (held.expires_unix_ms == 0 || held.expires_unix_ms > now)
            {
                return Err(ClusterTokenError::Exists(new.name.clone()));
            }
            // Newer than any incarnation held, whatever this agent's clock says.
            let created = previous.map_or(now, |p| now.max(p.created_unix_ms + 1));
            let expires = match new.expires_in {
                Some(d) => created.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                None => 0,
            };
            let token = ClusterToken {
                name: new.name.clone(),
                role: WireRole::from(new.role) as i32,
                sha256: hash(&secret).iter().map(|b| format!("{b:02x}")).collect(),
                created_unix_ms: created,
                expires_unix_ms: expires,
                revoked_unix_ms: 0,
                created_on: self.node.clone(),
                created_by: by.to_string(),
                revoked_on: String::new(),
                revoked_by: String::new(),
                scope: wire_scope(&new.scope),
            };
            set.insert(token.name.clone(), token.clone());
            Ok(token)
        })?;
        Ok((token, secret))
    }

    /// Revokes the token named `name` for `by`; returns its record.
    pub fn revoke(&self, name: &str, by: &str) -> Result<ClusterToken, ClusterTokenError> {
        self.change(|set| {
            let token = set
                .get_mut(name)
                .ok_or_else(|| ClusterTokenError::NotFound(name.to_string()))?;
            if token.revoked_unix_ms > 0 {
                return Err(ClusterTokenError::Revoked(name.to_string()));
            }
            token.revoked_unix_ms = crate::state::unix_now_ms().max(1);
            token.revoked_on = self.node.clone();
            token.revoked_by = by.to_string();
            Ok(token.clone())
        })
    }

    /// Keeps the set and the catalog in step: merges the tokens every record carries, and
    /// publishes the merged set in this node's record, on every catalog change, every local
    /// change and every few seconds.
    pub fn spawn_sync(self: &Arc<Self>, cluster: Cluster) -> JoinHandle<()> {
        let store = Arc::clone(self);
        let mut events = cluster.subscribe();
        let mut changed = self.changed.subscribe();
        tokio::spawn(async move {
            let mut resync = tokio::time::interval(RESYNC_INTERVAL);
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(ClusterEvent::RecordChanged { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    result = changed.changed() => if result.is_err() { return },
                    _ = resync.tick() => {}
                }
                // The catalog snapshot follows its event by a moment.
                tokio::time::sleep(DEBOUNCE).await;
                let learned = cluster.records().into_iter().flat_map(|r| r.tokens);
                if let Err(e) = store.merge(learned) {
                    tracing::error!(error = %e, "cannot store the cluster tokens");
                }
                cluster.set_tokens(store.snapshot().values().cloned().collect());
            }
        })
    }
}

/// Moves a damaged token file aside; the message says where.
fn set_aside(path: &Path, why: &str) -> String {
    let aside = PathBuf::from(format!(
        "{}.damaged-{}",
        path.display(),
        crate::state::unix_now_ms()
    ));
    match std::fs::rename(path, &aside) {
        Ok(()) => format!(
            "{} could not be read ({why}); moved to {} and learned again from the peers",
            path.display(),
            aside.display()
        ),
        Err(e) => format!(
            "{} could not be read ({why}) nor moved aside ({e}); learned again from the peers",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time after every token the tests make.
    const NOW: i64 = 1_000_000;

    fn token(name: &str, created: i64, sha: char, revoked: i64) -> ClusterToken {
        ClusterToken {
            name: name.into(),
            role: WireRole::Operate as i32,
            sha256: sha.to_string().repeat(64),
            created_unix_ms: created,
            revoked_unix_ms: revoked,
            ..Default::default()
        }
    }

    fn merged(order: &[ClusterToken]) -> BTreeMap<String, ClusterToken> {
        let mut set = BTreeMap::new();
        merge(&mut set, order.iter().cloned(), NOW);
        set
    }

    #[test]
    fn merging_is_order_free_revocation_sticks_and_newer_creations_win() {
        let live = token("ci", 10, 'a', 0);
        let revoked = token("ci", 10, 'a', 20);
        let revoked_later = token("ci", 10, 'a', 30);
        let recreated = token("ci", 40, 'b', 0);
        let all = [live, revoked.clone(), revoked_later, recreated.clone()];
        let mut orders = vec![all.to_vec()];
        let mut reversed = all.to_vec();
        reversed.reverse();
        orders.push(reversed);
        orders.push(vec![
            all[2].clone(),
            all[0].clone(),
            all[3].clone(),
            all[1].clone(),
        ]);
        for order in &orders {
            assert_eq!(merged(order)["ci"], recreated, "{order:?}");
        }
        let without_recreation = &all[..3];
        assert_eq!(
            merged(without_recreation)["ci"],
            revoked,
            "earliest revocation"
        );
        let mut set = merged(without_recreation);
        assert!(
            !merge(&mut set, [token("ci", 10, 'a', 0)], NOW),
            "a live copy loses"
        );
        assert!(!merge(&mut set, [token("bad name", 1, 'a', 0)], NOW));
        assert!(!merge(&mut set, [token("x", 1, 'z', 0)], NOW), "bad hash");
    }

    #[test]
    fn a_token_expired_over_a_week_ago_is_forgotten_held_or_incoming() {
        let expiring = |name: &str, expires| ClusterToken {
            expires_unix_ms: expires,
            ..token(name, 10, 'a', 0)
        };
        let now = 100 + EXPIRED_KEPT_MS;
        let mut set = BTreeMap::new();
        assert!(merge(
            &mut set,
            [expiring("old", 100), expiring("new", 200)],
            now - 1
        ));
        assert_eq!(set.len(), 2, "expired, but within the week");
        assert!(merge(&mut set, [], now + 1), "the held one is forgotten");
        assert_eq!(set.keys().collect::<Vec<_>>(), ["new"]);
        assert!(
            !merge(&mut set, [expiring("old", 100)], now + 1),
            "a peer's copy is refused"
        );
        assert!(
            !merge(&mut set, [], now + 50),
            "new is kept until its own week ends"
        );
    }

    #[test]
    fn lookups_say_valid_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let (store, finding) = ClusterTokens::open(dir.path(), "n1");
        assert!(finding.is_none());
        let new = |name: &str, expires_in| NewToken {
            name: name.into(),
            role: Role::Operate,
            expires_in,
            scope: Scope::default(),
        };
        let (record, secret) = store.create(new("ci", None), "alice").unwrap();
        assert_eq!(
            (record.created_on.as_str(), record.created_by.as_str()),
            ("n1", "alice")
        );
        match store.lookup(&secret) {
            Some(Found::Valid(t)) => assert_eq!((t.name.as_str(), t.role), ("ci", Role::Operate)),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.lookup("strata_other"), None);
        assert!(matches!(
            store.create(new("ci", None), "bob"),
            Err(ClusterTokenError::Exists(_))
        ));
        store.revoke("ci", "bob").unwrap();
        match store.lookup(&secret) {
            Some(Found::Revoked(why)) => assert!(why.contains("by bob on agent n1"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.revoke("ci", "bob"),
            Err(ClusterTokenError::Revoked(_))
        ));
        let (again, _) = store.create(new("ci", None), "carol").unwrap();
        assert!(again.created_unix_ms > record.created_unix_ms);

        let (_, short) = store
            .create(new("brief", Some(Duration::ZERO)), "alice")
            .unwrap();
        match store.lookup(&short) {
            Some(Found::Expired(why)) => assert!(why.contains("expired at"), "{why}"),
            other => panic!("{other:?}"),
        }

        let (reopened, _) = ClusterTokens::open(dir.path(), "n1");
        assert_eq!(reopened.snapshot(), store.snapshot(), "stored");
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_the_agent_starts_without() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CLUSTER_TOKENS_FILE), "{not json").unwrap();
        let (store, finding) = ClusterTokens::open(dir.path(), "n1");
        assert!(store.is_empty());
        assert!(finding.unwrap().contains(".damaged-"));
        assert!(!dir.path().join(CLUSTER_TOKENS_FILE).exists());
    }
}
