//! The balancer on real sockets: backends are tokio servers on 127.0.0.1, the table is fed
//! through a watch channel as the catalog would.

use super::*;
use crate::table::{Algorithm, BalanceConfig, Endpoint, ServiceEntry};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::task::JoinSet;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const GENEROUS: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A backend that greets every connection with its name and a newline, then echoes.
struct Backend {
    name: String,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(name: &str) -> Self {
        Self::on_port(name, 0).await
    }

    async fn on_port(name: &str, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let greeting = format!("{name}\n");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let greeting = greeting.clone();
                connections.spawn(async move {
                    if stream.write_all(greeting.as_bytes()).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Self {
            name: name.into(),
            port,
            task,
        }
    }

    fn endpoint(&self, local: bool) -> Endpoint {
        endpoint(&self.name, self.port, local)
    }

    /// Closes the listener (open connections end too).
    fn kill(&self) {
        self.task.abort();
    }
}

fn endpoint(name: &str, port: u16, local: bool) -> Endpoint {
    Endpoint {
        instance: name.into(),
        node: format!("node-{name}"),
        ip: LOCALHOST,
        ports: BTreeMap::from([("tcp".to_string(), port)]),
        local,
        version: "1".into(),
        tags: vec![],
    }
}

fn service(
    name: &str,
    frontend: u16,
    algorithm: Algorithm,
    endpoints: Vec<Endpoint>,
) -> ServiceEntry {
    ServiceEntry {
        name: name.into(),
        frontends: BTreeMap::from([("tcp".to_string(), frontend)]),
        balance: BalanceConfig {
            algorithm,
            slow_start: Duration::ZERO,
            ..BalanceConfig::default()
        },
        endpoints,
        unavailable: vec![],
        warning: vec![],
    }
}

struct Harness {
    tx: watch::Sender<Arc<ServiceTable>>,
    balancer: Balancer,
}

impl Harness {
    fn start(config: BalancerConfig, services: Vec<ServiceEntry>) -> Self {
        let (tx, rx) = watch::channel(Arc::new(ServiceTable::default()));
        let balancer = Balancer::start(config, rx).unwrap();
        let harness = Self { tx, balancer };
        harness.set(services);
        harness
    }

    fn set(&self, services: Vec<ServiceEntry>) {
        let generation = self.tx.borrow().generation + 1;
        let services = services.into_iter().map(|s| (s.name.clone(), s)).collect();
        self.tx.send_replace(Arc::new(ServiceTable {
            generation,
            services,
            nodes: BTreeMap::new(),
            frontend_claims: BTreeMap::new(),
        }));
    }

    fn service(&self, name: &str) -> Option<ServiceStats> {
        self.balancer
            .stats()
            .services
            .into_iter()
            .find(|s| s.name == name)
    }

    fn endpoint(&self, service: &str, instance: &str) -> EndpointStats {
        let s = self.service(service).unwrap();
        s.endpoints
            .into_iter()
            .find(|e| e.instance == instance)
            .unwrap()
    }

    async fn listening(&self, name: &str) {
        eventually(&format!("{name} listening"), || {
            self.service(name).is_some_and(|s| {
                !s.listeners.is_empty()
                    && s.listeners
                        .iter()
                        .all(|l| matches!(l.status, ListenerStatus::Listening { .. }))
            })
        })
        .await;
    }
}

/// Polls `check` until it holds, failing after a generous timeout.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + GENEROUS;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects through the frontend and returns the greeting line and the open stream.
async fn open(port: u16) -> (String, BufReader<TcpStream>) {
    let stream = tokio::time::timeout(GENEROUS, TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap()
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(GENEROUS, reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    (line.trim_end().to_string(), reader)
}

/// Which backend answers a fresh connection (empty when the proxy closed it).
async fn identify(port: u16) -> String {
    open(port).await.0
}

fn config() -> BalancerConfig {
    BalancerConfig::default()
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let front = free_port();
    let h = Harness::start(
        config(),
        vec![service(
            "web",
            front,
            Algorithm::RoundRobin,
            backends.iter().map(|b| b.endpoint(false)).collect(),
        )],
    );
    h.listening("web").await;
    let mut counts = BTreeMap::new();
    for _ in 0..30 {
        *counts.entry(identify(front).await).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)])
    );
}

#[tokio::test]
async fn least_conn_prefers_the_idle_backend() {
    let backends = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let front = free_port();
    let h = Harness::start(
        config(),
        vec![service(
            "web",
            front,
            Algorithm::LeastConn,
            backends.iter().map(|b| b.endpoint(false)).collect(),
        )],
    );
    h.listening("web").await;
    let (first, _hold1) = open(front).await;
    let (second, _hold2) = open(front).await;
    assert_ne!(first, second);
    let idle = ["a", "b", "c"]
        .into_iter()
        .find(|n| *n != first && *n != second)
        .unwrap();
    for _ in 0..6 {
        assert_eq!(identify(front).await, idle);
        eventually("the short connection to end", || {
            h.endpoint("web", idle).active == 0
        })
        .await;
    }
}

#[tokio::test]
async fn p2c_ewma_avoids_the_failing_backend() {
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let front = free_port();
    let mut endpoints: Vec<_> = backends.iter().map(|b| b.endpoint(false)).collect();
    endpoints.push(endpoint("dead", free_port(), false));
    let mut cfg = config();
    cfg.outlier.consecutive_failures = 1000;
    let h = Harness::start(
        cfg,
        vec![service("web", front, Algorithm::P2cEwma, endpoints)],
    );
    h.listening("web").await;
    for _ in 0..40 {
        let name = identify(front).await;
        assert!(name == "a" || name == "b", "{name:?}");
    }
    let dead = h.endpoint("web", "dead");
    assert!(
        dead.ejected_until.is_none(),
        "ejection is off here: p2c alone avoids it"
    );
    assert!(
        dead.total <= 2,
        "the failing backend was tried {} times",
        dead.total
    );
    assert!(
        dead.connect_latency_ewma_ms > 100.0,
        "{}",
        dead.connect_latency_ewma_ms
    );
    let fast = h.endpoint("web", "a");
    assert!(fast.connect_latency_ewma_ms < dead.connect_latency_ewma_ms);
}

#[tokio::test]
async fn killed_backend_is_ejected_and_returns() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    let front = free_port();
    let mut cfg = config();
    cfg.outlier.base_ejection = Duration::from_millis(500);
    let h = Harness::start(
        cfg,
        vec![service(
            "web",
            front,
            Algorithm::RoundRobin,
            vec![a.endpoint(false), b.endpoint(false), c.endpoint(false)],
        )],
    );
    let mut events = h.balancer.subscribe_events();
    h.listening("web").await;
    b.kill();
    eventually("b's listener to close", || {
        std::net::TcpStream::connect(("127.0.0.1", b.port)).is_err()
    })
    .await;
    for _ in 0..20 {
        let name = identify(front).await;
        assert!(name == "a" || name == "c", "client saw {name:?}");
    }
    let ejected = tokio::time::timeout(GENEROUS, async {
        loop {
            if let Ok(BalancerEvent::Ejected { instance, .. }) = events.recv().await {
                return instance;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ejected, "b");
    assert!(h.endpoint("web", "b").failures >= 3);
    let _b_again = Backend::on_port("b", b.port).await;
    tokio::time::timeout(GENEROUS, async {
        loop {
            if let Ok(BalancerEvent::Restored { instance, .. }) = events.recv().await
                && instance == "b"
            {
                return;
            }
        }
    })
    .await
    .unwrap();
    let mut seen_b = false;
    for _ in 0..9 {
        seen_b |= identify(front).await == "b";
    }
    assert!(seen_b, "b did not come back");
}

#[tokio::test]
async fn never_more_than_the_max_share_ejected() {
    let live = Backend::start("live").await;
    let front = free_port();
    let mut cfg = config();
    cfg.outlier.consecutive_failures = 1;
    cfg.outlier.base_ejection = Duration::from_secs(60);
    let mut endpoints = vec![live.endpoint(false)];
    for n in 0..3 {
        endpoints.push(endpoint(&format!("dead{n}"), free_port(), false));
    }
    let mut web = service("web", front, Algorithm::RoundRobin, endpoints);
    web.balance.retries = 3;
    let h = Harness::start(cfg, vec![web]);
    h.listening("web").await;
    for _ in 0..20 {
        assert_eq!(identify(front).await, "live");
    }
    let stats = h.service("web").unwrap();
    let ejected = stats
        .endpoints
        .iter()
        .filter(|e| e.ejected_until.is_some())
        .count();
    assert_eq!(ejected, 2, "half of 4: {:?}", stats.endpoints);
    assert!(
        stats
            .endpoints
            .iter()
            .all(|e| e.instance != "live" || e.ejected_until.is_none())
    );
}

#[tokio::test]
async fn a_draining_backend_gets_no_new_connections_while_an_open_one_completes() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let front = free_port();
    let web = service(
        "web",
        front,
        Algorithm::RoundRobin,
        vec![a.endpoint(false), b.endpoint(false)],
    );
    let h = Harness::start(config(), vec![web.clone()]);
    h.listening("web").await;
    let (first, mut open_conn) = open(front).await;
    let (draining, other) = if first == "a" { (&a, &b) } else { (&b, &a) };
    let mut moved = web.clone();
    moved.endpoints = vec![other.endpoint(false)];
    moved.unavailable = vec![draining.endpoint(false)];
    h.set(vec![moved]);
    eventually("the endpoint to drain", || {
        h.endpoint("web", &draining.name).draining
    })
    .await;
    for _ in 0..6 {
        assert_eq!(identify(front).await, other.name);
    }
    open_conn.write_all(b"still here").await.unwrap();
    open_conn.get_mut().shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(GENEROUS, open_conn.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest, "still here");
}

#[tokio::test]
async fn the_drain_deadline_closes_open_connections_and_a_removed_service_stops_listening() {
    let a = Backend::start("a").await;
    let front = free_port();
    let mut cfg = config();
    cfg.drain_deadline = Duration::from_millis(300);
    let h = Harness::start(
        cfg,
        vec![service(
            "web",
            front,
            Algorithm::RoundRobin,
            vec![a.endpoint(false)],
        )],
    );
    let mut access = h.balancer.subscribe_access();
    h.listening("web").await;
    let (_, mut conn) = open(front).await;
    h.set(vec![]);
    eventually("the frontend to close", || {
        std::net::TcpStream::connect(("127.0.0.1", front)).is_err()
    })
    .await;
    // The open connection still works until the deadline, then the proxy closes it.
    let mut rest = Vec::new();
    tokio::time::timeout(GENEROUS, conn.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let record = tokio::time::timeout(GENEROUS, access.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.outcome, Outcome::Drained);
}

#[tokio::test]
async fn prefer_local_uses_local_endpoints_first() {
    let l = Backend::start("local").await;
    let r1 = Backend::start("remote1").await;
    let r2 = Backend::start("remote2").await;
    let front = free_port();
    let mut web = service(
        "web",
        front,
        Algorithm::RoundRobin,
        vec![r1.endpoint(false), l.endpoint(true), r2.endpoint(false)],
    );
    web.balance.prefer_local = true;
    let h = Harness::start(config(), vec![web.clone()]);
    h.listening("web").await;
    for _ in 0..6 {
        assert_eq!(identify(front).await, "local");
    }
    web.endpoints = vec![r1.endpoint(false), r2.endpoint(false)];
    web.unavailable = vec![l.endpoint(true)];
    h.set(vec![web]);
    eventually("the local endpoint to drain", || {
        h.endpoint("web", "local").draining
    })
    .await;
    let mut seen = BTreeMap::new();
    for _ in 0..6 {
        *seen.entry(identify(front).await).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        BTreeMap::from([("remote1".into(), 3), ("remote2".into(), 3)])
    );
}

fn mode_config(mode: CopyMode) -> BalancerConfig {
    BalancerConfig {
        copy_mode: mode,
        ..config()
    }
}

#[tokio::test]
async fn half_close_works_both_ways() {
    for mode in [CopyMode::Copy, CopyMode::Splice] {
        // The backend closes its write side first, then still reads the client's bytes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let backend = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"banner").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let front = free_port();
        let h = Harness::start(
            mode_config(mode),
            vec![service(
                "hc",
                front,
                Algorithm::RoundRobin,
                vec![endpoint("x", port, false)],
            )],
        );
        h.listening("hc").await;
        let mut client = TcpStream::connect(("127.0.0.1", front)).await.unwrap();
        let mut banner = Vec::new();
        tokio::time::timeout(GENEROUS, client.read_to_end(&mut banner))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(banner, b"banner", "{mode:?}");
        client.write_all(b"after the backend's EOF").await.unwrap();
        client.shutdown().await.unwrap();
        let got = tokio::time::timeout(GENEROUS, backend)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"after the backend's EOF", "{mode:?}");

        // The client closes its write side first; the backend answers after its EOF.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(format!("got {} bytes", got.len()).as_bytes())
                .await
                .unwrap();
        });
        let front = free_port();
        h.set(vec![service(
            "hc2",
            front,
            Algorithm::RoundRobin,
            vec![endpoint("y", port, false)],
        )]);
        h.listening("hc2").await;
        let mut client = TcpStream::connect(("127.0.0.1", front)).await.unwrap();
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(GENEROUS, client.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, "got 5 bytes", "{mode:?}");
    }
}

