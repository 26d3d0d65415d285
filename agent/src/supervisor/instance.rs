//! One service instance: a task that starts it under a shim, watches it, checks its health,
//! applies the restart policy when it exits, and obeys the operator's commands.
//!
//! The decisions (restart or not, after how long; passing or critical) are made by the pure
//! `policy` and `health` state machines; this module does the I/O around them.

use super::cgroup::{InstanceCgroup, Isolation};
use super::health::{self, CheckOutcome, Health, HealthTracker};
use super::policy::{Decision, ExitKind, RestartTracker};
use super::ports::PortAllocator;
use super::spec::{HealthCheck, HealthSpec, ServiceSpec};
use super::store::{InstanceRecord, Store};
use crate::events::journal::{EventDraft, Journal};
use crate::fsutil::{write_atomic, write_replace};
use crate::metrics::procs::read_proc_stat;
use crate::state::unix_now_ms;
use rustix::process::{Pid, Signal};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use strata_proto::v1::{ExitInfo, InstanceState, InstanceStatus, Severity};
use strata_shim::launch::{
    EXIT_FILE, ExitRecord, LAUNCH_FILE, LOG_ROTATION_FILE, Launch, LogRotation, SHIM_PID_FILE,
    ShimPid,
};
use strata_shim::logstatus::{LogEvent, LogStatus, LogWatch};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

/// How long a shim may take to report that the service started.
const SHIM_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a shim after SIGKILL of its service before giving up on it.
pub const SHIM_EXIT_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping instance waits for the catalog to publish its draining.
const PUBLISH_WAIT: Duration = Duration::from_secs(1);
/// How often CPU and memory of a running instance are refreshed.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// The PATH a service gets when its spec sets none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every instance task shares with the supervisor.
pub struct InstanceContext {
    pub store: Store,
    pub journal: Journal,
    pub isolation: Isolation,
    pub ports: Mutex<PortAllocator>,
    pub node_name: String,
    /// The address the catalog publishes for this node (`STRATA_IP`).
    pub service_ip: IpAddr,
    /// The `strata-shim` binary, started as `<shim_exe> DIR`.
    pub shim_exe: PathBuf,
    /// Bumped on every change of any instance's status, for the catalog publisher.
    pub changes: watch::Sender<u64>,
    /// The last value of `changes` the catalog publisher has handed to gossip.
    pub published: watch::Sender<u64>,
    /// Places among the instances being signalled and awaited at once.
    pub stop_slots: Arc<Semaphore>,
}

impl InstanceContext {
    /// Tells the catalog publisher something changed; returns the new generation.
    pub fn bump(&self) -> u64 {
        self.changes.send_modify(|g| *g = g.wrapping_add(1));
        *self.changes.borrow()
    }

    /// Waits (a bounded time) until the catalog publisher has handed generation
    /// `generation` of the services to gossip.
    async fn until_published(&self, generation: u64) {
        let mut published = self.published.subscribe();
        if tokio::time::timeout(PUBLISH_WAIT, published.wait_for(|p| *p >= generation))
            .await
            .is_err()
        {
            tracing::debug!(
                generation,
                "the catalog did not publish in time; stopping anyway"
            );
        }
    }
}

/// An operator's (or the supervisor's) request to an instance task.
pub enum Command {
    /// Start it if it is not running (clears crash loop and failure).
    Start,
    /// Stop it and keep it stopped.
    Stop(oneshot::Sender<()>),
    /// Stop it if running, then start it.
    Restart(oneshot::Sender<()>),
    /// Send a signal to its process group.
    Signal(Signal, oneshot::Sender<Result<(), String>>),
    /// Use a new spec from the next start on.
    UpdateSpec(Arc<ServiceSpec>),
    /// Stop it, delete its files, and end the task.
    Remove(oneshot::Sender<()>),
    /// End the task but leave the process running (the agent is shutting down).
    Detach,
}

/// The supervisor's handle on an instance task. Commands never wait for room: the task
/// reads them between the steps of a stop, and its service's task must not block on it.
pub struct InstanceHandle {
    pub commands: mpsc::UnboundedSender<Command>,
    pub status: watch::Receiver<InstanceStatus>,
}

/// Where an instance is in its life.
enum Phase {
    /// Should run: start it now.
    Start,
    /// Running under this shim.
    Running(Box<RunningShim>),
    /// Waiting to start again.
    Backoff(Instant),
    /// Not running, and stays so until a command: stopped, exited, crash loop or failed.
    Held,
    /// The task ends.
    Done,
}

/// A live shim and the service it runs.
struct RunningShim {
    shim: ShimProcess,
    record: InstanceRecord,
    started: Instant,
    cgroup: InstanceCgroup,
    oom_kills_before: u64,
    /// What the shim last reported about its log.
    log_watch: LogWatch,
}

/// How the task learns that a shim ended: as its parent, through a pidfd after adoption,
/// or not at all for a shim found already gone.
enum ShimProcess {
    Child(tokio::process::Child),
    Adopted(AsyncFd<OwnedFd>),
    Gone,
}

