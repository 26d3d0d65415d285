//! Connecting to an agent: address parsing, TLS and token credentials, and the one-line
//! "cannot reach" failure.

use super::failure::{Failure, FailureKind, root_cause};
use super::retry::{RetryPolicy, Retrying};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_proto::v1::agent_client::AgentClient;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Default agent address when neither `--agent` nor `STRATA_AGENT` (nor, in the console,
/// the config file) names one.
pub const DEFAULT_AGENT: &str = "127.0.0.1:7700";

/// How long to wait for the agent to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A client of the Agent API whose every request carries the credentials, and whose calls
/// the agent refused for now are sent again ([`super::retry`]).
pub type Client = AgentClient<InterceptedService<Retrying<Channel>, Credentials>>;

/// Adds `authorization: Bearer TOKEN` to every request when a token was given.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<AsciiMetadataValue>,
}

impl Credentials {
    /// Credentials for `token`; a token that cannot be a header value is a usage error.
    pub fn bearer(token: Option<&str>) -> Result<Credentials, Failure> {
        let authorization = token
            .map(|t| {
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| {
                    Failure::new(
                        FailureKind::Usage,
                        "--token: only visible ASCII characters are allowed",
                    )
                })
            })
            .transpose()?;
        Ok(Credentials { authorization })
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// How the client proves who it is and whom it trusts: `--ca`, `--cert`, `--key`, `--token`.
#[derive(Debug, Clone, Default)]
pub struct ClientAuth {
    /// The cluster CA the agent's certificate must chain to; given, the connection is TLS.
    pub ca: Option<PathBuf>,
    /// A client certificate (`strata-agent tls issue --operator NAME --role ROLE`).
    pub cert: Option<PathBuf>,
    /// The client certificate's key.
    pub key: Option<PathBuf>,
    /// A bearer token sent with every request.
    pub token: Option<String>,
}

/// Everything needed to (re)connect to one agent, checked and read once.
#[derive(Clone)]
pub struct Connector {
    agent: String,
    uri: String,
    tls: Option<ClientTlsConfig>,
    credentials: Credentials,
    retry: RetryPolicy,
}

fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| {
        Failure::new(
            FailureKind::Usage,
            format!("{flag} {}: cannot read: {e}", path.display()),
        )
    })
}

impl Connector {
    /// Checks the address and the credentials and reads the PEM files. `https://` or a
    /// given `--ca` means TLS, which needs `--ca`; `--cert` and `--key` go together.
    pub fn new(agent: &str, auth: &ClientAuth) -> Result<Connector, Failure> {
        let usage = |m: &str| Failure::new(FailureKind::Usage, m);
        let uri = agent_uri(agent)?;
        let tls_wanted = uri.starts_with("https://") || auth.ca.is_some();
        let identity = match (&auth.cert, &auth.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read_pem("--cert", cert)?,
                read_pem("--key", key)?,
            )),
            _ => return Err(usage("--cert and --key go together")),
        };
        let tls = if tls_wanted {
            let ca = auth.ca.as_ref().ok_or_else(|| {
                usage("TLS needs --ca FILE (the cluster CA, from `strata-agent tls ca`)")
            })?;
            let mut tls =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem("--ca", ca)?));
            if let Some(identity) = identity {
                tls = tls.identity(identity);
            }
            Some(tls)
        } else if identity.is_some() {
            return Err(usage(
                "--cert needs --ca: a client certificate is only sent over TLS",
            ));
        } else {
            None
        };
        let uri = match (&tls, uri.strip_prefix("http://")) {
            (Some(_), Some(rest)) => format!("https://{rest}"),
            _ => uri,
        };
        Ok(Connector {
            agent: agent.to_string(),
            uri,
            tls,
            credentials: Credentials::bearer(auth.token.as_deref())?,
            retry: RetryPolicy::default(),
        })
    }

    /// The same connector, retrying refused calls by `retry` (`--no-retry` is
    /// [`RetryPolicy::Never`]).
    pub fn with_retry(self, retry: RetryPolicy) -> Connector {
        Connector { retry, ..self }
    }

    /// The agent as given on the command line.
    pub fn agent(&self) -> &str {
        &self.agent
    }

    /// Connects; an unreachable agent or a failed TLS handshake is one line naming the
    /// address.
    pub async fn connect(&self) -> Result<Client, Failure> {
        let agent = &self.agent;
        let mut endpoint = Endpoint::from_shared(self.uri.clone())
            .map_err(|e| Failure::new(FailureKind::Usage, format!("--agent {agent:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| {
                Failure::new(
                    FailureKind::Usage,
                    format!("--ca, --cert or --key cannot be used: {}", root_cause(&e)),
                )
            })?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let cause = root_cause(&e);
            let message = if self.tls.is_some() {
                format!("TLS connection to the agent at {agent} failed: {cause} (check --ca, --cert and --key)")
            } else {
                format!("cannot reach the agent at {agent}: {cause}")
            };
            Failure::new(FailureKind::Unreachable, message)
        })?;
        Ok(AgentClient::with_interceptor(
            Retrying::new(channel, self.retry),
            self.credentials.clone(),
        ))
    }
}

