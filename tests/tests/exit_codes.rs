//! End to end: scripts are first-class clients of the `strata` CLI. Every subcommand keeps
//! the README's exit-code contract (0 success, 1 the action failed, 2 usage, 3 unreachable,
//! 4 not found, 5 permission denied); output into a closed pipe ends the CLI quietly; a
//! refusal over the rate limit is retried after the time the agent names (and not with
//! `--no-retry`); a shell-style loop of 1,000 applies succeeds with the default limits.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::time::Instant;
use strata_tests::{AgentOptions, AgentProcess, agent_token, binary, closed_port};

/// A test agent with tokens and one running service; the agent drops first.
struct Fixture {
    agent: AgentProcess,
    admin: String,
    reader: String,
    dir: tempfile::TempDir,
}

fn start(name: &str, config: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let admin = agent_token(&data, &["create", "admin", "--role", "admin"]);
    let reader = agent_token(&data, &["create", "reader", "--role", "read"]);
    let agent = AgentProcess::start(
        &data,
        &AgentOptions {
            node_name: Some(name.to_string()),
            config: config.to_string(),
            ..Default::default()
        },
    )
    .expect("agent starts");
    let fixture = Fixture {
        agent,
        admin,
        reader,
        dir,
    };
    let spec = fixture.write("web.toml", &sleeper("web"));
    let out = fixture.run(&fixture.admin, &["apply", &spec]);
    assert!(out.status.success(), "{}", stderr(&out));
    fixture
}

