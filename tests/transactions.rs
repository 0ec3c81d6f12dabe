//! Transactions (issue 21) against the real broker: Kafka's error codes for bad transactional
//! input with nothing written; a broker killed with -9 in the middle of a transaction keeps
//! the last stable offset and aborts the open transaction after its timeout; a librdkafka
//! consume-transform-produce loop with its offsets inside the transactions produces every
//! output exactly once across a crash of the loop.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Broker;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use shardlog::error_code::ErrorCode;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn call<Req: kafka_protocol::protocol::Encodable, Resp: Decodable>(
    c: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut b = common::request(c, key, version, req);
    Resp::decode(&mut b, version).unwrap_or_else(|e| panic!("{key:?} v{version} response: {e}"))
}

fn code(c: i16) -> ErrorCode {
    ErrorCode::from_code(c)
}

fn connect(b: &Broker) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    c
}

fn create_topic(c: &mut TcpStream, name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = call(c, ApiKey::CreateTopics, 5, &req);
    assert_eq!(
        code(resp.topics[0].error_code),
        ErrorCode::NONE,
        "create {name}"
    );
}

fn init_producer_id(c: &mut TcpStream, id: &str, timeout_ms: i32) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    call(c, ApiKey::InitProducerId, 4, &req)
}

fn add_partitions(
    c: &mut TcpStream,
    version: i16,
    id: &str,
    pid: i64,
    epoch: i16,
    topic: &str,
) -> ErrorCode {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(id)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![0])]);
    let resp: AddPartitionsToTxnResponse = call(c, ApiKey::AddPartitionsToTxn, version, &req);
    code(resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)
}

fn end_txn(c: &mut TcpStream, id: &str, pid: i64, epoch: i16, commit: bool) -> ErrorCode {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(id)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    let resp: EndTxnResponse = call(c, ApiKey::EndTxn, 3, &req);
    code(resp.error_code)
}

fn describe_txn(c: &mut TcpStream, id: &str) -> (String, usize) {
    let req =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
    let resp: DescribeTransactionsResponse = call(c, ApiKey::DescribeTransactions, 0, &req);
    let st = &resp.transaction_states[0];
    assert_eq!(code(st.error_code), ErrorCode::NONE, "describe {id}");
    (st.transaction_state.to_string(), st.topics.len())
}

/// The latest offset of partition 0 of `topic`: the high watermark, or with `read_committed`
/// the last stable offset.
fn latest(c: &mut TcpStream, topic: &str, partition: i32, read_committed: bool) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let resp: ListOffsetsResponse = call(c, ApiKey::ListOffsets, 5, &req);
    let p = &resp.topics[0].partitions[0];
    assert_eq!(code(p.error_code), ErrorCode::NONE, "list offsets {topic}");
    p.offset
}