impl ShimProcess {
    /// Resolves when the shim has exited (cancel-safe).
    async fn exited(&mut self) {
        match self {
            ShimProcess::Child(child) => {
                let _ = child.wait().await;
            }
            ShimProcess::Adopted(fd) => {
                let _ = fd.readable().await;
            }
            ShimProcess::Gone => {}
        }
    }
}

/// Whether a running instance was just started or re-attached after an agent restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adopted {
    /// Started by this agent: unknown until its checks pass.
    No,
    /// Started by an earlier agent and serving all along: passing until its checks fail.
    Yes,
}

/// Starts the task of instance `index` of `spec`. With `adopt`, it first tries to re-attach
/// to the instance a previous agent left running; `run` says whether it should be running.
pub fn spawn(
    ctx: Arc<InstanceContext>,
    spec: Arc<ServiceSpec>,
    index: u32,
    run: bool,
) -> InstanceHandle {
    let (commands, rx) = mpsc::unbounded_channel();
    let initial = InstanceStatus {
        id: format!("{}/{index}", spec.name),
        service: spec.name.clone(),
        index,
        state: InstanceState::Pending as i32,
        health: Health::Unknown as i32,
        version: spec.version.clone(),
        state_since_unix_ms: unix_now_ms(),
        ..Default::default()
    };
    let (status_tx, status) = watch::channel(initial);
    let task = InstanceTask {
        ctx,
        spec,
        index,
        rx,
        status: status_tx,
        ports: BTreeMap::new(),
        tracker: RestartTracker::default(),
        health: None,
        last_cpu: None,
    };
    tokio::spawn(task.run(run));
    InstanceHandle { commands, status }
}

struct InstanceTask {
    ctx: Arc<InstanceContext>,
    spec: Arc<ServiceSpec>,
    index: u32,
    rx: mpsc::UnboundedReceiver<Command>,
    status: watch::Sender<InstanceStatus>,
    ports: BTreeMap<String, u16>,
    tracker: RestartTracker,
    health: Option<HealthTracker>,
    last_cpu: Option<(Instant, u64)>,
}

type CheckFuture = Pin<Box<dyn Future<Output = CheckOutcome> + Send>>;

impl InstanceTask {
    fn id(&self) -> String {
        format!("{}/{}", self.spec.name, self.index)
    }

    fn dir(&self) -> PathBuf {
        self.ctx.store.instance_dir(&self.spec.name, self.index)
    }

    fn log_dir(&self) -> PathBuf {
        self.ctx.store.log_dir(&self.spec.name, self.index)
    }

    fn cgroup_name(&self) -> String {
        format!("{}-{}", self.spec.name, self.index)
    }

    /// Changes the published status and tells the supervisor's watchers.
    fn update(&self, change: impl FnOnce(&mut InstanceStatus)) {
        self.status.send_modify(change);
        self.ctx.bump();
    }

    fn set_state(&self, state: InstanceState, reason: Option<String>) {
        self.update(|s| {
            if s.state() != state {
                s.set_state(state);
                s.state_since_unix_ms = unix_now_ms();
            }
            if let Some(reason) = reason {
                s.reason = reason;
            }
            if !state.is_live() {
                s.pid = 0;
                s.cpu_percent = 0.0;
                s.rss_bytes = 0;
                s.set_health(Health::Unknown);
            }
            if state != InstanceState::Backoff {
                s.next_start_unix_ms = 0;
            }
        });
    }

