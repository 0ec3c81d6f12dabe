//! Hostile clients, bounded: thousands of idle connections, a client that sends its request
//! one byte at a time, a client that pipelines 1,000 requests and never reads a response, and
//! length prefixes that announce huge (or negative) frames. Meanwhile a well-behaved client
//! keeps producing with acks=all and reading back; nothing it was acknowledged may be lost, its
//! requests keep completing, and the broker's resident memory stays bounded.
//!
//! The tests in this file run one at a time (they measure the broker's RSS and use many fds).

mod common;
mod rawkafka;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest};
use rawkafka::{encode_batch, raise_fd_limit, rss_kib, Client};

static SERIAL: Mutex<()> = Mutex::new(());

const TOPIC: &str = "good";
const PARTITIONS: i32 = 2;
/// Slowest acceptable acks=all round trip of the well-behaved client while under attack
/// (debug build, shared 2-core machine: generous; an attack that stalls a shard blows it).
const GOOD_CLIENT_MAX_LATENCY_MS: u128 = 5_000;

fn start() -> Broker {
    let b = Broker::start(
        2,
        &[
            "log.preallocate.bytes=1048576",
            "offsets.topic.num.partitions=1",
        ],
    );
    let mut c = Client::connect(b.port, Duration::from_secs(20)).expect("connect");
    assert_eq!(c.create_topic(TOPIC, PARTITIONS).expect("create"), 0);
    b
}

/// What the well-behaved client saw.
struct GoodReport {
    acked: Vec<(i32, i64, Bytes)>,
    max_latency_ms: u128,
    requests: usize,
}

/// Produces acks=all (both shards' partitions, one request each) and reads each record back,
/// until `stop`; any error fails the test.
fn good_client(port: u16, stop: Arc<AtomicBool>) -> GoodReport {
    let mut c = Client::connect(port, Duration::from_secs(30)).expect("good client connects");
    let mut acked = Vec::new();
    let mut max_latency_ms = 0;
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) || n < 10 {
        let p = (n % PARTITIONS as usize) as i32;
        let v = Bytes::from(format!("good-{n}"));
        let t = Instant::now();
        let resp = c
            .produce(TOPIC, &[(p, encode_batch(std::slice::from_ref(&v)))], -1)
            .expect("good client produce");
        let (_, code, base) = resp[0];
        assert_eq!(code, 0, "good client produce error");
        let f = c.fetch(TOPIC, p, base, 1 << 20).expect("good client fetch");
        assert_eq!(f.records.first(), Some(&(base, v.clone())));
        max_latency_ms = max_latency_ms.max(t.elapsed().as_millis());
        acked.push((p, base, v));
        n += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    GoodReport {
        acked,
        max_latency_ms,
        requests: n,
    }
}

/// Runs `attack` while the good client works, then checks the good client's records.
fn under_attack(b: &Broker, name: &str, attack: impl FnOnce()) -> GoodReport {
    let stop = Arc::new(AtomicBool::new(false));
    let good = {
        let (port, stop) = (b.port, stop.clone());
        std::thread::spawn(move || good_client(port, stop))
    };
    attack();
    stop.store(true, Ordering::Relaxed);
    let report = good.join().expect("good client");
    let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    for p in 0..PARTITIONS {
        let log = c.read_all(TOPIC, p).expect("read back");
        for (ap, off, v) in report.acked.iter().filter(|(ap, _, _)| *ap == p) {
            assert_eq!(
                log.get(*off as usize),
                Some(&(*off, v.clone())),
                "{name}: acknowledged record lost at {ap}/{off}"
            );
        }
    }
    assert!(
        report.max_latency_ms < GOOD_CLIENT_MAX_LATENCY_MS,
        "{name}: the good client waited {} ms",
        report.max_latency_ms
    );
    eprintln!(
        "{name}: good client made {} acks=all round trips, slowest {} ms, broker RSS {} KiB",
        report.requests,
        report.max_latency_ms,
        rss_kib(b.pid())
    );
    report
}

