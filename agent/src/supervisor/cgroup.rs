//! Resource isolation of service instances with cgroups.
//!
//! [`detect`] looks once at what the host allows and answers with an [`Isolation`]:
//! - cgroup v2 (production hosts): a parent group `<mount>/<root_name>` (e.g.
//!   `/sys/fs/cgroup/strata`) with memory, cpu and pids enabled in its `cgroup.subtree_control`.
//!   By the v2 "no internal processes" rule that parent holds no process itself: every instance
//!   is a leaf group below it, and the agent stays outside it.
//! - cgroup v1 (the fallback, and what hybrid hosts offer): a parent group per controller,
//!   `/sys/fs/cgroup/<controller>/<root_name>`, found through `/proc/self/mountinfo` (so
//!   co-mounted hierarchies like `cpu,cpuacct` work), with the instance groups below.
//! - none: no writable hierarchy; only the rlimits the shim sets apply.
//!
//! v2 is chosen when it offers at least as many of memory, cpu and pids as v1 does.
//!
//! An [`InstanceCgroup`] is one instance's group: the shim writes the instance's pid into its
//! [`procs_files`](InstanceCgroup::procs_files) before exec, so everything the instance forks
//! stays inside, is counted, and is killed with it. The file operations are blocking but
//! short; [`InstanceCgroup::kill_all`] and [`InstanceCgroup::remove`] wait up to about a
//! second, so call them from `spawn_blocking` in async code.

use crate::supervisor::spec::ResourceSpec;
use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The period of the CPU bandwidth limit, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// The smallest CPU quota the kernel accepts, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// How often `kill_all` signals and looks again before giving up.
const KILL_ROUNDS: u32 = 100;

/// How often `remove` retries an `rmdir` that fails because processes are still leaving.
const RMDIR_ROUNDS: u32 = 100;

/// The pause between rounds of `kill_all` and `remove`.
const ROUND_PAUSE: Duration = Duration::from_millis(10);

/// Why a cgroup operation failed: the operation and the path, with the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A group name that is not one plain path component.
    #[error("invalid cgroup name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    /// Creating, reading or removing a cgroup directory failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The kernel refused a value written to a cgroup file.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    /// [`Isolation::open`] found no such group.
    #[error("no cgroup {name:?} exists (looked for {})", path.display())]
    NotFound { name: String, path: PathBuf },
    /// [`InstanceCgroup::kill_all`] gave up with processes left.
    #[error("processes {pids:?} are still in {} after SIGKILL", path.display())]
    Survivors { path: PathBuf, pids: Vec<i32> },
}

/// The cgroup controllers Strata uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ctl {
    Memory,
    Cpu,
    Pids,
    /// v1 only: CPU accounting lives in its own controller there.
    CpuAcct,
}

impl Ctl {
    /// The controllers that set limits, in the order they are reported.
    const LIMITS: [Ctl; 3] = [Ctl::Memory, Ctl::Cpu, Ctl::Pids];

    fn name(self) -> &'static str {
        match self {
            Ctl::Memory => "memory",
            Ctl::Cpu => "cpu",
            Ctl::Pids => "pids",
            Ctl::CpuAcct => "cpuacct",
        }
    }
}

/// Which kind of isolation the host allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hierarchy {
    /// The unified hierarchy.
    V2,
    /// A hierarchy per controller.
    V1,
    /// No writable hierarchy: rlimits only.
    None,
}

/// What this host allows for isolating instances; found once by [`detect`].
#[derive(Debug, Clone)]
pub struct Isolation {
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    /// The parent group and the controllers enabled for its children.
    V2 {
        root: PathBuf,
        enabled: Vec<Ctl>,
    },
    /// A parent group per controller; co-mounted controllers share a directory.
    V1 {
        roots: Vec<(Ctl, PathBuf)>,
    },
    None {
        reason: String,
    },
}

