//! The per-connection access log: records go through a bounded channel to a writer thread
//! (never blocking the proxy: a full channel counts a drop), into `access.log` rotated by size
//! (`access.log.1` … `.keep`), and to live subscribers. Reading it back (the last records,
//! then new ones as they come) is here too, beside the files.

use super::config::AccessLogConfig;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use strata_proto::v1::AccessOutcome;
use tokio::sync::{broadcast, mpsc};

/// Records waiting for the writer before new ones are dropped.
const QUEUE: usize = 8192;
/// Records a slow live subscriber may fall behind before it skips.
const LIVE_QUEUE: usize = 1024;
/// Records read ahead of a slow reader of [`AccessLog::tail`].
const TAIL_QUEUE: usize = 256;
const FILE_NAME: &str = "access.log";

/// How a proxied connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Both directions finished with an orderly close.
    Ok,
    /// Every connect attempt failed (the last one with an error).
    ConnectFailed,
    /// A side reset the connection or an I/O error ended it.
    Reset,
    /// Every connect attempt failed, the last one by timing out.
    Timeout,
    /// No instance was eligible: none available, all ejected or draining.
    NoHealthyInstance,
    /// Closed at the drain deadline of its endpoint.
    Drained,
    /// Waited in the service's queue until the queue timeout without getting an instance.
    QueueTimeout,
    /// No instance was free and the service's queue was full.
    QueueFull,
    /// Nothing moved either way for the service's idle timeout.
    IdleTimeout,
    /// The backend sent no first byte within the response timeout of the client's first byte.
    ResponseTimeout,
}

impl From<Outcome> for AccessOutcome {
    fn from(outcome: Outcome) -> AccessOutcome {
        match outcome {
            Outcome::Ok => AccessOutcome::Ok,
            Outcome::ConnectFailed => AccessOutcome::ConnectFailed,
            Outcome::Reset => AccessOutcome::Reset,
            Outcome::Timeout => AccessOutcome::Timeout,
            Outcome::NoHealthyInstance => AccessOutcome::NoHealthyInstance,
            Outcome::Drained => AccessOutcome::Drained,
            Outcome::QueueTimeout => AccessOutcome::QueueTimeout,
            Outcome::QueueFull => AccessOutcome::QueueFull,
            Outcome::IdleTimeout => AccessOutcome::IdleTimeout,
            Outcome::ResponseTimeout => AccessOutcome::ResponseTimeout,
        }
    }
}

/// One proxied client connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessRecord {
    /// RFC 3339 time the connection was accepted.
    pub time: String,
    pub service: String,
    pub port_name: String,
    /// Client address.
    pub client: String,
    /// Chosen instance and its node and address, when a connect succeeded or was attempted.
    pub instance: Option<String>,
    pub node: Option<String>,
    pub backend: Option<String>,
    /// Connect attempts made.
    pub attempts: u32,
    /// Bytes from the client to the backend.
    pub bytes_in: u64,
    /// Bytes from the backend to the client.
    pub bytes_out: u64,
    pub duration_ms: f64,
    pub outcome: Outcome,
}

