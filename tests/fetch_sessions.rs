//! KIP-227 incremental fetch sessions against the real broker: the session life cycle and its
//! error paths in raw frames (Kafka's rules: `FETCH_SESSION_ID_NOT_FOUND`,
//! `INVALID_FETCH_SESSION_EPOCH`, `FETCH_SESSION_TOPIC_ID_ERROR`, the slot limit), and Kafka's
//! own Java consumer (the console consumer) using sessions through a recording proxy.

mod common;
#[path = "rawkafka/mod.rs"]
mod rawkafka;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, MetadataRequest, MetadataResponse, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use rawkafka::{encode_batch, Client};
use shardlog::error_code::ErrorCode;

const TIMEOUT: Duration = Duration::from_secs(10);

/// How a test request names a topic: by name (v12) or by id (v13+).
#[derive(Clone)]
enum Topic {
    Name(&'static str),
    Id([u8; 16]),
}

/// A Fetch with session fields: `parts` are (partition, fetch offset); `forget` partitions.
fn fetch_req(
    topic: &Topic,
    session_id: i32,
    epoch: i32,
    parts: &[(i32, i64)],
    forget: &[i32],
) -> FetchRequest {
    let name = |t: &Topic| match t {
        Topic::Name(n) => TopicName(StrBytes::from_static_str(n)),
        Topic::Id(_) => TopicName::default(),
    };
    let id = |t: &Topic| match t {
        Topic::Name(_) => uuid::Uuid::nil(),
        Topic::Id(id) => uuid::Uuid::from_bytes(*id),
    };
    let topics = if parts.is_empty() {
        vec![]
    } else {
        vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_topic_id(id(topic))
            .with_partitions(
                parts
                    .iter()
                    .map(|&(p, off)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(off)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(1 << 20)
                    })
                    .collect(),
            )]
    };
    let forgotten = if forget.is_empty() {
        vec![]
    } else {
        vec![ForgottenTopic::default()
            .with_topic(name(topic))
            .with_topic_id(id(topic))
            .with_partitions(forget.to_vec())]
    };
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(4 << 20)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// (partition, high watermark, records bytes) of every partition in a response, in order.
fn answered(resp: &FetchResponse) -> Vec<(i32, i64, usize)> {
    resp.responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| {
            (
                p.partition_index,
                p.high_watermark,
                p.records.as_ref().map_or(0, Bytes::len),
            )
        })
        .collect()
}

fn fetch(c: &mut Client, version: i16, req: &FetchRequest) -> FetchResponse {
    c.call(ApiKey::Fetch, version, req).expect("fetch")
}

fn produce_one(c: &mut Client, topic: &str, partition: i32, value: &str) {
    let batch = encode_batch(&[Bytes::from(value.to_string())]);
    let r = c
        .produce(topic, &[(partition, batch)], -1)
        .expect("produce");
    assert_eq!(r[0].1, 0, "produce error");
}

