//! The shim's side of the instance log: output split into lines, written with a time and
//! stream tag to `output.log`, rotated by size, and never a reason for the shim to stop.
//!
//! Each line is encoded as [`crate::logline`] describes; the agent's supervisor reads the
//! files back with the same module.

use crate::launch::LOG_FILE;
use crate::logline::{self, LogStream};
use crate::logstatus::LogStatus;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Longest line text kept in one log line; longer output is split into several lines.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Cuts a byte stream into lines of at most [`MAX_LINE_BYTES`], keeping an unfinished
/// line until its end arrives (or the stream ends).
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`; calls `emit` with each complete line, without its newline.
    pub fn feed(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            let room = MAX_LINE_BYTES - self.pending.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.pending.is_empty() {
                        emit(&window[..i]);
                    } else {
                        self.pending.extend_from_slice(&window[..i]);
                        emit(&self.pending);
                        self.pending.clear();
                    }
                    data = &data[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    data = &data[window.len()..];
                    if self.pending.len() == MAX_LINE_BYTES {
                        emit(&self.pending);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    /// Ends the stream: emits the unfinished last line, if any.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.pending.is_empty() {
            emit(&self.pending);
            self.pending.clear();
        }
    }
}

/// Appends formatted lines to `output.log` in one directory and rotates it by size.
///
/// A failed write (a full disk, a removed directory) drops the line and is counted; the next
/// line (or [`LogWriter::retry`]) tries again, and the first write that works is preceded by
/// one `[strata] N log lines dropped: REASON` line on the err stream. [`LogWriter::status`]
/// says whether lines are being dropped, for the agent.
#[derive(Debug)]
pub struct LogWriter {
    dir: PathBuf,
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    dropped: u64,
    dropped_total: u64,
    drop_reason: String,
    buf: Vec<u8>,
}

impl LogWriter {
    /// A writer for `dir/output.log`; the file is opened on the first line.
    pub fn new(dir: &Path, max_bytes: u64, keep: u32) -> Self {
        Self {
            dir: dir.to_path_buf(),
            path: dir.join(LOG_FILE),
            max_bytes,
            keep,
            file: None,
            size: 0,
            dropped: 0,
            dropped_total: 0,
            drop_reason: String::new(),
            buf: Vec::with_capacity(256),
        }
    }

    /// Rotates by these settings from the next line on; files beyond `keep` go at the next
    /// rotation.
    pub fn set_rotation(&mut self, max_bytes: u64, keep: u32) {
        self.max_bytes = max_bytes;
        self.keep = keep;
    }

    /// Writes one line of `stream`, stamped with the current time.
    pub fn write_line(&mut self, stream: LogStream, text: &[u8]) {
        let now = SystemTime::now();
        if !self.report_dropped(now) {
            self.dropped += 1;
            self.dropped_total += 1;
            return;
        }
        if let Err(e) = self.emit(now, stream, text) {
            self.note_drop(&e);
        }
    }

    /// Lines dropped since the last successful write.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Tries once more to record dropped lines: while lines are being dropped, the shim calls
    /// this now and then, so that logging resumes even when the service is quiet.
    pub fn retry(&mut self) {
        self.report_dropped(SystemTime::now());
    }

    /// Tries once more to record dropped lines; for the end of the stream.
    pub fn finish(&mut self) {
        self.retry();
    }

    /// Whether lines are being dropped, how many were since the start, and why.
    pub fn status(&self) -> LogStatus {
        LogStatus {
            dropping: self.dropped > 0,
            dropped_total: self.dropped_total,
            reason: self.drop_reason.clone(),
        }
    }

    /// Writes the dropped-lines notice when lines were dropped; false if it could not.
    fn report_dropped(&mut self, now: SystemTime) -> bool {
        if self.dropped == 0 {
            return true;
        }
        let notice = format!(
            "[strata] {} log lines dropped: {}",
            self.dropped, self.drop_reason
        );
        match self.emit(now, LogStream::Err, notice.as_bytes()) {
            Ok(()) => {
                self.dropped = 0;
                true
            }
            Err(e) => {
                self.drop_reason = e.to_string();
                false
            }
        }
    }

    fn note_drop(&mut self, e: &io::Error) {
        self.dropped += 1;
        self.dropped_total += 1;
        self.drop_reason = e.to_string();
    }

    fn emit(&mut self, now: SystemTime, stream: LogStream, text: &[u8]) -> io::Result<()> {
        self.buf.clear();
        logline::encode(&mut self.buf, now, stream, text);
        self.append()
    }

    fn append(&mut self) -> io::Result<()> {
        let len = self.buf.len() as u64;
        self.ensure_open()?;
        if self.size > 0 && self.size + len > self.max_bytes {
            // A failed rotation leaves the current file in place; writing goes on there.
            let _ = self.rotate();
            self.ensure_open()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open"));
        };
        match file.write_all(&self.buf) {
            Ok(()) => {
                self.size += len;
                Ok(())
            }
            Err(e) => {
                // Cut a partly written line so the next line starts on a line of its own.
                let _ = file.set_len(self.size);
                self.file = None;
                Err(e)
            }
        }
    }

    fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        let file = match open_append(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir)?;
                open_append(&self.path)?
            }
            other => other?,
        };
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// output.log.(keep-1) -> .keep, ..., output.log -> .1; older files are deleted.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let mut extra = self.keep + 1;
        loop {
            match fs::remove_file(rotated_path(&self.path, extra)) {
                Ok(()) => extra += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            }
        }
        if self.keep == 0 {
            return fs::remove_file(&self.path);
        }
        for i in (1..self.keep).rev() {
            match fs::rename(rotated_path(&self.path, i), rotated_path(&self.path, i + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, rotated_path(&self.path, 1))
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The path of rotated file number `n` of `current` (`output.log.N`).
pub fn rotated_path(current: &Path, n: u32) -> PathBuf {
    let mut name = current.as_os_str().to_os_string();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::default();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, |l| lines.push(l.to_vec()));
        }
        splitter.finish(|l| lines.push(l.to_vec()));
        lines
    }

    #[test]
    fn splits_lines_across_chunks_and_keeps_the_partial_last_line() {
        let lines = split(&[b"hel", b"lo\nwor", b"ld\n\nlast"]);
        assert_eq!(
            lines,
            vec![
                b"hello".to_vec(),
                b"world".to_vec(),
                Vec::new(),
                b"last".to_vec()
            ]
        );
    }

    #[test]
    fn splits_overlong_lines() {
        let long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        let mut data = long.clone();
        data.push(b'\n');
        let lines = split(&[&data[..100], &data[100..]]);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), MAX_LINE_BYTES);
        assert_eq!(lines[1].len(), MAX_LINE_BYTES);
        assert_eq!(lines[2].len(), 10);
        assert_eq!(lines.concat(), long);
    }

    #[test]
    fn rotation_keeps_the_newest_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::new(dir.path(), 4096, 3);
        for i in 0..2000 {
            writer.write_line(LogStream::Out, format!("line {i}").as_bytes());
        }
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec!["output.log", "output.log.1", "output.log.2", "output.log.3"]
        );
        for name in &names {
            let text = fs::read_to_string(dir.path().join(name)).unwrap();
            assert!(text.len() <= 4096, "{name} has {} bytes", text.len());
            assert!(text.ends_with('\n'));
        }
        let last = fs::read_to_string(dir.path().join("output.log")).unwrap();
        assert!(last.trim_end().ends_with(" out line 1999"), "{last}");
    }

    #[test]
    fn dropped_lines_are_reported_once_writing_works_again() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        // A plain file where the log directory should be makes every write fail.
        fs::write(&logs, b"").unwrap();
        let mut writer = LogWriter::new(&logs, 1 << 20, 2);
        writer.write_line(LogStream::Out, b"lost 1");
        writer.write_line(LogStream::Err, b"lost 2");
        assert_eq!(writer.dropped(), 2);
        fs::remove_file(&logs).unwrap();
        writer.write_line(LogStream::Out, b"kept");
        assert_eq!(writer.dropped(), 0);
        let text = fs::read_to_string(logs.join(LOG_FILE)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(" err [strata] 2 log lines dropped: "),
            "{}",
            lines[0]
        );
        assert!(lines[1].ends_with(" out kept"));
    }
}
