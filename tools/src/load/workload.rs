//! Workload files: TOML modelled on the OpenMessaging Benchmark's workload YAML.
//!
//! ```toml
//! name = "1 topic, 6 partitions, 1 KiB, max rate"
//! topics = 1
//! partitions_per_topic = 6
//! message_size = 1024            # or payload_file = "payload.bin"
//! key_distribution = "none"      # none | round-robin | random | zipf
//! producers_per_topic = 1
//! consumers_per_topic = 1
//! producer_rate = 0              # msg/s over all producers, 0 = as fast as possible
//! acks = 1                       # 0, 1, -1 or "all"
//! batch_size = 16384             # bytes
//! linger_ms = 1
//! compression = "none"           # none | gzip | snappy | lz4 | zstd
//! warmup_secs = 1
//! duration_secs = 10
//! ```
//!
//! Unknown keys are refused with the key named; impossible values name their key too.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How message keys (and so partitions) are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistribution {
    /// No key; partitions chosen by the sticky partitioner (one partition per batch).
    #[default]
    None,
    /// Keys `key-0`, `key-1`, ... in turn, partitioned by murmur2 as Kafka does.
    RoundRobin,
    /// Uniformly random keys among `key_count`.
    Random,
    /// Zipf-distributed keys among `key_count` (exponent `zipf_exponent`): a few hot keys.
    Zipf,
}

/// Record batch compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec number in the batch attributes.
    pub fn codec(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }

    /// The compression of a codec number, if known.
    pub fn from_codec(codec: i16) -> Option<Self> {
        Some(match codec {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }
}

/// `acks` as written: a number or `"all"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AcksValue {
    /// 0, 1 or -1.
    Number(i64),
    /// `"all"` (= -1) or a number as text.
    Text(String),
}

impl Default for AcksValue {
    fn default() -> Self {
        Self::Number(1)
    }
}

impl AcksValue {
    /// The wire value (0, 1 or -1), or `None` if it is none of those.
    pub fn resolve(&self) -> Option<i16> {
        match self {
            Self::Number(n @ -1..=1) => Some(*n as i16),
            Self::Number(_) => None,
            Self::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "all" | "-1" => Some(-1),
                "0" => Some(0),
                "1" => Some(1),
                _ => None,
            },
        }
    }
}

fn default_one() -> u32 {
    1
}
fn default_batch_size() -> u32 {
    16 * 1024
}
fn default_linger_ms() -> f64 {
    1.0
}
fn default_max_in_flight() -> u32 {
    5
}
fn default_duration() -> f64 {
    10.0
}
fn default_warmup() -> f64 {
    1.0
}
fn default_key_count() -> u64 {
    10_000
}
fn default_zipf_exponent() -> f64 {
    1.0
}
fn default_fetch_max_wait_ms() -> u32 {
    100
}
fn default_request_timeout_ms() -> u32 {
    30_000
}

/// A workload: what to create, what to send, how fast and for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Human-readable name; the file stem when absent.
    #[serde(default)]
    pub name: String,
    /// Number of topics.
    #[serde(default = "default_one")]
    pub topics: u32,
    /// Partitions of each topic.
    #[serde(default = "default_one")]
    pub partitions_per_topic: u32,
    /// Size of each message value, bytes (at least 8: the first 8 carry the send time).
    #[serde(default)]
    pub message_size: Option<u32>,
    /// A file whose bytes are every message's value (its first 8 bytes are overwritten).
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    /// How keys are chosen.
    #[serde(default)]
    pub key_distribution: KeyDistribution,
    /// Distinct keys for `random` and `zipf` (and the cycle of `round-robin`).
    #[serde(default = "default_key_count")]
    pub key_count: u64,
    /// Zipf exponent for `zipf` keys.
    #[serde(default = "default_zipf_exponent")]
    pub zipf_exponent: f64,
    /// Producers per topic; each writes to every partition of its topic.
    #[serde(default = "default_one")]
    pub producers_per_topic: u32,
    /// Consumers per topic; the topic's partitions are dealt among them. 0: no end-to-end.
    #[serde(default = "default_one")]
    pub consumers_per_topic: u32,
    /// Target msg/s over all producers; 0 = as fast as possible.
    #[serde(default)]
    pub producer_rate: f64,
    /// If set, the rate is this fraction of the produce rate of a max-rate run given with
    /// `--max-from RUN.json` (e.g. 0.5 for "50 % of max").
    #[serde(default)]
    pub producer_rate_fraction_of_max: Option<f64>,
    /// Produce acks: 0, 1, -1 or "all".
    #[serde(default)]
    pub acks: AcksValue,
    /// Largest batch per partition, bytes, before it is sent.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Longest a non-full batch waits before it is sent, ms.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: f64,
    /// Batch compression.
    #[serde(default)]
    pub compression: Compression,
    /// Produce requests in flight per connection before the producer waits.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Seconds run before measuring.
    #[serde(default = "default_warmup")]
    pub warmup_secs: f64,
    /// Seconds measured.
    #[serde(default = "default_duration")]
    pub duration_secs: f64,
    /// Fetch long-poll wait, ms.
    #[serde(default = "default_fetch_max_wait_ms")]
    pub fetch_max_wait_ms: u32,
    /// Produce request timeout sent to the broker, ms.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u32,
}

