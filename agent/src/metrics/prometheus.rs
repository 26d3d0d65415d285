//! Prometheus text exposition (format 0.0.4) of the newest host sample, for the `/metrics`
//! endpoint.
//!
//! Metrics that mean the same thing as a node_exporter metric carry its name, labels and units
//! (so existing dashboards and alert rules work unchanged); everything else is prefixed
//! `strata_`. Every family is written once, with all its samples together.

use strata_exposition::{Exposition, Kind, Value};
use strata_proto::v1::{CpuSeconds, HostMetrics, NodeInfo};

use super::node::NodeCollector;

/// Facts about the agent itself that are exported beside the host metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStats {
    /// The agent's version, exported as a label of `strata_agent_info`.
    pub version: String,
    /// When the agent started, in unix seconds.
    pub start_time_unix_secs: f64,
    /// How long the newest collection took, in seconds.
    pub last_collect_seconds: f64,
    /// How many alerts are firing now.
    pub alerts_firing: u64,
    /// The newest sample's processes and threads by state (the sampler's process scan, so
    /// a scrape reads no `/proc/[pid]` of its own); None before the first sample.
    pub processes: Option<super::processes::ProcessCounts>,
}

/// Writes one sample, node_exporter's scrape-time families (read now by `host_files`), the
/// node's identity and the agent's own stats into `w`.
pub fn render(
    metrics: &HostMetrics,
    host_files: &mut NodeCollector,
    node: &NodeInfo,
    agent: &AgentStats,
    w: &mut Exposition,
) {
    cpu(w, metrics);
    memory(w, metrics);
    pressure(w, metrics);
    filesystems(w, metrics);
    host_files.write(agent.processes.as_ref(), w);
    host(w, metrics);
    strata(w, node, agent);
    if let Some(own) = super::own_process::OwnProcess::read() {
        super::own_process::write(&own, agent.start_time_unix_secs, w);
    }
}

