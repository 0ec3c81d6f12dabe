//! DeleteRecords and log compaction on the simulated disk: the log start offset's durability,
//! and the cleaner's properties (latest value per key at its offset, crash safety).

use super::tests::{open_sim, read_all, run, sim_options, small_config, T};
use super::*;
use crate::error_code::ErrorCode;
use crate::io::SimDisk;

#[test]
fn delete_records_moves_the_start_durably_and_deletes_whole_segments() {
    run(|| async {
        let disk = SimDisk::new(7);
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        let mut next = 0;
        for i in 0..40 {
            let info = s.append(T, 0, build_test_batch(3, 400, 1000 + i)).unwrap();
            next = info.last_offset + 1;
        }
        s.flush().await.unwrap();
        let files_before = disk
            .fs()
            .list_files(std::path::Path::new("/sim/t-0"))
            .unwrap();
        // Above the high watermark: OFFSET_OUT_OF_RANGE, nothing moves.
        let err = s.delete_records(T, 0, next + 1).await.unwrap_err();
        assert_eq!(err.kafka_error_code(), ErrorCode::OFFSET_OUT_OF_RANGE);
        assert_eq!(s.offsets(T, 0).unwrap().0, 0);
        // Mid-batch, mid-log.
        let target = 61;
        assert_eq!(s.delete_records(T, 0, target).await.unwrap(), target);
        // Lower than the start: nothing changes, the current start is answered.
        assert_eq!(s.delete_records(T, 0, 10).await.unwrap(), target);
        assert_eq!(s.offsets(T, 0).unwrap(), (target, next));
        let err = s.read(T, 0, target - 1, 1000).await.unwrap_err();
        assert_eq!(err.kafka_error_code(), ErrorCode::OFFSET_OUT_OF_RANGE);
        let got = read_all(&s, target).await;
        assert!(got[0].0.base_offset <= target && got[0].0.last_offset() >= target);
        assert_eq!(got.last().unwrap().0.last_offset(), next - 1);
        assert_eq!(
            s.offset_for_timestamp(T, 0, 0).await.unwrap().map(|o| o.0),
            Some(target),
            "ListOffsets by time never answers below the start"
        );
        let files_after = disk
            .fs()
            .list_files(std::path::Path::new("/sim/t-0"))
            .unwrap();
        let logs = |f: &[String]| f.iter().filter(|n| n.ends_with(".log")).count();
        assert!(
            logs(&files_after) < logs(&files_before),
            "whole segments below the start are deleted: {files_before:?} -> {files_after:?}"
        );
        // A crash (nothing more synced) keeps the start.
        disk.crash();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        assert_eq!(s.offsets(T, 0).unwrap(), (target, next));
        // -1 = the high watermark: everything goes; appends continue after it.
        assert_eq!(s.delete_records(T, 0, -1).await.unwrap(), next);
        let info = s.append(T, 0, build_test_batch(1, 10, 5)).unwrap();
        assert_eq!(info.first_offset, next);
        s.shutdown().await.unwrap();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        assert_eq!(s.offsets(T, 0).unwrap(), (next, next + 1));
    });
}

#[test]
fn delete_records_on_a_compact_only_topic_is_a_policy_violation() {
    run(|| async {
        let disk = SimDisk::new(8);
        let s = open_sim(&disk, sim_options()).await;
        let cfg = LogConfig {
            cleanup_delete: false,
            ..small_config()
        };
        s.open_partition(T, 0, cfg).await.unwrap();
        s.append(T, 0, build_test_batch(2, 10, 1)).unwrap();
        let err = s.delete_records(T, 0, 1).await.unwrap_err();
        assert_eq!(err.kafka_error_code(), ErrorCode::POLICY_VIOLATION);
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 2));
        let err = s.delete_records("nope", 0, 1).await.unwrap_err();
        assert_eq!(
            err.kafka_error_code(),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
        );
    });
}

use std::collections::BTreeMap;
use std::rc::Rc;

