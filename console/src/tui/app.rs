//! The console's UI state and its update function: keys become actions, actions change
//! the view stack, selection, modes and popups, and queue [`Request`]s for the network.

use super::action::Action;
use super::component::{Component, Ctx, Nav, Plan, Prompt, View};
use super::keymap::Keymap;
use super::net::Request;
use super::popup::{self, Popup};
use super::theme::Theme;
use super::views;
use crate::client::change::Change;
use crate::model::Model;
use crate::model::conn::ConnState;
use crate::model::detail::Range;
use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use std::collections::HashMap;
use strata_proto::v1::control_service_request::Action as ControlAction;

/// Commands of `:` mode, for completion.
pub const COMMANDS: [&str; 10] = [
    "overview", "nodes", "node", "services", "service", "logs", "events", "members", "help", "quit",
];

/// What keys currently edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Keys are actions.
    Normal,
    /// Typing a `:` command.
    Command(String),
    /// Typing a `/` filter.
    Filter(String),
}

/// The UI state.
pub struct App {
    /// The view shown.
    pub view: View,
    /// Earlier views with their selection, for Esc.
    pub history: Vec<(View, usize)>,
    /// Selected row per view.
    pub selected: HashMap<View, usize>,
    /// Keys edit a command or filter, or are actions.
    pub mode: Mode,
    /// Popups, topmost last.
    pub popups: Vec<Popup>,
    /// Keys to actions.
    pub keymap: Keymap,
    /// Styles.
    pub theme: Theme,
    /// Hide and refuse changes (`--readonly`).
    pub readonly: bool,
    /// Why the agent refuses changes from us, when it does: changes are hidden then too.
    pub refused: Option<String>,
    /// Set by quit.
    pub quit: bool,
    /// Requests for the network side, drained by the loop.
    pub outbox: Vec<Request>,
    /// Rows per page, from the last draw.
    pub page: usize,
    /// Completion candidates shown in command mode.
    pub candidates: Vec<String>,
}

impl std::hash::Hash for View {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        if let View::Node(n) | View::Service(n) = self {
            n.hash(state);
        }
    }
}

impl App {
    /// A new UI on the overview.
    pub fn new(keymap: Keymap, theme: Theme, readonly: bool) -> App {
        App {
            view: View::Overview,
            history: Vec::new(),
            selected: HashMap::new(),
            mode: Mode::Normal,
            popups: Vec::new(),
            keymap,
            theme,
            readonly,
            refused: None,
            quit: false,
            outbox: Vec::new(),
            page: 10,
            candidates: Vec::new(),
        }
    }

    /// Whether changes are hidden and refused, by flag or because the agent would refuse them.
    pub fn is_readonly(&self) -> bool {
        self.readonly || self.refused.is_some()
    }

