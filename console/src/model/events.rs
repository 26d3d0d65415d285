//! The cluster-wide event timeline: events merged from every member's journal in time
//! order, bounded, with the severity and kind filters of the events view.

use std::collections::{HashMap, VecDeque};
use strata_proto::v1::{Event, Severity};

/// How many events the timeline keeps.
pub const EVENT_CAP: usize = 10_000;

/// Merged events, newest last, and the filtered index the view shows.
#[derive(Debug, Default)]
pub struct Timeline {
    /// Events in time order, oldest first.
    pub events: VecDeque<Event>,
    /// Newest event time seen per node, the `since` of the next query to it.
    pub newest: HashMap<String, i64>,
    /// Minimum severity shown.
    pub min_severity: Severity,
    /// Kind prefix shown ("" for all).
    pub kind: String,
    /// Case-insensitive text filter.
    pub filter: String,
    /// Indexes into `events` that pass the filters, oldest first.
    pub index: Vec<usize>,
    dirty: bool,
    /// Bumped by every merge, so derived state knows when the events changed.
    version: u64,
}

impl Timeline {
    /// Merges events in; ones already held (same node and seq) are skipped.
    pub fn merge(&mut self, batch: Vec<Event>) {
        for e in batch {
            let newest = self.newest.entry(e.node.clone()).or_insert(0);
            if e.time_unix_ms < *newest
                && self
                    .events
                    .iter()
                    .rev()
                    .take(512)
                    .any(|x| x.node == e.node && x.seq == e.seq)
            {
                continue;
            }
            if e.time_unix_ms == *newest
                && self
                    .events
                    .iter()
                    .rev()
                    .take(64)
                    .any(|x| x.node == e.node && x.seq == e.seq)
            {
                continue;
            }
            *newest = (*newest).max(e.time_unix_ms);
            let at = self
                .events
                .partition_point(|x| x.time_unix_ms <= e.time_unix_ms);
            self.events.insert(at, e);
            if self.events.len() > EVENT_CAP {
                self.events.pop_front();
            }
        }
        self.dirty = true;
        self.version += 1;
    }

    /// Changes whenever events were merged in.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Marks the index for rebuilding after a filter change.
    pub fn touch(&mut self) {
        self.dirty = true;
    }

    /// Cycles the minimum severity: all, warning, critical.
    pub fn cycle_severity(&mut self) {
        self.min_severity = match self.min_severity {
            Severity::Unspecified | Severity::Info => Severity::Warning,
            Severity::Warning => Severity::Critical,
            Severity::Critical => Severity::Unspecified,
        };
        self.dirty = true;
    }

    /// Rebuilds the filtered index when something changed.
    pub fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let needle = self.filter.to_lowercase();
        let min = self.min_severity as i32;
        self.index = self
            .events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.severity >= min && e.kind.starts_with(&self.kind))
            .filter(|(_, e)| {
                needle.is_empty()
                    || format!("{} {} {} {}", e.node, e.kind, e.subject, e.message)
                        .to_lowercase()
                        .contains(&needle)
            })
            .map(|(i, _)| i)
            .collect();
    }

    /// Events about `node` (its own journal, kernel lines included), newest last.
    pub fn for_node<'a>(
        &'a self,
        node: &'a str,
    ) -> impl DoubleEndedIterator<Item = &'a Event> + 'a {
        self.events.iter().filter(move |e| e.node == node)
    }
}

/// A short severity label.
pub fn severity_label(severity: i32) -> &'static str {
    match Severity::try_from(severity).unwrap_or(Severity::Unspecified) {
        Severity::Critical => "CRIT",
        Severity::Warning => "WARN",
        Severity::Info => "INFO",
        Severity::Unspecified => "-",
    }
}

/// Where an event's subject leads: a service or a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// "service:web/2" or "service:web".
    Service(String),
    /// "node:n2", or any other subject of a node's own journal.
    Node(String),
}

/// Parses the subject of `event` into the view it leads to.
pub fn subject_of(event: &Event) -> Subject {
    if let Some(rest) = event.subject.strip_prefix("service:") {
        let name = rest.split('/').next().unwrap_or(rest);
        return Subject::Service(name.to_string());
    }
    if let Some(node) = event.subject.strip_prefix("node:") {
        return Subject::Node(node.to_string());
    }
    Subject::Node(event.node.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(node: &str, seq: u64, t: i64, sev: Severity, kind: &str) -> Event {
        Event {
            node: node.into(),
            seq,
            time_unix_ms: t,
            severity: sev as i32,
            kind: kind.into(),
            subject: format!("node:{node}"),
            ..Default::default()
        }
    }

    #[test]
    fn merges_in_time_order_without_duplicates_and_filters() {
        let mut t = Timeline::default();
        t.merge(vec![
            ev("n1", 1, 10, Severity::Info, "agent.started"),
            ev("n1", 2, 30, Severity::Critical, "kernel.oom_kill"),
        ]);
        t.merge(vec![
            ev("n2", 1, 20, Severity::Warning, "alert.firing"),
            ev("n1", 2, 30, Severity::Critical, "kernel.oom_kill"),
        ]);
        let times: Vec<i64> = t.events.iter().map(|e| e.time_unix_ms).collect();
        assert_eq!(times, vec![10, 20, 30]);
        t.cycle_severity();
        t.refresh();
        assert_eq!(t.index, vec![1, 2]);
        t.kind = "kernel".into();
        t.touch();
        t.refresh();
        assert_eq!(t.index, vec![2]);
        assert_eq!(subject_of(&t.events[2]), Subject::Node("n1".into()));
    }

    #[test]
    fn service_subjects_lead_to_the_service() {
        let e = Event {
            subject: "service:web/2".into(),
            ..Default::default()
        };
        assert_eq!(subject_of(&e), Subject::Service("web".into()));
    }
}
