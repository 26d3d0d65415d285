//! The supervisor proper: the services of this agent, each owned by its own task
//! ([`super::service`]). It validates and routes: a spec is parsed and checked whole (a bad
//! one changes nothing), what it changes is decided by [`plan_apply`], and the service's
//! task stores it and converges. Reads come from each service's published view and never
//! wait for a stop.

use super::cgroup;
use super::detached::{self, Pids, StopRule, Target};
use super::frontends::{AgentPorts, check_cluster_claims, check_frontends};
use super::instance::InstanceContext;
use super::plan::plan_apply;
use super::ports::PortAllocator;
use super::rediscover::{self, Verdict};
pub use super::service::InstanceAction;
use super::service::{self, NewService, Registry, ServiceCommand, ServiceHandle, ServiceView};
use super::spec::{
    HealthCheck, RestartPolicy, ServiceSpec, SpecError, check_conflicts, check_exec_size,
    parse_spec,
};
use super::store::{Damage, Desired, Loaded, Store};
use crate::events::journal::{EventDraft, Journal};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use strata_proto::v1::{
    ApplyAction, CatalogInstance, CatalogService, Health, InstanceState, ServiceStatus, Severity,
};
use strata_registry::table::ServiceTable;
use thiserror::Error;
use tokio::sync::{Semaphore, oneshot, watch};

/// Instances of this agent that may be stopping (signalled and awaited) at once.
const PARALLEL_STOPS: usize = 64;

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
    /// The `strata-shim` binary, run as `<shim_exe> DIR` for each instance.
    pub shim_exe: PathBuf,
    /// The address the catalog publishes for this node: every instance is told it
    /// (`STRATA_IP`) and HTTP and TCP checks dial it, so what is checked is what gets traffic.
    pub service_ip: IpAddr,
    /// The agent's own ports known at start (gRPC API, HTTP, and gossip and DNS when
    /// configured with a fixed port), which no frontend may take; the rest come with
    /// [`Supervisor::attach_catalog`].
    pub agent_ports: AgentPorts,
}

/// Why a supervisor request failed; each maps to one gRPC status.
#[derive(Debug, Clone, Error)]
pub enum SupervisorError {
    #[error("{0}")]
    InvalidSpec(SpecError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// The service is in a state that does not allow it now (being removed).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// An operator's action on a service or instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start, stop, restart or signal instances.
    Instance(InstanceAction),
    /// Run this many instances of the whole service.
    Scale(u32),
}

/// What `apply` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub service: String,
    pub action: ApplyAction,
    pub changes: Vec<String>,
    pub applied: bool,
}