/// Deterministic bytes, so both ends can check the stream without keeping it.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            chunk.copy_from_slice(&self.0.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// FNV-1a over the stream, reported next to the exact comparison.
fn fnv(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

#[tokio::test]
async fn a_100_mb_transfer_is_byte_exact_in_both_modes() {
    const TOTAL: usize = 100 << 20;
    const CHUNK: usize = 64 << 10;
    for mode in [CopyMode::Copy, CopyMode::Splice] {
        let echo = Backend::start("echo").await;
        let front = free_port();
        let h = Harness::start(
            mode_config(mode),
            vec![service(
                "big",
                front,
                Algorithm::RoundRobin,
                vec![echo.endpoint(false)],
            )],
        );
        h.listening("big").await;
        let (greeting, stream) = open(front).await;
        assert_eq!(greeting, "echo");
        let (mut r, mut w) = stream.into_inner().into_split();
        let writer = tokio::spawn(async move {
            let mut pattern = Pattern(0x9e37_79b9_7f4a_7c15);
            let mut buf = vec![0; CHUNK];
            let mut hash = 0xcbf2_9ce4_8422_2325;
            for _ in 0..TOTAL / CHUNK {
                pattern.fill(&mut buf);
                hash = fnv(hash, &buf);
                w.write_all(&buf).await.unwrap();
            }
            w.shutdown().await.unwrap();
            hash
        });
        let mut expected = Pattern(0x9e37_79b9_7f4a_7c15);
        let mut want = vec![0; CHUNK];
        let mut got = vec![0; CHUNK];
        let mut hash = 0xcbf2_9ce4_8422_2325;
        for i in 0..TOTAL / CHUNK {
            expected.fill(&mut want);
            tokio::time::timeout(GENEROUS, r.read_exact(&mut got))
                .await
                .unwrap()
                .unwrap();
            hash = fnv(hash, &got);
            assert!(got == want, "{mode:?}: chunk {i} differs");
        }
        assert_eq!(
            r.read(&mut got).await.unwrap(),
            0,
            "{mode:?}: bytes after the end"
        );
        assert_eq!(writer.await.unwrap(), hash, "{mode:?}: checksum");
        let stats = h.endpoint("big", "echo");
        assert_eq!(stats.bytes_in, TOTAL as u64);
        assert_eq!(stats.bytes_out, TOTAL as u64 + "echo\n".len() as u64);
    }
}

fn sysctl_max(path: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace().last().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_slow_client_stalls_the_backend_instead_of_growing_the_proxy() {
    const CAP: usize = 256 << 20;
    const SMALL: usize = 64 << 10;
    for mode in [CopyMode::Copy, CopyMode::Splice] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The backend writes until a write has waited a (generous) second, then says how much.
        let backend = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            rustix::net::sockopt::set_socket_send_buffer_size(&s, SMALL).unwrap();
            let chunk = vec![7u8; SMALL];
            let mut written = 0;
            let mut stalled = false;
            while written < CAP {
                if tokio::time::timeout(Duration::from_secs(1), s.writable())
                    .await
                    .is_err()
                {
                    stalled = true;
                    break;
                }
                match s.try_write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            let mut s = s;
            s.shutdown().await.unwrap();
            (written, stalled)
        });
        let front = free_port();
        let cfg = mode_config(mode);
        let buffer = cfg.buffer_size;
        let h = Harness::start(
            cfg,
            vec![service(
                "slow",
                front,
                Algorithm::RoundRobin,
                vec![endpoint("w", port, false)],
            )],
        );
        h.listening("slow").await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(SMALL as u32).unwrap();
        let mut client = socket
            .connect(SocketAddr::new(LOCALHOST, front))
            .await
            .unwrap();
        let (written, stalled) = tokio::time::timeout(Duration::from_secs(120), backend)
            .await
            .unwrap()
            .unwrap();
        // What may legitimately sit between the two: the client's and the backend's small
        // buffers (doubled by the kernel), the proxy's two sockets at their autotuning maximum,
        // and the proxy's one buffer for this direction.
        let bound = 2 * SMALL
            + 2 * SMALL
            + sysctl_max("/proc/sys/net/ipv4/tcp_rmem")
            + sysctl_max("/proc/sys/net/ipv4/tcp_wmem")
            + buffer;
        eprintln!("{mode:?}: backend stalled after {written} bytes (bound {bound})");
        assert!(
            stalled,
            "{mode:?}: the backend wrote all {written} bytes: nothing pushed back"
        );
        assert!(
            written <= bound,
            "{mode:?}: {written} bytes in flight, bound {bound}"
        );
        let mut received = 0;
        let mut buf = vec![0; SMALL];
        loop {
            let n = tokio::time::timeout(GENEROUS, client.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            if n == 0 {
                break;
            }
            received += n;
        }
        assert_eq!(received, written, "{mode:?}");
    }
}

#[tokio::test]
async fn a_port_clash_is_reported_and_other_services_are_unaffected() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let a = Backend::start("a").await;
    let free = free_port();
    let (tx, rx) = watch::channel(Arc::new(ServiceTable::default()));
    let balancer = Balancer::start(config(), rx).unwrap();
    let mut events = balancer.subscribe_events();
    let h = Harness { tx, balancer };
    h.set(vec![
        service(
            "clash",
            taken_port,
            Algorithm::RoundRobin,
            vec![a.endpoint(false)],
        ),
        service("fine", free, Algorithm::RoundRobin, vec![a.endpoint(false)]),
    ]);
    let error = tokio::time::timeout(GENEROUS, async {
        loop {
            if let Ok(BalancerEvent::ListenFailed {
                service,
                port,
                error,
                ..
            }) = events.recv().await
            {
                assert_eq!((service.as_str(), port), ("clash", taken_port));
                return error;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        error,
        format!("port {taken_port} on 127.0.0.1 is in use by another process")
    );
    let clash = h.service("clash").unwrap();
    assert_eq!(clash.listeners[0].status, ListenerStatus::Failed { error });
    h.listening("fine").await;
    assert_eq!(identify(free).await, "a");
    // Once the other process lets go, the frontend is taken up.
    drop(taken);
    h.listening("clash").await;
    assert_eq!(identify(taken_port).await, "a");
}

#[tokio::test]
async fn of_two_services_claiming_one_port_the_first_by_name_is_served() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let port = free_port();
    let beta = service("beta", port, Algorithm::RoundRobin, vec![b.endpoint(false)]);
    let alpha = service(
        "alpha",
        port,
        Algorithm::RoundRobin,
        vec![a.endpoint(false)],
    );
    // beta was first here; alpha's claim arrives later, as from a racing apply elsewhere.
    let h = Harness::start(config(), vec![beta.clone()]);
    let mut events = h.balancer.subscribe_events();
    h.listening("beta").await;
    assert_eq!(identify(port).await, "b");
    h.set(vec![beta, alpha]);
    h.listening("alpha").await;
    assert_eq!(identify(port).await, "a", "every node serves alpha");
    // The port went straight from beta's listener to alpha's: it was closed before it was
    // bound again, so alpha never failed (and waited for the retry) on it.
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(&event, BalancerEvent::ListenFailed { service, .. } if service == "alpha"),
            "{event:?}"
        );
    }
    let beta = h.service("beta").unwrap();
    match &beta.listeners[0].status {
        ListenerStatus::Failed { error } => {
            assert!(error.contains("service alpha"), "{error}")
        }
        other => panic!("beta still listens: {other:?}"),
    }
}

