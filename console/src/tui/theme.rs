//! Colours: dark (default), light and monochrome; `NO_COLOR` forces monochrome.

use crate::model::tone::{Tone, Toned};
use ratatui::style::{Color, Modifier, Style};

/// The styles views draw with.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// Normal text.
    pub base: Style,
    /// The header and footer bars.
    pub bar: Style,
    /// Table headers and titles.
    pub title: Style,
    /// The selected row.
    pub selected: Style,
    /// Healthy.
    pub ok: Style,
    /// Needs a look.
    pub warn: Style,
    /// Broken.
    pub crit: Style,
    /// Less important text.
    pub dim: Style,
    /// Key names in the footer and help; filter highlights.
    pub key: Style,
}

impl Theme {
    /// The theme called `name` (dark when unknown); mono when `no_color`.
    pub fn named(name: &str, no_color: bool) -> Theme {
        if no_color {
            return Theme::mono();
        }
        match name {
            "light" => Theme::light(),
            "mono" => Theme::mono(),
            _ => Theme::dark(),
        }
    }

    fn dark() -> Theme {
        Theme {
            base: Style::new().fg(Color::Gray),
            bar: Style::new().fg(Color::White).bg(Color::DarkGray),
            title: Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            selected: Style::new().bg(Color::Blue).fg(Color::White),
            ok: Style::new().fg(Color::Green),
            warn: Style::new().fg(Color::Yellow),
            crit: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            dim: Style::new().fg(Color::DarkGray),
            key: Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        }
    }

    fn light() -> Theme {
        Theme {
            base: Style::new().fg(Color::Black),
            bar: Style::new().fg(Color::Black).bg(Color::Gray),
            title: Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD),
            selected: Style::new().bg(Color::LightBlue).fg(Color::Black),
            ok: Style::new().fg(Color::Green),
            warn: Style::new().fg(Color::Magenta),
            crit: Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            dim: Style::new().fg(Color::DarkGray),
            key: Style::new().fg(Color::Blue).add_modifier(Modifier::BOLD),
        }
    }

    fn mono() -> Theme {
        Theme {
            base: Style::new(),
            bar: Style::new().add_modifier(Modifier::REVERSED),
            title: Style::new().add_modifier(Modifier::BOLD),
            selected: Style::new().add_modifier(Modifier::REVERSED),
            ok: Style::new(),
            warn: Style::new().add_modifier(Modifier::UNDERLINED),
            crit: Style::new().add_modifier(Modifier::BOLD),
            dim: Style::new(),
            key: Style::new().add_modifier(Modifier::BOLD),
        }
    }

    /// The style of a state, health, status or severity, by its tone.
    pub fn tone(&self, value: impl Toned) -> Style {
        match value.tone() {
            Tone::Good => self.ok,
            Tone::Warn => self.warn,
            Tone::Bad => self.crit,
            Tone::Plain => self.base,
        }
    }
}
