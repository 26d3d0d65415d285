//! Gossip's view of the cluster: status, incarnation, addresses, last change; and
//! force-leave for a member that is down.

use crate::client::change::Change;
use crate::model::Model;
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, Plan, View};
use crate::tui::widgets::{ago, col, table, title};
use ratatui::Frame;
use ratatui::layout::Rect;
use strata_proto::v1::MemberStatus;

/// The members table.
pub struct Members;

impl Component for Members {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (m, t) = (cx.model, cx.theme);
        let c = &m.cluster;
        let cols = [
            col("NAME", 14, 0),
            col("STATUS", 8, 0),
            col("INC", 5, 2),
            col("GOSSIP", 21, 3),
            col("API", 21, 1),
            col("SINCE", 14, 1),
            col("NOTES", 12, 4),
        ];
        table(
            frame,
            area,
            title(format!("Members ({})", c.member_index.len()), t),
            &cols,
            c.member_index.len(),
            cx.selected,
            t,
            |i| {
                let Some(mb) = c.members.get(&c.member_index[i]) else {
                    return Vec::new();
                };
                let mut notes = Vec::new();
                if mb.draining {
                    notes.push("draining".to_string());
                }
                if !mb.conflict.is_empty() {
                    notes.push(format!("conflict {}", mb.conflict));
                }
                vec![
                    (mb.name.clone(), t.base),
                    (mb.status().to_string(), t.tone(mb.status())),
                    (mb.incarnation.to_string(), t.dim),
                    (mb.gossip_addr.clone(), t.base),
                    (mb.grpc_addr.clone(), t.base),
                    (ago(m.now_ms, mb.since_unix_ms), t.dim),
                    (notes.join(", "), t.warn),
                ]
            },
        );
    }

    fn commands(&self) -> &'static [Action] {
        &[Action::Enter, Action::Events, Action::ForceLeave]
    }

    fn rows(&self, model: &Model) -> usize {
        model.cluster.member_index.len()
    }

    fn jump(&self, action: Action, model: &Model, selected: usize) -> Option<Nav> {
        let name = model.cluster.member_index.get(selected)?.clone();
        Some(if action == Action::Events {
            Nav::Events(name)
        } else {
            Nav::To(View::Node(name))
        })
    }

    fn plan(&self, action: Action, model: &Model, selected: usize) -> Option<Plan> {
        if action != Action::ForceLeave {
            return None;
        }
        let member = model
            .cluster
            .members
            .get(model.cluster.member_index.get(selected)?)?;
        if member.status() != MemberStatus::Down {
            return Some(Plan::Refuse(format!(
                "{} is {}: only a down member can be forced to leave",
                member.name, member.status
            )));
        }
        Some(Plan::Confirm(Change::force_leave(&member.name)))
    }
}
