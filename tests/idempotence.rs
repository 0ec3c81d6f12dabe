//! Idempotent producer: librdkafka with `enable.idempotence=true` produces through a proxy
//! that replays some of its Produce requests on a side connection (a duplicate retry, byte for
//! byte). The broker must acknowledge each replay with the original offsets and store every
//! message exactly once, in order, with no gaps.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{free_port, read_frame, roundtrip, Broker};
use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// Replays compared: (replays answered with the original offsets, replays seen).
#[derive(Default)]
struct ReplayStats {
    matched: AtomicUsize,
    replayed: AtomicUsize,
    mismatches: Mutex<Vec<String>>,
}

/// A request seen going up: (api key, version, the frame if it is to be replayed).
type InFlight = (i16, i16, Option<Vec<u8>>);

fn base_offsets(frame: &[u8], version: i16) -> Vec<(i32, i16, i64)> {
    let mut b = Bytes::copy_from_slice(frame);
    let _ = ResponseHeader::decode(&mut b, ApiKey::Produce.response_header_version(version))
        .expect("header");
    let resp = ProduceResponse::decode(&mut b, version).expect("produce response");
    resp.responses
        .iter()
        .flat_map(|t| {
            t.partition_responses
                .iter()
                .map(|p| (p.index, p.error_code, p.base_offset))
        })
        .collect()
}

fn proxy_connection(client: TcpStream, upstream: u16, stats: Arc<ReplayStats>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let pending: Arc<Mutex<HashMap<i32, InFlight>>> = Arc::default();
    let (mut c_read, mut s_write) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    let pending_up = pending.clone();
    std::thread::spawn(move || {
        let mut produce_seen = 0usize;
        while let Ok(frame) = read_frame(&mut c_read) {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let cid = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let keep = if key == ApiKey::Produce as i16 {
                produce_seen += 1;
                (produce_seen % 3 == 0).then(|| frame.clone())
            } else {
                None
            };
            pending_up
                .lock()
                .expect("lock")
                .insert(cid, (key, version, keep));
            if s_write
                .write_all(&(frame.len() as i32).to_be_bytes())
                .is_err()
                || s_write.write_all(&frame).is_err()
            {
                return;
            }
        }
        let _ = s_write.shutdown(std::net::Shutdown::Both);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut side: Option<TcpStream> = None;
    while let Ok(frame) = read_frame(&mut s_read) {
        let cid = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        if c_write
            .write_all(&(frame.len() as i32).to_be_bytes())
            .is_err()
            || c_write.write_all(&frame).is_err()
        {
            return;
        }
        let entry = pending.lock().expect("lock").remove(&cid);
        if let Some((_, version, Some(request))) = entry {
            let side = side.get_or_insert_with(|| {
                TcpStream::connect(("127.0.0.1", upstream)).expect("side connection")
            });
            let replay = roundtrip(side, &request).expect("replay roundtrip");
            stats.replayed.fetch_add(1, Ordering::SeqCst);
            let original = base_offsets(&frame, version);
            let again = base_offsets(&replay, version);
            if original == again && original.iter().all(|(_, e, _)| *e == 0) {
                stats.matched.fetch_add(1, Ordering::SeqCst);
            } else {
                stats
                    .mismatches
                    .lock()
                    .expect("lock")
                    .push(format!("{original:?} vs replay {again:?}"));
            }
        }
    }
}

#[test]
fn replayed_produce_requests_are_stored_once_with_their_original_offsets() {
    let proxy_port = free_port();
    let b = Broker::start(
        2,
        &[
            &format!("advertised.listeners=127.0.0.1:{proxy_port}"),
            "log.preallocate.bytes=1048576",
            "num.partitions=4",
        ],
    );
    let stats = Arc::new(ReplayStats::default());
    // The proxy must listen on the advertised port: bind it now (the broker does not use it).
    let actual = start_proxy_on(proxy_port, b.port, stats.clone());
    assert_eq!(actual, proxy_port);

    let n = 100_000usize;
    let partitions = 4;
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{proxy_port}"))
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .set("batch.num.messages", "500")
        .create()
        .expect("producer");
    for i in 0..n {
        let key = format!("{}", i % partitions);
        let value = format!("{i}");
        let partition = (i % partitions) as i32;
        loop {
            match p.send(
                BaseRecord::to("idem")
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
            ) {
                Ok(()) => break,
                Err(_) => {
                    p.poll(Duration::from_millis(5));
                }
            }
        }
        if i % 1000 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(60)).expect("flush");
    drop(p);

    let replayed = stats.replayed.load(Ordering::SeqCst);
    let matched = stats.matched.load(Ordering::SeqCst);
    assert!(replayed >= 5, "the proxy replayed requests ({replayed})");
    let mismatches = stats.mismatches.lock().expect("lock").clone();
    assert!(
        mismatches.is_empty(),
        "replays not answered with the original offsets: {mismatches:?}"
    );
    assert_eq!(matched, replayed);

    // Read everything back: exactly n records, per partition in production order, no gaps.
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "idem-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for part in 0..partitions as i32 {
        tpl.add_partition_offset("idem", part, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut next_value: HashMap<i32, usize> =
        (0..partitions as i32).map(|p| (p, p as usize)).collect();
    let mut next_offset: HashMap<i32, i64> = HashMap::new();
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while total < n {
        assert!(Instant::now() < deadline, "read {total} of {n}");
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            let part = m.partition();
            let v: usize = std::str::from_utf8(m.payload().expect("payload"))
                .expect("utf8")
                .parse()
                .expect("number");
            assert_eq!(
                v, next_value[&part],
                "partition {part}: in order, no duplicate"
            );
            *next_value.get_mut(&part).expect("part") += partitions;
            let o = next_offset.entry(part).or_insert(0);
            assert_eq!(m.offset(), *o, "no gaps");
            *o += 1;
            total += 1;
        }
    }
    for part in 0..partitions as i32 {
        let (_, hi) = c
            .fetch_watermarks("idem", part, Duration::from_secs(5))
            .expect("watermarks");
        assert_eq!(
            hi as usize,
            n / partitions,
            "partition {part} holds each message once"
        );
    }
}

/// A TCP proxy in front of the broker on `port`. Every 3rd Produce request is replayed,
/// unchanged, on a side connection once its real response has come back, and the two answers
/// are compared.
fn start_proxy_on(port: u16, upstream: u16, stats: Arc<ReplayStats>) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy bind");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let stats = stats.clone();
            std::thread::spawn(move || proxy_connection(client, upstream, stats));
        }
    });
    port
}