/// Connects to the agent at `agent` with `auth`; see [`Connector::connect`].
pub async fn connect(agent: &str, auth: &ClientAuth) -> Result<Client, Failure> {
    Connector::new(agent, auth)?.connect().await
}

/// Awaits one call to the agent at `agent` (named in the failure): its reply, or the failure
/// its status means. `let info = call(client.get_node(request), agent).await?;`
pub async fn call<T>(
    sent: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    agent: &str,
) -> Result<T, Failure> {
    sent.await
        .map(tonic::Response::into_inner)
        .map_err(|status| Failure::from_status(&status, agent))
}

/// Normalises an `--agent` value (`host:port` or `http://host:port`) to a URI.
pub fn agent_uri(agent: &str) -> Result<String, Failure> {
    let usage = |why: &str| {
        Failure::new(
            FailureKind::Usage,
            format!("--agent {agent:?}: {why} (expected HOST:PORT, e.g. 127.0.0.1:7700)"),
        )
    };
    let rest = agent
        .strip_prefix("http://")
        .or_else(|| agent.strip_prefix("https://"))
        .unwrap_or(agent);
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| usage("no port"))?;
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err(usage("bad host"));
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| usage("the port must be a number from 1 to 65535"))?;
    let scheme = if agent.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_and_http_uris() {
        assert_eq!(
            agent_uri("127.0.0.1:7700").unwrap(),
            "http://127.0.0.1:7700"
        );
        assert_eq!(agent_uri("http://n1:7700").unwrap(), "http://n1:7700");
        assert_eq!(agent_uri("[::1]:7700").unwrap(), "http://[::1]:7700");
    }

    #[test]
    fn bad_addresses_are_usage_errors() {
        for bad in ["127.0.0.1", "host:notaport", ":7700", "host:0", "a b:1"] {
            let f = agent_uri(bad).unwrap_err();
            assert_eq!(f.kind, FailureKind::Usage, "{bad}");
            assert!(f.message.contains("--agent"), "{}", f.message);
        }
    }

    #[test]
    fn tls_needs_a_ca_and_certificates_need_tls() {
        let usage = |agent: &str, auth: &ClientAuth| {
            let f = Connector::new(agent, auth).err().expect("refused");
            assert_eq!(f.kind, FailureKind::Usage, "{}", f.message);
            f.message
        };
        let none = ClientAuth::default();
        assert!(usage("https://n1:7700", &none).contains("--ca"));
        let cert_only = ClientAuth {
            cert: Some("/nowhere/c.pem".into()),
            ..ClientAuth::default()
        };
        assert!(usage("n1:7700", &cert_only).contains("--key"));
        let missing_ca = ClientAuth {
            ca: Some("/nowhere/ca.pem".into()),
            ..ClientAuth::default()
        };
        assert!(usage("n1:7700", &missing_ca).contains("/nowhere/ca.pem"));
        let plain = Connector::new("n1:7700", &none).unwrap();
        assert_eq!(plain.uri, "http://n1:7700");
        assert!(plain.tls.is_none());
    }

    #[test]
    fn a_ca_turns_a_plain_address_into_https() {
        let dir = std::env::temp_dir().join(format!("strata-connect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "not checked until connecting").unwrap();
        let auth = ClientAuth {
            ca: Some(ca),
            ..ClientAuth::default()
        };
        let c = Connector::new("127.0.0.1:7700", &auth).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.uri, "https://127.0.0.1:7700");
        assert_eq!(c.agent(), "127.0.0.1:7700");
    }

    #[test]
    fn a_token_becomes_a_bearer_header_on_every_request() {
        let mut with = Credentials::bearer(Some("s3cret")).unwrap();
        let request = with.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        let mut without = Credentials::bearer(None).unwrap();
        let request = without.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        let bad = Credentials::bearer(Some("line\nbreak")).err().unwrap();
        assert_eq!(bad.kind, FailureKind::Usage);
    }
}
