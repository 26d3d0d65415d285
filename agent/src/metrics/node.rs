//! node_exporter's Linux collectors that only `/metrics` needs, read when it is scraped (as
//! node_exporter does): full meminfo, vmstat, diskstats, netdev, netclass, netstat (+ snmp,
//! snmp6), sockstat, timex, interrupts, entropy, ARP, conntrack, softnet, UDP queues, clock
//! sources, time zone, SELinux and os-release.
//!
//! Names, types, labels and units are node_exporter 1.5's, so "Node Exporter Full" and existing
//! alert rules work unchanged. The once-a-second sample (`collect.rs`) is not made bigger by
//! any of this: these files are read once per scrape, each once, into one reused buffer, and
//! parsed by the pure `write_*` functions below straight into the exposition text. A file that
//! cannot be read leaves out only its families.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::collect::disk_excluded;
use super::processes::ProcessCounts;
use strata_exposition::{Exposition, Kind, Value};

/// Reads node_exporter's scrape-time files and writes their families.
///
/// Exists so one owner holds the reused buffers and the roots the files are read under.
#[derive(Debug)]
pub struct NodeCollector {
    proc_root: PathBuf,
    sys_root: PathBuf,
    page_size: u64,
    /// `/etc/os-release`, read once: it changes only with an upgrade of the OS.
    os_release: String,
    buf: String,
    name: String,
    path: PathBuf,
}

impl NodeCollector {
    /// A collector over the host's `/proc`, `/sys` and `/etc/os-release`.
    pub fn new() -> Self {
        Self::with_roots(Path::new("/proc"), Path::new("/sys"))
    }

    /// A collector reading under other roots (tests point them at temp dirs).
    pub fn with_roots(proc_root: &Path, sys_root: &Path) -> Self {
        let os_release = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        Self {
            proc_root: proc_root.to_path_buf(),
            sys_root: sys_root.to_path_buf(),
            page_size: procfs::page_size(),
            os_release,
            buf: String::with_capacity(16 * 1024),
            name: String::with_capacity(64),
            path: PathBuf::new(),
        }
    }

    /// Writes every family whose files can be read now, then how long each collector took
    /// and whether it succeeded (`node_scrape_collector_*`, as node_exporter reports them).
    /// `processes` are the sampler's counts, written with the kernel's limits read now.
    pub(crate) fn write(&mut self, processes: Option<&ProcessCounts>, w: &mut Exposition) {
        let mut buf = std::mem::take(&mut self.buf);
        let mut name = std::mem::take(&mut self.name);
        let mut times = Vec::with_capacity(24);
        let mut timed = |collector: &'static str, start: Instant, ok: bool| {
            times.push((collector, start.elapsed(), ok));
        };
        type WriteFile = fn(&str, &mut String, &mut Exposition);
        let files: [(&str, &str, WriteFile); 5] = [
            ("meminfo", "meminfo", write_meminfo),
            ("vmstat", "vmstat", write_vmstat),
            ("stat", "stat", |text, _, w| {
                write_stat(text, procfs::ticks_per_second(), w)
            }),
            ("diskstats", "diskstats", |text, _, w| {
                write_diskstats(text, Path::new("/run/udev/data"), w)
            }),
            ("netdev", "net/dev", write_netdev),
        ];
        for (collector, file, write) in files {
            let start = Instant::now();
            let ok = self.read(&mut buf, "proc", file);
            if ok {
                write(&buf, &mut name, w);
            }
            timed(collector, start, ok);
        }
        let start = Instant::now();
        let ok = self.write_netclass(&mut buf, w);
        timed("netclass", start, ok);

        let start = Instant::now();
        let mut netstat = String::new();
        let mut ok = false;
        for file in ["net/netstat", "net/snmp"] {
            if self.read(&mut buf, "proc", file) {
                netstat.push_str(&buf);
                ok = true;
            }
        }
        if self.read(&mut buf, "proc", "net/snmp6") {
            snmp6_as_netstat(&buf, &mut netstat);
        }
        write_netstat(&netstat, &mut name, w);
        timed("netstat", start, ok);

        let start = Instant::now();
        let mut sockstat = String::new();
        let mut ok = false;
        for file in ["net/sockstat", "net/sockstat6"] {
            if self.read(&mut buf, "proc", file) {
                sockstat.push_str(&buf);
                ok = true;
            }
        }
        write_sockstat(&sockstat, self.page_size, &mut name, w);
        timed("sockstat", start, ok);

