//! The cluster's control plane (issue 17; design in `docs/design/cluster.md`).
//!
//! - [`config`]: `process.roles`, `controller.quorum.voters`, listeners and the other identity
//!   properties by Kafka's names, with their cross-checks.
//! - [`identity`]: `meta.properties` (cluster id, node id) in the data dir; `shardlog format`.
//! - [`image`]: the metadata log's records (KRaft's, as a Rust enum) and the pure state machine
//!   that applies them to an immutable-once-published [`image::ClusterImage`].
//! - [`control`]: the active controller's decisions as pure functions of the image: replica
//!   placement over brokers and racks, leader election on fencing and controlled shutdown.
//!
//! Layering: `config` and `server` may use this module; it uses only `error_code` and leaf
//! crates, never `server`, `protocol`, `shard` or `storage`.

pub mod config;
pub mod control;
pub mod identity;
pub mod image;
pub mod quorum;
pub mod store;
pub mod transport;
