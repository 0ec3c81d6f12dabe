//! Storage tests: simulated disk (deterministic, seeded crash tests) and the real O_DIRECT disk.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use super::*;
use crate::error_code::ErrorCode;
use crate::io::{yield_now_times as yield_times, SimDisk};

/// Runs a future on a fresh single-thread glommio executor with a small I/O buffer pool.
pub(crate) fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor panicked");
}

pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub(super) const T: &str = "t";

pub(super) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 8 << 10,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

pub(super) fn sim_options() -> StorageOptions {
    StorageOptions {
        batch_cache_bytes_max: 0,
        write_bytes_max: 16 << 10,
        preallocate_bytes: 16 << 10,
        ..StorageOptions::default()
    }
}

pub(super) async fn open_sim(disk: &Rc<SimDisk>, opts: StorageOptions) -> Rc<ShardStorage> {
    ShardStorage::open_with_fs(Path::new("/sim"), opts, disk.fs())
        .await
        .expect("open")
}

/// Splits concatenated batch bytes back into batches, checking each one's CRC.
pub(super) fn split_batches(info: &FetchDataInfo) -> Vec<(BatchHeader, Bytes)> {
    let mut all = Vec::new();
    for b in &info.batches {
        all.extend_from_slice(b);
    }
    let all = Bytes::from(all);
    let mut out = Vec::new();
    let mut at = 0;
    while at < all.len() {
        let h = parse_header(&all[at..]).expect("header");
        let b = all.slice(at..at + h.size_bytes());
        // As stored: a cleaned batch may hold fewer records than its offset range.
        batch::check_batch(&b, &h, u32::MAX, true).expect("served batch must be valid");
        out.push((h, b));
        at += h.size_bytes();
    }
    out
}

/// Reads the whole log from `from` on; returns every batch.
pub(super) async fn read_all(s: &ShardStorage, from: i64) -> Vec<(BatchHeader, Bytes)> {
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let info = s.read(T, 0, off, 3000).await.expect("read");
        let batches = split_batches(&info);
        let Some((last, _)) = batches.last() else {
            return out;
        };
        assert!(batches[0].0.base_offset <= off && batches[0].0.last_offset() >= off);
        off = last.last_offset() + 1;
        for b in batches {
            if out
                .last()
                .is_none_or(|(h, _): &(BatchHeader, Bytes)| b.0.base_offset > h.base_offset)
            {
                out.push(b);
            }
        }
    }
}

fn body(b: &Bytes) -> &[u8] {
    &b[BATCH_HEADER_BYTES..]
}

#[test]
fn append_roll_read_from_cache_and_disk() {
    run(|| async {
        let disk = SimDisk::new(1);
        for cache in [usize::MAX, 0] {
            let s = open_sim(
                &disk,
                StorageOptions {
                    batch_cache_bytes_max: cache,
                    ..sim_options()
                },
            )
            .await;
            let topic = format!("c{}", cache == 0);
            s.open_partition(&topic, 0, small_config()).await.unwrap();
            let mut sent = Vec::new();
            let mut next = 0;
            for i in 0..60 {
                let b = build_test_batch(1 + i % 4, 50 + (i as usize * 37) % 900, 1000 + i as i64);
                let info = s.append(&topic, 0, b.clone()).unwrap();
                assert_eq!(info.first_offset, next);
                assert_eq!(info.last_offset, next + (i % 4) as i64);
                next = info.last_offset + 1;
                sent.push(b);
            }
            s.flush().await.unwrap();
            assert_eq!(s.offsets(&topic, 0).unwrap(), (0, next));
            // read everything, small max_bytes
            let mut got = Vec::new();
            let mut off = 0;
            while off < next {
                let info = s.read(&topic, 0, off, 2000).await.unwrap();
                let bs = split_batches(&info);
                assert!(!bs.is_empty());
                off = bs.last().unwrap().0.last_offset() + 1;
                got.extend(bs);
            }
            assert_eq!(got.len(), sent.len());
            for ((h, b), orig) in got.iter().zip(&sent) {
                assert_eq!(body(b), body(orig));
                assert_eq!(h.partition_leader_epoch, 0);
            }
            // several segments exist on disk
            let logs = disk
                .fs()
                .list_files(&PathBuf::from(format!("/sim/{topic}-0")))
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(".log"))
                .count();
            assert!(logs > 3, "expected rolls, got {logs} segments");
            // fetch inside a batch returns that batch; tiny max_bytes still returns one batch
            let info = s.read(&topic, 0, 2, 1).await.unwrap();
            let bs = split_batches(&info);
            assert_eq!(bs.len(), 1);
            assert!(bs[0].0.base_offset <= 2 && bs[0].0.last_offset() >= 2);
            // at the high watermark: nothing; past it: out of range
            assert!(s
                .read(&topic, 0, next, 100)
                .await
                .unwrap()
                .batches
                .is_empty());
            let e = s.read(&topic, 0, next + 1, 100).await.unwrap_err();
            assert_eq!(e.kafka_error_code(), ErrorCode::OFFSET_OUT_OF_RANGE);
            s.shutdown().await.unwrap();
        }
    });
}