        let start = Instant::now();
        let ok = write_timex(w);
        timed("timex", start, ok);
        let start = Instant::now();
        if let Some(counts) = processes {
            let mut limit = |file| {
                self.read(&mut buf, "proc", file)
                    .then(|| buf.trim().parse().ok())
                    .flatten()
            };
            let max_processes = limit("sys/kernel/pid_max");
            let max_threads = limit("sys/kernel/threads-max");
            super::processes::write(counts, max_processes, max_threads, w);
        }
        timed("processes", start, processes.is_some());
        self.write_small_files(&mut buf, w, &mut timed);
        let start = Instant::now();
        write_os_release(&self.os_release, w);
        timed("os", start, !self.os_release.is_empty());
        let start = Instant::now();
        super::hardware::write(&self.sys_root, w);
        timed("hardware", start, true);
        write_collector_times(&times, w);
        self.buf = buf;
        self.name = name;
    }

    fn write_small_files(
        &mut self,
        buf: &mut String,
        w: &mut Exposition,
        timed: &mut impl FnMut(&'static str, Instant, bool),
    ) {
        let start = Instant::now();
        let mut entropy = false;
        for (file, family, help) in [
            (
                "sys/kernel/random/entropy_avail",
                "node_entropy_available_bits",
                "Bits of available entropy.",
            ),
            (
                "sys/kernel/random/poolsize",
                "node_entropy_pool_size_bits",
                "Bits of entropy pool.",
            ),
            (
                "sys/net/netfilter/nf_conntrack_count",
                "node_nf_conntrack_entries",
                "Number of currently allocated flow entries for connection tracking.",
            ),
            (
                "sys/net/netfilter/nf_conntrack_max",
                "node_nf_conntrack_entries_limit",
                "Maximum size of connection tracking table.",
            ),
        ] {
            if self.read(buf, "proc", file)
                && let Ok(v) = buf.trim().parse::<u64>()
            {
                w.single(family, Kind::Gauge, help, v);
                entropy |= family.starts_with("node_entropy");
            }
            if family == "node_entropy_pool_size_bits" {
                timed("entropy", start, entropy);
            }
        }
        let start = Instant::now();
        let ok = self.read(buf, "proc", "net/stat/nf_conntrack");
        if ok {
            write_conntrack_stat(buf, w);
        }
        timed("conntrack", start, ok);
        let start = Instant::now();
        let ok = self.read(buf, "proc", "net/arp");
        if ok {
            write_arp(buf, w);
        }
        timed("arp", start, ok);
        let start = Instant::now();
        let ok = self.read(buf, "proc", "net/softnet_stat");
        if ok {
            write_softnet(buf, w);
        }
        timed("softnet", start, ok);
        let start = Instant::now();
        let mut queues = [0u64; 4];
        let ok = self.read(buf, "proc", "net/udp");
        if ok {
            let (tx, rx) = udp_queues(buf);
            queues[0] = tx;
            queues[1] = rx;
            if self.read(buf, "proc", "net/udp6") {
                let (tx, rx) = udp_queues(buf);
                queues[2] = tx;
                queues[3] = rx;
            }
            let name = "node_udp_queues";
            w.family(
                name,
                Kind::Gauge,
                "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            );
            for (i, (ip, queue)) in [("v4", "tx"), ("v4", "rx"), ("v6", "tx"), ("v6", "rx")]
                .into_iter()
                .enumerate()
            {
                w.sample(name, &[("ip", ip), ("queue", queue)], queues[i]);
            }
        }
        timed("udp_queues", start, ok);
        let start = Instant::now();
        let cs = "devices/system/clocksource";
        let mut available = Vec::new();
        let mut current = Vec::new();
        if let Ok(dir) = std::fs::read_dir(self.sys_root.join(cs)) {
            for entry in dir.flatten() {
                let file_name = entry.file_name();
                let dev = file_name.to_string_lossy();
                let Some(id) = dev.strip_prefix("clocksource") else {
                    continue;
                };
                let id = id.to_owned();
                if self.read(buf, "sys", &format!("{cs}/{dev}/available_clocksource")) {
                    for c in buf.split_ascii_whitespace() {
                        available.push((id.clone(), c.to_owned()));
                    }
                }
                if self.read(buf, "sys", &format!("{cs}/{dev}/current_clocksource")) {
                    current.push((id, buf.trim().to_owned()));
                }
            }
        }
        for (name, help, list) in [
            (
                "node_time_clocksource_available_info",
                "Available clocksources read from '/sys/devices/system/clocksource'.",
                &available,
            ),
            (
                "node_time_clocksource_current_info",
                "Current clocksource read from '/sys/devices/system/clocksource'.",
                &current,
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            w.family(name, Kind::Gauge, help);
            for (device, source) in list {
                w.sample(name, &[("clocksource", source), ("device", device)], 1u64);
            }
        }
        if let Some((zone, offset)) = local_time_zone() {
            w.family(
                "node_time_zone_offset_seconds",
                Kind::Gauge,
                "System time zone offset in seconds.",
            );
            w.sample(
                "node_time_zone_offset_seconds",
                &[("time_zone", &zone)],
                offset as f64,
            );
        }
        timed("time", start, !current.is_empty());
        let start = Instant::now();
        let selinux = self.sys_root.join("fs/selinux/enforce").exists();
        w.single(
            "node_selinux_enabled",
            Kind::Gauge,
            "SELinux is enabled, 1 is true, 0 is false",
            selinux,
        );
        timed("selinux", start, true);
    }

    /// Reads `root/rel` into `buf`; false (and `buf` empty) when it cannot be read.
    fn read(&mut self, buf: &mut String, root: &str, rel: &str) -> bool {
        self.path.clear();
        self.path.push(if root == "sys" {
            &self.sys_root
        } else {
            &self.proc_root
        });
        self.path.push(rel);
        read_into(buf, &self.path)
    }

    /// False when `/sys/class/net` cannot be read.
    fn write_netclass(&mut self, buf: &mut String, w: &mut Exposition) -> bool {
        let Ok(dir) = std::fs::read_dir(self.sys_root.join("class/net")) else {
            return false;
        };
        let mut devices: Vec<NetClass> = Vec::new();
        for entry in dir.flatten() {
            let device = entry.file_name().to_string_lossy().into_owned();
            let mut d = NetClass {
                values: [None; NETCLASS.len()],
                info: Default::default(),
                device,
            };
            let base = entry.path();
            for (i, f) in NETCLASS.iter().enumerate() {
                if read_into(buf, &base.join(f.file)) {
                    d.values[i] = (f.parse)(buf.trim());
                }
            }
            for (i, file) in NETCLASS_INFO.iter().enumerate() {
                if read_into(buf, &base.join(file)) {
                    d.info[i] = buf.trim().to_owned();
                }
            }
            devices.push(d);
        }
        devices.sort_by(|a, b| a.device.cmp(&b.device));
        write_netclass(&devices, w);
        true
    }
}

impl Default for NodeCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads `path` into `buf` (cleared first); false when it cannot be read.
fn read_into(buf: &mut String, path: &Path) -> bool {
    use std::io::Read as _;
    buf.clear();
    let ok = std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(buf))
        .is_ok();
    if !ok {
        buf.clear();
    }
    ok
}

/// A number as node_exporter prints it: integers exactly, anything else as a float.
fn number(text: &str) -> Option<Value> {
    text.parse::<u64>()
        .map(Value::Int)
        .or_else(|_| text.parse::<f64>().map(Value::Float))
        .ok()
}

/// `/proc/meminfo` as `node_memory_<Field>_bytes` (kB fields) or `node_memory_<Field>`
/// (page counts); `Active(anon)` becomes `Active_anon`.
pub(crate) fn write_meminfo(text: &str, name: &mut String, w: &mut Exposition) {
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_ascii_whitespace();
        let Some(Value::Int(v)) = words.next().and_then(number) else {
            continue;
        };
        let kib = words.next() == Some("kB");
        name.clear();
        name.push_str("node_memory_");
        name.extend(key.chars().filter(|c| *c != ')').map(|c| match c {
            '(' => '_',
            c => c,
        }));
        if kib {
            name.push_str("_bytes");
        }
        let mut help = String::with_capacity(48);
        let _ = write!(
            help,
            "Memory information field {}.",
            &name["node_memory_".len()..]
        );
        let value = if kib { v.saturating_mul(1024) } else { v };
        w.single(name, Kind::Gauge, &help, value);
    }
}

