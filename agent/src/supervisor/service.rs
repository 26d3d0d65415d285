//! One task owns each service (Nomad's allocation runner is the model): its spec, its
//! operator wishes and its instance tasks. Commands come in on a channel and the service's
//! state goes out on a watch, so readers never wait for anything: a stop, a drain or a
//! rolling restart runs in the background of this task, never under a lock.
//!
//! Every change to the set of instances (a restart, a new version, a scale, or a mix) is one
//! health-gated operation: [`super::rollout`] decides each step from the instances' health,
//! this task carries it out and asks again whenever an instance changes. A newer command
//! supersedes the operation under way; the newest converges from wherever it stands.
//!
//! Instances that leave (scale-down, replaced, removal) stay visible, as `stopping`, until
//! their task has stopped them, so the catalog tells every balancer they are draining before
//! they are signalled; they stop in parallel. A new instance takes the lowest index that is
//! neither running nor leaving (they share a directory).

use super::instance::{self, Command, InstanceContext, InstanceHandle};
use super::manager::SupervisorError;
use super::plan::Plan;
use super::rollout::{self, Action, Failure, Operation, Policy, Readiness, Step};
use super::spec::{ServiceSpec, Signal};
use super::store::Desired;
use crate::events::journal::EventDraft;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;
use strata_proto::v1::{InstanceState, InstanceStatus, Severity};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// The services of one agent, by name: what the supervisor routes commands through.
pub type Registry = Arc<RwLock<BTreeMap<String, ServiceHandle>>>;

/// Commands a service's task accepts before it applies back-pressure.
const COMMAND_QUEUE: usize = 64;

/// What a service looks like right now, for every reader.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub spec: Arc<ServiceSpec>,
    pub desired: Desired,
    /// Every instance task by index, those leaving included.
    pub instances: BTreeMap<u32, watch::Receiver<InstanceStatus>>,
    /// Being removed: it accepts no new spec.
    pub removing: bool,
    /// Why the last update or restart stopped before replacing every instance; cleared by
    /// the next one.
    pub update_failed: Option<String>,
    /// Why the service is held unmanaged (its stored spec or desired state is damaged):
    /// its running instances are watched, nothing is started, until a spec is applied.
    pub unmanaged: Option<String>,
}

impl ServiceView {
    /// Instances the spec (or the last scale) asks for.
    pub fn count(&self) -> u32 {
        self.desired.scaled_to.unwrap_or(self.spec.instances)
    }
}

/// The supervisor's handle on a service's task.
#[derive(Clone)]
pub struct ServiceHandle {
    /// Tells this task from one that replaced it under the same name.
    pub id: u64,
    pub commands: mpsc::Sender<ServiceCommand>,
    pub view: watch::Receiver<Arc<ServiceView>>,
}

/// An operator's action on running instances (scaling has its own command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    Start,
    Stop,
    Restart,
    Signal(Signal),
}

/// A reply that carries a message for the operator.
pub type Reply = oneshot::Sender<Result<String, SupervisorError>>;

/// What the supervisor asks of a service's task.
pub enum ServiceCommand {
    /// Store and take a new spec; the reply lists what is being done beyond the plan's
    /// changes (a rolling restart) once it has begun.
    Update {
        spec: Arc<ServiceSpec>,
        text: String,
        source: String,
        plan: Plan,
        reply: oneshot::Sender<Result<Vec<String>, SupervisorError>>,
    },
    /// Store and run this many instances; the reply comes once the extra ones are gone.
    Scale { count: u32, reply: Reply },
    /// Act on every instance (0) or one.
    Control {
        instance: u32,
        action: InstanceAction,
        reply: Reply,
    },
    /// Stop every instance, forget the spec, end the task; the reply counts the instances.
    Remove { reply: RemoveReply },
    /// End the task and its instance tasks, leaving the processes running (agent shutdown).
    Detach { reply: oneshot::Sender<()> },
}

/// A service to start a task for.
pub struct NewService {
    pub id: u64,
    pub spec: Arc<ServiceSpec>,
    pub desired: Desired,
    /// Instance indexes the store holds: re-adopted, and those beyond the count removed
    /// as the floor allows.
    pub existing: Vec<u32>,
    /// Held unmanaged, and why: `existing` are watched, nothing new starts.
    pub unmanaged: Option<String>,
}

