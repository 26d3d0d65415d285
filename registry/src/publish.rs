//! Turns the catalog and the member table into the [`ServiceTable`] the balancer and DNS
//! read.
//!
//! The rule (docs/ARCHITECTURE.md, "Stop, crash and leave"): gossip tells whether a node's
//! *agent* answers, not whether its services do, and services outlive their agent. So a
//! node's last published instances stay in the table while its agent is suspect or down (or
//! known only from the catalog), until the node leaves, is force-left or is reaped; the
//! balancer's passive health ejects the instances whose connections fail. Within a kept
//! record, only instances that are passing and not draining, on a node not draining, get new
//! connections.

use crate::membership::identity::NodeIdentity;
use crate::membership::members::{Members, Status};
use crate::table::{BalanceConfig, Endpoint, FrontendClaim, NodeEntry, ServiceEntry, ServiceTable};
use std::collections::BTreeMap;
use std::net::IpAddr;
use strata_proto::v1::{Health, NodeRecord};

/// Whether a remote node's record is published, from its member status (`None`: its record
/// arrived but membership has not heard of it yet, or no longer does). Only a graceful
/// departure withdraws it; failure detection never does.
pub fn publishes(status: Option<Status>) -> bool {
    match status {
        Some(Status::Alive | Status::Suspect | Status::Down) | None => true,
        Some(Status::Left) => false,
    }
}

/// The service address of a record: its `ip`, else its gossip address's ip.
fn record_ip(record: &NodeRecord, fallback: IpAddr) -> IpAddr {
    record
        .ip
        .parse()
        .ok()
        .or_else(|| {
            record
                .gossip_addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .map(|a| a.ip())
        })
        .unwrap_or(fallback)
}

