//! Sockets a process inherits already bound and listening, so that a restarted or upgraded
//! agent never closes a port its clients use: from its predecessor (`strata-agent upgrade`)
//! or from systemd's file-descriptor store, both described the systemd way (`LISTEN_FDS`,
//! `LISTEN_FDNAMES`, optionally `LISTEN_PID`; the fds start at 3).
//!
//! Every binding point (gRPC, HTTP, gossip, DNS, the balancer's frontends) asks here first
//! ([`take_tcp`], [`take_udp`]) and binds only when nothing matches. The set is process-wide,
//! like the environment it comes from: it is installed once at start ([`install`]) and each
//! socket is handed out at most once.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

/// The first inherited descriptor, as with systemd's socket activation.
pub const LISTEN_FDS_START: RawFd = 3;
/// The most descriptors one handover may describe: more is a broken environment.
const MAX_FDS: usize = 16 * 1024;

/// The role of an inherited socket: its `LISTEN_FDNAMES` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketRole {
    /// The agent's gRPC API (TCP).
    Grpc,
    /// The agent's HTTP endpoint: /metrics, /health (TCP).
    Http,
    /// Gossip (UDP packets and TCP streams on one port).
    Gossip,
    /// DNS (UDP and TCP on one port).
    Dns,
    /// A balancer frontend port (TCP), matched by its exact address.
    Frontend,
}

impl SocketRole {
    /// Every role, for parsing.
    pub const ALL: [SocketRole; 5] = [
        SocketRole::Grpc,
        SocketRole::Http,
        SocketRole::Gossip,
        SocketRole::Dns,
        SocketRole::Frontend,
    ];

    /// The name used in `LISTEN_FDNAMES` (and systemd's `FDNAME=`).
    pub fn as_str(self) -> &'static str {
        match self {
            SocketRole::Grpc => "grpc",
            SocketRole::Http => "http",
            SocketRole::Gossip => "gossip",
            SocketRole::Dns => "dns",
            SocketRole::Frontend => "frontend",
        }
    }

    /// The role named `name`, if it is one. A frontend may also be named by its port
    /// (`frontend-8080`), as the agent names it in systemd's fd store, where a name is how
    /// one stored socket is removed again.
    pub fn parse(name: &str) -> Option<SocketRole> {
        SocketRole::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .or_else(|| {
                name.strip_prefix("frontend-")
                    .filter(|port| port.parse::<u16>().is_ok())
                    .map(|_| SocketRole::Frontend)
            })
    }
}

/// One descriptor as the environment describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdDescription {
    /// The descriptor number.
    pub fd: RawFd,
    /// Its `LISTEN_FDNAMES` entry (`unknown` when none was given, as systemd does).
    pub name: String,
}

/// Why the inherited-socket environment cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InheritError {
    /// `LISTEN_FDS` is not a count.
    #[error("LISTEN_FDS={0:?} is not a number of descriptors (0 to {MAX_FDS})")]
    BadCount(String),
    /// `LISTEN_PID` is not a process id.
    #[error("LISTEN_PID={0:?} is not a process id")]
    BadPid(String),
    /// `LISTEN_FDNAMES` names a different number of descriptors than `LISTEN_FDS`.
    #[error("LISTEN_FDNAMES names {names} descriptors but LISTEN_FDS says {count}")]
    NamesMismatch { count: usize, names: usize },
}

