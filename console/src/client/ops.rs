//! Every change an operator can make, as one typed enum: start, stop, restart, scale or
//! signal a service or one instance on a node, drain and undrain, apply, remove,
//! force-leave and keyring. An [`Op`] is built once (by the CLI from its flags, by the
//! console from a confirmed [`Change`](super::change::Change), by the demo), holds what the
//! agent API is sent, and [`Op::run`] sends it and returns the typed [`Outcome`].

use super::connect::call;
use super::outcome::{KeyringResults, NodeKeyring, Outcome};
use super::{Client, Failure, FailureKind};
use std::fmt;
use std::path::PathBuf;
use strata_proto::v1::control_service_request::Action as ControlAction;
use strata_proto::v1::{
    ApplySpecRequest, ControlServiceRequest, DrainNodeRequest, ForceLeaveRequest, KeyringOp,
    KeyringRequest, LeaveRequest, ListMembersRequest, RemoveServiceRequest,
};

/// A service, or one of its instances: `web` or `web/2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The service's name.
    pub service: String,
    /// The instance's index, from 1; 0 means every instance.
    pub instance: u32,
}

impl Target {
    /// Every instance of `service`.
    pub fn service(service: &str) -> Target {
        Target {
            service: service.to_string(),
            instance: 0,
        }
    }

    /// Parses `NAME` or `NAME/INDEX` (the CLI's argument; the error names what is wrong).
    pub fn parse(text: &str) -> Result<Target, String> {
        let (service, instance) = match text.split_once('/') {
            None => (text, 0),
            Some((service, index)) => match index.parse::<u32>() {
                Ok(i) if i > 0 => (service, i),
                _ => {
                    return Err(format!(
                        "{text:?}: the instance after '/' must be a number from 1"
                    ));
                }
            },
        };
        if service.is_empty() {
            return Err(format!("{text:?}: no service name"));
        }
        Ok(Target {
            service: service.to_string(),
            instance,
        })
    }
}

/// `web` or `web/2`, as the agent names instances.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.instance {
            0 => f.write_str(&self.service),
            i => write!(f, "{}/{i}", self.service),
        }
    }
}

/// Where a spec to apply comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A file, read when the op runs (so the console's update never does I/O).
    File(PathBuf),
    /// Text already in hand (the demo's rendered specs), and the name it is reported under.
    Text {
        /// Where it came from, for the agent's error messages.
        source: String,
        /// The spec's TOML.
        toml: String,
    },
}

