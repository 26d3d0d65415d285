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

/// Lines a follower passed over instead of delivering: it fell behind its reader (the lines
/// were read and counted, but the reader could not take them in time), or the files holding
/// them were rotated away and deleted before it could read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gap {
    /// Lines passed over that were counted (only those passing the follower's filter).
    pub lines: u64,
    /// Whether more were lost uncounted: rotated files deleted before they could be read.
    pub uncounted: bool,
}

impl Gap {
    /// Whether anything was passed over.
    pub fn is_empty(&self) -> bool {
        self.lines == 0 && !self.uncounted
    }

    /// Adds `other` to this gap.
    pub fn merge(&mut self, other: Gap) {
        self.lines += other.lines;
        self.uncounted |= other.uncounted;
    }
}

/// What a follower delivers, in log order: lines, and gaps where lines were passed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// A line of the log.
    Line(LogLine),
    /// Lines passed over at this point of the log.
    Gap(Gap),
}

/// How a follower treats the next chunk: hand its lines out, or only count them because
/// the reader is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lines are handed out (after any gap still pending).
    Deliver,
    /// Lines are counted into the pending gap: the reader cannot take them.
    Skip,
}

/// Follows an instance's log in bounded memory: each [`Follower::read_chunk`] reads at most
/// one chunk ([`CHUNK`] bytes) of what was appended, continuing across rotations (a file
/// renamed away is read to its end through the open descriptor, even once deleted, before
/// the next one) without losing or repeating lines. Lines it passes over, because its reader
/// is behind or because rotated files were deleted before it got to them, come out as one
/// [`Followed::Gap`] where they were.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    dir: PathBuf,
    reading: Option<Reading>,
    filter: Option<LineFilter>,
    pending: Gap,
    buf: Vec<u8>,
}

/// The file a follower reads and where it is in it.
#[derive(Debug)]
struct Reading {
    file: File,
    ino: u64,
    offset: u64,
    /// The start of a line whose end has not been read yet (capped at [`MAX_LINE`]).
    partial: Vec<u8>,
    /// The file the writer moved on to after this one, held open once seen: if both are
    /// deleted before this one is finished, reading still goes on there without a loss (an
    /// inode number alone could be reused by a newer file).
    next: Option<File>,
    /// Whether the writer has moved on from this file (seen rotated).
    rotated: bool,
}

impl Reading {
    fn new(file: File, offset: u64) -> io::Result<Self> {
        Ok(Self {
            ino: file.metadata()?.ino(),
            file,
            offset,
            partial: Vec::new(),
            next: None,
            rotated: false,
        })
    }
}

/// The files of a log, oldest first, each with its inode when it exists.
type Chain = Vec<(PathBuf, Option<u64>)>;

/// What a look at the log directory found for the file being read.
enum Successor {
    /// The file written after ours, opened.
    Next(File),
    /// The writer has not moved on yet, or a rotation is half done: look again later.
    NotYet,
}

impl Follower {
    /// A follower starting after the last complete line of the current log (or at the start
    /// of the log once it appears).
    pub fn new(log_dir: &Path, filter: Option<LineFilter>) -> io::Result<Self> {
        let path = log_dir.join(LOG_FILE);
        let reading = match File::open(&path) {
            Ok(file) => {
                let end = end_of_last_line(&file, file.metadata()?.len())?;
                Some(Reading::new(file, end)?)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: log_dir.to_path_buf(),
            path,
            reading,
            filter,
            pending: Gap::default(),
            buf: Vec::new(),
        })
    }

    /// The last `lines` lines passing `filter` (like [`tail`]) and a follower that continues
    /// exactly after them, so nothing is missed or repeated between the two.
    pub fn tail_and_follow(
        log_dir: &Path,
        lines: usize,
        filter: Option<LineFilter>,
    ) -> io::Result<(Vec<LogLine>, Self)> {
        let follower = Self::new(log_dir, filter)?;
        let current = match &follower.reading {
            Some(r) => Some((r.file.try_clone()?, r.offset)),
            None => None,
        };
        let tail = tail_upto(log_dir, current.as_ref(), lines, follower.filter.as_ref())?;
        Ok((tail, follower))
    }

