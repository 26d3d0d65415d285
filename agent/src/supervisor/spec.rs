//! The service spec (`strata.toml`): parsing and validation.
//!
//! A spec lives in the service's own repository. It is parsed whole and validated whole:
//! any error rejects it with the file, the line and the field, and nothing is applied.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
use strata_proto::v1::Algorithm;

/// Largest number of instances one spec may ask for on one agent.
pub const MAX_INSTANCES: u32 = 256;
/// Longest duration a spec may give (365 days): far beyond any sensible timeout, and short
/// enough that the supervisor can add any of them to a clock reading or multiply one (the
/// health budget of a rolling restart) without overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A validated service spec: what the supervisor runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub version: String,
    pub command: Vec<String>,
    pub instances: u32,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub tags: Vec<String>,
    /// Named ports; each instance gets a backend port per name.
    pub ports: BTreeMap<String, PortSpec>,
    pub health: Option<HealthSpec>,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub update: UpdateSpec,
    pub resources: ResourceSpec,
    pub logs: LogSpec,
    pub balance: BalanceSpec,
}

/// The `[balance]` table: how the balancer on every node spreads this service's connections
/// and shields clients from busy, cold or silent instances. It is the balancer's own settings
/// type, so what the spec says is what the catalog carries and every node applies; the
/// algorithm is never unspecified (the parser fills the default).
pub use strata_registry::table::BalanceConfig as BalanceSpec;

/// One named port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The static port the balancer serves on every host, if any.
    pub frontend: Option<u16>,
}

/// How health is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// HTTP(S) GET on the instance's port: 2xx passing, 429 warning, else critical.
    Http(HttpCheck),
    /// A TCP connect to the instance's port.
    Tcp,
    /// A command: exit 0 passing, 1 warning, anything else critical.
    Exec { command: Vec<String> },
}

/// What an HTTP check asks and how: `http = "/path"` with `scheme`, `tls_server_name`,
/// `tls_skip_verify` and `disable_redirects`, named as Consul names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The path (and query) requested.
    pub path: String,
    /// How https checks verify the server; `None` for plain HTTP.
    pub tls: Option<CheckTls>,
    /// Whether redirects are followed (Consul's default) or a 3xx is judged as it is.
    pub follow_redirects: bool,
}

impl HttpCheck {
    /// A plain HTTP check of `path` that follows redirects.
    pub fn plain(path: impl Into<String>) -> HttpCheck {
        HttpCheck {
            path: path.into(),
            tls: None,
            follow_redirects: true,
        }
    }
}

/// How an https check verifies the instance's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTls {
    /// The name the certificate must carry (and the SNI sent); the dialled IP when not given.
    pub server_name: Option<String>,
    /// Accepts any certificate, as Consul's `tls_skip_verify`: encryption without identity.
    pub skip_verify: bool,
}

/// The `[health]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSpec {
    pub check: HealthCheck,
    /// Which named port the check uses (the first port when not given).
    pub port: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub grace: Duration,
    /// The address HTTP and TCP checks dial; the node's published address when not given,
    /// so what is checked is what receives traffic.
    pub address: Option<IpAddr>,
}

/// When an exited instance is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

/// The `[restart]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartSpec {
    pub policy: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub crashloop_after: u32,
    pub crashloop_window: Duration,
    /// A run this long counts as stable and resets the backoff.
    pub stable_after: Duration,
}

/// How long an instance gets after its stop signal when the spec's `[stop]` sets no timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `[stop]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct StopSpec {
    pub signal: Signal,
    pub timeout: Duration,
    /// How long an instance is marked draining (no new connections from any balancer) before
    /// it is signalled: 2s for services with a frontend port, else 0.
    pub drain: Duration,
}

/// How long a new instance must pass before it counts, when `[update]` does not say.
pub const DEFAULT_MIN_HEALTHY_TIME: Duration = Duration::from_secs(3);
/// How long a new instance may take to count, when `[update]` does not say.
pub const DEFAULT_HEALTHY_DEADLINE: Duration = Duration::from_secs(300);

/// The `[update]` table: how instances are replaced (restart, new version) and removed
/// (scale-down) under traffic. The counts left unset are decided per operation from the
/// service's ports and instance count (`rollout::Policy::resolve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSpec {
    /// Instances started beyond the count before old ones stop (`true` is 1, `false` 0).
    pub surge: Option<u32>,
    /// How many fewer passing instances than the count an operation may leave.
    pub max_unavailable: Option<u32>,
    /// How long a new instance must pass before it counts as available.
    pub min_healthy_time: Duration,
    /// How long a new instance may take to become available before the operation stops.
    pub healthy_deadline: Duration,
}

/// Signals a spec may name for stopping (and an operator may send): the contract's enum,
/// parsed from "SIGTERM", "TERM" or "term".
pub use strata_proto::v1::Signal;

/// The `[resources]` table: limits applied through cgroups and rlimits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSpec {
    pub memory_max: Option<u64>,
    /// Cores, e.g. 0.5.
    pub cpu_max: Option<f64>,
    pub pids_max: Option<u64>,
    pub nofile: Option<u64>,
}

/// The `[logs]` table: per-instance log files rotated by size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpec {
    pub max_bytes: u64,
    pub keep: u32,
}

/// Why a spec was rejected: where, which field, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub file: String,
    pub line: Option<usize>,
    pub field: String,
    pub problem: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for SpecError {}

