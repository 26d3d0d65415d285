//! Bounded metric history: every scalar series of the `HostMetrics` samples is kept in two
//! fixed-capacity rings, so the console can draw the last 15 minutes at one-second
//! resolution and the last 24 hours at one-minute resolution without the agent's memory
//! growing with uptime or with the number of disks and interfaces a host has.
//!
//! Values are stored as `f32` to halve the memory; the relative error (about 6e-8) is far
//! below anything a graph or an alert threshold can show. Rings are indexed by time, not by
//! push count, so missed samples leave gaps instead of shifting data.

use std::collections::HashMap;
use std::fmt::Write as _;

use strata_proto::v1::{HostMetrics, Point, Series};
use tracing::warn;

/// Slots of the fine tier: one per second for 15 minutes.
pub const FINE_SLOTS: usize = 900;
/// Resolution of the fine tier.
pub const FINE_STEP_MS: i64 = 1_000;
/// Slots of the coarse tier: one per minute for 24 hours.
pub const COARSE_SLOTS: usize = 1_440;
/// Resolution of the coarse tier.
pub const COARSE_STEP_MS: i64 = 60_000;
/// Default cap on the number of series, so hosts with many devices stay bounded.
pub const DEFAULT_MAX_SERIES: usize = 512;
/// Heap bytes held by the rings of one series: an `f32` per second and an `f32`
/// min/avg/max triple per minute.
pub const RING_BYTES_PER_SERIES: usize = FINE_SLOTS * 4 + COARSE_SLOTS * 3 * 4;
/// Range used when a query leaves the start open: the 15 minutes the fine tier holds
/// (900 samples, both ends included), so such a query is answered at one second.
const DEFAULT_RANGE_MS: i64 = (FINE_SLOTS as i64 - 1) * FINE_STEP_MS;
/// A series not seen for this long has left both tiers and is dropped.
const RETENTION_MS: i64 = COARSE_SLOTS as i64 * COARSE_STEP_MS + COARSE_STEP_MS;

/// Reuses one buffer to build series names, so visiting a sample allocates once.
struct Namer {
    buf: String,
}

impl Namer {
    fn at(&mut self, args: std::fmt::Arguments<'_>) -> &str {
        self.buf.clear();
        // Writing into a String cannot fail.
        let _ = self.buf.write_fmt(args);
        &self.buf
    }
}

/// Calls `visit` with the name and value of every scalar series of a sample; the one place
/// that decides which series exist and how they are named (`cpu.busy`,
/// `fs./var.used_percent`, `net.eth0.rx_bytes_per_sec`, ...).
pub fn visit_series(m: &HostMetrics, mut visit: impl FnMut(&str, f64)) {
    let mut n = Namer {
        buf: String::with_capacity(64),
    };
    if let Some(cpu) = &m.cpu {
        if let Some(t) = &cpu.total {
            visit("cpu.busy", t.busy);
            visit("cpu.user", t.user);
            visit("cpu.system", t.system);
            visit("cpu.iowait", t.iowait);
            visit("cpu.steal", t.steal);
        }
        for (i, core) in cpu.cores.iter().enumerate() {
            visit(n.at(format_args!("cpu.core.{i}.busy")), core.busy);
        }
        visit("load.1", cpu.load1);
        visit("load.5", cpu.load5);
        visit("load.15", cpu.load15);
        visit("procs.running", cpu.procs_running as f64);
        visit("procs.blocked", cpu.procs_blocked as f64);
        visit("ctxt.per_sec", cpu.context_switches_per_sec);
    }
    if let Some(mem) = &m.memory {
        if mem.total_bytes > 0 {
            visit(
                "mem.used_percent",
                mem.used_bytes as f64 * 100.0 / mem.total_bytes as f64,
            );
        }
        visit("mem.available_bytes", mem.available_bytes as f64);
        visit("mem.used_bytes", mem.used_bytes as f64);
        visit(
            "swap.used_bytes",
            mem.swap_total_bytes.saturating_sub(mem.swap_free_bytes) as f64,
        );
        visit("swap.in_per_sec", mem.swap_in_per_sec);
        visit("swap.out_per_sec", mem.swap_out_per_sec);
    }
    for fs in &m.filesystems {
        let mp = &fs.mountpoint;
        visit(n.at(format_args!("fs.{mp}.used_percent")), fs.used_percent);
        if fs.inodes_total > 0 {
            visit(
                n.at(format_args!("fs.{mp}.inodes_used_percent")),
                fs.inodes_used_percent,
            );
        }
    }
    for d in &m.disks {
        let dev = &d.device;
        visit(
            n.at(format_args!("disk.{dev}.read_bytes_per_sec")),
            d.read_bytes_per_sec,
        );
        visit(
            n.at(format_args!("disk.{dev}.write_bytes_per_sec")),
            d.write_bytes_per_sec,
        );
        visit(
            n.at(format_args!("disk.{dev}.util_percent")),
            d.util_percent,
        );
    }
    for net in &m.networks {
        let ifc = &net.interface;
        visit(
            n.at(format_args!("net.{ifc}.rx_bytes_per_sec")),
            net.rx_bytes_per_sec,
        );
        visit(
            n.at(format_args!("net.{ifc}.tx_bytes_per_sec")),
            net.tx_bytes_per_sec,
        );
    }
    if let Some(fds) = &m.fds
        && fds.max > 0
    {
        visit(
            "fds.used_percent",
            fds.allocated as f64 * 100.0 / fds.max as f64,
        );
    }
}

