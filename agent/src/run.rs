//! `strata-agent run`: opens the state, starts the sampler and the servers, and shuts
//! everything down cleanly on SIGTERM or SIGINT (staying in the cluster: its services keep
//! running and stay routable), or leaves the cluster first when asked to ([`crate::leave`]);
//! reloads on SIGHUP ([`crate::reload`]) and hands over to a new agent on SIGUSR2
//! ([`crate::handoff`], `strata-agent upgrade`).

use crate::api::gate::Gate;
use crate::api::grpc::AgentService;
use crate::api::http;
use crate::auth::Authenticator;
use crate::auth::cluster_tokens::ClusterTokens;
use crate::auth::credentials::MarkerFile;
use crate::auth::tokens::{TOKENS_FILE, TokenStore};
use crate::config::AgentConfig;
use crate::data_lock::DataDirLock;
use crate::events::journal::{EventDraft, Journal, JournalLimits};
use crate::events::kmsg;
use crate::events::recover;
use crate::facts::HostFacts;
use crate::handoff::{self, HandoffError, Predecessor, ServedAddrs, Successor};
use crate::identity::load_or_create_node_id;
use crate::leave::{self, LeaveSwitch};
use crate::metrics::history::History;
use crate::reload::{self, Reloader};
use crate::sampler::Sampler;
use crate::state::{AgentState, CollectStats, unix_now_ms};
use crate::supervisor::detached;
use crate::supervisor::log_retention;
use crate::supervisor::manager::{Supervisor, SupervisorConfig};
use crate::supervisor::store::Store;
use crate::tls::AgentTls;
use crate::upgrade::{self, UpgradeOutcome, UpgradeResult};
use crate::{cluster_link, keyring_store, shim_binary};
use anyhow::{Context, Result};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_proto::v1::agent_server::AgentServer;
use strata_proto::v1::{HostMetrics, Severity};
use strata_registry::balance::{AccessLogConfig, Balancer, BalancerConfig};
use strata_registry::cluster::{Cluster, ClusterConfig};
use strata_registry::inherit::{self, SocketRole};
use strata_registry::node::Timing;
use strata_registry::table::ServiceTable;
use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

/// File name of the event journal inside the data dir.
pub const JOURNAL_FILE: &str = "events.redb";
/// Device the kernel log is read from.
const KMSG_PATH: &str = "/dev/kmsg";
/// How long a new agent waits for its predecessor to let go of the data dir.
const GO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a predecessor waits for the new agent's checks (config, TLS, shim).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a predecessor waits for the new agent to serve once it let go.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping agent lets the connections it proxies finish (a stop must not cut a
/// request in flight; the unit's TimeoutStopSec is 30 s).
const STOP_DRAIN: Duration = Duration::from_secs(10);
/// How long a new agent holds its balancer back until every inherited frontend's service
/// has a passing instance in its catalog (re-adopted instances pass their first check, remote
/// ones arrive by gossip); the predecessor serves those frontends meanwhile.
const FRONTEND_SERVABLE_WAIT: Duration = Duration::from_secs(30);
/// How long a new agent then waits for its balancer to take the inherited frontends.
const FRONTEND_TAKEOVER_WAIT: Duration = Duration::from_secs(5);
/// Inherited frontends still unclaimed this long after start belong to services that are
/// gone: they are closed.
const UNCLAIMED_FRONTEND_GRACE: Duration = Duration::from_secs(60);

/// How the agent was launched: its configuration, what a SIGHUP re-reads, and the agent it
/// takes over from when a `strata-agent upgrade` started it.
pub struct Launch {
    pub config: AgentConfig,
    pub reloader: Reloader,
    pub predecessor: Option<Predecessor>,
}

/// Runs the agent until a shutdown signal arrives, or until it handed over to a new agent.
/// A failure while taking over from a predecessor is reported to it, so it keeps serving.
pub async fn run(launch: Launch) -> Result<()> {
    let Launch {
        config,
        reloader,
        mut predecessor,
    } = launch;
    let result = serve(config, reloader, &mut predecessor).await;
    if let (Err(e), Some(predecessor)) = (&result, predecessor) {
        predecessor.failed(&format!("{e:#}"));
    }
    result
}

/// Why the agent's main loop ended.
enum Exit {
    /// A stop: why, and whether the node leaves the cluster first.
    Stop { why: String, leaving: bool },
    /// A new agent checked its configuration and waits to take over.
    HandOver {
        successor: Successor,
        request_id: Option<String>,
        drain: Duration,
    },
}