/// The services of this agent and their tasks.
pub struct Supervisor {
    ctx: Arc<InstanceContext>,
    services: Registry,
    /// Applies one at a time, so two of the same new name cannot both create it. Held only
    /// while a spec is checked, stored and handed over, never across a stop.
    applying: tokio::sync::Mutex<()>,
    next_id: AtomicU64,
    /// The backend port range, which no frontend may fall into.
    port_range: RangeInclusive<u16>,
    /// The agent's own ports, which no frontend may take.
    agent_ports: RwLock<AgentPorts>,
    /// The cluster's service table, once gossip runs: an apply may not claim a frontend
    /// port another service is served on anywhere.
    catalog: OnceLock<watch::Receiver<Arc<ServiceTable>>>,
    /// The services-dir files that define each name, as of the last load of the dir: they
    /// own it, and `apply` and `remove` through the API are refused for it.
    file_owners: RwLock<BTreeMap<String, Vec<String>>>,
    /// Whether the services dir was loaded since the agent started.
    dir_loaded: std::sync::atomic::AtomicBool,
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
            service_ip: config.service_ip,
            shim_exe: config.shim_exe.clone(),
            changes: watch::channel(0).0,
            published: watch::channel(0).0,
            stop_slots: Arc::new(Semaphore::new(PARALLEL_STOPS)),
        });
        let supervisor = Arc::new(Supervisor {
            ctx,
            services: Arc::new(RwLock::new(BTreeMap::new())),
            applying: tokio::sync::Mutex::new(()),
            next_id: AtomicU64::new(1),
            port_range: config.port_range.clone(),
            agent_ports: RwLock::new(config.agent_ports.clone()),
            catalog: OnceLock::new(),
            file_owners: RwLock::new(BTreeMap::new()),
            dir_loaded: std::sync::atomic::AtomicBool::new(false),
        });
        supervisor.load_stored().await;
        if let Some(dir) = &config.services_dir
            && let Err(e) = supervisor.load_services_dir(dir).await
        {
            tracing::info!(dir = %dir.display(), error = %e, "no services dir loaded");
        }
        Ok(supervisor)
    }

    /// Gives the supervisor the cluster's service table, once gossip runs, and the agent's
    /// ports bound since it started (gossip, DNS): from now on an apply is checked against
    /// the frontend ports the catalog serves and against every port of the agent.
    pub fn attach_catalog(&self, catalog: watch::Receiver<Arc<ServiceTable>>, ports: AgentPorts) {
        self.agent_ports
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(ports);
        if self.catalog.set(catalog).is_err() {
            tracing::warn!("the supervisor was given the catalog twice; keeping the first");
        }
    }

    /// A counter that changes whenever any service or instance does: the catalog publisher
    /// waits on it instead of polling.
    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.ctx.changes.subscribe()
    }

    /// Told by the catalog publisher that every change up to `generation` (a value of
    /// [`Supervisor::subscribe_changes`]) is in the catalog: stopping instances wait for
    /// their draining to be published before they are signalled.
    pub fn mark_published(&self, generation: u64) {
        self.ctx.published.send_if_modified(|p| {
            let newer = generation > *p;
            if newer {
                *p = generation;
            }
            newer
        });
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ServiceHandle>> {
        self.services.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every service's current view, by name.
    fn views(&self) -> Vec<Arc<ServiceView>> {
        self.read()
            .values()
            .map(|h| h.view.borrow().clone())
            .collect()
    }

    fn handle(&self, name: &str) -> Result<ServiceHandle, SupervisorError> {
        self.read()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Starts the task of a stored service and lists it.
    fn adopt(&self, spec: Arc<ServiceSpec>, desired: Desired, existing: Vec<u32>) {
        self.spawn_service(spec, desired, existing, None);
    }

    /// Starts the task of a service, held unmanaged when `unmanaged` says why, and lists it.
    fn spawn_service(
        &self,
        spec: Arc<ServiceSpec>,
        desired: Desired,
        existing: Vec<u32>,
        unmanaged: Option<String>,
    ) {
        let new = NewService {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            spec,
            desired,
            existing,
            unmanaged,
        };
        let name = new.spec.name.clone();
        let handle = service::spawn(self.ctx.clone(), self.services.clone(), new);
        self.services
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, handle);
    }

    /// Takes up every stored service: a damaged file is recovered from its previous copy
    /// (a warning naming it), and a service whose spec or desired state is lost is held
    /// unmanaged (a critical event naming the file): its instances are watched, nothing new
    /// starts, until its spec is applied again.
    async fn load_stored(&self) {
        let check = |text: &str| {
            parse_spec("spec.toml", text)
                .map(drop)
                .map_err(|e| e.to_string())
        };
        let stored = match self.ctx.store.load_services(check) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the service store");
                return;
            }
        };
        for stored in stored {
            let name = stored.name.clone();
            self.report_recovered(&name, &stored.spec);
            self.report_recovered(&name, &stored.desired);
            let desired = stored.desired.value().cloned().unwrap_or_default();
            let spec = stored.spec.value().and_then(|text| {
                let source = match desired.source.as_str() {
                    "" => self.ctx.store.spec_path(&name).display().to_string(),
                    source => source.to_string(),
                };
                parse_spec(&source, text).ok()
            });
            self.rediscover(&name, spec.as_ref()).await;
            let existing = self.ctx.store.instance_indexes(&name);
            let lost = [stored.spec.lost(), stored.desired.lost()]
                .into_iter()
                .flatten()
                .next();
            match (spec, lost) {
                (Some(spec), None) => self.adopt(Arc::new(spec), desired, existing),
                (spec, lost) => {
                    let damage = lost.cloned().unwrap_or_else(|| Damage {
                        path: self.ctx.store.spec_path(&name),
                        reason: "it no longer parses".into(),
                    });
                    self.hold_unmanaged(&name, spec, desired, &damage);
                }
            }
        }
        self.rediscover_unknown_services().await;
    }

    /// Services whose whole directory is gone while their shims run (found by the shims'
    /// argv): their instances are adopted or stopped as for a lost record, and what was
    /// adopted is held unmanaged, visible and supervised, until the spec is applied again.
    async fn rediscover_unknown_services(&self) {
        let known: BTreeSet<String> = self.read().keys().cloned().collect();
        let procs = rediscover::scan_proc();
        let shim_name = self.ctx.shim_exe.file_name().unwrap_or_default();
        let root = self.ctx.store.services_root();
        for name in rediscover::unknown_services(&procs, root, shim_name, &known) {
            self.rediscover(&name, None).await;
            let store = &self.ctx.store;
            let adopted = store
                .instance_indexes(&name)
                .into_iter()
                .any(|i| store.load_instance(&name, i).is_some());
            if adopted {
                let damage = Damage {
                    path: root.join(&name),
                    reason: "the directory is missing while instances of the service still run"
                        .into(),
                };
                self.hold_unmanaged(&name, None, Desired::default(), &damage);
            }
        }
    }

    /// Finds the live instances of `name` that have no record (a deleted `instance.json` or
    /// `instances/`) by their cgroup and shim, and adopts each (writing its record again) or,
    /// when that cannot be rebuilt, stops it; either way an event says which and why. The
    /// instance tasks then adopt what has a record, so nothing runs twice.
    async fn rediscover(&self, name: &str, spec: Option<&ServiceSpec>) {
        let store = &self.ctx.store;
        let recorded: BTreeSet<u32> = store
            .instance_indexes(name)
            .into_iter()
            .filter(|i| store.load_instance(name, *i).is_some())
            .collect();
        let isolation = &self.ctx.isolation;
        let prefix = format!("{name}-");
        let groups: BTreeMap<String, Vec<i32>> = isolation
            .group_names()
            .into_iter()
            .filter(|g| g.starts_with(&prefix))
            .filter_map(|g| {
                let pids = isolation.open(&g).ok()?.pids();
                Some((g, pids))
            })
            .collect();
        let instances_dir = store.instances_dir(name);
        let procs = rediscover::scan_proc();
        let shim_name = self.ctx.shim_exe.file_name().unwrap_or_default();
        let found = rediscover::find(&rediscover::Look {
            name,
            instances_dir: &instances_dir,
            shim_name,
            recorded: &recorded,
            groups: &groups,
            procs: &procs,
            boot_unix_ms: rediscover::boot_unix_ms(),
            ticks_per_second: procfs::ticks_per_second().max(1),
        });
        let ports: Option<Vec<String>> = spec.map(|s| s.ports.keys().cloned().collect());
        let rule = spec.map_or_else(StopRule::default, |s| StopRule {
            signal: s.stop.signal,
            timeout: s.stop.timeout,
        });
        let mut to_stop = Vec::new();
        for found in found {
            let index = found.index;
            let record_path = store.instance_dir(name, index).join("instance.json");
            let lost = format!(
                "{name}/{index} had no instance record ({}) but was found running by {}",
                record_path.display(),
                found.how()
            );
            let verdict = rediscover::decide(&found, ports.as_deref());
            let verdict = match verdict {
                Verdict::Adopt(record) => match store.save_instance(name, index, &record) {
                    Ok(()) => {
                        let message = format!(
                            "{lost} (shim pid {}, pid {}): adopted, its record rebuilt",
                            record.shim_pid, record.pid
                        );
                        self.rediscovery_event(
                            name,
                            index,
                            Severity::Warning,
                            message,
                            &record_path,
                        );
                        continue;
                    }
                    Err(e) => format!("its record cannot be written again: {e}"),
                },
                Verdict::Stop(why) => why,
            };
            let (pid, start_ticks) = found.service.unwrap_or((0, 0));
            let (shim_pid, shim_start_ticks) = found.shim.unwrap_or((0, 0));
            let target = Target {
                service: name.to_string(),
                index,
                pids: Pids {
                    pid,
                    start_ticks,
                    shim_pid,
                    shim_start_ticks,
                },
                rule,
                unrecorded: None,
            };
            to_stop.push((target, format!("{lost}; it cannot be adopted: {verdict}")));
        }
        if to_stop.is_empty() {
            return;
        }
        let targets: Vec<Target> = to_stop.iter().map(|(t, _)| t.clone()).collect();
        let outcomes = tokio::task::spawn_blocking(move || detached::stop_all(&targets))
            .await
            .unwrap_or_default();
        for ((target, why), (outcome, _)) in to_stop.iter().zip(outcomes) {
            let how = target
                .describe(outcome)
                .unwrap_or_else(|| "it had ended meanwhile".into());
            let record_path = store.instance_dir(name, target.index).join("instance.json");
            let message = format!("{why}; stopped: {how}");
            self.rediscovery_event(
                name,
                target.index,
                Severity::Critical,
                message,
                &record_path,
            );
        }
    }

    fn rediscovery_event(
        &self,
        name: &str,
        index: u32,
        severity: Severity,
        message: String,
        record: &Path,
    ) {
        tracing::warn!(service = name, index, "{message}");
        let draft = EventDraft::new(
            "service.rediscovered",
            severity,
            format!("service:{name}/{index}"),
            message,
        )
        .field("service", name.to_string())
        .field("instance", index.to_string())
        .field("file", record.display().to_string());
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, "cannot record a service event");
        }
    }

    /// Records that a stored file was damaged and its previous copy used.
    fn report_recovered<T>(&self, name: &str, loaded: &Loaded<T>) {
        let Loaded::Recovered {
            damage,
            from,
            moved_to,
            ..
        } = loaded
        else {
            return;
        };
        let kept = moved_to
            .as_ref()
            .map(|m| format!("; the damaged file was moved to {}", m.display()))
            .unwrap_or_default();
        let message = format!(
            "{} is damaged ({}); the previous good copy {} was used and put back{kept}",
            damage.path.display(),
            damage.reason,
            from.display()
        );
        tracing::warn!(service = name, "{message}");
        let draft = EventDraft::new(
            "service.recovered",
            Severity::Warning,
            format!("service:{name}"),
            message,
        )
        .field("file", damage.path.display().to_string());
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, "cannot record a service event");
        }
    }

    /// Holds `name` unmanaged: the instances its records name are watched (and can be
    /// stopped), none is started, until a spec of that name is applied. `spec`, when it is
    /// readable, still gives checks, stop rules and frontends; without it a stand-in names
    /// the service and never restarts anything.
    fn hold_unmanaged(
        &self,
        name: &str,
        spec: Option<ServiceSpec>,
        desired: Desired,
        damage: &Damage,
    ) {
        let why = format!("{} is damaged: {}", damage.path.display(), damage.reason);
        let records: Vec<(u32, String)> = self
            .ctx
            .store
            .instance_indexes(name)
            .into_iter()
            .filter_map(|i| Some((i, self.ctx.store.load_instance(name, i)?.version)))
            .collect();
        let spec = match spec {
            Some(spec) => spec,
            None => {
                match stand_in_spec(name, &records) {
                    Some(spec) => spec,
                    None => {
                        self.event(
                        "service.unmanaged",
                        Severity::Critical,
                        name,
                        format!("{why}; {name:?} cannot even be named as a service, so it is left alone"),
                    );
                        return;
                    }
                }
            }
        };
        let mut spec = spec;
        spec.restart.policy = RestartPolicy::Never;
        let message = format!(
            "service {name} is held unmanaged: {why}; its {} running instance(s) are still supervised but nothing is started or restarted until its spec is applied again (strata apply)",
            records.len()
        );
        tracing::error!(service = name, "{message}");
        let damaged = damage.path.display().to_string();
        let draft = EventDraft::new(
            "service.unmanaged",
            Severity::Critical,
            format!("service:{name}"),
            message,
        )
        .field("file", damaged);
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, "cannot record a service event");
        }
        let existing = records.into_iter().map(|(i, _)| i).collect();
        self.spawn_service(Arc::new(spec), desired, existing, Some(why));
    }

    /// Applies every `*.toml` spec in `dir`, in name order, as at start and on a reload
    /// (SIGHUP). The files own the names they define: a name defined by two files is applied
    /// from neither (the service keeps its current spec), and while a file defines a name,
    /// `apply` and `remove` through the API are refused for it. A name no file defines any
    /// more stays as it is, managed through the API from now on. An unchanged file changes
    /// nothing (not even an operator's scale). A spec that cannot be applied is recorded as
    /// `service.invalid` and changes nothing. Returns each file's outcome, or why the dir
    /// cannot be read.
    pub async fn load_services_dir(
        &self,
        dir: &Path,
    ) -> std::io::Result<Vec<(String, Result<ApplyReport, SupervisorError>)>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let read: Vec<DirFile> = files
            .iter()
            .map(|file| {
                let source = file.display().to_string();
                let text = std::fs::read_to_string(file).map_err(|e| e.to_string());
                let name = text.as_deref().ok().and_then(spec_name);
                DirFile { source, text, name }
            })
            .collect();
        let previous = self
            .file_owners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let owners = file_owners(&read, &previous);
        *self
            .file_owners
            .write()
            .unwrap_or_else(PoisonError::into_inner) = owners.clone();
        self.report_released(dir, &read, &previous, &owners);

        let mut outcomes = Vec::with_capacity(read.len());
        let mut reported = std::collections::BTreeSet::new();
        for DirFile { source, text, name } in read {
            let defined_by = name.as_ref().and_then(|n| owners.get(n));
            let result = match (&text, defined_by) {
                (Err(e), _) => Err(SupervisorError::Failed(format!(
                    "cannot read {source}: {e}"
                ))),
                (Ok(_), Some(files)) if files.len() > 1 => Err(SupervisorError::Conflict(format!(
                    "service {:?} is defined by more than one services-dir file ({}): \
                         none of them is applied and the service keeps its current spec; \
                         keep one, then reload the agent",
                    name.as_deref().unwrap_or_default(),
                    files.join(", ")
                ))),
                (Ok(text), _) => self.apply_checked(&source, text, false, true).await,
            };
            if let Err(e) = &result {
                let subject = name.clone().unwrap_or_else(|| source.clone());
                if reported.insert(subject.clone()) {
                    self.event(
                        "service.invalid",
                        Severity::Critical,
                        &subject,
                        format!("spec not applied: {e}"),
                    );
                }
            }
            outcomes.push((source, result));
        }
        Ok(outcomes)
    }

    /// Records `service.released` for each service no services-dir file defines any more:
    /// on a reload, a name the previous load owned; at start, a service stored from a file
    /// of `dir` that is gone.
    fn report_released(
        &self,
        dir: &Path,
        read: &[DirFile],
        previous: &BTreeMap<String, Vec<String>>,
        owners: &BTreeMap<String, Vec<String>>,
    ) {
        let first = !self.dir_loaded.swap(true, Ordering::Relaxed);
        let mut released: BTreeMap<String, String> = previous
            .iter()
            .filter(|(name, _)| !owners.contains_key(*name))
            .map(|(name, files)| (name.clone(), files.join(", ")))
            .collect();
        if first {
            let present: Vec<&str> = read.iter().map(|f| f.source.as_str()).collect();
            for view in self.views() {
                let source = &view.desired.source;
                let from_dir = Path::new(source).parent() == Some(dir);
                if from_dir
                    && !present.contains(&source.as_str())
                    && !owners.contains_key(&view.spec.name)
                {
                    released.insert(view.spec.name.clone(), source.clone());
                }
            }
        }
        for (name, files) in released {
            self.event(
                "service.released",
                Severity::Warning,
                &name,
                format!(
                    "service {name} is no longer defined in the services dir ({files} is gone): \
                     it keeps running as it is, and `strata apply` and `strata remove` manage \
                     it from now on"
                ),
            );
        }
    }

    /// Refuses a change through the API to a service a services-dir file owns, saying how
    /// to change it.
    fn refuse_if_file_owned(&self, name: &str, verb: &str) -> Result<(), SupervisorError> {
        let owners = self
            .file_owners
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(files) = owners.get(name) else {
            return Ok(());
        };
        let how = if verb == "remove" {
            "to remove it, delete or move away that file and reload the agent (`systemctl \
             reload strata-agent`, or SIGHUP), then `strata remove` it"
        } else {
            "edit that file, then reload the agent (`systemctl reload strata-agent`, or SIGHUP)"
        };
        Err(SupervisorError::Conflict(format!(
            "cannot {verb} service {name:?} through the API: the services-dir file {} \
             defines it and owns it; {how}",
            files.join(" and ")
        )))
    }

    /// Validates `text` whole (a bad spec changes nothing), and unless `dry_run` stores it
    /// durably and converges: new services start; a changed one takes live changes at
    /// once and has its instances replaced, health-gated (`rollout`), when its processes
    /// must change; a changed count scales in the background. A spec whose update failed
    /// is tried again when applied again.
    ///
    /// This is the API's apply: a service a services-dir file owns is refused.
    pub async fn apply(
        &self,
        source: &str,
        text: &str,
        dry_run: bool,
    ) -> Result<ApplyReport, SupervisorError> {
        self.apply_checked(source, text, dry_run, false).await
    }

    /// [`Supervisor::apply`], from a services-dir file (`from_file`: it owns the name, and
    /// an unchanged spec is not applied again) or from the API.
    async fn apply_checked(
        &self,
        source: &str,
        text: &str,
        dry_run: bool,
        from_file: bool,
    ) -> Result<ApplyReport, SupervisorError> {
        let source = if source.is_empty() { "api" } else { source };
        let spec = parse_spec(source, text).map_err(SupervisorError::InvalidSpec)?;
        check_exec_size(&spec, source, text, arg_max()).map_err(SupervisorError::InvalidSpec)?;
        {
            let agent_ports = self
                .agent_ports
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            check_frontends(&spec, source, text, &agent_ports, &self.port_range)
                .map_err(SupervisorError::InvalidSpec)?;
        }
        let _applying = self.applying.lock().await;
        if !from_file {
            self.refuse_if_file_owned(&spec.name, "apply")?;
        }
        let views = self.views();
        check_conflicts(&spec, source, text, views.iter().map(|v| v.spec.as_ref()))
            .map_err(SupervisorError::InvalidSpec)?;
        let name = spec.name.clone();
        let existing = self.read().get(&name).cloned();
        let current = existing.as_ref().map(|h| h.view.borrow().spec.clone());
        let catalog = self
            .catalog
            .get()
            .map(|table| table.borrow().clone())
            .unwrap_or_default();
        check_cluster_claims(
            &spec,
            source,
            text,
            current.as_deref(),
            &catalog,
            &self.ctx.node_name,
        )
        .map_err(SupervisorError::InvalidSpec)?;
        let Some(handle) = existing else {
            let mut report = ApplyReport {
                service: name.clone(),
                action: ApplyAction::Created,
                changes: vec![format!("new service with {} instance(s)", spec.instances)],
                applied: false,
            };
            if dry_run {
                return Ok(report);
            }
            let desired = Desired {
                source: source.to_string(),
                stopped: false,
                scaled_to: None,
            };
            self.ctx
                .store
                .save_service(&name, text, &desired)
                .map_err(|e| {
                    SupervisorError::Failed(format!("cannot store the spec of {name}: {e}"))
                })?;
            self.adopt(Arc::new(spec), desired, Vec::new());
            self.event(
                "service.applied",
                Severity::Info,
                &name,
                format!("spec of {name} created from {source}"),
            );
            report.applied = true;
            return Ok(report);
        };
        let view = handle.view.borrow().clone();
        if view.removing {
            return Err(SupervisorError::Conflict(format!(
                "service {name} is being removed; apply it again once the removal has finished"
            )));
        }
        let plan = plan_apply(&view.spec, &spec);
        let scaled = view.desired.scaled_to.is_some_and(|n| n != spec.instances);
        // The same spec again after its update failed: another try.
        let retry = view.update_failed.is_some();
        // A services-dir file read again (agent start, reload) is applied only when its spec
        // changed: an operator's scale stays, and nothing restarts.
        let again = plan.is_empty() && (from_file || (!scaled && !retry));
        let mut report = ApplyReport {
            service: name.clone(),
            action: if again {
                ApplyAction::Unchanged
            } else {
                ApplyAction::Updated
            },
            changes: plan.lines(),
            applied: false,
        };
        if scaled && !again {
            report.changes.push(format!(
                "instances: {} (scaled) -> {} (the spec's)",
                view.count(),
                spec.instances
            ));
        }
        if dry_run || report.action == ApplyAction::Unchanged {
            return Ok(report);
        }
        let (reply, done) = oneshot::channel();
        let command = ServiceCommand::Update {
            spec: Arc::new(spec),
            text: text.to_string(),
            source: source.to_string(),
            plan,
            reply,
        };
        let notes = ask(&handle, &name, command, done).await??;
        report.changes.extend(notes);
        report.applied = true;
        Ok(report)
    }

    /// Stops every instance of `name` and forgets its spec. Returns how many instances it had.
    /// A service a services-dir file owns is refused.
    pub async fn remove(&self, name: &str) -> Result<u32, SupervisorError> {
        let handle = self.handle(name)?;
        {
            let _applying = self.applying.lock().await;
            self.refuse_if_file_owned(name, "remove")?;
        }
        let (reply, done) = oneshot::channel();
        ask(&handle, name, ServiceCommand::Remove { reply }, done).await?
    }

    /// Carries out an operator's action on a service (`instance` 0) or one instance.
    pub async fn control(
        &self,
        name: &str,
        instance: u32,
        action: Action,
    ) -> Result<String, SupervisorError> {
        let handle = self.handle(name)?;
        let (reply, done) = oneshot::channel();
        let command = match action {
            Action::Scale(count) => {
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
                ServiceCommand::Scale { count, reply }
            }
            Action::Instance(action) => ServiceCommand::Control {
                instance,
                action,
                reply,
            },
        };
        ask(&handle, name, command, done).await?
    }

    /// Every service with its instances.
    pub fn list(&self) -> Vec<ServiceStatus> {
        self.views()
            .iter()
            .map(|v| status_of(v, &self.ctx.node_name))
            .collect()
    }

    /// This node's services as its catalog record carries them. An instance without a health
    /// check counts as passing while it runs (as in Consul); one that is stopping is draining.
    pub fn catalog_services(&self) -> Vec<CatalogService> {
        self.views().iter().map(|v| catalog_service(v)).collect()
    }

    /// One service with its instances.
    pub fn get(&self, name: &str) -> Result<ServiceStatus, SupervisorError> {
        let view = self.handle(name)?.view.borrow().clone();
        Ok(status_of(&view, &self.ctx.node_name))
    }

    /// The log directories of a service's instances (all, or one): (instance id, dir).
    pub fn log_dirs(
        &self,
        name: &str,
        instance: u32,
    ) -> Result<Vec<(String, PathBuf)>, SupervisorError> {
        let view = self.handle(name)?.view.borrow().clone();
        if instance != 0 && !view.instances.contains_key(&instance) {
            return Err(SupervisorError::NotFound(format!(
                "service {name} has no instance {instance}"
            )));
        }
        Ok(view
            .instances
            .keys()
            .filter(|i| instance == 0 || **i == instance)
            .map(|i| (format!("{name}/{i}"), self.ctx.store.log_dir(name, *i)))
            .collect())
    }

    /// Ends every service and instance task and leaves the services running, for the
    /// agent's shutdown: the next agent re-adopts them.
    pub async fn detach_all(&self) {
        let handles: Vec<ServiceHandle> = std::mem::take(
            &mut *self
                .services
                .write()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_values()
        .collect();
        for handle in handles {
            let (reply, done) = oneshot::channel();
            if handle
                .commands
                .send(ServiceCommand::Detach { reply })
                .await
                .is_ok()
            {
                let _ = done.await;
            }
        }
    }
}

