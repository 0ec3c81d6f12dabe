//! Replication (issue 18) with real broker processes and standard clients. Step 1 of the
//! design: leader epochs stamped in every batch, the leader-epoch cache kept across kill -9,
//! and OffsetForLeaderEpoch as librdkafka (confluent-kafka) uses it to validate a position
//! after a leader change (KIP-320); then data replication itself: RF=3 with followers
//! fetching from the leader, acks=all over the ISR, and a leader killed with SIGKILL.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::cluster::{leader_and_epoch, Cluster};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, FutureProducer, FutureRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

/// confluent-kafka (librdkafka) consumer: assigns `topic`/0 at `offset` with the position's
/// leader epoch `epoch` (`auto.offset.reset=error`, so a detected truncation is an error, not
/// a silent reset) and prints `REC <offset> <leader epoch>` per record until `want` came, or
/// `ERR <code> <message>` and stops.
const VALIDATING_CONSUMER: &str = r#"
import sys, time
from confluent_kafka import Consumer, TopicPartition
bs, topic, offset, epoch, want = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
c = Consumer({'bootstrap.servers': bs, 'group.id': 'epochs', 'enable.auto.commit': False,
              'auto.offset.reset': 'error', 'fetch.wait.max.ms': 100})
c.assign([TopicPartition(topic, 0, offset, leader_epoch=epoch)])
got, deadline = 0, time.time() + 30
while got < want and time.time() < deadline:
    m = c.poll(0.2)
    if m is None:
        continue
    if m.error():
        print('ERR', m.error().code(), m.error().str(), flush=True)
        break
    print('REC', m.offset(), m.leader_epoch(), flush=True)
    got += 1
c.close()
"#;

/// Runs [`VALIDATING_CONSUMER`]; its output lines.
fn validate_position(
    bootstrap: &str,
    topic: &str,
    offset: i64,
    epoch: i32,
    want: usize,
) -> Vec<String> {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-clients",
        python.display()
    );
    let o = Command::new(&python)
        .args(["-c", VALIDATING_CONSUMER, bootstrap, topic])
        .args([offset.to_string(), epoch.to_string(), want.to_string()])
        .output()
        .expect("run python");
    assert!(
        o.status.success(),
        "consumer failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Produces `n` records to `topic`/0 with acks=all; all must be acknowledged.
fn produce(bootstrap: &str, topic: &str, n: usize) {
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for i in 0..n {
        let value = format!("v{i}");
        p.send(
            BaseRecord::<(), String>::to(topic)
                .partition(0)
                .payload(&value),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
    }
    p.flush(Duration::from_secs(30))
        .expect("every record acknowledged");
}

/// One record to `topic`/0 with `acks` and no retries: acknowledged, or the error code.
fn produce_outcome(bootstrap: &str, topic: &str, acks: &str) -> Result<(), RDKafkaErrorCode> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", acks)
        .set("retries", "0")
        .set("message.timeout.ms", "10000")
        .create()
        .expect("producer");
    let r = futures_lite::future::block_on(p.send(
        FutureRecord::<(), str>::to(topic).partition(0).payload("x"),
        Duration::from_secs(10),
    ));
    match r {
        Ok(_) => Ok(()),
        Err((KafkaError::MessageProduction(code), _)) => Err(code),
        Err((e, _)) => panic!("unexpected {e}"),
    }
}

/// OffsetForLeaderEpoch v4 of `topic`/0 on `port`: (error code, epoch, end offset).
fn offset_for_leader_epoch(port: u16, topic: &str, current: i32, epoch: i32) -> (i16, i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, BrokerId, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(current)
                .with_leader_epoch(epoch)])]);
    let mut body = common::request(&mut s, ApiKey::OffsetForLeaderEpoch, 4, &req);
    let r = OffsetForLeaderEpochResponse::decode(&mut body, 4).expect("response");
    let p = &r.topics[0].partitions[0];
    (p.error_code, p.leader_epoch, p.end_offset)
}

