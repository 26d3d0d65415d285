//! Handing the running agent over to a new process without closing a port (`strata-agent
//! upgrade`, SIGUSR2), the way nginx's binary upgrade and HAProxy's seamless reload work.
//!
//! The running agent (the predecessor) finds the sockets it serves on, spawns the new binary
//! with them as descriptors 3.. described by `LISTEN_FDS`/`LISTEN_FDNAMES` (see
//! [`strata_registry::inherit`]), and talks to it over a socketpair named by
//! `STRATA_HANDOFF_FD`, one line per step:
//!
//! 1. successor → `prepared`: its config, TLS files and shim are good (or `failed REASON`,
//!    or it exits: the predecessor carries on as if nothing happened);
//! 2. predecessor → `go`: it stopped its API servers (connections wait in the backlog),
//!    gossip (without leaving), sampling and supervision (services keep running), closed
//!    the journal and released the data-dir lock;
//! 3. successor → `ready PID`: it took the data dir, re-adopted the services and accepts on
//!    every inherited socket. The predecessor closes its frontends, drains its open proxied
//!    connections (bounded) and exits.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use strata_registry::inherit::{self, LISTEN_FDS_START, SocketRole};

/// Names the descriptor of the handoff channel in the successor.
pub const HANDOFF_FD_ENV: &str = "STRATA_HANDOFF_FD";

/// One step of the handoff conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The successor checked everything it can check before taking over.
    Prepared,
    /// The predecessor let go of the data dir; the successor may take it.
    Go,
    /// The successor serves; its process id.
    Ready(u32),
    /// The successor cannot start, and why.
    Failed(String),
}

impl Message {
    /// One line, newline included; a reason's own line breaks become "; ".
    pub fn encode(&self) -> String {
        match self {
            Message::Prepared => "prepared\n".into(),
            Message::Go => "go\n".into(),
            Message::Ready(pid) => format!("ready {pid}\n"),
            Message::Failed(reason) => format!("failed {}\n", reason.replace('\n', "; ")),
        }
    }

    /// Reads one line (without its newline); `None` when it is no message.
    pub fn parse(line: &str) -> Option<Message> {
        let line = line.trim_end_matches(['\n', '\r']);
        match line.split_once(' ') {
            None if line == "prepared" => Some(Message::Prepared),
            None if line == "go" => Some(Message::Go),
            Some(("ready", pid)) => pid.parse().ok().map(Message::Ready),
            Some(("failed", reason)) => Some(Message::Failed(reason.to_string())),
            _ => None,
        }
    }
}

/// The addresses the running agent serves on, to tell its own sockets apart.
#[derive(Debug, Clone, Default)]
pub struct ServedAddrs {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub gossip: Vec<SocketAddr>,
    pub dns: Option<SocketAddr>,
}

/// What a descriptor of this process is, as far as the handoff cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A TCP socket; `listening` when it accepts connections.
    Tcp { listening: bool },
    /// A UDP socket.
    Udp,
}

/// The role of one of this process's sockets, or `None` for sockets that are not handed
/// over (connections, client sockets): the gRPC, HTTP, gossip and DNS sockets by their
/// address, and every other listening TCP socket as a balancer frontend.
pub fn classify(kind: SocketKind, addr: SocketAddr, served: &ServedAddrs) -> Option<SocketRole> {
    let is = |a: Option<SocketAddr>| a == Some(addr);
    match kind {
        SocketKind::Tcp { listening: false } => None,
        SocketKind::Tcp { listening: true } => Some(if is(served.grpc) {
            SocketRole::Grpc
        } else if is(served.http) {
            SocketRole::Http
        } else if served.gossip.contains(&addr) {
            SocketRole::Gossip
        } else if is(served.dns) {
            SocketRole::Dns
        } else {
            SocketRole::Frontend
        }),
        SocketKind::Udp if served.gossip.contains(&addr) => Some(SocketRole::Gossip),
        SocketKind::Udp if is(served.dns) => Some(SocketRole::Dns),
        SocketKind::Udp => None,
    }
}

