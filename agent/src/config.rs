//! The agent's configuration: built-in defaults, overridden by the TOML config file,
//! overridden by `STRATA_*` environment variables, overridden by flags.
//!
//! clap merges flags and environment variables (a flag wins over its variable); the file
//! fills whatever both left unset. `resolve` is a pure function so every rule is testable.

use crate::auth::limits::RateLimits;
use crate::metrics::alerts::{AlertsConfig, Rule};
use crate::supervisor::log_retention::RetentionPolicy;
use crate::tls::TlsFiles;
use clap::Args;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Default gRPC API address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7700";
/// Default HTTP address for /metrics and /health.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:7702";
/// Default range of backend ports handed to service instances.
pub const DEFAULT_PORT_RANGE: RangeInclusive<u16> = 20000..=29999;
/// Default services dir on an installed host.
pub const DEFAULT_SERVICES_DIR: &str = "/etc/strata/services.d";
/// Default gossip address.
pub const DEFAULT_GOSSIP_ADDR: &str = "127.0.0.1:7701";
/// Default DNS address.
pub const DEFAULT_DNS_ADDR: &str = "127.0.0.1:7753";
/// Default interval between two host samples.
pub const DEFAULT_COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Flags of `strata-agent run`; each one can also come from a `STRATA_*` variable.
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    /// TOML config file; flags and STRATA_* variables override what it sets.
    #[arg(long, env = "STRATA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the node id, the event journal and other state
    /// [default: /var/lib/strata as root, else $XDG_DATA_HOME/strata; a temporary dir with --dev].
    #[arg(long, env = "STRATA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Name of this node in the cluster [default: the hostname].
    #[arg(long, env = "STRATA_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// Address of the gRPC API [default: 127.0.0.1:7700].
    #[arg(long, env = "STRATA_GRPC_ADDR", value_name = "ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Address of the HTTP endpoint serving /metrics and /health [default: 127.0.0.1:7702].
    #[arg(long, env = "STRATA_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Development mode: loopback addresses only, and a temporary data dir when none is given.
    #[arg(long, env = "STRATA_DEV")]
    pub dev: bool,
    /// Interval between host samples, e.g. "1s", "500ms" [default: 1s].
    #[arg(long, env = "STRATA_COLLECT_INTERVAL", value_name = "DURATION", value_parser = parse_duration_arg)]
    pub collect_interval: Option<Duration>,
    /// UDP (and TCP) address of the gossip protocol [default: 127.0.0.1:7701].
    #[arg(long, env = "STRATA_GOSSIP_ADDR", value_name = "ADDR")]
    pub gossip_addr: Option<SocketAddr>,
    /// The gossip address other agents reach this one at, when it differs from --gossip-addr.
    #[arg(long, env = "STRATA_ADVERTISE_ADDR", value_name = "ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    /// Gossip address of an agent to join (repeatable); retried with backoff.
    #[arg(long = "join", value_name = "HOST:PORT")]
    pub join: Vec<String>,
    /// The cluster key: 32 bytes in base64 (`strata-agent keygen` prints one).
    #[arg(
        long,
        env = "STRATA_GOSSIP_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub gossip_key: Option<String>,
    /// Allow gossip without a key (unsealed packets) outside --dev.
    #[arg(long, env = "STRATA_INSECURE_GOSSIP")]
    pub insecure_gossip: bool,
    /// Address the local load balancer listens on for frontend ports [default: 127.0.0.1].
    #[arg(long, env = "STRATA_BALANCER_ADDR", value_name = "IP")]
    pub balancer_addr: Option<std::net::IpAddr>,
    /// UDP and TCP address of the DNS server [default: 127.0.0.1:7753].
    #[arg(long, env = "STRATA_DNS_ADDR", value_name = "ADDR")]
    pub dns_addr: Option<SocketAddr>,
    /// Directory of service specs (`*.toml`) applied at start
    /// [default: /etc/strata/services.d; none with --dev].
    #[arg(long, env = "STRATA_SERVICES_DIR", value_name = "DIR")]
    pub services_dir: Option<PathBuf>,
    /// A label of this node, KEY=VALUE; repeatable. Adds to and overrides the config file's labels.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// This agent's TLS certificate (PEM), from `strata-agent tls issue --agent NAME`; with
    /// --tls-key and --tls-ca, the gRPC API and agent-to-agent traffic use TLS.
    #[arg(long, env = "STRATA_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "STRATA_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA (PEM) that client and peer certificates must chain to.
    #[arg(long, env = "STRATA_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Serve the gRPC API in plaintext on a non-loopback address (no TLS configured).
    #[arg(long, env = "STRATA_INSECURE")]
    pub insecure: bool,
    /// On SIGTERM or SIGINT, stop every service instance (as `strata-agent stop-services`
    /// would) instead of leaving them running for the next agent to re-adopt.
    #[arg(long, env = "STRATA_STOP_SERVICES_ON_EXIT")]
    pub stop_services_on_exit: bool,
    /// On SIGTERM or SIGINT, leave the cluster (drain, then gossip leave) before stopping, for
    /// hosts that do not come back. Without it a stopped agent's instances stay routable.
    #[arg(long, env = "STRATA_LEAVE_ON_STOP")]
    pub leave_on_stop: bool,
    /// The `strata-shim` binary every service instance runs under
    /// [default: strata-shim in the directory of the strata-agent binary].
    #[arg(long, env = "STRATA_SHIM_PATH", value_name = "FILE")]
    pub shim_path: Option<PathBuf>,
    /// How log lines are written to stderr: `text` for people and journald, `json` (one
    /// object per line) for log shippers [default: text].
    #[arg(long, env = "STRATA_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// How the agent writes its log lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event for people (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, fields, target, spans).
    Json,
}

