//! `strata-agent run`: opens the state, starts the sampler and the servers, and shuts
//! everything down cleanly on SIGTERM or SIGINT.

use crate::api::gate::Gate;
use crate::api::grpc::AgentService;
use crate::api::http;
use crate::auth::Authenticator;
use crate::auth::tokens::{TOKENS_FILE, TokenStore};
use crate::config::AgentConfig;
use crate::data_lock::DataDirLock;
use crate::events::journal::{EventDraft, Journal, JournalLimits};
use crate::events::kmsg;
use crate::facts::HostFacts;
use crate::identity::load_or_create_node_id;
use crate::metrics::history::History;
use crate::sampler::Sampler;
use crate::state::{AgentState, CollectStats, unix_now_ms};
use crate::supervisor::detached;
use crate::supervisor::log_retention;
use crate::supervisor::manager::{Supervisor, SupervisorConfig};
use crate::supervisor::store::Store;
use crate::tls::AgentTls;
use crate::{cluster_link, keyring_store, shim_binary};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use strata_proto::v1::agent_server::AgentServer;
use strata_proto::v1::{HostMetrics, Severity};
use strata_registry::balance::{AccessLogConfig, Balancer, BalancerConfig};
use strata_registry::cluster::{Cluster, ClusterConfig};
use strata_registry::node::Timing;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

/// File name of the event journal inside the data dir.
pub const JOURNAL_FILE: &str = "events.redb";
/// Device the kernel log is read from.
const KMSG_PATH: &str = "/dev/kmsg";

/// Runs the agent until a shutdown signal arrives.
pub async fn run(config: AgentConfig) -> Result<()> {
    // First: without its shim the agent could run no service.
    let shim_exe = shim_binary::locate(config.shim_path.as_deref())?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(AgentTls::load(files, &config.node_name)?)),
        None => None,
    };
    let (data_dir, _dev_dir) = prepare_data_dir(config.data_dir.as_deref())?;
    let _lock = DataDirLock::acquire(&data_dir)?;
    let node_id = load_or_create_node_id(&data_dir)?;
    let tokens = TokenStore::open(data_dir.join(TOKENS_FILE))
        .context("cannot read the API tokens (fix or remove the file)")?;
    let journal = Journal::open(
        &data_dir.join(JOURNAL_FILE),
        config.node_name.clone(),
        JournalLimits {
            max_events: config.journal_max_events,
            max_age: config.journal_max_age,
        },
    )
    .with_context(|| format!("cannot open the event journal in {}", data_dir.display()))?;

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on the gRPC address {}", config.grpc_addr))?;
    let http_listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on the HTTP address {}", config.http_addr))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let supervisor = Supervisor::start(
        SupervisorConfig {
            data_dir: data_dir.clone(),
            services_dir: config.services_dir.clone(),
            port_range: config.port_range.clone(),
            cgroup_root: config.cgroup_root.clone(),
            node_name: config.node_name.clone(),
            shim_exe,
        },
        journal.clone(),
    )
    .await?;
    let log_sweep = log_retention::spawn(&supervisor, &journal, &data_dir, config.log_retention)?;

    let keyring = keyring_store::load(&data_dir, config.gossip_key.as_deref())?;
    let cluster = Cluster::start(ClusterConfig {
        node_id: node_id.clone(),
        node_name: config.node_name.clone(),
        bind: config.gossip_addr,
        advertise: config.advertise_addr,
        grpc_addr,
        join: config.join.clone(),
        keyring,
        tags: config.labels.clone(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        ip: None,
        timing: Timing {
            reap_after: config.reap_after,
            ..Timing::default()
        },
        tls: tls.as_ref().map(|t| t.streams.clone()),
    })
    .await
    .with_context(|| format!("cannot start gossip on {}", config.gossip_addr))?;
    let gossip_addr = cluster.gossip_addr();
    let dns = strata_registry::dns::start(
        strata_registry::dns::DnsConfig {
            addr: config.dns_addr,
            domain: config.dns_domain.clone(),
            ..Default::default()
        },
        cluster.table(),
    )
    .await
    .with_context(|| format!("cannot start DNS on {}", config.dns_addr))?;
    let dns_addr = dns.local_addr();
    let balancer = Balancer::start(
        BalancerConfig {
            bind_ip: config.balancer_addr,
            access_log: Some(AccessLogConfig::new(data_dir.join("access"))),
            ..BalancerConfig::default()
        },
        cluster.table(),
    )
    .context("cannot start the balancer")?;
    let balancer_events = cluster_link::spawn_balancer_recorder(&balancer, journal.clone());

    let (latest, _) = watch::channel(Arc::new(HostMetrics::default()));
    let state = Arc::new(AgentState {
        node_id: node_id.clone(),
        node_name: config.node_name.clone(),
        facts: HostFacts::read(),
        labels: config.labels.clone(),
        grpc_addr,
        http_addr,
        started: Instant::now(),
        started_unix_secs: unix_now_ms() as f64 / 1000.0,
        latest,
        history: Mutex::new(History::default()),
        stats: Mutex::new(CollectStats::default()),
        journal: journal.clone(),
        supervisor: supervisor.clone(),
        cluster: cluster.clone(),
        data_dir: data_dir.clone(),
        balancer,
        dns,
        tls: tls.clone(),
    });
    let publisher =
        cluster_link::spawn_publisher(cluster.clone(), supervisor.clone(), state.clone());
    let recorder = cluster_link::spawn_event_recorder(&cluster, journal.clone());

    let sampler = Sampler::start(state.clone(), &config)?;
    let kmsg_watch = kmsg::spawn_watch(PathBuf::from(KMSG_PATH), journal.clone());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let gate = Gate::new(
        Authenticator::new(tokens, &config.node_name, tls.is_some()),
        config.api_limits,
        journal.clone(),
        &config.node_name,
    );
    let grpc = tokio::spawn(serve_grpc(
        state.clone(),
        Arc::new(gate),
        grpc_listener,
        tls.as_deref().map(AgentTls::server),
        shutdown_rx.clone(),
    ));
    let http_server = tokio::spawn(serve_http(
        state.clone(),
        http_listener,
        config.collect_interval,
        shutdown_rx,
    ));

    // Watch the shutdown signals before saying ready: a SIGTERM right after the ready line
    // must stop the agent cleanly, not kill it with the default action.
    let shutdown_signal = shutdown_signals()?;
    append_event(
        &journal,
        "agent.started",
        Severity::Info,
        format!("agent {} started (id {node_id})", config.node_name),
    );
    tracing::info!(%grpc_addr, %http_addr, node = %config.node_name, data_dir = %data_dir.display(), "agent ready");
    println!(
        "strata-agent ready node={} id={node_id} grpc={grpc_addr} http={http_addr} gossip={gossip_addr} dns={dns_addr} balancer={} tls={}",
        config.node_name,
        config.balancer_addr,
        if tls.is_some() { "on" } else { "off" }
    );
    crate::notify::ready();

    let signal = shutdown_signal.await;
    tracing::info!(signal, "shutting down");
    let _ = shutdown_tx.send(true);
    sampler.stop();
    publisher.abort();
    cluster.leave().await;
    recorder.abort();
    supervisor.detach_all().await;
    if config.stop_services_on_exit {
        stop_services(&data_dir, &journal).await;
    }
    balancer_events.abort();
    log_sweep.abort();
    if let Some(watch) = kmsg_watch {
        watch.stop();
    }
    for (name, task) in [("gRPC", grpc), ("HTTP", http_server)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(server = name, error = %format!("{e:#}"), "server ended with an error")
            }
            Err(e) => tracing::warn!(server = name, error = %e, "server task failed"),
        }
    }
    append_event(
        &journal,
        "agent.stopped",
        Severity::Info,
        format!("agent {} stopped on {signal}", config.node_name),
    );
    Ok(())
}

