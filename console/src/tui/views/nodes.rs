//! Every node: status, CPU, memory, worst disk, load, a CPU sparkline and alerts;
//! sortable by any column and filterable, over indexes the model keeps.

use crate::client::change::Change;
use crate::model::Model;
use crate::model::cluster::NODE_COLUMNS;
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, Plan, Prompt, View};
use crate::tui::widgets::{ago, col, sparkline, table, title};
use ratatui::Frame;
use ratatui::layout::Rect;

/// The nodes table.
pub struct Nodes;

impl Component for Nodes {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (m, t) = (cx.model, cx.theme);
        let c = &m.cluster;
        let q = &c.node_query;
        let cols = [
            col("NAME", 14, 0),
            col("STATUS", 9, 0),
            col("CPU", 5, 1),
            col("MEM", 5, 1),
            col("DISK", 12, 2),
            col("LOAD", 6, 4),
            col("TREND", 16, 5),
            col("ALERTS", 6, 3),
            col("SINCE", 12, 6),
        ];
        let dir = if q.descending { "↓" } else { "↑" };
        let head = format!(
            "Nodes ({}/{}) sort {}{dir}{}",
            c.node_index.len(),
            c.nodes.len(),
            NODE_COLUMNS[q.sort.min(NODE_COLUMNS.len() - 1)],
            if q.filter.is_empty() {
                String::new()
            } else {
                format!(" /{}", q.filter)
            }
        );
        table(
            frame,
            area,
            title(head, t),
            &cols,
            c.node_index.len(),
            cx.selected,
            t,
            |i| {
                let n = &c.nodes[c.node_index[i]];
                let pct = |v: f64, warn: f64| {
                    (format!("{v:.0}%"), if v >= warn { t.crit } else { t.base })
                };
                let status = if n.draining {
                    format!("{} (dr)", n.status)
                } else {
                    n.status.to_string()
                };
                let trend = c
                    .trend
                    .get(&n.name)
                    .map(|s| sparkline(s.iter(), 16))
                    .unwrap_or_default();
                vec![
                    (n.name.clone(), t.base),
                    (status, t.tone(n.status)),
                    pct(n.cpu, 90.0),
                    pct(n.mem, 90.0),
                    (
                        format!("{:.0}% {}", n.disk, n.worst_disk),
                        if n.disk >= 90.0 { t.crit } else { t.base },
                    ),
                    (format!("{:.2}", n.load), t.base),
                    (trend, t.ok),
                    (
                        n.alerts.to_string(),
                        if n.alerts > 0 { t.warn } else { t.dim },
                    ),
                    (ago(m.now_ms, n.since_ms), t.dim),
                ]
            },
        );
    }

    fn commands(&self) -> &'static [Action] {
        &[
            Action::Enter,
            Action::Events,
            Action::Sort,
            Action::Reverse,
            Action::Drain,
            Action::Undrain,
            Action::Apply,
        ]
    }

    fn rows(&self, model: &Model) -> usize {
        model.cluster.node_index.len()
    }

    fn jump(&self, action: Action, model: &Model, selected: usize) -> Option<Nav> {
        let name = selected_node(model, selected)?;
        Some(match action {
            Action::Events => Nav::Events(name),
            _ => Nav::To(View::Node(name)),
        })
    }

    fn plan(&self, action: Action, model: &Model, selected: usize) -> Option<Plan> {
        node_plan(action, selected_node(model, selected)?)
    }
}

fn selected_node(model: &Model, selected: usize) -> Option<String> {
    let c = &model.cluster;
    c.node_index.get(selected).map(|&i| c.nodes[i].name.clone())
}

/// Drain, undrain and apply on a node: shared by the nodes and node views.
pub fn node_plan(action: Action, name: String) -> Option<Plan> {
    match action {
        Action::Drain => Some(Plan::Confirm(Change::drain(&name, true))),
        Action::Undrain => Some(Plan::Confirm(Change::drain(&name, false))),
        Action::Apply => Some(Plan::Prompt(Prompt::Apply { node: name })),
        _ => None,
    }
}