impl Spec {
    /// The spec's source name and text; a file that cannot be read is a usage failure.
    fn load(self) -> Result<(String, String), Failure> {
        match self {
            Spec::File(path) => {
                let toml = std::fs::read_to_string(&path).map_err(|e| {
                    Failure::new(
                        FailureKind::Usage,
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok((path.display().to_string(), toml))
            }
            Spec::Text { source, toml } => Ok((source, toml)),
        }
    }
}

/// One change to the cluster, holding what the agent API is sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Start, stop, restart, scale or signal a service or one instance on a node.
    Control(ControlServiceRequest),
    /// Drain or undrain a node.
    Drain(DrainNodeRequest),
    /// Validate a spec and, unless a dry run, store it and converge on `node`.
    Apply {
        /// The node ("" for the contacted agent).
        node: String,
        /// The spec.
        spec: Spec,
        /// Only validate and report the changes.
        dry_run: bool,
    },
    /// Stop every instance of a service on a node and forget its spec.
    Remove(RemoveServiceRequest),
    /// Withdraw a node from the cluster (it drains, leaves gossip and its agent stops).
    Leave(LeaveRequest),
    /// Remove a down member from the cluster now.
    ForceLeave(ForceLeaveRequest),
    /// List, install, use or remove a gossip key on one node, or on every live member.
    Keyring {
        /// The node; "" means every live member, as a key rotation needs.
        node: String,
        /// What to do.
        op: KeyringOp,
        /// The key (base64), for install, use and remove.
        key: String,
    },
}

impl Op {
    /// `action` on `target` on `node` ("" for the contacted agent).
    pub fn control(node: &str, target: &Target, action: ControlAction) -> Op {
        Op::Control(ControlServiceRequest {
            node: node.to_string(),
            service: target.service.clone(),
            instance: target.instance,
            action: Some(action),
        })
    }

    /// Drain `node` (its instances get no new connections anywhere), or undrain it.
    pub fn drain(node: &str, drain: bool) -> Op {
        Op::Drain(DrainNodeRequest {
            node: node.to_string(),
            drain,
        })
    }

    /// Apply `spec` on `node` ("" for the contacted agent).
    pub fn apply(node: &str, spec: Spec, dry_run: bool) -> Op {
        Op::Apply {
            node: node.to_string(),
            spec,
            dry_run,
        }
    }

    /// Remove `service` from `node` ("" for the contacted agent).
    pub fn remove(node: &str, service: &str) -> Op {
        Op::Remove(RemoveServiceRequest {
            node: node.to_string(),
            name: service.to_string(),
        })
    }

    /// Withdraw `node` from the cluster.
    pub fn leave(node: &str) -> Op {
        Op::Leave(LeaveRequest {
            node: node.to_string(),
        })
    }

    /// Remove the down member `member` from the cluster.
    pub fn force_leave(member: &str) -> Op {
        Op::ForceLeave(ForceLeaveRequest {
            node: String::new(),
            member: member.to_string(),
        })
    }

    /// `op` with `key` on `node`, or on every live member when `node` is ""; every op but
    /// list needs a key.
    pub fn keyring(node: &str, op: KeyringOp, key: Option<String>) -> Result<Op, Failure> {
        if op != KeyringOp::List && key.is_none() {
            return Err(Failure::new(
                FailureKind::Usage,
                format!("keyring {op} needs a KEY"),
            ));
        }
        Ok(Op::Keyring {
            node: node.to_string(),
            op,
            key: key.unwrap_or_default(),
        })
    }

    /// Sends the op to the agent at `agent` (named in failures) and returns what it did.
    /// A keyring op that failed on some nodes still returns, with those nodes' errors in
    /// its outcome ([`Outcome::failure`]).
    pub async fn run(self, client: &mut Client, agent: &str) -> Result<Outcome, Failure> {
        Ok(match self {
            Op::Control(request) => Outcome::Control(Box::new(
                call(client.control_service(request), agent).await?,
            )),
            Op::Drain(request) => Outcome::Drain(call(client.drain_node(request), agent).await?),
            Op::Apply {
                node,
                spec,
                dry_run,
            } => {
                let (source, spec_toml) = spec.load()?;
                let request = ApplySpecRequest {
                    node,
                    spec_toml,
                    source,
                    dry_run,
                };
                Outcome::Apply(call(client.apply_spec(request), agent).await?)
            }
            Op::Remove(request) => {
                Outcome::Remove(call(client.remove_service(request), agent).await?)
            }
            Op::Leave(request) => Outcome::Leave(call(client.leave(request), agent).await?),
            Op::ForceLeave(request) => {
                Outcome::ForceLeave(call(client.force_leave(request), agent).await?)
            }
            Op::Keyring { node, op, key } => {
                Outcome::Keyring(keyring(client, agent, node, op, &key).await?)
            }
        })
    }

    /// The node a control op is addressed to, when one is named.
    fn control_node(&self) -> Option<&str> {
        match self {
            Op::Control(request) if !request.node.is_empty() => Some(&request.node),
            _ => None,
        }
    }
}

/// `op` with `key` on `node`, or on every live member when `node` is "". Each node's error
/// is kept as the agent words it, beside the other nodes' results.
async fn keyring(
    client: &mut Client,
    agent: &str,
    node: String,
    op: KeyringOp,
    key: &str,
) -> Result<KeyringResults, Failure> {
    let targets = if node.is_empty() {
        live_members(client, agent).await?
    } else {
        vec![node]
    };
    let mut nodes = Vec::with_capacity(targets.len());
    for node in targets {
        let request = KeyringRequest {
            node: node.clone(),
            op: op as i32,
            key: key.to_string(),
        };
        let result = client
            .keyring(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                let failure = Failure::from_status(&status, agent);
                (failure.kind, status.message().to_string())
            });
        nodes.push(NodeKeyring { node, result });
    }
    Ok(KeyringResults { op, nodes })
}

/// The names of the live members, as the agent at `agent` sees them.
async fn live_members(client: &mut Client, agent: &str) -> Result<Vec<String>, Failure> {
    Ok(
        call(client.list_members(ListMembersRequest::default()), agent)
            .await?
            .members
            .into_iter()
            .filter(|m| m.status().is_live())
            .map(|m| m.name)
            .collect(),
    )
}

/// Runs `ops` in order, as the console does after one confirmation, and says in one line
/// what each did (a control addressed to a node is prefixed with the node), joined by
/// "; ". The first failure stops the rest.
pub async fn run_batch(client: &mut Client, agent: &str, ops: Vec<Op>) -> Result<String, Failure> {
    let mut said = Vec::with_capacity(ops.len());
    for op in ops {
        let node = op.control_node().map(str::to_string);
        let outcome = op.run(client, agent).await?;
        if let Some(failure) = outcome.failure() {
            return Err(failure);
        }
        let line = outcome.one_line();
        said.push(match node {
            Some(node) => format!("{node}: {line}"),
            None => line,
        });
    }
    Ok(said.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::Signal;

    #[test]
    fn targets_parse_service_and_instance() {
        let cases: [(&str, Result<Target, &str>); 6] = [
            ("web", Ok(Target::service("web"))),
            (
                "web/2",
                Ok(Target {
                    service: "web".into(),
                    instance: 2,
                }),
            ),
            ("web/0", Err("number from 1")),
            ("web/x", Err("number from 1")),
            ("/1", Err("no service name")),
            ("", Err("no service name")),
        ];
        for (text, want) in cases {
            match (Target::parse(text), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want, "{text}");
                    assert_eq!(got.to_string(), text, "shown as parsed");
                }
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn each_op_holds_the_request_the_api_takes() {
        let web2 = Target::parse("web/2").unwrap();
        let control = |node: &str, target: &Target, action| ControlServiceRequest {
            node: node.into(),
            service: target.service.clone(),
            instance: target.instance,
            action: Some(action),
        };
        let cases = [
            (
                Op::control("n2", &web2, ControlAction::restart()),
                Op::Control(control("n2", &web2, ControlAction::restart())),
            ),
            (
                Op::control("", &Target::service("web"), ControlAction::scale(4)),
                Op::Control(control(
                    "",
                    &Target::service("web"),
                    ControlAction::scale(4),
                )),
            ),
            (
                Op::control("", &web2, ControlAction::signal(Signal::Hup)),
                Op::Control(control("", &web2, ControlAction::signal(Signal::Hup))),
            ),
            (
                Op::drain("n3", true),
                Op::Drain(DrainNodeRequest {
                    node: "n3".into(),
                    drain: true,
                }),
            ),
            (
                Op::drain("n3", false),
                Op::Drain(DrainNodeRequest {
                    node: "n3".into(),
                    drain: false,
                }),
            ),
            (
                Op::remove("n1", "web"),
                Op::Remove(RemoveServiceRequest {
                    node: "n1".into(),
                    name: "web".into(),
                }),
            ),
            (
                Op::leave("n2"),
                Op::Leave(LeaveRequest { node: "n2".into() }),
            ),
            (
                Op::force_leave("n4"),
                Op::ForceLeave(ForceLeaveRequest {
                    node: String::new(),
                    member: "n4".into(),
                }),
            ),
            (
                Op::apply("n1", Spec::File("web.toml".into()), true),
                Op::Apply {
                    node: "n1".into(),
                    spec: Spec::File("web.toml".into()),
                    dry_run: true,
                },
            ),
            (
                Op::keyring("", KeyringOp::Install, Some("a2V5".into())).unwrap(),
                Op::Keyring {
                    node: String::new(),
                    op: KeyringOp::Install,
                    key: "a2V5".into(),
                },
            ),
            (
                Op::keyring("n2", KeyringOp::List, None).unwrap(),
                Op::Keyring {
                    node: "n2".into(),
                    op: KeyringOp::List,
                    key: String::new(),
                },
            ),
        ];
        for (built, want) in cases {
            assert_eq!(built, want);
        }
    }

    #[test]
    fn keyring_ops_but_list_need_a_key() {
        for op in [KeyringOp::Install, KeyringOp::Use, KeyringOp::Remove] {
            let f = Op::keyring("", op, None).unwrap_err();
            assert_eq!(f.kind, FailureKind::Usage);
            assert_eq!(f.message, format!("keyring {op} needs a KEY"));
        }
    }

    #[test]
    fn only_a_control_addressed_to_a_node_names_it() {
        let web = Target::service("web");
        assert_eq!(
            Op::control("n2", &web, ControlAction::stop()).control_node(),
            Some("n2")
        );
        assert_eq!(
            Op::control("", &web, ControlAction::stop()).control_node(),
            None
        );
        assert_eq!(Op::drain("n2", true).control_node(), None);
    }

    #[test]
    fn a_spec_file_is_read_when_the_op_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.toml");
        std::fs::write(&path, "name = \"web\"\n").unwrap();
        let (source, toml) = Spec::File(path.clone()).load().unwrap();
        assert_eq!(
            (source, toml),
            (path.display().to_string(), "name = \"web\"\n".into())
        );
        let missing = dir.path().join("missing.toml");
        let f = Spec::File(missing.clone()).load().unwrap_err();
        assert_eq!(f.kind, FailureKind::Usage);
        assert!(
            f.message
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{}",
            f.message
        );
        let text = Spec::Text {
            source: "demo/web.toml".into(),
            toml: "x".into(),
        };
        assert_eq!(text.load().unwrap(), ("demo/web.toml".into(), "x".into()));
    }
}