/// One `*.toml` file of the services dir as read: its text (or why it cannot be read) and
/// the service name it defines, when that can be read.
struct DirFile {
    source: String,
    text: Result<String, String>,
    name: Option<String>,
}

/// The `name` a spec text sets, read leniently (the rest of the spec may be invalid): a file
/// owns the name it defines even while its spec is wrong.
fn spec_name(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    table.get("name")?.as_str().map(str::to_string)
}

/// Which files define each name. A file whose name cannot be read (unreadable, not TOML)
/// keeps the names it defined at the previous load, so a typo in a file does not hand its
/// service over to the API.
fn file_owners(
    files: &[DirFile],
    previous: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Vec<String>> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in files {
        match &file.name {
            Some(name) => owners
                .entry(name.clone())
                .or_default()
                .push(file.source.clone()),
            None => {
                for (name, sources) in previous {
                    if sources.contains(&file.source) {
                        owners
                            .entry(name.clone())
                            .or_default()
                            .push(file.source.clone());
                    }
                }
            }
        }
    }
    owners
}

/// The kernel's limit on a program's arguments plus environment for this process (and the
/// shims it starts): `sysconf(_SC_ARG_MAX)`, or the historical 128 KiB if it will not say.
fn arg_max() -> usize {
    // SAFETY: sysconf takes an integer and only reads system settings.
    let value = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    usize::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .unwrap_or(131_072)
}