/// `/proc/vmstat` fields node_exporter keeps by default: `^(oom_kill|pgpg|pswp|pg.*fault).*`.
pub(crate) fn vmstat_kept(key: &str) -> bool {
    key.starts_with("oom_kill")
        || key.starts_with("pgpg")
        || key.starts_with("pswp")
        || key
            .strip_prefix("pg")
            .is_some_and(|rest| rest.contains("fault"))
}

/// The kept `/proc/vmstat` fields as untyped `node_vmstat_<field>`.
pub(crate) fn write_vmstat(text: &str, name: &mut String, w: &mut Exposition) {
    for line in text.lines() {
        let Some((key, v)) = line.split_once(' ') else {
            continue;
        };
        if !vmstat_kept(key) {
            continue;
        }
        let Some(v) = number(v.trim()) else {
            continue;
        };
        name.clear();
        name.push_str("node_vmstat_");
        name.push_str(key);
        let help = format!("/proc/vmstat information field {key}.");
        w.single(name, Kind::Untyped, &help, v);
    }
}

/// From `/proc/stat`: `node_intr_total` and the guest modes of `node_cpu_guest_seconds_total`
/// (the sample writes the other CPU counters).
pub(crate) fn write_stat(text: &str, ticks_per_second: u64, w: &mut Exposition) {
    let tps = ticks_per_second.max(1) as f64;
    let mut guest_started = false;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let Some(key) = words.next() else { continue };
        if let Some(cpu) = key.strip_prefix("cpu").filter(|c| !c.is_empty()) {
            let fields: Vec<&str> = words.collect();
            let (Some(guest), Some(nice)) = (fields.get(8), fields.get(9)) else {
                continue;
            };
            let name = "node_cpu_guest_seconds_total";
            if !guest_started {
                w.family(
                    name,
                    Kind::Counter,
                    "Seconds the CPUs spent in guests (VMs) for each mode.",
                );
                guest_started = true;
            }
            for (mode, v) in [("nice", nice), ("user", guest)] {
                let v = v.parse::<u64>().unwrap_or(0) as f64 / tps;
                w.sample(name, &[("cpu", cpu), ("mode", mode)], v);
            }
        } else if key == "intr"
            && let Some(Value::Int(total)) = words.next().and_then(number)
        {
            w.single(
                "node_intr_total",
                Kind::Counter,
                "Total number of interrupts serviced.",
                total,
            );
        }
    }
}

/// One `/proc/diskstats` family: name, type, help, field index (after the name), scale.
type DiskFamily = (&'static str, Kind, &'static str, usize, f64);

/// node_exporter's diskstats families over the fields after the device name.
const DISK_FAMILIES: [DiskFamily; 17] = [
    (
        "node_disk_reads_completed_total",
        Kind::Counter,
        "The total number of reads completed successfully.",
        0,
        1.0,
    ),
    (
        "node_disk_reads_merged_total",
        Kind::Counter,
        "The total number of reads merged.",
        1,
        1.0,
    ),
    (
        "node_disk_read_bytes_total",
        Kind::Counter,
        "The total number of bytes read successfully.",
        2,
        512.0,
    ),
    (
        "node_disk_read_time_seconds_total",
        Kind::Counter,
        "The total number of seconds spent by all reads.",
        3,
        0.001,
    ),
    (
        "node_disk_writes_completed_total",
        Kind::Counter,
        "The total number of writes completed successfully.",
        4,
        1.0,
    ),
    (
        "node_disk_writes_merged_total",
        Kind::Counter,
        "The number of writes merged.",
        5,
        1.0,
    ),
    (
        "node_disk_written_bytes_total",
        Kind::Counter,
        "The total number of bytes written successfully.",
        6,
        512.0,
    ),
    (
        "node_disk_write_time_seconds_total",
        Kind::Counter,
        "This is the total number of seconds spent by all writes.",
        7,
        0.001,
    ),
    (
        "node_disk_io_now",
        Kind::Gauge,
        "The number of I/Os currently in progress.",
        8,
        1.0,
    ),
    (
        "node_disk_io_time_seconds_total",
        Kind::Counter,
        "Total seconds spent doing I/Os.",
        9,
        0.001,
    ),
    (
        "node_disk_io_time_weighted_seconds_total",
        Kind::Counter,
        "The weighted # of seconds spent doing I/Os.",
        10,
        0.001,
    ),
    (
        "node_disk_discards_completed_total",
        Kind::Counter,
        "The total number of discards completed successfully.",
        11,
        1.0,
    ),
    (
        "node_disk_discards_merged_total",
        Kind::Counter,
        "The total number of discards merged.",
        12,
        1.0,
    ),
    (
        "node_disk_discarded_sectors_total",
        Kind::Counter,
        "The total number of sectors discarded successfully.",
        13,
        1.0,
    ),
    (
        "node_disk_discard_time_seconds_total",
        Kind::Counter,
        "This is the total number of seconds spent by all discards.",
        14,
        0.001,
    ),
    (
        "node_disk_flush_requests_total",
        Kind::Counter,
        "The total number of flush requests completed successfully",
        15,
        1.0,
    ),
    (
        "node_disk_flush_requests_time_seconds_total",
        Kind::Counter,
        "This is the total number of seconds spent by all flush requests.",
        16,
        0.001,
    ),
];

/// One device's diskstats line: major, minor, name and up to 17 counters.
struct DiskLine<'a> {
    major: &'a str,
    minor: &'a str,
    device: &'a str,
    fields: [Option<u64>; 17],
}

