//! The terminal console: one `tokio::select!` loop over terminal events, model messages
//! from the network tasks, and a render tick. The terminal is restored on every exit,
//! errors and panics included.

pub mod action;
pub mod app;
pub mod component;
pub mod config;
pub mod keymap;
pub mod net;
pub mod popup;
pub mod theme;
pub mod views;
pub mod widgets;

#[cfg(test)]
mod tests;

use crate::client::connect::DEFAULT_AGENT;
use crate::client::{ClientAuth, Connector, Failure, FailureKind};
use crate::format::now_ms;
use crate::model::Model;
use app::App;
use crossterm::event::{
    DisableMouseCapture, EnableMouseCapture, Event, EventStream, KeyEventKind, MouseEventKind,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures_util::StreamExt;
use keymap::Keymap;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use std::time::Duration;
use theme::Theme;

/// How often the screen is redrawn when only data changed.
const TICK: Duration = Duration::from_millis(250);
/// News from the agent is drawn at once unless a frame was drawn this recently: the first
/// snapshot shows without waiting for a tick, and a flood of messages costs at most 20 frames/s.
const MIN_FRAME_GAP: Duration = Duration::from_millis(50);
/// How often the open service view is refetched.
const SERVICE_REFRESH_MS: i64 = 2000;
/// Messages applied before the loop looks at keys again.
const MSG_BURST: usize = 512;

/// Console options from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--agent` or `STRATA_AGENT` when given; else the config file's, else the default.
    pub agent: Option<String>,
    /// `--ca`, `--cert`, `--key` and `--token`.
    pub auth: ClientAuth,
    /// Hide actions.
    pub readonly: bool,
    /// dark, light or mono.
    pub theme: Option<String>,
    /// Capture the mouse.
    pub mouse: bool,
}

fn usage(message: String) -> Failure {
    Failure::new(FailureKind::Usage, message)
}

/// Restores the terminal: raw mode off, main screen back, mouse released.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        DisableMouseCapture,
        crossterm::cursor::Show
    );
}

/// Restores the terminal when dropped, on every way out of [`run`].
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Opens the console until the operator quits.
pub async fn run(options: Options) -> Result<(), Failure> {
    let config = config::load().map_err(usage)?;
    let agent = options
        .agent
        .or(config.agent)
        .unwrap_or_else(|| DEFAULT_AGENT.to_string());
    let connector = Connector::new(&agent, &options.auth)?;
    let keymap = Keymap::with_remaps(&config.keys).map_err(usage)?;
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let theme_name = options
        .theme
        .or(config.theme)
        .unwrap_or_else(|| "dark".into());
    let theme = Theme::named(&theme_name, no_color);
    let mouse = options.mouse || config.mouse.unwrap_or(false);

    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        hook(info);
    }));
    enable_raw_mode().map_err(|e| {
        Failure::new(
            FailureKind::ActionFailed,
            format!("cannot use the terminal: {e}"),
        )
    })?;
    let _guard = TerminalGuard;
    let mut stdout = std::io::stdout();
    execute!(stdout, EnterAlternateScreen).map_err(|e| {
        Failure::new(
            FailureKind::ActionFailed,
            format!("cannot use the terminal: {e}"),
        )
    })?;
    if mouse {
        let _ = execute!(stdout, EnableMouseCapture);
    }
    let mut terminal = Terminal::new(CrosstermBackend::new(stdout)).map_err(|e| {
        Failure::new(
            FailureKind::ActionFailed,
            format!("cannot use the terminal: {e}"),
        )
    })?;

    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let mut net = net::Net::start(connector, tx);
    let mut model = Model::new(&agent, now_ms());
    let mut app = App::new(keymap, theme, options.readonly);
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    let mut last_draw = std::time::Instant::now()
        .checked_sub(MIN_FRAME_GAP)
        .unwrap_or_else(std::time::Instant::now);
    let mut draw_pending = false;
    let mut last_service = 0i64;
    let fail =
        |e: std::io::Error| Failure::new(FailureKind::ActionFailed, format!("terminal error: {e}"));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind != KeyEventKind::Release => app.key(&mut model, key),
                Some(Ok(Event::Mouse(m))) => match m.kind {
                    MouseEventKind::ScrollDown => app.update(&mut model, action::Action::Down),
                    MouseEventKind::ScrollUp => app.update(&mut model, action::Action::Up),
                    _ => continue,
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(fail(e)),
                None => break,
            },
            Some(msg) = rx.recv() => {
                model.update(msg);
                for _ in 0..MSG_BURST {
                    match rx.try_recv() {
                        Ok(msg) => model.update(msg),
                        Err(_) => break,
                    }
                }
                app.refused = model.readonly_reason();
                if last_draw.elapsed() < MIN_FRAME_GAP {
                    draw_pending = true;
                    continue;
                }
            }
            _ = tokio::time::sleep_until((last_draw + MIN_FRAME_GAP).into()), if draw_pending => {}
            _ = tick.tick() => {
                model.now_ms = now_ms();
                if let component::View::Service(name) = &app.view
                    && model.now_ms - last_service >= SERVICE_REFRESH_MS
                {
                    last_service = model.now_ms;
                    let request = app.service_request(&model, name);
                    app.outbox.push(request);
                }
            }
        }
        for request in app.outbox.drain(..) {
            net.handle(request);
        }
        if app.quit {
            break;
        }
        model.refresh();
        terminal.draw(|f| app.draw(f, &model)).map_err(fail)?;
        last_draw = std::time::Instant::now();
        draw_pending = false;
    }
    Ok(())
}
