//! # shardlog-tools
//!
//! What ships beside the broker in the `shardlog` binary, kept in a crate of its own so that a
//! reader sees broker and tools apart and the broker cannot come to depend on them:
//!
//! - [`load`]: the load generator (`shardlog load`), a Kafka client of its own that drives any
//!   Kafka-compatible broker over the wire. → hist
//! - [`hist`]: latency histograms, RUN.json, `.hgrm`, comparison tables and SVG plots
//!   (`shardlog hist`).
//! - [`tune`]: `shardlog tune`, the host checks the broker's speed depends on.
//!
//! Nothing here imports the broker crate: the load generator speaks the wire protocol through
//! the `kafka-protocol` crate like any client.

pub mod hist;
pub mod load;
pub mod tune;
