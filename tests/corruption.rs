//! Damage on disk, done to a stopped broker's files: flipped bytes, truncation and garbage in
//! the segments, deleted or lying indexes, a damaged metadata snapshot. On start the broker
//! must truncate the log at the first bad batch (and say so), rebuild indexes, refuse a damaged
//! metadata snapshot with a message naming the file, and never serve a corrupt batch: readers
//! get a valid prefix (every batch CRC-checked here, by the client), then an error or the end.
//!
//! Byte positions are drawn from a seeded generator (`SHARDLOG_CORRUPTION_SEED` replays).

mod common;
mod rawkafka;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Broker;
use rawkafka::{encode_batch, seed_from_env, Client, Rng};

const TOPIC: &str = "t";
const BATCHES: usize = 40;
const PER_BATCH: usize = 3;
const KAFKA_STORAGE_ERROR: i16 = 56;

/// Properties for every broker here: small files, index entries every ~2 batches.
const PROPS: &[&str] = &[
    "log.preallocate.bytes=1048576",
    "log.index.interval.bytes=512",
    "offsets.topic.num.partitions=1",
];

fn value(batch: usize, record: usize) -> Bytes {
    let mut v = format!("b{batch}-r{record}-").into_bytes();
    v.extend(std::iter::repeat_n(b'v', 100 + batch));
    Bytes::from(v)
}

/// The records of the first `batches` batches, as (offset, value).
fn expected(batches: usize) -> Vec<(i64, Bytes)> {
    (0..batches)
        .flat_map(|b| (0..PER_BATCH).map(move |r| ((b * PER_BATCH + r) as i64, value(b, r))))
        .collect()
}

fn client(b: &Broker) -> Client {
    Client::connect(b.port, Duration::from_secs(20)).expect("connect")
}

/// A broker with one partition holding `BATCHES` acknowledged batches of `PER_BATCH` records.
fn broker_with_log(extra: &[&str]) -> Broker {
    let props: Vec<&str> = PROPS.iter().chain(extra).copied().collect();
    let b = Broker::start(1, &props);
    let mut c = client(&b);
    assert_eq!(c.create_topic(TOPIC, 1).expect("create"), 0);
    for i in 0..BATCHES {
        let vals: Vec<Bytes> = (0..PER_BATCH).map(|r| value(i, r)).collect();
        let resp = c
            .produce(TOPIC, &[(0, encode_batch(&vals))], -1)
            .expect("produce");
        assert_eq!(resp, vec![(0, 0, (i * PER_BATCH) as i64)]);
    }
    b
}

fn partition_dir(b: &Broker) -> PathBuf {
    b.data_dir.join(format!("{TOPIC}-0"))
}

fn segment_file(b: &Broker, base: i64, ext: &str) -> PathBuf {
    partition_dir(b).join(format!("{base:020}.{ext}"))
}

/// (position, size) of each batch in a segment file, up to the zero tail or a bad length.
fn batch_positions(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes"));
        if len <= 0 || pos + 12 + len as usize > bytes.len() {
            break;
        }
        out.push((pos, 12 + len as usize));
        pos += 12 + len as usize;
    }
    out
}

/// A byte of batch `k` that its checks cover: anything but the partition leader epoch (bytes
/// 12..16), which the v2 format leaves outside the CRC and which no reader checks.
fn covered_byte(rng: &mut Rng, pos: usize, size: usize) -> usize {
    loop {
        let at = rng.range(0, size as u64) as usize;
        if !(12..16).contains(&at) {
            return pos + at;
        }
    }
}