fn not_found(name: &str) -> SupervisorError {
    SupervisorError::NotFound(format!("no service named {name:?} on this agent"))
}

/// Sends `command` to a service's task and waits for its answer.
async fn ask<T>(
    handle: &ServiceHandle,
    name: &str,
    command: ServiceCommand,
    done: oneshot::Receiver<T>,
) -> Result<T, SupervisorError> {
    if handle.commands.send(command).await.is_err() {
        return Err(not_found(name));
    }
    done.await.map_err(|_| not_found(name))
}

fn status_of(view: &ServiceView, node: &str) -> ServiceStatus {
    let spec = &view.spec;
    let instances: Vec<_> = view
        .instances
        .values()
        .map(|status| status.borrow().clone())
        .collect();
    ServiceStatus {
        name: spec.name.clone(),
        version: spec.version.clone(),
        desired_instances: view.count(),
        passing: instances.iter().filter(|i| i.health().is_passing()).count() as u32,
        restarts: instances.iter().map(|i| i.restarts).sum(),
        instances,
        frontend_ports: frontends(spec),
        source: view.desired.source.clone(),
        stopped: view.desired.stopped,
        node: node.to_string(),
        tags: spec.tags.clone(),
        health_check: describe_health(spec),
        unmanaged: view.unmanaged.clone().unwrap_or_default(),
    }
}