fn parse_disk_line(line: &str) -> Option<DiskLine<'_>> {
    let mut words = line.split_ascii_whitespace();
    let (major, minor, device) = (words.next()?, words.next()?, words.next()?);
    let mut fields = [None; 17];
    for (slot, word) in fields.iter_mut().zip(words) {
        *slot = word.parse().ok();
    }
    Some(DiskLine {
        major,
        minor,
        device,
        fields,
    })
}

/// `/proc/diskstats` (whole disks, as `collect::disk_excluded` keeps) as node_exporter's
/// `node_disk_*` families, and `node_disk_info` with udev's model, path, serial and wwn.
pub(crate) fn write_diskstats(text: &str, udev: &Path, w: &mut Exposition) {
    let disks: Vec<DiskLine> = text
        .lines()
        .filter_map(parse_disk_line)
        .filter(|d| !disk_excluded(d.device))
        .collect();
    if disks.is_empty() {
        return;
    }
    for (name, kind, help, index, scale) in DISK_FAMILIES {
        if disks.iter().all(|d| d.fields[index].is_none()) {
            continue;
        }
        w.family(name, kind, help);
        for d in &disks {
            let Some(v) = d.fields[index] else { continue };
            let value = if scale == 1.0 {
                Value::Int(v)
            } else if scale == 512.0 {
                Value::Int(v.saturating_mul(512))
            } else {
                Value::Float(v as f64 * scale)
            };
            w.sample(name, &[("device", d.device)], value);
        }
    }
    let name = "node_disk_info";
    w.family(name, Kind::Gauge, "Info of /sys/block/<block_device>.");
    let mut text = String::new();
    for d in &disks {
        let udev_file = udev.join(format!("b{}:{}", d.major, d.minor));
        if !read_into(&mut text, &udev_file) {
            text.clear();
        }
        let prop = |key: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix("E:"))
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
        };
        let labels = [
            ("device", d.device),
            ("major", d.major),
            ("minor", d.minor),
            ("model", prop("ID_MODEL")),
            ("path", prop("ID_PATH")),
            ("revision", prop("ID_REVISION")),
            ("serial", prop("ID_SERIAL_SHORT")),
            ("wwn", prop("ID_WWN")),
        ];
        w.sample(name, &labels, 1u64);
    }
}

/// The `/proc/net/dev` columns, receive then transmit, as node_exporter names them.
const NETDEV_COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// `/proc/net/dev` as `node_network_<column>_total{device}`, every interface.
pub(crate) fn write_netdev(text: &str, name: &mut String, w: &mut Exposition) {
    let rows: Vec<(&str, [u64; 16])> = text
        .lines()
        .filter_map(|line| {
            let (dev, rest) = line.split_once(':')?;
            let mut values = [0u64; 16];
            let mut words = rest.split_ascii_whitespace();
            for slot in &mut values {
                *slot = words.next()?.parse().ok()?;
            }
            Some((dev.trim(), values))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let mut help = String::new();
    for (i, column) in NETDEV_COLUMNS.iter().enumerate() {
        name.clear();
        let _ = write!(name, "node_network_{column}_total");
        help.clear();
        let _ = write!(help, "Network device statistic {column}.");
        w.family(name, Kind::Counter, &help);
        for (dev, values) in &rows {
            w.sample(name, &[("device", dev)], values[i]);
        }
    }
}

/// How one `/sys/class/net/<dev>/<file>` becomes a sample value.
struct NetClassFile {
    family: &'static str,
    file: &'static str,
    kind: Kind,
    help: &'static str,
    parse: fn(&str) -> Option<f64>,
}

fn dec(s: &str) -> Option<f64> {
    s.parse::<i64>().ok().map(|v| v as f64)
}

fn hex(s: &str) -> Option<f64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .ok()
        .map(|v| v as f64)
}

/// `speed` is in Mbit/s; -1 (unknown) gives -125000, as node_exporter 1.5 reports it.
fn speed(s: &str) -> Option<f64> {
    s.parse::<i64>().ok().map(|v| v as f64 * 125_000.0)
}

fn operstate_up(s: &str) -> Option<f64> {
    Some(f64::from(u8::from(s == "up")))
}

/// node_exporter's netclass families, in its order.
const NETCLASS: [NetClassFile; 18] = [
    NetClassFile {
        family: "node_network_address_assign_type",
        file: "addr_assign_type",
        kind: Kind::Gauge,
        help: "Network device property: address_assign_type",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_carrier",
        file: "carrier",
        kind: Kind::Gauge,
        help: "Network device property: carrier",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_carrier_changes_total",
        file: "carrier_changes",
        kind: Kind::Counter,
        help: "Network device property: carrier_changes_total",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_carrier_down_changes_total",
        file: "carrier_down_count",
        kind: Kind::Counter,
        help: "Network device property: carrier_down_changes_total",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_carrier_up_changes_total",
        file: "carrier_up_count",
        kind: Kind::Counter,
        help: "Network device property: carrier_up_changes_total",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_device_id",
        file: "dev_id",
        kind: Kind::Gauge,
        help: "Network device property: device_id",
        parse: hex,
    },
    NetClassFile {
        family: "node_network_dormant",
        file: "dormant",
        kind: Kind::Gauge,
        help: "Network device property: dormant",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_flags",
        file: "flags",
        kind: Kind::Gauge,
        help: "Network device property: flags",
        parse: hex,
    },
    NetClassFile {
        family: "node_network_iface_id",
        file: "ifindex",
        kind: Kind::Gauge,
        help: "Network device property: iface_id",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_iface_link",
        file: "iflink",
        kind: Kind::Gauge,
        help: "Network device property: iface_link",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_iface_link_mode",
        file: "link_mode",
        kind: Kind::Gauge,
        help: "Network device property: iface_link_mode",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_mtu_bytes",
        file: "mtu",
        kind: Kind::Gauge,
        help: "Network device property: mtu_bytes",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_name_assign_type",
        file: "name_assign_type",
        kind: Kind::Gauge,
        help: "Network device property: name_assign_type",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_net_dev_group",
        file: "netdev_group",
        kind: Kind::Gauge,
        help: "Network device property: net_dev_group",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_protocol_type",
        file: "type",
        kind: Kind::Gauge,
        help: "Network device property: protocol_type",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_receive_nohandler_total",
        file: "statistics/rx_nohandler",
        kind: Kind::Counter,
        help: "Network device statistic receive_nohandler.",
        parse: dec,
    },
    NetClassFile {
        family: "node_network_speed_bytes",
        file: "speed",
        kind: Kind::Gauge,
        help: "Network device property: speed_bytes",
        parse: speed,
    },
    NetClassFile {
        family: "node_network_transmit_queue_length",
        file: "tx_queue_len",
        kind: Kind::Gauge,
        help: "Network device property: transmit_queue_length",
        parse: dec,
    },
];

/// The text files of `node_network_info`'s labels, then `operstate`.
const NETCLASS_INFO: [&str; 5] = ["address", "broadcast", "duplex", "ifalias", "operstate"];

/// One interface's `/sys/class/net` readings.
pub(crate) struct NetClass {
    device: String,
    values: [Option<f64>; NETCLASS.len()],
    info: [String; NETCLASS_INFO.len()],
}

fn write_netclass(devices: &[NetClass], w: &mut Exposition) {
    if devices.is_empty() {
        return;
    }
    for (i, f) in NETCLASS.iter().enumerate() {
        if devices.iter().all(|d| d.values[i].is_none()) {
            continue;
        }
        w.family(f.family, f.kind, f.help);
        for d in devices {
            if let Some(v) = d.values[i] {
                w.sample(f.family, &[("device", &d.device)], v);
            }
        }
    }
    let name = "node_network_info";
    w.family(
        name,
        Kind::Gauge,
        "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
    );
    for d in devices {
        let [address, broadcast, duplex, ifalias, operstate] = &d.info;
        let labels = [
            ("address", address.as_str()),
            ("broadcast", broadcast),
            ("device", &d.device),
            ("duplex", duplex),
            ("ifalias", ifalias),
            ("operstate", operstate),
        ];
        w.sample(name, &labels, 1u64);
    }
    let name = "node_network_up";
    w.family(
        name,
        Kind::Gauge,
        "Value is 1 if operstate is 'up', 0 otherwise.",
    );
    for d in devices {
        let up = operstate_up(&d.info[4]).unwrap_or(0.0);
        w.sample(name, &[("device", &d.device)], up);
    }
}

/// Whether node_exporter keeps a netstat field by default:
/// `^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$`
pub(crate) fn netstat_kept(proto: &str, field: &str) -> bool {
    matches!(field, "InErrors" | "InErrs")
        || (proto == "Ip" && field == "Forwarding")
        || (matches!(proto, "Ip6" | "IpExt") && matches!(field, "InOctets" | "OutOctets"))
        || (matches!(proto, "Icmp" | "Icmp6") && matches!(field, "InMsgs" | "OutMsgs"))
        || (proto == "TcpExt"
            && (field.starts_with("Listen")
                || field.starts_with("Syncookies")
                || matches!(field, "TCPSynRetrans" | "TCPTimeouts")))
        || (proto == "Tcp"
            && matches!(
                field,
                "ActiveOpens"
                    | "InSegs"
                    | "OutSegs"
                    | "OutRsts"
                    | "PassiveOpens"
                    | "RetransSegs"
                    | "CurrEstab"
            ))
        || (matches!(proto, "Udp" | "Udp6")
            && matches!(
                field,
                "InDatagrams" | "OutDatagrams" | "NoPorts" | "RcvbufErrors" | "SndbufErrors"
            ))
}

/// Turns `/proc/net/snmp6`'s `Ip6InOctets 123` lines into netstat's header/value line pairs.
pub(crate) fn snmp6_as_netstat(text: &str, out: &mut String) {
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let (Some(key), Some(v)) = (words.next(), words.next()) else {
            continue;
        };
        let Some(six) = key.find('6') else { continue };
        let (proto, field) = key.split_at(six + 1);
        let _ = writeln!(out, "{proto}: {field}\n{proto}: {v}");
    }
}

