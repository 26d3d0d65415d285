//! The API layer: what every RPC of `strata.v1.Agent` passes through, in one place. A call is
//! identified, authorized for the call its request makes, and charged to its client's rate
//! limit (the [`Gate`], told by the [`table`](super::table)); a stream takes one of the
//! agent's stream permits for its whole life; a node-scoped request for another node is sent
//! on to that node's agent ([`Peers`]); anything else is served here by its handler, and a
//! change is written to the audit journal with its outcome. Handlers only turn a request into
//! a reply.

use super::forward::{Peers, forwarded};
use super::gate::{Call, Gate, ReplyStream, hold};
use super::table::{Rpc, Touches};
use crate::auth::audit::AuditEntry;
use crate::auth::scope::{Subject, team_of};
use crate::auth::{Certified, Identity};
use crate::tls::CertKind;
use std::future::Future;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Admits, routes, forwards and audits every call.
pub struct Layer {
    gate: Arc<Gate>,
    peers: Peers,
}

/// A call the gate let in, with what its request makes of it.
struct Admitted {
    who: Identity,
    call: Call,
    target: String,
}

impl Layer {
    /// A layer that asks `gate` about every call and forwards through `peers`.
    pub fn new(gate: Arc<Gate>, peers: Peers) -> Layer {
        Layer { gate, peers }
    }

    /// Whether callers must bring credentials (for `whoami`).
    pub fn credentials_required(&self) -> bool {
        self.gate.credentials_required()
    }

    /// Serves a unary RPC: `serve` runs here, for the caller the gate admitted, unless the
    /// request names another node.
    pub async fn unary<R, F, Fut>(
        &self,
        request: Request<R>,
        serve: F,
    ) -> Result<Response<R::Reply>, Status>
    where
        R: Rpc,
        F: FnOnce(Identity, R) -> Fut,
        Fut: Future<Output = Result<R::Reply, Status>>,
    {
        let admitted = self.admit(&request)?;
        if let Some(peer) = self.peers.route(&request)? {
            return peer
                .unary(forwarded(request, self.peers.here(), &admitted.who))
                .await;
        }
        self.serve_here(admitted, request.into_inner(), serve, R::audit_reply)
            .await
            .map(Response::new)
    }

    /// Serves a streaming RPC like [`Layer::unary`]; the stream, opened here or by the
    /// agent it was forwarded to, holds a stream permit until it ends or the caller leaves.
    pub async fn stream<R, S, F, Fut>(
        &self,
        request: Request<R>,
        serve: F,
    ) -> Result<Response<ReplyStream<R::Reply>>, Status>
    where
        R: Rpc,
        F: FnOnce(Identity, R) -> Fut,
        Fut: Future<Output = Result<S, Status>>,
        S: Stream<Item = Result<R::Reply, Status>> + Send + 'static,
    {
        let admitted = self.admit(&request)?;
        let permit = self.gate.stream_permit()?;
        if let Some(peer) = self.peers.route(&request)? {
            let replies = peer
                .stream(forwarded(request, self.peers.here(), &admitted.who))
                .await?;
            return Ok(Response::new(hold(replies.into_inner(), permit)));
        }
        let replies = self
            .serve_here(admitted, request.into_inner(), serve, |_, _| {})
            .await?;
        Ok(Response::new(hold(replies, permit)))
    }

    /// Who makes `request`, if the gate lets its call through.
    fn admit<R: Rpc>(&self, request: &Request<R>) -> Result<Admitted, Status> {
        let message = request.get_ref();
        let call = message.call();
        let target = message
            .target()
            .unwrap_or_else(|| format!("node:{}", self.peers.here()));
        let who = self
            .gate
            .admit(request, certified(request), call, &target)?;
        Ok(Admitted { who, call, target })
    }

    /// Runs `serve` and, for a request that changes something, waits until its audit record
    /// (with what `note` takes from a result) is in the journal.
    async fn serve_here<R, T, F, Fut>(
        &self,
        admitted: Admitted,
        request: R,
        serve: F,
        note: impl FnOnce(&T, &mut AuditEntry),
    ) -> Result<T, Status>
    where
        R: Rpc,
        F: FnOnce(Identity, R) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let Admitted { who, call, target } = admitted;
        if call.is_change() && !who.scope.is_unscoped() {
            let owners = self.owners(request.touches());
            let subjects: Vec<Subject<'_>> = owners
                .iter()
                .map(|owner| match owner {
                    Some((name, team)) => Subject::Service {
                        name,
                        team: team.as_deref(),
                    },
                    None => Subject::NodeWide,
                })
                .collect();
            self.gate.check_scope(&who, call, &target, &subjects)?;
        }
        if !request.audited() {
            return serve(who, request).await;
        }
        let mut entry = AuditEntry {
            who: who.clone(),
            what: call.what.to_string(),
            target,
            args: request.audit_args(),
        };
        let result = serve(who, request).await;
        if let Ok(served) = &result {
            note(served, &mut entry);
        }
        self.gate.audit(entry, result.as_ref().map(|_| ())).await;
        result
    }
}

impl Layer {
    /// The services (name and team) a change touches, as they are here: a spec's own name
    /// and team, and those of the service it replaces; `None` for the node as a whole.
    fn owners(&self, touches: Touches<'_>) -> Vec<Option<(String, Option<String>)>> {
        let here = |name: &str| {
            let team = self
                .peers
                .state()
                .supervisor
                .get(name)
                .ok()
                .and_then(|s| team_of(&s.tags).map(String::from));
            Some((name.to_string(), team))
        };
        match touches {
            Touches::NodeWide => vec![None],
            Touches::Service(name) => vec![here(name)],
            Touches::Spec(text) => {
                let (name, tags) = spec_owner(text);
                let mut owners = vec![Some((name.clone(), team_of(&tags).map(String::from)))];
                if self.peers.state().supervisor.get(&name).is_ok() {
                    owners.push(here(&name));
                }
                owners
            }
        }
    }
}

/// The name and tags a spec's text gives (empty when it has none or does not parse: the
/// handler says what is wrong with it, a scope check only needs what it claims).
fn spec_owner(text: &str) -> (String, Vec<String>) {
    let table: toml::Table = toml::from_str(text).unwrap_or_default();
    let name = table
        .get("name")
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tags = table
        .get("tags")
        .and_then(toml::Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (name, tags)
}

/// What the caller's verified client certificate says, if it showed one.
fn certified<R>(request: &Request<R>) -> Option<Certified> {
    let subject = crate::tls::peer_subject(request)?;
    match subject.kind {
        CertKind::Agent => Some(Certified::Agent(subject.name)),
        CertKind::Operator { role, scope } => Some(Certified::Operator(subject.name, role, scope)),
    }
}