#[test]
fn bad_transactional_input_gets_kafkas_codes_and_writes_nothing() {
    let b = Broker::start(2, &["transaction.max.timeout.ms=60000"]);
    let mut c = connect(&b);
    create_topic(&mut c, "t-bad", 1);

    // EndTxn for a transactional id the coordinator never saw.
    assert_eq!(
        end_txn(&mut c, "tx-unknown", 1, 0, true),
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
    );

    // Timeouts outside (0, transaction.max.timeout.ms].
    for bad in [0, -5, 60_001] {
        let r = init_producer_id(&mut c, "tx-bad", bad);
        assert_eq!(
            code(r.error_code),
            ErrorCode::INVALID_TRANSACTION_TIMEOUT,
            "{bad}"
        );
    }

    // Two InitProducerIds: the second bumps the epoch, fencing epoch 0.
    let first = init_producer_id(&mut c, "tx-bad", 30_000);
    assert_eq!(code(first.error_code), ErrorCode::NONE);
    let second = init_producer_id(&mut c, "tx-bad", 30_000);
    assert_eq!(code(second.error_code), ErrorCode::NONE);
    assert_eq!(second.producer_id, first.producer_id);
    assert_eq!(second.producer_epoch, first.producer_epoch + 1);
    let pid = second.producer_id.0;
    let stale = first.producer_epoch;

    // AddPartitionsToTxn with the stale epoch: PRODUCER_FENCED (v2+), INVALID_PRODUCER_EPOCH
    // for clients from before KIP-588 (v0-v1); another producer id: INVALID_PRODUCER_ID_MAPPING.
    assert_eq!(
        add_partitions(&mut c, 3, "tx-bad", pid, stale, "t-bad"),
        ErrorCode::PRODUCER_FENCED
    );
    assert_eq!(
        add_partitions(&mut c, 1, "tx-bad", pid, stale, "t-bad"),
        ErrorCode::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        add_partitions(
            &mut c,
            3,
            "tx-bad",
            pid + 1000,
            second.producer_epoch,
            "t-bad"
        ),
        ErrorCode::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        add_partitions(
            &mut c,
            3,
            "tx-bad",
            pid,
            second.producer_epoch,
            "no-such-topic"
        ),
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    // EndTxn with no transaction, and with the stale epoch.
    assert_eq!(
        end_txn(&mut c, "tx-bad", pid, second.producer_epoch, true),
        ErrorCode::INVALID_TXN_STATE
    );
    assert_eq!(
        end_txn(&mut c, "tx-bad", pid, stale, false),
        ErrorCode::PRODUCER_FENCED
    );
    // Nothing was added: the transaction is still Empty with no partitions.
    assert_eq!(describe_txn(&mut c, "tx-bad"), ("Empty".to_string(), 0));

    // TxnOffsetCommit naming a generation the group does not have.
    let req = TxnOffsetCommitRequest::default()
        .with_transactional_id(TransactionalId(s("tx-bad")))
        .with_group_id(GroupId(s("g-bad")))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(second.producer_epoch)
        .with_generation_id(3)
        .with_member_id(s("member-x"))
        .with_topics(vec![TxnOffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t-bad")))
            .with_partitions(vec![TxnOffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(7)])]);
    let resp: TxnOffsetCommitResponse = call(&mut c, ApiKey::TxnOffsetCommit, 3, &req);
    assert_eq!(
        code(resp.topics[0].partitions[0].error_code),
        ErrorCode::ILLEGAL_GENERATION
    );
    // Nothing written: no offset for the group, and every __consumer_offsets partition is
    // empty (nothing else in this test commits).
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(s("g-bad")))
        .with_topics(Some(vec![
            kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                .with_name(TopicName(s("t-bad")))
                .with_partition_indexes(vec![0]),
        ]));
    let resp: OffsetFetchResponse = call(&mut c, ApiKey::OffsetFetch, 7, &req);
    assert_eq!(resp.topics[0].partitions[0].committed_offset, -1);
    for p in 0..8 {
        assert_eq!(
            latest(&mut c, "__consumer_offsets", p, false),
            0,
            "offsets partition {p}"
        );
    }
    // And no data partition got a record or a marker.
    assert_eq!(latest(&mut c, "t-bad", 0, false), 0);
    let log = b.log();
    assert!(
        log.contains("transactional request refused") && log.contains("PRODUCER_FENCED"),
        "the broker logs the refusals"
    );
}

fn producer(b: &Broker, transactional_id: &str, timeout_ms: u32) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("message.timeout.ms", timeout_ms.min(15_000).to_string())
        .create()
        .expect("producer")
}

fn send(p: &BaseProducer, topic: &str, partition: i32, values: &[String]) {
    for v in values {
        p.send(
            BaseRecord::<str, str>::to(topic)
                .partition(partition)
                .key(v)
                .payload(v),
        )
        .expect("enqueue");
    }
    p.flush(Duration::from_secs(20)).expect("flush");
}

