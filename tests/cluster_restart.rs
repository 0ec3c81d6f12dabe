//! Restarts within a broker's session (issue 19's chaos findings), with real broker processes:
//! a broker killed with SIGKILL and started again before the active controller has fenced it
//! is refused with DUPLICATE_BROKER_REGISTRATION, retries as Kafka's broker does, and is back
//! (registered, unfenced, leading its partitions with their data) within about
//! `broker.session.timeout.ms`; the same for the node that is the active controller, which
//! openraft 0.9 restores as the leader of its old term at once.

mod common;

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// The session of these tests: long enough that a restart lands well inside it.
const SESSION_TIMEOUT_MS: u64 = 6000;

/// What a broker's Metadata v12 answer says: live brokers, the active controller, and the
/// leader of each partition of the topic asked for.
#[derive(Debug)]
struct View {
    brokers: BTreeSet<i32>,
    controller: i32,
    leaders: Vec<i32>,
}

/// Metadata v12 for `topic` from the broker on `port`; `None` when it does not answer.
fn view(port: u16, topic: &str) -> Option<View> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{
        ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_string()))))]));
    let key = ApiKey::Metadata;
    let mut buf = bytes::BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(12)
        .with_correlation_id(1)
        .encode(&mut buf, key.request_header_version(12))
        .ok()?;
    req.encode(&mut buf, 12).ok()?;
    let frame = common::roundtrip(&mut s, &buf).ok()?;
    let mut b = bytes::Bytes::from(frame);
    ResponseHeader::decode(&mut b, key.response_header_version(12)).ok()?;
    let r = MetadataResponse::decode(&mut b, 12).ok()?;
    let mut leaders = Vec::new();
    if let Some(t) = r.topics.first() {
        let mut ps: Vec<_> = t.partitions.iter().collect();
        ps.sort_by_key(|p| p.partition_index);
        leaders = ps.iter().map(|p| p.leader_id.0).collect();
    }
    Some(View {
        brokers: r.brokers.iter().map(|b| b.node_id.0).collect(),
        controller: r.controller_id.0,
        leaders,
    })
}

/// Creates `topic` with partition `i` on broker `i + 1` only.
fn create_spread(bootstrap: &str, topic: &str, brokers: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let assignment: Vec<Vec<i32>> = (1..=brokers).map(|b| vec![b]).collect();
    let refs: Vec<&[i32]> = assignment.iter().map(Vec::as_slice).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = futures_lite::future::block_on(admin.create_topics(
        &[NewTopic::new(
            topic,
            brokers,
            TopicReplication::Variable(&refs),
        )],
        &opts,
    ))
    .expect("create_topics");
    assert!(results[0].is_ok(), "{results:?}");
}

/// Produces `values` to `topic`/`partition` with acks=all; every one must be acknowledged.
fn produce(bootstrap: &str, topic: &str, partition: i32, values: &[String]) {
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for v in values {
        p.send(
            BaseRecord::<(), String>::to(topic)
                .partition(partition)
                .payload(v),
        )
        .map_err(|(e, _)| e)
        .expect("queued");
    }
    p.flush(Duration::from_secs(30))
        .expect("every record acknowledged");
}

/// Reads `topic`/`partition` from its start until `n` records came (at most 30 s).
fn consume(bootstrap: &str, topic: &str, partition: i32, n: usize) -> Vec<String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "restart-check")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .expect("tpl");
    c.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out
}

/// The term of the last "acting as the active controller" line of a node's log.
fn last_term_led(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("acting as the active controller"))?;
    // The log is coloured: drop the escape sequences (ESC [ ... m) first.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(ch);
        }
    }
    let line = plain;
    let at = line.find("term=")? + "term=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn values(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

/// Starts a 3-node cluster with `extra` properties and waits until every node is in Metadata
/// and `topic` (one partition per broker) is led everywhere, with 20 records per partition.
fn cluster_with_data(extra: &[&str], topic: &str) -> Cluster {
    let session = format!("broker.session.timeout.ms={SESSION_TIMEOUT_MS}");
    let mut props = vec![session.as_str()];
    props.extend_from_slice(extra);
    let c = Cluster::start(3, &props);
    let all: BTreeSet<i32> = [1, 2, 3].into();
    c.wait_for("three live brokers", 60, || {
        view(c.nodes[0].port, "none").is_some_and(|v| v.brokers == all)
    });
    create_spread(&c.nodes[0].bootstrap(), topic, 3);
    c.wait_for("the topic led everywhere", 30, || {
        view(c.nodes[0].port, topic).is_some_and(|v| v.leaders == vec![1, 2, 3])
    });
    for p in 0..3 {
        produce(
            &c.nodes[0].bootstrap(),
            topic,
            p,
            &values(&format!("p{p}"), 20),
        );
    }
    c
}

