//! RUN.json: the record of one load run.

use super::{HistError, LatencyHistogram};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the RUN.json layout; bumped when a field changes meaning.
pub const RUN_FORMAT_VERSION: u32 = 1;

/// One load run: what was run, where, on what, and what was measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// [`RUN_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The tool and its version, e.g. `shardlog-load 0.1.0`.
    pub tool: String,
    /// Wall-clock start of the measured phase, milliseconds since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The workload's name (its file stem unless the file names it).
    pub workload_name: String,
    /// The workload as run, after command-line overrides, as JSON.
    pub workload: serde_json::Value,
    /// The bootstrap address the run was pointed at.
    pub broker: String,
    /// The client machine.
    pub machine: MachineInfo,
    /// Client cores (executors) used.
    pub client_cores: usize,
    /// True when the run was stopped early (Ctrl-C or a fatal error): the result is partial.
    pub interrupted: bool,
    /// Throughput and counts.
    pub summary: RunSummary,
    /// Broker and client errors by kind (`produce:NOT_LEADER_OR_FOLLOWER`, `io`, ...), counted.
    pub errors: BTreeMap<String, u64>,
    /// One sample per second of the whole run, warm-up included (flagged).
    pub rates: Vec<RateSample>,
    /// Latency histograms of the measured phase by name: `publish`, `e2e`, `delay`.
    pub histograms: BTreeMap<String, HistogramRecord>,
}

/// Throughput and counts of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RunSummary {
    /// Length of the measured phase (after warm-up), seconds.
    pub measured_secs: f64,
    /// Messages acknowledged by the broker in the measured phase (sent, for acks=0).
    pub produced_msgs: u64,
    /// Payload bytes of those messages.
    pub produced_bytes: u64,
    /// `produced_msgs / measured_secs`.
    pub produce_msgs_per_sec: f64,
    /// `produced_bytes / measured_secs / 1e6` (MB/s, decimal).
    pub produce_mb_per_sec: f64,
    /// Messages read by consumers in the measured phase.
    pub consumed_msgs: u64,
    /// Payload bytes of those messages.
    pub consumed_bytes: u64,
    /// `consumed_msgs / measured_secs`.
    pub consume_msgs_per_sec: f64,
    /// `consumed_bytes / measured_secs / 1e6`.
    pub consume_mb_per_sec: f64,
    /// Messages handed to the broker over the whole run, warm-up included.
    pub total_sent_msgs: u64,
    /// Messages acknowledged over the whole run (equals sent for acks=0).
    pub total_acked_msgs: u64,
    /// Messages that failed (error response or lost connection) over the whole run.
    pub total_failed_msgs: u64,
    /// Messages read by consumers over the whole run, drain included.
    pub total_consumed_msgs: u64,
    /// Target rate in msg/s (0 = as fast as possible).
    pub target_rate: f64,
    /// Messages consumed more than once (a producer's sequence on a partition went back).
    #[serde(default)]
    pub duplicate_msgs: u64,
    /// Messages missing in the middle of what was consumed (a producer's sequence jumped);
    /// includes messages whose produce failed.
    #[serde(default)]
    pub skipped_msgs: u64,
    /// Messages between the earliest and the end offsets captured at the start of a
    /// consume-existing run (`shardlog load --consume-existing`): what there was to read.
    /// 0 for runs that produce.
    #[serde(default)]
    pub existing_msgs: u64,
}

/// One second of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct RateSample {
    /// Seconds since the start of the run (warm-up included) at the end of this sample.
    pub t_secs: f64,
    /// True while warming up.
    pub warmup: bool,
    /// Messages acknowledged in this second.
    pub produced_msgs: u64,
    /// Payload bytes acknowledged in this second.
    pub produced_bytes: u64,
    /// Messages consumed in this second.
    pub consumed_msgs: u64,
    /// Payload bytes consumed in this second.
    pub consumed_bytes: u64,
    /// Errors in this second.
    pub errors: u64,
    /// Publish latency p99 of this second, µs (0 when nothing was acknowledged).
    pub publish_p99_us: u64,
    /// End-to-end latency p99 of this second, µs.
    pub e2e_p99_us: u64,
}

/// The usual percentiles of a histogram, in the histogram's unit.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 75th percentile.
    pub p75: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p99_9: u64,
    /// 99.99th percentile.
    #[serde(rename = "p99.99")]
    pub p99_99: u64,
    /// Largest recorded value.
    pub max: u64,
}