    /// Whether the follower is at least one rotation behind the writer: the file it reads is
    /// no longer the one written to. Such a follower risks losing files to rotation, so its
    /// caller skips sooner.
    pub fn lagging(&self) -> bool {
        self.reading.as_ref().is_some_and(|r| r.rotated)
    }

    /// Counts lines the caller could not deliver (it took them from `out` but its reader was
    /// full) into the gap reported before the next delivered line.
    pub fn passed_over(&mut self, gap: Gap) {
        self.pending.merge(gap);
    }

    /// Reads at most one chunk, or moves on to the next file after a rotation, pushing onto
    /// `out` what the chunk holds: in [`Mode::Deliver`] the pending gap (if any) and the
    /// complete lines passing the filter, in [`Mode::Skip`] nothing (the lines are counted).
    /// False when there was nothing new to read.
    pub fn read_chunk(&mut self, mode: Mode, out: &mut Vec<Followed>) -> io::Result<bool> {
        if mode == Mode::Deliver {
            self.flush_gap(out);
        }
        let Some(mut reading) = self.reading.take() else {
            // The log appeared since the follower started: all of it is new, from the
            // oldest file on.
            let Some(file) = self.first_file()? else {
                return Ok(false);
            };
            self.reading = Some(Reading::new(file, 0)?);
            return Ok(true);
        };
        let result = self.step(&mut reading, mode, out);
        if self.reading.is_none() {
            self.reading = Some(reading);
        }
        result
    }

    fn step(
        &mut self,
        reading: &mut Reading,
        mode: Mode,
        out: &mut Vec<Followed>,
    ) -> io::Result<bool> {
        if self.read_more(reading, mode, out)? {
            if reading.next.is_none() && !self.is_current(reading.ino)? {
                reading.rotated = true;
                reading.next = self.open_next(reading.ino)?;
            }
            return Ok(true);
        }
        if self.is_current(reading.ino)? {
            let len = reading.file.metadata()?.len();
            if len < reading.offset {
                // Truncated in place (copytruncate): start over at its beginning.
                reading.offset = 0;
                reading.partial.clear();
                return Ok(true);
            }
            return Ok(false);
        }
        // Rotated: the writer has moved on, so what our file holds now is all there is; it
        // may have been appended to between the read above and the rotation.
        reading.rotated = true;
        if reading.next.is_none() {
            reading.next = self.open_next(reading.ino)?;
        }
        if self.read_more(reading, mode, out)? {
            return Ok(true);
        }
        let file = match self.successor(reading)? {
            Successor::Next(file) => file,
            Successor::NotYet => return Ok(false),
        };
        if !reading.partial.is_empty() {
            let line = std::mem::take(&mut reading.partial);
            self.emit(&line, mode, out);
        }
        if mode == Mode::Deliver {
            self.flush_gap(out);
        }
        self.reading = Some(Reading::new(file, 0)?);
        Ok(true)
    }

