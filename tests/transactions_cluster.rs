//! Transactions in a three-broker cluster (issue 21): the coordinator of a transactional id is
//! the leader of its `__transaction_state` partition, markers reach partitions led by other
//! brokers (WriteTxnMarkers between brokers), KIP-890's verification crosses brokers (the Java
//! client uses transactions v2), and a kill -9 of the coordinator's broker in the middle of a
//! transaction loses no committed record and aborts the open one after its timeout.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{wait_for, Cluster, Node};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// One request to the broker on `port`; `None` if it could not be made or read.
fn call<Req: kafka_protocol::protocol::Encodable, Resp: Decodable>(
    port: u16,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Option<Resp> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut b = common::request(&mut c, key, version, req);
    Resp::decode(&mut b, version).ok()
}

/// The node coordinating `transactional_id`, as FindCoordinator on `port` answers (`None`
/// while it has none).
fn txn_coordinator(port: u16, transactional_id: &str) -> Option<i32> {
    let req = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![s(transactional_id)]);
    let r: FindCoordinatorResponse = call(port, ApiKey::FindCoordinator, 4, &req)?;
    let c = r.coordinators.first()?;
    (c.error_code == 0).then_some(c.node_id.0)
}

/// The state of `transactional_id` at the broker on `port` (DescribeTransactions), if that
/// broker coordinates it.
fn txn_state(port: u16, transactional_id: &str) -> Option<String> {
    let req = DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![TransactionalId(s(transactional_id))]);
    let r: DescribeTransactionsResponse = call(port, ApiKey::DescribeTransactions, 0, &req)?;
    let st = r.transaction_states.first()?;
    (st.error_code == 0).then(|| st.transaction_state.to_string())
}

/// The latest offset (the high watermark, or with `read_committed` the last stable offset) of
/// a partition at its leader on `port`.
fn latest(port: u16, topic: &str, partition: i32, read_committed: bool) -> Option<i64> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(s(topic)))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(-1)])]);
    let r: ListOffsetsResponse = call(port, ApiKey::ListOffsets, 5, &req)?;
    let p = r.topics.first()?.partitions.first()?;
    (p.error_code == 0).then_some(p.offset)
}

/// The leaders of `topic`'s partitions in Metadata from `port` (empty if unknown).
fn leaders(port: u16, topic: &str) -> Vec<i32> {
    let req = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(s(topic)))),
    ]));
    let Some(r): Option<MetadataResponse> = call(port, ApiKey::Metadata, 9, &req) else {
        return Vec::new();
    };
    let Some(t) = r.topics.first().filter(|t| t.error_code == 0) else {
        return Vec::new();
    };
    let mut ps: Vec<_> = t
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    ps.sort();
    ps.into_iter().map(|(_, l)| l).collect()
}

/// The number of live brokers in Metadata from `port`.
fn brokers(port: u16) -> usize {
    let req = MetadataRequest::default().with_topics(Some(Vec::new()));
    call::<_, MetadataResponse>(port, ApiKey::Metadata, 9, &req).map_or(0, |r| r.brokers.len())
}

fn bootstrap(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(Node::bootstrap)
        .collect::<Vec<_>>()
        .join(",")
}

