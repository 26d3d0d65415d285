//! End to end in a real terminal: the `strata` console inside tmux against a real agent
//! with a real service: go to Services, open the service, restart it through the
//! confirmation, see the restart count rise, quit, and find the shell restored.

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use strata_tests::{AgentOptions, AgentProcess, binary, prereq};

/// The tmux server this test started; killed by socket name when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.run(&["send-keys", "-t", "console", k]);
            assert!(
                out.status.success(),
                "send-keys {k}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "console"]).stdout)
            .into_owned()
    }

    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn restarts(agent: &AgentProcess) -> i64 {
    let out = agent.strata(&["service", "ticker", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    v["instances"][0]["restarts"].as_i64().unwrap_or(-1)
}

#[test]
fn restart_a_service_from_the_console_in_tmux() {
    if !prereq::TMUX.check() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = AgentProcess::start(
        &dir.path().join("data"),
        &AgentOptions {
            node_name: Some("tmux-n1".into()),
            ..Default::default()
        },
    )
    .expect("agent starts");
    let spec = dir.path().join("ticker.toml");
    std::fs::write(&spec, "name = \"ticker\"\ncommand = [\"/bin/sh\", \"-c\", \"while true; do echo tick; sleep 1; done\"]\n").expect("spec");
    let out = agent.strata(&["apply", spec.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = restarts(&agent);

    let tmux = Tmux {
        socket: format!("strata-test-{}", std::process::id()),
    };
    let command = format!(
        "env XDG_CONFIG_HOME={} {} --agent {}; echo CONSOLE-EXITED-$?",
        dir.path().display(),
        binary("strata").display(),
        agent.grpc
    );
    let started = Instant::now();
    let out = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "console",
        "-x",
        "160",
        "-y",
        "48",
        "sh",
        "-c",
        &format!("{command}; sleep 60"),
    ]);
    assert!(
        out.status.success(),
        "tmux: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tmux.wait_for("the console connected", |s| {
        s.contains("connected") && s.contains("overview")
    });
    println!("startup to first connected frame: {:?}", started.elapsed());

    tmux.keys(&[":", "services", "Enter"]);
    tmux.wait_for("the services view with ticker", |s| {
        s.contains("Services (") && s.contains("ticker")
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for("the service view", |s| {
        s.contains("Service ticker") && s.contains("ticker/1")
    });
    tmux.keys(&["r"]);
    tmux.wait_for("the confirmation", |s| {
        s.contains("Restart instance ticker/1 on node tmux-n1?")
    });
    tmux.keys(&["y"]);
    let screen = tmux.wait_for("the restart count to rise", |s| {
        s.lines().any(|l| {
            l.contains("ticker/1")
                && l.split_whitespace()
                    .any(|w| w.parse::<i64>().is_ok_and(|n| n == before + 1))
        })
    });
    assert!(screen.contains("✓ Restart instance ticker/1"), "{screen}");
    assert_eq!(restarts(&agent), before + 1);

    tmux.keys(&["q"]);
    let screen = tmux.wait_for("the console to exit", |s| s.contains("CONSOLE-EXITED-"));
    assert!(screen.contains("CONSOLE-EXITED-0"), "{screen}");
    assert!(
        !screen.contains("strata 127.0.0.1"),
        "the alternate screen is gone:\n{screen}"
    );
}
