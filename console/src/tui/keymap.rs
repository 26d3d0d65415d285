//! Keys to actions: the built-in map, key names as written in the config file, and
//! remapping from the config's `[keys]` table.

use super::action::Action;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::HashMap;

/// A key as the keymap compares it: shift is folded into the character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// The key.
    pub code: KeyCode,
    /// Ctrl and Alt only.
    pub mods: KeyModifiers,
}

impl Key {
    /// Normalises a terminal key event.
    pub fn from_event(event: KeyEvent) -> Key {
        let mut mods = event.modifiers & (KeyModifiers::CONTROL | KeyModifiers::ALT);
        let code = match event.code {
            KeyCode::Char(c) if mods.contains(KeyModifiers::CONTROL) => {
                KeyCode::Char(c.to_ascii_lowercase())
            }
            KeyCode::BackTab => {
                mods |= KeyModifiers::SHIFT;
                KeyCode::Tab
            }
            other => other,
        };
        Key { code, mods }
    }

    /// Parses a config key name: "q", "G", "ctrl-c", "enter", "esc", "pgdown", "f5".
    pub fn parse(text: &str) -> Option<Key> {
        let (mods, name) = match text.strip_prefix("ctrl-") {
            Some(rest) => (KeyModifiers::CONTROL, rest),
            None => match text.strip_prefix("alt-") {
                Some(rest) => (KeyModifiers::ALT, rest),
                None => (KeyModifiers::NONE, text),
            },
        };
        let code = match name {
            "enter" => KeyCode::Enter,
            "esc" => KeyCode::Esc,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pgup" | "pageup" => KeyCode::PageUp,
            "pgdown" | "pgdn" | "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "tab" => KeyCode::Tab,
            "backspace" => KeyCode::Backspace,
            "space" => KeyCode::Char(' '),
            _ => {
                if let Some(n) = name.strip_prefix('f').and_then(|n| n.parse::<u8>().ok()) {
                    KeyCode::F(n)
                } else {
                    let mut chars = name.chars();
                    let c = chars.next()?;
                    if chars.next().is_some() {
                        return None;
                    }
                    KeyCode::Char(if mods.contains(KeyModifiers::CONTROL) {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    })
                }
            }
        };
        Some(Key { code, mods })
    }

    /// The name shown in the footer and help: "q", "ctrl-c", "enter".
    pub fn label(&self) -> String {
        let base = match self.code {
            KeyCode::Enter => "enter".to_string(),
            KeyCode::Esc => "esc".to_string(),
            KeyCode::Up => "↑".to_string(),
            KeyCode::Down => "↓".to_string(),
            KeyCode::Left => "←".to_string(),
            KeyCode::Right => "→".to_string(),
            KeyCode::PageUp => "pgup".to_string(),
            KeyCode::PageDown => "pgdn".to_string(),
            KeyCode::Home => "home".to_string(),
            KeyCode::End => "end".to_string(),
            KeyCode::Tab => "tab".to_string(),
            KeyCode::Backspace => "bksp".to_string(),
            KeyCode::Char(' ') => "space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::F(n) => format!("f{n}"),
            other => format!("{other:?}"),
        };
        if self.mods.contains(KeyModifiers::CONTROL) {
            format!("ctrl-{base}")
        } else if self.mods.contains(KeyModifiers::ALT) {
            format!("alt-{base}")
        } else {
            base
        }
    }
}

/// Keys to actions, with the reverse lookup the footer needs.
#[derive(Debug, Clone)]
pub struct Keymap {
    map: HashMap<Key, Action>,
}

const DEFAULTS: &[(&str, Action)] = &[
    ("q", Action::Quit),
    ("k", Action::Up),
    ("up", Action::Up),
    ("j", Action::Down),
    ("down", Action::Down),
    ("g", Action::Top),
    ("home", Action::Top),
    ("G", Action::Bottom),
    ("end", Action::Bottom),
    ("pgup", Action::PageUp),
    ("ctrl-b", Action::PageUp),
    ("pgdown", Action::PageDown),
    ("ctrl-f", Action::PageDown),
    ("enter", Action::Enter),
    ("esc", Action::Back),
    ("?", Action::Help),
    (":", Action::Command),
    ("/", Action::Filter),
    ("l", Action::Logs),
    ("e", Action::Events),
    ("m", Action::Metrics),
    ("o", Action::Sort),
    ("O", Action::Reverse),
    ("s", Action::Start),
    ("x", Action::Stop),
    ("r", Action::Restart),
    ("R", Action::RestartService),
    ("c", Action::Scale),
    ("d", Action::Drain),
    ("u", Action::Undrain),
    ("A", Action::Apply),
    ("F", Action::ForceLeave),
    ("p", Action::Pause),
    ("space", Action::Pause),
    ("w", Action::Wrap),
    ("t", Action::Timestamps),
    ("z", Action::Range),
    ("v", Action::Severity),
];

impl Default for Keymap {
    fn default() -> Self {
        let map = DEFAULTS
            .iter()
            .filter_map(|(k, a)| Key::parse(k).map(|k| (k, *a)))
            .collect();
        Keymap { map }
    }
}

impl Keymap {
    /// The default map with `remaps` (action name to key name) applied: a remapped action
    /// loses its default keys and takes the given one. Unknown names are errors.
    pub fn with_remaps(remaps: &HashMap<String, String>) -> Result<Keymap, String> {
        let mut keymap = Keymap::default();
        let mut names: Vec<_> = remaps.iter().collect();
        names.sort();
        for (name, key) in names {
            let action = Action::from_name(name)
                .ok_or_else(|| format!("[keys]: unknown action {name:?}"))?;
            let key =
                Key::parse(key).ok_or_else(|| format!("[keys] {name}: unknown key {key:?}"))?;
            keymap.map.retain(|_, a| *a != action);
            keymap.map.insert(key, action);
        }
        Ok(keymap)
    }

    /// The action of a key event; ctrl-c always quits.
    pub fn action(&self, event: KeyEvent) -> Option<Action> {
        let key = Key::from_event(event);
        if key.code == KeyCode::Char('c') && key.mods == KeyModifiers::CONTROL {
            return Some(Action::Quit);
        }
        self.map.get(&key).copied()
    }

    /// The first key (by label order) bound to `action`, for the footer and help.
    pub fn key_of(&self, action: Action) -> Option<String> {
        let mut keys: Vec<String> = self
            .map
            .iter()
            .filter(|(_, a)| **a == action)
            .map(|(k, _)| k.label())
            .collect();
        keys.sort_by_key(|k| (k.chars().count() > 1, k.clone()));
        keys.into_iter().next()
    }
}