use super::records::{batch_records, build_keyed_batch, TestRecord};
use super::tests::Rng;
use crate::io::yield_now_times;

/// Every record appended: offset → (key, value; `None` = tombstone).
type Model = BTreeMap<i64, (Vec<u8>, Option<Vec<u8>>)>;

fn compact_config(rng: &mut Rng, expire_tombstones: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 1024 + rng.below(3000),
        index_interval_bytes: 128,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.0,
        delete_retention_ms: if expire_tombstones { 0 } else { i64::MAX / 4 },
        ..LogConfig::default()
    }
}

/// Appends `batches` random keyed batches (keys from a small set, some tombstones) and
/// records them in `model`.
fn append_random(s: &ShardStorage, rng: &mut Rng, model: &mut Model, batches: usize) {
    for _ in 0..batches {
        let n = 1 + rng.below(4) as usize;
        let recs: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
            .map(|_| {
                let key = format!("key-{}", rng.below(25)).into_bytes();
                let value = (rng.below(8) != 0).then(|| {
                    format!(
                        "v{}-{}",
                        rng.next() % 1000,
                        "x".repeat(rng.below(60) as usize)
                    )
                    .into_bytes()
                });
                (key, value)
            })
            .collect();
        let parts: Vec<TestRecord<'_>> = recs
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let info = s.append(T, 0, build_keyed_batch(&parts, 1000)).unwrap();
        for (i, r) in recs.into_iter().enumerate() {
            model.insert(info.first_offset + i as i64, r);
        }
    }
}

/// Every batch from `from` on, in a log that may have offset gaps: each read's first batch
/// ends at or after the offset asked for.
async fn read_gapped(s: &ShardStorage, from: i64) -> Vec<(BatchHeader, bytes::Bytes)> {
    let mut out: Vec<(BatchHeader, bytes::Bytes)> = Vec::new();
    let mut off = from;
    for _ in 0..100_000 {
        let info = s.read(T, 0, off, 3000).await.expect("read");
        let batches = super::tests::split_batches(&info);
        let Some((last, _)) = batches.last() else {
            return out;
        };
        assert!(
            batches[0].0.last_offset() >= off,
            "read from {off} returned an earlier batch"
        );
        off = last.last_offset() + 1;
        for b in batches {
            if out
                .last()
                .is_none_or(|(h, _)| b.0.base_offset > h.base_offset)
            {
                out.push(b);
            }
        }
    }
    panic!("read_gapped did not reach the log end");
}

/// Every record the log serves from `from` on: offset → (key, value).
async fn read_records(s: &ShardStorage, from: i64) -> Model {
    let mut out = Model::new();
    for (h, b) in read_gapped(s, from).await {
        for r in batch_records(&b, &h).expect("served batch parses") {
            let offset = h.base_offset + r.offset_delta as i64;
            assert!(
                offset <= h.last_offset(),
                "record past its batch's last offset"
            );
            let value = if r.tombstone {
                None
            } else {
                Some(value_of(&r.bytes))
            };
            out.insert(offset, (r.key.expect("key").to_vec(), value));
        }
    }
    out
}

/// The value bytes of a serialized record (test-only re-parse of the framing).
fn value_of(rec: &[u8]) -> Vec<u8> {
    fn varint(b: &[u8], at: &mut usize) -> i64 {
        let mut z = 0u64;
        let mut shift = 0;
        loop {
            let byte = b[*at];
            *at += 1;
            z |= ((byte & 0x7f) as u64) << shift;
            if byte & 0x80 == 0 {
                return (z >> 1) as i64 ^ -((z & 1) as i64);
            }
            shift += 7;
        }
    }
    let mut at = 0;
    varint(rec, &mut at); // length
    at += 1; // attributes
    varint(rec, &mut at); // timestamp delta
    varint(rec, &mut at); // offset delta
    let k = varint(rec, &mut at);
    at += k.max(0) as usize;
    let v = varint(rec, &mut at);
    rec[at..at + v as usize].to_vec()
}

