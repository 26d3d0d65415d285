//! SIGHUP: re-reads what can change under a running agent — the log filter and alert rules
//! (config file), the API tokens file and the services dir — and applies what is valid. A
//! file that is wrong changes nothing it governs and is reported with its path and field;
//! settings that only a new process can take (addresses, data dir, TLS, ...) are reported as
//! needing `strata-agent upgrade`. Every reload is logged and recorded as one journal event.

use crate::auth::tokens;
use crate::config::{self, AgentConfig, FileConfig, LogFormat, RunArgs};
use crate::metrics::alerts::Rule;
use std::io::IsTerminal as _;
use std::path::Path;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The variable whose filter wins over the config file's `log_level`.
pub const LOG_ENV: &str = "STRATA_LOG";

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl LogControl {
    /// Installs the process's logger (stderr) in `format` with `STRATA_LOG`, else `info`.
    /// Text is coloured only when stderr is a terminal and `NO_COLOR` is unset or empty, so
    /// journald and log files never receive escape codes.
    pub fn init(format: LogFormat) -> LogControl {
        let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
        let (layer, handle) = tracing_subscriber::reload::Layer::new(filter);
        let colour = colour_wanted(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        let text = (format == LogFormat::Text).then(|| {
            tracing_subscriber::fmt::layer()
                .with_ansi(colour)
                .with_writer(std::io::stderr)
        });
        let json = (format == LogFormat::Json).then(|| {
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::io::stderr)
        });
        tracing_subscriber::registry()
            .with(layer)
            .with(text)
            .with(json)
            .init();
        LogControl { handle }
    }

    /// Applies the filter the configuration asks for; returns the one in effect.
    pub fn apply(&self, config_level: &str) -> Result<String, String> {
        let (text, filter) = effective_filter(config_level)?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))?;
        Ok(text)
    }
}

/// Whether text logs get ANSI colours: only on a terminal, and never when `NO_COLOR` has a
/// non-empty value (no-color.org).
fn colour_wanted(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The filter in effect: `STRATA_LOG` when set, else the config file's `log_level`.
fn effective_filter(config_level: &str) -> Result<(String, EnvFilter), String> {
    let text = std::env::var(LOG_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| config_level.to_string());
    EnvFilter::try_new(&text)
        .map(|f| (text.clone(), f))
        .map_err(|e| format!("log filter {text:?}: {e}"))
}

/// What one reload did: each item one line for the log and the journal.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// What was re-read and applied.
    pub reloaded: Vec<String>,
    /// What was wrong and left as it was.
    pub failed: Vec<String>,
    /// Settings that changed in the config file but need `strata-agent upgrade`.
    pub needs_upgrade: Vec<&'static str>,
}

impl ReloadReport {
    /// One line: "reloaded: ...; failed: ...; needs `strata-agent upgrade`: ...".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.reloaded.is_empty() {
            parts.push(format!("reloaded: {}", self.reloaded.join("; ")));
        }
        if !self.failed.is_empty() {
            parts.push(format!(
                "failed (old settings kept): {}",
                self.failed.join("; ")
            ));
        }
        if !self.needs_upgrade.is_empty() {
            parts.push(format!(
                "changed but needs `strata-agent upgrade` to take effect: {}",
                self.needs_upgrade.join(", ")
            ));
        }
        if parts.is_empty() {
            "nothing to reload".into()
        } else {
            parts.join(". ")
        }
    }
}

