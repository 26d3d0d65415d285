//! Static facts about the host (OS, kernel, cores, memory), read once at start through
//! sysinfo, for the node identity the API and the console show.

/// What the host is: read once, it does not change while the agent runs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    pub os: String,
    pub kernel: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub boot_time_unix_secs: i64,
}

impl HostFacts {
    /// Reads the facts; a piece the host does not tell is left as "unknown" or 0.
    pub fn read() -> HostFacts {
        let unknown = || "unknown".to_string();
        let memory_bytes = sysinfo::System::new()
            .map(|mut system| {
                system.refresh_memory();
                system.total_memory()
            })
            .unwrap_or(0);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(0);
        let cores = count_cpu_lines().unwrap_or(cores);
        HostFacts {
            hostname: sysinfo::System::host_name()
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| {
                    rustix::system::uname()
                        .nodename()
                        .to_string_lossy()
                        .into_owned()
                }),
            os: sysinfo::System::long_os_version().unwrap_or_else(|_| unknown()),
            kernel: sysinfo::System::kernel_version().unwrap_or_else(|_| unknown()),
            cores,
            memory_bytes,
            boot_time_unix_secs: sysinfo::System::boot_time().map(|t| t as i64).unwrap_or(0),
        }
    }
}

/// The number of CPUs the kernel lists in /proc/stat (`cpuN` lines): the cores the host
/// really has online, whatever the affinity of this process.
fn count_cpu_lines() -> Option<u32> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let n = stat
        .lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    (n > 0).then_some(n as u32)
}