impl Percentiles {
    /// The labels and quantiles reported, in order.
    pub const LEVELS: [(&'static str, f64); 8] = [
        ("p50", 0.50),
        ("p75", 0.75),
        ("p90", 0.90),
        ("p95", 0.95),
        ("p99", 0.99),
        ("p99.9", 0.999),
        ("p99.99", 0.9999),
        ("max", 1.0),
    ];

    /// Reads the percentiles off a histogram.
    pub fn of(h: &LatencyHistogram) -> Self {
        let q = |q| h.value_at_quantile(q);
        Self {
            p50: q(0.50),
            p75: q(0.75),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: q(1.0),
        }
    }

    /// The values in the order of [`Self::LEVELS`].
    pub fn values(&self) -> [u64; 8] {
        [
            self.p50,
            self.p75,
            self.p90,
            self.p95,
            self.p99,
            self.p99_9,
            self.p99_99,
            self.max,
        ]
    }
}

/// One histogram of a run: its summary and the whole histogram, encoded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HistogramRecord {
    /// Unit of every value here: always `us` (microseconds).
    pub unit: String,
    /// Number of recorded values.
    pub count: u64,
    /// Smallest recorded value.
    pub min: u64,
    /// Mean of the recorded values.
    pub mean: f64,
    /// The usual percentiles.
    pub percentiles: Percentiles,
    /// HdrHistogram V2 compressed encoding, base64 (see [`LatencyHistogram::decode_base64`]).
    pub encoded: String,
}

impl HistogramRecord {
    /// Summarises and encodes a histogram.
    pub fn of(h: &LatencyHistogram) -> Self {
        let inner = h.inner();
        Self {
            unit: "us".to_string(),
            count: h.len(),
            min: if h.is_empty() { 0 } else { inner.min() },
            // Rounded to 1 ns so the value survives a JSON round trip exactly.
            mean: if h.is_empty() {
                0.0
            } else {
                (inner.mean() * 1000.0).round() / 1000.0
            },
            percentiles: Percentiles::of(h),
            encoded: h.encode_base64(),
        }
    }

    /// Decodes the full histogram.
    pub fn decode(&self, name: &str) -> Result<LatencyHistogram, HistError> {
        LatencyHistogram::decode_base64(name, &self.encoded)
    }
}

/// The client machine a run was measured on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MachineInfo {
    /// Host name.
    pub hostname: String,
    /// Online CPUs.
    pub cores: usize,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, KiB.
    pub memory_kib: u64,
}

impl MachineInfo {
    /// Reads the machine's description from /proc (fields it cannot read stay empty).
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name") || l.starts_with("Model"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Self {
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            memory_kib,
        }
    }
}

