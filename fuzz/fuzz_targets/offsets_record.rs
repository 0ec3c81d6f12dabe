//! cargo-fuzz target: `__consumer_offsets` record decoding (see `shardlog_fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shardlog_fuzz::offsets_record(data));
