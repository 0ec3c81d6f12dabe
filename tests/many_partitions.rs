//! Many partitions per broker (issue 16): 5,000 partitions holding one record each take disk
//! in proportion to their data (Kafka 4.3.1: 69 MB for 4,000 such partitions; shardlog used
//! to reserve 64 MiB per partition), and a kill -9 loses none of the acknowledged records.

mod common;
#[path = "rawkafka/mod.rs"]
mod rawkafka;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use kafka_protocol::messages::{ApiKey, FetchResponse};
use rawkafka::{decode_records, encode_batch, raise_fd_limit, Client};

const TOPICS: usize = 50;
const PARTITIONS_PER_TOPIC: i32 = 100;
/// Allocated blocks (what `du` counts) over the whole data dir, per partition holding one
/// record, at most: 8 KiB are measured (a 4 KiB page of `.log` and the directory); Kafka 4.3.1
/// takes ~17 KiB for such a partition.
const DISK_PER_IDLE_PARTITION_BYTES_MAX: u64 = 24 << 10;

/// Bytes of allocated blocks under `dir` (`du`'s figure: st_blocks of every file and dir).
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

#[test]
fn five_thousand_partitions_of_one_record_take_little_disk_and_survive_kill9() {
    let fds = raise_fd_limit();
    assert!(
        fds >= 16_384,
        "the test needs an fd limit of 16384, has {fds}"
    );
    let started = Instant::now();
    let mut b = Broker::start(2, &[]);
    let mut c = Client::connect(b.port, Duration::from_secs(60)).expect("connect");
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("many-{i}")).collect();
    for t in &topics {
        assert_eq!(c.create_topic(t, PARTITIONS_PER_TOPIC).expect("create"), 0);
    }
    eprintln!("created in {:?}", started.elapsed());
    // One record per partition, acks=all: each acknowledgement is durable.
    for t in &topics {
        let parts: Vec<(i32, Bytes)> = (0..PARTITIONS_PER_TOPIC)
            .map(|p| (p, encode_batch(&[Bytes::from(format!("{t}/{p}"))])))
            .collect();
        for (p, code, offset) in c.produce(t, &parts, -1).expect("produce") {
            assert_eq!((code, offset), (0, 0), "{t}-{p}");
        }
    }
    let partitions = TOPICS as u64 * PARTITIONS_PER_TOPIC as u64;
    let used = allocated_bytes(&b.data_dir);
    eprintln!(
        "{partitions} partitions of one record: {} KiB allocated ({} KiB each), in {:?}",
        used >> 10,
        (used / partitions) >> 10,
        started.elapsed()
    );
    assert!(
        used <= partitions * DISK_PER_IDLE_PARTITION_BYTES_MAX,
        "{used} bytes allocated for {partitions} partitions of one record"
    );

    // kill -9 and restart: every acknowledged record is there.
    b.kill9();
    let restarted = Instant::now();
    b.restart();
    eprintln!("restarted in {:?}", restarted.elapsed());
    let mut c = Client::connect(b.port, Duration::from_secs(60)).expect("reconnect");
    for t in &topics {
        // One Fetch per topic for all its partitions.
        let mut req = Client::fetch_request(t, 0, 0, 16 << 20, 0);
        let one = req.topics[0].partitions[0].clone();
        req.topics[0].partitions = (0..PARTITIONS_PER_TOPIC)
            .map(|p| one.clone().with_partition(p))
            .collect();
        let resp: FetchResponse = c
            .call(ApiKey::Fetch, rawkafka::FETCH_VERSION, &req)
            .expect("fetch");
        assert_eq!(resp.error_code, 0);
        let parts: Vec<_> = resp.responses.iter().flat_map(|r| &r.partitions).collect();
        assert_eq!(parts.len(), PARTITIONS_PER_TOPIC as usize, "{t}");
        for p in parts {
            let i = p.partition_index;
            assert_eq!((p.error_code, p.high_watermark), (0, 1), "{t}-{i}");
            let records = decode_records(p.records.clone().unwrap_or_default()).expect("crc");
            assert_eq!(
                records,
                vec![(0, Bytes::from(format!("{t}/{i}")))],
                "{t}-{i}"
            );
        }
    }
    eprintln!("with restart and read-back: {:?}", started.elapsed());
}

/// With a small open-file limit, topic creation stops with INVALID_PARTITIONS and a message
/// naming the limit before the broker could run out of descriptors, and every partition it
/// accepted takes writes and serves them (issue 16: "a clear error and refusal when the limit
/// would be crossed, never a crash").
#[test]
fn partitions_past_the_open_file_budget_are_refused_cleanly() {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    const OPEN_FILES_LIMIT: u64 = 512;
    const PARTITIONS_PER_TOPIC: i32 = 20;
    let b = Broker::start_with_open_files_limit(1, &[], OPEN_FILES_LIMIT);
    let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    let mut created = Vec::new();
    let mut refusal = None;
    // 512 descriptors cannot host 30 x 20 partitions: the loop ends with a refusal.
    for i in 0..30 {
        let name = format!("fds-{i}");
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())))
                .with_num_partitions(PARTITIONS_PER_TOPIC)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000);
        let resp: CreateTopicsResponse = c.call(ApiKey::CreateTopics, 5, &req).expect("create");
        let t = &resp.topics[0];
        if t.error_code == 0 {
            created.push(name);
        } else {
            refusal = Some((
                t.error_code,
                t.error_message.as_ref().map(|m| m.to_string()),
            ));
            break;
        }
    }
    let (code, message) = refusal.expect("creation was never refused");
    assert_eq!(
        code,
        shardlog::error_code::ErrorCode::INVALID_PARTITIONS.code()
    );
    let message = message.unwrap_or_default();
    assert!(message.contains("open-file limit"), "{message}");
    // Two thirds of the usable descriptors go to partitions, one each: well over 100.
    assert!(
        created.len() * PARTITIONS_PER_TOPIC as usize >= 100,
        "{created:?}"
    );
    // Every accepted partition takes a durable write and serves it back.
    for t in &created {
        let parts: Vec<(i32, Bytes)> = (0..PARTITIONS_PER_TOPIC)
            .map(|p| (p, encode_batch(&[Bytes::from(format!("{t}/{p}"))])))
            .collect();
        for (p, code, offset) in c.produce(t, &parts, -1).expect("produce") {
            assert_eq!((code, offset), (0, 0), "{t}-{p}");
        }
    }
    for t in &created {
        for p in [0, PARTITIONS_PER_TOPIC - 1] {
            let records = c.read_all(t, p).expect("read");
            assert_eq!(
                records,
                vec![(0, Bytes::from(format!("{t}/{p}")))],
                "{t}-{p}"
            );
        }
    }
    let log = b.log();
    assert!(
        log.contains("open-file budget"),
        "the budget is logged at start"
    );
    assert!(
        log.contains("request refused") && log.contains("open-file limit"),
        "the refusal is logged: {log}"
    );
}
