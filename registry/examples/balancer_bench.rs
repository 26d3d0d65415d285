//! Drives the balancer for `benches/balancer_vs_haproxy.sh`: `serve` runs a [`Balancer`] with a
//! static one-service table (one or more backends, the service's default `[balance]` settings
//! but for the algorithm), `idle` opens a bounded number of idle connections and holds them for
//! a bounded time, and `stream` measures bulk throughput of the copy and splice paths in one
//! process.
//!
//! ```text
//! balancer_bench serve --frontend 18080 --backend 127.0.0.1:8080 [--backend 127.0.0.1:8081 …]
//!                      [--algorithm round_robin|least_conn|p2c_ewma] [--mode copy|splice] [--log-dir DIR]
//! balancer_bench idle --addr 127.0.0.1:18080 --count 10000 --hold 20
//! balancer_bench stream --mb 2000
//! ```

// Bench code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_registry::balance::{
    AccessLogConfig, Balancer, BalancerConfig, CopyMode, ListenerStatus,
};
use strata_registry::table::{Algorithm, BalanceConfig, Endpoint, ServiceEntry, ServiceTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn required(args: &[String], name: &str) -> Result<String> {
    flag(args, name).ok_or_else(|| format!("missing {name}").into())
}

/// Every value of a repeated flag.
fn all(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

fn algorithm(args: &[String]) -> Result<Algorithm> {
    match flag(args, "--algorithm") {
        None => Ok(Algorithm::RoundRobin),
        Some(word) => Algorithm::from_label(&word)
            .filter(|a| *a != Algorithm::Unspecified)
            .ok_or_else(|| {
                format!("--algorithm is one of {}, not {word}", Algorithm::choices()).into()
            }),
    }
}

fn mode(args: &[String]) -> Result<CopyMode> {
    match flag(args, "--mode").as_deref() {
        None | Some("copy") => Ok(CopyMode::Copy),
        Some("splice") => Ok(CopyMode::Splice),
        Some(other) => Err(format!("--mode is copy or splice, not {other}").into()),
    }
}

/// A table with one service "bench" on `frontend`, forwarding to `backends`.
fn table(frontend: u16, backends: &[SocketAddr], algorithm: Algorithm) -> ServiceTable {
    let endpoints = backends
        .iter()
        .enumerate()
        .map(|(i, backend)| Endpoint {
            instance: format!("bench/{}", i + 1),
            node: "local".into(),
            ip: backend.ip(),
            ports: BTreeMap::from([("http".to_string(), backend.port())]),
            local: true,
            version: "1".into(),
            tags: vec![],
        })
        .collect();
    let service = ServiceEntry {
        name: "bench".into(),
        frontends: BTreeMap::from([("http".to_string(), frontend)]),
        balance: BalanceConfig {
            algorithm,
            ..BalanceConfig::default()
        },
        endpoints,
        unavailable: vec![],
        warning: vec![],
    };
    ServiceTable {
        generation: 1,
        services: BTreeMap::from([("bench".to_string(), service)]),
        nodes: BTreeMap::new(),
        frontend_claims: BTreeMap::new(),
    }
}

async fn start(
    config: BalancerConfig,
    frontend: u16,
    backends: &[SocketAddr],
    algorithm: Algorithm,
) -> Result<(Balancer, watch::Sender<Arc<ServiceTable>>)> {
    let (tx, rx) = watch::channel(Arc::new(table(frontend, backends, algorithm)));
    let balancer = Balancer::start(config, rx)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = balancer
            .stats()
            .services
            .first()
            .and_then(|s| s.listeners.first())
            .map(|l| l.status.clone());
        match status {
            Some(ListenerStatus::Listening { .. }) => return Ok((balancer, tx)),
            Some(ListenerStatus::Failed { error }) => return Err(error.into()),
            None if Instant::now() > deadline => return Err("the frontend did not start".into()),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(args: &[String]) -> Result<()> {
    let frontend: u16 = required(args, "--frontend")?.parse()?;
    let backends = all(args, "--backend")
        .iter()
        .map(|b| b.parse())
        .collect::<std::result::Result<Vec<SocketAddr>, _>>()?;
    if backends.is_empty() {
        return Err("missing --backend".into());
    }
    let config = BalancerConfig {
        copy_mode: mode(args)?,
        access_log: flag(args, "--log-dir").map(AccessLogConfig::new),
        ..BalancerConfig::default()
    };
    let (_balancer, _table) = start(config, frontend, &backends, algorithm(args)?).await?;
    println!(
        "ready frontend=127.0.0.1:{frontend} pid={}",
        std::process::id()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}

async fn idle(args: &[String]) -> Result<()> {
    let addr: SocketAddr = required(args, "--addr")?.parse()?;
    let count: usize = required(args, "--count")?.parse::<usize>()?.min(50_000);
    let hold = Duration::from_secs(required(args, "--hold")?.parse::<u64>()?.min(300));
    let mut open = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while open.len() < count && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => open.push(stream),
            Ok(Err(e)) => return Err(format!("connect {} failed: {e}", open.len()).into()),
            Err(_) => return Err(format!("connect {} timed out", open.len()).into()),
        }
    }
    println!("opened {}", open.len());
    tokio::time::sleep(hold).await;
    Ok(())
}

/// MB/s of one bulk transfer of `mb` MiB through a balancer in `mode` to a discarding backend.
async fn stream_once(mode: CopyMode, mb: usize) -> Result<f64> {
    let sink = TcpListener::bind("127.0.0.1:0").await?;
    let backend = sink.local_addr()?;
    let counted = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await?;
        let mut buf = vec![0; 256 << 10];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(total);
            }
            total += n;
        }
    });
    let frontend = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (_balancer, _table) = start(
        BalancerConfig {
            copy_mode: mode,
            ..BalancerConfig::default()
        },
        frontend,
        &[backend],
        Algorithm::RoundRobin,
    )
    .await?;
    let mut client = TcpStream::connect(("127.0.0.1", frontend)).await?;
    let chunk = vec![0x5a; 256 << 10];
    let started = Instant::now();
    for _ in 0..mb * 4 {
        client.write_all(&chunk).await?;
    }
    client.shutdown().await?;
    let total = counted.await??;
    let secs = started.elapsed().as_secs_f64();
    if total != mb << 20 {
        return Err(format!("{total} bytes arrived of {}", mb << 20).into());
    }
    Ok(mb as f64 / secs)
}

async fn stream(args: &[String]) -> Result<()> {
    let mb: usize = flag(args, "--mb")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(2000)
        .min(20_000);
    for mode in [
        CopyMode::Copy,
        CopyMode::Splice,
        CopyMode::Copy,
        CopyMode::Splice,
        CopyMode::Copy,
        CopyMode::Splice,
    ] {
        let rate = stream_once(mode, mb).await?;
        println!("stream {mode:?} {mb} MiB: {rate:.0} MiB/s");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args).await,
        Some("idle") => idle(&args).await,
        Some("stream") => stream(&args).await,
        _ => {
            Err("usage: balancer_bench serve|idle|stream … (see the example's doc comment)".into())
        }
    }
}