/// A Fetch v12 of `topic`/0 from `offset` on `port` with `last_fetched_epoch`: (error code,
/// diverging epoch and end offset (-1, -1 when none), bytes of records).
fn fetch_with_last_epoch(
    port: u16,
    topic: &str,
    offset: i64,
    last_epoch: i32,
) -> (i16, (i32, i64), usize) {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_last_fetched_epoch(last_epoch)
                .with_partition_max_bytes(1 << 20)])]);
    let mut body = common::request(&mut s, ApiKey::Fetch, 12, &req);
    let r = FetchResponse::decode(&mut body, 12).expect("fetch response");
    let p = &r.responses[0].partitions[0];
    (
        p.error_code,
        (p.diverging_epoch.epoch, p.diverging_epoch.end_offset),
        p.records.as_ref().map_or(0, |b| b.len()),
    )
}

/// A partition's leader is killed with SIGKILL and comes back with a newer leader epoch: the
/// batches written before carry the old epoch, those after the new one (as a standard client
/// reads them), the epoch cache survived the kill, and OffsetForLeaderEpoch answers as Kafka
/// does: librdkafka validating a position of the old epoch past its end reports the
/// truncation, one inside it reads on across the epoch change.
#[test]
fn leader_epochs_survive_kill9_and_validate_positions() {
    let mut c = Cluster::start(3, &[]);
    let boot = c
        .nodes
        .iter()
        .map(|n| n.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .create()
        .expect("admin");
    let port2 = c.node(2).port;
    c.wait_for("node 2 registered", 60, || {
        let r = futures_lite::future::block_on(
            admin.create_topics(
                &[NewTopic::new(
                    "epochs",
                    1,
                    TopicReplication::Variable(&[&[2]]),
                )],
                // Each attempt bounded: a client that took its first Metadata from a broker
                // whose image did not list the controller yet would otherwise wait 60 s.
                &AdminOptions::new()
                    .operation_timeout(Some(Duration::from_secs(5)))
                    .request_timeout(Some(Duration::from_secs(5))),
            ),
        );
        // A create whose answer timed out may have happened: then it already exists.
        let ok = matches!(
            r.as_deref(),
            Ok([Ok(_)]) | Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))])
        );
        if !ok {
            eprintln!("create epochs: {r:?}");
        }
        ok
    });
    c.wait_for("node 2 leads epochs-0", 30, || {
        leader_and_epoch(port2, "epochs", 0).is_some_and(|(l, _)| l == 2)
    });
    let (_, e0) = leader_and_epoch(port2, "epochs", 0).expect("metadata");
    produce(&boot, "epochs", 5);

    c.node(2).kill9();
    let port1 = c.node(1).port;
    c.wait_for("epochs-0 offline after the kill", 30, || {
        leader_and_epoch(port1, "epochs", 0).is_some_and(|(l, _)| l == -1)
    });
    c.node(2).spawn();
    c.wait_for("node 2 leads epochs-0 again", 60, || {
        leader_and_epoch(port2, "epochs", 0).is_some_and(|(l, e)| l == 2 && e > e0)
    });
    let (_, e2) = leader_and_epoch(port2, "epochs", 0).expect("metadata");
    produce(&boot, "epochs", 3);

    // The wire answers, as Kafka's `endOffsetFor`.
    assert_eq!(offset_for_leader_epoch(port2, "epochs", e2, e0), (0, e0, 5));
    assert_eq!(offset_for_leader_epoch(port2, "epochs", e2, e2), (0, e2, 8));
    assert_eq!(
        offset_for_leader_epoch(port2, "epochs", -1, e2 + 1),
        (0, -1, -1)
    );
    assert_eq!(
        offset_for_leader_epoch(port2, "epochs", e0, e0).0,
        74,
        "FENCED_LEADER_EPOCH for an older current epoch"
    );
    assert_eq!(
        offset_for_leader_epoch(port1, "epochs", e2, e0).0,
        6,
        "NOT_LEADER_OR_FOLLOWER from a broker that does not lead"
    );

    // A fetcher whose last batch had epoch e0 and that fetches from 7 diverges at 5 (KIP-320
    // in Fetch v12+): no records, the epoch and offset to truncate to.
    assert_eq!(
        fetch_with_last_epoch(port2, "epochs", 7, e0),
        (0, (e0, 5), 0)
    );
    let (code, diverging, bytes) = fetch_with_last_epoch(port2, "epochs", 5, e0);
    assert_eq!((code, diverging), (0, (-1, -1)));
    assert!(bytes > 0, "a fetcher at the epoch's end reads on");
    assert_eq!(
        fetch_with_last_epoch(port2, "epochs", 8, e2),
        (0, (-1, -1), 0)
    );

    // A position of epoch e0 at offset 7 claims data epoch e0 never had (it ended at 5).
    let out = validate_position(&boot, "epochs", 7, e0, 1);
    assert!(
        out.len() == 1 && out[0].starts_with("ERR") && out[0].contains("truncation detected"),
        "{out:?}"
    );
    assert!(out[0].contains("broker end offset is 5"), "{out:?}");
    // A position inside epoch e0 is valid and reads on into the new epoch.
    let out = validate_position(&boot, "epochs", 3, e0, 5);
    let want: Vec<String> = [(3, e0), (4, e0), (5, e2), (6, e2), (7, e2)]
        .iter()
        .map(|(o, e)| format!("REC {o} {e}"))
        .collect();
    assert_eq!(out, want);

    // In a cluster the ISR comes from the image: one replica is fewer than 2.
    let r = futures_lite::future::block_on(
        admin.create_topics(
            &[
                NewTopic::new("isr2", 1, TopicReplication::Variable(&[&[1]]))
                    .set("min.insync.replicas", "2"),
            ],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ),
    )
    .expect("create");
    assert!(matches!(r.as_slice(), [Ok(_)]), "{r:?}");
    assert_eq!(
        produce_outcome(&boot, "isr2", "all"),
        Err(RDKafkaErrorCode::NotEnoughReplicas)
    );
    assert_eq!(produce_outcome(&boot, "isr2", "1"), Ok(()));
}

