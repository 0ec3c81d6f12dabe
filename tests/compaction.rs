//! DeleteRecords and compacted topics against the real broker: Kafka's own
//! `kafka-delete-records.sh` (DeleteRecordsCommand, run as the script runs it) and librdkafka.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use shardlog::error_code::ErrorCode;

/// Collects the delivery result of every record a producer sends.
#[derive(Default)]
struct Deliveries(std::sync::Mutex<Vec<Result<(), KafkaError>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let r = result.as_ref().map(|_| ()).map_err(|(e, _)| e.clone());
        self.0.lock().unwrap().push(r);
    }
}

/// Small segments so a few hundred records span several of them.
const SETTINGS: &[&str] = &["log.segment.bytes=16384", "log.preallocate.bytes=65536"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin")
}

fn create_topic(b: &Broker, name: &str, configs: &[(&str, &str)]) -> Result<(), String> {
    let mut t = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = futures_lite::future::block_on(admin(b).create_topics(&[t], &AdminOptions::new()))
        .map_err(|e| e.to_string())?;
    r.into_iter()
        .try_for_each(|r| r.map(|_| ()).map_err(|(_, e)| e.to_string()))
}

/// Produces `records` (key, value; a `None` value is a tombstone) with acks=all.
fn produce(b: &Broker, topic: &str, records: &[(Option<String>, Option<String>)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("batch.size", "4096")
        .create()
        .expect("producer");
    for (k, v) in records {
        let mut rec = BaseRecord::<String, String>::to(topic);
        if let Some(k) = k {
            rec = rec.key(k);
        }
        if let Some(v) = v {
            rec = rec.payload(v);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(Instant::now() < deadline, "send: {e}");
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn watermarks(b: &Broker, topic: &str) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("consumer");
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks")
}

/// Reads partition 0 from `from` (reset to earliest when out of range) to the high
/// watermark: (offset, key, value) of every record.
fn consume(b: &Broker, topic: &str, from: i64) -> Vec<(i64, Option<String>, Option<String>)> {
    let (_, hw) = watermarks(b, topic);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "compaction-test")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.last().is_none_or(|(o, _, _)| o + 1 < hw) {
        assert!(Instant::now() < deadline, "consume timed out after {out:?}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            let s = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
            out.push((m.offset(), s(m.key()), s(m.payload())));
        }
    }
    out
}

/// Runs `kafka-delete-records.sh --bootstrap-server B --offset-json-file F` as the script
/// does (the tool's class in a JVM); returns its exit status success and its output.
fn delete_records_tool(b: &Broker, dir: &std::path::Path, json: &str) -> (bool, String) {
    let file = dir.join("offsets.json");
    std::fs::write(&file, json).expect("write json");
    let java_cp = root().join("tests/clients/java/target/lib/*");
    let out = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp"])
        .arg(java_cp)
        .arg("org.apache.kafka.tools.DeleteRecordsCommand")
        .args(["--bootstrap-server", &b.bootstrap(), "--offset-json-file"])
        .arg(&file)
        .output()
        .expect("run DeleteRecordsCommand");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// One DeleteRecords v2 request by hand: (topic, partition, error, low watermark) per part.
fn raw_delete_records(
    b: &Broker,
    parts: &[(&str, i32, i64)],
) -> Vec<(String, i32, ErrorCode, i64)> {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let topics = parts
        .iter()
        .map(|(t, p, o)| {
            DeleteRecordsTopic::default()
                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                .with_partitions(vec![DeleteRecordsPartition::default()
                    .with_partition_index(*p)
                    .with_offset(*o)])
        })
        .collect();
    let req = DeleteRecordsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(5000);
    let mut stream = std::net::TcpStream::connect(b.bootstrap()).expect("connect");
    let mut body = common::request(&mut stream, ApiKey::DeleteRecords, 2, &req);
    let resp = DeleteRecordsResponse::decode(&mut body, 2).expect("decode");
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    ErrorCode::from_code(p.error_code),
                    p.low_watermark,
                )
            })
        })
        .collect()
}

fn tools_installed() -> bool {
    root()
        .join("tests/clients/java/target/lib/kafka-tools-4.3.1.jar")
        .exists()
}

