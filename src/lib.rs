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
//!   message, and the metadata writer (shard 0). → storage, meta
//! - [`storage`]: segments, indexes, appender, reader, batch cache, recovery, retention. → io
//! - [`meta`]: topic metadata and its persistence.
//! - [`config`]: broker and topic settings by their Kafka names.
//! - [`load`]: the load generator (`shardlog load`), a Kafka client of its own. → hist
//! - [`hist`]: latency histograms, RUN.json, `.hgrm`, comparison tables and SVG plots.
//!
//! Read a Produce from `server/connection.rs` → `server/handlers/produce.rs` →
//! `shard/mod.rs` (split per owner) → `shard/owner.rs` → `storage`.

pub mod config;
pub mod hist;
pub mod load;
pub mod meta;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
