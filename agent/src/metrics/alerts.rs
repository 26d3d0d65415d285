//! Host alert rules: thresholds on the host metrics samples that turn into "alert.firing"
//! and "alert.resolved" events, so an operator learns about a full disk or an OOM kill
//! without watching graphs.
//!
//! `AlertEngine` is a pure state machine in the style of foca: it is fed samples and the
//! current time and returns transitions; the agent writes them to the journal. Each
//! (rule, subject) pair goes inactive → pending (condition true, `for` not yet elapsed) →
//! firing → resolved (condition false again, or the subject vanished).
//!
//! Configuration, embedded by the agent config as `[alerts]`:
//!
//! ```toml
//! [alerts]
//! defaults = true            # start from the built-in rules (the default)
//!
//! [[alerts.rules]]           # override a built-in rule by name: only the fields given change
//! name = "filesystem_full"
//! threshold = 85.0
//! for = "5m"
//!
//! [[alerts.rules]]           # disable a built-in rule
//! name = "load_high"
//! enabled = false
//!
//! [[alerts.rules]]           # a new rule needs a condition; other fields default per condition
//! name = "disk_nearly_full_critical"
//! condition = "filesystem_used_percent"
//! threshold = 97.0
//! severity = "critical"
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use strata_proto::v1::{HostMetrics, Severity};

use crate::events::journal::EventDraft;

/// How urgent an alert is; maps onto the event severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertSeverity {
    /// Needs attention soon.
    Warning,
    /// Needs attention now.
    Critical,
}

impl AlertSeverity {
    /// The event severity of a firing alert of this severity.
    pub fn to_proto(self) -> Severity {
        match self {
            AlertSeverity::Warning => Severity::Warning,
            AlertSeverity::Critical => Severity::Critical,
        }
    }
}

/// What a rule watches. Each condition has its own subjects and defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A writable filesystem's used space above `threshold` percent; one subject per
    /// mountpoint.
    FilesystemUsedPercent,
    /// A writable filesystem's used inodes above `threshold` percent; per mountpoint.
    InodesUsedPercent,
    /// Available memory below `threshold` percent of the total.
    MemoryAvailablePercent,
    /// The 1-minute load average divided by the number of cores above `threshold`.
    LoadPerCore,
    /// Allocated file descriptors above `threshold` percent of the system maximum.
    FdUsedPercent,
    /// The OOM killer killed a process within the last `window`; fires at once, resolves
    /// once a whole `window` passes without a new kill.
    OomKill,
    /// An interface's receive plus transmit errors grew by more than `threshold` within
    /// the last `window`; per interface.
    NetworkErrors,
    /// Pages swapped in and pages swapped out per second both above `threshold`.
    SwapThrashing,
}

/// The fallbacks of one condition: (threshold, for, window, severity).
fn condition_defaults(c: Condition) -> (f64, Duration, Duration, AlertSeverity) {
    let min = |m: u64| Duration::from_secs(m * 60);
    match c {
        Condition::FilesystemUsedPercent => (90.0, min(1), Duration::ZERO, AlertSeverity::Warning),
        Condition::InodesUsedPercent => (90.0, min(1), Duration::ZERO, AlertSeverity::Warning),
        Condition::MemoryAvailablePercent => (10.0, min(2), Duration::ZERO, AlertSeverity::Warning),
        Condition::LoadPerCore => (2.0, min(5), Duration::ZERO, AlertSeverity::Warning),
        Condition::FdUsedPercent => (90.0, min(1), Duration::ZERO, AlertSeverity::Critical),
        Condition::OomKill => (0.0, Duration::ZERO, min(5), AlertSeverity::Warning),
        Condition::NetworkErrors => (0.0, min(2), min(2), AlertSeverity::Warning),
        Condition::SwapThrashing => (100.0, min(2), Duration::ZERO, AlertSeverity::Warning),
    }
}

/// The built-in rules, by name, applied unless `defaults = false`.
const DEFAULT_RULES: [(&str, Condition); 8] = [
    ("filesystem_full", Condition::FilesystemUsedPercent),
    ("inodes_full", Condition::InodesUsedPercent),
    ("memory_low", Condition::MemoryAvailablePercent),
    ("load_high", Condition::LoadPerCore),
    ("fd_limit", Condition::FdUsedPercent),
    ("oom_kill", Condition::OomKill),
    ("network_errors", Condition::NetworkErrors),
    ("swap_thrashing", Condition::SwapThrashing),
];