/// The two rings of one series, allocated once when the series first appears.
struct Rings {
    /// One value per second; NaN marks a second without a sample.
    fine: Box<[f32]>,
    /// The newest second written to `fine`.
    fine_head: Option<i64>,
    /// min/avg/max per minute; NaN marks a minute without samples.
    coarse: Box<[[f32; 3]]>,
    /// The newest minute written to `coarse`; it is still accumulating.
    coarse_head: Option<i64>,
    /// Sum and count of the newest minute, for its running average.
    minute_sum: f64,
    minute_count: u32,
    last_seen_ms: i64,
}

fn slot(index: i64, len: usize) -> usize {
    // rem_euclid of a positive length is in 0..len.
    index.rem_euclid(len as i64) as usize
}

impl Rings {
    fn new() -> Rings {
        Rings {
            fine: vec![f32::NAN; FINE_SLOTS].into_boxed_slice(),
            fine_head: None,
            coarse: vec![[f32::NAN; 3]; COARSE_SLOTS].into_boxed_slice(),
            coarse_head: None,
            minute_sum: 0.0,
            minute_count: 0,
            last_seen_ms: i64::MIN,
        }
    }

    fn record(&mut self, time_ms: i64, value: f64) {
        self.last_seen_ms = self.last_seen_ms.max(time_ms);
        self.record_fine(time_ms.div_euclid(FINE_STEP_MS), value as f32);
        self.record_coarse(time_ms.div_euclid(COARSE_STEP_MS), value);
    }

    fn record_fine(&mut self, sec: i64, value: f32) {
        match self.fine_head {
            Some(head) if sec > head => {
                let gap = (sec - head - 1).min(FINE_SLOTS as i64);
                for s in (sec - gap)..sec {
                    self.fine[slot(s, FINE_SLOTS)] = f32::NAN;
                }
                self.fine_head = Some(sec);
            }
            Some(head) if sec <= head - FINE_SLOTS as i64 => return,
            Some(_) => {}
            None => self.fine_head = Some(sec),
        }
        self.fine[slot(sec, FINE_SLOTS)] = value;
    }