/// Starts the task of a service whose spec is already stored.
pub fn spawn(ctx: Arc<InstanceContext>, registry: Registry, new: NewService) -> ServiceHandle {
    let NewService {
        id,
        spec,
        desired,
        existing,
        unmanaged,
    } = new;
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let view = Arc::new(ServiceView {
        spec: spec.clone(),
        desired: desired.clone(),
        instances: BTreeMap::new(),
        removing: false,
        update_failed: None,
        unmanaged: unmanaged.clone(),
    });
    let (view_tx, view) = watch::channel(view);
    let changes = ctx.changes.subscribe();
    let mut runner = Runner {
        ctx,
        registry,
        id,
        spec,
        desired,
        generation: 0,
        members: BTreeMap::new(),
        leaving: BTreeMap::new(),
        ops: JoinSet::new(),
        operation: None,
        wake: None,
        update_failed: None,
        changes,
        removal: None,
        unmanaged,
        view: view_tx,
        rx,
    };
    let run = !runner.desired.stopped && runner.unmanaged.is_none();
    for index in existing {
        let handle = instance::spawn(runner.ctx.clone(), runner.spec.clone(), index, run);
        runner.members.insert(index, Slot::new(handle, 0));
    }
    runner.begin(false, None);
    runner.publish();
    tokio::spawn(runner.run());
    ServiceHandle { id, commands, view }
}

/// An instance that counts toward the service, with what the operations know of it.
struct Slot {
    handle: InstanceHandle,
    /// The generation of the spec it was last started for.
    generation: u64,
    /// When an operation started or restarted it, until it has become available.
    started: Option<Instant>,
    /// Since when it has been passing, as this task saw it.
    passing_since: Option<Instant>,
    /// Restarted in place and not yet seen anew: its (pid, start, state change) times then.
    restarting_from: Option<(i32, i64, i64)>,
}

impl Slot {
    fn new(handle: InstanceHandle, generation: u64) -> Slot {
        Slot {
            handle,
            generation,
            started: None,
            passing_since: None,
            restarting_from: None,
        }
    }
}

/// The operation under way and who waits for its end.
struct Active {
    operation: Operation,
    /// Replies owed when it ends, each with its message for success.
    replies: Vec<(Reply, String)>,
}

/// The reply to a removal: how many instances it stopped.
type RemoveReply = oneshot::Sender<Result<u32, SupervisorError>>;

/// A removal under way: the replies owed and the instances it stops.
struct Removal {
    replies: Vec<RemoveReply>,
    count: u32,
}

/// What a background operation tells the task when it ends.
enum Done {
    /// The instance at this index has stopped and its task ended.
    Left(u32),
    /// Nothing the task must track.
    Nothing,
}

struct Runner {
    ctx: Arc<InstanceContext>,
    registry: Registry,
    id: u64,
    spec: Arc<ServiceSpec>,
    desired: Desired,
    /// Bumped by every change that needs new processes; older instances are replaced.
    generation: u64,
    /// Instances that count toward the desired number.
    members: BTreeMap<u32, Slot>,
    /// Instances being stopped for good.
    leaving: BTreeMap<u32, InstanceHandle>,
    ops: JoinSet<Done>,
    /// The health-gated operation under way.
    operation: Option<Active>,
    /// When the operation must be looked at again even if no instance changes.
    wake: Option<Instant>,
    update_failed: Option<String>,
    /// Ticks on every change of any instance: what moves an operation on.
    changes: watch::Receiver<u64>,
    /// Set once a removal began.
    removal: Option<Removal>,
    /// Held unmanaged, and why (see [`ServiceView::unmanaged`]).
    unmanaged: Option<String>,
    view: watch::Sender<Arc<ServiceView>>,
    rx: mpsc::Receiver<ServiceCommand>,
}

