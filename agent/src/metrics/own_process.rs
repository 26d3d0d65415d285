//! The `process_*` families every Prometheus client library exports about its own process
//! (CPU, memory, file descriptors, start time), with the same names, types and units as
//! Go's client under node_exporter: dashboards chart the exporter itself with them ("Node
//! Exporter Full"'s exporter CPU, memory and file descriptor panels).

use procfs::process::{LimitValue, Process};
use strata_exposition::{Exposition, Kind, Value};

/// What `/proc/self` says about the agent's process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OwnProcess {
    pub cpu_seconds: f64,
    pub virtual_bytes: u64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    /// The soft limit of open files; None when unlimited.
    pub max_fds: Option<u64>,
    /// The soft limit of the address space; None when unlimited.
    pub max_virtual_bytes: Option<u64>,
}

impl OwnProcess {
    /// Reads the running process; None when `/proc/self` cannot be read.
    pub(crate) fn read() -> Option<OwnProcess> {
        let me = Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let limits = me.limits().ok()?;
        let ticks = procfs::ticks_per_second().max(1) as f64;
        let limit = |value: LimitValue| match value {
            LimitValue::Value(v) => Some(v),
            LimitValue::Unlimited => None,
        };
        Some(OwnProcess {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            virtual_bytes: stat.vsize,
            resident_bytes: stat.rss * procfs::page_size(),
            open_fds: me.fd_count().ok()? as u64,
            max_fds: limit(limits.max_open_files.soft_limit),
            max_virtual_bytes: limit(limits.max_address_space.soft_limit),
        })
    }
}

/// Writes the families; `start_time_unix_secs` is when the agent started.
pub(crate) fn write(own: &OwnProcess, start_time_unix_secs: f64, w: &mut Exposition) {
    // An unlimited limit is the largest u64, as Go's procfs reports it.
    let limit = |v: Option<u64>| Value::Int(v.unwrap_or(u64::MAX));
    let families: [(&str, Kind, &str, Value); 7] = [
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            own.cpu_seconds.into(),
        ),
        (
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            limit(own.max_fds),
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            own.open_fds.into(),
        ),
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            own.resident_bytes.into(),
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            start_time_unix_secs.into(),
        ),
        (
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            own.virtual_bytes.into(),
        ),
        (
            "process_virtual_memory_max_bytes",
            Kind::Gauge,
            "Maximum amount of virtual memory available in bytes.",
            limit(own.max_virtual_bytes),
        ),
    ];
    for (name, kind, help, value) in families {
        w.single(name, kind, help, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_process_is_read_as_the_kernel_counts_it() {
        let own = OwnProcess::read().expect("/proc/self");
        let fds = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        // The directory listing holds one descriptor of its own while it is read.
        assert!(own.open_fds.abs_diff(fds) <= 2, "{own:?} vs {fds}");
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert!(own.virtual_bytes > 0 && own.resident_bytes > 0, "{own:?}");
        assert!(
            own.virtual_bytes / 1024 > vm_kib / 2,
            "{own:?} vs {vm_kib} kB"
        );
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(own.max_fds, nofile.current, "{own:?}");
    }

    #[test]
    fn families_carry_client_golangs_names_and_unlimited_is_the_largest_u64() {
        let own = OwnProcess {
            cpu_seconds: 1.5,
            virtual_bytes: 4096,
            resident_bytes: 2048,
            open_fds: 9,
            max_fds: Some(1024),
            max_virtual_bytes: None,
        };
        let mut w = Exposition::default();
        write(&own, 1_795_000_000.25, &mut w);
        let text = w.into_text();
        for line in [
            "# TYPE process_cpu_seconds_total counter",
            "process_cpu_seconds_total 1.5",
            "process_max_fds 1024",
            "process_open_fds 9",
            "process_resident_memory_bytes 2048",
            "process_start_time_seconds 1795000000.25",
            "process_virtual_memory_bytes 4096",
            "process_virtual_memory_max_bytes 18446744073709551615",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }
}