fn sleeper(name: &str) -> String {
    format!("name = \"{name}\"\ncommand = [\"/bin/sleep\", \"1000\"]\n")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

impl Fixture {
    /// `strata --token TOKEN ARGS` against the fixture's agent.
    fn run(&self, token: &str, args: &[&str]) -> Output {
        let mut all = vec!["--token", token];
        all.extend_from_slice(args);
        self.agent.strata(&all)
    }

    fn write(&self, file: &str, text: &str) -> String {
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    }
}

/// Runs every case and reports all that break the contract at once.
fn check(cases: &[(&str, Vec<&str>, i32)], run: impl Fn(&[&str]) -> Output) {
    let mut wrong = Vec::new();
    for (token, args, expected) in cases {
        let out = run(args);
        let code = out.status.code();
        if code != Some(*expected) {
            wrong.push(format!(
                "strata {} ({token}): exit {code:?}, expected {expected}: {}",
                args.join(" "),
                stderr(&out).trim()
            ));
        } else if *expected != 0 && !stderr(&out).starts_with("strata: ") && *expected != 2 {
            wrong.push(format!(
                "strata {}: no one-line message: {:?}",
                args.join(" "),
                stderr(&out)
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[test]
fn every_subcommand_keeps_the_exit_code_contract() {
    let f = start("codes", "");
    let missing = f.dir.path().join("missing.toml").display().to_string();
    let invalid = f.write("invalid.toml", "name = \"Bad Name\"\ncommand = []\n");
    let other = f.write("other.toml", &sleeper("other"));
    let man_dir = f.write("not-a-dir", "a file");
    let admin = |args: &[&str]| f.run(&f.admin, args);
    let reader = |args: &[&str]| f.run(&f.reader, args);

    let as_admin: Vec<(&str, Vec<&str>, i32)> = vec![
        ("admin", vec!["node"], 0),
        ("admin", vec!["node", "--node", "nowhere"], 4),
        ("admin", vec!["metrics", "--node", "nowhere"], 4),
        ("admin", vec!["top", "--limit", "3"], 0),
        ("admin", vec!["top", "--node", "nowhere"], 4),
        ("admin", vec!["top", "--limit", "many"], 2),
        ("admin", vec!["events", "--since", "1h"], 0),
        ("admin", vec!["events", "--severity", "loud"], 2),
        ("admin", vec!["events", "--node", "nowhere"], 4),
        ("admin", vec!["apply", &missing], 2),
        ("admin", vec!["apply", &invalid], 2),
        ("admin", vec!["apply", &other, "--dry-run"], 0),
        ("admin", vec!["services"], 0),
        ("admin", vec!["services", "--node", "nowhere"], 4),
        ("admin", vec!["service", "web"], 0),
        ("admin", vec!["service", "nosuch"], 4),
        ("admin", vec!["start", "nosuch"], 4),
        ("admin", vec!["start", "web/9"], 4),
        ("admin", vec!["start", "web/x"], 2),
        ("admin", vec!["stop", "nosuch"], 4),
        ("admin", vec!["restart", "nosuch"], 4),
        ("admin", vec!["scale", "nosuch", "2"], 4),
        ("admin", vec!["scale", "web", "-1"], 2),
        ("admin", vec!["signal", "nosuch", "HUP"], 4),
        ("admin", vec!["signal", "web", "LOUD"], 2),
        ("admin", vec!["signal", "web", "HUP"], 0),
        ("admin", vec!["remove", "nosuch"], 4),
        ("admin", vec!["logs", "nosuch"], 4),
        ("admin", vec!["logs", "web", "--lines", "5"], 0),
        ("admin", vec!["members"], 0),
        ("admin", vec!["whoami"], 0),
        ("admin", vec!["catalog"], 0),
        ("admin", vec!["drain", "nowhere"], 4),
        ("admin", vec!["undrain", "nowhere"], 4),
        ("admin", vec!["leave", "nowhere"], 4),
        ("admin", vec!["force-leave", "nowhere"], 4),
        ("admin", vec!["balancer"], 0),
        ("admin", vec!["balancer", "--node", "nowhere"], 4),
        ("admin", vec!["access-log", "nosuch"], 4),
        ("admin", vec!["access-log", "web", "--lines", "5"], 0),
        ("admin", vec!["keyring", "shred"], 2),
        // The test agents gossip unsealed: there is no keyring to list.
        ("admin", vec!["keyring", "list"], 1),
        (
            "admin",
            vec!["token", "create", "ci", "--role", "operate"],
            0,
        ),
        ("admin", vec!["token", "create", "ci2", "--role", "king"], 2),
        ("admin", vec!["token", "list"], 0),
        ("admin", vec!["token", "revoke", "ci"], 0),
        ("admin", vec!["token", "revoke", "nosuch"], 4),
        ("admin", vec!["completions", "tcsh"], 2),
        ("admin", vec!["completions", "bash"], 0),
        ("admin", vec!["completions", "zsh", "--dynamic"], 0),
        ("admin", vec!["man", "--dir", &man_dir], 1),
        ("admin", vec!["demo", "--no-such-flag"], 2),
        ("admin", vec!["no-such-command"], 2),
    ];
    check(&as_admin, |args| admin(args));

    let as_reader: Vec<(&str, Vec<&str>, i32)> = vec![
        ("read", vec!["services"], 0),
        ("read", vec!["apply", &other], 5),
        ("read", vec!["start", "web"], 5),
        ("read", vec!["stop", "web"], 5),
        ("read", vec!["restart", "web"], 5),
        ("read", vec!["scale", "web", "2"], 5),
        ("read", vec!["signal", "web", "HUP"], 5),
        ("read", vec!["remove", "web"], 5),
        ("read", vec!["drain", "codes"], 5),
        ("read", vec!["undrain", "codes"], 5),
        ("read", vec!["leave", "codes"], 5),
        ("read", vec!["force-leave", "nowhere"], 5),
        ("read", vec!["keyring", "install", "a2V5"], 5),
        ("read", vec!["token", "create", "mine", "--role", "read"], 5),
        ("read", vec!["token", "revoke", "ci"], 5),
    ];
    check(&as_reader, |args| reader(args));
    check(&[("bad token", vec!["whoami"], 5)], |args| {
        f.run("strata_not_a_token", args)
    });

    // Unreachable: every subcommand that talks to an agent exits 3 and names the address.
    let nowhere = format!("127.0.0.1:{}", closed_port());
    let unreachable: Vec<(&str, Vec<&str>, i32)> = [
        vec!["node"],
        vec!["metrics"],
        vec!["top"],
        vec!["events"],
        vec!["apply", other.as_str()],
        vec!["services"],
        vec!["service", "web"],
        vec!["start", "web"],
        vec!["stop", "web"],
        vec!["restart", "web"],
        vec!["scale", "web", "2"],
        vec!["signal", "web", "HUP"],
        vec!["remove", "web"],
        vec!["logs", "web"],
        vec!["members"],
        vec!["whoami"],
        vec!["catalog"],
        vec!["drain", "n1"],
        vec!["undrain", "n1"],
        vec!["leave", "n1"],
        vec!["force-leave", "n1"],
        vec!["balancer"],
        vec!["access-log"],
        vec!["keyring", "list"],
        vec!["token", "list"],
    ]
    .into_iter()
    .map(|args| ("none", args, 3))
    .collect();
    check(&unreachable, |args| strata_tests::strata(&nowhere, args));
}

#[test]
fn output_into_a_closed_pipe_ends_the_cli_quietly() {
    let f = start("pipe", "");
    for args in [
        vec!["services"],
        vec!["events", "--since", "1h"],
        vec!["catalog", "-o", "json"],
        vec!["top", "--limit", "3"],
        vec!["completions", "bash"],
    ] {
        let mut all = vec!["--agent".to_string(), f.agent.grpc.to_string()];
        all.extend(["--token".to_string(), f.admin.clone()]);
        all.extend(args.iter().map(|a| a.to_string()));
        let mut child = Command::new(binary("strata"))
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata");
        // The reader goes away before anything is written, as `| head -0` would.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("strata ends");
        assert_eq!(
            out.status.signal(),
            Some(rustix::process::Signal::PIPE.as_raw()),
            "strata {args:?}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(out.stderr.is_empty(), "quiet: {}", stderr(&out));
    }
}

#[test]
fn a_refusal_over_the_rate_limit_is_retried_after_the_named_time() {
    // 20 units a second and a burst of 20: two applies, then one every half second.
    let f = start(
        "limited",
        "[api]\nrate_per_client = 20\nburst_per_client = 20\n",
    );
    let spec = f.write("other.toml", &sleeper("other"));
    let started = Instant::now();
    for i in 0..6 {
        let out = f.run(&f.admin, &["apply", &spec]);
        assert!(out.status.success(), "apply {i}: {}", stderr(&out));
    }
    println!(
        "6 applies at 2 a second took {:?} with retries",
        started.elapsed()
    );

    let mut refused = None;
    for _ in 0..6 {
        let out = f.run(&f.admin, &["--no-retry", "apply", &spec]);
        if !out.status.success() {
            refused = Some(out);
            break;
        }
    }
    let refused = refused.expect("--no-retry gets the refusal");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("over its rate limit") && stderr(&refused).contains("retry in"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_loop_of_a_thousand_applies_succeeds_with_the_default_limits() {
    let f = start("loop", "");
    let spec = f.write("other.toml", &sleeper("other"));
    let started = Instant::now();
    let mut failed = Vec::new();
    for i in 0..1000 {
        let out = f.run(&f.admin, &["apply", &spec]);
        if !out.status.success() {
            failed.push(format!("apply {i}: {}", stderr(&out).trim()));
        }
    }
    println!(
        "1,000 applies from one client in {:?}, {} failed",
        started.elapsed(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
