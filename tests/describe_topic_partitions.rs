//! DescribeTopicPartitions (KIP-966) in raw frames: pages by cursor within the partition
//! limit, unknown topics and bad cursors answered with Kafka's error codes; and Kafka's own
//! `kafka-topics --describe` paging through a topic with a small page size.

mod common;
#[path = "rawkafka/mod.rs"]
mod rawkafka;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::Broker;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::{
    ApiKey, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rawkafka::Client;
use shardlog::error_code::ErrorCode;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One answered topic: (name, error code, partition indexes).
type TopicPage = (String, i16, Vec<i32>);

/// The topics of a response, and its next cursor.
fn page(r: &DescribeTopicPartitionsResponse) -> (Vec<TopicPage>, Option<(String, i32)>) {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.error_code,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let cursor = r
        .next_cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index));
    (topics, cursor)
}

#[test]
fn pages_by_cursor_and_refuses_bad_cursors() {
    let b = Broker::start(1, &[]);
    let mut c = Client::connect(b.port, Duration::from_secs(10)).expect("connect");
    assert_eq!(c.create_topic("dtp-b", 5).expect("create"), 0);
    assert_eq!(c.create_topic("dtp-a", 3).expect("create"), 0);
    let ask = |topics: &[&str], limit: i32, cursor: Option<(&str, i32)>| {
        DescribeTopicPartitionsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| TopicRequest::default().with_name(name(t)))
                    .collect(),
            )
            .with_response_partition_limit(limit)
            .with_cursor(cursor.map(|(t, p)| {
                Cursor::default()
                    .with_topic_name(name(t))
                    .with_partition_index(p)
            }))
    };
    let mut call = |req: &DescribeTopicPartitionsRequest| {
        let r: DescribeTopicPartitionsResponse = c
            .call(ApiKey::DescribeTopicPartitions, 0, req)
            .expect("describe");
        page(&r)
    };
    // Sorted by name whatever the request order; four partitions, then a cursor.
    let (topics, cursor) = call(&ask(&["dtp-b", "dtp-a"], 4, None));
    assert_eq!(
        topics,
        vec![
            ("dtp-a".into(), 0, vec![0, 1, 2]),
            ("dtp-b".into(), 0, vec![0]),
        ]
    );
    assert_eq!(cursor, Some(("dtp-b".into(), 1)));
    let (topics, cursor) = call(&ask(&["dtp-b", "dtp-a"], 4, Some(("dtp-b", 1))));
    assert_eq!(topics, vec![("dtp-b".into(), 0, vec![1, 2, 3, 4])]);
    assert_eq!(cursor, None, "the last page");
    // A page that ends with a topic points at the next topic's first partition.
    let (_, cursor) = call(&ask(&["dtp-a", "dtp-b"], 3, None));
    assert_eq!(cursor, Some(("dtp-b".into(), 0)));
    // An empty list is every topic (the offsets topic included).
    let (topics, _) = call(&ask(&[], 2000, None));
    assert!(topics.iter().any(|t| t.0 == "dtp-a") && topics.iter().any(|t| t.0 == "dtp-b"));
    // Unknown topics and bad cursors.
    let (topics, _) = call(&ask(&["nope"], 10, None));
    assert_eq!(
        topics,
        vec![(
            "nope".into(),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
            vec![]
        )]
    );
    for bad in [("dtp-c", 0), ("dtp-a", -1)] {
        let (topics, _) = call(&ask(&["dtp-a", "dtp-b"], 10, Some(bad)));
        assert_eq!(topics.len(), 2);
        assert!(
            topics
                .iter()
                .all(|t| t.1 == ErrorCode::INVALID_REQUEST.code() && t.2.is_empty()),
            "{bad:?}: {topics:?}"
        );
    }
    assert!(b.log().contains("invalid cursor"));
}

#[test]
fn kafka_topics_describe_pages_through_a_topic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join("tests/clients/java/target/lib");
    if !lib.join("kafka-tools-4.3.1.jar").exists() {
        eprintln!("Kafka's Java tools are not installed (scripts/install-clients): skipped");
        return;
    }
    let b = Broker::start(1, &[]);
    let mut c = Client::connect(b.port, Duration::from_secs(10)).expect("connect");
    assert_eq!(c.create_topic("described", 7).expect("create"), 0);
    let out = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-cp"])
        .arg(format!("{}/*", lib.display()))
        .arg("org.apache.kafka.tools.TopicCommand")
        .args(["--bootstrap-server", &b.bootstrap()])
        .args(["--describe", "--topic", "described"])
        .args(["--partition-size-limit-per-response", "3"])
        .output()
        .expect("run kafka-topics");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kafka-topics failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("PartitionCount: 7"), "{text}");
    for p in 0..7 {
        assert!(
            text.contains(&format!("Partition: {p}\t")),
            "partition {p} missing: {text}"
        );
    }
}
