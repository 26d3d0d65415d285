//! The shim process itself: start the service, copy its output into the log, reap it and its
//! orphans, and record how it ended.
//!
//! One thread, no async runtime: a `poll(2)` loop over the two output pipes and a signalfd
//! for SIGCHLD, so a shim costs little memory per instance and reacts at once.

use super::launch::{EXIT_FILE, ExitRecord, LAUNCH_FILE, Launch, SHIM_PID_FILE, ShimPid};
use super::logfile::{LineSplitter, LogWriter};
use super::logstatus::LogStatusFile;
use crate::fsutil::{write_atomic, write_replace};
use crate::supervisor::logs::LogStream;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the output pipes are drained after the service has ended (its descendants
/// may still hold them).
const DRAIN_LIMIT: Duration = Duration::from_secs(1);
/// While log lines are being dropped, writing is retried this often even without output.
const LOG_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the shim for the instance directory `dir` (`strata-agent shim DIR`) until the
/// service has ended; the exit code is 0 when the exit was recorded, 1 otherwise.
pub fn run(dir: &Path) -> ExitCode {
    let mut me = ShimPid {
        shim_pid: i32::try_from(std::process::id()).unwrap_or(0),
        shim_start_ticks: start_ticks(i32::try_from(std::process::id()).unwrap_or(0)).unwrap_or(0),
        service: None,
    };
    // Before anything is started, so an agent that dies now can still find this shim.
    let _ = write_replace(&dir.join(SHIM_PID_FILE), me.encode().as_bytes());
    match start(dir) {
        Ok(service) => {
            me.service = Some((service.pid, service.start_ticks));
            let _ = write_replace(&dir.join(SHIM_PID_FILE), me.encode().as_bytes());
            announce(&format!("started {} {}", service.pid, service.start_ticks));
            match service.supervise(dir) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(reason) => {
            announce(&format!("failed {}", reason.replace('\n', " ")));
            ExitCode::FAILURE
        }
    }
}

/// Prints the protocol line, then points stdout at /dev/null: the agent may go away, and a
/// shim must never fail for writing to it.
fn announce(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 with a valid open descriptor.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

/// A started service and what the shim needs to watch it.
struct Service {
    pid: i32,
    start_ticks: u64,
    stdout: File,
    stderr: File,
    sigchld: OwnedFd,
    log: LogWriter,
    /// Where the agent learns that log lines are dropped; none if it could not be made.
    log_status: Option<LogStatusFile>,
}

fn start(dir: &Path) -> Result<Service, String> {
    let launch_path = dir.join(LAUNCH_FILE);
    let text = std::fs::read(&launch_path)
        .map_err(|e| format!("cannot read {}: {e}", launch_path.display()))?;
    let launch: Launch = serde_json::from_slice(&text)
        .map_err(|e| format!("invalid {}: {e}", launch_path.display()))?;
    let Some(program) = launch.command.first() else {
        return Err("empty command".to_string());
    };
    std::fs::create_dir_all(&launch.log_dir).map_err(|e| {
        format!(
            "cannot create the log directory {}: {e}",
            launch.log_dir.display()
        )
    })?;
    let sigchld = setup_signals().map_err(|e| format!("cannot set up signals: {e}"))?;
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes one integer argument.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(format!(
            "cannot become a child subreaper: {}",
            io::Error::last_os_error()
        ));
    }

    let workdir = launch.workdir.clone().unwrap_or_else(|| dir.to_path_buf());
    let (report_read, report_write) = pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
    let setup = ChildSetup {
        workdir: c_path(&workdir)?,
        nofile: launch.nofile,
        cgroups: launch
            .cgroup_procs
            .iter()
            .map(|p| c_path(p))
            .collect::<Result<_, _>>()?,
        report: report_write,
    };
    let mut command = Command::new(program);
    command
        .args(&launch.command[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only makes async-signal-safe system calls on data prepared above.
    unsafe { command.pre_exec(move || setup.apply()) };
    let spawned = command.spawn();
    // Dropping the command closes our copy of the report pipe's write end.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let mut report = File::from(report_read);
            let mut buf = [0u8; 9];
            let failure = match report.read_exact(&mut buf) {
                Ok(()) => Some(buf),
                Err(_) => None,
            };
            return Err(describe_failure(failure, &e, program, &workdir, &launch));
        }
    };
    let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the service's output pipes are missing".to_string());
    };
    let start_ticks = match start_ticks(pid) {
        Ok(ticks) => ticks,
        Err(e) => {
            // Without its start time the agent could not tell this service from a reused
            // pid: stop it rather than leave it running unaccounted for.
            kill(-pid, libc::SIGKILL);
            let _ = child.wait();
            return Err(format!("cannot read /proc/{pid}/stat: {e}"));
        }
    };
    Ok(Service {
        pid,
        start_ticks,
        stdout: File::from(OwnedFd::from(stdout)),
        stderr: File::from(OwnedFd::from(stderr)),
        sigchld,
        log: LogWriter::new(&launch.log_dir, launch.log_max_bytes, launch.log_keep),
        // Made before any log line can fail; without it the service still runs and logs,
        // only drops would go unreported to the agent.
        log_status: LogStatusFile::create(dir).ok(),
    })
}

/// Stages of the child's setup, reported through the report pipe when one fails.
const STAGE_SETSID: u8 = 1;
const STAGE_NOFILE: u8 = 2;
const STAGE_CGROUP: u8 = 3;
const STAGE_WORKDIR: u8 = 4;

/// What the forked child does before exec, prepared in the parent so the child allocates
/// nothing.
struct ChildSetup {
    workdir: CString,
    nofile: Option<u64>,
    cgroups: Vec<CString>,
    report: OwnedFd,
}

impl ChildSetup {
    /// Runs in the forked child: async-signal-safe calls only.
    fn apply(&self) -> io::Result<()> {
        // SAFETY: plain system calls on valid pointers to data owned by `self` or the stack.
        unsafe {
            if libc::setsid() < 0 {
                return Err(self.fail(STAGE_SETSID, 0));
            }
            let mut set = MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigprocmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut());
            for sig in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGPIPE,
                libc::SIGCHLD,
            ] {
                libc::signal(sig, libc::SIG_DFL);
            }
            if let Some(n) = self.nofile {
                let limit = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) < 0 {
                    return Err(self.fail(STAGE_NOFILE, 0));
                }
            }
            for (i, path) in self.cgroups.iter().enumerate() {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(self.fail(STAGE_CGROUP, i as u32));
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                if written != 1 {
                    let err = self.fail(STAGE_CGROUP, i as u32);
                    libc::close(fd);
                    return Err(err);
                }
                libc::close(fd);
            }
            if libc::chdir(self.workdir.as_ptr()) < 0 {
                return Err(self.fail(STAGE_WORKDIR, 0));
            }
        }
        Ok(())
    }

    /// Sends the failed stage, its index and errno to the parent; returns the error.
    fn fail(&self, stage: u8, index: u32) -> io::Error {
        let err = io::Error::last_os_error();
        let mut msg = [0u8; 9];
        msg[0] = stage;
        msg[1..5].copy_from_slice(&index.to_le_bytes());
        msg[5..9].copy_from_slice(&err.raw_os_error().unwrap_or(0).to_le_bytes());
        // SAFETY: writes 9 bytes from a stack buffer to an open pipe.
        unsafe { libc::write(self.report.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        err
    }
}

/// One line a person understands for a failed start.
fn describe_failure(
    report: Option<[u8; 9]>,
    spawn_error: &io::Error,
    program: &str,
    workdir: &Path,
    launch: &Launch,
) -> String {
    let Some(msg) = report else {
        return match spawn_error.raw_os_error() {
            Some(libc::ENOENT) => format!("command not found: {program}"),
            Some(libc::EACCES) => format!("permission denied: {program}"),
            Some(libc::ENOEXEC) => format!("not an executable: {program}"),
            _ => format!("cannot run {program}: {spawn_error}"),
        };
    };
    let index = u32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
    let err = io::Error::from_raw_os_error(i32::from_le_bytes([msg[5], msg[6], msg[7], msg[8]]));
    match msg[0] {
        STAGE_SETSID => format!("cannot start a new session: {err}"),
        STAGE_NOFILE => format!(
            "cannot set the open file limit to {}: {err}",
            launch.nofile.unwrap_or(0)
        ),
        STAGE_CGROUP => match launch.cgroup_procs.get(index) {
            Some(path) => format!("cannot join cgroup {}: {err}", path.display()),
            None => format!("cannot join a cgroup: {err}"),
        },
        STAGE_WORKDIR => format!("bad working directory {}: {err}", workdir.display()),
        _ => format!("cannot run {program}: {spawn_error}"),
    }
}

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path contains a NUL byte: {}", path.display()))
}

