//! Prometheus text exposition format (version 0.0.4) from shard snapshots.
//!
//! Every family is written once, `# HELP` then `# TYPE` then the samples of all shards, since
//! the format wants a family's samples together. Label values are escaped (`\\`, `\"`, `\n`);
//! topic names cannot need it, group ids can.

use std::fmt::Write;

use super::{HistogramSnapshot, MetricsSnapshot, LATENCY_BUCKETS_SECONDS};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric family [`render_prometheus`] writes: (name, type, help). The dashboard and
/// the docs are checked against this list.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "shardlog_build_info",
        "gauge",
        "Always 1; the version label names the running build.",
    ),
    (
        "shardlog_partition_produced_bytes_total",
        "counter",
        "Record-batch bytes appended to the partition by Produce.",
    ),
    (
        "shardlog_partition_produced_records_total",
        "counter",
        "Records appended to the partition by Produce.",
    ),
    (
        "shardlog_partition_fetched_bytes_total",
        "counter",
        "Record-batch bytes of the partition returned by Fetch.",
    ),
    (
        "shardlog_partition_fetched_records_total",
        "counter",
        "Records of the partition returned by Fetch.",
    ),
    (
        "shardlog_partition_disk_usage_bytes",
        "gauge",
        "Bytes of record batches written to the partition's segment (.log) files, read when scraped; index files and batches not yet written by the group commit are not counted.",
    ),
    (
        "shardlog_partition_disk_allocated_bytes",
        "gauge",
        "Bytes of blocks allocated to the partition's directory and files, as du counts them (preallocated space, indexes, snapshots included); sampled at open and every log.retention.check.interval.ms.",
    ),
    (
        "shardlog_requests_total",
        "counter",
        "Requests handled, by Kafka API.",
    ),
    (
        "shardlog_request_errors_total",
        "counter",
        "Requests answered with an error code, by Kafka API.",
    ),
    (
        "shardlog_request_duration_seconds",
        "histogram",
        "Time from reading a request to handing its response to the socket, by Kafka API.",
    ),
    (
        "shardlog_fsync_duration_seconds",
        "histogram",
        "Duration of each fdatasync of a segment or index file.",
    ),
    (
        "shardlog_batch_cache_hits_total",
        "counter",
        "Fetch reads served from the batch cache.",
    ),
    (
        "shardlog_batch_cache_misses_total",
        "counter",
        "Fetch reads that went to disk.",
    ),
    (
        "shardlog_batch_cache_bytes",
        "gauge",
        "Bytes of record batches the shard's batch cache holds, read when scraped; may exceed shard.batch.cache.bytes while batches are not yet written.",
    ),
    (
        "shardlog_unwritten_bytes",
        "gauge",
        "Bytes appended on the shard but not yet written to disk, read when scraped; produce requests wait while it is above shard.unwritten.bytes.max.",
    ),
    (
        "shardlog_fetch_sessions",
        "gauge",
        "Incremental fetch sessions (KIP-227) the shard's cache holds, read when scraped (Kafka's NumIncrementalFetchSessions).",
    ),
    (
        "shardlog_fetch_session_partitions",
        "gauge",
        "Partitions cached across the shard's fetch sessions, read when scraped (Kafka's NumIncrementalFetchPartitionsCached).",
    ),
    (
        "shardlog_fetch_session_evictions_total",
        "counter",
        "Fetch sessions evicted to make room for new ones (Kafka's IncrementalFetchSessionEvictionsPerSec, as a count).",
    ),
    (
        "shardlog_open_connections",
        "gauge",
        "Client connections open now.",
    ),
    (
        "shardlog_connections_accepted_total",
        "counter",
        "Client connections accepted.",
    ),
    (
        "shardlog_connections_rejected_total",
        "counter",
        "Client connections closed at accept because the shard was at shard.connections.max.",
    ),
    (
        "shardlog_consumer_group_lag_records",
        "gauge",
        "Records between a consumer group's committed offset and the partition's high watermark (log end offset), read when scraped; clamped at 0, never negative. Only partitions that exist and have a committed offset.",
    ),
];

/// Renders the snapshots of all shards as one Prometheus text-format document.
pub fn render_prometheus(shards: &[MetricsSnapshot]) -> String {
    let mut out = String::with_capacity(4096 + shards.len() * 4096);
    for (name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {kind}");
        write_family(&mut out, name, shards);
    }
    out
}