/// Reads the partition from offset 0 until the end or the first error; every batch served is
/// CRC-checked (a corrupt one fails the test). Returns the records and the error code, if any.
fn read_until_error(b: &Broker) -> (Vec<(i64, Bytes)>, Option<i16>) {
    let mut c = client(b);
    let mut out: Vec<(i64, Bytes)> = Vec::new();
    let mut next = 0;
    loop {
        let f = c
            .fetch(TOPIC, 0, next, 8 << 10)
            .unwrap_or_else(|e| panic!("fetch at {next}: {e}\n{}", b.log()));
        if f.error_code != 0 {
            return (out, Some(f.error_code));
        }
        for (off, v) in f.records {
            if off >= next {
                assert_eq!(off, next, "hole in the log");
                out.push((off, v));
                next += 1;
            }
        }
        if next >= f.high_watermark {
            return (out, None);
        }
    }
}

/// Produces one more batch: it must land right at `offset` and read back.
fn assert_appends_at(b: &Broker, offset: i64) {
    let mut c = client(b);
    let v = Bytes::from_static(b"after-recovery");
    let resp = c
        .produce(TOPIC, &[(0, encode_batch(std::slice::from_ref(&v)))], -1)
        .expect("produce");
    assert_eq!(resp, vec![(0, 0, offset)], "{}", b.log());
    let f = c.fetch(TOPIC, 0, offset, 1 << 20).expect("fetch");
    assert_eq!(f.records, vec![(offset, v)]);
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn flipped_byte_after_a_crash_truncates_at_that_batch() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    for round in 0..3 {
        let mut b = broker_with_log(&[]);
        b.kill9();
        let seg = segment_file(&b, 0, "log");
        let bytes = std::fs::read(&seg).expect("read segment");
        let batches = batch_positions(&bytes);
        assert_eq!(batches.len(), BATCHES);
        let k = rng.range(0, BATCHES as u64) as usize;
        let (pos, size) = batches[k];
        let at = covered_byte(&mut rng, pos, size);
        flip_byte(&seg, at);
        b.restart();
        let log = b.log();
        let (read, err) = read_until_error(&b);
        assert_eq!(err, None, "round {round}: batch {k}, byte {at}: {log}");
        assert_eq!(
            read,
            expected(k),
            "round {round}: flipped byte {at} (batch {k}): the log must end right before it"
        );
        assert!(
            log.contains("truncating log at the first torn or corrupt batch"),
            "the truncation is logged: {log}"
        );
        assert_appends_at(&b, (k * PER_BATCH) as i64);
    }
}

#[test]
fn flipped_byte_after_a_clean_stop_is_never_served() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    let mut b = broker_with_log(&[]);
    assert_eq!(b.stop(), Some(0));
    let seg = segment_file(&b, 0, "log");
    let batches = batch_positions(&std::fs::read(&seg).expect("read"));
    let k = rng.range(1, BATCHES as u64) as usize;
    let (pos, size) = batches[k];
    // A byte inside the records: only the CRC can tell.
    let at = pos + 61 + rng.range(0, (size - 61) as u64) as usize;
    flip_byte(&seg, at);
    b.restart();
    let (read, err) = read_until_error(&b);
    // Either recovery dropped the batch and what follows, or reads stop at it with an error:
    // in both cases exactly the valid prefix is served.
    assert_eq!(read, expected(k), "flipped byte {at} (batch {k})");
    if let Some(code) = err {
        assert_eq!(code, KAFKA_STORAGE_ERROR, "{}", b.log());
    }
    // Fetching the damaged batch itself never returns its bytes.
    let f = client(&b)
        .fetch(TOPIC, 0, (k * PER_BATCH) as i64, 1 << 20)
        .expect("fetch must not serve a corrupt batch");
    assert!(f.records.is_empty() || f.error_code != 0);
}

#[test]
fn bit_rot_in_a_rolled_segment_is_never_served() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    let mut b = broker_with_log(&["log.segment.bytes=16384"]);
    b.kill9();
    let first = segment_file(&b, 0, "log");
    let batches = batch_positions(&std::fs::read(&first).expect("read"));
    assert!(batches.len() >= 2, "several segments");
    let k = rng.range(0, batches.len() as u64) as usize;
    let (pos, size) = batches[k];
    let at = pos + 61 + rng.range(0, (size - 61) as u64) as usize;
    flip_byte(&first, at);
    b.restart();
    let (read, err) = read_until_error(&b);
    assert_eq!(read, expected(k), "flipped byte {at} (batch {k})");
    assert_eq!(err, Some(KAFKA_STORAGE_ERROR), "{}", b.log());
}