/// Ignores SIGTERM, SIGINT and SIGHUP (a shim must outlive its service to record its exit)
/// and blocks SIGCHLD, returning a signalfd that reports it.
fn setup_signals() -> io::Result<OwnedFd> {
    // SAFETY: plain signal system calls with valid arguments.
    unsafe {
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE] {
            if libc::signal(sig, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, set.as_ptr(), libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])))
    }
}

/// Field 22 (starttime, clock ticks after boot) of /proc/PID/stat.
fn start_ticks(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| io::Error::other("no command name"))?;
    // Field 3 (state) is the first one after the name; starttime is field 22.
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("no start time"))
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory effects; ESRCH (already gone) is fine.
    unsafe { libc::kill(pid, sig) };
}

/// Kills the shim's remaining children: the service's descendants that were re-parented to
/// the shim (its subreaper) after their parents died.
fn kill_children() {
    let Ok(list) =
        std::fs::read_to_string(format!("/proc/self/task/{}/children", std::process::id()))
    else {
        return;
    };
    for pid in list
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        kill(pid, libc::SIGKILL);
    }
}

/// One output pipe of the service.
struct Stream {
    file: File,
    tag: LogStream,
    lines: LineSplitter,
    open: bool,
}

impl Service {
    /// Copies output into the log until the service has ended and its output is drained,
    /// then writes the exit record.
    fn supervise(self, dir: &Path) -> io::Result<()> {
        let Service {
            pid,
            stdout,
            stderr,
            sigchld,
            mut log,
            mut log_status,
            ..
        } = self;
        let mut streams = [
            Stream {
                file: stdout,
                tag: LogStream::Out,
                lines: LineSplitter::default(),
                open: true,
            },
            Stream {
                file: stderr,
                tag: LogStream::Err,
                lines: LineSplitter::default(),
                open: true,
            },
        ];
        let mut buf = vec![0u8; 16 * 1024];
        let mut exit: Option<ExitRecord> = None;
        let mut deadline: Option<Instant> = None;
        let mut children_left = true;
        let mut last_retry = Instant::now();
        loop {
            let drained = streams.iter().all(|s| !s.open);
            if exit.is_some() && drained && !children_left {
                break;
            }
            let mut wait = match deadline {
                None => None,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    Some(left)
                }
            };
            if log.dropped() > 0 {
                let retry_in = LOG_RETRY_INTERVAL.saturating_sub(last_retry.elapsed());
                wait = Some(wait.map_or(retry_in, |w| w.min(retry_in)));
            }
            let timeout = match wait {
                None => -1,
                Some(w) => i32::try_from(w.as_millis()).unwrap_or(i32::MAX).max(1),
            };
            let mut fds = [
                poll_fd(sigchld.as_raw_fd(), children_left),
                poll_fd(streams[0].file.as_raw_fd(), streams[0].open),
                poll_fd(streams[1].file.as_raw_fd(), streams[1].open),
            ];
            // SAFETY: poll on an array of valid pollfd structures.
            let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            if fds[0].revents != 0 {
                drain_signalfd(&sigchld);
                children_left = reap(pid, &mut exit);
                if exit.is_some() && deadline.is_none() {
                    deadline = Some(Instant::now() + DRAIN_LIMIT);
                }
            }
            for (stream, fd) in streams.iter_mut().zip(&fds[1..]) {
                if fd.revents != 0 {
                    read_stream(stream, &mut buf, &mut log);
                }
            }
            if log.dropped() > 0 && last_retry.elapsed() >= LOG_RETRY_INTERVAL {
                last_retry = Instant::now();
                log.retry();
            }
            if let Some(status) = log_status.as_mut() {
                status.update(&log.status());
            }
        }
        for stream in &mut streams {
            let tag = stream.tag;
            stream.lines.finish(|line| log.write_line(tag, line));
        }
        log.finish();
        if let Some(status) = log_status.as_mut() {
            status.update(&log.status());
        }
        let record = match exit {
            Some(record) => record,
            None => return Err(io::Error::other("the service's exit was not seen")),
        };
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        write_atomic(&dir.join(EXIT_FILE), &json)
    }
}

