//! Latency recording and the records of a load run.
//!
//! Every latency the load generator measures goes into an HdrHistogram of microseconds
//! ([`LatencyHistogram`]). A finished run is written as a [`RunResult`] (RUN.json): the workload,
//! the broker, the machine, the rates, the usual percentiles of every histogram, and each
//! histogram in full, encoded as HdrHistogram's V2 compressed format in base64, so that runs can
//! be merged and re-plotted later without the raw samples. Beside it go `.hgrm` files in the
//! standard percentile-distribution text format that HdrHistogram plotters read.
//!
//! `shardlog hist` ([`run_cli`]) works on those files: `show` prints one run, `compare` sets runs
//! side by side (a table, and an SVG percentile plot with a log "nines" x axis), `merge` adds the
//! histograms of several runs into one.
//!
//! This module owns no network and no runtime: it is plain data, so it is tested on its own.

#![warn(missing_docs)]

mod compare;
mod hgrm;
mod plot;
mod run;

pub use compare::{compare_markdown, compare_table, render_show};
pub use hgrm::write_hgrm;
pub use plot::{render_svg, PlotSeries};
pub use run::{
    merge_runs, HistogramRecord, MachineInfo, Percentiles, RateSample, RunResult, RunSummary,
    RUN_FORMAT_VERSION,
};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use std::path::PathBuf;