    fn event(&self, kind: &str, severity: Severity, message: String) {
        let draft = EventDraft::new(kind, severity, format!("service:{}", self.id()), message)
            .field("service", self.spec.name.clone())
            .field("instance", self.index.to_string());
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, kind, "cannot record a service event");
        }
    }

    async fn run(mut self, run: bool) {
        let mut phase = match self.ctx.store.load_instance(&self.spec.name, self.index) {
            Some(record) => self.adopt(record).await,
            None if run => Phase::Start,
            None => {
                self.set_state(InstanceState::Stopped, None);
                Phase::Held
            }
        };
        loop {
            phase = match phase {
                Phase::Start => self.start().await,
                Phase::Running(running) => self.supervise(*running).await,
                Phase::Backoff(until) => self.backoff(until).await,
                Phase::Held => self.held().await,
                Phase::Done => return,
            };
        }
    }

    /// Re-attaches to an instance a previous agent started, or deals with how it ended.
    async fn adopt(&mut self, record: InstanceRecord) -> Phase {
        self.ports = record.ports.clone();
        if let Ok(mut ports) = self.ctx.ports.lock() {
            for port in self.ports.values() {
                ports.reserve(*port);
            }
        }
        let cgroup = self.ctx.isolation.open(&self.cgroup_name()).ok();
        let shim_alive = same_process(record.shim_pid, record.shim_start_ticks);
        if shim_alive
            && let Some(fd) = Pid::from_raw(record.shim_pid)
                .and_then(|pid| {
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
                })
                .and_then(|fd| {
                    // SAFETY: an OwnedFd keeps its descriptor open and the same for its whole
                    // life, which the AsyncFd owns.
                    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                        .ok()
                })
        {
            let started_ago =
                Duration::from_millis((unix_now_ms() - record.started_unix_ms).max(0) as u64);
            let started = Instant::now()
                .checked_sub(started_ago)
                .unwrap_or_else(Instant::now);
            // The instance stayed routable while no agent watched it; it keeps serving
            // until its own checks say otherwise, so an agent restart never withdraws it.
            self.health = self
                .spec
                .health
                .as_ref()
                .map(|h| HealthTracker::new(h, started).assume_passing());
            self.tracker.set_restarts(record.restarts);
            self.publish_running(&record, Adopted::Yes);
            self.event(
                "service.adopted",
                Severity::Info,
                format!(
                    "{} re-attached to pid {} after an agent restart",
                    self.id(),
                    record.pid
                ),
            );
            let cgroup = match cgroup {
                Some(c) => c,
                None => match self
                    .ctx
                    .isolation
                    .create(&self.cgroup_name(), &self.spec.resources)
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(instance = %self.id(), error = %e, "cannot re-open the cgroup; restarting");
                        kill_group(record.pid, Signal::KILL);
                        return Phase::Start;
                    }
                },
            };
            let oom_kills_before = cgroup.oom_kills();
            return Phase::Running(Box::new(RunningShim {
                shim: ShimProcess::Adopted(fd),
                record,
                started,
                cgroup,
                oom_kills_before,
                log_watch: LogWatch::default(),
            }));
        }
        // The shim is gone: it either recorded the exit or was killed with its service.
        if same_process(record.pid, record.start_ticks) {
            kill_group(record.pid, Signal::KILL);
        }
        let cgroup = match cgroup {
            Some(c) => c,
            None => match self
                .ctx
                .isolation
                .create(&self.cgroup_name(), &self.spec.resources)
            {
                Ok(c) => c,
                Err(_) => return Phase::Start,
            },
        };
        let running = RunningShim {
            shim: ShimProcess::Gone,
            record,
            started: Instant::now(),
            cgroup,
            oom_kills_before: 0,
            log_watch: LogWatch::default(),
        };
        self.after_exit(running, "while the agent was down").await
    }

    /// Starts the service under a new shim.
    async fn start(&mut self) -> Phase {
        self.set_state(InstanceState::Starting, Some(String::new()));
        match self.launch().await {
            Ok(running) => {
                self.publish_running(&running.record, Adopted::No);
                if self.tracker.restarts() > 0 {
                    self.event(
                        "service.restarted",
                        Severity::Info,
                        format!(
                            "{} restarted (pid {}, restart {})",
                            self.id(),
                            running.record.pid,
                            self.tracker.restarts()
                        ),
                    );
                } else {
                    self.event(
                        "service.started",
                        Severity::Info,
                        format!("{} started (pid {})", self.id(), running.record.pid),
                    );
                }
                Phase::Running(Box::new(running))
            }
            Err(reason) => {
                self.set_state(InstanceState::Failed, Some(reason.clone()));
                self.event(
                    "service.failed",
                    Severity::Critical,
                    format!("{} cannot start: {reason}", self.id()),
                );
                Phase::Held
            }
        }
    }

    fn publish_running(&mut self, record: &InstanceRecord, adopted: Adopted) {
        let (state, health) = match (adopted, self.spec.health.is_some()) {
            (Adopted::No, true) => (InstanceState::Starting, Health::Unknown),
            (Adopted::Yes, true) => (InstanceState::Running, Health::Passing),
            (_, false) => (InstanceState::Running, Health::Unknown),
        };
        self.last_cpu = None;
        self.update(|s| {
            s.set_state(state);
            s.state_since_unix_ms = unix_now_ms();
            s.pid = record.pid;
            s.ports = record
                .ports
                .iter()
                .map(|(k, v)| (k.clone(), u32::from(*v)))
                .collect();
            s.started_unix_ms = record.started_unix_ms;
            s.restarts = record.restarts;
            s.version = record.version.clone();
            s.set_health(health);
            s.health_output = String::new();
            s.reason = String::new();
        });
    }

    /// Allocates ports, prepares the cgroup and launch file, starts the shim, and waits for
    /// its `started` line.
    async fn launch(&mut self) -> Result<RunningShim, String> {
        self.allocate_ports()?;
        let dir = self.dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        self.stop_stray_shim(&dir).await;
        let cgroup = match self
            .ctx
            .isolation
            .create(&self.cgroup_name(), &self.spec.resources)
        {
            Ok(cgroup) => cgroup,
            Err(e) => return Err(format!("cannot apply resource limits: {e}")),
        };
        let launch = Launch {
            command: self.spec.command.clone(),
            env: self.environment(),
            workdir: self.spec.workdir.clone(),
            log_dir: self.log_dir(),
            log_max_bytes: self.spec.logs.max_bytes,
            log_keep: self.spec.logs.keep,
            nofile: self.spec.resources.nofile,
            cgroup_procs: cgroup.procs_files(),
        };
        let json = serde_json::to_vec(&launch).map_err(|e| format!("cannot encode launch: {e}"))?;
        write_replace(&dir.join(LAUNCH_FILE), &json)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(LAUNCH_FILE).display()))?;
        let _ = std::fs::remove_file(dir.join(EXIT_FILE));

        let mut command = tokio::process::Command::new(&self.ctx.shim_exe);
        command
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(false);
        // SAFETY: setsid is async-signal-safe; the shim leads its own session so that signals
        // to the agent's process group or terminal never reach it.
        unsafe {
            command.pre_exec(|| {
                rustix::process::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the shim {}: {e}", self.ctx.shim_exe.display()))?;
        let shim_pid = child.id().map(|p| p as i32).unwrap_or(0);
        let stdout = child.stdout.take().ok_or("the shim has no stdout")?;
        let mut line = String::new();
        let read = tokio::time::timeout(
            SHIM_START_TIMEOUT,
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let reply = match read {
            Ok(Ok(n)) if n > 0 => line.trim().to_string(),
            Ok(_) => String::from("failed the shim exited without reporting"),
            Err(_) => {
                let _ = child.start_kill();
                String::from("failed the shim did not report within 10s")
            }
        };
        let mut words = reply.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("started"), Some(pid), Some(ticks)) => {
                let (Ok(pid), Ok(start_ticks)) = (pid.parse::<i32>(), ticks.parse::<u64>()) else {
                    return Err(format!("the shim reported garbage: {reply:?}"));
                };
                let shim_start_ticks = read_proc_stat(shim_pid).map(|s| s.start_time).unwrap_or(0);
                let record = InstanceRecord {
                    shim_pid,
                    shim_start_ticks,
                    pid,
                    start_ticks,
                    ports: self.ports.clone(),
                    started_unix_ms: unix_now_ms(),
                    restarts: self.tracker.restarts(),
                    version: self.spec.version.clone(),
                    reloads_logs: true,
                };
                if let Err(e) = self
                    .ctx
                    .store
                    .save_instance(&self.spec.name, self.index, &record)
                {
                    tracing::warn!(instance = %self.id(), error = %e, "cannot store the instance record");
                }
                let started = Instant::now();
                self.health = self
                    .spec
                    .health
                    .as_ref()
                    .map(|h| HealthTracker::new(h, started));
                let oom_kills_before = cgroup.oom_kills();
                Ok(RunningShim {
                    shim: ShimProcess::Child(child),
                    record,
                    started,
                    cgroup,
                    oom_kills_before,
                    log_watch: LogWatch::default(),
                })
            }
            _ => {
                let _ = child.wait().await;
                release_cgroup(cgroup).await;
                Err(reply.strip_prefix("failed ").unwrap_or(&reply).to_string())
            }
        }
    }

    /// Stops a shim of this instance that no record names: one a previous agent started
    /// and was killed before recording (in the middle of `apply`, say). Left alone, it and
    /// its service would run on unseen next to the new one. Its service is killed (a shim
    /// still starting is given until its start timeout to name it), the shim then records
    /// the exit and ends.
    async fn stop_stray_shim(&self, dir: &Path) {
        let path = dir.join(SHIM_PID_FILE);
        let read = || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| ShimPid::parse(&t))
        };
        let Some(stray) = read() else {
            return;
        };
        if !same_process(stray.shim_pid, stray.shim_start_ticks) {
            return;
        }
        self.event(
            "service.stray_stopped",
            Severity::Warning,
            format!(
                "{} had a shim (pid {}) no record names, started by an agent that died \
                 before recording it: stopping it before starting anew",
                self.id(),
                stray.shim_pid
            ),
        );
        let deadline = Instant::now() + SHIM_START_TIMEOUT + SHIM_EXIT_GRACE;
        while same_process(stray.shim_pid, stray.shim_start_ticks) {
            if Instant::now() > deadline {
                kill_pid(stray.shim_pid, stray.shim_start_ticks);
                break;
            }
            if let Some((pid, ticks)) = read().and_then(|s| s.service)
                && same_process(pid, ticks)
            {
                kill_group(pid, Signal::KILL);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn allocate_ports(&mut self) -> Result<(), String> {
        let mut allocator = self
            .ctx
            .ports
            .lock()
            .map_err(|_| "the port allocator is unavailable".to_string())?;
        self.ports.retain(|name, port| {
            let keep = self.spec.ports.contains_key(name);
            if !keep {
                allocator.release(*port);
            }
            keep
        });
        for name in self.spec.ports.keys() {
            if !self.ports.contains_key(name) {
                let port = allocator.allocate().ok_or_else(|| {
                    format!("no free port left in the agent's range for port {name:?}")
                })?;
                self.ports.insert(name.clone(), port);
            }
        }
        Ok(())
    }

    /// The service's whole environment: the spec's variables plus Strata's own.
    fn environment(&self) -> Vec<(String, String)> {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), DEFAULT_PATH.into());
        env.extend(self.spec.env.clone());
        env.insert("STRATA_SERVICE".into(), self.spec.name.clone());
        env.insert("STRATA_INSTANCE".into(), self.id());
        env.insert("STRATA_INSTANCE_INDEX".into(), self.index.to_string());
        env.insert("STRATA_NODE".into(), self.ctx.node_name.clone());
        env.insert("STRATA_VERSION".into(), self.spec.version.clone());
        env.insert("STRATA_IP".into(), self.ctx.service_ip.to_string());
        if let Some(port) = self.ports.values().next() {
            env.insert("PORT".into(), port.to_string());
        }
        for (name, port) in &self.ports {
            let key = env_suffix(name);
            env.insert(format!("STRATA_PORT_{key}"), port.to_string());
            let addr = SocketAddr::new(self.ctx.service_ip, *port);
            env.insert(format!("STRATA_ADDR_{key}"), addr.to_string());
        }
        env.into_iter().collect()
    }

    /// The health check's target: the named port (or the first) on the check's address, by
    /// default the one the catalog publishes (what balancers and DNS send traffic to).
    fn health_target(&self) -> SocketAddr {
        let health = self.spec.health.as_ref();
        let port = health
            .and_then(|h| h.port.as_ref())
            .and_then(|name| self.ports.get(name))
            .or_else(|| self.ports.values().next())
            .copied()
            .unwrap_or(0);
        let ip = health
            .and_then(|h| h.address)
            .unwrap_or(self.ctx.service_ip);
        SocketAddr::new(ip, port)
    }

    /// Watches a running instance until it exits or is told to stop.
    async fn supervise(&mut self, mut running: RunningShim) -> Phase {
        let mut health_spec = self.spec.health.clone();
        let mut check_timer = check_interval(health_spec.as_ref());
        let mut stats_timer = tokio::time::interval(STATS_INTERVAL);
        let mut check: Option<CheckFuture> = None;
        loop {
            tokio::select! {
                _ = running.shim.exited() => return self.after_exit(running, "").await,
                _ = check_timer.tick(), if health_spec.is_some() && check.is_none() => {
                    if let Some(h) = &health_spec {
                        check = Some(Box::pin(check_future(h.check.clone(), self.health_target(), h.timeout, self.environment())));
                    }
                }
                outcome = poll_check(&mut check) => {
                    check = None;
                    self.on_check(outcome);
                }
                _ = stats_timer.tick() => {
                    self.refresh_stats(&running);
                    self.watch_log(&mut running);
                }
                command = self.rx.recv() => match command {
                    None | Some(Command::Detach) => return Phase::Done,
                    Some(Command::Start) => {}
                    Some(Command::UpdateSpec(spec)) => {
                        let health_changed = spec.health != self.spec.health;
                        let logs_changed = spec.logs != self.spec.logs;
                        self.spec = spec;
                        if logs_changed {
                            self.rotate_logs_as_specified(&running);
                        }
                        if health_changed {
                            health_spec = self.spec.health.clone();
                            check_timer = check_interval(health_spec.as_ref());
                            check = None;
                            self.recheck(&running);
                        }
                    }
                    Some(Command::Signal(signal, reply)) => {
                        let result = if same_process(running.record.pid, running.record.start_ticks) {
                            kill_group(running.record.pid, signal);
                            Ok(())
                        } else {
                            Err(format!("{} is not running", self.id()))
                        };
                        let _ = reply.send(result);
                    }
                    Some(Command::Stop(reply)) => {
                        self.stop(running, "stopped by an operator").await;
                        let _ = reply.send(());
                        return Phase::Held;
                    }
                    Some(Command::Restart(reply)) => {
                        self.stop(running, "restarting").await;
                        self.tracker.reset();
                        self.tracker.count_restart();
                        let _ = reply.send(());
                        return Phase::Start;
                    }
                    Some(Command::Remove(reply)) => {
                        self.stop(running, "removed").await;
                        self.forget();
                        let _ = reply.send(());
                        return Phase::Done;
                    }
                }
            }
        }
    }

    /// Takes a changed `[health]` while the instance runs, without a restart: new
    /// thresholds keep what was seen so far; a check added to an instance that was already
    /// serving starts from passing (it was in every balancer), so nothing flaps; without a
    /// check, a running instance counts as passing in the catalog as before.
    fn recheck(&mut self, running: &RunningShim) {
        let serving = self.status.borrow().state() == InstanceState::Running;
        self.health = match (self.health.take(), &self.spec.health) {
            (_, None) => None,
            (Some(mut tracker), Some(spec)) => {
                tracker.reconfigure(spec);
                Some(tracker)
            }
            (None, Some(spec)) => {
                let tracker = HealthTracker::new(spec, running.started);
                Some(if serving {
                    tracker.assume_passing()
                } else {
                    tracker
                })
            }
        };
        let health = self
            .health
            .as_ref()
            .map_or(Health::Unknown, HealthTracker::status);
        self.update(|s| {
            s.set_health(health);
            if self.spec.health.is_none() {
                s.health_output = String::new();
            }
            if s.state() == InstanceState::Starting
                && (health != Health::Unknown || self.spec.health.is_none())
            {
                s.set_state(InstanceState::Running);
                s.state_since_unix_ms = unix_now_ms();
            }
        });
    }

    /// Hands changed `[logs]` settings to the running shim: written beside it, then SIGUSR1.
    /// A shim from before live log changes keeps its settings until the next start.
    fn rotate_logs_as_specified(&self, running: &RunningShim) {
        let record = &running.record;
        if !record.reloads_logs {
            self.event(
                "service.logs_pending",
                Severity::Info,
                format!(
                    "{}: the new log settings apply at its next start (its shim predates live log changes)",
                    self.id()
                ),
            );
            return;
        }
        let rotation = LogRotation {
            max_bytes: self.spec.logs.max_bytes,
            keep: self.spec.logs.keep,
        };
        let path = self.dir().join(LOG_ROTATION_FILE);
        let written = serde_json::to_vec(&rotation)
            .map_err(std::io::Error::other)
            .and_then(|json| write_atomic(&path, &json));
        match written {
            Ok(()) if same_process(record.shim_pid, record.shim_start_ticks) => {
                if let Some(pid) = Pid::from_raw(record.shim_pid) {
                    let _ = rustix::process::kill_process(pid, Signal::USR1);
                }
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(instance = %self.id(), error = %e, "cannot write the new log settings")
            }
        }
    }

    fn on_check(&mut self, outcome: CheckOutcome) {
        let Some(tracker) = self.health.as_mut() else {
            return;
        };
        let output = match &outcome {
            CheckOutcome::Pass => String::from("ok"),
            CheckOutcome::Warn(m) | CheckOutcome::Fail(m) => m.clone(),
        };
        let changed = tracker.record(outcome, Instant::now());
        self.update(|s| s.health_output = output.clone());
        if let Some(health) = changed {
            self.update(|s| {
                s.set_health(health);
                if s.state() == InstanceState::Starting && health != Health::Unknown {
                    s.set_state(InstanceState::Running);
                    s.state_since_unix_ms = unix_now_ms();
                }
            });
            let severity = match health {
                Health::Passing | Health::Unknown => Severity::Info,
                Health::Warning => Severity::Warning,
                Health::Critical => Severity::Critical,
            };
            self.event(
                &format!("service.{}", health.label()),
                severity,
                format!("{} is {}: {output}", self.id(), health.label()),
            );
        }
    }

    /// Records the shim's news about its log: lines being dropped, or logging resumed.
    fn watch_log(&self, running: &mut RunningShim) {
        let Some(status) = LogStatus::read(&self.dir()) else {
            return;
        };
        for change in running.log_watch.observe(status) {
            let (kind, severity, message, dropped) = match change {
                LogEvent::Dropping { dropped, reason } => (
                    "service.log_dropped",
                    Severity::Warning,
                    format!(
                        "{} log lines are being dropped ({dropped} so far): {reason}",
                        self.id()
                    ),
                    dropped,
                ),
                LogEvent::Resumed { dropped } => (
                    "service.log_resumed",
                    Severity::Info,
                    format!(
                        "{} logging resumed; {dropped} log lines were dropped",
                        self.id()
                    ),
                    dropped,
                ),
            };
            let draft = EventDraft::new(kind, severity, format!("service:{}", self.id()), message)
                .field("service", self.spec.name.clone())
                .field("instance", self.index.to_string())
                .field("dropped", dropped.to_string());
            if let Err(e) = self.ctx.journal.append(draft) {
                tracing::warn!(error = %e, kind, "cannot record a service event");
            }
        }
    }

    fn refresh_stats(&mut self, running: &RunningShim) {
        let now = Instant::now();
        let from_cgroup = running
            .cgroup
            .cpu_usage_usec()
            .zip(running.cgroup.memory_current());
        let (cpu_usec, rss) = match from_cgroup {
            Some((cpu, rss)) => (Some(cpu), Some(rss)),
            None => match read_proc_stat(running.record.pid) {
                Some(stat) => {
                    let tps = procfs::ticks_per_second().max(1);
                    (
                        Some(stat.ticks * 1_000_000 / tps),
                        Some(stat.rss_pages * procfs::page_size()),
                    )
                }
                None => (None, None),
            },
        };
        let cpu_percent = match (cpu_usec, self.last_cpu) {
            (Some(cur), Some((at, prev))) => {
                let secs = now.duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    cur.saturating_sub(prev) as f64 / 1e6 / secs * 100.0
                } else {
                    0.0
                }
            }
            _ => 0.0,
        };
        if let Some(cur) = cpu_usec {
            self.last_cpu = Some((now, cur));
        }
        self.update(|s| {
            s.cpu_percent = cpu_percent;
            s.rss_bytes = rss.unwrap_or(0);
        });
    }

    /// Stops a running instance: the stop signal to its process group, then SIGKILL to
    /// everything it started once the timeout passes.
    async fn stop(&mut self, mut running: RunningShim, why: &str) {
        self.set_state(InstanceState::Stopping, None);
        // Draining reaches the catalog (and so every balancer) before the signal does.
        let generation = *self.ctx.changes.borrow();
        self.ctx.until_published(generation).await;
        if !self.spec.stop.drain.is_zero() {
            tokio::time::sleep(self.spec.stop.drain).await;
        }
        let _slot = self.ctx.stop_slots.clone().acquire_owned().await;
        let pid = running.record.pid;
        if same_process(pid, running.record.start_ticks) {
            let signal =
                Signal::from_named_raw(self.spec.stop.signal.number()).unwrap_or(Signal::TERM);
            kill_group(pid, signal);
        }
        let graceful = tokio::time::timeout(self.spec.stop.timeout, running.shim.exited())
            .await
            .is_ok();
        if !graceful {
            kill_group(pid, Signal::KILL);
            kill_cgroup(&running.cgroup).await;
            if tokio::time::timeout(SHIM_EXIT_GRACE, running.shim.exited())
                .await
                .is_err()
            {
                kill_pid(running.record.shim_pid, running.record.shim_start_ticks);
            }
        }
        let exit = read_exit(&self.dir());
        release_cgroup(running.cgroup).await;
        self.ctx.store.clear_instance(&self.spec.name, self.index);
        let description = exit
            .as_ref()
            .map(|e| describe_exit(e, false))
            .unwrap_or_else(|| "exit not recorded".into());
        self.update(|s| {
            s.last_exit = exit.as_ref().map(|e| exit_info(e, false));
        });
        self.set_state(InstanceState::Stopped, Some(String::new()));
        let how = if graceful {
            ""
        } else {
            " (SIGKILL after the stop timeout)"
        };
        self.event(
            "service.stopped",
            Severity::Info,
            format!("{} stopped{how}: {why}; {description}", self.id()),
        );
    }

    /// Handles an exit the instance did not get a command for: records it, then applies
    /// the restart policy.
    async fn after_exit(&mut self, running: RunningShim, when: &str) -> Phase {
        let dir = self.dir();
        let exit = read_exit(&dir);
        let oom = running.cgroup.oom_kills() > running.oom_kills_before;
        release_cgroup(running.cgroup).await;
        self.ctx.store.clear_instance(&self.spec.name, self.index);
        let kind = match &exit {
            None => ExitKind::Signal(9),
            Some(_) if oom => ExitKind::OomKilled,
            Some(ExitRecord { code: Some(0), .. }) => ExitKind::Success,
            Some(ExitRecord { code: Some(_), .. }) => ExitKind::Failure,
            Some(ExitRecord {
                signal: Some(s), ..
            }) => ExitKind::Signal(*s),
            Some(_) => ExitKind::Failure,
        };
        let ran_for = running.started.elapsed();
        let decision = self
            .tracker
            .on_exit(&self.spec.restart, kind, ran_for, Instant::now());
        let description = match &exit {
            Some(e) => describe_exit(e, oom),
            None => "the shim vanished without recording the exit".to_string(),
        };
        self.update(|s| {
            s.last_exit = Some(match &exit {
                Some(e) => exit_info(e, oom),
                None => ExitInfo {
                    time_unix_ms: unix_now_ms(),
                    description: description.clone(),
                    ..Default::default()
                },
            });
            s.restarts = self.tracker.restarts();
        });
        let when = if when.is_empty() {
            String::new()
        } else {
            format!(" {when}")
        };
        let phase = match decision {
            Decision::Restart { after } if after.is_zero() => {
                self.set_state(InstanceState::Exited, None);
                Phase::Start
            }
            Decision::Restart { after } => {
                let until = Instant::now() + after;
                self.set_state(
                    InstanceState::Backoff,
                    Some(format!(
                        "{description}; restarting in {}",
                        humantime::format_duration(round_ms(after))
                    )),
                );
                self.update(|s| s.next_start_unix_ms = unix_now_ms() + after.as_millis() as i64);
                self.event(
                    "service.backoff",
                    Severity::Warning,
                    format!(
                        "{} {description}{when}; restarting in {}",
                        self.id(),
                        humantime::format_duration(round_ms(after))
                    ),
                );
                Phase::Backoff(until)
            }
            Decision::CrashLoop => {
                let reason = format!(
                    "crash loop: {} failures within {}; last: {description}",
                    self.spec.restart.crashloop_after,
                    humantime::format_duration(self.spec.restart.crashloop_window)
                );
                self.set_state(InstanceState::Crashloop, Some(reason.clone()));
                self.event(
                    "service.crashloop",
                    Severity::Critical,
                    format!("{} {reason}", self.id()),
                );
                Phase::Held
            }
            Decision::Stay => {
                self.set_state(InstanceState::Exited, Some(description.clone()));
                Phase::Held
            }
        };
        let severity = if kind == ExitKind::Success {
            Severity::Info
        } else {
            Severity::Warning
        };
        self.event(
            "service.exited",
            severity,
            format!("{} {description}{when}", self.id()),
        );
        if oom {
            self.event(
                "service.oom_killed",
                Severity::Critical,
                format!("{} was killed for exceeding its memory limit", self.id()),
            );
        }
        phase
    }

    async fn backoff(&mut self, until: Instant) -> Phase {
        tokio::select! {
            _ = tokio::time::sleep_until(until.into()) => Phase::Start,
            command = self.rx.recv() => self.on_idle_command(command, Phase::Backoff(until)).await,
        }
    }

    async fn held(&mut self) -> Phase {
        let command = self.rx.recv().await;
        self.on_idle_command(command, Phase::Held).await
    }

    /// A command while nothing runs.
    async fn on_idle_command(&mut self, command: Option<Command>, stay: Phase) -> Phase {
        match command {
            None | Some(Command::Detach) => Phase::Done,
            Some(Command::Start) => {
                self.tracker.reset();
                Phase::Start
            }
            Some(Command::Restart(reply)) => {
                self.tracker.reset();
                let _ = reply.send(());
                Phase::Start
            }
            Some(Command::Stop(reply)) => {
                self.set_state(InstanceState::Stopped, None);
                let _ = reply.send(());
                Phase::Held
            }
            Some(Command::Signal(_, reply)) => {
                let _ = reply.send(Err(format!("{} is not running", self.id())));
                stay
            }
            Some(Command::UpdateSpec(spec)) => {
                self.spec = spec;
                stay
            }
            Some(Command::Remove(reply)) => {
                self.forget();
                let _ = reply.send(());
                Phase::Done
            }
        }
    }

    /// Releases the ports and deletes the instance's runtime files.
    fn forget(&mut self) {
        if let Ok(mut ports) = self.ctx.ports.lock() {
            for port in self.ports.values() {
                ports.release(*port);
            }
        }
        self.ports.clear();
        self.ctx.store.remove_instance(&self.spec.name, self.index);
    }
}

