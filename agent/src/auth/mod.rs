//! Who may call the agent's API, and what they may do: credentials (tokens, client
//! certificates) become an [`Identity`] with a [`Role`], every call is checked against the
//! role it needs, and refused or mutating calls are audited.

pub mod audit;
pub mod cluster_tokens;
pub mod command;
pub mod credentials;
pub mod limits;
pub mod role;
pub mod scope;
pub mod tokens;

pub use role::Role;
pub use scope::Scope;

use cluster_tokens::{ClusterTokens, Found};
use credentials::{LocalFile, MarkerFile, Verdict};
use std::net::SocketAddr;
use std::sync::Arc;
use strata_proto::v1::Via as WireVia;
use tokens::TokenStore;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// The request header that carries a token: `authorization: Bearer <token>`.
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Set by an agent forwarding a call for a caller it identified by certificate:
/// `NAME ROLE`. Trusted only from a peer that itself shows an agent certificate.
pub const ON_BEHALF_HEADER: &str = "strata-on-behalf-of";

/// How a caller was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// No credentials are configured on this agent: everyone is admin (dev, loopback).
    Open,
    /// A bearer token from `tokens.toml`.
    Token,
    /// A client certificate issued by the cluster CA.
    Certificate,
    /// Another agent (by its certificate) vouching for the caller it identified.
    Agent,
    /// No credential was presented (only in records of refused calls).
    Nothing,
}

impl Via {
    /// The word audit records and `strata whoami` show: the contract's word for it.
    pub fn as_str(self) -> &'static str {
        WireVia::from(self).label()
    }
}

impl From<Via> for WireVia {
    fn from(via: Via) -> WireVia {
        match via {
            Via::Open => WireVia::Open,
            Via::Token => WireVia::Token,
            Via::Certificate => WireVia::Certificate,
            Via::Agent => WireVia::Agent,
            Via::Nothing => WireVia::None,
        }
    }
}

/// A caller, as far as this agent could tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Token name, certificate name, or `anonymous` on an open agent.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// How it was identified.
    pub via: Via,
    /// Where the call came from, when known.
    pub remote: Option<SocketAddr>,
    /// What it may change (unscoped: everything its role allows).
    pub scope: Scope,
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certified {
    /// An agent of the cluster: may forward calls on behalf of callers it identified.
    Agent(String),
    /// An operator with a role and a scope.
    Operator(String, Role, Scope),
}

/// Decides who a caller is from the request's credentials.
pub struct Authenticator {
    tokens: TokenStore,
    cluster: Arc<ClusterTokens>,
    marker: MarkerFile,
    node: String,
    certificates: bool,
}

impl Authenticator {
    /// An authenticator over the agent-local `tokens` and the `cluster` tokens for the agent
    /// named `node`, remembering in `marker` that it has had credentials. With `certificates`
    /// (TLS with a client CA), callers need a certificate or a token even while no token
    /// exists; an agent that never had credentials is open.
    pub fn new(
        tokens: TokenStore,
        cluster: Arc<ClusterTokens>,
        marker: MarkerFile,
        node: impl Into<String>,
        certificates: bool,
    ) -> Authenticator {
        Authenticator {
            tokens,
            cluster,
            marker,
            node: node.into(),
            certificates,
        }
    }

    /// The cluster-wide tokens this agent knows.
    pub fn cluster_tokens(&self) -> &Arc<ClusterTokens> {
        &self.cluster
    }

    /// The state of the credentials now; notes in the data dir when credentials appear, so
    /// the agent stays closed even if they vanish.
    pub fn verdict(&self) -> Verdict {
        let local = match self.tokens.current() {
            Ok(None) => LocalFile::Missing,
            Ok(Some(tokens)) => LocalFile::Tokens(tokens.len()),
            Err(why) => LocalFile::Unreadable(why),
        };
        let marker = self.marker.read();
        let verdict = credentials::decide(
            marker.as_ref(),
            &local,
            self.tokens.path(),
            self.cluster.len(),
            self.certificates,
        );
        if let Some(tokens_file) = verdict.note
            && let Err(e) = self.marker.note(tokens_file)
        {
            tracing::error!(error = %e, path = %self.marker.path().display(), "cannot note that this agent has credentials");
        }
        verdict
    }

    /// Whether calls need credentials right now.
    pub fn credentials_required(&self) -> bool {
        self.verdict().required
    }