impl SpecError {
    /// An error about `field` of the spec `text` read from `file`, with the field's line,
    /// for checks that run outside the parser (frontend ports against the agent and the
    /// catalog).
    pub fn at(file: &str, text: &str, field: &str, problem: impl Into<String>) -> SpecError {
        Locator { file, text }.error(field, problem)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    version: Option<String>,
    command: Vec<String>,
    instances: Option<i64>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    workdir: Option<PathBuf>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    ports: BTreeMap<String, RawPort>,
    health: Option<RawHealth>,
    #[serde(default)]
    restart: RawRestart,
    #[serde(default)]
    stop: RawStop,
    #[serde(default)]
    update: RawUpdate,
    #[serde(default)]
    resources: RawResources,
    #[serde(default)]
    logs: RawLogs,
    #[serde(default)]
    balance: RawBalance,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBalance {
    algorithm: Option<String>,
    prefer_local: Option<bool>,
    connect_timeout: Option<String>,
    retries: Option<i64>,
    slow_start: Option<String>,
    max_conns: Option<i64>,
    max_queue: Option<i64>,
    queue_timeout: Option<String>,
    idle_timeout: Option<String>,
    response_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    frontend: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    http: Option<String>,
    tcp: Option<bool>,
    exec: Option<Vec<String>>,
    port: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    rise: Option<i64>,
    fall: Option<i64>,
    grace: Option<String>,
    address: Option<String>,
    scheme: Option<String>,
    tls_server_name: Option<String>,
    tls_skip_verify: Option<bool>,
    disable_redirects: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Option<String>,
    backoff_initial: Option<String>,
    backoff_max: Option<String>,
    crashloop_after: Option<i64>,
    crashloop_window: Option<String>,
    stable_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStop {
    signal: Option<String>,
    timeout: Option<String>,
    drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    /// A bool or a count, checked by hand so the error says which.
    surge: Option<toml::Value>,
    max_unavailable: Option<i64>,
    min_healthy_time: Option<String>,
    healthy_deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    memory_max: Option<String>,
    cpu_max: Option<f64>,
    pids_max: Option<i64>,
    nofile: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogs {
    max_bytes: Option<String>,
    keep: Option<i64>,
}

/// Builds errors that point at a field of one spec text.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn error(&self, field: &str, problem: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.to_string(),
            line: line_of_field(self.text, field),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn duration(
        &self,
        field: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, SpecError> {
        match value {
            None => Ok(default),
            Some(text) => {
                let duration = humantime::parse_duration(text).map_err(|e| {
                    self.error(
                        field,
                        format!("invalid duration {text:?}: {e} (examples: 500ms, 1s, 5m)"),
                    )
                })?;
                if duration > MAX_DURATION {
                    return Err(self.error(
                        field,
                        format!("{text:?} is longer than the maximum of 365 days"),
                    ));
                }
                Ok(duration)
            }
        }
    }

    fn count(
        &self,
        field: &str,
        value: Option<i64>,
        default: u32,
        min: u32,
        max: u32,
    ) -> Result<u32, SpecError> {
        let v = value.unwrap_or(default as i64);
        if v < min as i64 || v > max as i64 {
            return Err(self.error(field, format!("{v} is out of range {min}..={max}")));
        }
        Ok(v as u32)
    }
}

/// Parses and validates one spec. `file` names it in errors.
pub fn parse_spec(file: &str, text: &str) -> Result<ServiceSpec, SpecError> {
    let at = Locator { file, text };
    let raw: RawSpec = toml::from_str(text).map_err(|e| toml_error(file, text, &e))?;

    if !valid_name(&raw.name) {
        return Err(at.error(
            "name",
            format!(
                "{:?} must be 1 to 63 lower-case letters, digits or '-', starting with a letter",
                raw.name
            ),
        ));
    }
    if raw.command.is_empty() || raw.command[0].trim().is_empty() {
        return Err(at.error("command", "must name a program (it is empty)"));
    }
    let instances = match raw.instances {
        Some(n) if n < 0 => {
            return Err(at.error(
                "instances",
                format!("{n} is negative; use 0 to keep the service defined but stopped"),
            ));
        }
        other => at.count("instances", other, 1, 0, MAX_INSTANCES)?,
    };
    for key in raw.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(at.error("env", format!("{key:?} is not a valid variable name")));
        }
    }
    check_exec_strings(&at, &raw)?;
    if let Some(dir) = &raw.workdir
        && !dir.is_absolute()
    {
        return Err(at.error(
            "workdir",
            format!("{} must be an absolute path", dir.display()),
        ));
    }

    let mut ports = BTreeMap::new();
    for (name, port) in &raw.ports {
        let field = format!("ports.{name}.frontend");
        if !valid_name(name) {
            return Err(at.error(
                &format!("ports.{name}"),
                "port names are lower-case letters, digits or '-'",
            ));
        }
        let frontend = match port.frontend {
            None => None,
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => return Err(at.error(&field, format!("{p} is not a port (1..=65535)"))),
        };
        ports.insert(name.clone(), PortSpec { frontend });
    }

    let health = match &raw.health {
        None => None,
        Some(h) => Some(parse_health(&at, h, &ports)?),
    };

    let r = &raw.restart;
    let policy = match r.policy.as_deref() {
        None | Some("always") => RestartPolicy::Always,
        Some("on-failure") => RestartPolicy::OnFailure,
        Some("never") => RestartPolicy::Never,
        Some(other) => {
            return Err(at.error(
                "restart.policy",
                format!("{other:?} is not one of always, on-failure, never"),
            ));
        }
    };
    let backoff_initial = at.duration(
        "restart.backoff_initial",
        r.backoff_initial.as_deref(),
        Duration::from_millis(100),
    )?;
    let backoff_max = at.duration(
        "restart.backoff_max",
        r.backoff_max.as_deref(),
        Duration::from_secs(30),
    )?;
    if backoff_max < backoff_initial {
        return Err(at.error(
            "restart.backoff_max",
            "must not be shorter than backoff_initial",
        ));
    }
    let restart = RestartSpec {
        policy,
        backoff_initial,
        backoff_max,
        crashloop_after: at.count("restart.crashloop_after", r.crashloop_after, 5, 1, 1000)?,
        crashloop_window: at.duration(
            "restart.crashloop_window",
            r.crashloop_window.as_deref(),
            Duration::from_secs(60),
        )?,
        stable_after: at.duration(
            "restart.stable_after",
            r.stable_after.as_deref(),
            Duration::from_secs(10),
        )?,
    };

    let signal = match raw.stop.signal.as_deref() {
        None => Signal::Term,
        Some(text) => Signal::parse(text).ok_or_else(|| {
            at.error(
                "stop.signal",
                format!("{text:?} is not one of {}", Signal::choices()),
            )
        })?,
    };
    let has_frontend = ports.values().any(|p| p.frontend.is_some());
    let default_drain = if has_frontend {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    };
    let stop = StopSpec {
        signal,
        timeout: at.duration(
            "stop.timeout",
            raw.stop.timeout.as_deref(),
            DEFAULT_STOP_TIMEOUT,
        )?,
        drain: at.duration("stop.drain", raw.stop.drain.as_deref(), default_drain)?,
    };

    let update = parse_update(&at, &raw.update)?;

    let res = &raw.resources;
    let resources = ResourceSpec {
        memory_max: match &res.memory_max {
            None => None,
            Some(text) => Some(parse_size(text).filter(|b| *b >= 1 << 20).ok_or_else(|| {
                at.error(
                    "resources.memory_max",
                    format!("{text:?} is not a size of at least 1MiB (examples: 256MiB, 1GiB)"),
                )
            })?),
        },
        cpu_max: match res.cpu_max {
            None => None,
            Some(c) if c > 0.0 && c <= 1024.0 => Some(c),
            Some(c) => {
                return Err(at.error(
                    "resources.cpu_max",
                    format!("{c} cores is out of range (0, 1024]"),
                ));
            }
        },
        pids_max: positive(&at, "resources.pids_max", res.pids_max)?,
        nofile: positive(&at, "resources.nofile", res.nofile)?,
    };

    let logs = LogSpec {
        max_bytes: match &raw.logs.max_bytes {
            None => 10 << 20,
            Some(text) => parse_size(text).filter(|b| *b >= 4096).ok_or_else(|| {
                at.error(
                    "logs.max_bytes",
                    format!("{text:?} is not a size of at least 4KiB (examples: 10MiB, 512KiB)"),
                )
            })?,
        },
        keep: at.count("logs.keep", raw.logs.keep, 5, 1, 100)?,
    };

    let balance = parse_balance(&at, &raw.balance)?;

    Ok(ServiceSpec {
        name: raw.name,
        version: raw.version.unwrap_or_else(|| "0".to_string()),
        command: raw.command,
        instances,
        env: raw.env,
        workdir: raw.workdir,
        tags: raw.tags,
        ports,
        health,
        restart,
        stop,
        update,
        resources,
        logs,
        balance,
    })
}

fn parse_update(at: &Locator<'_>, u: &RawUpdate) -> Result<UpdateSpec, SpecError> {
    let surge = match &u.surge {
        None => None,
        Some(toml::Value::Boolean(on)) => Some(u32::from(*on)),
        Some(toml::Value::Integer(n)) => {
            Some(at.count("update.surge", Some(*n), 0, 0, MAX_INSTANCES)?)
        }
        Some(other) => {
            return Err(at.error(
                "update.surge",
                format!(
                    "{other} is not true, false or a number of instances (0..={MAX_INSTANCES})"
                ),
            ));
        }
    };
    let max_unavailable = match u.max_unavailable {
        None => None,
        n => Some(at.count("update.max_unavailable", n, 0, 0, MAX_INSTANCES)?),
    };
    if surge == Some(0) && max_unavailable == Some(0) {
        return Err(at.error(
            "update.max_unavailable",
            "0 with surge off lets no instance be replaced: allow 1, or turn surge on",
        ));
    }
    let min_healthy_time = at.duration(
        "update.min_healthy_time",
        u.min_healthy_time.as_deref(),
        DEFAULT_MIN_HEALTHY_TIME,
    )?;
    let healthy_deadline = at.duration(
        "update.healthy_deadline",
        u.healthy_deadline.as_deref(),
        DEFAULT_HEALTHY_DEADLINE,
    )?;
    if healthy_deadline <= min_healthy_time {
        return Err(at.error(
            "update.healthy_deadline",
            format!(
                "must be longer than min_healthy_time ({})",
                humantime::format_duration(min_healthy_time)
            ),
        ));
    }
    Ok(UpdateSpec {
        surge,
        max_unavailable,
        min_healthy_time,
        healthy_deadline,
    })
}

/// The `[balance]` table; defaults are the balancer's (`BalanceSpec::default()`).
fn parse_balance(at: &Locator<'_>, raw: &RawBalance) -> Result<BalanceSpec, SpecError> {
    let d = BalanceSpec::default();
    let algorithm = match raw.algorithm.as_deref() {
        None => d.algorithm,
        Some(text) => Algorithm::from_label(text)
            .filter(|a| *a != Algorithm::Unspecified)
            .ok_or_else(|| {
                at.error(
                    "balance.algorithm",
                    format!("{text:?} is not one of {}", Algorithm::choices()),
                )
            })?,
    };
    let connect_timeout = at.duration(
        "balance.connect_timeout",
        raw.connect_timeout.as_deref(),
        d.connect_timeout,
    )?;
    if connect_timeout.is_zero() || connect_timeout > BalanceSpec::MAX_CONNECT_TIMEOUT {
        return Err(at.error(
            "balance.connect_timeout",
            format!(
                "{} is out of range (0s, {}]",
                humantime::format_duration(connect_timeout),
                humantime::format_duration(BalanceSpec::MAX_CONNECT_TIMEOUT)
            ),
        ));
    }
    let max_queue = at.count(
        "balance.max_queue",
        raw.max_queue,
        d.max_queue,
        0,
        BalanceSpec::MAX_QUEUE,
    )?;
    let queue_timeout = at.duration(
        "balance.queue_timeout",
        raw.queue_timeout.as_deref(),
        d.queue_timeout,
    )?;
    if max_queue > 0 && queue_timeout.is_zero() {
        return Err(at.error(
            "balance.queue_timeout",
            "must be longer than 0s while max_queue is not 0 (max_queue = 0 turns the queue off)",
        ));
    }
    Ok(BalanceSpec {
        algorithm,
        prefer_local: raw.prefer_local.unwrap_or(d.prefer_local),
        connect_timeout,
        retries: at.count(
            "balance.retries",
            raw.retries,
            d.retries,
            0,
            BalanceSpec::MAX_RETRIES,
        )?,
        slow_start: at.duration(
            "balance.slow_start",
            raw.slow_start.as_deref(),
            d.slow_start,
        )?,
        max_conns: at.count(
            "balance.max_conns",
            raw.max_conns,
            d.max_conns,
            0,
            BalanceSpec::MAX_CONNS,
        )?,
        max_queue,
        queue_timeout,
        idle_timeout: at.duration(
            "balance.idle_timeout",
            raw.idle_timeout.as_deref(),
            d.idle_timeout,
        )?,
        response_timeout: at.duration(
            "balance.response_timeout",
            raw.response_timeout.as_deref(),
            d.response_timeout,
        )?,
    })
}

fn positive(at: &Locator<'_>, field: &str, value: Option<i64>) -> Result<Option<u64>, SpecError> {
    match value {
        None => Ok(None),
        Some(v) if v > 0 => Ok(Some(v as u64)),
        Some(v) => Err(at.error(field, format!("{v} must be positive"))),
    }
}

fn parse_health(
    at: &Locator<'_>,
    h: &RawHealth,
    ports: &BTreeMap<String, PortSpec>,
) -> Result<HealthSpec, SpecError> {
    let kinds = [h.http.is_some(), h.tcp == Some(true), h.exec.is_some()];
    let check = match kinds {
        [true, false, false] => {
            let path = h.http.clone().unwrap_or_default();
            if !path.starts_with('/') {
                return Err(at.error(
                    "health.http",
                    format!("{path:?} must be a path starting with '/'"),
                ));
            }
            HealthCheck::Http(parse_http_check(at, h, path)?)
        }
        [false, true, false] => HealthCheck::Tcp,
        [false, false, true] => {
            let command = h.exec.clone().unwrap_or_default();
            if command.is_empty() || command[0].trim().is_empty() {
                return Err(at.error("health.exec", "must name a program (it is empty)"));
            }
            HealthCheck::Exec { command }
        }
        _ => {
            return Err(at.error(
                "health",
                "needs exactly one of http = \"/path\", tcp = true, exec = [\"cmd\"]",
            ));
        }
    };
    if !matches!(check, HealthCheck::Http(_)) {
        let http_only = [
            ("health.scheme", h.scheme.is_some()),
            ("health.tls_server_name", h.tls_server_name.is_some()),
            ("health.tls_skip_verify", h.tls_skip_verify.is_some()),
            ("health.disable_redirects", h.disable_redirects.is_some()),
        ];
        if let Some((field, _)) = http_only.iter().find(|(_, given)| *given) {
            return Err(at.error(field, "only an http check takes it (http = \"/path\")"));
        }
    }
    let needs_port = !matches!(check, HealthCheck::Exec { .. });
    if let Some(port) = &h.port {
        if !ports.contains_key(port) {
            return Err(at.error(
                "health.port",
                format!("{port:?} is not one of the ports in [ports]"),
            ));
        }
    } else if needs_port && ports.is_empty() {
        return Err(at.error(
            "health",
            "http and tcp checks need a port: add a [ports.NAME] table",
        ));
    }
    let interval = at.duration(
        "health.interval",
        h.interval.as_deref(),
        Duration::from_secs(1),
    )?;
    let timeout = at.duration(
        "health.timeout",
        h.timeout.as_deref(),
        Duration::from_millis(500),
    )?;
    if interval < Duration::from_millis(100) {
        return Err(at.error("health.interval", "must be at least 100ms"));
    }
    if timeout.is_zero() || timeout > interval {
        return Err(at.error(
            "health.timeout",
            "must be more than 0 and not longer than the interval",
        ));
    }
    let address = match &h.address {
        None => None,
        Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
            at.error(
                "health.address",
                format!("{text:?} is not an IP address (examples: 127.0.0.1, ::1)"),
            )
        })?),
    };
    if address.is_some() && !needs_port {
        return Err(at.error(
            "health.address",
            "only http and tcp checks dial an address; an exec check runs a command",
        ));
    }
    Ok(HealthSpec {
        check,
        port: h.port.clone(),
        address,
        interval,
        timeout,
        rise: at.count("health.rise", h.rise, 2, 1, 100)?,
        fall: at.count("health.fall", h.fall, 3, 1, 100)?,
        grace: at.duration("health.grace", h.grace.as_deref(), Duration::from_secs(5))?,
    })
}

