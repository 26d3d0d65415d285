//! Snapshot tests of every view on ratatui's TestBackend from the fixture (fixed "now"),
//! and input tests: keys to actions to view changes, confirmations, history, completion
//! and remapped keys.

use super::action::Action;
use super::app::{App, Mode, complete};
use super::component::View;
use super::keymap::Keymap;
use super::net::Request;
use super::popup::Popup;
use super::theme::Theme;
use crate::client::ops::Op;
use crate::model::{Model, Msg, fixture};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::collections::HashMap;
use strata_proto::v1::{Role, Via};

fn app() -> (App, Model) {
    (
        App::new(Keymap::default(), Theme::named("dark", false), false),
        fixture::model(),
    )
}

fn render(app: &mut App, model: &Model, w: u16, h: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| app.draw(f, model)).unwrap();
    terminal.backend().to_string()
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn typed(app: &mut App, model: &mut Model, text: &str) {
    for c in text.chars() {
        app.key(model, key(c));
    }
}

fn views() -> Vec<(&'static str, View)> {
    vec![
        ("overview", View::Overview),
        ("nodes", View::Nodes),
        ("node", View::Node("n1".into())),
        ("services", View::Services),
        ("service", View::Service("web".into())),
        ("logs", View::Logs),
        ("events", View::Events),
        ("members", View::Members),
    ]
}

#[test]
fn every_view_at_80x24_and_160x48() {
    for (name, view) in views() {
        for (w, h) in [(80, 24), (160, 48)] {
            let (mut app, model) = app();
            app.view = view.clone();
            let screen = render(&mut app, &model, w, h);
            insta::assert_snapshot!(format!("{name}_{w}x{h}"), screen);
        }
    }
}

#[test]
fn overview_names_every_problem_of_the_fixture() {
    let (mut app, model) = app();
    let screen = render(&mut app, &model, 160, 48);
    for needle in [
        "node down",
        "crash loop",
        "web/3",
        "/var 97%",
        "OOM kill",
        "alert firing",
        "7m 0s ago",
    ] {
        assert!(screen.contains(needle), "{needle} missing:\n{screen}");
    }
}

#[test]
fn readonly_hides_actions_and_says_so() {
    let (mut app, mut model) = app();
    app.readonly = true;
    app.update(&mut model, Action::Command);
    typed(&mut app, &mut model, "service web");
    app.key(&mut model, code(KeyCode::Enter));
    app.key(&mut model, key('r'));
    assert!(app.popups.is_empty(), "no confirmation in readonly");
    let screen = render(&mut app, &model, 160, 48);
    assert!(screen.contains("READONLY"));
    assert!(!screen.contains("restart"), "{screen}");
}

#[test]
fn a_read_token_makes_the_console_readonly_and_says_why() {
    let (mut app, mut model) = app();
    model.update(Msg::Access(strata_proto::v1::WhoAmIReply {
        name: "viewer".into(),
        role: Role::Read as i32,
        via: Via::Token as i32,
        credentials_required: true,
        node: "n1".into(),
    }));
    app.refused = model.readonly_reason();
    app.update(&mut model, Action::Command);
    typed(&mut app, &mut model, "service web");
    app.key(&mut model, code(KeyCode::Enter));
    app.key(&mut model, key('r'));
    assert!(app.popups.is_empty(), "no confirmation for a read token");
    let screen = render(&mut app, &model, 160, 48);
    assert!(
        screen.contains("READONLY: token \"viewer\" has the read role"),
        "{screen}"
    );

    model.update(Msg::Access(strata_proto::v1::WhoAmIReply {
        role: Role::Operate as i32,
        ..Default::default()
    }));
    assert_eq!(model.readonly_reason(), None);
}

