//! The pure half of install and uninstall: from the request and what is on disk under the
//! root now, the list of actions that brings the host to the installed (or removed) state.
//! Nothing here touches the file system; `exec` probes the root and carries the plan out.

use crate::config::{self, RunArgs};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where the binary is installed on the host.
pub const BIN_PATH: &str = "/usr/local/bin/strata-agent";
/// Where the shim is installed: next to the agent, where the agent looks for it by default.
pub const SHIM_PATH: &str = "/usr/local/bin/strata-shim";
/// The agent's config file on the host.
pub const CONFIG_PATH: &str = "/etc/strata/agent.toml";
/// The agent's config dir on the host.
pub const ETC_DIR: &str = "/etc/strata";
/// Service specs the agent applies at start.
pub const SERVICES_DIR: &str = config::DEFAULT_SERVICES_DIR;
/// The agent's state: node id, journal, instance records and logs.
pub const DATA_DIR: &str = "/var/lib/strata";
/// Optional `STRATA_*` variables for the agent, read by the unit (`EnvironmentFile=-`).
pub const ENV_FILE_PATH: &str = "/etc/default/strata-agent";
/// The systemd unit.
pub const UNIT_PATH: &str = "/etc/systemd/system/strata-agent.service";
/// The unit's name for systemctl.
pub const UNIT_NAME: &str = "strata-agent.service";
/// Where the agent's manual goes, so the unit's `Documentation=man:strata-agent(1)` and
/// `man strata-agent` work on every installed host.
pub const MAN_PATH: &str = "/usr/local/share/man/man1/strata-agent.1";
/// The gossip port when only an address is known.
pub const DEFAULT_GOSSIP_PORT: u16 = 7701;

const UNIT_TEMPLATE: &str = include_str!("../../../assets/systemd/strata-agent.service.in");

/// Mode of the binary and of the dirs others may read.
const MODE_PUBLIC: u32 = 0o755;
/// Mode of the state dir: root and its group only.
const MODE_DATA: u32 = 0o750;
/// Mode of the config file: it holds the cluster key.
const MODE_SECRET: u32 = 0o600;
/// A manual page: anyone reads it.
const MODE_PAGE: u32 = 0o644;
/// Mode of the unit file.
const MODE_UNIT: u32 = 0o644;

/// `host_path` (absolute, as the running host sees it) inside `root`.
pub fn under(root: &Path, host_path: &str) -> PathBuf {
    root.join(host_path.trim_start_matches('/'))
}

/// What is at one path under the root now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing.
    Missing,
    /// A directory with these permission bits and owner.
    Dir { mode: u32, uid: u32 },
    /// A regular file; `text` is its content when it was read and is UTF-8.
    File {
        mode: u32,
        uid: u32,
        text: Option<String>,
    },
    /// Something else (a symlink, a socket, ...).
    Other,
}

impl Found {
    fn exists(&self) -> bool {
        *self != Found::Missing
    }
}

/// Everything under the root the installer looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub binary: Found,
    /// Whether the installed binary has the same bytes as the running one.
    pub binary_same: bool,
    pub shim: Found,
    /// Whether the installed shim has the same bytes as the one beside the running binary.
    pub shim_same: bool,
    pub config: Found,
    pub unit: Found,
    /// The installed manual page.
    pub manual: Found,
    pub etc_dir: Found,
    pub services_dir: Found,
    pub data_dir: Found,
    /// An agent holds the data dir's lock: it runs, and uninstall asks it to leave first.
    pub agent_running: bool,
}

/// Facts about the machine the installer runs on, gathered by the caller.
#[derive(Debug, Clone)]
pub struct Host {
    /// The directory the host's `/` is at (`--root`).
    pub root: PathBuf,
    /// The running binary, copied to `BIN_PATH`.
    pub exe: PathBuf,
    /// The `strata-shim` beside the running binary, copied to `SHIM_PATH`.
    pub shim_exe: PathBuf,
    /// systemd is PID 1 and the root is `/`: systemctl commands are run, not printed.
    pub systemd: bool,
    /// Running as root: owners are checked and set to root.
    pub as_root: bool,
    /// This host's address towards the network, for the default gossip address.
    pub host_ip: Option<IpAddr>,
    /// A newly generated cluster key, used only when none is given or installed.
    pub fresh_key: String,
}

/// What the operator asked `install` for; `None` keeps what the installed config says, then
/// the default.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub node_name: Option<String>,
    pub grpc_addr: Option<SocketAddr>,
    pub http_addr: Option<SocketAddr>,
    pub gossip_addr: Option<SocketAddr>,
    pub advertise_addr: Option<SocketAddr>,
    /// Replaces the installed join list when not empty.
    pub join: Vec<String>,
    pub gossip_key: Option<String>,
    /// TLS files for the agent's config; all three or none.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Plaintext gRPC on a non-loopback address.
    pub insecure: bool,
    /// Overwrite a config that differs from what would be written.
    pub force: bool,
    /// The agent's manual page (roff), made from the running binary's own definition.
    pub manual: String,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Creates a directory (and its missing parents), then sets its mode (and owner root).
    CreateDir { path: PathBuf, mode: u32 },
    /// Sets the mode (and owner root) of an existing file or directory.
    SetMode { path: PathBuf, mode: u32 },
    /// Writes a file atomically with this mode (and owner root). `secret` is redacted when
    /// the content is shown.
    WriteFile {
        path: PathBuf,
        mode: u32,
        content: String,
        secret: Option<String>,
    },
    /// Copies a binary (the running one, or its shim) atomically.
    CopyBinary {
        from: PathBuf,
        to: PathBuf,
        mode: u32,
    },
    /// Runs a command; it must succeed.
    RunCommand { argv: Vec<String> },
    /// Removes a file.
    RemoveFile { path: PathBuf },
    /// Removes a directory and everything in it.
    RemoveTree { path: PathBuf },
    /// Removes a directory when it is empty, and keeps it otherwise.
    RemoveDirIfEmpty { path: PathBuf },
    /// Asks the agent running on this data dir to leave the cluster (drain, leave gossip,
    /// stop) and waits until it has stopped: `strata-agent leave`.
    LeaveCluster { data_dir: PathBuf },
}