/// The HTTP check of `path`: its scheme, TLS verification and redirect rule.
fn parse_http_check(at: &Locator<'_>, h: &RawHealth, path: String) -> Result<HttpCheck, SpecError> {
    let https = match h.scheme.as_deref() {
        None | Some("http") => false,
        Some("https") => true,
        Some(other) => {
            return Err(at.error(
                "health.scheme",
                format!("{other:?} is not a scheme a check speaks: \"http\" or \"https\""),
            ));
        }
    };
    let server_name = h.tls_server_name.clone();
    if let Some(name) = &server_name
        && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
    {
        return Err(at.error(
            "health.tls_server_name",
            format!("{name:?} is not a DNS name or IP address"),
        ));
    }
    let tls = if https {
        Some(CheckTls {
            server_name,
            skip_verify: h.tls_skip_verify.unwrap_or(false),
        })
    } else {
        if let Some(field) = [
            ("health.tls_server_name", server_name.is_some()),
            ("health.tls_skip_verify", h.tls_skip_verify.is_some()),
        ]
        .iter()
        .find_map(|(field, given)| given.then_some(*field))
        {
            return Err(at.error(
                field,
                "only an https check takes it: add scheme = \"https\"",
            ));
        }
        None
    };
    Ok(HttpCheck {
        path,
        tls,
        follow_redirects: !h.disable_redirects.unwrap_or(false),
    })
}