#[test]
fn kafka_delete_records_moves_the_log_start_durably() {
    assert!(
        tools_installed(),
        "kafka-tools missing: run scripts/install-clients"
    );
    let mut b = Broker::start(2, SETTINGS);
    let tmp = tempfile::tempdir().expect("tmp");
    create_topic(&b, "dr", &[]).expect("create");
    let records: Vec<_> = (0..300)
        .map(|i| (Some(format!("k{i}")), Some(format!("{i:0>400}"))))
        .collect();
    produce(&b, "dr", &records);
    assert_eq!(watermarks(&b, "dr"), (0, 300));
    let segments = |b: &Broker| {
        std::fs::read_dir(b.data_dir.join("dr-0"))
            .expect("partition dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .count()
    };
    let before = segments(&b);
    assert!(before > 3, "several segments expected, found {before}");

    let (ok, out) = delete_records_tool(
        &b,
        tmp.path(),
        r#"{"partitions":[{"topic":"dr","partition":0,"offset":150}],"version":1}"#,
    );
    assert!(ok, "tool failed: {out}");
    assert!(out.contains("low_watermark: 150"), "tool output: {out}");
    assert_eq!(watermarks(&b, "dr"), (150, 300));
    assert!(
        segments(&b) < before,
        "whole segments below 150 are deleted"
    );
    // A consumer asking for 0 is out of range and resets to the new earliest.
    let got = consume(&b, "dr", 0);
    assert_eq!(got.first().map(|r| r.0), Some(150));
    assert_eq!(got.len(), 150);

    // Above the high watermark: OFFSET_OUT_OF_RANGE, as Kafka.
    let (_, out) = delete_records_tool(
        &b,
        tmp.path(),
        r#"{"partitions":[{"topic":"dr","partition":0,"offset":1000}],"version":1}"#,
    );
    assert!(out.contains("OffsetOutOfRange"), "tool output: {out}");
    // An unknown partition (the admin client never sends it: raw request) and an unknown
    // topic: UNKNOWN_TOPIC_OR_PARTITION.
    assert_eq!(
        raw_delete_records(&b, &[("dr", 7, 1), ("nope", 0, 1), ("dr", 0, 120)]),
        vec![
            (
                "dr".to_string(),
                7,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                -1
            ),
            (
                "nope".to_string(),
                0,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                -1
            ),
            ("dr".to_string(), 0, ErrorCode::NONE, 150),
        ]
    );
    assert_eq!(watermarks(&b, "dr"), (150, 300));
    assert!(
        b.log().contains("request refused") && b.log().contains("DeleteRecords"),
        "a refusal is logged"
    );

    // kill -9: the start survives.
    b.kill9();
    b.restart();
    assert_eq!(watermarks(&b, "dr"), (150, 300));
    assert_eq!(consume(&b, "dr", 0).first().map(|r| r.0), Some(150));
}

/// Latest value of every key in `records` (`None`: a tombstone).
fn latest_values(
    records: &[(Option<String>, Option<String>)],
) -> std::collections::BTreeMap<String, Option<String>> {
    records
        .iter()
        .filter_map(|(k, v)| k.clone().map(|k| (k, v.clone())))
        .collect()
}

#[test]
fn a_compacted_topic_keeps_the_latest_value_of_every_key_across_kill9() {
    let mut settings = SETTINGS.to_vec();
    settings.push("log.cleaner.backoff.ms=100");
    let mut b = Broker::start(2, &settings);
    // Kafka's validation: an unknown policy and a negative lag are INVALID_CONFIG.
    let err = create_topic(&b, "bad1", &[("cleanup.policy", "compact,purge")]).unwrap_err();
    assert!(
        err.contains("InvalidConfig") || err.contains("INVALID_CONFIG"),
        "{err}"
    );
    let err = create_topic(&b, "bad2", &[("min.compaction.lag.ms", "-1")]).unwrap_err();
    assert!(
        err.contains("InvalidConfig") || err.contains("INVALID_CONFIG"),
        "{err}"
    );
    create_topic(
        &b,
        "cmp",
        &[
            ("cleanup.policy", "compact"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "86400000"),
        ],
    )
    .expect("a compacted topic is accepted");
    let mut records = Vec::new();
    for round in 0..6 {
        for k in 0..20 {
            let value = (round < 5 || k % 4 != 0).then(|| format!("r{round}-k{k}-{:0>300}", k));
            records.push((Some(format!("key-{k}")), value));
        }
    }
    produce(&b, "cmp", &records);
    let produced = records.len() as i64;
    assert_eq!(watermarks(&b, "cmp"), (0, produced));

    // A record without a key: refused with INVALID_RECORD, the log intact.
    let p: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .set("retries", "0")
        .create_with_context(Deliveries::default())
        .expect("producer");
    p.send(BaseRecord::<(), str>::to("cmp").payload("no key"))
        .map_err(|(e, _)| e)
        .expect("enqueue");
    let deadline = Instant::now() + Duration::from_secs(20);
    while p.in_flight_count() > 0 && Instant::now() < deadline {
        p.poll(Duration::from_millis(50));
    }
    assert_eq!(
        p.context().0.lock().unwrap().as_slice(),
        &[Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidRecord
        ))],
        "the producer is told INVALID_RECORD"
    );
    assert_eq!(
        watermarks(&b, "cmp"),
        (0, produced),
        "the keyless record was not appended"
    );
    assert!(
        b.log().contains("without key"),
        "the broker says why it refused the batch"
    );

    // The cleaner (every 100 ms) compacts every segment but the active one.
    let want = latest_values(&records);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = consume(&b, "cmp", 0);
        let mut seen = std::collections::BTreeSet::new();
        let duplicates = got
            .iter()
            .filter(|(o, _, _)| *o < produced - 40)
            .any(|(_, k, _)| !seen.insert(k.clone()));
        if !duplicates {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "the cleaner did not compact: {} records",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!((got.len() as i64) < produced, "older values are gone");
    let check = |got: &[(i64, Option<String>, Option<String>)]| {
        let mut last: std::collections::BTreeMap<String, (i64, Option<String>)> =
            Default::default();
        for (o, k, v) in got {
            let k = k.clone().expect("every record has a key");
            // The record at each offset is the one produced there.
            assert_eq!(
                records[*o as usize],
                (Some(k.clone()), v.clone()),
                "offset {o}"
            );
            last.insert(k, (*o, v.clone()));
        }
        for (k, v) in &want {
            assert_eq!(last.get(k).map(|l| &l.1), Some(v), "latest value of {k}");
        }
    };
    check(&got);
    b.kill9();
    b.restart();
    assert_eq!(watermarks(&b, "cmp"), (0, produced));
    let again = consume(&b, "cmp", 0);
    check(&again);
    assert!(again.len() <= got.len());
}