fn write_family(out: &mut String, name: &str, shards: &[MetricsSnapshot]) {
    match name {
        "shardlog_build_info" => {
            sample(out, name, &[("version", env!("CARGO_PKG_VERSION"))], 1);
        }
        "shardlog_partition_produced_bytes_total"
        | "shardlog_partition_produced_records_total"
        | "shardlog_partition_fetched_bytes_total"
        | "shardlog_partition_fetched_records_total"
        | "shardlog_partition_disk_usage_bytes"
        | "shardlog_partition_disk_allocated_bytes" => {
            for s in shards {
                let shard = s.shard.to_string();
                for p in &s.partitions {
                    let value = match name {
                        "shardlog_partition_produced_bytes_total" => p.produced_bytes,
                        "shardlog_partition_produced_records_total" => p.produced_records,
                        "shardlog_partition_fetched_bytes_total" => p.fetched_bytes,
                        "shardlog_partition_fetched_records_total" => p.fetched_records,
                        "shardlog_partition_disk_allocated_bytes" => p.disk_allocated_bytes,
                        _ => p.disk_usage_bytes,
                    };
                    let partition = p.partition.to_string();
                    let labels = [
                        ("shard", shard.as_str()),
                        ("topic", p.topic.as_str()),
                        ("partition", partition.as_str()),
                    ];
                    sample(out, name, &labels, value);
                }
            }
        }
        "shardlog_requests_total" | "shardlog_request_errors_total" => {
            for s in shards {
                let shard = s.shard.to_string();
                for a in &s.requests {
                    let value = if name == "shardlog_requests_total" {
                        a.requests
                    } else {
                        a.errors
                    };
                    sample(out, name, &[("shard", &shard), ("api", &a.api)], value);
                }
            }
        }
        "shardlog_request_duration_seconds" => {
            for s in shards {
                let shard = s.shard.to_string();
                for a in &s.requests {
                    histogram(out, name, &[("shard", &shard), ("api", &a.api)], &a.latency);
                }
            }
        }
        "shardlog_fsync_duration_seconds" => {
            for s in shards {
                histogram(out, name, &[("shard", &s.shard.to_string())], &s.fsync);
            }
        }
        "shardlog_consumer_group_lag_records" => {
            for s in shards {
                let shard = s.shard.to_string();
                for l in s.consumer_group_lag.iter().flatten() {
                    let partition = l.partition.to_string();
                    let labels = [
                        ("shard", shard.as_str()),
                        ("group", l.group.as_str()),
                        ("topic", l.topic.as_str()),
                        ("partition", partition.as_str()),
                    ];
                    sample(out, name, &labels, l.lag_records);
                }
            }
        }
        _ => {
            for s in shards {
                let value = match name {
                    "shardlog_batch_cache_hits_total" => s.batch_cache_hits,
                    "shardlog_batch_cache_misses_total" => s.batch_cache_misses,
                    "shardlog_batch_cache_bytes" => s.batch_cache_bytes,
                    "shardlog_unwritten_bytes" => s.unwritten_bytes,
                    "shardlog_fetch_sessions" => s.fetch_sessions,
                    "shardlog_fetch_session_partitions" => s.fetch_session_partitions,
                    "shardlog_fetch_session_evictions_total" => s.fetch_session_evictions,
                    "shardlog_open_connections" => s.connections_open,
                    "shardlog_connections_accepted_total" => s.connections_accepted,
                    "shardlog_connections_rejected_total" => s.connections_rejected,
                    _ => {
                        debug_assert!(false, "family {name} has no writer");
                        continue;
                    }
                };
                sample(out, name, &[("shard", &s.shard.to_string())], value);
            }
        }
    }
}

/// Writes `name{labels} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    write_labels(out, labels, None);
    let _ = writeln!(out, " {value}");
}

