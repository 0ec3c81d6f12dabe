//! # shardlog
//!
//! A Kafka-compatible message broker, thread-per-core on glommio (io_uring).
//! A tour of the layout, top to bottom. The arrows are the only imports allowed between
//! modules: [`LAYERS`] holds them as code and `tests/layering.rs` fails on any other.
//!
//! - [`server`]: per-core startup, listeners, the connection loop, and one handler per Kafka
//!   API under `server/handlers/`, named with its version range in one table
//!   (`kafka_apis!`). → protocol, shard, group and txn (their request vocabulary), meta, metrics,
//!   storage (startup only: opening each shard's storage), config, security (the TLS record
//!   layer and the SASL gate of each connection)
//! - [`protocol`]: frames, request/response codecs (the `kafka-protocol` crate), the zero-copy
//!   Fetch response encoder.
//! - [`shard`]: partition ownership, the cross-core mesh, the owner-side handling of each
//!   message, and the metadata writer (shard 0). → storage, group, txn, meta, metrics, io (the
//!   fdatasync observer), config
//! - [`group`]: the consumer group coordinator and committed offsets (transactional offset
//!   commits held until their marker). → storage
//! - [`txn`]: the transaction coordinator: transactional ids, their state in
//!   `__transaction_state`, the markers each decided transaction owes. → storage
//! - [`storage`]: segments, indexes, appender, reader, batch cache, recovery, retention. → io
//! - [`io`]: the file seam: glommio `DmaFile` (O_DIRECT) in production, a simulated file in
//!   tests that can drop unsynced writes and tear the last one.
//! - [`meta`]: topic metadata and its persistence.
//! - [`cluster`]: the control plane: cluster identity (`meta.properties`) and properties,
//!   the metadata records and image, the controller's decisions, the Raft quorum (openraft)
//!   on its own thread, the broker agent (`docs/design/cluster.md`). → meta, io, protocol
//! - [`security`]: listeners' security protocols, TLS settings (rustls), SASL PLAIN and
//!   SCRAM, the SCRAM credential store (a durable file through `io`). → io
//! - [`config`]: broker and topic settings by their Kafka names, turned into each layer's
//!   settings. → storage, group, cluster, security
//! - [`metrics`]: per-shard counters and histograms, Prometheus exposition, `/metrics`.
//! - [`error_code`]: Kafka's error codes, the one place their numbers are written; any module
//!   may use it.
//! - [`memory`]: the process allocator, which survives allocations sized by hostile counts.
//!
//! The load generator, the histogram tools and `shardlog tune` live in the `shardlog-tools`
//! crate (`tools/`): they reach a broker only over the wire, and the broker never imports them.
//! The `shardlog` binary (`src/main.rs`) links both.
//!
//! Read a Produce from `server/connection.rs` → `server/handlers/produce.rs` →
//! `shard/mod.rs` (split per owner) → `shard/owner.rs` → `storage`.

/// The allowed imports between the broker's top-level modules: each module with the modules
/// it may name through `crate::`. [`error_code`] may be used by every module and is not
/// listed. `tests/layering.rs` checks every `crate::` path in `src/` against this table and
/// that the table has no cycle.
pub const LAYERS: &[(&str, &[&str])] = &[
    (
        "server",
        &[
            "protocol", "shard", "group", "txn", "meta", "metrics", "storage", "config", "cluster",
            "security",
        ],
    ),
    ("protocol", &[]),
    (
        "shard",
        &[
            "storage", "group", "txn", "meta", "metrics", "io", "config", "cluster",
        ],
    ),
    ("cluster", &["meta", "io", "protocol"]),
    ("group", &["storage"]),
    ("txn", &["storage"]),
    ("storage", &["io"]),
    ("io", &[]),
    ("meta", &[]),
    (
        "config",
        &["storage", "group", "txn", "cluster", "security"],
    ),
    ("security", &["io"]),
    ("metrics", &[]),
    ("memory", &[]),
    ("error_code", &[]),
];

pub mod cluster;
pub mod config;
pub mod error_code;
pub mod group;
pub mod io;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod protocol;
pub mod security;
pub mod server;
pub mod shard;
pub mod storage;
pub mod txn;
