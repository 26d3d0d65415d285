//! The process table: one cheap scan of `/proc/[pid]/stat` per sample, CPU shares from the
//! tick deltas between scans, and the top processes by CPU and by memory.
//!
//! Only `stat` is read for every process (it carries ticks, RSS, threads and state). The command
//! line and owner are read only for the processes that make a top list. The parser for `stat` is
//! our own because it runs for every process every second: it allocates nothing and cannot panic
//! on malformed text, unlike `procfs::process::Stat`, which slices around the parentheses
//! without checks.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strata_proto::v1::ProcessInfo;

/// Longest process name kept (the kernel's `comm` is at most 15 bytes for user tasks).
const NAME_CAP: usize = 16;

/// Fields of `/proc/[pid]/stat` that the table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    name: [u8; NAME_CAP],
    name_len: u8,
    state: u8,
    ppid: i32,
    /// utime + stime, in clock ticks.
    ticks: u64,
    threads: u64,
    /// Start time after boot, in clock ticks; with the pid it identifies one process.
    start_time: u64,
    rss_pages: u64,
}

impl StatFields {
    fn name(&self) -> String {
        String::from_utf8_lossy(&self.name[..usize::from(self.name_len)]).into_owned()
    }
}

/// Parses one `/proc/[pid]/stat` text; `None` when it is malformed.
///
/// The name (`comm`) may hold spaces and parentheses, so the fields are taken after the last `)`.
fn parse_stat(text: &[u8]) -> Option<StatFields> {
    let open = text.iter().position(|&b| b == b'(')?;
    let close = text.iter().rposition(|&b| b == b')')?;
    if close < open {
        return None;
    }
    let comm = &text[open + 1..close];
    let rest = std::str::from_utf8(text.get(close + 1..)?).ok()?;
    // After `)`, field 3 (state) has index 0: field N has index N - 3.
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let ppid: i32 = fields.next()?.parse().ok()?; // 4
    let mut fields = fields.skip(9); // fields 5..=13
    let utime: u64 = fields.next()?.parse().ok()?; // 14
    let stime: u64 = fields.next()?.parse().ok()?; // 15
    let mut fields = fields.skip(4); // 16..=19
    let threads: i64 = fields.next()?.parse().ok()?; // 20
    let mut fields = fields.skip(1); // 21
    let start_time: u64 = fields.next()?.parse().ok()?; // 22
    let mut fields = fields.skip(1); // 23
    let rss_pages: i64 = fields.next()?.parse().ok()?; // 24

    let mut name = [0u8; NAME_CAP];
    let name_len = comm.len().min(NAME_CAP);
    name[..name_len].copy_from_slice(&comm[..name_len]);
    Some(StatFields {
        name,
        name_len: u8::try_from(name_len).unwrap_or(0),
        state,
        ppid,
        ticks: utime.saturating_add(stime),
        threads: u64::try_from(threads).unwrap_or(0),
        start_time,
        rss_pages: u64::try_from(rss_pages).unwrap_or(0),
    })
}

/// One process's figures from `/proc/[pid]/stat`, for the supervisor: whether a pid is
/// still the process it started (start time), and its CPU ticks and RSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter: R, S, D, Z, T, ...
    pub state: u8,
    /// The parent's pid (which process started it, e.g. an instance's shim).
    pub ppid: i32,
    /// utime + stime, in clock ticks.
    pub ticks: u64,
    /// Start time after boot, in clock ticks.
    pub start_time: u64,
    pub rss_pages: u64,
}

/// Reads `/proc/[pid]/stat`; `None` when the process is gone or the text is malformed.
pub fn read_proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let f = parse_stat(&text)?;
    Some(ProcStat {
        state: f.state,
        ppid: f.ppid,
        ticks: f.ticks,
        start_time: f.start_time,
        rss_pages: f.rss_pages,
    })
}

/// Percent of one core used between two tick readings `elapsed` apart.
pub(crate) fn cpu_percent(
    prev_ticks: u64,
    cur_ticks: u64,
    ticks_per_second: u64,
    elapsed: Duration,
) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || ticks_per_second == 0 {
        return 0.0;
    }
    let delta = cur_ticks.saturating_sub(prev_ticks) as f64;
    delta / ticks_per_second as f64 / secs * 100.0
}