    fn record_coarse(&mut self, minute: i64, value: f64) {
        match self.coarse_head {
            Some(head) if minute == head => {
                self.minute_sum += value;
                self.minute_count += 1;
                let cell = &mut self.coarse[slot(minute, COARSE_SLOTS)];
                let v = value as f32;
                cell[0] = cell[0].min(v);
                cell[1] = (self.minute_sum / f64::from(self.minute_count)) as f32;
                cell[2] = cell[2].max(v);
            }
            // A late sample for a minute already closed: its average cannot be corrected.
            Some(head) if minute < head => {}
            _ => {
                if let Some(head) = self.coarse_head {
                    let gap = (minute - head - 1).min(COARSE_SLOTS as i64);
                    for m in (minute - gap)..minute {
                        self.coarse[slot(m, COARSE_SLOTS)] = [f32::NAN; 3];
                    }
                }
                self.coarse_head = Some(minute);
                self.minute_sum = value;
                self.minute_count = 1;
                let v = value as f32;
                self.coarse[slot(minute, COARSE_SLOTS)] = [v, v, v];
            }
        }
    }

    /// Fine samples with `from_ms <= time <= to_ms`, oldest first, as (time, min, avg, max).
    fn fine_points(&self, from_ms: i64, to_ms: i64, out: &mut impl FnMut(i64, [f64; 3])) {
        let Some(head) = self.fine_head else { return };
        let from_sec =
            from_ms.div_euclid(FINE_STEP_MS) + i64::from(from_ms.rem_euclid(FINE_STEP_MS) != 0);
        let first = (head - FINE_SLOTS as i64 + 1).max(from_sec);
        let last = head.min(to_ms.div_euclid(FINE_STEP_MS));
        for s in first..=last {
            let v = self.fine[slot(s, FINE_SLOTS)];
            if !v.is_nan() {
                let v = f64::from(v);
                out(s * FINE_STEP_MS, [v, v, v]);
            }
        }
    }

    /// Minutes overlapping `from_ms..=to_ms`, oldest first, as (minute start, min, avg, max).
    fn coarse_points(&self, from_ms: i64, to_ms: i64, out: &mut impl FnMut(i64, [f64; 3])) {
        let Some(head) = self.coarse_head else { return };
        let first = (head - COARSE_SLOTS as i64 + 1).max(from_ms.div_euclid(COARSE_STEP_MS));
        let last = head.min(to_ms.div_euclid(COARSE_STEP_MS));
        for m in first..=last {
            let [min, avg, max] = self.coarse[slot(m, COARSE_SLOTS)];
            if !avg.is_nan() {
                out(
                    m * COARSE_STEP_MS,
                    [f64::from(min), f64::from(avg), f64::from(max)],
                );
            }
        }
    }
}

/// Which tier answers a query and at what step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Fine,
    Coarse,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
    tier: Tier,
}

/// Bounded history of every series of the host metrics samples; the agent keeps one,
/// behind a lock, and answers `GetMetricHistory` from it.
pub struct History {
    series: HashMap<String, Rings>,
    max_series: usize,
    newest_ms: Option<i64>,
    previous_push_ms: i64,
    last_sweep_minute: i64,
    refused_series: u64,
}

impl Default for History {
    fn default() -> History {
        History::new(DEFAULT_MAX_SERIES)
    }
}

impl History {
    /// An empty history that keeps at most `max_series` series (at least one).
    pub fn new(max_series: usize) -> History {
        History {
            series: HashMap::new(),
            max_series: max_series.max(1),
            newest_ms: None,
            previous_push_ms: i64::MIN,
            last_sweep_minute: i64::MIN,
            refused_series: 0,
        }
    }

    /// Records every series of one sample at `time_unix_ms`. Non-finite values are skipped.
    pub fn push(&mut self, time_unix_ms: i64, m: &HostMetrics) {
        let minute = time_unix_ms.div_euclid(COARSE_STEP_MS);
        if minute != self.last_sweep_minute {
            self.last_sweep_minute = minute;
            self.series
                .retain(|_, r| time_unix_ms.saturating_sub(r.last_seen_ms) <= RETENTION_MS);
        }
        visit_series(m, |name, value| {
            if value.is_finite() {
                self.record(name, time_unix_ms, value);
            }
        });
        self.newest_ms = Some(self.newest_ms.map_or(time_unix_ms, |n| n.max(time_unix_ms)));
        self.previous_push_ms = self.previous_push_ms.max(time_unix_ms);
    }