/// Duplicates of every socket this process serves on, with their roles (close-on-exec, so
/// no service started meanwhile inherits them). Read from `/proc/self/fd`.
pub fn served_sockets(served: &ServedAddrs) -> io::Result<Vec<(SocketRole, OwnedFd)>> {
    use rustix::net::{SocketType, sockopt};
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        // SAFETY: borrowed only to duplicate it; a descriptor closed meanwhile makes the
        // duplication fail, and one reused meanwhile is checked like any other.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let Ok(dup) = rustix::io::fcntl_dupfd_cloexec(borrowed, 0) else {
            continue;
        };
        let Ok(addr) = rustix::net::getsockname(&dup)
            .map_err(drop)
            .and_then(|a| SocketAddr::try_from(a).map_err(drop))
        else {
            continue;
        };
        let kind = match sockopt::socket_type(&dup) {
            Ok(SocketType::STREAM) => SocketKind::Tcp {
                listening: sockopt::socket_acceptconn(&dup).unwrap_or(false),
            },
            Ok(SocketType::DGRAM) => SocketKind::Udp,
            _ => continue,
        };
        if let Some(role) = classify(kind, addr, served)
            && seen.insert((matches!(kind, SocketKind::Udp), addr))
        {
            found.push((role, dup));
        }
    }
    Ok(found)
}

/// Why a handoff did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("cannot find the sockets to hand over: {0}")]
    Sockets(io::Error),
    #[error("cannot start {}: {source}", binary.display())]
    Spawn { binary: PathBuf, source: io::Error },
    #[error("the new agent ({}) failed: {reason}", binary.display())]
    Failed { binary: PathBuf, reason: String },
    #[error("the new agent ({}) exited ({status}) before it was {step}", binary.display())]
    Exited {
        binary: PathBuf,
        status: String,
        step: &'static str,
    },
    #[error("the new agent ({}) was not {step} within {}", binary.display(), humantime::format_duration(*waited))]
    Timeout {
        binary: PathBuf,
        step: &'static str,
        waited: Duration,
    },
    #[error("the handoff channel to the new agent broke: {0}")]
    Channel(io::Error),
}

/// The new agent this one hands over to, from the predecessor's side.
pub struct Successor {
    binary: PathBuf,
    child: Child,
    channel: tokio::io::Lines<tokio::io::BufReader<tokio::net::UnixStream>>,
}

/// Starts `binary ARGS` with `sockets` as descriptors 3.., named in `LISTEN_FDNAMES`, and the
/// handoff channel after them; stdout and stderr are this process's.
pub fn spawn(
    binary: &Path,
    args: &[OsString],
    sockets: Vec<(SocketRole, OwnedFd)>,
) -> Result<Successor, HandoffError> {
    let spawn_error = |source| HandoffError::Spawn {
        binary: binary.to_path_buf(),
        source,
    };
    let (ours, theirs) = UnixStream::pair().map_err(spawn_error)?;
    let names: Vec<&str> = sockets.iter().map(|(role, _)| role.as_str()).collect();
    let mut fds: Vec<OwnedFd> = sockets.into_iter().map(|(_, fd)| fd).collect();
    fds.push(OwnedFd::from(theirs));
    let sources: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let channel_fd = LISTEN_FDS_START + names.len() as RawFd;
    let mut command = Command::new(binary);
    command
        .args(args)
        .env("LISTEN_FDS", names.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID")
        .env(HANDOFF_FD_ENV, channel_fd.to_string());
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2, close) on
    // descriptors this process owns; nothing is allocated.
    let mut copies = vec![0; sources.len()];
    unsafe {
        command.pre_exec(move || place_descriptors(&sources, &mut copies));
    }
    let child = command.spawn().map_err(spawn_error)?;
    // The child has its copies; ours close here, so its exit closes the channel.
    drop(fds);
    ours.set_nonblocking(true).map_err(HandoffError::Channel)?;
    let stream = tokio::net::UnixStream::from_std(ours).map_err(HandoffError::Channel)?;
    use tokio::io::AsyncBufReadExt;
    Ok(Successor {
        binary: binary.to_path_buf(),
        child,
        channel: tokio::io::BufReader::new(stream).lines(),
    })
}

/// In the forked child: moves `sources` to descriptors 3, 4, ... (without close-on-exec).
/// Every source is first copied above the target range (into `copies`, allocated before the
/// fork: nothing may allocate here), so that no move overwrites a source still to be moved.
fn place_descriptors(sources: &[RawFd], copies: &mut [RawFd]) -> io::Result<()> {
    let above = LISTEN_FDS_START + sources.len() as RawFd;
    for (copy, &source) in copies.iter_mut().zip(sources) {
        // SAFETY: a plain descriptor call on a descriptor the parent owns.
        *copy = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above) };
        if *copy < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for (target, &copy) in (LISTEN_FDS_START..).zip(copies.iter()) {
        // SAFETY: as above; dup2 clears close-on-exec on the target.
        if unsafe { libc::dup2(copy, target) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the copy is ours and no longer needed.
        unsafe { libc::close(copy) };
    }
    Ok(())
}

