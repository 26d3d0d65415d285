//! The DNS server on real loopback sockets, asked by hickory's client over UDP and TCP, and by
//! `dig` when it is installed.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::{DnsResponse, ResponseCode};
use hickory_net::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::udp::UdpClientStream;
use strata_registry::dns::{self, DnsConfig, DnsError, DnsServer, DnsStats};
use strata_registry::table::{Endpoint, NodeEntry, ServiceEntry, ServiceTable};
use tokio::sync::watch;

fn ep(instance: &str, node: &str, ip: &str, port: u16, tags: &[&str]) -> Endpoint {
    Endpoint {
        instance: instance.into(),
        node: node.into(),
        ip: ip.parse().unwrap(),
        ports: BTreeMap::from([("http".to_string(), port)]),
        local: false,
        version: "1".into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

fn node(name: &str, ip: &str) -> (String, NodeEntry) {
    let entry = NodeEntry {
        name: name.into(),
        id: format!("id-{name}"),
        ip: ip.parse().unwrap(),
        alive: true,
    };
    (name.into(), entry)
}

fn table() -> ServiceTable {
    let web = ServiceEntry {
        name: "web".into(),
        endpoints: vec![
            ep("web/1", "n1", "127.0.0.11", 8080, &["v2"]),
            ep("web/2", "n2", "127.0.0.12", 8080, &["v1"]),
            ep("web/3", "n3", "fd00::13", 8081, &["v2"]),
        ],
        unavailable: vec![ep("web/4", "n4", "127.0.0.14", 8080, &["v2"])],
        ..ServiceEntry::default()
    };
    ServiceTable {
        generation: 1,
        services: BTreeMap::from([("web".to_string(), web)]),
        nodes: BTreeMap::from([
            node("n1", "127.0.0.11"),
            node("n2", "127.0.0.12"),
            node("n3", "fd00::13"),
        ]),
        ..ServiceTable::default()
    }
}

async fn start(table: ServiceTable) -> (DnsServer, watch::Sender<Arc<ServiceTable>>) {
    start_with(table, DnsConfig::default()).await
}

/// Starts a server with `config` on a free loopback port.
async fn start_with(
    table: ServiceTable,
    config: DnsConfig,
) -> (DnsServer, watch::Sender<Arc<ServiceTable>>) {
    let (tx, rx) = watch::channel(Arc::new(table));
    let config = DnsConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..config
    };
    let server = dns::start(config, rx).await.unwrap();
    assert_ne!(server.local_addr().port(), 0);
    (server, tx)
}

type DnsClient = Client<TokioRuntimeProvider>;

fn udp_client(addr: SocketAddr) -> DnsClient {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default()).build();
    let (client, bg) = DnsClient::from_sender(conn);
    tokio::spawn(bg);
    client
}

async fn tcp_client(addr: SocketAddr) -> DnsClient {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::default());
    let (client, bg) = DnsClient::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    client
}

async fn ask(client: &mut DnsClient, name: &str, qtype: RecordType) -> DnsResponse {
    client
        .query(Name::from_str(name).unwrap(), DNSClass::IN, qtype)
        .await
        .unwrap()
}

fn ips<'a>(
    records: impl IntoIterator<Item = &'a hickory_net::proto::rr::Record>,
) -> BTreeSet<IpAddr> {
    records
        .into_iter()
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

/// Every kind of answer, through one client.
async fn check_answers(client: &mut DnsClient) {
    let a = ask(client, "web.service.strata.", RecordType::A).await;
    assert_eq!(a.response_code, ResponseCode::NoError);
    assert!(a.authoritative);
    assert!(!a.recursion_available);
    assert_eq!(ips(&a.answers), ip_set(&["127.0.0.11", "127.0.0.12"]));
    assert!(a.answers.iter().all(|r| r.ttl == 5));

    let upper = ask(client, "WEB.Service.STRATA.", RecordType::A).await;
    assert_eq!(ips(&upper.answers), ip_set(&["127.0.0.11", "127.0.0.12"]));

    let aaaa = ask(client, "web.service.strata.", RecordType::AAAA).await;
    assert_eq!(ips(&aaaa.answers), ip_set(&["fd00::13"]));

    let srv = ask(client, "_http._tcp.web.service.strata.", RecordType::SRV).await;
    assert_eq!(srv.response_code, ResponseCode::NoError);
    let mut targets: Vec<(String, u16)> = srv
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.target.to_ascii(), s.port),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            ("n1.node.strata.".to_string(), 8080),
            ("n2.node.strata.".to_string(), 8080),
            ("n3.node.strata.".to_string(), 8081),
        ]
    );
    let extra: BTreeSet<(String, IpAddr)> = srv
        .additionals
        .iter()
        .filter_map(|r| {
            ips([r])
                .into_iter()
                .next()
                .map(|ip| (r.name.to_ascii(), ip))
        })
        .collect();
    assert_eq!(
        extra,
        BTreeSet::from([
            ("n1.node.strata.".to_string(), "127.0.0.11".parse().unwrap()),
            ("n2.node.strata.".to_string(), "127.0.0.12".parse().unwrap()),
            ("n3.node.strata.".to_string(), "fd00::13".parse().unwrap()),
        ])
    );

    let plain_srv = ask(client, "web.service.strata.", RecordType::SRV).await;
    assert_eq!(plain_srv.answers.len(), 3);

    let tag = ask(client, "v2.web.service.strata.", RecordType::A).await;
    assert_eq!(ips(&tag.answers), ip_set(&["127.0.0.11"]));

    let node = ask(client, "n2.node.strata.", RecordType::A).await;
    assert_eq!(ips(&node.answers), ip_set(&["127.0.0.12"]));
    assert!(node.answers.iter().all(|r| r.ttl == 30));

    let nx = ask(client, "nope.service.strata.", RecordType::A).await;
    assert_eq!(nx.response_code, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert_eq!(nx.authorities.len(), 1);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(nx.authorities[0].ttl, 5);

    let refused = ask(client, "example.com.", RecordType::A).await;
    assert_eq!(refused.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());
}

