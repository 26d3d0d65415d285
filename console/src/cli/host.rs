//! `strata node`, `strata metrics`, `strata top`: one host's identity, metrics and processes.

use super::{OutputFormat, print_as};
use crate::client::connect::call;
use crate::client::{Client, Failure};
use crate::format::{bytes, percent, rate, table, time_ms, uptime};
use strata_proto::v1::{
    GetMetricsRequest, GetNodeRequest, HostMetrics, NodeInfo, ProcessInfo, TopProcessesReply,
    TopProcessesRequest,
};

/// `strata node`.
pub async fn node(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
) -> Result<(), Failure> {
    let info = call(
        client.get_node(GetNodeRequest {
            node: node.to_string(),
        }),
        agent,
    )
    .await?;
    print_as(output, &info, render_node)
}

/// The node as key/value lines.
pub fn render_node(info: &NodeInfo) -> String {
    let mut labels: Vec<_> = info
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    labels.sort();
    let rows = [
        ("Name", info.name.clone()),
        ("ID", info.id.clone()),
        ("Hostname", info.hostname.clone()),
        ("OS", info.os.clone()),
        ("Kernel", info.kernel.clone()),
        ("Cores", info.cores.to_string()),
        ("Memory", bytes(info.memory_bytes)),
        ("Host uptime", uptime(info.host_uptime_secs)),
        (
            "Agent",
            format!(
                "{} (up {})",
                info.agent_version,
                uptime(info.agent_uptime_secs)
            ),
        ),
        ("gRPC", info.grpc_addr.clone()),
        ("HTTP", info.http_addr.clone()),
        (
            "Labels",
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(", ")
            },
        ),
    ];
    rows.iter()
        .map(|(k, v)| format!("{:<12} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `strata metrics`.
pub async fn metrics(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
) -> Result<(), Failure> {
    let m = call(
        client.get_metrics(GetMetricsRequest {
            node: node.to_string(),
        }),
        agent,
    )
    .await?;
    print_as(output, &m, render_metrics)
}

/// The metrics sample as a summary followed by tables of filesystems, disks and interfaces.
pub fn render_metrics(m: &HostMetrics) -> String {
    let mut out = Vec::new();
    out.push(format!(
        "Node:       {}   at {}",
        m.node_name,
        time_ms(m.time_unix_ms)
    ));
    if let Some(cpu) = &m.cpu {
        let t = cpu.total.unwrap_or_default();
        out.push(format!(
            "CPU:        {} busy (user {}, system {}, iowait {}, steal {}) on {} cores",
            percent(t.busy),
            percent(t.user),
            percent(t.system),
            percent(t.iowait),
            percent(t.steal),
            cpu.cores.len()
        ));
        out.push(format!(
            "Load:       {:.2} {:.2} {:.2}   procs running {}, blocked {}   ctxt {:.0}/s",
            cpu.load1,
            cpu.load5,
            cpu.load15,
            cpu.procs_running,
            cpu.procs_blocked,
            cpu.context_switches_per_sec
        ));
    }
    if let Some(mem) = &m.memory {
        out.push(format!(
            "Memory:     {} used of {}, {} available ({} cached, {} buffers)",
            bytes(mem.used_bytes),
            bytes(mem.total_bytes),
            bytes(mem.available_bytes),
            bytes(mem.cached_bytes),
            bytes(mem.buffers_bytes)
        ));
        out.push(format!(
            "Swap:       {} used of {}, in {:.0}/s out {:.0}/s",
            bytes(mem.swap_total_bytes.saturating_sub(mem.swap_free_bytes)),
            bytes(mem.swap_total_bytes),
            mem.swap_in_per_sec,
            mem.swap_out_per_sec
        ));
    }
    match &m.pressure {
        Some(p) => out.push(format!(
            "Pressure:   cpu {:.1}  memory {:.1}/{:.1}  io {:.1}/{:.1} (some/full avg10)",
            p.cpu_some_avg10,
            p.memory_some_avg10,
            p.memory_full_avg10,
            p.io_some_avg10,
            p.io_full_avg10
        )),
        None => out.push("Pressure:   not available on this kernel".to_string()),
    }
    let fds = m.fds.unwrap_or_default();
    out.push(format!(
        "FDs:        {} of {}   OOM kills {}   uptime {}",
        fds.allocated,
        fds.max,
        m.oom_kills_total,
        uptime(m.uptime_secs)
    ));

    let mut fs = table(&[
        "mountpoint",
        "device",
        "type",
        "size",
        "used",
        "use%",
        "inodes%",
        "ro",
    ]);
    for f in &m.filesystems {
        fs.add_row(vec![
            f.mountpoint.clone(),
            f.device.clone(),
            f.fstype.clone(),
            bytes(f.size_bytes),
            bytes(f.used_bytes),
            percent(f.used_percent),
            percent(f.inodes_used_percent),
            if f.readonly { "ro".into() } else { "".into() },
        ]);
    }
    let mut disks = table(&["device", "read", "write", "reads/s", "writes/s", "util"]);
    for d in &m.disks {
        disks.add_row(vec![
            d.device.clone(),
            rate(d.read_bytes_per_sec),
            rate(d.write_bytes_per_sec),
            format!("{:.1}", d.reads_per_sec),
            format!("{:.1}", d.writes_per_sec),
            percent(d.util_percent),
        ]);
    }
    let mut nets = table(&[
        "interface",
        "rx",
        "tx",
        "rx pkt/s",
        "tx pkt/s",
        "errors",
        "drops",
    ]);
    for n in &m.networks {
        nets.add_row(vec![
            n.interface.clone(),
            rate(n.rx_bytes_per_sec),
            rate(n.tx_bytes_per_sec),
            format!("{:.0}", n.rx_packets_per_sec),
            format!("{:.0}", n.tx_packets_per_sec),
            (n.rx_errors_total + n.tx_errors_total).to_string(),
            (n.rx_dropped_total + n.tx_dropped_total).to_string(),
        ]);
    }
    out.push(String::new());
    out.push(fs.to_string());
    out.push(String::new());
    out.push(disks.to_string());
    out.push(String::new());
    out.push(nets.to_string());
    out.join("\n")
}

/// `strata top`.
pub async fn top(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    limit: u32,
) -> Result<(), Failure> {
    let reply = call(
        client.top_processes(TopProcessesRequest {
            node: node.to_string(),
            limit,
        }),
        agent,
    )
    .await?;
    print_as(output, &reply, render_top)
}

/// Two process tables: by CPU, then by memory.
pub fn render_top(reply: &TopProcessesReply) -> String {
    let render = |title: &str, procs: &[ProcessInfo]| {
        let mut t = table(&["pid", "cpu%", "rss", "state", "command"]);
        for p in procs {
            let command = if p.command.is_empty() {
                &p.name
            } else {
                &p.command
            };
            t.add_row(vec![
                p.pid.to_string(),
                format!("{:.1}", p.cpu_percent),
                bytes(p.rss_bytes),
                p.state.clone(),
                command.chars().take(80).collect(),
            ]);
        }
        format!("{title}\n{t}")
    };
    format!(
        "{}\n\n{}",
        render("By CPU:", &reply.by_cpu),
        render("By memory:", &reply.by_memory)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_table_shows_name_cores_and_labels() {
        let info = NodeInfo {
            name: "n1".into(),
            cores: 8,
            memory_bytes: 16 << 30,
            labels: [("rack".to_string(), "r7".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let text = render_node(&info);
        assert!(text.contains("Name:        n1"), "{text}");
        assert!(text.contains("Cores:       8"), "{text}");
        assert!(text.contains("16.0 GiB"), "{text}");
        assert!(text.contains("rack=r7"), "{text}");
    }

    #[test]
    fn top_lists_processes_in_the_order_given() {
        let p = |pid, cpu| ProcessInfo {
            pid,
            name: format!("p{pid}"),
            cpu_percent: cpu,
            ..Default::default()
        };
        let reply = TopProcessesReply {
            by_cpu: vec![p(7, 90.0), p(3, 10.0)],
            ..Default::default()
        };
        let text = render_top(&reply);
        let first = text.find("p7").unwrap();
        let second = text.find("p3").unwrap();
        assert!(first < second, "{text}");
    }
}