    /// Who the caller is; Unauthenticated (saying what is needed) when it cannot tell.
    pub fn identify(
        &self,
        metadata: &MetadataMap,
        certified: Option<Certified>,
        remote: Option<SocketAddr>,
    ) -> Result<Identity, Status> {
        let identity = |name: String, role, via, scope| Identity {
            name,
            role,
            via,
            remote,
            scope,
        };
        let verdict = self.verdict();
        if let Some(value) = metadata.get(AUTHORIZATION_HEADER) {
            let secret = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "the authorization header must be \"Bearer <token>\" (use --token or STRATA_TOKEN)",
                    )
                })?;
            if let Some(why) = &verdict.damaged {
                return Err(self.damaged(why));
            }
            let local = self
                .tokens
                .lookup(secret)
                .map_err(|why| self.damaged(&why))?;
            let found = match local {
                Some(token) => Found::Valid(token),
                None => self.cluster.lookup(secret).ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "the token is not valid on agent {}: it was revoked or never made \
                         (an admin makes one with `strata token create NAME --role ROLE`)",
                        self.node
                    ))
                })?,
            };
            return match found {
                Found::Valid(t) => Ok(identity(t.name, t.role, Via::Token, t.scope)),
                Found::Revoked(why) | Found::Expired(why) => Err(Status::unauthenticated(format!(
                    "{why}; agent {} refuses it",
                    self.node
                ))),
            };
        }
        match certified {
            Some(Certified::Operator(name, role, scope)) => {
                return Ok(identity(name, role, Via::Certificate, scope));
            }
            Some(Certified::Agent(agent)) => {
                return match metadata.get(ON_BEHALF_HEADER).map(|v| v.to_str()) {
                    Some(Ok(value)) => on_behalf(value)
                        .map(|(name, role, scope)| identity(name, role, Via::Agent, scope))
                        .ok_or_else(|| {
                            Status::unauthenticated(format!(
                                "agent {agent} forwarded a call with a malformed {ON_BEHALF_HEADER} header"
                            ))
                        }),
                    _ => Ok(identity(
                        format!("agent:{agent}"),
                        Role::Read,
                        Via::Agent,
                        Scope::default(),
                    )),
                };
            }
            None => {}
        }
        if let Some(why) = &verdict.damaged {
            return Err(self.damaged(why));
        }
        if verdict.required {
            return Err(Status::unauthenticated(format!(
                "agent {} requires credentials: pass a token with --token or STRATA_TOKEN, \
                 or a client certificate with --cert/--key",
                self.node
            )));
        }
        Ok(identity(
            "anonymous".into(),
            Role::Admin,
            Via::Open,
            Scope::default(),
        ))
    }

    /// The refusal of every token (and anonymous caller) while the token file is damaged.
    fn damaged(&self, why: &str) -> Status {
        Status::unauthenticated(format!(
            "agent {} cannot check tokens, so it refuses them all: {why} (restore the file, \
             or run `strata-agent token reset` as root on that host)",
            self.node
        ))
    }
}

/// Parses the on-behalf header: `NAME ROLE [services=GLOB,... team=TEAM]`.
fn on_behalf(value: &str) -> Option<(String, Role, Scope)> {
    let mut words = value.split(' ');
    let name = words.next()?;
    tokens::check_name(name.strip_prefix("cert:").unwrap_or(name)).ok()?;
    let role = words.next()?.parse().ok()?;
    let mut scope = Scope::default();
    for word in words {
        scope.read_header_word(word)?;
    }
    Some((name.to_string(), role, scope))
}

/// The on-behalf header value for `who`: name, role and scope.
pub fn on_behalf_value(who: &Identity) -> String {
    match who.scope.to_header() {
        scope if scope.is_empty() => format!("{} {}", who.name, who.role),
        scope => format!("{} {} {scope}", who.name, who.role),
    }
}

/// PermissionDenied unless `who` holds `needed`; the message says what the call needs.
pub fn authorize(who: &Identity, needed: Role, what: &str) -> Result<(), Status> {
    if who.role >= needed {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "{what} needs the {needed} role; {} has the {} role",
        who.describe(),
        who.role
    )))
}

