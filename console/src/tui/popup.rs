//! Popups drawn over the view, on a stack: help, the confirmation dialog, prompts and
//! results. Confirming is the only way a change reaches the agent.

use super::component::Prompt;
use super::theme::Theme;
use crate::client::ops::Op;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

/// A popup.
#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    /// Keys of the current view: (key, what) pairs.
    Help(Vec<(String, String)>),
    /// "Restart service web on node n2 (3 instances)?" with y/n.
    Confirm {
        /// The question.
        question: String,
        /// What runs on yes.
        ops: Vec<Op>,
    },
    /// Asks for a value.
    Input {
        /// What for.
        prompt: Prompt,
        /// Typed so far.
        text: String,
    },
    /// A result or an error.
    Message {
        /// Title.
        title: String,
        /// Text.
        text: String,
        /// An error.
        error: bool,
    },
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(area);
    let [cell] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(row);
    cell
}

/// Draws `popup` centred over `area`.
pub fn draw(frame: &mut Frame, area: Rect, popup: &Popup, theme: &Theme) {
    let (title, lines, style): (String, Vec<Line>, _) = match popup {
        Popup::Help(keys) => (
            "Keys".into(),
            keys.iter()
                .map(|(k, w)| {
                    Line::from(vec![
                        Span::styled(format!("{k:>8}  "), theme.key),
                        Span::raw(w.clone()),
                    ])
                })
                .collect(),
            theme.base,
        ),
        Popup::Confirm { question, .. } => (
            "Confirm".into(),
            vec![
                Line::raw(question.clone()),
                Line::raw(""),
                Line::from(vec![
                    Span::styled("y", theme.key),
                    Span::raw(" yes   "),
                    Span::styled("n", theme.key),
                    Span::raw("/"),
                    Span::styled("esc", theme.key),
                    Span::raw(" no"),
                ]),
            ],
            theme.warn,
        ),
        Popup::Input { prompt, text } => {
            let ask = match prompt {
                Prompt::Scale { service, .. } => format!("Instances of {service}:"),
                Prompt::Apply { node } => format!(
                    "Spec file to apply on {}:",
                    if node.is_empty() {
                        "the contacted agent"
                    } else {
                        node
                    }
                ),
            };
            (
                "Input".into(),
                vec![
                    Line::raw(ask),
                    Line::styled(format!("> {text}_"), theme.key),
                ],
                theme.base,
            )
        }
        Popup::Message { title, text, error } => (
            title.clone(),
            vec![
                Line::raw(text.clone()),
                Line::raw(""),
                Line::styled("esc/enter to close", theme.dim),
            ],
            if *error { theme.crit } else { theme.ok },
        ),
    };
    let width = lines
        .iter()
        .map(|l| l.width() as u16)
        .max()
        .unwrap_or(20)
        .clamp(30, area.width.saturating_sub(4).max(30))
        + 4;
    let height = lines.len() as u16 + 2;
    let rect = centered(area, width, height);
    frame.render_widget(Clear, rect);
    let block = Block::bordered()
        .title(format!(" {title} "))
        .border_style(style);
    frame.render_widget(
        Paragraph::new(lines)
            .block(block)
            .style(theme.base)
            .wrap(Wrap { trim: false }),
        rect,
    );
}