fn duration_from_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration `{text}`: {e} (write it like \"90s\", \"5m\" or \"1h\")"
        ))
    })
}

/// The `[alerts]` section of the agent config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Start from the built-in rules (default true).
    #[serde(default = "enabled_by_default")]
    pub defaults: bool,
    /// Rules that override, disable or add to the built-in ones.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

fn enabled_by_default() -> bool {
    true
}

impl Default for AlertsConfig {
    fn default() -> AlertsConfig {
        AlertsConfig {
            defaults: true,
            rules: Vec::new(),
        }
    }
}

/// One `[[alerts.rules]]` entry. Fields left out keep the built-in rule's value (when the
/// name is a built-in one) or the condition's default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in events and the API; the key for overriding a built-in rule.
    pub name: String,
    /// What to watch; required for a rule that is not built in.
    #[serde(default)]
    pub condition: Option<Condition>,
    /// The limit; its unit depends on the condition (percent, load per core, errors, pages/s).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// How long the condition must hold before the alert fires ("5m").
    #[serde(default, rename = "for", deserialize_with = "duration_from_text")]
    pub for_duration: Option<Duration>,
    /// The look-back of counter conditions (`oom_kill`, `network_errors`), e.g. "5m".
    #[serde(default, deserialize_with = "duration_from_text")]
    pub window: Option<Duration>,
    /// `warning` or `critical`.
    #[serde(default)]
    pub severity: Option<AlertSeverity>,
    /// `false` turns the rule off (the way to disable a built-in rule).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A rule ready to evaluate, with every field resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// What is watched.
    pub condition: Condition,
    /// The limit, in the condition's unit.
    pub threshold: f64,
    /// How long the condition must hold before firing.
    pub for_duration: Duration,
    /// Look-back of counter conditions.
    pub window: Duration,
    /// Severity of the firing event.
    pub severity: AlertSeverity,
}

impl Rule {
    /// A rule with the condition's default threshold, durations and severity.
    pub fn with_defaults(name: impl Into<String>, condition: Condition) -> Rule {
        let (threshold, for_duration, window, severity) = condition_defaults(condition);
        Rule {
            name: name.into(),
            condition,
            threshold,
            for_duration,
            window,
            severity,
        }
    }
}

/// A rule in the config that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("alert rule `{rule}`: {problem}")]
pub struct AlertConfigError {
    /// The rule's name (empty when the name is what is missing).
    pub rule: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl AlertsConfig {
    /// The rules to evaluate: the built-in ones (unless disabled), with overrides applied,
    /// plus new ones. Rejects nameless, duplicate, incomplete or out-of-range rules.
    pub fn rules(&self) -> Result<Vec<Rule>, AlertConfigError> {
        let mut rules: Vec<Rule> = if self.defaults {
            DEFAULT_RULES
                .iter()
                .map(|(name, c)| Rule::with_defaults(*name, *c))
                .collect()
        } else {
            Vec::new()
        };
        let fail = |rule: &str, problem: &str| AlertConfigError {
            rule: rule.to_owned(),
            problem: problem.to_owned(),
        };
        for (i, rc) in self.rules.iter().enumerate() {
            let name = rc.name.as_str();
            if name.trim().is_empty() {
                return Err(fail("", &format!("rule #{} has an empty `name`", i + 1)));
            }
            if self.rules[..i].iter().any(|other| other.name == name) {
                return Err(fail(name, "the name is used by more than one rule"));
            }
            let position = rules.iter().position(|r| r.name == name);
            if rc.enabled == Some(false) {
                if let Some(p) = position {
                    rules.remove(p);
                }
                continue;
            }
            let mut rule = match (position, rc.condition) {
                (Some(p), None) => rules.remove(p),
                (Some(p), Some(condition)) => {
                    rules.remove(p);
                    Rule::with_defaults(name, condition)
                }
                (None, Some(condition)) => Rule::with_defaults(name, condition),
                (None, None) => {
                    return Err(fail(
                        name,
                        "`condition` is required for a rule that is not built in",
                    ));
                }
            };
            if let Some(t) = rc.threshold {
                rule.threshold = t;
            }
            if let Some(d) = rc.for_duration {
                rule.for_duration = d;
            }
            if let Some(w) = rc.window {
                rule.window = w;
            }
            if let Some(s) = rc.severity {
                rule.severity = s;
            }
            check_threshold(&rule).map_err(|problem| fail(name, &problem))?;
            rules.push(rule);
        }
        Ok(rules)
    }
}

fn check_threshold(rule: &Rule) -> Result<(), String> {
    let t = rule.threshold;
    let percent = matches!(
        rule.condition,
        Condition::FilesystemUsedPercent
            | Condition::InodesUsedPercent
            | Condition::MemoryAvailablePercent
            | Condition::FdUsedPercent
    );
    if !t.is_finite() || t < 0.0 || (percent && t > 100.0) {
        let range = if percent { "0..=100" } else { "0 or more" };
        return Err(format!("`threshold` {t} is out of range ({range})"));
    }
    if matches!(
        rule.condition,
        Condition::OomKill | Condition::NetworkErrors
    ) && rule.window.is_zero()
    {
        return Err("`window` must be longer than zero".to_owned());
    }
    Ok(())
}

/// Where a (rule, subject) pair is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertPhase {
    /// The condition holds but not yet for the rule's `for`.
    Pending,
    /// The condition has held for `for`; operators were told.
    Firing,
}

