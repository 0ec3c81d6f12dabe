//! kill -9 loop: a broker with 2 shards takes acks=all Produce requests from several producer
//! connections (each request covering partitions of both shards), while a reader checks every
//! batch it is served; at a seeded random moment the broker is killed with SIGKILL (or, now and
//! then, stopped with SIGTERM), restarted, and the whole log is read back and checked:
//!
//! - every acknowledged record is present, exactly once, at its acknowledged offset;
//! - offsets run from 0 to the high watermark without a hole, every batch passes its CRC32C;
//! - what a consumer read after one restart is still there, unchanged, after the next;
//! - producing and consuming carry on after the last restart.
//!
//! `SHARDLOG_CRASH_SEED` replays a run's seed (the kill moments, the sizes and the payloads;
//! thread interleavings are the OS's). `SHARDLOG_CRASH_CYCLES` sets the number of cycles
//! (default 20); `scripts/crash-soak --cycles N` runs it in release mode for soak runs.

mod common;
mod rawkafka;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use rawkafka::{encode_batch, seed_from_env, Client, Rng};

const TOPIC: &str = "crash";
/// Partitions 0..4: with 2 shards, ownership alternates (`shard_of` = hash + partition).
const PARTITIONS: i32 = 4;
const PRODUCERS: usize = 4;
const SHARDS: usize = 2;

/// One acknowledged record: where the broker said it is and a digest of its value (the
/// values themselves are not kept, so a long soak's history stays small).
#[derive(Clone, Debug)]
struct Acked {
    partition: i32,
    offset: i64,
    digest: u64,
}

