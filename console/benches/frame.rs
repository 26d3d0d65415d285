//! Model update plus one full frame for 2,000 nodes and 20,000 instances at 160x48 on
//! TestBackend: median and p99 over 200 frames, the time from the cluster snapshot to the
//! first frame, and the process's RSS at that scale.

// Bench code: a panic is how a failure is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::{Duration, Instant};
use strata_console::model::{Model, Msg, fixture};
use strata_console::tui::app::App;
use strata_console::tui::component::View;
use strata_console::tui::keymap::Keymap;
use strata_console::tui::theme::Theme;

const NODES: usize = 2_000;
const INSTANCES: usize = 20_000;
const FRAMES: usize = 200;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn main() {
    let built = Instant::now();
    let mut model = fixture::large(NODES, INSTANCES);
    println!(
        "model of {NODES} nodes / {INSTANCES} instances built in {:?}; VmRSS {:.1} MiB",
        built.elapsed(),
        rss_mib()
    );
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("terminal");
    let per_node = INSTANCES / NODES;
    for view in [View::Overview, View::Nodes, View::Services] {
        let mut app = App::new(Keymap::default(), Theme::named("dark", false), false);
        app.view = view.clone();
        let mut times: Vec<Duration> = Vec::with_capacity(FRAMES);
        for frame in 0..FRAMES {
            let start = Instant::now();
            for k in 0..10 {
                let n = (frame * 10 + k) % NODES;
                model.update(Msg::Cluster(fixture::large_record(
                    n,
                    per_node,
                    frame as u64,
                )));
            }
            model.refresh();
            terminal.draw(|f| app.draw(f, &model)).expect("draw");
            times.push(start.elapsed());
        }
        times.sort();
        println!(
            "{view:?}: 10 record updates + refresh + frame at 160x48: median {:?}, p99 {:?}",
            times[FRAMES / 2],
            times[FRAMES * 99 / 100]
        );
    }
    println!("VmRSS after {} frames: {:.1} MiB", FRAMES * 3, rss_mib());
    let snapshot = fixture::large_snapshot(NODES, INSTANCES, 0);
    let first = Instant::now();
    let mut fresh = Model::new("10.0.0.1:7700", fixture::NOW_MS);
    fresh.update(Msg::Cluster(snapshot));
    fresh.refresh();
    let mut app = App::new(Keymap::default(), Theme::named("dark", false), false);
    terminal.draw(|f| app.draw(f, &fresh)).expect("draw");
    println!(
        "snapshot applied, refreshed and first overview frame drawn in {:?}",
        first.elapsed()
    );
}