impl Successor {
    /// The new agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn expect(
        &mut self,
        step: &'static str,
        timeout: Duration,
    ) -> Result<Message, HandoffError> {
        let line = match tokio::time::timeout(timeout, self.channel.next_line()).await {
            Err(_) => {
                return Err(HandoffError::Timeout {
                    binary: self.binary.clone(),
                    step,
                    waited: timeout,
                });
            }
            Ok(Err(e)) => return Err(HandoffError::Channel(e)),
            Ok(Ok(line)) => line,
        };
        match line.as_deref().and_then(Message::parse) {
            Some(Message::Failed(reason)) => Err(HandoffError::Failed {
                binary: self.binary.clone(),
                reason,
            }),
            Some(message) => Ok(message),
            None => Err(HandoffError::Exited {
                binary: self.binary.clone(),
                status: self.exit_status().await,
                step,
            }),
        }
    }

    /// How the child ended, once it did (it closed the channel, so it is ending).
    async fn exit_status(&mut self) -> String {
        for _ in 0..50 {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return format!("status unknown: {e}"),
            }
        }
        "it closed the handoff channel".into()
    }

    /// Waits until the new agent has checked its config, TLS files and shim.
    pub async fn prepared(&mut self, timeout: Duration) -> Result<(), HandoffError> {
        match self.expect("prepared", timeout).await? {
            Message::Prepared => Ok(()),
            other => Err(HandoffError::Failed {
                binary: self.binary.clone(),
                reason: format!("unexpected message {other:?}"),
            }),
        }
    }

    /// Tells the new agent that the data dir is free.
    pub async fn go(&mut self) -> Result<(), HandoffError> {
        use tokio::io::AsyncWriteExt;
        self.channel
            .get_mut()
            .get_mut()
            .write_all(Message::Go.encode().as_bytes())
            .await
            .map_err(HandoffError::Channel)
    }

    /// Waits until the new agent serves; returns its pid.
    pub async fn ready(&mut self, timeout: Duration) -> Result<u32, HandoffError> {
        match self.expect("ready", timeout).await? {
            Message::Ready(pid) => Ok(pid),
            other => Err(HandoffError::Failed {
                binary: self.binary.clone(),
                reason: format!("unexpected message {other:?}"),
            }),
        }
    }

    /// Stops the new agent (by its pid: this process started it) and reaps it, after a
    /// failed handoff.
    pub fn abandon(mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The agent this one takes over from, from the successor's side.
#[derive(Debug)]
pub struct Predecessor {
    channel: UnixStream,
}

impl Predecessor {
    /// The handoff channel named by `STRATA_HANDOFF_FD`, if this process was started by a
    /// handoff. Call once, before any thread starts (it is read from the environment).
    ///
    /// # Safety
    /// The descriptor named in the environment must be open and owned by nothing else.
    pub unsafe fn from_env() -> Option<Result<Predecessor, String>> {
        let value = std::env::var(HANDOFF_FD_ENV).ok()?;
        let fd: RawFd = match value.parse() {
            Ok(fd) if fd >= LISTEN_FDS_START => fd,
            _ => {
                return Some(Err(format!(
                    "{HANDOFF_FD_ENV}={value:?} is not a descriptor"
                )));
            }
        };
        // SAFETY: the caller vouches for the descriptor.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        if let Err(e) = rustix::io::fcntl_setfd(owned.as_fd(), rustix::io::FdFlags::CLOEXEC) {
            return Some(Err(format!("{HANDOFF_FD_ENV}={fd}: {e}")));
        }
        Some(Ok(Predecessor {
            channel: UnixStream::from(owned),
        }))
    }

    fn send(&mut self, message: &Message) -> io::Result<()> {
        self.channel.write_all(message.encode().as_bytes())
    }

    /// Says the checks passed, then waits (blocking, up to `timeout`) until the predecessor
    /// has let go of the data dir.
    pub fn prepared_then_wait_for_go(&mut self, timeout: Duration) -> io::Result<()> {
        self.send(&Message::Prepared)?;
        self.channel.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        BufReader::new(&self.channel).read_line(&mut line)?;
        match Message::parse(&line) {
            Some(Message::Go) => Ok(()),
            _ if line.is_empty() => Err(io::Error::other(
                "the previous agent closed the handoff channel before letting go of the data dir",
            )),
            _ => Err(io::Error::other(format!(
                "unexpected handoff message {line:?}"
            ))),
        }
    }

    /// Says this agent serves.
    pub fn ready(mut self) {
        if let Err(e) = self.send(&Message::Ready(std::process::id())) {
            tracing::warn!(error = %e, "cannot tell the previous agent that this one is ready");
        }
    }

    /// Says this agent cannot start, and why.
    pub fn failed(mut self, reason: &str) {
        let _ = self.send(&Message::Failed(reason.to_string()));
    }
}