/// The compaction properties, with `clean_end` the first offset no pass cleaned:
/// every record served is the one appended at its offset; every key's latest record is
/// there (unless it is an expired tombstone below `clean_end`); below `clean_end` only a
/// key's latest record (below `clean_end`) remains, and no expired tombstone; reading from
/// any offset starts at the first surviving record at or after it.
async fn check_compacted(
    s: &ShardStorage,
    model: &Model,
    clean_end: i64,
    expired: bool,
    ctx: &str,
) {
    let (start, hw) = s.offsets(T, 0).unwrap();
    let got = read_records(s, start).await;
    let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
    let mut latest_clean: BTreeMap<&[u8], i64> = BTreeMap::new();
    for (&o, (k, _)) in model {
        latest.insert(k, o);
        if o < clean_end {
            latest_clean.insert(k, o);
        }
    }
    for (o, r) in &got {
        assert_eq!(Some(r), model.get(o), "{ctx}: record at {o} differs");
        if *o < clean_end {
            assert_eq!(
                latest_clean.get(r.0.as_slice()),
                Some(o),
                "{ctx}: older value at {o} kept"
            );
            assert!(
                !(expired && r.1.is_none()),
                "{ctx}: expired tombstone at {o} kept"
            );
        }
    }
    for (k, o) in &latest {
        let tombstone = model[o].1.is_none();
        if !(tombstone && expired && *o < clean_end) {
            assert!(
                got.contains_key(o),
                "{ctx}: latest record of {:?} at {o} lost",
                String::from_utf8_lossy(k)
            );
        }
    }
    // Reading from any offset: the first batch served ends at or after it, and no record
    // that survives lies between the offset and that batch (a consumer skips nothing).
    let mut probe = start;
    while probe < hw {
        let info = s.read(T, 0, probe, 1).await.expect("read");
        let batches = super::tests::split_batches(&info);
        let (h, _) = batches
            .first()
            .expect("a read below the high watermark serves a batch");
        assert!(
            h.last_offset() >= probe,
            "{ctx}: read from {probe} served a batch ending at {}",
            h.last_offset()
        );
        assert_eq!(
            got.range(probe..h.base_offset.max(probe)).next(),
            None,
            "{ctx}: read from {probe} skipped records before batch {}",
            h.base_offset
        );
        probe += 1 + (probe % 3);
    }
}

#[test]
fn compaction_keeps_the_latest_value_of_every_key_at_its_offset() {
    run(|| async {
        for seed in 0..30u64 {
            let mut rng = Rng(seed);
            let expired = seed % 2 == 1;
            let disk = SimDisk::new(seed);
            let s = open_sim(&disk, sim_options()).await;
            let cfg = compact_config(&mut rng, expired);
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            let mut model = Model::new();
            for round in 0..3 {
                let n = 40 + rng.below(60) as usize;
                append_random(&s, &mut rng, &mut model, n);
                s.flush().await.unwrap();
                glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                s.clean_logs().await.unwrap();
                let clean_end = s.cleaner_checkpoint_for_test(T, 0).unwrap_or(0);
                let ctx = format!("seed {seed} round {round}");
                check_compacted(&s, &model, clean_end, expired, &ctx).await;
            }
            let clean_end = s.cleaner_checkpoint_for_test(T, 0).unwrap_or(0);
            assert!(clean_end > 0, "seed {seed}: the cleaner ran");
            // The cleaned log survives a clean restart and a crash alike.
            s.shutdown().await.unwrap();
            let s = open_sim(&disk, sim_options()).await;
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            check_compacted(
                &s,
                &model,
                clean_end,
                expired,
                &format!("seed {seed} reopened"),
            )
            .await;
            append_random(&s, &mut rng, &mut model, 10);
            s.flush().await.unwrap();
            disk.crash();
            let s = open_sim(&disk, sim_options()).await;
            s.open_partition(T, 0, cfg).await.unwrap();
            check_compacted(
                &s,
                &model,
                clean_end,
                expired,
                &format!("seed {seed} crashed"),
            )
            .await;
        }
    });
}

