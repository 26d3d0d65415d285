//! The changes the console offers, as it puts them to the operator: the question that
//! names the exact target, and the [`Op`]s that run when the answer is yes. Each question
//! is written here once; the console's views only pick which change the selection means.

use super::ops::{Op, Spec, Target};
use strata_proto::v1::Signal;
use strata_proto::v1::control_service_request::Action as ControlAction;

/// A change waiting for its confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// "Restart service web on node n2 (3 instances)?"
    pub question: String,
    /// What runs on yes, in order.
    pub ops: Vec<Op>,
}

impl Change {
    /// `action` on the whole service `service` on `nodes` (each with its number of
    /// instances there): one op per node.
    pub fn service(action: ControlAction, service: &str, nodes: &[(String, usize)]) -> Change {
        let names: Vec<&str> = nodes.iter().map(|(node, _)| node.as_str()).collect();
        let instances: usize = nodes.iter().map(|(_, n)| n).sum();
        let count = match action {
            ControlAction::Scale(_) => String::new(),
            _ => format!(" ({instances} instance{})", plural(instances)),
        };
        let target = Target::service(service);
        Change {
            question: format!(
                "{} on node{} {}{count}?",
                phrase(&action, &format!("service {service}")),
                plural(names.len()),
                names.join(", ")
            ),
            ops: names
                .iter()
                .map(|node| Op::control(node, &target, action))
                .collect(),
        }
    }

    /// `action` on the one instance `target` on `node`.
    pub fn instance(action: ControlAction, target: &Target, node: &str) -> Change {
        Change {
            question: format!(
                "{} on node {node}?",
                phrase(&action, &format!("instance {target}"))
            ),
            ops: vec![Op::control(node, target, action)],
        }
    }

    /// Drain `node`, or undrain it.
    pub fn drain(node: &str, drain: bool) -> Change {
        let question = if drain {
            format!("Drain node {node} (its instances get no new connections)?")
        } else {
            format!("Undrain node {node}?")
        };
        Change {
            question,
            ops: vec![Op::drain(node, drain)],
        }
    }

    /// Apply the spec file `path` on `node` ("" for the contacted agent).
    pub fn apply(node: &str, path: &str) -> Change {
        let on = if node.is_empty() {
            "(contacted agent)"
        } else {
            node
        };
        Change {
            question: format!("Apply spec {path} on node {on}?"),
            ops: vec![Op::apply(node, Spec::File(path.into()), false)],
        }
    }

    /// Remove the down member `member` from the cluster.
    pub fn force_leave(member: &str) -> Change {
        Change {
            question: format!("Force member {member} (down) to leave the cluster now?"),
            ops: vec![Op::force_leave(member)],
        }
    }
}

/// "Restart service web", "Scale service web to 4 instances", "Send SIGHUP to instance web/2".
fn phrase(action: &ControlAction, subject: &str) -> String {
    match action {
        ControlAction::Start(_) => format!("Start {subject}"),
        ControlAction::Stop(_) => format!("Stop {subject}"),
        ControlAction::Restart(_) => format!("Restart {subject}"),
        ControlAction::Scale(scale) => format!("Scale {subject} to {} instances", scale.count),
        ControlAction::Signal(signal) => {
            format!("Send {} to {subject}", Signal::from_wire(signal.signal))
        }
    }
}

/// "s" unless there is exactly one.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{ControlServiceRequest, DrainNodeRequest, ForceLeaveRequest};

    fn nodes(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(n, i)| (n.to_string(), *i)).collect()
    }

    #[test]
    fn service_questions_name_the_nodes_and_instances() {
        let cases = [
            (
                ControlAction::restart(),
                nodes(&[("n2", 1)]),
                "Restart service web on node n2 (1 instance)?",
            ),
            (
                ControlAction::stop(),
                nodes(&[("n1", 2), ("n2", 1)]),
                "Stop service web on nodes n1, n2 (3 instances)?",
            ),
            (
                ControlAction::start(),
                nodes(&[("n1", 2)]),
                "Start service web on node n1 (2 instances)?",
            ),
            (
                ControlAction::scale(4),
                nodes(&[("n1", 2), ("n2", 1)]),
                "Scale service web to 4 instances on nodes n1, n2?",
            ),
            (
                ControlAction::signal(Signal::Hup),
                nodes(&[("n1", 2)]),
                "Send SIGHUP to service web on node n1 (2 instances)?",
            ),
        ];
        for (action, on, question) in cases {
            let change = Change::service(action, "web", &on);
            assert_eq!(change.question, question);
            let want: Vec<Op> = on
                .iter()
                .map(|(node, _)| {
                    Op::Control(ControlServiceRequest {
                        node: node.clone(),
                        service: "web".into(),
                        instance: 0,
                        action: Some(action),
                    })
                })
                .collect();
            assert_eq!(change.ops, want, "one op per node: {question}");
        }
    }

    #[test]
    fn instance_questions_name_the_instance_and_its_node() {
        let web3 = Target::parse("web/3").unwrap();
        let cases = [
            (
                ControlAction::restart(),
                "Restart instance web/3 on node n2?",
            ),
            (ControlAction::stop(), "Stop instance web/3 on node n2?"),
            (ControlAction::start(), "Start instance web/3 on node n2?"),
            (
                ControlAction::signal(Signal::Usr1),
                "Send SIGUSR1 to instance web/3 on node n2?",
            ),
        ];
        for (action, question) in cases {
            let change = Change::instance(action, &web3, "n2");
            assert_eq!(change.question, question);
            assert_eq!(
                change.ops,
                [Op::Control(ControlServiceRequest {
                    node: "n2".into(),
                    service: "web".into(),
                    instance: 3,
                    action: Some(action),
                })]
            );
        }
    }

    #[test]
    fn node_and_member_questions() {
        let cases = [
            (
                Change::drain("n2", true),
                "Drain node n2 (its instances get no new connections)?",
                Op::Drain(DrainNodeRequest {
                    node: "n2".into(),
                    drain: true,
                }),
            ),
            (
                Change::drain("n2", false),
                "Undrain node n2?",
                Op::Drain(DrainNodeRequest {
                    node: "n2".into(),
                    drain: false,
                }),
            ),
            (
                Change::apply("n1", "./web.toml"),
                "Apply spec ./web.toml on node n1?",
                Op::apply("n1", Spec::File("./web.toml".into()), false),
            ),
            (
                Change::apply("", "web.toml"),
                "Apply spec web.toml on node (contacted agent)?",
                Op::apply("", Spec::File("web.toml".into()), false),
            ),
            (
                Change::force_leave("n3"),
                "Force member n3 (down) to leave the cluster now?",
                Op::ForceLeave(ForceLeaveRequest {
                    node: String::new(),
                    member: "n3".into(),
                }),
            ),
        ];
        for (change, question, op) in cases {
            assert_eq!(change.question, question);
            assert_eq!(change.ops, [op]);
        }
    }
}
