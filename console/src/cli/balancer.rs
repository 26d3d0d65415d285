//! `strata balancer` and `strata access-log`: the local balancer's figures and connections.

use super::{OutputFormat, out, print_as};
use crate::client::connect::call;
use crate::client::{Client, Failure};
use crate::format::{bytes, table};
use strata_proto::v1::{AccessRecord, BalancerReply, GetBalancerRequest, TailAccessLogRequest};

/// `strata balancer`.
pub async fn balancer(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
) -> Result<(), Failure> {
    let reply = call(
        client.get_balancer(GetBalancerRequest {
            node: node.to_string(),
        }),
        agent,
    )
    .await?;
    print_as(output, &reply, render_balancer)
}

/// One block per service: its listeners, then one row per instance.
pub fn render_balancer(reply: &BalancerReply) -> String {
    if reply.services.is_empty() {
        return "No services with a frontend port.".to_string();
    }
    let mut blocks = Vec::new();
    for s in &reply.services {
        let listeners: Vec<String> = s
            .listeners
            .iter()
            .map(|l| format!("{} :{} {} ({})", l.port_name, l.port, l.state, l.detail))
            .collect();
        let mut t = table(&[
            "instance", "node", "address", "active", "total", "failures", "in", "out", "latency",
            "state",
        ]);
        for e in &s.endpoints {
            let state = if !e.ejected_until.is_empty() {
                format!("ejected until {}", e.ejected_until)
            } else if e.draining {
                "draining".into()
            } else {
                "ok".into()
            };
            t.add_row(vec![
                e.instance.clone(),
                e.node.clone(),
                e.ip.clone(),
                e.active.to_string(),
                e.total.to_string(),
                e.failures.to_string(),
                bytes(e.bytes_in),
                bytes(e.bytes_out),
                format!("{:.2} ms", e.connect_latency_ewma_ms),
                state,
            ]);
        }
        blocks.push(format!(
            "{} ({}{}): {} active, {} total, {} without a healthy instance\n  {}\n{t}",
            s.name,
            s.algorithm,
            if s.prefer_local { ", prefer local" } else { "" },
            s.active,
            s.total,
            s.no_healthy_instance,
            listeners.join("; ")
        ));
    }
    blocks.join("\n\n")
}

/// `strata access-log [SERVICE] [-f] [--lines N]`: JSON is one record per line.
pub async fn access_log(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    service: Option<String>,
    lines: u32,
    follow: bool,
) -> Result<(), Failure> {
    let mut stream = call(
        client.tail_access_log(TailAccessLogRequest {
            node: node.to_string(),
            service: service.unwrap_or_default(),
            lines,
            follow,
        }),
        agent,
    )
    .await?;
    loop {
        match stream.message().await {
            Ok(Some(record)) => match output {
                OutputFormat::Json => out::json_line(&record)?,
                OutputFormat::Table => out::line(access_line(&record))?,
            },
            Ok(None) => return Ok(()),
            Err(status) => return Err(Failure::from_status(&status, agent)),
        }
    }
}

/// One access record as a line for people.
pub fn access_line(r: &AccessRecord) -> String {
    let target = if r.instance.is_empty() {
        "-".to_string()
    } else {
        format!("{}@{} ({})", r.instance, r.node, r.backend)
    };
    format!(
        "{} {} {} -> {} {} in={} out={} {:.1}ms attempts={}",
        r.time,
        r.service,
        r.client,
        target,
        r.outcome,
        r.bytes_in,
        r.bytes_out,
        r.duration_ms,
        r.attempts
    )
}
