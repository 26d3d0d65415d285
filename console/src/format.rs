//! Formatting for people, shared by the CLI, the console and the operations' messages:
//! sizes, rates, percentages, times and tables.

use comfy_table::{Table, presets};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A plain table in kubectl's style: upper-case header, columns separated by spaces.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table.set_header(header.iter().map(|h| h.to_uppercase()));
    table
}

/// Bytes in binary units: "512 B", "1.5 KiB", "12.0 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A byte rate: "1.5 MiB/s".
pub fn rate(bytes_per_sec: f64) -> String {
    format!("{}/s", bytes(bytes_per_sec.max(0.0).round() as u64))
}

/// A percentage with one decimal.
pub fn percent(p: f64) -> String {
    format!("{p:.1}%")
}

/// A Unix time in milliseconds as UTC, to the second: "2026-11-26T05:30:43Z".
pub fn time_ms(ms: i64) -> String {
    if ms <= 0 {
        return "-".to_string();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A duration in seconds, short: "3d 4h", "5m 10s".
pub fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn uptime_is_short() {
        assert_eq!(uptime(42), "42s");
        assert_eq!(uptime(310), "5m 10s");
        assert_eq!(uptime(3 * 86400 + 4 * 3600 + 5), "3d 4h");
    }

    #[test]
    fn times_are_utc_rfc3339() {
        assert_eq!(time_ms(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(time_ms(0), "-");
    }
}