/// Kills node `id` with SIGKILL and starts it again at once; asserts that it is refused with
/// DUPLICATE_BROKER_REGISTRATION (so the restart was inside the old session), keeps running,
/// and is back within the session timeout plus a margin for this loaded machine, serving its
/// partition with every record it had and new ones. Returns how long it took.
fn kill_and_restart_within_session(c: &mut Cluster, id: i32, topic: &str) -> Duration {
    let all: BTreeSet<i32> = [1, 2, 3].into();
    let other = if id == 1 { 2 } else { 1 };
    let before = c.node(id).log().len();
    c.node(id).kill9();
    let killed = Instant::now();
    common::wait_port_released(c.node(id).port);
    c.node(id).spawn();
    // Back: listed, leading its partition again (on every node's view).
    let deadline_s = SESSION_TIMEOUT_MS / 1000 + 25;
    let other_port = c.node(other).port;
    let own_port = c.node(id).port;
    c.wait_for("the restarted broker back", deadline_s, || {
        [other_port, own_port].iter().all(|port| {
            view(*port, topic).is_some_and(|v| v.brokers == all && v.leaders == vec![1, 2, 3])
        })
    });
    let back = killed.elapsed();
    let log = c.node(id).log();
    let since = &log[before.min(log.len())..];
    assert!(
        since.contains("DUPLICATE_BROKER_REGISTRATION"),
        "the restart came after the old session ended, so this test proved nothing:\n{since}"
    );
    assert!(
        c.node(id)
            .pid()
            .is_some_and(|pid| { std::path::Path::new(&format!("/proc/{pid}/status")).exists() }),
        "the restarted broker exited:\n{since}"
    );
    let p = id - 1;
    let bootstrap = c.node(id).bootstrap();
    produce(&bootstrap, topic, p, &values("after", 5));
    let read = consume(&bootstrap, topic, p, 25);
    let mut want = values(&format!("p{p}"), 20);
    want.extend(values("after", 5));
    assert_eq!(read, want, "partition {p} after the restart of broker {id}");
    back
}

/// Bug 1 of issue 19: a broker restarted within its old session exited on
/// DUPLICATE_BROKER_REGISTRATION. Kafka's broker retries until the session runs out.
#[test]
fn a_broker_restarted_within_its_session_retries_and_comes_back() {
    let mut c = cluster_with_data(&[], "restart");
    let controller = view(c.nodes[0].port, "none").map_or(-1, |v| v.controller);
    assert!((1..=3).contains(&controller), "controller {controller}");
    let victim = (1..=3).find(|i| *i != controller).expect("a broker");
    let took = kill_and_restart_within_session(&mut c, victim, "restart");
    eprintln!(
        "broker {victim} back {:.1} s after its kill -9",
        took.as_secs_f64()
    );
    let log = c.node(victim).log();
    assert!(
        log.contains("unable to register: the active controller refused; retrying"),
        "{log}"
    );
}

/// Bug 2 of issue 19: the active controller's node, killed and restarted before the other
/// voters elect (a long election timeout makes that certain), comes back as the leader of
/// its old term (openraft 0.9) and must still register its own broker and serve.
#[test]
fn a_restarted_active_controller_registers_again_and_serves() {
    let mut c = cluster_with_data(
        &["controller.quorum.election.timeout.ms=4000"],
        "restart-controller",
    );
    let controller = view(c.nodes[0].port, "none").map_or(-1, |v| v.controller);
    assert!((1..=3).contains(&controller), "controller {controller}");
    let before = c.node(controller).log();
    let term = last_term_led(&before)
        .unwrap_or_else(|| panic!("the active controller logged no term:\n{before}"));
    let took = kill_and_restart_within_session(&mut c, controller, "restart-controller");
    // It came back as the leader of the same term: the case this test is about.
    let log = c.node(controller).log();
    assert_eq!(
        last_term_led(&log[before.len()..]),
        Some(term),
        "not restored as the leader of its term:\n{log}"
    );
    eprintln!(
        "active controller {controller} back {:.1} s after its kill -9",
        took.as_secs_f64()
    );
    // Metadata changes still go through (whoever leads now).
    create_spread(&c.nodes[0].bootstrap(), "after-restart", 3);
    c.wait_for("the new topic led everywhere", 30, || {
        view(c.nodes[2].port, "after-restart").is_some_and(|v| v.leaders == vec![1, 2, 3])
    });
}