/// The hot-path side of the access log.
#[derive(Debug)]
pub(crate) struct AccessLog {
    dir: Option<PathBuf>,
    queue: Option<mpsc::Sender<AccessRecord>>,
    live: broadcast::Sender<AccessRecord>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread when a directory is configured.
    pub fn start(config: Option<&AccessLogConfig>) -> io::Result<Self> {
        let (live, _) = broadcast::channel(LIVE_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let queue = match config {
            None => None,
            Some(config) => {
                fs::create_dir_all(&config.dir)?;
                let (tx, rx) = mpsc::channel(QUEUE);
                let writer = Writer::open(config.clone())?;
                std::thread::Builder::new()
                    .name("strata-access-log".into())
                    .spawn(move || writer.run(rx))?;
                Some(tx)
            }
        };
        Ok(Self {
            dir: config.map(|c| c.dir.clone()),
            queue,
            live,
            dropped,
        })
    }

    /// Hands a record over without waiting.
    pub fn record(&self, record: AccessRecord) {
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(record.clone());
        }
        if let Some(queue) = &self.queue
            && queue.try_send(record).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records from now on, as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<AccessRecord> {
        self.live.subscribe()
    }

    /// Records dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The last `lines` records in the log (only `service`'s when given), oldest first, and
    /// with `follow` every record after them as its connection ends, until the receiver is
    /// dropped. A follower that falls behind skips records rather than hold the proxy up.
    pub async fn tail(
        &self,
        service: Option<String>,
        lines: usize,
        follow: bool,
    ) -> io::Result<mpsc::Receiver<AccessRecord>> {
        let mut live = follow.then(|| self.subscribe());
        let past = match self.dir.clone() {
            Some(dir) => {
                let service = service.clone();
                tokio::task::spawn_blocking(move || {
                    read_access_log(&dir, service.as_deref(), lines)
                })
                .await
                .map_err(|e| io::Error::other(format!("the read did not finish: {e}")))??
            }
            None => Vec::new(),
        };
        let (tx, rx) = mpsc::channel(TAIL_QUEUE);
        tokio::spawn(async move {
            for record in past {
                if tx.send(record).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                match live.recv().await {
                    Ok(record) => {
                        if service.as_ref().is_some_and(|s| *s != record.service) {
                            continue;
                        }
                        if tx.send(record).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(rx)
    }
}

/// The writer thread's state: the open file and its size.
struct Writer {
    config: AccessLogConfig,
    file: BufWriter<File>,
    size: u64,
}

fn rotated(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{FILE_NAME}.{n}"))
}

impl Writer {
    fn open(config: AccessLogConfig) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.dir.join(FILE_NAME))?;
        let size = file.metadata()?.len();
        Ok(Self {
            config,
            file: BufWriter::new(file),
            size,
        })
    }

    fn run(mut self, mut rx: mpsc::Receiver<AccessRecord>) {
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            while let Some(record) = next {
                if let Err(error) = self.write(&record) {
                    tracing::warn!(%error, dir = %self.config.dir.display(), "access log write failed");
                }
                next = rx.try_recv().ok();
            }
            if let Err(error) = self.file.flush() {
                tracing::warn!(%error, dir = %self.config.dir.display(), "access log flush failed");
            }
        }
    }

    fn write(&mut self, record: &AccessRecord) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.config.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let dir = &self.config.dir;
        let current = dir.join(FILE_NAME);
        if self.config.keep == 0 {
            fs::remove_file(&current)?;
        } else {
            for n in (1..self.config.keep).rev() {
                match fs::rename(rotated(dir, n), rotated(dir, n + 1)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            fs::rename(&current, rotated(dir, 1))?;
        }
        *self = Self::open(self.config.clone())?;
        Ok(())
    }
}

/// The last `lines` records in the access log under `dir` (rotated files included), oldest
/// first, only those of `service` when given. Lines that do not parse (a torn last write)
/// are skipped.
pub(crate) fn read_access_log(
    dir: &Path,
    service: Option<&str>,
    lines: usize,
) -> io::Result<Vec<AccessRecord>> {
    let mut files = vec![dir.join(FILE_NAME)];
    while rotated(dir, files.len()).exists() {
        files.push(rotated(dir, files.len()));
    }
    let mut last = VecDeque::with_capacity(lines.min(QUEUE));
    for path in files.iter().rev() {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        for line in BufReader::new(file).lines() {
            let Ok(record) = serde_json::from_str::<AccessRecord>(&line?) else {
                continue;
            };
            if service.is_some_and(|s| s != record.service) || lines == 0 {
                continue;
            }
            if last.len() == lines {
                last.pop_front();
            }
            last.push_back(record);
        }
    }
    Ok(last.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_and_the_api_use_the_same_word_for_every_outcome() {
        use Outcome::*;
        for outcome in [
            Ok,
            ConnectFailed,
            Reset,
            Timeout,
            NoHealthyInstance,
            Drained,
            QueueTimeout,
            QueueFull,
            IdleTimeout,
            ResponseTimeout,
        ] {
            let word = serde_json::to_value(outcome).unwrap();
            assert_eq!(word, AccessOutcome::from(outcome).label(), "{outcome:?}");
        }
    }

    fn record(service: &str, n: u64) -> AccessRecord {
        AccessRecord {
            time: "2026-11-26T00:00:00.000Z".into(),
            service: service.into(),
            port_name: "http".into(),
            client: "127.0.0.1:5000".into(),
            instance: Some("web/1".into()),
            node: Some("n1".into()),
            backend: Some("127.0.0.1:8080".into()),
            attempts: 1,
            bytes_in: n,
            bytes_out: n,
            duration_ms: 1.0,
            outcome: Outcome::Ok,
        }
    }

    #[test]
    fn rotates_by_size_keeps_n_and_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = AccessLogConfig {
            dir: dir.path().into(),
            max_bytes: 1000,
            keep: 2,
        };
        let mut writer = Writer::open(config).unwrap();
        for n in 0..40 {
            writer
                .write(&record(if n % 2 == 0 { "a" } else { "b" }, n))
                .unwrap();
        }
        writer.file.flush().unwrap();
        assert!(rotated(dir.path(), 2).exists());
        assert!(!rotated(dir.path(), 3).exists());
        for n in 0..=2 {
            let path = if n == 0 {
                dir.path().join(FILE_NAME)
            } else {
                rotated(dir.path(), n)
            };
            assert!(fs::metadata(path).unwrap().len() <= 1000);
        }
        let all = read_access_log(dir.path(), None, 1000).unwrap();
        let seen: Vec<u64> = all.iter().map(|r| r.bytes_in).collect();
        assert_eq!(seen.last(), Some(&39));
        assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
        assert!(seen.len() < 40, "older records were rotated away");
        let b = read_access_log(dir.path(), Some("b"), 3).unwrap();
        assert_eq!(
            b.iter().map(|r| r.bytes_in).collect::<Vec<_>>(),
            [35, 37, 39]
        );
    }

    #[test]
    fn reading_a_missing_log_gives_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_access_log(dir.path(), None, 10).unwrap().is_empty());
    }
}