/// Checks a spec against the others the agent runs: no frontend port may be taken twice.
/// `others` are (file or source name, spec) of every other service.
pub fn check_conflicts<'a>(
    spec: &ServiceSpec,
    file: &str,
    text: &str,
    others: impl IntoIterator<Item = &'a ServiceSpec>,
) -> Result<(), SpecError> {
    let at = Locator { file, text };
    for other in others {
        if other.name == spec.name {
            continue;
        }
        for (name, port) in &spec.ports {
            let Some(frontend) = port.frontend else {
                continue;
            };
            let clash = other
                .ports
                .iter()
                .find(|(_, p)| p.frontend == Some(frontend));
            if let Some((other_port, _)) = clash {
                return Err(at.error(
                    &format!("ports.{name}.frontend"),
                    format!("port {frontend} is already the frontend of service {:?} (port {other_port:?})", other.name),
                ));
            }
        }
    }
    Ok(())
}

/// The longest single argument or `KEY=VALUE` string the kernel passes to a program,
/// its terminating NUL included (Linux's MAX_ARG_STRLEN, 32 pages): a longer one makes
/// `execve` fail with E2BIG.
pub const MAX_ARG_STRLEN: usize = 131_072;

/// Bytes of the argument and environment limit kept for the variables Strata adds to every
/// instance (`STRATA_*`, `PORT`, `PATH`), which a spec does not see.
pub const STRATA_ENV_RESERVE: usize = 4096;

