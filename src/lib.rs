//! # shardlog
//!
//! A Kafka-compatible message broker, thread-per-core on glommio (io_uring).
//! A tour of the layout, top to bottom (arrows are the only allowed imports):
//!
//! - [`server`]: per-core startup, listeners, the connection loop, one handler per Kafka API
//!   (`server/handlers/`). → protocol, shard
//! - [`protocol`]: request/response codecs (the `kafka-protocol` crate), the API versions
//!   table, the zero-copy Fetch response encoder.
//! - [`shard`]: partition ownership, the cross-core mesh, the owner-side handling of each
//!   message, and the metadata writer (shard 0). → storage, group, meta
//! - [`group`]: the consumer group coordinator and committed offsets. → storage
//! - [`storage`]: segments, indexes, appender, reader, batch cache, recovery, retention. → io
//! - [`io`]: the file seam: glommio `DmaFile` (O_DIRECT) in production, a simulated file in
//!   tests that can drop unsynced writes and tear the last one.
//! - [`meta`]: topic metadata and its persistence.
//! - [`cluster`]: the control plane: cluster identity and config, the metadata quorum.
//! - [`config`]: broker and topic settings by their Kafka names.
//! - [`metrics`]: per-shard counters and histograms, Prometheus exposition, `/metrics`.
//! - [`tune`]: `shardlog tune`, the host checks the broker's speed depends on.
//! - [`memory`]: the process allocator, which survives allocations sized by hostile counts.
//! - [`load`]: the load generator (`shardlog load`), a Kafka client of its own. → hist
//! - [`hist`]: latency histograms, RUN.json, `.hgrm`, comparison tables and SVG plots.
//!
//! Read a Produce from `server/connection.rs` → `server/handlers/produce.rs` →
//! `shard/mod.rs` (split per owner) → `shard/owner.rs` → `storage`.

pub mod cluster;
pub mod config;
pub mod error_code;
pub mod group;
pub mod hist;
pub mod io;
pub mod load;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod tune;