/// On one node the leader epoch is 0 for ever: positions of epoch 0 validate (also after a
/// kill -9, whose recovery rebuilds the epoch cache), a newer epoch is unknown.
#[test]
fn one_node_validates_epoch_zero_positions() {
    let mut b = common::Broker::start(1, &[]);
    produce(&b.bootstrap(), "solo", 4);
    b.kill9();
    b.restart();
    produce(&b.bootstrap(), "solo", 2);
    assert_eq!(offset_for_leader_epoch(b.port, "solo", 0, 0), (0, 0, 6));
    assert_eq!(offset_for_leader_epoch(b.port, "solo", -1, 1), (0, -1, -1));
    let out = validate_position(&b.bootstrap(), "solo", 2, 0, 4);
    let want: Vec<String> = (2..6).map(|o| format!("REC {o} 0")).collect();
    assert_eq!(out, want);
}

/// `min.insync.replicas` above the partition's in-sync replicas: an acks=all produce is
/// refused with NOT_ENOUGH_REPLICAS before the append (nothing stored), acks=1 is not; once
/// the setting is lowered, acks=all goes through.
#[test]
fn min_insync_replicas_refuses_acks_all() {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let b = common::Broker::start(1, &[]);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let r = futures_lite::future::block_on(admin.create_topics(
        &[NewTopic::new("isr", 1, TopicReplication::Fixed(1)).set("min.insync.replicas", "2")],
        &opts,
    ))
    .expect("create");
    assert!(r[0].is_ok(), "{r:?}");
    // The partition's log end offset (the high watermark).
    let end = |b: &common::Broker| {
        let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", b.bootstrap())
            .create()
            .expect("consumer");
        rdkafka::consumer::Consumer::fetch_watermarks(&c, "isr", 0, Duration::from_secs(5))
            .expect("watermarks")
            .1
    };
    assert_eq!(
        produce_outcome(&b.bootstrap(), "isr", "all"),
        Err(RDKafkaErrorCode::NotEnoughReplicas)
    );
    assert_eq!(end(&b), 0, "nothing appended");
    assert_eq!(produce_outcome(&b.bootstrap(), "isr", "1"), Ok(()));
    assert_eq!(end(&b), 1);
    let alter = AlterConfig::new(ResourceSpecifier::Topic("isr")).set("min.insync.replicas", "1");
    let r = futures_lite::future::block_on(admin.alter_configs(&[alter], &opts)).expect("alter");
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(produce_outcome(&b.bootstrap(), "isr", "all"), Ok(()));
    assert_eq!(end(&b), 2);
}

