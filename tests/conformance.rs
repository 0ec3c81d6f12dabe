//! Kafka conformance of the admin and group APIs (issue 23, and issue 15's commit rule), each
//! checked with real clients against the real broker binary, asserting Apache Kafka 4.3's
//! answers:
//! - librdkafka's admin API (confluent-kafka, `tests/conformance_clients/admin_librdkafka.py`):
//!   CreateTopics with manual assignments, every topic config, the legacy AlterConfigs, and
//!   `num.partitions` for created and auto-created topics;
//! - kafka-python's admin client (`admin_kafka_python.py`): legacy and incremental alters;
//! - the Java AdminClient (`tests/conformance_clients/Conformance.java`, kafka-clients 4.3.1,
//!   run as a single-file program): IncrementalAlterConfigs APPEND and SUBTRACT (its legacy
//!   `alterConfigs` was removed in Kafka 4.0, so the legacy API is driven by the two above);
//! - Java consumers: a static-membership pair (the replaced member is fenced), and members
//!   committing in their revoke callbacks through rebalances (range and cooperative-sticky),
//!   with a checker counting records delivered twice;
//! - a raw CreateTopics giving both a partition count and assignments (no client sends that).
//!
//! The clients are the ones `scripts/install-clients` installs for tests/clients.rs;
//! `SHARDLOG_SKIP_CLIENTS=1` skips the client-driven tests, as it skips the matrix.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{request, Broker};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, CreateTopicsResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

/// Kafka's INVALID_REQUEST.
const INVALID_REQUEST: i16 = 42;
/// Kafka's INVALID_REPLICA_ASSIGNMENT.
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
/// Kafka's INVALID_CONFIG.
const INVALID_CONFIG: i16 = 40;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The broker every client test runs against: one shard, small preallocation, no initial
/// rebalance delay (rebalances are what the group tests exercise), `num.partitions=4` as many
/// client suites run brokers, and one topic default set in the broker's configuration
/// (`log.retention.ms`, reported with source STATIC_BROKER_CONFIG).
fn broker() -> Broker {
    Broker::start(
        1,
        &[
            "num.partitions=4",
            "log.retention.ms=86400000",
            "log.preallocate.bytes=1048576",
            "group.initial.rebalance.delay.ms=0",
        ],
    )
}

/// False (with a note) when the client tests are skipped; a client that is not installed
/// fails the test with how to install it.
fn clients_wanted(installed: &str) -> bool {
    if std::env::var_os("SHARDLOG_SKIP_CLIENTS").is_some() {
        eprintln!("SKIPPED: SHARDLOG_SKIP_CLIENTS is set");
        return false;
    }
    assert!(
        root().join(installed).exists(),
        "{installed} is missing: run scripts/install-clients (or set SHARDLOG_SKIP_CLIENTS=1)"
    );
    true
}