/// Writes a histogram's `_bucket` series (cumulative, then `+Inf`), `_sum` and `_count`.
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
    for (bound, count) in LATENCY_BUCKETS_SECONDS.iter().zip(&h.cumulative) {
        let _ = write!(out, "{name}_bucket");
        write_labels(out, labels, Some(&bound.to_string()));
        let _ = writeln!(out, " {count}");
    }
    let _ = write!(out, "{name}_bucket");
    write_labels(out, labels, Some("+Inf"));
    let _ = writeln!(out, " {}", h.count);
    let _ = write!(out, "{name}_sum");
    write_labels(out, labels, None);
    let _ = writeln!(out, " {}", h.sum_seconds);
    let _ = write!(out, "{name}_count");
    write_labels(out, labels, None);
    let _ = writeln!(out, " {}", h.count);
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{GroupLagSnapshot, ShardMetrics};
    use std::time::Duration;

    /// Two shards with some traffic, a group lag and a label needing escapes.
    pub(crate) fn example() -> Vec<MetricsSnapshot> {
        let a = ShardMetrics::new(0);
        a.partition("orders", 0).record_produce(2048, 20);
        a.partition("orders", 0).record_fetch(1024, 10);
        a.partition("orders", 0).set_disk_usage(8192);
        a.observe_request(0, Duration::from_micros(700), false);
        a.observe_request(0, Duration::from_millis(30), false);
        a.observe_request(3, Duration::from_micros(40), true);
        a.observe_fsync(Duration::from_micros(120));
        a.batch_cache_lookup(true);
        a.connection_opened();
        let b = ShardMetrics::new(1);
        b.partition("orders", 1).record_produce(100, 1);
        let mut sb = b.snapshot();
        sb.consumer_group_lag = Some(vec![GroupLagSnapshot {
            group: "billing \"eu\"\\\n".into(),
            topic: "orders".into(),
            partition: 1,
            lag_records: 42,
        }]);
        vec![a.snapshot(), sb]
    }

    /// A strict reading of the text format's line grammar, enough to catch what a scraper
    /// would refuse: every sample's family declared before it by HELP then TYPE, each family
    /// once, names and label names well formed, label values properly escaped, values numbers,
    /// histogram buckets cumulative with a `+Inf` bucket equal to `_count`.
    pub(crate) fn check_format(text: &str) -> Result<usize, String> {
        use std::collections::{BTreeMap, BTreeSet};
        let name_ok = |n: &str| {
            let mut cs = n.chars();
            cs.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut declared: BTreeMap<String, String> = BTreeMap::new();
        let mut finished: BTreeSet<String> = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut help_for: Option<String> = None;
        let mut samples = 0;
        let mut last_bucket: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        let mut inf_bucket: BTreeMap<String, u64> = BTreeMap::new();
        if !text.ends_with('\n') {
            return Err("document must end with a newline".into());
        }
        for (no, line) in text.lines().enumerate() {
            let no = no + 1;
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest
                    .split_once(' ')
                    .ok_or(format!("{no}: HELP without text"))?;
                if !name_ok(name) || declared.contains_key(name) || finished.contains(name) {
                    return Err(format!("{no}: bad or repeated HELP for {name}"));
                }
                if let Some(c) = current.take() {
                    finished.insert(c);
                }
                help_for = Some(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or(format!("{no}: TYPE without type"))?;
                if help_for.as_deref() != Some(name) {
                    return Err(format!("{no}: TYPE {name} not right after its HELP"));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(format!("{no}: unknown type {kind}"));
                }
                declared.insert(name.to_string(), kind.to_string());
                current = Some(name.to_string());
                help_for = None;
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(format!("{no}: unexpected comment or blank line"));
            }
            let fam = current
                .clone()
                .ok_or(format!("{no}: sample before any TYPE"))?;
            let kind = &declared[&fam];
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => return Err(format!("{no}: no value")),
            };
            let suffix_ok = match kind.as_str() {
                "histogram" => [("_bucket"), ("_sum"), ("_count")]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(fam.as_str())),
                "counter" => name == fam && name.ends_with("_total"),
                _ => name == fam,
            };
            if !suffix_ok {
                return Err(format!(
                    "{no}: sample {name} does not belong to {kind} {fam}"
                ));
            }
            // Labels.
            let mut labels = Vec::new();
            let mut rest = rest;
            if let Some(body) = rest.strip_prefix('{') {
                let mut chars = body.char_indices().peekable();
                let end;
                loop {
                    let start = chars
                        .peek()
                        .map(|(i, _)| *i)
                        .ok_or(format!("{no}: open labels"))?;
                    let eq = body[start..]
                        .find("=\"")
                        .ok_or(format!("{no}: label without value"))?;
                    let lname = &body[start..start + eq];
                    if !name_ok(lname) || lname.contains(':') {
                        return Err(format!("{no}: bad label name `{lname}`"));
                    }
                    for _ in 0..eq + 2 {
                        chars.next();
                    }
                    let mut value = String::new();
                    loop {
                        match chars
                            .next()
                            .ok_or(format!("{no}: unterminated label value"))?
                        {
                            (_, '\\') => match chars.next() {
                                Some((_, '\\')) => value.push('\\'),
                                Some((_, '"')) => value.push('"'),
                                Some((_, 'n')) => value.push('\n'),
                                _ => return Err(format!("{no}: bad escape")),
                            },
                            (_, '"') => break,
                            (_, '\n') => return Err(format!("{no}: raw newline")),
                            (_, c) => value.push(c),
                        }
                    }
                    labels.push((lname.to_string(), value));
                    match chars.next() {
                        Some((_, ',')) => continue,
                        Some((i, '}')) => {
                            end = i;
                            break;
                        }
                        _ => return Err(format!("{no}: expected , or }}")),
                    }
                }
                rest = &body[end + 1..];
            }
            let value = rest
                .strip_prefix(' ')
                .ok_or(format!("{no}: no space before value"))?;
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .map_err(|_| format!("{no}: value `{v}` is not a number"))?,
            };
            samples += 1;
            if name.ends_with("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or(format!("{no}: bucket without le"))?
                    .1
                    .clone();
                let key: String = labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .map(|(k, v)| format!("{k}={v:?},"))
                    .collect::<String>()
                    + name;
                let bound: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("{no}: le `{le}`"))?
                };
                if let Some((pb, pc)) = last_bucket.get(&key) {
                    if bound <= *pb || (v as u64) < *pc {
                        return Err(format!("{no}: buckets not increasing/cumulative"));
                    }
                }
                last_bucket.insert(key.clone(), (bound, v as u64));
                if bound.is_infinite() {
                    inf_bucket.insert(key.replace("_bucket", "_count"), v as u64);
                }
            } else if name.ends_with("_count") && kind == "histogram" {
                let key: String = labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?},"))
                    .collect::<String>()
                    + name;
                if inf_bucket.get(&key) != Some(&(v as u64)) {
                    return Err(format!("{no}: _count differs from the +Inf bucket"));
                }
            }
        }
        Ok(samples)
    }

    #[test]
    fn renders_valid_text_format() {
        let text = render_prometheus(&example());
        let samples = check_format(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(samples > 50, "{samples}");
    }

    #[test]
    fn renders_expected_samples() {
        let text = render_prometheus(&example());
        for line in [
            "# TYPE shardlog_partition_produced_bytes_total counter",
            "shardlog_partition_produced_bytes_total{shard=\"0\",topic=\"orders\",partition=\"0\"} 2048",
            "shardlog_partition_produced_bytes_total{shard=\"1\",topic=\"orders\",partition=\"1\"} 100",
            "shardlog_partition_fetched_records_total{shard=\"0\",topic=\"orders\",partition=\"0\"} 10",
            "shardlog_partition_disk_usage_bytes{shard=\"0\",topic=\"orders\",partition=\"0\"} 8192",
            "shardlog_requests_total{shard=\"0\",api=\"Produce\"} 2",
            "shardlog_request_errors_total{shard=\"0\",api=\"Metadata\"} 1",
            "shardlog_request_duration_seconds_bucket{shard=\"0\",api=\"Produce\",le=\"0.0005\"} 0",
            "shardlog_request_duration_seconds_bucket{shard=\"0\",api=\"Produce\",le=\"0.001\"} 1",
            "shardlog_request_duration_seconds_bucket{shard=\"0\",api=\"Produce\",le=\"0.05\"} 2",
            "shardlog_request_duration_seconds_bucket{shard=\"0\",api=\"Produce\",le=\"+Inf\"} 2",
            "shardlog_request_duration_seconds_sum{shard=\"0\",api=\"Produce\"} 0.0307",
            "shardlog_request_duration_seconds_count{shard=\"0\",api=\"Produce\"} 2",
            "shardlog_fsync_duration_seconds_count{shard=\"1\"} 0",
            "shardlog_batch_cache_hits_total{shard=\"0\"} 1",
            "shardlog_open_connections{shard=\"0\"} 1",
            "shardlog_consumer_group_lag_records{shard=\"1\",group=\"billing \\\"eu\\\"\\\\\\n\",topic=\"orders\",partition=\"1\"} 42",
            "shardlog_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        }
    }

    #[test]
    fn no_shards_still_renders_every_family() {
        let text = render_prometheus(&[]);
        check_format(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (name, _, _) in FAMILIES {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
    }

    #[test]
    fn checker_refuses_broken_documents() {
        let good = render_prometheus(&example());
        let broken = [
            good.replace("# TYPE shardlog_open_connections gauge\n", ""),
            good.replace("le=\"+Inf\"} 2", "le=\"+Inf\"} 7"),
            good.replace(
                "shard=\"0\",api=\"Produce\"} 2",
                "shard=\"0\",api=\"Produce\"} two",
            ),
            good.replace("billing \\\"eu\\\"", "billing \"eu\""),
            good.trim_end().to_string(),
        ];
        for b in broken {
            assert!(check_format(&b).is_err(), "accepted:\n{b}");
        }
    }
}
