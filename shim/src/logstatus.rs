//! How a shim tells the agent that log lines are being dropped (a full or failing log disk),
//! and how the agent turns that into events.
//!
//! The shim keeps `log-status` in the instance directory: one fixed-size text record,
//! `<dropping 0|1> <lines dropped since start> <reason>`, padded with spaces. The file is
//! written in full once when the shim starts and then only overwritten in place, at the
//! same size, so updating it needs no new disk space: it works on a full disk too. The
//! agent polls it while the instance runs (also after re-adopting a shim), so the report
//! needs no connection that an agent restart would break.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// File name of the log status inside an instance directory.
pub const LOG_STATUS_FILE: &str = "log-status";
/// Size of the record; the reason is cut to fit.
const RECORD_BYTES: usize = 256;
/// While lines are being dropped, the count is rewritten at most this often.
const COUNT_INTERVAL: Duration = Duration::from_secs(1);

/// What the shim reports about its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStatus {
    /// Writing the log fails right now: lines are being dropped.
    pub dropping: bool,
    /// Lines dropped since the shim started.
    pub dropped_total: u64,
    /// The last write error.
    pub reason: String,
}

impl LogStatus {
    /// The fixed-size record: the fields, spaces up to the size, and a newline.
    fn encode(&self) -> [u8; RECORD_BYTES] {
        let mut record = [b' '; RECORD_BYTES];
        let reason: String = self
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let text = format!(
            "{} {} {reason}",
            u8::from(self.dropping),
            self.dropped_total
        );
        let mut len = text.len().min(RECORD_BYTES - 1);
        while !text.is_char_boundary(len) {
            len -= 1;
        }
        record[..len].copy_from_slice(&text.as_bytes()[..len]);
        record[RECORD_BYTES - 1] = b'\n';
        record
    }

    /// Parses a record; `None` for anything else (a torn or foreign file).
    pub fn decode(bytes: &[u8]) -> Option<LogStatus> {
        if bytes.len() != RECORD_BYTES || bytes.last() != Some(&b'\n') {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let mut fields = text.trim_end().splitn(3, ' ');
        let dropping = match fields.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let dropped_total = fields.next()?.parse().ok()?;
        Some(LogStatus {
            dropping,
            dropped_total,
            reason: fields.next().unwrap_or("").trim().to_string(),
        })
    }

    /// Reads the status a shim keeps in `instance_dir`; `None` when there is none (a shim
    /// from before this file existed) or it cannot be read right now.
    pub fn read(instance_dir: &Path) -> Option<LogStatus> {
        let bytes = std::fs::read(instance_dir.join(LOG_STATUS_FILE)).ok()?;
        LogStatus::decode(&bytes)
    }
}

/// The shim's side: keeps the status file current, rewriting it when dropping starts or
/// stops, and at most once a second while the count grows.
#[derive(Debug)]
pub struct LogStatusFile {
    file: File,
    written: LogStatus,
    written_at: Instant,
}

impl LogStatusFile {
    /// Creates (or resets) the status file in `instance_dir`, taking its full size now.
    pub fn create(instance_dir: &Path) -> io::Result<LogStatusFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(instance_dir.join(LOG_STATUS_FILE))?;
        let written = LogStatus::default();
        file.write_all_at(&written.encode(), 0)?;
        Ok(LogStatusFile {
            file,
            written,
            written_at: Instant::now(),
        })
    }

    /// Records `status` if it differs in a way the agent should learn of now.
    pub fn update(&mut self, status: &LogStatus) {
        let flipped = status.dropping != self.written.dropping;
        let counted = status.dropped_total != self.written.dropped_total
            && self.written_at.elapsed() >= COUNT_INTERVAL;
        if !(flipped || counted) {
            return;
        }
        // In place and the same size: no new blocks, so this works on a full disk. A
        // failure is retried with the next change.
        if self.file.write_all_at(&status.encode(), 0).is_ok() {
            self.written = status.clone();
            self.written_at = Instant::now();
        }
    }
}