/// A pending or firing alert, as the API and the console show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    /// The rule's name.
    pub rule: String,
    /// What it is about: "filesystem:/var", "memory", "network:eth0", ...
    pub subject: String,
    /// Pending or firing.
    pub phase: AlertPhase,
    /// When the current phase began (for a firing alert: when it fired).
    pub since_unix_ms: i64,
    /// The watched value at the latest evaluation where the condition held.
    pub value: f64,
    /// The rule's threshold, for display.
    pub threshold: f64,
    /// The rule's severity.
    pub severity: AlertSeverity,
    /// One line for people.
    pub message: String,
}

/// Whether an alert started or stopped firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    /// The alert fired.
    Firing,
    /// A firing alert's condition cleared or its subject vanished.
    Resolved,
}

/// A change operators must hear about; the agent journals it as an event.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertTransition {
    /// Fired or resolved.
    pub kind: TransitionKind,
    /// When the transition happened.
    pub at_unix_ms: i64,
    /// The alert as it was when firing (for a resolution: its last firing state).
    pub alert: ActiveAlert,
}

impl AlertTransition {
    /// The journal event for this transition: "alert.firing" at the rule's severity or
    /// "alert.resolved" at info.
    pub fn to_draft(&self) -> EventDraft {
        let a = &self.alert;
        let (kind, severity, message) = match self.kind {
            TransitionKind::Firing => ("alert.firing", a.severity.to_proto(), a.message.clone()),
            TransitionKind::Resolved => (
                "alert.resolved",
                Severity::Info,
                format!("resolved: {}", a.message),
            ),
        };
        EventDraft::new(kind, severity, a.subject.clone(), message)
            .field("rule", a.rule.clone())
            .field("value", format!("{}", a.value))
            .field("threshold", format!("{}", a.threshold))
            .at(self.at_unix_ms)
    }
}

/// The condition holding for one subject at one evaluation.
struct Hit {
    subject: String,
    value: f64,
    message: String,
}

/// Evaluates alert rules against successive samples and remembers each (rule, subject)
/// state; no I/O, so it is tested with synthetic samples and a fake clock.
pub struct AlertEngine {
    rules: Vec<Rule>,
    /// Keyed by (rule index, subject); absent means inactive.
    states: BTreeMap<(usize, String), ActiveAlert>,
    oom_total: Option<u64>,
    last_oom_kill_ms: Option<i64>,
    /// Per interface: (time, rx+tx errors) over the longest network window.
    net_errors: HashMap<String, VecDeque<(i64, u64)>>,
}

impl AlertEngine {
    /// An engine for resolved rules (see `AlertsConfig::rules`).
    pub fn new(rules: Vec<Rule>) -> AlertEngine {
        AlertEngine {
            rules,
            states: BTreeMap::new(),
            oom_total: None,
            last_oom_kill_ms: None,
            net_errors: HashMap::new(),
        }
    }