/// The `[journal]` table: how many events are kept, and for how long.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    pub max_events: Option<usize>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub max_age: Option<Duration>,
}

/// The `[logs]` table: how long the logs of removed services are kept, how much all instance
/// logs may take together, and how often that is enforced.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsSection {
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub retention: Option<Duration>,
    /// A size such as "1GiB", or a number of bytes.
    pub max_total_bytes: Option<SizeValue>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub sweep_interval: Option<Duration>,
}

/// A size in a config file: words ("1GiB", "500MB") or a plain number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// The `[api]` table: per-client rate limits on the gRPC API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Units a client regains per second (a view costs 1, a heavy read or a change 10).
    pub rate_per_client: Option<f64>,
    /// The most units a client can spend at once.
    pub burst_per_client: Option<f64>,
}

/// The config file as written by a person: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub node_name: Option<String>,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub dev: Option<bool>,
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub collect_interval: Option<Duration>,
    /// How many processes the top lists hold.
    pub top_processes: Option<usize>,
    pub services_dir: Option<PathBuf>,
    pub gossip_addr: Option<SocketAddr>,
    pub advertise_addr: Option<SocketAddr>,
    #[serde(default)]
    pub join: Vec<String>,
    pub gossip_key: Option<String>,
    pub insecure_gossip: Option<bool>,
    /// How long a down member stays in the catalog before it is forgotten.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub reap_after: Option<Duration>,
    pub balancer_addr: Option<std::net::IpAddr>,
    pub dns_addr: Option<SocketAddr>,
    /// The DNS domain services are found under.
    pub dns_domain: Option<String>,
    /// DNS answers only passing instances, not warning ones (Consul's `only_passing`).
    pub dns_only_passing: Option<bool>,
    /// Backend ports for service instances, "FIRST-LAST".
    pub port_range: Option<String>,
    /// Parent cgroup of every service instance.
    pub cgroup_root: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Plaintext gRPC on a non-loopback address.
    pub insecure: Option<bool>,
    /// Stop the services on SIGTERM or SIGINT instead of leaving them running.
    pub stop_services_on_exit: Option<bool>,
    /// Leave the cluster on SIGTERM or SIGINT, not only when asked to leave.
    pub leave_on_stop: Option<bool>,
    /// How long a leaving node drains before it leaves gossip.
    #[serde(default, deserialize_with = "deserialize_opt_duration")]
    pub leave_drain: Option<Duration>,
    /// The `strata-shim` binary.
    pub shim_path: Option<PathBuf>,
    /// What the agent logs, as a tracing filter ("info", "warn,strata_registry=debug");
    /// `STRATA_LOG` wins over it. Reloaded on SIGHUP.
    pub log_level: Option<String>,
    /// `text` or `json`; `--log-format` and `STRATA_LOG_FORMAT` win over it.
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub journal: JournalSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub logs: LogsSection,
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// The settings the agent runs with, after every layer was applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `None` only in dev mode without a data dir: the agent makes a temporary one.
    pub data_dir: Option<PathBuf>,
    pub node_name: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub dev: bool,
    pub collect_interval: Duration,
    pub top_processes: usize,
    pub labels: BTreeMap<String, String>,
    pub journal_max_events: usize,
    pub journal_max_age: Duration,
    /// Host alert rules: the built-in ones with the file's overrides applied.
    pub alerts: Vec<Rule>,
    pub services_dir: Option<PathBuf>,
    pub port_range: RangeInclusive<u16>,
    pub cgroup_root: String,
    pub gossip_addr: SocketAddr,
    pub advertise_addr: Option<SocketAddr>,
    pub join: Vec<String>,
    /// The cluster key; `None` only with --dev or --insecure-gossip.
    pub gossip_key: Option<String>,
    pub reap_after: Duration,
    pub balancer_addr: std::net::IpAddr,
    pub dns_addr: SocketAddr,
    pub dns_domain: String,
    /// DNS answers only passing instances; false (the default, as Consul's `only_passing`):
    /// warning ones too.
    pub dns_only_passing: bool,
    /// TLS on the gRPC API and between agents; `None` is plaintext (loopback, or --insecure).
    pub tls: Option<TlsFiles>,
    /// Per-client rate limits on the API.
    pub api_limits: RateLimits,
    /// Stop every service instance when the agent exits, instead of leaving them running.
    pub stop_services_on_exit: bool,
    /// Leave the cluster whenever the agent stops, not only on `strata-agent leave`.
    pub leave_on_stop: bool,
    /// How long a leaving node's instances drain from every balancer before it leaves gossip.
    pub leave_drain: Duration,
    /// The `strata-shim` binary as configured; `None`: `strata-shim` next to the agent's own
    /// binary (see [`crate::shim_binary`]).
    pub shim_path: Option<PathBuf>,
    /// The tracing filter of the config file [default: info]; `STRATA_LOG` wins over it.
    pub log_level: String,
    /// How log lines are written: text or JSON lines. Taken at start only.
    pub log_format: LogFormat,
    /// How long the logs of removed services are kept, and the cap on all instance logs.
    pub log_retention: RetentionPolicy,
}

