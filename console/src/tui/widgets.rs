//! Small drawing helpers shared by the views: tables whose columns drop by priority on
//! narrow terminals and that build rows only for the visible window, text sparklines,
//! and "5m ago" ages.

use super::theme::Theme;
use crate::format::uptime;
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Row, Table, TableState};

/// A table column: title, minimum width and priority (0 is kept longest).
#[derive(Debug, Clone, Copy)]
pub struct Col {
    /// Header text.
    pub title: &'static str,
    /// Width in cells.
    pub width: u16,
    /// Lower numbers survive narrower terminals.
    pub priority: u8,
}

/// Shorthand for a [`Col`].
pub const fn col(title: &'static str, width: u16, priority: u8) -> Col {
    Col {
        title,
        width,
        priority,
    }
}

/// Which columns fit in `width`, in table order: lowest priorities first are dropped.
pub fn fit(cols: &[Col], width: u16) -> Vec<usize> {
    let mut keep: Vec<usize> = (0..cols.len()).collect();
    let total = |keep: &[usize]| keep.iter().map(|&i| cols[i].width + 1).sum::<u16>();
    while total(&keep) > width && keep.len() > 1 {
        let worst = keep
            .iter()
            .enumerate()
            .max_by_key(|(pos, i)| (cols[**i].priority, *pos))
            .map(|(pos, _)| pos);
        match worst {
            Some(pos) => {
                keep.remove(pos);
            }
            None => break,
        }
    }
    keep
}

/// First row index to draw so that `selected` is visible in `height` rows.
pub fn offset(selected: usize, height: usize) -> usize {
    if height == 0 {
        selected
    } else {
        selected.saturating_sub(height - 1)
    }
}

/// Draws a bordered table of `len` rows, building cells only for the visible window
/// through `cells(row)`, each a cell per column in `cols` order with its style.
#[allow(clippy::too_many_arguments)]
pub fn table<'a>(
    frame: &mut Frame,
    area: Rect,
    title: Line<'a>,
    cols: &[Col],
    len: usize,
    selected: usize,
    theme: &Theme,
    cells: impl Fn(usize) -> Vec<(String, Style)>,
) {
    let block = Block::new()
        .borders(Borders::TOP)
        .title(title)
        .border_style(theme.dim);
    let inner_width = area.width;
    let keep = fit(cols, inner_width);
    let height = area.height.saturating_sub(2) as usize;
    let first = offset(selected.min(len.saturating_sub(1)), height);
    let rows: Vec<Row> = (first..len.min(first + height))
        .map(|i| {
            let all = cells(i);
            Row::new(keep.iter().map(|&c| {
                let (text, style) = all.get(c).cloned().unwrap_or_default();
                Cell::from(text).style(style)
            }))
        })
        .collect();
    let widths: Vec<Constraint> = keep
        .iter()
        .enumerate()
        .map(|(pos, &c)| {
            if pos + 1 == keep.len() {
                Constraint::Min(cols[c].width)
            } else {
                Constraint::Length(cols[c].width)
            }
        })
        .collect();
    let header = Row::new(keep.iter().map(|&c| Cell::from(cols[c].title))).style(theme.title);
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .style(theme.base)
        .row_highlight_style(theme.selected);
    let mut state = TableState::default();
    if len > 0 {
        state.select(Some(selected.min(len - 1) - first));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

/// A text sparkline of percentages: "▁▃▇█".
pub fn sparkline<'a>(values: impl Iterator<Item = &'a u8>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let values: Vec<u8> = values.copied().collect();
    let start = values.len().saturating_sub(width);
    values[start..]
        .iter()
        .map(|&v| BARS[(v.min(100) as usize * 7) / 100])
        .collect()
}

/// `items` joined by `sep`, but only as far as a cell `width` wide can show: the items
/// after the one that reaches past `width` cells are left out, so a long list costs no
/// more than what is drawn of it.
pub fn join_within(items: &[String], sep: &str, width: usize) -> String {
    let mut out = String::new();
    let mut used = 0;
    for (i, item) in items.iter().enumerate() {
        if used > width {
            break;
        }
        if i > 0 {
            out.push_str(sep);
            used += Span::raw(sep).width();
        }
        out.push_str(item);
        used += Span::raw(item.as_str()).width();
    }
    out
}

/// "5m 10s ago", or "-" for an unknown time.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    if then_ms <= 0 {
        return "-".into();
    }
    format!("{} ago", uptime(((now_ms - then_ms).max(0) / 1000) as u64))
}

/// A titled line: the view's name and what it shows.
pub fn title<'a>(text: String, theme: &Theme) -> Line<'a> {
    Line::from(vec![Span::styled(format!(" {text} "), theme.title)])
}

/// Spans of `text` with every case-insensitive occurrence of `needle` in `hit` style.
pub fn highlight<'a>(text: &str, needle: &str, base: Style, hit: Style) -> Vec<Span<'a>> {
    if needle.is_empty() {
        return vec![Span::styled(text.to_string(), base)];
    }
    let lower = text.to_lowercase();
    let needle = needle.to_lowercase();
    if lower.len() != text.len() {
        return vec![Span::styled(text.to_string(), base)];
    }
    let mut spans = Vec::new();
    let mut at = 0;
    while let Some(pos) = lower[at..].find(&needle) {
        let start = at + pos;
        let end = start + needle.len();
        if start > at {
            spans.push(Span::styled(text[at..start].to_string(), base));
        }
        spans.push(Span::styled(text[start..end].to_string(), hit));
        at = end;
    }
    if at < text.len() {
        spans.push(Span::styled(text[at..].to_string(), base));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_tables_drop_low_priority_columns_first() {
        let cols = [
            col("NAME", 10, 0),
            col("TREND", 20, 3),
            col("CPU", 5, 1),
            col("NOTE", 20, 2),
        ];
        assert_eq!(fit(&cols, 200), vec![0, 1, 2, 3]);
        assert_eq!(fit(&cols, 40), vec![0, 2, 3]);
        assert_eq!(fit(&cols, 17), vec![0, 2]);
        assert_eq!(fit(&cols, 3), vec![0]);
    }

    #[test]
    fn join_within_stops_past_the_width() {
        let items: Vec<String> = ["ab", "cd", "ef", "gh"].map(String::from).to_vec();
        assert_eq!(join_within(&items, ",", 100), "ab,cd,ef,gh");
        assert_eq!(join_within(&items, ",", 4), "ab,cd");
        assert_eq!(join_within(&items, ",", 5), "ab,cd,ef");
        assert_eq!(join_within(&[], ",", 5), "");
    }

    #[test]
    fn sparkline_scales_percentages() {
        assert_eq!(sparkline([0u8, 50, 100].iter(), 10), "▁▄█");
        assert_eq!(sparkline([0u8, 50, 100].iter(), 2), "▄█");
    }
}
