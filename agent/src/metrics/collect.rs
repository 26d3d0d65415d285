//! The host collector: reads /proc (and `statvfs` for filesystems) once per interval and turns
//! the readings into one `HostMetrics` sample, with rates computed against the previous sample.
//!
//! Each subsystem is read on its own; a failure (a missing file, an unreadable mount, text that
//! does not parse) empties only that part of the sample and is logged once until it recovers.
//! The rate math lives in pure functions over previous and current counters so tests reach it.
//!
//! Filesystems follow node_exporter's defaults: its `fs-types-exclude` list (pseudo and
//! read-only image filesystems; `overlay` is kept only when mounted at `/`), its
//! `mount-points-exclude` list (`/dev`, `/proc`, `/sys`, `/run/credentials/*`,
//! `/var/lib/docker/*`, `/var/lib/containers/storage/*`), so `tmpfs` is kept elsewhere. Network
//! filesystems ([`NETWORK_FS_TYPES`]) are skipped because `statvfs` on a dead server blocks
//! without a timeout. Mounts of one device (bind mounts) are reported once, at the first mount
//! point listed. Disks follow node_exporter's `device-exclude`:
//! `^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$` (pseudo devices and
//! partitions).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use procfs::net::InterfaceDeviceStatus;
use procfs::process::MountInfo;
use procfs::{
    DiskStat, ExplicitSystemInfo, FromBufRead, FromBufReadSI, FromRead, KernelStats, LoadAverage,
    Meminfo, Uptime,
};
use strata_proto::v1::{
    CpuMetrics, CpuSeconds, CpuShares, DiskMetrics, FdMetrics, FilesystemMetrics, HostMetrics,
    MemoryMetrics, NetworkMetrics, Pressure,
};

use super::procs::ProcessTable;

/// Filesystem types never reported (node_exporter's default `fs-types-exclude`).
pub const EXCLUDED_FS_TYPES: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "erofs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];

/// Network filesystem types skipped so that a dead server cannot hang the sample in `statvfs`.
pub const NETWORK_FS_TYPES: &[&str] = &[
    "9p",
    "afs",
    "ceph",
    "cifs",
    "fuse.glusterfs",
    "fuse.rclone",
    "fuse.s3fs",
    "fuse.sshfs",
    "glusterfs",
    "lustre",
    "ncpfs",
    "nfs",
    "nfs4",
    "smb3",
    "smbfs",
];

/// Where the collector reads from and how many top processes it lists.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// The procfs mount, normally `/proc`; tests point it elsewhere.
    pub proc_root: PathBuf,
    /// How many processes `top_cpu` and `top_memory` hold in each sample.
    pub top_n: usize,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            top_n: 10,
        }
    }
}

/// Why one subsystem could not be read; logged, never returned from [`Collector::sample`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum CollectError {
    /// The file could not be opened or read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but its text is not what the kernel writes.
    #[error("parsing {}: {reason}", path.display())]
    Parse {
        /// The file that failed.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl CollectError {
    fn parse(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self::Parse {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }

    fn is_not_found(&self) -> bool {
        matches!(self, Self::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The parts of a sample that fail independently; one bit each in the "already logged" mask.
#[derive(Debug, Clone, Copy)]
enum Part {
    Cpu = 0,
    Load,
    Memory,
    Vmstat,
    Pressure,
    Mounts,
    Disks,
    Network,
    Fds,
    Uptime,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Cpu => "cpu",
            Part::Load => "load",
            Part::Memory => "memory",
            Part::Vmstat => "vmstat",
            Part::Pressure => "pressure",
            Part::Mounts => "mounts",
            Part::Disks => "disks",
            Part::Network => "network",
            Part::Fds => "fds",
            Part::Uptime => "uptime",
        }
    }
}

/// CPU time per mode in clock ticks, as in one `cpu` line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTicks {
    fn from_procfs(t: &procfs::CpuTime) -> Self {
        Self {
            user: t.user,
            nice: t.nice,
            system: t.system,
            idle: t.idle,
            iowait: t.iowait.unwrap_or(0),
            irq: t.irq.unwrap_or(0),
            softirq: t.softirq.unwrap_or(0),
            steal: t.steal.unwrap_or(0),
        }
    }

    fn seconds(&self, ticks_per_second: u64) -> CpuSeconds {
        let tps = ticks_per_second.max(1) as f64;
        CpuSeconds {
            user: self.user as f64 / tps,
            nice: self.nice as f64 / tps,
            system: self.system as f64 / tps,
            idle: self.idle as f64 / tps,
            iowait: self.iowait as f64 / tps,
            irq: self.irq as f64 / tps,
            softirq: self.softirq as f64 / tps,
            steal: self.steal as f64 / tps,
        }
    }
}

/// Shares of each CPU mode between two readings, in percent. Modes whose counter went
/// backwards (iowait can) count as zero; no elapsed ticks gives all zeros.
pub(crate) fn cpu_shares(prev: &CpuTicks, cur: &CpuTicks) -> CpuShares {
    let d = |p: u64, c: u64| c.saturating_sub(p) as f64;
    let user = d(prev.user, cur.user);
    let nice = d(prev.nice, cur.nice);
    let system = d(prev.system, cur.system);
    let idle = d(prev.idle, cur.idle);
    let iowait = d(prev.iowait, cur.iowait);
    let irq = d(prev.irq, cur.irq) + d(prev.softirq, cur.softirq);
    let steal = d(prev.steal, cur.steal);
    let total = user + nice + system + idle + iowait + irq + steal;
    if total <= 0.0 {
        return CpuShares::default();
    }
    let pct = |v: f64| v * 100.0 / total;
    CpuShares {
        user: pct(user),
        system: pct(system),
        iowait: pct(iowait),
        steal: pct(steal),
        idle: pct(idle),
        irq: pct(irq),
        nice: pct(nice),
        busy: (100.0 - pct(idle) - pct(iowait) - pct(steal)).max(0.0),
    }
}

/// Per-second rate of a counter between two readings; 0 after a reset or with no time elapsed.
pub(crate) fn rate(prev: u64, cur: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    cur.saturating_sub(prev) as f64 / secs
}

/// The /proc/stat counters kept between samples.
#[derive(Debug, Clone, Default)]
struct CpuCounters {
    total: CpuTicks,
    cores: Vec<CpuTicks>,
    context_switches: u64,
}

/// Builds the CPU part (without load) from the current and, when known, previous counters.
/// Per-core shares are zero when the number of cores changed (CPU hotplug).
fn cpu_metrics(
    cur: &CpuCounters,
    prev: Option<&CpuCounters>,
    elapsed: Option<Duration>,
    ticks_per_second: u64,
) -> CpuMetrics {
    let (total, cores, ctxt_rate) = match (prev, elapsed) {
        (Some(prev), Some(elapsed)) => {
            let cores = if prev.cores.len() == cur.cores.len() {
                prev.cores
                    .iter()
                    .zip(&cur.cores)
                    .map(|(p, c)| cpu_shares(p, c))
                    .collect()
            } else {
                vec![CpuShares::default(); cur.cores.len()]
            };
            (
                cpu_shares(&prev.total, &cur.total),
                cores,
                rate(prev.context_switches, cur.context_switches, elapsed),
            )
        }
        _ => (
            CpuShares::default(),
            vec![CpuShares::default(); cur.cores.len()],
            0.0,
        ),
    };
    CpuMetrics {
        total: Some(total),
        cores,
        context_switches_per_sec: ctxt_rate,
        context_switches_total: cur.context_switches,
        seconds_total: Some(cur.total.seconds(ticks_per_second)),
        core_seconds_total: cur
            .cores
            .iter()
            .map(|c| c.seconds(ticks_per_second))
            .collect(),
        ..CpuMetrics::default()
    }
}

/// The /proc/diskstats counters of one device kept between samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DiskCounters {
    pub reads: u64,
    pub writes: u64,
    pub sectors_read: u64,
    pub sectors_written: u64,
    /// Milliseconds the device had I/O in flight.
    pub io_ms: u64,
}

