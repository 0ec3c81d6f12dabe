//! Kafka Streams `exactly_once_v2` (4.3.1, the Java client project's dependency) on shardlog:
//! a count over a keyed stream, the application killed with SIGKILL in the middle and
//! restarted on its state directory; a read_committed reader then sees every word's running
//! count exactly once: 1, 2, .. N, with no count repeated (a duplicate would mean an input
//! record was counted twice) and none missing.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn java_streams_count() -> Command {
    let java = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/java/target");
    assert!(
        java.join("lib/kafka-streams-4.3.1.jar").exists(),
        "kafka-streams missing: run scripts/install-clients"
    );
    let mut cmd = Command::new("java");
    cmd.args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Xmx512m", "-cp"])
        .arg(format!(
            "{}:{}",
            java.join("shardlog-clients.jar").display(),
            java.join("lib/*").display()
        ))
        .arg("dev.shardlog.clients.StreamsCount");
    cmd
}

/// Every (word, count) of `topic` read with read_committed, in each partition's order.
fn committed_counts(b: &Broker, topic: &str, partitions: i32) -> Vec<(String, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "eos-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut quiet = Instant::now();
    while Instant::now() < end && quiet.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let word = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let v = m.payload().unwrap_or_default();
            let count = i64::from_be_bytes(v.try_into().expect("a long"));
            out.push((word, count));
            quiet = Instant::now();
        }
    }
    out
}

#[test]
fn kafka_streams_exactly_once_v2_counts_exactly_across_a_kill9() {
    let b = Broker::start(
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
        ],
    );
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let topics = [
        NewTopic::new("words", 2, TopicReplication::Fixed(1)),
        NewTopic::new("counts", 2, TopicReplication::Fixed(1)),
    ];
    for r in futures_lite::future::block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create")
    {
        r.expect("created");
    }
    let (words, rounds) = (10usize, 40usize);
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .create()
        .expect("producer");
    for round in 0..rounds {
        for w in 0..words {
            let (k, v) = (format!("id-{round}-{w}"), format!("w{w}"));
            p.send(BaseRecord::to("words").key(&k).payload(&v))
                .expect("enqueue");
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(30)).expect("flush");

    let state = tempfile::tempdir().expect("state dir");
    let run = || {
        let mut cmd = java_streams_count();
        cmd.arg(b.bootstrap())
            .arg("eos-count")
            .arg(state.path())
            .args(["words", "counts"])
            .arg(words.to_string())
            .arg(rounds.to_string())
            .arg("60000")
            .arg("exactly_once_v2")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.spawn().expect("spawn java")
    };
    // First instance: killed (SIGKILL) as soon as it has written output, mid-stream.
    let mut first = run();
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("watermarks");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let written: i64 = (0..2)
            .map(|p| {
                c.fetch_watermarks("counts", p, Duration::from_secs(5))
                    .map_or(0, |(_, high)| high)
            })
            .sum();
        if written > 0 {
            break;
        }
        assert!(
            first.try_wait().expect("wait").is_none(),
            "the first instance ended before writing"
        );
        assert!(Instant::now() < deadline, "no output within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill().expect("kill -9");
    let _ = first.wait();

    // Second instance on the same state directory: runs until every count reaches `rounds`.
    let second = run();
    let out = second.wait_with_output().expect("second run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "second run: {text}");

    // Exactly once: each word's committed counts are 1..=rounds, each once, in order.
    let mut by_word: HashMap<String, Vec<i64>> = HashMap::new();
    for (w, n) in committed_counts(&b, "counts", 2) {
        by_word.entry(w).or_default().push(n);
    }
    assert_eq!(by_word.len(), words, "{by_word:?}");
    let want: Vec<i64> = (1..=rounds as i64).collect();
    for (w, counts) in &by_word {
        assert_eq!(counts, &want, "counts of {w}");
    }
}