/// Ticks a process used since the previous scan. `prev` is its (start time, ticks) then;
/// `prev_scan_uptime_ticks` is the host uptime when the previous scan began. A process not seen
/// before is charged all its ticks only if it started after that scan began; otherwise (it was
/// missed, or there was no previous scan) it is charged nothing rather than its whole life.
fn ticks_in_interval(
    prev: Option<(u64, u64)>,
    cur: &StatFields,
    prev_scan_uptime_ticks: Option<u64>,
) -> u64 {
    match prev {
        Some((start, ticks)) if start == cur.start_time => cur.ticks.saturating_sub(ticks),
        _ if prev_scan_uptime_ticks.is_some_and(|t| cur.start_time >= t) => cur.ticks,
        _ => 0,
    }
}

/// One process as seen by the latest scan.
#[derive(Debug, Clone, Copy)]
struct Entry {
    pid: i32,
    stat: StatFields,
    cpu_percent: f64,
}

/// The processes of the host, rescanned by [`ProcessTable::scan`] once per sample.
///
/// Exists so that per-process CPU shares can be computed across samples while memory stays
/// bounded: only the previous ticks of live pids are kept, and vanished pids are dropped at
/// every scan.
#[derive(Debug)]
pub struct ProcessTable {
    proc_root: PathBuf,
    ticks_per_second: u64,
    page_size: u64,
    /// pid → (start time, ticks) at the previous scan.
    prev: HashMap<i32, (u64, u64)>,
    /// The map being filled by the current scan; swapped with `prev` afterwards.
    next: HashMap<i32, (u64, u64)>,
    entries: Vec<Entry>,
    last_scan: Option<Instant>,
    /// Host uptime in ticks when the previous scan began, if /proc/uptime was readable.
    last_scan_uptime_ticks: Option<u64>,
    scanned_at_unix_ms: i64,
    path: String,
    buf: Vec<u8>,
}

impl ProcessTable {
    /// An empty table reading `proc_root` (normally `/proc`).
    pub fn new(proc_root: PathBuf, ticks_per_second: u64, page_size: u64) -> Self {
        Self {
            proc_root,
            ticks_per_second,
            page_size,
            prev: HashMap::new(),
            next: HashMap::new(),
            entries: Vec::new(),
            last_scan: None,
            last_scan_uptime_ticks: None,
            scanned_at_unix_ms: 0,
            path: String::new(),
            buf: Vec::with_capacity(512),
        }
    }

    /// Rescans every process. Processes that vanish during the scan are skipped; a process
    /// that started since the previous scan is charged all its ticks.
    pub fn scan(&mut self) {
        let now = Instant::now();
        let elapsed = self.last_scan.map(|t| now.duration_since(t));
        let uptime_ticks = self.uptime_ticks();
        let dir = match std::fs::read_dir(&self.proc_root) {
            Ok(dir) => dir,
            Err(error) => {
                tracing::warn!(root = %self.proc_root.display(), %error, "cannot list processes");
                return;
            }
        };
        self.entries.clear();
        self.next.clear();
        for dirent in dir.flatten() {
            let Some(pid) = dirent
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Some(stat) = self.read_stat(pid) else {
                continue;
            };
            let cpu = elapsed.map_or(0.0, |elapsed| {
                let prev = self.prev.get(&pid).copied();
                let ticks = ticks_in_interval(prev, &stat, self.last_scan_uptime_ticks);
                cpu_percent(0, ticks, self.ticks_per_second, elapsed)
            });
            self.next.insert(pid, (stat.start_time, stat.ticks));
            self.entries.push(Entry {
                pid,
                stat,
                cpu_percent: cpu,
            });
        }
        std::mem::swap(&mut self.prev, &mut self.next);
        // Keep the spare map from holding on to the capacity of a past fork storm.
        if self.next.capacity() > 4 * self.prev.len() + 1024 {
            self.next = HashMap::new();
        }
        self.last_scan = Some(now);
        self.last_scan_uptime_ticks = uptime_ticks;
        self.scanned_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    }

