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

/// The raw baseline measured in the same process and minute as the appends: what
/// `dd if=/dev/zero of=F bs=1M oflag=direct` does (sequential 1 MiB O_DIRECT writes, one at a
/// time, into a fresh file), through the same glommio DmaFile.
fn raw_baseline(c: &mut Criterion, ex: &LocalExecutor, dir: &std::path::Path) {
    let path = dir.join("raw-baseline.bin");
    let mut g = c.benchmark_group("raw_dd_like");
    g.throughput(Throughput::Bytes(1 << 20));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("write_1MiB_seq", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let f = glommio::io::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .dma_open(&path)
                    .await
                    .expect("raw file");
                let start = Instant::now();
                for i in 0..iters {
                    let mut buf = glommio::allocate_dma_buffer(1 << 20);
                    buf.as_bytes_mut().fill(0);
                    f.write_at(buf, (i % 1024) << 20).await.expect("write");
                }
                let t = start.elapsed();
                f.close().await.expect("close");
                t
            })
        })
    });
    // The engine's I/O pattern without the engine: 64 MiB fallocate, 4 MiB rounds of four
    // concurrent 1 MiB writes, fdatasync per round. Separates I/O-pattern cost from code cost.
    let path2 = dir.join("raw-group.bin");
    g.bench_function("fallocate_4x1MiB_concurrent_fdatasync", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let f = Rc::new(
                    glommio::io::OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .dma_open(&path2)
                        .await
                        .expect("raw file"),
                );
                let start = Instant::now();
                let mut allocated = 0u64;
                let mut i = 0u64;
                while i < iters {
                    let round = (iters - i).min(4);
                    let end = (i + round) << 20;
                    if end > allocated {
                        allocated += 64 << 20;
                        f.pre_allocate(allocated, false).await.expect("fallocate");
                    }
                    let mut tasks = Vec::new();
                    for k in 0..round {
                        let f = f.clone();
                        let mut buf = glommio::allocate_dma_buffer(1 << 20);
                        buf.as_bytes_mut().fill(1);
                        let pos = (i + k) << 20;
                        tasks.push(glommio::spawn_local(async move {
                            f.write_at(buf, pos).await.expect("write")
                        }));
                    }
                    for t in tasks {
                        t.await;
                    }
                    f.fdatasync().await.expect("sync");
                    i += round;
                }
                let t = start.elapsed();
                let _ = f.truncate(0).await;
                t
            })
        })
    });
    g.finish();
}

fn append_benches(c: &mut Criterion) {
    let ex = executor();
    let dir = bench_dir();
    raw_baseline(c, &ex, dir.path());
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
    // The one copy of a disk read: glommio's ReadResult (!Send) into Bytes.
    let mut g = c.benchmark_group("read_copy_into_bytes");
    let src = vec![7u8; 1 << 20];
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function("1MiB", |b| {
        b.iter(|| bytes::Bytes::copy_from_slice(std::hint::black_box(&src)))
    });
    g.finish();
}