/// Every value of `topic` (all `partitions`) read with the isolation level, until nothing
/// new arrived for 1 s (at most 20 s).
fn read_values(b: &Broker, topic: &str, partitions: i32, isolation: &str) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    let mut quiet_since = Instant::now();
    while Instant::now() < end
        && quiet_since.elapsed() < Duration::from_millis(if got.is_empty() { 5000 } else { 1000 })
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            quiet_since = Instant::now();
        }
    }
    got
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn kill9_mid_transaction_keeps_the_lso_and_the_timeout_aborts() {
    let mut b = Broker::start(
        2,
        &["transaction.abort.timed.out.transaction.cleanup.interval.ms=500"],
    );
    let mut c = connect(&b);
    create_topic(&mut c, "t-crash", 1);
    let p = producer(&b, "tx-crash", 8000);
    p.init_transactions(Duration::from_secs(20)).expect("init");
    p.begin_transaction().expect("begin");
    send(&p, "t-crash", 0, &values("c-", 10));
    p.commit_transaction(Duration::from_secs(20))
        .expect("commit");
    p.begin_transaction().expect("begin");
    send(&p, "t-crash", 0, &values("open-", 10));
    // Offsets 0-9 committed, 10 the COMMIT marker, 11-20 the open transaction.
    assert_eq!(latest(&mut c, "t-crash", 0, false), 21);
    assert_eq!(latest(&mut c, "t-crash", 0, true), 11);
    let started = Instant::now();
    drop(c);
    b.kill9();
    b.restart();
    let mut c = connect(&b);
    // The open transaction survived the crash: the LSO holds (while its timeout has not run
    // out; the producer state is rebuilt from the log).
    if started.elapsed() < Duration::from_secs(7) {
        assert_eq!(latest(&mut c, "t-crash", 0, true), 11, "LSO after kill -9");
    }
    assert_eq!(
        read_values(&b, "t-crash", 1, "read_committed"),
        values("c-", 10)
    );
    // The coordinator replayed the transaction; its timeout aborts it (ABORT marker at 21).
    let deadline = Instant::now() + Duration::from_secs(30);
    while latest(&mut c, "t-crash", 0, true) != 22 {
        assert!(
            Instant::now() < deadline,
            "the open transaction was not aborted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(latest(&mut c, "t-crash", 0, false), 22);
    // The coordinator records the abort complete once the marker is durable.
    while describe_txn(&mut c, "tx-crash") != ("CompleteAbort".to_string(), 0) {
        assert!(Instant::now() < deadline, "the abort was not completed");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(p);
    // A new producer with the same id carries on; read_committed sees exactly the commits.
    let p = producer(&b, "tx-crash", 8000);
    p.init_transactions(Duration::from_secs(20))
        .expect("init after restart");
    p.begin_transaction().expect("begin");
    send(&p, "t-crash", 0, &values("after-", 3));
    p.commit_transaction(Duration::from_secs(20))
        .expect("commit");
    let mut want = values("c-", 10);
    want.extend(values("after-", 3));
    assert_eq!(read_values(&b, "t-crash", 1, "read_committed"), want);
    let mut all = values("c-", 10);
    all.extend(values("open-", 10));
    all.extend(values("after-", 3));
    assert_eq!(read_values(&b, "t-crash", 1, "read_uncommitted"), all);
}

/// One instance of a consume-transform-produce loop: reads `in` in group `ctp`, writes
/// `out-<value>` to `out` and commits the consumed offsets inside each transaction. Stops
/// after `batches` transactions (leaving the next one open and unfinished when `crash`), or
/// when `in` has nothing more for 3 s.
fn ctp_instance(b: &Broker, batches: usize, crash: bool) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "ctp")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&["in"]).expect("subscribe");
    let p = producer(b, "ctp-loop", 10_000);
    p.init_transactions(Duration::from_secs(30)).expect("init");
    let mut done = 0;
    let mut idle_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(40);
    while done < batches && Instant::now() < deadline {
        let mut msgs = Vec::new();
        while msgs.len() < 25 {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => msgs.push((
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                )),
                Some(Err(e)) => panic!("consume: {e}"),
                None => break,
            }
        }
        if msgs.is_empty() {
            let assigned = consumer.assignment().map_or(0, |a| a.count());
            if idle_since.elapsed() > Duration::from_secs(3) && assigned > 0 {
                break;
            }
            continue;
        }
        idle_since = Instant::now();
        p.begin_transaction().expect("begin");
        for (_, _, v) in &msgs {
            let out = format!("out-{v}");
            p.send(BaseRecord::<str, str>::to("out").key(&out).payload(&out))
                .expect("enqueue");
        }
        let mut next: HashMap<i32, i64> = HashMap::new();
        for (part, off, _) in &msgs {
            let e = next.entry(*part).or_insert(0);
            *e = (*e).max(off + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for (part, off) in &next {
            tpl.add_partition_offset("in", *part, Offset::Offset(*off))
                .expect("tpl");
        }
        let cgm = consumer.group_metadata().expect("group metadata");
        p.send_offsets_to_transaction(&tpl, &cgm, Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("send offsets: {e}\n{}", b.log()));
        if crash && done + 1 == batches {
            // The process dies here: the transaction stays open, its outputs written.
            p.flush(Duration::from_secs(10)).expect("flush");
            std::mem::forget(p);
            return done;
        }
        p.commit_transaction(Duration::from_secs(20))
            .expect("commit");
        done += 1;
    }
    done
}

#[test]
fn consume_transform_produce_is_exactly_once_across_a_crash() {
    let b = Broker::start(
        2,
        &[
            "group.initial.rebalance.delay.ms=0",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=500",
        ],
    );
    let mut c = connect(&b);
    create_topic(&mut c, "in", 2);
    create_topic(&mut c, "out", 2);
    let input: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let inputs = values("v-", 200);
    for (i, v) in inputs.iter().enumerate() {
        input
            .send(
                BaseRecord::<str, str>::to("in")
                    .partition((i % 2) as i32)
                    .key(v)
                    .payload(v),
            )
            .expect("enqueue");
    }
    input.flush(Duration::from_secs(20)).expect("flush input");

    // The first instance commits 3 transactions, then dies inside the 4th.
    assert_eq!(ctp_instance(&b, 4, true), 3);
    // The second fences it (its open transaction is aborted) and finishes the input.
    ctp_instance(&b, usize::MAX, false);

    let mut got = read_values(&b, "out", 2, "read_committed");
    got.sort();
    let mut want: Vec<String> = inputs.iter().map(|v| format!("out-{v}")).collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "each input's output exactly once");
    assert_eq!(got, want);
    // The aborted transaction's outputs are in the log, visible without isolation.
    assert!(read_values(&b, "out", 2, "read_uncommitted").len() > want.len());
}