/// Bytes per diskstats sector, fixed by the kernel whatever the device's sector size.
const SECTOR_BYTES: u64 = 512;

/// One device's disk metrics: totals from `cur`, rates against `prev` over `elapsed`.
pub(crate) fn disk_metrics(
    device: String,
    cur: &DiskCounters,
    prev: Option<&DiskCounters>,
    elapsed: Option<Duration>,
) -> DiskMetrics {
    let mut m = DiskMetrics {
        device,
        read_bytes_total: cur.sectors_read.saturating_mul(SECTOR_BYTES),
        write_bytes_total: cur.sectors_written.saturating_mul(SECTOR_BYTES),
        reads_total: cur.reads,
        writes_total: cur.writes,
        io_time_seconds_total: cur.io_ms as f64 / 1000.0,
        ..DiskMetrics::default()
    };
    if let (Some(p), Some(elapsed)) = (prev, elapsed) {
        m.read_bytes_per_sec =
            rate(p.sectors_read, cur.sectors_read, elapsed) * SECTOR_BYTES as f64;
        m.write_bytes_per_sec =
            rate(p.sectors_written, cur.sectors_written, elapsed) * SECTOR_BYTES as f64;
        m.reads_per_sec = rate(p.reads, cur.reads, elapsed);
        m.writes_per_sec = rate(p.writes, cur.writes, elapsed);
        // io_ms per second of wall time, as a percentage of the interval.
        m.util_percent = (rate(p.io_ms, cur.io_ms, elapsed) / 10.0).min(100.0);
    }
    m
}

/// Whether a block device is left out: pseudo devices and partitions, as node_exporter's
/// `^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$`.
pub(crate) fn disk_excluded(name: &str) -> bool {
    let prefix = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if prefix.len() == name.len() || prefix.is_empty() {
        return false;
    }
    let b = prefix.as_bytes();
    let letter_disk = |p: &[u8]| p.len() == 3 && p[1] == b'd' && b"hsv".contains(&p[0]);
    /// `s` without a leading run of at least one digit followed by `sep`.
    fn digits_then(s: &str, sep: char) -> Option<&str> {
        let rest = s.trim_start_matches(|c: char| c.is_ascii_digit());
        (rest.len() < s.len()).then_some(())?;
        rest.strip_prefix(sep)
    }
    matches!(prefix, "ram" | "zram" | "loop" | "fd")
        || (letter_disk(b) && b[2].is_ascii_lowercase())
        || (b.len() == 4 && b.starts_with(b"xvd") && b[3].is_ascii_lowercase())
        || prefix
            .strip_prefix("nvme")
            .and_then(|r| digits_then(r, 'n'))
            .and_then(|r| digits_then(r, 'p'))
            .is_some_and(|r| r.is_empty())
        || prefix
            .strip_prefix("mmcblk")
            .and_then(|r| digits_then(r, 'p'))
            .is_some_and(|r| r.is_empty())
}

/// The /proc/net/dev counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

