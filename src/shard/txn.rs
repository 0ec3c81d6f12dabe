//! The shard side of transactions: routing a transactional id's requests to its coordinator
//! shard (the owner of its `__transaction_state` partition), creating that topic at the first
//! transactional request, and carrying each decided transaction's markers to the owners of
//! its partitions (control batches appended there, durable before the coordinator writes
//! CompleteCommit / CompleteAbort).
//!
//! A transaction's offsets partition (`__consumer_offsets`, added by AddOffsetsToTxn) gets
//! its marker like any partition; once it is durable the group coordinator of that shard
//! commits or drops the offsets it held for the producer.

use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use super::{AdminOp, NewTopic, Shard, ShardMsg};
use crate::error_code::ErrorCode;
use crate::group::OFFSETS_TOPIC;
use crate::storage::{build_control_batch, AppendOrigin};
use crate::txn::{state_partition, MarkerJob, TxnOp, TxnReply, TRANSACTION_STATE_TOPIC};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Attempts at writing one transaction's markers before the job is left to the next load of
/// its state partition (a restart; in a cluster also a new leadership), each failed round
/// waiting `MARKER_RETRY_BACKOFF_MS`: 60 s in all.
const MARKER_ATTEMPTS_MAX: u32 = 600;
/// Pause between two rounds of markers for the partitions that failed.
const MARKER_RETRY_BACKOFF_MS: u64 = 100;

/// One partition's marker, sent to its owner.
#[derive(Debug, Clone)]
pub struct MarkerPart {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The transaction's producer id.
    pub producer_id: i64,
    /// The epoch the marker carries.
    pub producer_epoch: i16,
    /// COMMIT (true) or ABORT.
    pub commit: bool,
    /// The coordinator's epoch (0 on a single node).
    pub coordinator_epoch: i32,
    /// A marker of a transactions-v2 transaction from its coordinator: its epoch must be
    /// newer than the producer's on the partition (`storage::AppendOrigin`).
    pub transaction_v2: bool,
}

/// The transactional producer (id, epoch) of a Produce part's first batch, if its batches are
/// transactional data (not markers, which clients may not send anyway).
fn transactional_producer(part: &super::ProducePart) -> Option<(i64, i16)> {
    let first = crate::storage::split_batches(&part.records)
        .ok()?
        .into_iter()
        .next()?;
    let h = crate::storage::parse_header(&first).ok()?;
    (h.is_transactional() && !h.is_control() && h.producer_id >= 0)
        .then_some((h.producer_id, h.producer_epoch))
}

/// One partition's producers (DescribeProducers), or the partition's error.
pub type ProducersResult = Result<Vec<crate::storage::ProducerDescription>, ErrorCode>;

impl Shard {
    /// Checks the transactional parts of a Produce with their coordinator (on this broker or,
    /// in a cluster, another) before they are appended (KIP-890): with `add` (Produce v12+, transactions v2) a partition not yet in
    /// the transaction is added to it; without, it must have been added (AddPartitionsToTxn)
    /// or the part is refused with INVALID_TXN_STATE. Returns each part's refusal, if any.
    pub async fn verify_transactional(
        self: &Rc<Self>,
        transactional_id: &str,
        parts: &[super::ProducePart],
        add: bool,
    ) -> Vec<Option<ErrorCode>> {
        let producers: Vec<Option<(i64, i16)>> = parts.iter().map(transactional_producer).collect();
        let mut out = vec![None; parts.len()];
        let mut groups: Vec<((i64, i16), Vec<usize>)> = Vec::new();
        for (i, p) in producers.iter().enumerate() {
            if let Some(key) = p {
                match groups.iter_mut().find(|g| g.0 == *key) {
                    Some(g) => g.1.push(i),
                    None => groups.push((*key, vec![i])),
                }
            }
        }
        for ((producer_id, producer_epoch), idx) in groups {
            let partitions = idx
                .iter()
                .map(|&i| (parts[i].topic.clone(), parts[i].partition))
                .collect::<Vec<_>>();
            let codes = self
                .add_partitions_anywhere(
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    !add,
                )
                .await;
            for (i, code) in idx.into_iter().zip(codes) {
                if !code.is_none() {
                    // Kafka answers a produce of a fenced epoch with INVALID_PRODUCER_EPOCH.
                    out[i] = Some(if code == ErrorCode::PRODUCER_FENCED {
                        ErrorCode::INVALID_PRODUCER_EPOCH
                    } else {
                        code
                    });
                }
            }
        }
        out
    }

