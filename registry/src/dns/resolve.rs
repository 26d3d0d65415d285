//! Name → records, as a pure function over one [`ServiceTable`] snapshot.
//!
//! Kept free of sockets and clocks so that every answer the server gives can be checked in a
//! unit test. Names under the zone:
//!
//! | name                                     | answers                                      |
//! |------------------------------------------|----------------------------------------------|
//! | `<domain>`                               | SOA, NS (this agent, with its address as glue) |
//! | `<service>.service.<domain>`             | A/AAAA of answered instances, SRV of every port |
//! | `<tag>.<service>.service.<domain>`       | the same, only instances carrying the tag    |
//! | `_<service>._tcp.service.<domain>`       | SRV of every port (RFC 2782, Consul's form)  |
//! | `_<port>._tcp.<service>.service.<domain>`| SRV of that named port                       |
//! | `<node>.node.<domain>`                   | A/AAAA of an alive node                      |
//!
//! Answered instances are the passing ones and, unless the zone is `only_passing`, the ones
//! whose health is `warning` (Consul's `only_passing = false` default). A service name with no
//! answered instance (or none with the tag or port asked for) is NXDOMAIN, as in Consul: to a
//! client "nothing to connect to" and "no such service" are the same failure, and the negative
//! TTL is as short as the service TTL so recovery is seen fast.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{DnsConfig, DnsError};
use crate::table::{Endpoint, ServiceTable};

/// SOA timers for secondaries; nothing transfers this zone, so these only need to be sane.
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86_400;

/// The zone this server is authoritative for, with the TTLs it hands out.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    /// Lowercase, fully qualified (`strata.`).
    origin: Name,
    /// What NS and the SOA's MNAME name: this agent's `<node>.node.<domain>`, or
    /// `ns.<domain>` when its node name cannot be a DNS label.
    nameserver: Name,
    /// This agent's node, whose address is the NS answer's glue (None: no glue).
    node: Option<String>,
    /// Answer only passing instances, not warning ones.
    only_passing: bool,
    service_ttl: u32,
    node_ttl: u32,
    negative_ttl: u32,
}

impl Zone {
    /// Checks the configured domain and converts TTLs to DNS seconds.
    pub(crate) fn new(config: &DnsConfig) -> Result<Self, DnsError> {
        let invalid = |reason: String| DnsError::InvalidDomain {
            domain: config.domain.clone(),
            reason,
        };
        let mut origin = Name::from_ascii(&config.domain).map_err(|e| invalid(e.to_string()))?;
        origin.set_fqdn(true);
        if origin.is_root() {
            return Err(invalid("the root cannot be the Strata domain".into()));
        }
        for label in origin.iter() {
            let label = std::str::from_utf8(label).map_err(|e| invalid(e.to_string()))?;
            if !is_dns_label(label) {
                return Err(invalid(format!(
                    "label {label:?} is not letters, digits, '-' and '_' (1 to 63)"
                )));
            }
        }
        let origin = origin.to_lowercase();
        let (nameserver, node) = match node_name(&origin, &config.node_name) {
            Some(name) => (name, Some(config.node_name.clone())),
            None => (
                origin
                    .prepend_label("ns")
                    .map_err(|e| invalid(e.to_string()))?,
                None,
            ),
        };
        Ok(Self {
            origin,
            nameserver,
            node,
            only_passing: config.only_passing,
            service_ttl: ttl_secs(config.service_ttl),
            node_ttl: ttl_secs(config.node_ttl),
            negative_ttl: ttl_secs(config.negative_ttl),
        })
    }

    /// Whether `name` is this zone or under it.
    pub(crate) fn contains(&self, name: &Name) -> bool {
        self.origin.zone_of(name)
    }
}

fn ttl_secs(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX)
}

/// Whether a name from the table can be served as one DNS label: ASCII letters, digits, '-'
/// and '_', 1 to 63 bytes, not starting or ending with '-'. Anything else is skipped.
pub(crate) fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What to send back for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) code: ResponseCode,
    /// False only for names outside the zone (REFUSED).
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    /// The zone's SOA on negative answers (NXDOMAIN and NOERROR without data).
    pub(crate) authority: Vec<Record>,
    /// Addresses of SRV targets.
    pub(crate) additionals: Vec<Record>,
}