async fn serve(
    config: AgentConfig,
    reloader: Reloader,
    predecessor: &mut Option<Predecessor>,
) -> Result<()> {
    // The binary this agent runs from, before an upgrade replaces the file: the default of
    // `strata-agent upgrade`.
    let own_binary = std::env::current_exe().context("cannot tell which binary runs")?;
    // First: without its shim the agent could run no service.
    let shim_exe = shim_binary::locate(config.shim_path.as_deref())?;
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(AgentTls::load(files, &config.node_name)?)),
        None => None,
    };
    crate::supervisor::http_check::trust_cluster_ca(
        tls.as_ref()
            .map(|t| t.cluster_ca.clone())
            .unwrap_or_default(),
    );
    let (data_dir, _dev_dir) = prepare_data_dir(config.data_dir.as_deref())?;
    if let Some(predecessor) = predecessor.as_mut() {
        tracing::info!("taking over from the running agent: waiting for it to let go");
        tokio::task::block_in_place(|| predecessor.prepared_then_wait_for_go(GO_TIMEOUT))
            .context("the previous agent did not hand over")?;
    }
    let lock = DataDirLock::acquire(&data_dir)?;
    let node_id = load_or_create_node_id(&data_dir)?;
    let tokens_file = data_dir.join(TOKENS_FILE);
    // A damaged token file does not stop the agent: it refuses every token until fixed.
    let tokens = TokenStore::open(tokens_file.clone());
    let (cluster_tokens, tokens_finding) = ClusterTokens::open(&data_dir, &config.node_name);
    let cluster_tokens = Arc::new(cluster_tokens);
    let journal_path = data_dir.join(JOURNAL_FILE);
    let (journal, finding) = recover::open_journal(
        &journal_path,
        &config.node_name,
        JournalLimits {
            max_events: config.journal_max_events,
            max_age: config.journal_max_age,
        },
    )
    .with_context(|| format!("cannot open the event journal in {}", data_dir.display()))?;
    if let Some(finding) = finding {
        // The new journal's first event says what happened to the history.
        append_event(
            &journal,
            "journal.recovered",
            Severity::Warning,
            finding.describe(&journal_path),
        );
    }

    if let Some(finding) = tokens_finding {
        append_event(&journal, "tokens.recovered", Severity::Warning, finding);
    }

    let grpc_listener = listen(SocketRole::Grpc, config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on the gRPC address {}", config.grpc_addr))?;
    let http_listener = listen(SocketRole::Http, config.http_addr)
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
            // What the cluster publishes as this node's ip (`ClusterConfig` below, ip None).
            service_ip: config.advertise_addr.unwrap_or(config.gossip_addr).ip(),
            agent_ports: agent_ports([
                ("gRPC API", grpc_addr),
                ("HTTP", http_addr),
                ("gossip", config.gossip_addr),
                ("DNS", config.dns_addr),
            ]),
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
        services: supervisor.catalog_services(),
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
            only_passing: config.dns_only_passing,
            node_name: config.node_name.clone(),
            ..Default::default()
        },
        cluster.table(),
    )
    .await
    .with_context(|| format!("cannot start DNS on {}", config.dns_addr))?;
    let dns_addr = dns.local_addr();
    supervisor.attach_catalog(
        cluster.table(),
        agent_ports([("gossip", gossip_addr), ("DNS", dns_addr)]),
    );
    // Inherited frontends (from a predecessor, or systemd's fd store) are taken only once
    // their services can serve: until then their connections wait in the backlog.
    let balancer_table = if predecessor.is_some() || !inherited_frontend_ports().is_empty() {
        hold_until_servable(cluster.table(), inherited_frontend_ports())
    } else {
        cluster.table()
    };
    let balancer = Balancer::start(
        BalancerConfig {
            bind_ip: config.balancer_addr,
            access_log: Some(AccessLogConfig::new(data_dir.join("access"))),
            ..BalancerConfig::default()
        },
        balancer_table,
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
        leave: LeaveSwitch::new(config.leave_drain),
    });
    let publisher =
        cluster_link::spawn_publisher(cluster.clone(), supervisor.clone(), state.clone());
    let recorder = cluster_link::spawn_event_recorder(&cluster, journal.clone());
    let token_sync = cluster_tokens.spawn_sync(cluster.clone());

    let sampler = Sampler::start(state.clone(), &config)?;
    let kmsg_watch = kmsg::spawn_watch(PathBuf::from(KMSG_PATH), journal.clone());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let gate = Arc::new(Gate::new(
        Authenticator::new(
            tokens,
            cluster_tokens,
            MarkerFile::in_dir(&data_dir),
            &config.node_name,
            tls.is_some(),
        ),
        config.api_limits,
        journal.clone(),
        &config.node_name,
    ));
    let credential_watch = gate.watch_credentials();
    // Set when the agent starts to stop: gRPC health says NOT_SERVING from then on.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (health, health_follow) = crate::api::health::serve(
        state.clone(),
        config.collect_interval,
        stopping_rx,
        shutdown_rx.clone(),
    )
    .await;
    let grpc = tokio::spawn(serve_grpc(
        state.clone(),
        gate,
        health,
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

    // Watch the signals before saying ready: a SIGTERM right after the ready line must stop
    // the agent cleanly, and a SIGHUP must never kill it.
    let mut signals = AgentSignals::install()?;
    state
        .leave
        .watch_signal()
        .context("cannot watch the leave signal (SIGUSR1)")?;
    let took_over = predecessor.is_some();
    if let Some(predecessor) = predecessor.take() {
        take_over_frontends().await;
        predecessor.ready();
    }
    append_event(
        &journal,
        "agent.started",
        Severity::Info,
        if took_over {
            format!(
                "agent {} started (id {node_id}), taking over the sockets of the previous agent",
                config.node_name
            )
        } else {
            format!("agent {} started (id {node_id})", config.node_name)
        },
    );
    tracing::info!(%grpc_addr, %http_addr, node = %config.node_name, data_dir = %data_dir.display(), "agent ready");
    // Not println!: a closed stdout (the reader of a previous agent is gone) is no failure.
    let _ = writeln!(
        std::io::stdout(),
        "strata-agent ready node={} id={node_id} grpc={grpc_addr} http={http_addr} gossip={gossip_addr} dns={dns_addr} balancer={} tls={}",
        config.node_name,
        config.balancer_addr,
        if tls.is_some() { "on" } else { "off" }
    );
    if took_over {
        crate::notify::ready_as_main();
    } else {
        crate::notify::ready();
    }

    let mut current = config.clone();
    let served = ServedAddrs {
        grpc: Some(grpc_addr),
        http: Some(http_addr),
        gossip: vec![gossip_addr, config.gossip_addr],
        dns: Some(dns_addr),
    };
    let fd_store = crate::fd_store::spawn(served.clone());
    let exit = loop {
        let signal = tokio::select! {
            signal = signals.next() => signal,
            by = state.leave.requested() => break Exit::Stop {
                why: format!("leave asked by {by}"),
                leaving: true,
            },
        };
        match signal {
            AgentSignal::Stop(name) => {
                break Exit::Stop {
                    why: name.to_string(),
                    leaving: config.leave_on_stop,
                };
            }
            AgentSignal::Reload => {
                let targets = reload::Targets {
                    supervisor: &supervisor,
                    set_alert_rules: &|rules| sampler.set_alert_rules(rules),
                    tokens_file: &tokens_file,
                };
                let report = reloader.reload(&mut current, targets).await;
                record_reload(&journal, &report);
            }
            AgentSignal::Upgrade => {
                let request = upgrade::take_request(&data_dir);
                let request_id = request.as_ref().map(|r| r.id.clone());
                let drain = request.as_ref().map_or(upgrade::DEFAULT_DRAIN, |r| {
                    Duration::from_millis(r.drain_ms)
                });
                let binary = request
                    .and_then(|r| r.binary)
                    .unwrap_or_else(|| own_binary.clone());
                match start_successor(&config, &binary, &served).await {
                    Ok(successor) => {
                        break Exit::HandOver {
                            successor,
                            request_id,
                            drain,
                        };
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        tracing::error!(%error, "upgrade refused; this agent keeps serving");
                        append_event(
                            &journal,
                            "agent.upgrade_failed",
                            Severity::Warning,
                            format!(
                                "upgrade to {} failed, this agent keeps serving: {error}",
                                binary.display()
                            ),
                        );
                        upgrade::write_result(
                            &data_dir,
                            &UpgradeResult {
                                id: request_id,
                                outcome: UpgradeOutcome::Failed {
                                    error,
                                    old_stopped: false,
                                },
                            },
                        );
                    }
                }
            }
        }
    };
    let _ = stopping_tx.send(true);
    // gRPC health says NOT_SERVING before anything closes, so every Watch sees it before
    // its stream ends with the server (the follower returns once it has said so).
    let mut health_follow = health_follow;
    if tokio::time::timeout(Duration::from_secs(1), &mut health_follow)
        .await
        .is_err()
    {
        tracing::warn!("gRPC health did not turn NOT_SERVING within 1 s");
    }
    // From here on sockets close; the store keeps its copies for the next agent.
    if let Some(task) = fd_store {
        task.abort();
    }
    let why = match &exit {
        Exit::Stop { why, leaving } => {
            tracing::info!(why, leaving, "shutting down");
            why.clone()
        }
        Exit::HandOver { .. } => {
            tracing::info!("handing over to the new agent");
            "upgrade".to_string()
        }
    };
    match &exit {
        Exit::Stop { leaving: true, .. } => {
            leave::withdraw(&cluster, config.leave_drain).await;
            append_event(
                &journal,
                "node.left",
                Severity::Info,
                format!("node {} left the cluster ({why})", config.node_name),
            );
        }
        Exit::Stop { leaving: false, .. } => {
            tracing::info!(
                "stopping without leaving the cluster: this node's instances stay routable \
                 (strata-agent leave withdraws them)"
            );
            // Gossip ends now, not when the process does: nothing this agent does while it
            // shuts down (detaching, draining) reaches the catalog.
            cluster.stop().await;
        }
        // The new agent takes over the gossip socket as the same node: gossip stops here
        // without leaving, before the new agent reads the socket.
        Exit::HandOver { .. } => cluster.stop().await,
    }
    let _ = shutdown_tx.send(true);
    sampler.stop();
    publisher.abort();
    recorder.abort();
    token_sync.abort();
    credential_watch.abort();
    health_follow.abort();
    supervisor.detach_all().await;
    if config.stop_services_on_exit && matches!(exit, Exit::Stop { .. }) {
        stop_services(&data_dir, &journal).await;
    }
    balancer_events.abort();
    log_sweep.abort();
    if let Some(watch) = kmsg_watch {
        watch.stop();
    }
    let servers = [("gRPC", grpc), ("HTTP", http_server)];
    let Exit::HandOver {
        successor,
        request_id,
        drain,
    } = exit
    else {
        drain_frontends(&state.balancer, STOP_DRAIN).await;
        for (name, task) in servers {
            log_server_end(name, task.await);
        }
        append_event(
            &journal,
            "agent.stopped",
            Severity::Info,
            format!("agent {} stopped ({why})", config.node_name),
        );
        return Ok(());
    };
    append_event(
        &journal,
        "agent.handed_over",
        Severity::Info,
        format!(
            "agent {} hands over to a new agent (pid {}); services keep running",
            config.node_name,
            successor.pid()
        ),
    );
    journal.close();
    drop(lock);
    finish_handover(successor, &data_dir, request_id, &state.balancer, drain).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for (name, task) in servers {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(ended) => log_server_end(name, ended),
            Err(_) => tracing::info!(server = name, "server still has open connections; exiting"),
        }
    }
    Ok(())
}

