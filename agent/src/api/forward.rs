//! Forwarding: a node-scoped request for another node is sent on to that node's agent, over a
//! channel kept per peer address (TLS with this agent's certificate when the API has TLS),
//! carrying the caller's credentials on, and marked so it is never forwarded a second time.

use super::table::Rpc;
use crate::auth::{AUTHORIZATION_HEADER, Identity, ON_BEHALF_HEADER, Via, on_behalf_value};
use crate::state::AgentState;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::v1::agent_server::SERVICE_NAME;
use tonic::client::Grpc;
use tonic::codec::Streaming;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{GrpcMethod, Request, Response, Status};
use tonic_prost::ProstCodec;

/// Metadata set on a request one agent forwards to another: the forwarding agent's name.
const FORWARDED_HEADER: &str = "strata-forwarded-by";
/// How long forwarding waits for a peer agent to accept the connection.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The other agents of the cluster, as far as forwarding is concerned.
pub struct Peers {
    state: Arc<AgentState>,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Peers {
    /// Peers found through `state`'s cluster membership.
    pub fn new(state: Arc<AgentState>) -> Peers {
        Peers {
            state,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The agent's state, for what the layer looks up about a call (a service's team).
    pub fn state(&self) -> &Arc<AgentState> {
        &self.state
    }

    /// This agent's name: the target of its own refusals and changes, and the mark its
    /// forwarded requests carry.
    pub fn here(&self) -> &str {
        &self.state.node_name
    }

    /// Where `request` is served: here (`None`), or by the agent of the node it names. A
    /// request that was already forwarded once is never forwarded again, so a stale address
    /// cannot make a loop.
    pub fn route<R: Rpc>(&self, request: &Request<R>) -> Result<Option<Peer>, Status> {
        let Some(node) = request.get_ref().node() else {
            return Ok(None);
        };
        if self.state.is_self(node) {
            return Ok(None);
        }
        refuse_forwarded(request.metadata(), node, self.here())?;
        let (name, addr) = self.state.cluster.grpc_peer_of(node).ok_or_else(|| {
            Status::not_found(format!(
                "node {node:?} is not a live member of the cluster (see `strata members`)"
            ))
        })?;
        let mut channels = self
            .channels
            .lock()
            .map_err(|_| Status::internal("the peer connection cache is unavailable"))?;
        if let Some(channel) = channels.get(&addr) {
            return Ok(Some(Peer(channel.clone())));
        }
        let scheme = if self.state.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Status::internal(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(PEER_CONNECT_TIMEOUT);
        if let Some(tls) = &self.state.tls {
            // Peers are dialled by IP; their certificate is verified against the node name,
            // which every agent certificate carries as a DNS name (mutual TLS: this agent
            // presents its own certificate).
            endpoint = endpoint.tls_config(tls.peer(&name)).map_err(|e| {
                Status::internal(format!("cannot set up TLS to node {node:?}: {e}"))
            })?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr, channel.clone());
        Ok(Some(Peer(channel)))
    }
}

/// NotFound for a request that names another node but was forwarded here already: the node
/// that forwarded it thought this agent was `node`.
fn refuse_forwarded(metadata: &MetadataMap, node: &str, here: &str) -> Result<(), Status> {
    if metadata.contains_key(FORWARDED_HEADER) {
        return Err(Status::not_found(format!(
            "node {node:?} is not agent {here}, which this request was forwarded to"
        )));
    }
    Ok(())
}

/// The agent of another node, which a request is forwarded to.
pub struct Peer(Channel);

impl Peer {
    /// Sends a unary call on and returns the peer's answer.
    pub async fn unary<R: Rpc>(self, request: Request<R>) -> Result<Response<R::Reply>, Status> {
        let (mut grpc, path, request) = self.call(request).await?;
        grpc.unary(request, path, ProstCodec::default()).await
    }

    /// Sends a streaming call on and returns the peer's stream.
    pub async fn stream<R: Rpc>(
        self,
        request: Request<R>,
    ) -> Result<Response<Streaming<R::Reply>>, Status> {
        let (mut grpc, path, request) = self.call(request).await?;
        grpc.server_streaming(request, path, ProstCodec::default())
            .await
    }

    /// A ready client for the peer and the method `request` calls (as the generated client
    /// does it, for any method of the table).
    async fn call<R: Rpc>(
        self,
        mut request: Request<R>,
    ) -> Result<(Grpc<Channel>, PathAndQuery, Request<R>), Status> {
        let mut grpc = Grpc::new(self.0);
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
        let path = PathAndQuery::try_from(format!("/{SERVICE_NAME}/{}", R::METHOD))
            .map_err(|e| Status::internal(format!("no path for {}: {e}", R::METHOD)))?;
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE_NAME, R::METHOD));
        Ok((grpc, path, request))
    }
}

/// `request` as it is sent on to another agent: marked as forwarded by `origin`, carrying the
/// caller's token, or (for a caller identified otherwise) who this agent found it to be, which
/// the peer trusts only from an agent certificate.
pub fn forwarded<R>(request: Request<R>, origin: &str, who: &Identity) -> Request<R> {
    let (metadata, _, message) = request.into_parts();
    let mut forwarded = Request::new(message);
    let headers = forwarded.metadata_mut();
    if let Some(token) = metadata.get(AUTHORIZATION_HEADER) {
        headers.insert(AUTHORIZATION_HEADER, token.clone());
    } else if who.via != Via::Open
        && let Ok(value) = on_behalf_value(who).parse()
    {
        headers.insert(ON_BEHALF_HEADER, value);
    }
    if let Ok(value) = origin.parse() {
        headers.insert(FORWARDED_HEADER, value);
    }
    forwarded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use strata_proto::v1::GetNodeRequest;

    fn caller(via: Via) -> Identity {
        Identity {
            name: "alice".into(),
            role: Role::Operate,
            via,
            remote: "127.0.0.1:5000".parse().ok(),
            scope: crate::auth::Scope::default(),
        }
    }

    fn header<R>(request: &Request<R>, key: &str) -> Option<String> {
        request
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    #[test]
    fn a_token_travels_on_and_the_request_is_marked_forwarded() {
        let mut request = Request::new(GetNodeRequest { node: "n2".into() });
        let bearer = "Bearer strata_secret".parse().expect("header value");
        request.metadata_mut().insert(AUTHORIZATION_HEADER, bearer);
        request
            .metadata_mut()
            .insert("x-other", "dropped".parse().expect("header value"));
        let sent = forwarded(request, "n1", &caller(Via::Token));
        assert_eq!(
            header(&sent, AUTHORIZATION_HEADER).as_deref(),
            Some("Bearer strata_secret")
        );
        assert_eq!(header(&sent, ON_BEHALF_HEADER), None);
        assert_eq!(header(&sent, FORWARDED_HEADER).as_deref(), Some("n1"));
        assert_eq!(header(&sent, "x-other"), None, "only what forwarding sets");
        assert_eq!(sent.get_ref().node, "n2");
    }

    #[test]
    fn a_certificate_caller_is_vouched_for_and_an_open_one_is_not() {
        let cert = forwarded(Request::new(()), "n1", &caller(Via::Certificate));
        assert_eq!(
            header(&cert, ON_BEHALF_HEADER).as_deref(),
            Some("alice operate")
        );
        let open = forwarded(Request::new(()), "n1", &caller(Via::Open));
        assert_eq!(header(&open, ON_BEHALF_HEADER), None);
        assert_eq!(header(&open, AUTHORIZATION_HEADER), None);
    }

    #[test]
    fn a_forwarded_request_is_never_forwarded_again() {
        let fresh = Request::new(());
        assert!(refuse_forwarded(fresh.metadata(), "n3", "n2").is_ok());
        let again = forwarded(Request::new(()), "n1", &caller(Via::Token));
        let refused = refuse_forwarded(again.metadata(), "n3", "n2").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::NotFound);
        assert_eq!(
            refused.message(),
            "node \"n3\" is not agent n2, which this request was forwarded to"
        );
    }
}