/// `/proc/net/netstat` and `/proc/net/snmp` (pairs of a header and a value line per protocol)
/// as untyped `node_netstat_<Proto>_<Field>`, the fields node_exporter keeps.
pub(crate) fn write_netstat(text: &str, name: &mut String, w: &mut Exposition) {
    let mut lines = text.lines();
    while let (Some(header), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, fields)), Some((proto2, values))) =
            (header.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if proto != proto2 {
            continue;
        }
        for (field, v) in fields
            .split_ascii_whitespace()
            .zip(values.split_ascii_whitespace())
        {
            if !netstat_kept(proto, field) {
                continue;
            }
            let Some(v) =
                number(v).or_else(|| v.parse::<i64>().ok().map(|v| Value::Float(v as f64)))
            else {
                continue;
            };
            name.clear();
            let _ = write!(name, "node_netstat_{proto}_{field}");
            let help = format!("Statistic {proto}{field}.");
            w.single(name, Kind::Untyped, &help, v);
        }
    }
}

/// `/proc/net/sockstat` and `sockstat6` as `node_sockstat_<PROTO>_<field>`; `mem` (pages)
/// also as `_mem_bytes`.
pub(crate) fn write_sockstat(text: &str, page_size: u64, name: &mut String, w: &mut Exposition) {
    for line in text.lines() {
        let Some((proto, rest)) = line.split_once(':') else {
            continue;
        };
        let words: Vec<&str> = rest.split_ascii_whitespace().collect();
        for pair in words.chunks(2) {
            let [field, v] = pair else { continue };
            let Ok(v) = v.parse::<u64>() else { continue };
            name.clear();
            let _ = write!(name, "node_sockstat_{proto}_{field}");
            let help = format!("Number of {proto} sockets in state {field}.");
            w.single(name, Kind::Gauge, &help, v);
            if *field == "mem" {
                name.push_str("_bytes");
                let help = format!("Number of {proto} sockets in state mem_bytes.");
                w.single(name, Kind::Gauge, &help, v.saturating_mul(page_size));
            }
        }
    }
}