impl Answer {
    /// A bare response code, not authoritative: REFUSED, FORMERR, NOTIMP.
    pub(crate) fn error(code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn negative(zone: &Zone, table: &ServiceTable, code: ResponseCode) -> Self {
        Self {
            code,
            authoritative: true,
            answers: Vec::new(),
            authority: vec![soa(zone, table)],
            additionals: Vec::new(),
        }
    }

    fn nxdomain(zone: &Zone, table: &ServiceTable) -> Self {
        Self::negative(zone, table, ResponseCode::NXDomain)
    }

    /// The name exists but has no record of the asked type.
    fn nodata(zone: &Zone, table: &ServiceTable) -> Self {
        Self::negative(zone, table, ResponseCode::NoError)
    }

    fn records(
        zone: &Zone,
        table: &ServiceTable,
        answers: Vec<Record>,
        extra: Vec<Record>,
    ) -> Self {
        if answers.is_empty() {
            return Self::nodata(zone, table);
        }
        Self {
            code: ResponseCode::NoError,
            authoritative: true,
            answers,
            authority: Vec::new(),
            additionals: extra,
        }
    }
}

/// The zone's SOA. Its serial is the table's generation, which grows with every change this
/// agent sees (each agent numbers its own: they are not comparable across agents, and
/// nothing transfers the zone).
fn soa(zone: &Zone, table: &ServiceTable) -> Record {
    let hostmaster = zone
        .origin
        .prepend_label("hostmaster")
        .unwrap_or_else(|_| zone.origin.clone());
    // Serial numbers wrap (RFC 1982), so the low 32 bits of the generation do.
    let serial = (table.generation & u64::from(u32::MAX)) as u32;
    let soa = SOA::new(
        zone.nameserver.clone(),
        hostmaster,
        serial,
        SOA_REFRESH,
        SOA_RETRY,
        SOA_EXPIRE,
        zone.negative_ttl,
    );
    Record::from_rdata(zone.origin.clone(), zone.negative_ttl, RData::SOA(soa))
}

/// Answers one question from `table`. `name` is used as the owner of the answers, so the
/// asker's letter case comes back as it was sent; matching ignores case.
pub(crate) fn resolve(zone: &Zone, table: &ServiceTable, name: &Name, qtype: RecordType) -> Answer {
    if !zone.contains(name) {
        return Answer::error(ResponseCode::Refused);
    }
    let lower = name.to_lowercase();
    let relative =
        usize::from(lower.num_labels()).saturating_sub(usize::from(zone.origin.num_labels()));
    let labels: Option<Vec<&str>> = lower
        .iter()
        .take(relative)
        .map(|l| std::str::from_utf8(l).ok())
        .collect();
    // A label that is not UTF-8 cannot match anything in the table.
    let Some(labels) = labels else {
        return Answer::nxdomain(zone, table);
    };
    let asked = |service, tag, port, srv_only| ServiceQuery {
        service,
        tag,
        port,
        srv_only,
    };
    match labels.as_slice() {
        [] => apex_answer(zone, table, qtype),
        ["service"] | ["node"] => Answer::nodata(zone, table),
        [node, "node"] => node_answer(zone, table, name, node, qtype),
        [service, "service"] => {
            service_answer(zone, table, name, qtype, asked(service, None, None, false))
        }
        // RFC 2782 (`_api._tcp.service.strata`): before the tag form, which it would match.
        [service, "_tcp", "service"] => match service.strip_prefix('_') {
            Some(service) => {
                service_answer(zone, table, name, qtype, asked(service, None, None, true))
            }
            None => Answer::nxdomain(zone, table),
        },
        [tag, service, "service"] => service_answer(
            zone,
            table,
            name,
            qtype,
            asked(service, Some(tag), None, false),
        ),
        [port, "_tcp", service, "service"] => match port.strip_prefix('_') {
            Some(port) => service_answer(
                zone,
                table,
                name,
                qtype,
                asked(service, None, Some(port), true),
            ),
            None => Answer::nxdomain(zone, table),
        },
        _ => Answer::nxdomain(zone, table),
    }
}

/// The zone's apex: its SOA, and NS naming this agent with the agent's address as glue, so
/// that a resolver delegating the domain to the agents (or `dig NS`) finds a server.
fn apex_answer(zone: &Zone, table: &ServiceTable, qtype: RecordType) -> Answer {
    let ns = || {
        Record::from_rdata(
            zone.origin.clone(),
            zone.node_ttl,
            RData::NS(NS(zone.nameserver.clone())),
        )
    };
    let glue = || match zone.node.as_ref().and_then(|n| table.nodes.get(n)) {
        Some(node) => address_records(
            &zone.nameserver,
            zone.node_ttl,
            RecordType::ANY,
            std::iter::once(node.ip),
        ),
        None => Vec::new(),
    };
    match qtype {
        RecordType::SOA => Answer::records(zone, table, vec![soa(zone, table)], Vec::new()),
        RecordType::NS => Answer::records(zone, table, vec![ns()], glue()),
        RecordType::ANY => Answer::records(zone, table, vec![soa(zone, table), ns()], glue()),
        _ => Answer::nodata(zone, table),
    }
}

fn node_answer(
    zone: &Zone,
    table: &ServiceTable,
    owner: &Name,
    node: &str,
    qtype: RecordType,
) -> Answer {
    let ips: BTreeSet<IpAddr> = table
        .nodes
        .values()
        .filter(|n| n.alive && is_dns_label(&n.name) && n.name.eq_ignore_ascii_case(node))
        .map(|n| n.ip)
        .collect();
    if ips.is_empty() {
        return Answer::nxdomain(zone, table);
    }
    let answers = address_records(owner, zone.node_ttl, qtype, ips.iter().copied());
    Answer::records(zone, table, answers, Vec::new())
}

/// A/AAAA records for the addresses that match `qtype` (both for ANY).
fn address_records(
    owner: &Name,
    ttl: u32,
    qtype: RecordType,
    ips: impl Iterator<Item = IpAddr>,
) -> Vec<Record> {
    ips.filter_map(|ip| {
        let data = match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A::from(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA::from(v6)),
            _ => return None,
        };
        Some(Record::from_rdata(owner.clone(), ttl, data))
    })
    .collect()
}