/// Runs a client program to completion or `timeout` (then kills it); panics with its output
/// and the broker's log unless it exits 0.
fn run_client(b: &Broker, program: &[&str], timeout: Duration) -> String {
    let out = tempfile::NamedTempFile::new().expect("temp output file");
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(out.as_file().try_clone().expect("dup"))
        .stderr(out.as_file().try_clone().expect("dup"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program[0]));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(out.path()).unwrap_or_default();
    let shown: String = output
        .lines()
        .filter(|l| !l.starts_with("SLF4J") && !l.trim_start().starts_with("at "))
        .collect::<Vec<_>>()
        .join("\n");
    match status {
        Some(s) if s.success() => shown,
        Some(s) => panic!(
            "{} exited with {s}:\n{shown}\n--- broker log (tail) ---\n{}",
            program.join(" "),
            tail(&b.log(), 40)
        ),
        None => panic!(
            "{} did not finish in {timeout:?}:\n{shown}\n--- broker log (tail) ---\n{}",
            program.join(" "),
            tail(&b.log(), 40)
        ),
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

const PYTHON: &str = "tests/clients/python/.venv/bin/python";
const JAVA_LIB: &str = "tests/clients/java/target/lib";

fn librdkafka(b: &Broker, scenario: &str) -> String {
    let bootstrap = b.bootstrap();
    run_client(
        b,
        &[
            PYTHON,
            "tests/conformance_clients/admin_librdkafka.py",
            scenario,
            &bootstrap,
            "0",
        ],
        Duration::from_secs(90),
    )
}

fn java(b: &Broker, args: &[&str], timeout: Duration) -> String {
    let bootstrap = b.bootstrap();
    let classpath = format!("{JAVA_LIB}/*");
    let mut program = vec![
        "java",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        &classpath,
        "tests/conformance_clients/Conformance.java",
        args[0],
        &bootstrap,
    ];
    program.extend_from_slice(&args[1..]);
    run_client(b, &program, timeout)
}

/// Issue 23 item 1: the number of manual assignments is the partition count; an assignment
/// naming another broker is INVALID_REPLICA_ASSIGNMENT.
#[test]
fn create_topics_with_manual_assignments() {
    if !clients_wanted(PYTHON) {
        return;
    }
    let b = broker();
    let out = librdkafka(&b, "manual_assignment");
    assert!(out.contains("ok: manual_assignment"), "{out}");
}

/// Issue 23 item 1, on the wire: a count and assignments together are INVALID_REQUEST (no
/// client sends that, so a raw request); so are assignments with a replication factor; a
/// partition assigned twice and gaps are INVALID_REPLICA_ASSIGNMENT; a config without a value
/// is INVALID_CONFIG; Kafka's messages.
#[test]
fn a_count_and_assignments_together_are_an_invalid_request() {
    let b = broker();
    let mut c = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let topic = |name: &str, partitions: i32, rf: i16, assignments: &[(i32, &[i32])]| {
        CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(partitions)
            .with_replication_factor(rf)
            .with_assignments(
                assignments
                    .iter()
                    .map(|(p, brokers)| {
                        CreatableReplicaAssignment::default()
                            .with_partition_index(*p)
                            .with_broker_ids(brokers.iter().map(|b| BrokerId(*b)).collect())
                    })
                    .collect(),
            )
    };
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            topic("both", 1, -1, &[(0, &[0])]),
            topic("with-rf", -1, 1, &[(0, &[0])]),
            topic("twice", -1, -1, &[(0, &[0]), (0, &[0])]),
            topic("gap", -1, -1, &[(0, &[0]), (2, &[0])]),
            topic("dup-broker", -1, -1, &[(0, &[0, 0])]),
            topic("good", -1, -1, &[(0, &[0]), (1, &[0])]),
            topic("null-config", -1, -1, &[]).with_configs(vec![
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(None),
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("segment.ms"))
                    .with_value(None),
            ]),
        ]);
    let mut resp = request(&mut c, ApiKey::CreateTopics, 7, &req);
    let resp = CreateTopicsResponse::decode(&mut resp, 7).expect("create topics response");
    let answer = |name: &str| {
        let t = resp
            .topics
            .iter()
            .find(|t| t.name.as_str() == name)
            .unwrap_or_else(|| panic!("no result for {name}"));
        (
            t.error_code,
            t.error_message
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
            t.num_partitions,
        )
    };
    assert_eq!(
        answer("both"),
        (
            INVALID_REQUEST,
            "A manual partition assignment was specified, but numPartitions was not set to -1."
                .to_string(),
            -1
        )
    );
    assert_eq!(
        answer("with-rf").1,
        "A manual partition assignment was specified, but replication factor was not set to -1."
    );
    assert_eq!(answer("with-rf").0, INVALID_REQUEST);
    assert_eq!(
        (answer("twice").0, answer("twice").1),
        (
            INVALID_REPLICA_ASSIGNMENT,
            "Found multiple manual partition assignments for partition 0".to_string()
        )
    );
    assert_eq!(
        (answer("gap").0, answer("gap").1),
        (
            INVALID_REPLICA_ASSIGNMENT,
            "partitions should be a consecutive 0-based integer sequence".to_string()
        )
    );
    assert_eq!(
        (answer("dup-broker").0, answer("dup-broker").1),
        (
            INVALID_REPLICA_ASSIGNMENT,
            "The manual partition assignment includes the broker 0 more than once.".to_string()
        )
    );
    assert_eq!(answer("good"), (0, String::new(), 2));
    assert_eq!(
        (answer("null-config").0, answer("null-config").1),
        (
            INVALID_CONFIG,
            "Null value not supported for topic configs: retention.ms,segment.ms".to_string()
        )
    );
}

