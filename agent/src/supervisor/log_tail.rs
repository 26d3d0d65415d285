//! A service's log as one stream of lines: the last lines over all its instances' logs, merged
//! by time, then (when following) each instance's new lines as its shim writes them. The
//! reading itself is [`super::logs`]; the API only turns this stream into its own.
//!
//! Memory stays bounded whatever the log's rate: the files are read one chunk at a time on a
//! thread of the stream's own (never on the async runtime), into a bounded channel. When the
//! reader (the client, through gRPC flow control) falls behind and the channel stays full
//! ([`GRACE`], or only [`LAGGING_GRACE`] when the follower is already a rotation behind the
//! writer), the follower stops handing out lines and only counts them, which is fast, until
//! it has reached the file being written and the reader has emptied half the channel; then
//! it sends one gap (how many lines were passed over) and goes on with the newest lines.
//! Counting instead of waiting keeps the follower ahead of rotation, so the counts are exact.

use super::logs::{self, Followed, Follower, Gap, LineFilter, Mode};
use std::io;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TrySendError};

/// One line (or gap) and the instance whose log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLine {
    /// The instance, `service/N`.
    pub instance: String,
    /// The line, or the lines passed over at this point.
    pub entry: Followed,
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
    /// No thread could be started to read the log.
    #[error("cannot start a log reader: {0}")]
    Spawn(#[source] io::Error),
}

/// How often followed logs are looked at for new lines once everything was read.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines read ahead of a slow reader.
const QUEUE: usize = 1024;
/// How long a full channel may stay full before the follower skips instead of waiting.
const GRACE: Duration = Duration::from_millis(250);
/// [`GRACE`] for a follower a rotation or more behind the writer: waiting longer would risk
/// the rotated files it has yet to read being deleted unread.
const LAGGING_GRACE: Duration = Duration::from_millis(20);
/// How often a waiting sender looks whether the channel has room again.
const RETRY: Duration = Duration::from_millis(2);

/// The last `lines` lines passing `filter` over the logs in `dirs` (instance, log dir), oldest
/// first, and with `follow` every new line after them (with a gap where a slow receiver made
/// the follower pass lines over), until the receiver is dropped. Nothing is missed or
/// repeated between the tail and the follow.
pub async fn open(
    dirs: Vec<(String, PathBuf)>,
    lines: usize,
    follow: bool,
    filter: Option<LineFilter>,
) -> Result<mpsc::Receiver<InstanceLine>, TailError> {
    let (past, followers) =
        tokio::task::spawn_blocking(move || read(&dirs, lines, follow, filter.as_ref())).await??;
    let (tx, rx) = mpsc::channel(QUEUE);
    thread::Builder::new()
        .name("log-follow".into())
        .spawn(move || pump(Sender::new(tx), past, followers))
        .map_err(TailError::Spawn)?;
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
        past.extend(found.into_iter().map(|line| (instance.clone(), line)));
    }
    past.sort_by_key(|(_, line)| line.time_unix_ms);
    let skip = past.len().saturating_sub(lines);
    let past = past
        .into_iter()
        .skip(skip)
        .map(|(instance, line)| InstanceLine {
            instance,
            entry: Followed::Line(line),
        })
        .collect();
    Ok((past, followers))
}

/// The channel to the receiver, as the reading thread sees it: a send waits for room at
/// most [`GRACE`]; after that the sender is behind until the receiver has taken half the
/// channel.
struct Sender {
    tx: mpsc::Sender<InstanceLine>,
    behind: bool,
}

/// What became of a send.
enum Sent {
    Yes,
    /// The receiver is behind: the entry was not sent.
    Behind(InstanceLine),
    /// The receiver is gone.
    Closed,
}

impl Sender {
    fn new(tx: mpsc::Sender<InstanceLine>) -> Self {
        Self { tx, behind: false }
    }

    /// Skip while behind; deliver again once the follower reads the file being written
    /// (not `lagging`) and the receiver has emptied half the channel.
    fn mode(&mut self, lagging: bool) -> Mode {
        if self.behind && !lagging && self.tx.capacity() >= self.tx.max_capacity() / 2 {
            self.behind = false;
        }
        if self.behind {
            Mode::Skip
        } else {
            Mode::Deliver
        }
    }