    /// Evaluates `rules` from now on (a reload): the pending and firing alerts of rules that
    /// keep their name carry over, so a reload neither re-fires nor resolves them; those of
    /// removed rules are forgotten.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        let old = std::mem::take(&mut self.states);
        for ((index, subject), state) in old {
            let name = &self.rules[index].name;
            if let Some(new_index) = rules.iter().position(|r| &r.name == name) {
                self.states.insert((new_index, subject), state);
            }
        }
        self.rules = rules;
    }

    /// The rules being evaluated.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Feeds one sample taken at `now_unix_ms`; returns the alerts that fired or resolved.
    pub fn evaluate(&mut self, m: &HostMetrics, now_unix_ms: i64) -> Vec<AlertTransition> {
        self.observe_counters(m, now_unix_ms);
        let mut transitions = Vec::new();
        let mut held = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            for hit in self.hits(rule, m, now_unix_ms) {
                let key = (index, hit.subject);
                let state = self
                    .states
                    .entry(key.clone())
                    .or_insert_with(|| ActiveAlert {
                        rule: rule.name.clone(),
                        subject: key.1.clone(),
                        phase: AlertPhase::Pending,
                        since_unix_ms: now_unix_ms,
                        value: hit.value,
                        threshold: rule.threshold,
                        severity: rule.severity,
                        message: String::new(),
                    });
                state.value = hit.value;
                state.message = hit.message;
                let held_for = now_unix_ms.saturating_sub(state.since_unix_ms);
                let needed = i64::try_from(rule.for_duration.as_millis()).unwrap_or(i64::MAX);
                if state.phase == AlertPhase::Pending && held_for >= needed {
                    state.phase = AlertPhase::Firing;
                    state.since_unix_ms = now_unix_ms;
                    transitions.push(AlertTransition {
                        kind: TransitionKind::Firing,
                        at_unix_ms: now_unix_ms,
                        alert: state.clone(),
                    });
                }
                held.push(key);
            }
        }
        held.sort_unstable();
        self.states.retain(|key, state| {
            if held.binary_search(key).is_ok() {
                return true;
            }
            if state.phase == AlertPhase::Firing {
                transitions.push(AlertTransition {
                    kind: TransitionKind::Resolved,
                    at_unix_ms: now_unix_ms,
                    alert: state.clone(),
                });
            }
            false
        });
        transitions
    }

    /// Every pending and firing alert, ordered by rule then subject.
    pub fn states(&self) -> Vec<ActiveAlert> {
        self.states.values().cloned().collect()
    }

    /// The firing alerts, ordered by rule then subject.
    pub fn firing(&self) -> Vec<ActiveAlert> {
        self.states
            .values()
            .filter(|a| a.phase == AlertPhase::Firing)
            .cloned()
            .collect()
    }

    /// Updates the counter memories the OOM and network rules look back on.
    fn observe_counters(&mut self, m: &HostMetrics, now: i64) {
        if let Some(previous) = self.oom_total
            && m.oom_kills_total > previous
        {
            self.last_oom_kill_ms = Some(now);
        }
        // The first sample is a baseline: kills before the agent started are not news.
        self.oom_total = Some(m.oom_kills_total);

        let keep_ms = self
            .rules
            .iter()
            .filter(|r| r.condition == Condition::NetworkErrors)
            .map(|r| i64::try_from(r.window.as_millis()).unwrap_or(i64::MAX))
            .max();
        let Some(keep_ms) = keep_ms else { return };
        self.net_errors
            .retain(|name, _| m.networks.iter().any(|n| &n.interface == name));
        for net in &m.networks {
            let total = net.rx_errors_total.saturating_add(net.tx_errors_total);
            let samples = self.net_errors.entry(net.interface.clone()).or_default();
            if samples.back().is_some_and(|&(_, last)| total < last) {
                // The counters restarted (interface re-created): start over.
                samples.clear();
            }
            samples.push_back((now, total));
            while samples
                .front()
                .is_some_and(|&(t, _)| now.saturating_sub(t) > keep_ms)
            {
                samples.pop_front();
            }
        }
    }

    fn hits(&self, rule: &Rule, m: &HostMetrics, now: i64) -> Vec<Hit> {
        let t = rule.threshold;
        let mut hits = Vec::new();
        match rule.condition {
            Condition::FilesystemUsedPercent => {
                for fs in m.filesystems.iter().filter(|f| !f.readonly) {
                    let v = fs.used_percent;
                    if v > t {
                        hits.push(Hit {
                            subject: format!("filesystem:{}", fs.mountpoint),
                            value: v,
                            message: format!(
                                "filesystem {} is {v:.1}% full (threshold {t}%)",
                                fs.mountpoint
                            ),
                        });
                    }
                }
            }
            Condition::InodesUsedPercent => {
                for fs in m
                    .filesystems
                    .iter()
                    .filter(|f| !f.readonly && f.inodes_total > 0)
                {
                    let v = fs.inodes_used_percent;
                    if v > t {
                        hits.push(Hit {
                            subject: format!("filesystem:{}", fs.mountpoint),
                            value: v,
                            message: format!(
                                "filesystem {} has used {v:.1}% of its inodes (threshold {t}%)",
                                fs.mountpoint
                            ),
                        });
                    }
                }
            }
            Condition::MemoryAvailablePercent => {
                if let Some(mem) = m.memory.as_ref().filter(|mem| mem.total_bytes > 0) {
                    let v = mem.available_bytes as f64 * 100.0 / mem.total_bytes as f64;
                    if v < t {
                        hits.push(Hit {
                            subject: "memory".to_owned(),
                            value: v,
                            message: format!(
                                "only {v:.1}% of memory is available (threshold {t}%)"
                            ),
                        });
                    }
                }
            }
            Condition::LoadPerCore => {
                if let Some(cpu) = &m.cpu {
                    let cores = cpu.cores.len().max(1) as f64;
                    let v = cpu.load1 / cores;
                    if v > t {
                        hits.push(Hit {
                            subject: "load".to_owned(),
                            value: v,
                            message: format!(
                                "load average {:.2} is {v:.2} per core (threshold {t})",
                                cpu.load1
                            ),
                        });
                    }
                }
            }
            Condition::FdUsedPercent => {
                if let Some(fds) = m.fds.as_ref().filter(|f| f.max > 0) {
                    let v = fds.allocated as f64 * 100.0 / fds.max as f64;
                    if v > t {
                        hits.push(Hit {
                            subject: "fds".to_owned(),
                            value: v,
                            message: format!(
                                "{} of {} file descriptors allocated ({v:.1}%, threshold {t}%)",
                                fds.allocated, fds.max
                            ),
                        });
                    }
                }
            }
            Condition::OomKill => {
                let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
                if let Some(at) = self.last_oom_kill_ms
                    && now.saturating_sub(at) < window
                {
                    hits.push(Hit {
                        subject: "oom".to_owned(),
                        value: m.oom_kills_total as f64,
                        message: format!(
                            "the kernel OOM killer killed a process ({} kills since boot)",
                            m.oom_kills_total
                        ),
                    });
                }
            }
            Condition::NetworkErrors => {
                let window = i64::try_from(rule.window.as_millis()).unwrap_or(i64::MAX);
                for (name, samples) in &self.net_errors {
                    let newest = samples.back().map_or(0, |s| s.1);
                    let oldest = samples
                        .iter()
                        .find(|(at, _)| now.saturating_sub(*at) <= window)
                        .map_or(newest, |s| s.1);
                    let v = newest.saturating_sub(oldest) as f64;
                    if v > t {
                        hits.push(Hit {
                            subject: format!("network:{name}"),
                            value: v,
                            message: format!(
                                "interface {name}: {v} new receive/transmit errors within {}",
                                humantime::format_duration(rule.window)
                            ),
                        });
                    }
                }
            }
            Condition::SwapThrashing => {
                if let Some(mem) = &m.memory {
                    let (si, so) = (mem.swap_in_per_sec, mem.swap_out_per_sec);
                    if si > t && so > t {
                        hits.push(Hit {
                            subject: "swap".to_owned(),
                            value: si.min(so),
                            message: format!(
                                "swapping {si:.0} pages/s in and {so:.0} pages/s out (threshold {t})"
                            ),
                        });
                    }
                }
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{CpuMetrics, FilesystemMetrics, MemoryMetrics, NetworkMetrics};

    const S: i64 = 1_000;

    fn fs(mountpoint: &str, used_percent: f64) -> FilesystemMetrics {
        FilesystemMetrics {
            mountpoint: mountpoint.to_owned(),
            used_percent,
            ..Default::default()
        }
    }

    fn disks(filesystems: Vec<FilesystemMetrics>) -> HostMetrics {
        HostMetrics {
            filesystems,
            ..Default::default()
        }
    }

    fn engine(rules: &[(&str, Condition)]) -> AlertEngine {
        AlertEngine::new(
            rules
                .iter()
                .map(|(n, c)| Rule::with_defaults(*n, *c))
                .collect(),
        )
    }

    fn kinds(ts: &[AlertTransition]) -> Vec<(TransitionKind, String)> {
        ts.iter()
            .map(|t| (t.kind, t.alert.subject.clone()))
            .collect()
    }

    #[test]
    fn new_rules_keep_the_alerts_of_rules_that_stay_and_forget_the_others() {
        let mut e = engine(&[
            ("memory_high", Condition::MemoryAvailablePercent),
            ("filesystem_full", Condition::FilesystemUsedPercent),
        ]);
        let full = disks(vec![fs("/var", 95.0)]);
        e.evaluate(&full, 0);
        assert_eq!(e.evaluate(&full, 60 * S).len(), 1);
        // The rule moves to another index: it keeps firing, with no new transition.
        e.set_rules(vec![
            Rule::with_defaults("filesystem_full", Condition::FilesystemUsedPercent),
            Rule::with_defaults("load_high", Condition::LoadPerCore),
        ]);
        assert_eq!(e.firing().len(), 1);
        assert!(e.evaluate(&full, 61 * S).is_empty());
        e.set_rules(vec![Rule::with_defaults(
            "load_high",
            Condition::LoadPerCore,
        )]);
        assert!(e.states().is_empty());
        assert_eq!(e.rules().len(), 1);
    }

    #[test]
    fn pending_then_firing_after_for_then_resolved() {
        let mut e = engine(&[("filesystem_full", Condition::FilesystemUsedPercent)]);
        let full = disks(vec![fs("/var", 95.0)]);
        assert!(e.evaluate(&full, 0).is_empty());
        assert_eq!(e.states()[0].phase, AlertPhase::Pending);
        assert!(e.firing().is_empty());
        assert!(e.evaluate(&full, 59 * S).is_empty());
        let fired = e.evaluate(&full, 60 * S);
        assert_eq!(
            kinds(&fired),
            vec![(TransitionKind::Firing, "filesystem:/var".to_owned())]
        );
        let alert = &e.firing()[0];
        assert_eq!((alert.since_unix_ms, alert.value), (60 * S, 95.0));
        assert_eq!(alert.severity, AlertSeverity::Warning);
        assert!(
            alert.message.contains("/var is 95.0% full"),
            "{}",
            alert.message
        );
        // Still firing: no repeated transition.
        assert!(e.evaluate(&full, 61 * S).is_empty());
        let resolved = e.evaluate(&disks(vec![fs("/var", 50.0)]), 62 * S);
        assert_eq!(
            kinds(&resolved),
            vec![(TransitionKind::Resolved, "filesystem:/var".to_owned())]
        );
        assert!(e.states().is_empty());
        let draft = resolved[0].to_draft();
        assert_eq!(
            (draft.kind.as_str(), draft.severity),
            ("alert.resolved", Severity::Info)
        );
        assert_eq!(draft.fields["rule"], "filesystem_full");
        assert_eq!(fired[0].to_draft().kind, "alert.firing");
    }

    #[test]
    fn clearing_during_pending_never_fires() {
        let mut e = engine(&[("filesystem_full", Condition::FilesystemUsedPercent)]);
        let full = disks(vec![fs("/", 95.0)]);
        let ok = disks(vec![fs("/", 80.0)]);
        let mut all = Vec::new();
        all.extend(e.evaluate(&full, 0));
        all.extend(e.evaluate(&full, 30 * S));
        all.extend(e.evaluate(&ok, 45 * S));
        assert!(e.states().is_empty());
        // The clock restarts: 60 s after the first hit is not enough any more.
        all.extend(e.evaluate(&full, 50 * S));
        all.extend(e.evaluate(&full, 100 * S));
        assert!(all.is_empty(), "{all:?}");
        assert_eq!(e.evaluate(&full, 110 * S).len(), 1);
    }

    #[test]
    fn mountpoints_are_independent_and_vanishing_ones_resolve() {
        let mut e = engine(&[("filesystem_full", Condition::FilesystemUsedPercent)]);
        e.evaluate(&disks(vec![fs("/", 95.0), fs("/var", 50.0)]), 0);
        e.evaluate(&disks(vec![fs("/", 95.0), fs("/var", 96.0)]), 30 * S);
        let t = e.evaluate(&disks(vec![fs("/", 95.0), fs("/var", 96.0)]), 60 * S);
        assert_eq!(
            kinds(&t),
            vec![(TransitionKind::Firing, "filesystem:/".to_owned())]
        );
        let phases: Vec<_> = e
            .states()
            .into_iter()
            .map(|a| (a.subject, a.phase))
            .collect();
        assert_eq!(
            phases,
            vec![
                ("filesystem:/".to_owned(), AlertPhase::Firing),
                ("filesystem:/var".to_owned(), AlertPhase::Pending)
            ]
        );
        let t = e.evaluate(&disks(vec![fs("/", 95.0), fs("/var", 96.0)]), 90 * S);
        assert_eq!(
            kinds(&t),
            vec![(TransitionKind::Firing, "filesystem:/var".to_owned())]
        );
        // /var is unmounted while firing: it resolves, / keeps firing.
        let t = e.evaluate(&disks(vec![fs("/", 95.0)]), 91 * S);
        assert_eq!(
            kinds(&t),
            vec![(TransitionKind::Resolved, "filesystem:/var".to_owned())]
        );
        assert_eq!(e.firing().len(), 1);
        // Read-only filesystems are always full; they are not watched.
        let mut ro = fs("/snap", 100.0);
        ro.readonly = true;
        e.evaluate(&disks(vec![fs("/", 95.0), ro]), 92 * S);
        assert_eq!(e.states().len(), 1);
    }

    #[test]
    fn oom_kill_fires_at_once_and_resolves_after_a_quiet_window() {
        let mut e = engine(&[("oom_kill", Condition::OomKill)]);
        let kills = |n| HostMetrics {
            oom_kills_total: n,
            ..Default::default()
        };
        // Kills before the agent started are a baseline, not an alert.
        assert!(e.evaluate(&kills(3), 0).is_empty());
        assert!(e.evaluate(&kills(3), S).is_empty());
        let t = e.evaluate(&kills(4), 2 * S);
        assert_eq!(kinds(&t), vec![(TransitionKind::Firing, "oom".to_owned())]);
        // Another kill later extends the alert.
        assert!(e.evaluate(&kills(5), 200 * S).is_empty());
        assert!(e.evaluate(&kills(5), 499 * S).is_empty());
        let t = e.evaluate(&kills(5), 500 * S);
        assert_eq!(
            kinds(&t),
            vec![(TransitionKind::Resolved, "oom".to_owned())]
        );
    }

    #[test]
    fn memory_load_and_swap_rules() {
        let mut e = engine(&[
            ("memory_low", Condition::MemoryAvailablePercent),
            ("load_high", Condition::LoadPerCore),
            ("swap_thrashing", Condition::SwapThrashing),
        ]);
        let m = HostMetrics {
            memory: Some(MemoryMetrics {
                total_bytes: 1000,
                available_bytes: 50,
                swap_in_per_sec: 500.0,
                swap_out_per_sec: 50.0, // only one direction: not thrashing
                ..Default::default()
            }),
            cpu: Some(CpuMetrics {
                load1: 4.5,
                cores: vec![Default::default(), Default::default()],
                ..Default::default()
            }),
            ..Default::default()
        };
        e.evaluate(&m, 0);
        let subjects: Vec<_> = e
            .states()
            .into_iter()
            .map(|a| (a.subject, a.value))
            .collect();
        assert_eq!(
            subjects,
            vec![("memory".to_owned(), 5.0), ("load".to_owned(), 2.25)]
        );
        let t = e.evaluate(&m, 120 * S);
        assert_eq!(
            kinds(&t),
            vec![(TransitionKind::Firing, "memory".to_owned())]
        );
        let t = e.evaluate(&m, 300 * S);
        assert_eq!(kinds(&t), vec![(TransitionKind::Firing, "load".to_owned())]);
    }

    #[test]
    fn network_errors_fire_while_rising() {
        let mut e = engine(&[("network_errors", Condition::NetworkErrors)]);
        let nets = |eth0: u64, eth1: u64| HostMetrics {
            networks: vec![
                NetworkMetrics {
                    interface: "eth0".into(),
                    rx_errors_total: eth0,
                    ..Default::default()
                },
                NetworkMetrics {
                    interface: "eth1".into(),
                    tx_errors_total: eth1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let mut fired = Vec::new();
        for s in 0..=121 {
            fired.extend(e.evaluate(&nets(100 + s as u64, 7), s * S));
        }
        assert_eq!(
            kinds(&fired),
            vec![(TransitionKind::Firing, "network:eth0".to_owned())]
        );
        // Errors stop rising: once the window has no increase the alert resolves.
        let mut resolved = Vec::new();
        for s in 122..=242 {
            resolved.extend(e.evaluate(&nets(221, 7), s * S));
        }
        assert_eq!(
            kinds(&resolved),
            vec![(TransitionKind::Resolved, "network:eth0".to_owned())]
        );
    }

    #[test]
    fn config_overrides_disables_and_adds_rules() {
        let cfg: AlertsConfig = toml::from_str(
            r#"
            [[rules]]
            name = "filesystem_full"
            threshold = 85.0
            for = "5m"

            [[rules]]
            name = "load_high"
            enabled = false

            [[rules]]
            name = "disk_critical"
            condition = "filesystem_used_percent"
            threshold = 97
            severity = "critical"
            "#,
        )
        .unwrap();
        let rules = cfg.rules().unwrap();
        let fs_rule = rules.iter().find(|r| r.name == "filesystem_full").unwrap();
        assert_eq!(fs_rule.threshold, 85.0);
        assert_eq!(fs_rule.for_duration, Duration::from_secs(300));
        assert_eq!(fs_rule.severity, AlertSeverity::Warning);
        assert!(!rules.iter().any(|r| r.name == "load_high"));
        let crit = rules.iter().find(|r| r.name == "disk_critical").unwrap();
        assert_eq!(
            (crit.threshold, crit.severity),
            (97.0, AlertSeverity::Critical)
        );
        assert_eq!(crit.for_duration, Duration::from_secs(60));
        assert_eq!(rules.len(), DEFAULT_RULES.len());

        let defaults = AlertsConfig::default().rules().unwrap();
        assert_eq!(defaults.len(), 8);
        let none = AlertsConfig {
            defaults: false,
            rules: vec![],
        }
        .rules()
        .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn config_errors_name_the_field() {
        let bad_duration = toml::from_str::<AlertsConfig>(
            "[[rules]]\nname = \"filesystem_full\"\nfor = \"5 parsecs\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad_duration.contains("for = \"5 parsecs\""),
            "{bad_duration}"
        );
        assert!(
            bad_duration.contains("invalid duration `5 parsecs`"),
            "{bad_duration}"
        );

        let unknown = toml::from_str::<AlertsConfig>("[[rules]]\nname = \"x\"\ntreshold = 3\n")
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("unknown field `treshold`"), "{unknown}");

        let bad_severity =
            toml::from_str::<AlertsConfig>("[[rules]]\nname = \"x\"\nseverity = \"page\"\n")
                .unwrap_err()
                .to_string();
        assert!(bad_severity.contains("severity"), "{bad_severity}");

        let no_condition = AlertsConfig {
            defaults: true,
            rules: vec![RuleConfig {
                name: "mine".into(),
                ..Default::default()
            }],
        };
        let err = no_condition.rules().unwrap_err().to_string();
        assert!(
            err.contains("`mine`") && err.contains("`condition`"),
            "{err}"
        );

        let out_of_range = AlertsConfig {
            defaults: true,
            rules: vec![RuleConfig {
                name: "memory_low".into(),
                threshold: Some(150.0),
                ..Default::default()
            }],
        };
        let err = out_of_range.rules().unwrap_err().to_string();
        assert!(
            err.contains("`memory_low`") && err.contains("`threshold` 150"),
            "{err}"
        );
    }
}
