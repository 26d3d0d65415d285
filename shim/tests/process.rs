//! The shim as the agent runs it: the real `strata-shim` binary started on an instance
//! directory, its protocol line, its exit record and its log files.

// Test code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use strata_shim::launch::{
    EXIT_FILE, ExitRecord, LAUNCH_FILE, LOG_FILE, LOG_ROTATION_FILE, Launch, LogRotation,
    SHIM_PID_FILE, ShimPid, start_ticks,
};
use strata_shim::logfile::rotated_path;
use strata_shim::logline::{LogLine, LogStream, parse_line};
use strata_shim::logstatus::LogStatus;

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
    let mut shim = Command::new(env!("CARGO_BIN_EXE_strata-shim"))
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

/// Every line of the log in `log_dir`, oldest first: the rotated files, then the current one.
fn log_lines(log_dir: &Path) -> Vec<LogLine> {
    let current = log_dir.join(LOG_FILE);
    let rotated = (1..)
        .map(|n| rotated_path(&current, n))
        .take_while(|path| path.exists())
        .collect::<Vec<_>>();
    let mut lines = Vec::new();
    for path in rotated.into_iter().rev().chain([current]) {
        let text = std::fs::read_to_string(&path).unwrap();
        lines.extend(text.lines().map(parse_line));
    }
    lines
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, sig) };
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
    let own =
        ShimPid::parse(&std::fs::read_to_string(dir.path().join(SHIM_PID_FILE)).unwrap()).unwrap();
    assert_eq!(own.shim_pid, shim.id() as i32);
    assert_eq!(own.shim_start_ticks, start_ticks(own.shim_pid).unwrap());
    assert_eq!(own.service.map(|s| s.0), Some(pid));
    assert!(shim.wait().unwrap().success());
    let record = exit_record(dir.path());
    assert_eq!(record.pid, pid);
    assert_eq!(record.code, Some(3));
    assert_eq!(record.signal, None);
    let lines = log_lines(&dir.path().join("logs"));
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
    let texts: Vec<String> = log_lines(&dir.path().join("logs"))
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
    // The current file and log_keep = 3 rotated ones, nothing else.
    assert!(rotated_path(&log_dir.join(LOG_FILE), 3).exists());
    assert_eq!(std::fs::read_dir(&log_dir).unwrap().count(), 4);
    let kept = log_lines(&log_dir);
    assert!(kept.len() > 200, "{}", kept.len());
    let first: usize = kept[0].text["line ".len()..].parse().unwrap();
    for (i, l) in kept.iter().enumerate() {
        assert!(l.time_unix_ms > 0, "{l:?}");
        assert_eq!(l.text, format!("line {}", first + i));
    }
    assert_eq!(kept.last().unwrap().text, "line 1499");
}

#[test]
fn new_log_settings_apply_on_sigusr1_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("more");
    // 40-byte lines, once the test has seen the shim take the new settings (waiting at most
    // 10 s, so a failed test leaves nothing running).
    let script = format!(
        "echo ready; for _ in $(seq 1 500); do [ -e {flag} ] && break; sleep 0.02; done; \
         for i in $(seq 1 60); do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxx; done",
        flag = flag.display()
    );
    let launch = launch(dir.path(), &script);
    let (mut shim, line) = start_shim(dir.path(), &launch);
    let service = started_pid(&line);
    let rotation = LogRotation {
        max_bytes: 400,
        keep: 1,
    };
    std::fs::write(
        dir.path().join(LOG_ROTATION_FILE),
        serde_json::to_vec(&rotation).unwrap(),
    )
    .unwrap();
    kill(shim.id() as i32, libc::SIGUSR1);
    let current = launch.log_dir.join(LOG_FILE);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&current)
        .is_ok_and(|t| t.contains("[strata] log rotation now at 400 bytes, keeping 1 files"))
    {
        assert!(
            Instant::now() < deadline,
            "the shim did not take the new settings"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::write(&flag, "").unwrap();
    assert!(shim.wait().unwrap().success());
    assert_eq!(
        exit_record(dir.path()).pid,
        service,
        "the same service ran throughout"
    );
    assert!(
        rotated_path(&current, 1).exists(),
        "the log rotated at the new size"
    );
    assert!(
        !rotated_path(&current, 2).exists(),
        "only one rotated file is kept"
    );
    let size = std::fs::metadata(&current).unwrap().len();
    assert!(
        size <= 400,
        "output.log is {size} bytes, over the new limit"
    );
}

#[test]
fn a_full_log_disk_drops_lines_without_blocking_and_logging_resumes() {
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
    // The shim may still be reading what the service left in the pipe: make room only once
    // every line is in the log or counted as dropped (the count is rewritten once a second).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let kept = log_lines(&dir.path().join("logs")).len() as u64;
        let dropped = LogStatus::read(dir.path()).unwrap().dropped_total;
        if kept + dropped == 2000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{kept} lines kept and {dropped} dropped of 2000"
        );
        std::thread::sleep(Duration::from_millis(50));
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
    let texts: Vec<String> = log_lines(&dir.path().join("logs"))
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

#[test]
fn a_wrong_command_line_gets_the_usage_and_status_2() {
    for args in [&[][..], &["a", "b"], &["--bogus"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_strata-shim"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage: strata-shim DIR"), "{args:?}: {err}");
    }
}
