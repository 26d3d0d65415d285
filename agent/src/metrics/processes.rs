//! node_exporter's `processes` collector: how many processes and threads the host has, by
//! state, against the kernel's limits (`node_processes_*`), for the dashboard's PIDs,
//! threads and process-state panels. node_exporter ships it disabled because it reads
//! every `/proc/[pid]/stat`; the agent's sampler reads them every second anyway
//! ([`super::procs::ProcessTable::counts`]), so a scrape writes those counts and reads no
//! process of its own. Per-thread states (`node_processes_threads_state`, one read per
//! thread) are left out for that cost.

use std::collections::BTreeMap;
use strata_exposition::{Exposition, Kind};

/// Processes and threads counted over one pass of `/proc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    /// Processes (pids in `/proc`).
    pub pids: u64,
    /// Threads over all processes.
    pub threads: u64,
    /// Processes per state letter (R, S, D, I, Z, T, ...).
    pub states: BTreeMap<char, u64>,
}

impl ProcessCounts {
    /// Counts one process in `state` with `threads` threads.
    pub fn add(&mut self, state: u8, threads: u64) {
        self.pids += 1;
        self.threads += threads;
        *self.states.entry(char::from(state)).or_default() += 1;
    }
}

/// Writes the families with node_exporter's names and help; a limit that cannot be read
/// leaves its family out.
pub(crate) fn write(
    counts: &ProcessCounts,
    max_processes: Option<u64>,
    max_threads: Option<u64>,
    w: &mut Exposition,
) {
    if let Some(max) = max_processes {
        w.single(
            "node_processes_max_processes",
            Kind::Gauge,
            "Number of max PIDs limit",
            max,
        );
    }
    if let Some(max) = max_threads {
        w.single(
            "node_processes_max_threads",
            Kind::Gauge,
            "Limit of threads in the system",
            max,
        );
    }
    w.single(
        "node_processes_pids",
        Kind::Gauge,
        "Number of PIDs",
        counts.pids,
    );
    let name = "node_processes_state";
    w.family(name, Kind::Gauge, "Number of processes in each state.");
    let mut letter = [0u8; 4];
    for (state, n) in &counts.states {
        w.sample(name, &[("state", state.encode_utf8(&mut letter))], *n);
    }
    w.single(
        "node_processes_threads",
        Kind::Gauge,
        "Allocated threads in system",
        counts.threads,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::procs::ProcessTable;

    /// The counts of one scan of `root`, as the sampler makes them.
    fn scanned(root: &std::path::Path) -> ProcessCounts {
        let mut table = ProcessTable::new(root.to_path_buf(), 100, 4096);
        table.scan();
        table.counts()
    }

    /// A `/proc` with the given processes (pid, state, threads) and limits.
    fn fixture(procs: &[(u32, char, u64)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (pid, state, threads) in procs {
            let p = dir.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            // Fields as the kernel writes them; the name holds a space and parentheses.
            let stat = format!(
                "{pid} (a (b) c) {state} 1 {pid} {pid} 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 \
                 {threads} 0 1234 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
            );
            std::fs::write(p.join("stat"), stat).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("sys/kernel")).unwrap();
        std::fs::write(dir.path().join("sys/kernel/pid_max"), "32768\n").unwrap();
        std::fs::write(dir.path().join("sys/kernel/threads-max"), "192730\n").unwrap();
        std::fs::create_dir_all(dir.path().join("self")).unwrap();
        std::fs::write(dir.path().join("version"), "Linux\n").unwrap();
        dir
    }

    #[test]
    fn processes_and_threads_are_counted_by_state_and_junk_is_skipped() {
        let dir = fixture(&[(1, 'S', 1), (2, 'R', 4), (30, 'S', 2), (44, 'I', 1)]);
        std::fs::create_dir_all(dir.path().join("55")).unwrap();
        std::fs::write(dir.path().join("55/stat"), "garbage").unwrap();
        assert_eq!(
            scanned(dir.path()),
            ProcessCounts {
                pids: 4,
                threads: 8,
                states: [('I', 1), ('R', 1), ('S', 2)].into_iter().collect(),
            }
        );
        assert_eq!(
            scanned(&dir.path().join("nowhere")),
            ProcessCounts::default()
        );
    }

    /// Debian's node_exporter 1.5 with its processes collector on the same tree writes the
    /// same families, help, series and values (bar the per-thread states left out).
    #[test]
    fn node_exporter_on_the_same_tree_agrees() {
        if !strata_tests::prereq::NODE_EXPORTER.check() {
            return;
        }
        let dir = fixture(&[(1, 'S', 1), (2, 'R', 4), (30, 'S', 2), (44, 'D', 1)]);
        for pid in [1, 2, 30, 44] {
            // node_exporter also reads each process's threads for their states.
            let task = dir.path().join(format!("{pid}/task/{pid}"));
            std::fs::create_dir_all(&task).unwrap();
            std::fs::copy(dir.path().join(format!("{pid}/stat")), task.join("stat")).unwrap();
        }
        let theirs = strata_tests::node_exporter_output(&[
            format!("--path.procfs={}", dir.path().display()),
            "--collector.disable-defaults".into(),
            "--collector.processes".into(),
        ]);
        let theirs: Vec<&str> = theirs
            .lines()
            .filter(|l| l.contains("node_processes_") && !l.contains("threads_state"))
            .collect();
        let mut w = Exposition::default();
        write(&scanned(dir.path()), Some(32768), Some(192730), &mut w);
        let ours = w.into_text();
        assert_eq!(ours.lines().collect::<Vec<_>>(), theirs, "{ours}");
    }
}