    fn component(&self) -> &'static dyn Component {
        views::component(&self.view)
    }

    /// The selected row of the current view.
    pub fn sel(&self) -> usize {
        self.selected.get(&self.view).copied().unwrap_or(0)
    }

    fn set_sel(&mut self, model: &Model, value: i64) {
        let rows = self.component().rows(model) as i64;
        let v = value.clamp(0, (rows - 1).max(0)) as usize;
        self.selected.insert(self.view.clone(), v);
    }

    /// Handles one key press.
    pub fn key(&mut self, model: &mut Model, key: KeyEvent) {
        if let Some(popup) = self.popups.last_mut() {
            match popup {
                Popup::Confirm { question, ops } => match key.code {
                    KeyCode::Char('y') | KeyCode::Char('Y') => {
                        let (label, ops) =
                            (question.trim_end_matches('?').to_string(), ops.clone());
                        self.popups.pop();
                        model.pending_actions += 1;
                        model.last_action = None;
                        self.outbox.push(Request::Run { label, ops });
                    }
                    KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {
                        self.popups.pop();
                    }
                    _ => {}
                },
                Popup::Input { prompt, text } => match key.code {
                    KeyCode::Esc => {
                        self.popups.pop();
                    }
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Char(c) => text.push(c),
                    KeyCode::Enter => {
                        let (prompt, text) = (prompt.clone(), text.trim().to_string());
                        self.popups.pop();
                        self.popups.push(confirm_prompt(&prompt, &text));
                    }
                    _ => {}
                },
                Popup::Help(_) | Popup::Message { .. } => {
                    if matches!(
                        key.code,
                        KeyCode::Esc | KeyCode::Enter | KeyCode::Char('q') | KeyCode::Char('?')
                    ) {
                        self.popups.pop();
                    }
                }
            }
            return;
        }
        match &mut self.mode {
            Mode::Command(text) => match key.code {
                KeyCode::Esc => self.mode = Mode::Normal,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Tab => {
                    let (done, candidates) = complete(text, model);
                    *text = done;
                    self.candidates = candidates;
                }
                KeyCode::Enter => {
                    let line = text.trim().to_string();
                    self.mode = Mode::Normal;
                    self.candidates.clear();
                    self.command(model, &line);
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            },
            Mode::Filter(text) => {
                match key.code {
                    KeyCode::Esc => {
                        text.clear();
                        let t = String::new();
                        self.mode = Mode::Normal;
                        self.set_filter(model, &t);
                        return;
                    }
                    KeyCode::Enter => {
                        self.mode = Mode::Normal;
                        return;
                    }
                    KeyCode::Backspace => {
                        text.pop();
                    }
                    KeyCode::Char(c) => text.push(c),
                    _ => return,
                }
                let t = text.clone();
                self.set_filter(model, &t);
            }
            Mode::Normal => {
                if let Some(action) = self.keymap.action(key) {
                    self.update(model, action);
                }
            }
        }
    }

    fn set_filter(&mut self, model: &mut Model, text: &str) {
        match self.view {
            View::Nodes => {
                model.cluster.node_query.filter = text.to_string();
                model.cluster.touch();
            }
            View::Services => {
                model.cluster.service_query.filter = text.to_string();
                model.cluster.touch();
            }
            View::Members => {
                model.cluster.member_query.filter = text.to_string();
                model.cluster.touch();
            }
            View::Events => {
                model.timeline.filter = text.to_string();
                model.timeline.touch();
            }
            View::Logs => model.logs.set_filter(text),
            _ => {}
        }
        model.refresh();
        self.set_sel(model, 0);
    }

    /// Applies one action.
    pub fn update(&mut self, model: &mut Model, action: Action) {
        if action.is_change() && self.is_readonly() {
            return;
        }
        let sel = self.sel() as i64;
        let page = self.page.max(1) as i64;
        let logs = self.view == View::Logs;
        match action {
            Action::Quit => self.quit = true,
            Action::Up if logs => model.logs.scroll_by(1),
            Action::Down if logs => model.logs.scroll_by(-1),
            Action::PageUp if logs => model.logs.scroll_by(page),
            Action::PageDown if logs => model.logs.scroll_by(-page),
            Action::Top if logs => model.logs.top(),
            Action::Bottom if logs => model.logs.end(),
            Action::Up => self.set_sel(model, sel - 1),
            Action::Down => self.set_sel(model, sel + 1),
            Action::PageUp => self.set_sel(model, sel - page),
            Action::PageDown => self.set_sel(model, sel + page),
            Action::Top => self.set_sel(model, 0),
            Action::Bottom => self.set_sel(model, i64::MAX / 2),
            Action::Back => self.back(model),
            Action::Help => self.popups.push(Popup::Help(self.help())),
            Action::Command => {
                self.mode = Mode::Command(String::new());
                self.candidates.clear();
            }
            Action::Filter => self.mode = Mode::Filter(String::new()),
            Action::Enter | Action::Logs | Action::Events | Action::Metrics => {
                if let Some(nav) = self.component().jump(action, model, self.sel()) {
                    self.navigate(model, nav);
                }
            }
            Action::Sort | Action::Reverse => {
                let q = match self.view {
                    View::Nodes => &mut model.cluster.node_query,
                    View::Services => &mut model.cluster.service_query,
                    _ => return,
                };
                let columns = if self.view == View::Nodes {
                    crate::model::cluster::NODE_COLUMNS.len()
                } else {
                    crate::model::cluster::SERVICE_COLUMNS.len()
                };
                if action == Action::Sort {
                    q.sort = (q.sort + 1) % columns;
                } else {
                    q.descending = !q.descending;
                }
                model.cluster.touch();
                model.refresh();
            }
            Action::Pause => model.logs.toggle_pause(),
            Action::Wrap => model.logs.wrap = !model.logs.wrap,
            Action::Timestamps => model.logs.timestamps = !model.logs.timestamps,
            Action::Range => {
                if let View::Node(name) = &self.view {
                    model.node.range = match model.node.range {
                        Range::Minutes15 => Range::Hours24,
                        Range::Hours24 => Range::Minutes15,
                    };
                    let name = name.clone();
                    model.open_node(&name);
                    self.outbox.push(Request::Node {
                        name,
                        range: model.node.range,
                    });
                }
            }
            Action::Severity => {
                model.timeline.cycle_severity();
                model.refresh();
            }
            _ => match self.component().plan(action, model, self.sel()) {
                Some(Plan::Confirm(change)) => self.popups.push(confirm(change)),
                Some(Plan::Prompt(prompt)) => self.popups.push(Popup::Input {
                    prompt,
                    text: String::new(),
                }),
                Some(Plan::Refuse(why)) => self.popups.push(Popup::Message {
                    title: "Not here".into(),
                    text: why,
                    error: true,
                }),
                None => {}
            },
        }
    }

    /// Goes to `nav`, remembering the current view for Esc.
    pub fn navigate(&mut self, model: &mut Model, nav: Nav) {
        let target = match nav {
            Nav::To(v) => v,
            Nav::Logs(target, nodes) => {
                let generation = model.logs.open(target.clone());
                self.outbox.push(Request::Logs {
                    target,
                    nodes,
                    generation,
                });
                View::Logs
            }
            Nav::Events(filter) => {
                model.timeline.filter = filter;
                model.timeline.touch();
                model.refresh();
                View::Events
            }
        };
        if target == self.view {
            return;
        }
        self.history.push((self.view.clone(), self.sel()));
        self.show(model, target);
    }

    fn show(&mut self, model: &mut Model, view: View) {
        if self.view == View::Logs && view != View::Logs {
            self.outbox.push(Request::CloseLogs);
        }
        if matches!(self.view, View::Node(_)) && !matches!(view, View::Node(_)) {
            self.outbox.push(Request::CloseNode);
        }
        match &view {
            View::Node(name) => {
                model.open_node(name);
                self.outbox.push(Request::Node {
                    name: name.clone(),
                    range: model.node.range,
                });
            }
            View::Service(name) => {
                model.open_service(name);
                self.outbox.push(self.service_request(model, name));
            }
            _ => {}
        }
        self.view = view;
    }

    /// The request that refreshes the service view of `name`.
    pub fn service_request(&self, model: &Model, name: &str) -> Request {
        let nodes = model
            .cluster
            .service_nodes(name)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        Request::Service {
            name: name.to_string(),
            nodes,
        }
    }

    fn back(&mut self, model: &mut Model) {
        if let Some((view, sel)) = self.history.pop() {
            self.show(model, view.clone());
            self.selected.insert(view, sel);
        }
    }

    /// Runs a `:` command line.
    pub fn command(&mut self, model: &mut Model, line: &str) {
        let mut words = line.split_whitespace();
        let (cmd, arg) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let nav = match cmd {
            "overview" | "o" => Nav::To(View::Overview),
            "nodes" | "no" => Nav::To(View::Nodes),
            "node" if !arg.is_empty() => Nav::To(View::Node(arg.to_string())),
            "services" | "svc" => Nav::To(View::Services),
            "service" if !arg.is_empty() => Nav::To(View::Service(arg.to_string())),
            "events" | "ev" => Nav::To(View::Events),
            "members" => Nav::To(View::Members),
            "logs" if !arg.is_empty() => {
                let (service, instance) = match arg.split_once('/') {
                    Some((s, i)) => (s, i.parse().unwrap_or(0)),
                    None => (arg, 0),
                };
                Nav::service_logs(model, service, instance)
            }
            "help" => {
                self.popups.push(Popup::Help(self.help()));
                return;
            }
            "q" | "quit" => {
                self.quit = true;
                return;
            }
            _ => {
                self.popups.push(Popup::Message {
                    title: "Unknown command".into(),
                    text: format!(
                        ":{line} (try :nodes, :services, :events, :members, :logs NAME, :node NAME)"
                    ),
                    error: true,
                });
                return;
            }
        };
        self.navigate(model, nav);
    }

    /// (key, description) of every action this view offers, plus the global ones.
    pub fn help(&self) -> Vec<(String, String)> {
        let mut actions: Vec<Action> = self.component().commands().to_vec();
        actions.extend([
            Action::Up,
            Action::Down,
            Action::Top,
            Action::Bottom,
            Action::PageUp,
            Action::PageDown,
            Action::Command,
            Action::Filter,
            Action::Back,
            Action::Help,
            Action::Quit,
        ]);
        actions
            .into_iter()
            .filter(|a| !(self.is_readonly() && a.is_change()))
            .filter_map(|a| self.keymap.key_of(a).map(|k| (k, a.describe().to_string())))
            .collect()
    }

    /// Draws the whole screen.
    pub fn draw(&mut self, frame: &mut Frame, model: &Model) {
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.page = body.height.saturating_sub(3).max(1) as usize;
        frame.render_widget(
            Paragraph::new(self.header_line(model)).style(self.theme.bar),
            header,
        );
        let cx = Ctx {
            model,
            theme: &self.theme,
            selected: self.sel(),
        };
        self.component().draw(frame, body, &cx);
        frame.render_widget(
            Paragraph::new(self.footer_line(model)).style(self.theme.bar),
            footer,
        );
        if let Some(p) = self.popups.last() {
            popup::draw(frame, body, p, &self.theme);
        }
    }

    fn header_line(&self, model: &Model) -> Line<'static> {
        let t = &self.theme;
        let (state, style) = match &model.conn {
            ConnState::Connecting => ("connecting".to_string(), t.warn),
            ConnState::Connected => ("connected".to_string(), t.ok),
            ConnState::Reconnecting { retry_at_ms, .. } => {
                let secs = ((retry_at_ms - model.now_ms).max(0) + 999) / 1000;
                (format!("reconnecting in {secs}s · stale data"), t.crit)
            }
        };
        let mut spans = vec![
            Span::styled(" strata ", t.title),
            Span::raw(format!(
                "{} · {} nodes · ",
                model.agent,
                model.cluster.members.len().max(model.cluster.records.len())
            )),
            Span::styled(state, style),
            Span::raw(format!(" · {}", views::name(&self.view))),
        ];
        if let Some(reason) = &self.refused {
            spans.push(Span::styled(format!(" · READONLY: {reason}"), t.warn));
        } else if self.readonly {
            spans.push(Span::styled(" · READONLY", t.warn));
        }
        if model.pending_actions > 0 {
            spans.push(Span::styled(" · working…", t.warn));
        } else if let Some(a) = &model.last_action {
            let (text, style) = match &a.result {
                Ok(m) => (format!(" · ✓ {}: {m}", a.label), t.ok),
                Err(e) => (format!(" · ✗ {}: {e}", a.label), t.crit),
            };
            spans.push(Span::styled(text, style));
        }
        Line::from(spans)
    }

    fn footer_line(&self, _model: &Model) -> Line<'static> {
        let t = &self.theme;
        match &self.mode {
            Mode::Command(text) => {
                let hint = if self.candidates.is_empty() {
                    String::new()
                } else {
                    format!("   [{}]", self.candidates.join(" "))
                };
                Line::from(vec![
                    Span::styled(format!(":{text}_"), t.key),
                    Span::raw(hint),
                ])
            }
            Mode::Filter(text) => Line::from(vec![
                Span::styled(format!("/{text}_"), t.key),
                Span::raw("   enter keep · esc clear"),
            ]),
            Mode::Normal => {
                let mut spans = Vec::new();
                let mut actions: Vec<Action> = self.component().commands().to_vec();
                actions.extend([
                    Action::Command,
                    Action::Filter,
                    Action::Back,
                    Action::Help,
                    Action::Quit,
                ]);
                for a in actions
                    .into_iter()
                    .filter(|a| !(self.is_readonly() && a.is_change()))
                {
                    if let Some(k) = self.keymap.key_of(a) {
                        spans.push(Span::styled(format!(" {k}"), t.key));
                        spans.push(Span::raw(format!(" {}", a.describe())));
                    }
                }
                Line::from(spans)
            }
        }
    }
}

