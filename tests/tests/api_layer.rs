//! End to end: every RPC of `strata.v1.Agent` passes through the access layer. Driven from
//! the service descriptor, so a new RPC cannot be left out: on an agent with a token, each
//! one called without a credential is refused as Unauthenticated and the refusal is audited,
//! and each one called with a read token is let in (a change is refused for its role, saying
//! which role the token has).

use prost::Message;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;
use strata_proto::v1::agent_server::SERVICE_NAME;
use strata_tests::{agent_token, start_test_agent, wait_until};
use tonic::client::Grpc;
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
