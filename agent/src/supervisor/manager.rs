//! The supervisor proper: the set of services, each with its instance tasks; applying specs
//! (validate whole, store, then converge), rolling restarts, scaling, operator controls, and
//! re-adoption of what a previous agent left running.

use super::cgroup;
use super::instance::{self, Command, InstanceContext, InstanceHandle};
use super::ports::PortAllocator;
use super::spec::{HealthCheck, ServiceSpec, Signal, SpecError, check_conflicts, parse_spec};
use super::store::{Desired, Store};
use crate::events::journal::{EventDraft, Journal};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::v1::{
    ApplyAction, CatalogInstance, CatalogService, Health, InstanceState, InstanceStatus,
    ServiceStatus, Severity,
};
use thiserror::Error;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Where the supervisor keeps its state and how it runs services.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    pub data_dir: PathBuf,
    /// Directory of `*.toml` specs loaded at start, when it exists.
    pub services_dir: Option<PathBuf>,
    pub port_range: RangeInclusive<u16>,
    /// Name of the parent cgroup of every instance.
    pub cgroup_root: String,
    pub node_name: String,
    /// The binary run as `<exe> shim DIR` for each instance.
    pub shim_exe: PathBuf,
}

/// Why a supervisor request failed; each maps to one gRPC status.
#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error("{0}")]
    InvalidSpec(SpecError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
}

/// An operator's action on a service or instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Scale(u32),
    Signal(Signal),
}

/// What `apply` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub service: String,
    pub action: ApplyAction,
    pub changes: Vec<String>,
    pub applied: bool,
}

struct Service {
    spec: Arc<ServiceSpec>,
    text: String,
    desired: Desired,
    instances: BTreeMap<u32, InstanceHandle>,
    rollout: Option<JoinHandle<()>>,
}

impl Service {
    fn count(&self) -> u32 {
        self.desired.scaled_to.unwrap_or(self.spec.instances)
    }
}

/// The services of this agent and their instance tasks.
pub struct Supervisor {
    ctx: Arc<InstanceContext>,
    services: tokio::sync::Mutex<BTreeMap<String, Service>>,
}

impl Supervisor {
    /// Opens the store, re-adopts the instances a previous agent left running, starts what
    /// should run, then applies the specs found in the services dir.
    pub async fn start(
        config: SupervisorConfig,
        journal: Journal,
    ) -> anyhow::Result<Arc<Supervisor>> {
        use anyhow::Context;
        let store = Store::open(&config.data_dir).with_context(|| {
            format!(
                "cannot open the service store in {}",
                config.data_dir.display()
            )
        })?;
        let isolation = cgroup::detect(&config.cgroup_root);
        tracing::info!(isolation = %isolation.describe(), "service isolation");
        let ctx = Arc::new(InstanceContext {
            store,
            journal,
            isolation,
            ports: Mutex::new(PortAllocator::new(config.port_range.clone())),
            node_name: config.node_name.clone(),
            shim_exe: config.shim_exe.clone(),
            changes: watch::channel(0).0,
        });
        let supervisor = Arc::new(Supervisor {
            ctx: ctx.clone(),
            services: tokio::sync::Mutex::new(BTreeMap::new()),
        });
        supervisor.load_stored().await;
        if let Some(dir) = &config.services_dir {
            supervisor.load_services_dir(dir).await;
        }
        Ok(supervisor)
    }

