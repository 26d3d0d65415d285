//! The HTTP and HTTPS health check: one GET over hyper's HTTP/1.1 client connection, judged
//! as Consul judges its HTTP checks: 2xx passing, 429 warning, anything else critical.
//!
//! Redirects (301, 302, 303, 307, 308 with a `Location`) are followed, at most
//! [`MAX_REDIRECTS`] of them, as Go's client under Consul's checks does; a check with
//! `disable_redirects` judges the 3xx itself, which is then critical like any non-2xx. The
//! caller's timeout covers every connect, handshake, request and body read.

use super::health::{CheckOutcome, connect_error};
use crate::supervisor::spec::HttpCheck;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The most redirects followed, as Go's HTTP client (Consul's checks) follows.
pub const MAX_REDIRECTS: usize = 10;

/// How much of the body is read for the check's message.
pub const MAX_BODY: usize = 4096;

/// One request's destination.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hop {
    https: bool,
    /// What is dialled: `ip:port`, or `host:port` named by a redirect.
    dial: String,
    /// The `Host` header: host and port.
    authority: String,
    /// The name the certificate must carry, and the SNI sent.
    server_name: String,
    /// Path and query.
    path: String,
}

/// GETs the check's path on `target`, following redirects unless disabled, and judges the
/// final answer.
pub async fn check(http: &HttpCheck, target: SocketAddr) -> CheckOutcome {
    let server_name = http
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| target.ip().to_string());
    let authority = match http.tls.as_ref().and_then(|t| t.server_name.as_ref()) {
        Some(name) => format!("{name}:{}", target.port()),
        None => target.to_string(),
    };
    let mut hop = Hop {
        https: http.tls.is_some(),
        dial: target.to_string(),
        authority,
        server_name,
        path: http.path.clone(),
    };
    let skip_verify = http.tls.as_ref().is_some_and(|t| t.skip_verify);
    let mut redirects = 0;
    loop {
        let answer = match get(&hop, skip_verify).await {
            Ok(answer) => answer,
            Err(message) => return CheckOutcome::Fail(message),
        };
        let location = answer
            .location
            .as_deref()
            .filter(|_| http.follow_redirects && FOLLOWED.contains(&answer.status.as_u16()));
        let Some(location) = location else {
            return judge(answer.status, &answer.reason, &answer.body);
        };
        if redirects == MAX_REDIRECTS {
            return CheckOutcome::Fail(format!(
                "stopped after {MAX_REDIRECTS} redirects (last to {location:?})"
            ));
        }
        redirects += 1;
        hop = match next_hop(&hop, location) {
            Ok(next) => next,
            Err(problem) => return CheckOutcome::Fail(problem),
        };
    }
}

/// The redirect statuses Go's client follows.
const FOLLOWED: [u16; 5] = [301, 302, 303, 307, 308];

/// 2xx passes, 429 warns, anything else fails; the message quotes the status and the body.
fn judge(status: StatusCode, reason: &str, body: &str) -> CheckOutcome {
    let mut message = format!("HTTP {}", status.as_u16());
    if !reason.is_empty() {
        message = format!("{message} {reason}");
    }
    if !body.is_empty() {
        message = format!("{message}: {body}");
    }
    if status.is_success() {
        CheckOutcome::Pass
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        CheckOutcome::Warn(message)
    } else {
        CheckOutcome::Fail(message)
    }
}

