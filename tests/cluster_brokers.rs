//! A multi-node cluster of real broker processes (issue 17): three combined broker+controller
//! nodes and one broker-only node, started with Kafka's properties, serve librdkafka (the
//! rdkafka crate), the Java client and franz-go on topics whose partitions are led by
//! different brokers; a duplicate node id is refused at start; a broker killed with SIGKILL is
//! fenced and leaves Metadata, and comes back on restart with its data; SIGTERM runs the
//! controlled shutdown.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{format, shardlog, wait_for, Node};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// The properties of node `id`: combined broker+controller when it has a controller port.
fn node_args(id: i32, port: u16, controller_port: Option<u16>, voters: &str) -> Vec<String> {
    let (roles, listeners) = match controller_port {
        Some(cp) => (
            "broker,controller",
            format!("PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cp}"),
        ),
        None => ("broker", format!("PLAINTEXT://127.0.0.1:{port}")),
    };
    [
        format!("process.roles={roles}"),
        format!("node.id={id}"),
        format!("controller.quorum.voters={voters}"),
        format!("listeners={listeners}"),
        "broker.heartbeat.interval.ms=200".into(),
        "broker.session.timeout.ms=2000".into(),
        "controller.quorum.election.timeout.ms=500".into(),
    ]
    .into_iter()
    .flat_map(|kv| ["--set".to_string(), kv])
    .collect()
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client")
}

/// (brokers listed, partition leaders of `topic`) in Metadata from `bootstrap`.
fn metadata(bootstrap: &str, topic: &str) -> Option<(BTreeSet<i32>, Vec<i32>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .ok()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(3)).ok()?;
    let brokers = md.brokers().iter().map(|b| b.id()).collect();
    let leaders = md
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.leader()).collect())
        .unwrap_or_default();
    Some((brokers, leaders))
}

/// Produces `n` messages round-robin over `partitions` partitions; all must be acknowledged.
fn produce(bootstrap: &str, topic: &str, partitions: i32, n: usize) {
    let p: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("v{i}");
        let record = BaseRecord::<String, String>::to(topic)
            .partition(i as i32 % partitions)
            .key(&key)
            .payload(&value);
        p.send(record).map_err(|(e, _)| e).expect("queued");
    }
    p.flush(Duration::from_secs(30))
        .expect("every message acknowledged");
}

/// Reads every partition of `topic` from the beginning until `n` messages came.
fn consume(bootstrap: &str, topic: &str, partitions: i32, n: usize) -> Vec<(i32, String)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cluster-test")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            out.push((m.partition(), v));
        }
    }
    out
}

/// The active controller's id as DescribeCluster on `port` reports it (-1: none known).
fn controller_id(port: u16) -> Option<i32> {
    use kafka_protocol::messages::{ApiKey, DescribeClusterRequest, DescribeClusterResponse};
    use kafka_protocol::protocol::Decodable;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut body = common::request(
        &mut s,
        ApiKey::DescribeCluster,
        0,
        &DescribeClusterRequest::default(),
    );
    let r = DescribeClusterResponse::decode(&mut body, 0).ok()?;
    Some(r.controller_id.0)
}

/// A Produce v11 of partition `partition` of `topic` sent to the broker on `port`: (error
/// code, KIP-951 current leader, the ports of the node endpoints given).
fn produce_raw(port: u16, topic: &str, partition: i32) -> (i16, i32, Vec<i32>) {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(bytes::Bytes::from_static(b"not a batch")))])]);
    let mut body = common::request(&mut s, ApiKey::Produce, 11, &req);
    let r = ProduceResponse::decode(&mut body, 11).expect("produce response");
    let p = &r.responses[0].partition_responses[0];
    (
        p.error_code,
        p.current_leader.leader_id.0,
        r.node_endpoints.iter().map(|e| e.port).collect(),
    )
}

