//! Service commands that read: services, service, logs; and the `--wait` flags of the
//! changes that converge (the changes themselves are [`crate::client::ops`]).

use super::{OutputFormat, out, print_as};
use crate::client::connect::call;
use crate::client::ops::Target;
use crate::client::{Client, Failure, converge};
use crate::format::{bytes, table, time_ms, uptime};
use clap::Args;
use std::time::Duration;
use strata_proto::v1::{
    GetServiceRequest, InstanceStatus, ListServicesReply, ListServicesRequest, LogLine,
    ServiceStatus, TailLogsRequest,
};

/// Flags of `strata logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// NAME for every instance merged, NAME/INDEX for one.
    #[arg(value_parser = Target::parse, add = super::names::services())]
    target: Target,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many past lines.
    #[arg(long, short = 'n', visible_alias = "tail", default_value_t = 100)]
    lines: u32,
    /// Only lines matching this regular expression.
    #[arg(long)]
    grep: Option<String>,
}

/// `--wait [--timeout D]` of the actions that converge.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return only when every instance runs and passes its health check (exit 1 with the
    /// instances that do not, after --timeout).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, e.g. "60s", "2m".
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 2m)"))
}

impl WaitArgs {
    /// Waits, when `--wait` was given, until `target` on `node` has converged.
    pub async fn wait(
        &self,
        client: &mut Client,
        agent: &str,
        node: &str,
        target: &Target,
    ) -> Result<(), Failure> {
        if !self.wait {
            return Ok(());
        }
        converge::wait(client, agent, node, target, self.timeout).await
    }
}

/// `strata services`.
pub async fn list(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
) -> Result<(), Failure> {
    let reply = call(
        client.list_services(ListServicesRequest {
            node: node.to_string(),
        }),
        agent,
    )
    .await?;
    print_as(output, &reply, render_services)
}

/// The services table.
pub fn render_services(reply: &ListServicesReply) -> String {
    if reply.services.is_empty() {
        return format!("No services. (isolation: {})", reply.isolation);
    }
    let mut t = table(&[
        "name",
        "version",
        "instances",
        "passing",
        "state",
        "frontend",
        "restarts",
        "health check",
    ]);
    for s in &reply.services {
        let running = s.live_instances();
        let frontend: Vec<String> = s.frontend_ports.values().map(u32::to_string).collect();
        t.add_row(vec![
            s.name.clone(),
            s.version.clone(),
            format!("{running}/{}", s.desired_instances),
            format!("{}/{}", s.passing, s.instances.len()),
            if s.unmanaged.is_empty() {
                s.summary_state().to_string()
            } else {
                "unmanaged".to_string()
            },
            if frontend.is_empty() {
                "-".into()
            } else {
                frontend.join(",")
            },
            s.restarts.to_string(),
            s.health_check.clone(),
        ]);
    }
    t.to_string()
}

/// `strata service NAME`.
pub async fn show(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    name: &str,
) -> Result<(), Failure> {
    let status = call(
        client.get_service(GetServiceRequest {
            node: node.to_string(),
            name: name.to_string(),
        }),
        agent,
    )
    .await?;
    print_as(output, &status, render_service)
}

/// A service's header lines and its instances table.
pub fn render_service(s: &ServiceStatus) -> String {
    let mut out = vec![
        format!("Service:    {} {}", s.name, s.version),
        format!("Node:       {}", s.node),
        format!("Source:     {}", s.source),
        format!(
            "Instances:  {} desired, {} passing{}",
            s.desired_instances,
            s.passing,
            if s.stopped {
                ", stopped by an operator"
            } else {
                ""
            }
        ),
        format!("Health:     {}", s.health_check),
    ];
    if !s.unmanaged.is_empty() {
        out.push(format!("Unmanaged:  {}", s.unmanaged));
    }
    if !s.frontend_ports.is_empty() {
        let ports: Vec<String> = s
            .frontend_ports
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push(format!("Frontend:   {}", ports.join(", ")));
    }
    out.push(String::new());
    out.push(render_instances(&s.instances));
    out.join("\n")
}

