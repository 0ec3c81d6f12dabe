//! A follower's log: batches appended as the leader wrote them, and truncation where the logs
//! diverge, checked against a model across simulated crashes and clean stops.

use bytes::Bytes;

use super::tests::{idempotent, open_sim, read_all, run, Rng, T};
use super::tests_epochs::{epoch_starts, model_end_offset};
use super::*;
use crate::error_code::ErrorCode;
use crate::io::SimDisk;

/// `b` as the leader stored it: base offset and leader epoch set (both outside the CRC).
fn as_stored(b: &Bytes, base: i64, epoch: i32) -> Bytes {
    let mut v = b.to_vec();
    v[0..8].copy_from_slice(&base.to_be_bytes());
    v[12..16].copy_from_slice(&epoch.to_be_bytes());
    Bytes::from(v)
}

/// One batch of the model: as the leader stored it, and as the producer sent it.
struct Sent {
    stored: Bytes,
    client: Bytes,
}

fn header(b: &Bytes) -> BatchHeader {
    parse_header(b).unwrap()
}

#[test]
fn replica_appends_keep_the_leaders_batches() {
    run(|| async {
        let disk = SimDisk::new(70);
        let s = open_sim(&disk, super::tests::sim_options()).await;
        s.open_partition(T, 0, super::tests::small_config())
            .await
            .unwrap();
        let b = idempotent(&build_test_batch(3, 20, 1), 9, 0);
        s.append_replica(T, 0, as_stored(&b, 0, 4)).unwrap();
        // Not at the log end: refused, nothing appended.
        let e = s
            .append_replica(T, 0, as_stored(&build_test_batch(1, 5, 1), 7, 4))
            .unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::INVALID_RECORD);
        let mut bad = as_stored(&build_test_batch(1, 5, 1), 3, 4).to_vec();
        bad[70] ^= 1;
        let e = s.append_replica(T, 0, Bytes::from(bad)).unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::CORRUPT_MESSAGE);
        s.append_replica(T, 0, as_stored(&build_test_batch(2, 5, 1), 3, 6))
            .unwrap();
        assert_eq!(s.last_epoch_and_end(T, 0).unwrap(), (6, 5));
        let got = read_all(&s, 0).await;
        let kept: Vec<(i64, i32)> = got
            .iter()
            .map(|(h, _)| (h.base_offset, h.partition_leader_epoch))
            .collect();
        assert_eq!(kept, [(0, 4), (3, 6)]);
        assert_eq!(s.end_offset_for_epoch(T, 0, 4).unwrap(), (4, 3));
        // The producer's retry is a duplicate here, as it was on the leader.
        let info = s.append(T, 0, b).unwrap();
        assert!(info.duplicate && info.first_offset == 0 && info.last_offset == 2);
        s.shutdown().await.unwrap();
    });
}

#[test]
fn truncation_survives_crashes_and_rebuilds_state() {
    run(|| async {
        let mut truncations = 0;
        for seed in 0..80u64 {
            truncations += truncation_case(seed).await;
        }
        assert!(truncations > 20, "only {truncations} truncations");
    });
}

async fn truncation_case(seed: u64) -> usize {
    let disk = SimDisk::new(seed ^ 0x7a11);
    let mut rng = Rng(seed);
    let config = LogConfig {
        segment_bytes: 1024 + rng.below(4096),
        index_interval_bytes: 256,
        ..LogConfig::default()
    };
    let opts = StorageOptions {
        batch_cache_bytes_max: rng.below(3) as usize * 3000,
        write_bytes_max: 1024 + rng.below(4096) as usize,
        preallocate_bytes: 4096,
        ..StorageOptions::default()
    };
    let mut model: Vec<Sent> = Vec::new();
    let mut acked = 0usize;
    let mut epoch = 0;
    let mut truncations = 0;
    for cycle in 0..4 {
        let s = open_sim(&disk, opts.clone()).await;
        s.open_partition(T, 0, config.clone()).await.unwrap();
        let got = read_all(&s, 0).await;
        let ctx = format!(
            "seed {seed} cycle {cycle}: got {}, model {}, acked {acked}",
            got.len(),
            model.len()
        );
        assert!(got.len() >= acked && got.len() <= model.len(), "{ctx}");
        for (i, (h, b)) in got.iter().enumerate() {
            assert_eq!(b, &model[i].stored, "{ctx}: batch {i}");
            assert_eq!(h.base_offset, header(&model[i].stored).base_offset);
        }
        model.truncate(got.len());
        acked = got.len();
        check_state(&s, &model, epoch, &ctx);
        for _ in 0..(5 + rng.below(30)) {
            let end = model
                .last()
                .map_or(0, |m| header(&m.stored).last_offset() + 1);
            match rng.below(10) {
                0 => epoch += 1,
                1 => {
                    s.flush().await.unwrap();
                    acked = model.len();
                }
                2 if end > 0 => {
                    let offset = rng.below(end as u64 + 1) as i64;
                    let new_end = s.truncate_to(T, 0, offset).await.unwrap();
                    model.retain(|m| header(&m.stored).last_offset() < offset);
                    let want = model
                        .last()
                        .map_or(0, |m| header(&m.stored).last_offset() + 1);
                    assert_eq!(new_end, want, "seed {seed}: truncate_to({offset})");
                    if offset < end {
                        // A truncation is durable on return (at the end it changes nothing).
                        acked = model.len();
                    }
                    truncations += 1;
                    check_state(
                        &s,
                        &model,
                        epoch,
                        &format!("seed {seed} after truncate_to({offset})"),
                    );
                }
                _ => {
                    let count = 1 + rng.below(3) as i32;
                    let mut b = build_test_batch(count, rng.below(500) as usize, 1);
                    if rng.below(2) == 0 {
                        let seq = model
                            .iter()
                            .map(|m| header(&m.stored))
                            .filter(|h| h.producer_id == 1)
                            .last()
                            .map_or(0, |h| h.base_sequence + h.records_count);
                        b = idempotent(&b, 1, seq);
                    }
                    let stored = as_stored(&b, end, epoch);
                    s.append_replica(T, 0, stored.clone()).unwrap();
                    model.push(Sent { stored, client: b });
                }
            }
        }
        if rng.below(4) == 0 {
            s.shutdown().await.unwrap();
            acked = model.len();
        }
        drop(s);
        disk.crash();
    }
    truncations
}