/// The instances of `service` that DNS answers with (names compared without case; services
/// whose names only differ in case are one DNS name): passing ones, and warning ones unless
/// the zone is `only_passing`; optionally only those with `tag`.
fn answered<'t>(
    zone: &Zone,
    table: &'t ServiceTable,
    service: &str,
    tag: Option<&str>,
) -> Vec<&'t Endpoint> {
    table
        .services
        .iter()
        .filter(|(key, _)| is_dns_label(key) && key.eq_ignore_ascii_case(service))
        .flat_map(|(_, entry)| {
            let warning: &[Endpoint] = if zone.only_passing {
                &[]
            } else {
                &entry.warning
            };
            entry.endpoints.iter().chain(warning)
        })
        .filter(|ep| {
            tag.is_none_or(|tag| {
                ep.tags
                    .iter()
                    .any(|t| is_dns_label(t) && t.eq_ignore_ascii_case(tag))
            })
        })
        .collect()
}

/// The ports of `ep` that a name asks for: all of them, or the one named `port`.
fn ports(ep: &Endpoint, port: Option<&str>) -> Vec<u16> {
    ep.ports
        .iter()
        .filter(|(name, _)| match port {
            Some(want) => is_dns_label(name) && name.eq_ignore_ascii_case(want),
            None => true,
        })
        .map(|(_, p)| *p)
        .collect()
}

/// What a name under `service.<domain>` asks for.
struct ServiceQuery<'q> {
    service: &'q str,
    /// Only instances carrying this tag.
    tag: Option<&'q str>,
    /// Only this named port.
    port: Option<&'q str>,
    /// An `_x._tcp` name: it only carries SRV records.
    srv_only: bool,
}

fn service_answer(
    zone: &Zone,
    table: &ServiceTable,
    owner: &Name,
    qtype: RecordType,
    query: ServiceQuery<'_>,
) -> Answer {
    let ServiceQuery {
        service,
        tag,
        port,
        srv_only,
    } = query;
    let mut endpoints = answered(zone, table, service, tag);
    if port.is_some() {
        endpoints.retain(|ep| !ports(ep, port).is_empty());
    }
    if endpoints.is_empty() {
        return Answer::nxdomain(zone, table);
    }
    match qtype {
        RecordType::SRV => {
            let (answers, extra) = srv_records(zone, owner, &endpoints, port);
            Answer::records(zone, table, answers, extra)
        }
        RecordType::A | RecordType::AAAA | RecordType::ANY if !srv_only => {
            let ips: BTreeSet<IpAddr> = endpoints.iter().map(|ep| ep.ip).collect();
            let answers = address_records(owner, zone.service_ttl, qtype, ips.into_iter());
            Answer::records(zone, table, answers, Vec::new())
        }
        _ => Answer::nodata(zone, table),
    }
}

