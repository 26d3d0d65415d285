//! Finding the live instances of a service whose records are lost, so a missing
//! `instance.json` (or a deleted `instances/` directory) never leads to a duplicate beside
//! processes that still run.
//!
//! At start, for every instance index without a readable record, the agent looks for its
//! processes three ways: the shim's own `shim.pid` file, the instance's cgroup
//! (`<service>-<index>`: its processes, the service being the one whose parent is outside
//! the group), and `/proc` (a process of the agent's user whose argv is the shim binary and
//! this data dir's instance directory). Every pid is taken with its start time. [`decide`]
//! (pure) then says whether the instance can be adopted (its shim and service both alive and
//! every port found in its environment) with a rebuilt record, or must be stopped; the
//! supervisor writes the record or stops it, and records which and why.

use super::instance::env_suffix;
use super::store::InstanceRecord;
use crate::metrics::procs::read_proc_stat;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use strata_shim::launch::{LAUNCH_FILE, Launch, SHIM_PID_FILE, ShimPid};

/// How an instance's processes were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Clue {
    /// The shim's `shim.pid` in the instance directory.
    ShimPidFile,
    /// The instance's cgroup.
    Cgroup,
    /// A shim process whose argv names the instance directory.
    ProcScan,
}

impl Clue {
    fn label(self) -> &'static str {
        match self {
            Clue::ShimPidFile => "its shim.pid",
            Clue::Cgroup => "its cgroup",
            Clue::ProcScan => "a shim process naming its directory",
        }
    }
}

/// The live processes of one instance that has no record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub index: u32,
    /// The shim: pid and start ticks, when alive.
    pub shim: Option<(i32, u64)>,
    /// The service's main process: pid and start ticks, when alive.
    pub service: Option<(i32, u64)>,
    /// The service's environment, when it could be read.
    pub env: Option<BTreeMap<String, String>>,
    /// When the service started, Unix milliseconds (0 when unknown).
    pub started_unix_ms: i64,
    pub clues: BTreeSet<Clue>,
}

impl Found {
    /// "its cgroup and its shim.pid".
    pub fn how(&self) -> String {
        let labels: Vec<&str> = self.clues.iter().map(|c| c.label()).collect();
        labels.join(" and ")
    }
}

/// What to do with an instance found without a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Supervise it again under this rebuilt record.
    Adopt(InstanceRecord),
    /// Stop it: it cannot be supervised, for this reason.
    Stop(String),
}

/// Whether `found` can be adopted. `ports` are the spec's port names; `None` when the spec is
/// lost, and then every `STRATA_PORT_*` variable is taken as a port.
pub fn decide(found: &Found, ports: Option<&[String]>) -> Verdict {
    let Some((shim_pid, shim_start_ticks)) = found.shim else {
        return Verdict::Stop("its shim is gone, so nothing could record how it ends".into());
    };
    let Some((pid, start_ticks)) = found.service else {
        return Verdict::Stop(
            "its shim runs no service (it was starting or ending when the record was lost)".into(),
        );
    };
    let env = found.env.clone().unwrap_or_default();
    let port_of = |variable: &str| env.get(variable).and_then(|v| v.parse::<u16>().ok());
    let ports = match ports {
        Some(names) => {
            let mut ports = BTreeMap::new();
            for name in names {
                let variable = format!("STRATA_PORT_{}", env_suffix(name));
                let Some(port) = port_of(&variable) else {
                    return Verdict::Stop(format!(
                        "its port {name:?} cannot be found ({variable} is not in its environment)"
                    ));
                };
                ports.insert(name.clone(), port);
            }
            ports
        }
        None => env
            .iter()
            .filter_map(|(k, v)| {
                let suffix = k.strip_prefix("STRATA_PORT_")?;
                let name = suffix.to_ascii_lowercase().replace('_', "-");
                Some((name, v.parse::<u16>().ok()?))
            })
            .collect(),
    };
    Verdict::Adopt(InstanceRecord {
        shim_pid,
        shim_start_ticks,
        pid,
        start_ticks,
        ports,
        started_unix_ms: found.started_unix_ms,
        restarts: 0,
        version: env.get("STRATA_VERSION").cloned().unwrap_or_default(),
        // Whether that shim takes SIGUSR1 is not known: new log settings wait for a start.
        reloads_logs: false,
    })
}