/// A transactional batch of one record from `pid` at `epoch`, sequence `seq`.
fn txn_records(pid: i64, epoch: i16, seq: i32, value: &str) -> bytes::Bytes {
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let r = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 1,
        key: None,
        value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&r],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn produce_txn(
    c: &mut TcpStream,
    version: i16,
    id: &str,
    topic: &str,
    records: bytes::Bytes,
) -> (ErrorCode, i64) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let req = ProduceRequest::default()
        .with_transactional_id(Some(TransactionalId(s(id))))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let resp: ProduceResponse = call(c, ApiKey::Produce, version, &req);
    let p = &resp.responses[0].partition_responses[0];
    (code(p.error_code), p.base_offset)
}

#[test]
fn transactions_v2_add_by_produce_and_bump_the_epoch_per_transaction() {
    let b = Broker::start(2, &[]);
    let mut c = connect(&b);
    // The feature Kafka 4.x clients read to use transactions v2.
    let versions: ApiVersionsResponse = call(
        &mut c,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default(),
    );
    let tv = versions
        .finalized_features
        .iter()
        .find(|f| f.name.as_str() == "transaction.version")
        .expect("transaction.version finalized");
    assert_eq!(tv.max_version_level, 2);

    create_topic(&mut c, "t-v2", 1);
    let init = init_producer_id(&mut c, "tx-v2", 30_000);
    assert_eq!(code(init.error_code), ErrorCode::NONE);
    let (pid, e0) = (init.producer_id.0, init.producer_epoch);
    // Produce v11 of a partition never added: refused by verification, nothing appended.
    assert_eq!(
        produce_txn(&mut c, 11, "tx-v2", "t-v2", txn_records(pid, e0, 0, "a")).0,
        ErrorCode::INVALID_TXN_STATE
    );
    assert_eq!(latest(&mut c, "t-v2", 0, false), 0);
    // Produce v12 adds the partition itself.
    assert_eq!(
        produce_txn(&mut c, 12, "tx-v2", "t-v2", txn_records(pid, e0, 0, "a")),
        (ErrorCode::NONE, 0)
    );
    assert_eq!(describe_txn(&mut c, "tx-v2"), ("Ongoing".to_string(), 1));
    assert_eq!(
        latest(&mut c, "t-v2", 0, true),
        0,
        "the open transaction holds the LSO"
    );
    // EndTxn v5 commits and answers the bumped epoch; a retry with the old one is answered
    // as done.
    let end = |c: &mut TcpStream, epoch: i16| -> EndTxnResponse {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx-v2")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        call(c, ApiKey::EndTxn, 5, &req)
    };
    let r = end(&mut c, e0);
    assert_eq!(code(r.error_code), ErrorCode::NONE);
    assert_eq!((r.producer_id.0, r.producer_epoch), (pid, e0 + 1));
    let deadline = Instant::now() + Duration::from_secs(10);
    while describe_txn(&mut c, "tx-v2").0 != "CompleteCommit" {
        assert!(Instant::now() < deadline, "the commit did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(code(end(&mut c, e0).error_code), ErrorCode::NONE, "retry");
    // The COMMIT marker (offset 1) carries the bumped epoch: the LSO passed it.
    assert_eq!(latest(&mut c, "t-v2", 0, true), 2);
    // The old epoch is fenced; the new one starts the next transaction.
    assert_eq!(
        produce_txn(&mut c, 12, "tx-v2", "t-v2", txn_records(pid, e0, 1, "late")).0,
        ErrorCode::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        produce_txn(
            &mut c,
            12,
            "tx-v2",
            "t-v2",
            txn_records(pid, e0 + 1, 0, "b")
        ),
        (ErrorCode::NONE, 2)
    );
    let req = DescribeProducersRequest::default().with_topics(vec![
        kafka_protocol::messages::describe_producers_request::TopicRequest::default()
            .with_name(TopicName(s("t-v2")))
            .with_partition_indexes(vec![0]),
    ]);
    let resp: DescribeProducersResponse = call(&mut c, ApiKey::DescribeProducers, 0, &req);
    let p = &resp.topics[0].partitions[0].active_producers[0];
    assert_eq!(
        (
            p.producer_id.0,
            p.producer_epoch,
            p.current_txn_start_offset
        ),
        (pid, i32::from(e0) + 1, 2)
    );
}

/// DescribeTransactions' error code for `id` (TRANSACTIONAL_ID_NOT_FOUND once forgotten).
fn describe_code(c: &mut TcpStream, id: &str) -> ErrorCode {
    let req =
        DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
    let resp: DescribeTransactionsResponse = call(c, ApiKey::DescribeTransactions, 0, &req);
    code(resp.transaction_states[0].error_code)
}

/// `transactional.id.expiration.ms`: an id with no transaction in progress is forgotten once
/// it had no state change for that long (its tombstone survives a kill -9), one with a
/// transaction in progress is kept, and a forgotten id starts afresh.
#[test]
fn idle_transactional_ids_expire_and_stay_expired_after_kill9() {
    let mut b = Broker::start(
        1,
        &[
            "transactional.id.expiration.ms=1500",
            "transaction.remove.expired.transaction.cleanup.interval.ms=200",
        ],
    );
    let mut c = connect(&b);
    create_topic(&mut c, "t-exp", 1);
    let old = init_producer_id(&mut c, "tx-idle", 10_000);
    assert_eq!(code(old.error_code), ErrorCode::NONE);
    let busy = init_producer_id(&mut c, "tx-busy", 60_000);
    assert_eq!(code(busy.error_code), ErrorCode::NONE);
    assert_eq!(
        add_partitions(
            &mut c,
            3,
            "tx-busy",
            busy.producer_id.0,
            busy.producer_epoch,
            "t-exp"
        ),
        ErrorCode::NONE
    );
    assert_eq!(describe_code(&mut c, "tx-idle"), ErrorCode::NONE);
    let deadline = Instant::now() + Duration::from_secs(20);
    while describe_code(&mut c, "tx-idle") != ErrorCode::TRANSACTIONAL_ID_NOT_FOUND {
        assert!(Instant::now() < deadline, "tx-idle never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The ongoing transaction is older than the expiration too, and kept.
    assert_eq!(describe_txn(&mut c, "tx-busy"), ("Ongoing".to_string(), 1));
    drop(c);
    b.kill9();
    b.restart();
    let mut c = connect(&b);
    assert_eq!(
        describe_code(&mut c, "tx-idle"),
        ErrorCode::TRANSACTIONAL_ID_NOT_FOUND,
        "the tombstone was replayed"
    );
    assert_eq!(describe_txn(&mut c, "tx-busy"), ("Ongoing".to_string(), 1));
    let again = init_producer_id(&mut c, "tx-idle", 10_000);
    assert_eq!(code(again.error_code), ErrorCode::NONE);
    assert_eq!(again.producer_epoch, 0, "a forgotten id starts afresh");
    assert_ne!(again.producer_id, old.producer_id);
}

/// Transactions v2: the Produce that opens a producer's next transaction right after EndTxn v5
/// was answered (its markers and CompleteCommit may still be being written) waits on the
/// broker for the previous transaction to complete (`add.partitions.to.txn.retry.backoff.max.ms`)
/// and is appended, instead of the client retrying after its backoff, as Kafka 4.x brokers do.
#[test]
fn transactions_v2_next_transaction_waits_for_the_previous_to_complete() {
    // A bound far above any completion here, so the answer does not depend on the machine.
    let b = Broker::start(1, &["add.partitions.to.txn.retry.backoff.max.ms=30000"]);
    let mut c = connect(&b);
    create_topic(&mut c, "t-next", 1);
    let init = init_producer_id(&mut c, "tx-next", 30_000);
    assert_eq!(code(init.error_code), ErrorCode::NONE);
    let (pid, mut epoch) = (init.producer_id.0, init.producer_epoch);
    let mut next_offset = 0;
    for round in 0..5 {
        let (err, base) = produce_txn(
            &mut c,
            12,
            "tx-next",
            "t-next",
            txn_records(pid, epoch, 0, &format!("r{round}")),
        );
        assert_eq!(
            (err, base),
            (ErrorCode::NONE, next_offset),
            "round {round}: the produce opening the transaction"
        );
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx-next")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(true);
        let r: EndTxnResponse = call(&mut c, ApiKey::EndTxn, 5, &req);
        assert_eq!(code(r.error_code), ErrorCode::NONE, "round {round}: commit");
        epoch = r.producer_epoch;
        // The record and its COMMIT marker.
        next_offset += 2;
    }
    // The last COMMIT marker follows its EndTxn answer: the LSO reaches the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    while latest(&mut c, "t-next", 0, true) != next_offset {
        assert!(
            Instant::now() < deadline,
            "the last commit did not complete"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(latest(&mut c, "t-next", 0, false), next_offset);
}

/// A read_committed Fetch parked on a partition whose last stable offset is held by an open
/// transaction is answered when the COMMIT marker moves the LSO, not at its `max_wait_ms`: the
/// marker's append wakes it like any append past the high watermark.
#[test]
fn a_parked_read_committed_fetch_is_woken_by_the_commit_marker() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let b = Broker::start(1, &[]);
    let mut c = connect(&b);
    create_topic(&mut c, "t-wake", 1);
    let init = init_producer_id(&mut c, "tx-wake", 30_000);
    assert_eq!(code(init.error_code), ErrorCode::NONE);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert_eq!(
        produce_txn(
            &mut c,
            12,
            "tx-wake",
            "t-wake",
            txn_records(pid, epoch, 0, "w")
        ),
        (ErrorCode::NONE, 0)
    );
    assert_eq!(
        latest(&mut c, "t-wake", 0, true),
        0,
        "the open transaction holds the LSO"
    );
    // Far above how long the commit takes here: an answer before it is a wake-up.
    const MAX_WAIT_MS: i32 = 30_000;
    let mut f = connect(&b);
    f.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let fetcher = std::thread::spawn(move || {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(s("t-wake")))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(0)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(1 << 20)])]);
        let sent = Instant::now();
        let resp: FetchResponse = call(&mut f, ApiKey::Fetch, 11, &req);
        (sent.elapsed(), resp)
    });
    // Let the Fetch park (it is answered at once only if something is readable).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        end_txn(&mut c, "tx-wake", pid, epoch, true),
        ErrorCode::NONE,
        "commit"
    );
    let (took, resp) = fetcher.join().expect("fetch thread");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(code(p.error_code), ErrorCode::NONE);
    assert!(
        p.records.as_ref().is_some_and(|r| !r.is_empty()),
        "the committed record is returned"
    );
    assert!(p.last_stable_offset >= 1, "LSO {}", p.last_stable_offset);
    assert!(
        took < Duration::from_millis(MAX_WAIT_MS as u64 / 2),
        "answered after {took:?}: the marker did not wake the parked fetch"
    );
}
