//! The log view's buffer: a bounded ring of lines with sequence numbers, an incremental
//! index of lines matching the filter, and counts of lines dropped under a flood, so
//! following 10,000 lines/s costs O(1) per line and drawing reads only the visible window.

use std::collections::VecDeque;
use strata_proto::v1::LogLine;

/// Lines the buffer keeps by default.
pub const LOG_CAP: usize = 50_000;

/// What the log view follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// The node the instances run on.
    pub node: String,
    /// Service name.
    pub service: String,
    /// 0 for every instance merged.
    pub instance: u32,
}

impl LogTarget {
    /// "web/2 on n1" or "web (all instances) on n1".
    pub fn label(&self) -> String {
        let what = if self.instance == 0 {
            format!("{} (all instances)", self.service)
        } else {
            format!("{}/{}", self.service, self.instance)
        };
        if self.node.is_empty() {
            what
        } else {
            format!("{what} on {}", self.node)
        }
    }
}

/// The ring of lines and the state of the view over it.
#[derive(Debug)]
pub struct LogBuffer {
    /// What is followed; `None` before a log view was opened.
    pub target: Option<LogTarget>,
    /// Generation of the current stream, so lines of a closed stream are ignored.
    pub generation: u64,
    lines: VecDeque<LogLine>,
    cap: usize,
    /// Sequence number of `lines[0]`.
    first_seq: u64,
    /// Lines received in total.
    pub received: u64,
    /// Lines the tail task dropped because the console fell behind.
    pub dropped: u64,
    /// Lines that fell out of the ring.
    pub evicted: u64,
    /// The view stays where it is while new lines arrive.
    pub paused: bool,
    /// Long lines wrap instead of being cut.
    pub wrap: bool,
    /// Show each line's time.
    pub timestamps: bool,
    /// Lines scrolled up from the end (when following) or the anchored top line (paused).
    pub scroll: u64,
    /// Highlight and show only lines containing this (case-insensitive); empty for all.
    pub filter: String,
    filter_lower: String,
    /// Sequence numbers of lines matching the filter, oldest first.
    matches: VecDeque<u64>,
    /// Why the stream ended, if it did.
    pub ended: Option<String>,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer::with_capacity(LOG_CAP)
    }
}

impl LogBuffer {
    /// An empty buffer keeping at most `cap` lines.
    pub fn with_capacity(cap: usize) -> LogBuffer {
        LogBuffer {
            target: None,
            generation: 0,
            lines: VecDeque::new(),
            cap: cap.max(1),
            first_seq: 0,
            received: 0,
            dropped: 0,
            evicted: 0,
            paused: false,
            wrap: false,
            timestamps: true,
            scroll: 0,
            filter: String::new(),
            filter_lower: String::new(),
            matches: VecDeque::new(),
            ended: None,
        }
    }

    /// Starts following `target`: clears the ring and returns the new generation.
    pub fn open(&mut self, target: LogTarget) -> u64 {
        let (wrap, timestamps) = (self.wrap, self.timestamps);
        *self = LogBuffer::with_capacity(self.cap);
        self.wrap = wrap;
        self.timestamps = timestamps;
        self.generation = self.generation.wrapping_add(1).max(1);
        self.target = Some(target);
        self.generation
    }

    /// Appends a batch from the stream of generation `generation`; `dropped` counts lines
    /// the task could not deliver.
    pub fn push(&mut self, generation: u64, batch: Vec<LogLine>, dropped: u64) {
        if generation != self.generation {
            return;
        }
        self.dropped += dropped;
        for line in batch {
            let seq = self.first_seq + self.lines.len() as u64;
            if !self.filter_lower.is_empty() && line_matches(&line, &self.filter_lower) {
                self.matches.push_back(seq);
            }
            self.lines.push_back(line);
            self.received += 1;
            if self.lines.len() > self.cap {
                self.lines.pop_front();
                self.first_seq += 1;
                self.evicted += 1;
            }
        }
        while self.matches.front().is_some_and(|&s| s < self.first_seq) {
            self.matches.pop_front();
        }
    }

