//! The I/O half of install and uninstall: probes the root, carries a plan out, or prints it.

use super::plan::{
    Action, BIN_PATH, CONFIG_PATH, Current, DATA_DIR, ETC_DIR, Found, Host, MAN_PATH, Plan,
    SERVICES_DIR, SHIM_PATH, UNIT_PATH, under,
};
use anyhow::{Context, Result, bail};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

/// How long uninstall waits for a running agent to leave the cluster and stop.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Looks at the root and the machine: what is installed now, and the facts the plan needs.
pub fn prepare(root: &Path, dry_run: bool) -> Result<(Current, Host)> {
    let canonical_root = match fs::metadata(root) {
        Ok(meta) if !meta.is_dir() => bail!("root dir {} is not a directory", root.display()),
        Ok(_) => fs::canonicalize(root)
            .with_context(|| format!("cannot resolve root dir {}", root.display()))?,
        // A dry run into a root that does not exist yet shows everything as to be created
        // (an image being built, a host being provisioned); a real run needs the root.
        Err(e) if dry_run && e.kind() == std::io::ErrorKind::NotFound => root.to_path_buf(),
        Err(e) => return Err(e).with_context(|| format!("root dir {}", root.display())),
    };
    let exe = std::env::current_exe().context("cannot find the running strata-agent binary")?;
    let binary_path = under(root, BIN_PATH);
    let binary = probe(&binary_path, false)?;
    let binary_same = matches!(binary, Found::File { .. }) && same_bytes(&exe, &binary_path)?;
    let shim_exe = crate::shim_binary::beside(&exe);
    let shim_path = under(root, SHIM_PATH);
    let shim = probe(&shim_path, false)?;
    let shim_same = matches!(shim, Found::File { .. })
        && shim_exe.is_file()
        && same_bytes(&shim_exe, &shim_path)?;
    let current = Current {
        binary,
        binary_same,
        shim,
        shim_same,
        config: probe(&under(root, CONFIG_PATH), true)?,
        unit: probe(&under(root, UNIT_PATH), true)?,
        manual: probe(&under(root, MAN_PATH), true)?,
        etc_dir: probe(&under(root, ETC_DIR), false)?,
        services_dir: probe(&under(root, SERVICES_DIR), false)?,
        data_dir: probe(&under(root, DATA_DIR), false)?,
        agent_running: agent_running(&under(root, DATA_DIR)),
    };
    let systemd = canonical_root == Path::new("/")
        && fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "systemd");
    let host = Host {
        root: root.to_path_buf(),
        exe,
        shim_exe,
        systemd,
        as_root: rustix::process::geteuid().is_root(),
        host_ip: default_route_ip(),
        fresh_key: strata_registry::seal::generate_key()
            .map_err(|e| anyhow::anyhow!("cannot generate a cluster key: {e}"))?,
    };
    Ok((current, host))
}

/// Whether an agent holds the lock of `data_dir`, found without creating or changing
/// anything there (a dry run changes nothing).
fn agent_running(data_dir: &Path) -> bool {
    let Ok(file) = fs::File::open(data_dir.join(crate::data_lock::LOCK_FILE)) else {
        return false;
    };
    matches!(
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared),
        Err(rustix::io::Errno::WOULDBLOCK)
    )
}

/// Checks that what install copies is there: the running binary's `strata-shim` beside it.
pub fn check_sources(host: &Host) -> Result<()> {
    if !host.shim_exe.is_file() {
        bail!(
            "{} is missing: install copies strata-shim from beside {} along with it; build both \
             with `cargo build --release --bins`, or copy strata-shim next to strata-agent",
            host.shim_exe.display(),
            host.exe.display()
        );
    }
    Ok(())
}

/// What is at `path`, not following a final symlink; a file's text is read when `read_text`.
fn probe(path: &Path, read_text: bool) -> Result<Found> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o7777;
    let uid = meta.uid();
    Ok(if meta.is_dir() {
        Found::Dir { mode, uid }
    } else if meta.is_file() {
        let text = if read_text {
            let bytes =
                fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            String::from_utf8(bytes).ok()
        } else {
            None
        };
        Found::File { mode, uid, text }
    } else {
        Found::Other
    })
}

/// Whether two files have the same bytes.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| fs::File::open(p).with_context(|| format!("cannot open {}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = fa
            .read(&mut ba)
            .with_context(|| format!("cannot read {}", a.display()))?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])
            .with_context(|| format!("cannot read {}", b.display()))?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The local address the kernel would use towards the outside world. A UDP "connect" sends
