//! The API's front door: every call is identified, checked against the role it needs and
//! charged to its client's rate limit before a handler runs; refusals and changes are
//! written to the journal as audit records. The API layer (`layer`) asks the gate about
//! every call; handlers never do.

use crate::auth::audit::{self, AuditEntry, DenialThrottle};
use crate::auth::cluster_tokens::ClusterTokens;
use crate::auth::limits::{Cost, RateLimiter, RateLimits};
use crate::auth::scope::Subject;
use crate::auth::{Authenticator, Certified, Identity, Role, Scope, Via, authorize};
use crate::events::journal::{EventDraft, Journal};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use strata_proto::v1::Severity;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};

/// Streams (follows, watches) open at once on one agent, over all clients.
pub const MAX_OPEN_STREAMS: usize = 256;
/// How often the credentials are checked when no call comes in, so damage is recorded
/// when it happens, not at the next call.
const CREDENTIAL_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How long a client refused a stream place is told to wait before trying again.
const STREAM_PUSHBACK: Duration = Duration::from_secs(1);

/// A refusal of a call that did not run and may be sent again after `wait`: the message
/// says so for people, and gRPC's retry pushback (`grpc-retry-pushback-ms`, gRFC A6) for
/// clients (`strata` waits and retries).
fn refused_for_now(message: String, wait: Duration) -> Status {
    let mut status = Status::resource_exhausted(message);
    let millis = wait.as_millis().max(1).to_string();
    if let Ok(value) = millis.parse() {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

/// What the gate needs to know about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The call as the CLI names it: "services", "restart", "keyring install".
    pub what: &'static str,
    /// The weakest role allowed to make it.
    pub role: Role,
    /// What it costs against the client's rate limit.
    pub cost: Cost,
}

impl Call {
    /// A view served from memory.
    pub const fn read(what: &'static str) -> Call {
        Call {
            what,
            role: Role::Read,
            cost: Cost::Cheap,
        }
    }

    /// A view that reads files or the journal, or opens a stream.
    pub const fn read_heavy(what: &'static str) -> Call {
        Call {
            what,
            role: Role::Read,
            cost: Cost::Expensive,
        }
    }

    /// A change that needs `role`.
    pub const fn change(what: &'static str, role: Role) -> Call {
        Call {
            what,
            role,
            cost: Cost::Expensive,
        }
    }

    /// Whether it changes something, and so is audited when served: every call that needs
    /// more than the read role does.
    pub fn is_change(self) -> bool {
        self.role > Role::Read
    }
}

/// Identifies, authorizes, rate-limits and audits API calls.
pub struct Gate {
    auth: Authenticator,
    limiter: RateLimiter,
    denials: DenialThrottle,
    journal: Journal,
    streams: Arc<Semaphore>,
    node: String,
    /// The damage last recorded (`None`: the credentials were fine), so a change of state is
    /// recorded once, not at every call.
    damage: Mutex<Option<String>>,
}

impl Gate {
    /// A gate over `auth` with `limits` per client, auditing into `journal`.
    pub fn new(auth: Authenticator, limits: RateLimits, journal: Journal, node: &str) -> Gate {
        Gate {
            auth,
            limiter: RateLimiter::new(limits),
            denials: DenialThrottle::default(),
            journal,
            streams: Arc::new(Semaphore::new(MAX_OPEN_STREAMS)),
            node: node.to_string(),
            damage: Mutex::new(None),
        }
    }

    /// Whether callers must bring credentials.
    pub fn credentials_required(&self) -> bool {
        self.auth.credentials_required()
    }

    /// The cluster-wide tokens, for the handlers that make and revoke them.
    pub fn cluster_tokens(&self) -> &Arc<ClusterTokens> {
        self.auth.cluster_tokens()
    }

    /// Checks the credentials and records a change of their state: a critical audit event
    /// when the token file becomes missing or unreadable (every token is refused from then
    /// on), an info one when it is readable again.
    pub fn check_credentials(&self) {
        let damaged = self.auth.verdict().damaged;
        let mut held = self.damage.lock().unwrap_or_else(PoisonError::into_inner);
        if *held == damaged {
            return;
        }
        let draft = match &damaged {
            Some(why) => EventDraft::new(
                audit::AUDIT_KIND,
                Severity::Critical,
                "credentials",
                format!(
                    "agent {} refuses every token and anonymous caller: {why}",
                    self.node
                ),
            )
            .field("result", format!("damaged: {why}")),
            None => EventDraft::new(
                audit::AUDIT_KIND,
                Severity::Info,
                "credentials",
                format!("agent {} can check tokens again", self.node),
            )
            .field("result", "restored"),
        }
        .field("who", format!("agent:{}", self.node))
        .field("what", "credentials")
        .field("target", "credentials");
        match &damaged {
            Some(why) => tracing::error!(why, "the token file is damaged; refusing every token"),
            None => tracing::info!("the token file is readable again"),
        }
        *held = damaged;
        drop(held);
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = journal.append(draft) {
                tracing::warn!(error = %e, "cannot write an audit record");
            }
        });
    }

    /// Checks the credentials every second for as long as the gate lives.
    pub fn watch_credentials(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gate = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CREDENTIAL_CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let Some(gate) = gate.upgrade() else { return };
                gate.check_credentials();
            }
        })
    }

    /// PermissionDenied (audited) unless every subject of a change is inside the caller's
    /// scope; the message names the scope.
    pub fn check_scope(
        &self,
        who: &Identity,
        call: Call,
        target: &str,
        subjects: &[Subject<'_>],
    ) -> Result<(), Status> {
        if !call.is_change() || who.scope.is_unscoped() {
            return Ok(());
        }
        let Some(outside) = subjects.iter().find(|s| !who.scope.allows(**s)) else {
            return Ok(());
        };
        let what = match outside {
            Subject::NodeWide => format!("{} is a node-wide change", call.what),
            Subject::Service { name, team: None } => format!("{} of service {name:?}", call.what),
            Subject::Service {
                name,
                team: Some(team),
            } => format!("{} of service {name:?} (team {team})", call.what),
        };
        let status = Status::permission_denied(format!(
            "{what}: outside the scope of {}, which may change only {}",
            who.describe(),
            who.scope
        ));
        self.audit_denial(who.clone(), call, target, &status);
        Err(status)
    }
    /// Who makes `request`, once it is allowed `call` and within its rate limit; a refusal
    /// is audited against `target`, thinned out under a flood, and says what would be needed.
    pub fn admit<R>(
        &self,
        request: &Request<R>,
        certified: Option<Certified>,
        call: Call,
        target: &str,
    ) -> Result<Identity, Status> {
        let remote = request.remote_addr();
        self.check_credentials();
        let who = match self.auth.identify(request.metadata(), certified, remote) {
            Ok(who) => who,
            Err(status) => {
                let (name, via) = credential_hint(request);
                let who = Identity {
                    name: name.into(),
                    role: Role::Read,
                    via,
                    remote,
                    scope: Scope::default(),
                };
                self.audit_denial(who, call, target, &status);
                return Err(status);
            }
        };
        if let Err(status) = authorize(&who, call.role, call.what) {
            self.audit_denial(who, call, target, &status);
            return Err(status);
        }
        let client = match remote {
            Some(addr) => format!("{}@{}", who.name, addr.ip()),
            None => who.name.clone(),
        };
        if let Err(wait) = self.limiter.charge(&client, call.cost, Instant::now()) {
            tracing::warn!(client, call = call.what, "rate limit reached");
            let message = format!(
                "{client} is over its rate limit on agent {}; retry in {} ms",
                self.node,
                wait.as_millis().max(1)
            );
            return Err(refused_for_now(message, wait));
        }
        Ok(who)
    }

    fn audit_denial(&self, who: Identity, call: Call, target: &str, status: &Status) {
        let key = format!(
            "{}|{}|{}",
            who.name,
            who.remote.map(|a| a.ip().to_string()).unwrap_or_default(),
            call.what
        );
        let Some(suppressed) = self.denials.admit(&key, Instant::now()) else {
            return;
        };
        let mut args = Vec::new();
        if suppressed > 0 {
            args.push(("suppressed_since_last".to_string(), suppressed.to_string()));
        }
        let entry = AuditEntry {
            who,
            what: call.what.to_string(),
            target: target.to_string(),
            args,
        };
        let draft = audit::draft(&entry, Err(status));
        let journal = self.journal.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = journal.append(draft) {
                tracing::warn!(error = %e, "cannot write an audit record");
            }
        });
    }

    /// Writes the audit record of a served change; waits until it is in the journal.
    pub async fn audit(&self, entry: AuditEntry, result: Result<(), &Status>) {
        let draft = audit::draft(&entry, result);
        let journal = self.journal.clone();
        let written = tokio::task::spawn_blocking(move || journal.append(draft)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write an audit record"),
            Err(e) => tracing::warn!(error = %e, "the audit write did not finish"),
        }
    }

    /// A place among the open streams, held as long as the stream lives.
    pub fn stream_permit(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.streams.clone().try_acquire_owned().map_err(|_| {
            let message = format!(
                "agent {} has {MAX_OPEN_STREAMS} streams open; retry later",
                self.node
            );
            refused_for_now(message, STREAM_PUSHBACK)
        })
    }
}

/// How a refused caller presented itself, for the audit record (never the secret).
fn credential_hint<R>(request: &Request<R>) -> (&'static str, Via) {
    if request
        .metadata()
        .contains_key(crate::auth::AUTHORIZATION_HEADER)
    {
        ("unknown-token", Via::Token)
    } else {
        ("anonymous", Via::Nothing)
    }
}

/// The replies of a streaming RPC, as tonic serves them.
pub type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A stream that holds `permit` until it ends or is dropped.
pub fn hold<T: Send + 'static>(
    stream: impl Stream<Item = Result<T, Status>> + Send + 'static,
    permit: OwnedSemaphorePermit,
) -> ReplyStream<T> {
    Box::pin(stream.map(move |item| {
        let _held = &permit;
        item
    }))
}
