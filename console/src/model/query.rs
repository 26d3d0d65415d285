//! What a table shows: a sort column, a direction and a filter; and the index of visible
//! rows computed from it, so views never sort or filter rows while drawing.

/// The sort and filter of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Index of the sort column in the table's column list.
    pub sort: usize,
    /// Largest first.
    pub descending: bool,
    /// Case-insensitive substring a row must contain; empty shows all.
    pub filter: String,
}

impl Query {
    /// Sorts by `column`, or flips the direction when it is already the sort column.
    pub fn sort_by(&mut self, column: usize) {
        if self.sort == column {
            self.descending = !self.descending;
        } else {
            self.sort = column;
            self.descending = false;
        }
    }

    /// Whether `text` passes the filter (`filter` is expected lower-case).
    pub fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }
}

/// Indexes of `rows` that pass `query`, sorted by `cmp` (for the query's column) and
/// the query's direction; stable, so equal keys keep the rows' own order.
pub fn index<T>(
    rows: &[T],
    query: &Query,
    text: impl Fn(&T) -> String,
    cmp: impl Fn(&T, &T, usize) -> std::cmp::Ordering,
) -> Vec<usize> {
    let needle = query.filter.to_lowercase();
    let mut idx: Vec<usize> = (0..rows.len())
        .filter(|&i| needle.is_empty() || text(&rows[i]).to_lowercase().contains(&needle))
        .collect();
    sort_index(&mut idx, rows, query, cmp);
    idx
}

/// Sorts `idx`, indexes into `rows` in row order, by `cmp` for the query's column and
/// the query's direction; stable, so equal keys keep the rows' own order.
pub fn sort_index<T>(
    idx: &mut [usize],
    rows: &[T],
    query: &Query,
    cmp: impl Fn(&T, &T, usize) -> std::cmp::Ordering,
) {
    idx.sort_by(|&a, &b| {
        let o = cmp(&rows[a], &rows[b], query.sort);
        if query.descending { o.reverse() } else { o }
    });
}

/// Compares floats for sorting, NaN last.
pub fn cmp_f64(a: f64, b: f64) -> std::cmp::Ordering {
    a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_sorts_both_ways() {
        let rows = vec![("b", 2), ("a", 3), ("c", 1)];
        let mut q = Query::default();
        let text = |r: &(&str, i32)| r.0.to_string();
        let cmp = |a: &(&str, i32), b: &(&str, i32), col: usize| match col {
            0 => a.0.cmp(b.0),
            _ => a.1.cmp(&b.1),
        };
        assert_eq!(index(&rows, &q, text, cmp), vec![1, 0, 2]);
        q.sort_by(1);
        assert_eq!(index(&rows, &q, text, cmp), vec![2, 0, 1]);
        q.sort_by(1);
        assert_eq!(index(&rows, &q, text, cmp), vec![1, 0, 2]);
        q.filter = "B".into();
        assert_eq!(index(&rows, &q, text, cmp), vec![0]);
    }
}
