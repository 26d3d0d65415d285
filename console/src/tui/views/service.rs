//! One service's instances on every node: state, health, pid, CPU, RSS, uptime,
//! restarts and last exit; actions on one instance or the service on its node.

use super::services::service_plan;
use crate::client::change::Change;
use crate::client::ops::Target;
use crate::format::{bytes, uptime};
use crate::model::Model;
use crate::model::logs::LogTarget;
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, Plan, View};
use crate::tui::widgets::{col, table, title};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Paragraph;
use strata_proto::v1::Health;

/// The service view.
pub struct Service;

impl Component for Service {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (m, t) = (cx.model, cx.theme);
        let s = &m.service;
        // A node that holds the service unmanaged says why beside the nodes that failed.
        let unmanaged = s
            .per_node
            .iter()
            .filter(|(_, st)| !st.unmanaged.is_empty())
            .map(|(n, st)| format!("{n}: unmanaged: {}", st.unmanaged));
        let errors: Vec<String> = s
            .errors
            .iter()
            .map(|(n, e)| format!("{n}: {e}"))
            .chain(unmanaged)
            .collect();
        let [list, err] = Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(errors.len().min(3) as u16),
        ])
        .areas(area);
        let cols = [
            col("INSTANCE", 10, 0),
            col("NODE", 10, 0),
            col("STATE", 10, 0),
            col("HEALTH", 9, 1),
            col("PID", 7, 4),
            col("CPU", 6, 3),
            col("RSS", 10, 5),
            col("UPTIME", 8, 6),
            col("RESTARTS", 8, 0),
            col("LAST EXIT", 16, 2),
        ];
        let passing = s
            .rows
            .iter()
            .filter(|r| r.instance.health() == Health::Passing)
            .count();
        table(
            frame,
            list,
            title(
                format!("Service {} ({passing}/{} passing)", s.name, s.rows.len()),
                t,
            ),
            &cols,
            s.rows.len(),
            cx.selected,
            t,
            |i| {
                let r = &s.rows[i];
                let inst = &r.instance;
                let up = if inst.pid > 0 && inst.started_unix_ms > 0 {
                    uptime(((m.now_ms - inst.started_unix_ms).max(0) / 1000) as u64)
                } else {
                    "-".into()
                };
                vec![
                    (inst.id.clone(), t.base),
                    (r.node.clone(), t.base),
                    (inst.state().to_string(), t.tone(inst.state())),
                    (inst.health().to_string(), t.tone(inst.health())),
                    (
                        if inst.pid > 0 {
                            inst.pid.to_string()
                        } else {
                            "-".into()
                        },
                        t.dim,
                    ),
                    (format!("{:.1}%", inst.cpu_percent), t.base),
                    (bytes(inst.rss_bytes), t.base),
                    (up, t.dim),
                    (
                        inst.restarts.to_string(),
                        if inst.restarts > 0 { t.warn } else { t.base },
                    ),
                    (
                        inst.last_exit
                            .as_ref()
                            .map_or("-".into(), |e| e.description.clone()),
                        t.dim,
                    ),
                ]
            },
        );
        frame.render_widget(Paragraph::new(errors.join("\n")).style(t.crit), err);
    }

    fn commands(&self) -> &'static [Action] {
        &[
            Action::Logs,
            Action::Metrics,
            Action::Restart,
            Action::RestartService,
            Action::Stop,
            Action::Start,
            Action::Scale,
        ]
    }

    fn rows(&self, model: &Model) -> usize {
        model.service.rows.len()
    }

    fn jump(&self, action: Action, model: &Model, selected: usize) -> Option<Nav> {
        let r = model.service.rows.get(selected)?;
        Some(match action {
            Action::Metrics => Nav::To(View::Node(r.node.clone())),
            _ => Nav::Logs(
                LogTarget {
                    node: r.node.clone(),
                    service: model.service.name.clone(),
                    instance: r.instance.index,
                },
                vec![r.node.clone()],
            ),
        })
    }

    fn plan(&self, action: Action, model: &Model, selected: usize) -> Option<Plan> {
        let s = &model.service;
        let r = s.rows.get(selected)?;
        if matches!(action, Action::RestartService | Action::Scale) {
            let n = s.rows.iter().filter(|x| x.node == r.node).count();
            return service_plan(action, &s.name, &[(r.node.clone(), n)]);
        }
        let target = Target {
            service: s.name.clone(),
            instance: r.instance.index,
        };
        Some(Plan::Confirm(Change::instance(
            action.control()?,
            &target,
            &r.node,
        )))
    }
}