/// Finds the best cgroup hierarchy this process may use and creates the parent group
/// `root_name` in it ("strata" in production, a unique name in tests).
pub fn detect(root_name: &str) -> Isolation {
    if let Err(e) = check_name(root_name) {
        return none(e.to_string());
    }
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        Err(e) => return none(format!("cannot read /proc/self/mountinfo: {e}")),
    };
    let mounts = parse_mountinfo(&mountinfo);
    let v2_offered: Vec<Ctl> = match &mounts.v2 {
        Some(mount) => {
            let listed = read_words(&mount.join("cgroup.controllers"));
            Ctl::LIMITS
                .into_iter()
                .filter(|c| listed.contains(c.name()))
                .collect()
        }
        None => Vec::new(),
    };
    let v1_offered = Ctl::LIMITS
        .into_iter()
        .filter(|c| mounts.v1_mount(*c).is_some())
        .count();

    let mut problems = Vec::new();
    if let Some(mount) = &mounts.v2
        && !v2_offered.is_empty()
        && v2_offered.len() >= v1_offered
    {
        match setup_v2(mount, root_name, &v2_offered) {
            Ok(mode) => return Isolation { mode },
            Err(e) => problems.push(format!("v2: {e}")),
        }
    }
    if v1_offered > 0 {
        match setup_v1(&mounts, root_name) {
            Ok(mode) => return Isolation { mode },
            Err(e) => problems.push(format!("v1: {e}")),
        }
    }
    if problems.is_empty() {
        problems.push("no cgroup hierarchy offers memory, cpu or pids".to_string());
    }
    none(problems.join("; "))
}

fn none(reason: String) -> Isolation {
    tracing::warn!(%reason, "no cgroup isolation; only rlimits apply");
    Isolation {
        mode: Mode::None { reason },
    }
}

/// Creates the v2 parent group and enables the controllers for its children.
fn setup_v2(mount: &Path, root_name: &str, offered: &[Ctl]) -> Result<Mode, CgroupError> {
    // The mount's root must pass the controllers down. The real root cgroup is exempt from the
    // no-internal-processes rule; a namespaced root with processes refuses, which is reported
    // by what ends up enabled below.
    let passed_down = read_words(&mount.join("cgroup.subtree_control"));
    for ctl in offered.iter().filter(|c| !passed_down.contains(c.name())) {
        let value = format!("+{}", ctl.name());
        if let Err(e) = write_file(&mount.join("cgroup.subtree_control"), &value) {
            tracing::warn!(error = %e, "cannot enable a controller for cgroup v2 children");
        }
    }
    let root = mount.join(root_name);
    make_dir(&root)?;
    let mut last_error = None;
    for ctl in offered {
        if let Err(e) = write_file(
            &root.join("cgroup.subtree_control"),
            &format!("+{}", ctl.name()),
        ) {
            last_error = Some(e);
        }
    }
    let enabled_words = read_words(&root.join("cgroup.subtree_control"));
    let enabled: Vec<Ctl> = offered
        .iter()
        .copied()
        .filter(|c| enabled_words.contains(c.name()))
        .collect();
    match (enabled.is_empty(), last_error) {
        (true, Some(e)) => {
            remove_dir_quietly(&root);
            Err(e)
        }
        (true, None) => {
            remove_dir_quietly(&root);
            Err(CgroupError::Io {
                op: "enable controllers in",
                path: root.join("cgroup.subtree_control"),
                source: io::Error::other("none of memory, cpu, pids could be enabled"),
            })
        }
        (false, error) => {
            if let Some(e) = error {
                tracing::warn!(error = %e, "some cgroup v2 controllers could not be enabled");
            }
            Ok(Mode::V2 { root, enabled })
        }
    }
}

/// Creates the v1 parent group in every mounted controller we use.
fn setup_v1(mounts: &Mounts, root_name: &str) -> Result<Mode, CgroupError> {
    let mut roots = Vec::new();
    let mut last_error = None;
    for ctl in [Ctl::Memory, Ctl::Cpu, Ctl::Pids, Ctl::CpuAcct] {
        let Some(mount) = mounts.v1_mount(ctl) else {
            continue;
        };
        let root = mount.join(root_name);
        match make_dir(&root) {
            Ok(()) => roots.push((ctl, root)),
            Err(e) => {
                tracing::warn!(error = %e, controller = ctl.name(), "cgroup v1 controller not writable");
                last_error = Some(e);
            }
        }
    }
    let limits = roots.iter().filter(|(c, _)| *c != Ctl::CpuAcct).count();
    match last_error {
        Some(e) if limits == 0 => {
            for (_, dir) in &roots {
                remove_dir_quietly(dir);
            }
            Err(e)
        }
        _ => Ok(Mode::V1 { roots }),
    }
}

