//! The cluster's control plane (issue 17; design in `docs/design/cluster.md`).
//!
//! - [`identity`]: `meta.properties` (cluster id, node id) in the data dir; `shardlog format`.
//! - [`image`]: the metadata log's records (KRaft's, as a Rust enum) and the pure state machine
//!   that applies them to an immutable-once-published [`image::ClusterImage`].
//! - [`control`]: the active controller's decisions as pure functions of the image: replica
//!   placement over brokers and racks, leader election on fencing and controlled shutdown.
//! - [`store`]: the Raft log, vote and snapshot on disk, and the state machine, for openraft.
//! - [`transport`]: controller-to-controller RPCs over TCP on the CONTROLLER listener.
//! - [`quorum`]: a quorum member on its own `quorum` thread; the handle the broker uses.
//! - [`active`]: the active controller (the quorum leader): broker sessions, registration,
//!   heartbeats, fencing, controlled shutdown, CreateTopics with placement.
//! - [`interbroker`]: Kafka requests from one broker to another (transaction markers,
//!   KIP-890 verification), on the control plane's runtime.
//! - [`agent`]: the broker's side: registration, heartbeats, images, controlled shutdown.
//! - [`node`]: one node's control plane started from its properties (what `serve` will call).
//! - [`config`]: `process.roles`, `controller.quorum.voters`, listeners and the other identity
//!   properties by Kafka's names, with their cross-checks (`config` applies them by key).

pub mod active;
pub mod agent;
pub mod config;
pub mod control;
pub mod identity;
pub mod image;
pub mod interbroker;
pub mod node;
pub mod quorum;
pub mod store;
pub mod transport;