fn api_versions_frame(c: &mut Client) -> Vec<u8> {
    c.frame(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .1
}

#[test]
fn thousands_of_idle_connections() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let limit = raise_fd_limit();
    // The broker inherits our limit, gives connections their share of it (the open-file
    // budget) and closes connections beyond that at accept: stay at 90% of what it admits
    // over its 2 shards.
    let admitted = (shardlog::server::fd_budget::FdBudget::split(limit, 2)
        .connections_per_shard_max
        * 2) as u64;
    let target = (admitted * 9 / 10).min(10_000) as usize;
    eprintln!("fd limit {limit}: opening {target} idle connections");
    let b = start();
    let rss_before = rss_kib(b.pid());
    let mut idle = Vec::with_capacity(target);
    under_attack(&b, "idle connections", || {
        for i in 0..target {
            match TcpStream::connect(("127.0.0.1", b.port)) {
                Ok(s) => idle.push(s),
                Err(e) => panic!("connection {i} refused: {e}"),
            }
        }
        // Let the broker accept them all.
        std::thread::sleep(Duration::from_millis(1500));
    });
    let rss_after = rss_kib(b.pid());
    let per_conn = (rss_after.saturating_sub(rss_before)) * 1024 / target.max(1) as u64;
    eprintln!(
        "{target} idle connections: broker RSS {rss_before} -> {rss_after} KiB ({per_conn} bytes each)"
    );
    // Every idle connection is still served: a request on a few of them gets its answer.
    for s in idle.iter_mut().step_by(target.max(10) / 10) {
        let mut c = Client::from_stream(s.try_clone().expect("clone"));
        let f = api_versions_frame(&mut c);
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(&f).expect("send on an idle connection");
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("idle connection answered");
    }
    assert!(
        per_conn < 16 * 1024,
        "an idle connection costs {per_conn} bytes of broker RSS"
    );
}

#[test]
fn one_byte_at_a_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = start();
    under_attack(&b, "slow sender", || {
        let mut slow: Vec<TcpStream> = (0..20)
            .map(|_| TcpStream::connect(("127.0.0.1", b.port)).expect("connect"))
            .collect();
        let mut c = Client::connect(b.port, Duration::from_secs(10)).expect("connect");
        let frame = c.frame(ApiKey::Metadata, 12, &MetadataRequest::default()).1;
        for byte in &frame {
            for s in slow.iter_mut() {
                s.write_all(std::slice::from_ref(byte)).expect("one byte");
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        // The slow requests were legitimate: each gets its answer.
        for s in slow.iter_mut() {
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            let mut len = [0u8; 4];
            s.read_exact(&mut len).expect("slow request answered");
        }
    });
}

#[test]
fn pipelined_requests_never_read() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = start();
    let rss_before = rss_kib(b.pid());
    under_attack(&b, "pipeline without reading", || {
        let mut handles = Vec::new();
        for t in 0..4 {
            let port = b.port;
            handles.push(std::thread::spawn(move || {
                let mut c = Client::connect(port, Duration::from_secs(5)).expect("connect");
                c.stream
                    .set_write_timeout(Some(Duration::from_secs(3)))
                    .expect("timeout");
                let mut sent = 0;
                for i in 0..1000 {
                    // Fetches of up to 1 MiB and produces: big responses, never read.
                    let frame = if i % 2 == 0 {
                        c.frame(
                            ApiKey::Fetch,
                            rawkafka::FETCH_VERSION,
                            &Client::fetch_request(TOPIC, i % PARTITIONS, 0, 1 << 20, 0),
                        )
                        .1
                    } else {
                        let v = Bytes::from(vec![b'p'; 10_000]);
                        c.frame(
                            ApiKey::Produce,
                            rawkafka::PRODUCE_VERSION,
                            &Client::produce_request(
                                TOPIC,
                                &[(i % PARTITIONS, encode_batch(&[v]))],
                                1,
                            ),
                        )
                        .1
                    };
                    if c.stream.write_all(&frame).is_err() {
                        break; // the broker stopped reading us: backpressure
                    }
                    sent += 1;
                }
                eprintln!("pipeliner {t}: {sent} requests written, no response read");
                // Hold the connection a moment, unread, while the good client works.
                std::thread::sleep(Duration::from_millis(1000));
                c
            }));
        }
        let conns: Vec<Client> = handles
            .into_iter()
            .map(|h| h.join().expect("pipeliner"))
            .collect();
        drop(conns);
    });
    let rss_after = rss_kib(b.pid());
    eprintln!("pipelining: broker RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after.saturating_sub(rss_before) < 256 * 1024,
        "4 clients that never read made the broker grow by {} KiB",
        rss_after - rss_before
    );
}