/// `/proc/net/stat/nf_conntrack` (hex, one row per CPU) summed, as node_exporter's
/// `node_nf_conntrack_stat_*` gauges.
pub(crate) fn write_conntrack_stat(text: &str, w: &mut Exposition) {
    let mut lines = text.lines();
    let Some(header) = lines.next() else { return };
    let columns: Vec<&str> = header.split_ascii_whitespace().collect();
    let mut sums = vec![0u64; columns.len()];
    for line in lines {
        for (sum, v) in sums.iter_mut().zip(line.split_ascii_whitespace()) {
            *sum = sum.saturating_add(u64::from_str_radix(v, 16).unwrap_or(0));
        }
    }
    for (field, help) in [
        ("found", "Number of searched entries which were successful."),
        (
            "invalid",
            "Number of packets seen which can not be tracked.",
        ),
        (
            "ignore",
            "Number of packets seen which are already connected to a conntrack entry.",
        ),
        ("insert", "Number of entries inserted into the list."),
        (
            "insert_failed",
            "Number of entries for which list insertion was attempted but failed.",
        ),
        (
            "drop",
            "Number of packets dropped due to conntrack failure.",
        ),
        (
            "early_drop",
            "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
        ),
        (
            "search_restart",
            "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
        ),
    ] {
        if let Some(i) = columns.iter().position(|c| *c == field) {
            let name = format!("node_nf_conntrack_stat_{field}");
            w.single(&name, Kind::Gauge, help, sums[i]);
        }
    }
}

/// `/proc/net/arp` as `node_arp_entries{device}`.
pub(crate) fn write_arp(text: &str, w: &mut Exposition) {
    let mut counts: Vec<(&str, u64)> = Vec::new();
    for line in text.lines().skip(1) {
        let Some(dev) = line.split_ascii_whitespace().nth(5) else {
            continue;
        };
        match counts.iter_mut().find(|(d, _)| *d == dev) {
            Some((_, n)) => *n += 1,
            None => counts.push((dev, 1)),
        }
    }
    if counts.is_empty() {
        return;
    }
    let name = "node_arp_entries";
    w.family(name, Kind::Gauge, "ARP entries by device");
    for (dev, n) in counts {
        w.sample(name, &[("device", dev)], n);
    }
}

/// `/proc/net/softnet_stat` (hex, one row per CPU) as `node_softnet_*{cpu}`: node_exporter
/// 1.5's three counters, and the columns later node_exporters (and "Node Exporter Full"'s
/// RPS panel) read where this kernel writes them.
pub(crate) fn write_softnet(text: &str, w: &mut Exposition) {
    let columns = text
        .lines()
        .next()
        .map_or(0, |l| l.split_ascii_whitespace().count());
    for (column, family, kind, help) in [
        (
            0,
            "node_softnet_processed_total",
            Kind::Counter,
            "Number of processed packets",
        ),
        (
            1,
            "node_softnet_dropped_total",
            Kind::Counter,
            "Number of dropped packets",
        ),
        (
            2,
            "node_softnet_times_squeezed_total",
            Kind::Counter,
            "Number of times processing packets ran out of quota",
        ),
        (
            8,
            "node_softnet_cpu_collision_total",
            Kind::Counter,
            "Number of collision occur while obtaining device lock while transmitting",
        ),
        (
            9,
            "node_softnet_received_rps_total",
            Kind::Counter,
            "Number of times cpu woken up received_rps",
        ),
        (
            10,
            "node_softnet_flow_limit_count_total",
            Kind::Counter,
            "Number of times flow limit has been reached",
        ),
        // The backlog is written from kernel 5.10 on, with the CPU's index after it.
        (
            11,
            "node_softnet_backlog_len",
            Kind::Gauge,
            "Softnet backlog status",
        ),
    ] {
        if column >= columns || (column == 11 && columns < 13) {
            continue;
        }
        w.family(family, kind, help);
        for (cpu, line) in text.lines().enumerate() {
            let v = line
                .split_ascii_whitespace()
                .nth(column)
                .and_then(|v| u64::from_str_radix(v, 16).ok())
                .unwrap_or(0);
            w.sample(family, &[("cpu", &cpu.to_string())], v);
        }
    }
}

/// Sums the `tx_queue:rx_queue` column of `/proc/net/udp` or `udp6`.
pub(crate) fn udp_queues(text: &str) -> (u64, u64) {
    let (mut tx, mut rx) = (0u64, 0u64);
    for line in text.lines().skip(1) {
        let Some((t, r)) = line
            .split_ascii_whitespace()
            .nth(4)
            .and_then(|q| q.split_once(':'))
        else {
            continue;
        };
        tx = tx.saturating_add(u64::from_str_radix(t, 16).unwrap_or(0));
        rx = rx.saturating_add(u64::from_str_radix(r, 16).unwrap_or(0));
    }
    (tx, rx)
}

/// The local time zone's abbreviation and offset from UTC in seconds, from the C library.
fn local_time_zone() -> Option<(String, i64)> {
    let now: libc::time_t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs()
        .try_into()
        .ok()?;
    // SAFETY: `tm` is plain data that localtime_r fills; a null return is handled, and the
    // zone name it points to is static (tzname) and NUL-terminated.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() || tm.tm_zone.is_null() {
            return None;
        }
        let zone = std::ffi::CStr::from_ptr(tm.tm_zone)
            .to_string_lossy()
            .into_owned();
        Some((zone, tm.tm_gmtoff))
    }
}

