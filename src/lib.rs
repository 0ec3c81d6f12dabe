//! # shardlog
//!
//! A Kafka-compatible message broker, thread-per-core on glommio (io_uring).
//! A tour of the layout, top to bottom (arrows are the only allowed imports):
//!
//! - [`server`]: per-core startup, listeners, connection loop, one handler per Kafka API.
//! - [`protocol`]: frames, request/response codecs, the API versions table, the zero-copy
//!   Fetch response encoder.
//! - [`shard`]: shard ids, partition ownership, the cross-core mesh.
//! - [`storage`]: segments, indexes, appender, reader, batch cache, recovery, retention.
//! - [`io`]: the file seam (glommio `DmaFile` in production, a simulated file in tests).
//! - [`meta`]: topic metadata, its persistence and broadcast.
pub mod hist;
pub mod load;
