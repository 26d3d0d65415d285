//! One address for checks and traffic: in two network namespaces (real, non-loopback
//! addresses), a service that binds only to `$STRATA_IP` passes its health check and is
//! reached through the other node's frontend, at the address the catalog publishes.

use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use strata_tests::netns::TestNet;
use strata_tests::{AgentOptions, AgentProcess, binary, http_get, wait_until};

const KEY: &str = "q2v0Ykq4b6m6o2Ck3qvP0bJx8m9D5Yt6d6WqXz3mJjE=";
const GRPC_PORT: u16 = 7700;
const GOSSIP_PORT: u16 = 7701;
const HTTP_PORT: u16 = 7702;
const FRONTEND: u16 = 18600;

fn start_node(net: &TestNet, dir: &std::path::Path, i: usize) -> AgentProcess {
    let ip = net.nodes[i].ip;
    let name = format!("a{}", i + 1);
    let mut args: Vec<String> = vec![
        "--grpc-addr".into(),
        format!("{ip}:{GRPC_PORT}"),
        "--http-addr".into(),
        format!("{ip}:{HTTP_PORT}"),
        "--gossip-addr".into(),
        format!("{ip}:{GOSSIP_PORT}"),
        "--balancer-addr".into(),
        ip.to_string(),
        "--dns-addr".into(),
        "127.0.0.1:0".into(),
        "--gossip-key".into(),
        KEY.into(),
        "--insecure".into(),
    ];
    if i > 0 {
        args.push("--join".into());
        args.push(format!("{}:{GOSSIP_PORT}", net.nodes[0].ip));
    }
    AgentProcess::start(
        &dir.join(&name),
        &AgentOptions {
            node_name: Some(name.clone()),
            extra_args: args,
            prefix: net.exec_prefix(i),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("agent {name} starts: {e:#}"))
}

#[test]
fn a_service_bound_to_strata_ip_passes_and_is_reached_from_another_node() {
    let Some(net) = TestNet::create(2).expect("test network") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let a1 = start_node(&net, dir.path(), 0);
    let a2 = start_node(&net, dir.path(), 1);
    let spec = dir.path().join("bound.toml");
    // The server binds $BIND_ADDR; the shell hands it the address Strata gives the instance.
    std::fs::write(
        &spec,
        format!(
            r#"name = "bound"
command = ["/bin/sh", "-c", "BIND_ADDR=\"$STRATA_IP\" exec {}"]
[ports.http]
frontend = {FRONTEND}
[health]
http = "/"
interval = "250ms"
timeout = "250ms"
rise = 1
fall = 2
grace = "0s"
"#,
            binary("strata-test-server").display()
        ),
    )
    .expect("spec");
    let out = a2.strata(&[
        "apply",
        spec.to_str().expect("path"),
        "--wait",
        "--timeout",
        "60s",
    ]);
    assert!(
        out.status.success(),
        "the instance bound to $STRATA_IP passes its check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let service: Value = a2.json(&["service", "bound", "-o", "json"]);
    let instance = &service["instances"][0];
    assert_eq!(instance["health"], "passing", "{service:#}");

    let node2 = net.nodes[1].ip.to_string();
    wait_until(
        "a1's catalog publishes the instance at a2's address",
        Duration::from_secs(30),
        || {
            let catalog = a1.json(&["catalog", "-o", "json"]);
            catalog["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["name"] == "a2")
                .any(|r| {
                    r["ip"] == node2.as_str()
                        && r["services"]
                            .as_array()
                            .is_some_and(|s| s.iter().any(|s| s["name"] == "bound"))
                })
        },
    );
    let front = SocketAddr::new(net.nodes[0].ip.into(), FRONTEND);
    wait_until(
        "the instance is reached through a1's frontend",
        Duration::from_secs(30),
        || matches!(http_get(front, "/"), Ok((200, _))),
    );
    drop((a1, a2));
    drop(net);
}