/// The error code of a ListOffsets v4 (latest) of `topic`/`partition` on `port` carrying
/// `current_leader_epoch` `epoch`.
fn list_offsets_raw(port: u16, topic: &str, partition: i32, epoch: i32) -> i16 {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = ListOffsetsRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_current_leader_epoch(epoch)
                .with_timestamp(-1)])]);
    let mut body = common::request(&mut s, ApiKey::ListOffsets, 4, &req);
    let r = ListOffsetsResponse::decode(&mut body, 4).expect("list offsets response");
    r.topics[0].partitions[0].error_code
}

/// The error code of a Fetch v12 of `topic`/`partition` from offset 0 on `port` carrying
/// `current_leader_epoch` `epoch`.
fn fetch_raw(port: u16, topic: &str, partition: i32, epoch: i32) -> i16 {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = FetchRequest::default()
        .with_replica_id(kafka_protocol::messages::BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(epoch)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let mut body = common::request(&mut s, ApiKey::Fetch, 12, &req);
    let r = FetchResponse::decode(&mut body, 12).expect("fetch response");
    r.responses[0].partitions[0].error_code
}

/// On one node the leader epoch is 0: a request carrying another is refused as Kafka does.
#[test]
fn leader_epochs_are_checked_on_one_node() {
    let b = common::Broker::start(1, &[]);
    let results = futures_lite::future::block_on(admin(&b.bootstrap()).create_topics(
        &[NewTopic::new("epochs", 1, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .expect("create_topics");
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(list_offsets_raw(b.port, "epochs", 0, -1), 0);
    assert_eq!(list_offsets_raw(b.port, "epochs", 0, 0), 0);
    assert_eq!(
        list_offsets_raw(b.port, "epochs", 0, 1),
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
    assert_eq!(fetch_raw(b.port, "epochs", 0, 0), 0);
    assert_eq!(
        fetch_raw(b.port, "epochs", 0, 3),
        75,
        "UNKNOWN_LEADER_EPOCH"
    );
}

/// A client scenario program of tests/clients (see its README): exit 0 is a pass.
fn scenario(program: &[&str], name: &str, bootstrap: &str, tag: &str) -> Result<(), String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(program[0])
        .args(&program[1..])
        .args([name, bootstrap, tag])
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program[0]))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{} {name}: timed out", program[0]));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} {name}: {:?}\n{}{}",
            program[0],
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn four_broker_processes_serve_librdkafka_java_and_franz_go() {
    let tmp = common::temp_data_dir();
    let id = String::from_utf8(shardlog(&["random-uuid"]).stdout).expect("utf-8");
    let cluster_id = id.trim().to_string();
    let ports: Vec<u16> = (0..4).map(|_| common::free_port()).collect();
    let controller_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let voters = (0..3)
        .map(|i| format!("{}@127.0.0.1:{}", i + 1, controller_ports[i]))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes: Vec<Node> = (0..4)
        .map(|i| {
            let id = i as i32 + 1;
            let dir = tmp.path().join(format!("node{id}"));
            format(&dir, &cluster_id, id);
            Node::new(
                id,
                dir,
                ports[i],
                node_args(id, ports[i], controller_ports.get(i).copied(), &voters),
            )
        })
        .collect();
    for n in &mut nodes {
        n.spawn();
    }
    let all: BTreeSet<i32> = [1, 2, 3, 4].into();
    let boot = nodes[0].bootstrap();
    wait_for("four brokers in Metadata on every node", 60, &nodes, || {
        nodes
            .iter()
            .all(|n| metadata(&n.bootstrap(), "none").is_some_and(|(b, _)| b == all))
    });

    // Placement: one partition per broker; RF=3 is placed (replication, issue 18), a
    // replication factor above the broker count is refused.
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_lite::future::block_on(admin(&boot).create_topics(
        &[
            NewTopic::new("spread", 4, TopicReplication::Fixed(1)),
            NewTopic::new("replicated", 1, TopicReplication::Fixed(3)),
            NewTopic::new("too-wide", 1, TopicReplication::Fixed(5)),
        ],
        &opts,
    ))
    .expect("create_topics");
    assert!(results[0].is_ok(), "{results:?}");
    assert!(results[1].is_ok(), "{results:?}");
    assert_eq!(
        results[2].as_ref().map_err(|(_, c)| *c),
        Err(RDKafkaErrorCode::InvalidReplicationFactor)
    );
    let leaders = |bootstrap: &str| {
        metadata(bootstrap, "spread")
            .map(|(_, l)| l)
            .unwrap_or_default()
    };
    wait_for("spread's leaders known to node 4", 10, &nodes, || {
        leaders(&nodes[3].bootstrap()).len() == 4
    });
    let led: BTreeSet<i32> = leaders(&boot).into_iter().collect();
    assert_eq!(led, all, "each broker leads one partition of `spread`");

    // A Produce to a broker that does not lead the partition: NOT_LEADER_OR_FOLLOWER, with
    // the leader and its endpoint (KIP-951), before the records are even looked at.
    let spread = leaders(&boot);
    let p = spread
        .iter()
        .position(|l| *l != 1)
        .expect("a partition led elsewhere");
    let (code, leader, endpoints) = produce_raw(nodes[0].port, "spread", p as i32);
    assert_eq!(code, 6, "NOT_LEADER_OR_FOLLOWER");
    assert_eq!(leader, spread[p]);
    assert_eq!(endpoints, vec![nodes[spread[p] as usize - 1].port as i32]);

    // librdkafka produces to every partition (so to every broker) and reads it all back,
    // bootstrapped from different nodes.
    produce(&nodes[1].bootstrap(), "spread", 4, 40);
    let read = consume(&nodes[2].bootstrap(), "spread", 4, 40);
    assert_eq!(read.len(), 40, "{read:?}");
    let partitions: BTreeSet<i32> = read.iter().map(|(p, _)| *p).collect();
    assert_eq!(partitions.len(), 4);

    // The Java client and franz-go: topics created through the cluster, produce, consume and
    // a consumer group (its coordinator is the leader of the group's offsets partition).
    let java_cp = "tests/clients/java/target/shardlog-clients.jar:tests/clients/java/target/lib/*";
    let java = [
        "java",
        "-XX:TieredStopAtLevel=1",
        "-Xshare:auto",
        "-cp",
        java_cp,
        "dev.shardlog.clients.Main",
    ];
    let franz = ["tests/clients/go/bin/franz"];
    for (program, tag, bootstrap) in [
        (&java[..], "java", nodes[1].bootstrap()),
        (&franz[..], "franz", nodes[3].bootstrap()),
    ] {
        for name in ["create_topic", "produce_consume", "group"] {
            if let Err(e) = scenario(program, name, &bootstrap, tag) {
                panic!("{e}\n--- node 1 ---\n{}", nodes[0].log());
            }
        }
    }
    let offsets = metadata(&boot, "__consumer_offsets").expect("metadata");
    let coordinators: BTreeSet<i32> = offsets.1.into_iter().collect();
    assert!(
        coordinators.len() > 1,
        "the groups' offsets partitions are spread: {coordinators:?}"
    );

    // A second process with node.id 4 while node 4 is alive: refused with
    // DUPLICATE_BROKER_REGISTRATION at every attempt (Kafka's broker retries, since the holder
    // may be its own killed predecessor whose session has not run out), so it gives up after
    // initial.broker.registration.timeout.ms, with a clear error; node 4 is untouched.
    let dup_dir = tmp.path().join("dup4");
    format(&dup_dir, &cluster_id, 4);
    let dup_port = common::free_port();
    let o = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .args(["serve", "--cores", "1", "--data-dir"])
        .arg(&dup_dir)
        .args(node_args(4, dup_port, None, &voters))
        .args(["--set", "initial.broker.registration.timeout.ms=3000"])
        .output()
        .expect("run the duplicate");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("DUPLICATE_BROKER_REGISTRATION"), "{err}");
    assert!(
        err.contains("initial.broker.registration.timeout.ms"),
        "{err}"
    );
    assert!(
        metadata(&boot, "spread").is_some_and(|(b, _)| b == all),
        "node 4 still registered"
    );

    // kill -9 the active controller (a combined node): another takes over, topic creation
    // and Metadata keep working; the killed node rejoins on restart with its data.
    let controller = controller_id(nodes[0].port).expect("DescribeCluster");
    assert!((1..=3).contains(&controller), "controller {controller}");
    let victim = controller as usize - 1;
    let survivor = (0..3).find(|i| *i != victim).expect("a survivor");
    nodes[victim].kill9();
    wait_for("a new active controller", 30, &nodes, || {
        controller_id(nodes[survivor].port).is_some_and(|c| c > 0 && c != controller)
    });
    let results =
        futures_lite::future::block_on(admin(&nodes[survivor].bootstrap()).create_topics(
            &[NewTopic::new(
                "after-failover",
                2,
                TopicReplication::Fixed(1),
            )],
            &opts,
        ))
        .expect("create_topics");
    assert!(results[0].is_ok(), "{results:?}");
    let without: BTreeSet<i32> = all.iter().copied().filter(|b| *b != controller).collect();
    wait_for("the killed controller fenced", 20, &nodes, || {
        metadata(&nodes[survivor].bootstrap(), "after-failover")
            .is_some_and(|(b, l)| b == without && l.len() == 2)
    });
    common::wait_port_released(nodes[victim].port);
    nodes[victim].spawn();
    wait_for("the killed controller back", 30, &nodes, || {
        metadata(&nodes[survivor].bootstrap(), "spread")
            .is_some_and(|(b, l)| b == all && !l.contains(&-1))
    });
    let read = consume(&nodes[victim].bootstrap(), "spread", 4, 40);
    assert_eq!(
        read.len(),
        40,
        "every record back after the controller's restart"
    );

    // kill -9 broker 4: fenced, gone from Metadata, its partition offline; back on restart,
    // leading it again with its data.
    nodes[3].kill9();
    let three: BTreeSet<i32> = [1, 2, 3].into();
    wait_for("broker 4 fenced", 20, &nodes, || {
        metadata(&boot, "spread").is_some_and(|(b, l)| b == three && l.contains(&-1))
    });
    common::wait_port_released(nodes[3].port);
    nodes[3].spawn();
    wait_for("broker 4 back", 30, &nodes, || {
        metadata(&boot, "spread").is_some_and(|(b, l)| b == all && !l.contains(&-1))
    });
    let read = consume(&nodes[3].bootstrap(), "spread", 4, 40);
    assert_eq!(read.len(), 40, "every record back after the restart");
    // Its partition's leader epoch moved on (offline, then back): a client still on epoch 0
    // is fenced, on Fetch and ListOffsets alike.
    let mine = leaders(&boot)
        .iter()
        .position(|l| *l == 4)
        .expect("broker 4 leads a partition") as i32;
    assert_eq!(
        list_offsets_raw(nodes[3].port, "spread", mine, 0),
        74,
        "FENCED_LEADER_EPOCH"
    );
    assert_eq!(
        fetch_raw(nodes[3].port, "spread", mine, 0),
        74,
        "FENCED_LEADER_EPOCH"
    );

    // SIGTERM: the controlled shutdown moves its leadership away first, then it exits 0.
    assert_eq!(nodes[3].terminate(30), Some(0), "{}", nodes[3].log());
    assert!(
        nodes[3].log().contains("controlled shutdown complete"),
        "{}",
        nodes[3].log()
    );
    wait_for("broker 4 out of Metadata", 10, &nodes, || {
        metadata(&boot, "none").is_some_and(|(b, _)| b == three)
    });
}