/// Refuses what `execve` would: a NUL byte in anything handed to the program (its
/// arguments, environment, working directory; the version becomes `STRATA_VERSION`), or
/// one string longer than [`MAX_ARG_STRLEN`]. The field is named, with the argument's
/// position or the variable's name.
fn check_exec_strings(at: &Locator<'_>, raw: &RawSpec) -> Result<(), SpecError> {
    let nul = |field: &str, what: String| {
        at.error(
            field,
            format!("{what} contains a NUL byte (\\0), which no program can be given"),
        )
    };
    let long = |field: &str, what: String, bytes: usize| {
        at.error(
            field,
            format!(
                "{what} is {bytes} bytes; the kernel takes at most {MAX_ARG_STRLEN} per \
                 argument or variable (MAX_ARG_STRLEN, the NUL included)"
            ),
        )
    };
    let mut argv = vec![("command", &raw.command)];
    if let Some(exec) = raw.health.as_ref().and_then(|h| h.exec.as_ref()) {
        argv.push(("health.exec", exec));
    }
    for (field, args) in argv {
        for (i, arg) in args.iter().enumerate() {
            let what = format!("argument {} ({})", i + 1, preview(arg));
            if arg.contains('\0') {
                return Err(nul(field, what));
            }
            if arg.len() + 1 > MAX_ARG_STRLEN {
                return Err(long(field, what, arg.len() + 1));
            }
        }
    }
    for (key, value) in &raw.env {
        let field = format!("env.{key}");
        if value.contains('\0') {
            return Err(nul(&field, "the value".into()));
        }
        let bytes = key.len() + 1 + value.len() + 1;
        if bytes > MAX_ARG_STRLEN {
            return Err(long(&field, format!("{key}=VALUE"), bytes));
        }
    }
    if let Some(dir) = &raw.workdir {
        use std::os::unix::ffi::OsStrExt;
        if dir.as_os_str().as_bytes().contains(&0) {
            return Err(nul("workdir", "the path".into()));
        }
    }
    if let Some(version) = &raw.version
        && version.contains('\0')
    {
        return Err(nul("version", "the version".into()));
    }
    if let Some(path) = raw.health.as_ref().and_then(|h| h.http.as_ref())
        && path.contains('\0')
    {
        return Err(nul("health.http", "the path".into()));
    }
    Ok(())
}

/// The start of a string for an error message: at most 40 characters, escaped.
fn preview(text: &str) -> String {
    let mut short: String = text.chars().take(40).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// The bytes `execve` needs for `args` and `env`: each string with its NUL and a pointer to
/// it, as the kernel counts them against ARG_MAX.
fn exec_bytes<'a>(args: &[String], env: impl Iterator<Item = (&'a String, &'a String)>) -> usize {
    let pointer = std::mem::size_of::<usize>();
    let args: usize = args.iter().map(|a| a.len() + 1 + pointer).sum();
    let env: usize = env.map(|(k, v)| k.len() + 1 + v.len() + 1 + pointer).sum();
    args + env
}

/// Checks that the spec's command (and its exec health check), with its environment, fits
/// the kernel's limit on arguments plus environment: `arg_max` is `sysconf(_SC_ARG_MAX)` of
/// the agent, which its shims inherit; [`STRATA_ENV_RESERVE`] of it is kept for Strata's own
/// variables. The error gives the measured size and the limit.
pub fn check_exec_size(
    spec: &ServiceSpec,
    file: &str,
    text: &str,
    arg_max: usize,
) -> Result<(), SpecError> {
    let at = Locator { file, text };
    let limit = arg_max.saturating_sub(STRATA_ENV_RESERVE);
    let mut argv = vec![("command", &spec.command)];
    if let Some(HealthCheck::Exec { command }) = spec.health.as_ref().map(|h| &h.check) {
        argv.push(("health.exec", command));
    }
    for (field, args) in argv {
        let bytes = exec_bytes(args, spec.env.iter());
        if bytes > limit {
            // The field named is the larger part of it.
            let field = if exec_bytes(args, std::iter::empty()) >= exec_bytes(&[], spec.env.iter())
            {
                field
            } else {
                "env"
            };
            return Err(at.error(
                field,
                format!(
                    "the arguments and environment take {bytes} bytes; the kernel takes at \
                     most {limit} (ARG_MAX {arg_max} from sysconf(_SC_ARG_MAX), less \
                     {STRATA_ENV_RESERVE} kept for Strata's own variables)"
                ),
            ));
        }
    }
    Ok(())
}

/// Names of services and ports: lower-case letters, digits and '-', starting with a letter.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Parses a size: "256MiB", "10MB", "4096", "1.5GiB" (binary and decimal units).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Turns a TOML error into a spec error with the line and, where the line shows it, the field.
fn toml_error(file: &str, text: &str, error: &toml::de::Error) -> SpecError {
    let line = error.span().map(|s| line_at(text, s.start));
    let field = line.map(|l| field_at_line(text, l)).unwrap_or_default();
    SpecError {
        file: file.to_string(),
        line,
        field,
        problem: error.message().trim().to_string(),
    }
}

/// 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The dotted field a line sets: its table header plus its key ("health.interval").
fn field_at_line(text: &str, line: usize) -> String {
    let mut table = String::new();
    for (i, l) in text.lines().enumerate() {
        let l = strip_comment(l).trim();
        if let Some(header) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = header
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        }
        if i + 1 == line {
            if let Some((key, _)) = l.split_once('=') {
                let key = key.trim().trim_matches('"');
                return if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                };
            }
            return table;
        }
    }
    String::new()
}

/// 1-based line where a dotted field is set, found by its table header and key.
fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let mut table = String::new();
    let mut best = None;
    for (i, l) in text.lines().enumerate() {
        let l = strip_comment(l).trim();
        if let Some(header) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            table = header.trim().to_string();
            if table == field {
                best = Some(i + 1);
            }
            continue;
        }
        if let Some((key, _)) = l.split_once('=') {
            let key = key.trim().trim_matches('"');
            let full = if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            };
            if full == field {
                return Some(i + 1);
            }
            if best.is_none() && field.starts_with(&format!("{full}.")) {
                best = Some(i + 1);
            }
        }
    }
    best
}

