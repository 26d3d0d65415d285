//! Made-up clusters for snapshot tests and the benchmark: a small one with the problems an
//! on-call engineer meets (a down node, a crash loop, a 97% disk, an OOM kill, a firing
//! alert) at a fixed "now", and a large one for measuring frames at scale.

use super::logs::LogTarget;
use super::{Model, Msg};
use strata_proto::v1::{
    CatalogInstance, CatalogService, ClusterUpdate, ClusterUpdateKind, CpuMetrics, CpuShares,
    DiskMetrics, Event, ExitInfo, FilesystemMetrics, Health, HostMetrics, InstanceState,
    InstanceStatus, LogLine, LogStream, Member, MemberStatus, MemoryMetrics, MetricHistory,
    NetworkMetrics, NodeInfo, NodeRecord, NodeSummary, Point, ProcessInfo, Series, ServiceStatus,
    Severity,
};

/// The fixed "now" of the fixture: 2027-01-15T08:00:00Z.
pub const NOW_MS: i64 = 1_800_000_000_000;

fn member(name: &str, status: MemberStatus, ago_s: i64, i: u8) -> Member {
    Member {
        id: format!("id-{name}"),
        name: name.into(),
        gossip_addr: format!("10.0.0.{i}:7701"),
        grpc_addr: format!("10.0.0.{i}:7700"),
        status: status as i32,
        incarnation: u64::from(i) + 1,
        since_unix_ms: NOW_MS - ago_s * 1000,
        ..Default::default()
    }
}

fn instance(service: &str, index: u32, health: Health, state: InstanceState) -> CatalogInstance {
    CatalogInstance {
        id: format!("{service}/{index}"),
        health: health as i32,
        state: state as i32,
        version: "1.4.2".into(),
        ..Default::default()
    }
}

fn service(name: &str, port: u32, instances: Vec<CatalogInstance>) -> CatalogService {
    CatalogService {
        name: name.into(),
        version: "1.4.2".into(),
        frontends: [("http".to_string(), port)].into(),
        instances,
        ..Default::default()
    }
}

fn record(
    name: &str,
    cpu: f64,
    mem: f64,
    disk: f64,
    mount: &str,
    alerts: u32,
    services: Vec<CatalogService>,
) -> NodeRecord {
    NodeRecord {
        id: format!("id-{name}"),
        name: name.into(),
        summary: Some(NodeSummary {
            cpu_busy_percent: cpu,
            memory_used_percent: mem,
            worst_disk_used_percent: disk,
            worst_disk: mount.into(),
            load1: cpu / 25.0,
            alerts_firing: alerts,
            cores: 4,
        }),
        services,
        updated_unix_ms: NOW_MS,
        ..Default::default()
    }
}

fn event(
    node: &str,
    seq: u64,
    ago_s: i64,
    sev: Severity,
    kind: &str,
    subject: &str,
    message: &str,
) -> Event {
    Event {
        seq,
        time_unix_ms: NOW_MS - ago_s * 1000,
        node: node.into(),
        kind: kind.into(),
        severity: sev as i32,
        subject: subject.into(),
        message: message.into(),
        ..Default::default()
    }
}

fn status(node: &str, instances: Vec<InstanceStatus>) -> ServiceStatus {
    ServiceStatus {
        name: "web".into(),
        version: "1.4.2".into(),
        desired_instances: instances.len() as u32,
        passing: instances
            .iter()
            .filter(|i| i.health() == Health::Passing)
            .count() as u32,
        restarts: instances.iter().map(|i| i.restarts).sum(),
        node: node.into(),
        instances,
        ..Default::default()
    }
}