/// The confirmation dialog of `change`.
fn confirm(Change { question, ops }: Change) -> Popup {
    Popup::Confirm { question, ops }
}

/// What a prompt's answer leads to: the change to confirm, or why the answer is no good.
fn confirm_prompt(prompt: &Prompt, text: &str) -> Popup {
    match prompt {
        Prompt::Scale { service, nodes } => match text.parse::<u32>() {
            Ok(count) => confirm(Change::service(ControlAction::scale(count), service, nodes)),
            Err(_) => Popup::Message {
                title: "Scale".into(),
                text: format!("{text:?} is not a number of instances"),
                error: true,
            },
        },
        Prompt::Apply { .. } if text.is_empty() => Popup::Message {
            title: "Apply".into(),
            text: "no file given".into(),
            error: true,
        },
        Prompt::Apply { node } => confirm(Change::apply(node, text)),
    }
}

/// Completes a command line: the completed text and the candidates when ambiguous.
pub fn complete(text: &str, model: &Model) -> (String, Vec<String>) {
    let (head, word, pool): (String, &str, Vec<String>) = match text.split_once(' ') {
        None => (
            String::new(),
            text,
            COMMANDS.iter().map(|s| s.to_string()).collect(),
        ),
        Some((cmd, arg)) => {
            let pool = match cmd {
                "node" => model.cluster.nodes.iter().map(|n| n.name.clone()).collect(),
                "service" | "logs" => model
                    .cluster
                    .services
                    .iter()
                    .map(|s| s.name.clone())
                    .collect(),
                _ => Vec::new(),
            };
            (format!("{cmd} "), arg.trim_start(), pool)
        }
    };
    let matches: Vec<String> = pool.into_iter().filter(|c| c.starts_with(word)).collect();
    match matches.len() {
        0 => (text.to_string(), Vec::new()),
        1 => {
            let sep =
                if head.is_empty() && matches!(matches[0].as_str(), "node" | "service" | "logs") {
                    " "
                } else {
                    ""
                };
            (format!("{head}{}{sep}", matches[0]), Vec::new())
        }
        _ => {
            let mut prefix = matches[0].clone();
            for m in &matches[1..] {
                while !m.starts_with(&prefix) {
                    prefix.pop();
                }
            }
            (
                format!("{head}{prefix}"),
                matches.into_iter().take(12).collect(),
            )
        }
    }
}