    /// Sends `entry`, waiting for room as long as `patience` allows (`None`: for ever).
    fn send(&mut self, mut entry: InstanceLine, patience: Option<Duration>) -> Sent {
        let started = Instant::now();
        loop {
            match self.tx.try_send(entry) {
                Ok(()) => return Sent::Yes,
                Err(TrySendError::Closed(_)) => return Sent::Closed,
                Err(TrySendError::Full(back)) => entry = back,
            }
            if self.behind || patience.is_some_and(|p| started.elapsed() >= p) {
                self.behind = true;
                return Sent::Behind(entry);
            }
            thread::sleep(RETRY);
        }
    }
}

/// The reading thread: sends the past lines, then reads the followers in turn, one chunk
/// each, until the receiver is gone.
fn pump(mut sender: Sender, past: Vec<InstanceLine>, mut followers: Vec<(String, Follower)>) {
    for line in past {
        if !matches!(sender.send(line, None), Sent::Yes) {
            return;
        }
    }
    let mut out = Vec::new();
    let mut failing = vec![false; followers.len()];
    while !followers.is_empty() {
        if sender.tx.is_closed() {
            return;
        }
        let mut progressed = false;
        for ((instance, follower), failing) in followers.iter_mut().zip(failing.iter_mut()) {
            let lagging = follower.lagging();
            match follower.read_chunk(sender.mode(lagging), &mut out) {
                Ok(read) => {
                    progressed |= read;
                    *failing = false;
                }
                Err(e) => {
                    if !*failing {
                        tracing::warn!(%instance, error = %e, "cannot read the followed log");
                    }
                    *failing = true;
                }
            }
            let mut entries = out.drain(..);
            while let Some(entry) = entries.next() {
                let entry = InstanceLine {
                    instance: instance.clone(),
                    entry,
                };
                let patience = if lagging { LAGGING_GRACE } else { GRACE };
                match sender.send(entry, Some(patience)) {
                    Sent::Yes => {}
                    Sent::Closed => return,
                    Sent::Behind(first) => {
                        // The rest of the chunk is passed over too, counted.
                        let mut gap = Gap::default();
                        for entry in std::iter::once(first.entry).chain(entries.by_ref()) {
                            match entry {
                                Followed::Line(_) => gap.lines += 1,
                                Followed::Gap(g) => gap.merge(g),
                            }
                        }
                        follower.passed_over(gap);
                    }
                }
            }
        }
        if !progressed {
            thread::sleep(POLL_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use strata_shim::logfile::LogWriter;

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
            .map(|l| match &l.entry {
                Followed::Line(line) => format!("{} {}", l.instance, line.text),
                Followed::Gap(gap) => format!("{} {gap:?}", l.instance),
            })
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

    #[tokio::test]
    async fn a_slow_receiver_gets_an_exact_gap_then_the_newest_lines() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("1");
        let mut rx = open(vec![("web/1".into(), dir.clone())], 0, true, None)
            .await
            .unwrap();
        let total = 100_000u64;
        let write = move |writer: &mut LogWriter, range: std::ops::Range<u64>| {
            for i in range {
                writer.write_line(logs::LogStream::Out, format!("line {i}").as_bytes());
            }
        };
        let mut writer = LogWriter::new(&dir, 1 << 20, 5);
        let (mut writer, _) = tokio::task::spawn_blocking(move || {
            write(&mut writer, 0..total);
            (writer, ())
        })
        .await
        .unwrap();
        // Not reading: the channel fills and stays full past the grace time.
        tokio::time::sleep(GRACE * 4).await;
        let (mut delivered, mut skipped, mut gaps, mut last) = (0u64, 0u64, 0, None);
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the stream goes on")
                .expect("the stream is open")
                .entry
        };
        while delivered + skipped < total {
            match next().await {
                Followed::Line(line) => {
                    let n: u64 = line.text.trim_start_matches("line ").parse().unwrap();
                    assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
                    if gaps == 0 {
                        assert_eq!(n, delivered, "no line is lost before the gap");
                    }
                    delivered += 1;
                    last = Some(n);
                }
                Followed::Gap(gap) => {
                    assert!(!gap.uncounted, "{gap:?}");
                    gaps += 1;
                    skipped += gap.lines;
                }
            }
        }
        assert!(gaps > 0, "lines were passed over, so there is a gap");
        assert!(delivered >= QUEUE as u64, "the channel was filled first");
        assert_eq!(delivered + skipped, total);
        // Caught up: the newest lines come as they are written.
        write(&mut writer, total..total + 3);
        for n in total..total + 3 {
            match next().await {
                Followed::Line(line) => assert_eq!(line.text, format!("line {n}")),
                gap => panic!("{gap:?} instead of line {n}"),
            }
        }
    }
}