    /// Whether `ino` is still the file the writer appends to.
    fn is_current(&self, ino: u64) -> io::Result<bool> {
        match fs::metadata(&self.path) {
            Ok(meta) => Ok(meta.ino() == ino),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Hands out the pending gap, as part of a gap just handed out if there is one.
    fn flush_gap(&mut self, out: &mut Vec<Followed>) {
        if self.pending.is_empty() {
            return;
        }
        let gap = std::mem::take(&mut self.pending);
        match out.last_mut() {
            Some(Followed::Gap(last)) => last.merge(gap),
            _ => out.push(Followed::Gap(gap)),
        }
    }

    /// Hands out (or counts) one complete line.
    fn emit(&mut self, bytes: &[u8], mode: Mode, out: &mut Vec<Followed>) {
        match (mode, &self.filter) {
            // Counting needs no parsing when every line counts.
            (Mode::Skip, None) => self.pending.lines += 1,
            (Mode::Skip, Some(filter)) => {
                if filter.matches(&parse_bytes(bytes)) {
                    self.pending.lines += 1;
                }
            }
            (Mode::Deliver, filter) => {
                let line = parse_bytes(bytes);
                if filter.as_ref().is_none_or(|f| f.matches(&line)) {
                    out.push(Followed::Line(line));
                }
            }
        }
    }

    /// Reads one chunk of our file from the offset, emitting its complete lines; false at
    /// its end.
    fn read_more(
        &mut self,
        reading: &mut Reading,
        mode: Mode,
        out: &mut Vec<Followed>,
    ) -> io::Result<bool> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(CHUNK, 0);
        let n = loop {
            match reading.file.read_at(&mut buf, reading.offset) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf = buf;
                    return Err(e);
                }
            }
        };
        reading.offset += n as u64;
        let mut data = &buf[..n];
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if reading.partial.is_empty() {
                self.emit(&data[..i], mode, out);
            } else {
                reading.partial.extend_from_slice(&data[..i]);
                let line = std::mem::take(&mut reading.partial);
                self.emit(&line, mode, out);
            }
            data = &data[i + 1..];
        }
        reading.partial.extend_from_slice(data);
        if reading.partial.len() > MAX_LINE {
            let line = std::mem::take(&mut reading.partial);
            self.emit(&line, mode, out);
        }
        self.buf = buf;
        Ok(n > 0)
    }

    /// The oldest file of the log, opened; None while there is none.
    fn first_file(&self) -> io::Result<Option<File>> {
        let (chain, _) = self.locate(0)?;
        for (path, ino) in chain {
            if ino.is_none() {
                continue;
            }
            match File::open(&path) {
                Ok(file) => return Ok(Some(file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The files of the log, oldest first (`output.log.K` ... `output.log.1`, `output.log`),
    /// each with its inode when it exists; and the inode of the file after `ino` among them.
    fn locate(&self, ino: u64) -> io::Result<(Chain, Option<u64>)> {
        let mut chain: Chain = Vec::new();
        for (_, path) in rotated_files(&self.dir)?.into_iter().rev() {
            let ino = fs::metadata(&path).ok().map(|m| m.ino());
            chain.push((path, ino));
        }
        chain.push((
            self.path.clone(),
            fs::metadata(&self.path).ok().map(|m| m.ino()),
        ));
        let next = chain
            .iter()
            .position(|(_, i)| *i == Some(ino))
            .and_then(|ours| chain.get(ours + 1))
            .and_then(|(_, i)| *i);
        Ok((chain, next))
    }

    /// The file after `ino` in the log, opened, when `ino` is in it and has one.
    fn open_next(&self, ino: u64) -> io::Result<Option<File>> {
        let (chain, next) = self.locate(ino)?;
        let Some((path, _)) = next.and_then(|n| chain.iter().find(|(_, i)| *i == Some(n))) else {
            return Ok(None);
        };
        match File::open(path) {
            Ok(file) if Some(file.metadata()?.ino()) == next => Ok(Some(file)),
            // Renamed between the look and the open: the next look finds it.
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file written after ours: the next newer of `output.log.K` ... `output.log.1`,
    /// `output.log`. Ours not among them while it still has a name means a rotation is
    /// renaming it: look again later rather than guess. Once ours is deleted (rotated off
    /// the end), the one held as its successor, else the oldest one left, with the files in
    /// between counted as lost.
    fn successor(&mut self, reading: &mut Reading) -> io::Result<Successor> {
        let deleted = reading.file.metadata()?.nlink() == 0;
        if deleted && let Some(next) = reading.next.take() {
            return Ok(Successor::Next(next));
        }
        for _ in 0..8 {
            let (chain, _) = self.locate(reading.ino)?;
            let ours = chain.iter().position(|(_, i)| *i == Some(reading.ino));
            let start = match ours {
                Some(ours) => ours + 1,
                None if deleted => 0,
                None => return Ok(Successor::NotYet),
            };
            let Some(next) = (start..chain.len()).find(|&i| chain[i].1.is_some()) else {
                return Ok(Successor::NotYet);
            };
            if ours.is_some() && next != start {
                // The next file is missing: a rotation is half done; look again later.
                return Ok(Successor::NotYet);
            }
            match File::open(&chain[next].0) {
                Ok(file) if Some(file.metadata()?.ino()) == chain[next].1 => {
                    if ours.is_none() {
                        self.pending.uncounted = true;
                    }
                    return Ok(Successor::Next(file));
                }
                // Renamed between the look and the open: look again.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Successor::NotYet)
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

    /// Everything the follower has now, in [`Mode::Deliver`].
    fn drain(follower: &mut Follower) -> Vec<Followed> {
        let mut out = Vec::new();
        while follower.read_chunk(Mode::Deliver, &mut out).unwrap() {}
        out
    }

    /// [`drain`], which must hold lines only.
    fn poll(follower: &mut Follower) -> Vec<LogLine> {
        drain(follower)
            .into_iter()
            .map(|f| match f {
                Followed::Line(line) => line,
                Followed::Gap(gap) => panic!("unexpected {gap:?}"),
            })
            .collect()
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
            seen.extend(numbers(&poll(&mut follower)));
            if writing.is_finished() && seen.len() < total {
                seen.extend(numbers(&poll(&mut follower)));
                break;
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        writing.join().unwrap();
        assert_eq!(seen, (50..50 + total).collect::<Vec<_>>());
        assert!(poll(&mut follower).is_empty());
    }

    #[test]
    fn follower_reads_one_chunk_at_a_time_and_finishes_a_file_renamed_away_mid_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Follower::new(dir.path(), None).unwrap();
        // Files of ~4 chunks; the follower reads the first chunk of the first one only.
        let mut writer = LogWriter::new(dir.path(), 4 * CHUNK as u64, 2);
        let per_file = 4 * CHUNK / 40;
        write_numbered(&mut writer, 0..per_file / 2);
        let mut out = Vec::new();
        assert!(follower.read_chunk(Mode::Deliver, &mut out).unwrap()); // opens the file
        assert!(out.is_empty());
        assert!(follower.read_chunk(Mode::Deliver, &mut out).unwrap());
        let first = out.len();
        assert!(
            first > 0 && first < per_file / 2,
            "one chunk holds {first} lines"
        );
        // The file it reads is rotated to .1, then .2, while it is in the middle of it.
        write_numbered(&mut writer, per_file / 2..3 * per_file);
        assert!(dir.path().join("output.log.2").exists());
        let mut seen = numbers(&poll_lines(out));
        seen.extend(numbers(&poll(&mut follower)));
        assert_eq!(seen, (0..3 * per_file).collect::<Vec<_>>());
    }

    fn poll_lines(out: Vec<Followed>) -> Vec<LogLine> {
        out.into_iter()
            .filter_map(|f| match f {
                Followed::Line(line) => Some(line),
                Followed::Gap(_) => None,
            })
            .collect()
    }

    #[test]
    fn skipped_lines_come_out_as_one_exact_gap_before_the_next_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut follower = Follower::new(dir.path(), None).unwrap();
        let mut writer = LogWriter::new(dir.path(), 16384, 3);
        write_numbered(&mut writer, 0..1000);
        let mut out = Vec::new();
        // The reader is behind: the follower counts instead of handing out, across rotations.
        while follower.read_chunk(Mode::Skip, &mut out).unwrap() {}
        assert!(out.is_empty());
        assert!(dir.path().join("output.log.2").exists());
        // Two lines it handed out that its caller could not deliver count too.
        follower.passed_over(Gap {
            lines: 2,
            uncounted: false,
        });
        write_numbered(&mut writer, 1000..1003);
        let got = drain(&mut follower);
        assert_eq!(
            got[0],
            Followed::Gap(Gap {
                lines: 1002,
                uncounted: false
            })
        );
        assert_eq!(numbers(&poll_lines(got)), vec![1000, 1001, 1002]);
        assert!(drain(&mut follower).is_empty());

        // With a filter, only the lines the reader would have seen count.
        let filter = LineFilter::new("0$").unwrap();
        let mut follower = Follower::new(dir.path(), Some(filter)).unwrap();
        write_numbered(&mut writer, 1003..1100);
        while follower.read_chunk(Mode::Skip, &mut out).unwrap() {}
        write_numbered(&mut writer, 1100..1101);
        let got = drain(&mut follower);
        assert_eq!(
            got[0],
            Followed::Gap(Gap {
                lines: 9,
                uncounted: false
            })
        );
        assert_eq!(numbers(&poll_lines(got)), vec![1100]);
    }

    #[test]
    fn files_deleted_before_they_were_read_make_an_uncounted_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::new(dir.path(), 4096, 1);
        write_numbered(&mut writer, 0..10);
        let mut follower = Follower::new(dir.path(), None).unwrap();
        write_numbered(&mut writer, 10..20);
        assert_eq!(numbers(&poll(&mut follower)), (10..20).collect::<Vec<_>>());
        // Many rotations while it does not look: whole files come and go unread.
        write_numbered(&mut writer, 20..2000);
        let got = drain(&mut follower);
        let at = got
            .iter()
            .position(|f| matches!(f, Followed::Gap(_)))
            .expect("a gap");
        assert_eq!(
            got[at],
            Followed::Gap(Gap {
                lines: 0,
                uncounted: true
            })
        );
        // It finishes the file it had open, deleted meanwhile, then goes on with the oldest
        // file left, in order, up to the newest line.
        let before = numbers(&poll_lines(got[..at].to_vec()));
        assert_eq!(before, (20..20 + before.len()).collect::<Vec<_>>());
        let after = numbers(&poll_lines(got[at..].to_vec()));
        assert!(after[0] > 20 + before.len(), "{after:?}");
        assert_eq!(after, (after[0]..2000).collect::<Vec<_>>());
    }

    #[test]
    fn a_file_caught_mid_rename_is_waited_for_never_taken_for_a_lost_one() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, range: std::ops::Range<usize>| {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.path().join(name))
                .unwrap();
            for i in range {
                writeln!(file, "{T} out line {i}").unwrap();
            }
        };
        write("output.log.2", 0..10);
        write("output.log.1", 10..20);
        write(LOG_FILE, 20..30);
        let mut follower = Follower::new(dir.path(), None).unwrap();
        write(LOG_FILE, 30..40);
        // The writer's rename of our file seen half done: it has a name, but none the log's
        // files have. The older files must not be read again as if ours were lost.
        let moving = dir.path().join("output.log.moving");
        fs::rename(dir.path().join(LOG_FILE), &moving).unwrap();
        assert_eq!(numbers(&poll(&mut follower)), (30..40).collect::<Vec<_>>());
        assert!(poll(&mut follower).is_empty());
        fs::rename(
            dir.path().join("output.log.1"),
            dir.path().join("output.log.2"),
        )
        .unwrap();
        fs::rename(&moving, dir.path().join("output.log.1")).unwrap();
        write(LOG_FILE, 40..50);
        assert_eq!(numbers(&poll(&mut follower)), (40..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_deleted_file_goes_on_with_the_successor_it_saw_even_once_that_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::new(dir.path(), 4096, 1);
        write_numbered(&mut writer, 0..10);
        let mut follower = Follower::new(dir.path(), None).unwrap();
        // One rotation, seen: the follower holds the file written after ours.
        write_numbered(&mut writer, 10..150);
        let mut out = Vec::new();
        while follower.reading.as_ref().is_none_or(|r| r.next.is_none()) {
            assert!(follower.read_chunk(Mode::Deliver, &mut out).unwrap());
        }
        // Then so many that both are deleted before it finishes ours.
        write_numbered(&mut writer, 150..2000);
        out.extend(drain(&mut follower));
        let at = out.iter().position(|f| matches!(f, Followed::Gap(_)));
        let lines = numbers(&poll_lines(out[..at.unwrap_or(out.len())].to_vec()));
        assert!(lines.len() > 140, "{}", lines.len());
        assert_eq!(lines, (10..10 + lines.len()).collect::<Vec<_>>());
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
        assert!(poll(&mut follower).is_empty());
        writeln!(file, "0").unwrap();
        writeln!(file, "{T} out line 11").unwrap();
        assert_eq!(numbers(&poll(&mut follower)), vec![10, 11]);

        // Truncated in place (copytruncate): start again at the beginning.
        file.set_len(0).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(file, "{T} out line 12").unwrap();
        assert_eq!(numbers(&poll(&mut follower)), vec![12]);
    }

    #[test]
    fn follower_waits_for_the_log_to_appear_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let filter = LineFilter::new("^line [0-9]*5$").unwrap();
        let mut follower = Follower::new(dir.path(), Some(filter)).unwrap();
        assert!(poll(&mut follower).is_empty());
        let mut writer = LogWriter::new(dir.path(), 1 << 20, 1);
        write_numbered(&mut writer, 0..30);
        assert_eq!(numbers(&poll(&mut follower)), vec![5, 15, 25]);
    }
}