fn idempotent_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("seq-{}", seq + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode");
    buf.freeze()
}

fn produce_raw(b: &Broker, records: Bytes) -> (i16, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, TopicName};
    let mut c = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(
                kafka_protocol::protocol::StrBytes::from_static_str("idem-raw"),
            ))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let mut resp = common::request(&mut c, ApiKey::Produce, 9, &req);
    let resp = ProduceResponse::decode(&mut resp, 9).expect("produce response");
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A connection with the topic `idem-raw` auto-created through Metadata and a fresh idempotent
/// producer id from InitProducerId.
fn idempotent_connection(port: u16) -> (TcpStream, i64) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, TopicName,
    };
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let md = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(
            kafka_protocol::protocol::StrBytes::from_static_str("idem-raw"),
        )))]));
    let _ = common::request(&mut c, ApiKey::Metadata, 12, &md);
    let mut r = common::request(
        &mut c,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    let init = InitProducerIdResponse::decode(&mut r, 4).expect("init");
    assert_eq!(init.error_code, 0, "InitProducerId");
    (c, init.producer_id.0)
}

#[test]
fn producer_state_survives_clean_restart_and_kill9() {
    use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
    let mut b = Broker::start(2, &["log.preallocate.bytes=1048576"]);
    let (_c, pid) = idempotent_connection(b.port);
    assert!(pid >= 0);

    let mut offsets = Vec::new();
    for i in 0..10 {
        let (code, base) = produce_raw(&b, idempotent_batch(pid, 0, i * 3, 3));
        assert_eq!(code, 0);
        offsets.push(base);
    }
    assert_eq!(offsets, (0..10).map(|i| i * 3).collect::<Vec<i64>>());
    // A gap is refused.
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, 0, 100, 1)).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );

    // Clean restart: the snapshot carries the state.
    assert_eq!(b.stop(), Some(0));
    b.restart();
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, 0, 27, 3)),
        (0, 27),
        "duplicate after clean restart"
    );
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, 0, 30, 3)),
        (0, 30),
        "next batch appends"
    );

    // kill -9: the log after the snapshot is scanned.
    b.kill9();
    b.restart();
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, 0, 30, 3)),
        (0, 30),
        "duplicate after kill -9"
    );
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, 0, 24, 3)),
        (0, 24),
        "older duplicate within five"
    );
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, -1, 33, 3)).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );

    // Producer ids stay unique across restarts.
    let mut c = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    let mut r = common::request(
        &mut c,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000),
    );
    let again = InitProducerIdResponse::decode(&mut r, 4).expect("init");
    assert!(
        again.producer_id.0 > pid,
        "{} after {pid}",
        again.producer_id.0
    );
}

/// Kafka validates a batch before its idempotence check: a retry whose header matches a stored
/// batch (same producer id, epoch and sequence range) but whose records fail the CRC32C check
/// is refused with CORRUPT_MESSAGE and appends nothing; it is never answered as a duplicate.
#[test]
fn corrupt_retry_of_a_stored_batch_is_refused_not_answered_as_duplicate() {
    use shardlog::error_code::ErrorCode;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let b = Broker::start_logging_to(1, &[], log.path());
    let (_c, pid) = idempotent_connection(b.port);

    let batch = idempotent_batch(pid, 0, 0, 3);
    assert_eq!(produce_raw(&b, batch.clone()), (ErrorCode::NONE.code(), 0));
    // Same header, one record byte flipped: the CRC32C no longer matches.
    let mut corrupt = batch.to_vec();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x55;
    assert_eq!(
        produce_raw(&b, Bytes::from(corrupt)),
        (ErrorCode::CORRUPT_MESSAGE.code(), -1),
        "a corrupt retry must be refused, not answered as a duplicate"
    );
    // The intact retry is still the duplicate, and the log holds the batch once.
    assert_eq!(produce_raw(&b, batch), (ErrorCode::NONE.code(), 0));
    assert_eq!(
        produce_raw(&b, idempotent_batch(pid, 0, 3, 1)),
        (ErrorCode::NONE.code(), 3)
    );
    // The refusal is one INFO line in the broker's log (at the default log level).
    if std::env::var_os("RUST_LOG").is_none() {
        let text = std::fs::read_to_string(log.path()).expect("broker log");
        let refusals: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("produce refused"))
            .collect();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(
            refusals[0].contains("INFO") && refusals[0].contains("CORRUPT_MESSAGE"),
            "{}",
            refusals[0]
        );
    }
}