/// A configuration that cannot be used, with the file, line and key where it applies.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// Reads and parses a config file; errors name the file, the line and the key.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.display().to_string(),
        message,
    })
}

/// Parses config text; the error text carries the line, column and key from the TOML parser.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
}

/// Applies the layers: flags and environment (already merged in `args`) over the file over
/// the defaults. `hostname` is the fallback node name.
pub fn resolve(
    args: &RunArgs,
    file: FileConfig,
    hostname: &str,
) -> Result<AgentConfig, ConfigError> {
    let dev = args.dev || file.dev.unwrap_or(false);
    let grpc_addr = args
        .grpc_addr
        .or(file.grpc_addr)
        .unwrap_or_else(|| default_addr(DEFAULT_GRPC_ADDR));
    let http_addr = args
        .http_addr
        .or(file.http_addr)
        .unwrap_or_else(|| default_addr(DEFAULT_HTTP_ADDR));
    if dev {
        for (key, addr) in [("grpc_addr", grpc_addr), ("http_addr", http_addr)] {
            if !addr.ip().is_loopback() {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!(
                        "{addr} is not a loopback address; --dev binds to loopback only"
                    ),
                });
            }
        }
    }
    let node_name = args
        .node_name
        .clone()
        .or(file.node_name)
        .unwrap_or_else(|| hostname.to_string());
    validate_node_name(&node_name)?;
    let collect_interval = args
        .collect_interval
        .or(file.collect_interval)
        .unwrap_or(DEFAULT_COLLECT_INTERVAL);
    if collect_interval < Duration::from_millis(100) || collect_interval > Duration::from_secs(60) {
        return Err(ConfigError::Invalid {
            key: "collect_interval",
            problem: format!(
                "{} is outside the allowed range 100ms..=60s",
                humantime::format_duration(collect_interval)
            ),
        });
    }
    let alerts = file.alerts.rules().map_err(|e| ConfigError::Invalid {
        key: "alerts.rules",
        problem: e.to_string(),
    })?;
    let port_range = match &file.port_range {
        None => DEFAULT_PORT_RANGE,
        Some(text) => {
            crate::supervisor::ports::parse_range(text).ok_or_else(|| ConfigError::Invalid {
                key: "port_range",
                problem: format!("{text:?} is not FIRST-LAST with 1 <= FIRST <= LAST <= 65535"),
            })?
        }
    };
    let cgroup_root = file
        .cgroup_root
        .clone()
        .unwrap_or_else(|| "strata".to_string());
    if cgroup_root.is_empty() || cgroup_root.contains("..") || cgroup_root.starts_with('/') {
        return Err(ConfigError::Invalid {
            key: "cgroup_root",
            problem: format!("{cgroup_root:?} must be a relative cgroup name such as \"strata\""),
        });
    }
    let services_dir = args
        .services_dir
        .clone()
        .or(file.services_dir.clone())
        .or_else(|| {
            if dev {
                None
            } else {
                Some(PathBuf::from(DEFAULT_SERVICES_DIR))
            }
        });
    let gossip_addr = args
        .gossip_addr
        .or(file.gossip_addr)
        .unwrap_or_else(|| default_addr(DEFAULT_GOSSIP_ADDR));
    let dns_addr = args
        .dns_addr
        .or(file.dns_addr)
        .unwrap_or_else(|| default_addr(DEFAULT_DNS_ADDR));
    let balancer_addr = args
        .balancer_addr
        .or(file.balancer_addr)
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    if dev {
        for (key, ip) in [
            ("gossip_addr", gossip_addr.ip()),
            ("dns_addr", dns_addr.ip()),
            ("balancer_addr", balancer_addr),
        ] {
            if !ip.is_loopback() {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!(
                        "{ip} is not a loopback address; --dev binds to loopback only"
                    ),
                });
            }
        }
    }
    let gossip_key = args.gossip_key.clone().or(file.gossip_key.clone());
    let insecure_gossip = args.insecure_gossip || file.insecure_gossip.unwrap_or(false);
    if gossip_key.is_none() && !dev && !insecure_gossip {
        return Err(ConfigError::Invalid {
            key: "gossip_key",
            problem: "no cluster key: give --gossip-key (strata-agent keygen prints one), or --insecure-gossip to gossip unsealed".into(),
        });
    }
    if let Some(key) = &gossip_key {
        strata_registry::seal::Keyring::new(key).map_err(|e| ConfigError::Invalid {
            key: "gossip_key",
            problem: e.to_string(),
        })?;
    }
    let tls = resolve_tls(
        args.tls_cert.clone().or(file.tls_cert.clone()),
        args.tls_key.clone().or(file.tls_key.clone()),
        args.tls_ca.clone().or(file.tls_ca.clone()),
    )?;
    let insecure = args.insecure || file.insecure.unwrap_or(false);
    if tls.is_none() && !insecure && !grpc_addr.ip().is_loopback() {
        return Err(ConfigError::Invalid {
            key: "grpc_addr",
            problem: format!(
                "{grpc_addr} is not a loopback address and no TLS is configured: give tls_cert, tls_key and tls_ca (--tls-cert, --tls-key, --tls-ca; `strata-agent tls` makes them), or insecure (--insecure) to serve plaintext"
            ),
        });
    }
    let mut join = file.join.clone();
    join.extend(args.join.iter().cloned());
    let dns_domain = file
        .dns_domain
        .clone()
        .unwrap_or_else(|| "strata".to_string());
    let mut labels = file.labels;
    labels.extend(args.labels.iter().cloned());
    let shim_path = args.shim_path.clone().or(file.shim_path);
    if shim_path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(ConfigError::Invalid {
            key: "shim_path",
            problem: "is empty; give the path of the strata-shim binary, or leave it unset for \
                      strata-shim next to strata-agent"
                .into(),
        });
    }
    let log_level = file.log_level.clone().unwrap_or_else(|| "info".to_string());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        return Err(ConfigError::Invalid {
            key: "log_level",
            problem: format!(
                "{log_level:?} is not a log filter such as \"info\" or \"warn,strata_registry=debug\": {e}"
            ),
        });
    }
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .or_else(|| if dev { None } else { Some(default_data_dir()) });
    Ok(AgentConfig {
        data_dir,
        node_name,
        grpc_addr,
        http_addr,
        dev,
        collect_interval,
        top_processes: file.top_processes.unwrap_or(10).clamp(1, 100),
        labels,
        journal_max_events: file.journal.max_events.unwrap_or(100_000).max(100),
        journal_max_age: file
            .journal
            .max_age
            .unwrap_or(Duration::from_secs(7 * 24 * 3600)),
        alerts,
        services_dir,
        port_range,
        cgroup_root,
        gossip_addr,
        advertise_addr: args.advertise_addr.or(file.advertise_addr),
        join,
        gossip_key,
        reap_after: reap_after(file.reap_after)?,
        balancer_addr,
        dns_addr,
        dns_domain,
        dns_only_passing: file.dns_only_passing.unwrap_or(false),
        tls,
        api_limits: resolve_api_limits(&file.api)?,
        log_retention: resolve_log_retention(&file.logs)?,
        stop_services_on_exit: args.stop_services_on_exit
            || file.stop_services_on_exit.unwrap_or(false),
        leave_on_stop: args.leave_on_stop || file.leave_on_stop.unwrap_or(false),
        leave_drain: leave_drain(file.leave_drain)?,
        shim_path,
        log_level,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
    })
}