/// A process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub start_ticks: u64,
    pub argv: Vec<String>,
}

/// Every process of this agent's user, read once.
pub fn scan_proc() -> Vec<Proc> {
    let uid = rustix::process::geteuid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let dir = format!("/proc/{pid}");
            if std::fs::metadata(&dir).ok()?.uid() != uid {
                return None;
            }
            let stat = read_proc_stat(pid).filter(|s| s.state != b'Z')?;
            let argv = std::fs::read(format!("{dir}/cmdline"))
                .map(|raw| split_nul(&raw))
                .unwrap_or_default();
            Some(Proc {
                pid,
                ppid: stat.ppid,
                start_ticks: stat.start_time,
                argv,
            })
        })
        .collect()
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// The index of the instance whose shim `proc` is: argv is `<shim> <instances dir>/<index>`
/// with the shim binary's file name `shim_name`.
pub fn shim_index(proc: &Proc, instances_dir: &Path, shim_name: &OsStr) -> Option<u32> {
    let [exe, dir] = proc.argv.as_slice() else {
        return None;
    };
    if Path::new(exe).file_name() != Some(shim_name) {
        return None;
    }
    let dir = Path::new(dir);
    if dir.parent() != Some(instances_dir) {
        return None;
    }
    dir.file_name()?.to_str()?.parse().ok()
}

/// The services with a shim running under `services_root` (this data dir's
/// `services/`) that are not in `known`: their whole directory is gone (deleted, or never
/// written back by a restored backup), while their instances run on.
pub fn unknown_services(
    procs: &[Proc],
    services_root: &Path,
    shim_name: &OsStr,
    known: &BTreeSet<String>,
) -> BTreeSet<String> {
    procs
        .iter()
        .filter_map(|proc| {
            let [exe, dir] = proc.argv.as_slice() else {
                return None;
            };
            if Path::new(exe).file_name() != Some(shim_name) {
                return None;
            }
            let instances = Path::new(dir).parent()?;
            let service = instances.parent()?;
            if instances.file_name()? != "instances" || service.parent()? != services_root {
                return None;
            }
            let name = service.file_name()?.to_str()?;
            (!known.contains(name)).then(|| name.to_string())
        })
        .collect()
}

/// The service's main process among an instance cgroup's pids: the one whose parent is not
/// in the group (its shim), the lowest such.
pub fn main_process<'a>(group: &[i32], procs: &'a [Proc]) -> Option<&'a Proc> {
    procs
        .iter()
        .filter(|p| group.contains(&p.pid) && !group.contains(&p.ppid))
        .min_by_key(|p| p.pid)
}

/// Where to look for one service's instances.
pub struct Look<'a> {
    pub name: &'a str,
    pub instances_dir: &'a Path,
    pub shim_name: &'a OsStr,
    /// Indexes that have a readable record (nothing to find for them).
    pub recorded: &'a BTreeSet<u32>,
    /// Instance cgroups by name, with their pids.
    pub groups: &'a BTreeMap<String, Vec<i32>>,
    pub procs: &'a [Proc],
    /// Unix milliseconds of boot and clock ticks per second, to date a start.
    pub boot_unix_ms: i64,
    pub ticks_per_second: u64,
}

/// The entry of instance `index`, noting `clue`; `None` when it has a record.
fn entry<'a>(
    found: &'a mut BTreeMap<u32, Found>,
    recorded: &BTreeSet<u32>,
    index: u32,
    clue: Clue,
) -> Option<&'a mut Found> {
    if recorded.contains(&index) {
        return None;
    }
    let f = found.entry(index).or_insert_with(|| Found {
        index,
        ..Found::default()
    });
    f.clues.insert(clue);
    Some(f)
}

