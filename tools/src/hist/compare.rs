//! Text tables: one run (`hist show`) and runs side by side (`hist compare`).

use super::run::{Percentiles, RunResult};
use std::fmt::Write as _;

/// Histograms shown, in this order, when a run has them.
const METRICS: [&str; 3] = ["publish", "e2e", "delay"];

/// Formats microseconds as milliseconds with three decimals.
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// Lays out rows of cells: first column left-aligned, the others right-aligned.
fn layout(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i == 0 {
                let _ = write!(line, "{c:<w$}", w = widths[0]);
            } else {
                let _ = write!(line, "  {c:>w$}", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `value (ratio x)` against a baseline; the bare value for the baseline itself.
fn with_ratio(text: String, value: f64, base: f64, is_base: bool) -> String {
    if is_base {
        text
    } else if base > 0.0 {
        format!("{text} ({:.2}x)", value / base)
    } else {
        format!("{text} (-)")
    }
}

/// Lays out rows as a Markdown table (first row is the header).
fn layout_markdown(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        out.push_str("| ");
        out.push_str(&row.join(" | "));
        out.push_str(" |\n");
        if i == 0 {
            out.push('|');
            for j in 0..row.len() {
                out.push_str(if j == 0 { "---|" } else { "---:|" });
            }
            out.push('\n');
        }
    }
    out
}

/// The side-by-side table of `runs` (the first is the baseline) with column `labels`.
pub fn compare_table(runs: &[RunResult], labels: &[String]) -> String {
    layout(&compare_rows(runs, labels))
}

/// [`compare_table`] as a Markdown table, for perf/RESULTS.md.
pub fn compare_markdown(runs: &[RunResult], labels: &[String]) -> String {
    layout_markdown(&compare_rows(runs, labels))
}

fn compare_rows(runs: &[RunResult], labels: &[String]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec![String::new()];
    header.extend(labels.iter().cloned());
    rows.push(header);
    let Some(base) = runs.first() else {
        return rows;
    };

    let mut number_row =
        |name: &str, get: &dyn Fn(&RunResult) -> f64, fmt: &dyn Fn(f64) -> String| {
            let b = get(base);
            let mut row = vec![name.to_string()];
            for (i, r) in runs.iter().enumerate() {
                let v = get(r);
                row.push(with_ratio(fmt(v), v, b, i == 0));
            }
            rows.push(row);
        };
    number_row("produce msg/s", &|r| r.summary.produce_msgs_per_sec, &|v| {
        format!("{v:.0}")
    });
    number_row("produce MB/s", &|r| r.summary.produce_mb_per_sec, &|v| {
        format!("{v:.2}")
    });
    number_row("consume msg/s", &|r| r.summary.consume_msgs_per_sec, &|v| {
        format!("{v:.0}")
    });
    number_row("consume MB/s", &|r| r.summary.consume_mb_per_sec, &|v| {
        format!("{v:.2}")
    });

    for metric in METRICS {
        if !runs.iter().any(|r| r.histograms.contains_key(metric)) {
            continue;
        }
        for (idx, (level, _)) in Percentiles::LEVELS.iter().enumerate() {
            let get = |r: &RunResult| {
                r.histograms
                    .get(metric)
                    .filter(|h| h.count > 0)
                    .map(|h| h.percentiles.values()[idx])
            };
            let b = get(base);
            let mut row = vec![format!("{metric} {level} ms")];
            for (i, r) in runs.iter().enumerate() {
                row.push(match (get(r), b) {
                    (Some(v), Some(bv)) => with_ratio(ms(v), v as f64, bv as f64, i == 0),
                    (Some(v), None) => ms(v),
                    (None, _) => "-".to_string(),
                });
            }
            rows.push(row);
        }
    }

    let mut row = vec!["errors".to_string()];
    row.extend(
        runs.iter()
            .map(|r| r.errors.values().sum::<u64>().to_string()),
    );
    rows.push(row);
    let mut row = vec!["interrupted".to_string()];
    row.extend(
        runs.iter()
            .map(|r| if r.interrupted { "yes" } else { "no" }.to_string()),
    );
    rows.push(row);
    rows
}

/// The text report of one run.
pub fn render_show(run: &RunResult) -> String {
    let s = &run.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "workload {} against {}{}",
        run.workload_name,
        run.broker,
        if run.interrupted {
            " (interrupted: partial result)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "machine  {} cores, {}, kernel {}; client used {} cores",
        run.machine.cores, run.machine.cpu_model, run.machine.kernel, run.client_cores
    );
    let _ = writeln!(
        out,
        "measured {:.1} s: produce {:.0} msg/s {:.2} MB/s, consume {:.0} msg/s {:.2} MB/s",
        s.measured_secs,
        s.produce_msgs_per_sec,
        s.produce_mb_per_sec,
        s.consume_msgs_per_sec,
        s.consume_mb_per_sec
    );
    let _ = writeln!(
        out,
        "totals   sent {} acked {} failed {} consumed {} (duplicates {}, skipped {})",
        s.total_sent_msgs,
        s.total_acked_msgs,
        s.total_failed_msgs,
        s.total_consumed_msgs,
        s.duplicate_msgs,
        s.skipped_msgs
    );
    if s.existing_msgs > 0 {
        let _ = writeln!(
            out,
            "existing {} messages to read (from the earliest to the end offsets at the start)",
            s.existing_msgs
        );
    }
    let mut rows = vec![{
        let mut h = vec!["latency ms".to_string(), "count".to_string()];
        h.extend(Percentiles::LEVELS.iter().map(|(l, _)| l.to_string()));
        h
    }];
    for metric in METRICS {
        if let Some(h) = run.histograms.get(metric) {
            let mut row = vec![metric.to_string(), h.count.to_string()];
            row.extend(h.percentiles.values().iter().map(|v| ms(*v)));
            rows.push(row);
        }
    }
    if rows.len() > 1 {
        out.push_str(&layout(&rows));
    } else {
        // A consume-existing run: the send times belong to another run.
        out.push_str("latency  none recorded\n");
    }
    if run.errors.is_empty() {
        out.push_str("errors   none\n");
    } else {
        for (k, v) in &run.errors {
            let _ = writeln!(out, "error    {k}: {v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::run::tests::sample_run;

    #[test]
    fn table_has_ratios_against_the_first() {
        let a = sample_run("a", 1000, 10);
        let b = sample_run("b", 2000, 20);
        let t = compare_table(&[a, b], &["a".into(), "b".into()]);
        let line = t
            .lines()
            .find(|l| l.starts_with("produce msg/s"))
            .expect(&t);
        assert!(
            line.contains("500") && line.contains("1000 (2.00x)"),
            "{line}"
        );
        let p50 = t
            .lines()
            .find(|l| l.starts_with("publish p50 ms"))
            .expect(&t);
        assert!(p50.contains("(4.00x)"), "{p50}");
        assert!(t.lines().any(|l| l.starts_with("e2e p99.99 ms")), "{t}");
        let m = compare_markdown(
            &[sample_run("a", 10, 1), sample_run("b", 10, 1)],
            &["a".into(), "b".into()],
        );
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines[0], "|  | a | b |");
        assert_eq!(lines[1], "|---|---:|---:|");
        assert!(lines.iter().all(|l| l.starts_with('|') && l.ends_with('|')));
    }

    #[test]
    fn show_prints_each_histogram() {
        let t = render_show(&sample_run("a", 1000, 10));
        assert!(
            t.contains("publish") && t.contains("e2e") && t.contains("p99.99"),
            "{t}"
        );
    }
}
