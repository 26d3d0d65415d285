//! What applying a new spec to a running service means, decided in one pure function.
//!
//! [`plan_apply`] destructures both specs field by field, so a field added to
//! [`ServiceSpec`] does not compile until someone decides here what a change of it means:
//! - [`Effect::Restart`]: the running processes must be replaced (a rolling restart):
//!   what they were started with (command, environment, ports they bind, limits, version);
//! - [`Effect::Live`]: the instance tasks take it at once, without a restart (health
//!   checks, restart policy, stop settings, update policy, log rotation);
//! - [`Effect::Catalog`]: only what the catalog publishes changes (tags, frontends,
//!   balancing), which every balancer and DNS server picks up from gossip;
//! - [`Effect::Scale`]: the number of instances.

use super::spec::{BalanceSpec, PortSpec, ServiceSpec};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a change of one field takes to come into effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// The instances restart, one at a time, each waiting for the previous to pass.
    Restart,
    /// The instance tasks use it from now on; nothing restarts.
    Live,
    /// Only the catalog record changes.
    Catalog,
    /// Instances are added or removed.
    Scale,
}

/// One changed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The spec field, as written in `strata.toml` ("command", "health", "balance").
    pub field: &'static str,
    /// What changed, for people ("2 -> 3", "changed").
    pub detail: String,
    pub effect: Effect,
}

/// Everything that differs between a running spec and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the running processes must be replaced.
    pub fn needs_restart(&self) -> bool {
        self.has(Effect::Restart)
    }

    /// Whether any change has `effect`.
    pub fn has(&self, effect: Effect) -> bool {
        self.changes.iter().any(|c| c.effect == effect)
    }

    /// The changes, one line each ("version: 1 -> 2"), then which of them need no restart.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .changes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.detail))
            .collect();
        let live: Vec<&str> = self
            .changes
            .iter()
            .filter(|c| matches!(c.effect, Effect::Live | Effect::Catalog))
            .map(|c| c.field)
            .collect();
        if !live.is_empty() && !self.needs_restart() {
            lines.push(format!("no restart: {} take effect live", live.join(", ")));
        }
        lines
    }

    fn add(&mut self, field: &'static str, differs: bool, effect: Effect, detail: String) {
        if differs {
            self.changes.push(Change {
                field,
                detail,
                effect,
            });
        }
    }
}

/// What applying `new` over the running `old` changes, and how each change takes effect.
pub fn plan_apply(old: &ServiceSpec, new: &ServiceSpec) -> Plan {
    let ServiceSpec {
        name: _,
        version,
        command,
        instances,
        env,
        workdir,
        tags,
        ports,
        health,
        restart,
        stop,
        update,
        resources,
        logs,
        balance,
    } = new;
    let mut plan = Plan::default();
    plan.add(
        "version",
        *version != old.version,
        Effect::Restart,
        format!("{} -> {}", old.version, version),
    );
    plan.add(
        "command",
        *command != old.command,
        Effect::Restart,
        format!("{:?} -> {:?}", old.command, command),
    );
    plan.add(
        "instances",
        *instances != old.instances,
        Effect::Scale,
        format!("{} -> {}", old.instances, instances),
    );
    plan.add("env", *env != old.env, Effect::Restart, "changed".into());
    plan.add(
        "workdir",
        *workdir != old.workdir,
        Effect::Restart,
        format!("{:?} -> {:?}", old.workdir, workdir),
    );
    plan.add(
        "tags",
        *tags != old.tags,
        Effect::Catalog,
        format!("{:?} -> {:?}", old.tags, tags),
    );
    plan_ports(&mut plan, &old.ports, ports);
    plan.add(
        "health",
        *health != old.health,
        Effect::Live,
        "changed".into(),
    );
    plan.add(
        "restart",
        *restart != old.restart,
        Effect::Live,
        "changed".into(),
    );
    plan.add("stop", *stop != old.stop, Effect::Live, "changed".into());
    plan.add(
        "update",
        *update != old.update,
        Effect::Live,
        "changed".into(),
    );
    plan.add(
        "resources",
        *resources != old.resources,
        Effect::Restart,
        "changed".into(),
    );
    plan.add("logs", *logs != old.logs, Effect::Live, "changed".into());
    plan.add(
        "balance",
        *balance != old.balance,
        Effect::Catalog,
        balance_changes(&old.balance, balance),
    );
    plan
}

