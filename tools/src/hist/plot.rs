//! SVG percentile-distribution plots, drawn with `plotters`: latency (ms) against percentile on
//! a log "nines" x axis, i.e. `1/(1-p)`, as HdrHistogram's plotter draws them; one line per run.

use super::{HistError, LatencyHistogram};
use plotters::prelude::*;

/// One line of a plot.
pub struct PlotSeries {
    /// Legend text.
    pub label: String,
    /// The latencies, in µs.
    pub hist: LatencyHistogram,
}

/// Distinct, readable line colours, reused in order.
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Label of an x position `1/(1-p)`: `0%`, `90%`, `99%`, `99.9%`...
fn nines_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".to_string();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let nines = x.log10().round() as i32;
    if (x.log10() - f64::from(nines)).abs() < 1e-6 && nines >= 1 {
        // Exactly 10^k: print 99.9...% with k nines.
        let decimals = (nines - 2).max(0) as usize;
        format!("{p:.decimals$}%")
    } else {
        format!("{p:.3}%")
    }
}

/// The (x = 1/(1-p), y = ms) points of a histogram, up to `x_max`.
fn points(h: &LatencyHistogram, x_max: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.inner().iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let x = if q >= 1.0 {
            x_max
        } else {
            (1.0 / (1.0 - q)).min(x_max)
        };
        pts.push((x, v.value_iterated_to() as f64 / 1000.0));
        if x >= x_max {
            break;
        }
    }
    pts
}

/// Renders the series as an SVG document.
pub fn render_svg(title: &str, series: &[PlotSeries]) -> Result<String, HistError> {
    let max_count = series
        .iter()
        .map(|s| s.hist.len())
        .max()
        .unwrap_or(1)
        .max(10);
    // Enough nines to show the tail each histogram can resolve, at least 99.9 %.
    // As many nines as the largest histogram resolves (1 in N samples), at least 99.9 %.
    let nines = ((max_count as f64).log10().floor() as i32).clamp(3, 6);
    let x_max = 10f64.powi(nines);
    let y_max = series
        .iter()
        .map(|s| s.hist.value_at_quantile(1.0) as f64 / 1000.0)
        .fold(0.0f64, f64::max)
        .max(0.001)
        * 1.1;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 600)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| HistError::Plot(e.to_string());
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(20)
            .margin_right(50)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((1f64..x_max).log_scale(), 0f64..y_max)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_labels(nines as usize + 1)
            .x_label_formatter(&|x| nines_label(*x))
            .y_label_formatter(&|y| format!("{y:.2}"))
            .draw()
            .map_err(|x| e(&x))?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(
                    points(&s.hist, x_max),
                    color.stroke_width(2),
                ))
                .map_err(|x| e(&x))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_labels() {
        assert_eq!(nines_label(1.0), "0%");
        assert_eq!(nines_label(10.0), "90%");
        assert_eq!(nines_label(100.0), "99%");
        assert_eq!(nines_label(1000.0), "99.9%");
        assert_eq!(nines_label(10000.0), "99.99%");
    }

    #[test]
    fn svg_for_two_runs_is_well_formed() {
        let mk = |scale: u64| {
            let mut h = LatencyHistogram::new();
            for i in 1..=20_000u64 {
                h.record_us(i * scale);
            }
            h
        };
        let svg = render_svg(
            "publish latency",
            &[
                PlotSeries {
                    label: "base".into(),
                    hist: mk(1),
                },
                PlotSeries {
                    label: "new".into(),
                    hist: mk(2),
                },
            ],
        )
        .expect("renders");
        assert!(
            svg.starts_with("<svg") || svg.starts_with("<?xml"),
            "{}",
            &svg[..80]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("base") && svg.contains("new") && svg.contains("99.9%"));
        assert!(
            svg.matches("<polyline").count() >= 4,
            "two lines and two legend marks"
        );
    }
}
