//! End to end: every RPC of `strata.v1.Agent` passes through the access layer. Driven from
//! the service descriptor, so a new RPC cannot be left out: on an agent with a token, each
//! one called without a credential is refused as Unauthenticated and the refusal is audited,
//! and each one called with a read token is let in (a change is refused for its role, saying
//! which role the token has). A stream holds one of the agent's stream places for its life.

use prost::Message;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use strata_proto::v1::agent_client::AgentClient;
use strata_proto::v1::agent_server::SERVICE_NAME;
use strata_proto::v1::{Event, WatchEventsRequest};
use strata_tests::{agent_token, start_test_agent, wait_until};
use tonic::client::Grpc;
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;

/// How long one call may take before the test gives up on it.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// One RPC of the service, as the descriptor describes it.
#[derive(Debug)]
struct Method {
    name: String,
    streams: bool,
}

/// Every RPC of `strata.v1.Agent`, from the descriptor the agent is built from.
fn methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(strata_proto::v1::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    set.file
        .iter()
        .flat_map(|file| file.service.iter().map(move |s| (file.package(), s)))
        .filter(|(package, s)| format!("{package}.{}", s.name()) == SERVICE_NAME)
        .flat_map(|(_, s)| s.method.iter())
        .map(|m| Method {
            name: m.name().to_string(),
            streams: m.server_streaming(),
        })
        .collect()
}

/// Calls `method` with an empty request (every field at its default), with `token` if
/// given; a stream counts as served once it opened.
async fn call(channel: Channel, method: &Method, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(format!("/{SERVICE_NAME}/{}", method.name))
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut request = Request::new(());
    if let Some(token) = token {
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token header"))?;
        request.metadata_mut().insert("authorization", bearer);
    }
    let codec = ProstCodec::<(), ()>::default();
    let served = async {
        if method.streams {
            grpc.server_streaming(request, path, codec).await.map(drop)
        } else {
            grpc.unary(request, path, codec).await.map(drop)
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, served)
        .await
        .map_err(|_| Status::deadline_exceeded(format!("{} did not answer", method.name)))?
}

#[test]
fn every_rpc_is_refused_without_a_credential_and_admitted_with_a_token() {
    let (_dir, agent) = start_test_agent("api-every-rpc");
    let token = agent_token(&agent.data_dir, &["create", "auditor", "--role", "read"]);
    let methods = methods();
    assert!(methods.len() >= 22, "the descriptor lists {methods:?}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (anonymous, with_token) = runtime.block_on(async {
        let channel = Endpoint::from_shared(format!("http://{}", agent.grpc))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the agent");
        let mut anonymous = Vec::new();
        let mut with_token = Vec::new();
        for method in &methods {
            anonymous.push(call(channel.clone(), method, None).await);
            with_token.push(call(channel.clone(), method, Some(&token)).await);
        }
        (anonymous, with_token)
    });

    for (method, result) in methods.iter().zip(&anonymous) {
        let status = result
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{} was served without a credential", method.name));
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{}: {status:?}",
            method.name
        );
        assert!(
            status.message().contains("requires credentials"),
            "{}: {}",
            method.name,
            status.message()
        );
    }

    let mut denied = 0;
    for (method, result) in methods.iter().zip(&with_token) {
        let Err(status) = result else { continue };
        assert_ne!(
            status.code(),
            Code::Unauthenticated,
            "{}: {status:?}",
            method.name
        );
        if status.code() == Code::PermissionDenied {
            denied += 1;
            assert!(
                status
                    .message()
                    .ends_with("; token \"auditor\" has the read role"),
                "{}: {}",
                method.name,
                status.message()
            );
        }
    }
    assert!(denied > 0, "a read token may not change anything");
    assert!(
        with_token.iter().filter(|r| r.is_ok()).count() > methods.len() / 2,
        "a read token sees the views: {with_token:?}"
    );

    // Every refusal without a credential is in the audit journal, one call name per RPC.
    let mut refused = BTreeSet::new();
    wait_until(
        "an audit record of every refusal",
        Duration::from_secs(10),
        || {
            let out = agent.strata(&[
                "--token", &token, "events", "--kind", "audit", "--limit", "1000", "-o", "json",
            ]);
            let events: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            refused = events["events"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["fields"]["who"] == "anonymous" && e["fields"]["via"] == "none")
                .filter(|e| {
                    e["fields"]["result"]
                        .as_str()
                        .is_some_and(|r| r.starts_with("denied: "))
                })
                .filter_map(|e| e["fields"]["what"].as_str().map(str::to_string))
                .collect();
            refused.len() == methods.len()
        },
    );
}

/// Streams the agent allows open at once (its `MAX_OPEN_STREAMS`).
const STREAM_LIMIT: usize = 256;
/// Streams one test client opens: a stream costs 10 of a client's burst of 200.
const STREAMS_PER_TOKEN: usize = 15;
/// Streams one connection carries (the agent serves 64 at most per connection).
const STREAMS_PER_CONNECTION: usize = 50;

/// Opens an event watch with `token`.
async fn watch(channel: &Channel, token: &str) -> Result<Streaming<Event>, Status> {
    let mut request = Request::new(WatchEventsRequest::default());
    let bearer = format!("Bearer {token}")
        .parse()
        .map_err(|_| Status::internal("token header"))?;
    request.metadata_mut().insert("authorization", bearer);
    let mut client = AgentClient::new(channel.clone());
    let stream = tokio::time::timeout(CALL_TIMEOUT, client.watch_events(request))
        .await
        .map_err(|_| Status::deadline_exceeded("the watch did not open"))??;
    Ok(stream.into_inner())
}

#[test]
fn a_stream_holds_its_place_until_it_ends() {
    let (_dir, agent) = start_test_agent("api-stream-places");
    let clients = STREAM_LIMIT / STREAMS_PER_TOKEN + 2;
    let tokens: Vec<String> = (0..clients)
        .map(|i| {
            let name = format!("watcher{i}");
            agent_token(&agent.data_dir, &["create", &name, "--role", "read"])
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut channels = Vec::new();
        for _ in 0..STREAM_LIMIT.div_ceil(STREAMS_PER_CONNECTION) + 1 {
            let endpoint =
                Endpoint::from_shared(format!("http://{}", agent.grpc)).expect("endpoint");
            channels.push(endpoint.connect().await.expect("connect to the agent"));
        }
        let mut open = Vec::new();
        let refusal = loop {
            let i = open.len();
            assert!(i <= STREAM_LIMIT, "more than {STREAM_LIMIT} streams opened");
            let channel = &channels[i / STREAMS_PER_CONNECTION];
            match watch(channel, &tokens[i / STREAMS_PER_TOKEN]).await {
                Ok(stream) => open.push(stream),
                Err(status) => break status,
            }
        };
        assert_eq!(open.len(), STREAM_LIMIT, "refused early: {refusal:?}");
        assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
        assert!(
            refusal
                .message()
                .contains(&format!("{STREAM_LIMIT} streams open")),
            "{}",
            refusal.message()
        );

        // Ending a stream gives its place back, once the agent sees the stream gone.
        drop(open.pop());
        let spare = tokens.last().expect("a spare token");
        let channel = channels.last().expect("a spare connection");
        let mut tries = 0;
        let reopened = loop {
            match watch(channel, spare).await {
                Ok(stream) => break stream,
                Err(status) if status.code() == Code::ResourceExhausted && tries < 15 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(status) => panic!("no place came free: {status:?}"),
            }
        };
        drop(reopened);
    });
}