    /// A counter that changes whenever any service or instance does: the catalog publisher
    /// waits on it instead of polling.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.ctx.changes.subscribe()
    }

    fn bump(&self) {
        self.ctx.changes.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The isolation the host allowed, in words.
    pub fn isolation(&self) -> String {
        self.ctx.isolation.describe()
    }

    fn event(&self, kind: &str, severity: Severity, subject: &str, message: String) {
        let draft = EventDraft::new(kind, severity, format!("service:{subject}"), message);
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, kind, "cannot record a service event");
        }
    }

    async fn load_stored(&self) {
        let (stored, broken) = match self.ctx.store.load_services() {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the service store");
                return;
            }
        };
        for (name, reason) in broken {
            self.event(
                "service.invalid",
                Severity::Critical,
                &name,
                format!("stored service {name} cannot be loaded: {reason}"),
            );
        }
        let mut services = self.services.lock().await;
        for stored in stored {
            let spec = match parse_spec(&stored.desired.source, &stored.text) {
                Ok(spec) => Arc::new(spec),
                Err(e) => {
                    self.event(
                        "service.invalid",
                        Severity::Critical,
                        &stored.name,
                        format!("stored spec is no longer valid: {e}"),
                    );
                    continue;
                }
            };
            let mut service = Service {
                spec: spec.clone(),
                text: stored.text,
                desired: stored.desired,
                instances: BTreeMap::new(),
                rollout: None,
            };
            let count = service.count();
            let run = !service.desired.stopped;
            for index in 1..=count {
                service.instances.insert(
                    index,
                    instance::spawn(self.ctx.clone(), spec.clone(), index, run),
                );
            }
            for index in self.ctx.store.instance_indexes(&spec.name) {
                if index > count {
                    let handle = instance::spawn(self.ctx.clone(), spec.clone(), index, false);
                    let (tx, rx) = oneshot::channel();
                    if handle.commands.send(Command::Remove(tx)).await.is_ok() {
                        let _ = rx.await;
                    }
                }
            }
            services.insert(stored.name, service);
        }
    }

    async fn load_services_dir(&self, dir: &Path) {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect(),
            Err(e) => {
                tracing::info!(dir = %dir.display(), error = %e, "no services dir loaded");
                return;
            }
        };
        files.sort();
        for file in files {
            let source = file.display().to_string();
            let result = match std::fs::read_to_string(&file) {
                Ok(text) => self.apply(&source, &text, false).await.map(|_| ()),
                Err(e) => Err(SupervisorError::Failed(format!(
                    "cannot read {source}: {e}"
                ))),
            };
            if let Err(e) = result {
                self.event(
                    "service.invalid",
                    Severity::Critical,
                    &source,
                    format!("spec not applied: {e}"),
                );
            }
        }
    }

    /// Validates `text` whole (a bad spec changes nothing), and unless `dry_run` stores it
    /// durably and converges: new services start, changed ones restart one instance at a
    /// time (each waiting for passing), a changed count scales.
    pub async fn apply(
        &self,
        source: &str,
        text: &str,
        dry_run: bool,
    ) -> Result<ApplyReport, SupervisorError> {
        let source = if source.is_empty() { "api" } else { source };
        let spec = parse_spec(source, text).map_err(SupervisorError::InvalidSpec)?;
        let mut services = self.services.lock().await;
        check_conflicts(
            &spec,
            source,
            text,
            services.values().map(|s| s.spec.as_ref()),
        )
        .map_err(SupervisorError::InvalidSpec)?;
        let name = spec.name.clone();
        let (action, changes, restart, rescale) = match services.get(&name) {
            None => (
                ApplyAction::Created,
                vec![format!("new service with {} instance(s)", spec.instances)],
                false,
                false,
            ),
            Some(old) => {
                let changes = spec_changes(&old.spec, &spec);
                let restart = needs_restart(&old.spec, &spec);
                let rescale = old.count() != spec.instances;
                let action = if changes.is_empty() && old.desired.scaled_to.is_none() {
                    ApplyAction::Unchanged
                } else {
                    ApplyAction::Updated
                };
                (
                    action,
                    changes,
                    restart,
                    rescale || old.desired.scaled_to.is_some(),
                )
            }
        };
        let mut report = ApplyReport {
            service: name.clone(),
            action,
            changes,
            applied: false,
        };
        if dry_run || action == ApplyAction::Unchanged {
            return Ok(report);
        }
        let stopped = services.get(&name).is_some_and(|s| s.desired.stopped);
        let desired = Desired {
            source: source.to_string(),
            stopped,
            scaled_to: None,
        };
        self.ctx
            .store
            .save_service(&name, text, &desired)
            .map_err(|e| {
                SupervisorError::Failed(format!("cannot store the spec of {name}: {e}"))
            })?;
        let spec = Arc::new(spec);
        match services.get_mut(&name) {
            None => {
                let mut service = Service {
                    spec: spec.clone(),
                    text: text.to_string(),
                    desired,
                    instances: BTreeMap::new(),
                    rollout: None,
                };
                for index in 1..=spec.instances {
                    service.instances.insert(
                        index,
                        instance::spawn(self.ctx.clone(), spec.clone(), index, true),
                    );
                }
                services.insert(name.clone(), service);
            }
            Some(service) => {
                service.spec = spec.clone();
                service.text = text.to_string();
                service.desired = desired;
                if rescale {
                    self.scale_instances(service).await;
                }
                let mut targets = Vec::new();
                for (index, handle) in &service.instances {
                    let _ = handle
                        .commands
                        .send(Command::UpdateSpec(spec.clone()))
                        .await;
                    targets.push((*index, handle.commands.clone(), handle.status.clone()));
                }
                if restart && !service.desired.stopped {
                    if let Some(previous) = service.rollout.take() {
                        previous.abort();
                    }
                    service.rollout = Some(tokio::spawn(rolling_restart(
                        self.ctx.journal.clone(),
                        spec.clone(),
                        targets,
                    )));
                    report.changes.push(format!(
                        "rolling restart of {} instance(s), one at a time",
                        service.instances.len()
                    ));
                }
            }
        }
        self.event(
            "service.applied",
            Severity::Info,
            &name,
            format!("spec of {name} {action} from {source}"),
        );
        self.bump();
        report.applied = true;
        Ok(report)
    }

    /// Brings the instance tasks of `service` to its count.
    async fn scale_instances(&self, service: &mut Service) {
        let count = service.count();
        let run = !service.desired.stopped;
        for index in 1..=count {
            service.instances.entry(index).or_insert_with(|| {
                instance::spawn(self.ctx.clone(), service.spec.clone(), index, run)
            });
        }
        let extra: Vec<u32> = service
            .instances
            .keys()
            .copied()
            .filter(|i| *i > count)
            .collect();
        for index in extra.into_iter().rev() {
            if let Some(handle) = service.instances.remove(&index) {
                let (tx, rx) = oneshot::channel();
                if handle.commands.send(Command::Remove(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            }
        }
    }

    /// Stops every instance of `name` and forgets its spec. Returns how many instances it had.
    pub async fn remove(&self, name: &str) -> Result<u32, SupervisorError> {
        let mut services = self.services.lock().await;
        let mut service = services.remove(name).ok_or_else(|| {
            SupervisorError::NotFound(format!("no service named {name:?} on this agent"))
        })?;
        if let Some(rollout) = service.rollout.take() {
            rollout.abort();
        }
        let count = service.instances.len() as u32;
        let mut waits = Vec::new();
        for handle in service.instances.values() {
            let (tx, rx) = oneshot::channel();
            if handle.commands.send(Command::Remove(tx)).await.is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
        self.ctx.store.remove_service(name).map_err(|e| {
            SupervisorError::Failed(format!("cannot delete the stored spec of {name}: {e}"))
        })?;
        self.event(
            "service.removed",
            Severity::Info,
            name,
            format!("service {name} removed ({count} instance(s) stopped)"),
        );
        self.bump();
        Ok(count)
    }

    /// Carries out an operator's action on a service (`instance` 0) or one instance.
    pub async fn control(
        &self,
        name: &str,
        instance: u32,
        action: Action,
    ) -> Result<String, SupervisorError> {
        let mut services = self.services.lock().await;
        let service = services.get_mut(name).ok_or_else(|| {
            SupervisorError::NotFound(format!("no service named {name:?} on this agent"))
        })?;
        if instance != 0 && !service.instances.contains_key(&instance) {
            return Err(SupervisorError::NotFound(format!(
                "service {name} has no instance {instance} (it has {})",
                service.instances.len()
            )));
        }
        if let Action::Scale(count) = action {
            if instance != 0 {
                return Err(SupervisorError::Invalid(
                    "scale applies to a whole service, not one instance".into(),
                ));
            }
            if count > super::spec::MAX_INSTANCES {
                return Err(SupervisorError::Invalid(format!(
                    "{count} is more than {} instances",
                    super::spec::MAX_INSTANCES
                )));
            }
            let before = service.count();
            service.desired.scaled_to = Some(count);
            self.ctx
                .store
                .save_desired(name, &service.desired)
                .map_err(|e| {
                    SupervisorError::Failed(format!("cannot store the new count of {name}: {e}"))
                })?;
            self.scale_instances(service).await;
            self.event(
                "service.scaled",
                Severity::Info,
                name,
                format!("{name} scaled from {before} to {count} instance(s)"),
            );
            self.bump();
            return Ok(format!(
                "{name} scaled from {before} to {count} instance(s)"
            ));
        }
        let targets: Vec<(u32, tokio::sync::mpsc::Sender<Command>)> = service
            .instances
            .iter()
            .filter(|(index, _)| instance == 0 || **index == instance)
            .map(|(index, handle)| (*index, handle.commands.clone()))
            .collect();
        if instance == 0 && matches!(action, Action::Start | Action::Stop) {
            service.desired.stopped = action == Action::Stop;
            self.ctx
                .store
                .save_desired(name, &service.desired)
                .map_err(|e| {
                    SupervisorError::Failed(format!("cannot store the state of {name}: {e}"))
                })?;
        }
        drop(services);
        let what = if instance == 0 {
            name.to_string()
        } else {
            format!("{name}/{instance}")
        };
        match action {
            Action::Start => {
                for (_, commands) in &targets {
                    let _ = commands.send(Command::Start).await;
                }
                Ok(format!("{what} starting"))
            }
            Action::Stop => {
                let mut waits = Vec::new();
                for (_, commands) in &targets {
                    let (tx, rx) = oneshot::channel();
                    if commands.send(Command::Stop(tx)).await.is_ok() {
                        waits.push(rx);
                    }
                }
                for rx in waits {
                    let _ = rx.await;
                }
                Ok(format!("{what} stopped"))
            }
            Action::Restart => {
                for (_, commands) in &targets {
                    let (tx, rx) = oneshot::channel();
                    if commands.send(Command::Restart(tx)).await.is_ok() {
                        let _ = rx.await;
                    }
                }
                Ok(format!("{what} restarted"))
            }
            Action::Signal(signal) => {
                let raw =
                    rustix::process::Signal::from_named_raw(signal.number()).ok_or_else(|| {
                        SupervisorError::Invalid(format!("{} cannot be sent", signal.label()))
                    })?;
                let mut errors = Vec::new();
                for (_, commands) in &targets {
                    let (tx, rx) = oneshot::channel();
                    if commands.send(Command::Signal(raw, tx)).await.is_ok()
                        && let Ok(Err(e)) = rx.await
                    {
                        errors.push(e);
                    }
                }
                if errors.len() == targets.len() && !errors.is_empty() {
                    return Err(SupervisorError::Failed(errors.join("; ")));
                }
                Ok(format!("{} sent to {what}", signal.label()))
            }
            Action::Scale(_) => Ok(String::new()),
        }
    }

    /// Every service with its instances.
    pub async fn list(&self) -> Vec<ServiceStatus> {
        let services = self.services.lock().await;
        services.values().map(|s| self.status_of(s)).collect()
    }

    /// This node's services as its catalog record carries them. An instance without a health
    /// check counts as passing while it runs (as in Consul); one that is stopping is draining.
    pub async fn catalog_services(&self) -> Vec<CatalogService> {
        let services = self.services.lock().await;
        services
            .values()
            .map(|service| {
                let spec = &service.spec;
                let instances = service
                    .instances
                    .values()
                    .map(|h| {
                        let s = h.status.borrow();
                        let state = s.state();
                        let health = if spec.health.is_none() && state == InstanceState::Running {
                            Health::Passing
                        } else if state.is_live() {
                            s.health()
                        } else {
                            Health::Critical
                        };
                        CatalogInstance {
                            id: s.id.clone(),
                            ports: s.ports.clone(),
                            health: health as i32,
                            version: s.version.clone(),
                            draining: state == InstanceState::Stopping,
                            state: state as i32,
                        }
                    })
                    .collect();
                CatalogService {
                    name: spec.name.clone(),
                    version: spec.version.clone(),
                    frontends: spec
                        .ports
                        .iter()
                        .filter_map(|(n, p)| p.frontend.map(|f| (n.clone(), u32::from(f))))
                        .collect(),
                    algorithm: spec.balance.algorithm as i32,
                    prefer_local: spec.balance.prefer_local,
                    tags: spec.tags.clone(),
                    instances,
                }
            })
            .collect()
    }

    /// One service with its instances.
    pub async fn get(&self, name: &str) -> Result<ServiceStatus, SupervisorError> {
        let services = self.services.lock().await;
        services
            .get(name)
            .map(|s| self.status_of(s))
            .ok_or_else(|| {
                SupervisorError::NotFound(format!("no service named {name:?} on this agent"))
            })
    }

    fn status_of(&self, service: &Service) -> ServiceStatus {
        let spec = &service.spec;
        let instances: Vec<InstanceStatus> = service
            .instances
            .values()
            .map(|h| h.status.borrow().clone())
            .collect();
        ServiceStatus {
            name: spec.name.clone(),
            version: spec.version.clone(),
            desired_instances: service.count(),
            passing: instances.iter().filter(|i| i.health().is_passing()).count() as u32,
            restarts: instances.iter().map(|i| i.restarts).sum(),
            instances,
            frontend_ports: spec
                .ports
                .iter()
                .filter_map(|(name, p)| p.frontend.map(|f| (name.clone(), u32::from(f))))
                .collect(),
            source: service.desired.source.clone(),
            stopped: service.desired.stopped,
            node: self.ctx.node_name.clone(),
            tags: spec.tags.clone(),
            health_check: describe_health(spec),
        }
    }

    /// The log directories of a service's instances (all, or one): (instance id, dir).
    pub async fn log_dirs(
        &self,
        name: &str,
        instance: u32,
    ) -> Result<Vec<(String, PathBuf)>, SupervisorError> {
        let services = self.services.lock().await;
        let service = services.get(name).ok_or_else(|| {
            SupervisorError::NotFound(format!("no service named {name:?} on this agent"))
        })?;
        if instance != 0 && !service.instances.contains_key(&instance) {
            return Err(SupervisorError::NotFound(format!(
                "service {name} has no instance {instance}"
            )));
        }
        Ok(service
            .instances
            .keys()
            .filter(|i| instance == 0 || **i == instance)
            .map(|i| (format!("{name}/{i}"), self.ctx.store.log_dir(name, *i)))
            .collect())
    }

    /// Ends every instance task and leaves the services running, for the agent's shutdown:
    /// the next agent re-adopts them.
    pub async fn detach_all(&self) {
        let mut services = self.services.lock().await;
        for service in services.values_mut() {
            if let Some(rollout) = service.rollout.take() {
                rollout.abort();
            }
            for handle in service.instances.values() {
                let _ = handle.commands.send(Command::Detach).await;
            }
        }
        services.clear();
    }
}

/// Restarts instances one at a time, each waiting until it runs and passes its health
/// check before the next; stops (with an event) when one does not come back.
async fn rolling_restart(
    journal: Journal,
    spec: Arc<ServiceSpec>,
    targets: Vec<(
        u32,
        tokio::sync::mpsc::Sender<Command>,
        tokio::sync::watch::Receiver<InstanceStatus>,
    )>,
) {
    let budget = spec
        .health
        .as_ref()
        .map(|h| h.grace + h.interval * (h.rise + h.fall + 2))
        .unwrap_or(Duration::from_secs(5))
        + Duration::from_secs(30);
    for (index, commands, mut status) in targets {
        let (tx, rx) = oneshot::channel();
        if commands.send(Command::Restart(tx)).await.is_err() || rx.await.is_err() {
            continue;
        }
        let ready = tokio::time::timeout(budget, async {
            loop {
                {
                    let s = status.borrow_and_update();
                    let healthy = spec.health.is_none() || s.health().is_passing();
                    if s.state() == InstanceState::Running && healthy {
                        return true;
                    }
                }
                if status.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        if !matches!(ready, Ok(true)) {
            let draft = EventDraft::new(
                "service.rollout_stalled",
                Severity::Critical,
                format!("service:{}/{index}", spec.name),
                format!(
                    "rolling restart of {} stopped: instance {index} did not become passing within {}",
                    spec.name,
                    humantime::format_duration(budget)
                ),
            );
            let _ = journal.append(draft);
            return;
        }
    }
}

/// Whether the running processes must restart for the new spec to take effect.
fn needs_restart(old: &ServiceSpec, new: &ServiceSpec) -> bool {
    old.command != new.command
        || old.env != new.env
        || old.workdir != new.workdir
        || old.ports != new.ports
        || old.resources != new.resources
        || old.logs != new.logs
        || old.version != new.version
}

/// The differences between two specs, one line each, for people.
pub fn spec_changes(old: &ServiceSpec, new: &ServiceSpec) -> Vec<String> {
    let mut changes = Vec::new();
    let mut field = |name: &str, differs: bool, detail: String| {
        if differs {
            changes.push(format!("{name}: {detail}"));
        }
    };
    field(
        "version",
        old.version != new.version,
        format!("{} -> {}", old.version, new.version),
    );
    field(
        "command",
        old.command != new.command,
        format!("{:?} -> {:?}", old.command, new.command),
    );
    field(
        "instances",
        old.instances != new.instances,
        format!("{} -> {}", old.instances, new.instances),
    );
    field("env", old.env != new.env, "changed".into());
    field(
        "workdir",
        old.workdir != new.workdir,
        format!("{:?} -> {:?}", old.workdir, new.workdir),
    );
    field("ports", old.ports != new.ports, "changed".into());
    field("health", old.health != new.health, "changed".into());
    field("restart", old.restart != new.restart, "changed".into());
    field("stop", old.stop != new.stop, "changed".into());
    field(
        "resources",
        old.resources != new.resources,
        "changed".into(),
    );
    field("logs", old.logs != new.logs, "changed".into());
    field(
        "tags",
        old.tags != new.tags,
        format!("{:?} -> {:?}", old.tags, new.tags),
    );
    changes
}

/// The health check in words, for the API.
fn describe_health(spec: &ServiceSpec) -> String {
    let Some(h) = &spec.health else {
        return "none".into();
    };
    let port = h
        .port
        .clone()
        .or_else(|| spec.ports.keys().next().cloned())
        .map(|p| format!(" on port {p}"))
        .unwrap_or_default();
    let check = match &h.check {
        HealthCheck::Http { path } => format!("http {path}{port}"),
        HealthCheck::Tcp => format!("tcp{port}"),
        HealthCheck::Exec { command } => format!("exec {}", command.join(" ")),
    };
    format!("{check} every {}", humantime::format_duration(h.interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ServiceSpec {
        parse_spec("t.toml", text).unwrap()
    }

    #[test]
    fn changes_and_restart_needs_are_told_apart() {
        let a = spec("name = \"a\"\ncommand = [\"/bin/sleep\", \"1\"]\ninstances = 1\n");
        let scaled = spec("name = \"a\"\ncommand = [\"/bin/sleep\", \"1\"]\ninstances = 3\n");
        let changed = spec("name = \"a\"\ncommand = [\"/bin/sleep\", \"2\"]\ninstances = 1\n");
        assert_eq!(
            spec_changes(&a, &scaled),
            vec!["instances: 1 -> 3".to_string()]
        );
        assert!(!needs_restart(&a, &scaled));
        assert!(needs_restart(&a, &changed));
        assert!(spec_changes(&a, &a).is_empty());
    }
}
