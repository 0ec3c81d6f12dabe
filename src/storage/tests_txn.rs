//! Transactions in the storage engine on the simulated disk: the last stable offset, the
//! aborted-transaction index, read_committed reads, a transaction open across a crash, and
//! the transactions-v2 marker rule that closes the delayed-marker anomaly Jepsen found in
//! Kafka's v1 protocol (a late COMMIT of transaction n must not close transaction n+1).

use bytes::Bytes;

use super::tests::{open_sim, run, sim_options, small_config, T};
use super::*;
use crate::error_code::ErrorCode;
use crate::io::SimDisk;

/// A transactional data batch of `count` records from producer `pid` at `epoch`, `seq`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, count: i32) -> Bytes {
    let mut b = build_test_batch(count, 8, 1).to_vec();
    b[21..23].copy_from_slice(&ATTR_TRANSACTIONAL.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// `(base offsets of the batches, aborted list, LSO)` of read_committed reads from 0 to the
/// end (a read may stop at a segment or cache boundary: read on from where it stopped).
async fn committed_view(s: &ShardStorage) -> (Vec<i64>, Vec<(i64, i64)>, i64) {
    let mut bases = Vec::new();
    let mut aborted: Vec<(i64, i64)> = Vec::new();
    let mut next = 0;
    loop {
        let d = s
            .read_limited(T, 0, next, 1 << 20, true, true, true, false)
            .await
            .unwrap();
        let mut joined = Vec::new();
        for b in &d.batches {
            joined.extend_from_slice(b);
        }
        let mut at = 0;
        while at < joined.len() {
            let h = parse_header(&joined[at..]).unwrap();
            bases.push(h.base_offset);
            next = h.last_offset() + 1;
            at += h.size_bytes();
        }
        for a in d.aborted {
            if !aborted.contains(&a) {
                aborted.push(a);
            }
        }
        if joined.is_empty() || next >= d.last_stable_offset {
            return (bases, aborted, d.last_stable_offset);
        }
    }
}

#[test]
fn lso_aborted_index_and_the_delayed_v2_marker() {
    run(|| async {
        let disk = SimDisk::new(11);
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        // Transaction n of producer 7 (epoch 0): offsets 0-1, open.
        s.append(T, 0, txn_batch(7, 0, 0, 2)).unwrap();
        assert_eq!(s.last_stable_offset(T, 0).unwrap(), 0);
        assert_eq!(committed_view(&s).await, (vec![], vec![], 0));
        // A client may not write a marker.
        let marker = |epoch, commit| build_control_batch(7, epoch, commit, 0, 5);
        assert_eq!(
            s.append(T, 0, marker(1, true))
                .unwrap_err()
                .kafka_error_code(),
            ErrorCode::INVALID_RECORD
        );
        // Transactions v2: the coordinator commits n with the bumped epoch 1 (offset 2).
        s.append_from(
            T,
            0,
            marker(1, true),
            AppendOrigin::CoordinatorTransactionV2,
        )
        .unwrap();
        assert_eq!(s.last_stable_offset(T, 0).unwrap(), 3);
        // Transaction n+1 at epoch 1 (offset 3).
        s.append(T, 0, txn_batch(7, 1, 0, 1)).unwrap();
        assert_eq!(s.last_stable_offset(T, 0).unwrap(), 3);
        // The delayed (repeated) COMMIT of n arrives now: refused, n+1 stays open.
        assert_eq!(
            s.append_from(
                T,
                0,
                marker(1, true),
                AppendOrigin::CoordinatorTransactionV2
            )
            .unwrap_err()
            .kafka_error_code(),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        assert_eq!(committed_view(&s).await, (vec![0, 2], vec![], 3));
        // n+1 is aborted by its own marker (epoch 2, offset 4): indexed for read_committed.
        s.append_from(
            T,
            0,
            marker(2, false),
            AppendOrigin::CoordinatorTransactionV2,
        )
        .unwrap();
        assert_eq!(
            committed_view(&s).await,
            (vec![0, 2, 3, 4], vec![(7, 3)], 5)
        );
        // Producer 8 opens a transaction (offset 5) and the broker dies.
        s.append(T, 0, txn_batch(8, 0, 0, 1)).unwrap();
        s.flush().await.unwrap();
        disk.crash();
        let s = open_sim(&disk, sim_options()).await;
        s.open_partition(T, 0, small_config()).await.unwrap();
        // Recovery rebuilt the open transaction (LSO) and the aborted index from the log.
        assert_eq!(s.offsets(T, 0).unwrap(), (0, 6));
        assert_eq!(
            committed_view(&s).await,
            (vec![0, 2, 3, 4], vec![(7, 3)], 5)
        );
        // An older epoch's marker is refused whatever its origin; the transaction's own closes it.
        assert_eq!(
            s.append_coordinator(T, 0, build_control_batch(7, 1, true, 0, 5))
                .unwrap_err()
                .kafka_error_code(),
            ErrorCode::INVALID_PRODUCER_EPOCH
        );
        s.append_coordinator(T, 0, build_control_batch(8, 0, true, 0, 5))
            .unwrap();
        assert_eq!(
            committed_view(&s).await,
            (vec![0, 2, 3, 4, 5, 6], vec![(7, 3)], 7)
        );
        s.shutdown().await.unwrap();
    });
}
