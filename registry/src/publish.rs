//! Turns the catalog and the member table into the [`ServiceTable`] the balancer and DNS
//! read: only instances that are passing, not draining, on live non-draining nodes get
//! traffic; records of down or left members are left out.

use crate::membership::identity::NodeIdentity;
use crate::membership::members::Members;
use crate::table::{BalanceConfig, Endpoint, NodeEntry, ServiceEntry, ServiceTable};
use std::collections::BTreeMap;
use std::net::IpAddr;
use strata_proto::v1::NodeRecord;

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
        let live = is_local || members.get(id).is_some_and(|m| m.status.is_live());
        if !live {
            continue;
        }
        let ip = record_ip(record, local.addr.ip());
        for service in &record.services {
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
                let serving =
                    instance.health().is_passing() && !instance.draining && !record.draining;
                if serving {
                    entry.endpoints.push(endpoint);
                } else {
                    entry.unavailable.push(endpoint);
                }
            }
        }
    }
    for entry in table.services.values_mut() {
        let key = |e: &Endpoint| (e.node.clone(), e.instance.clone());
        entry.endpoints.sort_by_key(key);
        entry.unavailable.sort_by_key(key);
    }
    table
}
