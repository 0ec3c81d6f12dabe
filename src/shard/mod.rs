//! Shards: partition ownership and the cross-core mesh.
//!
//! A shard is one core running one glommio executor. It owns the partitions whose
//! [`shard_of`] is its index and is the only thread that touches their logs. A request that
//! names partitions of several shards is split per owner here, each part sent as a
//! [`ShardMsg`] over glommio's channel mesh (or handled in place when the owner is this shard),
//! and the answers gathered back into request order. Messages carry only `Send` data
//! (`Bytes`, strings, numbers); replies come back on a oneshot channel inside the message.

pub mod cluster;
pub mod controller;
pub mod fetch_memory;
pub mod fetch_session;
pub mod mesh;
mod owner;
pub mod replication;
mod txn;
mod txn_cluster;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::config::BrokerConfig;
use crate::error_code::ErrorCode;
use crate::group::{Coordinator, GroupOp, GroupReply, OFFSETS_TOPIC};
use crate::meta::Metadata;
use crate::storage::ShardStorage;

pub use cluster::ClusterView;
pub use controller::{AdminError, AdminOp, AdminReply, ConfigOp, NewTopic};
pub use txn::{MarkerPart, ProducersResult};
pub use txn_cluster::{marker_is_v2, MARKER_TRANSACTION_VERSION_TAG};

/// The shard that owns a partition: a stable hash of the topic name plus the partition index,
/// so ownership survives restarts and a topic's partitions spread round-robin over shards.
pub fn shard_of(topic: &str, partition: i32, nr_shards: usize) -> usize {
    let h = crc32c::crc32c(topic.as_bytes()) as u64;
    ((h + partition as u64) % nr_shards as u64) as usize
}

/// A Produce request's place in its connection's order: it may append once `previous` (the
/// connection's Produce before it) has appended, and releases the next one by dropping
/// `done` once it has. Built by the connection in the order requests arrive.
pub struct ProduceTurn {
    /// Resolves (or is cancelled) when the previous Produce of the connection has appended.
    pub previous: Option<oneshot::Receiver<()>>,
    /// Dropped when this request has appended: the next one's `previous`.
    pub done: oneshot::Sender<()>,
}

impl ProduceTurn {
    /// A turn that waits for nothing (a request alone on its connection, or a test).
    pub fn first() -> ProduceTurn {
        let (done, _) = oneshot::channel();
        ProduceTurn {
            previous: None,
            done,
        }
    }
}

/// One partition's records in a Produce request, as slices of the request buffer.
#[derive(Debug)]
pub struct ProducePart {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The records field: one or more v2 batches.
    pub records: Bytes,
}

/// The outcome of one partition's produce. No `Default`: a default would read as success at
/// offset 0, an acknowledgement of nothing.
#[derive(Debug, Clone)]
pub struct ProduceResult {
    /// Kafka error code (0 = none).
    pub error_code: ErrorCode,
    /// Offset assigned to the first record (-1 on error).
    pub base_offset: i64,
    /// Broker time stamped on the batch with LogAppendTime, else -1.
    pub log_append_time: i64,
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// A readable reason on error.
    pub error_message: Option<String>,
}

/// One partition's read in a Fetch request.
#[derive(Debug, Clone)]
pub struct FetchPart {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// First offset wanted.
    pub fetch_offset: i64,
    /// read_committed (isolation level 1): read up to the last stable offset only.
    pub read_committed: bool,
    /// Most bytes wanted from this partition. The first batch of the first partition with data
    /// on its owner is returned even if larger; other partitions stay within this.
    pub max_bytes: usize,
    /// The epoch of the fetcher's last fetched batch (Fetch v12+), checked against this log's
    /// epochs before reading; -1: no check.
    pub last_fetched_epoch: i32,
    /// The follower fetching (a broker's node id), -1 for a consumer: a follower reads up to
    /// the log end, and its fetch offset is recorded as what it has on disk.
    pub replica_id: i32,
}