fn strip_comment(line: &str) -> &str {
    let mut in_string = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_string = !in_string,
            '#' if !in_string => return &line[..i],
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the supervisor issue, exactly as written.
    pub const EXAMPLE: &str = r#"name = "echo"
version = "1.0.0"
command = ["/bin/sh", "-c", "exec python3 -m http.server $PORT --bind 127.0.0.1"]
instances = 2
env = { GREETING = "hi" }
workdir = "/tmp"

[ports.http]              # a backend port is allocated per instance from the agent's range,
frontend = 18080          # exported as $PORT and $STRATA_PORT_HTTP; `frontend` is the static port
                          # the balancer serves on every host (balancer issue)
[health]
http = "/"                # or: tcp = true, or: exec = ["cmd", "arg"] (0 passing, 1 warning, else critical)
interval = "1s"
timeout = "500ms"
rise = 2                  # consecutive passes to become passing
fall = 3                  # consecutive failures to become critical
grace = "5s"              # no failures counted while starting

[restart]
policy = "always"         # always | on-failure | never
backoff_initial = "100ms"
backoff_max = "30s"       # exponential with jitter; reset after a stable run
crashloop_after = 5       # failures within `crashloop_window` put the service in crashloop
crashloop_window = "60s"

[stop]
signal = "SIGTERM"
timeout = "10s"           # then SIGKILL to everything the instance started

[resources]
memory_max = "256MiB"
cpu_max = 0.5             # cores
pids_max = 128
nofile = 4096

[logs]
max_bytes = "10MiB"
keep = 5
"#;

    fn err(text: &str) -> SpecError {
        parse_spec("echo.toml", text).unwrap_err()
    }

    #[test]
    fn the_issue_example_is_accepted_as_written() {
        let spec = parse_spec("strata.toml", EXAMPLE).unwrap();
        assert_eq!(spec.name, "echo");
        assert_eq!(spec.instances, 2);
        assert_eq!(spec.ports["http"].frontend, Some(18080));
        let health = spec.health.unwrap();
        assert_eq!(health.check, HealthCheck::Http(HttpCheck::plain("/")));
        assert_eq!((health.rise, health.fall), (2, 3));
        assert_eq!(health.grace, Duration::from_secs(5));
        assert_eq!(spec.restart.policy, RestartPolicy::Always);
        assert_eq!(spec.restart.backoff_initial, Duration::from_millis(100));
        assert_eq!(spec.stop.signal, Signal::Term);
        assert_eq!(spec.resources.memory_max, Some(256 << 20));
        assert_eq!(spec.resources.cpu_max, Some(0.5));
        assert_eq!(
            spec.logs,
            LogSpec {
                max_bytes: 10 << 20,
                keep: 5
            }
        );
        assert_eq!(spec.env["GREETING"], "hi");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let e = err(&EXAMPLE.replace("rise = 2", "rize = 2"));
        assert_eq!(e.line, Some(15));
        assert_eq!(e.field, "health.rize");
        assert!(e.problem.contains("unknown field"), "{e}");
        assert!(
            e.to_string().starts_with("echo.toml:15: health.rize: "),
            "{e}"
        );
    }

    #[test]
    fn bad_duration_names_line_and_field() {
        let e = err(&EXAMPLE.replace("interval = \"1s\"", "interval = \"1 fortnight-ish\""));
        assert_eq!((e.line, e.field.as_str()), (Some(13), "health.interval"));
        assert!(e.problem.contains("invalid duration"), "{e}");
    }

    /// A duration of ~300 billion years parsed, and the supervisor then panicked: the health
    /// tracker adds the grace period to the start time (`Instant` overflow). The `spec_parse`
    /// fuzz target drives the tracker with every spec it parses, and replays this one
    /// (`fuzz/corpus/spec_parse/regression-grace-overflow.toml`).
    #[test]
    fn durations_beyond_a_year_are_rejected() {
        let e = err(&EXAMPLE.replace("grace = \"5s\"", "grace = \"300000000000y\""));
        assert_eq!((e.line, e.field.as_str()), (Some(17), "health.grace"));
        assert!(e.problem.contains("longer than the maximum"), "{e}");
        let e = err(&EXAMPLE.replace("interval = \"1s\"", "interval = \"366days\""));
        assert_eq!(e.field, "health.interval");
        let year = EXAMPLE.replace("timeout = \"10s\"", "timeout = \"365days\"");
        assert_eq!(
            parse_spec("echo.toml", &year).unwrap().stop.timeout,
            MAX_DURATION
        );
    }

    #[test]
    fn negative_instances_and_empty_command_are_rejected() {
        let e = err(&EXAMPLE.replace("instances = 2", "instances = -1"));
        assert_eq!((e.line, e.field.as_str()), (Some(4), "instances"));
        let e = err(&EXAMPLE.replace(
            r#"command = ["/bin/sh", "-c", "exec python3 -m http.server $PORT --bind 127.0.0.1"]"#,
            "command = []",
        ));
        assert_eq!((e.line, e.field.as_str()), (Some(3), "command"));
    }

    #[test]
    fn wrong_types_name_the_field() {
        let e = err(&EXAMPLE.replace("instances = 2", "instances = \"two\""));
        assert_eq!((e.line, e.field.as_str()), (Some(4), "instances"));
    }

    #[test]
    fn frontend_port_clash_names_the_other_service() {
        let echo = parse_spec("echo.toml", EXAMPLE).unwrap();
        let other_text = EXAMPLE.replace("name = \"echo\"", "name = \"other\"");
        let other = parse_spec("other.toml", &other_text).unwrap();
        let e = check_conflicts(&other, "other.toml", &other_text, [&echo]).unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (Some(9), "ports.http.frontend"));
        assert!(e.problem.contains("\"echo\""), "{e}");
        assert!(check_conflicts(&echo, "echo.toml", EXAMPLE, [&echo]).is_ok());
    }

    #[test]
    fn an_unknown_algorithm_or_signal_is_an_error_not_a_default() {
        let with = |extra: &str| format!("{EXAMPLE}{extra}");
        let e = err(&with("[balance]\nalgorithm = \"random\"\n"));
        assert_eq!(e.field, "balance.algorithm");
        assert!(
            e.problem
                .contains("\"random\" is not one of round_robin, least_conn, p2c_ewma"),
            "{e}"
        );
        let e = err(&with("[balance]\nalgorithm = \"unspecified\"\n"));
        assert_eq!(e.field, "balance.algorithm");
        let spec = parse_spec(
            "echo.toml",
            &with("[balance]\nalgorithm = \"least_conn\"\n"),
        );
        assert_eq!(spec.unwrap().balance.algorithm, Algorithm::LeastConn);
        let e = err(&EXAMPLE.replace("signal = \"SIGTERM\"", "signal = \"SIGWINCH\""));
        assert_eq!(e.field, "stop.signal");
        assert!(e.problem.contains("SIGHUP, SIGINT"), "{e}");
    }

    #[test]
    fn update_takes_a_flag_or_a_count_and_names_the_field_it_refuses() {
        let with = |extra: &str| format!("{EXAMPLE}[update]\n{extra}");
        let spec = parse_spec("echo.toml", EXAMPLE).unwrap();
        assert_eq!(
            spec.update,
            UpdateSpec {
                surge: None,
                max_unavailable: None,
                min_healthy_time: DEFAULT_MIN_HEALTHY_TIME,
                healthy_deadline: DEFAULT_HEALTHY_DEADLINE,
            }
        );
        let update = |extra: &str| parse_spec("echo.toml", &with(extra)).unwrap().update;
        assert_eq!(update("surge = true\n").surge, Some(1));
        assert_eq!(update("surge = false\n").surge, Some(0));
        assert_eq!(update("surge = 3\n").surge, Some(3));
        let u =
            update("max_unavailable = 1\nmin_healthy_time = \"1s\"\nhealthy_deadline = \"30s\"\n");
        assert_eq!(u.max_unavailable, Some(1));
        assert_eq!(u.min_healthy_time, Duration::from_secs(1));
        assert_eq!(u.healthy_deadline, Duration::from_secs(30));

        let e = err(&with("surge = \"lots\"\n"));
        assert_eq!((e.field.as_str(), e.line), ("update.surge", Some(40)));
        assert!(e.problem.contains("not true, false or a number"), "{e}");
        let e = err(&with("surge = -1\n"));
        assert_eq!(e.field, "update.surge");
        let e = err(&with("max_unavailable = 1000\n"));
        assert_eq!(e.field, "update.max_unavailable");
        let e = err(&with("surge = false\nmax_unavailable = 0\n"));
        assert_eq!(e.field, "update.max_unavailable");
        assert!(e.problem.contains("no instance be replaced"), "{e}");
        let e = err(&with(
            "min_healthy_time = \"10s\"\nhealthy_deadline = \"5s\"\n",
        ));
        assert_eq!(e.field, "update.healthy_deadline");
        assert!(
            e.problem.contains("longer than min_healthy_time (10s)"),
            "{e}"
        );
        let e = err(&with("min_healthy_time = \"soon\"\n"));
        assert_eq!(e.field, "update.min_healthy_time");
        let e = err(&with("canary = 1\n"));
        assert_eq!(e.field, "update.canary");
    }

    #[test]
    fn an_http_check_takes_https_tls_and_redirect_settings_named_as_consul_names_them() {
        let with = |extra: &str| EXAMPLE.replace("http = \"/\"", &format!("http = \"/\"\n{extra}"));
        let check = |extra: &str| {
            parse_spec("echo.toml", &with(extra))
                .unwrap()
                .health
                .unwrap()
                .check
        };
        assert_eq!(
            check(
                "scheme = \"https\"\ntls_server_name = \"api.internal\"\ntls_skip_verify = true\ndisable_redirects = true"
            ),
            HealthCheck::Http(HttpCheck {
                path: "/".into(),
                tls: Some(CheckTls {
                    server_name: Some("api.internal".into()),
                    skip_verify: true,
                }),
                follow_redirects: false,
            })
        );
        assert_eq!(
            check("scheme = \"http\""),
            HealthCheck::Http(HttpCheck::plain("/"))
        );
        let e = err(&with("scheme = \"ftp\""));
        assert_eq!(e.field, "health.scheme");
        assert!(e.problem.contains("\"http\" or \"https\""), "{e}");
        let e = err(&with("tls_skip_verify = true"));
        assert_eq!(e.field, "health.tls_skip_verify");
        assert!(e.problem.contains("scheme = \"https\""), "{e}");
        let e = err(&with(
            "scheme = \"https\"\ntls_server_name = \"not a name\"",
        ));
        assert_eq!(e.field, "health.tls_server_name");
        let e = err(&EXAMPLE.replace("http = \"/\"", "tcp = true\ndisable_redirects = true"));
        assert_eq!(e.field, "health.disable_redirects");
    }

    #[test]
    fn a_check_address_is_an_ip_for_http_and_tcp_checks_only() {
        let spec = parse_spec(
            "echo.toml",
            &EXAMPLE.replace("http = \"/\"", "http = \"/\"\naddress = \"127.0.0.1\""),
        )
        .unwrap();
        assert_eq!(
            spec.health.unwrap().address,
            Some(std::net::IpAddr::from([127, 0, 0, 1]))
        );
        let e = err(&EXAMPLE.replace("http = \"/\"", "http = \"/\"\naddress = \"localhost\""));
        assert_eq!((e.field.as_str(), e.line), ("health.address", Some(13)));
        assert!(e.problem.contains("not an IP address"), "{e}");
        let e = err(&EXAMPLE.replace("http = \"/\"", "exec = [\"/bin/true\"]\naddress = \"::1\""));
        assert_eq!(e.field, "health.address");
    }

    #[test]
    fn balance_settings_parse_with_defaults_and_name_the_field_in_errors() {
        let with = |extra: &str| format!("{EXAMPLE}[balance]\n{extra}");
        let spec = parse_spec("echo.toml", EXAMPLE).unwrap();
        assert_eq!(spec.balance, BalanceSpec::default());
        let spec = parse_spec(
            "echo.toml",
            &with(
                "connect_timeout = \"250ms\"\nretries = 0\nslow_start = \"0s\"\nmax_conns = 50\n\
                 max_queue = 0\nqueue_timeout = \"0s\"\nidle_timeout = \"5m\"\nresponse_timeout = \"0s\"\n",
            ),
        )
        .unwrap()
        .balance;
        assert_eq!(
            spec,
            BalanceSpec {
                connect_timeout: Duration::from_millis(250),
                retries: 0,
                slow_start: Duration::ZERO,
                max_conns: 50,
                max_queue: 0,
                queue_timeout: Duration::ZERO,
                idle_timeout: Duration::from_secs(300),
                response_timeout: Duration::ZERO,
                ..BalanceSpec::default()
            }
        );
        for (line, field, problem) in [
            (
                "connect_timeout = \"0s\"",
                "balance.connect_timeout",
                "out of range",
            ),
            (
                "connect_timeout = \"1h\"",
                "balance.connect_timeout",
                "out of range",
            ),
            ("retries = 11", "balance.retries", "out of range 0..=10"),
            ("retries = -1", "balance.retries", "out of range"),
            ("max_conns = -5", "balance.max_conns", "out of range"),
            ("max_queue = 100001", "balance.max_queue", "out of range"),
            (
                "queue_timeout = \"0s\"",
                "balance.queue_timeout",
                "max_queue",
            ),
            (
                "idle_timeout = \"soon\"",
                "balance.idle_timeout",
                "invalid duration",
            ),
            (
                "slow_start = \"2y\"",
                "balance.slow_start",
                "longer than the maximum",
            ),
            ("response_timeout = 5", "balance.response_timeout", ""),
            ("max_conn = 5", "balance", "unknown field"),
        ] {
            let e = err(&with(line));
            assert!(e.field.starts_with(field), "{line}: {e}");
            assert!(e.problem.contains(problem), "{line}: {e}");
        }
    }

    #[test]
    fn health_needs_exactly_one_check() {
        let e = err(&EXAMPLE.replace("http = \"/\"", "http = \"/\"\ntcp = true"));
        assert_eq!(e.field, "health");
        assert_eq!(e.line, Some(11));
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = parse_spec("a.toml", "name = \"a\"\ncommand = [\"/bin/true\"]\n").unwrap();
        assert_eq!(spec.instances, 1);
        assert_eq!(spec.restart.policy, RestartPolicy::Always);
        assert_eq!(spec.stop.timeout, Duration::from_secs(10));
        assert!(spec.health.is_none());
    }

    #[test]
    fn sizes_parse_binary_and_decimal_units() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("10MB"), Some(10_000_000));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }

    #[test]
    fn a_nul_byte_anywhere_a_program_is_given_is_refused_naming_the_field() {
        let minimal = "name = \"a\"\ncommand = [\"/bin/sh\", \"-c\", \"true\"]\n";
        for (text, field, what) in [
            (
                minimal.replace("\"true\"", "\"tr\\u0000ue\""),
                "command",
                "argument 3",
            ),
            (
                format!("{minimal}env = {{ A = \"x\\u0000y\" }}\n"),
                "env.A",
                "the value",
            ),
            (
                format!("{minimal}env = {{ \"A\\u0000\" = \"x\" }}\n"),
                "env",
                "not a valid variable name",
            ),
            (
                format!("{minimal}workdir = \"/tmp/\\u0000x\"\n"),
                "workdir",
                "the path",
            ),
            (
                format!("version = \"1\\u0000\"\n{minimal}"),
                "version",
                "the version",
            ),
            (
                format!("{minimal}[health]\nexec = [\"/bin/true\", \"\\u0000\"]\n"),
                "health.exec",
                "argument 2",
            ),
            (
                format!("{minimal}[ports.http]\n[health]\nhttp = \"/\\u0000\"\n"),
                "health.http",
                "the path",
            ),
        ] {
            let e = parse_spec("a.toml", &text).expect_err(&text);
            assert_eq!(e.field, field, "{e}");
            assert!(e.problem.contains(what), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
    }

    #[test]
    fn one_string_over_the_kernels_limit_is_refused_with_its_size() {
        let fits = "x".repeat(MAX_ARG_STRLEN - 1);
        let text = format!("name = \"a\"\ncommand = [\"/bin/echo\", \"{fits}\"]\n");
        assert!(parse_spec("a.toml", &text).is_ok());
        let text = format!("name = \"a\"\ncommand = [\"/bin/echo\", \"{fits}x\"]\n");
        let e = parse_spec("a.toml", &text).unwrap_err();
        assert_eq!(e.field, "command");
        assert!(
            e.problem
                .contains("argument 2 (\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\") is 131073 bytes; the kernel takes at most 131072"),
            "{e}"
        );
        let value = "v".repeat(MAX_ARG_STRLEN);
        let text =
            format!("name = \"a\"\ncommand = [\"/bin/true\"]\nenv = {{ BIG = \"{value}\" }}\n");
        let e = parse_spec("a.toml", &text).unwrap_err();
        assert_eq!(e.field, "env.BIG");
        assert!(e.problem.contains("BIG=VALUE is 131077 bytes"), "{e}");
    }

    #[test]
    fn arguments_and_environment_over_arg_max_are_refused_with_size_and_limit() {
        let args: Vec<String> = (0..40)
            .map(|_| format!("\"{}\"", "a".repeat(1000)))
            .collect();
        let text = format!(
            "name = \"a\"\ncommand = [\"/bin/echo\", {}]\nenv = {{ A = \"b\" }}\n",
            args.join(", ")
        );
        let spec = parse_spec("a.toml", &text).unwrap();
        // 10 ("/bin/echo") + 40 × 1001 bytes of strings, 4 of "A=b", and 42 pointers.
        let bytes = 10 + 40 * 1001 + 4 + 42 * std::mem::size_of::<usize>();
        assert!(check_exec_size(&spec, "a.toml", &text, bytes + STRATA_ENV_RESERVE).is_ok());
        let e =
            check_exec_size(&spec, "a.toml", &text, bytes + STRATA_ENV_RESERVE - 1).unwrap_err();
        assert_eq!((e.field.as_str(), e.line), ("command", Some(2)));
        assert_eq!(
            e.problem,
            format!(
                "the arguments and environment take {bytes} bytes; the kernel takes at most {} \
                 (ARG_MAX {} from sysconf(_SC_ARG_MAX), less 4096 kept for Strata's own variables)",
                bytes - 1,
                bytes - 1 + STRATA_ENV_RESERVE
            )
        );
        let env: Vec<String> = (0..40)
            .map(|i| format!("V{i} = \"{}\"", "e".repeat(1000)))
            .collect();
        let text = format!(
            "name = \"a\"\ncommand = [\"/bin/true\"]\n[health]\nexec = [\"/bin/true\"]\n\
             [env]\n{}\n",
            env.join("\n")
        );
        let spec = parse_spec("a.toml", &text).unwrap();
        let e = check_exec_size(&spec, "a.toml", &text, 30_000).unwrap_err();
        assert_eq!(e.field, "env");
    }

    #[test]
    fn bad_names_are_rejected() {
        let e = err(&EXAMPLE.replace("name = \"echo\"", "name = \"Echo Server\""));
        assert_eq!((e.line, e.field.as_str()), (Some(1), "name"));
    }
}