/// Bytes of the `.log` files of one partition directory.
fn log_bytes(b: &Broker, dir: &str) -> u64 {
    std::fs::read_dir(b.data_dir.join(dir))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn consumer_offsets_is_compacted_and_the_latest_commits_survive_kill9() {
    let mut b = Broker::start(
        2,
        &[
            "offsets.topic.num.partitions=1",
            "offsets.topic.segment.bytes=1048576",
            "log.cleaner.backoff.ms=100",
            "log.preallocate.bytes=65536",
        ],
    );
    let partitions = 100;
    let t = NewTopic::new("src", partitions, TopicReplication::Fixed(1));
    futures_lite::future::block_on(admin(&b).create_topics(&[t], &AdminOptions::new()))
        .expect("create")
        .into_iter()
        .for_each(|r| {
            r.expect("created");
        });
    let consumer = |b: &Broker| -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("group.id", "offsets-compaction")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer")
    };
    let c = consumer(&b);
    let commits = 300;
    for round in 1..=commits {
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset("src", p, Offset::Offset(round))
                .expect("tpl");
        }
        c.commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("commit");
    }
    // Every commit of 100 partitions is ~8 KB of records: ~2.5 MB were written in 1 MiB
    // segments; the cleaner keeps one record per partition in the rolled ones.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bytes = log_bytes(&b, "__consumer_offsets-0");
        if bytes < 1_200_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "__consumer_offsets-0 still holds {bytes} bytes of log"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(c);
    b.kill9();
    b.restart();
    let c = consumer(&b);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition("src", p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(20))
        .expect("committed offsets");
    for e in committed.elements() {
        assert_eq!(
            e.offset(),
            Offset::Offset(commits),
            "partition {}",
            e.partition()
        );
    }
    assert_eq!(committed.count(), partitions as usize);
}

/// DescribeConfigs v4 with synonyms, by hand: (name, value, source, synonyms) of each config.
#[allow(clippy::type_complexity)]
fn describe_topic(
    b: &Broker,
    topic: &str,
) -> Vec<(
    String,
    Option<String>,
    i8,
    Vec<(String, Option<String>, i8)>,
)> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configuration_keys(None)])
        .with_include_synonyms(true);
    let mut stream = std::net::TcpStream::connect(b.bootstrap()).expect("connect");
    let mut body = common::request(&mut stream, ApiKey::DescribeConfigs, 4, &req);
    let resp = DescribeConfigsResponse::decode(&mut body, 4).expect("decode");
    let s = |v: &Option<kafka_protocol::protocol::StrBytes>| v.as_ref().map(|v| v.to_string());
    resp.results[0]
        .configs
        .iter()
        .map(|c| {
            (
                c.name.to_string(),
                s(&c.value),
                c.config_source,
                c.synonyms
                    .iter()
                    .map(|y| (y.name.to_string(), s(&y.value), y.source))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn describe_configs_reports_effective_values_sources_and_synonyms() {
    let b = Broker::start(1, &["log.cleaner.delete.retention.ms=1000"]);
    create_topic(
        &b,
        "described",
        &[
            ("cleanup.policy", "compact,delete"),
            ("min.compaction.lag.ms", "5"),
        ],
    )
    .expect("create");
    let configs = describe_topic(&b, "described");
    let get = |n: &str| {
        configs
            .iter()
            .find(|c| c.0 == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not described"))
    };
    let s = |v: &str| Some(v.to_string());
    // Kafka's sources: 1 DYNAMIC_TOPIC_CONFIG, 4 STATIC_BROKER_CONFIG, 5 DEFAULT_CONFIG.
    assert_eq!(
        get("cleanup.policy"),
        (
            "cleanup.policy".into(),
            s("compact,delete"),
            1,
            vec![
                ("cleanup.policy".into(), s("compact,delete"), 1),
                ("log.cleanup.policy".into(), s("delete"), 5),
            ]
        )
    );
    assert_eq!(
        get("delete.retention.ms"),
        (
            "delete.retention.ms".into(),
            s("1000"),
            4,
            vec![
                ("log.cleaner.delete.retention.ms".into(), s("1000"), 4),
                ("log.cleaner.delete.retention.ms".into(), s("86400000"), 5),
            ]
        )
    );
    assert_eq!(get("min.compaction.lag.ms").1, s("5"));
    assert_eq!(get("min.cleanable.dirty.ratio").2, 5);
}