#[test]
fn compaction_crashed_at_random_points_loses_nothing() {
    run(|| async {
        let mut swapped_before_crash = 0;
        for seed in 0..60u64 {
            let mut rng = Rng(seed ^ 0x5EED);
            let expired = seed % 3 == 0;
            let disk = SimDisk::new(seed);
            let s = open_sim(&disk, sim_options()).await;
            let cfg = compact_config(&mut rng, expired);
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            let mut model = Model::new();
            let n = 60 + rng.below(60) as usize;
            append_random(&s, &mut rng, &mut model, n);
            s.flush().await.unwrap();
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
            let before = read_records(&s, 0).await;
            disk.set_yields_per_op(3);
            let cleaner = {
                let s: Rc<ShardStorage> = s.clone();
                glommio::spawn_local(async move {
                    let _ = s.clean_logs().await;
                })
            };
            yield_now_times(rng.below(300) as u32).await;
            let finished = s.cleaner_checkpoint_for_test(T, 0).is_some();
            disk.crash();
            cleaner.cancel().await;
            drop(s);
            disk.set_yields_per_op(0);
            let s = open_sim(&disk, sim_options()).await;
            s.open_partition(T, 0, cfg).await.unwrap();
            let ctx = format!(
                "seed {seed} (cleaner {})",
                if finished { "swapped" } else { "unfinished" }
            );
            swapped_before_crash += finished as usize;
            // Whatever was swapped in is a valid compaction of what was there; nothing
            // else changed. With no checkpoint written, any prefix of segments may be
            // cleaned: check against the widest bound (every non-active segment).
            let (start, hw) = s.offsets(T, 0).unwrap();
            assert_eq!(
                hw,
                *before.keys().next_back().unwrap() + 1,
                "{ctx}: log end"
            );
            let got = read_records(&s, start).await;
            let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
            for (&o, (k, _)) in &model {
                latest.insert(k, o);
            }
            for (o, r) in &got {
                assert_eq!(Some(r), model.get(o), "{ctx}: record at {o}");
            }
            for (k, o) in &latest {
                if model[o].1.is_some() || !expired {
                    assert!(
                        got.contains_key(o),
                        "{ctx}: latest of {:?} at {o} lost",
                        String::from_utf8_lossy(k)
                    );
                }
            }
            // The restarted cleaner finishes the job: the full properties hold.
            s.clean_logs().await.unwrap();
            let clean_end = s.cleaner_checkpoint_for_test(T, 0).unwrap_or(0);
            check_compacted(
                &s,
                &model,
                clean_end,
                expired,
                &format!("{ctx}, cleaned again"),
            )
            .await;
        }
        assert!(
            swapped_before_crash > 0,
            "some crashes must come after a swap"
        );
    });
}

#[test]
fn records_without_keys_are_refused_on_a_compacted_topic() {
    run(|| async {
        let disk = SimDisk::new(3);
        let s = open_sim(&disk, sim_options()).await;
        let mut rng = Rng(3);
        s.open_partition(T, 0, compact_config(&mut rng, false))
            .await
            .unwrap();
        s.append(T, 0, build_keyed_batch(&[(Some(b"k"), Some(b"v"))], 1))
            .unwrap();
        let err = s
            .append(
                T,
                0,
                build_keyed_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"v"))], 1),
            )
            .unwrap_err();
        assert_eq!(err.kafka_error_code(), ErrorCode::INVALID_RECORD);
        assert!(err.to_string().contains("without key"), "{err}");
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 1), "the log is intact");
    });
}