    fn record(&mut self, name: &str, time_ms: i64, value: f64) {
        if let Some(rings) = self.series.get_mut(name) {
            rings.record(time_ms, value);
            return;
        }
        if self.series.len() >= self.max_series && !self.evict_stale() {
            if self.refused_series == 0 {
                warn!(
                    series = name,
                    cap = self.max_series,
                    "metric history is full; new series are not kept"
                );
            }
            self.refused_series += 1;
            return;
        }
        let mut rings = Rings::new();
        rings.record(time_ms, value);
        self.series.insert(name.to_owned(), rings);
    }

    /// Drops the least recently seen series if it was missing from the previous sample,
    /// making room for a new one; live series are never evicted.
    fn evict_stale(&mut self) -> bool {
        let stalest = self
            .series
            .iter()
            .filter(|(_, r)| r.last_seen_ms < self.previous_push_ms)
            .min_by_key(|(_, r)| r.last_seen_ms)
            .map(|(name, _)| name.clone());
        match stalest {
            Some(name) => self.series.remove(&name).is_some(),
            None => false,
        }
    }

    fn plan(&self, from_ms: i64, to_ms: i64, step_ms: i64) -> Plan {
        let newest = self.newest_ms.unwrap_or(0);
        let to_ms = if to_ms <= 0 { newest } else { to_ms };
        let from_ms = if from_ms <= 0 {
            to_ms - DEFAULT_RANGE_MS
        } else {
            from_ms
        };
        let fine_start = (newest.div_euclid(FINE_STEP_MS) - FINE_SLOTS as i64 + 1) * FINE_STEP_MS;
        let step = step_ms.max(0);
        let (tier, unit) = if step < COARSE_STEP_MS && from_ms >= fine_start {
            (Tier::Fine, FINE_STEP_MS)
        } else {
            (Tier::Coarse, COARSE_STEP_MS)
        };
        let step_ms = (step.max(unit) + unit - 1) / unit * unit;
        Plan {
            from_ms,
            to_ms,
            step_ms,
            tier,
        }
    }

    /// The step a `query` with these arguments answers with, for the reply's `step_ms`.
    pub fn step_for(&self, from_ms: i64, to_ms: i64, step_ms: i64) -> i64 {
        self.plan(from_ms, to_ms, step_ms).step_ms
    }

    /// Points of the named series between `from_ms` and `to_ms` (0 means 15 minutes
    /// before `to_ms` and the newest sample). A step of 0 picks the finest tier that covers
    /// the range; a larger step aggregates into buckets aligned to multiples of the step
    /// (min of mins, avg of avgs, max of maxes). Unknown names yield empty series, in the
    /// order asked, so callers can match replies to requests.
    pub fn query(&self, names: &[String], from_ms: i64, to_ms: i64, step_ms: i64) -> Vec<Series> {
        let plan = self.plan(from_ms, to_ms, step_ms);
        names
            .iter()
            .map(|name| Series {
                name: name.clone(),
                points: self
                    .series
                    .get(name)
                    .map(|r| Self::points(r, plan))
                    .unwrap_or_default(),
            })
            .collect()
    }

    fn points(rings: &Rings, plan: Plan) -> Vec<Point> {
        let mut points = Vec::new();
        if plan.from_ms > plan.to_ms {
            return points;
        }
        let mut bucket: Option<(i64, [f64; 3], u32)> = None;
        let mut add = |t: i64, [min, avg, max]: [f64; 3]| {
            let start = t.div_euclid(plan.step_ms) * plan.step_ms;
            match &mut bucket {
                Some((b, agg, n)) if *b == start => {
                    agg[0] = agg[0].min(min);
                    agg[1] += avg;
                    agg[2] = agg[2].max(max);
                    *n += 1;
                }
                _ => {
                    if let Some((b, agg, n)) = bucket.take() {
                        points.push(point(b, agg, n));
                    }
                    bucket = Some((start, [min, avg, max], 1));
                }
            }
        };
        match plan.tier {
            Tier::Fine => rings.fine_points(plan.from_ms, plan.to_ms, &mut add),
            Tier::Coarse => rings.coarse_points(plan.from_ms, plan.to_ms, &mut add),
        }
        if let Some((b, agg, n)) = bucket {
            points.push(point(b, agg, n));
        }
        points
    }

