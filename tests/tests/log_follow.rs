//! End to end: `strata logs -f` on a real agent following a service that logs as fast as it
//! can with tiny rotation, a deliberately slow follower getting a counted gap marker, and the
//! agent deleting logs past their retention and over its cap.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use strata_tests::{AgentOptions, AgentProcess, binary, start_test_agent, wait_until};

/// A service counting as fast as `sh` can, its log rotated every 64 KiB, two files kept.
const COUNTER: &str = r#"name = "counter"
command = ["/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo \"line $i\"; done"]
[logs]
max_bytes = "64KiB"
keep = 2
"#;

/// A `strata logs -f` the test started, killed by its pid when dropped.
struct Follow {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Follow {
    fn start(agent: &AgentProcess, args: &[&str]) -> Follow {
        let mut child = Command::new(binary("strata"))
            .args(["--agent", &agent.grpc.to_string(), "logs", "counter", "-f"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("strata logs -f starts");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Follow { child, out }
    }

    /// The next line printed, or a panic after `deadline`.
    fn line(&mut self, deadline: Instant) -> String {
        assert!(Instant::now() < deadline, "timed out reading the follower");
        let mut line = String::new();
        let n = self.out.read_line(&mut line).expect("read the follower");
        assert!(n > 0, "the follower ended");
        line.trim_end().to_string()
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number in `line N` at the end of `text`.
fn counted(text: &str) -> u64 {
    text.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a counter line: {text:?}"))
}

fn apply(agent: &AgentProcess, dir: &Path, file: &str, spec: &str) {
    let path = dir.join(file);
    std::fs::write(&path, spec).expect("write spec");
    let out = agent.strata(&["apply", path.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_slow_follower_gets_a_counted_gap_then_newer_lines_in_json_and_text() {
    let (dir, agent) = start_test_agent("logs-follow");
    apply(&agent, dir.path(), "counter.toml", COUNTER);
    let log = agent.data_dir.join("logs/counter/1/output.log.2");
    wait_until("the counter's log rotates", Duration::from_secs(30), || {
        log.exists()
    });

    let mut json = Follow::start(&agent, &["-o", "json", "--lines", "1"]);
    let mut text = Follow::start(&agent, &["--lines", "1"]);
    // Neither reads for a while: the pipes, gRPC flow control and the agent's queue fill,
    // and the agent passes lines over instead of buffering them.
    std::thread::sleep(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(60);

    // JSON: records with a typed gap (a counted one, perhaps next to one for files deleted
    // unread); the line after them is exactly the count further on when all was counted.
    let mut last = None;
    let (lines, uncounted, after) = loop {
        let mut record: Value = serde_json::from_str(&json.line(deadline)).expect("JSON");
        assert_eq!(record["instance"], "counter/1", "{record}");
        let (mut lines, mut uncounted) = (0, false);
        while let Some(gap) = record.get("gap").filter(|g| !g.is_null()) {
            lines += gap["lines"].as_u64().unwrap_or(0);
            uncounted |= gap["uncounted"].as_bool().unwrap_or(false);
            let text = record["text"].as_str().expect("text");
            assert!(text.contains("lines skipped"), "{record}");
            record = serde_json::from_str(&json.line(deadline)).expect("JSON");
        }
        let n = counted(record["text"].as_str().expect("text"));
        if lines > 0 {
            break (lines, uncounted, n);
        }
        last = Some(n);
    };
    let before = last.expect("lines before the gap");
    if uncounted {
        assert!(
            after > before + lines,
            "{before} + {lines} or more -> {after}"
        );
    } else {
        assert_eq!(
            after,
            before + lines + 1,
            "the gap counts exactly what was skipped"
        );
    }

    // Text: the gap marker line with its count, then newer lines.
    let mut next_line = || {
        // The service's instances merged: each line starts with its instance.
        let line = text.line(deadline);
        line.strip_prefix("[counter/1] ")
            .unwrap_or_else(|| panic!("no instance prefix: {line}"))
            .to_string()
    };
    let mut last = 0;
    loop {
        let line = next_line();
        if let Some(marker) = line.strip_prefix("… ") {
            assert!(marker.contains("lines skipped"), "{line}");
            let count: u64 = marker
                .trim_start_matches("more than ")
                .split(' ')
                .next()
                .and_then(|n| n.replace(',', "").parse().ok())
                .unwrap_or(0);
            if count > 0 {
                break;
            }
        } else {
            let n = counted(&line);
            assert!(n > last, "{n} after {last}");
            last = n;
        }
    }
    let next = loop {
        let line = next_line();
        if !line.starts_with("… ") {
            break counted(&line);
        }
    };
    assert!(next > last, "{next} after {last}");
    drop((json, text));
    let out = agent.strata(&["remove", "counter"]);
    assert!(out.status.success());
}

#[test]
fn logs_of_a_removed_service_are_deleted_after_the_retention_and_all_logs_are_capped() {
    // The test agent's own config, with the log settings added, for a second agent on the
    // same data dir.
    let (dir, agent) = start_test_agent("logs-retention");
    let data = agent.data_dir.clone();
    agent
        .terminate(Duration::from_secs(10))
        .expect("the first agent stops");
    let config = data.join("test-agent.toml");
    let mut text = std::fs::read_to_string(&config).expect("test config");
    text.push_str(
        "[logs]\nretention = \"2s\"\nmax_total_bytes = \"1MiB\"\nsweep_interval = \"200ms\"\n",
    );
    std::fs::write(&config, text).expect("write config");
    let agent = AgentProcess::start(
        &data,
        &AgentOptions {
            node_name: Some("logs-retention".into()),
            extra_args: vec!["--config".into(), config.display().to_string()],
            ..Default::default()
        },
    )
    .expect("agent starts");

    apply(
        &agent,
        dir.path(),
        "quiet.toml",
        "name = \"quiet\"\ncommand = [\"/bin/sh\", \"-c\", \"echo hello; exec sleep 1000\"]\n",
    );
    apply(
        &agent,
        dir.path(),
        "flood.toml",
        "name = \"flood\"\ncommand = [\"/usr/bin/yes\", \"flood\"]\n[logs]\nmax_bytes = \"64KiB\"\nkeep = 50\n",
    );
    let events = |kind: &str| -> Vec<Value> {
        let out = agent.strata(&["events", "--kind", kind, "--limit", "1000", "-o", "json"]);
        assert!(out.status.success());
        let v: Value = serde_json::from_slice(&out.stdout).expect("json");
        v["events"].as_array().cloned().unwrap_or_default()
    };

    // 50 files of 64 KiB are over the 1 MiB cap: the oldest rotated files go, with an event.
    let mut over = Vec::new();
    wait_until("a logs.over_cap event", Duration::from_secs(30), || {
        over = events("logs.over_cap");
        !over.is_empty()
    });
    assert_eq!(over[0]["subject"], "service:flood/1", "{:#}", over[0]);
    let message = over[0]["message"].as_str().expect("message");
    assert!(message.starts_with("deleted output.log."), "{message}");
    let logs = data.join("logs");
    assert!(logs.join("flood/1/output.log").exists());
    assert!(logs.join("quiet/1/output.log").exists());

    // Removed, its logs go once the retention has passed; the live service's stay.
    let out = agent.strata(&["remove", "flood"]);
    assert!(out.status.success());
    wait_until(
        "the removed service's logs are deleted",
        Duration::from_secs(30),
        || !logs.join("flood").exists(),
    );
    let expired = events("logs.expired");
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(expired[0]["subject"], "service:flood/1");
    let message = expired[0]["message"].as_str().expect("message");
    assert!(
        message.starts_with("deleted the logs of flood/1 ("),
        "{message}"
    );
    assert!(logs.join("quiet/1/output.log").exists());
    let out = agent.strata(&["remove", "quiet"]);
    assert!(out.status.success());
}