impl fmt::Display for Action {
    /// One line naming the step; file contents are shown separately.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::CreateDir { path, mode } => {
                write!(f, "create dir {} (mode {mode:04o})", path.display())
            }
            Action::SetMode { path, mode } => {
                write!(f, "set mode {mode:04o} on {}", path.display())
            }
            Action::WriteFile { path, mode, .. } => {
                write!(f, "write {} (mode {mode:04o})", path.display())
            }
            Action::CopyBinary { from, to, mode } => write!(
                f,
                "copy {} to {} (mode {mode:04o})",
                from.display(),
                to.display()
            ),
            Action::RunCommand { argv } => write!(f, "run: {}", argv.join(" ")),
            Action::RemoveFile { path } => write!(f, "remove {}", path.display()),
            Action::RemoveTree { path } => {
                write!(f, "remove {} and everything in it", path.display())
            }
            Action::RemoveDirIfEmpty { path } => {
                write!(f, "remove {} if empty", path.display())
            }
            Action::LeaveCluster { data_dir } => write!(
                f,
                "ask the agent running on {} to leave the cluster (its instances drain from \
                 every balancer) and stop",
                data_dir.display()
            ),
        }
    }
}

/// The steps, and what the operator should know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// Paths already as they should be ("unchanged: PATH", "absent: PATH").
    pub unchanged: Vec<String>,
    /// Lines to print after the actions (kept dirs, which key is used, ...).
    pub notes: Vec<String>,
    /// Commands the operator runs on the target host when systemd is not driven from here.
    pub manual_commands: Vec<Vec<String>>,
    /// A cluster key generated for this install: printed once, after it is written.
    pub generated_key: Option<String>,
}

/// Why no plan could be made.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// The installed config is not what install would write, and `--force` was not given.
    #[error(
        "{path} differs from the config install would write ({detail}); rerun with --force to overwrite it"
    )]
    ConfigDiffers { path: String, detail: String },
    /// A path the installer writes is taken by something it cannot replace.
    #[error("{path} exists and is not a {expected}; move it away first")]
    WrongKind {
        path: String,
        expected: &'static str,
    },
    /// The requested settings do not make a config the agent accepts.
    #[error("{0}")]
    Invalid(String),
}

/// The settings the config file is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    node_name: Option<String>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    gossip_addr: SocketAddr,
    advertise_addr: Option<SocketAddr>,
    join: Vec<String>,
    gossip_key: String,
    /// cert, key, CA.
    tls: Option<[PathBuf; 3]>,
    insecure: bool,
}

