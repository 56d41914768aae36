//! What the admin commands print for people: aligned tables and their cells.

use serde_json::Value;

/// Renders rows as columns separated by two spaces, each as wide as its widest cell.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count())));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A JSON value as a table cell: strings bare, null as `-`, long text cut.
pub fn cell(value: &Value) -> String {
    let text = full_cell(value);
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

/// A JSON value on one line and in full: strings bare, null as `-`.
pub fn full_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.replace(['\n', '\r', '\t'], " ")
}

/// `1 delivery`, `2 deliveries`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// [`count`] of a JSON count (`u64`), which saturates rather than wraps on 32-bit targets.
pub(crate) fn count_u64(n: u64, one: &str, many: &str) -> String {
    count(usize::try_from(n).unwrap_or(usize::MAX), one, many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "é".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    é\n");
    }

    #[test]
    fn counts_agree_in_number() {
        assert_eq!(count(1, "delivery", "deliveries"), "1 delivery");
        assert_eq!(count(0, "delivery", "deliveries"), "0 deliveries");
        assert_eq!(count(2, "delivery", "deliveries"), "2 deliveries");
        assert_eq!(count_u64(1, "attempt", "attempts"), "1 attempt");
    }

    #[test]
    fn cells_are_one_line_and_long_ones_are_cut() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&serde_json::json!("a\nb")), "a b");
        assert_eq!(cell(&serde_json::json!(3)), "3");
        let long = "x".repeat(61);
        assert_eq!(cell(&Value::String(long.clone())).chars().count(), 60);
        assert_eq!(full_cell(&Value::String(long.clone())), long);
    }
}
