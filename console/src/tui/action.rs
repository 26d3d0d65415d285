//! Everything a key can ask for. Keys map to actions (see `keymap`), and only
//! `App::update` turns actions into changes, never keys directly.

use strata_proto::v1::control_service_request::Action as ControlAction;

/// One thing the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Leave the console.
    Quit,
    /// Selection up one row.
    Up,
    /// Selection down one row.
    Down,
    /// First row.
    Top,
    /// Last row.
    Bottom,
    /// One page up.
    PageUp,
    /// One page down.
    PageDown,
    /// Drill into the selected row.
    Enter,
    /// Back to the previous view (or close the popup).
    Back,
    /// Keys of this view.
    Help,
    /// Open `:` command mode.
    Command,
    /// Open `/` filter mode.
    Filter,
    /// Logs of the selection.
    Logs,
    /// Events of the selection.
    Events,
    /// Node view (metrics) of the selection.
    Metrics,
    /// Sort by the next column.
    Sort,
    /// Flip the sort direction.
    Reverse,
    /// Start the selected instance or service.
    Start,
    /// Stop the selected instance or service.
    Stop,
    /// Restart the selected instance (or service in the services view).
    Restart,
    /// Restart the whole service on the selected instance's node.
    RestartService,
    /// Set a service's instance count (prompts).
    Scale,
    /// Drain the selected node.
    Drain,
    /// Undrain the selected node.
    Undrain,
    /// Apply a spec file (prompts for the path).
    Apply,
    /// Remove a down member now.
    ForceLeave,
    /// Pause or resume following logs.
    Pause,
    /// Wrap long log lines.
    Wrap,
    /// Show log timestamps.
    Timestamps,
    /// Switch the node charts between 15 minutes and 24 hours.
    Range,
    /// Cycle the events severity filter.
    Severity,
}

impl Action {
    /// Every action, for the help screen and config parsing.
    pub const ALL: [Action; 31] = [
        Action::Quit,
        Action::Up,
        Action::Down,
        Action::Top,
        Action::Bottom,
        Action::PageUp,
        Action::PageDown,
        Action::Enter,
        Action::Back,
        Action::Help,
        Action::Command,
        Action::Filter,
        Action::Logs,
        Action::Events,
        Action::Metrics,
        Action::Sort,
        Action::Reverse,
        Action::Start,
        Action::Stop,
        Action::Restart,
        Action::RestartService,
        Action::Scale,
        Action::Drain,
        Action::Undrain,
        Action::Apply,
        Action::ForceLeave,
        Action::Pause,
        Action::Wrap,
        Action::Timestamps,
        Action::Range,
        Action::Severity,
    ];

    /// The name used in the config file's `[keys]` table.
    pub fn name(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Up => "up",
            Action::Down => "down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::PageUp => "page_up",
            Action::PageDown => "page_down",
            Action::Enter => "enter",
            Action::Back => "back",
            Action::Help => "help",
            Action::Command => "command",
            Action::Filter => "filter",
            Action::Logs => "logs",
            Action::Events => "events",
            Action::Metrics => "metrics",
            Action::Sort => "sort",
            Action::Reverse => "reverse",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::RestartService => "restart_service",
            Action::Scale => "scale",
            Action::Drain => "drain",
            Action::Undrain => "undrain",
            Action::Apply => "apply",
            Action::ForceLeave => "force_leave",
            Action::Pause => "pause",
            Action::Wrap => "wrap",
            Action::Timestamps => "timestamps",
            Action::Range => "range",
            Action::Severity => "severity",
        }
    }

    /// What it does, for the help screen and footer.
    pub fn describe(self) -> &'static str {
        match self {
            Action::Quit => "quit",
            Action::Up => "up",
            Action::Down => "down",
            Action::Top => "top",
            Action::Bottom => "bottom",
            Action::PageUp => "page up",
            Action::PageDown => "page down",
            Action::Enter => "open",
            Action::Back => "back",
            Action::Help => "help",
            Action::Command => "command",
            Action::Filter => "filter",
            Action::Logs => "logs",
            Action::Events => "events",
            Action::Metrics => "node",
            Action::Sort => "sort",
            Action::Reverse => "reverse",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
            Action::RestartService => "restart service",
            Action::Scale => "scale",
            Action::Drain => "drain",
            Action::Undrain => "undrain",
            Action::Apply => "apply spec",
            Action::ForceLeave => "force-leave",
            Action::Pause => "pause",
            Action::Wrap => "wrap",
            Action::Timestamps => "times",
            Action::Range => "15m/24h",
            Action::Severity => "severity",
        }
    }

    /// Whether it changes the cluster (hidden with `--readonly`).
    pub fn is_change(self) -> bool {
        matches!(
            self,
            Action::Start
                | Action::Stop
                | Action::Restart
                | Action::RestartService
                | Action::Scale
                | Action::Drain
                | Action::Undrain
                | Action::Apply
                | Action::ForceLeave
        )
    }

    /// The control action a start, stop or restart key asks for.
    pub fn control(self) -> Option<ControlAction> {
        match self {
            Action::Start => Some(ControlAction::start()),
            Action::Stop => Some(ControlAction::stop()),
            Action::Restart | Action::RestartService => Some(ControlAction::restart()),
            _ => None,
        }
    }

    /// The action named `name` in the config file.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}