/// Binds a TCP listener on `addr`, or takes the inherited one for `role`.
async fn listen(role: SocketRole, addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    match inherit::take_tcp(role, addr) {
        Some(inherited) => TcpListener::from_std(inherited),
        None => TcpListener::bind(addr).await,
    }
}

/// The ports of the inherited frontends not taken yet.
fn inherited_frontend_ports() -> Vec<u16> {
    inherit::remaining()
        .into_iter()
        .filter(|(role, _)| *role == SocketRole::Frontend)
        .map(|(_, addr)| addr.port())
        .collect()
}

/// Whether every one of `ports` is the frontend of a service with a passing instance: a
/// balancer serving them now would not turn a connection away.
fn frontends_servable(table: &ServiceTable, ports: &[u16]) -> bool {
    ports.iter().all(|port| {
        table
            .services
            .values()
            .any(|s| s.frontends.values().any(|p| p == port) && !s.endpoints.is_empty())
    })
}

/// In a new agent: the table its balancer follows, held empty (so it takes no inherited
/// frontend yet: the previous agent keeps serving them, or, from systemd's fd store, their
/// connections wait in the backlog) until `ports` are servable or
/// [`FRONTEND_SERVABLE_WAIT`] passed; from then on the catalog's table as it changes.
fn hold_until_servable(
    mut table: watch::Receiver<Arc<ServiceTable>>,
    ports: Vec<u16>,
) -> watch::Receiver<Arc<ServiceTable>> {
    let (held, receiver) = watch::channel(Arc::new(ServiceTable::default()));
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + FRONTEND_SERVABLE_WAIT;
        while !frontends_servable(&table.borrow_and_update(), &ports) {
            match tokio::time::timeout_at(deadline, table.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::warn!(
                        ?ports,
                        "inherited frontends without a passing instance; serving them anyway"
                    );
                    break;
                }
            }
        }
        loop {
            held.send_replace(Arc::clone(&table.borrow_and_update()));
            if table.changed().await.is_err() || held.is_closed() {
                return;
            }
        }
    });
    receiver
}