#[tokio::test]
async fn listeners_follow_the_table() {
    let a = Backend::start("a").await;
    let (p1, p2) = (free_port(), free_port());
    let one = service("one", p1, Algorithm::RoundRobin, vec![a.endpoint(false)]);
    let two = service("two", p2, Algorithm::RoundRobin, vec![a.endpoint(false)]);
    let h = Harness::start(config(), vec![one.clone()]);
    h.listening("one").await;
    assert_eq!(identify(p1).await, "a");
    assert!(h.service("two").is_none());
    assert!(std::net::TcpStream::connect(("127.0.0.1", p2)).is_err());
    h.set(vec![one, two.clone()]);
    h.listening("two").await;
    assert_eq!(identify(p2).await, "a");
    h.set(vec![two]);
    eventually("one's frontend to close", || {
        std::net::TcpStream::connect(("127.0.0.1", p1)).is_err()
    })
    .await;
    assert!(h.service("one").is_none());
    assert_eq!(identify(p2).await, "a");
    // A port handed from a removed service to a new one in one change is taken over at once.
    let b = Backend::start("b").await;
    let mut events = h.balancer.subscribe_events();
    h.set(vec![service(
        "three",
        p2,
        Algorithm::RoundRobin,
        vec![b.endpoint(false)],
    )]);
    h.listening("three").await;
    assert_eq!(identify(p2).await, "b");
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, BalancerEvent::ListenFailed { .. }),
            "{event:?}"
        );
    }
}