    /// Host uptime in clock ticks, from the first field of /proc/uptime.
    fn uptime_ticks(&mut self) -> Option<u64> {
        self.path.clear();
        let _ = write!(self.path, "{}/uptime", self.proc_root.display());
        self.buf.clear();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut self.buf))
            .ok()?;
        let secs: f64 = std::str::from_utf8(&self.buf)
            .ok()?
            .split_ascii_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((secs.max(0.0) * self.ticks_per_second as f64) as u64)
    }

    fn read_stat(&mut self, pid: i32) -> Option<StatFields> {
        self.path.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.path, "{}/{pid}/stat", self.proc_root.display());
        self.buf.clear();
        File::open(&self.path)
            .and_then(|mut f| f.read_to_end(&mut self.buf))
            .ok()?;
        parse_stat(&self.buf)
    }

    /// The latest scan's processes and threads by state, for `node_processes_*`.
    pub fn counts(&self) -> super::processes::ProcessCounts {
        let mut counts = super::processes::ProcessCounts::default();
        for entry in &self.entries {
            counts.add(entry.stat.state, entry.stat.threads);
        }
        counts
    }

    /// How many processes the latest scan saw.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the latest scan saw no process (or no scan ran yet).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Wall-clock time of the latest scan in unix milliseconds (0 before the first scan).
    pub fn scanned_at_unix_ms(&self) -> i64 {
        self.scanned_at_unix_ms
    }

    /// The `limit` processes using the most CPU over the last interval, busiest first.
    pub fn top_by_cpu(&self, limit: usize) -> Vec<ProcessInfo> {
        self.top(limit, |a, b| {
            b.cpu_percent
                .total_cmp(&a.cpu_percent)
                .then(b.stat.rss_pages.cmp(&a.stat.rss_pages))
        })
    }

    /// The `limit` processes with the largest resident set, largest first.
    pub fn top_by_memory(&self, limit: usize) -> Vec<ProcessInfo> {
        self.top(limit, |a, b| {
            b.stat
                .rss_pages
                .cmp(&a.stat.rss_pages)
                .then(b.cpu_percent.total_cmp(&a.cpu_percent))
        })
    }

    fn top(
        &self,
        limit: usize,
        order: impl Fn(&Entry, &Entry) -> std::cmp::Ordering,
    ) -> Vec<ProcessInfo> {
        if limit == 0 || self.entries.is_empty() {
            return Vec::new();
        }
        let mut picked: Vec<&Entry> = self.entries.iter().collect();
        if limit < picked.len() {
            picked.select_nth_unstable_by(limit - 1, |a, b| order(a, b));
            picked.truncate(limit);
        }
        picked.sort_unstable_by(|a, b| order(a, b).then(a.pid.cmp(&b.pid)));
        picked.into_iter().map(|e| self.info(e)).collect()
    }

    /// Builds the wire form of one entry, reading its command line and owner now. A process
    /// that vanished since the scan keeps an empty command and uid 0.
    fn info(&self, entry: &Entry) -> ProcessInfo {
        let process =
            procfs::process::Process::new_with_root(self.proc_root.join(entry.pid.to_string()))
                .ok();
        let command = process
            .as_ref()
            .and_then(|p| p.cmdline().ok())
            .map(|args| args.join(" "))
            .unwrap_or_default();
        let uid = process.as_ref().and_then(|p| p.uid().ok()).unwrap_or(0);
        ProcessInfo {
            pid: entry.pid,
            name: entry.stat.name(),
            command,
            cpu_percent: entry.cpu_percent,
            rss_bytes: entry.stat.rss_pages.saturating_mul(self.page_size),
            state: char::from(entry.stat.state).to_string(),
            uid,
            threads: entry.stat.threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 500 0 0 0 \
                        250 75 0 0 20 0 7 0 9876 123456789 2048 18446744073709551615 \
                        1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_stat_fields_after_the_last_parenthesis() {
        let s = parse_stat(STAT.as_bytes()).expect("valid stat line");
        assert_eq!(s.name(), "my (odd) name");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.ticks, 325);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time, 9876);
        assert_eq!(s.rss_pages, 2048);
    }

    #[test]
    fn malformed_stat_is_none_not_a_panic() {
        for text in [
            "",
            "(",
            ")",
            ")(",
            "1 (x)",
            "1 (x) S",
            "1 (x) S 1 2 3",
            "1 (x) S 1 1 1 0 -1 0 0 0 0 0 notanumber 1 0 0 20 0 1 0 5 1 1",
        ] {
            assert_eq!(parse_stat(text.as_bytes()), None, "{text:?}");
        }
    }

    #[test]
    fn long_names_are_truncated() {
        let line = STAT.replace("my (odd) name", "a-very-long-kernel-thread-name");
        let s = parse_stat(line.as_bytes()).expect("valid stat line");
        assert_eq!(s.name(), "a-very-long-kern");
    }

    #[test]
    fn cpu_percent_is_ticks_over_interval() {
        // 50 ticks at 100 Hz over 0.5 s is one full core.
        let p = cpu_percent(100, 150, 100, Duration::from_millis(500));
        assert!((p - 100.0).abs() < 1e-9, "{p}");
        assert_eq!(cpu_percent(150, 100, 100, Duration::from_secs(1)), 0.0);
        assert_eq!(cpu_percent(0, 100, 100, Duration::ZERO), 0.0);
    }

    #[test]
    fn new_processes_are_charged_only_when_they_started_in_the_interval() {
        let cur = parse_stat(STAT.as_bytes()).expect("valid stat line"); // start 9876, 325 ticks
        assert_eq!(ticks_in_interval(Some((9876, 300)), &cur, Some(9000)), 25);
        // Same pid, other process (pid reused): new, started after the previous scan.
        assert_eq!(ticks_in_interval(Some((10, 300)), &cur, Some(9000)), 325);
        assert_eq!(ticks_in_interval(None, &cur, Some(9876)), 325);
        // Started before the previous scan but missed by it: not charged its whole life.
        assert_eq!(ticks_in_interval(None, &cur, Some(9877)), 0);
        assert_eq!(ticks_in_interval(None, &cur, None), 0);
    }

    #[test]
    fn scan_sees_this_process_and_ranks_it() {
        let tps = procfs::ticks_per_second();
        let mut table = ProcessTable::new(PathBuf::from("/proc"), tps, procfs::page_size());
        table.scan();
        let me = i32::try_from(std::process::id()).expect("pid fits i32");
        // Burn some CPU so this process shows up with a share above zero.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 1);
        table.scan();
        assert!(table.len() > 1);
        let all = table.top_by_cpu(table.len());
        assert_eq!(all.len(), table.len());
        for pair in all.windows(2) {
            assert!(pair[0].cpu_percent >= pair[1].cpu_percent);
        }
        let mine = all.iter().find(|p| p.pid == me).expect("own pid listed");
        assert!(mine.cpu_percent > 10.0, "{mine:?}");
        assert!(mine.command.contains("strata_agent"), "{mine:?}");
        let own_status = std::fs::read_to_string("/proc/self/status").expect("own status");
        let rss_kib: u64 = own_status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in own status");
        assert!(mine.rss_bytes > 0 && mine.rss_bytes <= rss_kib * 1024 * 2);

        let by_mem = table.top_by_memory(3);
        assert_eq!(by_mem.len(), 3);
        assert!(by_mem[0].rss_bytes >= by_mem[1].rss_bytes);
        assert!(by_mem[1].rss_bytes >= by_mem[2].rss_bytes);
        assert!(table.top_by_cpu(0).is_empty());
    }

    #[test]
    fn vanished_pids_are_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        for pid in [10, 11] {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir(&p).expect("pid dir");
            std::fs::write(p.join("stat"), STAT).expect("stat file");
        }
        std::fs::create_dir(dir.path().join("self")).expect("non-pid dir");
        let mut table = ProcessTable::new(dir.path().to_path_buf(), 100, 4096);
        table.scan();
        assert_eq!(table.len(), 2);
        assert_eq!(table.prev.len(), 2);
        std::fs::remove_dir_all(dir.path().join("11")).expect("remove pid");
        table.scan();
        assert_eq!(table.len(), 1);
        assert_eq!(table.prev.keys().copied().collect::<Vec<_>>(), vec![10]);
        let top = table.top_by_memory(5);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].rss_bytes, 2048 * 4096);
        assert_eq!(top[0].threads, 7);
        assert_eq!(top[0].state, "S");
    }
}
