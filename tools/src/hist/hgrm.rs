//! The `.hgrm` percentile-distribution text format (HdrHistogram's `outputPercentileDistribution`),
//! which HdrHistogram plotters read. Values are written in milliseconds.

use super::{LatencyHistogram, SIGNIFICANT_DIGITS};
use std::fmt::Write as _;

/// Microseconds per output unit (the file is in milliseconds).
const US_PER_MS: f64 = 1000.0;
/// Percentile ticks per half distance to 100 %, as HdrHistogram's own tools default to.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Renders `h` (µs) as a `.hgrm` percentile distribution in milliseconds.
pub fn write_hgrm(h: &LatencyHistogram) -> String {
    let mut out = String::with_capacity(8 * 1024);
    out.push_str("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    let inner = h.inner();
    if !h.is_empty() {
        let mut total: u64 = 0;
        for v in inner.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / US_PER_MS;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            inner.mean() / US_PER_MS,
            inner.stdev() / US_PER_MS,
            inner.max() as f64 / US_PER_MS,
        )
    };
    // 2 * 10^digits rounded up to a power of two, as HdrHistogram sizes its sub-buckets.
    let sub_buckets = (2 * 10u64.pow(u32::from(SIGNIFICANT_DIGITS))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        inner.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the data lines back: (value ms, percentile, total count).
    fn parse(text: &str) -> Vec<(f64, f64, u64)> {
        text.lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert!(f.len() == 3 || f.len() == 4, "line {l:?}");
                (
                    f[0].parse().expect("value"),
                    f[1].parse().expect("percentile"),
                    f[2].parse().expect("count"),
                )
            })
            .collect()
    }

    #[test]
    fn format_matches_hdrhistogram_layout() {
        let mut h = LatencyHistogram::new();
        for i in 1..=10_000u64 {
            h.record_us(i * 10); // 10 µs .. 100 ms
        }
        let text = write_hgrm(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        let rows = parse(&text);
        assert!(rows.len() > 20);
        assert!(rows
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2));
        let last = rows.last().expect("rows");
        assert_eq!(last.1, 1.0);
        assert_eq!(last.2, 10_000);
        assert!(
            (last.0 - 100.0).abs() < 0.1,
            "max is 100 ms, got {}",
            last.0
        );
        let median = rows.iter().find(|r| r.1 >= 0.5).expect("median row");
        assert!((median.0 - 50.0).abs() < 0.1, "{median:?}");
        assert!(
            text.contains("#[Max     =      100.031, Total count    =        10000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn empty_histogram_still_has_footer() {
        let text = write_hgrm(&LatencyHistogram::new());
        assert!(text.contains("Total count    =            0]"), "{text}");
    }
}
