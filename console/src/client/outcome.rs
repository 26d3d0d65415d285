//! What an [`Op`](super::ops::Op) did: the agent's typed reply, its JSON for scripts (the
//! reply itself, field for field) and its message for people, written once for the CLI,
//! the console's status line and the demo.

use super::{Failure, FailureKind};
use crate::format::table;
use serde::{Serialize, Serializer};
use strata_proto::v1::{
    ApplySpecReply, ControlServiceReply, DrainNodeReply, ForceLeaveReply, KeyringOp, KeyringReply,
    LeaveReply, RemoveServiceReply,
};

/// The agent's answer to one op.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// A start, stop, restart, scale or signal (boxed: it carries a whole service status).
    Control(Box<ControlServiceReply>),
    /// A drain or undrain.
    Drain(DrainNodeReply),
    /// An apply (or its dry run).
    Apply(ApplySpecReply),
    /// A remove.
    Remove(RemoveServiceReply),
    /// A leave.
    Leave(LeaveReply),
    /// A force-leave.
    ForceLeave(ForceLeaveReply),
    /// A keyring op, per node.
    Keyring(KeyringResults),
}

impl Outcome {
    /// What happened, for people: the CLI prints it, the console shows it on one line.
    pub fn message(&self) -> String {
        match self {
            Outcome::Control(reply) => reply.message.clone(),
            Outcome::Drain(reply) if reply.draining => format!(
                "node {} drained: its instances get no new connections",
                reply.node
            ),
            Outcome::Drain(reply) => format!("node {} undrained", reply.node),
            Outcome::Apply(reply) => {
                let dry_run = if reply.applied {
                    ""
                } else {
                    " (dry run: nothing applied)"
                };
                let mut lines = vec![format!(
                    "service {}: {}{dry_run}",
                    reply.service,
                    reply.action()
                )];
                lines.extend(reply.changes.iter().map(|change| format!("  {change}")));
                lines.join("\n")
            }
            Outcome::Remove(reply) => format!(
                "service {} removed ({} instance(s) stopped)",
                reply.service, reply.stopped_instances
            ),
            Outcome::Leave(reply) if reply.already_leaving => {
                format!("node {} is already leaving the cluster", reply.node)
            }
            Outcome::Leave(reply) => format!(
                "node {} is leaving the cluster: its instances drain from every balancer for {:.1}s, \
                 then it leaves gossip and its agent stops (its services keep running)",
                reply.node,
                reply.drain_ms as f64 / 1000.0
            ),
            Outcome::ForceLeave(reply) => format!("{} removed from the cluster", reply.member),
            Outcome::Keyring(results) => results.table(),
        }
    }

    /// [`Outcome::message`] on one line: its lines trimmed and joined by "; ".
    pub fn one_line(&self) -> String {
        self.message()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The failure to report after the outcome, when the op failed on some of its nodes.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            Outcome::Keyring(results) => results.failure(),
            _ => None,
        }
    }
}

/// What a keyring op did on each node it was sent to.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyringResults {
    /// The op, for the failure message.
    pub op: KeyringOp,
    /// Each node's keys, or the agent's error for it, in the order they were asked.
    pub nodes: Vec<NodeKeyring>,
}

/// One node's keyring after the op.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeKeyring {
    /// The node.
    pub node: String,
    /// Its keys, or why the op failed there: the kind (for the exit code) and the agent's
    /// words.
    pub result: Result<KeyringReply, (FailureKind, String)>,
}

impl KeyringResults {
    /// One row per node: its primary key and keys, or its error.
    fn table(&self) -> String {
        let mut t = table(&["node", "primary", "keys", "error"]);
        for NodeKeyring { node, result } in &self.nodes {
            match result {
                Ok(reply) => t.add_row(vec![
                    node.clone(),
                    reply.primary.clone(),
                    reply.keys.join(" "),
                    String::new(),
                ]),
                Err((_, e)) => {
                    t.add_row(vec![node.clone(), String::new(), String::new(), e.clone()])
                }
            };
        }
        t.to_string()
    }

    /// A failure naming how many nodes failed, when any did: of the kind they all failed
    /// with (every node refused the credential: permission denied), else the action failed.
    fn failure(&self) -> Option<Failure> {
        let kinds: Vec<FailureKind> = self
            .nodes
            .iter()
            .filter_map(|n| n.result.as_ref().err().map(|(kind, _)| *kind))
            .collect();
        let failed = kinds.len();
        let kind = match kinds.split_first() {
            Some((first, rest)) if rest.iter().all(|k| k == first) => *first,
            _ => FailureKind::ActionFailed,
        };
        (failed > 0).then(|| {
            Failure::new(
                kind,
                format!(
                    "keyring {} failed on {failed} of {} node(s)",
                    self.op,
                    self.nodes.len()
                ),
            )
        })
    }
}