#[test]
fn huge_and_negative_length_prefixes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = start();
    let rss_before = rss_kib(b.pid());
    let mut held = Vec::new();
    under_attack(&b, "huge length prefixes", || {
        // Over the limit, negative, zero: the connection is closed, nothing else happens.
        for size in [i32::MAX, -1, i32::MIN, 0, 3, 200 * 1024 * 1024] {
            let mut s = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(&size.to_be_bytes()).expect("prefix");
            let mut buf = [0u8; 8];
            match s.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                other => panic!("length prefix {size}: expected close, got {other:?}"),
            }
        }
        // Just under socket.request.max.bytes (100 MiB), then a trickle: legal, so the broker
        // waits for the rest; it must not reserve the announced size up front, per connection.
        for _ in 0..24 {
            let mut s = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
            s.write_all(&(100 * 1024 * 1024 - 1i32).to_be_bytes())
                .expect("prefix");
            s.write_all(&[0, 18, 0, 3, 0, 0, 0, 1]).expect("a header");
            held.push(s);
        }
        std::thread::sleep(Duration::from_millis(1500));
    });
    let rss_after = rss_kib(b.pid());
    eprintln!("24 connections announcing ~100 MiB: broker RSS {rss_before} -> {rss_after} KiB");
    assert!(
        rss_after.saturating_sub(rss_before) < 256 * 1024,
        "announced-but-unsent request bytes grew the broker by {} KiB",
        rss_after - rss_before
    );
    drop(held);
}

/// Request bodies made of array lengths near 2^31 (or compact ones near 2^32): a decoder that
/// reserves what a count announces before reading the elements would ask for hundreds of GB.
/// Every supported API, at its lowest and highest version; the broker must refuse them (close
/// the connection) and live on.
#[test]
fn absurd_array_counts_in_every_request_type() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = start();
    let rss_before = rss_kib(b.pid());
    under_attack(&b, "absurd array counts", || {
        for api in shardlog::server::SUPPORTED_APIS {
            let key = api.key;
            for version in [api.min_version, api.max_version] {
                let flexible = key.request_header_version(version) >= 2;
                let mut frame = Vec::new();
                frame.extend_from_slice(&(key as i16).to_be_bytes());
                frame.extend_from_slice(&version.to_be_bytes());
                frame.extend_from_slice(&99i32.to_be_bytes());
                frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
                if flexible {
                    frame.push(0); // no tagged fields
                }
                for _ in 0..8 {
                    if flexible {
                        frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
                    } else {
                        frame.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
                    }
                }
                let mut s = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .expect("timeout");
                s.write_all(&(frame.len() as i32).to_be_bytes())
                    .expect("size");
                s.write_all(&frame).expect("frame");
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf); // an error response or a close: both fine
                assert!(
                    std::path::Path::new(&format!("/proc/{}", b.pid())).exists()
                        && !std::fs::read_to_string(format!("/proc/{}/status", b.pid()))
                            .unwrap_or_default()
                            .contains("zombie"),
                    "{key:?} v{version}: the broker died: {}",
                    b.log()
                );
            }
        }
    });
    let rss_after = rss_kib(b.pid());
    eprintln!("absurd array counts: broker RSS {rss_before} -> {rss_after} KiB");
    assert!(rss_after.saturating_sub(rss_before) < 256 * 1024);
}