fn instance_status(
    index: u32,
    state: InstanceState,
    health: Health,
    pid: i32,
    restarts: u32,
) -> InstanceStatus {
    InstanceStatus {
        id: format!("web/{index}"),
        service: "web".into(),
        index,
        state: state as i32,
        health: health as i32,
        pid,
        cpu_percent: 3.5 * f64::from(index),
        rss_bytes: 48 * 1024 * 1024 * u64::from(index),
        started_unix_ms: NOW_MS - 3_600_000 * i64::from(index),
        restarts,
        last_exit: (restarts > 0).then(|| ExitInfo {
            code: Some(3),
            description: "exit code 3".into(),
            time_unix_ms: NOW_MS - 30_000,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn metrics(t: i64) -> HostMetrics {
    let shares = |busy: f64| CpuShares {
        busy,
        user: busy * 0.7,
        system: busy * 0.3,
        idle: 100.0 - busy,
        ..Default::default()
    };
    HostMetrics {
        node_name: "n1".into(),
        time_unix_ms: t,
        cpu: Some(CpuMetrics {
            total: Some(shares(42.0)),
            cores: vec![shares(80.0), shares(20.0), shares(50.0), shares(18.0)],
            load1: 1.7,
            load5: 1.2,
            load15: 0.9,
            ..Default::default()
        }),
        memory: Some(MemoryMetrics {
            total_bytes: 16 << 30,
            used_bytes: 9 << 30,
            available_bytes: 7 << 30,
            ..Default::default()
        }),
        filesystems: vec![
            FilesystemMetrics {
                mountpoint: "/".into(),
                device: "sda1".into(),
                size_bytes: 100 << 30,
                used_bytes: 40 << 30,
                used_percent: 40.0,
                ..Default::default()
            },
            FilesystemMetrics {
                mountpoint: "/var".into(),
                device: "sdb1".into(),
                size_bytes: 500 << 30,
                used_bytes: 300 << 30,
                used_percent: 60.0,
                ..Default::default()
            },
        ],
        disks: vec![DiskMetrics {
            device: "sda".into(),
            read_bytes_per_sec: 1.5e6,
            write_bytes_per_sec: 3.0e6,
            util_percent: 12.0,
            ..Default::default()
        }],
        networks: vec![NetworkMetrics {
            interface: "eth0".into(),
            rx_bytes_per_sec: 2.0e6,
            tx_bytes_per_sec: 1.0e6,
            ..Default::default()
        }],
        top_cpu: vec![
            ProcessInfo {
                pid: 4242,
                name: "web".into(),
                command: "/srv/web --port 31001".into(),
                cpu_percent: 35.0,
                rss_bytes: 96 << 20,
                state: "R".into(),
                ..Default::default()
            },
            ProcessInfo {
                pid: 901,
                name: "strata-agent".into(),
                command: "strata-agent run".into(),
                cpu_percent: 2.0,
                rss_bytes: 40 << 20,
                state: "S".into(),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn history() -> MetricHistory {
    let series = |name: &str, f: &dyn Fn(i64) -> f64| Series {
        name: name.into(),
        points: (0..60)
            .map(|i| Point {
                time_unix_ms: NOW_MS - (60 - i) * 15_000,
                avg: f(i),
                min: 0.0,
                max: 0.0,
            })
            .collect(),
    };
    MetricHistory {
        series: vec![
            series("cpu.busy", &|i| 30.0 + (i % 10) as f64 * 3.0),
            series("mem.used_percent", &|i| 50.0 + i as f64 * 0.2),
            series("disk.sda.read_bytes_per_sec", &|i| (i % 7) as f64 * 1e5),
            series("disk.sda.write_bytes_per_sec", &|i| (i % 5) as f64 * 2e5),
            series("net.eth0.rx_bytes_per_sec", &|i| (i % 9) as f64 * 3e5),
            series("net.eth0.tx_bytes_per_sec", &|i| (i % 4) as f64 * 1e5),
        ],
        step_ms: 15_000,
        ..Default::default()
    }
}

/// The small fixture: four nodes, three services, and one of each kind of problem.
pub fn model() -> Model {
    let mut m = Model::new("10.0.0.1:7700", NOW_MS);
    m.update(Msg::Connected);
    m.update(Msg::Cluster(ClusterUpdate {
        kind: ClusterUpdateKind::Snapshot as i32,
        members: vec![
            member("n1", MemberStatus::Alive, 86_400, 1),
            member("n2", MemberStatus::Alive, 7_200, 2),
            member("n3", MemberStatus::Down, 420, 3),
            member("n4", MemberStatus::Alive, 3_600, 4),
        ],
        records: vec![
            record(
                "n1",
                42.0,
                56.0,
                60.0,
                "/var",
                0,
                vec![
                    service(
                        "web",
                        8080,
                        vec![
                            instance("web", 1, Health::Passing, InstanceState::Running),
                            instance("web", 2, Health::Passing, InstanceState::Running),
                        ],
                    ),
                    service(
                        "api",
                        8081,
                        vec![instance("api", 1, Health::Passing, InstanceState::Running)],
                    ),
                ],
            ),
            record(
                "n2",
                12.0,
                30.0,
                41.0,
                "/",
                0,
                vec![service(
                    "web",
                    8080,
                    vec![instance(
                        "web",
                        3,
                        Health::Critical,
                        InstanceState::Crashloop,
                    )],
                )],
            ),
            record("n3", 0.0, 0.0, 20.0, "/", 0, vec![]),
            record(
                "n4",
                88.0,
                91.0,
                97.0,
                "/var",
                1,
                vec![
                    service(
                        "api",
                        8081,
                        vec![instance("api", 2, Health::Warning, InstanceState::Running)],
                    ),
                    service(
                        "worker",
                        0,
                        vec![instance(
                            "worker",
                            1,
                            Health::Passing,
                            InstanceState::Running,
                        )],
                    ),
                ],
            ),
        ],
        ..Default::default()
    }));
    m.update(Msg::Events(vec![
        event(
            "n1",
            1,
            86_000,
            Severity::Info,
            "agent.started",
            "node:n1",
            "strata-agent 0.1.0 started",
        ),
        event(
            "n2",
            7,
            900,
            Severity::Warning,
            "service.backoff",
            "service:web/3",
            "web/3 exited with code 3; restarting in 1.6s",
        ),
        event(
            "n2",
            8,
            600,
            Severity::Critical,
            "service.crashloop",
            "service:web/3",
            "web/3 crashed 5 times in 60s: held",
        ),
        event(
            "n4",
            3,
            1_800,
            Severity::Warning,
            "alert.firing",
            "filesystem:/var",
            "/var is 97% full (threshold 90%)",
        ),
        event(
            "n4",
            4,
            240,
            Severity::Critical,
            "kernel.oom_kill",
            "memory",
            "Out of memory: Killed process 5121 (worker)",
        ),
        event(
            "n1",
            2,
            120,
            Severity::Info,
            "service.started",
            "service:web/2",
            "web/2 started (pid 4242)",
        ),
    ]));
    m.open_node("n1");
    m.update(Msg::NodeInfo(
        "n1".into(),
        NodeInfo {
            name: "n1".into(),
            hostname: "n1.dc1".into(),
            os: "Debian 13".into(),
            kernel: "6.18.0".into(),
            cores: 4,
            memory_bytes: 16 << 30,
            agent_version: "0.1.0".into(),
            host_uptime_secs: 864_000,
            ..Default::default()
        },
    ));
    m.update(Msg::NodeHistory("n1".into(), history()));
    m.update(Msg::NodeMetrics("n1".into(), Box::new(metrics(NOW_MS))));
    m.open_service("web");
    m.update(Msg::Service {
        name: "web".into(),
        node: "n1".into(),
        status: Ok(status(
            "n1",
            vec![
                instance_status(1, InstanceState::Running, Health::Passing, 4242, 0),
                instance_status(2, InstanceState::Running, Health::Passing, 4243, 1),
            ],
        )),
    });
    m.update(Msg::Service {
        name: "web".into(),
        node: "n2".into(),
        status: Ok(status(
            "n2",
            vec![instance_status(
                3,
                InstanceState::Crashloop,
                Health::Critical,
                0,
                5,
            )],
        )),
    });
    let generation = m.logs.open(LogTarget {
        node: "n2".into(),
        service: "web".into(),
        instance: 0,
    });
    m.update(Msg::Logs {
        generation,
        lines: (0..40)
            .map(|i| LogLine {
                time_unix_ms: NOW_MS - (40 - i) * 1000,
                instance: format!("web/{}", 1 + i % 3),
                stream: if i % 7 == 0 {
                    LogStream::Err
                } else {
                    LogStream::Out
                } as i32,
                text: if i % 7 == 0 {
                    format!("ERROR request {i} failed: upstream timeout")
                } else {
                    format!("GET /api/items/{i} 200 {}ms", i % 13)
                },
                gap: None,
            })
            .collect(),
        dropped: 12,
    });
    m.refresh();
    m
}

/// A large cluster: `nodes` nodes sharing `instances` instances over 200 services, with
/// every tenth node's disk nearly full and some instances crash-looping.
pub fn large(nodes: usize, instances: usize) -> Model {
    let mut m = Model::new("10.0.0.1:7700", NOW_MS);
    m.update(Msg::Connected);
    m.update(Msg::Cluster(large_snapshot(nodes, instances, 0)));
    m.refresh();
    m
}

/// The WatchCluster snapshot of [`large`]; `tick` varies the numbers so updates differ.
pub fn large_snapshot(nodes: usize, instances: usize, tick: u64) -> ClusterUpdate {
    let per_node = instances / nodes.max(1);
    let records = (0..nodes)
        .map(|n| {
            let name = format!("node-{n:05}");
            let services = (0..per_node)
                .map(|i| {
                    let s = (n * per_node + i) % 200;
                    let state = if (n + i) % 997 == 0 {
                        InstanceState::Crashloop
                    } else {
                        InstanceState::Running
                    };
                    service(
                        &format!("svc-{s:03}"),
                        9000 + s as u32,
                        vec![instance(
                            &format!("svc-{s:03}"),
                            (n % 50) as u32 + 1,
                            Health::Passing,
                            state,
                        )],
                    )
                })
                .collect();
            let cpu = ((n as u64 * 7 + tick * 13) % 100) as f64;
            let disk = if n % 10 == 0 { 93.0 } else { 40.0 };
            record(&name, cpu, 50.0, disk, "/data", 0, services)
        })
        .collect();
    ClusterUpdate {
        kind: ClusterUpdateKind::Snapshot as i32,
        members: (0..nodes)
            .map(|n| {
                member(
                    &format!("node-{n:05}"),
                    if n % 500 == 7 {
                        MemberStatus::Down
                    } else {
                        MemberStatus::Alive
                    },
                    60,
                    (n % 250) as u8,
                )
            })
            .collect(),
        records,
        ..Default::default()
    }
}

/// One record update of the large cluster, as gossip delivers them.
pub fn large_record(n: usize, per_node: usize, tick: u64) -> ClusterUpdate {
    let mut snap = large_snapshot(1, per_node, tick);
    let mut records = std::mem::take(&mut snap.records);
    if let Some(r) = records.first_mut() {
        r.name = format!("node-{n:05}");
        if let Some(s) = r.summary.as_mut() {
            s.cpu_busy_percent = ((n as u64 * 7 + tick * 13) % 100) as f64;
        }
    }
    ClusterUpdate {
        kind: ClusterUpdateKind::Record as i32,
        records,
        ..Default::default()
    }
}
