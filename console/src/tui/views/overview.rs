//! The start screen: members, service health and alerts at a glance, then the ranked
//! problems, each one key away from its logs, node or events.

use crate::model::Model;
use crate::model::logs::LogTarget;
use crate::model::problems::{Jump, firing_alerts};
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, View};
use crate::tui::widgets::{ago, col, table, title};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

/// The overview.
pub struct Overview;

impl Component for Overview {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (m, t) = (cx.model, cx.theme);
        let [counts, list] =
            Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(area);
        let (alive, suspect, down) = m.cluster.member_counts();
        let (pass, warn, crit) = m.cluster.health_counts();
        let line = Line::from(vec![
            Span::styled(" members ", t.title),
            Span::styled(format!("{alive} alive "), t.ok),
            Span::styled(
                format!("{suspect} suspect "),
                if suspect > 0 { t.warn } else { t.dim },
            ),
            Span::styled(
                format!("{down} down"),
                if down > 0 { t.crit } else { t.dim },
            ),
            Span::styled("   instances ", t.title),
            Span::styled(format!("{pass} passing "), t.ok),
            Span::styled(
                format!("{warn} warning "),
                if warn > 0 { t.warn } else { t.dim },
            ),
            Span::styled(
                format!("{crit} critical"),
                if crit > 0 { t.crit } else { t.dim },
            ),
            Span::styled("   alerts ", t.title),
            Span::styled(format!("{} firing", firing_alerts(&m.problems)), t.warn),
        ]);
        frame.render_widget(Paragraph::new(line), counts);
        let cols = [
            col("KIND", 14, 0),
            col("SUBJECT", 24, 0),
            col("NODE", 10, 1),
            col("SINCE", 14, 2),
            col("GO", 10, 3),
        ];
        let problems = &m.problems;
        table(
            frame,
            list,
            title(format!("Problems ({})", problems.len()), t),
            &cols,
            problems.len(),
            cx.selected,
            t,
            |i| {
                let p = &problems[i];
                let style = if p.rank <= 1 { t.crit } else { t.warn };
                let go = match p.jump {
                    Jump::Logs { .. } => "l logs",
                    Jump::Node(_) => "m node",
                    Jump::Events(_) => "e events",
                };
                vec![
                    (p.kind.to_string(), style),
                    (p.subject.clone(), t.base),
                    (p.node.clone(), t.base),
                    (ago(m.now_ms, p.since_ms), t.dim),
                    (go.into(), t.dim),
                ]
            },
        );
    }

    fn commands(&self) -> &'static [Action] {
        &[Action::Enter, Action::Logs, Action::Metrics, Action::Events]
    }

    fn rows(&self, model: &Model) -> usize {
        model.problems.len()
    }

    fn jump(&self, action: Action, model: &Model, selected: usize) -> Option<Nav> {
        let p = model.problems.get(selected)?;
        let node = p.node.clone();
        Some(match (action, &p.jump) {
            (
                Action::Enter | Action::Logs,
                Jump::Logs {
                    node,
                    service,
                    instance,
                },
            ) => Nav::Logs(
                LogTarget {
                    node: node.clone(),
                    service: service.clone(),
                    instance: *instance,
                },
                vec![node.clone()],
            ),
            (Action::Events, _) | (Action::Enter, Jump::Events(_)) => Nav::Events(node),
            _ => Nav::To(View::Node(node)),
        })
    }
}