/// A client writing garbage into `__consumer_offsets` must not poison the group state that is
/// replayed from it at the next start: the write is refused with INVALID_TOPIC_EXCEPTION (as
/// Kafka refuses client appends to internal topics), and the broker restarts and serves.
#[test]
fn garbage_written_to_the_offsets_topic_does_not_poison_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = start();
    let mut c = Client::connect(b.port, Duration::from_secs(20)).expect("connect");
    // Keys and values that are not Kafka's group record schemas.
    let junk: Vec<Bytes> = (0..5u8)
        .map(|i| Bytes::from(vec![i, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, i]))
        .collect();
    let resp = c
        .produce("__consumer_offsets", &[(0, encode_batch(&junk))], -1)
        .expect("produce to the offsets topic");
    assert_eq!(
        resp[0].1, 17,
        "INVALID_TOPIC_EXCEPTION, as Kafka answers client appends to internal topics: {resp:?}"
    );
    drop(c);
    b.kill9();
    b.restart();
    let mut c = Client::connect(b.port, Duration::from_secs(20)).expect("connect");
    let v = Bytes::from_static(b"still serving");
    let resp = c
        .produce(TOPIC, &[(0, encode_batch(std::slice::from_ref(&v)))], -1)
        .expect("produce after restart");
    assert_eq!(resp[0].1, 0, "{}", b.log());
}

/// A two-shard broker with `setting` on top of small preallocation and one offsets partition,
/// and `TOPIC` holding `batches` one-record batches of `value_len` bytes in partition 0
/// (acks=1, each acknowledged); returns it with the producing client.
fn broker_with_batches(setting: &str, value_len: usize, batches: usize) -> (Broker, Client) {
    let b = Broker::start(
        2,
        &[
            "log.preallocate.bytes=1048576",
            "offsets.topic.num.partitions=1",
            setting,
        ],
    );
    let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    assert_eq!(c.create_topic(TOPIC, PARTITIONS).expect("create"), 0);
    let v = Bytes::from(vec![b'v'; value_len]);
    for _ in 0..batches {
        let r = c
            .produce(TOPIC, &[(0, encode_batch(std::slice::from_ref(&v)))], 1)
            .expect("produce");
        assert_eq!(r[0].1, 0);
    }
    (b, c)
}

/// Sets this process's soft fd limit (children inherit it); returns the previous one.
fn set_soft_fd_limit(soft: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let old = lim.rlim_cur;
        lim.rlim_cur = soft.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        old
    }
}

/// A connection flood past the broker's file descriptor limit must not take the descriptors
/// its logs need: a client connected before the flood keeps producing acks=all through
/// segment rolls (new files), and nothing acknowledged is lost.
#[test]
fn connection_flood_past_the_fd_limit_does_not_starve_the_logs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    raise_fd_limit();
    // The broker gets a small limit; this process keeps a large one for the flood.
    let old = set_soft_fd_limit(1024);
    let b = Broker::start(
        2,
        &[
            "log.preallocate.bytes=1048576",
            "offsets.topic.num.partitions=1",
            // Small segments: the good client's writes keep opening new files.
            "log.segment.bytes=16384",
        ],
    );
    set_soft_fd_limit(old.max(4096));
    let mut c = Client::connect(b.port, Duration::from_secs(20)).expect("connect");
    assert_eq!(c.create_topic(TOPIC, PARTITIONS).expect("create"), 0);
    drop(c);
    under_attack(&b, "connection flood past the fd limit", || {
        let mut flood = Vec::new();
        for _ in 0..1500 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", b.port)) {
                flood.push(s);
            }
        }
        std::thread::sleep(Duration::from_millis(2500));
        eprintln!("{} flood connections opened", flood.len());
        // Close them before the read-back, which needs a connection of its own.
        drop(flood);
        std::thread::sleep(Duration::from_millis(500));
    });
}

