//! End to end: a broker started with `--metrics-listen` serves Prometheus text that parses
//! with prometheus_client, and its per-partition counters move by what this test produced
//! and consumed. Skipped (with a message) while `serve` has no `--metrics-listen` flag.

mod ops_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

const TOPIC: &str = "metrics-e2e";
const RECORDS: usize = 200;
const VALUE_BYTES: usize = 1000;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn wait_port(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("broker exited early: {status}");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} did not open");
}

/// `GET /metrics` over plain HTTP/1.1; returns the body after checking status and type.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read response");
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// Sum of a family's samples whose labels include `topic="TOPIC"`.
fn topic_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("topic=\"{TOPIC}\"")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn api_requests(text: &str, api: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("shardlog_requests_total{"))
        .filter(|l| l.contains(&format!("api=\"{api}\"")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn parse_with_prometheus_client(text: &str) {
    let Some(python) = ops_support::venv_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, text).expect("write scrape");
    let out = Command::new(python)
        .arg(ops_support::repo().join("tests/tools/parse_prometheus.py"))
        .arg(&file)
        .output()
        .expect("run parser");
    assert!(
        out.status.success(),
        "prometheus_client refused the scrape: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_endpoint_counts_what_was_produced_and_fetched() {
    let help = ops_support::shardlog()
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    if !String::from_utf8_lossy(&help.stdout).contains("--metrics-listen") {
        eprintln!("SKIPPED: `shardlog serve` has no --metrics-listen flag yet");
        return;
    }
    let base = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("target tmpdir");
    let data = tempfile::tempdir_in(base).expect("data dir"); // ext4 here, not tmpfs
    let (kafka, metrics) = (free_port(), free_port());
    let child = ops_support::shardlog()
        .arg("serve")
        .arg(format!("--listen=127.0.0.1:{kafka}"))
        .arg(format!("--metrics-listen=127.0.0.1:{metrics}"))
        .arg("--data-dir")
        .arg(data.path())
        .args(["--cores", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start broker");
    let mut broker = Killed(child);
    wait_port(kafka, &mut broker.0);
    wait_port(metrics, &mut broker.0);

    let before = scrape(metrics);
    parse_with_prometheus_client(&before);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka}"))
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("enable.idempotence", "false")
        .set("compression.type", "none")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer");
    let value = vec![b'x'; VALUE_BYTES];
    for i in 0..RECORDS {
        let key = i.to_string();
        producer
            .send(BaseRecord::to(TOPIC).key(&key).payload(&value))
            .expect("enqueue");
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka}"))
        .set("group.id", "metrics-e2e")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed < RECORDS && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            assert_eq!(m.payload().map(<[u8]>::len), Some(VALUE_BYTES));
            consumed += 1;
        }
    }
    assert_eq!(consumed, RECORDS);

    let after = scrape(metrics);
    parse_with_prometheus_client(&after);
    let delta = |name: &str| topic_sum(&after, name) - topic_sum(&before, name);
    assert_eq!(
        delta("shardlog_partition_produced_records_total"),
        RECORDS as f64
    );
    let produced_bytes = delta("shardlog_partition_produced_bytes_total");
    assert!(
        produced_bytes >= (RECORDS * VALUE_BYTES) as f64
            && produced_bytes < (RECORDS * (VALUE_BYTES + 200)) as f64,
        "produced bytes {produced_bytes}"
    );
    assert!(delta("shardlog_partition_fetched_records_total") >= RECORDS as f64);
    assert!(delta("shardlog_partition_fetched_bytes_total") >= (RECORDS * VALUE_BYTES) as f64);
    assert!(api_requests(&after, "Produce") > api_requests(&before, "Produce"));
    assert!(api_requests(&after, "Fetch") > api_requests(&before, "Fetch"));
}