/// `--stop-services-on-exit`: stops every instance the supervisor just detached from, as
/// `strata-agent stop-services` would, while this agent still holds the data dir.
async fn stop_services(data_dir: &Path, journal: &Journal) {
    let Some(store) = Store::open_existing(data_dir) else {
        return;
    };
    let stopped = tokio::task::spawn_blocking(move || detached::stop_recorded(&store, None)).await;
    let stopped = match stopped {
        Ok(Ok(stopped)) => stopped,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the service records to stop them");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "stopping the services failed");
            return;
        }
    };
    let mut lines = Vec::new();
    for (target, outcome) in &stopped {
        if let Some(what) = target.describe(*outcome) {
            if *outcome == detached::Outcome::Survived {
                tracing::warn!(instance = %target.id(), "{what}");
            } else {
                tracing::info!(instance = %target.id(), "{what}");
            }
            lines.push(format!("{}: {what}", target.id()));
        }
    }
    if !lines.is_empty() {
        append_event(
            journal,
            "agent.services_stopped",
            Severity::Info,
            format!(
                "stopped on exit (--stop-services-on-exit): {}",
                lines.join("; ")
            ),
        );
    }
}

/// Creates the data dir, or a temporary one in dev mode (removed when the guard drops).
fn prepare_data_dir(configured: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    match configured {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
            Ok((dir.to_path_buf(), None))
        }
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("strata-dev-")
                .tempdir()
                .context("cannot create a temporary data dir for --dev")?;
            Ok((tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

fn append_event(journal: &Journal, kind: &str, severity: Severity, message: String) {
    let draft = EventDraft::new(kind, severity, "agent", message);
    if let Err(e) = journal.append(draft) {
        tracing::warn!(error = %e, kind, "cannot record event");
    }
}

/// The largest request the API decodes: a spec or a key, never bulk data.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// The largest reply the API sends: a catalog of a large cluster fits.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;
/// Calls in flight on one connection; more wait for HTTP/2 flow control.
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

async fn serve_grpc(
    state: Arc<AgentState>,
    gate: Arc<Gate>,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the gRPC reflection service")?;
    let service = AgentServer::new(AgentService::new(state, gate))
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES);
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize);
    if let Some(tls) = tls {
        server = server
            .tls_config(tls)
            .context("cannot set up TLS on the gRPC server")?;
    }
    server
        .add_service(service)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .context("gRPC server failed")
}

async fn serve_http(
    state: Arc<AgentState>,
    listener: TcpListener,
    interval: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    axum::serve(listener, http::router(state, interval))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .context("HTTP server failed")
}

/// Installs the SIGTERM and SIGINT handlers now and resolves with the name of the first
/// signal that arrives.
fn shutdown_signals() -> Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
