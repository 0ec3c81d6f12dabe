//! The broker binary driven by librdkafka (the `rdkafka` crate) and kcat.

mod common;
mod rawkafka;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// A delivered message: (key, partition, offset).
type Delivered = (Vec<u8>, i32, i64);
/// Messages read back, per partition: (offset, key, payload).
type ReadBack = HashMap<i32, Vec<(i64, Vec<u8>, Vec<u8>)>>;

/// Collects (key, partition, offset) of every delivered message, and every delivery error.
#[derive(Default, Clone)]
struct Deliveries {
    ok: Arc<Mutex<Vec<Delivered>>>,
    errors: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => self.ok.lock().expect("lock").push((
                m.key().map(|k| k.to_vec()).unwrap_or_default(),
                m.partition(),
                m.offset(),
            )),
            Err((e, _)) => self.errors.lock().expect("lock").push(e.to_string()),
        }
    }
}

fn producer(b: &Broker, acks: &str) -> (ThreadedProducer<Deliveries>, Deliveries) {
    let ctx = Deliveries::default();
    let p = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "30000")
        .create_with_context(ctx.clone())
        .expect("producer");
    (p, ctx)
}

fn consumer(b: &Broker) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "shardlog-test")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

fn admin(b: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin client")
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let results = futures_lite::future::block_on(admin(b).create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics request");
    for r in results {
        r.expect("topic created");
    }
}

/// Reads `count` messages from every partition of `topic` from the beginning; returns
/// per partition the (offset, key, payload) list in order.
fn read_all(b: &Broker, topic: &str, partitions: i32, count: usize) -> ReadBack {
    let c = consumer(b);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out: ReadBack = HashMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen < count {
        assert!(
            Instant::now() < deadline,
            "timed out after {seen} of {count} messages: {}",
            b.log()
        );
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.entry(m.partition()).or_default().push((
                    m.offset(),
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                seen += 1;
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    out
}

fn check_keyed(delivered: &[(Vec<u8>, i32, i64)], read: &ReadBack, n: usize) {
    assert_eq!(delivered.len(), n);
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    for (k, p, _) in delivered {
        let prev = key_partition.insert(k.clone(), *p);
        assert!(
            prev.is_none_or(|q| q == *p),
            "same key must map to the same partition"
        );
    }
    let mut total = 0;
    for (p, msgs) in read {
        for (i, (off, key, payload)) in msgs.iter().enumerate() {
            assert_eq!(*off, i as i64, "partition {p}: offsets dense and in order");
            assert_eq!(
                key_partition.get(key),
                Some(p),
                "key read back from its partition"
            );
            let expected = format!("value-of-{}", String::from_utf8_lossy(key));
            assert!(payload.starts_with(expected.as_bytes()), "payload intact");
        }
        total += msgs.len();
    }
    assert_eq!(total, n);
    let offsets: HashMap<(i32, i64), ()> =
        delivered.iter().map(|(_, p, o)| ((*p, *o), ())).collect();
    assert_eq!(offsets.len(), n, "every acknowledged offset is distinct");
}

fn produce_keyed(b: &Broker, topic: &str, n: usize, keys: usize) -> Vec<(Vec<u8>, i32, i64)> {
    let (p, ctx) = producer(b, "all");
    for i in 0..n {
        let key = format!("key-{}", i % keys);
        let value = format!("value-of-{key}-{i}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "send failed: {e}"
                    );
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    let errors = ctx.errors.lock().expect("lock").clone();
    assert!(errors.is_empty(), "delivery errors: {errors:?}");
    let ok = ctx.ok.lock().expect("lock").clone();
    ok
}

#[test]
fn hundred_thousand_keyed_messages_acks_all_over_six_partitions_survive_restart() {
    let mut b = Broker::start(2, &[]);
    create_topic(&b, "orders", 6);
    let n = 100_000;
    let delivered = produce_keyed(&b, "orders", n, 1000);
    let read = read_all(&b, "orders", 6, n);
    check_keyed(&delivered, &read, n);
    assert_eq!(
        read.len(),
        6,
        "all six partitions (on both shards) hold data"
    );

    assert_eq!(b.stop(), Some(0), "clean shutdown exits 0: {}", b.log());
    b.restart();
    let read = read_all(&b, "orders", 6, n);
    check_keyed(&delivered, &read, n);
}

#[test]
fn watermarks_and_offsets_for_times() {
    let b = Broker::start(2, &[]);
    create_topic(&b, "wm", 2);
    let delivered = produce_keyed(&b, "wm", 500, 50);
    let c = consumer(&b);
    let mut total = 0;
    for p in 0..2 {
        let (lo, hi) = c
            .fetch_watermarks("wm", p, Duration::from_secs(5))
            .expect("watermarks");
        assert_eq!(lo, 0);
        total += hi;
    }
    assert_eq!(total as usize, delivered.len());
    // A time before every record gives the first offset; one in the future gives "none" (-1 →
    // librdkafka reports End).
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("wm", 0, Offset::Offset(0))
        .expect("tpl");
    let found = c
        .offsets_for_times(tpl, Duration::from_secs(5))
        .expect("offsets_for_times");
    let first = found.elements()[0].offset();
    assert_eq!(first, Offset::Offset(0), "timestamp 0 → earliest record");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("wm", 0, Offset::Offset(now_ms + 3_600_000))
        .expect("tpl");
    let found = c
        .offsets_for_times(tpl, Duration::from_secs(5))
        .expect("offsets_for_times");
    assert_eq!(
        found.elements()[0].offset(),
        Offset::End,
        "a future timestamp finds nothing"
    );
}

#[test]
fn create_delete_topics_and_partitions() {
    let b = Broker::start(2, &[]);
    let a = admin(&b);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let r = futures_lite::future::block_on(
        a.create_topics(
            &[
                NewTopic::new("t-a", 3, TopicReplication::Fixed(1)),
                NewTopic::new("bad/name", 1, TopicReplication::Fixed(1)),
                NewTopic::new("t-rf", 1, TopicReplication::Fixed(3)),
                NewTopic::new("t-cfg", 1, TopicReplication::Fixed(1))
                    .set("retention.ms", "not-a-number"),
            ],
            &opts,
        ),
    )
    .expect("request");
    assert!(r[0].is_ok());
    assert!(format!("{:?}", r[1]).contains("InvalidTopic"), "{:?}", r[1]);
    assert!(
        format!("{:?}", r[2]).contains("InvalidReplicationFactor"),
        "{:?}",
        r[2]
    );
    assert!(
        format!("{:?}", r[3]).contains("InvalidConfig"),
        "{:?}",
        r[3]
    );
    let again = futures_lite::future::block_on(a.create_topics(
        &[NewTopic::new("t-a", 3, TopicReplication::Fixed(1))],
        &opts,
    ))
    .expect("request");
    assert!(
        format!("{:?}", again[0]).contains("TopicAlreadyExists"),
        "{:?}",
        again[0]
    );

    let r =
        futures_lite::future::block_on(a.create_partitions(&[NewPartitions::new("t-a", 5)], &opts))
            .expect("request");
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let md = consumer(&b)
        .fetch_metadata(Some("t-a"), Duration::from_secs(5))
        .expect("metadata");
    // Seen once in CI with 0 (the topic's error not recorded): the log says which shard
    // answered and whether every shard confirmed the change.
    assert_eq!(
        md.topics()[0].partitions().len(),
        5,
        "topic error {:?}; broker log:\n{}",
        md.topics()[0].error(),
        b.log()
    );
    let shrink =
        futures_lite::future::block_on(a.create_partitions(&[NewPartitions::new("t-a", 2)], &opts))
            .expect("request");
    assert!(
        format!("{:?}", shrink[0]).contains("InvalidPartitions"),
        "{:?}",
        shrink[0]
    );

    // Produce into the new partitions, then delete the topic.
    let delivered = produce_keyed(&b, "t-a", 200, 40);
    assert_eq!(delivered.len(), 200);
    let r = futures_lite::future::block_on(a.delete_topics(&["t-a", "never-was"], &opts))
        .expect("request");
    assert!(r[0].is_ok());
    assert!(format!("{:?}", r[1]).contains("UnknownTopic"), "{:?}", r[1]);
    let md = consumer(&b)
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    assert!(
        md.topics().iter().all(|t| t.name() != "t-a"),
        "deleted topic is gone"
    );
}

#[test]
fn long_poll_fetch_returns_when_data_arrives() {
    let b = Broker::start(2, &[]);
    create_topic(&b, "lp", 1);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "lp")
        .set("fetch.wait.max.ms", "20000")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("lp", 0, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    // Let the consumer park its first long-poll fetch on the empty partition.
    let _ = c.poll(Duration::from_millis(1500));
    let started = Instant::now();
    let (p, _ctx) = producer(&b, "1");
    p.send(BaseRecord::to("lp").key("k").payload("wake up"))
        .expect("send");
    p.flush(Duration::from_secs(10)).expect("flush");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            assert_eq!(m.payload(), Some(&b"wake up"[..]));
            break;
        }
        assert!(Instant::now() < deadline, "no message");
    }
    // The parked fetch had 20 s left; getting the record well before that shows the append woke it.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fetch was not woken by the append: {:?}",
        started.elapsed()
    );
}

#[test]
fn two_shards_two_listeners_two_pinned_threads() {
    let b = Broker::start(2, &[]);
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", b.port)])
        .output()
        .expect("ss");
    let listeners = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("LISTEN"))
        .count();
    assert_eq!(listeners, 2, "one SO_REUSEPORT listener per shard");
    let mut pinned = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{}/task", b.pid())).expect("tasks") {
        let task = task.expect("task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("shard-") {
            let status = std::fs::read_to_string(task.join("status")).expect("status");
            let cpus = status
                .lines()
                .find(|l| l.starts_with("Cpus_allowed_list"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
                .expect("cpus line");
            pinned.push((comm.trim().to_string(), cpus));
        }
    }
    // glommio names an executor's threads `<name>-<id>`; each shard's threads share its cpu.
    for (_, cpus) in &pinned {
        assert!(
            cpus.parse::<usize>().is_ok(),
            "pinned to a single cpu: {pinned:?}"
        );
    }
    let shards: std::collections::BTreeMap<String, String> = pinned
        .iter()
        .map(|(name, cpus)| {
            (
                name.split('-').take(2).collect::<Vec<_>>().join("-"),
                cpus.clone(),
            )
        })
        .collect();
    assert_eq!(shards.len(), 2, "two shard executors: {pinned:?}");
    let cpus: std::collections::BTreeSet<&String> = shards.values().collect();
    assert_eq!(cpus.len(), 2, "on different cpus: {pinned:?}");
}

#[test]
fn kcat_produces_and_consumes() {
    let b = Broker::start(2, &[]);
    create_topic(&b, "kc", 3);
    let mut child = std::process::Command::new("kcat")
        .args(["-b", &b.bootstrap(), "-t", "kc", "-P", "-K", ":"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat installed (scripts/test installs it)");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().expect("stdin");
        for i in 0..300 {
            writeln!(stdin, "k{}:v{}", i % 7, i).expect("write");
        }
    }
    drop(child.stdin.take());
    assert!(child.wait().expect("kcat").success());
    let out = std::process::Command::new("kcat")
        .args([
            "-b",
            &b.bootstrap(),
            "-t",
            "kc",
            "-C",
            "-e",
            "-q",
            "-f",
            "%k:%s\n",
        ])
        .output()
        .expect("kcat consume");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    let mut expected: Vec<String> = (0..300).map(|i| format!("k{}:v{}", i % 7, i)).collect();
    expected.sort();
    assert_eq!(lines, expected);
}

#[test]
fn the_internal_offsets_topic_is_protected() {
    let b = Broker::start(2, &["log.preallocate.bytes=1048576"]);
    let md = consumer(&b)
        .fetch_metadata(Some("__consumer_offsets"), Duration::from_secs(5))
        .expect("metadata");
    assert!(
        !md.topics()[0].partitions().is_empty(),
        "the internal topic exists"
    );
    let a = admin(&b);
    let opts = AdminOptions::new();
    let r = futures_lite::future::block_on(a.delete_topics(&["__consumer_offsets"], &opts))
        .expect("request");
    assert!(format!("{:?}", r[0]).contains("InvalidTopic"), "{:?}", r[0]);
    let r = futures_lite::future::block_on(
        a.create_partitions(&[NewPartitions::new("__consumer_offsets", 99)], &opts),
    )
    .expect("request");
    assert!(format!("{:?}", r[0]).contains("InvalidTopic"), "{:?}", r[0]);
    let (p, ctx) = producer(&b, "1");
    p.send(
        BaseRecord::to("__consumer_offsets")
            .partition(0)
            .key("k")
            .payload("v"),
    )
    .expect("queued");
    p.flush(Duration::from_secs(10)).expect("flush");
    let errors = ctx.errors.lock().expect("lock").clone();
    assert_eq!(
        errors.len(),
        1,
        "produce to the internal topic is refused: {errors:?}"
    );
}

#[test]
fn auto_offset_reset_follows_offset_out_of_range() {
    let b = Broker::start(2, &["log.preallocate.bytes=1048576"]);
    create_topic(&b, "reset", 1);
    let delivered = produce_keyed(&b, "reset", 50, 5);
    assert_eq!(delivered.len(), 50);
    for (reset, expected_first) in [("earliest", Some(0i64)), ("latest", None)] {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .set("group.id", format!("reset-{reset}"))
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", reset)
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("reset", 0, Offset::Offset(1_000_000))
            .expect("tpl");
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut first = None;
        while Instant::now() < deadline && first.is_none() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                first = Some(m.offset());
            }
        }
        assert_eq!(first, expected_first, "auto.offset.reset={reset}");
    }
}

#[test]
fn offsets_for_times_finds_the_record_inside_a_batch() {
    let b = Broker::start(1, &["log.preallocate.bytes=1048576"]);
    create_topic(&b, "times", 1);
    let p: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("linger.ms", "500")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let t0 = 1_700_000_000_000i64;
    for i in 0..3i64 {
        p.send(
            BaseRecord::to("times")
                .partition(0)
                .key("k")
                .payload("v")
                .timestamp(t0 + i * 1000),
        )
        .expect("queued");
    }
    p.flush(Duration::from_secs(10)).expect("flush");
    let c = consumer(&b);
    for (ts, expected) in [(t0, 0), (t0 + 500, 1), (t0 + 1000, 1), (t0 + 1500, 2)] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, Offset::Offset(ts))
            .expect("tpl");
        let found = c
            .offsets_for_times(tpl, Duration::from_secs(5))
            .expect("offsets_for_times");
        assert_eq!(
            found.elements()[0].offset(),
            Offset::Offset(expected),
            "timestamp {ts}"
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[test]
fn small_batches_do_not_pin_read_buffers() {
    // Many connections each sending one small produce at a time (1,000 producers at a low
    // rate): every request arrives alone in its own read buffer. As slices, the cached batches
    // would each keep a 64 KiB buffer alive: 4,000 × 64 KiB = 250 MiB.
    let b = Broker::start(1, &["log.preallocate.bytes=1048576"]);
    create_topic(&b, "small", 1);
    let rss_before = rss_kib(b.pid());
    let mut clients: Vec<rawkafka::Client> = (0..200)
        .map(|_| rawkafka::Client::connect(b.port, Duration::from_secs(10)).expect("connect"))
        .collect();
    for round in 0..20 {
        for c in clients.iter_mut() {
            let batch = rawkafka::encode_batch(&[bytes::Bytes::from(vec![b'x'; 1000])]);
            let errors = c.produce("small", &[(0, batch)], 1).expect("produce");
            assert!(errors.iter().all(|e| e.1 == 0), "round {round}: {errors:?}");
        }
    }
    let rss = rss_kib(b.pid());
    eprintln!("broker RSS: {rss_before} KiB before, {rss} KiB after 4,000 lone 1 KiB batches");
    assert!(
        rss - rss_before < 28 * 1024,
        "RSS grew {} KiB: small batches pin their read buffers",
        rss - rss_before
    );
}