/// A change of an instance's logging the agent records as an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// Log lines are being dropped; `dropped` so far in this episode.
    Dropping { dropped: u64, reason: String },
    /// Writing works again after `dropped` lines were lost.
    Resumed { dropped: u64 },
}

/// The agent's side: what it last saw of one shim's status.
#[derive(Debug, Clone, Default)]
pub struct LogWatch {
    seen: LogStatus,
    /// The total when the current episode of dropping began.
    episode_start: u64,
}

impl LogWatch {
    /// Compares a fresh status with the last one; returns the events to record, in order.
    pub fn observe(&mut self, now: LogStatus) -> Vec<LogEvent> {
        let mut events = Vec::new();
        // A shim started anew under the same watch counts from zero again.
        let before = if now.dropped_total < self.seen.dropped_total {
            0
        } else {
            self.seen.dropped_total
        };
        let mut in_episode = self.seen.dropping;
        if !in_episode && (now.dropping || now.dropped_total > before) {
            self.episode_start = before;
            in_episode = true;
            events.push(LogEvent::Dropping {
                dropped: now.dropped_total - before,
                reason: now.reason.clone(),
            });
        }
        if in_episode && !now.dropping {
            events.push(LogEvent::Resumed {
                dropped: now.dropped_total.saturating_sub(self.episode_start),
            });
        }
        self.seen = now;
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(dropping: bool, dropped_total: u64) -> LogStatus {
        LogStatus {
            dropping,
            dropped_total,
            reason: if dropping {
                "No space left on device (os error 28)".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn records_round_trip_at_a_fixed_size() {
        let s = status(true, 12345);
        let bytes = s.encode();
        assert_eq!(bytes.len(), RECORD_BYTES);
        assert_eq!(LogStatus::decode(&bytes), Some(s));
        let long = LogStatus {
            dropping: false,
            dropped_total: 7,
            reason: "é\nx".repeat(300),
        };
        let decoded = LogStatus::decode(&long.encode()).unwrap();
        assert_eq!(decoded.dropped_total, 7);
        assert!(!decoded.reason.contains('\n'));
        assert_eq!(LogStatus::decode(b"1 2 torn"), None);
        assert_eq!(LogStatus::decode(&[b' '; RECORD_BYTES]), None);
    }

    #[test]
    fn the_watch_reports_an_episode_once_and_its_end_with_the_count() {
        let mut watch = LogWatch::default();
        assert_eq!(watch.observe(status(false, 0)), vec![]);
        assert_eq!(
            watch.observe(status(true, 3)),
            vec![LogEvent::Dropping {
                dropped: 3,
                reason: "No space left on device (os error 28)".into()
            }]
        );
        assert_eq!(watch.observe(status(true, 50)), vec![]);
        assert_eq!(
            watch.observe(status(false, 60)),
            vec![LogEvent::Resumed { dropped: 60 }]
        );
        assert_eq!(watch.observe(status(false, 60)), vec![]);
        // A short episode between two polls is still reported, then closed.
        assert_eq!(
            watch.observe(status(false, 64)),
            vec![
                LogEvent::Dropping {
                    dropped: 4,
                    reason: String::new()
                },
                LogEvent::Resumed { dropped: 4 }
            ]
        );
    }

    #[test]
    fn the_status_file_is_updated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = LogStatusFile::create(dir.path()).unwrap();
        assert_eq!(LogStatus::read(dir.path()), Some(LogStatus::default()));
        file.update(&status(true, 1));
        assert_eq!(LogStatus::read(dir.path()), Some(status(true, 1)));
        // The count alone is rewritten at most once a second.
        file.update(&status(true, 2));
        assert_eq!(LogStatus::read(dir.path()).unwrap().dropped_total, 1);
        file.update(&status(false, 2));
        assert_eq!(LogStatus::read(dir.path()), Some(status(false, 2)));
        let len = std::fs::metadata(dir.path().join(LOG_STATUS_FILE))
            .unwrap()
            .len();
        assert_eq!(len, RECORD_BYTES as u64);
    }
}