/// Builds the table (generation 0; the caller numbers it).
pub fn build(
    local: &NodeIdentity,
    records: &BTreeMap<String, NodeRecord>,
    members: &Members,
) -> ServiceTable {
    let mut table = ServiceTable::default();
    table.nodes.insert(
        local.name.clone(),
        NodeEntry {
            name: local.name.clone(),
            id: local.id.clone(),
            ip: records
                .get(&local.id)
                .map_or(local.addr.ip(), |r| record_ip(r, local.addr.ip())),
            alive: true,
        },
    );
    for entry in members.entries().values() {
        let addr_ip = entry.identity.addr.ip();
        let ip = records
            .get(&entry.identity.id)
            .map_or(addr_ip, |r| record_ip(r, addr_ip));
        let node = NodeEntry {
            name: entry.identity.name.clone(),
            id: entry.identity.id.clone(),
            ip,
            alive: entry.status.is_live(),
        };
        let keep_existing = table
            .nodes
            .get(&node.name)
            .is_some_and(|n| n.alive || !node.alive);
        if !keep_existing {
            table.nodes.insert(node.name.clone(), node);
        }
    }
    for (id, record) in records {
        let is_local = *id == local.id;
        let status = members.get(id).map(|m| m.status);
        if !is_local && !publishes(status) {
            continue;
        }
        let ip = record_ip(record, local.addr.ip());
        if !is_local && status.is_none() {
            // Known only from the catalog: listed, as not alive, unless a member has the name.
            table
                .nodes
                .entry(record.name.clone())
                .or_insert_with(|| NodeEntry {
                    name: record.name.clone(),
                    id: id.clone(),
                    ip,
                    alive: false,
                });
        }
        for service in &record.services {
            for port in service.frontends.values() {
                if let Ok(port) = u16::try_from(*port) {
                    table
                        .frontend_claims
                        .entry(port)
                        .or_default()
                        .push(FrontendClaim {
                            service: service.name.clone(),
                            node: record.name.clone(),
                        });
                }
            }
            let entry = table
                .services
                .entry(service.name.clone())
                .or_insert_with(|| ServiceEntry {
                    name: service.name.clone(),
                    ..Default::default()
                });
            if entry.frontends.is_empty() {
                entry.frontends = service
                    .frontends
                    .iter()
                    .filter_map(|(k, v)| u16::try_from(*v).ok().map(|p| (k.clone(), p)))
                    .collect();
                entry.balance = BalanceConfig::from_catalog(
                    service.algorithm,
                    service.prefer_local,
                    service.balance.as_ref(),
                );
            }
            for instance in &service.instances {
                let endpoint = Endpoint {
                    instance: instance.id.clone(),
                    node: record.name.clone(),
                    ip,
                    ports: instance
                        .ports
                        .iter()
                        .filter_map(|(k, v)| u16::try_from(*v).ok().map(|p| (k.clone(), p)))
                        .collect(),
                    local: is_local,
                    version: instance.version.clone(),
                    tags: service.tags.clone(),
                };
                let routable = !instance.draining && !record.draining;
                match instance.health() {
                    Health::Passing if routable => entry.endpoints.push(endpoint),
                    Health::Warning if routable => {
                        entry.warning.push(endpoint.clone());
                        entry.unavailable.push(endpoint);
                    }
                    _ => entry.unavailable.push(endpoint),
                }
            }
        }
    }
    for claims in table.frontend_claims.values_mut() {
        claims.sort();
        claims.dedup();
    }
    for entry in table.services.values_mut() {
        let key = |e: &Endpoint| (e.node.clone(), e.instance.clone());
        entry.endpoints.sort_by_key(key);
        entry.unavailable.sort_by_key(key);
        entry.warning.sort_by_key(key);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{CatalogInstance, CatalogService};

    fn identity(i: u8) -> NodeIdentity {
        NodeIdentity {
            id: format!("id-{i}"),
            name: format!("n{i}"),
            addr: std::net::SocketAddr::from(([10, 0, 0, i], 7701)),
            bump: 1,
        }
    }

    fn record(i: u8, draining: bool) -> NodeRecord {
        let who = identity(i);
        NodeRecord {
            id: who.id,
            name: who.name,
            ip: format!("10.0.0.{i}"),
            draining,
            services: vec![CatalogService {
                name: "web".into(),
                frontends: [("http".to_string(), 9000)].into(),
                instances: vec![CatalogInstance {
                    id: format!("web/{i}"),
                    ports: [("http".to_string(), 20_000)].into(),
                    health: Health::Passing as i32,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// n0 is local; n1 alive, n2 suspect, n3 down, n4 left, n5 known only from the catalog.
    fn cluster() -> (NodeIdentity, BTreeMap<String, NodeRecord>, Members) {
        let mut members = Members::new(identity(0));
        let mut events = Vec::new();
        for (i, state) in [
            (1, foca::State::Alive),
            (2, foca::State::Suspect),
            (3, foca::State::Down),
            (4, foca::State::Alive),
        ] {
            members.observe(&identity(i), state, 1_000, &mut events);
        }
        assert!(members.depart("id-4", 1, 2_000, &mut events));
        let records = (0..=5)
            .map(|i| (format!("id-{i}"), record(i, false)))
            .collect();
        (identity(0), records, members)
    }

    fn serving(table: &ServiceTable) -> Vec<&str> {
        table.services["web"]
            .endpoints
            .iter()
            .map(|e| e.node.as_str())
            .collect()
    }

    #[test]
    fn suspect_down_and_unknown_agents_keep_their_instances_routable() {
        let (local, records, members) = cluster();
        let table = build(&local, &records, &members);
        assert_eq!(serving(&table), ["n0", "n1", "n2", "n3", "n5"]);
        assert!(table.services["web"].unavailable.is_empty());
        let down = &table.services["web"].endpoints[3];
        assert_eq!((down.ip, down.local), ("10.0.0.3".parse().unwrap(), false));
    }

    #[test]
    fn the_node_list_still_says_which_agents_are_not_alive() {
        let (local, records, members) = cluster();
        let table = build(&local, &records, &members);
        let alive: Vec<(&str, bool)> = table
            .nodes
            .values()
            .map(|n| (n.name.as_str(), n.alive))
            .collect();
        assert_eq!(
            alive,
            [
                ("n0", true),
                ("n1", true),
                ("n2", true),
                ("n3", false),
                ("n4", false),
                ("n5", false),
            ]
        );
    }

    #[test]
    fn a_left_node_is_withdrawn() {
        let (local, mut records, members) = cluster();
        // Even if its record is still held (a departure that raced an anti-entropy push).
        records.insert("id-4".into(), record(4, false));
        let table = build(&local, &records, &members);
        assert!(!serving(&table).contains(&"n4"));
        assert!(
            !table.services["web"]
                .unavailable
                .iter()
                .any(|e| e.node == "n4")
        );
        assert!(!publishes(Some(Status::Left)));
    }

    #[test]
    fn a_reaped_node_is_gone_with_its_record() {
        let (local, mut records, mut members) = cluster();
        let mut events = Vec::new();
        let reaped = members.reap(2_000 + 3_600_000, 3_600_000, &mut events);
        assert_eq!(reaped, ["id-3", "id-4"]);
        // The node drops a reaped member's record with it (node.rs housekeeping).
        for id in &reaped {
            records.remove(id);
        }
        let table = build(&local, &records, &members);
        assert_eq!(serving(&table), ["n0", "n1", "n2", "n5"]);
        assert!(!table.nodes.contains_key("n3"));
    }

    #[test]
    fn a_down_node_that_was_draining_stays_unavailable() {
        let (local, mut records, members) = cluster();
        records.insert("id-3".into(), record(3, true));
        let table = build(&local, &records, &members);
        assert!(!serving(&table).contains(&"n3"));
        let unavailable: Vec<&str> = table.services["web"]
            .unavailable
            .iter()
            .map(|e| e.node.as_str())
            .collect();
        assert_eq!(unavailable, ["n3"]);
    }

    #[test]
    fn a_warning_instance_gets_no_connections_and_is_listed_for_dns() {
        let (local, mut records, members) = cluster();
        let nodes =
            |list: &[Endpoint]| -> Vec<String> { list.iter().map(|e| e.node.clone()).collect() };
        let mut warning = record(1, false);
        warning.services[0].instances[0].health = Health::Warning as i32;
        records.insert("id-1".into(), warning);
        // A warning instance on a draining node is only unavailable.
        let mut drained = record(2, true);
        drained.services[0].instances[0].health = Health::Warning as i32;
        records.insert("id-2".into(), drained);
        let mut critical = record(3, false);
        critical.services[0].instances[0].health = Health::Critical as i32;
        records.insert("id-3".into(), critical);
        let table = build(&local, &records, &members);
        let web = &table.services["web"];
        assert_eq!(serving(&table), ["n0", "n5"]);
        assert_eq!(nodes(&web.warning), ["n1"]);
        assert_eq!(nodes(&web.unavailable), ["n1", "n2", "n3"]);
    }

    #[test]
    fn frontend_claims_name_every_routed_node_and_not_a_left_one() {
        let (local, mut records, members) = cluster();
        let mut api = record(2, false);
        api.services[0].name = "api".into();
        api.services.push(record(2, false).services.remove(0));
        records.insert("id-2".into(), api);
        let table = build(&local, &records, &members);
        let claims: Vec<(&str, &str)> = table.frontend_claims[&9000]
            .iter()
            .map(|c| (c.service.as_str(), c.node.as_str()))
            .collect();
        assert_eq!(
            claims,
            [
                ("api", "n2"),
                ("web", "n0"),
                ("web", "n1"),
                ("web", "n2"),
                ("web", "n3"),
                ("web", "n5"),
            ]
        );
    }

    #[test]
    fn a_catalog_only_record_never_hides_a_member_of_the_same_name() {
        let (local, mut records, members) = cluster();
        let mut stray = record(1, false);
        stray.id = "id-old".into();
        records.insert("id-old".into(), stray);
        let table = build(&local, &records, &members);
        assert_eq!(table.nodes["n1"].id, "id-1");
        assert!(table.nodes["n1"].alive);
    }
}