#[test]
fn restart_asks_naming_the_target_and_runs_only_on_yes() {
    let (mut app, mut model) = app();
    app.command(&mut model, "services");
    assert_eq!(app.view, View::Services);
    app.key(&mut model, key('j'));
    app.key(&mut model, code(KeyCode::Enter));
    assert_eq!(app.view, View::Service("web".into()));
    app.outbox.clear();
    app.key(&mut model, key('j'));
    app.key(&mut model, key('j'));
    app.key(&mut model, key('R'));
    match app.popups.last() {
        Some(Popup::Confirm { question, .. }) => {
            assert_eq!(question, "Restart service web on node n2 (1 instance)?")
        }
        other => panic!("{other:?}"),
    }
    app.key(&mut model, key('n'));
    assert!(app.popups.is_empty() && app.outbox.is_empty());
    app.key(&mut model, key('r'));
    app.key(&mut model, code(KeyCode::Esc));
    assert!(app.popups.is_empty() && app.outbox.is_empty());
    assert_eq!(
        app.view,
        View::Service("web".into()),
        "Esc closes the popup only"
    );
    app.key(&mut model, key('r'));
    app.key(&mut model, key('y'));
    match app.outbox.as_slice() {
        [Request::Run { label, ops }] => {
            assert_eq!(label, "Restart instance web/3 on node n2");
            assert!(
                matches!(&ops[0], Op::Control(c) if c.node == "n2" && c.instance == 3 && c.action.as_ref().is_some_and(|a| a.verb() == "restart"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(model.pending_actions, 1);
}

#[test]
fn scale_prompts_then_confirms() {
    let (mut app, mut model) = app();
    app.command(&mut model, "services");
    app.key(&mut model, key('j'));
    app.key(&mut model, key('c'));
    typed(&mut app, &mut model, "4");
    app.key(&mut model, code(KeyCode::Enter));
    match app.popups.last() {
        Some(Popup::Confirm { question, ops }) => {
            assert_eq!(
                question,
                "Scale service web to 4 instances on nodes n1, n2?"
            );
            assert_eq!(ops.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn force_leave_only_for_down_members() {
    let (mut app, mut model) = app();
    app.command(&mut model, "members");
    app.key(&mut model, key('F'));
    assert!(matches!(
        app.popups.last(),
        Some(Popup::Message { error: true, .. })
    ));
    app.key(&mut model, code(KeyCode::Esc));
    app.key(&mut model, key('G'));
    app.key(&mut model, key('k'));
    app.key(&mut model, key('F'));
    assert!(
        matches!(app.popups.last(), Some(Popup::Confirm { question, .. }) if question.contains("n3"))
    );
}

#[test]
fn esc_walks_back_through_history_with_selection() {
    let (mut app, mut model) = app();
    app.command(&mut model, "nodes");
    app.key(&mut model, key('j'));
    app.key(&mut model, code(KeyCode::Enter));
    assert_eq!(app.view, View::Node("n2".into()));
    assert!(
        app.outbox
            .iter()
            .any(|r| matches!(r, Request::Node { name, .. } if name == "n2"))
    );
    app.key(&mut model, key('e'));
    assert_eq!(app.view, View::Events);
    app.key(&mut model, code(KeyCode::Esc));
    assert_eq!(app.view, View::Node("n2".into()));
    app.key(&mut model, code(KeyCode::Esc));
    assert_eq!((app.view.clone(), app.sel()), (View::Nodes, 1));
    app.key(&mut model, code(KeyCode::Esc));
    assert_eq!(app.view, View::Overview);
    app.key(&mut model, code(KeyCode::Esc));
    assert_eq!(app.view, View::Overview);
}

#[test]
fn enter_on_a_crash_loop_problem_follows_its_logs() {
    let (mut app, mut model) = app();
    let at = model
        .problems
        .iter()
        .position(|p| p.kind == "crash loop")
        .unwrap();
    for _ in 0..at {
        app.key(&mut model, key('j'));
    }
    app.key(&mut model, code(KeyCode::Enter));
    assert_eq!(app.view, View::Logs);
    assert!(app.outbox.iter().any(|r| matches!(r, Request::Logs { target, .. } if target.service == "web" && target.instance == 3 && target.node == "n2")));
    app.key(&mut model, key('p'));
    assert!(model.logs.paused);
    app.key(&mut model, key('G'));
    assert!(!model.logs.paused);
    app.key(&mut model, code(KeyCode::Esc));
    assert!(app.outbox.contains(&Request::CloseLogs));
}

#[test]
fn events_enter_opens_the_subject() {
    let (mut app, mut model) = app();
    app.command(&mut model, "events");
    app.key(&mut model, key('j'));
    app.key(&mut model, code(KeyCode::Enter));
    assert_eq!(
        app.view,
        View::Node("n4".into()),
        "second newest is the OOM kill on n4"
    );
    app.key(&mut model, code(KeyCode::Esc));
    app.key(&mut model, key('v'));
    app.key(&mut model, key('v'));
    assert_eq!(model.timeline.index.len(), 2, "critical only");
}

#[test]
fn filter_narrows_the_nodes_table() {
    let (mut app, mut model) = app();
    app.command(&mut model, "nodes");
    app.key(&mut model, key('/'));
    typed(&mut app, &mut model, "n4");
    assert_eq!(model.cluster.node_index.len(), 1);
    app.key(&mut model, code(KeyCode::Enter));
    assert_eq!(app.mode, Mode::Normal);
    app.key(&mut model, key('/'));
    app.key(&mut model, code(KeyCode::Esc));
    assert_eq!(model.cluster.node_index.len(), 4);
}

#[test]
fn command_mode_completes_commands_and_names() {
    let (app, model) = app();
    drop(app);
    assert_eq!(complete("serv", &model).0, "service");
    assert_eq!(complete("services", &model).0, "services");
    assert_eq!(complete("no", &model).0, "node");
    assert_eq!(
        complete("node n", &model),
        (
            "node n".into(),
            vec!["n1".into(), "n2".into(), "n3".into(), "n4".into()]
        )
    );
    assert_eq!(complete("service we", &model).0, "service web");
    assert_eq!(complete("logs wo", &model).0, "logs worker");
    let (mut app, mut model) = self::app();
    app.key(&mut model, key(':'));
    typed(&mut app, &mut model, "mem");
    app.key(&mut model, code(KeyCode::Tab));
    app.key(&mut model, code(KeyCode::Enter));
    assert_eq!(app.view, View::Members);
}

#[test]
fn remapped_keys_from_the_config_replace_the_defaults() {
    let cfg = super::config::parse("[keys]\nrestart = \"ctrl-r\"\ndown = \"n\"\n", "test").unwrap();
    let map = Keymap::with_remaps(&cfg.keys).unwrap();
    let mut app = App::new(map, Theme::named("dark", true), false);
    let mut model = fixture::model();
    app.command(&mut model, "service web");
    app.key(&mut model, key('r'));
    assert!(app.popups.is_empty(), "r is no longer restart");
    app.key(&mut model, key('j'));
    assert_eq!(app.sel(), 0, "j is no longer down");
    app.key(&mut model, key('n'));
    assert_eq!(app.sel(), 1);
    app.key(
        &mut model,
        KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL),
    );
    assert!(
        matches!(app.popups.last(), Some(Popup::Confirm { question, .. }) if question == "Restart instance web/2 on node n1?")
    );
    assert!(
        render(&mut app, &model, 160, 48).contains("ctrl-r restart")
            || app
                .help()
                .iter()
                .any(|(k, a)| k == "ctrl-r" && a == "restart")
    );
    let bad: HashMap<String, String> = [("explode".to_string(), "x".to_string())].into();
    assert!(Keymap::with_remaps(&bad).unwrap_err().contains("explode"));
}

#[test]
fn quit_by_q_and_ctrl_c() {
    let (mut app, mut model) = app();
    app.key(&mut model, key('q'));
    assert!(app.quit);
    let (mut app, mut model) = self::app();
    app.key(
        &mut model,
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    );
    assert!(app.quit);
}