#[test]
fn a_producers_last_batch_stays_empty_so_its_sequence_survives_a_crash() {
    run(|| async {
        let disk = SimDisk::new(11);
        let s = open_sim(&disk, sim_options()).await;
        let mut rng = Rng(11);
        let cfg = LogConfig {
            segment_bytes: 200,
            ..compact_config(&mut rng, false)
        };
        s.open_partition(T, 0, cfg.clone()).await.unwrap();
        // Producer 7's only batch (seq 0) is superseded by a plain producer's later records.
        let first =
            super::tests::idempotent(&build_keyed_batch(&[(Some(b"k"), Some(b"old"))], 1), 7, 0);
        s.append(T, 0, first).unwrap();
        for i in 0..6 {
            let v = format!("new-{i}-{}", "x".repeat(150));
            s.append(
                T,
                0,
                build_keyed_batch(&[(Some(b"k"), Some(v.as_bytes()))], 1),
            )
            .unwrap();
        }
        s.flush().await.unwrap();
        s.clean_logs().await.unwrap();
        let first_batch = &read_gapped(&s, 0).await[0].0;
        assert_eq!(
            (
                first_batch.base_offset,
                first_batch.producer_id,
                first_batch.records_count
            ),
            (0, 7, 0),
            "producer 7's last batch stays, empty"
        );
        // A crash without a producer snapshot: the state is rebuilt from the log, so the
        // producer's next sequence is accepted and a retry of seq 0 is a duplicate.
        disk.crash();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, cfg).await.unwrap();
        let next =
            super::tests::idempotent(&build_keyed_batch(&[(Some(b"k"), Some(b"n"))], 1), 7, 1);
        let info = s
            .append(T, 0, next)
            .expect("sequence 1 follows the kept batch");
        assert!(!info.duplicate);
    });
}

/// Every record the log serves, read from each offset in `[start, hw)` on its own (each read
/// goes through the offset index): the first batch ends at or after the offset, its records
/// are the ones appended there, and no surviving record lies between the offset and it.
async fn check_reads_from_every_offset(s: &ShardStorage, model: &Model, ctx: &str) {
    let (start, hw) = s.offsets(T, 0).unwrap();
    let got = read_records(s, start).await;
    for (o, r) in &got {
        assert_eq!(Some(r), model.get(o), "{ctx}: record at {o} differs");
    }
    for probe in start..hw {
        let info = s.read(T, 0, probe, 1).await.expect("read");
        let batches = super::tests::split_batches(&info);
        let (h, b) = batches
            .first()
            .expect("a read below the high watermark serves a batch");
        assert!(
            h.last_offset() >= probe,
            "{ctx}: read from {probe} served a batch ending at {}",
            h.last_offset()
        );
        assert_eq!(
            got.range(probe..h.base_offset.max(probe)).next(),
            None,
            "{ctx}: read from {probe} skipped records before batch {}",
            h.base_offset
        );
        for r in batch_records(b, h).expect("served batch parses") {
            let offset = h.base_offset + r.offset_delta as i64;
            assert!(
                got.contains_key(&offset),
                "{ctx}: read from {probe} served {offset}, which a full read does not"
            );
        }
    }
}

/// Every `.index` file in `dir` matches its `.log`: each entry points at the start of the
/// batch with that base offset (an index of the other version of a cleaned segment would not).
fn check_index_files(disk: &Rc<SimDisk>, dir: &std::path::Path, ctx: &str) {
    let fs = disk.fs();
    for name in fs.list_files(dir).unwrap() {
        let Some(stem) = name.strip_suffix(".index") else {
            continue;
        };
        let base: i64 = stem.parse().unwrap();
        let idx = fs.read_small_file(&dir.join(&name)).unwrap().unwrap();
        let log = fs
            .read_small_file(&dir.join(format!("{stem}.log")))
            .unwrap()
            .unwrap_or_default();
        for e in idx.chunks_exact(8) {
            let rel = i32::from_be_bytes([e[0], e[1], e[2], e[3]]) as i64;
            let pos = i32::from_be_bytes([e[4], e[5], e[6], e[7]]) as usize;
            let h = log
                .get(pos..)
                .and_then(|b| super::batch::parse_header(b).ok());
            assert_eq!(
                h.map(|h| h.base_offset),
                Some(base + rel),
                "{ctx}: {name} entry ({rel}, {pos}) does not point at its batch"
            );
        }
    }
}