/// The settings of `new` that differ from `old` and that only a new process applies.
/// Destructured whole, so a new setting does not compile until someone decides whether a
/// reload covers it.
pub fn upgrade_only_changes(old: &AgentConfig, new: &AgentConfig) -> Vec<&'static str> {
    let AgentConfig {
        data_dir,
        node_name,
        grpc_addr,
        http_addr,
        dev,
        collect_interval,
        top_processes,
        labels,
        journal_max_events,
        journal_max_age,
        // Reloaded.
        alerts: _,
        services_dir: _,
        log_level: _,
        log_format,
        port_range,
        cgroup_root,
        gossip_addr,
        advertise_addr,
        join,
        gossip_key,
        reap_after,
        balancer_addr,
        dns_addr,
        dns_domain,
        dns_only_passing,
        tls,
        api_limits,
        stop_services_on_exit,
        leave_on_stop,
        leave_drain,
        shim_path,
        log_retention,
    } = new;
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    check("data_dir", *data_dir != old.data_dir);
    check("node_name", *node_name != old.node_name);
    check("grpc_addr", *grpc_addr != old.grpc_addr);
    check("http_addr", *http_addr != old.http_addr);
    check("dev", *dev != old.dev);
    check(
        "collect_interval",
        *collect_interval != old.collect_interval,
    );
    check("top_processes", *top_processes != old.top_processes);
    check("labels", *labels != old.labels);
    check(
        "journal.max_events",
        *journal_max_events != old.journal_max_events,
    );
    check("journal.max_age", *journal_max_age != old.journal_max_age);
    check("log_format", *log_format != old.log_format);
    check("port_range", *port_range != old.port_range);
    check("cgroup_root", *cgroup_root != old.cgroup_root);
    check("gossip_addr", *gossip_addr != old.gossip_addr);
    check("advertise_addr", *advertise_addr != old.advertise_addr);
    check("join", *join != old.join);
    check("gossip_key", *gossip_key != old.gossip_key);
    check("reap_after", *reap_after != old.reap_after);
    check("balancer_addr", *balancer_addr != old.balancer_addr);
    check("dns_addr", *dns_addr != old.dns_addr);
    check("dns_domain", *dns_domain != old.dns_domain);
    check(
        "dns_only_passing",
        *dns_only_passing != old.dns_only_passing,
    );
    check("tls", *tls != old.tls);
    check("api", *api_limits != old.api_limits);
    check(
        "stop_services_on_exit",
        *stop_services_on_exit != old.stop_services_on_exit,
    );
    check("leave_on_stop", *leave_on_stop != old.leave_on_stop);
    check("leave_drain", *leave_drain != old.leave_drain);
    check("shim_path", *shim_path != old.shim_path);
    check("logs", *log_retention != old.log_retention);
    changed
}

/// What the running agent's reload reaches.
pub struct Targets<'a> {
    pub supervisor: &'a crate::supervisor::manager::Supervisor,
    pub set_alert_rules: &'a dyn Fn(Vec<Rule>),
    pub tokens_file: &'a Path,
}

/// Re-reads the configuration and applies what a reload covers; `current` is the
/// configuration in effect and becomes the new one where it was applied.
pub struct Reloader {
    args: RunArgs,
    hostname: String,
    log: Option<LogControl>,
}

impl Reloader {
    /// A reloader that re-reads the config file named in `args` (flags and environment stay
    /// as they were at start).
    pub fn new(args: RunArgs, hostname: String, log: Option<LogControl>) -> Reloader {
        Reloader {
            args,
            hostname,
            log,
        }
    }

    /// The configuration as the files say now, or why it cannot be used.
    fn read_config(&self) -> Result<AgentConfig, String> {
        let file = match &self.args.config {
            Some(path) => config::load_file(path).map_err(|e| e.to_string())?,
            None => FileConfig::default(),
        };
        config::resolve(&self.args, file, &self.hostname).map_err(|e| match &self.args.config {
            Some(path) => format!("config file {}: {e}", path.display()),
            None => e.to_string(),
        })
    }

    /// Reloads; `current` is updated with what was applied.
    pub async fn reload(&self, current: &mut AgentConfig, targets: Targets<'_>) -> ReloadReport {
        let mut report = ReloadReport::default();
        match self.read_config() {
            Err(e) => report.failed.push(e),
            Ok(new) => {
                report.needs_upgrade = upgrade_only_changes(current, &new);
                if let Some(log) = &self.log {
                    match log.apply(&new.log_level) {
                        Ok(filter) => report.reloaded.push(format!("log filter {filter:?}")),
                        Err(e) => report.failed.push(e),
                    }
                }
                current.log_level = new.log_level;
                if new.alerts != current.alerts {
                    (targets.set_alert_rules)(new.alerts.clone());
                    report
                        .reloaded
                        .push(format!("alert rules ({} rules)", new.alerts.len()));
                    current.alerts = new.alerts;
                }
                current.services_dir = new.services_dir;
            }
        }
        match tokens::list(targets.tokens_file) {
            Ok(found) => report.reloaded.push(format!(
                "tokens file {} ({} tokens)",
                targets.tokens_file.display(),
                found.len()
            )),
            // The token store itself refuses every token while the file is broken: a damaged
            // credentials file must never keep a token someone meant to revoke.
            Err(e) => report
                .failed
                .push(format!("{e} (every token is refused until it is fixed)")),
        }
        if let Some(dir) = &current.services_dir {
            services_dir(targets.supervisor, dir, &mut report).await;
        }
        report
    }
}