/// The kernel clock's discipline (`adjtimex` without changes) as `node_timex_*`.
/// False when the kernel refused `adjtimex`.
fn write_timex(w: &mut Exposition) -> bool {
    // SAFETY: `timex` is plain data; modes = 0 only reads the kernel's values.
    let (state, t) = unsafe {
        let mut t: libc::timex = std::mem::zeroed();
        (libc::adjtimex(&mut t), t)
    };
    if state < 0 {
        return false;
    }
    let nano = t.status & libc::STA_NANO != 0;
    let divisor = if nano { 1e9 } else { 1e6 };
    let ppm = 65536.0 * 1e6;
    let gauges: [(&str, &str, f64); 13] = [
        (
            "node_timex_offset_seconds",
            "Time offset in between local system and reference clock.",
            t.offset as f64 / divisor,
        ),
        (
            "node_timex_frequency_adjustment_ratio",
            "Local clock frequency adjustment.",
            1.0 + t.freq as f64 / ppm,
        ),
        (
            "node_timex_maxerror_seconds",
            "Maximum error in seconds.",
            t.maxerror as f64 / 1e6,
        ),
        (
            "node_timex_estimated_error_seconds",
            "Estimated error in seconds.",
            t.esterror as f64 / 1e6,
        ),
        (
            "node_timex_status",
            "Value of the status array bits.",
            f64::from(t.status),
        ),
        (
            "node_timex_loop_time_constant",
            "Phase-locked loop time constant.",
            t.constant as f64,
        ),
        (
            "node_timex_tick_seconds",
            "Seconds between clock ticks.",
            t.tick as f64 / 1e6,
        ),
        (
            "node_timex_pps_frequency_hertz",
            "Pulse per second frequency.",
            t.ppsfreq as f64 / ppm,
        ),
        (
            "node_timex_pps_jitter_seconds",
            "Pulse per second jitter.",
            t.jitter as f64 / divisor,
        ),
        (
            "node_timex_pps_shift_seconds",
            "Pulse per second interval duration.",
            t.shift as f64,
        ),
        (
            "node_timex_pps_stability_hertz",
            "Pulse per second stability, average of recent frequency changes.",
            t.stabil as f64 / ppm,
        ),
        (
            "node_timex_tai_offset_seconds",
            "International Atomic Time (TAI) offset.",
            t.tai as f64,
        ),
        (
            "node_timex_sync_status",
            "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
            f64::from(u8::from(state != libc::TIME_ERROR)),
        ),
    ];
    for (name, help, v) in gauges {
        w.single(name, Kind::Gauge, help, v);
    }
    for (name, help, v) in [
        (
            "node_timex_pps_calibration_total",
            "Pulse per second count of calibration intervals.",
            t.calcnt,
        ),
        (
            "node_timex_pps_error_total",
            "Pulse per second count of calibration errors.",
            t.errcnt,
        ),
        (
            "node_timex_pps_jitter_total",
            "Pulse per second count of jitter limit exceeded events.",
            t.jitcnt,
        ),
        (
            "node_timex_pps_stability_exceeded_total",
            "Pulse per second count of stability limit exceeded events.",
            t.stbcnt,
        ),
    ] {
        w.single(name, Kind::Counter, help, v.max(0) as u64);
    }
    true
}

/// node_exporter's report on its own scrape: each collector's duration and success, under
/// node_exporter's collector names where the collector is the same.
pub(crate) fn write_collector_times(times: &[(&str, Duration, bool)], w: &mut Exposition) {
    let name = "node_scrape_collector_duration_seconds";
    w.family(
        name,
        Kind::Gauge,
        "node_exporter: Duration of a collector scrape.",
    );
    for (collector, took, _) in times {
        w.sample(name, &[("collector", collector)], took.as_secs_f64());
    }
    let name = "node_scrape_collector_success";
    w.family(
        name,
        Kind::Gauge,
        "node_exporter: Whether a collector succeeded.",
    );
    for (collector, _, ok) in times {
        w.sample(name, &[("collector", collector)], *ok);
    }
}