/// The swap's renames are made durable by one directory sync after the I/O lock: a crash
/// before it keeps any mix of them. Recovery must then use the old or the whole new `.log`
/// of each segment, never an index of the other version (reads from every offset go through
/// the index), and lose nothing.
#[test]
fn compaction_crashed_between_the_swap_renames_keeps_a_whole_segment() {
    run(|| async {
        let dir = std::path::Path::new("/sim").join(format!("{T}-0"));
        let (mut crashed_pending, mut mixed) = (0usize, 0usize);
        for seed in 0..48u64 {
            let mut rng = Rng(seed ^ 0x5A4B);
            let disk = SimDisk::new(seed);
            let s = open_sim(&disk, sim_options()).await;
            let cfg = compact_config(&mut rng, seed % 2 == 0);
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            let mut model = Model::new();
            let n = 80 + rng.below(60) as usize;
            append_random(&s, &mut rng, &mut model, n);
            s.flush().await.unwrap();
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
            let (_, hw_before) = s.offsets(T, 0).unwrap();
            disk.set_yields_per_op(3);
            let done = Rc::new(std::cell::Cell::new(false));
            let cleaner = {
                let s: Rc<ShardStorage> = s.clone();
                let done = done.clone();
                glommio::spawn_local(async move {
                    let _ = s.clean_logs().await;
                    done.set(true);
                })
            };
            // Crash at a moment renames are pending (if the pass gets there), after a seeded
            // number of earlier swaps.
            let mut skip = rng.below(3);
            for _ in 0..100_000 {
                if done.get() {
                    break;
                }
                if disk.pending_renames() > 0 {
                    if skip == 0 {
                        break;
                    }
                    skip -= 1;
                    for _ in 0..10_000 {
                        if disk.pending_renames() == 0 {
                            break;
                        }
                        yield_now_times(1).await;
                    }
                }
                yield_now_times(1).await;
            }
            let pending = disk.pending_renames();
            disk.crash();
            cleaner.cancel().await;
            drop(s);
            disk.set_yields_per_op(0);
            if pending > 0 {
                crashed_pending += 1;
                let names = disk.fs().list_files(&dir).unwrap();
                let left: Vec<&String> = names.iter().filter(|n| n.ends_with(".cleaned")).collect();
                // Some renames kept, some undone: the state recovery must sort out.
                if !left.is_empty() && left.len() < pending {
                    mixed += 1;
                }
            }
            let s = open_sim(&disk, sim_options()).await;
            s.open_partition(T, 0, cfg.clone()).await.unwrap();
            let ctx = format!("seed {seed} ({pending} renames pending at the crash)");
            let names = disk.fs().list_files(&dir).unwrap();
            assert!(
                !names.iter().any(|n| n.ends_with(".cleaned")),
                "{ctx}: leftovers after open: {names:?}"
            );
            assert_eq!(s.offsets(T, 0).unwrap().1, hw_before, "{ctx}: log end");
            check_index_files(&disk, &dir, &ctx);
            check_reads_from_every_offset(&s, &model, &ctx).await;
            let mut latest: BTreeMap<&[u8], i64> = BTreeMap::new();
            for (&o, (k, _)) in &model {
                latest.insert(k, o);
            }
            let (start, _) = s.offsets(T, 0).unwrap();
            let got = read_records(&s, start).await;
            for o in latest.values() {
                if model[o].1.is_some() {
                    assert!(got.contains_key(o), "{ctx}: latest value at {o} lost");
                }
            }
            // A clean restart now keeps the same log with its (rebuilt) indexes.
            s.shutdown().await.unwrap();
            let s = open_sim(&disk, sim_options()).await;
            s.open_partition(T, 0, cfg).await.unwrap();
            check_index_files(&disk, &dir, &format!("{ctx}, reopened"));
            check_reads_from_every_offset(&s, &model, &format!("{ctx}, reopened")).await;
        }
        assert!(
            crashed_pending > 10,
            "crashes with pending renames: {crashed_pending}"
        );
        assert!(mixed > 0, "no crash kept only some of the renames");
    });
}