/// What an unmanaged service whose spec is lost runs under: its name, the version its
/// instances recorded, as many instances as they are, and no restarts; `None` when `name`
/// is not a service name.
fn stand_in_spec(name: &str, records: &[(u32, String)]) -> Option<ServiceSpec> {
    let text = format!("name = {name:?}\ncommand = [\"(unmanaged: its spec is lost)\"]\n");
    let mut spec = parse_spec("(stand-in)", &text).ok()?;
    spec.version = records.first().map(|(_, v)| v.clone()).unwrap_or_default();
    spec.instances = records.len() as u32;
    Some(spec)
}

fn catalog_service(view: &ServiceView) -> CatalogService {
    let spec = &view.spec;
    let instances = view
        .instances
        .values()
        .map(|status| {
            let s = status.borrow();
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
        frontends: frontends(spec),
        algorithm: spec.balance.algorithm as i32,
        prefer_local: spec.balance.prefer_local,
        balance: Some(spec.balance.to_catalog()),
        tags: spec.tags.clone(),
        instances,
    }
}

/// Port name to frontend port, for ports that have one.
fn frontends(spec: &ServiceSpec) -> std::collections::HashMap<String, u32> {
    spec.ports
        .iter()
        .filter_map(|(name, p)| p.frontend.map(|f| (name.clone(), u32::from(f))))
        .collect()
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
    let at = h.address.map(|a| format!(" at {a}")).unwrap_or_default();
    let check = match &h.check {
        HealthCheck::Http(http) => {
            let scheme = if http.tls.is_some() { "https" } else { "http" };
            format!("{scheme} {}{port}{at}", http.path)
        }
        HealthCheck::Tcp => format!("tcp{port}{at}"),
        HealthCheck::Exec { command } => format!("exec {}", command.join(" ")),
    };
    format!("{check} every {}", humantime::format_duration(h.interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(source: &str, text: &str) -> DirFile {
        DirFile {
            source: source.into(),
            text: Ok(text.into()),
            name: spec_name(text),
        }
    }

    #[test]
    fn files_own_the_names_they_define_even_with_an_invalid_spec() {
        let files = [
            file("/d/a.toml", "name = \"web\"\ncommand = [\"/bin/true\"]\n"),
            file("/d/b.toml", "name = \"web\"\ninstances = \"many\"\n"),
            file("/d/c.toml", "name = \"api\"\n"),
        ];
        let owners = file_owners(&files, &BTreeMap::new());
        assert_eq!(owners["web"], ["/d/a.toml", "/d/b.toml"]);
        assert_eq!(owners["api"], ["/d/c.toml"]);
    }

    #[test]
    fn a_file_whose_name_cannot_be_read_keeps_what_it_owned() {
        let previous: BTreeMap<String, Vec<String>> = [
            ("web".to_string(), vec!["/d/a.toml".to_string()]),
            ("gone".to_string(), vec!["/d/gone.toml".to_string()]),
        ]
        .into();
        let files = [file("/d/a.toml", "name = \"web\n")];
        assert_eq!(files[0].name, None);
        let owners = file_owners(&files, &previous);
        assert_eq!(owners.keys().collect::<Vec<_>>(), ["web"]);
    }
}
