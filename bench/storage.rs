//! Storage engine micro-benchmarks on the real disk (O_DIRECT through glommio).
//!
//! - `append_group/<batch>`: append batches of 1 KiB records, write + fdatasync every 4 MiB
//!   (group commit under many producers) — throughput of the write path.
//! - `append_sync_each/<batch>`: append + write + fdatasync per batch (one acks=all producer).
//! - `read_cold`: sequential 1 MiB fetches from segment files (O_DIRECT: no page cache).
//! - `read_hot`: the same from the batch cache (zero-copy `Bytes` clones).
//! - `index_lookup`: floor lookup in a full 1 GiB segment's offset index (262 144 entries).
//! - `validate_batch/<batch>`: the produce-path check (CRC32C over the batch).
//!
//! Data goes to a temp dir under `SHARDLOG_BENCH_DIR` (default `/tmp`, must accept O_DIRECT).

use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder};
use shardlog::storage::{
    build_test_batch, validate_batch, LogConfig, OffsetIndex, ShardStorage, StorageOptions,
};

const RECORD_BYTES: usize = 1024;
const GROUP_BYTES: usize = 4 << 20;

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("SHARDLOG_BENCH_DIR").unwrap_or_else(|_| "/tmp".into());
    tempfile::Builder::new()
        .prefix("shardlog-bench")
        .tempdir_in(base)
        .expect("bench dir")
}

fn executor() -> LocalExecutor {
    LocalExecutorBuilder::default().make().expect("executor")
}

fn batch_of(bytes: usize) -> bytes::Bytes {
    // ~1 KiB records: 1024-byte values plus record framing (~10 bytes each).
    let count = (bytes / (RECORD_BYTES + 10)).max(1) as i32;
    build_test_batch(count, RECORD_BYTES, 1)
}

fn bench_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        retention_bytes: 512 << 20,
        retention_ms: -1,
        ..LogConfig::default()
    }
}

fn open(ex: &LocalExecutor, dir: &std::path::Path, cache: usize) -> Rc<ShardStorage> {
    ex.run(async {
        let s = ShardStorage::open(
            dir,
            StorageOptions {
                batch_cache_bytes_max: cache,
                ..StorageOptions::default()
            },
        )
        .await
        .expect("open storage");
        s.open_partition("b", 0, bench_config())
            .await
            .expect("open partition");
        s
    })
}

fn append_benches(c: &mut Criterion) {
    let ex = executor();
    let dir = bench_dir();
    let s = open(&ex, dir.path(), 64 << 20);
    for &(name, size) in &[
        ("16KiB", 16usize << 10),
        ("256KiB", 256 << 10),
        ("1MiB", 1 << 20),
    ] {
        let batch = batch_of(size);
        let mut g = c.benchmark_group("append_group");
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(4))
            .warm_up_time(Duration::from_secs(1));
        g.bench_with_input(BenchmarkId::from_parameter(name), &batch, |b, batch| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    let mut pending = 0;
                    for _ in 0..iters {
                        s.append("b", 0, batch.clone()).expect("append");
                        pending += batch.len();
                        if pending >= GROUP_BYTES {
                            s.flush().await.expect("flush");
                            pending = 0;
                        }
                    }
                    s.flush().await.expect("flush");
                    let t = start.elapsed();
                    s.enforce_retention().await.expect("retention");
                    t
                })
            })
        });
        g.finish();

        let mut g = c.benchmark_group("append_sync_each");
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        g.bench_with_input(BenchmarkId::from_parameter(name), &batch, |b, batch| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        s.append("b", 0, batch.clone()).expect("append");
                        s.flush().await.expect("flush");
                    }
                    let t = start.elapsed();
                    s.enforce_retention().await.expect("retention");
                    t
                })
            })
        });
        g.finish();
    }
    ex.run(async { s.shutdown().await.expect("shutdown") });
}

fn read_benches(c: &mut Criterion) {
    let ex = executor();
    let fetch = 1usize << 20;
    let total = 128usize << 20;
    let batch = batch_of(16 << 10);
    let records_per_batch = shardlog::storage::parse_header(&batch)
        .expect("header")
        .records_count as i64;
    for (name, cache) in [("read_cold", 0usize), ("read_hot", 512usize << 20)] {
        let dir = bench_dir();
        let s = open(&ex, dir.path(), cache);
        let hw = ex.run(async {
            let mut n = 0;
            while n < total {
                s.append("b", 0, batch.clone()).expect("append");
                n += batch.len();
            }
            s.flush().await.expect("flush");
            s.offsets("b", 0).expect("offsets").1
        });
        let mut g = c.benchmark_group("read");
        g.throughput(Throughput::Bytes(fetch as u64));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_secs(1));
        let mut offset = 0i64;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                ex.run(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let info = s.read("b", 0, offset, fetch).await.expect("read");
                        let got: usize = info.batches.iter().map(|b| b.len()).sum();
                        assert!(got > 0);
                        offset += (got / batch.len()) as i64 * records_per_batch;
                        if offset >= hw {
                            offset = 0;
                        }
                    }
                    start.elapsed()
                })
            })
        });
        g.finish();
        ex.run(async { s.shutdown().await.expect("shutdown") });
        drop(dir);
    }
}

fn cpu_benches(c: &mut Criterion) {
    let mut idx = OffsetIndex::new();
    for i in 0..262_144u32 {
        idx.append(i * 4 + 1, i * 4096 + 100);
    }
    let mut g = c.benchmark_group("index_lookup");
    let mut x = 12345u32;
    g.bench_function("262144_entries", |b| {
        b.iter(|| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            std::hint::black_box(idx.lookup(x % (262_144 * 4)))
        })
    });
    g.finish();
    let mut g = c.benchmark_group("validate_batch");
    for &(name, size) in &[("16KiB", 16usize << 10), ("1MiB", 1 << 20)] {
        let batch = batch_of(size);
        g.throughput(Throughput::Bytes(batch.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &batch, |b, batch| {
            b.iter(|| validate_batch(std::hint::black_box(batch), u32::MAX).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, cpu_benches, append_benches, read_benches);
criterion_main!(benches);