/// One interface's network metrics: totals from `cur`, rates against `prev` over `elapsed`.
pub(crate) fn network_metrics(
    interface: String,
    cur: &NetCounters,
    prev: Option<&NetCounters>,
    elapsed: Option<Duration>,
) -> NetworkMetrics {
    let mut m = NetworkMetrics {
        interface,
        rx_bytes_total: cur.rx_bytes,
        tx_bytes_total: cur.tx_bytes,
        rx_packets_total: cur.rx_packets,
        tx_packets_total: cur.tx_packets,
        rx_errors_total: cur.rx_errors,
        tx_errors_total: cur.tx_errors,
        rx_dropped_total: cur.rx_dropped,
        tx_dropped_total: cur.tx_dropped,
        ..NetworkMetrics::default()
    };
    if let (Some(p), Some(elapsed)) = (prev, elapsed) {
        m.rx_bytes_per_sec = rate(p.rx_bytes, cur.rx_bytes, elapsed);
        m.tx_bytes_per_sec = rate(p.tx_bytes, cur.tx_bytes, elapsed);
        m.rx_packets_per_sec = rate(p.rx_packets, cur.rx_packets, elapsed);
        m.tx_packets_per_sec = rate(p.tx_packets, cur.tx_packets, elapsed);
    }
    m
}

/// One line of a /proc/pressure file.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PsiLine {
    pub avg10: f64,
    /// Total stalled time in microseconds.
    pub total_us: u64,
}

/// One /proc/pressure file: `some` always, `full` when the kernel writes it (not for cpu
/// before Linux 5.13).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Psi {
    pub some: PsiLine,
    pub full: Option<PsiLine>,
}

/// Parses a /proc/pressure/{cpu,memory,io} text; `None` without a valid `some` line.
pub(crate) fn parse_psi(text: &str) -> Option<Psi> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let slot = match words.next() {
            Some("some") => &mut some,
            Some("full") => &mut full,
            _ => continue,
        };
        let mut avg10 = None;
        let mut total_us = None;
        for word in words {
            match word.split_once('=') {
                Some(("avg10", v)) => avg10 = v.parse::<f64>().ok(),
                Some(("total", v)) => total_us = v.parse::<u64>().ok(),
                _ => {}
            }
        }
        if let (Some(avg10), Some(total_us)) = (avg10, total_us) {
            *slot = Some(PsiLine { avg10, total_us });
        }
    }
    Some(Psi { some: some?, full })
}

/// Combines the three pressure files into the wire form.
fn pressure(cpu: &Psi, memory: &Psi, io: &Psi) -> Pressure {
    let secs = |l: Option<PsiLine>| l.map_or(0.0, |l| l.total_us as f64 / 1e6);
    let avg = |l: Option<PsiLine>| l.map_or(0.0, |l| l.avg10);
    Pressure {
        cpu_some_avg10: cpu.some.avg10,
        memory_some_avg10: memory.some.avg10,
        memory_full_avg10: avg(memory.full),
        io_some_avg10: io.some.avg10,
        io_full_avg10: avg(io.full),
        cpu_some_seconds_total: secs(Some(cpu.some)),
        memory_some_seconds_total: secs(Some(memory.some)),
        memory_full_seconds_total: secs(memory.full),
        io_some_seconds_total: secs(Some(io.some)),
        io_full_seconds_total: secs(io.full),
    }
}

/// Counters picked from /proc/vmstat; absent keys read as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Vmstat {
    pub pswpin: u64,
    pub pswpout: u64,
    pub oom_kill: u64,
}

/// Picks the swap and OOM counters from /proc/vmstat without building a map of all ~200 keys.
pub(crate) fn parse_vmstat(text: &str) -> Vmstat {
    let mut v = Vmstat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        let slot = match key {
            "pswpin" => &mut v.pswpin,
            "pswpout" => &mut v.pswpout,
            "oom_kill" => &mut v.oom_kill,
            _ => continue,
        };
        *slot = value.trim().parse().unwrap_or(0);
    }
    v
}

/// Parses /proc/sys/fs/file-nr: `allocated unused max`.
pub(crate) fn parse_file_nr(text: &str) -> Option<FdMetrics> {
    let mut fields = text.split_ascii_whitespace();
    let allocated = fields.next()?.parse().ok()?;
    let _unused: u64 = fields.next()?.parse().ok()?;
    let max = fields.next()?.parse().ok()?;
    Some(FdMetrics { allocated, max })
}