/// Plans `strata-agent install`.
pub fn plan_install(request: &Request, current: &Current, host: &Host) -> Result<Plan, PlanError> {
    let root = &host.root;
    let mut plan = Plan::default();
    let installed = installed_config(&current.config);

    // Which key: the one given, else the installed one, else a new one.
    let installed_key = installed.as_ref().and_then(|c| c.gossip_key.clone());
    let (gossip_key, key_note) = match (&request.gossip_key, installed_key) {
        (Some(key), _) => (key.trim().to_string(), None),
        (None, Some(key)) => (
            key,
            Some(format!("kept the cluster key already in {CONFIG_PATH}")),
        ),
        (None, None) => {
            plan.generated_key = Some(host.fresh_key.clone());
            (host.fresh_key.clone(), None)
        }
    };
    let settings = settings(request, installed.as_ref(), host, gossip_key)?;
    let config_text = render_config(&settings);
    validate_config(&config_text)?;
    let unit_text = render_unit();

    // Directories first, so the files have somewhere to go.
    for (dir, found, mode) in [
        (ETC_DIR, &current.etc_dir, MODE_PUBLIC),
        (SERVICES_DIR, &current.services_dir, MODE_PUBLIC),
        (DATA_DIR, &current.data_dir, MODE_DATA),
    ] {
        let path = under(root, dir);
        match found {
            Found::Missing => plan.actions.push(Action::CreateDir { path, mode }),
            Found::Dir { mode: m, uid } => {
                if *m != mode || (host.as_root && *uid != 0) {
                    plan.actions.push(Action::SetMode { path, mode });
                } else {
                    plan.unchanged
                        .push(format!("unchanged: {}", path.display()));
                }
            }
            Found::File { .. } | Found::Other => {
                return Err(PlanError::WrongKind {
                    path: path.display().to_string(),
                    expected: "directory",
                });
            }
        }
    }

    // The binaries, replaced when their bytes differ (an upgrade). The shim first: an agent
    // that is in place always has its shim beside it.
    let mut binary_changed = false;
    for (from, host_path, found) in [
        (
            &host.shim_exe,
            SHIM_PATH,
            (&current.shim, current.shim_same),
        ),
        (&host.exe, BIN_PATH, (&current.binary, current.binary_same)),
    ] {
        let to = under(root, host_path);
        binary_changed |= plan_binary(&mut plan, from, &to, found, host.as_root)?;
    }

    // The config: never overwritten with different content without --force.
    let config_path = under(root, CONFIG_PATH);
    if let Found::File {
        text: Some(old), ..
    } = &current.config
        && *old != config_text
        && !request.force
    {
        return Err(PlanError::ConfigDiffers {
            path: config_path.display().to_string(),
            detail: first_difference(old, &config_text, &settings.gossip_key),
        });
    }
    if matches!(current.config, Found::File { text: None, .. }) && !request.force {
        return Err(PlanError::ConfigDiffers {
            path: config_path.display().to_string(),
            detail: "it is not UTF-8 text".into(),
        });
    }
    let config_changed = plan_file(
        &mut plan,
        &config_path,
        &current.config,
        MODE_SECRET,
        config_text,
        Some(settings.gossip_key.clone()),
        host.as_root,
    )?;
    if let Some(note) = key_note {
        plan.notes.push(note);
    }
    if plan.generated_key.is_some() {
        plan.notes.push(format!(
            "install the other hosts with: strata-agent install --join {} --gossip-key KEY",
            settings.advertise_addr.unwrap_or(settings.gossip_addr)
        ));
    }

    // The unit: ours, rewritten freely (local changes belong in drop-ins).
    let unit_changed = plan_file(
        &mut plan,
        &under(root, UNIT_PATH),
        &current.unit,
        MODE_UNIT,
        unit_text,
        None,
        host.as_root,
    )?;

    // The manual, rewritten freely like the unit; it changes nothing that runs.
    plan_file(
        &mut plan,
        &under(root, MAN_PATH),
        &current.manual,
        MODE_PAGE,
        request.manual.clone(),
        None,
        host.as_root,
    )?;

    // systemd: reload when the unit changed; restart a running agent after an upgrade.
    let mut commands = Vec::new();
    if unit_changed {
        commands.push(systemctl(&["daemon-reload"]));
    }
    if current.unit.exists() && (binary_changed || config_changed || unit_changed) {
        commands.push(systemctl(&["enable", UNIT_NAME]));
        commands.push(systemctl(&["restart", UNIT_NAME]));
    } else {
        commands.push(systemctl(&["enable", "--now", UNIT_NAME]));
    }
    if host.systemd {
        plan.actions
            .extend(commands.into_iter().map(|argv| Action::RunCommand { argv }));
    } else {
        plan.manual_commands = commands;
    }
    if !settings.gossip_addr.ip().is_loopback() && settings.grpc_addr.ip().is_loopback() {
        plan.notes.push(format!(
            "the gRPC API listens on {} only: to reach this agent from other hosts (forwarded \
             requests, a remote console) install with --grpc-addr IP:7700 and --tls-cert, \
             --tls-key, --tls-ca (`strata-agent tls` makes them), or --insecure and allow only \
             your hosts to port 7700",
            settings.grpc_addr
        ));
    }
    Ok(plan)
}

/// Plans `strata-agent uninstall`: a running agent leaves the cluster first (a stop alone
/// would keep its instances routable), then stop and remove the unit, the binary and the
/// config; the service specs and the state dir only with `purge`.
pub fn plan_uninstall(current: &Current, host: &Host, purge: bool) -> Plan {
    let root = &host.root;
    let mut plan = Plan::default();
    if current.agent_running {
        plan.actions.push(Action::LeaveCluster {
            data_dir: under(root, DATA_DIR),
        });
    }
    let stop = current
        .unit
        .exists()
        .then(|| systemctl(&["disable", "--now", UNIT_NAME]));
    let reload = current.unit.exists().then(|| systemctl(&["daemon-reload"]));
    if host.systemd
        && let Some(argv) = stop.clone()
    {
        plan.actions.push(Action::RunCommand { argv });
    }
    for (host_path, found) in [
        (UNIT_PATH, &current.unit),
        (BIN_PATH, &current.binary),
        (SHIM_PATH, &current.shim),
        (CONFIG_PATH, &current.config),
        (MAN_PATH, &current.manual),
    ] {
        let path = under(root, host_path);
        if found.exists() {
            plan.actions.push(Action::RemoveFile { path });
        } else {
            plan.unchanged.push(format!("absent: {}", path.display()));
        }
    }
    if host.systemd {
        plan.actions
            .extend(reload.map(|argv| Action::RunCommand { argv }));
    } else {
        plan.manual_commands = stop.into_iter().chain(reload).collect();
    }
    let kept = [
        (SERVICES_DIR, &current.services_dir, "service specs"),
        (
            DATA_DIR,
            &current.data_dir,
            "state, journal and service logs",
        ),
    ];
    for (host_path, found, what) in kept {
        let path = under(root, host_path);
        match (found.exists(), purge) {
            (false, _) => plan.unchanged.push(format!("absent: {}", path.display())),
            (true, true) => plan.actions.push(Action::RemoveTree { path }),
            (true, false) => plan.notes.push(format!(
                "kept {} ({what}); uninstall --purge removes it",
                path.display()
            )),
        }
    }
    if purge && current.etc_dir.exists() {
        plan.actions.push(Action::RemoveDirIfEmpty {
            path: under(root, ETC_DIR),
        });
    }
    plan.notes.push(
        "services the agent supervised keep running under their shims (KillMode=process); \
         stop them with `strata stop NAME` before uninstalling if they should not"
            .into(),
    );
    plan
}

/// The installed config, when it parses.
fn installed_config(found: &Found) -> Option<config::FileConfig> {
    match found {
        Found::File {
            text: Some(text), ..
        } => config::parse_file(text).ok(),
        _ => None,
    }
}