/// The outcome of one partition's read.
#[derive(Debug, Default)]
pub struct FetchResult {
    /// Kafka error code (0 = none).
    pub error_code: ErrorCode,
    /// Next offset to be written (-1 on error).
    pub high_watermark: i64,
    /// The last stable offset (-1 on error).
    pub last_stable_offset: i64,
    /// read_committed: the aborted transactions overlapping `batches`, as
    /// `(producer id, first offset)`.
    pub aborted: Vec<(i64, i64)>,
    /// First offset still in the log (-1 on error).
    pub log_start_offset: i64,
    /// Whole record batches from the one holding `fetch_offset`.
    pub batches: Vec<Bytes>,
    /// Bytes allocated by disk reads for `batches` (whole read buffers; batches served from
    /// the batch cache count zero): what holding this result costs beyond the cache.
    pub allocated: usize,
    /// The data at the fetch offset is on disk only and the read was for the cache only.
    pub needs_disk: bool,
    /// The fetcher's log diverges from this one: `(epoch, end offset)` to truncate to
    /// (no batches then).
    pub diverging_epoch: Option<(i32, i64)>,
}

/// How much a Fetch read may take, over all the partitions of one request.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Most bytes read in all; each owner shard gets a share in proportion to its parts'
    /// `max_bytes` and reads its parts in order within it.
    pub bytes: usize,
    /// The first batch of an owner's first partition with data is read even past its share
    /// (KIP-74); without, nothing goes past it (a zero share reads nothing).
    pub min_one: bool,
    /// Read from segment files too; false reads the batch cache only (and marks the parts
    /// whose data is on disk only with `needs_disk`).
    pub disk: bool,
}

impl FetchResult {
    /// Bytes of record data in this result.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(Bytes::len).sum()
    }
}

/// One partition's ListOffsets question: -2 earliest, -1 latest, -3 max timestamp, else a time.
#[derive(Debug, Clone)]
pub struct OffsetQuery {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The timestamp or one of the special values.
    pub timestamp: i64,
    /// read_committed (isolation level 1): "latest" is the last stable offset.
    pub read_committed: bool,
}

/// One partition's ListOffsets answer.
#[derive(Debug, Clone, Default)]
pub struct OffsetAnswer {
    /// Kafka error code (0 = none).
    pub error_code: ErrorCode,
    /// The offset found (-1 when none).
    pub offset: i64,
    /// The timestamp of the record found (-1 when not applicable).
    pub timestamp: i64,
}

/// One partition's OffsetForLeaderEpoch question: where does `leader_epoch` end?
#[derive(Debug, Clone)]
pub struct EpochQuery {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The epoch asked about.
    pub leader_epoch: i32,
}

/// One partition's OffsetForLeaderEpoch answer: `(epoch, end offset)` or the error code.
pub type EpochAnswer = Result<(i32, i64), ErrorCode>;

/// One partition's DeleteRecords ask: move its log start offset up to `offset`.
#[derive(Debug, Clone)]
pub struct DeleteRecordsPart {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The new log start offset; -1 = the high watermark.
    pub offset: i64,
}

/// One partition's DeleteRecords outcome.
#[derive(Debug, Clone)]
pub struct DeleteRecordsAnswer {
    /// Kafka error code (0 = none).
    pub error_code: ErrorCode,
    /// The log start offset after the request (-1 on error).
    pub low_watermark: i64,
    /// A readable reason on error.
    pub error_message: Option<String>,
}