/// `{"nodes": [{"node", "keys", "primary", "dropped_packets"} or {"node", "error"}]}`.
impl Serialize for KeyringResults {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|NodeKeyring { node, result }| match result {
                Ok(reply) => serde_json::json!({
                    "node": node,
                    "keys": reply.keys,
                    "primary": reply.primary,
                    "dropped_packets": reply.dropped_packets,
                }),
                Err((_, e)) => serde_json::json!({"node": node, "error": e}),
            })
            .collect();
        serde_json::json!({ "nodes": nodes }).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::ApplyAction;

    fn apply(action: ApplyAction, applied: bool, changes: &[&str]) -> Outcome {
        Outcome::Apply(ApplySpecReply {
            service: "web".into(),
            action: action as i32,
            changes: changes.iter().map(|c| c.to_string()).collect(),
            applied,
        })
    }

    fn keys(node: &str, primary: &str, keys: &[&str]) -> NodeKeyring {
        NodeKeyring {
            node: node.into(),
            result: Ok(KeyringReply {
                keys: keys.iter().map(|k| k.to_string()).collect(),
                primary: primary.into(),
                dropped_packets: 7,
            }),
        }
    }

    fn error(node: &str, error: &str) -> NodeKeyring {
        NodeKeyring {
            node: node.into(),
            result: Err((FailureKind::ActionFailed, error.into())),
        }
    }

    fn keyring(nodes: Vec<NodeKeyring>) -> Outcome {
        Outcome::Keyring(KeyringResults {
            op: KeyringOp::Install,
            nodes,
        })
    }

    #[test]
    fn every_outcome_has_its_message_and_its_line() {
        let cases = [
            (
                Outcome::Control(Box::new(ControlServiceReply {
                    service: None,
                    message: "restarted web/2".into(),
                })),
                "restarted web/2",
                "restarted web/2",
            ),
            (
                Outcome::Drain(DrainNodeReply {
                    node: "n2".into(),
                    draining: true,
                }),
                "node n2 drained: its instances get no new connections",
                "node n2 drained: its instances get no new connections",
            ),
            (
                Outcome::Drain(DrainNodeReply {
                    node: "n2".into(),
                    draining: false,
                }),
                "node n2 undrained",
                "node n2 undrained",
            ),
            (
                apply(ApplyAction::Created, true, &[]),
                "service web: created",
                "service web: created",
            ),
            (
                apply(
                    ApplyAction::Updated,
                    false,
                    &["instances 2 -> 3", "command changed: rolling restart"],
                ),
                "service web: updated (dry run: nothing applied)\n  instances 2 -> 3\n  command changed: rolling restart",
                "service web: updated (dry run: nothing applied); instances 2 -> 3; command changed: rolling restart",
            ),
            (
                Outcome::Remove(RemoveServiceReply {
                    service: "web".into(),
                    stopped_instances: 3,
                }),
                "service web removed (3 instance(s) stopped)",
                "service web removed (3 instance(s) stopped)",
            ),
            (
                Outcome::ForceLeave(ForceLeaveReply {
                    member: "n4".into(),
                }),
                "n4 removed from the cluster",
                "n4 removed from the cluster",
            ),
            (
                Outcome::Leave(LeaveReply {
                    node: "n2".into(),
                    drain_ms: 2000,
                    already_leaving: false,
                }),
                "node n2 is leaving the cluster: its instances drain from every balancer for 2.0s, then it leaves gossip and its agent stops (its services keep running)",
                "node n2 is leaving the cluster: its instances drain from every balancer for 2.0s, then it leaves gossip and its agent stops (its services keep running)",
            ),
            (
                Outcome::Leave(LeaveReply {
                    node: "n2".into(),
                    drain_ms: 2000,
                    already_leaving: true,
                }),
                "node n2 is already leaving the cluster",
                "node n2 is already leaving the cluster",
            ),
        ];
        for (outcome, message, line) in cases {
            assert_eq!(outcome.message(), message);
            assert_eq!(outcome.one_line(), line);
            assert!(outcome.failure().is_none(), "{outcome:?}");
        }
    }

    #[test]
    fn json_is_the_reply_itself() {
        let drain = Outcome::Drain(DrainNodeReply {
            node: "n2".into(),
            draining: true,
        });
        assert_eq!(
            serde_json::to_value(&drain).unwrap(),
            serde_json::json!({"node": "n2", "draining": true})
        );
        assert_eq!(
            serde_json::to_value(apply(ApplyAction::Unchanged, true, &[])).unwrap(),
            serde_json::json!({"service": "web", "action": "unchanged", "changes": [], "applied": true})
        );
    }

    #[test]
    fn keyring_lists_every_node_and_fails_when_one_failed() {
        let all_ok = keyring(vec![
            keys("n1", "k2", &["k1", "k2"]),
            keys("n2", "k2", &["k2"]),
        ]);
        assert!(all_ok.failure().is_none());
        let table = all_ok.message();
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["NODE", "PRIMARY", "KEYS", "ERROR"],
                vec!["n1", "k2", "k1", "k2"],
                vec!["n2", "k2", "k2"],
            ]
        );

        let one_down = keyring(vec![
            keys("n1", "k2", &["k1", "k2"]),
            error("n3", "node n3 is unreachable"),
        ]);
        assert!(one_down.message().contains("node n3 is unreachable"));
        let f = one_down.failure().expect("a failure");
        assert_eq!(f.kind, FailureKind::ActionFailed);
        assert_eq!(f.message, "keyring install failed on 1 of 2 node(s)");
        assert_eq!(
            serde_json::to_value(&one_down).unwrap(),
            serde_json::json!({"nodes": [
                {"node": "n1", "keys": ["k1", "k2"], "primary": "k2", "dropped_packets": 7},
                {"node": "n3", "error": "node n3 is unreachable"},
            ]})
        );
    }
}