/// Replication end to end (steps 1-3 of the design): three brokers, RF=3,
/// `min.insync.replicas=2`, an idempotent acks=all librdkafka producer. The leader is killed
/// with SIGKILL halfway; the controller elects a new leader from the ISR, the producer moves
/// there and goes on, and every acknowledged record is read back exactly once at the offset
/// its acknowledgement named.
#[test]
fn rf3_acks_all_survives_leader_kill9_without_losing_acknowledged_records() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    use std::collections::BTreeMap;

    /// Records produced before the kill, and after it.
    const RECORDS_PER_PHASE: usize = 300;
    let mut c = Cluster::start(3, &[]);
    let boot = c
        .nodes
        .iter()
        .map(|n| n.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .create()
        .expect("admin");
    c.wait_for("rf3 created on three brokers", 60, || {
        let r = futures_lite::future::block_on(
            admin.create_topics(
                &[NewTopic::new("rf3", 1, TopicReplication::Fixed(3))
                    .set("min.insync.replicas", "2")],
                // Each attempt bounded: a client that took its first Metadata from a broker
                // whose image did not list the controller yet would otherwise wait 60 s.
                &AdminOptions::new()
                    .operation_timeout(Some(Duration::from_secs(5)))
                    .request_timeout(Some(Duration::from_secs(5))),
            ),
        );
        let ok = matches!(
            r.as_deref(),
            Ok([Ok(_)]) | Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))])
        );
        if !ok {
            eprintln!("create rf3: {r:?}");
        }
        ok
    });
    let port1 = c.node(1).port;
    c.wait_for("rf3-0 has a leader", 30, || {
        leader_and_epoch(port1, "rf3", 0).is_some_and(|(l, _)| l > 0)
    });
    let (leader, e0) = leader_and_epoch(port1, "rf3", 0).expect("metadata");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .expect("producer");
    // value -> the offset its acknowledgement named.
    let mut acked: BTreeMap<String, i64> = BTreeMap::new();
    let produce_phase = |from: usize, acked: &mut BTreeMap<String, i64>| {
        let futures: Vec<_> = (from..from + RECORDS_PER_PHASE)
            .map(|i| {
                let value = format!("r{i:05}");
                let f = producer.send_result(
                    FutureRecord::<(), str>::to("rf3")
                        .partition(0)
                        .payload(&value),
                );
                let f = f.map_err(|(e, _)| e).expect("queued");
                (value, f)
            })
            .collect();
        for (value, f) in futures {
            match futures_lite::future::block_on(f) {
                Ok(Ok(d)) => {
                    assert!(acked.insert(value, d.offset).is_none());
                }
                Ok(Err((e, _))) => panic!("{value} not acknowledged: {e}"),
                Err(_) => panic!("{value}: delivery future cancelled"),
            }
        }
    };
    produce_phase(0, &mut acked);
    let killed = std::time::Instant::now();
    c.node(leader).kill9();
    let survivor = if leader == 1 { 2 } else { 1 };
    let port = c.node(survivor).port;
    c.wait_for("a new leader of rf3-0 from the ISR", 30, || {
        leader_and_epoch(port, "rf3", 0).is_some_and(|(l, e)| l > 0 && l != leader && e > e0)
    });
    let elected = killed.elapsed();
    produce_phase(RECORDS_PER_PHASE, &mut acked);
    eprintln!(
        "failover: new leader in Metadata {} ms after the kill, {RECORDS_PER_PHASE} more records acknowledged {} ms after it",
        elected.as_millis(),
        killed.elapsed().as_millis()
    );
    assert_eq!(acked.len(), 2 * RECORDS_PER_PHASE);

    // Read the whole partition back from the new leader, below its high watermark.
    let last = *acked.values().max().expect("acknowledged records");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .set("group.id", "rf3-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("rf3", 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut log: BTreeMap<i64, String> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while log.keys().next_back().is_none_or(|&o| o < last) {
        assert!(
            std::time::Instant::now() < deadline,
            "read up to offset {:?} of {last} in 60 s",
            log.keys().next_back()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            // librdkafka reports the killed broker of the bootstrap list as transient errors.
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("consumer: {e}");
                    continue;
                }
            };
            let value = String::from_utf8(m.payload().expect("payload").to_vec()).expect("utf-8");
            log.insert(m.offset(), value);
        }
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for v in log.values() {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    for (value, offset) in &acked {
        assert_eq!(
            log.get(offset).map(String::as_str),
            Some(value.as_str()),
            "{value} acknowledged at {offset}"
        );
        assert_eq!(seen.get(value.as_str()), Some(&1), "{value} stored once");
    }
}

