//! Followed logs: only the visible window of the ring is drawn; paused, wrapped,
//! timestamped and filtered with highlights; dropped and evicted lines are counted.

use crate::format::time_ms;
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx};
use crate::tui::widgets::{highlight, title};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use strata_proto::v1::LogStream;

/// The log view.
pub struct Logs;

impl Component for Logs {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (b, t) = (&cx.model.logs, cx.theme);
        let what = b
            .target
            .as_ref()
            .map_or("nothing".to_string(), |x| x.label());
        let state = if b.paused { "PAUSED" } else { "following" };
        let mut head = format!("Logs {what} · {state} · {} lines", b.len());
        if b.dropped > 0 {
            head.push_str(&format!(" · {} dropped", b.dropped));
        }
        if !b.filter.is_empty() {
            head.push_str(&format!(" · /{}", b.filter));
        }
        let block = Block::new()
            .borders(Borders::TOP)
            .title(title(head, t))
            .border_style(t.dim);
        let height = area.height.saturating_sub(1) as usize;
        let start = b.window_start(height);
        let mut lines: Vec<Line> = (start..(start + height).min(b.len()))
            .filter_map(|i| b.get(i))
            .map(|l| {
                let mut spans = Vec::new();
                if b.timestamps {
                    spans.push(Span::styled(format!("{} ", time_ms(l.time_unix_ms)), t.dim));
                }
                spans.push(Span::styled(format!("{} ", l.instance), t.title));
                let base = if l.stream() == LogStream::Err {
                    t.warn
                } else {
                    t.base
                };
                spans.extend(highlight(&l.text, &b.filter, base, t.key));
                Line::from(spans)
            })
            .collect();
        if let Some(end) = &b.ended {
            lines.push(Line::styled(format!("-- {end} --"), t.crit));
        }
        let mut p = Paragraph::new(lines).block(block);
        if b.wrap {
            p = p.wrap(Wrap { trim: false });
        }
        frame.render_widget(p, area);
    }

    fn commands(&self) -> &'static [Action] {
        &[
            Action::Pause,
            Action::Wrap,
            Action::Timestamps,
            Action::Top,
            Action::Bottom,
        ]
    }
}
