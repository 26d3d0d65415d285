//! Cluster commands: members, catalog, drain, undrain, force-leave, keyring, whoami.

use super::{OutputFormat, print_as, print_json};
use crate::client::{Client, Failure, FailureKind};
use crate::format::{now_ms, table, uptime};
use strata_proto::v1::KeyringOp;
use strata_proto::v1::{
    DrainNodeRequest, ForceLeaveRequest, GetCatalogReply, GetCatalogRequest, KeyringReply,
    KeyringRequest, ListMembersReply, ListMembersRequest, WhoAmIRequest,
};

/// `strata members`.
pub async fn members(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
) -> Result<(), Failure> {
    let reply = client
        .list_members(ListMembersRequest::default())
        .await
        .map_err(|s| Failure::from_status(&s, agent))?
        .into_inner();
    print_as(output, &reply, |reply| render_members(reply, now_ms()))
}

/// `strata whoami`: the caller's name, role and how the agent identified it.
pub async fn whoami(client: &mut Client, agent: &str, output: OutputFormat) -> Result<(), Failure> {
    let reply = client
        .who_am_i(WhoAmIRequest {})
        .await
        .map_err(|s| Failure::from_status(&s, agent))?
        .into_inner();
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
    let reply = client
        .get_catalog(GetCatalogRequest::default())
        .await
        .map_err(|s| Failure::from_status(&s, agent))?
        .into_inner();
    print_as(output, &reply, render_catalog)
}

/// The catalog as one row per instance.
pub fn render_catalog(reply: &GetCatalogReply) -> String {
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

/// `strata drain NODE` and `strata undrain NODE`.
pub async fn drain(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    drain: bool,
) -> Result<(), Failure> {
    let reply = client
        .drain_node(DrainNodeRequest {
            node: node.to_string(),
            drain,
        })
        .await
        .map_err(|s| Failure::from_status(&s, agent))?
        .into_inner();
    print_as(output, &reply, |reply| {
        let word = if reply.draining {
            "drained: its instances get no new connections"
        } else {
            "undrained"
        };
        format!("node {} {word}", reply.node)
    })
}

/// `strata force-leave NODE`.
pub async fn force_leave(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    member: &str,
) -> Result<(), Failure> {
    let reply = client
        .force_leave(ForceLeaveRequest {
            node: String::new(),
            member: member.to_string(),
        })
        .await
        .map_err(|s| Failure::from_status(&s, agent))?
        .into_inner();
    print_as(output, &reply, |reply| {
        format!("{} removed from the cluster", reply.member)
    })
}

/// `strata keyring list|install|use|remove [KEY]`: applied on every live member (or the
/// one named by `--node`), as a key rotation needs.
pub async fn keyring(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    op: KeyringOp,
    key: &str,
) -> Result<(), Failure> {
    let targets: Vec<String> = if node.is_empty() {
        client
            .list_members(ListMembersRequest::default())
            .await
            .map_err(|s| Failure::from_status(&s, agent))?
            .into_inner()
            .members
            .into_iter()
            .filter(|m| m.status().is_live())
            .map(|m| m.name)
            .collect()
    } else {
        vec![node.to_string()]
    };
    let mut results: Vec<(String, Result<KeyringReply, String>)> = Vec::new();
    for target in &targets {
        let reply = client
            .keyring(KeyringRequest {
                node: target.clone(),
                op: op as i32,
                key: key.to_string(),
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| s.message().to_string());
        results.push((target.clone(), reply));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    match output {
        OutputFormat::Json => {
            let doc: Vec<serde_json::Value> = results
                .iter()
                .map(|(n, r)| match r {
                    Ok(reply) => serde_json::json!({"node": n, "keys": reply.keys, "primary": reply.primary, "dropped_packets": reply.dropped_packets}),
                    Err(e) => serde_json::json!({"node": n, "error": e}),
                })
                .collect();
            print_json(&serde_json::json!({ "nodes": doc }))?;
        }
        OutputFormat::Table => {
            let mut t = table(&["node", "primary", "keys", "error"]);
            for (n, r) in &results {
                match r {
                    Ok(reply) => t.add_row(vec![
                        n.clone(),
                        reply.primary.clone(),
                        reply.keys.join(" "),
                        String::new(),
                    ]),
                    Err(e) => t.add_row(vec![n.clone(), String::new(), String::new(), e.clone()]),
                };
            }
            println!("{t}");
        }
    }
    if failed > 0 {
        return Err(Failure::new(
            FailureKind::ActionFailed,
            format!(
                "keyring {op} failed on {failed} of {} node(s)",
                results.len()
            ),
        ));
    }
    Ok(())
}