/// `shard.fetch.memory.bytes` given to the broker in the test below (over its 2 shards).
const FETCH_MEMORY_BYTES: u64 = 32 << 20;
/// Connections that pipeline Fetches for gigabytes and never read, in the test below.
const GREEDY_CONNECTIONS: usize = 16;
/// The biggest batch of the log read in the test below (1,000,000 bytes of value + overhead).
const GREEDY_BATCH_BYTES: u64 = 1 << 20;
/// Room for everything else the broker allocates meanwhile (the well-behaved client's traffic,
/// transient read and copy buffers, allocator slack).
const RSS_SLACK_BYTES: u64 = 48 << 20;
/// The bound: the fetch memory budget, plus one overdrawn first batch per connection (each
/// connection has at most one Fetch read in progress), plus slack. Without the budget and the
/// mute, 16 connections x 32 fetches x 16 MiB would be 8 GiB.
const GREEDY_RSS_GROWTH_MAX_BYTES: u64 =
    FETCH_MEMORY_BYTES + GREEDY_CONNECTIONS as u64 * GREEDY_BATCH_BYTES + RSS_SLACK_BYTES;

/// A field of /proc/PID/status in KiB (VmRSS: resident now; VmHWM: the peak).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Fetches that ask for gigabytes (partition and response `max_bytes` of `i32::MAX`) from the
/// start of a 16 MiB log that is on disk only (after a restart), pipelined 32 deep on 16
/// connections that never read. Each connection is muted once its unsent responses pass
/// `connection.response.buffer.bytes`, serves one Fetch at a time, and the disk reads of all
/// fetches are bounded by `shard.fetch.memory.bytes` (plus one first batch each): the broker's
/// resident memory, now and at its peak, stays under [`GREEDY_RSS_GROWTH_MAX_BYTES`] above
/// where it started, while a well-behaved client keeps producing (acks=all) and fetching.
#[test]
fn fetches_asking_for_gigabytes_stay_bounded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let b = Broker::start(
        2,
        &[
            "log.preallocate.bytes=1048576",
            "offsets.topic.num.partitions=1",
            &format!("shard.fetch.memory.bytes={FETCH_MEMORY_BYTES}"),
        ],
    );
    let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    assert_eq!(c.create_topic(TOPIC, PARTITIONS).expect("create"), 0);
    let big = Bytes::from(vec![b'z'; 1_000_000]);
    for _ in 0..16 {
        let r = c
            .produce(TOPIC, &[(0, encode_batch(std::slice::from_ref(&big)))], 1)
            .expect("produce");
        assert_eq!(r[0].1, 0);
    }
    drop(c);
    let mut b = b;
    assert_eq!(b.stop(), Some(0));
    b.restart(); // the log is on disk only: every fetch of it is a disk read
    let pid = b.pid();
    let rss_before = status_kib(pid, "VmRSS:");
    let mut greedy = Vec::new();
    under_attack(&b, "fetches asking for gigabytes", || {
        for _ in 0..GREEDY_CONNECTIONS {
            let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
            for _ in 0..32 {
                let req = Client::fetch_request(TOPIC, 0, 0, i32::MAX, 0).with_max_bytes(i32::MAX);
                let f = c.frame(ApiKey::Fetch, rawkafka::FETCH_VERSION, &req).1;
                c.stream.write_all(&f).expect("pipeline");
            }
            greedy.push(c);
        }
        // Let every connection's fetches be served as far as the broker will.
        std::thread::sleep(Duration::from_millis(3000));
    });
    let rss_after = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    let bound_kib = GREEDY_RSS_GROWTH_MAX_BYTES / 1024;
    eprintln!(
        "{GREEDY_CONNECTIONS} connections x 32 unread fetches of a 16 MiB log: broker RSS \
         {rss_before} -> {rss_after} KiB, peak {hwm} KiB; bound {bound_kib} KiB above the start"
    );
    // The greedy clients were served, not refused: the first response on a connection carries
    // the log from its start.
    let first = &mut greedy[0].stream;
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let frame = common::read_frame(first).expect("a greedy client's first response");
    assert!(
        frame.len() > 1_000_000,
        "first response of {} bytes: not even one batch",
        frame.len()
    );
    assert!(
        rss_after.saturating_sub(rss_before) < bound_kib,
        "in-flight fetch responses grew the broker by {} KiB (bound {bound_kib} KiB)",
        rss_after.saturating_sub(rss_before)
    );
    assert!(
        hwm.saturating_sub(rss_before) < bound_kib,
        "the broker's peak RSS was {} KiB above the start (bound {bound_kib} KiB)",
        hwm.saturating_sub(rss_before)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    drop(greedy);
}