/// In a new agent: closes the inherited sockets that did not fit its configuration, then
/// waits (bounded) until its balancer has taken every inherited frontend, so the previous
/// agent stops accepting on none before this one accepts on it. Frontends nobody takes
/// are closed later.
async fn take_over_frontends() {
    let is_frontend =
        |(role, _): &(SocketRole, std::net::SocketAddr)| *role == SocketRole::Frontend;
    let unused: Vec<_> = inherit::remaining()
        .into_iter()
        .filter(|s| !is_frontend(s))
        .collect();
    if !unused.is_empty() {
        tracing::warn!(
            ?unused,
            "inherited sockets that the configuration no longer uses"
        );
    }
    let deadline = tokio::time::Instant::now() + FRONTEND_TAKEOVER_WAIT;
    while inherit::remaining().iter().any(is_frontend) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::spawn(async move {
        tokio::time::sleep(UNCLAIMED_FRONTEND_GRACE).await;
        let closed = inherit::close_remaining();
        if !closed.is_empty() {
            tracing::info!(?closed, "closed inherited sockets no service claimed");
        }
    });
}

/// Starts the new agent with this one's sockets and waits until it checked its
/// configuration; a failure leaves this agent as it was.
async fn start_successor(
    config: &AgentConfig,
    binary: &std::path::Path,
    served: &ServedAddrs,
) -> Result<Successor> {
    if config.data_dir.is_none() {
        anyhow::bail!(
            "this agent runs on a temporary --dev data dir, which the new agent could not take over: start it with --data-dir"
        );
    }
    let sockets = handoff::served_sockets(served).map_err(HandoffError::Sockets)?;
    tracing::info!(binary = %binary.display(), sockets = sockets.len(), "starting the new agent");
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut successor = handoff::spawn(binary, &args, sockets)?;
    if let Err(e) = successor.prepared(PREPARE_TIMEOUT).await {
        successor.abandon();
        return Err(e.into());
    }
    Ok(successor)
}