/// `/etc/os-release` as `node_os_info` and `node_os_version` (VERSION_ID as a number).
pub(crate) fn write_os_release(text: &str, w: &mut Exposition) {
    if text.is_empty() {
        return;
    }
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map_or("", |v| v.trim().trim_matches('"'))
    };
    let info = [
        ("build_id", get("BUILD_ID")),
        ("id", get("ID")),
        ("id_like", get("ID_LIKE")),
        ("image_id", get("IMAGE_ID")),
        ("image_version", get("IMAGE_VERSION")),
        ("name", get("NAME")),
        ("pretty_name", get("PRETTY_NAME")),
        ("variant", get("VARIANT")),
        ("variant_id", get("VARIANT_ID")),
        ("version", get("VERSION")),
        ("version_codename", get("VERSION_CODENAME")),
        ("version_id", get("VERSION_ID")),
    ];
    w.family("node_os_info", Kind::Gauge, "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.");
    w.sample("node_os_info", &info, 1u64);
    let version: f64 = get("VERSION_ID")
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
        .parse()
        .unwrap_or(0.0);
    w.family(
        "node_os_version",
        Kind::Gauge,
        "Metric containing the major.minor part of the OS version.",
    );
    w.sample(
        "node_os_version",
        &[
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("name", get("NAME")),
        ],
        version,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut String, &mut Exposition)) -> String {
        let mut w = Exposition::default();
        let mut name = String::new();
        f(&mut name, &mut w);
        w.into_text()
    }

    fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn meminfo_names_and_units_are_node_exporters() {
        let text = "MemTotal:       16384 kB\nActive(anon):      8 kB\nHugePages_Total:       4\n";
        let out = written(|n, w| write_meminfo(text, n, w));
        assert_eq!(value(&out, "node_memory_MemTotal_bytes"), Some("16777216"));
        assert_eq!(value(&out, "node_memory_Active_anon_bytes"), Some("8192"));
        assert_eq!(value(&out, "node_memory_HugePages_Total"), Some("4"));
        assert!(out.contains("# TYPE node_memory_MemTotal_bytes gauge\n"));
    }

    #[test]
    fn netstat_keeps_node_exporters_default_fields() {
        let mut text = String::from(
            "TcpExt: SyncookiesSent ListenDrops PruneCalled\nTcpExt: 1 2 3\n\
             Tcp: RtoAlgorithm MaxConn CurrEstab InErrs\nTcp: 1 -1 7 0\n",
        );
        snmp6_as_netstat(
            "Ip6InOctets   \t5574\nIp6InReceives 3\nUdpLite6InErrors 0\n",
            &mut text,
        );
        let out = written(|n, w| write_netstat(&text, n, w));
        assert_eq!(value(&out, "node_netstat_TcpExt_SyncookiesSent"), Some("1"));
        assert_eq!(value(&out, "node_netstat_TcpExt_ListenDrops"), Some("2"));
        assert_eq!(value(&out, "node_netstat_Tcp_CurrEstab"), Some("7"));
        assert_eq!(value(&out, "node_netstat_Tcp_InErrs"), Some("0"));
        assert_eq!(value(&out, "node_netstat_Ip6_InOctets"), Some("5574"));
        assert_eq!(value(&out, "node_netstat_UdpLite6_InErrors"), Some("0"));
        assert!(!out.contains("PruneCalled") && !out.contains("MaxConn"));
        assert!(!out.contains("Ip6_InReceives"));
        assert!(out.contains("# TYPE node_netstat_Tcp_CurrEstab untyped\n"));
    }

    #[test]
    fn sockstat_mem_is_also_given_in_bytes() {
        let text = "sockets: used 27\nTCP: inuse 5 orphan 0 tw 1 alloc 5 mem 3\nTCP6: inuse 2\n";
        let out = written(|n, w| write_sockstat(text, 4096, n, w));
        assert_eq!(value(&out, "node_sockstat_sockets_used"), Some("27"));
        assert_eq!(value(&out, "node_sockstat_TCP_mem"), Some("3"));
        assert_eq!(value(&out, "node_sockstat_TCP_mem_bytes"), Some("12288"));
        assert_eq!(value(&out, "node_sockstat_TCP6_inuse"), Some("2"));
    }

    #[test]
    fn diskstats_in_seconds_and_bytes_for_whole_disks_only() {
        let text = " 254 0 vda 10 2 8 1500 20 3 16 2500 1 4000 4500 5 0 6 7 8 9\n\
                     254 1 vda1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n";
        let out = written(|_, w| write_diskstats(text, Path::new("/nonexistent"), w));
        assert_eq!(
            value(&out, "node_disk_reads_merged_total{device=\"vda\"}"),
            Some("2")
        );
        assert_eq!(
            value(&out, "node_disk_read_bytes_total{device=\"vda\"}"),
            Some("4096")
        );
        assert_eq!(
            value(&out, "node_disk_read_time_seconds_total{device=\"vda\"}"),
            Some("1.5")
        );
        assert_eq!(value(&out, "node_disk_io_now{device=\"vda\"}"), Some("1"));
        assert_eq!(
            value(
                &out,
                "node_disk_io_time_weighted_seconds_total{device=\"vda\"}"
            ),
            Some("4.5")
        );
        assert_eq!(
            value(&out, "node_disk_flush_requests_total{device=\"vda\"}"),
            Some("8")
        );
        assert!(!out.contains("vda1"));
        assert!(out.contains("node_disk_info{device=\"vda\",major=\"254\",minor=\"0\","));
    }

    #[test]
    fn vmstat_filter_is_node_exporters() {
        for kept in ["oom_kill", "pgpgin", "pswpout", "pgfault", "pgmajfault"] {
            assert!(vmstat_kept(kept), "{kept}");
        }
        for dropped in ["nr_free_pages", "pgalloc_normal", "thp_fault_alloc"] {
            assert!(!vmstat_kept(dropped), "{dropped}");
        }
    }

    #[test]
    fn each_collector_reports_its_time_and_whether_its_files_could_be_read() {
        let proc_root = tempfile::tempdir().unwrap();
        let sys_root = tempfile::tempdir().unwrap();
        std::fs::write(
            proc_root.path().join("meminfo"),
            "MemTotal:       1000 kB\nMemFree:         500 kB\n",
        )
        .unwrap();
        let mut collector = NodeCollector::with_roots(proc_root.path(), sys_root.path());
        let mut w = Exposition::default();
        collector.write(None, &mut w);
        let out = w.into_text();
        let success = |collector: &str| {
            value(
                &out,
                &format!("node_scrape_collector_success{{collector=\"{collector}\"}}"),
            )
        };
        assert_eq!(success("meminfo"), Some("1"), "{out}");
        assert_eq!(
            value(&out, "node_memory_MemTotal_bytes"),
            Some("1024000"),
            "{out}"
        );
        for missing in ["vmstat", "stat", "diskstats", "netdev", "netclass", "arp"] {
            assert_eq!(success(missing), Some("0"), "{missing}: {out}");
        }
        let took: f64 = value(
            &out,
            "node_scrape_collector_duration_seconds{collector=\"meminfo\"}",
        )
        .and_then(|v| v.parse().ok())
        .expect("meminfo's duration");
        assert!(took >= 0.0, "{took}");
        let families = out.matches("# TYPE node_scrape_collector_success ").count();
        assert_eq!(families, 1, "one family with every collector: {out}");
    }

    #[test]
    fn softnet_writes_the_columns_this_kernel_has() {
        let new_kernel = "0000000a 00000001 00000002 00000000 00000000 00000000 00000000 00000000 \
                          00000003 00000004 00000005 00000006 00000000 00000000 00000000\n\
                          000000ff 00000000 00000000 00000000 00000000 00000000 00000000 00000000 \
                          00000000 00000000 00000000 00000000 00000001 00000000 00000000\n";
        let out = written(|_, w| write_softnet(new_kernel, w));
        assert_eq!(
            value(&out, "node_softnet_processed_total{cpu=\"1\"}"),
            Some("255")
        );
        assert_eq!(
            value(&out, "node_softnet_cpu_collision_total{cpu=\"0\"}"),
            Some("3")
        );
        assert_eq!(
            value(&out, "node_softnet_received_rps_total{cpu=\"0\"}"),
            Some("4")
        );
        assert_eq!(
            value(&out, "node_softnet_flow_limit_count_total{cpu=\"0\"}"),
            Some("5")
        );
        assert_eq!(
            value(&out, "node_softnet_backlog_len{cpu=\"0\"}"),
            Some("6")
        );
        assert!(out.contains("# TYPE node_softnet_backlog_len gauge\n"));
        // An older kernel's 11 columns: no backlog, and nothing beyond what it writes.
        let old_kernel = "0000000a 00000001 00000002 00000000 00000000 00000000 00000000 00000000 \
                          00000003 00000004 00000005\n";
        let out = written(|_, w| write_softnet(old_kernel, w));
        assert!(out.contains("node_softnet_flow_limit_count_total{cpu=\"0\"} 5"));
        assert!(!out.contains("backlog"), "{out}");
        let out = written(|_, w| write_softnet("0000000a 00000001 00000002\n", w));
        assert!(!out.contains("rps"), "{out}");
        assert!(out.contains("node_softnet_times_squeezed_total{cpu=\"0\"} 2"));
    }
}
