//! cargo-fuzz target: request frame → header → body decoders (see `shardlog_fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// The broker's allocator, as in the broker binary: decoders reserve what counts announce.
#[global_allocator]
static ALLOCATOR: shardlog::memory::BrokerAllocator = shardlog::memory::BrokerAllocator;

fuzz_target!(|data: &[u8]| shardlog_fuzz::request_frame(data));