#[test]
fn invalid_batches_are_rejected_and_nothing_is_appended() {
    run(|| async {
        let disk = SimDisk::new(2);
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        let good = build_test_batch(2, 10, 5);
        let mut bad = good.to_vec();
        bad[70] ^= 1;
        let e = s.append(T, 0, Bytes::from(bad)).unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::CORRUPT_MESSAGE);
        let big = build_test_batch(1, 2 << 20, 5);
        assert_eq!(
            s.append(T, 0, big).unwrap_err().kafka_error_code(),
            ErrorCode::MESSAGE_TOO_LARGE
        );
        assert_eq!(
            s.append("nope", 0, good.clone())
                .unwrap_err()
                .kafka_error_code(),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 0));
        assert_eq!(s.append(T, 0, good).unwrap().first_offset, 0);
    });
}

#[test]
fn reopen_after_clean_shutdown_keeps_everything() {
    run(|| async {
        let disk = SimDisk::new(3);
        let mut sent = Vec::new();
        {
            let s = open_sim(&disk, sim_options()).await;
            s.open_partition(T, 0, small_config()).await.unwrap();
            for i in 0..40 {
                let b = build_test_batch(3, 100 + i * 7, i as i64);
                s.append(T, 0, b.clone()).unwrap();
                sent.push(b);
            }
            s.shutdown().await.unwrap();
            assert_eq!(
                s.append(T, 0, sent[0].clone())
                    .unwrap_err()
                    .kafka_error_code(),
                ErrorCode::KAFKA_STORAGE_ERROR
            );
        }
        // a crash after a clean shutdown loses nothing
        disk.crash();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 120));
        let got = read_all(&s, 0).await;
        assert_eq!(got.len(), 40);
        for ((_, b), o) in got.iter().zip(&sent) {
            assert_eq!(body(b), body(o));
        }
        let info = s.append(T, 0, build_test_batch(1, 10, 0)).unwrap();
        assert_eq!(info.first_offset, 120);
    });
}

/// The crash property: for many seeds and crash points, the recovered log is a prefix of what
/// was appended, holding at least every batch whose flush completed.
#[test]
fn crash_recovery_property_simulated() {
    run(|| async {
        let (mut lost, mut kept_unsynced) = (0, 0);
        for seed in 0..250u64 {
            let (l, k) = crash_case(seed).await;
            lost += l;
            kept_unsynced += k;
        }
        // The simulation must actually bite: unsynced batches lost and torn writes partially kept.
        assert!(
            lost > 0 && kept_unsynced > 0,
            "lost {lost}, kept {kept_unsynced}"
        );
    });
}

/// `b` re-stamped as idempotent producer `pid`'s batch (epoch 0) starting at sequence `seq`,
/// its CRC32C recomputed.
pub(super) fn idempotent(b: &Bytes, pid: i64, seq: i32) -> Bytes {
    let mut v = b.to_vec();
    v[43..51].copy_from_slice(&pid.to_be_bytes());
    v[51..53].copy_from_slice(&0i16.to_be_bytes());
    v[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&v[21..]);
    v[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// Producers the crash cases use (ids 1 and 2; id -1 is a plain producer).
const PRODUCER_IDS: [i64; 2] = [1, 2];

/// The next sequence of producer `pid` after the batches of `model` (0 if it has none).
fn next_sequence(model: &[Bytes], pid: i64) -> i32 {
    model
        .iter()
        .filter_map(|b| parse_header(b).ok())
        .filter(|h| h.producer_id == pid)
        .last()
        .map_or(0, |h| h.base_sequence + h.records_count)
}

/// The producer-state property after a recovery: every recovered batch among each producer's
/// last five (the ones Kafka remembers) is recognized when retried: answered as a duplicate
/// with its original offsets, nothing appended. `got` is the recovered log, `model` its
/// batches as the producers sent them.
fn assert_retries_are_duplicates(
    s: &ShardStorage,
    got: &[(BatchHeader, Bytes)],
    model: &[Bytes],
    ctx: &str,
) {
    let hw = s.offsets(T, 0).unwrap().1;
    for pid in PRODUCER_IDS {
        let mine: Vec<usize> = (0..got.len())
            .filter(|&i| got[i].0.producer_id == pid)
            .collect();
        for &i in mine.iter().rev().take(5) {
            let info = s
                .append(T, 0, model[i].clone())
                .unwrap_or_else(|e| panic!("{ctx}: retry of batch {i} (producer {pid}): {e}"));
            assert!(
                info.duplicate,
                "{ctx}: retry of batch {i} (producer {pid}) appended again"
            );
            assert_eq!(
                (info.first_offset, info.last_offset),
                (got[i].0.base_offset, got[i].0.last_offset()),
                "{ctx}: offsets of the retried batch {i}"
            );
        }
    }
    assert_eq!(s.offsets(T, 0).unwrap().1, hw, "{ctx}: retries appended");
}

/// Prints the seed if the case panics, so it can be replayed with `<case>(seed)`.
struct SeedGuard(u64, &'static str);
impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "crash property failed for seed {} (replay: {}({}))",
                self.0, self.1, self.0
            );
        }
    }
}

