//! Audit records: every mutating call, and every refused call, as an `audit` event in the
//! journal, saying who, what, on which target, with which arguments, and how it ended.

use super::Identity;
use crate::events::journal::EventDraft;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use strata_proto::v1::Severity;
use strata_registry::throttle::Throttle;
use tonic::{Code, Status};

/// The event kind of every audit record, so `strata events --kind audit` finds them.
pub const AUDIT_KIND: &str = "audit";

/// One call to record.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// Who made it.
    pub who: Identity,
    /// The call, as the CLI names it: "apply", "restart", "keyring install", ...
    pub what: String,
    /// What it acted on: "service:web", "node:n2", "keyring".
    pub target: String,
    /// The arguments that matter, as `key=value` fields.
    pub args: Vec<(String, String)>,
}

/// How a call ended, in one word or line for the record.
fn outcome(result: Result<(), &Status>) -> (String, Severity) {
    match result {
        Ok(()) => ("ok".into(), Severity::Info),
        Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
            (format!("denied: {}", s.message()), Severity::Warning)
        }
        Err(s) => (format!("failed: {}", s.message()), Severity::Warning),
    }
}

/// The journal event for `entry` ending with `result`.
pub fn draft(entry: &AuditEntry, result: Result<(), &Status>) -> EventDraft {
    let (result, severity) = outcome(result);
    let mut draft = EventDraft::new(
        AUDIT_KIND,
        severity,
        entry.target.clone(),
        format!(
            "{} {} by {}: {}",
            entry.what, entry.target, entry.who.name, result
        ),
    )
    .field("who", entry.who.name.clone())
    .field("role", entry.who.role.as_str())
    .field("via", entry.who.via.as_str())
    .field("what", entry.what.clone())
    .field("target", entry.target.clone())
    .field("result", result);
    if let Some(addr) = entry.who.remote {
        draft = draft.field("from", addr.to_string());
    }
    for (key, value) in &entry.args {
        draft = draft.field(format!("arg.{key}"), value.clone());
    }
    draft
}

/// A short fingerprint of a secret or a document for audit records: the first 16 hex digits
/// of its SHA-256, so records can tell versions (and keys) apart without holding them.
pub fn fingerprint(text: &str) -> String {
    super::tokens::hash(text)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How often one client's refusals for one call are written: a flood of refused calls
/// becomes one record a second with a count, not a flood of records.
const DENIAL_INTERVAL: Duration = Duration::from_secs(1);
/// Distinct (client, call) pairs remembered at most.
const MAX_DENIAL_KEYS: usize = 1024;

/// Thins out records of refused calls.
pub struct DenialThrottle(Mutex<Throttle<String>>);

impl Default for DenialThrottle {
    fn default() -> Self {
        DenialThrottle(Mutex::new(Throttle::new(DENIAL_INTERVAL, MAX_DENIAL_KEYS)))
    }
}

impl DenialThrottle {
    /// Whether a refusal for `key` at `now` is written; `Some(n)` carries how many were
    /// held back since the last one written.
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        match self.0.lock() {
            Ok(mut throttle) => throttle.admit(&key.to_string(), now),
            Err(_) => Some(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, Via};

    fn entry() -> AuditEntry {
        AuditEntry {
            who: Identity {
                name: "ci".into(),
                role: Role::Read,
                via: Via::Token,
                remote: "127.0.0.1:5000".parse().ok(),
                scope: crate::auth::Scope::default(),
            },
            what: "restart".into(),
            target: "service:web".into(),
            args: vec![("instance".into(), "2".into())],
        }
    }

    #[test]
    fn a_record_says_who_what_target_args_and_result() {
        let denied = Status::permission_denied("restart needs the operate role");
        let d = draft(&entry(), Err(&denied));
        assert_eq!(d.kind, AUDIT_KIND);
        assert_eq!(d.severity, Severity::Warning);
        assert_eq!(d.fields["who"], "ci");
        assert_eq!(d.fields["via"], "token");
        assert_eq!(d.fields["target"], "service:web");
        assert_eq!(d.fields["arg.instance"], "2");
        assert_eq!(d.fields["from"], "127.0.0.1:5000");
        assert!(d.fields["result"].starts_with("denied: restart needs"));
        let ok = draft(&entry(), Ok(()));
        assert_eq!(
            (ok.fields["result"].as_str(), ok.severity),
            ("ok", Severity::Info)
        );
    }

    #[test]
    fn fingerprints_tell_texts_apart_without_holding_them() {
        let a = fingerprint("strata_secret-one");
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, fingerprint("strata_secret-one"));
        assert_ne!(a, fingerprint("strata_secret-two"));
        assert!(!a.contains("secret"));
    }

    #[test]
    fn repeated_denials_are_thinned_with_a_count() {
        let throttle = DenialThrottle::default();
        let t0 = Instant::now();
        assert_eq!(throttle.admit("x", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(
                throttle.admit("x", t0 + Duration::from_millis(i * 100)),
                None
            );
        }
        assert_eq!(throttle.admit("y", t0), Some(0));
        assert_eq!(throttle.admit("x", t0 + Duration::from_secs(2)), Some(5));
    }
}