/// After letting go: waits for the new agent to serve, reports the outcome, then stops
/// accepting on the frontends and drains their open connections within `drain`.
async fn finish_handover(
    mut successor: Successor,
    data_dir: &std::path::Path,
    request_id: Option<String>,
    balancer: &Balancer,
    drain: Duration,
) -> Result<()> {
    if let Err(e) = successor.go().await {
        tracing::warn!(error = %e, "cannot tell the new agent to go on");
    }
    let new_pid = match successor.ready(READY_TIMEOUT).await {
        Ok(pid) => pid,
        Err(e) => {
            let error = e.to_string();
            upgrade::write_result(
                data_dir,
                &UpgradeResult {
                    id: request_id,
                    outcome: UpgradeOutcome::Failed {
                        error: error.clone(),
                        old_stopped: true,
                    },
                },
            );
            successor.abandon();
            anyhow::bail!("the new agent failed after this one had handed over: {error}");
        }
    };
    tracing::info!(
        new_pid,
        "the new agent serves; closing the frontends and draining"
    );
    upgrade::write_result(
        data_dir,
        &UpgradeResult {
            id: request_id,
            outcome: UpgradeOutcome::Ready {
                old_pid: std::process::id(),
                new_pid,
            },
        },
    );
    drain_frontends(balancer, drain).await;
    Ok(())
}

/// Closes the balancer's frontends (new connections wait in the backlog of a socket another
/// agent or the service manager still holds, or are refused) and lets the open proxied
/// connections finish, for at most `drain`.
async fn drain_frontends(balancer: &Balancer, drain: Duration) {
    balancer.close_listeners();
    let deadline = tokio::time::Instant::now() + drain;
    loop {
        let open: u64 = balancer.stats().services.iter().map(|s| s.active).sum();
        if open == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                open,
                "drain deadline reached; closing the remaining connections"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_server_end(name: &str, ended: Result<Result<()>, tokio::task::JoinError>) {
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(server = name, error = %format!("{e:#}"), "server ended with an error")
        }
        Err(e) => tracing::warn!(server = name, error = %e, "server task failed"),
    }
}