fn poll_fd(fd: RawFd, active: bool) -> libc::pollfd {
    libc::pollfd {
        // A negative fd is skipped by poll.
        fd: if active { fd } else { -1 },
        events: libc::POLLIN,
        revents: 0,
    }
}

fn read_stream(stream: &mut Stream, buf: &mut [u8], log: &mut LogWriter) {
    let tag = stream.tag;
    match stream.file.read(buf) {
        Ok(0) => {
            stream.open = false;
            stream.lines.finish(|line| log.write_line(tag, line));
        }
        Ok(n) => stream
            .lines
            .feed(&buf[..n], |line| log.write_line(tag, line)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
        Err(_) => stream.open = false,
    }
}

fn drain_signalfd(fd: &OwnedFd) {
    let mut info = [0u8; 128 * 8];
    loop {
        // SAFETY: reads into a stack buffer sized in whole signalfd_siginfo records.
        let n = unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
        if n <= 0 {
            return;
        }
    }
}

/// Reaps every child that has ended. When the service itself ends, records how and kills
/// what is left of it. Returns whether the shim still has children.
fn reap(service: i32, exit: &mut Option<ExitRecord>) -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local integer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            if exit.is_some() {
                kill_children();
            }
            return true;
        }
        if pid < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if pid == service && exit.is_none() {
            *exit = Some(exit_record(pid, status));
            kill(-service, libc::SIGKILL);
            kill_children();
        }
    }
}