/// A workload file that could not be used; the message names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The file could not be read.
    #[error("workload {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("workload {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, which names the key and line.
        message: String,
    },
    /// A value outside what can be run.
    #[error("workload {path}: `{key}` {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Most topics, partitions per topic, producers or consumers per topic a workload may ask for.
pub const WORKLOAD_COUNT_MAX: u32 = 100_000;
/// Largest message or batch, bytes.
pub const MESSAGE_BYTES_MAX: u32 = 64 * 1024 * 1024;

impl Workload {
    /// Parses TOML text; `path` labels errors and resolves `payload_file`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, WorkloadError> {
        let mut w: Workload = toml::from_str(text).map_err(|e| WorkloadError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if w.name.is_empty() {
            w.name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "workload".to_string());
        }
        if let Some(p) = &w.payload_file {
            if p.is_relative() {
                if let Some(dir) = path.parent() {
                    w.payload_file = Some(dir.join(p));
                }
            }
        }
        w.validate(path)?;
        Ok(w)
    }

    /// Reads and parses a workload file.
    pub fn load(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks every value; the error names the first bad key.
    pub fn validate(&self, path: &Path) -> Result<(), WorkloadError> {
        let bad = |key: &'static str, message: String| {
            Err(WorkloadError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            })
        };
        let count = |key: &'static str, v: u32, min: u32| {
            if v < min || v > WORKLOAD_COUNT_MAX {
                bad(
                    key,
                    format!("must be between {min} and {WORKLOAD_COUNT_MAX}, got {v}"),
                )
            } else {
                Ok(())
            }
        };
        count("topics", self.topics, 1)?;
        count("partitions_per_topic", self.partitions_per_topic, 1)?;
        count("producers_per_topic", self.producers_per_topic, 1)?;
        count("consumers_per_topic", self.consumers_per_topic, 0)?;
        match (&self.message_size, &self.payload_file) {
            (None, None) => return bad("message_size", "is required (or give payload_file)".into()),
            (Some(_), Some(_)) => {
                return bad("payload_file", "cannot be given together with message_size".into())
            }
            (Some(n), None) if *n < 8 || *n > MESSAGE_BYTES_MAX => {
                return bad(
                    "message_size",
                    format!("must be between 8 and {MESSAGE_BYTES_MAX} bytes (the first 8 carry the send time), got {n}"),
                )
            }
            _ => {}
        }
        if !(self.producer_rate.is_finite() && self.producer_rate >= 0.0) {
            return bad(
                "producer_rate",
                format!("must be >= 0 msg/s, got {}", self.producer_rate),
            );
        }
        if let Some(f) = self.producer_rate_fraction_of_max {
            if !(f > 0.0 && f <= 10.0) {
                return bad(
                    "producer_rate_fraction_of_max",
                    format!("must be in (0, 10], got {f}"),
                );
            }
        }
        if self.acks.resolve().is_none() {
            return bad(
                "acks",
                match &self.acks {
                    AcksValue::Number(n) => format!("must be 0, 1, -1 or \"all\", got {n}"),
                    AcksValue::Text(t) => format!("must be 0, 1, -1 or \"all\", got {t:?}"),
                },
            );
        }
        if self.batch_size < 64 || self.batch_size > MESSAGE_BYTES_MAX {
            return bad(
                "batch_size",
                format!(
                    "must be between 64 and {MESSAGE_BYTES_MAX} bytes, got {}",
                    self.batch_size
                ),
            );
        }
        if !(self.linger_ms.is_finite() && (0.0..=60_000.0).contains(&self.linger_ms)) {
            return bad(
                "linger_ms",
                format!("must be between 0 and 60000, got {}", self.linger_ms),
            );
        }
        if !(1..=1024).contains(&self.max_in_flight) {
            return bad(
                "max_in_flight",
                format!("must be between 1 and 1024, got {}", self.max_in_flight),
            );
        }
        if !(self.warmup_secs.is_finite() && (0.0..=86_400.0).contains(&self.warmup_secs)) {
            return bad(
                "warmup_secs",
                format!("must be between 0 and 86400, got {}", self.warmup_secs),
            );
        }
        if !(self.duration_secs.is_finite()
            && self.duration_secs > 0.0
            && self.duration_secs <= 86_400.0)
        {
            return bad(
                "duration_secs",
                format!("must be in (0, 86400], got {}", self.duration_secs),
            );
        }
        if self.key_count == 0 || self.key_count > 10_000_000 {
            return bad(
                "key_count",
                format!("must be between 1 and 10000000, got {}", self.key_count),
            );
        }
        if !(self.zipf_exponent.is_finite()
            && self.zipf_exponent > 0.0
            && self.zipf_exponent <= 10.0)
        {
            return bad(
                "zipf_exponent",
                format!("must be in (0, 10], got {}", self.zipf_exponent),
            );
        }
        if self.fetch_max_wait_ms > 60_000 {
            return bad(
                "fetch_max_wait_ms",
                format!("must be at most 60000, got {}", self.fetch_max_wait_ms),
            );
        }
        if self.request_timeout_ms == 0 || self.request_timeout_ms > 600_000 {
            return bad(
                "request_timeout_ms",
                format!(
                    "must be between 1 and 600000, got {}",
                    self.request_timeout_ms
                ),
            );
        }
        Ok(())
    }

    /// The acks value on the wire (validated).
    pub fn acks_wire(&self) -> i16 {
        self.acks.resolve().unwrap_or(1)
    }

    /// The message value template: the payload file's bytes, or `message_size` random bytes.
    pub fn payload(&self) -> Result<Vec<u8>, WorkloadError> {
        if let Some(p) = &self.payload_file {
            let bytes = std::fs::read(p).map_err(|source| WorkloadError::Io {
                path: p.clone(),
                source,
            })?;
            if bytes.len() < 8 || bytes.len() > MESSAGE_BYTES_MAX as usize {
                return Err(WorkloadError::Invalid {
                    path: p.clone(),
                    key: "payload_file",
                    message: format!(
                        "must hold between 8 and {MESSAGE_BYTES_MAX} bytes, has {}",
                        bytes.len()
                    ),
                });
            }
            return Ok(bytes);
        }
        let n = self.message_size.unwrap_or(1024) as usize;
        // Random bytes, so compression is measured on data as hard as OMB's random payloads.
        let mut rng = super::keys::Rng::new(0x5eed);
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        v.truncate(n);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workload, WorkloadError> {
        Workload::parse(Path::new("perf/workloads/test.toml"), text)
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let w = parse("message_size = 1024\n").expect("parses");
        assert_eq!(w.name, "test");
        assert_eq!(w.topics, 1);
        assert_eq!(w.acks_wire(), 1);
        assert_eq!(w.batch_size, 16384);
        assert_eq!(w.max_in_flight, 5);
        assert_eq!(w.payload().expect("payload").len(), 1024);
    }

    #[test]
    fn full_file_parses() {
        let w = parse(
            r#"
            name = "x"
            topics = 2
            partitions_per_topic = 6
            message_size = 100
            key_distribution = "zipf"
            producers_per_topic = 3
            consumers_per_topic = 2
            producer_rate = 5000
            acks = "all"
            batch_size = 1000
            linger_ms = 5
            compression = "lz4"
            warmup_secs = 0
            duration_secs = 2.5
            "#,
        )
        .expect("parses");
        assert_eq!(w.key_distribution, KeyDistribution::Zipf);
        assert_eq!(w.compression, Compression::Lz4);
        assert_eq!(w.acks_wire(), -1);
        assert_eq!(w.duration_secs, 2.5);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("message_size = 10\npartitions = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("partitions") && err.contains("unknown field"),
            "{err}"
        );
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn impossible_values_are_named() {
        for (text, key) in [
            ("message_size = 4", "message_size"),
            ("message_size = 100\nacks = 2", "acks"),
            ("message_size = 100\nacks = \"most\"", "acks"),
            (
                "message_size = 100\npartitions_per_topic = 0",
                "partitions_per_topic",
            ),
            ("message_size = 100\nduration_secs = 0", "duration_secs"),
            ("message_size = 100\nproducer_rate = -1", "producer_rate"),
            ("message_size = 100\nmax_in_flight = 0", "max_in_flight"),
            ("", "message_size"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{text:?}: {err}");
        }
        let err = parse("message_size = \"big\"").unwrap_err().to_string();
        assert!(err.contains("message_size"), "{err}");
        let err = parse("key_distribution = \"gaussian\"\nmessage_size = 8")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("key_distribution") || err.contains("gaussian"),
            "{err}"
        );
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../perf/workloads");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("perf/workloads exists") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 5, "the standard workloads are shipped");
    }
}