/// Queries `check_answers` sends (one of them NXDOMAIN, one REFUSED).
const CHECK_QUERIES: u64 = 9;

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let (server, _tx) = start(table()).await;
    let mut udp = udp_client(server.local_addr());
    check_answers(&mut udp).await;
    let mut tcp = tcp_client(server.local_addr()).await;
    check_answers(&mut tcp).await;
    assert_eq!(
        server.stats(),
        DnsStats {
            queries: 2 * CHECK_QUERIES,
            nxdomain: 2,
            refused: 2,
        }
    );
    server.shutdown().await;
}

#[tokio::test]
async fn instance_turning_critical_leaves_the_answer() {
    let (server, tx) = start(table()).await;
    let mut client = udp_client(server.local_addr());
    let before = ask(&mut client, "web.service.strata.", RecordType::A).await;
    assert!(ips(&before.answers).contains(&"127.0.0.12".parse().unwrap()));

    // web/2 fails its health check: the catalog moves it to `unavailable`.
    tx.send_modify(|table| {
        let table = Arc::make_mut(table);
        table.generation += 1;
        let web = table.services.get_mut("web").unwrap();
        let at = web
            .endpoints
            .iter()
            .position(|e| e.instance == "web/2")
            .unwrap();
        let critical = web.endpoints.remove(at);
        web.unavailable.push(critical);
    });
    let after = ask(&mut client, "web.service.strata.", RecordType::A).await;
    assert_eq!(ips(&after.answers), ip_set(&["127.0.0.11"]));
    let srv = ask(&mut client, "web.service.strata.", RecordType::SRV).await;
    assert!(!srv.answers.iter().any(|r| match &r.data {
        RData::SRV(s) => s.target.to_ascii().starts_with("n2."),
        _ => false,
    }));

    // All instances critical: the service name no longer resolves.
    tx.send_modify(|table| {
        let table = Arc::make_mut(table);
        table.generation += 1;
        let web = table.services.get_mut("web").unwrap();
        let all: Vec<Endpoint> = web.endpoints.drain(..).collect();
        web.unavailable.extend(all);
    });
    let gone = ask(&mut client, "web.service.strata.", RecordType::A).await;
    assert_eq!(gone.response_code, ResponseCode::NXDomain);
    assert!(gone.answers.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_complete_over_tcp() {
    let mut big = table();
    let web = big.services.get_mut("web").unwrap();
    web.endpoints = (1..=200u8)
        .map(|i| {
            ep(
                &format!("web/{i}"),
                "n1",
                &format!("fd00::1:{i:x}"),
                8080,
                &[],
            )
        })
        .collect();
    let (server, _tx) = start(big).await;

    let mut udp = udp_client(server.local_addr());
    // 200 AAAA records (over 5 KB) exceed any UDP payload the client advertises.
    let truncated = ask(&mut udp, "web.service.strata.", RecordType::AAAA).await;
    assert!(truncated.truncation);
    assert!(truncated.answers.len() < 200);

    let mut tcp = tcp_client(server.local_addr()).await;
    let full = ask(&mut tcp, "web.service.strata.", RecordType::AAAA).await;
    assert!(!full.truncation);
    assert_eq!(full.answers.len(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn start_errors_and_shutdown_closes_the_port() {
    let (server, _tx) = start(table()).await;
    let addr = server.local_addr();
    let (_tx2, rx) = watch::channel(Arc::new(ServiceTable::default()));
    let taken = DnsConfig {
        addr,
        ..DnsConfig::default()
    };
    match dns::start(taken, rx.clone()).await {
        Err(DnsError::BindUdp { addr: at, .. }) => assert_eq!(at, addr),
        other => panic!("expected BindUdp, got {:?}", other.map(|s| s.local_addr())),
    }
    let bad = DnsConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        domain: "not a domain".into(),
        ..DnsConfig::default()
    };
    assert!(matches!(
        dns::start(bad, rx).await,
        Err(DnsError::InvalidDomain { .. })
    ));

    tokio::net::TcpStream::connect(addr).await.unwrap();
    server.shutdown().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "TCP port still open after shutdown");
}

/// Runs `dig` against the server: its output lines, sorted.
async fn dig(addr: SocketAddr, args: &[&str]) -> Vec<String> {
    let port = addr.port().to_string();
    let out = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=1"])
        .args(args)
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run dig: {error}"));
    assert!(out.status.success(), "dig {args:?} failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn dig_reads_the_answers() {
    if !strata_tests::prereq::DIG.check() {
        return;
    }
    let (server, _tx) = start(table()).await;
    let addr = server.local_addr();
    let a = dig(addr, &["web.service.strata", "A", "+short"]).await;
    assert_eq!(a, vec!["127.0.0.11", "127.0.0.12"]);
    let tcp = dig(addr, &["web.service.strata", "A", "+short", "+tcp"]).await;
    assert_eq!(tcp, a);
    let srv = dig(addr, &["_http._tcp.web.service.strata", "SRV", "+short"]).await;
    assert_eq!(
        srv,
        vec![
            "1 1 8080 n1.node.strata.",
            "1 1 8080 n2.node.strata.",
            "1 1 8081 n3.node.strata.",
        ]
    );
    let status = dig(addr, &["nope.service.strata", "A", "+noall", "+comments"]).await;
    assert!(
        status.iter().any(|l| l.contains("status: NXDOMAIN")),
        "{status:?}"
    );
    server.shutdown().await;
}

/// `table()` with web/5 on n5 in health `warning`.
fn table_with_warning() -> ServiceTable {
    let mut table = table();
    let web = table.services.get_mut("web").unwrap();
    let warning = ep("web/5", "n5", "127.0.0.15", 8082, &["v2"]);
    web.unavailable.push(warning.clone());
    web.warning.push(warning);
    table.nodes.extend([node("n5", "127.0.0.15")]);
    table
}

#[tokio::test]
async fn dig_reads_rfc2782_names_warning_instances_and_the_apex() {
    if !strata_tests::prereq::DIG.check() {
        return;
    }
    let config = DnsConfig {
        node_name: "n1".into(),
        ..DnsConfig::default()
    };
    let (server, _tx) = start_with(table_with_warning(), config.clone()).await;
    let addr = server.local_addr();
    let everyone = vec![
        "1 1 8080 n1.node.strata.",
        "1 1 8080 n2.node.strata.",
        "1 1 8081 n3.node.strata.",
        "1 1 8082 n5.node.strata.",
    ];
    // Both SRV forms; the warning instance web/5 is answered by default.
    let rfc = dig(addr, &["_web._tcp.service.strata", "SRV", "+short"]).await;
    assert_eq!(rfc, everyone);
    let port = dig(addr, &["_http._tcp.web.service.strata", "SRV", "+short"]).await;
    assert_eq!(port, everyone);
    let glue = dig(
        addr,
        &["_web._tcp.service.strata", "SRV", "+noall", "+additional"],
    )
    .await;
    assert!(
        glue.iter()
            .any(|l| l.starts_with("n5.node.strata.") && l.ends_with("127.0.0.15")),
        "{glue:?}"
    );

    // The apex: SOA and NS naming this agent, with its address as glue.
    let soa = dig(addr, &["strata", "SOA", "+short"]).await;
    assert_eq!(
        soa,
        vec!["n1.node.strata. hostmaster.strata. 1 3600 600 86400 5"]
    );
    let ns = dig(addr, &["strata", "NS", "+short"]).await;
    assert_eq!(ns, vec!["n1.node.strata."]);
    let ns_glue = dig(addr, &["strata", "NS", "+noall", "+additional"]).await;
    assert_eq!(ns_glue.len(), 1, "{ns_glue:?}");
    let fields: Vec<&str> = ns_glue[0].split_whitespace().collect();
    assert_eq!(fields, ["n1.node.strata.", "30", "IN", "A", "127.0.0.11"]);
    let flags = dig(addr, &["strata", "NS", "+noall", "+comments"]).await;
    assert!(
        flags.iter().any(|l| l.contains("flags: qr aa")),
        "{flags:?}"
    );
    server.shutdown().await;

    // only_passing drops the warning instance from both forms.
    let strict = DnsConfig {
        only_passing: true,
        ..config
    };
    let (server, _tx) = start_with(table_with_warning(), strict).await;
    let addr = server.local_addr();
    let passing = &everyone[..3];
    let rfc = dig(addr, &["_web._tcp.service.strata", "SRV", "+short"]).await;
    assert_eq!(rfc, passing);
    let port = dig(addr, &["_http._tcp.web.service.strata", "SRV", "+short"]).await;
    assert_eq!(port, passing);
    server.shutdown().await;
}