impl Isolation {
    /// Which hierarchy instances are placed in.
    pub fn hierarchy(&self) -> Hierarchy {
        match self.mode {
            Mode::V2 { .. } => Hierarchy::V2,
            Mode::V1 { .. } => Hierarchy::V1,
            Mode::None { .. } => Hierarchy::None,
        }
    }

    /// The limit controllers in use ("memory", "cpu", "pids"), for reports and for skipping
    /// what the host lacks.
    pub fn controllers(&self) -> Vec<&'static str> {
        let ctls: BTreeSet<Ctl> = match &self.mode {
            Mode::V2 { enabled, .. } => enabled.iter().copied().collect(),
            Mode::V1 { roots } => roots.iter().map(|(c, _)| *c).collect(),
            Mode::None { .. } => BTreeSet::new(),
        };
        Ctl::LIMITS
            .into_iter()
            .filter(|c| ctls.contains(c))
            .map(Ctl::name)
            .collect()
    }

    /// One line for the operator: which isolation the host allowed, and why not more.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::V2 { .. } => format!("cgroup v2 ({})", self.controllers().join(", ")),
            Mode::V1 { .. } => format!("cgroup v1 ({})", self.controllers().join(", ")),
            Mode::None { reason } => format!("none: rlimits only ({reason})"),
        }
    }

    /// Creates the group `name` (e.g. "echo-1") and applies the limits of `resources`.
    /// An existing group of that name is reused and its limits rewritten. Without a hierarchy
    /// the group is empty: no files, no processes, nothing to kill.
    pub fn create(
        &self,
        name: &str,
        resources: &ResourceSpec,
    ) -> Result<InstanceCgroup, CgroupError> {
        check_name(name)?;
        let group = self.group(name);
        for dir in group.dirs() {
            if let Err(e) = make_dir(&dir) {
                remove_quietly(group);
                return Err(e);
            }
        }
        let leftovers = group.pids();
        if !leftovers.is_empty() {
            tracing::warn!(group = name, pids = ?leftovers, "reusing a cgroup that still has processes");
        }
        if let Err(e) = group.apply(resources, &self.controllers()) {
            remove_quietly(group);
            return Err(e);
        }
        tracing::debug!(group = name, isolation = %self.describe(), "cgroup created");
        Ok(group)
    }

    /// Opens the existing group `name`, e.g. after the agent restarted, without changing it.
    pub fn open(&self, name: &str) -> Result<InstanceCgroup, CgroupError> {
        check_name(name)?;
        let group = self.group(name);
        if let Some(missing) = group.dirs().into_iter().find(|d| !d.is_dir()) {
            return Err(CgroupError::NotFound {
                name: name.to_string(),
                path: missing,
            });
        }
        Ok(group)
    }

    /// The names of the instance groups that exist below the parent group, sorted: how a
    /// restarted agent finds instances whose records are lost.
    pub fn group_names(&self) -> Vec<String> {
        let root = match &self.mode {
            Mode::V2 { root, .. } => root,
            Mode::V1 { roots } => match roots.first() {
                Some((_, root)) => root,
                None => return Vec::new(),
            },
            Mode::None { .. } => return Vec::new(),
        };
        let mut names: Vec<String> = std::fs::read_dir(root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Removes the parent group(s); fails while instance groups remain below. For uninstall
    /// and for tests that made their own parent.
    pub fn remove_root(&self) -> Result<(), CgroupError> {
        let dirs: BTreeSet<&PathBuf> = match &self.mode {
            Mode::V2 { root, .. } => [root].into_iter().collect(),
            Mode::V1 { roots } => roots.iter().map(|(_, d)| d).collect(),
            Mode::None { .. } => BTreeSet::new(),
        };
        dirs.into_iter().try_for_each(|d| remove_dir(d, 1))
    }

    fn group(&self, name: &str) -> InstanceCgroup {
        let layout = match &self.mode {
            Mode::V2 { root, .. } => Layout::V2 {
                dir: root.join(name),
            },
            Mode::V1 { roots } => Layout::V1 {
                dirs: roots.iter().map(|(c, d)| (*c, d.join(name))).collect(),
            },
            Mode::None { .. } => Layout::None,
        };
        InstanceCgroup {
            name: name.to_string(),
            layout,
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// One instance's cgroup: where its processes are placed, limited, counted and killed.
#[derive(Debug)]
pub struct InstanceCgroup {
    name: String,
    layout: Layout,
}

#[derive(Debug)]
enum Layout {
    V2 { dir: PathBuf },
    V1 { dirs: Vec<(Ctl, PathBuf)> },
    None,
}

impl InstanceCgroup {
    /// The group's name, as given to [`Isolation::create`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `cgroup.procs` files the shim writes the instance's pid into (one per v1 hierarchy).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Every process in the group, sorted.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = BTreeSet::new();
        for file in self.procs_files() {
            if let Ok(text) = std::fs::read_to_string(&file) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.into_iter().collect()
    }

    /// Kills every process in the group (including what the instance forked) and waits until
    /// the group is empty. Uses `cgroup.kill` where the kernel has it, else SIGKILL by pid,
    /// round after round, since processes may fork while they are being killed.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        if let Layout::V2 { dir } = &self.layout {
            let kill = dir.join("cgroup.kill");
            if kill.exists() {
                write_file(&kill, "1")?;
            }
        }
        let mut pids = self.pids();
        for _ in 0..KILL_ROUNDS {
            if pids.is_empty() {
                return Ok(());
            }
            for pid in &pids {
                signal_kill(*pid);
            }
            std::thread::sleep(ROUND_PAUSE);
            pids = self.pids();
        }
        if pids.is_empty() {
            return Ok(());
        }
        Err(CgroupError::Survivors {
            path: self.dirs().into_iter().next().unwrap_or_default(),
            pids,
        })
    }

    /// How often the kernel's OOM killer killed a process of this group for hitting its
    /// memory limit (v2 `memory.events`, v1 `memory.oom_control` on kernels that count it).
    pub fn oom_kills(&self) -> u64 {
        match &self.layout {
            Layout::V2 { dir } => read_key(&dir.join("memory.events"), "oom_kill"),
            Layout::V1 { .. } => self
                .dir_of(Ctl::Memory)
                .and_then(|d| read_key(&d.join("memory.oom_control"), "oom_kill")),
            Layout::None => None,
        }
        .unwrap_or(0)
    }

    /// Memory used by the group now, in bytes.
    pub fn memory_current(&self) -> Option<u64> {
        match &self.layout {
            Layout::V2 { dir } => read_u64(&dir.join("memory.current")),
            Layout::V1 { .. } => self
                .dir_of(Ctl::Memory)
                .and_then(|d| read_u64(&d.join("memory.usage_in_bytes"))),
            Layout::None => None,
        }
    }

    /// CPU time used by the group so far, in microseconds.
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        match &self.layout {
            Layout::V2 { dir } => read_key(&dir.join("cpu.stat"), "usage_usec"),
            Layout::V1 { .. } => self
                .dir_of(Ctl::CpuAcct)
                .and_then(|d| read_u64(&d.join("cpuacct.usage")))
                .map(|ns| ns / 1000),
            Layout::None => None,
        }
    }

    /// Removes the group's directories, retrying briefly while exiting processes leave.
    /// Failures are logged and returned; the group is gone from the caller either way.
    pub fn remove(self) -> Result<(), CgroupError> {
        let mut result = Ok(());
        for dir in self.dirs() {
            if let Err(e) = remove_dir(&dir, RMDIR_ROUNDS) {
                tracing::warn!(group = %self.name, error = %e, "cannot remove cgroup");
                result = Err(e);
            }
        }
        result
    }

    /// The group's directories, each once (co-mounted v1 controllers share one).
    fn dirs(&self) -> Vec<PathBuf> {
        match &self.layout {
            Layout::V2 { dir } => vec![dir.clone()],
            Layout::V1 { dirs } => {
                let unique: BTreeSet<&PathBuf> = dirs.iter().map(|(_, d)| d).collect();
                unique.into_iter().cloned().collect()
            }
            Layout::None => Vec::new(),
        }
    }

    fn dir_of(&self, ctl: Ctl) -> Option<&Path> {
        match &self.layout {
            Layout::V1 { dirs } => dirs
                .iter()
                .find(|(c, _)| *c == ctl)
                .map(|(_, d)| d.as_path()),
            Layout::V2 { dir } => Some(dir),
            Layout::None => None,
        }
    }

    /// Writes the limits; an absent limit is written as "no limit", so a reused group is reset.
    /// `available` names the controllers in use; limits for others are skipped with a warning.
    fn apply(&self, r: &ResourceSpec, available: &[&str]) -> Result<(), CgroupError> {
        let wanted = [
            ("memory", r.memory_max.is_some()),
            ("cpu", r.cpu_max.is_some()),
            ("pids", r.pids_max.is_some()),
        ];
        for (ctl, set) in wanted {
            if set && !available.contains(&ctl) {
                tracing::warn!(group = %self.name, controller = ctl, "limit not applied: controller unavailable");
            }
        }
        let quota = r
            .cpu_max
            .map(|cores| ((cores * CPU_PERIOD_US as f64).round() as u64).max(CPU_MIN_QUOTA_US));
        match &self.layout {
            Layout::V2 { dir } => {
                if available.contains(&"memory") {
                    let max = r.memory_max.map_or("max".to_string(), |b| b.to_string());
                    write_file(&dir.join("memory.max"), &max)?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write_file(&swap, if r.memory_max.is_some() { "0" } else { "max" })?;
                    }
                }
                if available.contains(&"cpu") {
                    let max = quota.map_or("max".to_string(), |q| q.to_string());
                    write_file(&dir.join("cpu.max"), &format!("{max} {CPU_PERIOD_US}"))?;
                }
                if available.contains(&"pids") {
                    let max = r.pids_max.map_or("max".to_string(), |n| n.to_string());
                    write_file(&dir.join("pids.max"), &max)?;
                }
            }
            Layout::V1 { .. } => {
                if let Some(dir) = self.dir_of(Ctl::Memory) {
                    let limit = r.memory_max.map_or("-1".to_string(), |b| b.to_string());
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    let has_memsw = memsw.exists();
                    // memsw must stay >= the memory limit: lift it, set the limit, then lower it.
                    if has_memsw {
                        write_file(&memsw, "-1")?;
                    }
                    write_file(&dir.join("memory.limit_in_bytes"), &limit)?;
                    if has_memsw {
                        write_file(&memsw, &limit)?;
                    }
                }
                if let Some(dir) = self.dir_of(Ctl::Cpu) {
                    write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                    let quota = quota.map_or("-1".to_string(), |q| q.to_string());
                    write_file(&dir.join("cpu.cfs_quota_us"), &quota)?;
                }
                if let Some(dir) = self.dir_of(Ctl::Pids) {
                    let max = r.pids_max.map_or("max".to_string(), |n| n.to_string());
                    write_file(&dir.join("pids.max"), &max)?;
                }
            }
            Layout::None => {}
        }
        Ok(())
    }
}