    /// Sets the filter and rebuilds the match index once.
    pub fn set_filter(&mut self, filter: &str) {
        self.filter = filter.to_string();
        self.filter_lower = filter.to_lowercase();
        self.matches.clear();
        self.scroll = 0;
        if self.filter_lower.is_empty() {
            return;
        }
        let first = self.first_seq;
        let lower = &self.filter_lower;
        self.matches.extend(
            self.lines
                .iter()
                .enumerate()
                .filter(|(_, l)| line_matches(l, lower))
                .map(|(i, _)| first + i as u64),
        );
    }

    /// Lines the view can show (all, or the matching ones).
    pub fn len(&self) -> usize {
        if self.filter_lower.is_empty() {
            self.lines.len()
        } else {
            self.matches.len()
        }
    }

    /// True when there is nothing to show.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n`-th showable line (0 oldest).
    pub fn get(&self, n: usize) -> Option<&LogLine> {
        if self.filter_lower.is_empty() {
            self.lines.get(n)
        } else {
            let seq = *self.matches.get(n)?;
            self.lines.get((seq - self.first_seq) as usize)
        }
    }

    /// The window of `height` showable lines the view draws: index of the first line.
    /// Following, the window ends `scroll` lines above the newest line; paused, it stays
    /// where it was when the pause began.
    pub fn window_start(&self, height: usize) -> usize {
        let len = self.len();
        let end = len.saturating_sub(self.scroll as usize);
        end.saturating_sub(height)
    }

    /// Pauses or resumes following; resuming jumps back to the end.
    pub fn toggle_pause(&mut self) {
        self.paused = !self.paused;
        if !self.paused {
            self.scroll = 0;
        }
    }

    /// Scrolls `delta` lines towards older (positive) or newer lines; scrolling up pauses.
    pub fn scroll_by(&mut self, delta: i64) {
        let max = self.len() as i64;
        self.scroll = (self.scroll as i64 + delta).clamp(0, max) as u64;
        if delta > 0 {
            self.paused = true;
        }
    }

    /// Jumps to the oldest line (and pauses).
    pub fn top(&mut self) {
        self.scroll = self.len() as u64;
        self.paused = true;
    }

    /// Jumps to the newest line and follows again.
    pub fn end(&mut self) {
        self.scroll = 0;
        self.paused = false;
    }

    /// Keeps a paused view on the same lines while new ones arrive: called with how many
    /// showable lines were added since the last call.
    pub fn hold(&mut self, added: usize) {
        if self.paused {
            self.scroll = (self.scroll + added as u64).min(self.len() as u64);
        }
    }
}

fn line_matches(line: &LogLine, lower: &str) -> bool {
    line.text.to_lowercase().contains(lower) || line.instance.contains(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: u64) -> LogLine {
        LogLine {
            text: format!(
                "line {i}{}",
                if i.is_multiple_of(10) { " ERROR" } else { "" }
            ),
            instance: "web/1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn ring_is_bounded_and_filter_index_follows_eviction() {
        let mut b = LogBuffer::with_capacity(100);
        let g = b.open(LogTarget {
            node: "n1".into(),
            service: "web".into(),
            instance: 0,
        });
        b.set_filter("error");
        b.push(g, (0..250).map(line).collect(), 7);
        assert_eq!(b.len(), 10);
        assert_eq!(b.evicted, 150);
        assert_eq!(b.dropped, 7);
        assert_eq!(b.get(0).map(|l| l.text.as_str()), Some("line 150 ERROR"));
        b.set_filter("");
        assert_eq!(b.len(), 100);
        assert_eq!(b.window_start(20), 80);
        b.push(g + 1, vec![line(1)], 0);
        assert_eq!(b.received, 250, "lines of an old stream are ignored");
    }

    #[test]
    fn pause_holds_the_window_and_end_resumes() {
        let mut b = LogBuffer::with_capacity(1000);
        let g = b.open(LogTarget {
            node: String::new(),
            service: "web".into(),
            instance: 1,
        });
        b.push(g, (0..100).map(line).collect(), 0);
        b.toggle_pause();
        let start = b.window_start(10);
        b.push(g, (100..150).map(line).collect(), 0);
        b.hold(50);
        assert_eq!(b.window_start(10), start);
        b.end();
        assert_eq!(b.window_start(10), 140);
        b.top();
        assert_eq!(b.window_start(10), 0);
    }
}