fn create_topic(nodes: &[Node], name: &str, partitions: i32) {
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(s(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let r: CreateTopicsResponse =
        call(nodes[0].port, ApiKey::CreateTopics, 5, &req).expect("CreateTopics");
    assert_eq!(r.topics[0].error_code, 0, "create {name}: {r:?}");
    wait_for(&format!("{name}'s leaders everywhere"), 20, nodes, || {
        nodes.iter().all(|n| {
            let l = leaders(n.port, name);
            l.len() == partitions as usize && l.iter().all(|&x| x > 0)
        })
    });
}

fn producer(bootstrap: &str, transactional_id: &str, timeout_ms: u32) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("message.timeout.ms", timeout_ms.min(20_000).to_string())
        .create()
        .expect("producer")
}

/// Sends `prefix0..` to every partition of `topic` (`per` records each) and flushes.
fn send(p: &BaseProducer, topic: &str, partitions: i32, prefix: &str, per: usize) {
    for part in 0..partitions {
        for i in 0..per {
            let v = format!("{prefix}{part}-{i}");
            p.send(
                BaseRecord::<str, str>::to(topic)
                    .partition(part)
                    .key(&v)
                    .payload(&v),
            )
            .expect("enqueue");
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn values(topic_partitions: i32, prefix: &str, per: usize) -> BTreeSet<String> {
    (0..topic_partitions)
        .flat_map(|p| (0..per).map(move |i| format!("{prefix}{p}-{i}")))
        .collect()
}

/// Every value of `topic` read with the isolation level, until `want` values came or
/// nothing new arrived for 2 s (at most 40 s). Duplicates are kept (and checked by callers).
fn read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    want: usize,
) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(40);
    let mut quiet_since = Instant::now();
    while Instant::now() < end
        && got.len() < want
        && quiet_since.elapsed() < Duration::from_millis(if got.is_empty() { 10_000 } else { 2000 })
    {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            quiet_since = Instant::now();
        }
    }
    // Anything past `want` (a duplicate) arrives within a short poll too.
    let extra_end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < extra_end {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    got
}

/// Exactly the values of `want`, each once.
fn assert_exactly(got: &[String], want: &BTreeSet<String>, what: &str) {
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(set.len(), got.len(), "{what}: duplicates in {got:?}");
    assert_eq!(&set, want, "{what}");
}

/// Runs the Java client's `txn` scenario (tests/clients) against `bootstrap` with `tag`.
fn java_txn(bootstrap: &str, tag: &str) -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let cp = "tests/clients/java/target/shardlog-clients.jar:tests/clients/java/target/lib/*";
    let mut child = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp", cp])
        .args(["dev.shardlog.clients.Main", "txn", bootstrap, tag])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start java: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(150);
    while child.try_wait().map_err(|e| e.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("java txn: timed out".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "java txn: {:?}\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn transactions_span_brokers_and_survive_a_coordinator_kill9() {
    let mut cluster = Cluster::start(
        3,
        &["transaction.abort.timed.out.transaction.cleanup.interval.ms=500"],
    );
    let nodes = &mut cluster.nodes;
    wait_for("three brokers in Metadata on every node", 60, nodes, || {
        nodes.iter().all(|n| brokers(n.port) == 3)
    });
    let boot = bootstrap(nodes);
    let topic = "txc";
    create_topic(nodes, topic, 3);
    let led: BTreeSet<i32> = leaders(nodes[0].port, topic).into_iter().collect();
    assert_eq!(led.len(), 3, "each broker leads a partition of {topic}");

    // librdkafka: commit, abort, commit over partitions on three brokers. Its coordinator is
    // one broker; the markers of two partitions go to the others with WriteTxnMarkers.
    let p = producer(&boot, "tx-spread", 30_000);
    p.init_transactions(Duration::from_secs(30)).expect("init");
    assert!(txn_coordinator(nodes[0].port, "tx-spread").is_some());
    for (prefix, commit) in [("c1-", true), ("ab-", false), ("c2-", true)] {
        p.begin_transaction().expect("begin");
        send(&p, topic, 3, prefix, 4);
        if commit {
            p.commit_transaction(Duration::from_secs(30))
                .expect("commit");
        } else {
            p.abort_transaction(Duration::from_secs(30)).expect("abort");
        }
    }
    drop(p);
    let mut committed = values(3, "c1-", 4);
    committed.extend(values(3, "c2-", 4));
    let mut all = committed.clone();
    all.extend(values(3, "ab-", 4));
    assert_exactly(
        &read(&boot, topic, 3, "read_committed", committed.len()),
        &committed,
        "read_committed after commit/abort/commit",
    );
    assert_exactly(
        &read(&boot, topic, 3, "read_uncommitted", all.len()),
        &all,
        "read_uncommitted after commit/abort/commit",
    );

    // The Java client (transactions v2: Produce v12 adds the partition, verified by the
    // partition's leader with the coordinator). Tags are tried until the transactional id's
    // coordinator is not its topic's leader, so the check crosses brokers at least once.
    let mut crossed = false;
    for tag in ["java", "java2", "java3", "java4", "java5"] {
        if let Err(e) = java_txn(&nodes[1].bootstrap(), tag) {
            let logs: Vec<String> = nodes.iter().map(|n| n.log()).collect();
            panic!("{e}\n{}", logs.join("\n"));
        }
        let leader = leaders(nodes[0].port, &format!("t-{tag}-txn"));
        let coordinator = txn_coordinator(nodes[0].port, &format!("tx-{tag}"));
        if coordinator.is_some() && leader.first().copied() != coordinator {
            crossed = true;
            break;
        }
    }
    assert!(crossed, "no Java run had its coordinator on another broker");

    // kill -9 of the coordinator's broker in the middle of a transaction.
    let id = "tx-crash";
    let p = producer(&boot, id, 6000);
    p.init_transactions(Duration::from_secs(30)).expect("init");
    p.begin_transaction().expect("begin");
    send(&p, topic, 3, "k1-", 3);
    p.commit_transaction(Duration::from_secs(30))
        .expect("commit");
    p.begin_transaction().expect("begin");
    send(&p, topic, 3, "open-", 3);
    let coordinator = txn_coordinator(nodes[0].port, id).expect("coordinator");
    let victim = nodes
        .iter()
        .position(|n| n.id == coordinator)
        .expect("the coordinator is a node");
    // Every partition's LSO holds at the open transaction.
    for part in 0..3 {
        let leader = leaders(nodes[0].port, topic)[part as usize];
        let port = nodes[leader as usize - 1].port;
        let (hw, lso) = (
            latest(port, topic, part, false).expect("high watermark"),
            latest(port, topic, part, true).expect("LSO"),
        );
        assert!(lso < hw, "partition {part}: LSO {lso} below HW {hw}");
    }
    nodes[victim].kill9();
    drop(p); // the client goes away too: only the timeout can end its transaction
    let survivor = nodes[(victim + 1) % 3].port;
    // A restart is accepted once the old session has run out (the broker is fenced).
    wait_for("the killed broker fenced", 30, nodes, || {
        brokers(survivor) == 2
    });
    nodes[victim].spawn();
    wait_for("the restarted coordinator serving again", 60, nodes, || {
        txn_coordinator(survivor, id) == Some(coordinator)
            && leaders(survivor, topic).iter().all(|&l| l > 0)
    });
    // Its state was replayed: the open transaction times out and is aborted on every
    // partition (markers to the other brokers), and the abort is recorded complete.
    let port = nodes[victim].port;
    wait_for(
        "the open transaction aborted by its timeout",
        60,
        nodes,
        || txn_state(port, id).as_deref() == Some("CompleteAbort"),
    );
    for part in 0..3 {
        let leader = leaders(survivor, topic)[part as usize];
        let lport = nodes[leader as usize - 1].port;
        assert_eq!(
            latest(lport, topic, part, true),
            latest(lport, topic, part, false),
            "partition {part}: the LSO reached the high watermark"
        );
    }
    committed.extend(values(3, "k1-", 3));
    let got = read(&boot, topic, 3, "read_committed", committed.len());
    assert_exactly(
        &got,
        &committed,
        "read_committed after the coordinator's kill -9",
    );
    // The id carries on with a new producer.
    let p = producer(&boot, id, 6000);
    p.init_transactions(Duration::from_secs(30))
        .expect("init after the restart");
    p.begin_transaction().expect("begin");
    send(&p, topic, 3, "after-", 2);
    p.commit_transaction(Duration::from_secs(30))
        .expect("commit after the restart");
    committed.extend(values(3, "after-", 2));
    assert_exactly(
        &read(&boot, topic, 3, "read_committed", committed.len()),
        &committed,
        "read_committed after the id carried on",
    );
}