/// Every instance of the service that has processes but no record.
pub fn find(look: &Look) -> Vec<Found> {
    let mut found: BTreeMap<u32, Found> = BTreeMap::new();
    let alive = |pid: i32, ticks: u64| {
        look.procs
            .iter()
            .any(|p| p.pid == pid && p.start_ticks == ticks)
    };
    let recorded = look.recorded;
    // 1. shim.pid files of instance directories that are left.
    if let Ok(entries) = std::fs::read_dir(look.instances_dir) {
        for e in entries.filter_map(Result::ok) {
            let Some(index) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Some(shim) = std::fs::read_to_string(e.path().join(SHIM_PID_FILE))
                .ok()
                .and_then(|t| ShimPid::parse(&t))
            else {
                continue;
            };
            let shim_alive = alive(shim.shim_pid, shim.shim_start_ticks);
            let service = shim.service.filter(|(pid, ticks)| alive(*pid, *ticks));
            if (shim_alive || service.is_some())
                && let Some(f) = entry(&mut found, recorded, index, Clue::ShimPidFile)
            {
                f.shim = f
                    .shim
                    .or(shim_alive.then_some((shim.shim_pid, shim.shim_start_ticks)));
                f.service = f.service.or(service);
            }
        }
    }
    // 2. Shim processes naming an instance directory of this service.
    for proc in look.procs {
        if let Some(index) = shim_index(proc, look.instances_dir, look.shim_name)
            && let Some(f) = entry(&mut found, recorded, index, Clue::ProcScan)
        {
            f.shim = f.shim.or(Some((proc.pid, proc.start_ticks)));
        }
    }
    // 3. Instance cgroups of this service.
    let prefix = format!("{}-", look.name);
    for (group, pids) in look.groups {
        let Some(index) = group
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(main) = main_process(pids, look.procs) else {
            continue;
        };
        if let Some(f) = entry(&mut found, recorded, index, Clue::Cgroup) {
            f.service = f.service.or(Some((main.pid, main.start_ticks)));
            if f.shim.is_none()
                && let Some(parent) = look.procs.iter().find(|p| p.pid == main.ppid)
                && shim_index(parent, look.instances_dir, look.shim_name) == Some(index)
            {
                f.shim = Some((parent.pid, parent.start_ticks));
            }
        }
    }
    // The service of a shim found without it: the shim's child.
    for f in found.values_mut() {
        if f.service.is_none()
            && let Some((shim, _)) = f.shim
            && let Some(child) = look.procs.iter().find(|p| p.ppid == shim)
        {
            f.service = Some((child.pid, child.start_ticks));
        }
        if let Some((pid, ticks)) = f.service {
            f.env = read_env(&look.instances_dir.join(f.index.to_string()), pid);
            let tps = look.ticks_per_second.max(1);
            f.started_unix_ms = look.boot_unix_ms + (ticks * 1000 / tps) as i64;
        }
    }
    found.into_values().collect()
}

/// The service's environment: from its `launch.json` when the directory is left, else from
/// `/proc/PID/environ`.
fn read_env(instance_dir: &Path, pid: i32) -> Option<BTreeMap<String, String>> {
    if let Ok(bytes) = std::fs::read(instance_dir.join(LAUNCH_FILE))
        && let Ok(launch) = serde_json::from_slice::<Launch>(&bytes)
    {
        return Some(launch.env.into_iter().collect());
    }
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(
        split_nul(&raw)
            .into_iter()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect(),
    )
}

