//! One task owns each service (Nomad's allocation runner is the model): its spec, its
//! operator wishes and its instance tasks. Commands come in on a channel and the service's
//! state goes out on a watch, so readers never wait for anything: a stop, a drain or a
//! rolling restart runs in the background of this task, never under a lock.
//!
//! Instances that leave (scale-down, removal) stay visible, as `stopping`, until their
//! task has stopped them, so the catalog tells every balancer they are draining before
//! they are signalled; they stop in parallel. An index whose old instance is still leaving
//! is started again only once it is gone (they share a directory).

use super::instance::{self, Command, InstanceContext, InstanceHandle};
use super::manager::SupervisorError;
use super::plan::Plan;
use super::spec::{ServiceSpec, Signal};
use super::store::Desired;
use crate::events::journal::{EventDraft, Journal};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use strata_proto::v1::{InstanceStatus, Severity};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

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
    /// Instance indexes the store holds beyond the count, to stop and forget.
    pub strays: Vec<u32>,
}

/// Starts the task of a service whose spec is already stored.
pub fn spawn(ctx: Arc<InstanceContext>, registry: Registry, new: NewService) -> ServiceHandle {
    let NewService {
        id,
        spec,
        desired,
        strays,
    } = new;
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let view = Arc::new(ServiceView {
        spec: spec.clone(),
        desired: desired.clone(),
        instances: BTreeMap::new(),
        removing: false,
    });
    let (view_tx, view) = watch::channel(view);
    let mut runner = Runner {
        ctx,
        registry,
        id,
        spec,
        desired,
        members: BTreeMap::new(),
        leaving: BTreeMap::new(),
        waiters: Vec::new(),
        ops: JoinSet::new(),
        rollout: None,
        removal: None,
        view: view_tx,
        rx,
    };
    for index in strays {
        let handle = instance::spawn(runner.ctx.clone(), runner.spec.clone(), index, false);
        runner.leave(index, handle);
    }
    runner.reconcile();
    runner.publish();
    tokio::spawn(runner.run());
    ServiceHandle { id, commands, view }
}

/// An operator waiting for some leaving instances to be gone.
struct Waiter {
    indexes: BTreeSet<u32>,
    message: String,
    reply: Reply,
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
    /// Instances that count toward the desired number.
    members: BTreeMap<u32, InstanceHandle>,
    /// Instances being stopped for good.
    leaving: BTreeMap<u32, InstanceHandle>,
    waiters: Vec<Waiter>,
    ops: JoinSet<Done>,
    rollout: Option<AbortHandle>,
    /// Set once a removal began.
    removal: Option<Removal>,
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
            .chain(&self.leaving)
            .map(|(index, handle)| (*index, handle.status.clone()))
            .collect();
        self.view.send_replace(Arc::new(ServiceView {
            spec: self.spec.clone(),
            desired: self.desired.clone(),
            instances,
            removing: self.removal.is_some(),
        }));
        self.ctx.bump();
    }

    /// Starts the instances the count asks for and sends away those beyond it.
    fn reconcile(&mut self) {
        let count = self.count();
        let run = !self.desired.stopped;
        for index in 1..=count {
            if !self.members.contains_key(&index) && !self.leaving.contains_key(&index) {
                let handle = instance::spawn(self.ctx.clone(), self.spec.clone(), index, run);
                self.members.insert(index, handle);
            }
        }
        let extra: Vec<u32> = self.members.range(count + 1..).map(|(i, _)| *i).collect();
        for index in extra {
            if let Some(handle) = self.members.remove(&index) {
                self.leave(index, handle);
            }
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
        let mut i = 0;
        while i < self.waiters.len() {
            self.waiters[i].indexes.remove(&index);
            if self.waiters[i].indexes.is_empty() {
                let waiter = self.waiters.swap_remove(i);
                let _ = waiter.reply.send(Ok(waiter.message));
            } else {
                i += 1;
            }
        }
        if self.removal.is_none() {
            self.reconcile();
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
        let previous: Vec<u32> = self.members.keys().copied().collect();
        self.spec = spec.clone();
        self.desired = desired;
        for handle in self.members.values().chain(self.leaving.values()) {
            let _ = handle.commands.send(Command::UpdateSpec(spec.clone()));
        }
        self.reconcile();
        let mut notes = Vec::new();
        if plan.needs_restart() && !self.desired.stopped {
            let targets: Vec<_> = previous
                .into_iter()
                .filter_map(|index| {
                    let handle = self.members.get(&index)?;
                    Some((index, handle.commands.clone(), handle.status.clone()))
                })
                .collect();
            if let Some(previous) = self.rollout.take() {
                previous.abort();
            }
            notes.push(format!(
                "rolling restart of {} instance(s), one at a time",
                targets.len()
            ));
            let rollout = rolling_restart(self.ctx.journal.clone(), spec.clone(), targets);
            self.rollout = Some(self.ops.spawn(async move {
                rollout.await;
                Done::Nothing
            }));
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
        self.reconcile();
        let name = self.name().to_string();
        let message = format!("{name} scaled from {before} to {count} instance(s)");
        self.event("service.scaled", Severity::Info, message.clone());
        self.publish();
        self.reply_when_left(message, reply);
    }

    /// Replies once every instance leaving now is gone.
    fn reply_when_left(&mut self, message: String, reply: Reply) {
        let indexes: BTreeSet<u32> = self.leaving.keys().copied().collect();
        if indexes.is_empty() {
            let _ = reply.send(Ok(message));
        } else {
            self.waiters.push(Waiter {
                indexes,
                message,
                reply,
            });
        }
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
            self.publish();
        }
        let targets: Vec<mpsc::UnboundedSender<Command>> = self
            .members
            .iter()
            .filter(|(index, _)| instance == 0 || **index == instance)
            .map(|(_, handle)| handle.commands.clone())
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

    fn remove(&mut self, reply: RemoveReply) {
        if let Some(rollout) = self.rollout.take() {
            rollout.abort();
        }
        let count = (self.members.len() + self.leaving.len()) as u32;
        self.removal = Some(Removal {
            replies: vec![reply],
            count,
        });
        let members = std::mem::take(&mut self.members);
        for (index, handle) in members {
            self.leave(index, handle);
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
        if let Some(rollout) = self.rollout.take() {
            rollout.abort();
        }
        for handle in self.members.values().chain(self.leaving.values()) {
            let _ = handle.commands.send(Command::Detach);
        }
    }
}

/// Restarts instances one at a time, each waiting until it runs and passes its health
/// check before the next; stops (with an event) when one does not come back.
async fn rolling_restart(
    journal: Journal,
    spec: Arc<ServiceSpec>,
    targets: Vec<(
        u32,
        mpsc::UnboundedSender<Command>,
        watch::Receiver<InstanceStatus>,
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
        if commands.send(Command::Restart(tx)).is_err() || rx.await.is_err() {
            continue;
        }
        let ready = tokio::time::timeout(budget, async {
            loop {
                {
                    let s = status.borrow_and_update();
                    let healthy = spec.health.is_none() || s.health().is_passing();
                    if s.state() == strata_proto::v1::InstanceState::Running && healthy {
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
