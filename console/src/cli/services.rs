//! Service commands: apply, services, service, start/stop/restart, scale, signal, remove, logs.

use super::{OutputFormat, print_as, print_json};
use crate::client::{Client, Failure, FailureKind};
use crate::format::{bytes, table, time_ms, uptime};
use clap::Args;
use std::time::{Duration, Instant};
use strata_proto::v1::control_service_request::Action as ControlAction;
use strata_proto::v1::{
    ApplySpecRequest, ControlServiceRequest, GetServiceRequest, InstanceState, InstanceStatus,
    ListServicesReply, ListServicesRequest, RemoveServiceRequest, ServiceStatus, TailLogsRequest,
};

/// A service, or one of its instances: `web` or `web/2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    /// 0 means every instance.
    pub instance: u32,
}

/// Parses `NAME` or `NAME/INDEX`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (service, instance) = match text.split_once('/') {
        None => (text, 0),
        Some((service, index)) => match index.parse::<u32>() {
            Ok(i) if i > 0 => (service, i),
            _ => {
                return Err(format!(
                    "{text:?}: the instance after '/' must be a number from 1"
                ));
            }
        },
    };
    if service.is_empty() {
        return Err(format!("{text:?}: no service name"));
    }
    Ok(Target {
        service: service.to_string(),
        instance,
    })
}

/// Flags of `strata logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// NAME for every instance merged, NAME/INDEX for one.
    #[arg(value_parser = parse_target)]
    target: Target,
    /// Keep printing new lines as they are written.
    #[arg(short = 'f', long)]
    follow: bool,
    /// How many past lines.
    #[arg(long, short = 'n', default_value_t = 100)]
    lines: u32,
    /// Only lines matching this regular expression.
    #[arg(long)]
    grep: Option<String>,
}

fn status_failure(agent: &str) -> impl Fn(tonic::Status) -> Failure + '_ {
    move |s| Failure::from_status(&s, agent)
}