/// The API rate limits: the file's values over the defaults, each a positive number.
fn resolve_api_limits(api: &ApiSection) -> Result<RateLimits, ConfigError> {
    let defaults = RateLimits::default();
    let check = |key: &'static str, value: Option<f64>, default: f64| match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v >= 1.0 => Ok(v),
        Some(v) => Err(ConfigError::Invalid {
            key,
            problem: format!("{v} is not a number of at least 1"),
        }),
    };
    let limits = RateLimits {
        per_second: check(
            "api.rate_per_client",
            api.rate_per_client,
            defaults.per_second,
        )?,
        burst: check("api.burst_per_client", api.burst_per_client, defaults.burst)?,
    };
    if limits.burst < 10.0 {
        return Err(ConfigError::Invalid {
            key: "api.burst_per_client",
            problem: format!(
                "{} is below 10, the cost of one heavy call: such calls would never pass",
                limits.burst
            ),
        });
    }
    Ok(limits)
}

/// The `[logs]` table over the defaults (7 days, 1 GiB, a sweep a minute), each checked.
fn resolve_log_retention(logs: &LogsSection) -> Result<RetentionPolicy, ConfigError> {
    let defaults = RetentionPolicy::default();
    let retention = logs.retention.unwrap_or(defaults.retention);
    if retention < Duration::from_secs(1) {
        return Err(ConfigError::Invalid {
            key: "logs.retention",
            problem: format!(
                "{} is shorter than 1s (examples: 7d, 36h)",
                humantime::format_duration(retention)
            ),
        });
    }
    let max_total_bytes = match &logs.max_total_bytes {
        None => defaults.max_total_bytes,
        Some(SizeValue::Bytes(n)) => *n,
        Some(SizeValue::Text(text)) => {
            crate::supervisor::spec::parse_size(text).ok_or_else(|| ConfigError::Invalid {
                key: "logs.max_total_bytes",
                problem: format!("{text:?} is not a size (examples: 1GiB, 500MB, 1073741824)"),
            })?
        }
    };
    if max_total_bytes < 1 << 20 {
        return Err(ConfigError::Invalid {
            key: "logs.max_total_bytes",
            problem: format!("{max_total_bytes} bytes is less than the minimum of 1MiB"),
        });
    }
    let sweep_interval = logs.sweep_interval.unwrap_or(defaults.sweep_interval);
    if sweep_interval < Duration::from_millis(100) || sweep_interval > Duration::from_secs(3600) {
        return Err(ConfigError::Invalid {
            key: "logs.sweep_interval",
            problem: format!(
                "{} is outside the allowed range 100ms..=1h",
                humantime::format_duration(sweep_interval)
            ),
        });
    }
    Ok(RetentionPolicy {
        retention,
        max_total_bytes,
        sweep_interval,
    })
}