/// A port name as an environment variable suffix: upper case, anything but letters and
/// digits as `_` (`admin-api` is `ADMIN_API`).
pub fn env_suffix(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The timer of an instance's checks (a quiet one when it has none).
fn check_interval(spec: Option<&HealthSpec>) -> tokio::time::Interval {
    let mut timer = tokio::time::interval(spec.map_or(Duration::from_secs(3600), |h| h.interval));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Kills whatever is left in an instance's cgroup (it may block briefly, so off the runtime).
async fn kill_cgroup(cgroup: &InstanceCgroup) {
    tokio::task::block_in_place(|| {
        if let Err(e) = cgroup.kill_all() {
            tracing::warn!(error = %e, "processes survived the cgroup kill");
        }
    });
}

/// Kills what is left in an instance's cgroup and removes it.
async fn release_cgroup(cgroup: InstanceCgroup) {
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = cgroup.kill_all() {
            tracing::warn!(error = %e, "processes survived the cgroup kill");
        }
        let _ = cgroup.remove();
    })
    .await;
}

async fn check_future(
    check: HealthCheck,
    target: SocketAddr,
    timeout: Duration,
    env: Vec<(String, String)>,
) -> CheckOutcome {
    health::run_check(&check, target, timeout, &env).await
}

/// Awaits the running check, or never when there is none (so `select!` can poll it).
async fn poll_check(check: &mut Option<CheckFuture>) -> CheckOutcome {
    match check.as_mut() {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Whether `pid` is still the process that started at `start_ticks` (not a reused pid).
pub fn same_process(pid: i32, start_ticks: u64) -> bool {
    pid > 0 && read_proc_stat(pid).is_some_and(|s| s.start_time == start_ticks && s.state != b'Z')
}

/// Signals the process group led by `pid` (services lead their own group).
pub fn kill_group(pid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// SIGKILLs `pid` if it is still the process that started at `start_ticks`.
pub fn kill_pid(pid: i32, start_ticks: u64) {
    if same_process(pid, start_ticks)
        && let Some(pid) = Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, Signal::KILL);
    }
}

fn read_exit(dir: &Path) -> Option<ExitRecord> {
    let bytes = std::fs::read(dir.join(EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// "exited with code 3", "killed by SIGKILL (out of memory)".
pub fn describe_exit(exit: &ExitRecord, oom: bool) -> String {
    let mut text = match (exit.code, exit.signal) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!("killed by {}", signal_name(signal)),
        (None, None) => "ended".to_string(),
    };
    if exit.core_dumped {
        text.push_str(" (core dumped)");
    }
    if oom {
        text.push_str(" (out of memory: over its memory limit)");
    }
    text
}

fn exit_info(exit: &ExitRecord, oom: bool) -> ExitInfo {
    ExitInfo {
        code: exit.code,
        signal: exit.signal,
        oom_killed: oom,
        time_unix_ms: exit.exited_unix_ms,
        description: describe_exit(exit, oom),
    }
}

/// "SIGKILL" for 9, "signal 42" for one without a name.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_for_people() {
        let exit = |code, signal| ExitRecord {
            pid: 1,
            code,
            signal,
            core_dumped: false,
            exited_unix_ms: 0,
        };
        assert_eq!(
            describe_exit(&exit(Some(3), None), false),
            "exited with code 3"
        );
        assert_eq!(
            describe_exit(&exit(None, Some(9)), true),
            "killed by SIGKILL (out of memory: over its memory limit)"
        );
        assert_eq!(
            describe_exit(&exit(None, Some(64)), false),
            "killed by signal 64"
        );
    }

    #[test]
    fn port_names_become_variable_suffixes() {
        assert_eq!(env_suffix("http"), "HTTP");
        assert_eq!(env_suffix("admin-api2"), "ADMIN_API2");
    }

    #[test]
    fn a_reused_pid_is_not_the_same_process() {
        let me = std::process::id() as i32;
        let ticks = read_proc_stat(me).unwrap().start_time;
        assert!(same_process(me, ticks));
        assert!(!same_process(me, ticks + 1));
        assert!(!same_process(0, ticks));
    }
}
