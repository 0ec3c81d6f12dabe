//! Kafka Streams and Kafka Connect (4.3.1, from Maven Central like the Java client in
//! tests/clients/java) run unchanged on shardlog: a stateful Streams application restores
//! from its compacted changelog and trims its repartition topic (DeleteRecords); a Connect
//! worker in distributed mode (compacted config/offset/status topics) copies a file through a
//! topic with the file source and sink connectors created over its REST API on loopback.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, Broker};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn java_classpath() -> String {
    let java = root().join("tests/clients/java/target");
    for jar in ["kafka-streams-4.3.1.jar", "connect-file-4.3.1.jar"] {
        assert!(
            java.join("lib").join(jar).exists(),
            "{jar} missing: run scripts/install-clients"
        );
    }
    format!(
        "{}:{}",
        java.join("shardlog-clients.jar").display(),
        java.join("lib/*").display()
    )
}

fn java(class: &str) -> Command {
    let mut cmd = Command::new("java");
    cmd.args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Xmx512m", "-cp"])
        .arg(java_classpath())
        .arg(class);
    cmd
}

fn create_topics(b: &Broker, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let new: Vec<_> = topics
        .iter()
        .map(|(n, p)| NewTopic::new(n, *p, TopicReplication::Fixed(1)))
        .collect();
    for r in futures_lite::future::block_on(admin.create_topics(&new, &AdminOptions::new()))
        .expect("create")
    {
        r.expect("created");
    }
}

fn produce(b: &Broker, topic: &str, records: &[(String, String)]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .create()
        .expect("producer");
    for (k, v) in records {
        let deadline = Instant::now() + Duration::from_secs(30);
        while p.send(BaseRecord::to(topic).key(k).payload(v)).is_err() {
            assert!(Instant::now() < deadline, "send timed out");
            p.poll(Duration::from_millis(10));
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// Runs a command to its end within `limit` (killed after it); returns (exit 0, output).
fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("out");
    let mut child = cmd
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn java");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status.is_some_and(|s| s.success()), text)
}

fn low_watermarks(b: &Broker, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
        })
        .collect()
}

#[test]
fn kafka_streams_count_restores_from_its_changelog_and_trims_repartition_topics() {
    let b = Broker::start(2, &["log.cleaner.backoff.ms=500"]);
    let app = "count-app";
    create_topics(&b, &[("words", 2), ("counts", 2)]);
    let words = 10;
    let rounds = 5;
    let records = |round: usize| -> Vec<(String, String)> {
        (0..words)
            .map(|w| (format!("id-{round}-{w}"), format!("w{w}")))
            .collect()
    };
    for round in 0..rounds {
        produce(&b, "words", &records(round));
    }
    let state = tempfile::tempdir().expect("state dir");
    let run = |expected: usize| {
        let mut cmd = java("dev.shardlog.clients.StreamsCount");
        cmd.arg(b.bootstrap())
            .arg(app)
            .arg(state.path())
            .args(["words", "counts"])
            .arg(words.to_string())
            .arg(expected.to_string())
            .arg("60000");
        run_bounded(cmd, Duration::from_secs(90))
    };
    let (ok, out) = run(rounds);
    assert!(ok, "first run: {out}");

    // Stop, delete its local state, restart: the store comes back from the changelog, so one
    // more record per word makes every count rounds + 1 (not 1).
    std::fs::remove_dir_all(state.path()).expect("delete state");
    produce(&b, "words", &records(rounds));
    let (ok, out) = run(rounds + 1);
    assert!(ok, "second run: {out}");
    let restored: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("restored "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        restored > 0,
        "the state was restored from the changelog: {out}"
    );

    // Its repartition topic was trimmed with DeleteRecords once the records were consumed.
    let repartition = format!("{app}-by-word-repartition");
    let marks = low_watermarks(&b, &repartition, 2);
    assert!(
        marks.iter().any(|(low, _)| *low > 0),
        "repartition topic not trimmed: {marks:?}"
    );
    let changelog = format!("{app}-counts-changelog");
    assert!(
        low_watermarks(&b, &changelog, 2)
            .iter()
            .all(|(low, _)| *low == 0),
        "the changelog is compacted, never trimmed"
    );
}

/// A Connect worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request on loopback; returns (status, body).
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((status, body))
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn kafka_connect_distributed_copies_a_file_through_a_topic() {
    let b = Broker::start(2, &["log.cleaner.backoff.ms=500"]);
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let props = dir.path().join("worker.properties");
    std::fs::write(
        &props,
        format!(
            "bootstrap.servers={}\n\
             group.id=connect-cluster\n\
             listeners=http://127.0.0.1:{port}\n\
             rest.advertised.host.name=127.0.0.1\n\
             key.converter=org.apache.kafka.connect.storage.StringConverter\n\
             value.converter=org.apache.kafka.connect.storage.StringConverter\n\
             config.storage.topic=connect-configs\n\
             offset.storage.topic=connect-offsets\n\
             status.storage.topic=connect-status\n\
             config.storage.replication.factor=1\n\
             offset.storage.replication.factor=1\n\
             status.storage.replication.factor=1\n\
             offset.flush.interval.ms=500\n",
            b.bootstrap()
        ),
    )
    .expect("worker.properties");
    let log = std::fs::File::create(dir.path().join("worker.log")).expect("log");
    let _worker = Worker(
        java("org.apache.kafka.connect.cli.ConnectDistributed")
            .arg(&props)
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the Connect worker"),
    );
    let worker_log = || std::fs::read_to_string(dir.path().join("worker.log")).unwrap_or_default();
    wait_for("the Connect REST API", Duration::from_secs(60), || {
        matches!(http(port, "GET", "/connectors", ""), Ok((200, _)))
    });

    let input = dir.path().join("in.txt");
    let output = dir.path().join("out.txt");
    let lines: Vec<String> = (0..500)
        .map(|i| format!("line {i}: {}", "é✓ ".repeat(i % 7)))
        .collect();
    let text = lines.join("\n") + "\n";
    std::fs::write(&input, &text).expect("input file");
    let connector = |name: &str, class: &str, extra: &str| {
        let body = format!(
            r#"{{"name":"{name}","config":{{"connector.class":"{class}","tasks.max":"1",{extra}}}}}"#
        );
        let (status, resp) = http(port, "POST", "/connectors", &body).expect("POST");
        assert_eq!(status, 201, "create {name}: {resp}\n{}", worker_log());
    };
    connector(
        "file-source",
        "org.apache.kafka.connect.file.FileStreamSourceConnector",
        &format!(r#""file":"{}","topic":"connect-lines""#, input.display()),
    );
    connector(
        "file-sink",
        "org.apache.kafka.connect.file.FileStreamSinkConnector",
        &format!(r#""file":"{}","topics":"connect-lines""#, output.display()),
    );
    wait_for("the sink file to match", Duration::from_secs(60), || {
        std::fs::read_to_string(&output).is_ok_and(|out| out == text)
    });
    let (status, resp) = http(port, "GET", "/connectors/file-sink/status", "").expect("GET");
    assert_eq!(status, 200, "{resp}");
    assert!(resp.contains("RUNNING"), "{resp}");
}
