//! End to end: a broker started with `--metrics-listen` serves Prometheus text that parses
//! with prometheus_client, its per-partition counters move by what this test produced and
//! consumed, the partition's disk usage covers what was produced and grows with it, and the
//! lag of a group that committed offset K on a partition of N records is N − K (with the
//! group's coordinator on the other shard than the partition, so the lag is combined across
//! shards). Skipped (with a message) while `serve` has no `--metrics-listen` flag.

mod ops_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "metrics-e2e";
const RECORDS: usize = 200;
const VALUE_BYTES: usize = 1000;
/// Offset the group commits: the lag is then `RECORDS - COMMITTED`.
const COMMITTED: i64 = 150;
/// Records produced after the commit.
const MORE_RECORDS: usize = 50;
/// Shards the broker runs (`--cores`).
const SHARDS: usize = 2;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("broker exited early: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} did not open");
}

/// A broker with `SHARDS` shards, serving Kafka and `/metrics` on free ports, on a data dir
/// under the target dir (ext4 here, not tmpfs), with extra `--set` properties; returns the
/// process (killed when dropped), the data dir, the Kafka port and the metrics port.
fn start_broker(extra: &[&str]) -> (Killed, tempfile::TempDir, u16, u16) {
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("target tmpdir");
    let data = tempfile::tempdir_in(base).expect("data dir");
    let (kafka, metrics) = (free_port(), free_port());
    let mut cmd = ops_support::shardlog();
    cmd.arg("serve")
        .arg(format!("--listen=127.0.0.1:{kafka}"))
        .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--cores", &SHARDS.to_string()]);
    for kv in extra {
        cmd.args(["--set", kv]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start broker");
    let mut broker = Killed(child);
    wait_port(kafka, &mut broker.0);
    wait_port(metrics, &mut broker.0);
    (broker, data, kafka, metrics)
}

/// `GET /metrics` over plain HTTP/1.1; returns the body after checking status and type.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// Sum of a family's samples whose labels include `topic="TOPIC"`.
fn topic_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("topic=\"{TOPIC}\"")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Every sample of a family: (labels, value). Label values here need no unescaping (topic
/// and group names of this test are plain).
fn series(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// The one sample of `name` whose labels include all of `want`, with its full labels.
fn one(text: &str, name: &str, want: &[(&str, &str)]) -> (BTreeMap<String, String>, f64) {
    let hits: Vec<_> = series(text, name)
        .into_iter()
        .filter(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name} {want:?}: {hits:?}\n{text}");
    hits.into_iter().next().expect("one sample")
}

/// A group id whose coordinator shard is not the owner of `TOPIC`-0: its lag can only be
/// computed by combining two shards' snapshots.
fn cross_shard_group() -> (String, usize) {
    let offsets_partitions =
        shardlog::group::coordinator::GroupConfig::default().offsets_partitions;
    let data_owner = shardlog::shard::shard_of(TOPIC, 0, SHARDS);
    (0..100)
        .map(|i| format!("metrics-e2e-{i}"))
        .map(|g| {
            let p = shardlog::group::offsets_partition(&g, offsets_partitions);
            let coordinator = shardlog::shard::shard_of(shardlog::group::OFFSETS_TOPIC, p, SHARDS);
            (g, coordinator)
        })
        .find(|(_, coordinator)| *coordinator != data_owner)
        .expect("some group is coordinated by the other shard")
}

/// Produces `n` records of `VALUE_BYTES` to `TOPIC`-0 and waits for every acks=all answer.
fn produce(kafka: u16, n: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka}"))
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let value = vec![b'x'; VALUE_BYTES];
    for i in 0..n {
        let key = i.to_string();
        producer
            .send(BaseRecord::to(TOPIC).key(&key).payload(&value).partition(0))
            .expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

fn api_requests(text: &str, api: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("shardlog_requests_total{"))
        .filter(|l| l.contains(&format!("api=\"{api}\"")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Parses `text` with prometheus_client (failing the test if it refuses it) and returns the
/// parser's JSON (`{"families": .., "samples": [[name, labels, value], ..]}`); `None` when the
/// Python checks are switched off.
fn parse_with_prometheus_client(text: &str) -> Option<serde_json::Value> {
    let python = ops_support::venv_python()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, text).expect("write scrape");
    let out = Command::new(python)
        .arg(ops_support::repo().join("tests/tools/parse_prometheus.py"))
        .arg(&file)
        .output()
        .expect("run parser");
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("parser JSON"))
}

/// The value prometheus_client parsed for the sample with exactly these labels.
fn parsed_value(parsed: &serde_json::Value, name: &str, labels: &BTreeMap<String, String>) -> f64 {
    let hits: Vec<f64> = parsed["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| {
            s[0] == name
                && serde_json::from_value::<BTreeMap<String, String>>(s[1].clone())
                    .is_ok_and(|l| &l == labels)
        })
        .filter_map(|s| s[2].as_f64())
        .collect();
    assert_eq!(hits.len(), 1, "{name} {labels:?}: {hits:?}");
    hits[0]
}

#[test]
fn metrics_endpoint_counts_what_was_produced_and_fetched() {
    let help = ops_support::shardlog()
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    if !String::from_utf8_lossy(&help.stdout).contains("--metrics-listen") {
        eprintln!("SKIPPED: `shardlog serve` has no --metrics-listen flag yet");
        return;
    }
    let (_broker, _data, kafka, metrics) = start_broker(&[]);

    let before = scrape(metrics);
    parse_with_prometheus_client(&before);

    produce(kafka, RECORDS);

    let (group, coordinator) = cross_shard_group();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka}"))
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed < RECORDS && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            assert_eq!(m.payload().map(<[u8]>::len), Some(VALUE_BYTES));
            consumed += 1;
        }
    }
    assert_eq!(consumed, RECORDS);

    let mut commit = TopicPartitionList::new();
    commit
        .add_partition_offset(TOPIC, 0, Offset::Offset(COMMITTED))
        .expect("commit offset");
    consumer
        .commit(&commit, CommitMode::Sync)
        .expect("commit K");

    let after = scrape(metrics);
    let parsed = parse_with_prometheus_client(&after);
    let delta = |name: &str| topic_sum(&after, name) - topic_sum(&before, name);
    assert_eq!(
        delta("shardlog_partition_produced_records_total"),
        RECORDS as f64
    );
    let produced_bytes = delta("shardlog_partition_produced_bytes_total");
    assert!(
        produced_bytes >= (RECORDS * VALUE_BYTES) as f64
            && produced_bytes < (RECORDS * (VALUE_BYTES + 200)) as f64,
        "produced bytes {produced_bytes}"
    );
    assert!(delta("shardlog_partition_fetched_records_total") >= RECORDS as f64);
    assert!(delta("shardlog_partition_fetched_bytes_total") >= (RECORDS * VALUE_BYTES) as f64);
    assert!(api_requests(&after, "Produce") > api_requests(&before, "Produce"));
    assert!(api_requests(&after, "Fetch") > api_requests(&before, "Fetch"));

    // Disk usage: the partition's .log bytes hold at least the batches produced (acks=all,
    // so written), and not wildly more.
    let part = [("topic", TOPIC), ("partition", "0")];
    let (disk_labels, disk) = one(&after, "shardlog_partition_disk_usage_bytes", &part);
    assert!(
        disk >= produced_bytes && disk < produced_bytes + 64.0 * 1024.0,
        "disk usage {disk} for {produced_bytes} produced bytes"
    );
    // The owner shard's batch cache holds the batches just produced (the cap is far above
    // them); acks=all means they are all written, so nothing is left unwritten.
    let owner = [("shard", disk_labels["shard"].as_str())];
    let (_, cached) = one(&after, "shardlog_batch_cache_bytes", &owner);
    assert!(cached >= produced_bytes, "cache holds {cached} bytes");
    assert_eq!(one(&after, "shardlog_unwritten_bytes", &owner).1, 0.0);
    // Lag: N records, committed K, by the group's coordinator (the other shard).
    let lag_of = |text: &str| {
        one(
            text,
            "shardlog_consumer_group_lag_records",
            &[("group", &group), ("topic", TOPIC), ("partition", "0")],
        )
    };
    let (lag_labels, lag) = lag_of(&after);
    assert_eq!(lag, (RECORDS as i64 - COMMITTED) as f64);
    assert_eq!(lag_labels["shard"], coordinator.to_string());
    assert_ne!(
        disk_labels["shard"], lag_labels["shard"],
        "meant to be cross-shard"
    );
    if let Some(parsed) = &parsed {
        assert_eq!(
            parsed_value(parsed, "shardlog_consumer_group_lag_records", &lag_labels),
            lag
        );
        assert_eq!(
            parsed_value(parsed, "shardlog_partition_disk_usage_bytes", &disk_labels),
            disk
        );
    }

    // More records: the disk usage grows by at least their bytes, the lag by their count.
    produce(kafka, MORE_RECORDS);
    let later = scrape(metrics);
    parse_with_prometheus_client(&later);
    let more_bytes = topic_sum(&later, "shardlog_partition_produced_bytes_total")
        - topic_sum(&after, "shardlog_partition_produced_bytes_total");
    assert!(more_bytes >= (MORE_RECORDS * VALUE_BYTES) as f64);
    let (_, disk_later) = one(&later, "shardlog_partition_disk_usage_bytes", &part);
    assert!(
        disk_later >= disk + more_bytes,
        "disk usage {disk} -> {disk_later} after {more_bytes} more bytes"
    );
    assert_eq!(
        lag_of(&later).1,
        (RECORDS + MORE_RECORDS) as f64 - COMMITTED as f64
    );
}

/// `du`'s figure for `dir` (the directory and everything in it), in bytes.
fn du_bytes(dir: &std::path::Path) -> u64 {
    let out = Command::new("du")
        .arg("-sB1")
        .arg(dir)
        .output()
        .expect("run du");
    assert!(out.status.success(), "du failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du output")
}

/// Issue 16: "`df` and `du` must agree with what the broker reports as disk usage". The
/// partition's allocated-bytes gauge equals `du` of its directory once the broker has sampled
/// it (every `log.retention.check.interval.ms`), preallocated space and indexes included.
#[test]
fn disk_allocated_gauge_agrees_with_du() {
    let (_broker, data, kafka, metrics) = start_broker(&[
        "log.retention.check.interval.ms=200",
        "log.segment.bytes=1048576",
    ]);
    // Two 1 MiB segments (Kafka's smallest): a rolled one with its indexes, and an active one
    // with space reserved ahead of its data.
    produce(kafka, 6 * RECORDS);
    let dir = data.path().join(format!("{TOPIC}-0"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (gauge, du) = loop {
        let text = scrape(metrics);
        let (_, gauge) = one(
            &text,
            "shardlog_partition_disk_allocated_bytes",
            &[("topic", TOPIC), ("partition", "0")],
        );
        let du = du_bytes(&dir);
        if gauge as u64 == du || Instant::now() > deadline {
            break (gauge as u64, du);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(gauge, du, "the gauge and du of {}", dir.display());
    // The data itself is in there: 1,200 records of 1000 bytes.
    assert!(du >= (6 * RECORDS * VALUE_BYTES) as u64, "{du}");
    let segments = std::fs::read_dir(&dir)
        .expect("partition dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count();
    assert!(
        segments > 1,
        "the test wants rolled segments, has {segments}"
    );
}