/// Per-operation commit latency: raw 4 KiB O_DIRECT write + fdatasync on a preallocated file,
/// against append of a ~3 KiB batch + `wait_durable` through the background group-commit
/// flusher. Criterion reports means; the percentiles are printed from an HDR histogram.
fn latency_benches(c: &mut Criterion) {
    use std::cell::RefCell;
    let ex = executor();
    let dir = bench_dir();
    let s = open(&ex, dir.path(), 64 << 20);
    let raw_path = dir.path().join("raw.bin");
    let raw = ex.run(async {
        s.spawn_background_tasks();
        let f = glommio::io::OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .dma_open(&raw_path)
            .await
            .expect("raw file");
        f.pre_allocate(64 << 20, false).await.expect("fallocate");
        Rc::new(f)
    });
    let h_raw = RefCell::new(hdrhistogram::Histogram::<u64>::new(3).expect("hist"));
    let h_ours = RefCell::new(hdrhistogram::Histogram::<u64>::new(3).expect("hist"));
    let batch = build_test_batch(3, 1024, 1);
    let mut g = c.benchmark_group("commit_latency");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut pos = 0u64;
    g.bench_function("raw_write4k_fdatasync", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let t = Instant::now();
                    let mut buf = glommio::allocate_dma_buffer(4096);
                    buf.as_bytes_mut().fill(7);
                    raw.write_at(buf, pos).await.expect("write");
                    raw.fdatasync().await.expect("sync");
                    pos = (pos + 4096) % (64 << 20);
                    h_raw
                        .borrow_mut()
                        .record(t.elapsed().as_micros() as u64)
                        .expect("record");
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("append_wait_durable_3KiB", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let t = Instant::now();
                    let info = s.append("b", 0, batch.clone()).expect("append");
                    s.wait_durable("b", 0, info.last_offset)
                        .await
                        .expect("durable");
                    h_ours
                        .borrow_mut()
                        .record(t.elapsed().as_micros() as u64)
                        .expect("record");
                }
                start.elapsed()
            })
        })
    });
    g.finish();
    for (name, h) in [
        ("raw_write4k_fdatasync", &h_raw),
        ("append_wait_durable_3KiB", &h_ours),
    ] {
        let h = h.borrow();
        if h.is_empty() {
            continue;
        }
        eprintln!(
            "commit_latency/{name}: n={} p50={}us p99={}us p99.9={}us max={}us",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
    ex.run(async { s.shutdown().await.expect("shutdown") });
}

/// Contention-robust ratio (only with `SHARDLOG_BENCH_PAIRED=1`): alternates, round by round
/// and in ABBA order, 64 MiB written dd-style (1 MiB O_DIRECT writes one at a time, fresh file)
/// and 64 MiB appended through the engine (256 KiB and 1 MiB batches, flush every 4 MiB), so
/// both see the same background load; prints per-kind median throughput and the median of the
/// per-round ratios engine / raw.
fn paired_ratio(_c: &mut Criterion) {
    if std::env::var("SHARDLOG_BENCH_PAIRED").is_err() {
        return;
    }
    const ROUND_BYTES: usize = 64 << 20;
    /// CPU time of this thread (the executor runs here), in seconds.
    fn thread_cpu_s() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
    let cpu_us_per_mib = std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()]);
    let ex = executor();
    let dir = bench_dir();
    let s = open(&ex, dir.path(), 64 << 20);
    let raw_path = dir.path().join("paired-raw.bin");
    let raw_round = |ex: &LocalExecutor| -> f64 {
        ex.run(async {
            let f = glommio::io::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .dma_open(&raw_path)
                .await
                .expect("raw file");
            let start = Instant::now();
            let cpu0 = thread_cpu_s();
            for i in 0..(ROUND_BYTES >> 20) as u64 {
                let mut buf = glommio::allocate_dma_buffer(1 << 20);
                buf.as_bytes_mut().fill(0);
                f.write_at(buf, i << 20).await.expect("write");
            }
            let t = start.elapsed().as_secs_f64();
            cpu_us_per_mib.borrow_mut()[0].push((thread_cpu_s() - cpu0) * 1e6 / 64.0);
            f.close().await.expect("close");
            ROUND_BYTES as f64 / t / (1u64 << 20) as f64
        })
    };
    let engine_round = |ex: &LocalExecutor, batch: &bytes::Bytes, slot: usize| -> f64 {
        ex.run(async {
            let start = Instant::now();
            let cpu0 = thread_cpu_s();
            let (mut total, mut pending) = (0usize, 0usize);
            while total < ROUND_BYTES {
                s.append("b", 0, batch.clone()).expect("append");
                total += batch.len();
                pending += batch.len();
                if pending >= GROUP_BYTES {
                    s.flush().await.expect("flush");
                    pending = 0;
                }
            }
            s.flush().await.expect("flush");
            let t = start.elapsed().as_secs_f64();
            let mib = total as f64 / (1u64 << 20) as f64;
            cpu_us_per_mib.borrow_mut()[slot].push((thread_cpu_s() - cpu0) * 1e6 / mib);
            s.enforce_retention().await.expect("retention");
            total as f64 / t / (1u64 << 20) as f64
        })
    };
    let b256 = batch_of(256 << 10);
    let b1m = batch_of(1 << 20);
    let (mut raw, mut e256, mut e1m) = (vec![], vec![], vec![]);
    let (mut r256, mut r1m) = (vec![], vec![]);
    for round in 0..12 {
        let (x, a, b) = if round % 2 == 0 {
            let x = raw_round(&ex);
            let a = engine_round(&ex, &b256, 1);
            let b = engine_round(&ex, &b1m, 2);
            (x, a, b)
        } else {
            let b = engine_round(&ex, &b1m, 2);
            let a = engine_round(&ex, &b256, 1);
            let x = raw_round(&ex);
            (x, a, b)
        };
        raw.push(x);
        e256.push(a);
        e1m.push(b);
        r256.push(a / x);
        r1m.push(b / x);
    }
    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }
    eprintln!(
        "paired (12 rounds of 64 MiB): raw dd-like {:.0} MiB/s, engine 256KiB {:.0} MiB/s, \
         engine 1MiB {:.0} MiB/s; median ratio 256KiB {:.2}, 1MiB {:.2}",
        median(&mut raw),
        median(&mut e256),
        median(&mut e1m),
        median(&mut r256),
        median(&mut r1m)
    );
    let mut cpu = cpu_us_per_mib.borrow_mut();
    eprintln!(
        "paired CPU of the executor thread per MiB: raw {:.0} us, engine 256KiB {:.0} us, \
         engine 1MiB {:.0} us",
        median(&mut cpu[0]),
        median(&mut cpu[1]),
        median(&mut cpu[2])
    );
    ex.run(async { s.shutdown().await.expect("shutdown") });
}

criterion_group!(
    benches,
    cpu_benches,
    append_benches,
    read_benches,
    latency_benches,
    paired_ratio
);
criterion_main!(benches);