/// `strata apply FILE [--dry-run]`.
pub async fn apply(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    file: &std::path::Path,
    dry_run: bool,
) -> Result<String, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Failure::new(
            FailureKind::Usage,
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let reply = client
        .apply_spec(ApplySpecRequest {
            node: node.to_string(),
            spec_toml: text,
            source: file.display().to_string(),
            dry_run,
        })
        .await
        .map_err(status_failure(agent))?
        .into_inner();
    match output {
        OutputFormat::Json => print_json(&reply)?,
        OutputFormat::Table => {
            let verb = if reply.applied {
                ""
            } else {
                " (dry run: nothing applied)"
            };
            println!("service {}: {}{verb}", reply.service, reply.action);
            for change in &reply.changes {
                println!("  {change}");
            }
        }
    }
    Ok(reply.service)
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

/// Whether an instance counts as converged: running, and passing when it has a health check.
pub fn instance_ready(instance: &InstanceStatus, has_check: bool) -> bool {
    instance.state() == InstanceState::Running && (!has_check || instance.health().is_passing())
}

/// Waits (when `--wait` was given) until every instance of `service` (or the one given)
/// runs and passes, polling the agent; fails naming the instances that do not.
pub async fn wait_if(
    client: &mut Client,
    agent: &str,
    node: &str,
    wait: &WaitArgs,
    service: &str,
    instance: u32,
) -> Result<(), Failure> {
    if !wait.wait {
        return Ok(());
    }
    let deadline = Instant::now() + wait.timeout;
    loop {
        let status = client
            .get_service(GetServiceRequest {
                node: node.to_string(),
                name: service.to_string(),
            })
            .await
            .map_err(status_failure(agent))?
            .into_inner();
        let has_check = status.health_check != "none";
        let version_ok = |i: &InstanceStatus| instance != 0 || i.version == status.version;
        let waiting: Vec<String> = status
            .instances
            .iter()
            .filter(|i| instance == 0 || i.index == instance)
            .filter(|i| !(instance_ready(i, has_check) && version_ok(i)))
            .map(|i| format!("{} is {}/{}", i.id, i.state(), i.health()))
            .collect();
        let complete = instance != 0 || status.desired_instances as usize == status.instances.len();
        if waiting.is_empty() && complete {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why = if waiting.is_empty() {
                "instances are still being added or removed".to_string()
            } else {
                waiting.join(", ")
            };
            return Err(Failure::new(
                FailureKind::ActionFailed,
                format!(
                    "{service} did not converge within {}: {why}",
                    humantime::format_duration(wait.timeout)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `strata services`.
pub async fn list(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
) -> Result<(), Failure> {
    let reply = client
        .list_services(ListServicesRequest {
            node: node.to_string(),
        })
        .await
        .map_err(status_failure(agent))?
        .into_inner();
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
            s.summary_state().to_string(),
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
    let status = client
        .get_service(GetServiceRequest {
            node: node.to_string(),
            name: name.to_string(),
        })
        .await
        .map_err(status_failure(agent))?
        .into_inner();
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

/// The request for `strata start|stop|restart|scale|signal`.
pub fn control_request(
    node: &str,
    target: &Target,
    action: ControlAction,
) -> ControlServiceRequest {
    ControlServiceRequest {
        node: node.to_string(),
        service: target.service.clone(),
        instance: target.instance,
        action: Some(action),
    }
}

/// `strata start|stop|restart|scale|signal`.
pub async fn control(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    request: ControlServiceRequest,
) -> Result<(), Failure> {
    let reply = client
        .control_service(request)
        .await
        .map_err(status_failure(agent))?
        .into_inner();
    print_as(output, &reply, |reply| reply.message.clone())
}

/// `strata remove NAME`.
pub async fn remove(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    name: &str,
) -> Result<(), Failure> {
    let reply = client
        .remove_service(RemoveServiceRequest {
            node: node.to_string(),
            name: name.to_string(),
        })
        .await
        .map_err(status_failure(agent))?
        .into_inner();
    print_as(output, &reply, |reply| {
        format!(
            "service {} removed ({} instance(s) stopped)",
            reply.service, reply.stopped_instances
        )
    })
}

/// `strata logs NAME[/INDEX] [-f] [--lines N] [--grep RE]`: JSON is one line object per line.
pub async fn logs(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    args: LogsArgs,
) -> Result<(), Failure> {
    let mut stream = client
        .tail_logs(TailLogsRequest {
            node: node.to_string(),
            service: args.target.service.clone(),
            instance: args.target.instance,
            lines: args.lines,
            follow: args.follow,
            grep: args.grep.unwrap_or_default(),
        })
        .await
        .map_err(status_failure(agent))?
        .into_inner();
    let prefix = args.target.instance == 0;
    loop {
        match stream.message().await {
            Ok(Some(line)) => match output {
                OutputFormat::Json => {
                    let text = serde_json::to_string(&line).map_err(|e| {
                        Failure::new(
                            FailureKind::ActionFailed,
                            format!("cannot encode JSON: {e}"),
                        )
                    })?;
                    println!("{text}");
                }
                OutputFormat::Table if prefix => println!(
                    "[{}] {} {}",
                    line.instance,
                    time_ms(line.time_unix_ms),
                    line.text
                ),
                OutputFormat::Table => println!("{} {}", time_ms(line.time_unix_ms), line.text),
            },
            Ok(None) => return Ok(()),
            Err(status) => return Err(Failure::from_status(&status, agent)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_service_and_instance() {
        assert_eq!(
            parse_target("web").unwrap(),
            Target {
                service: "web".into(),
                instance: 0
            }
        );
        assert_eq!(
            parse_target("web/2").unwrap(),
            Target {
                service: "web".into(),
                instance: 2
            }
        );
        assert!(parse_target("web/0").is_err());
        assert!(parse_target("web/x").is_err());
        assert!(parse_target("/1").is_err());
    }

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
}