/// A stable digest of a record value (SipHash with fixed keys).
fn digest(v: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The readable prefix of a value (`c<cycle>t<thread>-<seq>-`), for failure messages.
fn show(v: &[u8]) -> String {
    String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned()
}

#[derive(Default)]
struct Counters {
    requests_acked: AtomicU64,
    requests_failed: AtomicU64,
    batches_read: AtomicU64,
}

/// Produces acks=all batches until the connection dies or `stop` is set; returns what the broker
/// acknowledged. A request whose response never came is not acknowledged (and may or may not
/// be in the log, at most once).
fn producer(
    port: u16,
    tag: String,
    seed: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Vec<Acked> {
    let mut rng = Rng::new(seed);
    let mut acked = Vec::new();
    let Ok(mut client) = Client::connect(port, Duration::from_secs(30)) else {
        return acked;
    };
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // One or two partitions per request; two usually means both shards.
        let first = rng.range(0, PARTITIONS as u64) as i32;
        let mut parts = vec![first];
        if rng.chance(0.5) {
            parts.push((first + 1 + rng.range(0, PARTITIONS as u64 - 1) as i32) % PARTITIONS);
        }
        let mut batches = Vec::new();
        let mut values: HashMap<i32, Vec<Bytes>> = HashMap::new();
        for &p in &parts {
            let n = rng.range(1, 6) as usize;
            let vals: Vec<Bytes> = (0..n)
                .map(|_| {
                    seq += 1;
                    let mut v = format!("{tag}-{seq}-").into_bytes();
                    let filler = rng.range(0, 400) as usize;
                    v.extend(std::iter::repeat_n(b'x', filler));
                    Bytes::from(v)
                })
                .collect();
            batches.push((p, encode_batch(&vals)));
            values.insert(p, vals);
        }
        match client.produce(TOPIC, &batches, -1) {
            Ok(resp) => {
                for (p, code, base) in resp {
                    if code != 0 {
                        counters.requests_failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counters.requests_acked.fetch_add(1, Ordering::Relaxed);
                    for (i, v) in values
                        .remove(&p)
                        .unwrap_or_default()
                        .into_iter()
                        .enumerate()
                    {
                        acked.push(Acked {
                            partition: p,
                            offset: base + i as i64,
                            digest: digest(&v),
                        });
                    }
                }
            }
            Err(_) => break, // the broker died under us
        }
    }
    acked
}

/// Fetches random partitions from random known offsets while producers run; every batch served
/// must pass its CRC32C. Returns the first corrupt batch served, if any.
fn reader(port: u16, seed: u64, stop: Arc<AtomicBool>, counters: Arc<Counters>) -> Option<String> {
    let mut rng = Rng::new(seed);
    let mut client = Client::connect(port, Duration::from_secs(30)).ok()?;
    let mut hw = [0i64; PARTITIONS as usize];
    while !stop.load(Ordering::Relaxed) {
        let p = rng.range(0, PARTITIONS as u64) as i32;
        let offset = if hw[p as usize] > 0 {
            rng.range(0, hw[p as usize] as u64 + 1) as i64
        } else {
            0
        };
        match client.fetch(TOPIC, p, offset, rng.range(1, 256 << 10) as i32) {
            Ok(f) => {
                hw[p as usize] = hw[p as usize].max(f.high_watermark);
                counters.batches_read.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Some(e.to_string()),
            Err(_) => return None,
        }
    }
    None
}

/// Everything checked so far: the acknowledged records and the log as last read back.
struct History {
    acked: Vec<Acked>,
    /// Per partition, the digests of the values at offsets 0.. as read after the last restart.
    seen: Vec<Vec<u64>>,
    /// Broker logs of earlier runs (the file is rewritten at each start).
    logs: String,
}

/// Reads every partition back and checks it against the history (see the module docs).
fn verify(port: u16, h: &mut History) -> Result<(), String> {
    let mut client =
        Client::connect(port, Duration::from_secs(30)).map_err(|e| format!("connect: {e}"))?;
    let mut logs = Vec::new();
    let mut values = Vec::new();
    for p in 0..PARTITIONS {
        let log = client
            .read_all(TOPIC, p)
            .map_err(|e| format!("read back: {e}"))?;
        let digests: Vec<u64> = log.iter().map(|(_, v)| digest(v)).collect();
        let prev = &h.seen[p as usize];
        if digests.len() < prev.len() {
            return Err(format!(
                "partition {p}: log shrank from {} to {} records across a restart",
                prev.len(),
                digests.len()
            ));
        }
        if let Some(i) = (0..prev.len()).find(|&i| prev[i] != digests[i]) {
            return Err(format!(
                "partition {p}: offset {i} changed across a restart (now {:?})",
                show(&log[i].1)
            ));
        }
        let mut first_at: HashMap<u64, usize> = HashMap::new();
        for (i, d) in digests.iter().enumerate() {
            if let Some(j) = first_at.insert(*d, i) {
                return Err(format!(
                    "partition {p}: value {:?} stored twice, at offsets {j} and {i}",
                    show(&log[i].1)
                ));
            }
        }
        logs.push(digests);
        values.push(log);
    }
    for a in &h.acked {
        let part = &logs[a.partition as usize];
        match part.get(a.offset as usize) {
            Some(d) if *d == a.digest => {}
            Some(_) => {
                let holder = &values[a.partition as usize][a.offset as usize].1;
                let elsewhere = part.iter().position(|d| *d == a.digest);
                return Err(format!(
                    "LOST: partition {} offset {}: acknowledged value not there (it holds {:?}; \
                     the acknowledged value is at {elsewhere:?})",
                    a.partition,
                    a.offset,
                    show(holder)
                ));
            }
            None => {
                return Err(format!(
                    "LOST: partition {} offset {} acknowledged, but the log ends at {}",
                    a.partition,
                    a.offset,
                    part.len()
                ))
            }
        }
    }
    h.seen = logs;
    Ok(())
}

/// After the last restart: one more acks=all record per partition lands right at the end of
/// the log and reads back.
fn carry_on(port: u16, h: &mut History) -> Result<(), String> {
    let mut client =
        Client::connect(port, Duration::from_secs(30)).map_err(|e| format!("connect: {e}"))?;
    for p in 0..PARTITIONS {
        let v = Bytes::from(format!("carry-on-{p}"));
        let resp = client
            .produce(TOPIC, &[(p, encode_batch(std::slice::from_ref(&v)))], -1)
            .map_err(|e| format!("produce after restart: {e}"))?;
        let (_, code, base) = resp[0];
        let expected = h.seen[p as usize].len() as i64;
        if code != 0 || base != expected {
            return Err(format!(
                "partition {p}: produce after restart gave error {code} at offset {base}, \
                 expected offset {expected}"
            ));
        }
        let f = client
            .fetch(TOPIC, p, base, 1 << 20)
            .map_err(|e| format!("fetch after restart: {e}"))?;
        if f.records.first() != Some(&(base, v.clone())) {
            return Err(format!(
                "partition {p}: record produced after restart not read back"
            ));
        }
        h.acked.push(Acked {
            partition: p,
            offset: base,
            digest: digest(&v),
        });
        h.seen[p as usize].push(digest(&v));
    }
    Ok(())
}

struct Summary {
    cycles: usize,
    acked_records: usize,
    acked_requests: u64,
    failed_partition_writes: u64,
    batches_read: u64,
    clean_stops: usize,
    elapsed: Duration,
}

fn run(seed: u64, cycles: usize) -> Summary {
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let mut b = Broker::start(
        SHARDS,
        &[
            "log.preallocate.bytes=1048576",
            // Small segments: recovery also crosses rolled segments and their index files.
            "log.segment.bytes=262144",
            "log.index.interval.bytes=1024",
            // Keep everything: the checks read the whole log back.
            "log.retention.ms=-1",
            "offsets.topic.num.partitions=1",
        ],
    );
    let port = b.port;
    let mut admin = Client::connect(port, Duration::from_secs(30)).expect("connect");
    assert_eq!(admin.create_topic(TOPIC, PARTITIONS).expect("create"), 0);
    drop(admin);
    let mut h = History {
        acked: Vec::new(),
        seen: vec![Vec::new(); PARTITIONS as usize],
        logs: String::new(),
    };
    let counters = Arc::new(Counters::default());
    let mut clean_stops = 0;
    let fail = |b: &Broker, h: &History, cycle: usize, msg: String| -> ! {
        // Is the broker still alive (a crash without a message shows as a zombie here)?
        let state = b
            .running_pid()
            .map(|pid| {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let state = status
                    .lines()
                    .find(|l| l.starts_with("State:"))
                    .unwrap_or("State: gone")
                    .to_string();
                format!("pid {pid} {state}\n{}", common::thread_dump(pid))
            })
            .unwrap_or_else(|| "not running".into());
        panic!(
            "cycle {cycle} (seed {seed}): {msg}\n--- broker process: {state}\n\
             --- earlier broker logs (tail) ---\n{}\n--- current broker log ---\n{}",
            tail(&h.logs, 6000),
            tail(&b.log(), 6000)
        )
    };
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let mut producers = Vec::new();
        for t in 0..PRODUCERS {
            let (stop, counters) = (stop.clone(), counters.clone());
            let tag = format!("c{cycle}t{t}");
            let s = rng.next_u64();
            producers.push(std::thread::spawn(move || {
                producer(port, tag, s, stop, counters)
            }));
        }
        let reader_thread = {
            let (stop, counters) = (stop.clone(), counters.clone());
            let s = rng.next_u64();
            std::thread::spawn(move || reader(port, s, stop, counters))
        };
        let delay = rng.range(20, 700);
        std::thread::sleep(Duration::from_millis(delay));
        // Now and then a clean stop (SIGTERM), always once: the clean-shutdown path too.
        let clean = cycle == 1 || rng.chance(0.1);
        if clean {
            clean_stops += 1;
            let code = b.stop();
            if code != Some(0) {
                fail(&b, &h, cycle, format!("SIGTERM stop exited with {code:?}"));
            }
        } else {
            b.kill9();
        }
        stop.store(true, Ordering::Relaxed);
        for p in producers {
            h.acked.extend(p.join().expect("producer thread"));
        }
        if let Some(bad) = reader_thread.join().expect("reader thread") {
            fail(&b, &h, cycle, bad);
        }
        h.logs
            .push_str(&format!("=== run ending in cycle {cycle} ===\n"));
        h.logs.push_str(&b.log());
        b.restart();
        if let Err(msg) = verify(port, &mut h) {
            fail(&b, &h, cycle, msg);
        }
        eprintln!(
            "cycle {cycle}: {} after {delay} ms; {} records acknowledged so far, all present",
            if clean { "SIGTERM" } else { "SIGKILL" },
            h.acked.len()
        );
    }
    if let Err(msg) = carry_on(port, &mut h) {
        fail(&b, &h, cycles, msg);
    }
    if let Err(msg) = verify(port, &mut h) {
        fail(&b, &h, cycles, msg);
    }
    assert_eq!(b.stop(), Some(0), "clean stop at the end");
    Summary {
        cycles,
        acked_records: h.acked.len(),
        acked_requests: counters.requests_acked.load(Ordering::Relaxed),
        failed_partition_writes: counters.requests_failed.load(Ordering::Relaxed),
        batches_read: counters.batches_read.load(Ordering::Relaxed),
        clean_stops,
        elapsed: start.elapsed(),
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

#[test]
fn kill9_loop_keeps_every_acknowledged_record() {
    let seed = seed_from_env("SHARDLOG_CRASH_SEED");
    let cycles = std::env::var("SHARDLOG_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let s = run(seed, cycles);
    // The summary line scripts/crash-soak reports (lost is 0 or the test has failed above).
    println!(
        "crash-soak summary: seed={seed} cycles={} (sigterm {}) records_acknowledged={} \
         partition_writes_acknowledged={} partition_writes_refused={} fetches_checked={} \
         lost=0 duplicated=0 corrupt_served=0 elapsed={:.1}s",
        s.cycles,
        s.clean_stops,
        s.acked_records,
        s.acked_requests,
        s.failed_partition_writes,
        s.batches_read,
        s.elapsed.as_secs_f64()
    );
}
