//! A service's log as one stream of lines: the last lines over all its instances' logs, merged
//! by time, then (when following) each instance's new lines as its shim writes them. The
//! reading itself is [`super::logs`]; the API only turns this stream into its own.

use super::logs::{self, Follower, LineFilter, LogLine};
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// One line and the instance whose log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLine {
    /// The instance, `service/N`.
    pub instance: String,
    /// The line.
    pub line: LogLine,
}

/// Why a service's log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// An instance's log exists but could not be read.
    #[error("cannot read the logs of {instance}: {source}")]
    Read {
        /// The instance, `service/N`.
        instance: String,
        /// What reading it failed with.
        #[source]
        source: io::Error,
    },
    /// The blocking read was cancelled or panicked.
    #[error("log read did not finish: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
}

/// How often followed logs are polled for new lines.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines read ahead of a slow reader.
const QUEUE: usize = 256;

/// The last `lines` lines passing `filter` over the logs in `dirs` (instance, log dir), oldest
/// first, and with `follow` every new line after them, until the receiver is dropped. Nothing
/// is missed or repeated between the tail and the follow.
pub async fn open(
    dirs: Vec<(String, PathBuf)>,
    lines: usize,
    follow: bool,
    filter: Option<LineFilter>,
) -> Result<mpsc::Receiver<InstanceLine>, TailError> {
    let (past, followers) =
        tokio::task::spawn_blocking(move || read(&dirs, lines, follow, filter.as_ref())).await??;
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(send(tx, past, followers));
    Ok(rx)
}

type Opened = (Vec<InstanceLine>, Vec<(String, Follower)>);

/// The last `lines` lines over every instance's log, merged by time, and (when following)
/// a follower per instance that continues exactly where its tail ended.
fn read(
    dirs: &[(String, PathBuf)],
    lines: usize,
    follow: bool,
    filter: Option<&LineFilter>,
) -> Result<Opened, TailError> {
    let mut past = Vec::new();
    let mut followers = Vec::new();
    for (instance, dir) in dirs {
        let failed = |source| TailError::Read {
            instance: instance.clone(),
            source,
        };
        let found = if follow {
            let (found, follower) =
                Follower::tail_and_follow(dir, lines, filter.cloned()).map_err(failed)?;
            followers.push((instance.clone(), follower));
            found
        } else {
            logs::tail(dir, lines, filter).map_err(failed)?
        };
        past.extend(found.into_iter().map(|line| InstanceLine {
            instance: instance.clone(),
            line,
        }));
    }
    past.sort_by_key(|l| l.line.time_unix_ms);
    let skip = past.len().saturating_sub(lines);
    Ok((past.split_off(skip), followers))
}

/// Sends the past lines, then polls the followers until the receiver is gone.
async fn send(
    tx: mpsc::Sender<InstanceLine>,
    past: Vec<InstanceLine>,
    mut followers: Vec<(String, Follower)>,
) {
    for line in past {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    if followers.is_empty() {
        return;
    }
    let mut timer = tokio::time::interval(POLL_INTERVAL);
    loop {
        timer.tick().await;
        for (instance, follower) in followers.iter_mut() {
            let new = follower.poll_new().unwrap_or_default();
            for line in new {
                let line = InstanceLine {
                    instance: instance.clone(),
                    line,
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const T1: &str = "2026-11-27T10:00:00.001Z";
    const T2: &str = "2026-11-27T10:00:00.002Z";
    const T3: &str = "2026-11-27T10:00:00.003Z";

    fn write_log(dir: &std::path::Path, lines: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(strata_shim::launch::LOG_FILE))
            .unwrap();
        for (time, text) in lines {
            writeln!(file, "{time} out {text}").unwrap();
        }
    }

    fn texts(lines: &[InstanceLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| format!("{} {}", l.instance, l.line.text))
            .collect()
    }

    #[tokio::test]
    async fn instances_are_merged_by_time_then_followed() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("1"), root.path().join("2"));
        write_log(&a, &[(T1, "a1"), (T3, "a3")]);
        write_log(&b, &[(T2, "b2")]);
        let dirs = vec![("web/1".to_string(), a.clone()), ("web/2".to_string(), b)];
        let mut rx = open(dirs, 2, true, None).await.unwrap();
        let mut seen = Vec::new();
        for _ in 0..2 {
            seen.push(rx.recv().await.unwrap());
        }
        assert_eq!(texts(&seen), ["web/2 b2", "web/1 a3"]);
        write_log(&a, &[(T3, "a4")]);
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(texts(&[next]), ["web/1 a4"]);
    }

    #[tokio::test]
    async fn without_follow_the_stream_ends_after_the_tail_and_filters_apply() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("1");
        write_log(&dir, &[(T1, "keep 1"), (T2, "drop"), (T3, "keep 2")]);
        let filter = LineFilter::new("^keep").unwrap();
        let mut rx = open(vec![("web/1".into(), dir)], 10, false, Some(filter))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(line) = rx.recv().await {
            seen.push(line);
        }
        assert_eq!(texts(&seen), ["web/1 keep 1", "web/1 keep 2"]);
    }

    #[tokio::test]
    async fn an_unreadable_log_names_its_instance() {
        let root = tempfile::tempdir().unwrap();
        let not_a_dir = root.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let err = open(vec![("web/1".into(), not_a_dir)], 10, false, None)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the logs of web/1: "),
            "{err}"
        );
    }
}
