//! Reading the per-instance logs that shims write: parse lines, tail and search the current
//! and rotated files, and follow new lines across rotations.
//!
//! The shim writes `DIR/output.log` with lines `<RFC3339 UTC ms> <out|err> <text>` and rotates
//! it to `output.log.1` (newest) ... `output.log.K` (oldest); the line format is
//! [`strata_shim::logline`], the writer [`strata_shim::logfile`].

use regex::Regex;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use strata_shim::launch::LOG_FILE;
use strata_shim::logline::parse_bytes;
/// The lines read back are the shim's own type: one definition of the line format.
pub use strata_shim::logline::{LogLine, LogStream};

/// Bytes read from a log file at a time.
const CHUNK: usize = 64 * 1024;
/// Longest line kept whole when reading; the shim never writes longer ones.
const MAX_LINE: usize = 64 * 1024;

/// Why a log request was rejected.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter pattern is not a valid regular expression.
    #[error("invalid log filter {pattern:?}: {source}")]
    BadFilter {
        /// The pattern as given.
        pattern: String,
        /// What the regex parser objected to.
        #[source]
        source: regex::Error,
    },
}

/// Which lines a tail, search or follow returns: a regular expression on the text, and
/// optionally one stream only.
#[derive(Debug, Clone)]
pub struct LineFilter {
    regex: Regex,
    stream: Option<LogStream>,
}

impl LineFilter {
    /// A filter matching lines whose text matches `pattern` (regex syntax, unanchored).
    pub fn new(pattern: &str) -> Result<Self, LogError> {
        let regex = Regex::new(pattern).map_err(|source| LogError::BadFilter {
            pattern: pattern.to_string(),
            source,
        })?;
        Ok(Self {
            regex,
            stream: None,
        })
    }

    /// Narrows the filter to lines of one stream.
    pub fn stream(mut self, stream: LogStream) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Whether `line` passes the filter.
    pub fn matches(&self, line: &LogLine) -> bool {
        self.stream.is_none_or(|s| s == line.stream) && self.regex.is_match(&line.text)
    }
}

fn passes(filter: Option<&LineFilter>, line: &LogLine) -> bool {
    filter.is_none_or(|f| f.matches(line))
}