    /// Every producer with state on each partition (DescribeProducers), in request order.
    pub async fn describe_producers(
        self: &Rc<Self>,
        parts: Vec<(String, i32)>,
    ) -> Vec<ProducersResult> {
        self.scatter(
            parts,
            |p| (&p.0, p.1),
            |parts, reply| ShardMsg::Producers { parts, reply },
            || Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
        )
        .await
    }

    /// The partition count of `__transaction_state`: as created, else as configured.
    pub(super) fn txn_state_partitions(&self) -> i32 {
        self.metadata()
            .topics
            .get(TRANSACTION_STATE_TOPIC)
            .map_or(self.config.txn.state_partitions, |t| t.partitions)
    }

    /// The shard coordinating a transactional id: the owner of its `__transaction_state`
    /// partition.
    pub fn txn_coordinator_of(&self, transactional_id: &str) -> usize {
        let p = state_partition(transactional_id, self.txn_state_partitions());
        self.owner_of(TRANSACTION_STATE_TOPIC, p)
    }

    /// Creates `__transaction_state` (on shard 0) if this broker has none yet: Kafka creates
    /// it at the first transactional request too.
    pub async fn ensure_txn_topic(self: &Rc<Self>) -> Result<(), String> {
        if let Some(t) = self.metadata().topics.get(TRANSACTION_STATE_TOPIC) {
            if t.configs.contains_key("cleanup.policy") {
                return Ok(());
            }
            // Created before shardlog had compaction: compact it from now on.
            let reply = self
                .admin(AdminOp::AlterConfigs {
                    topics: vec![(
                        TRANSACTION_STATE_TOPIC.to_string(),
                        vec![(
                            "cleanup.policy".to_string(),
                            super::ConfigOp::Set("compact".to_string()),
                        )],
                    )],
                    replace: false,
                    validate_only: false,
                })
                .await;
            tracing::info!(
                "{TRANSACTION_STATE_TOPIC} is compacted from now on (cleanup.policy=compact)"
            );
            return reply.result(0).map_err(|e| e.message);
        }
        // As Kafka's: compacted (the latest state of every transactional id stays), in 100 MiB
        // segments (`transaction.state.log.segment.bytes`).
        let configs = [
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("segment.bytes".to_string(), "104857600".to_string()),
        ]
        .into_iter()
        .collect();
        let reply = self
            .admin(AdminOp::CreateTopics {
                topics: vec![NewTopic {
                    name: TRANSACTION_STATE_TOPIC.to_string(),
                    partitions: self.config.txn.state_partitions,
                    replication_factor: 1,
                    configs,
                    ..Default::default()
                }],
                validate_only: false,
            })
            .await;
        match reply.result(0) {
            Ok(()) => Ok(()),
            // Created meanwhile by another request.
            Err(e) if e.code == ErrorCode::TOPIC_ALREADY_EXISTS => Ok(()),
            Err(e) => Err(e.message),
        }
    }

    /// Sends a request to a transactional id's coordinator shard (creating
    /// `__transaction_state` first if needed); `None` when it could not be answered.
    /// In a cluster, a broker that does not lead the id's `__transaction_state` partition
    /// answers NOT_COORDINATOR (the client looks the coordinator up again).
    pub async fn txn(self: &Rc<Self>, transactional_id: &str, op: TxnOp) -> Option<TxnReply> {
        if let Err(e) = self.ensure_txn_topic().await {
            tracing::warn!(error = %e, "cannot create {TRANSACTION_STATE_TOPIC}");
            return None;
        }
        if !self.coordinates_txn(transactional_id) {
            return Some(op.refused(ErrorCode::NOT_COORDINATOR));
        }
        let (reply, rx) = oneshot::channel();
        self.send(
            self.txn_coordinator_of(transactional_id),
            ShardMsg::Txn {
                op: Box::new(op),
                reply,
            },
        )
        .await;
        rx.await.ok()
    }