/// Returns (batches lost across crashes, recoveries that kept more than the acked prefix).
async fn crash_case(seed: u64) -> (usize, usize) {
    let _guard = SeedGuard(seed, "crash_case");
    let (mut lost, mut kept_unsynced) = (0, 0);
    let disk = SimDisk::new(seed);
    let mut rng = Rng(seed);
    let mut model: Vec<Bytes> = Vec::new();
    let mut acked = 0usize;
    let config = LogConfig {
        segment_bytes: 2048 + rng.below(8192),
        index_interval_bytes: 256,
        flush_messages: if rng.below(2) == 0 { 1 } else { 4 },
        ..LogConfig::default()
    };
    let opts = StorageOptions {
        batch_cache_bytes_max: rng.below(4) as usize * 3000,
        write_bytes_max: 1024 + rng.below(8192) as usize,
        preallocate_bytes: 4096 * (1 + rng.below(4)),
        ..StorageOptions::default()
    };
    for cycle in 0..3 {
        let s = open_sim(&disk, opts.clone()).await;
        s.open_partition(T, 0, config.clone()).await.unwrap();
        // verify: a prefix of the model, at least `acked` long
        let got = read_all(&s, 0).await;
        let ctx = format!(
            "seed {seed} cycle {cycle}: recovered {} batches, model {}, acked {acked}",
            got.len(),
            model.len()
        );
        assert!(got.len() >= acked && got.len() <= model.len(), "{ctx}");
        let mut next = 0;
        for (i, (h, b)) in got.iter().enumerate() {
            assert_eq!(h.base_offset, next, "{ctx}: offset of batch {i}");
            assert_eq!(body(b), body(&model[i]), "{ctx}: bytes of batch {i}");
            next = h.last_offset() + 1;
        }
        assert_eq!(s.offsets(T, 0).unwrap().1, next, "{ctx}: high watermark");
        assert_retries_are_duplicates(&s, &got, &model, &ctx);
        lost += model.len() - got.len();
        kept_unsynced += usize::from(got.len() > acked);
        model.truncate(got.len());
        acked = got.len();
        let mut seqs = PRODUCER_IDS.map(|pid| next_sequence(&model, pid));
        let ops = 5 + rng.below(40);
        let mut clean = false;
        for _ in 0..ops {
            match rng.below(10) {
                0..=6 => {
                    let count = 1 + rng.below(4) as i32;
                    let mut b = build_test_batch(count, rng.below(700) as usize, 7);
                    // A third of the batches each from two idempotent producers.
                    let who = rng.below(3) as usize;
                    if who < PRODUCER_IDS.len() {
                        b = idempotent(&b, PRODUCER_IDS[who], seqs[who]);
                        seqs[who] += count;
                    }
                    let info = s.append(T, 0, b.clone()).unwrap();
                    assert!(
                        !info.duplicate,
                        "seed {seed}: a new batch taken for a retry"
                    );
                    model.push(b);
                }
                7 => {
                    s.flush().await.unwrap();
                    acked = model.len();
                }
                8 => {
                    // write-behind; syncs only if the policy says so
                    s.flush_round_for_test().await.unwrap();
                    let durable = s.durable_offset_for_test(T, 0);
                    let mut off = 0;
                    let mut n = 0;
                    for b in &model {
                        let h = parse_header(b).unwrap();
                        off += h.last_offset_delta as i64 + 1;
                        if off <= durable {
                            n += 1;
                        }
                    }
                    acked = acked.max(n);
                }
                _ => {
                    if rng.below(4) == 0 {
                        s.shutdown().await.unwrap();
                        acked = model.len();
                        clean = true;
                        break;
                    }
                    if rng.below(2) == 0 {
                        // The periodic snapshot: it may cover data a crash then takes away.
                        s.snapshot_producers().await;
                    }
                }
            }
        }
        let _ = clean;
        drop(s);
        disk.crash();
    }
    (lost, kept_unsynced)
}

#[test]
fn disk_errors_surface_and_appends_recover() {
    run(|| async {
        let disk = SimDisk::new(4);
        let s = open_sim(&disk, sim_options()).await;
        s.spawn_background_tasks();
        s.open_partition(T, 0, small_config()).await.unwrap();
        let a = s.append(T, 0, build_test_batch(2, 100, 1)).unwrap();
        s.wait_durable(T, 0, a.last_offset).await.unwrap();
        assert_eq!(s.unwritten_bytes(), 0);
        disk.set_fail_writes(Some(std::io::ErrorKind::StorageFull));
        let b = s.append(T, 0, build_test_batch(2, 100, 1)).unwrap();
        let e = s.wait_durable(T, 0, b.last_offset).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::KAFKA_STORAGE_ERROR);
        assert!(s.unwritten_bytes() > 200, "the failed batch stays pending");
        // appends still work in memory, reads still serve them
        let c = s.append(T, 0, build_test_batch(1, 100, 1)).unwrap();
        assert_eq!(read_all(&s, 0).await.len(), 3);
        disk.set_fail_writes(None);
        disk.set_fail_syncs(Some(std::io::ErrorKind::Other));
        let e = s.wait_durable(T, 0, c.last_offset).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::KAFKA_STORAGE_ERROR);
        disk.set_fail_syncs(None);
        s.wait_durable(T, 0, c.last_offset).await.unwrap();
        s.shutdown().await.unwrap();
        drop(s);
        disk.crash();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 5));
        assert_eq!(read_all(&s, 0).await.len(), 3);
    });
}