fn exit_record(pid: i32, status: i32) -> ExitRecord {
    let exited_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let signaled = libc::WIFSIGNALED(status);
    ExitRecord {
        pid,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: signaled.then(|| libc::WTERMSIG(status)),
        core_dumped: signaled && libc::WCOREDUMP(status),
        exited_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::logs::{self, LogStream};
    use std::io::{BufRead, BufReader};
    use std::path::PathBuf;
    use std::process::Child;

    /// The `strata-agent` binary next to the test binary (built by `cargo build --bins`).
    fn agent_binary() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("strata-agent");
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p strata-agent --bins` before the tests",
            bin.display()
        );
        bin
    }

    fn launch(dir: &Path, script: &str) -> Launch {
        Launch {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            workdir: None,
            log_dir: dir.join("logs"),
            log_max_bytes: 1 << 20,
            log_keep: 3,
            nofile: None,
            cgroup_procs: Vec::new(),
        }
    }

    /// Starts a shim for `launch` in `dir`; returns it and its protocol line.
    fn start_shim(dir: &Path, launch: &Launch) -> (Child, String) {
        std::fs::write(dir.join(LAUNCH_FILE), serde_json::to_vec(launch).unwrap()).unwrap();
        let mut shim = Command::new(agent_binary())
            .arg("shim")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(shim.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        (shim, line)
    }

    fn started_pid(line: &str) -> i32 {
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(fields.len(), 3, "{line:?}");
        assert_eq!(fields[0], "started", "{line:?}");
        let ticks: u64 = fields[2].parse().unwrap();
        assert!(ticks > 0);
        fields[1].parse().unwrap()
    }

    fn exit_record(dir: &Path) -> ExitRecord {
        serde_json::from_slice(&std::fs::read(dir.join(EXIT_FILE)).unwrap()).unwrap()
    }

    fn gone(pid: i32) -> bool {
        // SAFETY: signal 0 only checks for existence.
        let result = unsafe { libc::kill(pid, 0) };
        result < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }

    fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    #[test]
    fn runs_a_service_logs_its_output_and_records_its_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let before = now_ms();
        let (mut shim, line) = start_shim(
            dir.path(),
            &launch(dir.path(), "echo hello; echo oops >&2; exit 3"),
        );
        let pid = started_pid(&line);
        let own = ShimPid::parse(&std::fs::read_to_string(dir.path().join(SHIM_PID_FILE)).unwrap())
            .unwrap();
        assert_eq!(own.shim_pid, shim.id() as i32);
        assert_eq!(own.shim_start_ticks, start_ticks(own.shim_pid).unwrap());
        assert_eq!(own.service.map(|s| s.0), Some(pid));
        assert!(shim.wait().unwrap().success());
        let record = exit_record(dir.path());
        assert_eq!(record.pid, pid);
        assert_eq!(record.code, Some(3));
        assert_eq!(record.signal, None);
        let lines = logs::tail(&dir.path().join("logs"), 10, None).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let out = lines.iter().find(|l| l.stream == LogStream::Out).unwrap();
        let err = lines.iter().find(|l| l.stream == LogStream::Err).unwrap();
        assert_eq!(out.text, "hello");
        assert_eq!(err.text, "oops");
        for l in &lines {
            assert!(
                l.time_unix_ms >= before && l.time_unix_ms <= now_ms(),
                "{l:?}"
            );
        }
    }

    #[test]
    fn reports_a_start_failure_in_one_line_and_writes_no_exit_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut missing = launch(dir.path(), "");
        missing.command = vec!["/usr/bin/nope".into()];
        let (mut shim, line) = start_shim(dir.path(), &missing);
        assert_eq!(line, "failed command not found: /usr/bin/nope\n");
        assert_eq!(shim.wait().unwrap().code(), Some(1));
        assert!(!dir.path().join(EXIT_FILE).exists());

        let mut bad_dir = launch(dir.path(), "exit 0");
        bad_dir.workdir = Some(dir.path().join("missing"));
        let (mut shim, line) = start_shim(dir.path(), &bad_dir);
        assert!(line.starts_with("failed bad working directory "), "{line}");
        assert_eq!(shim.wait().unwrap().code(), Some(1));

        let mut bad_cgroup = launch(dir.path(), "exit 0");
        let procs = dir.path().join("no-such-cgroup").join("cgroup.procs");
        bad_cgroup.cgroup_procs = vec![procs.clone()];
        let (mut shim, line) = start_shim(dir.path(), &bad_cgroup);
        assert!(
            line.starts_with(&format!("failed cannot join cgroup {}: ", procs.display())),
            "{line}"
        );
        assert_eq!(shim.wait().unwrap().code(), Some(1));
        assert!(!dir.path().join(EXIT_FILE).exists());
    }

    #[test]
    fn applies_environment_workdir_and_open_file_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(
            dir.path(),
            "echo \"$GREETING\"; pwd; ulimit -n; echo ${HOME:-nohome}",
        );
        l.env.push(("GREETING".into(), "hi there".into()));
        l.nofile = Some(321);
        let (mut shim, line) = start_shim(dir.path(), &l);
        started_pid(&line);
        assert!(shim.wait().unwrap().success());
        let texts: Vec<String> = logs::tail(&dir.path().join("logs"), 10, None)
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        let workdir = dir.path().canonicalize().unwrap();
        assert_eq!(
            texts,
            vec![
                "hi there".to_string(),
                workdir.display().to_string(),
                "321".to_string(),
                "nohome".to_string()
            ]
        );
    }

    #[test]
    fn kills_and_reaps_the_services_descendants() {
        let dir = tempfile::tempdir().unwrap();
        let script = "sleep 300 & echo $! > gc.pid; setsid sleep 300 & echo $! > escaped.pid; \
                      (sleep 0.1 &); sleep 0.5; exit 0";
        let (mut shim, line) = start_shim(dir.path(), &launch(dir.path(), script));
        started_pid(&line);
        let shim_pid = shim.id() as i32;
        // The orphan `sleep 0.1` is re-parented to the shim and must not linger as a zombie.
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(zombie_children(shim_pid), Vec::<i32>::new());
        assert!(shim.wait().unwrap().success());
        assert_eq!(exit_record(dir.path()).code, Some(0));
        for file in ["gc.pid", "escaped.pid"] {
            let pid: i32 = std::fs::read_to_string(dir.path().join(file))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert!(gone(pid), "{file}: {pid} still exists");
        }
    }

    /// Children of `parent` in state Z.
    fn zombie_children(parent: i32) -> Vec<i32> {
        let mut zombies = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap() {
            let name = entry.unwrap().file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .collect();
            if fields[0] == "Z" && fields[1].parse::<i32>().unwrap() == parent {
                zombies.push(pid);
            }
        }
        zombies
    }

    #[test]
    fn records_the_signal_that_ended_the_service_and_ignores_sigterm_itself() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shim, line) = start_shim(dir.path(), &launch(dir.path(), "exec sleep 300"));
        let pid = started_pid(&line);
        kill(shim.id() as i32, libc::SIGTERM);
        kill(shim.id() as i32, libc::SIGHUP);
        kill(pid, libc::SIGTERM);
        assert!(shim.wait().unwrap().success());
        let record = exit_record(dir.path());
        assert_eq!((record.code, record.signal), (None, Some(libc::SIGTERM)));

        let dir = tempfile::tempdir().unwrap();
        let (mut shim, line) = start_shim(dir.path(), &launch(dir.path(), "kill -9 $$"));
        let pid = started_pid(&line);
        assert!(shim.wait().unwrap().success());
        let record = exit_record(dir.path());
        assert_eq!(record.pid, pid);
        assert_eq!((record.code, record.signal), (None, Some(libc::SIGKILL)));
    }

    #[test]
    fn rotates_the_log_keeping_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = launch(
            dir.path(),
            "i=0; while [ $i -lt 1500 ]; do echo \"line $i\"; i=$((i+1)); done",
        );
        l.log_max_bytes = 4096;
        l.log_keep = 3;
        let (mut shim, line) = start_shim(dir.path(), &l);
        started_pid(&line);
        assert!(shim.wait().unwrap().success());
        let log_dir = dir.path().join("logs");
        let mut names: Vec<String> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["output.log", "output.log.1", "output.log.2", "output.log.3"]
        );
        let kept = logs::tail(&log_dir, usize::MAX, None).unwrap();
        assert!(kept.len() > 200, "{}", kept.len());
        let first: usize = kept[0].text["line ".len()..].parse().unwrap();
        for (i, l) in kept.iter().enumerate() {
            assert!(l.time_unix_ms > 0, "{l:?}");
            assert_eq!(l.text, format!("line {}", first + i));
        }
        assert_eq!(kept.last().unwrap().text, "line 1499");
    }

    #[test]
    fn a_full_log_disk_drops_lines_without_blocking_and_logging_resumes() {
        use crate::shim::logstatus::LogStatus;
        let dir = tempfile::tempdir().unwrap();
        let Some(_tmpfs) = strata_tests::Tmpfs::mount(&dir.path().join("logs"), "64k") else {
            return;
        };
        let filler = dir.path().join("logs").join("filler");
        std::fs::write(&filler, vec![b'x'; 40 * 1024]).unwrap();
        // 2000 lines of 100 bytes do not fit in what is left; the service must still get
        // through them, then waits for the test to make room, stays quiet, and says so.
        let script = "i=0; while [ $i -lt 2000 ]; do \
                      echo \"line $i ..........................................................................\"; \
                      i=$((i+1)); done; touch printed; \
                      while [ ! -e go ]; do sleep 0.05; done; sleep 3; echo after";
        let (mut shim, line) = start_shim(dir.path(), &launch(dir.path(), script));
        started_pid(&line);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.path().join("printed").exists() {
            assert!(Instant::now() < deadline, "the service is blocked");
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = LogStatus::read(dir.path()).unwrap();
        assert!(status.dropping, "{status:?}");
        assert!(status.dropped_total > 0, "{status:?}");
        assert!(status.reason.contains("No space left"), "{status:?}");

        std::fs::remove_file(&filler).unwrap();
        std::fs::write(dir.path().join("go"), b"").unwrap();
        // The service is quiet now: the shim's own retry brings logging back.
        let deadline = Instant::now() + Duration::from_millis(2500);
        loop {
            let status = LogStatus::read(dir.path()).unwrap();
            if !status.dropping {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "logging did not resume: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(shim.wait().unwrap().success());
        let texts: Vec<String> = logs::tail(&dir.path().join("logs"), usize::MAX, None)
            .unwrap()
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts.last().map(String::as_str), Some("after"));
        let dropped = LogStatus::read(dir.path()).unwrap().dropped_total;
        let notice = format!("[strata] {dropped} log lines dropped: ");
        assert!(
            texts.iter().any(|t| t.starts_with(&notice)),
            "no {notice:?} in the log"
        );
        assert_eq!(
            texts.len() as u64 - 2 + dropped,
            2000,
            "every line is kept or counted"
        );
    }

    #[test]
    fn start_to_started_line_is_fast() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let (mut shim, line) = start_shim(dir.path(), &launch(dir.path(), "exit 0"));
        let elapsed = started.elapsed();
        started_pid(&line);
        assert!(shim.wait().unwrap().success());
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }
}