#[test]
fn session_life_cycle_and_error_paths_in_raw_frames() {
    let b = Broker::start(1, &[]);
    let mut c = Client::connect(b.port, TIMEOUT).expect("connect");
    assert_eq!(c.create_topic("s", 3).expect("create"), 0);
    produce_one(&mut c, "s", 0, "a");
    produce_one(&mut c, "s", 1, "b");
    let t = Topic::Name("s");
    let v = 12;

    // Full fetch, epoch 0: a new session, every partition answered.
    let r = fetch(
        &mut c,
        v,
        &fetch_req(&t, 0, 0, &[(0, 0), (1, 0), (2, 0)], &[]),
    );
    assert_eq!(r.error_code, 0);
    let id = r.session_id;
    assert_ne!(id, 0, "a session was created");
    let got = answered(&r);
    assert_eq!(got.len(), 3);
    assert!(got[0].2 > 0 && got[1].2 > 0 && got[2].2 == 0);

    // Epoch 1: the client moved p0 and p1 past what it read; nothing changed: empty answer.
    let r = fetch(&mut c, v, &fetch_req(&t, id, 1, &[(0, 1), (1, 1)], &[]));
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(answered(&r).is_empty(), "nothing new: {:?}", answered(&r));

    // Epoch 2, nothing sent: only p2, which got a record, is answered.
    produce_one(&mut c, "s", 2, "c");
    let r = fetch(&mut c, v, &fetch_req(&t, id, 2, &[], &[]));
    let got = answered(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0, got[0].1), (2, 1));
    assert!(got[0].2 > 0);

    // Epoch 2 again: the epoch is now 3.
    let r = fetch(&mut c, v, &fetch_req(&t, id, 2, &[(2, 1)], &[]));
    assert_eq!(
        r.error_code,
        ErrorCode::INVALID_FETCH_SESSION_EPOCH.code(),
        "stale epoch"
    );
    assert_eq!(r.session_id, 0);
    assert!(r.responses.is_empty());

    // An id no session has.
    let r = fetch(&mut c, v, &fetch_req(&t, id ^ 0x5a5a, 1, &[], &[]));
    assert_eq!(r.error_code, ErrorCode::FETCH_SESSION_ID_NOT_FOUND.code());
    assert!(r.responses.is_empty());

    // The session named by topic names, asked with topic ids (v13).
    let r = fetch(&mut c, 13, &fetch_req(&t, id, 3, &[], &[]));
    assert_eq!(r.error_code, ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR.code());

    // Errors do not move the epoch: 3 works; p2 advanced, p0 forgotten.
    let r = fetch(&mut c, v, &fetch_req(&t, id, 3, &[(2, 1)], &[0]));
    assert_eq!((r.error_code, r.session_id), (0, id));
    assert!(answered(&r).is_empty());
    // p0 is no longer in the session: a record there is not answered; one on p1 is.
    produce_one(&mut c, "s", 0, "d");
    produce_one(&mut c, "s", 1, "e");
    let r = fetch(&mut c, v, &fetch_req(&t, id, 4, &[], &[]));
    let parts: Vec<i32> = answered(&r).iter().map(|p| p.0).collect();
    assert_eq!(parts, vec![1]);

    // Forgetting the rest closes the session: the answer is sessionless, the id gone.
    let r = fetch(&mut c, v, &fetch_req(&t, id, 5, &[], &[1, 2]));
    assert_eq!((r.error_code, r.session_id), (0, 0));
    let r = fetch(&mut c, v, &fetch_req(&t, id, 6, &[], &[]));
    assert_eq!(r.error_code, ErrorCode::FETCH_SESSION_ID_NOT_FOUND.code());

    // A full request with the final epoch closes its session and opens none.
    let r = fetch(&mut c, v, &fetch_req(&t, 0, 0, &[(0, 0)], &[]));
    let id = r.session_id;
    assert_ne!(id, 0);
    let r = fetch(&mut c, v, &fetch_req(&t, id, -1, &[(0, 0)], &[]));
    assert_eq!((r.error_code, r.session_id), (0, 0));
    assert_eq!(
        answered(&r).len(),
        1,
        "sessionless: every partition answered"
    );
    let r = fetch(&mut c, v, &fetch_req(&t, id, 1, &[], &[]));
    assert_eq!(r.error_code, ErrorCode::FETCH_SESSION_ID_NOT_FOUND.code());

    // Fetch v6 has no session fields: never a session.
    let r = fetch(&mut c, 6, &fetch_req(&t, 0, -1, &[(0, 0)], &[]));
    assert_eq!(answered(&r).len(), 1);
    assert!(b.log().contains("fetch session refused"), "one INFO line");
}

