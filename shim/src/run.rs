//! The shim process itself: start the service, copy its output into the log, reap it and its
//! orphans, and record how it ended.
//!
//! One thread, no async runtime: a `poll(2)` loop over the two output pipes and a signalfd
//! for SIGCHLD, so a shim costs little memory per instance and reacts at once.

use crate::fsutil::{write_atomic, write_replace};
use crate::launch::{
    EXIT_FILE, ExitRecord, LAUNCH_FILE, LOG_ROTATION_FILE, Launch, LogRotation, SHIM_PID_FILE,
    ShimPid, start_ticks,
};
use crate::logfile::{LineSplitter, LogWriter};
use crate::logline::LogStream;
use crate::logstatus::LogStatusFile;
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

/// Runs the shim for the instance directory `dir` (`strata-shim DIR`) until the
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
    signals: OwnedFd,
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
    let signals = setup_signals().map_err(|e| format!("cannot set up signals: {e}"))?;
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
        reset_oom_score: inherited_oom_score_adj().is_some_and(|v| v != 0),
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
        signals,
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
const STAGE_OOM_SCORE: u8 = 5;

/// The OOM score adjustment this shim inherited from the agent (`OOMScoreAdjust=-1000` in
/// the agent's unit protects the agent and its shims), or `None` when /proc cannot say.
fn inherited_oom_score_adj() -> Option<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What the forked child does before exec, prepared in the parent so the child allocates
/// nothing.
struct ChildSetup {
    workdir: CString,
    nofile: Option<u64>,
    cgroups: Vec<CString>,
    /// Set the service's `oom_score_adj` back to 0: it must not inherit the agent's
    /// protection from the OOM killer (the kernel would pick the host's other processes first).
    reset_oom_score: bool,
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
            if self.reset_oom_score {
                let fd = libc::open(
                    c"/proc/self/oom_score_adj".as_ptr(),
                    libc::O_WRONLY | libc::O_CLOEXEC,
                );
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    let err = self.fail(STAGE_OOM_SCORE, 0);
                    if fd >= 0 {
                        libc::close(fd);
                    }
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
        STAGE_OOM_SCORE => format!("cannot reset the service's oom_score_adj to 0: {err}"),
        _ => format!("cannot run {program}: {spawn_error}"),
    }
}

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("path contains a NUL byte: {}", path.display()))
}

/// Ignores SIGTERM, SIGINT and SIGHUP (a shim must outlive its service to record its exit)
/// and blocks SIGCHLD and SIGUSR1 (new log settings), returning a signalfd that reports them.
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
        libc::sigaddset(set.as_mut_ptr(), libc::SIGUSR1);
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
            signals,
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
                poll_fd(signals.as_raw_fd(), children_left),
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
                let arrived = drain_signalfd(&signals);
                if arrived.log_rotation {
                    reload_log_rotation(dir, &mut log);
                }
                if arrived.child {
                    children_left = reap(pid, &mut exit);
                    if exit.is_some() && deadline.is_none() {
                        deadline = Some(Instant::now() + DRAIN_LIMIT);
                    }
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

/// The signals a drain of the signalfd found.
#[derive(Debug, Default)]
struct Arrived {
    /// A child ended.
    child: bool,
    /// The agent wrote new log settings.
    log_rotation: bool,
}

fn drain_signalfd(fd: &OwnedFd) -> Arrived {
    let mut arrived = Arrived::default();
    let mut info = MaybeUninit::<[libc::signalfd_siginfo; 8]>::uninit();
    let record = std::mem::size_of::<libc::signalfd_siginfo>();
    loop {
        // SAFETY: reads whole signalfd_siginfo records into a buffer sized for eight.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                info.as_mut_ptr().cast(),
                std::mem::size_of_val(&info),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return arrived;
        };
        if n == 0 {
            return arrived;
        }
        // SAFETY: the kernel wrote `n / record` complete records at the start of the buffer.
        let records = unsafe { &info.assume_init_ref()[..n / record] };
        for r in records {
            match r.ssi_signo as i32 {
                libc::SIGCHLD => arrived.child = true,
                libc::SIGUSR1 => arrived.log_rotation = true,
                _ => {}
            }
        }
    }
}

/// Takes the log settings the agent wrote in `dir` and says so in the log (on the err
/// stream, as the shim's other notes); a file it cannot use is said there too, and the
/// settings stay.
fn reload_log_rotation(dir: &Path, log: &mut LogWriter) {
    let read = std::fs::read(dir.join(LOG_ROTATION_FILE))
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<LogRotation>(&bytes).map_err(|e| e.to_string()));
    match read {
        Ok(LogRotation { max_bytes, keep }) if max_bytes > 0 => {
            log.set_rotation(max_bytes, keep);
            log.write_line(
                LogStream::Err,
                format!("[strata] log rotation now at {max_bytes} bytes, keeping {keep} files")
                    .as_bytes(),
            );
        }
        Ok(_) => log.write_line(
            LogStream::Err,
            b"[strata] log settings not changed: max_bytes must be more than 0",
        ),
        Err(e) => log.write_line(
            LogStream::Err,
            format!("[strata] log settings not changed: {LOG_ROTATION_FILE}: {e}").as_bytes(),
        ),
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