    /// Sends a request to every shard's coordinator (ListTransactions) and gathers answers.
    pub async fn txn_everywhere(self: &Rc<Self>, make: impl Fn() -> TxnOp) -> Vec<TxnReply> {
        let mut waits = Vec::with_capacity(self.nr_shards);
        for to in 0..self.nr_shards {
            let (reply, rx) = oneshot::channel();
            self.send(
                to,
                ShardMsg::Txn {
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

    /// On the coordinator shard: handles a routed transaction request, answers it, and
    /// starts writing the markers it decided.
    /// In a cluster the id's state partition is replayed first if this broker has just
    /// become its leader (COORDINATOR_LOAD_IN_PROGRESS meanwhile).
    pub(super) async fn serve_txn(self: &Rc<Self>, op: TxnOp, reply: oneshot::Sender<TxnReply>) {
        self.txns.set_partitions(self.txn_state_partitions());
        if let Some(id) = op.transactional_id().filter(|_| self.cluster.is_some()) {
            if !self.coordinates_txn(id) {
                let _ = reply.send(op.refused(ErrorCode::NOT_COORDINATOR));
                return;
            }
            if !self.ensure_txn_loaded(self.txns.partition_of(id)).await {
                let _ = reply.send(op.refused(ErrorCode::COORDINATOR_LOAD_IN_PROGRESS));
                return;
            }
        }
        let (answer, jobs) = self.txns.handle(op).await;
        let _ = reply.send(answer);
        for job in jobs {
            self.spawn_markers(job);
        }
    }

    /// Writes a decided transaction's markers in the background, then completes it.
    pub(super) fn spawn_markers(self: &Rc<Self>, job: MarkerJob) {
        let me = self.clone();
        glommio::spawn_local(async move { me.run_markers(job).await }).detach();
    }

    /// Writes `job`'s markers to every partition (retrying the partitions that fail, as
    /// Kafka's marker channel does; a partition that no longer exists needs none), then
    /// records the transaction complete with the coordinator.
    async fn run_markers(self: &Rc<Self>, job: MarkerJob) {
        let mut left: Vec<(String, i32)> = job.partitions.clone();
        for attempt in 0..MARKER_ATTEMPTS_MAX {
            let coordinator_epoch =
                self.coordinator_epoch(self.txns.partition_of(&job.transactional_id));
            let parts: Vec<MarkerPart> = left
                .iter()
                .map(|(topic, partition)| MarkerPart {
                    topic: topic.clone(),
                    partition: *partition,
                    producer_id: job.producer_id,
                    producer_epoch: job.producer_epoch,
                    commit: job.commit,
                    coordinator_epoch,
                    transaction_v2: job.v2,
                })
                .collect();
            let codes = self.write_markers_anywhere(parts).await;
            let mut failed = Vec::new();
            for ((topic, partition), code) in left.into_iter().zip(codes) {
                if code == ErrorCode::NONE || code == ErrorCode::UNKNOWN_TOPIC_OR_PARTITION {
                    continue;
                }
                if code == ErrorCode::INVALID_PRODUCER_EPOCH {
                    // The partition has a newer epoch of this producer: a later marker or
                    // fence already closed what this one would.
                    tracing::info!(transactional_id = %job.transactional_id, %topic, partition, "marker superseded by a newer epoch");
                    continue;
                }
                if attempt == 0 || attempt % 50 == 0 {
                    tracing::warn!(transactional_id = %job.transactional_id, %topic, partition, error = %code, attempt, "marker not written; retrying");
                }
                failed.push((topic, partition));
            }
            if failed.is_empty() {
                self.txns.complete(&job).await;
                return;
            }
            left = failed;
            glommio::timer::sleep(Duration::from_millis(MARKER_RETRY_BACKOFF_MS)).await;
        }
        tracing::error!(transactional_id = %job.transactional_id, "markers not written after {MARKER_ATTEMPTS_MAX} attempts; the transaction stays in its Prepare state until its state partition is loaded again (next start, or next leadership)");
    }

    /// Appends one marker per part on the partition's owner, durably; codes in part order
    /// (WriteTxnMarkers, and the coordinator's own markers).
    /// In a cluster only the partitions this broker leads are written; the others are
    /// NOT_LEADER_OR_FOLLOWER.
    pub async fn write_markers(self: &Rc<Self>, parts: Vec<MarkerPart>) -> Vec<ErrorCode> {
        let Some(view) = self.cluster_view() else {
            return self.markers_on_owners(parts).await;
        };
        let mut out = vec![ErrorCode::NOT_LEADER_OR_FOLLOWER; parts.len()];
        let (idx, led): (Vec<usize>, Vec<MarkerPart>) = parts
            .into_iter()
            .enumerate()
            .filter(|(_, m)| view.leads(&m.topic, m.partition))
            .unzip();
        for (i, code) in idx.into_iter().zip(self.markers_on_owners(led).await) {
            out[i] = code;
        }
        out
    }

    /// Sends each marker to its partition's owner shard; codes in part order.
    async fn markers_on_owners(self: &Rc<Self>, parts: Vec<MarkerPart>) -> Vec<ErrorCode> {
        if parts.is_empty() {
            return Vec::new();
        }
        self.scatter(
            parts,
            |p| (&p.topic, p.partition),
            |parts, reply| ShardMsg::Markers { parts, reply },
            || ErrorCode::NOT_LEADER_OR_FOLLOWER,
        )
        .await
    }

    /// On the owner: appends each marker, waits until they are durable, then settles the
    /// offsets held for transactions whose marker reached an offsets partition.
    pub(super) async fn append_markers(
        self: &Rc<Self>,
        parts: Vec<(usize, MarkerPart)>,
    ) -> Vec<(usize, ErrorCode)> {
        let now = now_ms();
        let mut out = Vec::with_capacity(parts.len());
        let mut durable = Vec::new();
        for (i, m) in parts {
            let batch = build_control_batch(
                m.producer_id,
                m.producer_epoch,
                m.commit,
                m.coordinator_epoch,
                now,
            );
            let origin = if m.transaction_v2 {
                AppendOrigin::CoordinatorTransactionV2
            } else {
                AppendOrigin::Coordinator
            };
            match self
                .storage
                .append_from(&m.topic, m.partition, batch, origin)
            {
                Ok(info) => {
                    durable.push((out.len(), m, info.last_offset));
                    out.push((i, ErrorCode::NONE));
                }
                Err(e) => {
                    tracing::debug!(topic = %m.topic, partition = m.partition, error = %e, "marker refused");
                    out.push((i, e.kafka_error_code()));
                }
            }
        }
        for (at, m, last) in durable {
            match self.storage.wait_durable(&m.topic, m.partition, last).await {
                Ok(()) => {
                    if m.topic == OFFSETS_TOPIC {
                        self.groups.settle_txn(m.partition, m.producer_id, m.commit);
                    }
                }
                Err(e) => out[at].1 = e.kafka_error_code(),
            }
        }
        out
    }

    /// Every ~100 ms tick: aborts the transactions past their timeout, at most once per
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`, and forgets the ids past
    /// `transactional.id.expiration.ms` once per
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`.
    /// In a cluster every tick also follows the leadership of the owned
    /// `__transaction_state` partitions (replayed when led, forgotten when not).
    pub async fn tick_transactions(self: &Rc<Self>, ticks: u64, tick_ms: u64) {
        self.follow_txn_leadership().await;
        let expiry_every = (self.config.txn.remove_expired_interval_ms / tick_ms.max(1)).max(1);
        if ticks % expiry_every == 0 && ticks > 0 {
            self.txns.expire_ids(now_ms()).await;
        }
        let every = (self.config.txn.abort_check_interval_ms / tick_ms.max(1)).max(1);
        if ticks % every != 0 {
            return;
        }
        for job in self.txns.expire(now_ms()).await {
            self.spawn_markers(job);
        }
    }

    /// At start: replays the `__transaction_state` partitions this shard owns.
    /// In a cluster nothing is replayed here: a partition is replayed when this broker
    /// leads it (`follow_txn_leadership`).
    pub async fn replay_transactions(self: &Rc<Self>) -> Result<(), String> {
        if self.cluster.is_some() {
            return Ok(());
        }
        let meta = self.metadata();
        let Some(topic) = meta.topics.get(TRANSACTION_STATE_TOPIC) else {
            return Ok(());
        };
        self.txns.set_partitions(topic.partitions);
        for p in 0..topic.partitions {
            if self.owner_of(TRANSACTION_STATE_TOPIC, p) == self.id {
                self.txns.begin_load(p);
                let replayed = self.txns.replay(p).await;
                self.txns.end_load(p, replayed.is_ok());
                let n = replayed
                    .map_err(|e| format!("replaying {TRANSACTION_STATE_TOPIC}-{p}: {e}"))?;
                if n > 0 {
                    tracing::info!(
                        shard = self.id,
                        partition = p,
                        records = n,
                        "replayed transaction state"
                    );
                }
            }
        }
        Ok(())
    }

    /// Once every shard has replayed (groups included): resumes the markers of every
    /// transaction found decided but not complete.
    pub fn resume_markers(self: &Rc<Self>) {
        self.txns.set_serving();
        for job in self.txns.pending_jobs() {
            tracing::info!(transactional_id = %job.transactional_id, commit = job.commit, "resuming the markers of a decided transaction");
            self.spawn_markers(job);
        }
    }
}
