//! cargo-fuzz target: record batch validation (see `shardlog_fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardlog_fuzz::record_batch(data));