impl RunResult {
    /// Reads and parses a RUN.json.
    pub fn read(path: &Path) -> Result<Self, HistError> {
        let text = std::fs::read_to_string(path).map_err(|source| HistError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| HistError::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Writes this run as pretty JSON.
    pub fn write(&self, path: &Path) -> Result<(), HistError> {
        // Serializing plain data with string keys cannot fail.
        let text = serde_json::to_string_pretty(self).expect("RunResult serializes");
        std::fs::write(path, text + "\n").map_err(|source| HistError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A histogram by name (`publish`, `e2e`, `delay`), if the run has it.
    pub fn histogram(&self, name: &str) -> Option<&HistogramRecord> {
        self.histograms.get(name)
    }
}

/// Adds several runs into one: counts and histograms summed, per-second samples summed by
/// index, durations the longest. Meant for runs made at the same time from several clients.
pub fn merge_runs(runs: &[RunResult]) -> Result<RunResult, HistError> {
    let Some(first) = runs.first() else {
        return Err(HistError::Usage("merge needs at least one run".into()));
    };
    let mut out = first.clone();
    let mut hists: BTreeMap<String, LatencyHistogram> = BTreeMap::new();
    for (name, rec) in &first.histograms {
        hists.insert(name.clone(), rec.decode(name)?);
    }
    for run in &runs[1..] {
        let s = &mut out.summary;
        let r = &run.summary;
        s.measured_secs = s.measured_secs.max(r.measured_secs);
        s.produced_msgs += r.produced_msgs;
        s.produced_bytes += r.produced_bytes;
        s.consumed_msgs += r.consumed_msgs;
        s.consumed_bytes += r.consumed_bytes;
        s.total_sent_msgs += r.total_sent_msgs;
        s.total_acked_msgs += r.total_acked_msgs;
        s.total_failed_msgs += r.total_failed_msgs;
        s.total_consumed_msgs += r.total_consumed_msgs;
        s.duplicate_msgs += r.duplicate_msgs;
        s.skipped_msgs += r.skipped_msgs;
        s.existing_msgs += r.existing_msgs;
        s.target_rate += r.target_rate;
        out.client_cores += run.client_cores;
        out.interrupted |= run.interrupted;
        for (k, v) in &run.errors {
            *out.errors.entry(k.clone()).or_default() += v;
        }
        for (i, sample) in run.rates.iter().enumerate() {
            if let Some(o) = out.rates.get_mut(i) {
                o.produced_msgs += sample.produced_msgs;
                o.produced_bytes += sample.produced_bytes;
                o.consumed_msgs += sample.consumed_msgs;
                o.consumed_bytes += sample.consumed_bytes;
                o.errors += sample.errors;
                o.publish_p99_us = o.publish_p99_us.max(sample.publish_p99_us);
                o.e2e_p99_us = o.e2e_p99_us.max(sample.e2e_p99_us);
            } else {
                out.rates.push(sample.clone());
            }
        }
        for (name, rec) in &run.histograms {
            let h = rec.decode(name)?;
            hists.entry(name.clone()).or_default().add(&h);
        }
    }
    let s = &mut out.summary;
    if s.measured_secs > 0.0 {
        s.produce_msgs_per_sec = s.produced_msgs as f64 / s.measured_secs;
        s.produce_mb_per_sec = s.produced_bytes as f64 / s.measured_secs / 1e6;
        s.consume_msgs_per_sec = s.consumed_msgs as f64 / s.measured_secs;
        s.consume_mb_per_sec = s.consumed_bytes as f64 / s.measured_secs / 1e6;
    }
    out.histograms = hists
        .iter()
        .map(|(k, h)| (k.clone(), HistogramRecord::of(h)))
        .collect();
    out.workload_name = format!("{} (merged x{})", first.workload_name, runs.len());
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small run with `n` publish samples from 1..=n ms.
    pub(crate) fn sample_run(name: &str, n: u64, scale_us: u64) -> RunResult {
        let mut publish = LatencyHistogram::new();
        let mut e2e = LatencyHistogram::new();
        for i in 1..=n {
            publish.record_us(i * scale_us);
            e2e.record_us(i * scale_us * 2);
        }
        let mut histograms = BTreeMap::new();
        histograms.insert("publish".to_string(), HistogramRecord::of(&publish));
        histograms.insert("e2e".to_string(), HistogramRecord::of(&e2e));
        RunResult {
            format_version: RUN_FORMAT_VERSION,
            tool: "test".into(),
            started_at_unix_ms: 0,
            workload_name: name.into(),
            workload: serde_json::json!({"name": name}),
            broker: "127.0.0.1:9092".into(),
            machine: MachineInfo::detect(),
            client_cores: 1,
            interrupted: false,
            summary: RunSummary {
                measured_secs: 2.0,
                produced_msgs: n,
                produced_bytes: n * 1024,
                produce_msgs_per_sec: n as f64 / 2.0,
                produce_mb_per_sec: (n * 1024) as f64 / 2.0 / 1e6,
                consumed_msgs: n,
                consumed_bytes: n * 1024,
                consume_msgs_per_sec: n as f64 / 2.0,
                consume_mb_per_sec: (n * 1024) as f64 / 2.0 / 1e6,
                total_sent_msgs: n,
                total_acked_msgs: n,
                total_failed_msgs: 0,
                total_consumed_msgs: n,
                target_rate: 0.0,
                duplicate_msgs: 0,
                skipped_msgs: 0,
                existing_msgs: 0,
            },
            errors: BTreeMap::new(),
            rates: vec![RateSample {
                t_secs: 1.0,
                produced_msgs: n,
                ..Default::default()
            }],
            histograms,
        }
    }

    #[test]
    fn json_round_trip() {
        let run = sample_run("a", 1000, 10);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("RUN.json");
        run.write(&path).expect("write");
        let back = RunResult::read(&path).expect("read");
        assert_eq!(back, run);
        let text = std::fs::read_to_string(&path).expect("read text");
        assert!(
            text.contains("\"p99.9\""),
            "percentile keys use Kafka-tool style names"
        );
    }

    #[test]
    fn percentiles_are_monotone() {
        let run = sample_run("a", 10_000, 7);
        for rec in run.histograms.values() {
            let v = rec.percentiles.values();
            assert!(v.windows(2).all(|w| w[0] <= w[1]), "{v:?}");
        }
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let a = sample_run("a", 1000, 10);
        let b = sample_run("b", 3000, 10);
        let m = merge_runs(&[a, b]).expect("merge");
        assert_eq!(m.summary.produced_msgs, 4000);
        assert_eq!(m.histograms["publish"].count, 4000);
        assert!((m.summary.produce_msgs_per_sec - 2000.0).abs() < 1e-9);
        let h = m.histograms["publish"].decode("publish").expect("decode");
        assert_eq!(h.len(), 4000);
    }

    #[test]
    fn read_names_the_file_on_bad_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.json");
        std::fs::write(&path, "{\"format_version\": 1}").expect("write");
        let err = RunResult::read(&path).unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