/// Highest latency a histogram tracks, in microseconds (one hour); larger values are clamped.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits the histograms keep (3: 0.1 % value resolution).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// Errors of the histogram tools, each saying which file or field was at fault.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A RUN.json did not parse.
    #[error("{path}: not a shardlog RUN.json: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// An encoded histogram did not decode.
    #[error("histogram {name}: {reason}")]
    Decode {
        /// Which histogram.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// Histograms could not be combined (different ranges or precision).
    #[error("histogram {name}: cannot merge: {reason}")]
    Merge {
        /// Which histogram.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// The SVG plot could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// The command line asked for something impossible.
    #[error("{0}")]
    Usage(String),
}

/// A latency histogram in microseconds, from 1 µs to [`LATENCY_MAX_US`] at
/// [`SIGNIFICANT_DIGITS`] digits. Values above the range are clamped, never dropped.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    hist: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts; a failure here is a programming error.
        let hist = Histogram::new_with_bounds(1, LATENCY_MAX_US, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        Self { hist }
    }

    /// Records one latency in microseconds (0 is recorded as 1, above range as the maximum).
    #[inline]
    pub fn record_us(&mut self, us: u64) {
        self.hist.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    /// Records one latency in nanoseconds, rounded to microseconds.
    #[inline]
    pub fn record_ns(&mut self, ns: u64) {
        self.record_us((ns + 500) / 1000);
    }

    /// Adds every count of `other` into this histogram.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so `add` cannot fail for range reasons; saturate otherwise.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Forgets every recorded value.
    pub fn reset(&mut self) {
        self.hist.reset();
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The value (µs) at quantile `q` in 0..=1; 0 when empty.
    pub fn value_at_quantile(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// The underlying hdrhistogram.
    pub fn inner(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Wraps a decoded hdrhistogram.
    pub fn from_inner(hist: Histogram<u64>) -> Self {
        Self { hist }
    }

    /// Encodes as HdrHistogram V2 compressed (deflate) bytes, in base64.
    pub fn encode_base64(&self) -> String {
        let mut out = Vec::with_capacity(1024);
        // Serializing into a Vec cannot fail for I/O; a failure would be a library bug.
        V2DeflateSerializer::new()
            .serialize(&self.hist, &mut out)
            .expect("serializing into memory succeeds");
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Decodes [`Self::encode_base64`]'s output (V2 or V2 compressed); `name` labels errors.
    pub fn decode_base64(name: &str, text: &str) -> Result<Self, HistError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| HistError::Decode {
                name: name.to_string(),
                reason: format!("bad base64: {e}"),
            })?;
        let hist: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| HistError::Decode {
                name: name.to_string(),
                reason: format!("bad HdrHistogram encoding: {e:?}"),
            })?;
        Ok(Self { hist })
    }
}

/// The `shardlog hist` command line.
#[derive(Debug, clap::Args)]
pub struct HistArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: HistCommand,
}

/// `shardlog hist` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum HistCommand {
    /// Print one run: throughput, percentiles of each histogram, errors.
    Show {
        /// The RUN.json to print.
        run: PathBuf,
    },
    /// Print runs side by side (ratios against the first) and optionally plot them.
    Compare {
        /// Two or more RUN.json files; the first is the baseline.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
        /// Also write an SVG percentile plot of the runs to this file.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Which histogram to plot: publish, e2e or delay.
        #[arg(long, default_value = "publish")]
        metric: String,
        /// Print the table as Markdown.
        #[arg(long)]
        markdown: bool,
    },
    /// Add the histograms and counts of several runs (e.g. one per client machine) into one RUN.json.
    Merge {
        /// The RUN.json files to merge.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
        /// Where to write the merged RUN.json.
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Runs `shardlog hist ...`: prints to stdout, writes the files asked for.
pub fn run_cli(args: HistArgs) -> Result<(), HistError> {
    match args.command {
        HistCommand::Show { run } => {
            let r = RunResult::read(&run)?;
            print!("{}", render_show(&r));
            Ok(())
        }
        HistCommand::Compare {
            runs,
            svg,
            metric,
            markdown,
        } => {
            let loaded = runs
                .iter()
                .map(|p| RunResult::read(p))
                .collect::<Result<Vec<_>, _>>()?;
            let labels = run_labels(&runs);
            if markdown {
                print!("{}", compare_markdown(&loaded, &labels));
            } else {
                print!("{}", compare_table(&loaded, &labels));
            }
            if let Some(out) = svg {
                let mut series = Vec::with_capacity(loaded.len());
                for (run, label) in loaded.iter().zip(&labels) {
                    let rec = run.histogram(&metric).ok_or_else(|| {
                        HistError::Usage(format!(
                            "{label}: no histogram named {metric:?} (have: {})",
                            run.histograms
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    let hist = LatencyHistogram::decode_base64(&metric, &rec.encoded)?;
                    series.push(PlotSeries {
                        label: label.clone(),
                        hist,
                    });
                }
                let svg_text = render_svg(&format!("{metric} latency by percentile"), &series)?;
                std::fs::write(&out, svg_text).map_err(|source| HistError::Io {
                    path: out.clone(),
                    source,
                })?;
                println!("wrote {}", out.display());
            }
            Ok(())
        }
        HistCommand::Merge { runs, out } => {
            let loaded = runs
                .iter()
                .map(|p| RunResult::read(p))
                .collect::<Result<Vec<_>, _>>()?;
            let merged = merge_runs(&loaded)?;
            merged.write(&out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

/// Short labels for runs: file stems, made unique by their index when two stems are equal.
fn run_labels(paths: &[PathBuf]) -> Vec<String> {
    let stems: Vec<String> = paths
        .iter()
        .map(|p| {
            let stem = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string());
            if stem.eq_ignore_ascii_case("run") {
                // RUN.json in different directories: the directory name says more.
                p.parent()
                    .and_then(|d| d.file_name())
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or(stem)
            } else {
                stem
            }
        })
        .collect();
    stems
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if stems.iter().filter(|t| *t == s).count() > 1 {
                format!("{s}#{}", i + 1)
            } else {
                s.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_keeps_every_count() {
        let mut h = LatencyHistogram::new();
        for v in [
            1u64,
            2,
            3,
            100,
            1_000,
            12_345,
            1_000_000,
            LATENCY_MAX_US * 2,
        ] {
            h.record_us(v);
        }
        let text = h.encode_base64();
        let back = LatencyHistogram::decode_base64("t", &text).expect("decodes");
        assert_eq!(back.len(), h.len());
        assert_eq!(back.inner(), h.inner());
        assert_eq!(back.value_at_quantile(1.0), h.value_at_quantile(1.0));
    }

    #[test]
    fn decode_rejects_garbage_with_the_name() {
        let err = LatencyHistogram::decode_base64("publish", "@@notbase64").unwrap_err();
        assert!(err.to_string().contains("publish"), "{err}");
        let err = LatencyHistogram::decode_base64("e2e", "AAAA").unwrap_err();
        assert!(err.to_string().contains("e2e"), "{err}");
    }

    #[test]
    fn add_merges_counts() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        for i in 1..=1000 {
            a.record_us(i);
            b.record_us(i + 1000);
        }
        a.add(&b);
        assert_eq!(a.len(), 2000);
        let p50 = a.value_at_quantile(0.5);
        assert!((999..=1001).contains(&p50), "{p50}");
    }

    #[test]
    fn ns_rounds_to_us_and_zero_is_kept() {
        let mut h = LatencyHistogram::new();
        h.record_ns(0);
        h.record_ns(1_499);
        h.record_ns(1_500);
        assert_eq!(h.len(), 3);
        assert_eq!(h.value_at_quantile(0.0), 1);
        assert_eq!(h.value_at_quantile(1.0), 2);
    }

    #[test]
    fn labels_are_unique() {
        let l = run_labels(&[
            PathBuf::from("a/RUN.json"),
            PathBuf::from("b/RUN.json"),
            PathBuf::from("x/base.json"),
            PathBuf::from("y/base.json"),
        ]);
        assert_eq!(l, vec!["a", "b", "base#3", "base#4"]);
    }
}