impl Runner {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn count(&self) -> u32 {
        self.desired.scaled_to.unwrap_or(self.spec.instances)
    }

    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.rx.recv() => match command {
                    Some(ServiceCommand::Detach { reply }) => {
                        self.detach();
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    // The supervisor is gone: the agent is going down.
                    None => {
                        self.detach();
                        return;
                    }
                },
                Some(done) = self.ops.join_next() => {
                    if let Ok(Done::Left(index)) = done {
                        self.on_left(index);
                    }
                }
                _ = self.changes.changed(), if self.operation.is_some() => self.advance(),
                _ = sleep_until(self.wake), if self.operation.is_some() && self.wake.is_some() => {
                    self.wake = None;
                    self.advance();
                }
            }
            if self.removal.is_some() && self.members.is_empty() && self.leaving.is_empty() {
                self.finish_removal();
                return;
            }
        }
    }

    /// Carries out every command but `Detach`, which `run` handles.
    fn on_command(&mut self, command: ServiceCommand) {
        if self.removal.is_some() {
            let busy = || {
                SupervisorError::Conflict(format!(
                    "service {} is being removed; try again once the removal has finished",
                    self.spec.name
                ))
            };
            match command {
                ServiceCommand::Remove { reply } => {
                    if let Some(removal) = self.removal.as_mut() {
                        removal.replies.push(reply);
                    }
                }
                ServiceCommand::Update { reply, .. } => {
                    let _ = reply.send(Err(busy()));
                }
                ServiceCommand::Scale { reply, .. } | ServiceCommand::Control { reply, .. } => {
                    let _ = reply.send(Err(busy()));
                }
                ServiceCommand::Detach { reply } => {
                    let _ = reply.send(());
                }
            }
            return;
        }
        if let Some(why) = &self.unmanaged {
            let refused = |what: &str| {
                SupervisorError::Conflict(format!(
                    "{} cannot {what} while it is unmanaged ({why}); apply its spec to manage it again",
                    self.spec.name
                ))
            };
            match command {
                ServiceCommand::Scale { reply, .. } => {
                    let _ = reply.send(Err(refused("be scaled")));
                    return;
                }
                ServiceCommand::Control {
                    action: InstanceAction::Start | InstanceAction::Restart,
                    reply,
                    ..
                } => {
                    let _ = reply.send(Err(refused("start instances")));
                    return;
                }
                other => return self.on_managed_command(other),
            }
        }
        self.on_managed_command(command);
    }

    /// Carries out a command a held-unmanaged service accepts too.
    fn on_managed_command(&mut self, command: ServiceCommand) {
        match command {
            ServiceCommand::Update {
                spec,
                text,
                source,
                plan,
                reply,
            } => {
                let _ = reply.send(self.update(spec, &text, source, &plan));
            }
            ServiceCommand::Scale { count, reply } => self.scale(count, reply),
            ServiceCommand::Control {
                instance,
                action,
                reply,
            } => self.control(instance, action, reply),
            ServiceCommand::Remove { reply } => self.remove(reply),
            ServiceCommand::Detach { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn event(&self, kind: &str, severity: Severity, message: String) {
        let draft = EventDraft::new(kind, severity, format!("service:{}", self.name()), message);
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, kind, "cannot record a service event");
        }
    }

    /// Sends the current state to every reader and tells the catalog publisher.
    fn publish(&self) {
        let instances = self
            .members
            .iter()
            .map(|(index, slot)| (index, &slot.handle))
            .chain(&self.leaving)
            .map(|(index, handle)| (*index, handle.status.clone()))
            .collect();
        self.view.send_replace(Arc::new(ServiceView {
            spec: self.spec.clone(),
            desired: self.desired.clone(),
            instances,
            removing: self.removal.is_some(),
            update_failed: self.update_failed.clone(),
            unmanaged: self.unmanaged.clone(),
        }));
        self.ctx.bump();
    }

    /// Begins an operation towards the current count, superseding the one under way (whose
    /// replies are then owed by this one). `replace` says whether outdated instances are
    /// replaced; `reply` is answered when it ends.
    fn begin(&mut self, replace: bool, reply: Option<(Reply, String)>) {
        if self.unmanaged.is_some() {
            // Without a spec of its own nothing is started, replaced or removed.
            return;
        }
        let now = Instant::now();
        let count = self.count();
        let has_frontend = self.spec.ports.values().any(|p| p.frontend.is_some());
        let mut policy = Policy::resolve(&self.spec.update, count, has_frontend);
        if self.desired.stopped {
            // Nothing serves: nothing to keep.
            policy.max_unavailable = count;
        }
        // Nothing outdated now, nothing outdated during it: a plain scale, whose new
        // instances are additions, not replacements.
        let replace = replace && !self.desired.stopped && self.outdated() > 0;
        let members = self.observe(now);
        let operation = Operation::begin(count, self.generation, replace, policy, &members, now);
        let mut replies = self
            .operation
            .take()
            .map(|active| active.replies)
            .unwrap_or_default();
        replies.extend(reply);
        self.operation = Some(Active { operation, replies });
        self.advance();
    }

    /// The instances as the operation sees them, noting who passes since when.
    fn observe(&mut self, now: Instant) -> Vec<rollout::Member> {
        let policy = self.operation.as_ref().map(|a| a.operation.policy);
        self.members
            .iter_mut()
            .map(|(index, slot)| {
                let status = slot.handle.status.borrow();
                if slot.restarting_from.is_some_and(|(pid, started, since)| {
                    let running_anew =
                        status.pid != 0 && (status.pid, status.started_unix_ms) != (pid, started);
                    let broken_anew =
                        status.state().is_broken() && status.state_since_unix_ms != since;
                    running_anew || broken_anew
                }) {
                    slot.restarting_from = None;
                }
                let passing = slot.restarting_from.is_none() && passes(&self.spec, &status);
                if !passing {
                    slot.passing_since = None;
                } else if slot.passing_since.is_none() {
                    slot.passing_since = Some(now);
                }
                let readiness = match slot.passing_since {
                    Some(since) => Readiness::Passing { since },
                    None if slot.restarting_from.is_none() && status.state().is_broken() => {
                        Readiness::Down
                    }
                    None => Readiness::Pending,
                };
                drop(status);
                let mut member = rollout::Member {
                    index: *index,
                    generation: slot.generation,
                    readiness,
                    started: slot.started,
                };
                if policy.is_some_and(|p| rollout::is_available(&member, &p, now)) {
                    slot.started = None;
                    member.started = None;
                }
                member
            })
            .collect()
    }

    /// Moves the operation on as far as it can go now.
    fn advance(&mut self) {
        loop {
            let Some(active) = &self.operation else {
                return;
            };
            let operation = active.operation;
            let now = Instant::now();
            let members = self.observe(now);
            match rollout::next_step(&operation, &members, now) {
                Step::Act(actions) => {
                    for action in actions {
                        self.act(&operation, action, now);
                    }
                    self.publish();
                }
                Step::Wait { until } => {
                    self.wake = until;
                    return;
                }
                // Its replies wait for the instances it took down to be gone.
                Step::Done if !self.leaving.is_empty() => {
                    self.wake = None;
                    return;
                }
                Step::Done => {
                    self.end_operation(None);
                    return;
                }
                Step::Failed { index, failure } => {
                    self.fail(&operation, index, failure);
                    return;
                }
            }
        }
    }

    fn act(&mut self, operation: &Operation, action: Action, now: Instant) {
        let started = operation.replace.then_some(now);
        match action {
            Action::Start(n) => {
                let run = !self.desired.stopped;
                for _ in 0..n {
                    let index = (1..)
                        .find(|i| !self.members.contains_key(i) && !self.leaving.contains_key(i))
                        .unwrap_or(u32::MAX);
                    let handle = instance::spawn(self.ctx.clone(), self.spec.clone(), index, run);
                    let mut slot = Slot::new(handle, operation.generation);
                    slot.started = started;
                    self.members.insert(index, slot);
                }
            }
            Action::Restart(index) => {
                if let Some(slot) = self.members.get_mut(&index) {
                    let (tx, _) = oneshot::channel();
                    let status = slot.handle.status.borrow().clone();
                    slot.restarting_from = Some((
                        status.pid,
                        status.started_unix_ms,
                        status.state_since_unix_ms,
                    ));
                    slot.passing_since = None;
                    slot.generation = operation.generation;
                    slot.started = started;
                    let _ = slot.handle.commands.send(Command::Restart(tx));
                }
            }
            Action::Remove(index) => {
                if let Some(slot) = self.members.remove(&index) {
                    self.leave(index, slot.handle);
                }
            }
        }
    }

    /// A new instance did not become available: it is stopped, the operation ends, the
    /// instances still serving stay.
    fn fail(&mut self, operation: &Operation, index: u32, failure: Failure) {
        let name = self.name().to_string();
        let why = match failure {
            Failure::Down => {
                let reason = self
                    .members
                    .get(&index)
                    .map(|slot| slot.handle.status.borrow().reason.clone())
                    .unwrap_or_default();
                format!("{name}/{index} could not run: {reason}")
            }
            Failure::Deadline => format!(
                "{name}/{index} did not pass for {} within the healthy deadline of {}",
                humantime::format_duration(operation.policy.min_healthy_time),
                humantime::format_duration(operation.policy.healthy_deadline)
            ),
        };
        if let Some(slot) = self.members.remove(&index) {
            self.leave(index, slot.handle);
        }
        let serving = self.members.len();
        let message =
            format!("update of {name} stopped: {why}; {serving} instance(s) left as they were");
        let draft = EventDraft::new(
            "service.update_failed",
            Severity::Critical,
            format!("service:{name}"),
            message.clone(),
        )
        .field("service", name.clone())
        .field("instance", index.to_string());
        if let Err(e) = self.ctx.journal.append(draft) {
            tracing::warn!(error = %e, "cannot record a service event");
        }
        self.update_failed = Some(message.clone());
        self.end_operation(Some(message));
        self.publish();
    }

    /// Ends the operation: its replies get `failure`, or each its own message.
    fn end_operation(&mut self, failure: Option<String>) {
        self.wake = None;
        let Some(active) = self.operation.take() else {
            return;
        };
        for slot in self.members.values_mut() {
            slot.passing_since = None;
            slot.started = None;
        }
        for (reply, message) in active.replies {
            let result = match &failure {
                Some(why) => Err(SupervisorError::Failed(why.clone())),
                None => Ok(message),
            };
            let _ = reply.send(result);
        }
    }

    /// Tells an instance to stop for good and tracks it until it has.
    fn leave(&mut self, index: u32, handle: InstanceHandle) {
        let (tx, rx) = oneshot::channel();
        let sent = handle.commands.send(Command::Remove(tx)).is_ok();
        self.leaving.insert(index, handle);
        self.ops.spawn(async move {
            if sent {
                let _ = rx.await;
            }
            Done::Left(index)
        });
    }

    fn on_left(&mut self, index: u32) {
        self.leaving.remove(&index);
        if self.removal.is_none() {
            self.advance();
        }
        self.publish();
    }

    fn update(
        &mut self,
        spec: Arc<ServiceSpec>,
        text: &str,
        source: String,
        plan: &Plan,
    ) -> Result<Vec<String>, SupervisorError> {
        let desired = Desired {
            source,
            stopped: self.desired.stopped,
            scaled_to: None,
        };
        self.ctx
            .store
            .save_service(&spec.name, text, &desired)
            .map_err(|e| {
                SupervisorError::Failed(format!("cannot store the spec of {}: {e}", spec.name))
            })?;
        let was_unmanaged = self.unmanaged.take().is_some();
        self.spec = spec.clone();
        self.desired = desired;
        let readopted = was_unmanaged.then(|| self.readopt(&spec));
        for handle in self
            .members
            .values()
            .map(|slot| &slot.handle)
            .chain(self.leaving.values())
        {
            let _ = handle.commands.send(Command::UpdateSpec(spec.clone()));
        }
        let mut notes = Vec::new();
        if let Some(why) = self.update_failed.take() {
            notes.push(format!("retrying after: {why}"));
        }
        notes.extend(readopted);
        // A re-adopted service's instances were sorted by version already.
        let restart = plan.needs_restart() && !self.desired.stopped && !was_unmanaged;
        if restart {
            self.generation += 1;
        }
        self.begin(true, None);
        if self.operation.is_some() && (restart || self.outdated() > 0) {
            let policy = self.operation.as_ref().map(|a| a.operation.policy);
            notes.push(describe_replacement(self.outdated(), policy));
        }
        self.event(
            "service.applied",
            Severity::Info,
            format!(
                "spec of {} updated from {}",
                self.name(),
                self.desired.source
            ),
        );
        self.publish();
        Ok(notes)
    }

    /// Takes back the instances of a service held unmanaged under `spec`: those running
    /// its version are current, the others outdated (replaced health-gated, as any update).
    fn readopt(&mut self, spec: &ServiceSpec) -> String {
        self.generation += 1;
        let mut kept = 0;
        for slot in self.members.values_mut() {
            if slot.handle.status.borrow().version == spec.version {
                slot.generation = self.generation;
                kept += 1;
            }
        }
        let total = self.members.len();
        let message = format!(
            "{} managed again from {}: {kept} of its {total} instance(s) run version {:?} and are kept, the others are replaced",
            spec.name, self.desired.source, spec.version
        );
        self.event("service.readopted", Severity::Warning, message.clone());
        message
    }

    /// Instances still to be replaced.
    fn outdated(&self) -> usize {
        self.members
            .values()
            .filter(|slot| slot.generation < self.generation)
            .count()
    }

    fn scale(&mut self, count: u32, reply: Reply) {
        let before = self.count();
        let mut desired = self.desired.clone();
        desired.scaled_to = Some(count);
        if let Err(e) = self.ctx.store.save_desired(self.name(), &desired) {
            let name = self.name().to_string();
            let _ = reply.send(Err(SupervisorError::Failed(format!(
                "cannot store the new count of {name}: {e}"
            ))));
            return;
        }
        self.desired = desired;
        let name = self.name().to_string();
        let message = format!("{name} scaled from {before} to {count} instance(s)");
        self.event("service.scaled", Severity::Info, message.clone());
        // A scale carries on a replacement under way, not one that failed.
        let replace = self.update_failed.is_none();
        self.begin(replace, Some((reply, message)));
        self.publish();
    }

    fn control(&mut self, instance: u32, action: InstanceAction, reply: Reply) {
        let name = self.name().to_string();
        if instance != 0 && !self.members.contains_key(&instance) {
            let _ = reply.send(Err(SupervisorError::NotFound(format!(
                "service {name} has no instance {instance} (it has {})",
                self.members.len()
            ))));
            return;
        }
        if instance == 0 && matches!(action, InstanceAction::Start | InstanceAction::Stop) {
            let mut desired = self.desired.clone();
            desired.stopped = action == InstanceAction::Stop;
            if let Err(e) = self.ctx.store.save_desired(&name, &desired) {
                let _ = reply.send(Err(SupervisorError::Failed(format!(
                    "cannot store the state of {name}: {e}"
                ))));
                return;
            }
            self.desired = desired;
            if action == InstanceAction::Stop {
                self.end_operation(Some(format!("{name} was stopped first")));
            }
            self.publish();
        }
        if instance == 0 && action == InstanceAction::Restart && !self.desired.stopped {
            self.restart_all(reply);
            return;
        }
        let targets: Vec<mpsc::UnboundedSender<Command>> = self
            .members
            .iter()
            .filter(|(index, _)| instance == 0 || **index == instance)
            .map(|(_, slot)| slot.handle.commands.clone())
            .collect();
        let what = if instance == 0 {
            name
        } else {
            format!("{name}/{instance}")
        };
        match action {
            InstanceAction::Start => {
                for commands in &targets {
                    let _ = commands.send(Command::Start);
                }
                let _ = reply.send(Ok(format!("{what} starting")));
            }
            InstanceAction::Stop => {
                let waits: Vec<_> = targets
                    .iter()
                    .filter_map(|commands| {
                        let (tx, rx) = oneshot::channel();
                        commands.send(Command::Stop(tx)).ok().map(|()| rx)
                    })
                    .collect();
                self.ops.spawn(async move {
                    for rx in waits {
                        let _ = rx.await;
                    }
                    let _ = reply.send(Ok(format!("{what} stopped")));
                    Done::Nothing
                });
            }
            InstanceAction::Restart => {
                self.ops.spawn(async move {
                    for commands in targets {
                        let (tx, rx) = oneshot::channel();
                        if commands.send(Command::Restart(tx)).is_ok() {
                            let _ = rx.await;
                        }
                    }
                    let _ = reply.send(Ok(format!("{what} restarted")));
                    Done::Nothing
                });
            }
            InstanceAction::Signal(signal) => {
                let Some(raw) = rustix::process::Signal::from_named_raw(signal.number()) else {
                    let _ = reply.send(Err(SupervisorError::Invalid(format!(
                        "{} cannot be sent",
                        signal.label()
                    ))));
                    return;
                };
                let waits: Vec<_> = targets
                    .iter()
                    .filter_map(|commands| {
                        let (tx, rx) = oneshot::channel();
                        commands.send(Command::Signal(raw, tx)).ok().map(|()| rx)
                    })
                    .collect();
                self.ops.spawn(async move {
                    let mut errors = Vec::new();
                    let sent = waits.len();
                    for rx in waits {
                        if let Ok(Err(e)) = rx.await {
                            errors.push(e);
                        }
                    }
                    let result = if sent > 0 && errors.len() == sent {
                        Err(SupervisorError::Failed(errors.join("; ")))
                    } else {
                        Ok(format!("{} sent to {what}", signal.label()))
                    };
                    let _ = reply.send(result);
                    Done::Nothing
                });
            }
        }
    }

    /// Replaces every instance, health-gated; the reply comes once the last is replaced.
    fn restart_all(&mut self, reply: Reply) {
        let name = self.name().to_string();
        self.generation += 1;
        self.update_failed = None;
        let count = self.outdated();
        self.begin(true, None);
        let policy = self.operation.as_ref().map(|a| a.operation.policy);
        let message = format!("{name} restarted: {}", describe_replacement(count, policy));
        match self.operation.as_mut() {
            Some(active) => active.replies.push((reply, message)),
            None => {
                let _ = reply.send(
                    self.update_failed
                        .clone()
                        .map_or(Ok(message), |why| Err(SupervisorError::Failed(why))),
                );
            }
        }
    }

    fn remove(&mut self, reply: RemoveReply) {
        let name = self.name().to_string();
        self.end_operation(Some(format!("{name} was removed first")));
        let count = (self.members.len() + self.leaving.len()) as u32;
        self.removal = Some(Removal {
            replies: vec![reply],
            count,
        });
        let members = std::mem::take(&mut self.members);
        for (index, slot) in members {
            self.leave(index, slot.handle);
        }
        self.publish();
    }

    /// Every instance is gone: forget the spec, answer, and leave the registry.
    fn finish_removal(&mut self) {
        let Some(Removal { replies, count }) = self.removal.take() else {
            return;
        };
        let name = self.name().to_string();
        let result = self.ctx.store.remove_service(&name).map_err(|e| {
            SupervisorError::Failed(format!("cannot delete the stored spec of {name}: {e}"))
        });
        let mut services = self
            .registry
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if services.get(&name).is_some_and(|h| h.id == self.id) {
            services.remove(&name);
        }
        drop(services);
        if result.is_ok() {
            self.event(
                "service.removed",
                Severity::Info,
                format!("service {name} removed ({count} instance(s) stopped)"),
            );
        }
        self.ctx.bump();
        for reply in replies {
            let _ = reply.send(result.as_ref().map(|_| count).map_err(Clone::clone));
        }
    }

    fn detach(&mut self) {
        let name = self.name().to_string();
        self.end_operation(Some(format!(
            "the agent stopped before {name} was done; the next agent carries on from its instances"
        )));
        for handle in self
            .members
            .values()
            .map(|slot| &slot.handle)
            .chain(self.leaving.values())
        {
            let _ = handle.commands.send(Command::Detach);
        }
    }
}

/// Whether an instance gets traffic now, by the rule the catalog publishes: running and
/// passing, or running when the service has no check.
fn passes(spec: &ServiceSpec, status: &InstanceStatus) -> bool {
    status.state() == InstanceState::Running
        && (spec.health.is_none() || status.health().is_passing())
}

/// "2 instance(s) replaced, surge 1, never fewer than 2 passing".
fn describe_replacement(count: usize, policy: Option<Policy>) -> String {
    match policy {
        Some(p) if p.surge > 0 => format!(
            "replacing {count} instance(s): a new one starts and passes for {} before an old one stops (surge {}, at most {} unavailable)",
            humantime::format_duration(p.min_healthy_time),
            p.surge,
            p.max_unavailable
        ),
        Some(p) => format!(
            "replacing {count} instance(s) in place, at most {} unavailable at once",
            p.max_unavailable
        ),
        None => format!("{count} instance(s) replaced"),
    }
}

/// Resolves at `wake`, or never.
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