async fn services_dir(
    supervisor: &crate::supervisor::manager::Supervisor,
    dir: &Path,
    report: &mut ReloadReport,
) {
    use strata_proto::v1::ApplyAction;
    match supervisor.load_services_dir(dir).await {
        Err(e) => report
            .failed
            .push(format!("services dir {}: {e}", dir.display())),
        Ok(outcomes) => {
            let mut changed = Vec::new();
            let mut unchanged = 0;
            // A name in two files fails both with one error naming both: reported once.
            let mut reported = std::collections::BTreeSet::new();
            for (file, outcome) in outcomes {
                match outcome {
                    Ok(applied) if applied.action == ApplyAction::Unchanged => unchanged += 1,
                    Ok(applied) => changed.push(format!(
                        "{} {}",
                        applied.service,
                        if applied.action == ApplyAction::Created {
                            "created"
                        } else {
                            "updated"
                        }
                    )),
                    Err(e) => {
                        if reported.insert(e.to_string()) {
                            report.failed.push(format!("{file}: {e}"));
                        }
                    }
                }
            }
            let mut line = format!("services dir {} ({unchanged} unchanged", dir.display());
            if !changed.is_empty() {
                line.push_str(&format!(", {}", changed.join(", ")));
            }
            line.push(')');
            report.reloaded.push(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AgentConfig {
        let args = RunArgs {
            insecure_gossip: true,
            ..RunArgs::default()
        };
        config::resolve(&args, config::parse_file(text).unwrap(), "h").unwrap()
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color_set() {
        use std::ffi::OsStr;
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(false, Some(OsStr::new(""))));
    }

    #[test]
    fn a_new_log_format_needs_an_upgrade() {
        let old = config("");
        let new = config("log_format = \"json\"\n");
        assert_eq!(upgrade_only_changes(&old, &new), vec!["log_format"]);
    }

    #[test]
    fn only_settings_a_reload_cannot_apply_are_reported_for_upgrade() {
        let old = config("");
        let same_but_reloadable = config(
            "log_level = \"debug\"\nservices_dir = \"/srv\"\n[[alerts.rules]]\nname = \"load_high\"\nenabled = false\n",
        );
        assert!(upgrade_only_changes(&old, &same_but_reloadable).is_empty());
        let moved = config("grpc_addr = \"127.0.0.1:9000\"\n[labels]\nrack = \"r2\"\n");
        assert_eq!(
            upgrade_only_changes(&old, &moved),
            vec!["grpc_addr", "labels"]
        );
    }

    #[test]
    fn the_summary_says_what_was_reloaded_failed_and_needs_an_upgrade() {
        assert_eq!(ReloadReport::default().summary(), "nothing to reload");
        let report = ReloadReport {
            reloaded: vec!["log filter \"info\"".into()],
            failed: vec!["config file /c.toml: line 1".into()],
            needs_upgrade: vec!["grpc_addr"],
        };
        let summary = report.summary();
        assert!(summary.contains("reloaded: log filter"), "{summary}");
        assert!(
            summary.contains("failed (old settings kept): config file /c.toml"),
            "{summary}"
        );
        assert!(
            summary.contains("strata-agent upgrade` to take effect: grpc_addr"),
            "{summary}"
        );
    }

    #[test]
    fn strata_log_wins_over_the_config_file() {
        // The variable is the process's; only read here, never set.
        let expected = std::env::var(LOG_ENV).ok().filter(|v| !v.is_empty());
        let (text, _) = effective_filter("warn").unwrap();
        assert_eq!(text, expected.unwrap_or_else(|| "warn".into()));
    }
}