#[test]
fn truncated_active_segment_keeps_its_whole_batches() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    for clean in [false, true] {
        let mut b = broker_with_log(&[]);
        if clean {
            assert_eq!(b.stop(), Some(0));
        } else {
            b.kill9();
        }
        let seg = segment_file(&b, 0, "log");
        let batches = batch_positions(&std::fs::read(&seg).expect("read"));
        let k = rng.range(1, BATCHES as u64) as usize;
        let (pos, size) = batches[k];
        let cut = pos + 1 + rng.range(0, size as u64 - 1) as usize;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .expect("open");
        f.set_len(cut as u64).expect("truncate");
        drop(f);
        b.restart();
        let (read, err) = read_until_error(&b);
        assert_eq!(err, None);
        assert_eq!(
            read,
            expected(k),
            "clean={clean}, cut at {cut} inside batch {k}"
        );
        assert_appends_at(&b, (k * PER_BATCH) as i64);
    }
}

#[test]
fn garbage_after_the_last_batch_is_dropped_for_good() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    for clean in [false, true] {
        let mut b = broker_with_log(&[]);
        if clean {
            assert_eq!(b.stop(), Some(0));
        } else {
            b.kill9();
        }
        let seg = segment_file(&b, 0, "log");
        let mut bytes = std::fs::read(&seg).expect("read");
        let end = batch_positions(&bytes)
            .last()
            .map(|(p, s)| p + s)
            .expect("batches");
        let garbage = rng.bytes(3000);
        bytes.truncate(end);
        bytes.extend_from_slice(&garbage);
        std::fs::write(&seg, &bytes).expect("write");
        b.restart();
        let (read, err) = read_until_error(&b);
        assert_eq!(err, None);
        assert_eq!(read, expected(BATCHES), "clean={clean}");
        assert_appends_at(&b, (BATCHES * PER_BATCH) as i64);
        // The garbage is gone from the file, not just skipped: a crash now must not bring it
        // back behind the new batch.
        b.kill9();
        b.restart();
        let (read, err) = read_until_error(&b);
        assert_eq!(err, None);
        assert_eq!(read.len(), BATCHES * PER_BATCH + 1, "clean={clean}");
        assert_appends_at(&b, (BATCHES * PER_BATCH + 1) as i64);
    }
}

/// Every offset can be fetched directly (the index sends reads to the right batch).
fn assert_every_offset_fetches(b: &Broker) {
    let mut c = client(b);
    let all = expected(BATCHES);
    for (off, v) in &all {
        let f = c.fetch(TOPIC, 0, *off, 1).expect("fetch");
        assert_eq!(f.error_code, 0, "fetch at {off}: {}", b.log());
        let got = f.records.iter().find(|(o, _)| o == off);
        assert_eq!(got, Some(&(*off, v.clone())), "fetch at {off}");
    }
}

#[test]
fn deleted_indexes_are_rebuilt() {
    let mut b = broker_with_log(&[]);
    assert_eq!(b.stop(), Some(0));
    let index = segment_file(&b, 0, "index");
    let timeindex = segment_file(&b, 0, "timeindex");
    let original = std::fs::read(&index).expect("index written at clean stop");
    assert!(original.len() >= 16, "several index entries");
    std::fs::remove_file(&index).expect("rm index");
    std::fs::remove_file(&timeindex).expect("rm timeindex");
    b.restart();
    assert_every_offset_fetches(&b);
    assert_appends_at(&b, (BATCHES * PER_BATCH) as i64);
    assert_eq!(b.stop(), Some(0));
    let rebuilt = std::fs::read(&index).expect("index rewritten");
    assert_eq!(
        &rebuilt[..original.len()],
        &original[..],
        "rebuilt index = original"
    );
}