fn render_instances(instances: &[InstanceStatus]) -> String {
    let now = crate::format::now_ms();
    let mut t = table(&[
        "instance",
        "state",
        "health",
        "pid",
        "ports",
        "cpu%",
        "rss",
        "uptime",
        "restarts",
        "last exit / reason",
    ]);
    for i in instances {
        let ports: Vec<String> = i.ports.values().map(u32::to_string).collect();
        let up = if i.pid > 0 && i.started_unix_ms > 0 {
            uptime(((now - i.started_unix_ms).max(0) / 1000) as u64)
        } else {
            "-".into()
        };
        let note = if !i.reason.is_empty() {
            i.reason.clone()
        } else {
            i.last_exit
                .as_ref()
                .map(|e| format!("{} at {}", e.description, time_ms(e.time_unix_ms)))
                .unwrap_or_default()
        };
        t.add_row(vec![
            i.id.clone(),
            i.state().to_string(),
            i.health().to_string(),
            if i.pid > 0 {
                i.pid.to_string()
            } else {
                "-".into()
            },
            ports.join(","),
            format!("{:.1}", i.cpu_percent),
            bytes(i.rss_bytes),
            up,
            i.restarts.to_string(),
            note,
        ]);
    }
    t.to_string()
}

/// `strata logs NAME[/INDEX] [-f] [--lines N] [--grep RE]`: JSON is one line object per line.
pub async fn logs(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    args: LogsArgs,
) -> Result<(), Failure> {
    let mut stream = call(
        client.tail_logs(TailLogsRequest {
            node: node.to_string(),
            service: args.target.service.clone(),
            instance: args.target.instance,
            lines: args.lines,
            follow: args.follow,
            grep: args.grep.unwrap_or_default(),
        }),
        agent,
    )
    .await?;
    let prefix = args.target.instance == 0;
    loop {
        match stream.message().await {
            Ok(Some(line)) => match output {
                OutputFormat::Json => out::json_line(&line)?,
                OutputFormat::Table => out::line(log_text(&line, prefix))?,
            },
            Ok(None) => return Ok(()),
            Err(status) => return Err(Failure::from_status(&status, agent)),
        }
    }
}

/// One line of `strata logs` as text: `[instance] time text` (the instance only when several
/// are merged); a gap, where the agent passed lines over, as `[instance] … N lines skipped …`.
fn log_text(line: &LogLine, prefix: bool) -> String {
    let instance = if prefix {
        format!("[{}] ", line.instance)
    } else {
        String::new()
    };
    match &line.gap {
        Some(gap) => format!("{instance}{}", gap.describe()),
        None => format!("{instance}{} {}", time_ms(line.time_unix_ms), line.text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::InstanceState;

    #[test]
    fn service_state_shows_the_worst_instance() {
        let inst = |state: InstanceState| InstanceStatus {
            state: state as i32,
            ..Default::default()
        };
        let s = ServiceStatus {
            instances: vec![inst(InstanceState::Running), inst(InstanceState::Crashloop)],
            ..Default::default()
        };
        assert_eq!(s.summary_state(), InstanceState::Crashloop);
        let s = ServiceStatus { stopped: true, ..s };
        assert_eq!(s.summary_state(), InstanceState::Stopped);
    }

    #[test]
    fn a_gap_prints_its_count_where_a_line_prints_its_time_and_text() {
        let line = LogLine {
            time_unix_ms: 1_795_000_000_000,
            instance: "web/1".into(),
            text: "hello".into(),
            ..Default::default()
        };
        assert_eq!(log_text(&line, false), "2026-11-18T11:06:40Z hello");
        assert_eq!(log_text(&line, true), "[web/1] 2026-11-18T11:06:40Z hello");
        let gap = LogLine {
            text: "whatever the agent says".into(),
            gap: Some(strata_proto::v1::LogGap {
                lines: 10_482_113,
                uncounted: false,
            }),
            ..line
        };
        assert_eq!(log_text(&gap, true), "[web/1] … 10,482,113 lines skipped …");
        assert_eq!(log_text(&gap, false), "… 10,482,113 lines skipped …");
    }
}
