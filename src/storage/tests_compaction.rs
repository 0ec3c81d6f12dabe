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
