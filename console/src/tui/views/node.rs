//! One node: CPU (total and per core), memory, disk IO and network charts over the
//! agent's history (15 min or 24 h) plus live samples, filesystems, top processes and
//! the node's own events.

use super::nodes::node_plan;
use crate::format::{bytes, rate};
use crate::model::Model;
use crate::tui::action::Action;
use crate::tui::component::{Component, Ctx, Nav, Plan};
use crate::tui::theme::Theme;
use crate::tui::widgets::{ago, title};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph};
use strata_proto::v1::{MemberStatus, Severity};

/// The node view.
pub struct Node;

/// One chart line: its name, its points and its style.
type ChartLine<'a> = (&'a str, Vec<(f64, f64)>, Style);

fn chart(
    frame: &mut Frame,
    area: Rect,
    label: String,
    series: &[ChartLine],
    max: f64,
    theme: &Theme,
) {
    let datasets = series
        .iter()
        .map(|(name, points, style)| {
            Dataset::default()
                .name(name.to_string())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(*style)
                .data(points)
        })
        .collect();
    let (x0, x1) = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let block = Block::new()
        .borders(Borders::TOP)
        .title(title(label, theme))
        .border_style(theme.dim);
    let c = Chart::new(datasets)
        .block(block)
        .x_axis(Axis::default().bounds(if x0 < x1 { [x0, x1] } else { [0.0, 1.0] }))
        .y_axis(Axis::default().bounds([0.0, max.max(1.0)]))
        .legend_position(None);
    frame.render_widget(c, area);
}

fn points(v: &[(i64, f64)]) -> Vec<(f64, f64)> {
    v.iter().map(|&(t, y)| (t as f64 / 1000.0, y)).collect()
}

impl Component for Node {
    fn draw(&self, frame: &mut Frame, area: Rect, cx: &Ctx) {
        let (m, t) = (cx.model, cx.theme);
        let d = &m.node;
        let [facts, charts, bottom] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Percentage(45),
            Constraint::Min(3),
        ])
        .areas(area);
        let status = m
            .cluster
            .members
            .get(&d.name)
            .map_or(MemberStatus::Unknown, |mb| mb.status());
        let mut fact = vec![
            Span::styled(format!(" {} ", d.name), t.title),
            Span::styled(status.to_string(), t.tone(status)),
        ];
        if let Some(i) = &d.info {
            fact.push(Span::raw(format!(
                " · {} · kernel {} · {} cores · {} · agent {}",
                i.os,
                i.kernel,
                i.cores,
                bytes(i.memory_bytes),
                i.agent_version
            )));
        }
        fact.push(Span::styled(
            format!(" · range {} (z)", d.range.label()),
            t.dim,
        ));
        if let Some(e) = &d.error {
            fact.push(Span::styled(format!(" · {e}"), t.crit));
        }
        frame.render_widget(Paragraph::new(Line::from(fact)), facts);

        let [top, low] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(charts);
        let [cpu_a, mem_a] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
        let [disk_a, net_a] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(low);
        let latest = d.latest.as_ref();
        let cores: String = latest
            .and_then(|l| l.cpu.as_ref())
            .map(|c| {
                c.cores
                    .iter()
                    .map(|s| format!("{:.0}", s.busy))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        let cpu_now = latest
            .and_then(|l| l.cpu.as_ref())
            .and_then(|c| c.total.as_ref())
            .map_or(0.0, |s| s.busy);
        let cpu = d
            .series
            .get("cpu.busy")
            .map(|v| points(&v.iter().copied().collect::<Vec<_>>()))
            .unwrap_or_default();
        chart(
            frame,
            cpu_a,
            format!("CPU {cpu_now:.0}% cores [{cores}]"),
            &[("cpu", cpu, t.ok)],
            100.0,
            t,
        );
        let mem = d
            .series
            .get("mem.used_percent")
            .map(|v| points(&v.iter().copied().collect::<Vec<_>>()))
            .unwrap_or_default();
        let mem_now = mem.last().map_or(0.0, |p| p.1);
        chart(
            frame,
            mem_a,
            format!("Memory {mem_now:.0}%"),
            &[("mem", mem, t.warn)],
            100.0,
            t,
        );
        let (rd, wr) = (
            points(&d.summed("disk.", "read_bytes_per_sec")),
            points(&d.summed("disk.", "write_bytes_per_sec")),
        );
        let dmax = rd.iter().chain(&wr).map(|p| p.1).fold(1.0, f64::max);
        chart(
            frame,
            disk_a,
            format!(
                "Disk IO r {} w {}",
                rate(rd.last().map_or(0.0, |p| p.1)),
                rate(wr.last().map_or(0.0, |p| p.1))
            ),
            &[("read", rd, t.ok), ("write", wr, t.warn)],
            dmax,
            t,
        );
        let (rx, tx) = (
            points(&d.summed("net.", "rx_bytes_per_sec")),
            points(&d.summed("net.", "tx_bytes_per_sec")),
        );
        let nmax = rx.iter().chain(&tx).map(|p| p.1).fold(1.0, f64::max);
        chart(
            frame,
            net_a,
            format!(
                "Network rx {} tx {}",
                rate(rx.last().map_or(0.0, |p| p.1)),
                rate(tx.last().map_or(0.0, |p| p.1))
            ),
            &[("rx", rx, t.ok), ("tx", tx, t.warn)],
            nmax,
            t,
        );

        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(bottom);
        let mut lines = vec![Line::styled("Filesystems", t.title)];
        for f in latest.map(|l| l.filesystems.as_slice()).unwrap_or_default() {
            let style = if f.used_percent >= 90.0 {
                t.crit
            } else {
                t.base
            };
            lines.push(Line::styled(
                format!(
                    "{:<10} {:>4.0}% of {}",
                    f.mountpoint,
                    f.used_percent,
                    bytes(f.size_bytes)
                ),
                style,
            ));
        }
        lines.push(Line::styled("Top processes", t.title));
        for p in latest.map(|l| l.top_cpu.as_slice()).unwrap_or_default() {
            lines.push(Line::raw(format!(
                "{:>7} {:<14} {:>5.1}% {}",
                p.pid,
                p.name,
                p.cpu_percent,
                bytes(p.rss_bytes)
            )));
        }
        frame.render_widget(Paragraph::new(lines), left);
        let mut ev = vec![Line::styled(
            "Events (this node, kernel.* included)",
            t.title,
        )];
        let height = right.height.saturating_sub(1) as usize;
        for e in m.timeline.for_node(&d.name).rev().take(height) {
            let style = t.tone(Severity::from_wire(e.severity));
            ev.push(Line::styled(
                format!(
                    "{:>10} {} {}",
                    ago(m.now_ms, e.time_unix_ms),
                    e.kind,
                    e.message
                ),
                style,
            ));
        }
        frame.render_widget(Paragraph::new(ev), right);
    }

    fn commands(&self) -> &'static [Action] {
        &[
            Action::Range,
            Action::Events,
            Action::Drain,
            Action::Undrain,
            Action::Apply,
        ]
    }

    fn jump(&self, action: Action, model: &Model, _selected: usize) -> Option<Nav> {
        (action == Action::Events).then(|| Nav::Events(model.node.name.clone()))
    }

    fn plan(&self, action: Action, model: &Model, _selected: usize) -> Option<Plan> {
        node_plan(action, model.node.name.clone())
    }
}
