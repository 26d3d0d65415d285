//! A userspace impairing relay for one node's gossip port, for machines whose kernel has no
//! `netem` qdisc. It listens on one address (UDP and TCP on the same port, as gossip does)
//! and forwards to the node's real gossip address:
//!
//! - each UDP datagram is dropped with probability `loss`, otherwise sent on after `delay`;
//!   delayed datagrams wait in a bounded queue (a full queue drops, and counts it);
//! - each TCP connection is relayed to the target, every chunk delayed by `delay` in both
//!   directions (no loss: TCP would retransmit it anyway).
//!
//! Impairment is switched on and off at run time ([`Relay::set_impaired`]); off, everything
//! passes through at once. Dropping the relay stops it: every thread is joined and every
//! socket closed. Datagrams are sent on from a socket of their own, so anything the target
//! sends back to the source address goes nowhere (gossip replies to advertised addresses).

use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A datagram or chunk with the moment it is due.
type Due = (Instant, Vec<u8>);

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Chunks of one TCP direction buffered in the relay before it stops reading.
const TCP_CHUNKS: usize = 64;

/// What the relay does to traffic while impaired.
#[derive(Debug, Clone)]
pub struct ImpairConfig {
    /// Probability of dropping a UDP datagram, 0.0 to 1.0.
    pub loss: f64,
    /// Added to every UDP datagram and every TCP chunk, each direction.
    pub delay: Duration,
    /// Delayed datagrams held at once; more are dropped (and counted as overflow).
    pub max_queue: usize,
    /// Seed of the loss decisions, so a run can be repeated.
    pub seed: u64,
    /// Whether the relay starts impaired (else it passes through until switched on).
    pub impaired: bool,
}

impl Default for ImpairConfig {
    fn default() -> Self {
        ImpairConfig {
            loss: 0.2,
            delay: Duration::from_millis(100),
            max_queue: 4096,
            seed: 1,
            impaired: false,
        }
    }
}

/// The relay's counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// UDP datagrams sent on to the target.
    pub forwarded: u64,
    /// UDP datagrams dropped on purpose (the loss).
    pub dropped: u64,
    /// UDP datagrams dropped because the delay queue was full.
    pub overflow: u64,
    /// TCP connections relayed.
    pub tcp_connections: u64,
    /// TCP bytes relayed, both directions.
    pub tcp_bytes: u64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    impaired: AtomicBool,
    forwarded: AtomicU64,
    dropped: AtomicU64,
    overflow: AtomicU64,
    tcp_connections: AtomicU64,
    tcp_bytes: AtomicU64,
    /// Delayed datagrams, oldest first, with when each is due.
    queue: Mutex<VecDeque<Due>>,
    queued: Condvar,
    /// The threads of relayed TCP connections, joined on stop.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Due>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running relay; dropped, it stops.
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `listen` (UDP and TCP on one port; port 0 picks one free for both) and
    /// relays to `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr, config: ImpairConfig) -> Result<Relay> {
        let (udp, tcp) = bind_both(listen)?;
        let addr = udp.local_addr()?;
        let out = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
            .with_context(|| format!("cannot bind the relay's sending socket on {}", addr.ip()))?;
        udp.set_read_timeout(Some(POLL))?;
        tcp.set_nonblocking(true)?;
        let shared = Arc::new(Shared::default());
        shared.impaired.store(config.impaired, Ordering::Relaxed);
        let out = Arc::new(out);
        let mut threads = Vec::new();
        {
            let shared = shared.clone();
            let out = out.clone();
            let config = config.clone();
            threads.push(spawn("relay-udp-in", move || {
                udp_receive(&udp, &out, target, &config, &shared)
            })?);
        }
        {
            let shared = shared.clone();
            threads.push(spawn("relay-udp-out", move || {
                udp_send(&out, target, &shared)
            })?);
        }
        {
            let shared = shared.clone();
            let delay = config.delay;
            threads.push(spawn("relay-tcp", move || {
                tcp_accept(&tcp, target, delay, &shared)
            })?);
        }
        Ok(Relay {
            addr,
            target,
            shared,
            threads,
        })
    }

    /// The address the relay listens on (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it relays to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the impairment on (loss and delay) or off (pass through).
    pub fn set_impaired(&self, on: bool) {
        self.shared.impaired.store(on, Ordering::Relaxed);
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            forwarded: s.forwarded.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            overflow: s.overflow.load(Ordering::Relaxed),
            tcp_connections: s.tcp_connections.load(Ordering::Relaxed),
            tcp_bytes: s.tcp_bytes.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.queued.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // The acceptor has stopped: no connection is added any more.
        let connections = std::mem::take(
            &mut *self
                .shared
                .connections
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for thread in connections {
            let _ = thread.join();
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))
}