/// `fetch.max.bytes` caps what one Fetch may ask (here 150,000 bytes against `i32::MAX`),
/// from the batch cache and from disk alike; the first batch still goes out whole when it is
/// larger than the client's limit (KIP-74), so a consumer always makes progress.
#[test]
fn fetch_max_bytes_caps_what_a_fetch_may_ask() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (mut b, mut c) = broker_with_batches("fetch.max.bytes=150000", 100_000, 4);
    let check = |c: &mut Client, from: &str| {
        let f = c.fetch(TOPIC, 0, 0, i32::MAX).expect("fetch");
        assert_eq!(f.error_code, 0);
        assert_eq!(f.high_watermark, 4);
        assert_eq!(
            f.records.len(),
            1,
            "{from}: two 100 kB batches pass fetch.max.bytes=150000"
        );
        let f = c.fetch(TOPIC, 0, 1, 1000).expect("fetch");
        assert_eq!(
            f.records.first().map(|r| r.0),
            Some(1),
            "{from}: the first batch goes out whole past max_bytes"
        );
    };
    check(&mut c, "batch cache");
    drop(c);
    assert_eq!(b.stop(), Some(0));
    b.restart();
    let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    check(&mut c, "disk");
}

/// A connection muted because its client does not read its responses is closed after
/// `connections.max.idle.ms` (here 1 s) without progress, and its responses' memory freed; the
/// broker keeps serving others.
#[test]
fn a_client_that_never_reads_is_closed_after_the_idle_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (b, c) = broker_with_batches("connections.max.idle.ms=1000", 1_000_000, 16);
    // 32 responses of 16 MB (from the batch cache): far more than the socket buffers hold.
    let mut greedy = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    for _ in 0..32 {
        let req = Client::fetch_request(TOPIC, 0, 0, i32::MAX, 0).with_max_bytes(i32::MAX);
        let f = greedy.frame(ApiKey::Fetch, rawkafka::FETCH_VERSION, &req).1;
        greedy.stream.write_all(&f).expect("pipeline");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !b.log().contains("responses not read") {
        assert!(
            Instant::now() < deadline,
            "the muted connection was not closed: {}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // (`c` sat idle past the same limit and was closed too: a new connection.)
    drop(c);
    let mut c = Client::connect(b.port, Duration::from_secs(30)).expect("connect");
    let v = Bytes::from_static(b"after");
    let r = c
        .produce(TOPIC, &[(1, encode_batch(std::slice::from_ref(&v)))], -1)
        .expect("produce after");
    assert_eq!(r[0].1, 0);
    let f = c.fetch(TOPIC, 1, r[0].2, 1 << 20).expect("fetch after");
    assert_eq!(f.records.first(), Some(&(r[0].2, v)));
    drop(greedy);
}

#[test]
fn a_log_that_cannot_be_written_does_not_stop_the_broker() {
    // /dev/full fails every write with ENOSPC, like a log redirected to a full disk.
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        eprintln!("SKIPPED: this machine has no /dev/full");
        return;
    }
    let b = Broker::start_logging_to(2, &["log.preallocate.bytes=1048576"], full);
    let mut c = Client::connect(b.port, Duration::from_secs(20)).expect("connect");
    assert_eq!(c.create_topic("logless", 2).expect("create"), 0);
    let mut want = Vec::new();
    for i in 0..50 {
        let v = Bytes::from(format!("record-{i}"));
        let acked = c
            .produce(
                "logless",
                &[(i % 2, encode_batch(std::slice::from_ref(&v)))],
                -1,
            )
            .expect("produce");
        assert_eq!(acked[0].1, 0, "produce {i}: error {}", acked[0].1);
        want.push(v);
    }
    let mut got: Vec<Bytes> = (0..2)
        .flat_map(|p| c.read_all("logless", p).expect("read back"))
        .map(|(_, v)| v)
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Still serving after all the log lines it could not write.
    let mut fresh = Client::connect(b.port, Duration::from_secs(20)).expect("connect again");
    assert_eq!(fresh.create_topic("logless-2", 1).expect("create"), 0);
}
