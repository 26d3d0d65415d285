//! A damaged event journal never stops the agent: with its services running, the agent is
//! stopped, `events.redb` is damaged (pages overwritten, header overwritten, truncated to
//! 0), and the agent starts again, keeps supervising the same processes, moves the damaged
//! file aside and says so in the new journal's first event.

use serde_json::Value;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;
use strata_tests::{AgentOptions, AgentProcess, closed_port, wait_until, web_spec};

#[derive(Debug, Clone, Copy)]
enum Damage {
    Pages,
    Header,
    Truncated,
}

fn damage(path: &Path, how: Damage) {
    let len = std::fs::metadata(path).expect("journal").len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open journal");
    match how {
        Damage::Pages => {
            file.seek(SeekFrom::Start(4096)).expect("seek");
            file.write_all(&vec![0xA5; (len - 4096) as usize])
                .expect("write");
        }
        Damage::Header => file.write_all(&[0xA5; 512]).expect("write"),
        Damage::Truncated => file.set_len(0).expect("truncate"),
    }
    file.sync_all().expect("sync");
}

fn pid_of_web(agent: &AgentProcess) -> i64 {
    let service: Value = agent.json(&["service", "web", "-o", "json"]);
    service["instances"][0]["pid"].as_i64().unwrap_or(0)
}

#[test]
fn a_damaged_journal_is_moved_aside_and_supervision_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("agent");
    let options = AgentOptions {
        node_name: Some("journal".into()),
        ..Default::default()
    };
    let mut agent = AgentProcess::start(&data, &options).expect("agent starts");
    let spec = dir.path().join("web.toml");
    std::fs::write(&spec, web_spec("web", closed_port(), "")).expect("spec");
    let out = agent.strata(&["apply", spec.to_str().expect("path"), "--wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = pid_of_web(&agent);
    assert!(pid > 0);

    for how in [Damage::Pages, Damage::Header, Damage::Truncated] {
        agent
            .terminate_keeping_services(Duration::from_secs(30))
            .expect("the agent stops");
        damage(&data.join("events.redb"), how);
        agent = AgentProcess::start(&data, &options)
            .unwrap_or_else(|e| panic!("the agent starts with a journal damaged ({how:?}): {e:#}"));
        wait_until("web is supervised again", Duration::from_secs(30), || {
            pid_of_web(&agent) == pid
        });
        let events: Value = agent.json(&["events", "-o", "json"]);
        let list = events["events"].as_array().cloned().unwrap_or_default();
        let first = list
            .iter()
            .min_by_key(|e| e["seq"].as_u64().unwrap_or(u64::MAX))
            .cloned()
            .unwrap_or_default();
        assert_eq!(first["kind"], "journal.recovered", "{how:?}: {events:#}");
        let message = first["message"].as_str().unwrap_or_default();
        match how {
            Damage::Truncated => assert!(message.contains("was empty"), "{message}"),
            Damage::Pages | Damage::Header => {
                assert!(message.contains("moved to"), "{message}");
                let moved = std::fs::read_dir(&data)
                    .expect("data dir")
                    .filter_map(Result::ok)
                    .any(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .starts_with("events.redb.damaged-")
                    });
                assert!(
                    moved,
                    "{how:?}: the damaged journal is kept beside the new one"
                );
            }
        }
    }
}
