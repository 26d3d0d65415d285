//! A real Prometheus scrapes an agent and Debian's node_exporter side by side; for every
//! series name node_exporter exposes on this host, the agent must expose the same name with
//! the same label names, except for the differences listed (each with its reason) in
//! [`ALLOWED_MISSING`]. This stands in for "Node Exporter Full has data in as many panels".

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use strata_tests::{closed_port, http_get, prereq, start_test_agent, wait_until};

/// Series node_exporter has and the agent deliberately lacks: name prefixes and why.
const ALLOWED_MISSING: &[(&str, &str)] = &[
    ("go_", "the Go runtime of node_exporter itself"),
    ("promhttp_", "node_exporter's own HTTP handler"),
    (
        "node_exporter_build_info",
        "node_exporter's build; the agent's is strata_agent_info",
    ),
    (
        "node_textfile_",
        "no textfile collector: services report through Strata instead",
    ),
    // Hardware and filesystem-specific collectors Strata lacks, absent from this machine;
    // listed so a host that has them names the gap instead of failing on it. (hwmon,
    // thermal_zone and cpufreq are implemented, so they are compared like any other family
    // where the host has them; on this VM neither exporter has any.)
    ("node_power_supply_", "power supplies: not implemented"),
    ("node_rapl_", "RAPL energy counters: not implemented"),
    ("node_edac_", "EDAC memory errors: not implemented"),
    (
        "node_cpu_core_throttles_total",
        "thermal throttle counters: not implemented",
    ),
    (
        "node_cpu_package_throttles_total",
        "thermal throttle counters: not implemented",
    ),
    ("node_schedstat_", "schedstat: not implemented"),
    ("node_bonding_", "bonding: not implemented"),
    ("node_infiniband_", "infiniband: not implemented"),
    ("node_fibrechannel_", "fibre channel: not implemented"),
    ("node_nfs_", "NFS client statistics: not implemented"),
    ("node_nfsd_", "NFS server statistics: not implemented"),
    ("node_zfs_", "ZFS: not implemented"),
    ("node_btrfs_", "btrfs: not implemented"),
    ("node_xfs_", "XFS: not implemented"),
    ("node_md_", "software RAID (mdadm): not implemented"),
    ("node_bcache_", "bcache: not implemented"),
    ("node_ipvs_", "IPVS: not implemented"),
    ("node_tapestats_", "tape drives: not implemented"),
    ("node_nvme_", "NVMe info: not implemented"),
    ("node_dmi_info", "DMI: not implemented"),
];

/// A process this test started, killed by its pid when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every series Prometheus holds for `job`: metric name -> the union of its label names
/// (without `job` and `instance`, which Prometheus adds).
fn series_of(prometheus: SocketAddr, job: &str) -> BTreeMap<String, BTreeSet<String>> {
    let path = format!("/api/v1/series?match%5B%5D=%7Bjob%3D%22{job}%22%7D");
    let (code, body) = http_get(prometheus, &path).expect("query Prometheus");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("Prometheus JSON");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for series in json["data"].as_array().expect("data array") {
        let labels = series.as_object().expect("label set");
        let Some(name) = labels.get("__name__").and_then(|v| v.as_str()) else {
            continue;
        };
        let names = out.entry(name.to_owned()).or_default();
        for key in labels.keys() {
            if !matches!(key.as_str(), "__name__" | "job" | "instance") {
                names.insert(key.clone());
            }
        }
    }
    out
}

#[test]
fn strata_exposes_node_exporters_series_names_and_labels() {
    if !prereq::PROMETHEUS.check() || !prereq::NODE_EXPORTER.check() {
        return;
    }
    let (dir, agent) = start_test_agent("prom-compat");
    let ne_port = closed_port();
    let _node_exporter = Started(
        Command::new(prereq::NODE_EXPORTER.name)
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter"),
    );
    let prom_port = closed_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: strata\n    static_configs:\n      - targets: ['{}']\n  \
             - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{ne_port}']\n",
            agent.http
        ),
    )
    .expect("write prometheus.yml");
    let _prometheus = Started(
        Command::new(prereq::PROMETHEUS.name)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );
    let prom: SocketAddr = format!("127.0.0.1:{prom_port}").parse().expect("address");
    // Both targets scraped successfully at least twice (so every series is in the head).
    wait_until(
        "Prometheus to scrape both targets",
        Duration::from_secs(20),
        || {
            let q = "/api/v1/query?query=sum%20by%20(job)%20(count_over_time(up%5B1m%5D)%20*%20up)";
            let Ok((200, body)) = http_get(prom, q) else {
                return false;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                return false;
            };
            let result = json["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            result.len() == 2
                && result.iter().all(|r| {
                    r["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v >= 2.0)
                })
        },
    );

    let node = series_of(prom, "node");
    let strata = series_of(prom, "strata");
    let mut matched = 0;
    let mut allowed = Vec::new();
    let mut problems = Vec::new();
    for (name, labels) in &node {
        if let Some((_, why)) = ALLOWED_MISSING.iter().find(|(p, _)| name.starts_with(p)) {
            allowed.push(format!("{name}: {why}"));
            continue;
        }
        match strata.get(name) {
            None => problems.push(format!("{name}{labels:?}: missing from Strata")),
            Some(ours) if ours != labels => problems.push(format!(
                "{name}: labels {ours:?} in Strata, {labels:?} in node_exporter"
            )),
            Some(_) => matched += 1,
        }
    }
    println!(
        "node_exporter names: {}, Strata names: {}, matched: {matched}, allowed missing: {}",
        node.len(),
        strata.len(),
        allowed.len()
    );
    for a in &allowed {
        println!("  allowed: {a}");
    }
    assert!(
        problems.is_empty(),
        "{} differences from node_exporter:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(matched > 100, "only {matched} names matched");
    // Strata's own series never carry a label Prometheus would rename.
    assert!(!strata.contains_key("exported_instance"));
    for (name, labels) in &strata {
        assert!(!labels.contains("exported_instance"), "{name}: {labels:?}");
    }
}