#[test]
fn sessions_by_topic_id_from_v13() {
    let b = Broker::start(2, &[]);
    let mut c = Client::connect(b.port, TIMEOUT).expect("connect");
    assert_eq!(c.create_topic("ids", 4).expect("create"), 0);
    let meta: MetadataResponse = c
        .call(
            ApiKey::Metadata,
            12,
            &MetadataRequest::default().with_topics(None),
        )
        .expect("metadata");
    let topic = meta
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "ids"))
        .expect("topic listed");
    let t = Topic::Id(*topic.topic_id.as_bytes());
    let all: Vec<(i32, i64)> = (0..4).map(|p| (p, 0)).collect();
    let r = fetch(&mut c, 16, &fetch_req(&t, 0, 0, &all, &[]));
    let id = r.session_id;
    assert_ne!(id, 0);
    assert_eq!(answered(&r).len(), 4);
    assert_eq!(
        r.responses[0].topic_id.as_bytes(),
        topic.topic_id.as_bytes()
    );

    for p in 0..4 {
        produce_one(&mut c, "ids", p, "x");
    }
    let r = fetch(&mut c, 16, &fetch_req(&t, id, 1, &[], &[]));
    assert_eq!(answered(&r).len(), 4, "every partition got a record");
    // The client moves p0..p2; p3 is left where it was and keeps returning its record.
    let r = fetch(
        &mut c,
        16,
        &fetch_req(&t, id, 2, &[(0, 1), (1, 1), (2, 1)], &[]),
    );
    let got = answered(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, 3);
    assert!(got[0].2 > 0);
    // A name-based request on the id-based session.
    let r = fetch(&mut c, 12, &fetch_req(&Topic::Name("ids"), id, 3, &[], &[]));
    assert_eq!(r.error_code, ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR.code());
    // An unknown topic id in the session is answered with UNKNOWN_TOPIC_ID every time.
    let ghost = Topic::Id([7; 16]);
    let r = fetch(&mut c, 16, &fetch_req(&ghost, id, 3, &[(0, 0)], &[]));
    let codes: Vec<i16> = r
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| p.error_code))
        .collect();
    assert!(
        codes.contains(&ErrorCode::UNKNOWN_TOPIC_ID.code()),
        "{codes:?}"
    );
    let r = fetch(&mut c, 16, &fetch_req(&t, id, 4, &[], &[]));
    assert_eq!(r.error_code, 0);
    assert!(r
        .responses
        .iter()
        .any(|t| t.topic_id.as_bytes() == &[7; 16]));
}

#[test]
fn slot_limit_and_disabled_sessions() {
    // One slot on one shard: a second consumer's session finds the cache full of a young
    // session and gets none (Kafka's rule: a consumer evicts only sessions idle for 120 s or
    // older than 120 s and smaller); its fetch is still answered in full.
    let metrics = common::free_port();
    let metrics_listen = format!("metrics.listen=127.0.0.1:{metrics}");
    let b = Broker::start(
        1,
        &[
            "max.incremental.fetch.session.cache.slots=1",
            &metrics_listen,
        ],
    );
    let mut c = Client::connect(b.port, TIMEOUT).expect("connect");
    assert_eq!(c.create_topic("slots", 2).expect("create"), 0);
    assert_eq!(common::metric_sum(metrics, "shardlog_fetch_sessions"), 0.0);
    let t = Topic::Name("slots");
    let first = fetch(&mut c, 12, &fetch_req(&t, 0, 0, &[(0, 0), (1, 0)], &[]));
    assert_ne!(first.session_id, 0);
    // The cache's gauges follow: one session holding two partitions, nothing evicted.
    assert_eq!(common::metric_sum(metrics, "shardlog_fetch_sessions"), 1.0);
    assert_eq!(
        common::metric_sum(metrics, "shardlog_fetch_session_partitions"),
        2.0
    );
    assert_eq!(
        common::metric_sum(metrics, "shardlog_fetch_session_evictions_total"),
        0.0
    );
    let second = fetch(&mut c, 12, &fetch_req(&t, 0, 0, &[(0, 0), (1, 0)], &[]));
    assert_eq!(second.session_id, 0, "no free slot");
    assert_eq!(answered(&second).len(), 2);
    let r = fetch(&mut c, 12, &fetch_req(&t, first.session_id, 1, &[], &[]));
    assert_eq!((r.error_code, r.session_id), (0, first.session_id), "kept");
    drop(b);

    let b = Broker::start(1, &["max.incremental.fetch.session.cache.slots=0"]);
    let mut c = Client::connect(b.port, TIMEOUT).expect("connect");
    assert_eq!(c.create_topic("off", 1).expect("create"), 0);
    let r = fetch(
        &mut c,
        12,
        &fetch_req(&Topic::Name("off"), 0, 0, &[(0, 0)], &[]),
    );
    assert_eq!((r.error_code, r.session_id), (0, 0), "sessions disabled");
}