#[test]
fn group_commit_serves_many_waiters_with_few_syncs() {
    run(|| async {
        let disk = SimDisk::new(5);
        let s = open_sim(&disk, sim_options()).await;
        s.spawn_background_tasks();
        for part in 0..4 {
            s.open_partition(T, part, LogConfig::default())
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for p in 0..8 {
            let s = s.clone();
            tasks.push(glommio::spawn_local(async move {
                for i in 0..20 {
                    let part = (p + i) as i32 % 4;
                    let info = s
                        .append(T, part, build_test_batch(1, 64, p * 100 + i))
                        .unwrap();
                    s.wait_durable(T, part, info.last_offset).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let syncs = disk.sync_count();
        assert!(
            syncs < 160,
            "group commit should coalesce: {syncs} syncs for 160 batches"
        );
        let total: i64 = (0..4).map(|part| s.offsets(T, part).unwrap().1).sum();
        assert_eq!(total, 160);
        s.shutdown().await.unwrap();
        drop(s);
        disk.crash();
        let s = open_sim(&disk, sim_options()).await;
        for part in 0..4 {
            s.open_partition(T, part, LogConfig::default())
                .await
                .unwrap();
            assert_eq!(s.offsets(T, part).unwrap().1, 40);
        }
    });
}

#[test]
fn deferred_sync_policy_resolves_after_write() {
    run(|| async {
        let disk = SimDisk::new(6);
        let s = open_sim(&disk, sim_options()).await;
        s.spawn_background_tasks();
        let cfg = LogConfig {
            flush_messages: 1000,
            ..LogConfig::default()
        };
        s.open_partition(T, 0, cfg).await.unwrap();
        let info = s.append(T, 0, build_test_batch(3, 64, 1)).unwrap();
        s.wait_durable(T, 0, info.last_offset).await.unwrap();
        assert_eq!(
            disk.sync_count(),
            0,
            "no fdatasync before flush.messages is reached"
        );
        assert_eq!(s.durable_offset_for_test(T, 0), 0);
        s.shutdown().await.unwrap();
        assert!(disk.sync_count() > 0);
    });
}

#[test]
fn timestamps_log_append_time_and_lookup() {
    run(|| async {
        let disk = SimDisk::new(7);
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        for i in 0..30 {
            s.append(T, 0, build_test_batch(2, 300, 1000 + i * 10))
                .unwrap();
        }
        s.flush().await.unwrap();
        assert_eq!(
            s.offset_for_timestamp(T, 0, 0).await.unwrap(),
            Some((0, 1000))
        );
        assert_eq!(
            s.offset_for_timestamp(T, 0, 1055).await.unwrap(),
            Some((12, 1060))
        );
        assert_eq!(
            s.offset_for_timestamp(T, 0, 1290).await.unwrap(),
            Some((58, 1290))
        );
        assert_eq!(s.offset_for_timestamp(T, 0, 5000).await.unwrap(), None);
        assert_eq!(
            s.offset_for_timestamp(T, 0, -1).await.unwrap(),
            Some((60, -1))
        );
        assert_eq!(
            s.offset_for_timestamp(T, 0, -2).await.unwrap(),
            Some((0, -1))
        );

        let cfg = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..small_config()
        };
        s.open_partition("lat", 0, cfg).await.unwrap();
        let before = now_ms();
        let info = s.append("lat", 0, build_test_batch(2, 10, 5)).unwrap();
        assert!(info.log_append_time >= before && info.max_timestamp == info.log_append_time);
        let got = split_batches(&s.read("lat", 0, 0, 100).await.unwrap());
        assert_eq!(got[0].0.max_timestamp, info.log_append_time);
        assert_eq!(got[0].0.attributes & 0x08, 0x08);
    });
}

#[test]
fn retention_by_bytes_and_time_advances_log_start() {
    run(|| async {
        let disk = SimDisk::new(8);
        let s = open_sim(&disk, sim_options()).await;
        let cfg = LogConfig {
            retention_bytes: 20_000,
            ..small_config()
        };
        s.open_partition(T, 0, cfg.clone()).await.unwrap();
        for i in 0..100 {
            s.append(T, 0, build_test_batch(1, 900, now_ms() - 1000 + i))
                .unwrap();
        }
        s.flush().await.unwrap();
        s.enforce_retention().await.unwrap();
        let (start, hw) = s.offsets(T, 0).unwrap();
        assert_eq!(hw, 100);
        assert!(start > 50, "log start {start}");
        let e = s.read(T, 0, 0, 100).await.unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::OFFSET_OUT_OF_RANGE);
        assert_eq!(read_all(&s, start).await.len() as i64, hw - start);
        // by time: everything but the active segment is older than 1 ms
        s.set_config(
            T,
            0,
            LogConfig {
                retention_ms: 1,
                retention_bytes: -1,
                ..cfg
            },
        );
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        s.enforce_retention().await.unwrap();
        let (start2, _) = s.offsets(T, 0).unwrap();
        assert!(start2 > start);
        // reopen: log start survives (derived from the first segment)
        s.shutdown().await.unwrap();
        drop(s);
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        assert_eq!(s.offsets(T, 0).unwrap(), (start2, 100));
    });
}

#[test]
fn appended_wakes_long_poll_and_delete_removes_everything() {
    run(|| async {
        let disk = SimDisk::new(9);
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        let s2 = s.clone();
        let waiter = glommio::spawn_local(async move { s2.appended(T, 0, 0, false).await });
        glommio::yield_if_needed().await;
        s.append(T, 0, build_test_batch(2, 10, 1)).unwrap();
        waiter.await;
        s.flush().await.unwrap();
        s.delete_partition(T, 0).await.unwrap();
        assert!(disk
            .fs()
            .list_files(Path::new("/sim/t-0"))
            .unwrap()
            .is_empty());
        assert_eq!(
            s.offsets(T, 0).unwrap_err().kafka_error_code(),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(s.cache_bytes(), 0);
    });
}

// ------------------------------------------------------------------------------------------
// Real disk (O_DIRECT through glommio DmaFile)
// ------------------------------------------------------------------------------------------

fn real_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("shardlog-storage-test")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

#[test]
fn real_disk_append_roll_reopen_retention_and_recovery() {
    let dir = real_dir();
    let path = dir.path().to_path_buf();
    run(move || async move {
        let opts = StorageOptions {
            batch_cache_bytes_max: 0,
            preallocate_bytes: 1 << 20,
            ..StorageOptions::default()
        };
        let cfg = LogConfig {
            segment_bytes: 256 << 10,
            ..LogConfig::default()
        };
        let mut sent = Vec::new();
        {
            let s = ShardStorage::open(&path, opts.clone())
                .await
                .expect("O_DIRECT open");
            s.spawn_background_tasks();
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            for i in 0..200 {
                let b = build_test_batch(4, 1000 + i % 100, i as i64);
                let info = s.append(T, 0, b.clone()).unwrap();
                if i % 10 == 0 {
                    s.wait_durable(T, 0, info.last_offset).await.unwrap();
                }
                sent.push(b);
            }
            s.flush().await.unwrap();
            let got = read_all(&s, 0).await;
            assert_eq!(got.len(), 200);
            s.shutdown().await.unwrap();
        }
        let pdir = path.join("t-0");
        let logs: Vec<_> = std::fs::read_dir(&pdir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        assert!(logs.len() >= 3, "segments: {logs:?}");
        assert!(pdir.join("00000000000000000000.index").exists());
        assert!(pdir.join(".clean_shutdown").exists());
        // the first segment was trimmed to its logical size (no preallocated tail)
        let first = std::fs::metadata(pdir.join("00000000000000000000.log"))
            .unwrap()
            .len();
        assert!(first <= 256 << 10 && first % 4096 != 0);

        // reopen clean, read back, continue appending
        {
            let s = ShardStorage::open(&path, opts.clone()).await.unwrap();
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            assert_eq!(s.offsets(T, 0).unwrap(), (0, 800));
            let got = read_all(&s, 0).await;
            for ((_, b), o) in got.iter().zip(&sent) {
                assert_eq!(body(b), body(o));
            }
            let b = build_test_batch(2, 500, 1);
            s.append(T, 0, b.clone()).unwrap();
            sent.push(b);
            s.flush().await.unwrap();
            // unclean stop: no shutdown, so no marker
        }
        assert!(!pdir.join(".clean_shutdown").exists());
        {
            let s = ShardStorage::open(&path, opts.clone()).await.unwrap();
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            assert_eq!(s.offsets(T, 0).unwrap(), (0, 802));
            assert_eq!(read_all(&s, 0).await.len(), 201);
            // offset_for_timestamp across segments
            assert_eq!(
                s.offset_for_timestamp(T, 0, 150).await.unwrap(),
                Some((600, 150))
            );
            // retention by bytes deletes old segments
            s.set_config(
                T,
                0,
                LogConfig {
                    retention_bytes: 300 << 10,
                    ..cfg.clone()
                },
            );
            s.enforce_retention().await.unwrap();
            let (start, hw) = s.offsets(T, 0).unwrap();
            assert!(start > 0 && hw == 802);
            assert!(!pdir.join("00000000000000000000.log").exists());
            let got = read_all(&s, start).await;
            assert_eq!(got.last().unwrap().0.last_offset(), 801);
            s.shutdown().await.unwrap();
        }
        // corrupt the tail of the active segment, drop the marker: recovery truncates there
        std::fs::remove_file(pdir.join(".clean_shutdown")).unwrap();
        let mut active: Vec<_> = std::fs::read_dir(&pdir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        active.sort();
        let active = active.pop().unwrap();
        let len = std::fs::metadata(&active).unwrap().len();
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(&active)
                .unwrap();
            f.seek(SeekFrom::Start(len - 10)).unwrap();
            f.write_all(&[0xAB; 10]).unwrap();
            f.sync_all().unwrap();
        }
        {
            let s = ShardStorage::open(&path, opts.clone()).await.unwrap();
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            assert_eq!(
                s.offsets(T, 0).unwrap().1,
                800,
                "the corrupt last batch is dropped"
            );
            let a = s.append(T, 0, build_test_batch(1, 10, 1)).unwrap();
            assert_eq!(a.first_offset, 800);
            s.flush().await.unwrap();
            s.shutdown().await.unwrap();
        }
    });
    drop(dir);
}

#[test]
fn direct_io_refusal_names_the_data_dir() {
    // /dev/shm is tmpfs on Linux; skip quietly where it is not there.
    let Ok(dir) = tempfile::Builder::new()
        .prefix("shardlog-shm")
        .tempdir_in("/dev/shm")
    else {
        return;
    };
    let path = dir.path().to_path_buf();
    run(move || async move {
        let err = match ShardStorage::open(&path, StorageOptions::default()).await {
            Ok(_) => panic!("tmpfs must be refused"),
            Err(e) => e,
        };
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        let s = ShardStorage::open(
            &path,
            StorageOptions {
                buffered_io: true,
                ..StorageOptions::default()
            },
        )
        .await
        .unwrap();
        s.open_partition(T, 0, LogConfig::default()).await.unwrap();
        s.append(T, 0, build_test_batch(1, 10, 1)).unwrap();
        s.flush().await.unwrap();
        s.shutdown().await.unwrap();
    });
}

#[test]
fn segment_ms_rolls_and_open_partition_is_idempotent() {
    run(|| async {
        let disk = SimDisk::new(10);
        let s = open_sim(&disk, sim_options()).await;
        let cfg = LogConfig {
            segment_ms: 0,
            ..LogConfig::default()
        };
        s.open_partition(T, 0, cfg.clone()).await.unwrap();
        for _ in 0..3 {
            s.append(T, 0, build_test_batch(1, 10, 1)).unwrap();
        }
        // Re-opening an open partition keeps its state.
        s.open_partition(T, 0, cfg).await.unwrap();
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 3));
        s.flush().await.unwrap();
        let logs = disk
            .fs()
            .list_files(Path::new("/sim/t-0"))
            .unwrap()
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .count();
        assert_eq!(logs, 3, "segment.ms = 0 rolls on every append");
        assert_eq!(read_all(&s, 0).await.len(), 3);
    });
}

/// The crash property with concurrency: the background flusher runs while producers append and
/// wait, every simulated I/O yields a seeded number of times (so appends land while writes and
/// syncs are in flight), and the crash hits at a seeded moment. Every batch whose `wait_durable`
/// returned `Ok` must survive; the recovered log must be a prefix of what was appended.
#[test]
fn crash_recovery_property_concurrent_flusher() {
    run(|| async {
        let (mut acked, mut lost) = (0, 0);
        for seed in 0..150u64 {
            let (a, l) = concurrent_crash_case(seed).await;
            acked += a;
            lost += l;
        }
        assert!(
            acked > 0 && lost > 0,
            "the simulation must ack and lose: {acked} {lost}"
        );
    });
}

/// Returns (offsets acked durable, batches lost across crashes).
async fn concurrent_crash_case(seed: u64) -> (i64, usize) {
    use std::cell::{Cell, RefCell};
    let _guard = SeedGuard(seed, "concurrent_crash_case");
    let disk = SimDisk::new(seed);
    disk.set_yields_per_op(3);
    let mut rng = Rng(seed ^ 0xABCD);
    let config = LogConfig {
        segment_bytes: 2048 + rng.below(8192),
        index_interval_bytes: 256,
        ..LogConfig::default()
    };
    let opts = StorageOptions {
        batch_cache_bytes_max: rng.below(3) as usize * 4000,
        write_bytes_max: 4096,
        writes_in_flight_max: 1 + rng.below(3) as usize,
        preallocate_bytes: 8192,
        ..StorageOptions::default()
    };
    let model: Rc<RefCell<Vec<Bytes>>> = Rc::new(RefCell::new(Vec::new()));
    let mut acked_offset = 0i64;
    let (mut acked_total, mut lost) = (0i64, 0usize);
    for cycle in 0..3 {
        let s = ShardStorage::open_with_fs(Path::new("/sim"), opts.clone(), disk.fs())
            .await
            .expect("open");
        s.open_partition(T, 0, config.clone()).await.unwrap();
        let got = read_all(&s, 0).await;
        let hw = s.offsets(T, 0).unwrap().1;
        {
            let m = model.borrow();
            let ctx = format!(
                "seed {seed} cycle {cycle}: recovered {} batches (hw {hw}), model {}, acked offset {acked_offset}",
                got.len(),
                m.len()
            );
            assert!(hw >= acked_offset && got.len() <= m.len(), "{ctx}");
            for (i, (_, b)) in got.iter().enumerate() {
                assert_eq!(body(b), body(&m[i]), "{ctx}: bytes of batch {i}");
            }
            assert_retries_are_duplicates(&s, &got, &m, &ctx);
        }
        lost += model.borrow().len() - got.len();
        model.borrow_mut().truncate(got.len());
        acked_total += acked_offset;
        acked_offset = hw;
        s.spawn_background_tasks();
        let acked = Rc::new(Cell::new(acked_offset));
        let mut tasks = Vec::new();
        for p in 0..2u64 {
            let s = s.clone();
            let model = model.clone();
            let acked = acked.clone();
            let mut prng = Rng(seed * 31 + p + cycle * 7);
            // Each task is one idempotent producer, continuing its sequence after recovery.
            let pid = PRODUCER_IDS[p as usize];
            let mut seq = next_sequence(&model.borrow(), pid);
            tasks.push(glommio::spawn_local(async move {
                loop {
                    let count = 1 + prng.below(3) as i32;
                    let b = build_test_batch(count, prng.below(900) as usize, 1);
                    let b = idempotent(&b, pid, seq);
                    let info = match s.append(T, 0, b.clone()) {
                        Ok(i) => i,
                        Err(_) => return,
                    };
                    assert!(!info.duplicate, "a new batch taken for a retry");
                    seq += count;
                    model.borrow_mut().push(b);
                    if prng.below(2) == 0 {
                        match s.wait_durable(T, 0, info.last_offset).await {
                            Ok(()) => acked.set(acked.get().max(info.last_offset + 1)),
                            Err(_) => return,
                        }
                    } else {
                        yield_times(prng.below(4) as u32).await;
                    }
                }
            }));
        }
        // The periodic producer state snapshot, at seeded moments.
        {
            let s = s.clone();
            let mut prng = Rng(seed * 17 + cycle);
            tasks.push(glommio::spawn_local(async move {
                loop {
                    yield_times(1 + prng.below(100) as u32).await;
                    s.snapshot_producers().await;
                }
            }));
        }
        // Let it run for a seeded while, then pull the plug.
        yield_times(rng.below(400) as u32).await;
        disk.crash();
        acked_offset = acked.get();
        for t in tasks {
            t.cancel().await;
        }
        drop(s);
    }
    (acked_total, lost)
}

#[test]
fn flush_ms_syncs_on_time_without_waiters() {
    run(|| async {
        let disk = SimDisk::new(11);
        let s = open_sim(&disk, sim_options()).await;
        s.spawn_background_tasks();
        let cfg = LogConfig {
            flush_messages: 1_000_000,
            flush_ms: 20,
            ..LogConfig::default()
        };
        s.open_partition(T, 0, cfg).await.unwrap();
        s.append(T, 0, build_test_batch(2, 64, 1)).unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(disk.sync_count(), 0, "written, not yet synced");
        assert_eq!(s.durable_offset_for_test(T, 0), 0);
        glommio::timer::sleep(std::time::Duration::from_millis(60)).await;
        assert!(disk.sync_count() > 0, "flush.ms must trigger an fdatasync");
        assert_eq!(s.durable_offset_for_test(T, 0), 2);
    });
}

/// With the default `flush.messages=1`, data nobody waits on (acks=0/1) is written at once but
/// synced only by `flush.ms`; an acks=all waiter gets its sync at once (group commit).
#[test]
fn unwaited_data_is_synced_by_flush_ms_and_a_waiter_syncs_at_once() {
    run(|| async {
        let disk = SimDisk::new(12);
        let s = open_sim(&disk, sim_options()).await;
        s.spawn_background_tasks();
        let cfg = LogConfig {
            flush_ms: 200,
            ..LogConfig::default()
        };
        assert_eq!(cfg.flush_messages, 1);
        s.open_partition(T, 0, cfg).await.unwrap();
        s.append(T, 0, build_test_batch(2, 64, 1)).unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(disk.sync_count(), 0, "acks=1 data: written, not synced yet");
        assert_eq!(s.durable_offset_for_test(T, 0), 0);
        let info = s.append(T, 0, build_test_batch(3, 64, 1)).unwrap();
        s.wait_durable(T, 0, info.last_offset).await.unwrap();
        assert!(
            disk.sync_count() > 0,
            "an acks=all waiter is synced at once"
        );
        assert_eq!(
            s.durable_offset_for_test(T, 0),
            5,
            "the sync covers the earlier data"
        );
        let synced = disk.sync_count();
        s.append(T, 0, build_test_batch(1, 64, 1)).unwrap();
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(disk.sync_count(), synced);
        glommio::timer::sleep(std::time::Duration::from_millis(400)).await;
        assert!(
            disk.sync_count() > synced,
            "flush.ms syncs what nobody waited for"
        );
        assert_eq!(s.durable_offset_for_test(T, 0), 6);
    });
}

/// Sum of the lengths of the `.log` files in one directory of the simulated disk.
async fn log_file_bytes(disk: &Rc<SimDisk>, dir: &Path) -> u64 {
    let fs = disk.fs();
    let mut total = 0;
    for name in fs.list_files(dir).expect("list") {
        if name.ends_with(".log") {
            let f = fs.open_file(&dir.join(&name), false).await.expect("open");
            total += f.file_size().await.expect("size");
        }
    }
    total
}

/// The disk usage reported for metrics counts written batches only, follows rolls, drops by
/// what retention deletes, survives a reopen, and equals the `.log` files' lengths once the
/// preallocated tail is trimmed.
#[test]
fn disk_usage_follows_writes_rolls_retention_and_reopen() {
    run(|| async {
        let disk = SimDisk::new(21);
        let dir = PathBuf::from("/sim/t-0");
        let cfg = small_config();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, cfg.clone()).await.unwrap();
        // Allocated: only the (simulated) directory's block.
        let fresh = s.stats(T, 0).unwrap();
        assert_eq!(fresh.disk_allocated_bytes, 4096);
        assert_eq!(
            PartitionStats {
                disk_allocated_bytes: 0,
                ..fresh
            },
            PartitionStats::default()
        );
        // Recent timestamps: only retention by bytes, below, may delete anything.
        let mut appended = 0u64;
        for i in 0..5 {
            let b = build_test_batch(2, 300, now_ms() + i);
            appended += b.len() as u64;
            s.append(T, 0, b).unwrap();
        }
        // Appended but not yet written by the group commit: not on disk yet.
        let st = s.stats(T, 0).unwrap();
        assert_eq!((st.high_watermark, st.disk_usage_bytes), (10, 0));
        s.flush().await.unwrap();
        assert_eq!(s.stats(T, 0).unwrap().disk_usage_bytes, appended);
        for i in 0..100 {
            let b = build_test_batch(1, 200 + (i as usize * 13) % 700, now_ms() + i);
            appended += b.len() as u64;
            s.append(T, 0, b).unwrap();
        }
        s.flush().await.unwrap();
        let st = s.stats(T, 0).unwrap();
        assert_eq!(
            st.disk_usage_bytes, appended,
            "several segments after rolls"
        );
        assert!(log_file_bytes(&disk, &dir).await >= appended);
        let mut seen = Vec::new();
        s.partition_stats(|t, p, x| seen.push((t.to_string(), p, x)));
        assert_eq!(seen, vec![(T.to_string(), 0, st)]);

        // Retention by bytes deletes whole old segments: the usage drops, but stays at or
        // above the limit (a segment goes only if what remains is still >= the limit).
        s.set_config(
            T,
            0,
            LogConfig {
                retention_bytes: 20_000,
                ..cfg.clone()
            },
        );
        s.enforce_retention().await.unwrap();
        let after = s.stats(T, 0).unwrap();
        assert!(after.log_start_offset > 0);
        assert_eq!(after.high_watermark, st.high_watermark);
        assert!(
            after.disk_usage_bytes >= 20_000 && after.disk_usage_bytes < appended,
            "{after:?}"
        );
        s.shutdown().await.unwrap();
        // Shutdown trims the active segment's preallocated tail: files and gauge agree.
        assert_eq!(log_file_bytes(&disk, &dir).await, after.disk_usage_bytes);
        drop(s);

        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, cfg.clone()).await.unwrap();
        let reopened = s.stats(T, 0).unwrap();
        assert_eq!(
            PartitionStats {
                disk_allocated_bytes: after.disk_allocated_bytes,
                ..reopened
            },
            after,
            "recovered from the files"
        );
        // Sampled at open: the trimmed files, block-rounded, plus the directory.
        assert!(reopened.disk_allocated_bytes >= after.disk_usage_bytes + 4096);
        s.delete_partition(T, 0).await.unwrap();
        assert_eq!(
            s.stats(T, 0).unwrap_err().kafka_error_code(),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
        let mut visits = 0;
        s.partition_stats(|_, _, _| visits += 1);
        assert_eq!(visits, 0);
    });
}

/// Space reserved ahead of the data grows with the segment (issue 16): one small record
/// reserves one 4 KiB page, not `preallocate_bytes`; a growing segment holds at most about twice its
/// data, and steps stop growing at `preallocate_bytes`.
#[test]
fn reservation_grows_with_the_data() {
    run(|| async {
        let disk = SimDisk::new(16);
        let dir = PathBuf::from("/sim/t-0");
        let cfg = LogConfig {
            segment_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let opts = StorageOptions {
            batch_cache_bytes_max: 0,
            write_bytes_max: 256 << 10,
            preallocate_bytes: 1 << 20,
            ..StorageOptions::default()
        };
        let s = open_sim(&disk, opts).await;
        s.open_partition(T, 0, cfg).await.unwrap();
        s.append(T, 0, build_test_batch(1, 100, now_ms())).unwrap();
        s.flush().await.unwrap();
        assert_eq!(
            log_file_bytes(&disk, &dir).await,
            crate::storage::log::PREALLOCATE_MIN_BYTES,
            "an idle partition reserves the smallest step"
        );
        let mut largest_step = 0;
        let mut last = log_file_bytes(&disk, &dir).await;
        for i in 0..400 {
            s.append(T, 0, build_test_batch(4, 2000, now_ms() + i))
                .unwrap();
            s.flush().await.unwrap();
            let data = s.stats(T, 0).unwrap().disk_usage_bytes;
            let file = log_file_bytes(&disk, &dir).await;
            assert!(file >= data);
            assert!(
                file <= 2 * data + (64 << 10),
                "at most about twice the data: {file} for {data}"
            );
            largest_step = largest_step.max(file - last);
            last = file;
        }
        let data = s.stats(T, 0).unwrap().disk_usage_bytes;
        assert!(data > 3 << 20, "past several full steps: {data}");
        assert!(
            largest_step <= (1 << 20) + 4096,
            "no step past preallocate_bytes: {largest_step}"
        );
        assert!(last - data < (1 << 20) + 4096, "{last} for {data}");
    });
}
