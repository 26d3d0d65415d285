//! Every service across the cluster from the catalog: instances passing/total, frontend
//! port, version, restarts (once fetched per node), nodes.

use crate::client::change::Change;
use crate::model::Model;
use crate::model::cluster::SERVICE_COLUMNS;
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, Plan, Prompt, View};
use crate::tui::widgets::{col, join_within, table, title};
use ratatui::Frame;
use ratatui::layout::Rect;

/// The services table.
pub struct Services;

impl Component for Services {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let t = cx.theme;
        let c = &cx.model.cluster;
        let q = &c.service_query;
        let cols = [
            col("NAME", 16, 0),
            col("PASSING", 8, 0),
            col("PORT", 10, 2),
            col("VERSION", 10, 3),
            col("RESTARTS", 8, 1),
            col("NODES", 20, 4),
        ];
        let head = format!(
            "Services ({}) sort {}{}",
            c.service_index.len(),
            SERVICE_COLUMNS[q.sort.min(SERVICE_COLUMNS.len() - 1)],
            if q.descending { "↓" } else { "↑" }
        );
        table(
            frame,
            area,
            title(head, t),
            &cols,
            c.service_index.len(),
            cx.selected,
            t,
            |i| {
                let s = &c.services[c.service_index[i]];
                let health = if s.broken > 0 || s.passing == 0 {
                    t.crit
                } else if s.passing < s.total {
                    t.warn
                } else {
                    t.ok
                };
                vec![
                    (s.name.clone(), t.base),
                    (format!("{}/{}", s.passing, s.total), health),
                    (s.ports.clone(), t.base),
                    (s.version.clone(), t.dim),
                    (s.restarts.map_or("-".into(), |r| r.to_string()), t.base),
                    (join_within(&s.nodes, ",", usize::from(area.width)), t.dim),
                ]
            },
        );
    }

    fn commands(&self) -> &'static [Action] {
        &[
            Action::Enter,
            Action::Logs,
            Action::Sort,
            Action::Restart,
            Action::Stop,
            Action::Start,
            Action::Scale,
        ]
    }

    fn rows(&self, model: &Model) -> usize {
        model.cluster.service_index.len()
    }

    fn jump(&self, action: Action, model: &Model, selected: usize) -> Option<Nav> {
        let name = selected_service(model, selected)?;
        Some(match action {
            Action::Logs => Nav::service_logs(model, &name, 0),
            _ => Nav::To(View::Service(name)),
        })
    }

    fn plan(&self, action: Action, model: &Model, selected: usize) -> Option<Plan> {
        let name = selected_service(model, selected)?;
        service_plan(action, &name, &model.cluster.service_nodes(&name))
    }
}

fn selected_service(model: &Model, selected: usize) -> Option<String> {
    let c = &model.cluster;
    c.service_index
        .get(selected)
        .map(|&i| c.services[i].name.clone())
}

/// Start, stop, restart or scale a whole service on `nodes` (name, instances).
pub fn service_plan(action: Action, name: &str, nodes: &[(String, usize)]) -> Option<Plan> {
    if action == Action::Scale {
        return Some(Plan::Prompt(Prompt::Scale {
            service: name.to_string(),
            nodes: nodes.to_vec(),
        }));
    }
    Some(Plan::Confirm(Change::service(
        action.control()?,
        name,
        nodes,
    )))
}