/// The ISR of `topic`/0 in a Metadata v12 answer from the broker on `port` (sorted).
fn isr_of(port: u16, topic: &str) -> Option<Vec<i32>> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let mut body = common::request(&mut s, ApiKey::Metadata, 12, &req);
    let r = MetadataResponse::decode(&mut body, 12).ok()?;
    let p = r.topics.first()?.partitions.first()?;
    let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
    isr.sort_unstable();
    Some(isr)
}

/// Sends `sig` to node `id` of `c` (SIGSTOP / SIGCONT).
fn signal(c: &mut Cluster, id: i32, sig: i32) {
    let pid = c.node(id).pid().expect("running") as i32;
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// ISR changes by lag (AlterPartition): a follower paused with SIGSTOP leaves the ISR after
/// `replica.lag.time.max.ms` (its broker session is long, so it is not fenced) and acks=all
/// goes on with the two others; resumed, it catches up and rejoins. Under
/// `min.insync.replicas=3` a shrink refuses acks=all (NOT_ENOUGH_REPLICAS_AFTER_APPEND for
/// a write caught by it, NOT_ENOUGH_REPLICAS after it) while acks=1 is acknowledged.
#[test]
fn a_paused_follower_leaves_the_isr_and_rejoins() {
    let mut c = Cluster::start(
        3,
        &[
            "replica.lag.time.max.ms=1000",
            "broker.session.timeout.ms=60000",
        ],
    );
    let boot = c
        .nodes
        .iter()
        .map(|n| n.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &boot)
        .create()
        .expect("admin");
    c.wait_for("lag created on three brokers", 60, || {
        let r = futures_lite::future::block_on(
            admin.create_topics(
                &[NewTopic::new("lag", 1, TopicReplication::Fixed(3))
                    .set("min.insync.replicas", "2")],
                &AdminOptions::new()
                    .operation_timeout(Some(Duration::from_secs(5)))
                    .request_timeout(Some(Duration::from_secs(5))),
            ),
        );
        matches!(
            r.as_deref(),
            Ok([Ok(_)]) | Ok([Err((_, RDKafkaErrorCode::TopicAlreadyExists))])
        )
    });
    let port1 = c.node(1).port;
    c.wait_for("lag-0 has a leader", 30, || {
        leader_and_epoch(port1, "lag", 0).is_some_and(|(l, _)| l > 0)
    });
    let (leader, _) = leader_and_epoch(port1, "lag", 0).expect("metadata");
    let lport = c.node(leader).port;
    let followers: Vec<i32> = (1..=3).filter(|&i| i != leader).collect();
    produce(&boot, "lag", 20);
    assert_eq!(isr_of(lport, "lag"), Some(vec![1, 2, 3]));

    // One follower paused: it leaves the ISR, acks=all goes on.
    signal(&mut c, followers[0], libc::SIGSTOP);
    let two: Vec<i32> = [leader, followers[1]]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    c.wait_for("the paused follower out of the ISR", 30, || {
        isr_of(lport, "lag").as_ref() == Some(&two)
    });
    let lboot = c.node(leader).bootstrap();
    produce(&lboot, "lag", 20);

    // Resumed: it catches up and rejoins.
    signal(&mut c, followers[0], libc::SIGCONT);
    c.wait_for("the resumed follower back in the ISR", 30, || {
        isr_of(lport, "lag") == Some(vec![1, 2, 3])
    });
    produce(&lboot, "lag", 20);

    // min.insync.replicas=3 on the same three brokers, led by the same leader: a write
    // waiting for a follower that is paused meanwhile is not acknowledged (the shrink lets
    // the high watermark pass, but over two replicas: NOT_ENOUGH_REPLICAS_AFTER_APPEND, or
    // NOT_ENOUGH_REPLICAS if the shrink came first); after the shrink acks=all is refused
    // before the append and acks=1 is acknowledged. (Two paused followers would leave the
    // controllers, which run on the same nodes, without a majority.)
    let replicas = [leader, followers[0], followers[1]];
    let r = futures_lite::future::block_on(
        admin.create_topics(
            &[
                NewTopic::new("strict", 1, TopicReplication::Variable(&[&replicas]))
                    .set("min.insync.replicas", "3"),
            ],
            &AdminOptions::new()
                .operation_timeout(Some(Duration::from_secs(10)))
                .request_timeout(Some(Duration::from_secs(10))),
        ),
    )
    .expect("create strict");
    assert!(matches!(r.as_slice(), [Ok(_)]), "{r:?}");
    c.wait_for("strict-0 led by the same leader, all in sync", 30, || {
        leader_and_epoch(lport, "strict", 0).is_some_and(|(l, _)| l == leader)
            && isr_of(lport, "strict") == Some(vec![1, 2, 3])
    });
    assert_eq!(produce_outcome(&lboot, "strict", "all"), Ok(()));
    signal(&mut c, followers[0], libc::SIGSTOP);
    let caught = produce_outcome(&lboot, "strict", "all");
    eprintln!("acks=all while the follower is paused: {caught:?}");
    assert!(
        matches!(
            caught,
            Err(RDKafkaErrorCode::NotEnoughReplicasAfterAppend)
                | Err(RDKafkaErrorCode::NotEnoughReplicas)
        ),
        "{caught:?}"
    );
    c.wait_for("strict's ISR without the paused follower", 30, || {
        isr_of(lport, "strict") == Some(two.clone())
    });
    assert_eq!(
        produce_outcome(&lboot, "strict", "all"),
        Err(RDKafkaErrorCode::NotEnoughReplicas)
    );
    assert_eq!(produce_outcome(&lboot, "strict", "1"), Ok(()));
    signal(&mut c, followers[0], libc::SIGCONT);
    c.wait_for("strict's ISR whole again", 30, || {
        isr_of(lport, "strict") == Some(vec![1, 2, 3])
    });
    assert_eq!(produce_outcome(&lboot, "strict", "all"), Ok(()));
}