/// SRV records (priority 1, weight 1 for every instance, as Consul does: clients spread evenly)
/// targeting `<node>.node.<domain>`, and the targets' addresses for the additional section.
/// Instances on nodes whose names are not DNS labels get no SRV record.
fn srv_records(
    zone: &Zone,
    owner: &Name,
    endpoints: &[&Endpoint],
    port: Option<&str>,
) -> (Vec<Record>, Vec<Record>) {
    let mut seen_srv = BTreeSet::new();
    let mut seen_addr = BTreeSet::new();
    let mut answers = Vec::new();
    let mut extra = Vec::new();
    for ep in endpoints {
        let Some(target) = node_name(&zone.origin, &ep.node) else {
            tracing::debug!(node = %ep.node, instance = %ep.instance, "node name is not a DNS label; no SRV record");
            continue;
        };
        let ports = ports(ep, port);
        if ports.is_empty() {
            continue;
        }
        for p in ports {
            if seen_srv.insert((target.clone(), p)) {
                let srv = SRV::new(1, 1, p, target.clone());
                answers.push(Record::from_rdata(
                    owner.clone(),
                    zone.service_ttl,
                    RData::SRV(srv),
                ));
            }
        }
        if seen_addr.insert((target.clone(), ep.ip)) {
            extra.extend(address_records(
                &target,
                zone.node_ttl,
                RecordType::ANY,
                std::iter::once(ep.ip),
            ));
        }
    }
    (answers, extra)
}

