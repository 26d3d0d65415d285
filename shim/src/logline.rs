//! One line of an instance log, as the shim writes it and the agent's log reader parses it.
//!
//! Format: `<time> <out|err> <text>\n`, where the time is RFC 3339 in UTC with milliseconds,
//! for example `2026-11-26T05:46:02.123Z out hello`. The text is the service's bytes without
//! the newline (at most [`crate::logfile::MAX_LINE_BYTES`] of them).

use std::time::{SystemTime, UNIX_EPOCH};

/// Which output stream of the service a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

impl LogStream {
    /// The tag used in the log file: `out` or `err`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Out => "out",
            LogStream::Err => "err",
        }
    }

    fn from_tag(tag: &str) -> Option<LogStream> {
        match tag {
            "out" => Some(LogStream::Out),
            "err" => Some(LogStream::Err),
            _ => None,
        }
    }
}

/// One line of a service's output, as read back from its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the shim read it, Unix milliseconds; 0 for a line that is not in the shim's format.
    pub time_unix_ms: i64,
    /// The stream it came from; `Out` for a line that is not in the shim's format.
    pub stream: LogStream,
    /// The text, without the newline (the whole line when it is not in the shim's format).
    pub text: String,
}

/// Appends one line, stamped with `time`, to `buf`, newline included.
pub fn encode(buf: &mut Vec<u8>, time: SystemTime, stream: LogStream, text: &[u8]) {
    let unix_ms = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    buf.extend_from_slice(&format_time(unix_ms));
    buf.push(b' ');
    buf.extend_from_slice(stream.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(text);
    buf.push(b'\n');
}

/// Parses one line (without its newline). Lines that are not in the format are kept whole as
/// text, with time 0 and stream `Out`, so nothing is ever lost.
pub fn parse_line(line: &str) -> LogLine {
    parse_fields(line).unwrap_or_else(|| LogLine {
        time_unix_ms: 0,
        stream: LogStream::Out,
        text: line.to_string(),
    })
}

/// [`parse_line`] of raw bytes; invalid UTF-8 is replaced.
pub fn parse_bytes(line: &[u8]) -> LogLine {
    parse_line(&String::from_utf8_lossy(line))
}

fn parse_fields(line: &str) -> Option<LogLine> {
    let (time, rest) = line.split_once(' ')?;
    let time_unix_ms = parse_time(time)?;
    let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(LogLine {
        time_unix_ms,
        stream: LogStream::from_tag(stream)?,
        text: text.to_string(),
    })
}

/// The latest time the format can hold: 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MS: i64 = 253_402_300_799_999;
const MS_PER_DAY: i64 = 86_400_000;

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of `unix_ms`, clamped to the years 1970 to 9999.
fn format_time(unix_ms: i64) -> [u8; 24] {
    let unix_ms = unix_ms.clamp(0, MAX_UNIX_MS);
    let (year, month, day) = civil_from_days(unix_ms / MS_PER_DAY);
    let ms_of_day = unix_ms % MS_PER_DAY;
    let fields = [
        (0, 4, year),
        (5, 2, i64::from(month)),
        (8, 2, i64::from(day)),
        (11, 2, ms_of_day / 3_600_000),
        (14, 2, ms_of_day / 60_000 % 60),
        (17, 2, ms_of_day / 1000 % 60),
        (20, 3, ms_of_day % 1000),
    ];
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for (start, width, mut value) in fields {
        for slot in out[start..start + width].iter_mut().rev() {
            // A digit: value % 10 is in 0..10.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    out
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (UTC, 1970 or later; a leap
/// second counts as :59); `None` for anything else.
fn parse_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || b.last() != Some(&b'Z') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let millis = match &b[19..] {
        b"Z" => 0,
        [b'.', fraction @ .., b'Z'] if !fraction.is_empty() => {
            if !fraction.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let mut ms = 0;
            for i in 0..3 {
                ms = ms * 10 + fraction.get(i).map_or(0, |d| i64::from(d - b'0'));
            }
            ms
        }
        _ => return None,
    };
    let month = u32::try_from(month).ok()?;
    let day = u32::try_from(day).ok()?;
    if year < 1970 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let seconds = hour * 3600 + minute * 60 + second.min(59);
    Some(days_from_civil(year, month, day) * MS_PER_DAY + seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Year, month and day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small positive numbers: day 1..=31, month 1..=12.
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a date (the inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T: &str = "2026-11-26T05:46:02.123Z";
    const T_MS: i64 = 1_795_671_962_123;

    fn at(unix_ms: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(unix_ms as u64)
    }

    #[test]
    fn parses_the_shim_format_and_keeps_garbage_whole() {
        assert_eq!(
            parse_line(&format!("{T} out hello world")),
            LogLine {
                time_unix_ms: T_MS,
                stream: LogStream::Out,
                text: "hello world".into()
            }
        );
        assert_eq!(parse_line(&format!("{T} err ")).stream, LogStream::Err);
        assert_eq!(parse_line(&format!("{T} err")).text, "");
        for garbage in [
            "",
            " ",
            "hello",
            "2026-13-45T99:99:99.000Z out x",
            "2026-02-29T00:00:00.000Z out not a leap year",
            "1969-12-31T23:59:59.999Z out before 1970",
            "2026-11-26T05:46:02.Z out empty fraction",
            "2026-11-26T05:46:02.1x3Z out",
            "2026-11-26 05:46:02.123Z out",
            "+026-11-26T05:46:02.123Z out",
            &format!("{T} bad x"),
            "\u{0}\u{ffff} 日本 out",
            "2026-11-26T05:46:02.123Z",
        ] {
            let line = parse_line(garbage);
            assert_eq!(line.time_unix_ms, 0, "{garbage:?}");
            assert_eq!(line.stream, LogStream::Out);
            assert_eq!(line.text, garbage);
        }
    }

    #[test]
    fn encodes_a_line_with_the_time_and_stream_and_reads_it_back() {
        let mut buf = b"kept ".to_vec();
        encode(&mut buf, at(T_MS), LogStream::Err, b"oops");
        assert_eq!(buf, format!("kept {T} err oops\n").as_bytes());
        let line = parse_bytes(&buf[5..buf.len() - 1]);
        assert_eq!(line.time_unix_ms, T_MS);
        assert_eq!(line.stream, LogStream::Err);
        assert_eq!(line.text, "oops");
    }

    #[test]
    fn times_are_written_exactly_as_the_previous_shim_wrote_them() {
        // The previous shim stamped lines with humantime; logs it wrote stay readable and the
        // new lines look the same. A day a week up to the year 9999, at varying times of day.
        let mut ms = 0;
        while ms < MAX_UNIX_MS {
            let ours = format_time(ms);
            let theirs = humantime::format_rfc3339_millis(at(ms)).to_string();
            assert_eq!(std::str::from_utf8(&ours).unwrap(), theirs, "{ms}");
            assert_eq!(parse_time(&theirs), Some(ms), "{theirs}");
            let parsed = humantime::parse_rfc3339(&theirs).unwrap();
            assert_eq!(parsed, at(ms));
            ms += 7 * MS_PER_DAY + 3_600_007;
        }
        assert_eq!(&format_time(0), b"1970-01-01T00:00:00.000Z");
        assert_eq!(&format_time(-5), b"1970-01-01T00:00:00.000Z");
        assert_eq!(&format_time(i64::MAX), b"9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn reads_other_fractions_and_leap_seconds_as_the_previous_reader_did() {
        for text in [
            "2024-02-29T12:00:00Z",
            "2024-02-29T12:00:00.5Z",
            "2024-02-29T12:00:00.123456789Z",
            "2016-12-31T23:59:60.000Z",
        ] {
            let theirs = humantime::parse_rfc3339(text)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            assert_eq!(parse_time(text), Some(theirs), "{text}");
        }
    }
}