/// The Fetch session fields (id, epoch) of every Fetch request a client sent through a proxy.
type Seen = Arc<Mutex<Vec<(i32, i32)>>>;

/// Forwards one client connection to the broker, recording its Fetch requests' session fields.
fn proxy_connection(client: TcpStream, broker_port: u16, seen: Seen) {
    let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else {
        return;
    };
    let (mut from_broker, mut to_client) = match (broker.try_clone(), client.try_clone()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return,
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_broker, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let (mut client, mut broker) = (client, broker);
    loop {
        let mut len = [0u8; 4];
        if client.read_exact(&mut len).is_err() {
            break;
        }
        let n = i32::from_be_bytes(len).clamp(0, 64 << 20) as usize;
        let mut frame = vec![0u8; n];
        if client.read_exact(&mut frame).is_err() {
            break;
        }
        if n >= 4 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Fetch as i16 {
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            let mut b = Bytes::from(frame.clone());
            if let Ok(_h) =
                RequestHeader::decode(&mut b, ApiKey::Fetch.request_header_version(version))
            {
                if let Ok(f) = FetchRequest::decode(&mut b, version) {
                    seen.lock()
                        .expect("seen")
                        .push((f.session_id, f.session_epoch));
                }
            }
        }
        if broker.write_all(&len).is_err() || broker.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = broker.shutdown(std::net::Shutdown::Both);
}

#[test]
fn java_console_consumer_uses_incremental_sessions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("tests/clients/java/target/lib");
    if !lib.join("kafka-clients-4.3.1.jar").exists() {
        eprintln!("Kafka's Java tools are not installed (scripts/install-clients): skipped");
        return;
    }
    // Clients reach the broker only through the proxy: it is the advertised listener.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let proxy_port = listener.local_addr().expect("addr").port();
    let advertised = format!("advertised.listeners=127.0.0.1:{proxy_port}");
    let b = Broker::start(2, &[&advertised]);
    let broker_port = b.port;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || proxy_connection(conn, broker_port, s));
        }
    });

    let topic = "console";
    let mut c = Client::connect(b.port, TIMEOUT).expect("connect");
    assert_eq!(c.create_topic(topic, 4).expect("create"), 0);
    let expected: Vec<String> = (0..12).map(|i| format!("v{i}")).collect();
    let mut consumer = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp"])
        .arg(format!("{}/*", lib.display()))
        .arg("org.apache.kafka.tools.consumer.ConsoleConsumer")
        .args(["--bootstrap-server", &format!("127.0.0.1:{proxy_port}")])
        .args(["--topic", topic, "--from-beginning", "--max-messages", "12"])
        .args(["--timeout-ms", "40000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the console consumer");
    // Records arrive one at a time while the consumer fetches: every fetch after its first
    // can be incremental.
    let started = Instant::now();
    while seen.lock().expect("seen").is_empty() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, v) in expected.iter().enumerate() {
        produce_one(&mut c, topic, (i % 4) as i32, v);
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = consumer.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = consumer.kill();
            let _ = consumer.wait();
            panic!(
                "the console consumer did not finish; broker log:\n{}",
                b.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = consumer.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = consumer.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "console consumer failed: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want, "every record exactly once");

    let seen = seen.lock().expect("seen").clone();
    let incremental = seen
        .iter()
        .filter(|(id, epoch)| *id != 0 && *epoch > 0)
        .count();
    assert!(
        incremental >= 3,
        "the Java consumer fetched incrementally in a session: {seen:?}"
    );
    let epochs: Vec<i32> = seen
        .iter()
        .filter(|(id, _)| *id != 0)
        .map(|(_, e)| *e)
        .collect();
    assert!(
        epochs.windows(2).any(|w| w[1] == w[0] + 1),
        "epochs advance one by one: {seen:?}"
    );
}