/// Reads the systemd-style description: `pid`, `fds` and `names` are the values of
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`. Without `LISTEN_FDS` nothing is
/// inherited; a `LISTEN_PID` naming another process means the descriptors are not ours.
/// `LISTEN_PID` may be absent: a process handing over to the one it spawns cannot know the
/// child's pid before it runs.
pub fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Vec<FdDescription>, InheritError> {
    let Some(fds) = fds else {
        return Ok(Vec::new());
    };
    if let Some(pid) = pid {
        let pid: u32 = pid
            .trim()
            .parse()
            .map_err(|_| InheritError::BadPid(pid.to_string()))?;
        if pid != own_pid {
            return Ok(Vec::new());
        }
    }
    let count: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| *n <= MAX_FDS)
        .ok_or_else(|| InheritError::BadCount(fds.to_string()))?;
    let names: Vec<String> = match names {
        Some(names) if count > 0 => names.split(':').map(str::to_string).collect(),
        _ => vec!["unknown".to_string(); count],
    };
    if names.len() != count {
        return Err(InheritError::NamesMismatch {
            count,
            names: names.len(),
        });
    }
    Ok(names
        .into_iter()
        .enumerate()
        .map(|(i, name)| FdDescription {
            fd: LISTEN_FDS_START + i as RawFd,
            name,
        })
        .collect())
}

/// Whether a socket bound at `have` can serve where `want` is configured: the same address,
/// where a configured port 0 ("any free port") takes whatever port the socket has.
pub fn address_fits(want: SocketAddr, have: SocketAddr) -> bool {
    want.ip() == have.ip() && (want.port() == 0 || want.port() == have.port())
}

/// An inherited socket, checked: what it is and where it is bound.
#[derive(Debug)]
enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

#[derive(Debug)]
struct Entry {
    role: SocketRole,
    addr: SocketAddr,
    socket: Socket,
}

/// The inherited sockets not yet taken.
#[derive(Debug, Default)]
pub struct InheritedSockets {
    entries: Vec<Entry>,
}

impl InheritedSockets {
    /// Takes ownership of the described descriptors. Each one must be an IPv4/IPv6 socket:
    /// TCP and listening, or UDP. A descriptor that is not, or whose name is not a
    /// [`SocketRole`], is closed and reported in the returned list of problems.
    ///
    /// # Safety
    /// Every `fd` must be an open descriptor this process owns and nothing else uses: the
    /// caller got them from its parent through the environment, as described.
    pub unsafe fn adopt(descriptions: &[FdDescription]) -> (InheritedSockets, Vec<String>) {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for description in descriptions {
            // SAFETY: the caller promises the descriptor is open and ours alone.
            let fd = unsafe { OwnedFd::from_raw_fd(description.fd) };
            match check(fd, &description.name) {
                Ok(entry) => entries.push(entry),
                Err(problem) => problems.push(format!(
                    "inherited descriptor {} ({}): {problem}",
                    description.fd, description.name
                )),
            }
        }
        (InheritedSockets { entries }, problems)
    }

    /// What is left, by role and address.
    pub fn remaining(&self) -> Vec<(SocketRole, SocketAddr)> {
        self.entries.iter().map(|e| (e.role, e.addr)).collect()
    }

    fn take(&mut self, role: SocketRole, want: SocketAddr, udp: bool) -> Option<Socket> {
        let fits = |e: &Entry| {
            e.role == role
                && matches!(e.socket, Socket::Udp(_)) == udp
                && if role == SocketRole::Frontend {
                    e.addr == want
                } else {
                    address_fits(want, e.addr)
                }
        };
        let index = self.entries.iter().position(fits)?;
        Some(self.entries.swap_remove(index).socket)
    }
}

fn check(fd: OwnedFd, name: &str) -> Result<Entry, String> {
    use rustix::net::{SocketType, sockopt};
    let role =
        SocketRole::parse(name).ok_or_else(|| "not a socket name Strata uses".to_string())?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).map_err(|e| e.to_string())?;
    let addr = rustix::net::getsockname(fd.as_fd())
        .map_err(|e| format!("not a socket: {e}"))
        .and_then(|a| SocketAddr::try_from(a).map_err(|_| "not an IP socket".to_string()))?;
    let kind = sockopt::socket_type(&fd).map_err(|e| e.to_string())?;
    let socket = if kind == SocketType::STREAM {
        if !sockopt::socket_acceptconn(&fd).map_err(|e| e.to_string())? {
            return Err("a TCP socket that is not listening".into());
        }
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        Socket::Tcp(listener)
    } else if kind == SocketType::DGRAM {
        let socket = UdpSocket::from(fd);
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        Socket::Udp(socket)
    } else {
        return Err("neither TCP nor UDP".into());
    };
    Ok(Entry { role, addr, socket })
}

static INHERITED: Mutex<Option<InheritedSockets>> = Mutex::new(None);

fn with_inherited<T>(f: impl FnOnce(&mut InheritedSockets) -> Option<T>) -> Option<T> {
    INHERITED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .and_then(f)
}

/// Makes `sockets` the process's inherited set; binding points take from it from now on.
pub fn install(sockets: InheritedSockets) {
    *INHERITED.lock().unwrap_or_else(PoisonError::into_inner) = Some(sockets);
}

/// An inherited TCP listener for `role` that fits `addr` (non-blocking, close-on-exec).
pub fn take_tcp(role: SocketRole, addr: SocketAddr) -> Option<TcpListener> {
    let taken = with_inherited(|s| match s.take(role, addr, false)? {
        Socket::Tcp(l) => Some(l),
        Socket::Udp(_) => None,
    });
    if taken.is_some() {
        tracing::info!(role = role.as_str(), %addr, "using an inherited listening socket");
    }
    taken
}

/// An inherited UDP socket for `role` that fits `addr` (non-blocking, close-on-exec).
pub fn take_udp(role: SocketRole, addr: SocketAddr) -> Option<UdpSocket> {
    let taken = with_inherited(|s| match s.take(role, addr, true)? {
        Socket::Udp(u) => Some(u),
        Socket::Tcp(_) => None,
    });
    if taken.is_some() {
        tracing::info!(role = role.as_str(), %addr, "using an inherited UDP socket");
    }
    taken
}

/// The inherited sockets nobody took yet.
pub fn remaining() -> Vec<(SocketRole, SocketAddr)> {
    with_inherited(|s| Some(s.remaining())).unwrap_or_default()
}

/// Closes every inherited socket nobody took (a frontend whose service is gone); returns
/// what was closed.
pub fn close_remaining() -> Vec<(SocketRole, SocketAddr)> {
    let closed = with_inherited(|s| Some(std::mem::take(&mut s.entries))).unwrap_or_default();
    closed.into_iter().map(|e| (e.role, e.addr)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn nothing_is_inherited_without_listen_fds() {
        assert_eq!(parse_listen_env(None, None, None, 7), Ok(vec![]));
        assert_eq!(
            parse_listen_env(Some("7"), None, Some("grpc"), 7),
            Ok(vec![])
        );
    }

    #[test]
    fn fds_start_at_three_and_take_their_names_in_order() {
        let parsed = parse_listen_env(Some("42"), Some("3"), Some("grpc:http:frontend"), 42);
        let expected = [(3, "grpc"), (4, "http"), (5, "frontend")]
            .map(|(fd, name)| FdDescription {
                fd,
                name: name.into(),
            })
            .to_vec();
        assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn a_missing_pid_is_accepted_and_another_pid_means_not_ours() {
        let ours = parse_listen_env(None, Some("1"), Some("dns"), 42).unwrap();
        assert_eq!(ours.len(), 1);
        assert_eq!(
            parse_listen_env(Some("41"), Some("1"), Some("dns"), 42),
            Ok(vec![])
        );
    }

    #[test]
    fn without_names_every_fd_is_unknown() {
        let parsed = parse_listen_env(None, Some("2"), None, 1).unwrap();
        assert!(parsed.iter().all(|d| d.name == "unknown"));
        assert_eq!(parse_listen_env(None, Some("0"), Some(""), 1), Ok(vec![]));
    }

    #[test]
    fn bad_values_are_refused_with_the_variable_named() {
        let err = parse_listen_env(None, Some("many"), None, 1).unwrap_err();
        assert!(err.to_string().starts_with("LISTEN_FDS=\"many\""), "{err}");
        let err = parse_listen_env(None, Some("99999999"), None, 1).unwrap_err();
        assert!(matches!(err, InheritError::BadCount(_)));
        let err = parse_listen_env(Some("me"), Some("1"), None, 1).unwrap_err();
        assert!(err.to_string().starts_with("LISTEN_PID="), "{err}");
        let err = parse_listen_env(None, Some("2"), Some("grpc"), 1).unwrap_err();
        assert_eq!(err, InheritError::NamesMismatch { count: 2, names: 1 });
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in SocketRole::ALL {
            assert_eq!(SocketRole::parse(role.as_str()), Some(role));
        }
        assert_eq!(SocketRole::parse("unknown"), None);
        assert_eq!(
            SocketRole::parse("frontend-8080"),
            Some(SocketRole::Frontend)
        );
        assert_eq!(SocketRole::parse("frontend-http"), None);
        assert_eq!(SocketRole::parse("grpc-1"), None);
    }

    #[test]
    fn a_configured_port_zero_fits_any_port_on_the_same_ip() {
        assert!(address_fits(addr("127.0.0.1:0"), addr("127.0.0.1:4000")));
        assert!(address_fits(addr("127.0.0.1:4000"), addr("127.0.0.1:4000")));
        assert!(!address_fits(
            addr("127.0.0.1:4001"),
            addr("127.0.0.1:4000")
        ));
        assert!(!address_fits(addr("127.0.0.2:0"), addr("127.0.0.1:4000")));
    }

    #[test]
    fn adopted_sockets_are_taken_once_by_role_and_address() {
        use std::os::fd::IntoRawFd;
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let udp = UdpSocket::bind(tcp_addr).unwrap();
        let frontend = TcpListener::bind("127.0.0.1:0").unwrap();
        let frontend_addr = frontend.local_addr().unwrap();
        let connected = std::net::TcpStream::connect(frontend_addr).unwrap();
        let descriptions = [
            (tcp.into_raw_fd(), "gossip"),
            (udp.into_raw_fd(), "gossip"),
            (frontend.into_raw_fd(), "frontend"),
            (connected.into_raw_fd(), "grpc"),
        ]
        .map(|(fd, name)| FdDescription {
            fd,
            name: name.into(),
        });
        let (mut sockets, problems) = unsafe { InheritedSockets::adopt(&descriptions) };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("not listening"), "{problems:?}");
        assert_eq!(sockets.remaining().len(), 3);
        // A frontend is matched by its exact address, never by port 0.
        let any = SocketAddr::new(frontend_addr.ip(), 0);
        assert!(sockets.take(SocketRole::Frontend, any, false).is_none());
        assert!(
            sockets
                .take(SocketRole::Frontend, frontend_addr, false)
                .is_some()
        );
        assert!(
            sockets
                .take(SocketRole::Frontend, frontend_addr, false)
                .is_none()
        );
        let Some(Socket::Udp(udp)) = sockets.take(SocketRole::Gossip, any, true) else {
            panic!("the gossip UDP socket")
        };
        assert_eq!(udp.local_addr().unwrap(), tcp_addr);
        let Some(Socket::Tcp(tcp)) = sockets.take(SocketRole::Gossip, tcp_addr, false) else {
            panic!("the gossip TCP listener")
        };
        assert_eq!(tcp.local_addr().unwrap(), tcp_addr);
        assert!(sockets.remaining().is_empty());
    }
}