/// The agent's own ports, which no frontend may take; a port 0 (not bound yet) is left out.
fn agent_ports<const N: usize>(
    addrs: [(&'static str, std::net::SocketAddr); N],
) -> crate::supervisor::frontends::AgentPorts {
    addrs
        .into_iter()
        .filter(|(_, addr)| addr.port() != 0)
        .map(|(what, addr)| (addr.port(), what))
        .collect()
}

/// Logs a reload and records it as one journal event.
fn record_reload(journal: &Journal, report: &reload::ReloadReport) {
    let summary = report.summary();
    let severity = if report.failed.is_empty() {
        tracing::info!(%summary, "SIGHUP");
        Severity::Info
    } else {
        tracing::error!(%summary, "SIGHUP");
        Severity::Warning
    };
    let draft = EventDraft::new("agent.reloaded", severity, "agent", summary)
        .field("failed", report.failed.len().to_string());
    if let Err(e) = journal.append(draft) {
        tracing::warn!(error = %e, "cannot record the reload");
    }
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

/// Serves `strata.v1.Agent` (every call through the API layer), `grpc.health.v1.Health` and
/// reflection, both v1 and v1alpha (older grpcurl, grpcui, Python's reflection client,
/// Postman and Evans only speak v1alpha), describing the agent's API and health.
async fn serve_grpc(
    state: Arc<AgentState>,
    gate: Arc<Gate>,
    health: tonic_health::pb::health_server::HealthServer<crate::api::health::AgentHealth>,
    listener: TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("cannot build the gRPC reflection service (v1)")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("cannot build the gRPC reflection service (v1alpha)")?;
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
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
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

/// A signal the agent acts on.
enum AgentSignal {
    /// SIGTERM or SIGINT (its name): stop.
    Stop(&'static str),
    /// SIGHUP: reload.
    Reload,
    /// SIGUSR2: hand over to a new agent (`strata-agent upgrade`).
    Upgrade,
}

/// The handlers of every signal the agent acts on, installed at once.
struct AgentSignals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

impl AgentSignals {
    fn install() -> Result<AgentSignals> {
        let watch = |kind, name| signal(kind).with_context(|| format!("cannot watch {name}"));
        Ok(AgentSignals {
            term: watch(SignalKind::terminate(), "SIGTERM")?,
            int: watch(SignalKind::interrupt(), "SIGINT")?,
            hup: watch(SignalKind::hangup(), "SIGHUP")?,
            usr2: watch(SignalKind::user_defined2(), "SIGUSR2")?,
        })
    }

    async fn next(&mut self) -> AgentSignal {
        tokio::select! {
            _ = self.term.recv() => AgentSignal::Stop("SIGTERM"),
            _ = self.int.recv() => AgentSignal::Stop("SIGINT"),
            _ = self.hup.recv() => AgentSignal::Reload,
            _ = self.usr2.recv() => AgentSignal::Upgrade,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_registry::table::{Endpoint, ServiceEntry};

    fn service(frontend: u16, passing: bool) -> ServiceEntry {
        let endpoint = Endpoint {
            instance: "web/1".into(),
            node: "n1".into(),
            ip: [127, 0, 0, 1].into(),
            ports: [("http".to_string(), 20000)].into(),
            local: true,
            version: String::new(),
            tags: Vec::new(),
        };
        ServiceEntry {
            name: "web".into(),
            frontends: [("http".to_string(), frontend)].into(),
            endpoints: if passing { vec![endpoint] } else { Vec::new() },
            ..ServiceEntry::default()
        }
    }

    #[test]
    fn a_frontend_is_servable_once_its_service_has_a_passing_instance() {
        let mut table = ServiceTable::default();
        assert!(frontends_servable(&table, &[]));
        assert!(!frontends_servable(&table, &[8080]));
        table.services.insert("web".into(), service(8080, false));
        assert!(!frontends_servable(&table, &[8080]));
        table.services.insert("web".into(), service(8080, true));
        assert!(frontends_servable(&table, &[8080]));
        assert!(!frontends_servable(&table, &[8080, 9090]));
    }
}