/// A message from one shard to another. Every variant carries its own reply channel.
pub enum ShardMsg {
    /// Append batches to partitions owned by the receiver; `acks` = -1 waits for durability.
    Produce {
        /// 0, 1 or -1.
        acks: i16,
        /// (index in the request, part).
        parts: Vec<(usize, ProducePart)>,
        /// Results by the same indexes.
        reply: oneshot::Sender<Vec<(usize, ProduceResult)>>,
        /// Sent (or dropped) once every part is appended or refused, before any wait for
        /// durability: the connection's next Produce may go from then on.
        appended: oneshot::Sender<()>,
    },
    /// Read from partitions owned by the receiver, in order, within `limits`.
    Fetch {
        /// (index in the request, part).
        parts: Vec<(usize, FetchPart)>,
        /// Limits for these parts together (`bytes` is this owner's share).
        limits: FetchLimits,
        /// Results by the same indexes.
        reply: oneshot::Sender<Vec<(usize, FetchResult)>>,
    },
    /// Answer when any of these partitions has data past the offset, or after `wait`.
    WaitAppend {
        /// (topic, partition, offset, to log end): wake when the high watermark (the log
        /// end, for a follower) passes offset.
        parts: Vec<(String, i32, i64, bool)>,
        /// Longest wait.
        wait: Duration,
        /// Completed (or dropped) when the wait is over.
        reply: oneshot::Sender<()>,
    },
    /// ListOffsets on partitions owned by the receiver.
    ListOffsets {
        /// (index in the request, query).
        parts: Vec<(usize, OffsetQuery)>,
        /// Answers by the same indexes.
        reply: oneshot::Sender<Vec<(usize, OffsetAnswer)>>,
    },
    /// OffsetForLeaderEpoch on partitions owned by the receiver.
    EpochEndOffsets {
        /// (index in the request, query).
        parts: Vec<(usize, EpochQuery)>,
        /// Answers by the same indexes.
        reply: oneshot::Sender<Vec<(usize, EpochAnswer)>>,
    },
    /// DeleteRecords on partitions owned by the receiver.
    DeleteRecords {
        /// (index in the request, part).
        parts: Vec<(usize, DeleteRecordsPart)>,
        /// Answers by the same indexes.
        reply: oneshot::Sender<Vec<(usize, DeleteRecordsAnswer)>>,
    },
    /// An admin change, sent to shard 0 (the metadata writer).
    Admin {
        /// The change.
        op: AdminOp,
        /// Its outcome.
        reply: oneshot::Sender<AdminReply>,
    },
    /// A consumer-group request for a group this shard coordinates.
    Group {
        /// The request (boxed: group requests are large and rare next to Produce/Fetch).
        op: Box<GroupOp>,
        /// Its answer.
        reply: oneshot::Sender<GroupReply>,
    },
    /// A request for a transactional id this shard coordinates.
    Txn {
        /// The request.
        op: Box<crate::txn::TxnOp>,
        /// Its answer.
        reply: oneshot::Sender<crate::txn::TxnReply>,
    },
    /// Transaction markers for partitions owned by the receiver.
    Markers {
        /// (index in the request, marker).
        parts: Vec<(usize, MarkerPart)>,
        /// Codes by the same indexes.
        reply: oneshot::Sender<Vec<(usize, ErrorCode)>>,
    },
    /// DescribeProducers on partitions owned by the receiver.
    Producers {
        /// (index in the request, (topic, partition)).
        parts: Vec<(usize, (String, i32))>,
        /// Each partition's producers, or its error, by the same indexes.
        reply: oneshot::Sender<Vec<(usize, ProducersResult)>>,
    },
    /// A copy of the receiver's metrics, for a scrape.
    Metrics {
        /// The snapshot.
        reply: oneshot::Sender<crate::metrics::MetricsSnapshot>,
    },
    /// A new metadata snapshot from shard 0: open/delete/reconfigure owned partitions, adopt it.
    ApplyMetadata {
        /// The snapshot.
        meta: Arc<Metadata>,
        /// In a multi-node cluster: the image it was derived from (`None` on one node).
        view: Option<Arc<ClusterView>>,
        /// Completed once applied.
        reply: oneshot::Sender<()>,
    },
}

