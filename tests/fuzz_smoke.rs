//! The fuzz harnesses of `fuzz/` (cargo-fuzz, nightly) as a bounded, seeded, stable-Rust test:
//! real request encodings for every supported API and version, and valid record batches, are
//! mutated (bit flips, boundary integers, huge array counts, truncation, insertion, splicing,
//! and for batches a recomputed CRC so the later checks are reached) and fed to the same
//! functions the fuzz targets call. Any panic fails the test with the seed, the iteration and
//! the input (also written under the target dir) to turn into a regression case below.
//!
//! `SHARDLOG_FUZZ_SEED` replays a run; `SHARDLOG_FUZZ_ITERS` sets the iterations per target
//! (default 200,000). `cargo test --test fuzz_smoke -- --ignored write_seed_corpus` rewrites
//! the seed files of `fuzz/seeds/`.

#[path = "../fuzz/src/lib.rs"]
mod harness;
mod rawkafka;

use rawkafka::{seed_from_env, Rng};

// As in the broker binary: decoders reserve what array counts announce (see shardlog::memory).
#[global_allocator]
static ALLOCATOR: shardlog::memory::BrokerAllocator = shardlog::memory::BrokerAllocator;

const INTERESTING_I32: [i32; 9] = [0, 1, -1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, i32::MIN, 0x10000];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[(String, Vec<u8>)]) {
    for _ in 0..rng.range(1, 5) {
        let len = input.len();
        match rng.range(0, 9) {
            0 if len > 0 => {
                let at = rng.range(0, len as u64) as usize;
                input[at] ^= 1 << rng.range(0, 8);
            }
            1 if len > 0 => {
                let at = rng.range(0, len as u64) as usize;
                input[at] = [0u8, 0xff, 0x7f, 0x80, 1][rng.range(0, 5) as usize];
            }
            2 if len >= 4 => {
                let at = rng.range(0, len as u64 - 3) as usize;
                let v = INTERESTING_I32[rng.range(0, INTERESTING_I32.len() as u64) as usize];
                input[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 if len >= 5 => {
                // A compact (varint) count near 2^32.
                let at = rng.range(0, len as u64 - 4) as usize;
                input[at..at + 5].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
            }
            4 => {
                let at = rng.range(0, len as u64 + 1) as usize;
                let n = rng.range(1, 16) as usize;
                let bytes = rng.bytes(n);
                input.splice(at..at, bytes);
            }
            5 if len > 0 => {
                let at = rng.range(0, len as u64) as usize;
                let n = rng.range(1, (len - at) as u64 + 1) as usize;
                input.drain(at..at + n);
            }
            6 => {
                let keep = rng.range(0, len as u64 + 1) as usize;
                input.truncate(keep);
            }
            7 if len > 0 => {
                let at = rng.range(0, len as u64) as usize;
                let n = rng.range(1, (len - at).min(64) as u64 + 1) as usize;
                let chunk = input[at..at + n].to_vec();
                let to = rng.range(0, len as u64 + 1) as usize;
                input.splice(to..to, chunk);
            }
            8 if !pool.is_empty() => {
                let other = &pool[rng.range(0, pool.len() as u64) as usize].1;
                if !other.is_empty() {
                    let from = rng.range(0, other.len() as u64) as usize;
                    let at = rng.range(0, len as u64 + 1) as usize;
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
            _ => {}
        }
    }
}

fn iterations() -> u64 {
    std::env::var("SHARDLOG_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Runs `target` on the seeds, then on `iterations()` mutants; a panic fails with the input.
fn run(name: &str, seeds: &[(String, Vec<u8>)], target: fn(&[u8]), fix_crc: bool) {
    let seed = seed_from_env("SHARDLOG_FUZZ_SEED");
    let mut rng = Rng::new(seed ^ name.len() as u64);
    let check = |input: &[u8], what: &str| {
        let owned = input.to_vec();
        if std::panic::catch_unwind(move || target(&owned)).is_err() {
            let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("{name}-{seed}"));
            let _ = std::fs::write(&path, input);
            panic!(
                "{name}: {what} panicked (seed {seed}); input saved to {} ({} bytes): {:02x?}",
                path.display(),
                input.len(),
                &input[..input.len().min(256)]
            );
        }
    };
    for (n, s) in seeds {
        check(s, &format!("seed {n}"));
    }
    let start = std::time::Instant::now();
    let iters = iterations();
    for i in 0..iters {
        let mut input = seeds[rng.range(0, seeds.len() as u64) as usize].1.clone();
        mutate(&mut rng, &mut input, seeds);
        if fix_crc && input.len() >= 4 + 21 && rng.chance(0.5) {
            // Batch inputs: 4 bytes of max.message.bytes, then the batch; recompute its CRC
            // so mutations of the covered part reach the checks behind the CRC.
            let crc = crc32c::crc32c(&input[4 + 21..]);
            input[4 + 17..4 + 21].copy_from_slice(&crc.to_be_bytes());
        }
        check(&input, &format!("iteration {i}"));
    }
    eprintln!(
        "{name}: {} seeds + {iters} mutants in {:.1}s, no panic",
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn request_frames_never_panic() {
    run(
        "request_frame",
        &harness::seed_request_frames(),
        harness::request_frame,
        false,
    );
}

#[test]
fn record_batch_validation_never_panics_nor_lies() {
    run(
        "record_batch",
        &harness::seed_record_batches(),
        harness::record_batch,
        true,
    );
}

#[test]
fn offsets_records_never_panic() {
    run(
        "offsets_record",
        &harness::seed_offsets_records(),
        harness::offsets_record,
        false,
    );
}

/// Inputs that once broke something; each stays here as a regression case.
#[test]
fn regressions() {
    // ListOffsets v8 whose body is array counts near 2^31: the decoder reserved ~170 GB and
    // the failed allocation aborted the broker (fixed by shardlog::memory).
    let mut f = vec![0, 2, 0, 8, 0, 0, 0, 99, 0xff, 0xff, 0];
    for _ in 0..8 {
        f.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    }
    harness::request_frame(&f);
    let mut f = vec![0, 2, 0, 1, 0, 0, 0, 99, 0xff, 0xff];
    for _ in 0..8 {
        f.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    }
    harness::request_frame(&f);
}

/// Rewrites `fuzz/seeds/<target>/`: every API at its lowest and highest version, and batches.
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let frames = harness::seed_request_frames();
    let keep: Vec<&(String, Vec<u8>)> = frames
        .iter()
        .filter(|(name, _)| {
            let (api, v) = name.rsplit_once("-v").expect("name-vN");
            let versions: Vec<&str> = frames
                .iter()
                .filter_map(|(n, _)| n.rsplit_once("-v").filter(|(a, _)| *a == api))
                .map(|(_, v)| v)
                .collect();
            Some(&v) == versions.first() || Some(&v) == versions.last()
        })
        .collect();
    for (dir, items) in [
        (
            "request_frame",
            keep.into_iter().cloned().collect::<Vec<_>>(),
        ),
        ("record_batch", harness::seed_record_batches()),
        ("offsets_record", harness::seed_offsets_records()),
    ] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        for (name, bytes) in items {
            std::fs::write(d.join(name), bytes).expect("write seed");
        }
    }
}
