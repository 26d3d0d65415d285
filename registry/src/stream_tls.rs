//! Optional mutual TLS around the anti-entropy TCP streams. The agent builds the rustls
//! configs (it owns the certificate files and the policy of who may connect); this crate
//! only wraps sockets with them, so it stays free of file I/O. The frames inside are sealed
//! with the cluster key as without TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The rustls configs of the gossip TCP streams.
///
/// `server` should require a client certificate; `client` should present one. The client
/// is given the peer's IP address as server name (peers are dialled by gossip address), so
/// its verifier decides what a peer certificate must name.
#[derive(Clone)]
pub struct StreamTls {
    /// Accepts streams from peers.
    pub server: Arc<ServerConfig>,
    /// Opens streams to peers.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for StreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamTls { .. }")
    }
}

/// A byte stream the exchange runs over: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Wraps an accepted stream in TLS when configured; `None` when the handshake fails.
pub(crate) async fn accept(tls: Option<&StreamTls>, stream: TcpStream) -> Option<Box<dyn Io>> {
    match tls {
        None => Some(Box::new(stream)),
        Some(tls) => match TlsAcceptor::from(tls.server.clone()).accept(stream).await {
            Ok(stream) => Some(Box::new(stream)),
            Err(e) => {
                tracing::debug!(error = %e, "gossip stream: TLS handshake refused");
                None
            }
        },
    }
}

/// Connects to `to`, in TLS when configured; `None` when either step fails.
pub(crate) async fn connect(tls: Option<&StreamTls>, to: SocketAddr) -> Option<Box<dyn Io>> {
    let stream = TcpStream::connect(to).await.ok()?;
    match tls {
        None => Some(Box::new(stream)),
        Some(tls) => {
            let name = ServerName::IpAddress(to.ip().into());
            match TlsConnector::from(tls.client.clone())
                .connect(name, stream)
                .await
            {
                Ok(stream) => Some(Box::new(stream)),
                Err(e) => {
                    tracing::debug!(error = %e, %to, "gossip stream: TLS handshake failed");
                    None
                }
            }
        }
    }
}