/// The log's derived state matches the model: the epochs OffsetForLeaderEpoch answers, and
/// the producer state (the last idempotent batch's retry is a duplicate with its offsets).
fn check_state(s: &ShardStorage, model: &[Sent], epoch: i32, ctx: &str) {
    let end = s.offsets(T, 0).unwrap().1;
    let headers: Vec<BatchHeader> = model.iter().map(|m| header(&m.stored)).collect();
    for e in -1..=epoch + 1 {
        assert_eq!(
            s.end_offset_for_epoch(T, 0, e).unwrap(),
            model_end_offset(&epoch_starts(headers.iter()), e, end),
            "{ctx}: epoch {e}"
        );
    }
    if let Some(last) = model
        .iter()
        .rev()
        .find(|m| header(&m.stored).producer_id == 1)
    {
        let h = header(&last.stored);
        let info = s.append(T, 0, last.client.clone()).unwrap();
        assert!(info.duplicate, "{ctx}: retry appended again");
        assert_eq!(
            (info.first_offset, info.last_offset),
            (h.base_offset, h.last_offset()),
            "{ctx}"
        );
    }
}

/// The high watermark of a replicated partition: `min(durable here, replica floor)`, never
/// moving back on a leader when the floor changes; consumers read below it, a follower's
/// read goes to the log end; an acks=all wait resolves once it passes, and fails with
/// NOT_LEADER_OR_FOLLOWER when a truncation removed the offset. One replica: the log end.
#[test]
fn high_watermark_follows_the_replica_floor() {
    run(|| async {
        let disk = SimDisk::new(71);
        let s = open_sim(&disk, super::tests::sim_options()).await;
        s.spawn_background_tasks();
        s.open_partition(T, 0, super::tests::small_config())
            .await
            .unwrap();
        s.append(T, 0, build_test_batch(3, 20, 1)).unwrap();
        assert_eq!(
            s.high_watermark(T, 0).unwrap(),
            3,
            "one replica: the log end"
        );
        // A leader whose follower has fetched nothing yet: the high watermark stays at 0.
        s.set_replica_floor(T, 0, Some(i64::MIN));
        assert_eq!(s.high_watermark(T, 0).unwrap(), 0);
        let consumer = s
            .read_limited(T, 0, 0, 1 << 20, true, true, false, false)
            .await
            .unwrap();
        assert!(consumer.batches.is_empty() && consumer.high_watermark == 0);
        let follower = s
            .read_limited(T, 0, 0, 1 << 20, true, true, false, true)
            .await
            .unwrap();
        assert!(
            !follower.batches.is_empty(),
            "a follower reads to the log end"
        );
        assert_eq!(s.last_stable_offset(T, 0).unwrap(), 0);
        // The follower fetched from 3 (has 0..3 on disk): the high watermark follows once 0..3
        // is durable here too (the floor asks for the sync).
        s.set_replica_floor(T, 0, Some(3));
        s.wait_high_watermark(T, 0, 2).await.unwrap();
        assert_eq!(s.high_watermark(T, 0).unwrap(), 3);
        // A new leadership forgets the followers: the high watermark does not move back.
        s.set_replica_floor(T, 0, Some(i64::MIN));
        assert_eq!(s.high_watermark(T, 0).unwrap(), 3);
        s.append(T, 0, build_test_batch(2, 20, 1)).unwrap();
        s.wait_durable(T, 0, 4).await.unwrap();
        assert_eq!(
            s.high_watermark(T, 0).unwrap(),
            3,
            "durable but not replicated"
        );
        // Alone in the ISR: the durable log end.
        s.set_replica_floor(T, 0, Some(i64::MAX));
        assert_eq!(s.high_watermark(T, 0).unwrap(), 5);
        s.append(T, 0, build_test_batch(2, 20, 1)).unwrap();
        s.set_replica_floor(T, 0, Some(i64::MIN));
        // A waiter on an offset a truncation removes gets NOT_LEADER_OR_FOLLOWER.
        let s2 = s.clone();
        let w = glommio::spawn_local(async move { s2.wait_high_watermark(T, 0, 6).await });
        s.truncate_to(T, 0, 5).await.unwrap();
        let e = w.await.unwrap_err();
        assert_eq!(e.kafka_error_code(), ErrorCode::NOT_LEADER_OR_FOLLOWER);
        assert_eq!(s.high_watermark(T, 0).unwrap(), 5);
        s.shutdown().await.unwrap();
    });
}