/// TLS is configured by all three files or none; one or two of them is a mistake.
fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key, ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles { cert, key, ca })),
        (cert, key, ca) => {
            let missing: Vec<&str> = [
                ("tls_cert", cert.is_none()),
                ("tls_key", key.is_none()),
                ("tls_ca", ca.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            Err(ConfigError::Invalid {
                key: if cert.is_none() {
                    "tls_cert"
                } else if key.is_none() {
                    "tls_key"
                } else {
                    "tls_ca"
                },
                problem: format!(
                    "TLS needs tls_cert, tls_key and tls_ca together; missing: {}",
                    missing.join(", ")
                ),
            })
        }
    }
}

/// Longest `reap_after`: the gossip driver schedules a timer this far ahead, and a clock
/// reading plus hundreds of billions of years overflows.
pub const MAX_REAP_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Default `reap_after`: a down node's instances stay routable this long (services outlive
/// their agent), so an agent that cannot restart over a weekend costs no traffic. Consul's
/// `reconnect_timeout` is the same 72 h.
pub const DEFAULT_REAP_AFTER: Duration = Duration::from_secs(72 * 3600);

/// The file's `reap_after`, defaulted ([`DEFAULT_REAP_AFTER`]) and bounded by
/// [`MAX_REAP_AFTER`].
fn reap_after(value: Option<Duration>) -> Result<Duration, ConfigError> {
    let reap_after = value.unwrap_or(DEFAULT_REAP_AFTER);
    if reap_after > MAX_REAP_AFTER {
        return Err(ConfigError::Invalid {
            key: "reap_after",
            problem: format!(
                "{} is longer than the maximum of 365 days",
                humantime::format_duration(reap_after)
            ),
        });
    }
    Ok(reap_after)
}

fn default_addr(text: &str) -> SocketAddr {
    text.parse()
        .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// Default `leave_drain`: a few gossip rounds, so every node has the drained record before
/// the departure.
pub const DEFAULT_LEAVE_DRAIN: Duration = Duration::from_secs(2);
/// Longest `leave_drain`: `strata-agent leave` waits a minute by default for the whole leave.
pub const MAX_LEAVE_DRAIN: Duration = Duration::from_secs(30);

/// The file's `leave_drain`, defaulted ([`DEFAULT_LEAVE_DRAIN`]) and at most
/// [`MAX_LEAVE_DRAIN`].
fn leave_drain(value: Option<Duration>) -> Result<Duration, ConfigError> {
    let drain = value.unwrap_or(DEFAULT_LEAVE_DRAIN);
    if drain > MAX_LEAVE_DRAIN {
        return Err(ConfigError::Invalid {
            key: "leave_drain",
            problem: format!(
                "{} is longer than {}",
                humantime::format_duration(drain),
                humantime::format_duration(MAX_LEAVE_DRAIN)
            ),
        });
    }
    Ok(drain)
}

/// The data dir a host-side command (`stop-services`, `leave`) works on: the one given, else
/// the default; an error naming it when it does not exist.
pub fn existing_data_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    let dir = given.map_or_else(default_data_dir, Path::to_path_buf);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "no data dir at {} (give the agent's --data-dir)",
            dir.display()
        ))
    }
}

