//! One module per view; [`component`] picks the one for a [`View`].

mod events;
mod logs;
mod members;
mod node;
mod nodes;
mod overview;
mod service;
mod services;

use super::component::{Component, View};

/// The component drawing `view`.
pub fn component(view: &View) -> &'static dyn Component {
    match view {
        View::Overview => &overview::Overview,
        View::Nodes => &nodes::Nodes,
        View::Node(_) => &node::Node,
        View::Services => &services::Services,
        View::Service(_) => &service::Service,
        View::Logs => &logs::Logs,
        View::Events => &events::Events,
        View::Members => &members::Members,
    }
}

/// The header's name of `view`.
pub fn name(view: &View) -> String {
    match view {
        View::Overview => "overview".into(),
        View::Nodes => "nodes".into(),
        View::Node(n) => format!("node {n}"),
        View::Services => "services".into(),
        View::Service(s) => format!("service {s}"),
        View::Logs => "logs".into(),
        View::Events => "events".into(),
        View::Members => "members".into(),
    }
}
