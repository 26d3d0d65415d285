//! Who may call the agent's API, and what they may do: credentials (tokens, client
//! certificates) become an [`Identity`] with a [`Role`], every call is checked against the
//! role it needs, and refused or mutating calls are audited.

pub mod audit;
pub mod command;
pub mod limits;
pub mod role;
pub mod tokens;

pub use role::Role;

use std::net::SocketAddr;
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
}

/// What a verified client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certified {
    /// An agent of the cluster: may forward calls on behalf of callers it identified.
    Agent(String),
    /// An operator with a role.
    Operator(String, Role),
}

/// Decides who a caller is from the request's credentials.
pub struct Authenticator {
    tokens: TokenStore,
    node: String,
    certificates: bool,
}

impl Authenticator {
    /// An authenticator over `tokens` for the agent named `node`. With `certificates`
    /// (TLS with a client CA), callers need a certificate or a token even while no token
    /// exists; otherwise an agent without tokens is open.
    pub fn new(tokens: TokenStore, node: impl Into<String>, certificates: bool) -> Authenticator {
        Authenticator {
            tokens,
            node: node.into(),
            certificates,
        }
    }

    /// Whether calls need credentials right now.
    pub fn credentials_required(&self) -> bool {
        self.certificates || !matches!(self.tokens.current(), Ok(t) if t.is_empty())
    }

    /// Who the caller is; Unauthenticated (saying what is needed) when it cannot tell.
    pub fn identify(
        &self,
        metadata: &MetadataMap,
        certified: Option<Certified>,
        remote: Option<SocketAddr>,
    ) -> Result<Identity, Status> {
        let identity = |name: String, role, via| Identity {
            name,
            role,
            via,
            remote,
        };
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
            let token = self.tokens.lookup(secret).map_err(|e| {
                Status::unauthenticated(format!(
                    "agent {} cannot check tokens, so it refuses them all: {e}",
                    self.node
                ))
            })?;
            return match token {
                Some(t) => Ok(identity(t.name, t.role, Via::Token)),
                None => Err(Status::unauthenticated(format!(
                    "the token is not valid on agent {}: it was revoked or made on another agent \
                     (an admin makes one with `strata-agent token create NAME --role ROLE`)",
                    self.node
                ))),
            };
        }
        match certified {
            Some(Certified::Operator(name, role)) => {
                return Ok(identity(name, role, Via::Certificate));
            }
            Some(Certified::Agent(agent)) => {
                return match metadata.get(ON_BEHALF_HEADER).map(|v| v.to_str()) {
                    Some(Ok(value)) => on_behalf(value)
                        .map(|(name, role)| identity(name, role, Via::Agent))
                        .ok_or_else(|| {
                            Status::unauthenticated(format!(
                                "agent {agent} forwarded a call with a malformed {ON_BEHALF_HEADER} header"
                            ))
                        }),
                    _ => Ok(identity(format!("agent:{agent}"), Role::Read, Via::Agent)),
                };
            }
            None => {}
        }
        if self.credentials_required() {
            return Err(Status::unauthenticated(format!(
                "agent {} requires credentials: pass a token with --token or STRATA_TOKEN, \
                 or a client certificate with --cert/--key",
                self.node
            )));
        }
        Ok(identity("anonymous".into(), Role::Admin, Via::Open))
    }
}

/// Parses the on-behalf header: `NAME ROLE`.
fn on_behalf(value: &str) -> Option<(String, Role)> {
    let (name, role) = value.rsplit_once(' ')?;
    tokens::check_name(name.strip_prefix("cert:").unwrap_or(name)).ok()?;
    Some((name.to_string(), role.parse().ok()?))
}

/// The on-behalf header value for `who`.
pub fn on_behalf_value(who: &Identity) -> String {
    format!("{} {}", who.name, who.role)
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

    fn authenticator(dir: &std::path::Path) -> Authenticator {
        let store = TokenStore::open(dir.join(tokens::TOKENS_FILE)).unwrap();
        Authenticator::new(store, "n1", false)
    }

    #[test]
    fn open_until_the_first_token_then_closed() {
        let dir = tempfile::tempdir().unwrap();
        let auth = authenticator(dir.path());
        let anon = auth.identify(&MetadataMap::new(), None, None).unwrap();
        assert_eq!((anon.role, anon.via), (Role::Admin, Via::Open));

        let secret =
            tokens::create(&dir.path().join(tokens::TOKENS_FILE), "ci", Role::Read).unwrap();
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
    fn certificates_identify_and_agents_vouch() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path().join(tokens::TOKENS_FILE)).unwrap();
        let auth = Authenticator::new(store, "n1", true);
        assert!(
            auth.identify(&MetadataMap::new(), None, None).is_err(),
            "TLS closes it"
        );
        let op = Certified::Operator("alice".into(), Role::Operate);
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
        let operator = Some(Certified::Operator("bob".into(), Role::Read));
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
