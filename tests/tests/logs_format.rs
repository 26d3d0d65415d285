//! End to end: the agent's log on a stderr that is not a terminal (a file, as under systemd
//! and journald) carries no ANSI escape codes, and `--log-format json` (also
//! `STRATA_LOG_FORMAT`, `log_format` in the file) writes one JSON object per line that a log
//! shipper can parse: level, fields and target in every line.

use serde_json::Value;
use std::time::Duration;
use strata_tests::{AgentOptions, AgentProcess};

/// Starts an agent with `options`, stops it, and returns what it wrote to stderr.
fn stderr_of_a_run(options: &AgentOptions) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = AgentProcess::start(&dir.path().join("agent"), options).expect("agent starts");
    let stderr_path = dir.path().join("agent/agent.stderr.log");
    let exit = agent
        .terminate(Duration::from_secs(20))
        .expect("agent stops");
    assert!(exit.success(), "agent exit: {exit:?}");
    std::fs::read_to_string(stderr_path).expect("stderr file")
}

#[test]
fn text_logs_to_a_file_have_no_escape_codes() {
    let log = stderr_of_a_run(&AgentOptions::default());
    assert!(log.lines().count() >= 3, "too few log lines:\n{log}");
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a non-terminal log:\n{log}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_level_fields_and_target() {
    for options in [
        AgentOptions {
            extra_args: vec!["--log-format".into(), "json".into()],
            ..AgentOptions::default()
        },
        AgentOptions {
            env: vec![("STRATA_LOG_FORMAT".into(), "json".into())],
            ..AgentOptions::default()
        },
        AgentOptions {
            config: "log_format = \"json\"\n".into(),
            ..AgentOptions::default()
        },
    ] {
        let log = stderr_of_a_run(&options);
        assert!(log.lines().count() >= 3, "too few log lines:\n{log}");
        assert!(
            !log.contains('\u{1b}'),
            "escape codes in a JSON log:\n{log}"
        );
        for line in log.lines() {
            let object: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nwhole log:\n{log}"));
            assert!(object["level"].is_string(), "no level: {line}");
            assert!(object["fields"].is_object(), "no fields: {line}");
            assert!(object["target"].is_string(), "no target: {line}");
        }
        assert!(
            log.lines()
                .any(|l| l.contains("\"level\":\"INFO\"") && l.contains("\"message\"")),
            "no info message:\n{log}"
        );
    }
}

#[test]
fn a_bad_log_format_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::process::Command::new(strata_tests::binary("strata-agent"))
        .args(["run", "--dev", "--log-format", "xml", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("strata-agent runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--log-format") && stderr.contains("xml"),
        "{stderr}"
    );
}
