//! The gitui-style component trait every view implements: draw from the model, list
//! the actions that matter here, and answer actions with a navigation or a plan.

use super::action::Action;
use super::theme::Theme;
use crate::client::change::Change;
use crate::model::Model;
use crate::model::logs::LogTarget;
use ratatui::Frame;
use ratatui::layout::Rect;

/// What a view draws with.
pub struct Ctx<'a> {
    /// The data.
    pub model: &'a Model,
    /// Styles.
    pub theme: &'a Theme,
    /// The selected row.
    pub selected: usize,
}

/// The views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// Start screen: counts and problems.
    Overview,
    /// All nodes.
    Nodes,
    /// One node.
    Node(String),
    /// All services.
    Services,
    /// One service.
    Service(String),
    /// Followed logs.
    Logs,
    /// The event timeline.
    Events,
    /// Gossip members.
    Members,
}

/// Where an action leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nav {
    /// Another view.
    To(View),
    /// Follow logs of a target on these nodes.
    Logs(LogTarget, Vec<String>),
    /// The events view filtered by text.
    Events(String),
}

impl Nav {
    /// Follow the logs of `service` (one instance, or 0 for all) on every node that runs it.
    pub fn service_logs(model: &Model, service: &str, instance: u32) -> Nav {
        let nodes: Vec<String> = model
            .cluster
            .service_nodes(service)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let node = match nodes.as_slice() {
            [only] => only.clone(),
            _ => String::new(),
        };
        let target = LogTarget {
            node,
            service: service.to_string(),
            instance,
        };
        Nav::Logs(target, nodes)
    }
}

/// What a change action needs before it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Ask the change's question and run its ops on yes.
    Confirm(Change),
    /// Ask for a value first (a count or a path), then confirm.
    Prompt(Prompt),
    /// Explain why nothing can be done here.
    Refuse(String),
}

/// The values a prompt asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// A new instance count for `service` on `nodes`.
    Scale {
        /// Service.
        service: String,
        /// Nodes, each with the service's number of instances there.
        nodes: Vec<(String, usize)>,
    },
    /// A spec file to apply on `node`.
    Apply {
        /// Node ("" for the contacted agent).
        node: String,
    },
}

/// One screen of the console.
pub trait Component {
    /// Draws the view.
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx);
    /// The actions that matter here, for the footer and help.
    fn commands(&self) -> &'static [Action];
    /// Selectable rows.
    fn rows(&self, _model: &Model) -> usize {
        0
    }
    /// Where Enter, `l`, `e` or `m` lead from the selected row.
    fn jump(&self, _action: Action, _model: &Model, _selected: usize) -> Option<Nav> {
        None
    }
    /// What a change action on the selected row would do.
    fn plan(&self, _action: Action, _model: &Model, _selected: usize) -> Option<Plan> {
        None
    }
}