#[tokio::test]
async fn access_log_records_each_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let a = Backend::start("a").await;
    let (p_ok, p_dead, p_none) = (free_port(), free_port(), free_port());
    let cfg = BalancerConfig {
        access_log: Some(AccessLogConfig::new(dir.path())),
        ..config()
    };
    let h = Harness::start(
        cfg,
        vec![
            service("ok", p_ok, Algorithm::RoundRobin, vec![a.endpoint(false)]),
            ServiceEntry {
                balance: BalanceConfig {
                    max_queue: 0,
                    ..BalanceConfig::default()
                },
                ..service(
                    "dead",
                    p_dead,
                    Algorithm::RoundRobin,
                    vec![endpoint("gone", free_port(), false)],
                )
            },
            service("none", p_none, Algorithm::RoundRobin, vec![]),
        ],
    );
    let mut live = h.balancer.subscribe_access();
    for name in ["ok", "dead", "none"] {
        h.listening(name).await;
    }
    let (_, mut conn) = open(p_ok).await;
    conn.write_all(b"ping").await.unwrap();
    conn.get_mut().shutdown().await.unwrap();
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(identify(p_dead).await, "");
    assert_eq!(identify(p_none).await, "");
    let mut outcomes = BTreeMap::new();
    for _ in 0..3 {
        let r = tokio::time::timeout(GENEROUS, live.recv())
            .await
            .unwrap()
            .unwrap();
        outcomes.insert(r.service.clone(), r);
    }
    assert_eq!(outcomes["ok"].outcome, Outcome::Ok);
    assert_eq!((outcomes["ok"].bytes_in, outcomes["ok"].bytes_out), (4, 6));
    assert_eq!(outcomes["ok"].instance.as_deref(), Some("a"));
    assert_eq!(outcomes["ok"].node.as_deref(), Some("node-a"));
    assert_eq!(outcomes["dead"].outcome, Outcome::ConnectFailed);
    assert_eq!(outcomes["dead"].instance.as_deref(), Some("gone"));
    assert_eq!(outcomes["none"].outcome, Outcome::NoHealthyInstance);
    let mut history = Vec::new();
    eventually("the records on disk", || {
        history = access::read_access_log(dir.path(), None, 10).unwrap();
        history.len() == 3
    })
    .await;
    assert_eq!(
        access::read_access_log(dir.path(), Some("dead"), 10).unwrap()[0].outcome,
        Outcome::ConnectFailed
    );
    assert_eq!(h.service("none").unwrap().no_healthy_instance, 1);

    // Read back through the balancer: the past records of one service, then (following)
    // the new ones of that service only.
    let mut past = h
        .balancer
        .tail_access(Some("dead".into()), 10, false)
        .await
        .unwrap();
    let first = past.recv().await.unwrap();
    assert_eq!(
        (first.service.as_str(), first.outcome),
        ("dead", Outcome::ConnectFailed)
    );
    assert!(past.recv().await.is_none(), "without follow the tail ends");
    let mut follow = h
        .balancer
        .tail_access(Some("ok".into()), 1, true)
        .await
        .unwrap();
    let last = tokio::time::timeout(GENEROUS, follow.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.service, "ok");
    assert_eq!(identify(p_dead).await, "");
    assert_eq!(identify(p_ok).await, "a");
    let new = tokio::time::timeout(GENEROUS, follow.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        new.service, "ok",
        "the dead service's new record is filtered out"
    );
}