/// When the host booted, Unix milliseconds (`btime` of `/proc/stat`); 0 when unknown.
pub fn boot_unix_ms() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<i64>().ok())
        })
        .map_or(0, |secs| secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn live() -> Found {
        Found {
            index: 2,
            shim: Some((10, 11)),
            service: Some((12, 13)),
            env: env(&[
                ("STRATA_PORT_HTTP", "20001"),
                ("STRATA_PORT_ADMIN_API", "20002"),
                ("STRATA_VERSION", "1.4"),
            ]),
            started_unix_ms: 99,
            clues: [Clue::Cgroup].into(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn shims_of_services_without_a_directory_are_named() {
        let root = Path::new("/var/lib/strata/services");
        let shim = |pid, dir: &str| Proc {
            pid,
            ppid: 1,
            start_ticks: 1,
            argv: vec!["/usr/bin/strata-shim".into(), dir.into()],
        };
        let procs = [
            shim(10, "/var/lib/strata/services/web/instances/1"),
            shim(11, "/var/lib/strata/services/gone/instances/2"),
            shim(12, "/other/data/services/elsewhere/instances/1"),
            shim(13, "/var/lib/strata/services/odd/logs/1"),
            Proc {
                argv: vec![
                    "/bin/sleep".into(),
                    "/var/lib/strata/services/x/instances/1".into(),
                ],
                ..shim(14, "")
            },
        ];
        let known = BTreeSet::from(["web".to_string()]);
        let unknown = unknown_services(&procs, root, OsStr::new("strata-shim"), &known);
        assert_eq!(unknown, BTreeSet::from(["gone".to_string()]));
    }

    #[test]
    fn a_live_instance_with_its_ports_in_its_environment_is_adopted() {
        let Verdict::Adopt(record) = decide(&live(), Some(&names(&["http", "admin-api"]))) else {
            panic!("not adopted");
        };
        assert_eq!((record.shim_pid, record.shim_start_ticks), (10, 11));
        assert_eq!((record.pid, record.start_ticks), (12, 13));
        assert_eq!(record.ports["http"], 20001);
        assert_eq!(record.ports["admin-api"], 20002);
        assert_eq!(record.version, "1.4");
        assert_eq!(record.started_unix_ms, 99);
        assert!(!record.reloads_logs);
    }

    #[test]
    fn without_a_spec_every_port_variable_is_a_port() {
        let Verdict::Adopt(record) = decide(&live(), None) else {
            panic!("not adopted");
        };
        let ports: Vec<&str> = record.ports.keys().map(String::as_str).collect();
        assert_eq!(ports, ["admin-api", "http"]);
    }

    #[test]
    fn what_cannot_be_rebuilt_is_stopped() {
        let cases = [
            (
                "no shim",
                Found {
                    shim: None,
                    ..live()
                },
                "shim is gone",
            ),
            (
                "no service",
                Found {
                    service: None,
                    ..live()
                },
                "runs no service",
            ),
            (
                "no env",
                Found {
                    env: None,
                    ..live()
                },
                "\"http\" cannot be found",
            ),
        ];
        for (case, found, why) in cases {
            match decide(&found, Some(&names(&["http"]))) {
                Verdict::Stop(reason) => assert!(reason.contains(why), "{case}: {reason}"),
                Verdict::Adopt(_) => panic!("{case}: adopted"),
            }
        }
        match decide(&live(), Some(&names(&["grpc"]))) {
            Verdict::Stop(reason) => assert!(reason.contains("STRATA_PORT_GRPC"), "{reason}"),
            Verdict::Adopt(_) => panic!("adopted without its port"),
        }
    }

    fn proc(pid: i32, ppid: i32, argv: &[&str]) -> Proc {
        Proc {
            pid,
            ppid,
            start_ticks: pid as u64 * 10,
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn instances_are_found_by_shim_argv_and_cgroup_not_by_others() {
        let dir = Path::new("/data/services/web/instances");
        let procs = vec![
            proc(
                100,
                1,
                &["/usr/bin/strata-shim", "/data/services/web/instances/1"],
            ),
            proc(101, 100, &["/bin/server"]),
            proc(102, 101, &["/bin/worker"]),
            // the shim of an instance with a record
            proc(
                200,
                1,
                &["/usr/bin/strata-shim", "/data/services/web/instances/2"],
            ),
            // another service, another data dir, another program
            proc(
                300,
                1,
                &["/usr/bin/strata-shim", "/data/services/api/instances/1"],
            ),
            proc(
                301,
                1,
                &["/usr/bin/strata-shim", "/other/services/web/instances/3"],
            ),
            proc(302, 1, &["/usr/bin/vim", "/data/services/web/instances/4"]),
            // an instance found by its cgroup only: its shim is gone
            proc(401, 1, &["/bin/server"]),
        ];
        let groups: BTreeMap<String, Vec<i32>> = [
            ("web-1".to_string(), vec![101, 102]),
            ("web-5".to_string(), vec![401]),
            ("web-api-1".to_string(), vec![999]),
        ]
        .into();
        let recorded: BTreeSet<u32> = [2].into();
        let found = find(&Look {
            name: "web",
            instances_dir: dir,
            shim_name: OsStr::new("strata-shim"),
            recorded: &recorded,
            groups: &groups,
            procs: &procs,
            boot_unix_ms: 1_000_000,
            ticks_per_second: 100,
        });
        let summary: Vec<_> = found
            .iter()
            .map(|f| (f.index, f.shim, f.service, f.clues.clone()))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    1,
                    Some((100, 1000)),
                    Some((101, 1010)),
                    [Clue::Cgroup, Clue::ProcScan].into()
                ),
                (5, None, Some((401, 4010)), [Clue::Cgroup].into()),
            ]
        );
        assert_eq!(found[0].started_unix_ms, 1_000_000 + 10_100);
    }
}