/// Merges the request over the installed config over the defaults.
fn settings(
    request: &Request,
    installed: Option<&config::FileConfig>,
    host: &Host,
    gossip_key: String,
) -> Result<Settings, PlanError> {
    let default_addr = |text: &str| -> SocketAddr {
        text.parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    let grpc_addr = request
        .grpc_addr
        .or(installed.and_then(|c| c.grpc_addr))
        .unwrap_or_else(|| default_addr(config::DEFAULT_GRPC_ADDR));
    let http_addr = request
        .http_addr
        .or(installed.and_then(|c| c.http_addr))
        .unwrap_or_else(|| default_addr(config::DEFAULT_HTTP_ADDR));
    let gossip_addr = request
        .gossip_addr
        .or(installed.and_then(|c| c.gossip_addr))
        .or(host
            .host_ip
            .map(|ip| SocketAddr::new(ip, DEFAULT_GOSSIP_PORT)))
        .ok_or_else(|| {
            PlanError::Invalid(
                "cannot tell this host's network address for gossip: give --gossip-addr IP:7701"
                    .into(),
            )
        })?;
    let advertise_addr = request
        .advertise_addr
        .or(installed.and_then(|c| c.advertise_addr));
    if gossip_addr.ip().is_unspecified() && advertise_addr.is_none() {
        return Err(PlanError::Invalid(format!(
            "--gossip-addr {gossip_addr} binds every address: give --advertise-addr IP:PORT, \
             the address the other hosts reach this one at"
        )));
    }
    let join = if request.join.is_empty() {
        installed.map(|c| c.join.clone()).unwrap_or_default()
    } else {
        request.join.clone()
    };
    let tls = install_tls(request, installed)?;
    let insecure = request.insecure || installed.and_then(|c| c.insecure).unwrap_or(false);
    if tls.is_none() && !insecure && !grpc_addr.ip().is_loopback() {
        return Err(PlanError::Invalid(format!(
            "--grpc-addr {grpc_addr} is not a loopback address: give --tls-cert, --tls-key and              --tls-ca (`strata-agent tls` makes them), or --insecure to serve plaintext"
        )));
    }
    Ok(Settings {
        node_name: request
            .node_name
            .clone()
            .or(installed.and_then(|c| c.node_name.clone())),
        grpc_addr,
        http_addr,
        gossip_addr,
        advertise_addr,
        join,
        gossip_key,
        tls,
        insecure,
    })
}

/// The TLS files: the request's (all three, absolute) over the installed config's.
fn install_tls(
    request: &Request,
    installed: Option<&config::FileConfig>,
) -> Result<Option<[PathBuf; 3]>, PlanError> {
    let given = [&request.tls_cert, &request.tls_key, &request.tls_ca];
    match given {
        [None, None, None] => Ok(installed
            .and_then(|c| Some([c.tls_cert.clone()?, c.tls_key.clone()?, c.tls_ca.clone()?]))),
        [Some(cert), Some(key), Some(ca)] => {
            for (flag, path) in [("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)] {
                if !path.is_absolute() {
                    return Err(PlanError::Invalid(format!(
                        "{flag} {}: give an absolute path (the agent runs from /)",
                        path.display()
                    )));
                }
            }
            Ok(Some([cert.clone(), key.clone(), ca.clone()]))
        }
        _ => Err(PlanError::Invalid(
            "TLS needs all three of --tls-cert, --tls-key and --tls-ca".into(),
        )),
    }
}

/// The first line where `old` and `new` differ, with the key redacted.
fn first_difference(old: &str, new: &str, key: &str) -> String {
    let redact = |line: &str| line.replace(key, "<redacted>");
    let mut old_lines = old.lines();
    let mut new_lines = new.lines();
    for n in 1.. {
        match (old_lines.next(), new_lines.next()) {
            (Some(a), Some(b)) if a == b => continue,
            (Some(a), Some(b)) => {
                return format!(
                    "line {n} is {:?}, install would write {:?}",
                    redact(a),
                    redact(b)
                );
            }
            (Some(a), None) => return format!("line {n} {:?} would be dropped", redact(a)),
            (None, Some(b)) => return format!("line {n} {:?} would be added", redact(b)),
            (None, None) => break,
        }
    }
    "only line endings differ".into()
}

/// Plans one binary: copied from `from` when missing or different (`found` and whether its
/// bytes are the same), its mode fixed when only that differs. Returns whether it changes.
fn plan_binary(
    plan: &mut Plan,
    from: &Path,
    to: &Path,
    found: (&Found, bool),
    as_root: bool,
) -> Result<bool, PlanError> {
    match found {
        (Found::Missing, _) | (Found::File { .. }, false) => {
            plan.actions.push(Action::CopyBinary {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                mode: MODE_PUBLIC,
            });
            Ok(true)
        }
        (Found::File { mode, uid, .. }, true) => {
            if *mode != MODE_PUBLIC || (as_root && *uid != 0) {
                plan.actions.push(Action::SetMode {
                    path: to.to_path_buf(),
                    mode: MODE_PUBLIC,
                });
            } else {
                plan.unchanged.push(format!("unchanged: {}", to.display()));
            }
            Ok(false)
        }
        (Found::Dir { .. } | Found::Other, _) => Err(PlanError::WrongKind {
            path: to.display().to_string(),
            expected: "regular file",
        }),
    }
}

/// Plans one file: written when missing or different, its mode fixed when only that differs.
/// Returns whether the content changes.
fn plan_file(
    plan: &mut Plan,
    path: &Path,
    found: &Found,
    mode: u32,
    content: String,
    secret: Option<String>,
    as_root: bool,
) -> Result<bool, PlanError> {
    match found {
        Found::File {
            text: Some(old),
            mode: m,
            uid,
        } if *old == content => {
            if *m != mode || (as_root && *uid != 0) {
                plan.actions.push(Action::SetMode {
                    path: path.to_path_buf(),
                    mode,
                });
            } else {
                plan.unchanged
                    .push(format!("unchanged: {}", path.display()));
            }
            Ok(false)
        }
        Found::Missing | Found::File { .. } => {
            plan.actions.push(Action::WriteFile {
                path: path.to_path_buf(),
                mode,
                content,
                secret,
            });
            Ok(true)
        }
        Found::Dir { .. } | Found::Other => Err(PlanError::WrongKind {
            path: path.display().to_string(),
            expected: "regular file",
        }),
    }
}

fn systemctl(args: &[&str]) -> Vec<String> {
    std::iter::once("systemctl")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

/// Checks the config text the way the agent will read it: parsed and resolved.
fn validate_config(text: &str) -> Result<(), PlanError> {
    let file = config::parse_file(text)
        .map_err(|e| PlanError::Invalid(format!("the config install would write: {e}")))?;
    config::resolve(&RunArgs::default(), file, "localhost")
        .map(|_| ())
        .map_err(|e| PlanError::Invalid(e.to_string()))
}

/// The unit file, with the installed paths filled in.
pub fn render_unit() -> String {
    UNIT_TEMPLATE
        .replace("@BIN@", BIN_PATH)
        .replace("@CONFIG@", CONFIG_PATH)
        .replace("@ENV_FILE@", ENV_FILE_PATH)
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn render_config(s: &Settings) -> String {
    let mut out = String::from(
        "# The Strata agent's config, written by `strata-agent install`.\n\
         # Flags and STRATA_* variables override it; see `strata-agent run --help`.\n\
         # It holds the cluster key: keep it mode 0600, owned by root.\n\n",
    );
    match &s.node_name {
        Some(name) => out.push_str(&format!("node_name = {}\n", quoted(name))),
        None => out.push_str("# node_name: the hostname when not set\n"),
    }
    out.push_str(&format!("grpc_addr = \"{}\"\n", s.grpc_addr));
    out.push_str(&format!("http_addr = \"{}\"\n", s.http_addr));
    out.push_str(&format!("gossip_addr = \"{}\"\n", s.gossip_addr));
    if let Some(addr) = s.advertise_addr {
        out.push_str(&format!("advertise_addr = \"{addr}\"\n"));
    }
    let joins: Vec<String> = s.join.iter().map(|j| quoted(j)).collect();
    out.push_str(&format!("join = [{}]\n", joins.join(", ")));
    out.push_str(&format!("gossip_key = {}\n", quoted(&s.gossip_key)));
    if let Some([cert, key, ca]) = &s.tls {
        for (name, path) in [("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)] {
            out.push_str(&format!(
                "{name} = {}\n",
                quoted(&path.display().to_string())
            ));
        }
    }
    if s.insecure {
        out.push_str("insecure = true\n");
    }
    out.push_str(&format!("services_dir = {}\n", quoted(SERVICES_DIR)));
    out.push_str(&format!("data_dir = {}\n", quoted(DATA_DIR)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const FRESH: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA=";

    fn host(systemd: bool) -> Host {
        Host {
            root: PathBuf::from("/r"),
            exe: PathBuf::from("/build/strata-agent"),
            shim_exe: PathBuf::from("/build/strata-shim"),
            systemd,
            as_root: true,
            host_ip: Some(IpAddr::from([10, 0, 0, 5])),
            fresh_key: FRESH.into(),
        }
    }

    fn empty() -> Current {
        Current {
            binary: Found::Missing,
            binary_same: false,
            shim: Found::Missing,
            shim_same: false,
            config: Found::Missing,
            unit: Found::Missing,
            manual: Found::Missing,
            etc_dir: Found::Missing,
            services_dir: Found::Missing,
            data_dir: Found::Missing,
            agent_running: false,
        }
    }

    fn file(mode: u32, text: &str) -> Found {
        Found::File {
            mode,
            uid: 0,
            text: Some(text.into()),
        }
    }

    /// The state after carrying `plan` out on `current`.
    fn after(plan: &Plan, mut current: Current) -> Current {
        for action in &plan.actions {
            match action {
                Action::CreateDir { path, mode } | Action::SetMode { path, mode } => {
                    let found = slot(&mut current, path);
                    *found = match found {
                        Found::File { text, .. } => Found::File {
                            mode: *mode,
                            uid: 0,
                            text: text.clone(),
                        },
                        _ => Found::Dir {
                            mode: *mode,
                            uid: 0,
                        },
                    };
                }
                Action::WriteFile {
                    path,
                    mode,
                    content,
                    ..
                } => *slot(&mut current, path) = file(*mode, content),
                Action::CopyBinary { to, mode, .. } => {
                    *slot(&mut current, to) = Found::File {
                        mode: *mode,
                        uid: 0,
                        text: None,
                    };
                    if to == &under(Path::new("/r"), SHIM_PATH) {
                        current.shim_same = true;
                    } else {
                        current.binary_same = true;
                    }
                }
                Action::RemoveFile { path }
                | Action::RemoveTree { path }
                | Action::RemoveDirIfEmpty { path } => *slot(&mut current, path) = Found::Missing,
                Action::RunCommand { .. } => {}
                Action::LeaveCluster { .. } => current.agent_running = false,
            }
        }
        current
    }

    fn slot<'a>(current: &'a mut Current, path: &Path) -> &'a mut Found {
        let root = Path::new("/r");
        if path == under(root, BIN_PATH) {
            &mut current.binary
        } else if path == under(root, SHIM_PATH) {
            &mut current.shim
        } else if path == under(root, CONFIG_PATH) {
            &mut current.config
        } else if path == under(root, UNIT_PATH) {
            &mut current.unit
        } else if path == under(root, MAN_PATH) {
            &mut current.manual
        } else if path == under(root, ETC_DIR) {
            &mut current.etc_dir
        } else if path == under(root, SERVICES_DIR) {
            &mut current.services_dir
        } else if path == under(root, DATA_DIR) {
            &mut current.data_dir
        } else {
            panic!("unexpected path {}", path.display())
        }
    }

    fn written<'a>(plan: &'a Plan, host_path: &str) -> &'a str {
        plan.actions
            .iter()
            .find_map(|a| match a {
                Action::WriteFile { path, content, .. }
                    if path == &under(Path::new("/r"), host_path) =>
                {
                    Some(content.as_str())
                }
                _ => None,
            })
            .unwrap_or_else(|| panic!("{host_path} is not written: {plan:#?}"))
    }

    fn commands(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::RunCommand { argv } => Some(argv.join(" ")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_fresh_install_creates_everything_with_the_right_modes() {
        let request = Request {
            node_name: Some("web-1".into()),
            join: vec!["10.0.0.1:7701".into()],
            gossip_key: Some(KEY.into()),
            ..Request::default()
        };
        let plan = plan_install(&request, &empty(), &host(false)).unwrap();
        let r = Path::new("/r");
        assert_eq!(
            plan.actions[..3],
            [
                Action::CreateDir {
                    path: under(r, ETC_DIR),
                    mode: 0o755
                },
                Action::CreateDir {
                    path: under(r, SERVICES_DIR),
                    mode: 0o755
                },
                Action::CreateDir {
                    path: under(r, DATA_DIR),
                    mode: 0o750
                },
            ]
        );
        // The shim first, then the agent that needs it.
        assert_eq!(
            plan.actions[3..5],
            [
                Action::CopyBinary {
                    from: PathBuf::from("/build/strata-shim"),
                    to: PathBuf::from("/r/usr/local/bin/strata-shim"),
                    mode: 0o755
                },
                Action::CopyBinary {
                    from: PathBuf::from("/build/strata-agent"),
                    to: PathBuf::from("/r/usr/local/bin/strata-agent"),
                    mode: 0o755
                },
            ]
        );
        assert!(plan.actions.iter().any(|a| matches!(a,
            Action::WriteFile { path, mode: 0o600, secret: Some(s), .. }
                if path == Path::new("/r/etc/strata/agent.toml") && s == KEY)));
        assert!(plan.actions.iter().any(|a| matches!(a,
            Action::WriteFile { path, mode: 0o644, .. }
                if path == Path::new("/r/etc/systemd/system/strata-agent.service"))));
        assert_eq!(plan.generated_key, None);
        // Without systemd the commands are for the operator, not run.
        assert!(commands(&plan).is_empty());
        assert_eq!(
            plan.manual_commands,
            [
                systemctl(&["daemon-reload"]),
                systemctl(&["enable", "--now", UNIT_NAME])
            ]
        );
    }

    #[test]
    fn the_config_uses_real_paths_and_parses_with_the_agents_parser() {
        let request = Request {
            node_name: Some("web-1".into()),
            join: vec!["10.0.0.1:7701".into(), "db-\"1\":7701".into()],
            gossip_key: Some(KEY.into()),
            advertise_addr: Some("203.0.113.5:7701".parse().unwrap()),
            ..Request::default()
        };
        let plan = plan_install(&request, &empty(), &host(false)).unwrap();
        let text = written(&plan, CONFIG_PATH);
        let file = config::parse_file(text).unwrap();
        assert_eq!(file.node_name.as_deref(), Some("web-1"));
        assert_eq!(file.gossip_key.as_deref(), Some(KEY));
        assert_eq!(file.join, ["10.0.0.1:7701", "db-\"1\":7701"]);
        assert_eq!(file.gossip_addr, Some("10.0.0.5:7701".parse().unwrap()));
        assert_eq!(
            file.advertise_addr,
            Some("203.0.113.5:7701".parse().unwrap())
        );
        assert_eq!(
            file.grpc_addr,
            Some(config::DEFAULT_GRPC_ADDR.parse().unwrap())
        );
        assert_eq!(
            file.services_dir,
            Some(PathBuf::from("/etc/strata/services.d"))
        );
        assert_eq!(file.data_dir, Some(PathBuf::from("/var/lib/strata")));
        let resolved = config::resolve(&RunArgs::default(), file, "h").unwrap();
        assert_eq!(resolved.gossip_key.as_deref(), Some(KEY));
    }

    #[test]
    fn the_unit_runs_the_installed_binary_under_notify_and_keeps_services_on_stop() {
        let unit = render_unit();
        for line in [
            "Type=notify",
            "ExecStart=/usr/local/bin/strata-agent run --config /etc/strata/agent.toml",
            "Restart=on-failure",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "NotifyAccess=all",
            "FileDescriptorStoreMax=4096",
            "KillMode=process",
            "Delegate=yes",
            "LimitNOFILE=1048576",
            "WantedBy=multi-user.target",
            "Documentation=man:strata-agent(1) man:strata(1)",
            "EnvironmentFile=-/etc/default/strata-agent",
            "OOMScoreAdjust=-1000",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
        }
        assert!(unit.lines().any(|l| l.starts_with("TimeoutStopSec=")));
        assert!(!unit.contains('@'), "a placeholder is left:\n{unit}");
        for bad in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
        ] {
            assert!(!unit.lines().any(|l| l == bad), "{bad} breaks services");
        }
    }

    #[test]
    fn a_second_run_changes_nothing_and_says_so() {
        let request = Request {
            join: vec!["10.0.0.1:7701".into()],
            ..Request::default()
        };
        let first = plan_install(&request, &empty(), &host(true)).unwrap();
        assert_eq!(first.generated_key.as_deref(), Some(FRESH));
        let installed = after(&first, empty());
        let mut again_host = host(true);
        again_host.fresh_key = KEY.into();
        let second = plan_install(&request, &installed, &again_host).unwrap();
        assert_eq!(second.generated_key, None, "the installed key is kept");
        assert_eq!(second.unchanged.len(), 8, "{:#?}", second.unchanged);
        assert!(
            second
                .unchanged
                .iter()
                .all(|l| l.starts_with("unchanged: "))
        );
        // Only the ensure-enabled command, which changes nothing on a running agent.
        assert_eq!(
            commands(&second),
            ["systemctl enable --now strata-agent.service"]
        );
        // Without flags, a rerun keeps what the installed config says.
        let bare = plan_install(&Request::default(), &installed, &again_host).unwrap();
        assert_eq!(bare.unchanged.len(), 8, "{bare:#?}");
    }

    #[test]
    fn a_fresh_install_under_systemd_reloads_and_starts() {
        let plan = plan_install(&Request::default(), &empty(), &host(true)).unwrap();
        assert_eq!(
            commands(&plan),
            [
                "systemctl daemon-reload",
                "systemctl enable --now strata-agent.service"
            ]
        );
        assert!(plan.manual_commands.is_empty());
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("--join 10.0.0.5:7701"))
        );
    }

    #[test]
    fn an_upgrade_replaces_the_binary_and_restarts() {
        let installed = after(
            &plan_install(&Request::default(), &empty(), &host(true)).unwrap(),
            empty(),
        );
        // A new agent, a new shim, or both: each copied, then the agent restarted.
        for (binary_same, shim_same, copied) in [
            (false, true, &[BIN_PATH][..]),
            (true, false, &[SHIM_PATH]),
            (false, false, &[SHIM_PATH, BIN_PATH]),
        ] {
            let upgraded = Current {
                binary_same,
                shim_same,
                ..installed.clone()
            };
            let plan = plan_install(&Request::default(), &upgraded, &host(true)).unwrap();
            let copies: Vec<PathBuf> = plan
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::CopyBinary { to, .. } => Some(to.clone()),
                    _ => None,
                })
                .collect();
            let expected: Vec<PathBuf> = copied.iter().map(|p| under(Path::new("/r"), p)).collect();
            assert_eq!(copies, expected, "{plan:#?}");
            assert!(
                matches!(plan.actions[0], Action::CopyBinary { .. }),
                "{plan:#?}"
            );
            assert_eq!(
                commands(&plan),
                [
                    "systemctl enable strata-agent.service",
                    "systemctl restart strata-agent.service"
                ]
            );
        }
    }

    #[test]
    fn a_different_config_needs_force() {
        let mut current = empty();
        current.config = file(0o600, "node_name = \"old\"\n");
        let request = Request {
            node_name: Some("new".into()),
            gossip_key: Some(KEY.into()),
            ..Request::default()
        };
        let err = plan_install(&request, &current, &host(false)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PlanError::ConfigDiffers { .. }), "{text}");
        assert!(text.contains("/r/etc/strata/agent.toml"), "{text}");
        assert!(text.contains("--force"), "{text}");
        assert!(!text.contains(KEY), "the key leaked: {text}");
        let forced = Request {
            force: true,
            ..request
        };
        let plan = plan_install(&forced, &current, &host(false)).unwrap();
        assert!(written(&plan, CONFIG_PATH).contains("node_name = \"new\""));
    }

    #[test]
    fn a_wrong_mode_or_owner_is_fixed_without_rewriting() {
        let installed = after(
            &plan_install(&Request::default(), &empty(), &host(false)).unwrap(),
            empty(),
        );
        let Found::File { text, .. } = installed.config.clone() else {
            panic!("no config");
        };
        let loose = Current {
            config: Found::File {
                mode: 0o644,
                uid: 1000,
                text,
            },
            data_dir: Found::Dir {
                mode: 0o777,
                uid: 0,
            },
            ..installed
        };
        let plan = plan_install(&Request::default(), &loose, &host(false)).unwrap();
        let r = Path::new("/r");
        assert_eq!(
            plan.actions,
            [
                Action::SetMode {
                    path: under(r, DATA_DIR),
                    mode: 0o750
                },
                Action::SetMode {
                    path: under(r, CONFIG_PATH),
                    mode: 0o600
                },
            ]
        );
    }

    #[test]
    fn bad_settings_are_refused_before_anything_is_planned() {
        let bad_name = Request {
            node_name: Some("bad name!".into()),
            ..Request::default()
        };
        let err = plan_install(&bad_name, &empty(), &host(false)).unwrap_err();
        assert!(err.to_string().contains("node_name"), "{err}");
        let bad_key = Request {
            gossip_key: Some("short".into()),
            ..Request::default()
        };
        let err = plan_install(&bad_key, &empty(), &host(false)).unwrap_err();
        assert!(err.to_string().contains("gossip_key"), "{err}");
        let unspecified = Request {
            gossip_addr: Some("0.0.0.0:7701".parse().unwrap()),
            ..Request::default()
        };
        let err = plan_install(&unspecified, &empty(), &host(false)).unwrap_err();
        assert!(err.to_string().contains("--advertise-addr"), "{err}");
        let mut no_ip = host(false);
        no_ip.host_ip = None;
        let err = plan_install(&Request::default(), &empty(), &no_ip).unwrap_err();
        assert!(err.to_string().contains("--gossip-addr"), "{err}");
        let mut current = empty();
        current.unit = Found::Dir {
            mode: 0o755,
            uid: 0,
        };
        let err = plan_install(&Request::default(), &current, &host(false)).unwrap_err();
        assert!(matches!(err, PlanError::WrongKind { .. }), "{err}");
    }

    #[test]
    fn a_network_api_is_installed_with_tls_or_insecure_only() {
        let public: SocketAddr = "10.0.0.5:7700".parse().unwrap();
        let plain = Request {
            grpc_addr: Some(public),
            ..Request::default()
        };
        let err = plan_install(&plain, &empty(), &host(false)).unwrap_err();
        assert!(err.to_string().contains("--tls-cert"), "{err}");
        let partial = Request {
            tls_cert: Some("/etc/strata/tls/n.pem".into()),
            ..plain.clone()
        };
        let err = plan_install(&partial, &empty(), &host(false)).unwrap_err();
        assert!(err.to_string().contains("all three"), "{err}");
        let relative = Request {
            tls_cert: Some("n.pem".into()),
            tls_key: Some("/k.pem".into()),
            tls_ca: Some("/ca.pem".into()),
            ..plain.clone()
        };
        let err = plan_install(&relative, &empty(), &host(false)).unwrap_err();
        assert!(
            err.to_string()
                .contains("--tls-cert n.pem: give an absolute path"),
            "{err}"
        );

        let with_tls = Request {
            tls_cert: Some("/etc/strata/tls/n.pem".into()),
            tls_key: Some("/etc/strata/tls/n-key.pem".into()),
            tls_ca: Some("/etc/strata/tls/ca.pem".into()),
            ..plain.clone()
        };
        let insecure = Request {
            insecure: true,
            ..plain
        };
        for request in [with_tls, insecure] {
            let plan = plan_install(&request, &empty(), &host(false)).unwrap();
            let config = plan
                .actions
                .iter()
                .find_map(|a| match a {
                    Action::WriteFile { path, content, .. } if path.ends_with("agent.toml") => {
                        Some(content.clone())
                    }
                    _ => None,
                })
                .expect("a config is written");
            let file = config::parse_file(&config).unwrap();
            let resolved = config::resolve(&config::RunArgs::default(), file, "h");
            assert!(
                resolved.is_ok(),
                "the agent accepts it: {resolved:?}\n{config}"
            );
        }
    }

    #[test]
    fn uninstall_asks_a_running_agent_to_leave_before_anything_else() {
        let mut installed = after(
            &plan_install(&Request::default(), &empty(), &host(true)).unwrap(),
            empty(),
        );
        installed.agent_running = true;
        let plan = plan_uninstall(&installed, &host(true), false);
        assert_eq!(
            plan.actions.first(),
            Some(&Action::LeaveCluster {
                data_dir: under(Path::new("/r"), DATA_DIR)
            })
        );
        assert_eq!(
            plan.actions.get(1),
            Some(&Action::RunCommand {
                argv: systemctl(&["disable", "--now", UNIT_NAME])
            })
        );
        let removed = after(&plan, installed);
        assert!(
            plan_uninstall(&removed, &host(true), false)
                .actions
                .is_empty()
        );
    }

    #[test]
    fn uninstall_stops_first_keeps_data_and_is_idempotent() {
        let installed = after(
            &plan_install(&Request::default(), &empty(), &host(true)).unwrap(),
            empty(),
        );
        let plan = plan_uninstall(&installed, &host(true), false);
        let r = Path::new("/r");
        assert_eq!(
            plan.actions,
            [
                Action::RunCommand {
                    argv: systemctl(&["disable", "--now", UNIT_NAME])
                },
                Action::RemoveFile {
                    path: under(r, UNIT_PATH)
                },
                Action::RemoveFile {
                    path: under(r, BIN_PATH)
                },
                Action::RemoveFile {
                    path: under(r, SHIM_PATH)
                },
                Action::RemoveFile {
                    path: under(r, CONFIG_PATH)
                },
                Action::RemoveFile {
                    path: under(r, MAN_PATH)
                },
                Action::RunCommand {
                    argv: systemctl(&["daemon-reload"])
                },
            ]
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("kept /r/var/lib/strata"))
        );
        let removed = after(&plan, installed.clone());
        let again = plan_uninstall(&removed, &host(true), false);
        assert!(again.actions.is_empty(), "{again:#?}");
        assert_eq!(again.unchanged.len(), 5);

        let purge = plan_uninstall(&installed, &host(false), true);
        assert!(purge.actions.contains(&Action::RemoveTree {
            path: under(r, DATA_DIR)
        }));
        assert!(purge.actions.contains(&Action::RemoveTree {
            path: under(r, SERVICES_DIR)
        }));
        assert_eq!(
            purge.actions.last(),
            Some(&Action::RemoveDirIfEmpty {
                path: under(r, ETC_DIR)
            })
        );
        assert_eq!(
            purge.manual_commands,
            [
                systemctl(&["disable", "--now", UNIT_NAME]),
                systemctl(&["daemon-reload"])
            ]
        );
    }
}