/// The `[balance]` fields that differ, as "algorithm p2c_ewma -> round_robin, idle_timeout
/// 1h -> 5m". Destructured so that a new field does not compile until it is listed.
fn balance_changes(old: &BalanceSpec, new: &BalanceSpec) -> String {
    let BalanceSpec {
        algorithm,
        prefer_local,
        connect_timeout,
        retries,
        slow_start,
        max_conns,
        max_queue,
        queue_timeout,
        idle_timeout,
        response_timeout,
    } = new;
    let mut changes = Vec::new();
    let mut field = |name: &str, was: String, now: String| {
        if was != now {
            changes.push(format!("{name} {was} -> {now}"));
        }
    };
    let time = |d: &Duration| humantime::format_duration(*d).to_string();
    field(
        "algorithm",
        old.algorithm.to_string(),
        algorithm.to_string(),
    );
    field(
        "prefer_local",
        old.prefer_local.to_string(),
        prefer_local.to_string(),
    );
    field(
        "connect_timeout",
        time(&old.connect_timeout),
        time(connect_timeout),
    );
    field("retries", old.retries.to_string(), retries.to_string());
    field("slow_start", time(&old.slow_start), time(slow_start));
    field(
        "max_conns",
        old.max_conns.to_string(),
        max_conns.to_string(),
    );
    field(
        "max_queue",
        old.max_queue.to_string(),
        max_queue.to_string(),
    );
    field(
        "queue_timeout",
        time(&old.queue_timeout),
        time(queue_timeout),
    );
    field("idle_timeout", time(&old.idle_timeout), time(idle_timeout));
    field(
        "response_timeout",
        time(&old.response_timeout),
        time(response_timeout),
    );
    changes.join(", ")
}

