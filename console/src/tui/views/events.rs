//! The cluster-wide event timeline, newest first, with severity and kind filters; Enter
//! opens the event's subject (a service or a node).

use crate::format::time_ms;
use crate::model::Model;
use crate::model::events::{Subject, severity_label, subject_of};
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, View};
use crate::tui::widgets::{col, table, title};
use ratatui::Frame;
use ratatui::layout::Rect;
use strata_proto::v1::Severity;

/// The events view.
pub struct Events;

fn newest_first(model: &Model, selected: usize) -> Option<usize> {
    let idx = &model.timeline.index;
    idx.len().checked_sub(1 + selected).map(|p| idx[p])
}

impl Component for Events {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (m, t) = (cx.model, cx.theme);
        let tl = &m.timeline;
        let sev = match tl.min_severity {
            Severity::Warning => "≥warn",
            Severity::Critical => "crit",
            _ => "all",
        };
        let mut head = format!("Events ({}) severity {sev}", tl.index.len());
        if !tl.filter.is_empty() {
            head.push_str(&format!(" /{}", tl.filter));
        }
        let cols = [
            col("TIME", 20, 1),
            col("SEV", 4, 0),
            col("NODE", 8, 0),
            col("KIND", 18, 2),
            col("SUBJECT", 16, 3),
            col("MESSAGE", 30, 0),
        ];
        table(
            frame,
            area,
            title(head, t),
            &cols,
            tl.index.len(),
            cx.selected,
            t,
            |i| {
                let Some(e) = newest_first(m, i).and_then(|k| tl.events.get(k)) else {
                    return Vec::new();
                };
                let label = severity_label(e.severity);
                vec![
                    (time_ms(e.time_unix_ms), t.dim),
                    (label.into(), t.tone(Severity::from_wire(e.severity))),
                    (e.node.clone(), t.base),
                    (e.kind.clone(), t.base),
                    (e.subject.clone(), t.dim),
                    (e.message.clone(), t.base),
                ]
            },
        );
    }

    fn commands(&self) -> &'static [Action] {
        &[Action::Enter, Action::Severity]
    }

    fn rows(&self, model: &Model) -> usize {
        model.timeline.index.len()
    }

    fn jump(&self, _action: Action, model: &Model, selected: usize) -> Option<Nav> {
        let e = model.timeline.events.get(newest_first(model, selected)?)?;
        Some(Nav::To(match subject_of(e) {
            Subject::Service(s) => View::Service(s),
            Subject::Node(n) => View::Node(n),
        }))
    }
}