/// Undoes the octal escapes (`\040` for space, ...) that mountinfo uses in paths.
fn unescape_octal(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let esc = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match esc {
            Some(d) => {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A mount kept for `statvfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub readonly: bool,
}

/// Whether a mount is reported, by its type and where it is mounted (see the module doc).
pub(crate) fn mount_included(fs_type: &str, mount_point: &str) -> bool {
    if EXCLUDED_FS_TYPES.contains(&fs_type) || NETWORK_FS_TYPES.contains(&fs_type) {
        return false;
    }
    if fs_type == "overlay" && mount_point != "/" {
        return false;
    }
    let under = |dir: &str| {
        mount_point
            .strip_prefix(dir)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let below = |dir: &str| {
        mount_point
            .strip_prefix(dir)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
    };
    !(under("/dev")
        || under("/proc")
        || under("/sys")
        || below("/run/credentials")
        || below("/var/lib/docker")
        || below("/var/lib/containers/storage"))
}

/// Parses a mountinfo text into the mounts to report: filtered, one per device. Malformed
/// lines are skipped.
pub(crate) fn parse_mounts(text: &str) -> Vec<Mount> {
    let mut seen = HashSet::new();
    let mut mounts = Vec::new();
    for line in text.lines() {
        let info = match MountInfo::from_line(line) {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(line, %error, "skipping malformed mountinfo line");
                continue;
            }
        };
        let mount_point = unescape_octal(&info.mount_point.to_string_lossy());
        if !mount_included(&info.fs_type, &mount_point) || !seen.insert(info.majmin.clone()) {
            continue;
        }
        mounts.push(Mount {
            mount_point,
            device: info
                .mount_source
                .as_deref()
                .map_or_else(|| "none".to_owned(), unescape_octal),
            readonly: info.mount_options.contains_key("ro"),
            fs_type: info.fs_type,
        });
    }
    mounts
}

/// The `statvfs` numbers a filesystem's metrics are made of.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FsSizes {
    pub fragment_size: u64,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
}

/// One filesystem's metrics. `used_percent` is as `df` shows it: used / (used + avail), so the
/// blocks reserved for root count as unavailable rather than free.
pub(crate) fn filesystem_metrics(mount: &Mount, s: &FsSizes) -> FilesystemMetrics {
    let size = s.blocks.saturating_mul(s.fragment_size);
    let free = s.blocks_free.saturating_mul(s.fragment_size);
    let avail = s.blocks_avail.saturating_mul(s.fragment_size);
    let used = size.saturating_sub(free);
    let percent = |part: u64, whole: u64| {
        if whole == 0 {
            0.0
        } else {
            part as f64 * 100.0 / whole as f64
        }
    };
    FilesystemMetrics {
        mountpoint: mount.mount_point.clone(),
        device: mount.device.clone(),
        fstype: mount.fs_type.clone(),
        size_bytes: size,
        used_bytes: used,
        avail_bytes: avail,
        free_bytes: free,
        inodes_total: s.files,
        inodes_free: s.files_free,
        readonly: mount.readonly,
        used_percent: percent(used, used.saturating_add(avail)),
        inodes_used_percent: percent(s.files.saturating_sub(s.files_free), s.files),
    }
}

/// Widens a parsed `f32` to the `f64` of the same decimal text (0.24, not 0.23999999463558197).
fn decimal_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// Reads `root/rel` into `buf` (cleared first).
fn read_file(buf: &mut String, root: &Path, rel: &str) -> Result<PathBuf, CollectError> {
    let path = root.join(rel);
    buf.clear();
    File::open(&path)
        .and_then(|mut f| f.read_to_string(buf))
        .map_err(|source| CollectError::Read {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Reads the host once per call and keeps what the next call needs for rates.
///
/// Exists so the agent has one owner of all the previous counters (CPU ticks, disk and network
/// counters, per-process ticks) and one place that decides what a failed read means.
#[derive(Debug)]
pub struct Collector {
    options: CollectorOptions,
    system_info: ExplicitSystemInfo,
    buf: String,
    prev_at: Option<Instant>,
    prev_cpu: Option<CpuCounters>,
    prev_vmstat: Option<Vmstat>,
    prev_disks: HashMap<String, DiskCounters>,
    prev_nets: HashMap<String, NetCounters>,
    mountinfo_text: String,
    mounts: Vec<Mount>,
    procs: ProcessTable,
    /// Bit per [`Part`] whose failure is already logged; cleared when it reads again.
    failing: u32,
    failing_mounts: HashSet<String>,
}

impl Collector {
    /// A collector that has not sampled yet; the first sample has zero rates.
    pub fn new(options: CollectorOptions) -> Self {
        let system_info = ExplicitSystemInfo {
            boot_time_secs: 0,
            ticks_per_second: procfs::ticks_per_second(),
            page_size: procfs::page_size(),
            is_little_endian: cfg!(target_endian = "little"),
        };
        let procs = ProcessTable::new(
            options.proc_root.clone(),
            system_info.ticks_per_second,
            system_info.page_size,
        );
        Self {
            options,
            system_info,
            buf: String::with_capacity(4096),
            prev_at: None,
            prev_cpu: None,
            prev_vmstat: None,
            prev_disks: HashMap::new(),
            prev_nets: HashMap::new(),
            mountinfo_text: String::new(),
            mounts: Vec::new(),
            procs,
            failing: 0,
            failing_mounts: HashSet::new(),
        }
    }

    /// Takes one sample; rates are computed against the previous sample (first sample: rates
    /// 0). `node_id` and `node_name` are left empty for the caller to fill.
    /// The processes and threads of the newest sample's scan, by state.
    pub fn process_counts(&self) -> super::processes::ProcessCounts {
        self.procs.counts()
    }

    pub fn sample(&mut self) -> HostMetrics {
        let now = Instant::now();
        let elapsed = self.prev_at.map(|t| now.duration_since(t));
        let mut buf = std::mem::take(&mut self.buf);
        let mut m = HostMetrics {
            time_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            ..HostMetrics::default()
        };

        let stat = self.read_stat(&mut buf);
        let stat = self.note(Part::Cpu, stat);
        let load = read_file(&mut buf, &self.options.proc_root, "loadavg").and_then(|path| {
            LoadAverage::from_read(buf.as_bytes()).map_err(|e| CollectError::parse(&path, e))
        });
        let load = self.note(Part::Load, load);
        if stat.is_some() || load.is_some() {
            let mut cpu = CpuMetrics::default();
            if let Some((counters, ks)) = stat {
                cpu = cpu_metrics(
                    &counters,
                    self.prev_cpu.as_ref(),
                    elapsed,
                    self.system_info.ticks_per_second,
                );
                cpu.procs_running = ks.procs_running.map_or(0, u64::from);
                cpu.procs_blocked = ks.procs_blocked.map_or(0, u64::from);
                cpu.forks_total = ks.processes;
                m.boot_time_unix_secs = i64::try_from(ks.btime).unwrap_or(0);
                self.prev_cpu = Some(counters);
            } else {
                self.prev_cpu = None;
            }
            if let Some(load) = load {
                cpu.load1 = decimal_f64(load.one);
                cpu.load5 = decimal_f64(load.five);
                cpu.load15 = decimal_f64(load.fifteen);
            }
            m.cpu = Some(cpu);
        }

        let vmstat =
            read_file(&mut buf, &self.options.proc_root, "vmstat").map(|_| parse_vmstat(&buf));
        let vmstat = self.note(Part::Vmstat, vmstat);
        let meminfo = read_file(&mut buf, &self.options.proc_root, "meminfo").and_then(|path| {
            Meminfo::from_buf_read(buf.as_bytes()).map_err(|e| CollectError::parse(&path, e))
        });
        if let Some(mi) = self.note(Part::Memory, meminfo) {
            let available = mi
                .mem_available
                .unwrap_or(mi.mem_free + mi.cached + mi.buffers);
            let mut mem = MemoryMetrics {
                total_bytes: mi.mem_total,
                available_bytes: available,
                used_bytes: mi.mem_total.saturating_sub(available),
                free_bytes: mi.mem_free,
                cached_bytes: mi.cached,
                buffers_bytes: mi.buffers,
                swap_total_bytes: mi.swap_total,
                swap_free_bytes: mi.swap_free,
                ..MemoryMetrics::default()
            };
            if let Some(v) = vmstat {
                mem.swap_in_total = v.pswpin;
                mem.swap_out_total = v.pswpout;
                if let (Some(p), Some(elapsed)) = (self.prev_vmstat, elapsed) {
                    mem.swap_in_per_sec = rate(p.pswpin, v.pswpin, elapsed);
                    mem.swap_out_per_sec = rate(p.pswpout, v.pswpout, elapsed);
                }
            }
            m.memory = Some(mem);
        }
        m.oom_kills_total = vmstat.map_or(0, |v| v.oom_kill);
        self.prev_vmstat = vmstat;

        let psi = self.read_pressure(&mut buf);
        m.pressure = self.note(Part::Pressure, psi);

        let mounts = self.refresh_mounts(&mut buf);
        if self.note(Part::Mounts, mounts).is_some() {
            m.filesystems = self.filesystems();
        }

        let disks = self.read_disks(&mut buf, elapsed);
        m.disks = self.note(Part::Disks, disks).unwrap_or_else(|| {
            self.prev_disks.clear();
            Vec::new()
        });
        let nets = self.read_networks(&mut buf, elapsed);
        m.networks = self.note(Part::Network, nets).unwrap_or_else(|| {
            self.prev_nets.clear();
            Vec::new()
        });

        let fds = read_file(&mut buf, &self.options.proc_root, "sys/fs/file-nr").and_then(|path| {
            parse_file_nr(&buf).ok_or_else(|| CollectError::parse(&path, "expected three numbers"))
        });
        m.fds = self.note(Part::Fds, fds);
        let uptime = read_file(&mut buf, &self.options.proc_root, "uptime").and_then(|path| {
            Uptime::from_read(buf.as_bytes()).map_err(|e| CollectError::parse(&path, e))
        });
        m.uptime_secs = self
            .note(Part::Uptime, uptime)
            .map_or(0, |u| u.uptime.max(0.0) as u64);

        self.procs.scan();
        m.top_cpu = self.procs.top_by_cpu(self.options.top_n);
        m.top_memory = self.procs.top_by_memory(self.options.top_n);

        self.buf = buf;
        self.prev_at = Some(now);
        m
    }

    /// Logs a part's failure once per streak of failures and turns the result into an option.
    fn note<T>(&mut self, part: Part, result: Result<T, CollectError>) -> Option<T> {
        let bit = 1u32 << (part as u32);
        match result {
            Ok(v) => {
                self.failing &= !bit;
                Some(v)
            }
            Err(error) => {
                if self.failing & bit == 0 {
                    if error.is_not_found() {
                        tracing::debug!(part = part.name(), %error, "host metrics part unavailable");
                    } else {
                        tracing::warn!(part = part.name(), %error, "cannot read host metrics part");
                    }
                }
                self.failing |= bit;
                None
            }
        }
    }

    fn read_stat(&self, buf: &mut String) -> Result<(CpuCounters, KernelStats), CollectError> {
        let path = read_file(buf, &self.options.proc_root, "stat")?;
        let ks = <KernelStats as FromBufReadSI>::from_buf_read(buf.as_bytes(), &self.system_info)
            .map_err(|e| CollectError::parse(&path, e))?;
        let counters = CpuCounters {
            total: CpuTicks::from_procfs(&ks.total),
            cores: ks.cpu_time.iter().map(CpuTicks::from_procfs).collect(),
            context_switches: ks.ctxt,
        };
        Ok((counters, ks))
    }

    fn read_pressure(&self, buf: &mut String) -> Result<Pressure, CollectError> {
        let mut read = |name: &str| {
            let path = read_file(buf, &self.options.proc_root, name)?;
            parse_psi(buf).ok_or_else(|| CollectError::parse(&path, "no valid `some` line"))
        };
        let cpu = read("pressure/cpu")?;
        let memory = read("pressure/memory")?;
        let io = read("pressure/io")?;
        Ok(pressure(&cpu, &memory, &io))
    }

    /// Rereads mountinfo and reparses it only when its text changed.
    fn refresh_mounts(&mut self, buf: &mut String) -> Result<(), CollectError> {
        read_file(buf, &self.options.proc_root, "self/mountinfo")?;
        if *buf != self.mountinfo_text {
            self.mounts = parse_mounts(buf);
            std::mem::swap(&mut self.mountinfo_text, buf);
        }
        Ok(())
    }

    fn filesystems(&mut self) -> Vec<FilesystemMetrics> {
        let mut out = Vec::with_capacity(self.mounts.len());
        for mount in &self.mounts {
            match rustix::fs::statvfs(mount.mount_point.as_str()) {
                Ok(s) => {
                    self.failing_mounts.remove(&mount.mount_point);
                    let sizes = FsSizes {
                        fragment_size: s.f_frsize,
                        blocks: s.f_blocks,
                        blocks_free: s.f_bfree,
                        blocks_avail: s.f_bavail,
                        files: s.f_files,
                        files_free: s.f_ffree,
                    };
                    out.push(filesystem_metrics(mount, &sizes));
                }
                Err(error) => {
                    if self.failing_mounts.insert(mount.mount_point.clone()) {
                        tracing::warn!(mountpoint = %mount.mount_point, %error, "cannot statvfs mount");
                    }
                }
            }
        }
        out
    }

    fn read_disks(
        &mut self,
        buf: &mut String,
        elapsed: Option<Duration>,
    ) -> Result<Vec<DiskMetrics>, CollectError> {
        let path = read_file(buf, &self.options.proc_root, "diskstats")?;
        let mut next = HashMap::with_capacity(self.prev_disks.len());
        let mut out = Vec::new();
        for line in buf.lines() {
            let d = DiskStat::from_line(line).map_err(|e| CollectError::parse(&path, e))?;
            if disk_excluded(&d.name) {
                continue;
            }
            let cur = DiskCounters {
                reads: d.reads,
                writes: d.writes,
                sectors_read: d.sectors_read,
                sectors_written: d.sectors_written,
                io_ms: d.time_in_progress,
            };
            out.push(disk_metrics(
                d.name.clone(),
                &cur,
                self.prev_disks.get(&d.name),
                elapsed,
            ));
            next.insert(d.name, cur);
        }
        self.prev_disks = next;
        Ok(out)
    }

    fn read_networks(
        &mut self,
        buf: &mut String,
        elapsed: Option<Duration>,
    ) -> Result<Vec<NetworkMetrics>, CollectError> {
        let path = read_file(buf, &self.options.proc_root, "net/dev")?;
        let devices = InterfaceDeviceStatus::from_buf_read(buf.as_bytes())
            .map_err(|e| CollectError::parse(&path, e))?;
        let mut next = HashMap::with_capacity(devices.0.len());
        let mut out = Vec::with_capacity(devices.0.len());
        for (name, d) in devices.0 {
            let cur = NetCounters {
                rx_bytes: d.recv_bytes,
                tx_bytes: d.sent_bytes,
                rx_packets: d.recv_packets,
                tx_packets: d.sent_packets,
                rx_errors: d.recv_errs,
                tx_errors: d.sent_errs,
                rx_dropped: d.recv_drop,
                tx_dropped: d.sent_drop,
            };
            out.push(network_metrics(
                name.clone(),
                &cur,
                self.prev_nets.get(&name),
                elapsed,
            ));
            next.insert(name, cur);
        }
        out.sort_by(|a, b| a.interface.cmp(&b.interface));
        self.prev_nets = next;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_text(rel: &str) -> String {
        std::fs::read_to_string(Path::new("/proc").join(rel)).expect("readable /proc file")
    }

    #[test]
    fn sample_matches_proc_read_independently() {
        let mut c = Collector::new(CollectorOptions::default());
        let first = c.sample();
        let cpu = first.cpu.clone().expect("cpu part");
        assert_eq!(
            cpu.total,
            Some(CpuShares::default()),
            "first sample has no rates"
        );

        let meminfo = proc_text("meminfo");
        let mem_total_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("MemTotal line");
        let memory = first.memory.expect("memory part");
        assert_eq!(memory.total_bytes, mem_total_kib * 1024);
        assert_eq!(
            memory.used_bytes,
            memory.total_bytes - memory.available_bytes
        );

        let stat = proc_text("stat");
        let cores = stat
            .lines()
            .filter(|l| {
                l.strip_prefix("cpu")
                    .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            .count();
        assert_eq!(cpu.cores.len(), cores);
        assert_eq!(cpu.core_seconds_total.len(), cores);
        let btime: i64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
            .expect("btime line");
        assert_eq!(first.boot_time_unix_secs, btime);

        assert!(first.networks.iter().any(|n| n.interface == "lo"));
        assert!(first.filesystems.iter().any(|f| f.mountpoint == "/"));
        for fs in &first.filesystems {
            assert!(mount_included(&fs.fstype, &fs.mountpoint), "{fs:?}");
            assert!(fs.size_bytes >= fs.free_bytes && fs.free_bytes >= fs.avail_bytes);
        }
        for d in &first.disks {
            assert!(!disk_excluded(&d.device), "{d:?}");
        }
        let fds = first.fds.expect("fds part");
        assert!(fds.allocated > 0 && fds.max >= fds.allocated);
        assert!(first.uptime_secs > 0);
        assert!(first.top_memory.len() <= 10 && !first.top_memory.is_empty());

        std::thread::sleep(Duration::from_millis(200));
        let second = c.sample();
        let total = second.cpu.and_then(|c| c.total).expect("cpu shares");
        let sum = total.user
            + total.system
            + total.iowait
            + total.steal
            + total.idle
            + total.irq
            + total.nice;
        assert!((sum - 100.0).abs() < 1e-6, "{total:?}");
        let lo = second.networks.iter().find(|n| n.interface == "lo");
        assert!(lo.is_some_and(|lo| lo.rx_bytes_per_sec >= 0.0));
    }

    #[test]
    fn missing_parts_leave_the_sample_partly_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("loadavg"), "0.50 0.25 0.10 2/300 4242\n")
            .expect("write loadavg");
        std::fs::create_dir_all(dir.path().join("sys/fs")).expect("sys/fs dir");
        std::fs::write(dir.path().join("sys/fs/file-nr"), "garbage\n").expect("write file-nr");
        std::fs::write(dir.path().join("stat"), "cpu 1 2 3\n").expect("write stat");
        let mut c = Collector::new(CollectorOptions {
            proc_root: dir.path().to_path_buf(),
            top_n: 3,
        });
        for _ in 0..2 {
            let m = c.sample();
            let cpu = m.cpu.expect("load keeps the cpu part");
            assert_eq!(cpu.load1, 0.5);
            assert_eq!(cpu.load15, 0.1);
            assert!(cpu.cores.is_empty());
            assert!(m.memory.is_none() && m.pressure.is_none() && m.fds.is_none());
            assert!(m.disks.is_empty() && m.networks.is_empty() && m.filesystems.is_empty());
            assert!(m.top_cpu.is_empty());
        }
    }

    #[test]
    fn cpu_shares_over_an_interval() {
        let prev = CpuTicks {
            user: 100,
            nice: 0,
            system: 50,
            idle: 1000,
            iowait: 10,
            irq: 0,
            softirq: 0,
            steal: 0,
        };
        let cur = CpuTicks {
            user: 140,
            nice: 5,
            system: 60,
            idle: 1040,
            iowait: 15,
            irq: 2,
            softirq: 3,
            steal: 5,
        };
        // Deltas: user 40, nice 5, system 10, idle 40, iowait 5, irq+softirq 5, steal 5 = 110.
        let s = cpu_shares(&prev, &cur);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(s.user, 4000.0 / 110.0), "{s:?}");
        assert!(close(s.irq, 500.0 / 110.0), "{s:?}");
        assert!(close(s.idle, 4000.0 / 110.0), "{s:?}");
        assert!(close(s.busy, 100.0 - 5000.0 / 110.0), "{s:?}");
        assert_eq!(cpu_shares(&cur, &cur), CpuShares::default());
        // iowait going backwards counts as zero rather than wrapping.
        let back = CpuTicks { iowait: 0, ..cur };
        assert_eq!(cpu_shares(&cur, &back).iowait, 0.0);
    }

    #[test]
    fn cpu_metrics_rates_and_seconds() {
        let ticks = |n: u64| CpuTicks {
            user: n,
            idle: n,
            ..CpuTicks::default()
        };
        let prev = CpuCounters {
            total: ticks(100),
            cores: vec![ticks(50), ticks(50)],
            context_switches: 1_000,
        };
        let cur = CpuCounters {
            total: CpuTicks {
                user: 300,
                idle: 100,
                ..CpuTicks::default()
            },
            cores: vec![ticks(150), ticks(50)],
            context_switches: 1_500,
        };
        let m = cpu_metrics(&cur, Some(&prev), Some(Duration::from_millis(250)), 100);
        assert_eq!(m.context_switches_per_sec, 2_000.0);
        assert_eq!(m.context_switches_total, 1_500);
        assert_eq!(m.total.map(|t| t.busy), Some(100.0));
        assert_eq!(m.cores[0].busy, 50.0);
        assert_eq!(m.cores[1], CpuShares::default());
        assert_eq!(m.seconds_total.map(|s| s.user), Some(3.0));
        assert_eq!(m.core_seconds_total[0].idle, 1.5);
        let first = cpu_metrics(&cur, None, None, 100);
        assert_eq!(first.context_switches_per_sec, 0.0);
        assert_eq!(first.cores.len(), 2);
    }

    #[test]
    fn disk_rates_and_utilisation() {
        let prev = DiskCounters {
            reads: 10,
            writes: 20,
            sectors_read: 1_000,
            sectors_written: 2_000,
            io_ms: 5_000,
        };
        let cur = DiskCounters {
            reads: 30,
            writes: 20,
            sectors_read: 3_000,
            sectors_written: 2_000,
            io_ms: 5_250,
        };
        let m = disk_metrics(
            "vda".into(),
            &cur,
            Some(&prev),
            Some(Duration::from_millis(500)),
        );
        assert_eq!(m.read_bytes_per_sec, 2_000.0 * 512.0 * 2.0);
        assert_eq!(m.reads_per_sec, 40.0);
        assert_eq!(m.writes_per_sec, 0.0);
        assert_eq!(m.util_percent, 50.0);
        assert_eq!(m.read_bytes_total, 3_000 * 512);
        assert_eq!(m.io_time_seconds_total, 5.25);
        let saturated = DiskCounters {
            io_ms: 9_000,
            ..cur
        };
        let m = disk_metrics(
            "vda".into(),
            &saturated,
            Some(&prev),
            Some(Duration::from_secs(1)),
        );
        assert_eq!(m.util_percent, 100.0);
        let m = disk_metrics("vda".into(), &cur, None, None);
        assert_eq!((m.reads_per_sec, m.util_percent), (0.0, 0.0));
    }

    #[test]
    fn network_rates() {
        let prev = NetCounters {
            rx_bytes: 1_000,
            tx_bytes: 500,
            rx_packets: 10,
            tx_packets: 5,
            ..NetCounters::default()
        };
        let cur = NetCounters {
            rx_bytes: 3_000,
            tx_bytes: 400,
            rx_packets: 30,
            tx_packets: 6,
            rx_errors: 2,
            tx_dropped: 1,
            ..NetCounters::default()
        };
        let m = network_metrics(
            "eth0".into(),
            &cur,
            Some(&prev),
            Some(Duration::from_secs(2)),
        );
        assert_eq!(m.rx_bytes_per_sec, 1_000.0);
        assert_eq!(m.tx_bytes_per_sec, 0.0, "counter reset reads as zero");
        assert_eq!(m.rx_packets_per_sec, 10.0);
        assert_eq!(m.tx_packets_per_sec, 0.5);
        assert_eq!((m.rx_errors_total, m.tx_dropped_total), (2, 1));
        assert_eq!(rate(5, 10, Duration::ZERO), 0.0);
    }

    #[test]
    fn psi_parser() {
        let cpu = parse_psi("some avg10=1.50 avg60=0.75 avg300=0.10 total=2500000\n")
            .expect("cpu psi without full");
        assert_eq!(cpu.some.avg10, 1.5);
        assert_eq!(cpu.some.total_us, 2_500_000);
        assert_eq!(cpu.full, None);
        let mem = parse_psi(
            "some avg10=81.05 avg60=28.75 avg300=7.68 total=30033361\n\
             full avg10=0.02 avg60=0.06 avg300=0.06 total=1258949\n",
        )
        .expect("memory psi");
        assert_eq!(mem.full.map(|f| f.total_us), Some(1_258_949));
        let p = pressure(&cpu, &mem, &mem);
        assert_eq!(p.cpu_some_seconds_total, 2.5);
        assert_eq!(p.memory_some_avg10, 81.05);
        assert!((p.io_full_seconds_total - 1.258949).abs() < 1e-12);
        assert_eq!(p.cpu_some_avg10, 1.5);
        assert_eq!(parse_psi(""), None);
        assert_eq!(parse_psi("some"), None);
        assert_eq!(parse_psi("full avg10=1 total=2\n"), None);
        assert_eq!(parse_psi("some avg10=x total=1\n"), None);
    }

    #[test]
    fn vmstat_and_file_nr_parsers() {
        let v = parse_vmstat("nr_free_pages 100\npswpin 7\npswpout 9\noom_kill 3\nbogus\n");
        assert_eq!(
            v,
            Vmstat {
                pswpin: 7,
                pswpout: 9,
                oom_kill: 3
            }
        );
        assert_eq!(parse_vmstat("pswpin 1\n").oom_kill, 0);
        assert_eq!(
            parse_file_nr("687\t0\t2466170\n"),
            Some(FdMetrics {
                allocated: 687,
                max: 2_466_170
            })
        );
        assert_eq!(parse_file_nr("687 0"), None);
        assert_eq!(parse_file_nr("a b c"), None);
    }

    #[test]
    fn disk_filter_follows_node_exporter() {
        for name in [
            "loop0",
            "loop12",
            "ram0",
            "zram0",
            "fd0",
            "sda1",
            "vda2",
            "hdb3",
            "xvda1",
            "nvme0n1p1",
            "nvme10n2p3",
            "mmcblk0p1",
        ] {
            assert!(disk_excluded(name), "{name} should be excluded");
        }
        for name in [
            "sda", "vda", "xvda", "nvme0n1", "mmcblk0", "dm-0", "md0", "sr0", "nbd0", "loop", "0",
            "sdaa1",
        ] {
            assert!(!disk_excluded(name), "{name} should be kept");
        }
    }

    #[test]
    fn mount_filtering_and_dedup() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=123k
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
28 27 0:25 / /mnt/my\\040disk ro,nosuid - tmpfs tmpfs ro,size=4k
29 27 254:0 /srv /srv/bind rw,relatime - ext4 /dev/vda rw
30 27 0:30 / /run rw,nosuid - tmpfs tmpfs rw
31 27 0:31 / /mnt/nfs rw - nfs4 server:/export rw
32 27 0:32 / /var/lib/docker/overlay2/abc/merged rw - overlay overlay rw
33 27 0:33 / /snap/core/1 ro - squashfs /dev/loop0 ro
34 27 0:34 / /sys/fs/cgroup rw - tmpfs tmpfs rw
35 27 0:35 / /devices rw - tmpfs tmpfs rw
this line is not mountinfo
";
        let mounts = parse_mounts(text);
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/mnt/my disk", "/run", "/devices"]);
        assert_eq!(mounts[0].device, "/dev/vda");
        assert!(!mounts[0].readonly);
        assert!(mounts[1].readonly);
        assert!(mount_included("overlay", "/"));
        assert!(!mount_included("overlay", "/mnt/overlay"));
        assert!(!mount_included("tmpfs", "/run/credentials/foo.service"));
        assert!(mount_included("tmpfs", "/run/credentials"));
        assert!(!mount_included("fuse.sshfs", "/home/me/remote"));
    }

    #[test]
    fn filesystem_percentages() {
        let mount = Mount {
            mount_point: "/".into(),
            device: "/dev/vda".into(),
            fs_type: "ext4".into(),
            readonly: false,
        };
        let m = filesystem_metrics(
            &mount,
            &FsSizes {
                fragment_size: 4096,
                blocks: 1_000,
                blocks_free: 300,
                blocks_avail: 200,
                files: 100,
                files_free: 75,
            },
        );
        assert_eq!(m.size_bytes, 4_096_000);
        assert_eq!(m.used_bytes, 700 * 4096);
        assert_eq!(m.avail_bytes, 200 * 4096);
        assert!((m.used_percent - 700.0 * 100.0 / 900.0).abs() < 1e-9);
        assert_eq!(m.inodes_used_percent, 25.0);
        let empty = filesystem_metrics(&mount, &FsSizes::default());
        assert_eq!((empty.used_percent, empty.inodes_used_percent), (0.0, 0.0));
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape_octal("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape_octal("/plain"), "/plain");
        assert_eq!(unescape_octal("/bad\\09"), "/bad\\09");
        assert_eq!(unescape_octal("/end\\"), "/end\\");
    }

    /// Prints the cost of one `sample()`; run with `--ignored --nocapture`.
    #[test]
    #[ignore = "timing report, not a check"]
    fn sample_cost() {
        let mut c = Collector::new(CollectorOptions::default());
        c.sample();
        let n = 100u32;
        let start = Instant::now();
        let mut last = HostMetrics::default();
        for _ in 0..n {
            last = std::hint::black_box(c.sample());
        }
        let per = start.elapsed() / n;
        let stats = crate::metrics::prometheus::AgentStats::default();
        let node = strata_proto::v1::NodeInfo::default();
        let mut files = crate::metrics::node::NodeCollector::new();
        let start = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            let mut w = strata_exposition::Exposition::with_capacity(64 * 1024);
            crate::metrics::prometheus::render(&last, &mut files, &node, &stats, &mut w);
            bytes = std::hint::black_box(w.into_text()).len();
        }
        let render = start.elapsed() / n;
        println!(
            "sample() takes {per:?} with {} processes; render() takes {render:?} for {bytes} bytes",
            c.procs.len()
        );
    }
}