/// Named ports: a port added or removed changes what every instance binds (a restart); a
/// frontend moved only changes where balancers listen (the catalog).
fn plan_ports(plan: &mut Plan, old: &BTreeMap<String, PortSpec>, new: &BTreeMap<String, PortSpec>) {
    let names_differ = !old.keys().eq(new.keys());
    plan.add(
        "ports",
        names_differ,
        Effect::Restart,
        format!(
            "{:?} -> {:?}",
            old.keys().collect::<Vec<_>>(),
            new.keys().collect::<Vec<_>>()
        ),
    );
    if names_differ {
        return;
    }
    let frontends = |ports: &BTreeMap<String, PortSpec>| -> Vec<String> {
        ports
            .iter()
            .filter_map(|(name, p)| {
                let PortSpec { frontend } = p;
                frontend.map(|f| format!("{name}:{f}"))
            })
            .collect()
    };
    let (before, after) = (frontends(old), frontends(new));
    plan.add(
        "ports",
        before != after,
        Effect::Catalog,
        format!("frontends {before:?} -> {after:?}"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::spec::parse_spec;

    const BASE: &str = r#"
name = "web"
version = "1"
command = ["/bin/sleep", "100"]
instances = 2
env = { A = "1" }
workdir = "/tmp"
tags = ["blue"]
[ports.http]
frontend = 18080
[health]
http = "/health"
[restart]
policy = "always"
[stop]
timeout = "10s"
[resources]
memory_max = "64MiB"
[logs]
keep = 5
[balance]
algorithm = "p2c_ewma"
"#;

    fn spec(text: &str) -> ServiceSpec {
        parse_spec("t.toml", text).unwrap()
    }

    /// The plan of BASE against BASE with one line replaced.
    fn change(from: &str, to: &str) -> Plan {
        assert!(BASE.contains(from), "{from}");
        plan_apply(&spec(BASE), &spec(&BASE.replace(from, to)))
    }

    fn only(plan: &Plan, field: &str, effect: Effect) {
        assert_eq!(plan.changes.len(), 1, "{plan:?}");
        assert_eq!(plan.changes[0].field, field);
        assert_eq!(plan.changes[0].effect, effect, "{plan:?}");
    }

    #[test]
    fn an_identical_spec_plans_nothing() {
        let plan = plan_apply(&spec(BASE), &spec(BASE));
        assert!(plan.is_empty());
        assert!(!plan.needs_restart());
    }

    #[test]
    fn version_restarts() {
        only(
            &change("version = \"1\"", "version = \"2\""),
            "version",
            Effect::Restart,
        );
    }

    #[test]
    fn command_restarts() {
        let plan = change("\"100\"]", "\"200\"]");
        only(&plan, "command", Effect::Restart);
        assert!(plan.needs_restart());
    }

    #[test]
    fn instances_scale() {
        let plan = change("instances = 2", "instances = 5");
        only(&plan, "instances", Effect::Scale);
        assert!(!plan.needs_restart());
        assert_eq!(plan.lines(), vec!["instances: 2 -> 5".to_string()]);
    }

    #[test]
    fn env_restarts() {
        only(&change("A = \"1\"", "A = \"2\""), "env", Effect::Restart);
    }

    #[test]
    fn workdir_restarts() {
        only(
            &change("workdir = \"/tmp\"", "workdir = \"/var\""),
            "workdir",
            Effect::Restart,
        );
    }

    #[test]
    fn tags_are_catalog_only() {
        only(
            &change("[\"blue\"]", "[\"green\"]"),
            "tags",
            Effect::Catalog,
        );
    }

    #[test]
    fn a_new_port_restarts_and_a_moved_frontend_is_catalog_only() {
        only(
            &change("[ports.http]", "[ports.admin]\n[ports.http]"),
            "ports",
            Effect::Restart,
        );
        let moved = change("frontend = 18080", "frontend = 18090");
        only(&moved, "ports", Effect::Catalog);
        assert!(
            moved.lines()[0].contains("http:18090"),
            "{:?}",
            moved.lines()
        );
    }

    #[test]
    fn health_is_live() {
        only(
            &change("http = \"/health\"", "http = \"/ready\""),
            "health",
            Effect::Live,
        );
    }

    #[test]
    fn restart_policy_is_live() {
        only(
            &change("policy = \"always\"", "policy = \"on-failure\""),
            "restart",
            Effect::Live,
        );
    }

    #[test]
    fn stop_settings_are_live() {
        only(
            &change("timeout = \"10s\"", "timeout = \"20s\""),
            "stop",
            Effect::Live,
        );
    }

    #[test]
    fn the_update_policy_is_live() {
        let plan = change("[resources]", "[update]\nsurge = 2\n[resources]");
        only(&plan, "update", Effect::Live);
        assert!(!plan.needs_restart());
        assert_eq!(
            plan.lines(),
            ["update: changed", "no restart: update take effect live"]
        );
    }

    #[test]
    fn resources_restart() {
        only(
            &change("\"64MiB\"", "\"128MiB\""),
            "resources",
            Effect::Restart,
        );
    }

    #[test]
    fn logs_are_live() {
        only(&change("keep = 5", "keep = 9"), "logs", Effect::Live);
    }

    #[test]
    fn balance_is_catalog_only() {
        let plan = change("\"p2c_ewma\"", "\"round_robin\"");
        only(&plan, "balance", Effect::Catalog);
        assert_eq!(
            plan.lines(),
            [
                "balance: algorithm p2c_ewma -> round_robin",
                "no restart: balance take effect live"
            ]
        );
        let plan = change(
            "algorithm = \"p2c_ewma\"",
            "algorithm = \"p2c_ewma\"\nidle_timeout = \"5m\"\nmax_conns = 8",
        );
        only(&plan, "balance", Effect::Catalog);
        assert_eq!(
            plan.lines()[0],
            "balance: max_conns 0 -> 8, idle_timeout 1h -> 5m"
        );
    }

    #[test]
    fn several_changes_are_each_listed() {
        let text = BASE
            .replace("instances = 2", "instances = 3")
            .replace("\"100\"]", "\"1\"]")
            .replace("[\"blue\"]", "[]");
        let plan = plan_apply(&spec(BASE), &spec(&text));
        let fields: Vec<_> = plan.changes.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["command", "instances", "tags"]);
        assert!(plan.needs_restart() && plan.has(Effect::Scale) && plan.has(Effect::Catalog));
    }
}