/// Everything one shard owns; lives on its executor only (`Rc`), never shared across cores.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub nr_shards: usize,
    /// Broker configuration (immutable).
    pub config: Arc<BrokerConfig>,
    /// Logs of the partitions this shard owns.
    pub storage: Rc<ShardStorage>,
    /// The current metadata snapshot.
    meta: RefCell<Arc<Metadata>>,
    /// Mesh senders to every shard.
    senders: mesh::MeshSenders,
    /// Shard 0 only: serialises admin changes.
    controller: controller::Controller,
    /// The consumer groups this shard coordinates.
    pub groups: Rc<Coordinator>,
    /// The transactional ids this shard coordinates.
    pub txns: Rc<crate::txn::Coordinator>,
    /// This shard's metrics (only this shard writes them).
    pub metrics: Rc<crate::metrics::ShardMetrics>,
    /// Memory held by Fetch responses of this shard's connections (its share of
    /// `shard.fetch.memory.bytes`).
    pub fetch_memory: Rc<fetch_memory::FetchMemory>,
    /// The incremental fetch sessions of this shard's connections (see `fetch_session`).
    pub fetch_sessions: RefCell<fetch_session::FetchSessionCache>,
    /// In a multi-node cluster: the line to the control plane (`None` on one node).
    pub cluster: Option<crate::cluster::node::BrokerLink>,
    /// In a multi-node cluster: the image the metadata came from (`None` on one node).
    view: RefCell<Option<Arc<ClusterView>>>,
    /// Shard 0 in a cluster: the offset of the newest image every shard has applied.
    applied_image_offset: Cell<u64>,
    /// In a cluster: the partitions this shard leads (followers' fetch offsets) and its
    /// replica fetchers.
    replication: replication::Replication,
}

impl Shard {
    /// Builds a shard around its storage, the metadata loaded at start and its mesh senders.
    pub fn new(
        id: usize,
        nr_shards: usize,
        config: Arc<BrokerConfig>,
        storage: Rc<ShardStorage>,
        meta: Arc<Metadata>,
        senders: mesh::MeshSenders,
        cluster: Option<(crate::cluster::node::BrokerLink, Arc<ClusterView>)>,
    ) -> Rc<Shard> {
        let groups = Coordinator::new(config.group.clone(), storage.clone());
        let txns = crate::txn::Coordinator::new(config.txn.clone(), storage.clone());
        let metrics = Rc::new(crate::metrics::ShardMetrics::new(id));
        let m = metrics.clone();
        crate::io::observe_fdatasync(move |d| m.observe_fsync(d));
        let m = metrics.clone();
        crate::storage::observe_reads(move |hit| m.batch_cache_lookup(hit));
        let fetch_memory =
            fetch_memory::FetchMemory::new((config.fetch_memory_bytes / nr_shards.max(1)).max(1));
        let fetch_sessions = RefCell::new(fetch_session::FetchSessionCache::new(
            config.fetch_session_cache_slots,
            id,
            nr_shards,
            uuid::Uuid::new_v4().as_u64_pair().0,
        ));
        Rc::new(Shard {
            id,
            nr_shards,
            fetch_memory,
            fetch_sessions,
            groups,
            txns,
            metrics,
            config,
            storage,
            meta: RefCell::new(meta),
            senders,
            controller: controller::Controller::new(),
            applied_image_offset: Cell::new(cluster.as_ref().map_or(0, |(_, v)| v.image.offset)),
            view: RefCell::new(cluster.as_ref().map(|(_, v)| v.clone())),
            cluster: cluster.map(|(link, _)| link),
            replication: replication::Replication::default(),
        })
    }