impl Identity {
    /// The caller in words: `token "ci"`, `certificate "alice"`, ...
    pub fn describe(&self) -> String {
        match self.via {
            Via::Open | Via::Nothing => "an anonymous caller".into(),
            Via::Token => format!("token {:?}", self.name),
            Via::Certificate => format!("certificate {:?}", self.name),
            Via::Agent => format!("{:?} (through another agent)", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn with_token(secret: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(
            AUTHORIZATION_HEADER,
            format!("Bearer {secret}").parse().unwrap(),
        );
        m
    }

    fn authenticator_with(dir: &std::path::Path, certificates: bool) -> Authenticator {
        let store = TokenStore::open(dir.join(tokens::TOKENS_FILE));
        let (cluster, _) = ClusterTokens::open(dir, "n1");
        let marker = MarkerFile::in_dir(dir);
        Authenticator::new(store, Arc::new(cluster), marker, "n1", certificates)
    }

    fn authenticator(dir: &std::path::Path) -> Authenticator {
        authenticator_with(dir, false)
    }

    #[test]
    fn open_until_the_first_token_then_closed() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path());
        let anon = auth.identify(&MetadataMap::new(), None, None).unwrap();
        assert_eq!((anon.role, anon.via), (Role::Admin, Via::Open));

        let secret = tokens::create(
            &dir.path().join(tokens::TOKENS_FILE),
            "ci",
            Role::Read,
            &Scope::default(),
        )
        .unwrap();
        let err = auth.identify(&MetadataMap::new(), None, None).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(err.message().contains("--token"), "{}", err.message());

        let who = auth.identify(&with_token(&secret), None, None).unwrap();
        assert_eq!(
            (who.name.as_str(), who.role, who.via),
            ("ci", Role::Read, Via::Token)
        );
        let wrong = auth
            .identify(&with_token("strata_nope"), None, None)
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        assert!(wrong.message().contains("not valid on agent n1"));
        let mut basic = MetadataMap::new();
        basic.insert(AUTHORIZATION_HEADER, "Basic abc".parse().unwrap());
        let err = auth.identify(&basic, None, None).unwrap_err();
        assert!(err.message().contains("Bearer <token>"));
    }

    #[test]
    fn a_deleted_token_file_closes_the_agent_until_the_marker_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(tokens::TOKENS_FILE);
        let auth = authenticator(dir.path());
        let secret = tokens::create(&path, "ci", Role::Admin, &Scope::default()).unwrap();
        assert!(auth.identify(&with_token(&secret), None, None).is_ok());
        std::fs::remove_file(&path).unwrap();
        for metadata in [with_token(&secret), MetadataMap::new()] {
            let err = auth.identify(&metadata, None, None).unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated);
            assert!(err.message().contains("is missing"), "{}", err.message());
        }
        let restarted = authenticator(dir.path());
        assert!(restarted.identify(&MetadataMap::new(), None, None).is_err());
        MarkerFile::in_dir(dir.path()).remove().unwrap();
        let open = restarted.identify(&MetadataMap::new(), None, None).unwrap();
        assert_eq!(open.via, Via::Open);
    }

    #[test]
    fn scopes_travel_in_the_on_behalf_header() {
        let who = Identity {
            name: "alice".into(),
            role: Role::Operate,
            via: Via::Certificate,
            remote: None,
            scope: Scope {
                services: vec!["web-*".into()],
                team: Some("pay".into()),
            },
        };
        let value = on_behalf_value(&who);
        assert_eq!(value, "alice operate services=web-* team=pay");
        assert_eq!(
            on_behalf(&value),
            Some(("alice".into(), Role::Operate, who.scope))
        );
        assert_eq!(on_behalf("alice operate bogus"), None);
    }

    #[test]
    fn certificates_identify_and_agents_vouch() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator_with(dir.path(), true);
        assert!(
            auth.identify(&MetadataMap::new(), None, None).is_err(),
            "TLS closes it"
        );
        let op = Certified::Operator("alice".into(), Role::Operate, Scope::default());
        let who = auth.identify(&MetadataMap::new(), Some(op), None).unwrap();
        assert_eq!((who.role, who.via), (Role::Operate, Via::Certificate));

        let agent = || Some(Certified::Agent("n2".into()));
        let bare = auth.identify(&MetadataMap::new(), agent(), None).unwrap();
        assert_eq!((bare.name.as_str(), bare.role), ("agent:n2", Role::Read));
        let mut m = MetadataMap::new();
        m.insert(ON_BEHALF_HEADER, "alice admin".parse().unwrap());
        let vouched = auth.identify(&m, agent(), None).unwrap();
        assert_eq!(
            (vouched.name.as_str(), vouched.role),
            ("alice", Role::Admin)
        );
        let operator = Some(Certified::Operator(
            "bob".into(),
            Role::Read,
            Scope::default(),
        ));
        let ignored = auth.identify(&m, operator, None).unwrap();
        assert_eq!(ignored.role, Role::Read, "only agents may vouch");
    }

    #[test]
    fn weak_roles_are_denied_with_what_is_needed() {
        let who = Identity {
            name: "ci".into(),
            role: Role::Read,
            via: Via::Token,
            remote: None,
            scope: Scope::default(),
        };
        let err = authorize(&who, Role::Operate, "restart").unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "restart needs the operate role; token \"ci\" has the read role"
        );
        assert!(authorize(&who, Role::Read, "services").is_ok());
    }
}
