//! Output for people: aligned tables and short summaries, bounded. `--json` prints the whole
//! record instead; everything here is for reading, never for parsing.

use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

/// Exit status of a report that ran and found something failing (a dependency down, an object
/// Stripe would not return, an alert firing), so a script or cron notices. 1 is an error.
pub(super) const FOUND_FAILING: u8 = 3;

/// How long one text cell may be before it is cut (the rest is in `--json`).
pub(super) const CELL_CHARS: usize = 100;

/// A text cut to `max` characters, with a note saying how much was left out.
pub(super) fn truncate(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.replace('\n', " ");
    }
    let head: String = text.chars().take(max).collect();
    format!("{}… ({} more characters; --json for all)", head.replace('\n', " "), count - max)
}

/// A table with a header row, columns aligned, no borders.
pub(super) fn table<R: IntoIterator<Item = Vec<String>>>(header: &[&str], rows: R) -> String {
    let mut t = Table::new();
    t.load_preset(NOTHING).set_header(header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        t.add_row(row.into_iter().map(|c| truncate(&c, CELL_CHARS)));
    }
    // comfy-table pads each cell with one space either side; trim the left margin.
    t.lines().map(|l| l.strip_prefix(' ').unwrap_or(&l).trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

/// The note printed under a list cut at `limit`.
pub(super) fn more(shown: usize, total: usize) -> Option<String> {
    (total > shown).then(|| format!("… {} more not shown (--limit N, or --json)", total - shown))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        // A measurement to what matters to a person (6.4889730000000005 ms reads 6.49); the
        // JSON keeps every digit.
        Value::Number(n) if n.is_f64() => n.as_f64().map(|f| format!("{}", (f * 100.0).round() / 100.0)).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty() || o.values().all(|v| is_empty(v) || is_zero(v)),
        _ => false,
    }
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

/// A record with nothing to report: only names, zeros and nulls (an idle queue, a dry run's
/// "done" counters).
fn is_idle(v: &Value) -> bool {
    v.as_object().is_some_and(|o| o.values().any(is_zero) && o.values().all(|v| v.is_string() || v.is_null() || is_zero(v)))
}

/// A report as indented `name: value` lines: nulls and empty lists left out, lists of records
/// as tables of at most `limit` rows, long texts cut.
pub(super) fn report(v: &Value, limit: usize) -> String {
    let mut out = Vec::new();
    render(v, 0, limit, &mut out);
    out.join("\n")
}

fn render(v: &Value, depth: usize, limit: usize, out: &mut Vec<String>) {
    let pad = "  ".repeat(depth);
    let Value::Object(map) = v else {
        out.push(format!("{pad}{}", truncate(&scalar(v), CELL_CHARS)));
        return;
    };
    for (key, value) in map.iter().filter(|(_, v)| !is_empty(v)) {
        let label = key.replace('_', " ");
        match value {
            Value::Object(_) => {
                out.push(format!("{pad}{label}:"));
                render(value, depth + 1, limit, out);
            }
            Value::Array(all) if all.iter().all(Value::is_object) => {
                let items: Vec<&Value> = all.iter().filter(|i| !is_idle(i)).collect();
                let idle = all.len() - items.len();
                let idle_note = if idle > 0 { format!(", {idle} with nothing to report left out") } else { String::new() };
                if items.is_empty() {
                    out.push(format!("{pad}{label}: {idle} with nothing to report"));
                    continue;
                }
                out.push(format!("{pad}{label} ({}{idle_note}):", all.len()));
                let mut columns: Vec<&str> = Vec::new();
                for item in items.iter().take(limit) {
                    for k in item.as_object().into_iter().flat_map(|o| o.keys()) {
                        if !columns.contains(&k.as_str()) {
                            columns.push(k);
                        }
                    }
                }
                let rows = items.iter().take(limit).map(|item| {
                    columns.iter().map(|c| match item.get(*c) {
                        Some(Value::Object(_) | Value::Array(_)) => item[*c].to_string(),
                        Some(v) => scalar(v),
                        None => "-".into(),
                    }).collect()
                });
                let heads: Vec<String> = columns.iter().map(|c| c.replace('_', " ")).collect();
                let heads: Vec<&str> = heads.iter().map(String::as_str).collect();
                for line in table(&heads, rows).lines() {
                    out.push(format!("{pad}  {line}"));
                }
                if let Some(note) = more(limit.min(items.len()), items.len()) {
                    out.push(format!("{pad}  {note}"));
                }
            }
            Value::Array(items) => {
                let shown: Vec<String> = items.iter().take(limit).map(scalar).collect();
                let note = more(shown.len(), items.len()).map(|n| format!(" {n}")).unwrap_or_default();
                out.push(format!("{pad}{label}: {}{note}", truncate(&shown.join(", "), CELL_CHARS * 4)));
            }
            other => out.push(format!("{pad}{label}: {}", truncate(&scalar(other), CELL_CHARS))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_leave_out_empty_parts_cut_long_texts_and_bound_lists() {
        let long = "x".repeat(500);
        let v = serde_json::json!({"executed": false, "queues": [], "nothing": null, "error": long, "done": {"requeued": 0, "replayed": 0},
            "idle": [{"kind": "a", "ready": 0}, {"kind": "b", "ready": 2}],
            "rows": (1..=80).map(|i| serde_json::json!({"id": i, "state": "ok"})).collect::<Vec<_>>()});
        let text = report(&v, 50);
        assert!(!text.contains("queues") && !text.contains("nothing:") && !text.contains("done"), "{text}");
        assert!(text.contains("idle (2, 1 with nothing to report left out)") && !text.contains(" a "), "{text}");
        assert!(text.contains("400 more characters"), "{text}");
        assert!(text.contains("rows (80):") && text.contains("30 more not shown"), "{text}");
        assert!(text.lines().count() < 60, "{text}");
        let t = table(&["a", "long header"], vec![vec!["1".into(), "2".into()], vec!["333".into(), "4".into()]]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].find("LONG"), lines[1].find('2'), "{t}");
    }
}
