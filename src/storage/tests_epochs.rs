//! Leader epochs: stamped in every appended batch, and the leader-epoch cache rebuilt exactly
//! after clean stops and simulated crashes (its checkpoint plus the batches after the recovery
//! point).

use super::tests::{open_sim, read_all, run, Rng, T};
use super::*;
use crate::io::SimDisk;

/// Where each epoch starts, from a log's batch headers in offset order.
pub(super) fn epoch_starts<'a>(
    headers: impl IntoIterator<Item = &'a BatchHeader>,
) -> Vec<(i32, i64)> {
    let mut starts: Vec<(i32, i64)> = Vec::new();
    for h in headers {
        if starts.last().is_none_or(|s| s.0 < h.partition_leader_epoch) {
            starts.push((h.partition_leader_epoch, h.base_offset));
        }
    }
    starts
}

/// Kafka's answer for `epoch` computed from a log's epoch starts alone: the latest epoch ends
/// at the log end, an older one where the first batch of a newer epoch starts.
pub(super) fn model_end_offset(starts: &[(i32, i64)], epoch: i32, log_end: i64) -> (i32, i64) {
    if epoch < 0 {
        return (-1, -1);
    }
    if starts.last().map(|s| s.0) == Some(epoch) {
        return (epoch, log_end);
    }
    let Some(higher) = starts.iter().find(|s| s.0 > epoch) else {
        return (-1, -1);
    };
    match starts.iter().rev().find(|s| s.0 <= epoch) {
        Some(floor) => (floor.0, higher.1),
        None => (epoch, higher.1),
    }
}

#[test]
fn appends_are_stamped_with_the_leader_epoch() {
    run(|| async {
        let disk = SimDisk::new(40);
        let s = open_sim(&disk, super::tests::sim_options()).await;
        s.open_partition(T, 0, super::tests::small_config())
            .await
            .unwrap();
        for (i, epoch) in [0, 0, 2, 2, 5].into_iter().enumerate() {
            s.set_leader_epoch(T, 0, epoch);
            s.append(T, 0, build_test_batch(2, 10, i as i64)).unwrap();
        }
        // An older epoch is ignored: epochs in a log never decrease.
        s.set_leader_epoch(T, 0, 1);
        s.append(T, 0, build_test_batch(1, 10, 9)).unwrap();
        let got = read_all(&s, 0).await;
        let epochs: Vec<i32> = got.iter().map(|(h, _)| h.partition_leader_epoch).collect();
        assert_eq!(epochs, [0, 0, 2, 2, 5, 5]);
        assert_eq!(s.end_offset_for_epoch(T, 0, 0).unwrap(), (0, 4));
        assert_eq!(s.end_offset_for_epoch(T, 0, 1).unwrap(), (0, 4));
        assert_eq!(s.end_offset_for_epoch(T, 0, 2).unwrap(), (2, 8));
        assert_eq!(s.end_offset_for_epoch(T, 0, 5).unwrap(), (5, 11));
        assert_eq!(s.end_offset_for_epoch(T, 0, 6).unwrap(), (-1, -1));
        s.shutdown().await.unwrap();
    });
}

#[test]
fn epoch_cache_survives_crashes_and_clean_stops() {
    run(|| async {
        let mut crashes_with_new_epochs = 0;
        for seed in 0..120u64 {
            crashes_with_new_epochs += epoch_case(seed).await;
        }
        assert!(crashes_with_new_epochs > 0, "the simulation must bite");
    });
}

/// Returns how many reopens found an epoch the checkpoint could not have known.
async fn epoch_case(seed: u64) -> usize {
    let disk = SimDisk::new(seed ^ 0x5eed);
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
    let mut epoch = 0;
    let mut bitten = 0;
    for cycle in 0..4 {
        let s = open_sim(&disk, opts.clone()).await;
        s.open_partition(T, 0, config.clone()).await.unwrap();
        let got = read_all(&s, 0).await;
        let end = s.offsets(T, 0).unwrap().1;
        let top = got.iter().map(|(h, _)| h.partition_leader_epoch).max();
        for e in -1..=epoch + 1 {
            assert_eq!(
                s.end_offset_for_epoch(T, 0, e).unwrap(),
                model_end_offset(&epoch_starts(got.iter().map(|(h, _)| h)), e, end),
                "seed {seed} cycle {cycle}: epoch {e} of {:?}",
                got.iter()
                    .map(|(h, _)| (h.partition_leader_epoch, h.base_offset))
                    .collect::<Vec<_>>()
            );
        }
        // The checkpoint as the crash left it (opening does not rewrite it): when it differs
        // from the data's epochs, the open had to cut or rebuild entries.
        let file = disk
            .fs()
            .read_small_file(std::path::Path::new("/sim/t-0/leader-epoch-checkpoint"))
            .unwrap()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let starts = epoch_starts(got.iter().map(|(h, _)| h));
        let mut want = format!("0\n{}\n", starts.len());
        for (e, o) in &starts {
            want.push_str(&format!("{e} {o}\n"));
        }
        bitten += usize::from(top.is_some_and(|t| t > 0) && file != want);
        // A new leadership (a restarted broker is given a newer epoch), then appends, with
        // epoch changes between some of them.
        for _ in 0..(5 + rng.below(30)) {
            match rng.below(8) {
                0 => {
                    epoch += 1;
                    s.set_leader_epoch(T, 0, epoch);
                }
                1 => s.flush().await.unwrap(),
                _ => {
                    let b = build_test_batch(1 + rng.below(3) as i32, rng.below(600) as usize, 1);
                    s.append(T, 0, b).unwrap();
                }
            }
        }
        if rng.below(4) == 0 {
            s.shutdown().await.unwrap();
        }
        drop(s);
        disk.crash();
    }
    bitten
}