    /// Every series name kept, sorted, for the `available` list of the API.
    pub fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = self.series.keys().cloned().collect();
        names.sort_unstable();
        names
    }

    /// An estimate of the heap held: the rings and names of every series plus the hash
    /// table's slots. The agent reports it so the bound can be watched in production.
    pub fn memory_bytes(&self) -> usize {
        let table = self.series.capacity() * (size_of::<(String, Rings)>() + 1);
        let series: usize = self
            .series
            .keys()
            .map(|name| name.capacity() + RING_BYTES_PER_SERIES)
            .sum();
        table + series
    }

    /// How many times a new series was not kept because the cap was reached.
    pub fn refused_series(&self) -> u64 {
        self.refused_series
    }
}

fn point(time_unix_ms: i64, [min, sum, max]: [f64; 3], n: u32) -> Point {
    Point {
        time_unix_ms,
        min,
        avg: sum / f64::from(n),
        max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::v1::{
        CpuMetrics, CpuShares, FdMetrics, FilesystemMetrics, MemoryMetrics, NetworkMetrics,
    };

    const T0: i64 = 1_800_000_000_000; // a whole minute

    fn busy(value: f64) -> HostMetrics {
        HostMetrics {
            cpu: Some(CpuMetrics {
                total: Some(CpuShares {
                    busy: value,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn nets(names: &[&str]) -> HostMetrics {
        HostMetrics {
            networks: names
                .iter()
                .map(|n| NetworkMetrics {
                    interface: (*n).to_owned(),
                    rx_bytes_per_sec: 1.0,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn cpu_busy(h: &History, from: i64, to: i64, step: i64) -> Vec<(i64, f64, f64, f64)> {
        h.query(&["cpu.busy".to_owned()], from, to, step)
            .remove(0)
            .points
            .iter()
            .map(|p| (p.time_unix_ms, p.min, p.avg, p.max))
            .collect()
    }

    #[test]
    fn series_names_and_values_follow_the_sample() {
        let m = HostMetrics {
            cpu: Some(CpuMetrics {
                total: Some(CpuShares {
                    busy: 40.0,
                    ..Default::default()
                }),
                cores: vec![
                    CpuShares::default(),
                    CpuShares {
                        busy: 70.0,
                        ..Default::default()
                    },
                ],
                load1: 1.5,
                ..Default::default()
            }),
            memory: Some(MemoryMetrics {
                total_bytes: 1000,
                used_bytes: 250,
                swap_total_bytes: 100,
                swap_free_bytes: 40,
                ..Default::default()
            }),
            filesystems: vec![FilesystemMetrics {
                mountpoint: "/var".into(),
                used_percent: 91.0,
                inodes_total: 0,
                ..Default::default()
            }],
            fds: Some(FdMetrics {
                allocated: 50,
                max: 200,
            }),
            ..Default::default()
        };
        let mut series: HashMap<String, f64> = HashMap::new();
        visit_series(&m, |name, value| {
            series.insert(name.to_owned(), value);
        });
        assert_eq!(series["cpu.busy"], 40.0);
        assert_eq!(series["cpu.core.1.busy"], 70.0);
        assert_eq!(series["load.1"], 1.5);
        assert_eq!(series["mem.used_percent"], 25.0);
        assert_eq!(series["swap.used_bytes"], 60.0);
        assert_eq!(series["fs./var.used_percent"], 91.0);
        assert_eq!(series["fds.used_percent"], 25.0);
        assert!(!series.contains_key("fs./var.inodes_used_percent"));
        assert!(!series.contains_key("cpu.core.2.busy"));
    }

    #[test]
    fn a_minute_of_samples_becomes_min_avg_max() {
        let mut h = History::default();
        for i in 0..60 {
            h.push(T0 + i * 1000, &busy((i + 1) as f64));
        }
        h.push(T0 + 60_000, &busy(500.0));
        let points = cpu_busy(&h, T0, T0 + 60_000, 60_000);
        assert_eq!(
            points,
            vec![(T0, 1.0, 30.5, 60.0), (T0 + 60_000, 500.0, 500.0, 500.0)]
        );
    }

    #[test]
    fn query_by_range_and_step() {
        let mut h = History::default();
        for i in 0..120 {
            h.push(T0 + i * 1000, &busy(i as f64));
        }
        // Step 0 over a range inside the fine tier: one point per second in range.
        let fine = cpu_busy(&h, T0 + 10_000, T0 + 14_500, 0);
        assert_eq!(h.step_for(T0 + 10_000, T0 + 14_500, 0), 1000);
        assert_eq!(
            fine.iter().map(|p| p.0).collect::<Vec<_>>(),
            (10..=14).map(|s| T0 + s * 1000).collect::<Vec<_>>()
        );
        // A 10 s step aggregates aligned buckets: seconds 20..30 → min 20, avg 24.5, max 29.
        let ten = cpu_busy(&h, T0 + 20_000, T0 + 39_000, 10_000);
        assert_eq!(
            ten,
            vec![
                (T0 + 20_000, 20.0, 24.5, 29.0),
                (T0 + 30_000, 30.0, 34.5, 39.0)
            ]
        );
        // A step that is not a multiple of the tier is rounded up to one.
        assert_eq!(h.step_for(T0, T0 + 60_000, 1500), 2000);
        // Coarser steps aggregate minutes: min of mins, avg of avgs, max of maxes.
        let two_min = cpu_busy(&h, T0, T0 + 119_000, 120_000);
        assert_eq!(two_min, vec![(T0, 0.0, 59.5, 119.0)]);
        // Open ends default to the 15 minutes before the newest sample.
        assert_eq!(cpu_busy(&h, 0, 0, 0).len(), 120);
        // Unknown names come back empty, in order.
        let replies = h.query(&["nope".into(), "cpu.busy".into()], 0, 0, 0);
        assert_eq!(replies[0].name, "nope");
        assert!(replies[0].points.is_empty());
        assert_eq!(replies[1].points.len(), 120);
    }

    #[test]
    fn step_zero_over_a_long_range_uses_minutes() {
        let mut h = History::default();
        for i in 0..2000 {
            h.push(T0 + i * 1000, &busy(1.0));
        }
        assert_eq!(h.step_for(T0, T0 + 2_000_000, 0), COARSE_STEP_MS);
        let points = cpu_busy(&h, T0, T0 + 2_000_000, 0);
        assert_eq!(points.len(), 34); // minutes 0..=33 (second 1999 is in minute 33)
    }

    #[test]
    fn fine_ring_wraps_after_900_seconds() {
        let mut h = History::default();
        for i in 0..1000 {
            h.push(T0 + i * 1000, &busy(i as f64));
        }
        let points = cpu_busy(&h, T0 + 100_000, T0 + 1_000_000, 1000);
        assert_eq!(points.len(), FINE_SLOTS);
        assert_eq!(points[0], (T0 + 100_000, 100.0, 100.0, 100.0));
        assert_eq!(points[899], (T0 + 999_000, 999.0, 999.0, 999.0));
    }

    #[test]
    fn coarse_ring_wraps_after_1440_minutes() {
        let mut h = History::default();
        for m in 0..1500 {
            h.push(T0 + m * 60_000, &busy(m as f64));
        }
        let points = cpu_busy(&h, T0, T0 + 1500 * 60_000, 60_000);
        assert_eq!(points.len(), COARSE_SLOTS);
        assert_eq!(points[0].0, T0 + 60 * 60_000);
        assert_eq!(points[0].2, 60.0);
        assert_eq!(points[COARSE_SLOTS - 1].2, 1499.0);
    }

    #[test]
    fn gaps_leave_holes_instead_of_shifting_data() {
        let mut h = History::default();
        for i in (0..10).chain(20..30) {
            h.push(T0 + i * 1000, &busy(i as f64));
        }
        let points = cpu_busy(&h, T0, T0 + 30_000, 0);
        assert_eq!(points.len(), 20);
        assert!(points.iter().all(|p| p.0 == T0 + p.1 as i64 * 1000));

        // A jump shorter than the ring clears only the skipped seconds.
        let mut h = History::default();
        for i in 0..900 {
            h.push(T0 + i * 1000, &busy(i as f64));
        }
        h.push(T0 + 1_000_000, &busy(1000.0));
        let points = cpu_busy(&h, T0 + 101_000, T0 + 1_000_000, 0);
        assert_eq!(points.len(), 800); // seconds 101..=899 and 1000
        assert!(points.iter().all(|p| p.0 == T0 + p.1 as i64 * 1000));

        // A jump longer than the ring leaves only the new sample.
        h.push(T0 + 3_000_000, &busy(3000.0));
        let points = cpu_busy(&h, T0 + 2_500_000, T0 + 3_000_000, 0);
        assert_eq!(points, vec![(T0 + 3_000_000, 3000.0, 3000.0, 3000.0)]);
        // The minute tier keeps the hole too: no points for the minutes skipped.
        let minutes = cpu_busy(&h, T0, T0 + 3_000_000, 60_000);
        assert!(
            minutes
                .iter()
                .all(|p| p.0 <= T0 + 1_000_000 || p.0 == T0 + 3_000_000)
        );
        assert_eq!(minutes.last().map(|p| p.2), Some(3000.0));
    }

    #[test]
    fn series_cap_bounds_the_count_and_stale_series_make_room() {
        let mut h = History::new(4);
        h.push(T0, &nets(&["eth0", "eth1", "eth2"]));
        assert_eq!(h.available().len(), 4);
        assert!(h.refused_series() > 0);
        assert!(!h.available().iter().any(|n| n.contains("eth2")));
        // eth0 disappears; once it has missed a sample it yields to eth2.
        h.push(T0 + 1000, &nets(&["eth1", "eth2"]));
        h.push(T0 + 2000, &nets(&["eth1", "eth2"]));
        let names = h.available();
        assert_eq!(names.len(), 4);
        assert!(names.iter().any(|n| n == "net.eth2.rx_bytes_per_sec"));
        assert!(!names.iter().any(|n| n.contains("eth0")));
    }

    #[test]
    fn series_age_out_after_both_tiers() {
        let mut h = History::default();
        h.push(T0, &nets(&["eth0"]));
        h.push(T0 + 23 * 3_600_000, &nets(&["eth1"]));
        assert!(h.available().iter().any(|n| n.contains("eth0")));
        h.push(T0 + 25 * 3_600_000, &nets(&["eth1"]));
        assert_eq!(
            h.available(),
            vec!["net.eth1.rx_bytes_per_sec", "net.eth1.tx_bytes_per_sec"]
        );
    }

    #[test]
    fn memory_bytes_follows_the_formula_and_stays_flat() {
        let names: Vec<String> = (0..100).map(|i| format!("if{i:03}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut h = History::default();
        h.push(T0, &nets(&refs));
        let n = 200; // two series per interface
        let name_bytes: usize = h.available().iter().map(String::len).sum();
        let table = h.series.capacity() * (size_of::<(String, Rings)>() + 1);
        assert_eq!(
            h.memory_bytes(),
            n * RING_BYTES_PER_SERIES + name_bytes + table
        );
        assert!(h.memory_bytes() >= n * RING_BYTES_PER_SERIES);
        let before = h.memory_bytes();
        for i in 1..2000 {
            h.push(T0 + i * 1000, &nets(&refs));
        }
        assert_eq!(h.memory_bytes(), before);
    }
}