/// UDP and TCP on one port; with port 0, retries until a port is free for both.
fn bind_both(listen: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut attempt = 0;
    loop {
        let udp =
            UdpSocket::bind(listen).with_context(|| format!("cannot bind UDP on {listen}"))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(_) if listen.port() == 0 && attempt < 20 => attempt += 1,
            Err(e) => return Err(e).with_context(|| format!("cannot bind TCP on {bound}")),
        }
    }
}

/// Reads datagrams: drops, queues or sends each on at once.
fn udp_receive(
    udp: &UdpSocket,
    out: &UdpSocket,
    target: SocketAddr,
    config: &ImpairConfig,
    shared: &Shared,
) {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let mut buf = vec![0u8; 65536];
    while !shared.stopped() {
        let n = match udp.recv_from(&mut buf) {
            Ok((n, _from)) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => continue,
        };
        if !shared.impaired.load(Ordering::Relaxed) {
            if out.send_to(&buf[..n], target).is_ok() {
                shared.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        if rng.f64() < config.loss {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut queue = shared.queue();
        if queue.len() >= config.max_queue {
            shared.overflow.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        queue.push_back((Instant::now() + config.delay, buf[..n].to_vec()));
        drop(queue);
        shared.queued.notify_one();
    }
}

/// Sends queued datagrams on when they are due.
fn udp_send(out: &UdpSocket, target: SocketAddr, shared: &Shared) {
    let mut queue = shared.queue();
    while !shared.stopped() {
        let now = Instant::now();
        match queue.front() {
            Some((due, _)) if *due <= now => {
                let (_, datagram) = queue.pop_front().expect("front exists");
                drop(queue);
                if out.send_to(&datagram, target).is_ok() {
                    shared.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                queue = shared.queue();
            }
            Some((due, _)) => {
                let wait = (*due - now).min(POLL);
                queue = shared
                    .queued
                    .wait_timeout(queue, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            None => {
                queue = shared
                    .queued
                    .wait_timeout(queue, POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// Accepts connections and relays each on threads of its own.
fn tcp_accept(listener: &TcpListener, target: SocketAddr, delay: Duration, shared: &Arc<Shared>) {
    while !shared.stopped() {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(3)) else {
            continue;
        };
        shared.tcp_connections.fetch_add(1, Ordering::Relaxed);
        let mut connections = shared.connections.lock().unwrap_or_else(|e| e.into_inner());
        connections.retain(|t| !t.is_finished());
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let shared = shared.clone();
            if let Ok(t) = spawn("relay-tcp-pipe", move || {
                pipe(from, to, delay, &shared);
            }) {
                connections.push(t);
            }
        }
    }
}

/// One direction of a relayed connection: a reader stamps each chunk, a writer sends it
/// when due. End of stream is passed on as a half close; an error closes both ways.
fn pipe(mut from: TcpStream, to: TcpStream, delay: Duration, shared: &Arc<Shared>) {
    let _ = from.set_nonblocking(false);
    let _ = from.set_read_timeout(Some(POLL));
    let _ = to.set_nonblocking(false);
    let _ = to.set_write_timeout(Some(Duration::from_secs(5)));
    let (tx, rx) = mpsc::sync_channel::<Due>(TCP_CHUNKS);
    let writer = {
        let shared = shared.clone();
        let Ok(mut to_w) = to.try_clone() else {
            return;
        };
        let Ok(from_w) = from.try_clone() else {
            return;
        };
        spawn("relay-tcp-write", move || {
            loop {
                match rx.recv_timeout(POLL) {
                    Ok((due, chunk)) => {
                        let wait = due.saturating_duration_since(Instant::now());
                        if !wait.is_zero() {
                            std::thread::sleep(wait);
                        }
                        if to_w.write_all(&chunk).is_err() {
                            let _ = to_w.shutdown(Shutdown::Both);
                            let _ = from_w.shutdown(Shutdown::Both);
                            return;
                        }
                        shared
                            .tcp_bytes
                            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                    Err(RecvTimeoutError::Timeout) if !shared.stopped() => {}
                    Err(RecvTimeoutError::Timeout) => return,
                    Err(RecvTimeoutError::Disconnected) => {
                        // The reader saw the end of the stream: pass it on.
                        let _ = to_w.shutdown(Shutdown::Write);
                        return;
                    }
                }
            }
        })
    };
    let Ok(writer) = writer else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut failed = false;
    while !shared.stopped() {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let due = if shared.impaired.load(Ordering::Relaxed) {
                    Instant::now() + delay
                } else {
                    Instant::now()
                };
                if send_chunk(&tx, (due, buf[..n].to_vec()), shared).is_err() {
                    failed = true;
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.join();
    if failed || shared.stopped() {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    }
}

/// Hands a chunk to the writer, waiting while its buffer is full (unless stopping).
fn send_chunk(tx: &mpsc::SyncSender<Due>, mut item: Due, shared: &Shared) -> Result<(), ()> {
    loop {
        match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::TrySendError::Full(back)) if !shared.stopped() => {
                item = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:0";

    fn local() -> SocketAddr {
        LOCAL.parse().unwrap()
    }

    /// A UDP target and a thread counting what reaches it, with arrival times.
    struct Sink {
        addr: SocketAddr,
        got: Arc<Mutex<Vec<Due>>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Sink {
        fn start() -> Sink {
            let sock = UdpSocket::bind(LOCAL).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let addr = sock.local_addr().unwrap();
            let got = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (got, stop) = (got.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((n, _)) = sock.recv_from(&mut buf) {
                            got.lock()
                                .unwrap()
                                .push((Instant::now(), buf[..n].to_vec()));
                        }
                    }
                })
            };
            Sink {
                addr,
                got,
                stop,
                thread: Some(thread),
            }
        }

        fn count(&self) -> usize {
            self.got.lock().unwrap().len()
        }

        fn wait_for(&self, n: usize, timeout: Duration) {
            let deadline = Instant::now() + timeout;
            while self.count() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    impl Drop for Sink {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    fn impaired(loss: f64, delay_ms: u64) -> ImpairConfig {
        ImpairConfig {
            loss,
            delay: Duration::from_millis(delay_ms),
            max_queue: 4096,
            seed: 42,
            impaired: true,
        }
    }

    /// Sends `n` numbered datagrams, pausing now and then so no socket buffer overflows.
    fn send_many(to: SocketAddr, n: usize) {
        let sock = UdpSocket::bind(LOCAL).unwrap();
        for i in 0..n {
            sock.send_to(format!("datagram {i}").as_bytes(), to)
                .unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn drops_about_the_configured_share_of_datagrams() {
        let sink = Sink::start();
        let relay = Relay::start(local(), sink.addr, impaired(0.2, 1)).unwrap();
        send_many(relay.addr(), 2000);
        let deadline = Instant::now() + Duration::from_secs(10);
        while {
            let s = relay.stats();
            s.forwarded + s.dropped + s.overflow < 2000
        } && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let s = relay.stats();
        assert_eq!(s.forwarded + s.dropped, 2000, "{s:?}");
        assert_eq!(s.overflow, 0, "{s:?}");
        let rate = s.dropped as f64 / 2000.0;
        assert!((0.17..=0.23).contains(&rate), "drop rate {rate} ({s:?})");
        sink.wait_for(s.forwarded as usize, Duration::from_secs(5));
        assert_eq!(sink.count() as u64, s.forwarded);
    }

    #[test]
    fn delays_datagrams_while_impaired_and_passes_through_when_off() {
        let sink = Sink::start();
        let relay = Relay::start(local(), sink.addr, impaired(0.0, 100)).unwrap();
        let sock = UdpSocket::bind(LOCAL).unwrap();
        let sent = Instant::now();
        sock.send_to(b"late", relay.addr()).unwrap();
        sink.wait_for(1, Duration::from_secs(2));
        let took = sink.got.lock().unwrap()[0].0 - sent;
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");

        relay.set_impaired(false);
        let sent = Instant::now();
        sock.send_to(b"early", relay.addr()).unwrap();
        sink.wait_for(2, Duration::from_secs(2));
        let (at, data) = sink.got.lock().unwrap()[1].clone();
        assert_eq!(data, b"early");
        assert!(at - sent < Duration::from_millis(50), "{:?}", at - sent);
    }

    #[test]
    fn off_means_no_loss() {
        let sink = Sink::start();
        let relay = Relay::start(local(), sink.addr, impaired(1.0, 100)).unwrap();
        relay.set_impaired(false);
        send_many(relay.addr(), 200);
        sink.wait_for(200, Duration::from_secs(5));
        assert_eq!(sink.count(), 200);
        assert_eq!(relay.stats().dropped, 0);
        relay.set_impaired(true);
        send_many(relay.addr(), 50);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(sink.count(), 200, "everything is lost at loss 1.0");
        assert_eq!(relay.stats().dropped, 50);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let sink = Sink::start();
        let config = ImpairConfig {
            max_queue: 10,
            ..impaired(0.0, 500)
        };
        let relay = Relay::start(local(), sink.addr, config).unwrap();
        send_many(relay.addr(), 100);
        sink.wait_for(10, Duration::from_secs(3));
        std::thread::sleep(Duration::from_millis(100));
        let s = relay.stats();
        assert_eq!(s.forwarded + s.overflow, 100, "{s:?}");
        assert!(s.overflow >= 80, "{s:?}");
        assert_eq!(sink.count() as u64, s.forwarded);
    }

    /// An echo server on loopback; the thread ends with its one connection.
    fn echo_server() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind(LOCAL).unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 8192];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        (addr, thread)
    }

    #[test]
    fn relays_tcp_byte_exact_with_delay_both_ways() {
        let (echo, server) = echo_server();
        let relay = Relay::start(local(), echo, impaired(0.5, 100)).unwrap();
        let mut client = TcpStream::connect(relay.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();

        // One small round trip: delayed once each way.
        let began = Instant::now();
        client.write_all(b"ping").unwrap();
        let mut pong = [0u8; 4];
        client.read_exact(&mut pong).unwrap();
        let rtt = began.elapsed();
        assert_eq!(&pong, b"ping");
        assert!(rtt >= Duration::from_millis(200), "{rtt:?}");
        assert!(rtt < Duration::from_secs(1), "{rtt:?}");

        // A megabyte of random bytes comes back whole and in order.
        let mut rng = fastrand::Rng::with_seed(7);
        let data: Vec<u8> = (0..1 << 20).map(|_| rng.u8(..)).collect();
        let writer = {
            let mut w = client.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || {
                w.write_all(&data).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "{} bytes back of {}", back.len(), data.len());
        server.join().unwrap();
        let s = relay.stats();
        assert_eq!(s.tcp_connections, 1);
        assert_eq!(s.tcp_bytes, 2 * (data.len() as u64 + 4));

        // Off: no delay.
        relay.set_impaired(false);
        let (echo2, server2) = echo_server();
        drop(relay);
        let relay = Relay::start(local(), echo2, impaired(0.0, 100)).unwrap();
        relay.set_impaired(false);
        let mut client = TcpStream::connect(relay.addr()).unwrap();
        let began = Instant::now();
        client.write_all(b"ping").unwrap();
        client.read_exact(&mut pong).unwrap();
        assert!(
            began.elapsed() < Duration::from_millis(100),
            "{:?}",
            began.elapsed()
        );
        drop(client);
        server2.join().unwrap();
    }

    #[test]
    fn stops_cleanly_and_frees_its_port() {
        let sink = Sink::start();
        let (echo, _server) = echo_server();
        let relay = Relay::start(local(), sink.addr, impaired(0.0, 200)).unwrap();
        let addr = relay.addr();
        // Leave a datagram queued and a connection open (to a target that echoes).
        let tcp_relay = Relay::start(local(), echo, impaired(0.0, 200)).unwrap();
        let _open = TcpStream::connect(tcp_relay.addr()).unwrap();
        UdpSocket::bind(LOCAL)
            .unwrap()
            .send_to(b"queued", addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let began = Instant::now();
        let tcp_addr = tcp_relay.addr();
        drop(relay);
        drop(tcp_relay);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        UdpSocket::bind(addr).expect("UDP port free again");
        TcpListener::bind(addr).expect("TCP port free again");
        UdpSocket::bind(tcp_addr).expect("UDP port free again");
    }
}