/// Reads the inherited sockets and the handoff channel from the environment and removes
/// those variables, so that no service started later sees them. Returns the channel, if
/// any, and the problems found (logged by the caller once logging runs).
///
/// # Safety
/// Must run before any other thread starts (it changes the environment), and the
/// descriptors the environment names must be this process's alone, as its parent (a
/// predecessor agent, or systemd) promised by setting the variables.
pub unsafe fn receive_from_env() -> (Option<Predecessor>, Vec<String>) {
    let mut problems = Vec::new();
    let var = |name| std::env::var(name).ok();
    match inherit::parse_listen_env(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    ) {
        Ok(descriptions) if !descriptions.is_empty() => {
            // SAFETY: the caller vouches for the descriptors.
            let (sockets, mut found) = unsafe { inherit::InheritedSockets::adopt(&descriptions) };
            problems.append(&mut found);
            inherit::install(sockets);
        }
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    // SAFETY: as the caller promises.
    let predecessor = match unsafe { Predecessor::from_env() } {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            problems.push(e);
            None
        }
        None => None,
    };
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", HANDOFF_FD_ENV] {
        // SAFETY: no other thread runs yet (the caller's promise).
        unsafe { std::env::remove_var(name) };
    }
    (predecessor, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn messages_round_trip_and_reasons_stay_on_one_line() {
        for message in [
            Message::Prepared,
            Message::Go,
            Message::Ready(4242),
            Message::Failed("config file /x: line 2\nbad key".into()),
        ] {
            let line = message.encode();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            let back = Message::parse(&line).unwrap();
            match (&message, back) {
                (Message::Failed(_), Message::Failed(reason)) => {
                    assert_eq!(reason, "config file /x: line 2; bad key")
                }
                (m, back) => assert_eq!(*m, back),
            }
        }
        assert_eq!(Message::parse("ready soon"), None);
        assert_eq!(Message::parse(""), None);
        assert_eq!(Message::parse("hello"), None);
    }

    #[test]
    fn own_sockets_are_named_by_address_and_other_listeners_are_frontends() {
        let served = ServedAddrs {
            grpc: Some(addr("127.0.0.1:7700")),
            http: Some(addr("127.0.0.1:7702")),
            gossip: vec![addr("127.0.0.1:7701")],
            dns: Some(addr("127.0.0.1:7753")),
        };
        let listening = SocketKind::Tcp { listening: true };
        let cases = [
            (listening, "127.0.0.1:7700", Some(SocketRole::Grpc)),
            (listening, "127.0.0.1:7702", Some(SocketRole::Http)),
            (listening, "127.0.0.1:7701", Some(SocketRole::Gossip)),
            (SocketKind::Udp, "127.0.0.1:7701", Some(SocketRole::Gossip)),
            (listening, "127.0.0.1:7753", Some(SocketRole::Dns)),
            (SocketKind::Udp, "127.0.0.1:7753", Some(SocketRole::Dns)),
            (listening, "127.0.1.2:8080", Some(SocketRole::Frontend)),
            // A proxied or API connection, and a client UDP socket, stay behind.
            (SocketKind::Tcp { listening: false }, "127.0.1.2:8080", None),
            (SocketKind::Udp, "127.0.0.1:40000", None),
        ];
        for (kind, a, role) in cases {
            assert_eq!(classify(kind, addr(a), &served), role, "{kind:?} {a}");
        }
    }

    #[test]
    fn the_sockets_this_process_serves_on_are_found() {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let frontend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(frontend.local_addr().unwrap()).unwrap();
        let served = ServedAddrs {
            grpc: Some(grpc.local_addr().unwrap()),
            dns: Some(dns.local_addr().unwrap()),
            ..ServedAddrs::default()
        };
        let found = served_sockets(&served).unwrap();
        let addr_of =
            |fd: &OwnedFd| SocketAddr::try_from(rustix::net::getsockname(fd).unwrap()).unwrap();
        let has = |role, a| found.iter().any(|(r, fd)| *r == role && addr_of(fd) == a);
        assert!(has(SocketRole::Grpc, grpc.local_addr().unwrap()));
        assert!(has(SocketRole::Dns, dns.local_addr().unwrap()));
        assert!(has(SocketRole::Frontend, frontend.local_addr().unwrap()));
        assert!(!has(SocketRole::Frontend, client.local_addr().unwrap()));
    }
}