/// A way to damage an index file's bytes.
type Damage = fn(&mut Vec<u8>, &mut Rng);

#[test]
fn damaged_index_entries_are_not_trusted() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    // (what is done to the index, after a clean stop)
    let damages: [(&str, Damage); 4] = [
        ("random bytes flipped", |ix, rng| {
            for _ in 0..4 {
                let at = rng.range(0, ix.len() as u64) as usize;
                ix[at] ^= 0xff;
            }
        }),
        ("last entry points one byte into its batch", |ix, _| {
            let n = ix.len();
            let p = i32::from_be_bytes(ix[n - 4..].try_into().expect("4"));
            ix[n - 4..].copy_from_slice(&(p + 1).to_be_bytes());
        }),
        ("a middle entry points one byte into its batch", |ix, _| {
            let at = (ix.len() / 16) * 8;
            let p = i32::from_be_bytes(ix[at + 4..at + 8].try_into().expect("4"));
            ix[at + 4..at + 8].copy_from_slice(&(p + 1).to_be_bytes());
        }),
        ("truncated to half an entry", |ix, _| ix.truncate(4)),
    ];
    for (what, damage) in damages {
        let mut b = broker_with_log(&[]);
        assert_eq!(b.stop(), Some(0));
        let index = segment_file(&b, 0, "index");
        let mut ix = std::fs::read(&index).expect("index");
        damage(&mut ix, &mut rng);
        std::fs::write(&index, &ix).expect("write index");
        b.restart();
        let (read, err) = read_until_error(&b);
        assert_eq!(err, None, "{what}: {}", b.log());
        assert_eq!(
            read,
            expected(BATCHES),
            "{what}: no acknowledged record lost"
        );
        assert_every_offset_fetches(&b);
        assert_appends_at(&b, (BATCHES * PER_BATCH) as i64);
    }
}

/// Starts the broker binary on `data_dir` and waits for it to exit (it must, within 20 s).
fn start_expecting_refusal(data_dir: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shardlog"))
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", common::free_port()))
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--cores")
        .arg("1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker started on a damaged metadata snapshot");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn damaged_metadata_snapshot_is_refused_by_name() {
    let mut rng = Rng::new(seed_from_env("SHARDLOG_CORRUPTION_SEED"));
    let mut b = broker_with_log(&[]);
    assert_eq!(b.stop(), Some(0));
    let snap = b.data_dir.join("meta").join("topics.rkyv");
    let good = std::fs::read(&snap).expect("snapshot written");
    let mut flipped = good.clone();
    let at = rng.range(0, good.len() as u64) as usize;
    flipped[at] ^= 1 << rng.range(0, 8);
    let mut appended = good.clone();
    appended.extend_from_slice(&rng.bytes(17));
    let cases: Vec<(String, Vec<u8>)> = vec![
        (format!("bit flipped at byte {at}"), flipped),
        ("truncated".into(), good[..good.len() / 2].to_vec()),
        ("garbage appended".into(), appended),
        ("empty".into(), Vec::new()),
        ("random bytes".into(), rng.bytes(good.len())),
    ];
    for (what, bytes) in cases {
        std::fs::write(&snap, &bytes).expect("write snapshot");
        let (code, stderr) = start_expecting_refusal(&b.data_dir);
        assert!(
            code.is_some() && code != Some(0),
            "{what}: exit {code:?}: {stderr}"
        );
        assert!(
            stderr.contains(&snap.display().to_string()),
            "{what}: the message names the file: {stderr}"
        );
        assert!(
            stderr.contains("corrupt"),
            "{what}: the message says why: {stderr}"
        );
        assert_eq!(
            std::fs::read(&snap).expect("still there"),
            bytes,
            "{what}: the damaged snapshot is left as it was, for a human"
        );
    }
    // Put the good one back: the broker starts and everything is there.
    std::fs::write(&snap, &good).expect("restore");
    b.restart();
    let (read, err) = read_until_error(&b);
    assert_eq!(err, None);
    assert_eq!(read, expected(BATCHES));
}
