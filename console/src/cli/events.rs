//! `strata events`: query the journal, or follow it live.

use super::{OutputFormat, out};
use crate::client::connect::call;
use crate::client::{Client, Failure, FailureKind};
use crate::format::{now_ms, table, time_ms};
use clap::Args;
use std::time::UNIX_EPOCH;
use strata_proto::v1::{Event, QueryEventsRequest, Severity, WatchEventsRequest};

/// Filters of `strata events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events newer than this: a duration ("1h", "30m") or an RFC 3339 time.
    #[arg(long, value_parser = parse_since)]
    since: Option<i64>,
    /// Only events at or above this severity: info, warn, critical.
    #[arg(long, value_parser = super::words::severity())]
    severity: Option<Severity>,
    /// Only events whose kind starts with this, e.g. "alert" or "kernel.oom_kill".
    #[arg(long)]
    kind: Option<String>,
    /// At most this many events, the newest.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// After the matching events, keep printing new ones as they happen.
    #[arg(short = 'f', long)]
    follow: bool,
}

fn parse_since(text: &str) -> Result<i64, String> {
    parse_since_at(text, now_ms())
}

/// `--since` as Unix milliseconds, relative to `now_ms` for durations.
fn parse_since_at(text: &str, now_ms: i64) -> Result<i64, String> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(now_ms - d.as_millis() as i64);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            format!("{text:?} is neither a duration (1h, 30m) nor a time (2026-11-26T05:00:00Z)")
        })
}

/// `strata events`.
pub async fn events(
    client: &mut Client,
    agent: &str,
    output: OutputFormat,
    node: &str,
    args: EventsArgs,
) -> Result<(), Failure> {
    let min_severity = args.severity.unwrap_or(Severity::Unspecified) as i32;
    let kind = args.kind.unwrap_or_default();
    let reply = call(
        client.query_events(QueryEventsRequest {
            node: node.to_string(),
            since_unix_ms: args.since.unwrap_or(0),
            min_severity,
            kind: kind.clone(),
            limit: args.limit,
        }),
        agent,
    )
    .await?;
    if !args.follow {
        return match output {
            OutputFormat::Json => out::json_document(&reply),
            OutputFormat::Table => {
                out::line(render_events(&reply.events))?;
                Ok(())
            }
        };
    }
    let mut last_seq = 0;
    for event in &reply.events {
        print_event_line(event, output)?;
        last_seq = last_seq.max(event.seq);
    }
    let mut stream = call(
        client.watch_events(WatchEventsRequest {
            node: node.to_string(),
            min_severity,
            kind,
        }),
        agent,
    )
    .await?;
    loop {
        match stream.message().await {
            Ok(Some(event)) if event.seq > last_seq => print_event_line(&event, output)?,
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Failure::new(
                    FailureKind::Unreachable,
                    format!("the agent at {agent} closed the event stream"),
                ));
            }
            Err(status) => return Err(Failure::from_status(&status, agent)),
        }
    }
}

/// In follow mode: one table-like line, or one JSON object per line.
fn print_event_line(event: &Event, output: OutputFormat) -> Result<(), Failure> {
    match output {
        OutputFormat::Json => out::json_line(event),
        OutputFormat::Table => out::line(event_line(event)),
    }
}

fn severity_label(event: &Event) -> &'static str {
    Severity::try_from(event.severity)
        .unwrap_or_default()
        .label()
}

fn event_line(e: &Event) -> String {
    format!(
        "{}  {:<8}  {:<16}  {:<20}  {}",
        time_ms(e.time_unix_ms),
        severity_label(e),
        e.kind,
        e.subject,
        e.message
    )
}

/// Events as a table, oldest first.
pub fn render_events(events: &[Event]) -> String {
    if events.is_empty() {
        return "No events match.".to_string();
    }
    let mut t = table(&["time", "severity", "node", "kind", "subject", "message"]);
    for e in events {
        t.add_row(vec![
            time_ms(e.time_unix_ms),
            severity_label(e).to_string(),
            e.node.clone(),
            e.kind.clone(),
            e.subject.clone(),
            e.message.clone(),
        ]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_times() {
        let now = 10_000_000_000;
        assert_eq!(parse_since_at("1h", now).unwrap(), now - 3_600_000);
        assert_eq!(
            parse_since_at("2023-11-14T22:13:20Z", now).unwrap(),
            1_700_000_000_000
        );
        assert!(parse_since_at("yesterday-ish", now).is_err());
    }

    #[test]
    fn severity_words_are_accepted() {
        let parse = crate::cli::words::severity().parse;
        assert_eq!(parse("warn"), Some(Severity::Warning));
        assert_eq!(parse("CRITICAL"), Some(Severity::Critical));
        assert_eq!(parse("loud"), None);
    }

    #[test]
    fn events_table_names_severity_and_kind() {
        let e = Event {
            time_unix_ms: 1_700_000_000_000,
            severity: Severity::Critical as i32,
            kind: "kernel.oom_kill".into(),
            subject: "process:hog".into(),
            message: "Out of memory".into(),
            node: "n1".into(),
            ..Default::default()
        };
        let text = render_events(&[e]);
        assert!(text.contains("critical"), "{text}");
        assert!(text.contains("kernel.oom_kill"), "{text}");
        assert_eq!(render_events(&[]), "No events match.");
    }
}