/// The modes of `node_cpu_seconds_total`, in node_exporter's order.
fn cpu_modes(s: &CpuSeconds) -> [(&'static str, f64); 8] {
    [
        ("idle", s.idle),
        ("iowait", s.iowait),
        ("irq", s.irq),
        ("nice", s.nice),
        ("softirq", s.softirq),
        ("steal", s.steal),
        ("system", s.system),
        ("user", s.user),
    ]
}

fn cpu(w: &mut Exposition, m: &HostMetrics) {
    let Some(cpu) = &m.cpu else {
        return;
    };
    if !cpu.core_seconds_total.is_empty() {
        let name = "node_cpu_seconds_total";
        w.family(name, Kind::Counter, "Seconds the CPUs spent in each mode.");
        for (i, core) in cpu.core_seconds_total.iter().enumerate() {
            let id = i.to_string();
            for (mode, v) in cpu_modes(core) {
                w.sample(name, &[("cpu", &id), ("mode", mode)], v);
            }
        }
    }
    w.single("node_load1", Kind::Gauge, "1m load average.", cpu.load1);
    w.single("node_load5", Kind::Gauge, "5m load average.", cpu.load5);
    w.single("node_load15", Kind::Gauge, "15m load average.", cpu.load15);
    if cpu.seconds_total.is_none() {
        return;
    }
    w.single(
        "node_procs_running",
        Kind::Gauge,
        "Number of processes in runnable state.",
        cpu.procs_running,
    );
    w.single(
        "node_procs_blocked",
        Kind::Gauge,
        "Number of processes blocked waiting for I/O to complete.",
        cpu.procs_blocked,
    );
    w.single(
        "node_context_switches_total",
        Kind::Counter,
        "Total number of context switches.",
        cpu.context_switches_total,
    );
    w.single(
        "node_forks_total",
        Kind::Counter,
        "Total number of forks.",
        cpu.forks_total,
    );
    if let Some(total) = &cpu.total {
        w.single(
            "strata_cpu_busy_ratio",
            Kind::Gauge,
            "Share of CPU time spent working (not idle, iowait or steal) over the last interval.",
            total.busy / 100.0,
        );
    }
    if !cpu.cores.is_empty() {
        let name = "strata_cpu_core_busy_ratio";
        w.family(
            name,
            Kind::Gauge,
            "Share of one core's time spent working over the last interval.",
        );
        for (i, core) in cpu.cores.iter().enumerate() {
            w.sample(name, &[("cpu", &i.to_string())], core.busy / 100.0);
        }
    }
}

fn memory(w: &mut Exposition, m: &HostMetrics) {
    if let Some(mem) = &m.memory {
        w.single(
            "strata_memory_used_bytes",
            Kind::Gauge,
            "Memory in use: MemTotal - MemAvailable.",
            mem.used_bytes,
        );
    }
}

fn pressure(w: &mut Exposition, m: &HostMetrics) {
    let Some(p) = &m.pressure else {
        return;
    };
    let totals = [
        (
            "node_pressure_cpu_waiting_seconds_total",
            "Total time in seconds that processes have waited for CPU time.",
            p.cpu_some_seconds_total,
        ),
        (
            "node_pressure_memory_waiting_seconds_total",
            "Total time in seconds that processes have waited for memory.",
            p.memory_some_seconds_total,
        ),
        (
            "node_pressure_memory_stalled_seconds_total",
            "Total time in seconds no process could make progress due to memory congestion.",
            p.memory_full_seconds_total,
        ),
        (
            "node_pressure_io_waiting_seconds_total",
            "Total time in seconds that processes have waited due to IO congestion.",
            p.io_some_seconds_total,
        ),
        (
            "node_pressure_io_stalled_seconds_total",
            "Total time in seconds no process could make progress due to IO congestion.",
            p.io_full_seconds_total,
        ),
    ];
    for (name, help, v) in totals {
        w.single(name, Kind::Counter, help, v);
    }
    let name = "strata_pressure_avg10_ratio";
    w.family(
        name,
        Kind::Gauge,
        "Share of the last 10 seconds that some or all tasks stalled on a resource.",
    );
    for (resource, kind, v) in [
        ("cpu", "some", p.cpu_some_avg10),
        ("memory", "some", p.memory_some_avg10),
        ("memory", "full", p.memory_full_avg10),
        ("io", "some", p.io_some_avg10),
        ("io", "full", p.io_full_avg10),
    ] {
        w.sample(name, &[("resource", resource), ("kind", kind)], v / 100.0);
    }
}

fn filesystems(w: &mut Exposition, m: &HostMetrics) {
    if m.filesystems.is_empty() {
        return;
    }
    type Field = fn(&strata_proto::v1::FilesystemMetrics) -> Value;
    let families: [(&str, &str, Field); 7] = [
        (
            "node_filesystem_size_bytes",
            "Filesystem size in bytes.",
            |f| f.size_bytes.into(),
        ),
        (
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
            |f| f.avail_bytes.into(),
        ),
        (
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
            |f| f.free_bytes.into(),
        ),
        (
            "node_filesystem_files",
            "Filesystem total file nodes.",
            |f| f.inodes_total.into(),
        ),
        (
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
            |f| f.inodes_free.into(),
        ),
        (
            "node_filesystem_readonly",
            "Filesystem read-only status.",
            |f| f.readonly.into(),
        ),
        (
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
            // Only mounts whose statvfs succeeded are in the sample.
            |_| false.into(),
        ),
    ];
    for (name, help, field) in families {
        w.family(name, Kind::Gauge, help);
        for f in &m.filesystems {
            let labels = [
                ("device", f.device.as_str()),
                ("fstype", f.fstype.as_str()),
                ("mountpoint", f.mountpoint.as_str()),
            ];
            w.sample(name, &labels, field(f));
        }
    }
}

fn host(w: &mut Exposition, m: &HostMetrics) {
    if let Some(fds) = &m.fds {
        w.single(
            "node_filefd_allocated",
            Kind::Gauge,
            "File descriptor statistics: allocated.",
            fds.allocated,
        );
        w.single(
            "node_filefd_maximum",
            Kind::Gauge,
            "File descriptor statistics: maximum.",
            fds.max,
        );
    }
    if m.boot_time_unix_secs > 0 {
        w.single(
            "node_boot_time_seconds",
            Kind::Gauge,
            "Node boot time, in unixtime.",
            m.boot_time_unix_secs as f64,
        );
    }
    w.single(
        "node_time_seconds",
        Kind::Gauge,
        "System time in seconds since epoch (1970).",
        m.time_unix_ms as f64 / 1000.0,
    );
    let uname = rustix::system::uname();
    let text = |c: &std::ffi::CStr| c.to_string_lossy().into_owned();
    let (sysname, release, version) = (
        text(uname.sysname()),
        text(uname.release()),
        text(uname.version()),
    );
    let (machine, nodename, domainname) = (
        text(uname.machine()),
        text(uname.nodename()),
        text(uname.domainname()),
    );
    w.family(
        "node_uname_info",
        Kind::Gauge,
        "Labeled system information as provided by the uname system call.",
    );
    w.sample(
        "node_uname_info",
        &[
            ("domainname", &domainname),
            ("machine", &machine),
            ("nodename", &nodename),
            ("release", &release),
            ("sysname", &sysname),
            ("version", &version),
        ],
        1u64,
    );
}

fn strata(w: &mut Exposition, node: &NodeInfo, agent: &AgentStats) {
    w.family(
        "strata_agent_info",
        Kind::Gauge,
        "The Strata agent's version and the node it runs as; always 1.",
    );
    w.sample(
        "strata_agent_info",
        &[
            ("version", &agent.version),
            ("node_id", &node.id),
            ("node_name", &node.name),
        ],
        1u64,
    );
    w.single(
        "strata_agent_start_time_seconds",
        Kind::Gauge,
        "When the agent started, in unixtime.",
        agent.start_time_unix_secs,
    );
    w.single(
        "strata_agent_collect_duration_seconds",
        Kind::Gauge,
        "How long the newest host metrics collection took.",
        agent.last_collect_seconds,
    );
    w.single(
        "strata_alerts_firing",
        Kind::Gauge,
        "Number of alerts firing on this node.",
        agent.alerts_firing,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use strata_proto::v1::FilesystemMetrics;

    use super::*;
    use crate::metrics::collect::{Collector, CollectorOptions};

    /// One parsed sample line.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A strict reader for the subset of the text format that `render` writes: every line is
    /// HELP, TYPE or a sample of the family announced just before. Returns the family names in
    /// order and the samples, or the first problem found.
    fn parse(text: &str) -> Result<(Vec<String>, Vec<Sample>), String> {
        let mut families = Vec::new();
        let mut samples = Vec::new();
        let mut current: Option<String> = None;
        let mut lines = text.lines().enumerate();
        while let Some((no, line)) = lines.next() {
            let err = |what: &str| format!("line {}: {what}: {line:?}", no + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().ok_or_else(|| err("no name"))?;
                let (_, type_line) = lines.next().ok_or_else(|| err("HELP without TYPE"))?;
                let expected = format!("# TYPE {name} ");
                let kind = type_line
                    .strip_prefix(&expected)
                    .ok_or_else(|| err("TYPE does not follow HELP"))?;
                if !["counter", "gauge", "untyped"].contains(&kind) {
                    return Err(err("unknown type"));
                }
                families.push(name.to_owned());
                current = Some(name.to_owned());
                continue;
            }
            if line.starts_with('#') {
                return Err(err("unexpected comment"));
            }
            let family = current
                .as_deref()
                .ok_or_else(|| err("sample before HELP"))?;
            let (name, after) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => return Err(err("no value")),
            };
            if name != family {
                return Err(err("sample outside its family"));
            }
            let mut labels = BTreeMap::new();
            let mut rest = after;
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices().peekable();
                let mut end = None;
                loop {
                    let Some((start, c)) = chars.next() else {
                        return Err(err("unterminated labels"));
                    };
                    if c == '}' {
                        end = end.or(Some(start + 1));
                        break;
                    }
                    let eq = body[start..]
                        .find("=\"")
                        .ok_or_else(|| err("label without value"))?;
                    let key = body[start..start + eq].to_owned();
                    for _ in 0..eq + 1 {
                        chars.next();
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => value.push('\n'),
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                _ => return Err(err("bad escape")),
                            },
                            Some((_, '"')) => break,
                            Some((_, '\n')) | None => return Err(err("unterminated value")),
                            Some((_, c)) => value.push(c),
                        }
                    }
                    if labels.insert(key, value).is_some() {
                        return Err(err("duplicate label"));
                    }
                    if let Some((_, ',')) = chars.peek() {
                        chars.next();
                    }
                }
                rest = &body[end.unwrap_or(body.len())..];
            }
            let value = rest
                .strip_prefix(' ')
                .ok_or_else(|| err("no space before value"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().map_err(|_| err("bad value"))?,
            };
            samples.push(Sample {
                name: name.to_owned(),
                labels,
                value,
            });
        }
        Ok((families, samples))
    }

    fn rendered(
        metrics: &HostMetrics,
        host_files: &mut NodeCollector,
        node: &NodeInfo,
        agent: &AgentStats,
    ) -> String {
        let mut w = Exposition::default();
        render(metrics, host_files, node, agent, &mut w);
        w.into_text()
    }

    fn synthetic() -> HostMetrics {
        let mut c = Collector::new(CollectorOptions::default());
        let mut m = c.sample();
        m.filesystems.push(FilesystemMetrics {
            mountpoint: "/mnt/we\"ird\\path\nx".into(),
            device: "/dev/sdz".into(),
            fstype: "ext4".into(),
            size_bytes: u64::MAX,
            readonly: true,
            ..FilesystemMetrics::default()
        });
        m
    }

    fn node() -> NodeInfo {
        NodeInfo {
            id: "n-1".into(),
            name: "rack \"a\"\\b\nc".into(),
            ..NodeInfo::default()
        }
    }

    fn agent() -> AgentStats {
        AgentStats {
            version: "0.1.0".into(),
            start_time_unix_secs: 1_700_000_000.25,
            last_collect_seconds: 0.0031,
            alerts_firing: 2,
            processes: Some(super::super::processes::ProcessCounts {
                pids: 3,
                threads: 7,
                states: [('R', 1), ('S', 2)].into_iter().collect(),
            }),
        }
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    #[test]
    fn renders_a_parseable_exposition_with_real_values() {
        let m = synthetic();
        let text = rendered(&m, &mut NodeCollector::new(), &node(), &agent());
        assert!(text.ends_with('\n'));
        let (families, samples) = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let unique: HashSet<&String> = families.iter().collect();
        assert_eq!(unique.len(), families.len(), "a family appears twice");

        // The sampler's process counts, as node_exporter's processes collector writes them.
        let pids = find(&samples, "node_processes_pids", &[]).expect("pids");
        assert_eq!(pids.value, 3.0);
        let sleeping = find(&samples, "node_processes_state", &[("state", "S")]).expect("S");
        assert_eq!(sleeping.value, 2.0);

        let mem = m.memory.as_ref().expect("memory part");
        let total = find(&samples, "node_memory_MemTotal_bytes", &[]).expect("memory total");
        assert_eq!(total.value, mem.total_bytes as f64);
        let cpu = m.cpu.as_ref().expect("cpu part");
        let cores: HashSet<&str> = samples
            .iter()
            .filter(|s| s.name == "node_cpu_seconds_total")
            .filter_map(|s| s.labels.get("cpu").map(String::as_str))
            .collect();
        assert_eq!(cores.len(), cpu.core_seconds_total.len());
        let user0 = find(
            &samples,
            "node_cpu_seconds_total",
            &[("cpu", "0"), ("mode", "user")],
        )
        .expect("cpu0 user");
        assert_eq!(user0.value, cpu.core_seconds_total[0].user);
        let boot = find(&samples, "node_boot_time_seconds", &[]).expect("boot time");
        assert_eq!(boot.value, m.boot_time_unix_secs as f64);
        assert!(
            find(
                &samples,
                "node_network_receive_bytes_total",
                &[("device", "lo")]
            )
            .is_some()
        );

        // Label values come back exactly as they went in.
        let odd = find(
            &samples,
            "node_filesystem_readonly",
            &[("mountpoint", "/mnt/we\"ird\\path\nx")],
        )
        .expect("escaped mountpoint");
        assert_eq!(odd.value, 1.0);
        assert!(text.contains("node_filesystem_size_bytes{device=\"/dev/sdz\",fstype=\"ext4\",mountpoint=\"/mnt/we\\\"ird\\\\path\\nx\"} 18446744073709551615\n"));
        let info = find(
            &samples,
            "strata_agent_info",
            &[("node_name", "rack \"a\"\\b\nc")],
        )
        .expect("agent info");
        assert_eq!(
            info.labels.get("version").map(String::as_str),
            Some("0.1.0")
        );
        assert_eq!(
            find(&samples, "strata_agent_start_time_seconds", &[]).map(|s| s.value),
            Some(1_700_000_000.25)
        );
        assert_eq!(
            find(&samples, "strata_alerts_firing", &[]).map(|s| s.value),
            Some(2.0)
        );
        let uname = find(&samples, "node_uname_info", &[("sysname", "Linux")]).expect("uname");
        assert_eq!(uname.value, 1.0);
    }

    #[test]
    fn empty_parts_are_left_out() {
        let empty = tempfile::tempdir().expect("temp dir");
        let text = rendered(
            &HostMetrics::default(),
            &mut NodeCollector::with_roots(empty.path(), empty.path()),
            &NodeInfo::default(),
            &AgentStats::default(),
        );
        let (families, _) = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(
            !families
                .iter()
                .any(|f| f.starts_with("node_cpu") || f.starts_with("node_memory"))
        );
        assert!(!families.iter().any(|f| f.starts_with("node_pressure")));
        assert!(families.contains(&"strata_agent_info".to_owned()));
    }

    /// The whole output passes `promtool check metrics` except for node_exporter's own lint
    /// exceptions (camelCase meminfo/netstat names, entropy in bits), which it does have.
    #[test]
    fn promtool_accepts_the_output_but_node_exporters_exceptions() {
        if !strata_tests::prereq::PROMTOOL.check() {
            return;
        }
        let text = rendered(&synthetic(), &mut NodeCollector::new(), &node(), &agent());
        let findings =
            strata_tests::promtool_findings_beyond_node_exporter(&text).expect("promtool runs");
        assert!(
            findings.is_empty(),
            "promtool reported:\n{}",
            findings.join("\n")
        );
        assert!(text.contains("\nnode_memory_MemTotal_bytes "), "{text}");
    }
}