/// Issue 23 item 2: every Kafka 4.3 topic config is accepted with Kafka's validation and
/// reported by DescribeConfigs; `cleanup.policy=compact` is accepted; unknown names, unknown
/// policies, negative lags and bad values get INVALID_CONFIG with Kafka's message.
#[test]
fn every_kafka_topic_config_is_accepted_and_validated() {
    if !clients_wanted(PYTHON) {
        return;
    }
    let b = broker();
    let out = librdkafka(&b, "topic_configs");
    assert!(out.contains("ok: topic_configs"), "{out}");
}

/// Issue 23 item 3: the legacy AlterConfigs (key 33, as librdkafka's `alter_configs` sends it)
/// replaces a topic's overrides.
#[test]
fn legacy_alter_configs_replaces_the_overrides() {
    if !clients_wanted(PYTHON) {
        return;
    }
    let b = broker();
    let out = librdkafka(&b, "legacy_alter");
    assert!(out.contains("ok: legacy_alter"), "{out}");
}

/// Issue 23 item 3 from a second client family: kafka-python's legacy AlterConfigs and its
/// IncrementalAlterConfigs APPEND and SUBTRACT.
#[test]
fn kafka_python_alters_configs_both_ways() {
    if !clients_wanted(PYTHON) {
        return;
    }
    let b = broker();
    let bootstrap = b.bootstrap();
    let out = run_client(
        &b,
        &[
            PYTHON,
            "tests/conformance_clients/admin_kafka_python.py",
            &bootstrap,
        ],
        Duration::from_secs(90),
    );
    assert!(out.contains("ok: kafka-python alter configs"), "{out}");
}

/// Issue 23 item 3: IncrementalAlterConfigs APPEND and SUBTRACT from the Java AdminClient.
#[test]
fn incremental_alter_configs_append_and_subtract() {
    if !clients_wanted(JAVA_LIB) {
        return;
    }
    let b = broker();
    let out = java(&b, &["incremental"], Duration::from_secs(120));
    assert!(out.contains("ok: incremental"), "{out}");
}

/// Issue 23 item 5: with `num.partitions=4`, a topic created without a count and an
/// auto-created topic both have 4 partitions.
#[test]
fn num_partitions_applies_to_created_and_auto_created_topics() {
    if !clients_wanted(PYTHON) {
        return;
    }
    let b = broker();
    let out = librdkafka(&b, "default_partitions");
    assert!(out.contains("ok: default_partitions"), "{out}");
}

/// Issue 23 item 4: a second consumer with a `group.instance.id` in use replaces the first,
/// which gets FencedInstanceIdException (fatal) within its session timeout.
#[test]
fn a_static_member_replaced_by_a_second_consumer_is_fenced() {
    if !clients_wanted(JAVA_LIB) {
        return;
    }
    let b = broker();
    let out = java(&b, &["static_fencing"], Duration::from_secs(120));
    assert!(out.contains("ok: static_fencing"), "{out}");
}

/// Issue 15: consumers that commit in their revoke callbacks while members join and leave
/// (range: the commit arrives while the group is PreparingRebalance; cooperative-sticky:
/// after the revoking assignment) lose no commit, so no record is delivered twice.
#[test]
fn commits_in_revoke_callbacks_leave_no_duplicates() {
    if !clients_wanted(JAVA_LIB) {
        return;
    }
    let b = broker();
    for assignor in [
        "org.apache.kafka.clients.consumer.RangeAssignor",
        "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
    ] {
        let out = java(
            &b,
            &["revoke_commit", assignor, "3000"],
            Duration::from_secs(180),
        );
        assert!(out.contains("duplicates=0"), "{assignor}: {out}");
        eprintln!(
            "{}",
            out.lines()
                .find(|l| l.starts_with("assignor="))
                .unwrap_or("")
        );
    }
}