/// nothing; it only picks the route. `None` without a default route.
fn default_route_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // 192.0.2.1 is TEST-NET-1: routed like any public address, never answered.
    socket.connect("192.0.2.1:7701").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Prints what `execute` would do, with every file's content (the key redacted).
pub fn show(plan: &Plan, nothing_to_do: &str) {
    println!("dry run: nothing is changed");
    for action in &plan.actions {
        println!("would {action}");
        if let Action::WriteFile {
            content, secret, ..
        } = action
        {
            let shown = match secret {
                Some(secret) if !secret.is_empty() => content.replace(secret, "<redacted>"),
                _ => content.clone(),
            };
            for line in shown.lines() {
                println!("    {line}");
            }
        }
    }
    if plan.generated_key.is_some() {
        println!("would generate a new cluster key (shown redacted above)");
    }
    print_summary(plan, nothing_to_do);
}

/// Carries the plan out step by step, printing each; stops at the first failure.
pub fn execute(plan: &Plan, host: &Host, nothing_to_do: &str) -> Result<()> {
    for action in &plan.actions {
        apply(action, host.as_root).with_context(|| format!("cannot {action}"))?;
        println!("done: {action}");
    }
    if let Some(key) = &plan.generated_key {
        println!(
            "generated a new cluster key, stored in {}; every other host of this cluster needs \
             the same key (install them with --gossip-key):\n    {key}",
            under(&host.root, CONFIG_PATH).display()
        );
    }
    print_summary(plan, nothing_to_do);
    Ok(())
}

fn print_summary(plan: &Plan, nothing_to_do: &str) {
    for line in &plan.unchanged {
        println!("{line}");
    }
    if plan.actions.is_empty() {
        println!("nothing to do: {nothing_to_do}");
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
    if !plan.manual_commands.is_empty() {
        println!("systemd is not PID 1 here, or --root is not /; on the target host, run:");
        for argv in &plan.manual_commands {
            println!("    {}", argv.join(" "));
        }
    }
}

fn apply(action: &Action, as_root: bool) -> Result<()> {
    match action {
        Action::CreateDir { path, mode } => {
            fs::create_dir_all(path)?;
            set_mode(path, *mode, as_root)
        }
        Action::SetMode { path, mode } => set_mode(path, *mode, as_root),
        Action::WriteFile {
            path,
            mode,
            content,
            ..
        } => write_private(path, content.as_bytes(), *mode, as_root),
        Action::CopyBinary { from, to, mode } => {
            let bytes =
                fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
            write_private(to, &bytes, *mode, as_root)
        }
        Action::RunCommand { argv } => {
            let (program, args) = argv.split_first().context("empty command")?;
            let status = std::process::Command::new(program).args(args).status()?;
            if !status.success() {
                bail!("{} exited with {status}", argv.join(" "));
            }
            Ok(())
        }
        Action::RemoveFile { path } => ignore_missing(fs::remove_file(path)),
        Action::RemoveTree { path } => ignore_missing(fs::remove_dir_all(path)),
        Action::RemoveDirIfEmpty { path } => match fs::remove_dir(path) {
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                println!("kept {}: not empty", path.display());
                Ok(())
            }
            other => ignore_missing(other),
        },
        Action::LeaveCluster { data_dir } => {
            crate::leave::command::leave_running_agent(data_dir, LEAVE_TIMEOUT)?;
            Ok(())
        }
    }
}

fn ignore_missing(result: io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => Ok(other?),
    }
}

/// Writes `bytes` to `path` atomically (parents created 0755), never readable by others while
/// it is written, then gives it `mode` and, as root, owner root.
fn write_private(path: &Path, bytes: &[u8], mode: u32, as_root: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    // The temporary file write_atomic creates gets 0600 from this umask; the installer is
    // single-threaded, and the old mask is restored at once.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let written = crate::fsutil::write_atomic(path, bytes);
    rustix::process::umask(old);
    written?;
    set_mode(path, mode, as_root)
}

fn set_mode(path: &Path, mode: u32, as_root: bool) -> Result<()> {
    if as_root {
        std::os::unix::fs::chown(path, Some(0), Some(0))
            .with_context(|| format!("cannot make root the owner of {}", path.display()))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:04o} on {}", path.display()))
}
