//! Cluster commands that read: members, catalog, whoami (drain, undrain, force-leave and
//! keyring are [`crate::client::ops`]).

use super::{OutputFormat, print_as};
use crate::client::connect::call;
use crate::client::{Client, Failure};
use crate::format::{now_ms, table, uptime};
use std::collections::BTreeMap;
use strata_proto::v1::{
    GetCatalogReply, GetCatalogRequest, ListMembersReply, ListMembersRequest, Member, MemberStatus,
    WhoAmIRequest,
};

/// `strata members`.
pub async fn members(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
) -> Result<(), Failure> {
    let reply = call(client.list_members(ListMembersRequest::default()), agent).await?;
    print_as(output, &reply, |reply| render_members(reply, now_ms()))
}

/// `strata whoami`: the caller's name, role and how the agent identified it.
pub async fn whoami(client: &mut Client, agent: &str, output: OutputFormat) -> Result<(), Failure> {
    let reply = call(client.who_am_i(WhoAmIRequest {}), agent).await?;
    print_as(output, &reply, |r| {
        let required = if r.credentials_required {
            "required"
        } else {
            "not required (no tokens on this agent)"
        };
        format!(
            "{} ({}, via {}) on agent {}; credentials {required}\n",
            r.name,
            r.role(),
            r.via(),
            r.node
        )
    })
}

/// The members table.
pub fn render_members(reply: &ListMembersReply, now: i64) -> String {
    let mut t = table(&[
        "name",
        "status",
        "gossip",
        "api",
        "incarnation",
        "since",
        "cpu",
        "mem",
        "disk",
        "alerts",
        "notes",
    ]);
    for m in &reply.members {
        let s = m.summary.clone().unwrap_or_default();
        let mut notes = Vec::new();
        if m.draining {
            notes.push("draining".to_string());
        }
        if !m.conflict.is_empty() {
            notes.push(format!("name conflict: {}", m.conflict));
        }
        t.add_row(vec![
            m.name.clone(),
            m.status().to_string(),
            m.gossip_addr.clone(),
            m.grpc_addr.clone(),
            m.incarnation.to_string(),
            if m.since_unix_ms > 0 {
                format!(
                    "{} ago",
                    uptime(((now - m.since_unix_ms).max(0) / 1000) as u64)
                )
            } else {
                "-".into()
            },
            format!("{:.0}%", s.cpu_busy_percent),
            format!("{:.0}%", s.memory_used_percent),
            format!("{:.0}%", s.worst_disk_used_percent),
            s.alerts_firing.to_string(),
            notes.join(", "),
        ]);
    }
    let mut text = t.to_string();
    if reply.dropped_packets > 0 {
        text.push_str(&format!(
            "\n{} gossip packets dropped (wrong key or malformed)",
            reply.dropped_packets
        ));
    }
    text
}

/// `strata catalog`.
pub async fn catalog(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
) -> Result<(), Failure> {
    let reply = call(client.get_catalog(GetCatalogRequest::default()), agent).await?;
    let members = call(client.list_members(ListMembersRequest::default()), agent).await?;
    print_as(output, &reply, |reply| {
        render_catalog(reply, &members.members)
    })
}

/// What a row says about the node's agent when it does not answer: its instances are the
/// ones it last published, still routed (services outlive their agent) until it leaves or
/// is reaped, so they are not shown as plainly healthy.
fn agent_note(status: Option<MemberStatus>) -> Option<&'static str> {
    match status {
        Some(MemberStatus::Down) => Some("node down: last published, still routed"),
        Some(MemberStatus::Suspect) => Some("node suspect"),
        None | Some(MemberStatus::Unknown) => Some("node not a member yet"),
        Some(MemberStatus::Alive | MemberStatus::Left) => None,
    }
}

/// The catalog as one row per instance; `members` tells which nodes' agents do not answer.
pub fn render_catalog(reply: &GetCatalogReply, members: &[Member]) -> String {
    let status: BTreeMap<&str, MemberStatus> = members
        .iter()
        .map(|m| (m.id.as_str(), m.status()))
        .collect();
    let mut t = table(&[
        "service", "instance", "node", "address", "health", "version", "frontend", "notes",
    ]);
    let mut rows = 0;
    for record in &reply.records {
        for service in &record.services {
            for i in &service.instances {
                let ports: Vec<String> = i
                    .ports
                    .values()
                    .map(|p| format!("{}:{p}", record.ip))
                    .collect();
                let frontends: Vec<String> =
                    service.frontends.values().map(u32::to_string).collect();
                let mut notes = Vec::new();
                notes.extend(agent_note(status.get(record.id.as_str()).copied()));
                if i.draining {
                    notes.push("draining");
                }
                if record.draining {
                    notes.push("node drained");
                }
                t.add_row(vec![
                    service.name.clone(),
                    i.id.clone(),
                    record.name.clone(),
                    ports.join(","),
                    i.health().to_string(),
                    i.version.clone(),
                    frontends.join(","),
                    notes.join(", "),
                ]);
                rows += 1;
            }
        }
    }
    if rows == 0 {
        return format!(
            "No services in the catalog ({} node records).",
            reply.records.len()
        );
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{CatalogInstance, CatalogService, Health, NodeRecord};

    fn record(id: &str, name: &str) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            name: name.into(),
            ip: "10.0.0.1".into(),
            services: vec![CatalogService {
                name: "web".into(),
                instances: vec![CatalogInstance {
                    id: format!("web/{name}"),
                    health: Health::Passing as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn member(id: &str, status: MemberStatus) -> Member {
        Member {
            id: id.into(),
            status: status as i32,
            ..Default::default()
        }
    }

    #[test]
    fn instances_of_an_agent_that_does_not_answer_say_so() {
        let reply = GetCatalogReply {
            records: vec![record("a", "n1"), record("b", "n2"), record("c", "n3")],
        };
        let members = [
            member("a", MemberStatus::Alive),
            member("b", MemberStatus::Down),
            member("c", MemberStatus::Suspect),
        ];
        let text = render_catalog(&reply, &members);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.contains(&format!("web/{name}")))
                .unwrap_or_default()
                .to_string()
        };
        assert!(!line("n1").contains("node"), "{text}");
        assert!(
            line("n2").contains("node down: last published, still routed"),
            "{text}"
        );
        assert!(line("n3").contains("node suspect"), "{text}");
    }
}
