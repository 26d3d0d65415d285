//! End to end: a client on one agent's frontend port reaches an instance on another agent
//! through the local balancer, DNS on either agent answers from the replicated catalog, and
//! both drop an instance that turns critical.

use hickory_proto::op::ResponseCode;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use strata_tests::start_named_agent as agent;
use strata_tests::{binary, closed_port, http_get, wait_until, web_spec};

/// A records for `name` from the DNS server at `server`: (response code, addresses).
fn dns_a(server: SocketAddr, name: &str) -> (ResponseCode, Vec<IpAddr>) {
    strata_tests::dns_a(server, name).expect("dns answer")
}

#[test]
fn a_frontend_reaches_another_agents_instance_and_dns_follows_health() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = agent(dir.path(), "b1", None);
    let n2 = agent(dir.path(), "b2", Some(&n1));
    let frontend = closed_port();
    let health = dir.path().join("health");
    std::fs::write(&health, "200").expect("flag");
    let spec = dir.path().join("web.toml");
    std::fs::write(
        &spec,
        web_spec(
            "web",
            frontend,
            &format!("env = {{ HEALTH_FILE = \"{}\" }}\n", health.display()),
        ),
    )
    .expect("spec");
    assert!(
        n2.strata(&["apply", spec.to_str().expect("path")])
            .status
            .success()
    );

    let front = SocketAddr::new(n1.balancer, frontend);
    wait_until(
        "web reachable through b1's frontend",
        Duration::from_secs(30),
        || matches!(http_get(front, "/"), Ok((200, _))),
    );
    let (code, body) = http_get(front, "/hello").expect("through the balancer");
    assert_eq!((code, body.trim()), (200, "status 200"));

    let (rcode, ips) = dns_a(n1.dns, "web.service.strata.");
    assert_eq!(rcode, ResponseCode::NoError);
    assert_eq!(ips, vec![IpAddr::from([127, 0, 0, 1])]);
    let (rcode, _) = dns_a(n1.dns, "nothing.service.strata.");
    assert_eq!(rcode, ResponseCode::NXDomain);
    let (rcode, ips) = dns_a(n1.dns, "b2.node.strata.");
    assert_eq!((rcode, ips.len()), (ResponseCode::NoError, 1));

    let stats = &n1.json(&["balancer", "-o", "json"]);
    let web = &stats["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["endpoints"][0]["node"], "b2");
    assert!(
        web["endpoints"][0]["total"].as_u64().unwrap_or(0) >= 2,
        "{stats:#}"
    );
    let out = n1.strata(&["access-log", "web", "-o", "json"]);
    assert!(out.status.success());
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        records
            .iter()
            .any(|r| r["outcome"] == "ok" && r["node"] == "b2"),
        "{records:?}"
    );

    std::fs::write(&health, "503").expect("flag");
    wait_until(
        "the critical instance leaves DNS on b1",
        Duration::from_secs(30),
        || dns_a(n1.dns, "web.service.strata.").0 == ResponseCode::NXDomain,
    );
    wait_until(
        "the frontend has no healthy instance",
        Duration::from_secs(30),
        || http_get(front, "/").is_err(),
    );
    let out = n1.strata(&["access-log", "web", "-o", "json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no_healthy_instance"));
}

#[test]
fn a_taken_frontend_port_is_reported_and_other_services_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = agent(dir.path(), "p1", None);
    let taken = std::net::TcpListener::bind((n1.balancer, 0)).expect("hold a port");
    let taken_port = taken.local_addr().expect("addr").port();
    let free_port = closed_port();
    let server = binary("strata-test-server").display().to_string();
    for (name, port) in [("clash", taken_port), ("fine", free_port)] {
        let spec = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &spec,
            format!(
                "name = \"{name}\"\ncommand = [\"{server}\"]\n[ports.http]\nfrontend = {port}\n"
            ),
        )
        .expect("spec");
        assert!(
            n1.strata(&["apply", spec.to_str().expect("path")])
                .status
                .success()
        );
    }
    wait_until("the clash is reported", Duration::from_secs(30), || {
        let stats = &n1.json(&["balancer", "-o", "json"]);
        stats["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "clash" && s["listeners"][0]["state"] == "failed")
        })
    });
    let events = &n1.json(&["events", "--kind", "balancer", "-o", "json"]);
    assert!(
        events["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["kind"] == "balancer.listen_failed"))
    );
    wait_until(
        "the other service is served",
        Duration::from_secs(30),
        || {
            matches!(
                http_get(SocketAddr::new(n1.balancer, free_port), "/"),
                Ok((200, _))
            )
        },
    );
    drop(taken);
}

/// `dig @agent -p PORT ARGS +short`: the answer lines.
fn dig_short(server: SocketAddr, args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &server.port().to_string(), "+time=2"])
        .args(["+tries=1", "+short"])
        .args(args)
        .output()
        .expect("dig runs");
    assert!(out.status.success(), "dig {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_apex_names_this_agent_as_its_name_server() {
    if !strata_tests::prereq::DIG.check() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let n1 = agent(dir.path(), "apex1", None);
    assert_eq!(dig_short(n1.dns, &["strata", "NS"]), ["apex1.node.strata."]);
    let glue = dig_short(n1.dns, &["apex1.node.strata", "A"]);
    assert_eq!(glue, [n1.gossip.ip().to_string()]);
    let soa = dig_short(n1.dns, &["strata", "SOA"]);
    assert_eq!(soa.len(), 1, "{soa:?}");
    assert!(
        soa[0].starts_with("apex1.node.strata. hostmaster.strata. ")
            && soa[0].ends_with(" 3600 600 86400 5"),
        "{soa:?}"
    );
    drop(n1);
}
