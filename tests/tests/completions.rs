//! End to end: a real bash sources `strata completions bash --dynamic` and completes the way
//! Tab does, naming the services, instances and nodes of a real agent (found by `--agent` on
//! the line or by `STRATA_AGENT`), and nothing when no agent answers.

use std::process::Command;
use std::time::Duration;
use strata_tests::{binary, closed_port, start_test_agent, wait_until};

/// What bash's completion function offers for `words` (the last one being completed), with
/// `env` set.
fn complete(words: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let strata = binary("strata");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source <('{strata}' completions bash --dynamic) || exit 3
COMP_WORDS=(strata {words})
COMP_CWORD={cword}
COMP_TYPE=9
_clap_complete_strata strata "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        strata = strata.display(),
        words = quoted.join(" "),
        cword = words.len(),
    );
    let mut bash = Command::new("bash");
    bash.args(["--noprofile", "--norc", "-c", &script])
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for var in [
        "STRATA_AGENT",
        "STRATA_TOKEN",
        "STRATA_CA",
        "STRATA_CERT",
        "STRATA_KEY",
    ] {
        bash.env_remove(var);
    }
    bash.envs(env.iter().copied());
    let out = bash.output().expect("bash runs");
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn tab_offers_the_clusters_services_instances_and_nodes() {
    let (dir, agent) = start_test_agent("tabnode");
    let spec = dir.path().join("web.toml");
    std::fs::write(
        &spec,
        "name = \"web\"\ninstances = 2\ncommand = [\"/bin/sleep\", \"1000\"]\n",
    )
    .expect("write spec");
    let out = agent.strata(&["apply", spec.to_str().expect("path")]);
    assert!(out.status.success(), "{out:?}");
    let grpc = agent.grpc.to_string();
    wait_until(
        "web's instances in the catalog",
        Duration::from_secs(20),
        || complete(&["--agent", &grpc, "restart", "web/"], &[]) == ["web/1", "web/2"],
    );

    // Names come from the agent; subcommands and flags still complete as before.
    assert_eq!(complete(&["--agent", &grpc, "logs", "w"], &[]), ["web"]);
    assert_eq!(
        complete(&["--agent", &grpc, "logs", "x"], &[]),
        [] as [&str; 0]
    );
    assert_eq!(
        complete(&["--agent", &grpc, "drain", "tab"], &[]),
        ["tabnode"]
    );
    assert_eq!(
        complete(&["--agent", &grpc, "balancer", "--node", ""], &[]),
        ["tabnode"]
    );
    assert_eq!(complete(&["--agent", &grpc, "acc"], &[]), ["access-log"]);
    // The agent from the environment, as every command takes it (an empty word is offered
    // the flags too).
    let offered = complete(&["service", ""], &[("STRATA_AGENT", &grpc)]);
    let names: Vec<&String> = offered.iter().filter(|w| !w.starts_with('-')).collect();
    assert_eq!(names, ["web"], "{offered:?}");

    // No agent: nothing offered and no error printed.
    let nowhere = format!("127.0.0.1:{}", closed_port());
    let offered = complete(&["--agent", &nowhere, "logs", ""], &[]);
    assert!(offered.iter().all(|w| w.starts_with('-')), "{offered:?}");
    let out = agent.strata(&["remove", "web"]);
    assert!(out.status.success(), "{out:?}");
}