    /// In a multi-node cluster, what this shard knows of it; `None` on one node.
    pub fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.view.borrow().clone()
    }

    /// Whether this broker holds the partition's log: always on one node; in a cluster, when
    /// it is one of the partition's replicas.
    pub fn hosts(&self, topic: &str, partition: i32) -> bool {
        self.view
            .borrow()
            .as_ref()
            .is_none_or(|v| v.hosts(topic, partition))
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.meta.borrow().clone()
    }

    /// The owner shard of a partition.
    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        shard_of(topic, partition, self.nr_shards)
    }

    /// Opens (creating or recovering) every partition of `meta` that this shard owns.
    pub async fn open_owned_partitions(&self) -> Result<(), crate::storage::StorageError> {
        let meta = self.metadata();
        owner::open_owned(self, &meta).await
    }

    /// In a cluster: adopts the replication roles of the current image for the partitions
    /// open here (leaders' high-watermark floors, followers' fetchers). Nothing on one node.
    pub fn start_replication(self: &Rc<Self>) {
        if let Some(view) = self.cluster_view() {
            self.replication.adopt(self, &view);
            glommio::spawn_local(replication::keep_isr(self.clone())).detach();
        }
    }

    /// Delivers a message to its owner: handled in place when that is this shard.
    async fn send(self: &Rc<Self>, to: usize, msg: ShardMsg) {
        if to == self.id {
            let me = self.clone();
            glommio::spawn_local(async move { owner::handle(&me, msg).await }).detach();
        } else if let Err(why) = self.senders.send_to(to, msg).await {
            // The peer has stopped (shutdown); the dropped message drops its reply sender,
            // which the caller sees as a cancelled reply.
            tracing::debug!(to, why, "mesh message not delivered");
        }
    }

    /// Serves messages arriving from one peer shard until the peer closes.
    pub async fn serve_peer(
        self: Rc<Self>,
        rx: glommio::channels::shared_channel::ConnectedReceiver<ShardMsg>,
    ) {
        while let Some(msg) = rx.recv().await {
            let me = self.clone();
            glommio::spawn_local(async move { owner::handle(&me, msg).await }).detach();
        }
    }

    /// Splits `items` by owner shard, sends each group with `make`, and gathers the answers
    /// back in the order of `items`. A shard that does not answer yields `fallback`.
    async fn scatter<I, O>(
        self: &Rc<Self>,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, i32),
        make: impl Fn(Vec<(usize, I)>, oneshot::Sender<Vec<(usize, O)>>) -> ShardMsg,
        fallback: impl Fn() -> O,
    ) -> Vec<O> {
        let n = items.len();
        let replies = self.send_by_owner(items, key, make).await;
        Self::gather(n, replies, fallback).await
    }

    /// Splits `items` by owner shard and sends each group with `make` (item indexes travel
    /// with the items); returns the reply receivers, one per owner that got items.
    async fn send_by_owner<I, O>(
        self: &Rc<Self>,
        items: Vec<I>,
        key: impl Fn(&I) -> (&str, i32),
        make: impl Fn(Vec<(usize, I)>, oneshot::Sender<Vec<(usize, O)>>) -> ShardMsg,
    ) -> Vec<oneshot::Receiver<Vec<(usize, O)>>> {
        let mut groups: Vec<Vec<(usize, I)>> = (0..self.nr_shards).map(|_| Vec::new()).collect();
        for (i, item) in items.into_iter().enumerate() {
            let (t, p) = key(&item);
            groups[self.owner_of(t, p)].push((i, item));
        }
        let mut replies = Vec::new();
        for (owner, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            self.send(owner, make(group, tx)).await;
            replies.push(rx);
        }
        replies
    }

    /// The answers of [`Shard::send_by_owner`]'s receivers in item order (`n` items); an item
    /// whose shard did not answer yields `fallback`.
    async fn gather<O>(
        n: usize,
        replies: Vec<oneshot::Receiver<Vec<(usize, O)>>>,
        fallback: impl Fn() -> O,
    ) -> Vec<O> {
        let mut out: Vec<Option<O>> = (0..n).map(|_| None).collect();
        for rx in replies {
            if let Ok(results) = rx.await {
                for (i, o) in results {
                    out[i] = Some(o);
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(&fallback))
            .collect()
    }

    /// Appends each part on its owner shard; results in request order. The parts are sent
    /// once the connection's previous Produce has appended everything (`turn`), and the turn
    /// passes on when this one has: batches of one connection are appended in request order,
    /// whatever waits (backpressure, a full mesh channel) reorder the tasks in between.
    pub async fn produce(
        self: &Rc<Self>,
        acks: i16,
        parts: Vec<ProducePart>,
        turn: ProduceTurn,
    ) -> Vec<ProduceResult> {
        let ProduceTurn { previous, done } = turn;
        if let Some(previous) = previous {
            // Ok or cancelled (that request ended early): either way it is our turn.
            let _ = previous.await;
        }
        let n = parts.len();
        let appends = RefCell::new(Vec::new());
        let replies = self
            .send_by_owner(
                parts,
                |p| (&p.topic, p.partition),
                |parts, reply| {
                    let (appended, appended_rx) = oneshot::channel();
                    appends.borrow_mut().push(appended_rx);
                    ShardMsg::Produce {
                        acks,
                        parts,
                        reply,
                        appended,
                    }
                },
            )
            .await;
        for a in appends.into_inner() {
            let _ = a.await;
        }
        drop(done);
        Self::gather(n, replies, || ProduceResult {
            error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
            base_offset: -1,
            log_append_time: -1,
            log_start_offset: -1,
            error_message: Some("owner shard unavailable".into()),
        })
        .await
    }

    /// Reads each part on its owner shard within `limits` (see [`FetchLimits`]: at most one
    /// batch per owner goes past them); results in request order.
    pub async fn fetch(
        self: &Rc<Self>,
        parts: Vec<FetchPart>,
        limits: FetchLimits,
    ) -> Vec<FetchResult> {
        let asked: u128 = parts.iter().map(|p| p.max_bytes as u128).sum();
        self.scatter(
            parts,
            |p| (&p.topic, p.partition),
            |parts, reply| {
                let mine: u128 = parts.iter().map(|(_, p)| p.max_bytes as u128).sum();
                let share = (limits.bytes as u128 * mine)
                    .checked_div(asked)
                    .map_or(0, |s| s as usize);
                ShardMsg::Fetch {
                    parts,
                    limits: FetchLimits {
                        bytes: share,
                        ..limits
                    },
                    reply,
                }
            },
            || FetchResult {
                error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                high_watermark: -1,
                last_stable_offset: -1,
                aborted: Vec::new(),
                log_start_offset: -1,
                batches: Vec::new(),
                allocated: 0,
                needs_disk: false,
                diverging_epoch: None,
            },
        )
        .await
    }

    /// Answers ListOffsets queries on their owner shards; answers in request order.
    pub async fn list_offsets(self: &Rc<Self>, queries: Vec<OffsetQuery>) -> Vec<OffsetAnswer> {
        self.scatter(
            queries,
            |q| (&q.topic, q.partition),
            |parts, reply| ShardMsg::ListOffsets { parts, reply },
            || OffsetAnswer {
                error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                offset: -1,
                timestamp: -1,
            },
        )
        .await
    }

    /// Answers OffsetForLeaderEpoch queries on their owner shards; answers in request order.
    pub async fn epoch_end_offsets(self: &Rc<Self>, queries: Vec<EpochQuery>) -> Vec<EpochAnswer> {
        self.scatter(
            queries,
            |q| (&q.topic, q.partition),
            |parts, reply| ShardMsg::EpochEndOffsets { parts, reply },
            || Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
        )
        .await
    }

    /// Moves log start offsets (DeleteRecords) on their owner shards; answers in request
    /// order. Each answer is given once the new start is durable.
    pub async fn delete_records(
        self: &Rc<Self>,
        parts: Vec<DeleteRecordsPart>,
    ) -> Vec<DeleteRecordsAnswer> {
        self.scatter(
            parts,
            |p| (&p.topic, p.partition),
            |parts, reply| ShardMsg::DeleteRecords { parts, reply },
            || DeleteRecordsAnswer {
                error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                low_watermark: -1,
                error_message: Some("owner shard unavailable".into()),
            },
        )
        .await
    }

    /// Waits until any of the partitions has data past its offset, or until `deadline`.
    pub async fn wait_any_append(
        self: &Rc<Self>,
        parts: Vec<(String, i32, i64, bool)>,
        deadline: Instant,
    ) {
        let now = Instant::now();
        if deadline <= now || parts.is_empty() {
            return;
        }
        let wait = deadline - now;
        let mut groups: Vec<Vec<(String, i32, i64, bool)>> =
            (0..self.nr_shards).map(|_| Vec::new()).collect();
        for p in parts {
            let owner = self.owner_of(&p.0, p.1);
            groups[owner].push(p);
        }
        let (tx, mut rx) = futures_channel::mpsc::channel::<()>(self.nr_shards);
        for (owner, group) in groups.into_iter().enumerate() {
            if group.is_empty() {
                continue;
            }
            let (reply, done) = oneshot::channel();
            self.send(
                owner,
                ShardMsg::WaitAppend {
                    parts: group,
                    wait,
                    reply,
                },
            )
            .await;
            let mut tx = tx.clone();
            glommio::spawn_local(async move {
                let _ = done.await;
                let _ = tx.try_send(());
            })
            .detach();
        }
        drop(tx);
        let first = async {
            use futures_lite::StreamExt;
            rx.next().await;
        };
        futures_lite::future::or(first, glommio::timer::sleep(wait)).await;
    }

    /// The shard coordinating a group: the owner of its `__consumer_offsets` partition.
    pub fn coordinator_of(&self, group: &str) -> usize {
        self.owner_of(OFFSETS_TOPIC, self.groups.partition_of(group))
    }

    /// Sends a group request to the group's coordinator shard; `None` if it did not answer,
    /// or (in a cluster) when this broker does not lead the group's `__consumer_offsets`
    /// partition: the client then looks for the coordinator again.
    pub async fn group(self: &Rc<Self>, group: &str, op: GroupOp) -> Option<GroupReply> {
        if let Some(v) = self.cluster_view() {
            if !v.leads(OFFSETS_TOPIC, self.groups.partition_of(group)) {
                return None;
            }
        }
        let (reply, rx) = oneshot::channel();
        self.send(
            self.coordinator_of(group),
            ShardMsg::Group {
                op: Box::new(op),
                reply,
            },
        )
        .await;
        rx.await.ok()
    }

    /// Sends a group request to every shard (ListGroups) and gathers the answers.
    pub async fn group_everywhere(self: &Rc<Self>, make: impl Fn() -> GroupOp) -> Vec<GroupReply> {
        let mut waits = Vec::with_capacity(self.nr_shards);
        for to in 0..self.nr_shards {
            let (reply, rx) = oneshot::channel();
            self.send(
                to,
                ShardMsg::Group {
                    op: Box::new(make()),
                    reply,
                },
            )
            .await;
            waits.push(rx);
        }
        let mut out = Vec::with_capacity(waits.len());
        for rx in waits {
            if let Ok(r) = rx.await {
                out.push(r);
            }
        }
        out
    }

    /// Shard 0 at start: creates `__consumer_offsets` if this data dir has none yet.
    pub async fn ensure_offsets_topic(self: &Rc<Self>) -> Result<(), String> {
        // In a cluster it is created through the controller on the first FindCoordinator.
        if self.cluster.is_some() {
            return Ok(());
        }
        if let Some(t) = self.metadata().topics.get(OFFSETS_TOPIC) {
            if t.configs.contains_key("cleanup.policy") {
                return Ok(());
            }
            // Created before shardlog had compaction: compact it from now on.
            let reply = self
                .admin(AdminOp::AlterConfigs {
                    topics: vec![(
                        OFFSETS_TOPIC.to_string(),
                        vec![(
                            "cleanup.policy".to_string(),
                            ConfigOp::Set("compact".to_string()),
                        )],
                    )],
                    replace: false,
                    validate_only: false,
                })
                .await;
            tracing::info!("{OFFSETS_TOPIC} is compacted from now on (cleanup.policy=compact)");
            return reply.result(0).map_err(|e| e.message);
        }
        let reply = self
            .admin(AdminOp::CreateTopics {
                topics: vec![self.offsets_topic()],
                validate_only: false,
            })
            .await;
        reply.result(0).map_err(|e| e.message)
    }

    /// `__consumer_offsets` as it is created: `offsets.topic.num.partitions` partitions, one
    /// replica, and Kafka's configs: compacted (the latest commit of every group/partition
    /// stays), in `offsets.topic.segment.bytes` segments.
    pub fn offsets_topic(&self) -> NewTopic {
        let configs = [
            ("cleanup.policy".to_string(), "compact".to_string()),
            (
                "segment.bytes".to_string(),
                self.config.group.offsets_segment_bytes.to_string(),
            ),
        ]
        .into_iter()
        .collect();
        NewTopic {
            name: OFFSETS_TOPIC.to_string(),
            partitions: self.config.group.offsets_partitions,
            replication_factor: 1,
            configs,
            ..Default::default()
        }
    }

    /// At start: replays the `__consumer_offsets` partitions this shard owns.
    pub async fn replay_groups(&self) -> Result<(), String> {
        let meta = self.metadata();
        let Some(topic) = meta.topics.get(OFFSETS_TOPIC) else {
            if self.cluster.is_some() {
                return Ok(()); // not created yet in this cluster
            }
            return Err("__consumer_offsets is missing".into());
        };
        self.groups.set_partitions(topic.partitions);
        for p in 0..topic.partitions {
            if self.owner_of(OFFSETS_TOPIC, p) == self.id && self.hosts(OFFSETS_TOPIC, p) {
                let n = self
                    .groups
                    .replay(p)
                    .await
                    .map_err(|e| format!("replaying {OFFSETS_TOPIC}-{p}: {e}"))?;
                if n > 0 {
                    tracing::info!(
                        shard = self.id,
                        partition = p,
                        records = n,
                        "replayed group state"
                    );
                }
            }
        }
        Ok(())
    }

    /// A new producer id from shard 0, unique across restarts.
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, AdminError> {
        let reply = self.admin(AdminOp::AllocateProducerId).await;
        reply.result(0)?;
        reply.allocated.ok_or(AdminError {
            code: ErrorCode::KAFKA_STORAGE_ERROR,
            message: "no producer id allocated".into(),
        })
    }

    /// Every shard's metrics, for a scrape, with the consumer-group lag computed across them
    /// (committed offsets from the coordinators, high watermarks from the owners). A shard
    /// that does not answer is missing, and so is the lag on the partitions it owns.
    pub async fn gather_metrics(self: &Rc<Self>) -> Vec<crate::metrics::MetricsSnapshot> {
        let mut waits = Vec::with_capacity(self.nr_shards);
        for to in 0..self.nr_shards {
            let (reply, rx) = oneshot::channel();
            self.send(to, ShardMsg::Metrics { reply }).await;
            waits.push(rx);
        }
        let mut out = Vec::with_capacity(waits.len());
        for rx in waits {
            if let Ok(s) = rx.await {
                out.push(s);
            }
        }
        crate::metrics::fill_consumer_group_lag(&mut out);
        out
    }

    /// Snapshots the idempotent producer state of every owned partition that has some (the
    /// storage owns that state and writes the files through its file seam).
    pub async fn snapshot_producers(&self) {
        self.storage.snapshot_producers().await;
    }

    /// Sends an admin change to shard 0 and waits for its outcome.
    pub async fn admin(self: &Rc<Self>, op: AdminOp) -> AdminReply {
        let (reply, rx) = oneshot::channel();
        self.send(0, ShardMsg::Admin { op, reply }).await;
        rx.await.unwrap_or_else(|_| AdminReply::unavailable())
    }
}