/// The last `lines` lines of the log in `log_dir` that pass `filter`, oldest first, across the
/// current and all rotated files. Reads files backwards in chunks, newest first, and stops as
/// soon as it has enough, so memory stays bounded by the answer. With a filter this is the
/// log search.
pub fn tail(log_dir: &Path, lines: usize, filter: Option<&LineFilter>) -> io::Result<Vec<LogLine>> {
    let current = match File::open(log_dir.join(LOG_FILE)) {
        Ok(file) => {
            let end = file.metadata()?.len();
            Some((file, end))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    tail_upto(log_dir, current.as_ref(), lines, filter)
}

/// [`tail`], reading the current file only up to `current.1` and skipping a rotated file that
/// is the current file itself (it was rotated meanwhile).
fn tail_upto(
    log_dir: &Path,
    current: Option<&(File, u64)>,
    lines: usize,
    filter: Option<&LineFilter>,
) -> io::Result<Vec<LogLine>> {
    let mut found = Vec::new();
    if lines == 0 {
        return Ok(found);
    }
    let mut current_ino = None;
    if let Some((file, end)) = current {
        current_ino = Some(file.metadata()?.ino());
        scan_backwards(file, *end, lines, filter, &mut found)?;
    }
    for (_, path) in rotated_files(log_dir)? {
        if found.len() >= lines {
            break;
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if Some(meta.ino()) == current_ino {
            continue;
        }
        scan_backwards(&file, meta.len(), lines, filter, &mut found)?;
    }
    found.reverse();
    Ok(found)
}

/// Rotated files `output.log.N` in `log_dir`, newest (lowest N) first.
fn rotated_files(log_dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let prefix = format!("{LOG_FILE}.");
    let mut files = Vec::new();
    let entries = match fs::read_dir(log_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        files.push((n, entry.path()));
    }
    files.sort_by_key(|(n, _)| *n);
    Ok(files)
}

/// Pushes the lines of `file[..end]` that pass `filter` onto `found`, newest first, until
/// `found` has `limit` lines.
fn scan_backwards(
    file: &File,
    end: u64,
    limit: usize,
    filter: Option<&LineFilter>,
    found: &mut Vec<LogLine>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    // The end of a line whose start lies in an earlier chunk (capped at MAX_LINE bytes).
    let mut carry: Vec<u8> = Vec::new();
    let mut at_end = true;
    let mut pos = end;
    let push = |line: &[u8], found: &mut Vec<LogLine>| {
        let line = parse_bytes(line);
        if passes(filter, &line) {
            found.push(line);
        }
    };
    while pos > 0 && found.len() < limit {
        let len = CHUNK.min(usize::try_from(pos).unwrap_or(CHUNK));
        pos -= len as u64;
        file.read_exact_at(&mut buf[..len], pos)?;
        let mut chunk = &buf[..len];
        while let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            let after = &chunk[i + 1..];
            // The empty "line" after the file's final newline is not a line.
            if !(at_end && after.is_empty() && carry.is_empty()) {
                if carry.is_empty() {
                    push(after, found);
                } else {
                    let mut line = after.to_vec();
                    line.extend_from_slice(&carry);
                    carry.clear();
                    push(&line, found);
                }
                if found.len() >= limit {
                    return Ok(());
                }
            }
            at_end = false;
            chunk = &chunk[..i];
        }
        if !chunk.is_empty() && carry.len() < MAX_LINE {
            let room = MAX_LINE - carry.len();
            let keep = &chunk[chunk.len().saturating_sub(room)..];
            carry.splice(0..0, keep.iter().copied());
        }
        at_end = at_end && chunk.is_empty();
    }
    if pos == 0 && !carry.is_empty() && found.len() < limit {
        push(&carry, found);
    }
    Ok(())
}

/// Follows an instance's log: each [`Follower::poll_new`] returns the lines appended since the
/// last call, continuing across rotations (the rest of the rotated file is read before the
/// next one) without losing or repeating lines. Meant to be polled every 100-200 ms, e.g.
/// from `spawn_blocking` or a timer.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    dir: PathBuf,
    file: Option<File>,
    ino: u64,
    offset: u64,
    partial: Vec<u8>,
    filter: Option<LineFilter>,
}

impl Follower {
    /// A follower starting after the last complete line of the current log (or at the start
    /// of the log once it appears).
    pub fn new(log_dir: &Path, filter: Option<LineFilter>) -> io::Result<Self> {
        let path = log_dir.join(LOG_FILE);
        let mut follower = Self {
            dir: log_dir.to_path_buf(),
            path,
            file: None,
            ino: 0,
            offset: 0,
            partial: Vec::new(),
            filter,
        };
        match File::open(&follower.path) {
            Ok(file) => {
                let meta = file.metadata()?;
                follower.offset = end_of_last_line(&file, meta.len())?;
                follower.ino = meta.ino();
                follower.file = Some(file);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(follower)
    }

    /// The last `lines` lines passing `filter` (like [`tail`]) and a follower that continues
    /// exactly after them, so nothing is missed or repeated between the two.
    pub fn tail_and_follow(
        log_dir: &Path,
        lines: usize,
        filter: Option<LineFilter>,
    ) -> io::Result<(Vec<LogLine>, Self)> {
        let follower = Self::new(log_dir, filter)?;
        let current = match &follower.file {
            Some(file) => Some((file.try_clone()?, follower.offset)),
            None => None,
        };
        let tail = tail_upto(log_dir, current.as_ref(), lines, follower.filter.as_ref())?;
        Ok((tail, follower))
    }

    /// The complete lines appended since the last call, oldest first.
    pub fn poll_new(&mut self) -> io::Result<Vec<LogLine>> {
        let mut out = Vec::new();
        // Each pass moves to a newer file, so this ends; the bound guards against a writer
        // that rotates faster than we can read.
        for _ in 0..64 {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(file) => self.switch_to(file)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
            self.read_available(&mut out)?;
            match fs::metadata(&self.path) {
                Ok(meta) if meta.ino() == self.ino => {
                    if meta.len() < self.offset {
                        // Truncated in place: start over at its beginning.
                        self.offset = 0;
                        self.partial.clear();
                        continue;
                    }
                    return Ok(out);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // Rotated: the writer has moved on, so what is in our file now is all there is.
            self.read_available(&mut out)?;
            match self.successor()? {
                Some(file) => {
                    if !self.partial.is_empty() {
                        let line = parse_bytes(&std::mem::take(&mut self.partial));
                        self.keep(line, &mut out);
                    }
                    self.switch_to(file)?;
                }
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    fn switch_to(&mut self, file: File) -> io::Result<()> {
        self.ino = file.metadata()?.ino();
        self.file = Some(file);
        self.offset = 0;
        Ok(())
    }

    fn keep(&self, line: LogLine, out: &mut Vec<LogLine>) {
        if passes(self.filter.as_ref(), &line) {
            out.push(line);
        }
    }

    /// Reads our file from the offset to its end, emitting complete lines.
    fn read_available(&mut self, out: &mut Vec<LogLine>) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Ok(());
        };
        let result = self.read_from(&file, out);
        self.file = Some(file);
        result
    }

    fn read_from(&mut self, file: &File, out: &mut Vec<LogLine>) -> io::Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match file.read_at(&mut buf, self.offset) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            self.offset += n as u64;
            let mut data = &buf[..n];
            while let Some(i) = data.iter().position(|&b| b == b'\n') {
                let line = if self.partial.is_empty() {
                    parse_bytes(&data[..i])
                } else {
                    self.partial.extend_from_slice(&data[..i]);
                    parse_bytes(&std::mem::take(&mut self.partial))
                };
                self.keep(line, out);
                data = &data[i + 1..];
            }
            self.partial.extend_from_slice(data);
            if self.partial.len() > MAX_LINE {
                let line = parse_bytes(&std::mem::take(&mut self.partial));
                self.keep(line, out);
            }
        }
    }

    /// The file written after ours: the next newer of `output.log.K` ... `output.log.1`,
    /// `output.log`; the oldest one when ours is gone (rotated off the end). None while the
    /// writer has not created it yet.
    fn successor(&self) -> io::Result<Option<File>> {
        for attempt in 0..8 {
            let mut chain: Vec<PathBuf> = rotated_files(&self.dir)?
                .into_iter()
                .rev()
                .map(|(_, p)| p)
                .collect();
            chain.push(self.path.clone());
            let mut inodes = Vec::with_capacity(chain.len());
            for path in &chain {
                inodes.push(fs::metadata(path).ok().map(|m| m.ino()));
            }
            let start = match inodes.iter().position(|i| *i == Some(self.ino)) {
                Some(ours) => ours + 1,
                // Perhaps renamed while we looked: look again before assuming it is gone.
                None if attempt < 2 => continue,
                None => 0,
            };
            let Some(next) = (start..chain.len()).find(|&i| inodes[i].is_some()) else {
                return Ok(None);
            };
            if start > 0 && next != start {
                // The next file is missing: a rotation is half done; look again later.
                return Ok(None);
            }
            match File::open(&chain[next]) {
                Ok(file) if Some(file.metadata()?.ino()) == inodes[next] => return Ok(Some(file)),
                // Renamed between the look and the open: look again.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// The offset just after the last newline in `file[..len]` (0 when there is none).
fn end_of_last_line(file: &File, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = len;
    while pos > 0 {
        let n = CHUNK.min(usize::try_from(pos).unwrap_or(CHUNK));
        pos -= n as u64;
        file.read_exact_at(&mut buf[..n], pos)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
        if len - pos > MAX_LINE as u64 {
            return Ok(len);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;
    use strata_shim::logfile::LogWriter;

    const T: &str = "2026-11-26T05:46:02.123Z";

    fn numbers(lines: &[LogLine]) -> Vec<usize> {
        lines
            .iter()
            .map(|l| l.text.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    fn write_numbered(writer: &mut LogWriter, range: std::ops::Range<usize>) {
        for i in range {
            let stream = if i % 3 == 0 {
                LogStream::Err
            } else {
                LogStream::Out
            };
            writer.write_line(stream, format!("line {i}").as_bytes());
        }
    }

    #[test]
    fn tail_returns_the_last_matching_lines_oldest_first_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::new(dir.path(), 4096, 5);
        write_numbered(&mut writer, 0..600);
        assert!(dir.path().join("output.log.3").exists());
        assert_eq!(
            numbers(&tail(dir.path(), 3, None).unwrap()),
            vec![597, 598, 599]
        );

        // Lines ending in 7 and on stderr: spread over several files.
        let filter = LineFilter::new("7$").unwrap().stream(LogStream::Err);
        let found = tail(dir.path(), 8, Some(&filter)).unwrap();
        let expected: Vec<usize> = (0..600).filter(|i| i % 10 == 7 && i % 3 == 0).collect();
        assert_eq!(numbers(&found), expected[expected.len() - 8..].to_vec());

        // Everything kept, in order, with no line lost at chunk or file boundaries.
        let all = numbers(&tail(dir.path(), usize::MAX, None).unwrap());
        let first = all[0];
        assert_eq!(all, (first..600).collect::<Vec<_>>());
        assert!(tail(dir.path(), 0, None).unwrap().is_empty());
        assert!(LineFilter::new("(").is_err());
    }

    #[test]
    fn tail_reads_big_files_in_chunks_and_keeps_malformed_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = File::create(dir.path().join(LOG_FILE)).unwrap();
        let long = "x".repeat(3 * CHUNK / 2);
        writeln!(file, "garbage first").unwrap();
        for i in 0..20_000 {
            writeln!(file, "{T} out line {i}").unwrap();
        }
        writeln!(file, "{T} err {long}").unwrap();
        write!(file, "{T} out partial").unwrap();
        drop(file);
        let last = tail(dir.path(), 3, None).unwrap();
        assert_eq!(last[0].text, "line 19999");
        assert_eq!(last[1].text, long);
        assert_eq!(last[1].stream, LogStream::Err);
        assert_eq!(last[2].text, "partial");
        let all = tail(dir.path(), usize::MAX, None).unwrap();
        assert_eq!(all.len(), 20_003);
        assert_eq!(all[0].text, "garbage first");
        assert_eq!(all[0].time_unix_ms, 0);
        assert!(
            tail(&dir.path().join("missing"), 5, None)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn follower_sees_every_line_once_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::new(dir.path(), 4096, 3);
        write_numbered(&mut writer, 0..50);
        let mut follower = Follower::new(dir.path(), None).unwrap();
        let total = 6000;
        let writing = std::thread::spawn(move || {
            for chunk in 0..total / 20 {
                write_numbered(&mut writer, 50 + chunk * 20..50 + (chunk + 1) * 20);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let mut seen = Vec::new();
        while seen.len() < total {
            seen.extend(numbers(&follower.poll_new().unwrap()));
            if writing.is_finished() && seen.len() < total {
                seen.extend(numbers(&follower.poll_new().unwrap()));
                break;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        writing.join().unwrap();
        assert_eq!(seen, (50..50 + total).collect::<Vec<_>>());
        assert!(follower.poll_new().unwrap().is_empty());
    }

    #[test]
    fn tail_and_follow_neither_repeat_nor_miss_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let mut file = File::create(&path).unwrap();
        for i in 0..10 {
            writeln!(file, "{T} out line {i}").unwrap();
        }
        // A line being written: the follower, not the tail, delivers it once complete.
        write!(file, "{T} out line 1").unwrap();
        let (tail, mut follower) = Follower::tail_and_follow(dir.path(), 3, None).unwrap();
        assert_eq!(numbers(&tail), vec![7, 8, 9]);
        assert!(follower.poll_new().unwrap().is_empty());
        writeln!(file, "0").unwrap();
        writeln!(file, "{T} out line 11").unwrap();
        assert_eq!(numbers(&follower.poll_new().unwrap()), vec![10, 11]);

        // Truncated in place (copytruncate): start again at the beginning.
        file.set_len(0).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "{T} out line 12").unwrap();
        assert_eq!(numbers(&follower.poll_new().unwrap()), vec![12]);
    }

    #[test]
    fn follower_waits_for_the_log_to_appear_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let filter = LineFilter::new("^line [0-9]*5$").unwrap();
        let mut follower = Follower::new(dir.path(), Some(filter)).unwrap();
        assert!(follower.poll_new().unwrap().is_empty());
        let mut writer = LogWriter::new(dir.path(), 1 << 20, 1);
        write_numbered(&mut writer, 0..30);
        assert_eq!(numbers(&follower.poll_new().unwrap()), vec![5, 15, 25]);
    }
}