/// Where a `Location` leads from `from`: a path on the same server, or a URL elsewhere.
fn next_hop(from: &Hop, location: &str) -> Result<Hop, String> {
    let uri: Uri = location
        .parse()
        .map_err(|_| format!("redirect to {location:?}, which is not a URL"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let Some(scheme) = uri.scheme_str() else {
        let path = if path.starts_with('/') {
            path
        } else {
            let dir = from.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            format!("{dir}/{path}")
        };
        return Ok(Hop {
            path,
            ..from.clone()
        });
    };
    let https = match scheme {
        "http" => false,
        "https" => true,
        other => return Err(format!("redirect to {location:?}: {other} is not http(s)")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("redirect to {location:?} names no host"))?;
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = format!("{host}:{port}");
    Ok(Hop {
        https,
        dial: authority.clone(),
        authority,
        server_name: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        path,
    })
}

/// What a server answered.
struct Answer {
    status: StatusCode,
    reason: String,
    location: Option<String>,
    /// The first [`MAX_BODY`] bytes of the body, trimmed.
    body: String,
}

/// One GET: connect, TLS when https, request, status and the start of the body.
async fn get(hop: &Hop, skip_verify: bool) -> Result<Answer, String> {
    let tcp =
        TcpStream::connect(&hop.dial)
            .await
            .map_err(|e| match hop.dial.parse::<SocketAddr>() {
                Ok(addr) => connect_error(&e, addr),
                Err(_) => format!("connect to {}: {e}", hop.dial),
            })?;
    if !hop.https {
        return exchange(tcp, hop).await;
    }
    let config = if skip_verify {
        UNVERIFIED.clone()?
    } else {
        verified()?
    };
    let name = ServerName::try_from(hop.server_name.clone())
        .map_err(|_| format!("{:?} is not a TLS server name", hop.server_name))?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {}: {e}", hop.dial))?;
    exchange(tls, hop).await
}

/// The request and response over an established connection.
async fn exchange<IO>(io: IO, hop: &Hop) -> Result<Answer, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Title-case header names, as curl and Go send them: hand-written health endpoints match them.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP to {}: {e}", hop.dial))?;
    let request = Request::get(hop.path.as_str())
        .header(header::HOST, hop.authority.as_str())
        .header(
            header::USER_AGENT,
            concat!("strata-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("request for {:?}: {e}", hop.path))?;
    let answer = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("no HTTP response from {}: {e}", hop.dial))?;
        let status = response.status();
        let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
            Some(given) => String::from_utf8_lossy(given.as_bytes()).into_owned(),
            None => status.canonical_reason().unwrap_or_default().to_string(),
        };
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let body = read_start(response.into_body()).await;
        Ok(Answer {
            status,
            reason,
            location,
            body,
        })
    };
    // The connection is driven alongside the exchange and ends when the sender is dropped.
    let (answer, _) = tokio::join!(answer, connection);
    answer
}

/// Reads at most [`MAX_BODY`] bytes of a body, decoded (chunked or sized); a body that
/// breaks off keeps what arrived, as Consul keeps it: the status decides the check.
async fn read_start(mut body: hyper::body::Incoming) -> String {
    let mut kept = Vec::new();
    while kept.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let room = MAX_BODY - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    String::from_utf8_lossy(&kept).trim().to_string()
}

/// The host's CA store (`SSL_CERT_FILE`/`SSL_CERT_DIR` override it), loaded once, and why
/// nothing could be loaded when it is empty.
static NATIVE_ROOTS: LazyLock<(Vec<CertificateDer<'static>>, Option<String>)> =
    LazyLock::new(|| {
        let found = rustls_native_certs::load_native_certs();
        let why = found.errors.first().map(|e| e.to_string());
        (found.certs, why)
    });

/// The cluster CA's certificates when the agent runs with TLS: services holding a
/// certificate from `strata-agent tls issue` pass https checks as the agent's peers do.
static CLUSTER_ROOTS: RwLock<Vec<CertificateDer<'static>>> = RwLock::new(Vec::new());

/// The verifying https client, built on first use and again after the cluster CA changes.
static VERIFIED: RwLock<Option<Arc<ClientConfig>>> = RwLock::new(None);

/// Makes https checks trust `roots` (the cluster CA) besides the host's CA store, as
/// Consul's checks use the agent's `ca_file`; empty when the agent runs without TLS.
pub fn trust_cluster_ca(roots: Vec<CertificateDer<'static>>) {
    *CLUSTER_ROOTS
        .write()
        .unwrap_or_else(PoisonError::into_inner) = roots;
    *VERIFIED.write().unwrap_or_else(PoisonError::into_inner) = None;
}

/// The https client trusting the host's CA store and the cluster CA.
fn verified() -> Result<Arc<ClientConfig>, String> {
    if let Some(config) = VERIFIED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        return Ok(config.clone());
    }
    let (native, why) = &*NATIVE_ROOTS;
    let cluster = CLUSTER_ROOTS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(native.iter().cloned().chain(cluster));
    if added == 0 {
        let why = why.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
        return Err(format!(
            "no trusted CA certificates on this host for https checks{why} (set SSL_CERT_FILE, or tls_skip_verify = true)"
        ));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for https checks: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let config = Arc::new(config);
    *VERIFIED.write().unwrap_or_else(PoisonError::into_inner) = Some(config.clone());
    Ok(config)
}

/// The https client of checks with `tls_skip_verify`: any certificate, any name.
static UNVERIFIED: LazyLock<Result<Arc<ClientConfig>, String>> = LazyLock::new(|| {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS for https checks: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
});

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (Consul's `tls_skip_verify`); the handshake's signatures
/// are still checked, so the session is with the holder of the presented key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
