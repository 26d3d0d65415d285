//! DNS on every agent: `<service>.service.<domain>` (A, AAAA, SRV), `<tag>.<service>...`,
//! `_<service>._tcp.service.<domain>` (RFC 2782), `_<port>._tcp.<service>...`,
//! `<node>.node.<domain>` and the apex's SOA and NS, answered from the current
//! [`ServiceTable`], over UDP and TCP on one port.
//!
//! Programs that cannot use the local balancer's frontend ports still find healthy instances
//! by name. The server reads the table from the catalog's `watch` channel and never waits on
//! the catalog; answers come from a pure function over one snapshot (`resolve.rs`).
//!
//! Behaviour, chosen to match what Consul users expect:
//! - passing instances (`ServiceEntry::endpoints`) and warning ones (`ServiceEntry::warning`)
//!   are served, as Consul's `only_passing = false` default does; `only_passing` drops the
//!   warning ones; a known service with no such instance is NXDOMAIN, like an unknown name,
//!   with the zone's SOA in the authority section and a short negative TTL;
//! - a node whose agent is suspect or down keeps its instances in the table, so in the
//!   answers, until it leaves or is reaped (services outlive their agent: see
//!   `crate::publish`); `<node>.node.<domain>` answers only for an alive or suspect agent;
//! - an existing name asked for another record type is NOERROR with no answers (and the SOA);
//! - names outside the domain are REFUSED (no recursion), and only class IN is served;
//! - answers are shuffled per query so plain A clients spread over instances;
//! - names are matched without case; table names that are not DNS labels are never served.

mod handler;
mod resolve;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

use crate::inherit::SocketRole;
use crate::table::ServiceTable;
use handler::{Counters, Handler};
use resolve::Zone;

/// How long a TCP client may stay idle before its connection is closed.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection before the connection is back-pressured.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How often to retry when port 0 gave a UDP port whose TCP twin is taken.
const PORT_ZERO_ATTEMPTS: usize = 16;

/// Where and how the DNS server answers; the agent fills it from `--dns-addr` and its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// UDP and TCP listen address; port 0 picks a free port (see [`DnsServer::local_addr`]).
    pub addr: SocketAddr,
    /// The zone served, e.g. `strata` for `web.service.strata`.
    pub domain: String,
    /// TTL of service answers (A, AAAA, SRV): short, since instances come and go.
    pub service_ttl: Duration,
    /// TTL of node answers and of SRV targets' addresses.
    pub node_ttl: Duration,
    /// How long resolvers may cache NXDOMAIN and empty answers (the SOA minimum).
    pub negative_ttl: Duration,
    /// Answer only passing instances; by default warning ones are answered too (Consul's
    /// `only_passing`, false by default: a warning instance still serves).
    pub only_passing: bool,
    /// This agent's node name: the apex's NS is `<node_name>.node.<domain>`, with the node's
    /// address as glue (`ns.<domain>`, without glue, when it is not a DNS label).
    pub node_name: String,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 7753)),
            domain: "strata".into(),
            service_ttl: Duration::from_secs(5),
            node_ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            only_passing: false,
            node_name: String::new(),
        }
    }
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configured domain cannot be a DNS zone.
    #[error("invalid DNS domain {domain:?}: {reason}")]
    InvalidDomain { domain: String, reason: String },
    /// The UDP socket could not be bound (address in use, or not a local address).
    #[error("cannot bind DNS UDP socket on {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The TCP listener could not be bound on the same address as the UDP socket.
    #[error("cannot bind DNS TCP listener on {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Query counters since start, for the agent's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Every request that reached the resolver, whatever its outcome.
    pub queries: u64,
    /// Answers with NXDOMAIN (unknown names, services without passing instances).
    pub nxdomain: u64,
    /// Answers with REFUSED (names outside the domain, other classes).
    pub refused: u64,
}

/// A running DNS server; dropping it stops it abruptly, [`DnsServer::shutdown`] stops it cleanly.
pub struct DnsServer {
    server: Server<Handler>,
    local_addr: SocketAddr,
    counters: Arc<Counters>,
}

/// Binds UDP and TCP on `config.addr` (the same port for both) and starts answering from the
/// latest table on `table`.
pub async fn start(
    config: DnsConfig,
    table: watch::Receiver<Arc<ServiceTable>>,
) -> Result<DnsServer, DnsError> {
    let zone = Zone::new(&config)?;
    let (udp, tcp, local_addr) = bind(config.addr).await?;
    let counters = Arc::new(Counters::default());
    let mut server = Server::new(Handler::new(zone, table, counters.clone()));
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_BUFFER);
    tracing::info!(addr = %local_addr, domain = %config.domain, "DNS server listening (UDP and TCP)");
    Ok(DnsServer {
        server,
        local_addr,
        counters,
    })
}

/// Binds UDP first, then TCP on the port UDP got. With port 0 the TCP twin of a free UDP port
/// may be taken, so that case retries with a fresh port.
/// Sockets inherited from a predecessor agent come first (see [`crate::inherit`]).
async fn bind(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    if let Some(udp) = crate::inherit::take_udp(SocketRole::Dns, addr) {
        let udp = UdpSocket::from_std(udp).map_err(|source| DnsError::BindUdp { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| DnsError::BindUdp { addr, source })?;
        let tcp = match crate::inherit::take_tcp(SocketRole::Dns, bound) {
            Some(tcp) => TcpListener::from_std(tcp),
            None => TcpListener::bind(bound).await,
        }
        .map_err(|source| DnsError::BindTcp {
            addr: bound,
            source,
        })?;
        return Ok((udp, tcp, bound));
    }
    let mut attempt = 1;
    loop {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::BindUdp { addr, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| DnsError::BindUdp { addr, source })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(error) if addr.port() == 0 && attempt < PORT_ZERO_ATTEMPTS => {
                tracing::debug!(addr = %bound, %error, "TCP twin of the UDP port is taken; retrying");
                attempt += 1;
            }
            Err(source) => {
                return Err(DnsError::BindTcp {
                    addr: bound,
                    source,
                });
            }
        }
    }
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("local_addr", &self.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// The bound address (UDP and TCP share it); tells callers the port when they asked for 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Counters since start, for `/metrics`.
    pub fn stats(&self) -> DnsStats {
        self.counters.snapshot()
    }

    /// Stops accepting queries and waits for the listener tasks to end.
    pub async fn shutdown(mut self) {
        if let Err(error) = self.server.shutdown_gracefully().await {
            tracing::warn!(addr = %self.local_addr, %error, "DNS server ended with an error");
        }
        tracing::info!(addr = %self.local_addr, "DNS server stopped");
    }
}