/// `<node>.node.<origin>`, or None when the node's name cannot be a DNS label.
fn node_name(origin: &Name, node: &str) -> Option<Name> {
    if !is_dns_label(node) {
        return None;
    }
    origin
        .prepend_label("node")
        .and_then(|n| n.prepend_label(node.to_ascii_lowercase()))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{NodeEntry, ServiceEntry};
    use std::collections::BTreeMap;

    fn ep(instance: &str, node: &str, ip: &str, ports: &[(&str, u16)], tags: &[&str]) -> Endpoint {
        Endpoint {
            instance: instance.into(),
            node: node.into(),
            ip: ip.parse().unwrap(),
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            local: false,
            version: "1.0.0".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn service(name: &str, endpoints: Vec<Endpoint>, unavailable: Vec<Endpoint>) -> ServiceEntry {
        ServiceEntry {
            name: name.into(),
            endpoints,
            unavailable,
            ..ServiceEntry::default()
        }
    }

    fn node(name: &str, ip: &str, alive: bool) -> NodeEntry {
        NodeEntry {
            name: name.into(),
            id: format!("id-{name}"),
            ip: ip.parse().unwrap(),
            alive,
        }
    }

    fn table() -> ServiceTable {
        let services = [
            service(
                "web",
                vec![
                    ep(
                        "web/1",
                        "n1",
                        "10.0.0.1",
                        &[("http", 8080), ("admin", 9090)],
                        &["v2", "canary"],
                    ),
                    ep("web/2", "n2", "10.0.0.2", &[("http", 8080)], &["v1"]),
                    ep("web/3", "n3", "fd00::3", &[("http", 8081)], &["v2"]),
                    ep("web/4", "n1", "10.0.0.1", &[("http", 8082)], &[]),
                ],
                vec![ep("web/5", "n4", "10.0.0.5", &[("http", 8080)], &["v2"])],
            ),
            service(
                "db",
                vec![],
                vec![ep("db/1", "n2", "10.0.0.2", &[("pg", 5432)], &[])],
            ),
            service(
                "bad name",
                vec![ep("b/1", "n1", "10.0.0.1", &[("http", 1)], &[])],
                vec![],
            ),
            service(
                "api",
                vec![ep("api/1", "bad node", "10.0.0.9", &[("http", 7000)], &[])],
                vec![],
            ),
            ServiceEntry {
                warning: vec![ep("cache/2", "n2", "10.0.0.2", &[("redis", 6380)], &[])],
                ..service(
                    "cache",
                    vec![ep("cache/1", "n1", "10.0.0.1", &[("redis", 6379)], &[])],
                    vec![ep("cache/2", "n2", "10.0.0.2", &[("redis", 6380)], &[])],
                )
            },
            ServiceEntry {
                warning: vec![ep("queue/1", "n3", "fd00::3", &[("amqp", 5672)], &[])],
                ..service(
                    "queue",
                    vec![],
                    vec![ep("queue/1", "n3", "fd00::3", &[("amqp", 5672)], &[])],
                )
            },
        ];
        let nodes = [
            node("n1", "10.0.0.1", true),
            node("n2", "10.0.0.2", true),
            node("n3", "fd00::3", true),
            node("n4", "10.0.0.4", false),
            node("bad node", "10.0.0.9", true),
        ];
        ServiceTable {
            generation: 7,
            services: services.into_iter().map(|s| (s.name.clone(), s)).collect(),
            nodes: nodes
                .into_iter()
                .map(|n| (n.name.clone(), n))
                .collect::<BTreeMap<_, _>>(),
            ..ServiceTable::default()
        }
    }

    fn zone() -> Zone {
        Zone::new(&DnsConfig {
            node_name: "n1".into(),
            ..DnsConfig::default()
        })
        .unwrap()
    }

    fn ask(name: &str, qtype: RecordType) -> Answer {
        resolve(&zone(), &table(), &Name::from_ascii(name).unwrap(), qtype)
    }

    fn ips(records: &[Record]) -> BTreeSet<IpAddr> {
        records
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect()
    }

    fn ip_set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|ip| ip.parse().unwrap()).collect()
    }

    fn srvs(answer: &Answer) -> Vec<(String, u16)> {
        let mut out: Vec<_> = answer
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => {
                    assert_eq!((srv.priority, srv.weight), (1, 1));
                    (srv.target.to_ascii(), srv.port)
                }
                other => panic!("not an SRV record: {other:?}"),
            })
            .collect();
        out.sort();
        out
    }

    fn assert_negative(answer: &Answer, code: ResponseCode) {
        assert_eq!(answer.code, code);
        assert!(answer.authoritative);
        assert!(answer.answers.is_empty(), "{answer:?}");
        assert_eq!(answer.authority.len(), 1, "{answer:?}");
        let soa = &answer.authority[0];
        assert_eq!(soa.name.to_ascii(), "strata.");
        assert_eq!(soa.ttl, 5);
        match &soa.data {
            RData::SOA(soa) => {
                assert_eq!(soa.minimum, 5);
                assert_eq!(soa.serial, 7);
            }
            other => panic!("not an SOA: {other:?}"),
        }
    }

    #[test]
    fn service_a_has_passing_instances_deduplicated() {
        let answer = ask("web.service.strata.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert!(answer.authoritative);
        // 10.0.0.1 twice (web/1 and web/4) gives one record; web/5 is unavailable.
        assert_eq!(answer.answers.len(), 2);
        assert_eq!(ips(&answer.answers), ip_set(&["10.0.0.1", "10.0.0.2"]));
        for record in &answer.answers {
            assert_eq!(record.ttl, 5);
            assert_eq!(record.name.to_ascii(), "web.service.strata.");
        }
        assert!(answer.authority.is_empty() && answer.additionals.is_empty());
    }

    #[test]
    fn service_aaaa_has_ipv6_instances() {
        let answer = ask("web.service.strata.", RecordType::AAAA);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert_eq!(ips(&answer.answers), ip_set(&["fd00::3"]));
    }

    #[test]
    fn any_gives_both_families() {
        let answer = ask("web.service.strata.", RecordType::ANY);
        assert_eq!(
            ips(&answer.answers),
            ip_set(&["10.0.0.1", "10.0.0.2", "fd00::3"])
        );
    }

    #[test]
    fn names_match_without_case_and_keep_the_askers_case() {
        let answer = ask("WeB.SeRvIcE.StRaTa.", RecordType::A);
        assert_eq!(ips(&answer.answers), ip_set(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(answer.answers[0].name.to_ascii(), "WeB.SeRvIcE.StRaTa.");
    }

    #[test]
    fn plain_srv_lists_every_port_with_node_targets_and_their_addresses() {
        let answer = ask("web.service.strata.", RecordType::SRV);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert_eq!(
            srvs(&answer),
            vec![
                ("n1.node.strata.".to_string(), 8080),
                ("n1.node.strata.".to_string(), 8082),
                ("n1.node.strata.".to_string(), 9090),
                ("n2.node.strata.".to_string(), 8080),
                ("n3.node.strata.".to_string(), 8081),
            ]
        );
        let mut extra: Vec<_> = answer
            .additionals
            .iter()
            .map(|r| (r.name.to_ascii(), r.record_type(), r.ttl))
            .collect();
        extra.sort();
        assert_eq!(
            extra,
            vec![
                ("n1.node.strata.".to_string(), RecordType::A, 30),
                ("n2.node.strata.".to_string(), RecordType::A, 30),
                ("n3.node.strata.".to_string(), RecordType::AAAA, 30),
            ]
        );
        assert_eq!(
            ips(&answer.additionals),
            ip_set(&["10.0.0.1", "10.0.0.2", "fd00::3"])
        );
    }

    #[test]
    fn port_srv_lists_only_that_port() {
        let admin = ask("_admin._tcp.web.service.strata.", RecordType::SRV);
        assert_eq!(srvs(&admin), vec![("n1.node.strata.".to_string(), 9090)]);
        assert_eq!(ips(&admin.additionals), ip_set(&["10.0.0.1"]));

        let http = ask("_HTTP._tcp.web.service.strata.", RecordType::SRV);
        assert_eq!(srvs(&http).len(), 4);
        assert!(
            srvs(&http)
                .iter()
                .all(|(_, p)| [8080, 8081, 8082].contains(p))
        );

        assert_negative(
            &ask("_nope._tcp.web.service.strata.", RecordType::SRV),
            ResponseCode::NXDomain,
        );
        assert_negative(
            &ask("admin._tcp.web.service.strata.", RecordType::SRV),
            ResponseCode::NXDomain,
        );
        // The port name only carries SRV.
        assert_negative(
            &ask("_admin._tcp.web.service.strata.", RecordType::A),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn tag_filters_instances() {
        let v2 = ask("v2.web.service.strata.", RecordType::A);
        assert_eq!(ips(&v2.answers), ip_set(&["10.0.0.1"]));
        let v2 = ask("V2.web.service.strata.", RecordType::AAAA);
        assert_eq!(ips(&v2.answers), ip_set(&["fd00::3"]));
        let v1 = ask("v1.web.service.strata.", RecordType::SRV);
        assert_eq!(srvs(&v1), vec![("n2.node.strata.".to_string(), 8080)]);
        assert_negative(
            &ask("v9.web.service.strata.", RecordType::A),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn service_without_passing_instances_is_nxdomain() {
        assert_negative(
            &ask("db.service.strata.", RecordType::A),
            ResponseCode::NXDomain,
        );
        // web/5 (unavailable) is the only instance on n4: its tag-less SRV never shows up.
        let srv = ask("web.service.strata.", RecordType::SRV);
        assert!(!srvs(&srv).iter().any(|(t, _)| t.starts_with("n4.")));
    }

    #[test]
    fn unknown_names_under_the_domain_are_nxdomain() {
        for name in [
            "nope.service.strata.",
            "x.y.web.service.strata.",
            "foo.strata.",
            "web.services.strata.",
            "n9.node.strata.",
            "a.n1.node.strata.",
        ] {
            assert_negative(&ask(name, RecordType::A), ResponseCode::NXDomain);
        }
    }

    #[test]
    fn existing_name_with_another_type_is_nodata() {
        assert_negative(
            &ask("web.service.strata.", RecordType::MX),
            ResponseCode::NoError,
        );
        assert_negative(
            &ask("service.strata.", RecordType::A),
            ResponseCode::NoError,
        );
        assert_negative(&ask("strata.", RecordType::A), ResponseCode::NoError);
    }

    #[test]
    fn apex_soa() {
        let answer = ask("strata.", RecordType::SOA);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert_eq!(answer.answers.len(), 1);
        match &answer.answers[0].data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname.to_ascii(), "n1.node.strata.");
                assert_eq!(soa.rname.to_ascii(), "hostmaster.strata.");
                assert_eq!(soa.serial, 7);
                assert_eq!(
                    (soa.refresh, soa.retry, soa.expire, soa.minimum),
                    (3600, 600, 86_400, 5)
                );
            }
            other => panic!("not an SOA: {other:?}"),
        }
    }

    #[test]
    fn apex_ns_names_this_agent_with_its_address_as_glue() {
        let answer = ask("Strata.", RecordType::NS);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert!(answer.authoritative);
        let targets: Vec<String> = answer
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::NS(ns) => ns.0.to_ascii(),
                other => panic!("not an NS: {other:?}"),
            })
            .collect();
        assert_eq!(targets, ["n1.node.strata."]);
        assert_eq!(answer.answers[0].ttl, 30);
        assert_eq!(ips(&answer.additionals), ip_set(&["10.0.0.1"]));
        assert_eq!(answer.additionals[0].name.to_ascii(), "n1.node.strata.");

        let any = ask("strata.", RecordType::ANY);
        let mut types: Vec<RecordType> = any.answers.iter().map(|r| r.record_type()).collect();
        types.sort();
        assert_eq!(types, [RecordType::NS, RecordType::SOA]);
        assert_eq!(ips(&any.additionals), ip_set(&["10.0.0.1"]));

        // NS only at the apex.
        assert_negative(
            &ask("service.strata.", RecordType::NS),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn apex_ns_without_a_label_node_name_is_ns_without_glue() {
        for node in ["", "bad node"] {
            let zone = Zone::new(&DnsConfig {
                node_name: node.into(),
                ..DnsConfig::default()
            })
            .unwrap();
            let answer = resolve(
                &zone,
                &table(),
                &Name::from_ascii("strata.").unwrap(),
                RecordType::NS,
            );
            match &answer.answers[0].data {
                RData::NS(ns) => assert_eq!(ns.0.to_ascii(), "ns.strata."),
                other => panic!("not an NS: {other:?}"),
            }
            assert!(answer.additionals.is_empty(), "{node:?}");
        }
    }

    #[test]
    fn rfc2782_srv_lists_every_port_of_the_service() {
        let rfc = ask("_Web._tcp.service.strata.", RecordType::SRV);
        assert_eq!(rfc.code, ResponseCode::NoError);
        assert_eq!(
            srvs(&rfc),
            srvs(&ask("web.service.strata.", RecordType::SRV))
        );
        assert_eq!(
            ips(&rfc.additionals),
            ip_set(&["10.0.0.1", "10.0.0.2", "fd00::3"])
        );
        assert_eq!(rfc.answers[0].name.to_ascii(), "_Web._tcp.service.strata.");
        // Only SRV; without the underscore, or for an unknown service, no such name.
        assert_negative(
            &ask("_web._tcp.service.strata.", RecordType::A),
            ResponseCode::NoError,
        );
        for name in [
            "web._tcp.service.strata.",
            "_nope._tcp.service.strata.",
            "_db._tcp.service.strata.",
            "_web._udp.service.strata.",
        ] {
            assert_negative(&ask(name, RecordType::SRV), ResponseCode::NXDomain);
        }
    }

    #[test]
    fn warning_instances_are_answered_unless_only_passing() {
        let both = ask("_cache._tcp.service.strata.", RecordType::SRV);
        assert_eq!(
            srvs(&both),
            [
                ("n1.node.strata.".to_string(), 6379),
                ("n2.node.strata.".to_string(), 6380)
            ]
        );
        assert_eq!(
            ips(&ask("cache.service.strata.", RecordType::A).answers),
            ip_set(&["10.0.0.1", "10.0.0.2"])
        );
        // A service whose only instance is warning is still found.
        assert_eq!(
            ips(&ask("queue.service.strata.", RecordType::AAAA).answers),
            ip_set(&["fd00::3"])
        );

        let strict = Zone::new(&DnsConfig {
            only_passing: true,
            ..DnsConfig::default()
        })
        .unwrap();
        let name = |n: &str| Name::from_ascii(n).unwrap();
        let table = table();
        let only = resolve(
            &strict,
            &table,
            &name("_redis._tcp.cache.service.strata."),
            RecordType::SRV,
        );
        assert_eq!(srvs(&only), [("n1.node.strata.".to_string(), 6379)]);
        let a = resolve(
            &strict,
            &table,
            &name("cache.service.strata."),
            RecordType::A,
        );
        assert_eq!(ips(&a.answers), ip_set(&["10.0.0.1"]));
        assert_negative(
            &resolve(
                &strict,
                &table,
                &name("queue.service.strata."),
                RecordType::AAAA,
            ),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn names_outside_the_domain_are_refused() {
        for name in [
            "example.com.",
            "strata.example.",
            "web.service.stratax.",
            ".",
        ] {
            let answer = ask(name, RecordType::A);
            assert_eq!(answer.code, ResponseCode::Refused, "{name}");
            assert!(!answer.authoritative);
            assert!(answer.answers.is_empty() && answer.authority.is_empty());
        }
    }

    #[test]
    fn alive_nodes_resolve() {
        let answer = ask("N1.node.strata.", RecordType::A);
        assert_eq!(answer.code, ResponseCode::NoError);
        assert_eq!(ips(&answer.answers), ip_set(&["10.0.0.1"]));
        assert_eq!(answer.answers[0].ttl, 30);
        assert_eq!(
            ips(&ask("n3.node.strata.", RecordType::AAAA).answers),
            ip_set(&["fd00::3"])
        );
        assert_negative(
            &ask("n3.node.strata.", RecordType::A),
            ResponseCode::NoError,
        );
        // Known but down.
        assert_negative(
            &ask("n4.node.strata.", RecordType::A),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn table_names_that_are_not_labels_are_skipped() {
        let spaced = Name::from_labels(vec![&b"bad name"[..], b"service", b"strata"]).unwrap();
        let answer = resolve(&zone(), &table(), &spaced, RecordType::A);
        assert_negative(&answer, ResponseCode::NXDomain);
        let spaced = Name::from_labels(vec![&b"bad node"[..], b"node", b"strata"]).unwrap();
        let answer = resolve(&zone(), &table(), &spaced, RecordType::A);
        assert_negative(&answer, ResponseCode::NXDomain);
        // The instance is still reachable by address; it has no SRV target name.
        assert_eq!(
            ips(&ask("api.service.strata.", RecordType::A).answers),
            ip_set(&["10.0.0.9"])
        );
        assert_negative(
            &ask("api.service.strata.", RecordType::SRV),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn ttls_and_domain_are_configurable() {
        let config = DnsConfig {
            domain: "Consul.Internal".into(),
            service_ttl: Duration::from_secs(1),
            node_ttl: Duration::from_secs(2),
            negative_ttl: Duration::from_secs(3),
            ..DnsConfig::default()
        };
        let zone = Zone::new(&config).unwrap();
        let table = table();
        let srv = resolve(
            &zone,
            &table,
            &Name::from_ascii("web.service.consul.internal.").unwrap(),
            RecordType::SRV,
        );
        assert!(srv.answers.iter().all(|r| r.ttl == 1));
        assert!(srv.additionals.iter().all(|r| r.ttl == 2));
        assert!(
            srvs(&srv)
                .iter()
                .all(|(t, _)| t.ends_with(".node.consul.internal."))
        );
        let nx = resolve(
            &zone,
            &table,
            &Name::from_ascii("nope.service.consul.internal.").unwrap(),
            RecordType::A,
        );
        assert_eq!(nx.code, ResponseCode::NXDomain);
        assert_eq!(nx.authority[0].ttl, 3);
        let refused = resolve(
            &zone,
            &table,
            &Name::from_ascii("web.service.strata.").unwrap(),
            RecordType::A,
        );
        assert_eq!(refused.code, ResponseCode::Refused);
    }

    #[test]
    fn bad_domains_are_rejected() {
        for domain in ["", ".", "bad domain", "a..b", "-x"] {
            let config = DnsConfig {
                domain: domain.into(),
                ..DnsConfig::default()
            };
            let err = Zone::new(&config).unwrap_err();
            assert!(
                matches!(err, DnsError::InvalidDomain { .. }),
                "{domain:?}: {err}"
            );
        }
    }

    #[test]
    fn dns_labels() {
        for ok in ["web", "web-1", "_http", "a", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-web", "web-", "a.b", "a b", "wéb", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