/// Removes a group that failed half-way through creation; the original error is what counts.
fn remove_quietly(group: InstanceCgroup) {
    if let Err(e) = group.remove() {
        tracing::debug!(error = %e, "cleanup after a failed cgroup creation");
    }
}

fn remove_dir_quietly(dir: &Path) {
    if let Err(e) = remove_dir(dir, 1) {
        tracing::debug!(error = %e, "cleanup of an unusable cgroup parent");
    }
}

/// SIGKILLs one process of a group; one that is already gone is fine.
fn signal_kill(pid: i32) {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    match rustix::process::kill_process(pid, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => tracing::warn!(pid = pid.as_raw_nonzero().get(), error = %e, "cannot SIGKILL"),
    }
}

/// A group name must be one plain path component.
fn check_name(name: &str) -> Result<(), CgroupError> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 200 {
        Some("it is longer than 200 bytes")
    } else if name.starts_with('.') {
        Some("it starts with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(CgroupError::InvalidName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

fn make_dir(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(CgroupError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// `rmdir`, retried while the kernel says the group is busy; a missing directory is fine.
fn remove_dir(dir: &Path, rounds: u32) -> Result<(), CgroupError> {
    let mut round = 1;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error())
                    && round < rounds =>
            {
                round += 1;
                std::thread::sleep(ROUND_PAUSE);
            }
            Err(source) => {
                return Err(CgroupError::Io {
                    op: "remove",
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// The whitespace-separated words of a file such as `cgroup.controllers`; none if unreadable.
fn read_words(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A file holding one number.
fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The number after `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
fn read_key(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_key(&text, key)
}

fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key))
            .then(|| words.next()?.parse().ok())
            .flatten()
    })
}

/// The cgroup file systems mounted in this mount namespace.
#[derive(Debug, Default, PartialEq)]
struct Mounts {
    v2: Option<PathBuf>,
    /// Each v1 mount with the controllers it carries.
    v1: Vec<(PathBuf, Vec<String>)>,
}

impl Mounts {
    fn v1_mount(&self, ctl: Ctl) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(_, ctls)| ctls.iter().any(|c| c == ctl.name()))
            .map(|(p, _)| p.as_path())
    }
}

/// Reads `/proc/self/mountinfo`: `id parent dev root mountpoint opts [optional...] - fstype
/// source superopts`; v1 controllers are among the super options.
fn parse_mountinfo(text: &str) -> Mounts {
    let mut mounts = Mounts::default();
    for line in text.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = before.split_whitespace().nth(4) else {
            continue;
        };
        let mut tail = after.split_whitespace();
        let fstype = tail.next().unwrap_or_default();
        let super_opts = tail.nth(1).unwrap_or_default();
        let path = PathBuf::from(unescape_octal(mount_point));
        match fstype {
            "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(path),
            "cgroup" => {
                let ctls: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| ["memory", "cpu", "cpuacct", "pids"].contains(o))
                    .map(str::to_string)
                    .collect();
                if !ctls.is_empty() {
                    mounts.v1.push((path, ctls));
                }
            }
            _ => {}
        }
    }
    mounts
}

/// Undoes mountinfo's `\040`-style escapes of spaces, tabs, newlines and backslashes.
fn unescape_octal(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;
    use strata_tests::prereq;

    /// Generous bound for anything the kernel does asynchronously.
    const PATIENCE: Duration = Duration::from_secs(30);

    /// A parent group of the test's own; on drop, kills and removes everything below it.
    struct Fixture {
        isolation: Isolation,
        groups: Vec<String>,
    }

    impl Fixture {
        /// `None` when this host gives no writable hierarchy, reported as a missing
        /// prerequisite (a failure under CI, a printed skip elsewhere).
        fn new(test: &str) -> Option<Fixture> {
            let isolation = detect(&format!("strata-test-{}-{test}", std::process::id()));
            if isolation.hierarchy() == Hierarchy::None {
                prereq::missing(
                    format_args!("a writable cgroup hierarchy ({})", isolation.describe()),
                    prereq::CGROUPS_HOW,
                );
                return None;
            }
            Some(Fixture {
                isolation,
                groups: Vec::new(),
            })
        }

        fn create(&mut self, name: &str, resources: &ResourceSpec) -> InstanceCgroup {
            self.groups.push(name.to_string());
            self.isolation.create(name, resources).unwrap()
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            for name in &self.groups {
                if let Ok(group) = self.isolation.open(name) {
                    let _ = group.kill_all();
                    let _ = group.remove();
                }
            }
            if let Err(e) = self.isolation.remove_root() {
                eprintln!("test cleanup: {e}");
            }
        }
    }

    /// Starts `sh -c script` held at a `read` until it has been placed into `group`.
    fn spawn_in(group: &InstanceCgroup, script: &str) -> Child {
        let mut child = Command::new("sh")
            .args(["-c", &format!("read _; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        for file in group.procs_files() {
            std::fs::write(&file, child.id().to_string()).unwrap();
        }
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        child
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let begun = Instant::now();
        while !done() {
            assert!(begun.elapsed() < PATIENCE, "gave up waiting: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The first of the group's directories that has `file`, read.
    fn read_in(group: &InstanceCgroup, file: &str) -> Option<String> {
        group.dirs().iter().find_map(|d| {
            std::fs::read_to_string(d.join(file))
                .ok()
                .map(|t| t.trim().to_string())
        })
    }

    fn gone_or_zombie(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /mnt/odd\\040dir rw - cgroup cgroup rw,freezer
";

    #[test]
    fn mountinfo_finds_v2_and_co_mounted_v1_controllers() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1_mount(Ctl::Cpu),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(m.v1_mount(Ctl::CpuAcct), m.v1_mount(Ctl::Cpu));
        assert_eq!(
            m.v1_mount(Ctl::Memory),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.v1_mount(Ctl::Pids),
            Some(Path::new("/sys/fs/cgroup/pids"))
        );
        assert_eq!(m.v1.len(), 3, "devices and freezer are not ours: {m:?}");

        let pure = parse_mountinfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(pure.v2, Some(PathBuf::from("/sys/fs/cgroup")));
        assert!(pure.v1.is_empty());
        assert_eq!(unescape_octal("/mnt/odd\\040dir"), "/mnt/odd dir");
        assert_eq!(parse_mountinfo("garbage\n\n - \n"), Mounts::default());
    }

    #[test]
    fn flat_keyed_files_are_parsed_defensively() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_key(events, "oom_kill"), Some(2));
        assert_eq!(parse_key(events, "max"), Some(12));
        assert_eq!(parse_key("oom_kill\noom_kill x\n", "oom_kill"), None);
        assert_eq!(parse_key("", "oom_kill"), None);
    }

    #[test]
    fn names_must_be_one_plain_component() {
        for bad in ["", "..", ".hidden", "a/b", "echo/1", "a b", "x\0"] {
            assert!(
                matches!(check_name(bad), Err(CgroupError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        check_name("echo-1").unwrap();
        let none = Isolation {
            mode: Mode::None {
                reason: "test".into(),
            },
        };
        assert!(none.create("echo/1", &ResourceSpec::default()).is_err());
        let group = none.create("echo-1", &ResourceSpec::default()).unwrap();
        assert!(group.procs_files().is_empty());
        assert!(group.pids().is_empty());
        group.kill_all().unwrap();
        assert_eq!(none.describe(), "none: rlimits only (test)");
    }

    #[test]
    fn detect_reports_the_hierarchy_of_this_host() {
        let Some(fixture) = Fixture::new("detect") else {
            return;
        };
        let description = fixture.isolation.describe();
        eprintln!("isolation: {description}");
        let v2_controllers = std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers");
        let hybrid_without_v2_memory = v2_controllers.is_ok_and(|c| !c.contains("memory"))
            && Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        if hybrid_without_v2_memory {
            assert_eq!(fixture.isolation.hierarchy(), Hierarchy::V1);
            assert_eq!(description, "cgroup v1 (memory, cpu, pids)");
        }
        assert!(description.starts_with("cgroup v"), "{description}");
    }

    #[test]
    fn limits_are_written_and_can_be_read_back() {
        let Some(mut fixture) = Fixture::new("limits") else {
            return;
        };
        let limits = ResourceSpec {
            memory_max: Some(64 << 20),
            cpu_max: Some(0.5),
            pids_max: Some(32),
            nofile: None,
        };
        let group = fixture.create("limits-1", &limits);
        let controllers = fixture.isolation.controllers();
        let has = |c| controllers.contains(&c);
        let read = |f| read_in(&group, f);
        match fixture.isolation.hierarchy() {
            Hierarchy::V1 => {
                if has("memory") {
                    assert_eq!(read("memory.limit_in_bytes").as_deref(), Some("67108864"));
                    if let Some(memsw) = read("memory.memsw.limit_in_bytes") {
                        assert_eq!(memsw, "67108864");
                    }
                }
                if has("cpu") {
                    assert_eq!(read("cpu.cfs_quota_us").as_deref(), Some("50000"));
                    assert_eq!(read("cpu.cfs_period_us").as_deref(), Some("100000"));
                }
                if has("pids") {
                    assert_eq!(read("pids.max").as_deref(), Some("32"));
                }
            }
            Hierarchy::V2 => {
                if has("memory") {
                    assert_eq!(read("memory.max").as_deref(), Some("67108864"));
                    if let Some(swap) = read("memory.swap.max") {
                        assert_eq!(swap, "0");
                    }
                }
                if has("cpu") {
                    assert_eq!(read("cpu.max").as_deref(), Some("50000 100000"));
                }
                if has("pids") {
                    assert_eq!(read("pids.max").as_deref(), Some("32"));
                }
            }
            Hierarchy::None => unreachable!("the fixture is made only where cgroups are"),
        }

        // Creating it again without limits resets them; open finds it; remove leaves nothing.
        let again = fixture.create("limits-1", &ResourceSpec::default());
        if has("pids") {
            assert_eq!(read_in(&again, "pids.max").as_deref(), Some("max"));
        }
        if has("cpu") {
            let cpu = read_in(&again, "cpu.max").or_else(|| read_in(&again, "cpu.cfs_quota_us"));
            assert!(
                matches!(cpu.as_deref(), Some("max 100000" | "-1")),
                "{cpu:?}"
            );
        }
        let dirs = again.dirs();
        assert!(!dirs.is_empty());
        fixture
            .isolation
            .open("limits-1")
            .unwrap()
            .remove()
            .unwrap();
        for dir in &dirs {
            assert!(!dir.exists(), "{} is left", dir.display());
        }
        assert!(matches!(
            fixture.isolation.open("limits-1"),
            Err(CgroupError::NotFound { .. })
        ));
        drop(group);
    }

    /// A parent group on the cgroup v2 mount even when it offers none of our controllers (as
    /// on hybrid hosts): v2 containment, `cgroup.kill` and removal are exercised all the same.
    #[test]
    fn v2_groups_contain_and_kill_even_without_controllers() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let Some(mount) = parse_mountinfo(&text).v2 else {
            prereq::missing("a cgroup v2 mount", prereq::CGROUPS_HOW);
            return;
        };
        let root = mount.join(format!("strata-test-{}-v2", std::process::id()));
        if let Err(e) = make_dir(&root) {
            prereq::missing(
                format_args!("a writable cgroup v2 mount ({e})"),
                prereq::CGROUPS_HOW,
            );
            return;
        }
        let mut fixture = Fixture {
            isolation: Isolation {
                mode: Mode::V2 {
                    root,
                    enabled: Vec::new(),
                },
            },
            groups: Vec::new(),
        };
        let group = fixture.create("v2-1", &ResourceSpec::default());
        assert_eq!(group.procs_files().len(), 1);
        let mut child = spawn_in(&group, "sleep 30 & exec sleep 30");
        wait_until("two processes in the group", || group.pids().len() == 2);
        let forked = group
            .pids()
            .into_iter()
            .find(|p| *p != child.id() as i32)
            .unwrap();
        assert!(
            group.cpu_usage_usec().is_some(),
            "cpu.stat is a core v2 file"
        );
        group.kill_all().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        wait_until("the forked sleep is dead", || gone_or_zombie(forked));
        let dirs = group.dirs();
        group.remove().unwrap();
        assert!(dirs.iter().all(|d| !d.exists()));
    }

    #[test]
    fn kill_all_kills_the_instance_and_what_it_forked() {
        let Some(mut fixture) = Fixture::new("kill") else {
            return;
        };
        let group = fixture.create("kill-1", &ResourceSpec::default());
        let mut child = spawn_in(&group, "sleep 30 & exec sleep 30");
        let leader = child.id() as i32;
        wait_until("two processes in the group", || group.pids().len() == 2);
        let pids = group.pids();
        assert!(pids.contains(&leader), "{pids:?} lacks {leader}");
        let forked = pids.iter().copied().find(|p| *p != leader).unwrap();

        group.kill_all().unwrap();
        assert!(group.pids().is_empty());
        assert_eq!(child.wait().unwrap().signal(), Some(9));
        wait_until("the forked sleep is dead", || gone_or_zombie(forked));

        let dirs = group.dirs();
        group.remove().unwrap();
        for dir in &dirs {
            assert!(!dir.exists(), "{} is left", dir.display());
        }
    }

    #[test]
    fn exceeding_the_memory_limit_is_an_oom_kill() {
        let Some(mut fixture) = Fixture::new("oom") else {
            return;
        };
        if !fixture.isolation.controllers().contains(&"memory") {
            prereq::missing(
                format_args!("a memory controller ({})", fixture.isolation.describe()),
                prereq::CGROUPS_HOW,
            );
            return;
        }
        let limits = ResourceSpec {
            memory_max: Some(32 << 20),
            ..ResourceSpec::default()
        };
        let group = fixture.create("oom-1", &limits);
        assert_eq!(group.oom_kills(), 0);
        // The shell holds 100 MB of 'a's in a variable: far beyond 32 MiB, and really touched.
        let mut child = spawn_in(
            &group,
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo ${#x}",
        );
        let begun = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                begun.elapsed() < PATIENCE,
                "the allocating shell was not killed"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(9), "{status:?}");
        let oom_kills = group.oom_kills();
        eprintln!(
            "oom_kills {oom_kills}, memory {:?}, cpu {:?}us",
            group.memory_current(),
            group.cpu_usage_usec()
        );
        assert!(oom_kills >= 1, "no OOM kill counted");
        assert!(group.memory_current().is_some());
        assert!(group.cpu_usage_usec().is_some_and(|us| us > 0));
        group.kill_all().unwrap();
    }
}
