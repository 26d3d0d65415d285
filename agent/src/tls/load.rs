//! The agent's TLS at run time: its certificate, key and the cluster CA read once at start,
//! checked, and turned into the configs of the gRPC server, of the channels to peer agents
//! and of the gossip streams.

use super::subject::{CertKind, subject_of_der};
use super::verify::{PeerClientVerifier, PeerServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_registry::stream_tls::StreamTls;
use thiserror::Error;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The files `--tls-cert`, `--tls-key` and `--tls-ca` name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This agent's certificate (PEM), issued by `strata-agent tls issue --agent NAME`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The cluster CA (PEM) that peer and client certificates must chain to.
    pub ca: PathBuf,
}

/// Why the agent's TLS cannot be set up; each names the config field and the file.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A file cannot be read.
    #[error("{field}: cannot read {path}: {source}")]
    Read {
        /// The config field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file does not hold what the field needs.
    #[error("{field}: {path}: {problem}")]
    Invalid {
        /// The config field.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

/// The agent's TLS configs, built once at start.
pub struct AgentTls {
    server: ServerTlsConfig,
    peers: ClientTlsConfig,
    /// Mutual TLS of the gossip streams, handed to the registry.
    pub streams: StreamTls,
    /// The cluster CA's certificates, which https health checks trust too.
    pub cluster_ca: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for AgentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentTls { .. }")
    }
}

impl AgentTls {
    /// Reads and checks the files: the certificate must be an agent certificate for
    /// `node_name` that chains to the CA, and the key must be its key.
    pub fn load(files: &TlsFiles, node_name: &str) -> Result<AgentTls, LoadError> {
        let cert_pem = read("tls_cert", &files.cert)?;
        let key_pem = read("tls_key", &files.key)?;
        let ca_pem = read("tls_ca", &files.ca)?;
        let invalid = |field, path: &Path, problem: String| LoadError::Invalid {
            field,
            path: path.to_path_buf(),
            problem,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("tls_cert", &files.cert, e.to_string()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| invalid("tls_cert", &files.cert, "no certificate in it".into()))?
            .clone();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid("tls_key", &files.key, e.to_string()))?;
        let mut roots = RootCertStore::empty();
        let mut cluster_ca = Vec::new();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| invalid("tls_ca", &files.ca, e.to_string()))?;
            cluster_ca.push(ca.clone());
            roots
                .add(ca)
                .map_err(|e| invalid("tls_ca", &files.ca, e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(invalid("tls_ca", &files.ca, "no certificate in it".into()));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        check_own_cert(&leaf, &chain[1..], &roots, &provider, node_name)
            .map_err(|problem| invalid("tls_cert", &files.cert, problem))?;

        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| invalid("tls_ca", &files.ca, e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls_cert", &files.cert, e.to_string()))?
            .with_client_cert_verifier(Arc::new(PeerClientVerifier::new(client_verifier)))
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| invalid("tls_key", &files.key, e.to_string()))?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("tls_cert", &files.cert, e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PeerServerVerifier::new(roots, provider)))
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid("tls_key", &files.key, e.to_string()))?;

        let identity = Identity::from_pem(&cert_pem, &key_pem);
        let ca = Certificate::from_pem(&ca_pem);
        Ok(AgentTls {
            server: ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(ca.clone())
                .client_auth_optional(true),
            peers: ClientTlsConfig::new().ca_certificate(ca).identity(identity),
            streams: StreamTls {
                server: Arc::new(server),
                client: Arc::new(client),
            },
            cluster_ca,
        })
    }

    /// The gRPC server's TLS: this agent's certificate; a client certificate chained to the
    /// CA is asked for but not required (tokens are the other way in).
    pub fn server(&self) -> ServerTlsConfig {
        self.server.clone()
    }

    /// The TLS of a channel to the peer agent `node`: its certificate must chain to the CA
    /// and name `node`, and this agent presents its own certificate (mutual TLS).
    pub fn peer(&self, node: &str) -> ClientTlsConfig {
        self.peers.clone().domain_name(node)
    }
}

fn read(field: &'static str, path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        field,
        path: path.to_path_buf(),
        source,
    })
}

/// The agent's own certificate must be one peers accept: chained to the CA, usable as a
/// server, of kind agent and named after this node.
fn check_own_cert(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    provider: &CryptoProvider,
    node_name: &str,
) -> Result<(), String> {
    let parsed = ParsedCertificate::try_from(leaf).map_err(|e| e.to_string())?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| format!("not a valid server certificate of the CA in --tls-ca: {e}"))?;
    match subject_of_der(leaf.as_ref()) {
        Some(subject) if subject.kind == CertKind::Agent && subject.name == node_name => Ok(()),
        Some(subject) => Err(format!(
            "the certificate is for {subject}, not for agent {node_name} (strata-agent tls issue --agent {node_name})"
        )),
        None => Err(format!(
            "not a Strata agent certificate (strata-agent tls issue --agent {node_name})"
        )),
    }
}