#[tokio::test]
async fn prometheus_text_passes_promtool() {
    let a = Backend::start("a\"quoted").await;
    let front = free_port();
    let h = Harness::start(
        config(),
        vec![service(
            "web",
            front,
            Algorithm::P2cEwma,
            vec![a.endpoint(true)],
        )],
    );
    h.listening("web").await;
    identify(front).await;
    let mut w = strata_exposition::Exposition::default();
    write_prometheus(&h.balancer.stats(), &mut w);
    let text = w.into_text();
    assert!(text.contains(
        "strata_balancer_endpoint_connections_total{service=\"web\",service_instance=\"a\\\"quoted\""
    ));
    if !strata_tests::prereq::PROMTOOL.check() {
        return;
    }
    let findings = strata_tests::promtool_findings_beyond_node_exporter(&text).unwrap();
    assert!(findings.is_empty(), "{}\n{text}", findings.join("\n"));
}

/// A backend whose listen backlog holds one pending connection and that accepts one
/// connection every `every`: under concurrent load most of its SYNs are dropped.
fn tiny_backlog_backend(name: &str, every: Duration) -> (u16, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    let listener = socket.listen(1).unwrap();
    let greeting = format!("{name}\n");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let greeting = greeting.clone();
            tokio::spawn(async move {
                let _ = stream.write_all(greeting.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
            tokio::time::sleep(every).await;
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_full_backlog_costs_clients_nothing_while_another_backend_has_room() {
    let (tiny_port, tiny) = tiny_backlog_backend("tiny", Duration::from_millis(20));
    let roomy = Backend::start("roomy").await;
    let front = free_port();
    let mut web = service(
        "web",
        front,
        Algorithm::RoundRobin,
        vec![endpoint("tiny", tiny_port, false), roomy.endpoint(false)],
    );
    web.balance.connect_timeout = Duration::from_millis(200);
    let h = Harness::start(config(), vec![web]);
    h.listening("web").await;
    let mut clients = JoinSet::new();
    for _ in 0..80 {
        clients.spawn(identify(front));
    }
    let mut seen = BTreeMap::new();
    while let Some(name) = clients.join_next().await {
        *seen.entry(name.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(seen.get(""), None, "client errors: {seen:?}");
    assert_eq!(seen.values().sum::<i32>(), 80);
    assert!(seen.contains_key("roomy"), "{seen:?}");
    let t = h.endpoint("web", "tiny");
    assert_eq!(
        (t.ejections, t.ejected_until.as_deref()),
        (0, None),
        "busy is not dead: {t:?}"
    );
    tiny.abort();
}

/// A backend that accepts, reads whatever comes and never writes.
async fn silent_backend() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            held.spawn(async move {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
                std::future::pending::<()>().await;
            });
        }
    });
    (port, task)
}

/// The next access record of `service`.
async fn next_record(
    access: &mut broadcast::Receiver<AccessRecord>,
    service: &str,
) -> AccessRecord {
    tokio::time::timeout(GENEROUS, async {
        loop {
            let r = access.recv().await.unwrap();
            if r.service == service {
                return r;
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_backend_that_never_answers_and_an_idle_connection_are_timed_out() {
    let (silent_port, silent) = silent_backend().await;
    let echo = Backend::start("echo").await;
    let (p_silent, p_idle) = (free_port(), free_port());
    let mut mute = service(
        "mute",
        p_silent,
        Algorithm::RoundRobin,
        vec![endpoint("mute", silent_port, false)],
    );
    mute.balance.response_timeout = Duration::from_millis(300);
    let mut idle = service(
        "idle",
        p_idle,
        Algorithm::RoundRobin,
        vec![echo.endpoint(false)],
    );
    idle.balance.idle_timeout = Duration::from_millis(300);
    let h = Harness::start(config(), vec![mute, idle]);
    let mut access = h.balancer.subscribe_access();
    h.listening("mute").await;
    h.listening("idle").await;

    let mut client = TcpStream::connect(("127.0.0.1", p_silent)).await.unwrap();
    client.write_all(b"anyone there?").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(GENEROUS, client.read_to_end(&mut answer))
        .await
        .expect("the balancer closes a connection the backend never answers")
        .unwrap();
    assert!(answer.is_empty());
    let record = next_record(&mut access, "mute").await;
    assert_eq!(record.outcome, Outcome::ResponseTimeout);
    assert_eq!(record.bytes_in, 13);

    // Answered once, then nothing either way: the idle timeout closes it.
    let (greeting, mut conn) = open(p_idle).await;
    assert_eq!(greeting, "echo");
    let mut rest = Vec::new();
    tokio::time::timeout(GENEROUS, conn.read_to_end(&mut rest))
        .await
        .expect("the balancer closes an idle connection")
        .unwrap();
    assert_eq!(
        next_record(&mut access, "idle").await.outcome,
        Outcome::IdleTimeout
    );
    silent.abort();
}

#[tokio::test]
async fn a_joining_or_returning_instance_ramps_up_instead_of_taking_every_connection() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    for algorithm in [
        Algorithm::RoundRobin,
        Algorithm::LeastConn,
        Algorithm::P2cEwma,
    ] {
        let front = free_port();
        let mut web = service("web", front, algorithm, vec![a.endpoint(false)]);
        web.balance.slow_start = Duration::from_secs(600);
        let h = Harness::start(config(), vec![web.clone()]);
        h.listening("web").await;
        for _ in 0..5 {
            assert_eq!(identify(front).await, "a");
        }
        let both = ServiceEntry {
            endpoints: vec![a.endpoint(false), b.endpoint(false)],
            ..web.clone()
        };
        // b joins, then leaves (draining) and returns: each time it starts cold.
        for step in ["joins", "returns"] {
            h.set(vec![both.clone()]);
            eventually("b to be listed", || {
                h.service("web")
                    .is_some_and(|s| s.endpoints.iter().any(|e| e.instance == "b" && !e.draining))
            })
            .await;
            let weight = h.endpoint("web", "b").weight;
            assert!(weight < 0.5, "{algorithm} {step}: weight {weight}");
            let mut to_b = 0;
            for _ in 0..40 {
                to_b += i32::from(identify(front).await == "b");
            }
            assert!(to_b <= 8, "{algorithm}: b {step} and took {to_b} of 40");
            let mut away = both.clone();
            away.endpoints = vec![a.endpoint(false)];
            away.unavailable = vec![b.endpoint(false)];
            h.set(vec![away]);
            eventually("b to drain", || h.endpoint("web", "b").draining).await;
        }
        // Without slow start the same return takes its full share at once.
        let mut warm = both.clone();
        warm.balance.slow_start = Duration::ZERO;
        h.set(vec![warm]);
        eventually("b to return", || !h.endpoint("web", "b").draining).await;
        assert_eq!(h.endpoint("web", "b").weight, 1.0);
    }
}

#[tokio::test]
async fn the_queue_holds_clients_while_every_instance_is_busy_and_times_them_out() {
    let a = Backend::start("a").await;
    let front = free_port();
    let mut web = service("web", front, Algorithm::RoundRobin, vec![a.endpoint(false)]);
    web.balance.max_conns = 1;
    web.balance.max_queue = 2;
    web.balance.queue_timeout = GENEROUS;
    let h = Harness::start(config(), vec![web.clone()]);
    let mut access = h.balancer.subscribe_access();
    h.listening("web").await;
    let queued = || h.service("web").map_or(0, |s| s.queued);

    let (first, holder) = open(front).await;
    assert_eq!(first, "a");
    // Two clients wait, in order; a third finds the queue full.
    let second = tokio::spawn(open(front));
    eventually("the second client to queue", || queued() == 1).await;
    let third = tokio::spawn(open(front));
    eventually("the third client to queue", || queued() == 2).await;
    let (fourth, _) = open(front).await;
    assert_eq!(fourth, "", "a full queue fails the client at once");
    assert_eq!(
        next_record(&mut access, "web").await.outcome,
        Outcome::QueueFull
    );

    // Each freed slot serves the longest-waiting client.
    drop(holder);
    let (greeting, second_conn) = second.await.unwrap();
    assert_eq!(greeting, "a");
    assert_eq!(queued(), 1);
    assert!(!third.is_finished(), "the third client waits its turn");
    drop(second_conn);
    let (greeting, third_conn) = third.await.unwrap();
    assert_eq!(greeting, "a");

    // With the slot held past the queue timeout the waiting client is closed.
    let mut impatient = web.clone();
    impatient.balance.queue_timeout = Duration::from_millis(300);
    h.set(vec![impatient]);
    let (late, _) = open(front).await;
    assert_eq!(late, "");
    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        outcomes.push(next_record(&mut access, "web").await.outcome);
    }
    assert!(outcomes.contains(&Outcome::QueueTimeout), "{outcomes:?}");
    let stats = h.service("web").unwrap();
    assert_eq!((stats.queued, stats.queue_failures), (0, 2));
    drop(third_conn);
}

#[tokio::test]
async fn a_restarting_instance_is_waited_for_instead_of_failing_clients() {
    let port = free_port();
    let front = free_port();
    let h = Harness::start(
        config(),
        vec![service(
            "web",
            front,
            Algorithm::RoundRobin,
            vec![endpoint("a", port, false)],
        )],
    );
    h.listening("web").await;
    // Nothing listens yet: connects are refused, the client waits in the queue.
    let client = tokio::spawn(identify(front));
    eventually("the client to queue", || {
        h.service("web").is_some_and(|s| s.queued == 1)
    })
    .await;
    let _a = Backend::on_port("a", port).await;
    assert_eq!(client.await.unwrap(), "a");
    assert_eq!(h.endpoint("web", "a").ejections, 0, "never the last one");
}