/// The data dir when none is configured: the system path as root, the XDG path otherwise.
pub fn default_data_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("strata");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/strata"),
        None => PathBuf::from(".strata"),
    }
}

fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            key: "node_name",
            problem: format!(
                "{name:?} must be 1 to 63 characters of letters, digits, '-', '_' or '.'"
            ),
        })
    }
}

/// Parses a human duration flag such as "1s" or "250ms".
pub fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 1s, 500ms, 5m)"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// Serde helper: an optional human duration ("1s", "5m") in config files.
pub fn deserialize_opt_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            insecure_gossip: true,
            ..RunArgs::default()
        }
    }

    #[test]
    fn a_cluster_key_is_required_outside_dev() {
        let err = resolve(&RunArgs::default(), FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gossip_key:"), "{err}");
        let mut a = RunArgs {
            gossip_key: Some("not base64!".into()),
            ..RunArgs::default()
        };
        let err = resolve(&a, FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("gossip_key:"), "{err}");
        a.dev = true;
        a.gossip_key = None;
        assert!(resolve(&a, FileConfig::default(), "h").is_ok());
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let cfg = resolve(&args(), FileConfig::default(), "host-a").unwrap();
        assert_eq!(cfg.node_name, "host-a");
        assert_eq!(cfg.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(cfg.http_addr.to_string(), DEFAULT_HTTP_ADDR);
        assert_eq!(cfg.collect_interval, DEFAULT_COLLECT_INTERVAL);
        assert!(cfg.data_dir.is_some());
    }

    #[test]
    fn flags_win_over_the_file() {
        let file = parse_file(
            "node_name = \"from-file\"\ngrpc_addr = \"127.0.0.1:9000\"\ncollect_interval = \"2s\"\n",
        )
        .unwrap();
        let mut a = args();
        a.node_name = Some("from-flag".into());
        let cfg = resolve(&a, file, "host").unwrap();
        assert_eq!(cfg.node_name, "from-flag");
        assert_eq!(cfg.grpc_addr.to_string(), "127.0.0.1:9000");
        assert_eq!(cfg.collect_interval, Duration::from_secs(2));
    }

    #[test]
    fn the_shim_path_comes_from_the_flag_then_the_file_and_is_never_empty() {
        assert_eq!(
            resolve(&args(), FileConfig::default(), "h")
                .unwrap()
                .shim_path,
            None
        );
        let file = parse_file("shim_path = \"/opt/strata/strata-shim\"\n").unwrap();
        let cfg = resolve(&args(), file.clone(), "h").unwrap();
        assert_eq!(
            cfg.shim_path,
            Some(PathBuf::from("/opt/strata/strata-shim"))
        );
        let mut a = args();
        a.shim_path = Some(PathBuf::from("/usr/bin/strata-shim"));
        let cfg = resolve(&a, file, "h").unwrap();
        assert_eq!(cfg.shim_path, Some(PathBuf::from("/usr/bin/strata-shim")));
        a.shim_path = Some(PathBuf::new());
        let err = resolve(&a, FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("shim_path: is empty"), "{err}");
    }

    #[test]
    fn services_are_left_running_on_exit_unless_the_flag_or_the_file_says_stop() {
        let keep = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert!(!keep.stop_services_on_exit);
        let file = parse_file("stop_services_on_exit = true\n").unwrap();
        assert!(resolve(&args(), file, "h").unwrap().stop_services_on_exit);
        let mut a = args();
        a.stop_services_on_exit = true;
        let cfg = resolve(&a, FileConfig::default(), "h").unwrap();
        assert!(cfg.stop_services_on_exit);
    }

    #[test]
    fn the_log_format_is_text_by_default_the_file_can_say_json_and_the_flag_wins() {
        assert_eq!(
            resolve(&args(), FileConfig::default(), "h")
                .unwrap()
                .log_format,
            LogFormat::Text
        );
        let file = parse_file("log_format = \"json\"\n").unwrap();
        assert_eq!(
            resolve(&args(), file, "h").unwrap().log_format,
            LogFormat::Json
        );
        let file = parse_file("log_format = \"json\"\n").unwrap();
        let flag = RunArgs {
            log_format: Some(LogFormat::Text),
            ..args()
        };
        assert_eq!(
            resolve(&flag, file, "h").unwrap().log_format,
            LogFormat::Text
        );
        let err = parse_file("log_format = \"xml\"\n").unwrap_err();
        assert!(err.contains("log_format") && err.contains("xml"), "{err}");
    }

    #[test]
    fn the_log_level_defaults_to_info_and_a_bad_filter_names_the_key() {
        let cfg = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert_eq!(cfg.log_level, "info");
        let file = parse_file("log_level = \"warn,strata_registry=debug\"\n").unwrap();
        assert_eq!(
            resolve(&args(), file, "h").unwrap().log_level,
            "warn,strata_registry=debug"
        );
        let file = parse_file("log_level = \"loud=[\"\n").unwrap();
        let err = resolve(&args(), file, "h").unwrap_err().to_string();
        assert!(err.starts_with("log_level:"), "{err}");
    }

    #[test]
    fn a_stop_leaves_the_cluster_only_when_the_flag_or_the_file_says_so() {
        let stay = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert!(!stay.leave_on_stop);
        assert_eq!(stay.leave_drain, DEFAULT_LEAVE_DRAIN);
        assert_eq!(stay.reap_after, DEFAULT_REAP_AFTER);
        let file = parse_file("leave_on_stop = true\nleave_drain = \"5s\"\n").unwrap();
        let cfg = resolve(&args(), file, "h").unwrap();
        assert!(cfg.leave_on_stop);
        assert_eq!(cfg.leave_drain, Duration::from_secs(5));
        let mut a = args();
        a.leave_on_stop = true;
        assert!(
            resolve(&a, FileConfig::default(), "h")
                .unwrap()
                .leave_on_stop
        );
        let file = parse_file("leave_drain = \"10m\"\n").unwrap();
        let err = resolve(&args(), file, "h").unwrap_err().to_string();
        assert!(
            err.starts_with("leave_drain: 10m is longer than 30s"),
            "{err}"
        );
    }

    #[test]
    fn dns_answers_warning_instances_unless_only_passing() {
        let default = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert!(!default.dns_only_passing);
        let file = parse_file("dns_only_passing = true\n").unwrap();
        assert!(resolve(&args(), file, "h").unwrap().dns_only_passing);
        let err = parse_file("dns_only_passing = \"yes\"\n").unwrap_err();
        assert!(err.contains("dns_only_passing"), "{err}");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse_file("node_name = \"a\"\n\nbogus_key = 1\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn bad_duration_names_line_and_value() {
        let err = parse_file("collect_interval = \"soon\"\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn bad_address_is_rejected_with_its_line() {
        let err = parse_file("grpc_addr = \"nowhere\"\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn dev_mode_refuses_public_addresses_and_has_no_default_data_dir() {
        let mut a = args();
        a.dev = true;
        let cfg = resolve(&a, FileConfig::default(), "h").unwrap();
        assert_eq!(cfg.data_dir, None);
        a.grpc_addr = Some("0.0.0.0:7700".parse().unwrap());
        let err = resolve(&a, FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("grpc_addr:"), "{err}");
    }

    #[test]
    fn alert_rules_come_from_the_file_and_errors_name_the_rule() {
        let file = parse_file("[[alerts.rules]]\nname = \"load_high\"\nenabled = false\n").unwrap();
        let cfg = resolve(&args(), file, "h").unwrap();
        let defaults = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert_eq!(cfg.alerts.len() + 1, defaults.alerts.len());
        let file = parse_file("[[alerts.rules]]\nname = \"mine\"\nthreshold = 5.0\n").unwrap();
        let err = resolve(&args(), file, "h").unwrap_err().to_string();
        assert!(err.contains("mine"), "{err}");
    }

    /// A `reap_after` of ~300 billion years was accepted, and the gossip driver would panic
    /// adding it to the clock when it schedules foca's remove-down timer. The `config_parse`
    /// fuzz target checks that every resolved `reap_after` can be scheduled, and replays this
    /// file (`fuzz/corpus/config_parse/regression-reap-after-overflow.toml`).
    #[test]
    fn reap_after_is_bounded() {
        let file = parse_file("reap_after = \"300000000000y\"\n").unwrap();
        let err = resolve(&args(), file, "h").unwrap_err().to_string();
        assert!(err.starts_with("reap_after:"), "{err}");
        let file = parse_file("reap_after = \"365days\"\n").unwrap();
        assert_eq!(
            resolve(&args(), file, "h").unwrap().reap_after,
            MAX_REAP_AFTER
        );
    }

    #[test]
    fn node_name_is_validated() {
        let mut a = args();
        a.node_name = Some("bad name!".into());
        let err = resolve(&a, FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_name"), "{err}");
    }

    #[test]
    fn api_rate_limits_come_from_the_file_and_are_checked() {
        let cfg = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert_eq!(cfg.api_limits, RateLimits::default());
        let file = parse_file("[api]\nrate_per_client = 50\nburst_per_client = 500\n").unwrap();
        let cfg = resolve(&args(), file, "h").unwrap();
        assert_eq!(
            (cfg.api_limits.per_second, cfg.api_limits.burst),
            (50.0, 500.0)
        );
        for (text, key) in [
            (
                "[api]\nrate_per_client = 0\n",
                "api.rate_per_client: 0 is not",
            ),
            (
                "[api]\nburst_per_client = 5\n",
                "api.burst_per_client: 5 is below 10",
            ),
        ] {
            let err = resolve(&args(), parse_file(text).unwrap(), "h").unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
        }
        let err = parse_file("[api]\nrate = 1\n").unwrap_err();
        assert!(err.contains("unknown field `rate`"), "{err}");
    }

    #[test]
    fn a_public_grpc_address_needs_tls_or_insecure() {
        let mut a = args();
        a.grpc_addr = Some("0.0.0.0:7700".parse().unwrap());
        let err = resolve(&a, FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("grpc_addr:"), "{err}");
        for field in ["tls_cert", "tls_key", "tls_ca", "insecure"] {
            assert!(err.contains(field), "{err}");
        }
        a.insecure = true;
        assert_eq!(resolve(&a, FileConfig::default(), "h").unwrap().tls, None);
        a.insecure = false;
        let file = parse_file(
            "tls_cert = \"/t/n.pem\"\ntls_key = \"/t/n-key.pem\"\ntls_ca = \"/t/ca.pem\"\n",
        )
        .unwrap();
        let cfg = resolve(&a, file, "h").unwrap();
        assert_eq!(
            cfg.tls,
            Some(TlsFiles {
                cert: "/t/n.pem".into(),
                key: "/t/n-key.pem".into(),
                ca: "/t/ca.pem".into(),
            })
        );
    }

    #[test]
    fn loopback_stays_plaintext_and_partial_tls_names_what_is_missing() {
        let cfg = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert_eq!(cfg.tls, None);
        let mut a = args();
        a.tls_cert = Some("/t/n.pem".into());
        a.tls_ca = Some("/t/ca.pem".into());
        let err = resolve(&a, FileConfig::default(), "h")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("tls_key:"), "{err}");
        assert!(err.contains("missing: tls_key"), "{err}");
    }

    #[test]
    fn labels_merge_with_flags_winning() {
        let file = parse_file("[labels]\nrack = \"r1\"\nzone = \"a\"\n").unwrap();
        let mut a = args();
        a.labels = vec![("zone".into(), "b".into())];
        let cfg = resolve(&a, file, "h").unwrap();
        assert_eq!(cfg.labels.get("rack").map(String::as_str), Some("r1"));
        assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("b"));
    }

    #[test]
    fn log_retention_and_cap_come_from_the_logs_table_and_are_checked() {
        let cfg = resolve(&args(), FileConfig::default(), "h").unwrap();
        assert_eq!(cfg.log_retention, RetentionPolicy::default());
        assert_eq!(
            cfg.log_retention.retention,
            Duration::from_secs(7 * 24 * 3600)
        );
        assert_eq!(cfg.log_retention.max_total_bytes, 1 << 30);
        let file = parse_file(
            "[logs]\nretention = \"36h\"\nmax_total_bytes = \"500MiB\"\nsweep_interval = \"10s\"\n",
        )
        .unwrap();
        let cfg = resolve(&args(), file, "h").unwrap();
        assert_eq!(
            cfg.log_retention,
            RetentionPolicy {
                retention: Duration::from_secs(36 * 3600),
                max_total_bytes: 500 << 20,
                sweep_interval: Duration::from_secs(10),
            }
        );
        let file = parse_file("[logs]\nmax_total_bytes = 2147483648\n").unwrap();
        let cfg = resolve(&args(), file, "h").unwrap();
        assert_eq!(cfg.log_retention.max_total_bytes, 2 << 30);
        for (text, start) in [
            (
                "[logs]\nretention = \"0s\"\n",
                "logs.retention: 0s is shorter",
            ),
            (
                "[logs]\nmax_total_bytes = \"lots\"\n",
                "logs.max_total_bytes: \"lots\" is not a size",
            ),
            (
                "[logs]\nmax_total_bytes = 1000\n",
                "logs.max_total_bytes: 1000 bytes is less",
            ),
            (
                "[logs]\nsweep_interval = \"2h\"\n",
                "logs.sweep_interval: 2h is outside",
            ),
        ] {
            let err = resolve(&args(), parse_file(text).unwrap(), "h").unwrap_err();
            assert!(err.to_string().starts_with(start), "{err}");
        }
        let err = parse_file("[logs]\nretention = \"soon\"\n").unwrap_err();
        assert!(err.contains("soon") && err.contains("line 2"), "{err}");
        let err = parse_file("[logs]\nkeep = 3\n").unwrap_err();
        assert!(err.contains("unknown field `keep`"), "{err}");
    }
}
