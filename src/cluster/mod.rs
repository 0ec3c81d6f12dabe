//! The cluster's control plane (issue 17; design in `docs/design/cluster.md`).
//!
//! - [`config`]: `process.roles`, `controller.quorum.voters`, listeners and the other identity
//!   properties by Kafka's names, with their cross-checks.
//! - [`identity`]: `meta.properties` (cluster id, node id) in the data dir; `shardlog format`.
//!
//! Layering: `config` and `server` may use this module; it uses only `error_code` and leaf
//! crates, never `server`, `protocol`, `shard` or `storage`.

pub mod config;
pub mod identity;
