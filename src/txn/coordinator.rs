//! The transaction coordinator of one shard: Kafka's state machine per transactional id
//! (`Empty → Ongoing → PrepareCommit | PrepareAbort → CompleteCommit | CompleteAbort`), every
//! change written durably to the id's `__transaction_state` partition before it is answered.
//!
//! Invariants: an id has at most one state change in flight (`pending`; a request meeting
//! one gets CONCURRENT_TRANSACTIONS); the producer epoch of an id never decreases; a
//! [`MarkerJob`] is handed out only after its Prepare record is durable (the commit point).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use bytes::BytesMut;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::records::{decode_key, decode_value, encode_key, encode_value, StoredTxn};
use super::{state_partition, TxnConfig, TxnState, TRANSACTION_STATE_TOPIC};
use crate::error_code::ErrorCode;
use crate::storage::{ShardStorage, StorageError};

/// One transactional id's state in memory.
#[derive(Clone, Debug)]
struct TxnMeta {
    producer_id: i64,
    producer_epoch: i16,
    timeout_ms: i32,
    state: TxnState,
    partitions: BTreeSet<(String, i32)>,
    last_update_ms: i64,
    start_ms: i64,
    /// A state change is being written: no other change may start.
    pending: bool,
}

impl TxnMeta {
    fn stored(&self) -> StoredTxn {
        StoredTxn {
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            timeout_ms: self.timeout_ms,
            state: self.state,
            partitions: self.partitions.iter().cloned().collect(),
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
        }
    }

    fn from_stored(s: StoredTxn) -> TxnMeta {
        TxnMeta {
            producer_id: s.producer_id,
            producer_epoch: s.producer_epoch,
            timeout_ms: s.timeout_ms,
            state: s.state,
            partitions: s.partitions.into_iter().collect(),
            last_update_ms: s.last_update_ms,
            start_ms: s.start_ms,
            pending: false,
        }
    }
}

/// A request for the coordinator of a transactional id (routed to its shard).
#[derive(Debug)]
pub enum TxnOp {
    /// InitProducerId with a transactional id.
    InitProducerId {
        /// The transactional id.
        transactional_id: String,
        /// The producer's `transaction.timeout.ms`.
        timeout_ms: i32,
        /// KIP-360: the producer id the client has (-1 if none).
        producer_id: i64,
        /// KIP-360: the epoch the client has (-1 if none).
        producer_epoch: i16,
        /// A fresh producer id, used if the id is new or its epoch is exhausted.
        fresh_producer_id: i64,
    },
    /// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the group's offsets
    /// partition); with `verify_only` nothing is added, each partition is only checked.
    AddPartitions {
        /// The transactional id.
        transactional_id: String,
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        producer_epoch: i16,
        /// The partitions.
        partitions: Vec<(String, i32)>,
        /// Check only (the broker's verification form of v4+).
        verify_only: bool,
        /// How long an add may wait for the producer's previous transaction to finish
        /// completing (its markers, then CompleteCommit / CompleteAbort) or for a state change
        /// in flight, instead of answering CONCURRENT_TRANSACTIONS at once: Kafka's
        /// `add.partitions.to.txn.retry.backoff.max.ms` for the adds a Produce makes
        /// (transactions v2), 0 for a client's AddPartitionsToTxn (the client retries).
        settle_wait_ms: u64,
    },
    /// EndTxn.
    EndTxn {
        /// The transactional id.
        transactional_id: String,
        /// The producer id.
        producer_id: i64,
        /// The producer epoch.
        producer_epoch: i16,
        /// Commit (true) or abort.
        commit: bool,
        /// Transactions v2 (EndTxn v5+): the epoch is bumped at the end of the transaction
        /// and the markers carry the bumped one.
        v2: bool,
    },
    /// DescribeTransactions of these ids.
    Describe(Vec<String>),
    /// ListTransactions with Kafka's filters (empty = any).
    List {
        /// States by Kafka's names.
        states: Vec<String>,
        /// Producer ids.
        producer_ids: Vec<i64>,
    },
}

impl TxnOp {
    /// The answer refusing this request as a whole with `code` (e.g. NOT_COORDINATOR when
    /// this broker does not lead the id's `__transaction_state` partition).
    pub fn refused(&self, code: ErrorCode) -> TxnReply {
        match self {
            TxnOp::InitProducerId { .. } => TxnReply::InitProducerId {
                error_code: code,
                producer_id: -1,
                producer_epoch: -1,
            },
            TxnOp::AddPartitions { partitions, .. } => {
                TxnReply::Partitions(vec![code; partitions.len()])
            }
            TxnOp::EndTxn { .. } => TxnReply::Ended {
                error_code: code,
                producer_id: -1,
                producer_epoch: -1,
            },
            TxnOp::Describe(ids) => TxnReply::Described(
                ids.iter()
                    .map(|id| DescribedTxn::failed(id.clone(), code))
                    .collect(),
            ),
            TxnOp::List { .. } => TxnReply::Listed(Vec::new()),
        }
    }

    /// The transactional id the request is about (`None` for List, and for a Describe of
    /// several ids).
    pub fn transactional_id(&self) -> Option<&str> {
        match self {
            TxnOp::InitProducerId {
                transactional_id, ..
            }
            | TxnOp::AddPartitions {
                transactional_id, ..
            }
            | TxnOp::EndTxn {
                transactional_id, ..
            } => Some(transactional_id),
            TxnOp::Describe(ids) if ids.len() == 1 => ids.first().map(String::as_str),
            TxnOp::Describe(_) | TxnOp::List { .. } => None,
        }
    }
}

/// One id as DescribeTransactions reports it.
#[derive(Clone, Debug)]
pub struct DescribedTxn {
    /// NONE, or TRANSACTIONAL_ID_NOT_FOUND.
    pub error_code: ErrorCode,
    /// The transactional id.
    pub transactional_id: String,
    /// Kafka's name of its state.
    pub state: &'static str,
    /// Its `transaction.timeout.ms`.
    pub timeout_ms: i32,
    /// When its transaction started (-1: none).
    pub start_ms: i64,
    /// The producer id.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The partitions of its transaction.
    pub partitions: Vec<(String, i32)>,
}

impl DescribedTxn {
    /// The description of an id that could not be described (`code`).
    fn failed(transactional_id: String, code: ErrorCode) -> DescribedTxn {
        DescribedTxn {
            error_code: code,
            transactional_id,
            state: "",
            timeout_ms: 0,
            start_ms: -1,
            producer_id: -1,
            producer_epoch: -1,
            partitions: Vec::new(),
        }
    }
}

/// The coordinator's answer to a [`TxnOp`].
#[derive(Debug)]
pub enum TxnReply {
    /// To InitProducerId.
    InitProducerId {
        /// The outcome.
        error_code: ErrorCode,
        /// The producer id (-1 on error).
        producer_id: i64,
        /// The epoch (-1 on error).
        producer_epoch: i16,
    },
    /// To AddPartitions: one code per partition, in order.
    Partitions(Vec<ErrorCode>),
    /// To EndTxn: the outcome and the producer id and epoch to use next (v2: bumped).
    Ended {
        /// The outcome.
        error_code: ErrorCode,
        /// The producer id.
        producer_id: i64,
        /// The epoch for the next transaction.
        producer_epoch: i16,
    },
    /// To Describe, in order.
    Described(Vec<DescribedTxn>),
    /// To List: (transactional id, producer id, state name, transaction start ms or -1).
    Listed(Vec<(String, i64, &'static str, i64)>),
}

/// Markers to write for a decided transaction: a control batch of `producer_id` /
/// `producer_epoch` on each partition, COMMIT or ABORT, then [`Coordinator::complete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkerJob {
    /// The transactional id.
    pub transactional_id: String,
    /// The producer id.
    pub producer_id: i64,
    /// The epoch the markers carry.
    pub producer_epoch: i16,
    /// COMMIT (true) or ABORT.
    pub commit: bool,
    /// Every partition of the transaction.
    pub partitions: Vec<(String, i32)>,
    /// Ended by a transactions-v2 EndTxn: the markers carry the bumped epoch, and a partition
    /// refuses one whose epoch is not newer than the producer's there.
    pub v2: bool,
}

/// The transaction coordinator of one shard.
pub struct Coordinator {
    config: TxnConfig,
    /// Partitions of `__transaction_state` as created.
    partitions: Cell<i32>,
    storage: Rc<ShardStorage>,
    txns: RefCell<HashMap<String, TxnMeta>>,
    /// The `__transaction_state` partitions replayed into `txns` (in a cluster: those this
    /// broker leads; their ids are served, the others' are not held).
    loaded: RefCell<BTreeSet<i32>>,
    /// Partitions being replayed now (in a cluster, on becoming their leader).
    loading: RefCell<BTreeSet<i32>>,
    /// Markers may be sent (every shard has started).
    serving: Cell<bool>,
    /// Counts the state changes installed (or given up): an add waiting for a transaction to
    /// settle re-checks when it moves.
    changes: Cell<u64>,
    /// The tasks waiting for the next state change.
    change_waiters: RefCell<Vec<std::task::Waker>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Coordinator {
    /// A coordinator with no transactional ids, writing to `storage`.
    pub fn new(config: TxnConfig, storage: Rc<ShardStorage>) -> Rc<Self> {
        Rc::new(Coordinator {
            partitions: Cell::new(config.state_partitions),
            config,
            storage,
            txns: RefCell::new(HashMap::new()),
            loaded: RefCell::new(BTreeSet::new()),
            loading: RefCell::new(BTreeSet::new()),
            serving: Cell::new(false),
            changes: Cell::new(0),
            change_waiters: RefCell::new(Vec::new()),
        })
    }

    /// Whether `partition` was replayed and its ids are served here.
    pub fn is_loaded(&self, partition: i32) -> bool {
        self.loaded.borrow().contains(&partition)
    }

    /// Claims the replay of `partition`: false when it is loaded or being loaded already.
    /// The claim ends with [`Coordinator::end_load`].
    pub fn begin_load(&self, partition: i32) -> bool {
        !self.is_loaded(partition) && self.loading.borrow_mut().insert(partition)
    }

    /// Ends a claimed replay; `loaded` says whether it succeeded.
    pub fn end_load(&self, partition: i32, loaded: bool) {
        self.loading.borrow_mut().remove(&partition);
        if loaded {
            self.loaded.borrow_mut().insert(partition);
        }
    }

    /// Forgets the ids of `partition` (its leadership moved to another broker, whose
    /// coordinator replays it); returns how many were held. Their marker jobs in flight
    /// complete nothing here (the id is gone).
    pub fn unload(&self, partition: i32) -> usize {
        self.loaded.borrow_mut().remove(&partition);
        let n = self.partitions.get();
        let mut txns = self.txns.borrow_mut();
        let before = txns.len();
        txns.retain(|id, _| state_partition(id, n) != partition);
        before - txns.len()
    }

    /// Marks the coordinator as serving: every shard has started, markers may go out.
    pub fn set_serving(&self) {
        self.serving.set(true);
    }

    /// Whether every shard has started (markers may go out).
    pub fn serving(&self) -> bool {
        self.serving.get()
    }

    /// The settings.
    pub fn config(&self) -> &TxnConfig {
        &self.config
    }

    /// Sets the partition count of `__transaction_state` as created.
    pub fn set_partitions(&self, n: i32) {
        self.partitions.set(n.max(1));
    }

    /// The `__transaction_state` partition of a transactional id.
    pub fn partition_of(&self, transactional_id: &str) -> i32 {
        state_partition(transactional_id, self.partitions.get())
    }

    /// Replays one owned `__transaction_state` partition into memory (at start). Returns the
    /// records applied.
    pub async fn replay(&self, partition: i32) -> Result<usize, StorageError> {
        let (start, end) = self.storage.offsets(TRANSACTION_STATE_TOPIC, partition)?;
        let mut next = start;
        let mut applied = 0;
        while next < end {
            let data = self
                .storage
                .read(TRANSACTION_STATE_TOPIC, partition, next, 1 << 20)
                .await?;
            if data.batches.is_empty() {
                break;
            }
            let mut joined = BytesMut::new();
            for b in &data.batches {
                joined.extend_from_slice(b);
            }
            let mut buf = joined.freeze();
            // Where the batches end: a compacted batch keeps its last offset but may have lost
            // the records at its end, so the records' offsets alone could stop the replay.
            let mut batches_end = next;
            let mut at = 0usize;
            while let Ok(h) = crate::storage::parse_header(&buf[at.min(buf.len())..]) {
                batches_end = batches_end.max(h.last_offset() + 1);
                // Reads return whole CRC-checked batches: a length is never below the header.
                at += h.size_bytes().max(crate::storage::BATCH_HEADER_BYTES);
            }
            let sets =
                kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                    StorageError::CorruptLog {
                        path: format!("{TRANSACTION_STATE_TOPIC}-{partition}").into(),
                        reason: e.to_string(),
                    }
                })?;
            let mut last = batches_end;
            for r in sets.into_iter().flat_map(|s| s.records) {
                last = last.max(r.offset + 1);
                if r.offset < next {
                    continue;
                }
                let Some(key) = r.key else { continue };
                match decode_key(key).and_then(|id| Ok((id, decode_value(r.value)?))) {
                    Ok((id, Some(stored))) => {
                        self.txns
                            .borrow_mut()
                            .insert(id, TxnMeta::from_stored(stored));
                        applied += 1;
                    }
                    Ok((id, None)) => {
                        self.txns.borrow_mut().remove(&id);
                        applied += 1;
                    }
                    Err(e) => {
                        tracing::warn!(partition, offset = r.offset, error = %e, "skipping record")
                    }
                }
            }
            if last <= next {
                break;
            }
            next = last;
        }
        Ok(applied)
    }

    /// The markers still owed after a replay: every transaction found in a Prepare state
    /// (its outcome was decided before the stop; markers are idempotent per epoch).
    pub fn pending_jobs(&self) -> Vec<MarkerJob> {
        let txns = self.txns.borrow();
        let mut jobs: Vec<MarkerJob> = txns
            .iter()
            .filter(|(_, m)| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|(id, m)| MarkerJob {
                transactional_id: id.clone(),
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                commit: m.state == TxnState::PrepareCommit,
                partitions: m.partitions.iter().cloned().collect(),
                // Not stored (TransactionLogValue v0): resent markers are not strict. One
                // already written is then appended again, harmlessly (no open transaction).
                v2: false,
            })
            .collect();
        jobs.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        jobs
    }

    /// Writes `meta` (the id's next state) durably; the id must be marked pending by the
    /// caller. On success the state is installed; either way `pending` is cleared.
    async fn write(&self, id: &str, meta: TxnMeta) -> Result<(), ErrorCode> {
        let partition = self.partition_of(id);
        let result = self.persist(partition, id, &meta.stored()).await;
        let outcome = {
            let mut txns = self.txns.borrow_mut();
            match result {
                Ok(()) => {
                    let mut meta = meta;
                    meta.pending = false;
                    txns.insert(id.to_string(), meta);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(transactional_id = id, error = %e, "transaction state not durable");
                    if let Some(m) = txns.get_mut(id) {
                        m.pending = false;
                    }
                    Err(ErrorCode::COORDINATOR_NOT_AVAILABLE)
                }
            }
        };
        self.changed();
        outcome
    }

    /// Records that a state change was installed or given up, waking the waiting adds.
    fn changed(&self) {
        self.changes.set(self.changes.get().wrapping_add(1));
        for w in std::mem::take(&mut *self.change_waiters.borrow_mut()) {
            w.wake();
        }
    }

    /// Resolves once a state change happened after `seen` (a value of `changes`).
    async fn changed_since(&self, seen: u64) {
        std::future::poll_fn(|cx| {
            if self.changes.get() != seen {
                return std::task::Poll::Ready(());
            }
            let mut waiters = self.change_waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Appends one state record durably to the id's partition.
    async fn persist(&self, partition: i32, id: &str, t: &StoredTxn) -> Result<(), StorageError> {
        self.persist_value(partition, id, Some(encode_value(t)), t.last_update_ms)
            .await
    }

    /// Appends the id's record (`None`: its tombstone) durably, stamped `timestamp_ms`.
    async fn persist_value(
        &self,
        partition: i32,
        id: &str,
        value: Option<bytes::Bytes>,
        timestamp_ms: i64,
    ) -> Result<(), StorageError> {
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: timestamp_ms,
            key: Some(encode_key(id)),
            value,
            headers: Default::default(),
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&record],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| StorageError::Io(std::io::Error::other(e.to_string())))?;
        let info = self
            .storage
            .append(TRANSACTION_STATE_TOPIC, partition, buf.freeze())?;
        self.storage
            .wait_durable(TRANSACTION_STATE_TOPIC, partition, info.last_offset)
            .await
    }

    /// Handles one routed request. Returns the answer and the markers it decided.
    pub async fn handle(&self, op: TxnOp) -> (TxnReply, Vec<MarkerJob>) {
        match op {
            TxnOp::InitProducerId {
                transactional_id,
                timeout_ms,
                producer_id,
                producer_epoch,
                fresh_producer_id,
            } => {
                self.init_producer_id(
                    &transactional_id,
                    timeout_ms,
                    producer_id,
                    producer_epoch,
                    fresh_producer_id,
                )
                .await
            }
            TxnOp::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                verify_only,
                settle_wait_ms,
            } => (
                TxnReply::Partitions(
                    self.add_partitions_settling(
                        &transactional_id,
                        producer_id,
                        producer_epoch,
                        partitions,
                        verify_only,
                        settle_wait_ms,
                    )
                    .await,
                ),
                Vec::new(),
            ),
            TxnOp::EndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                v2,
            } => {
                let (code, job) = self
                    .end_txn(&transactional_id, producer_id, producer_epoch, commit, v2)
                    .await;
                let (pid, epoch) = self
                    .txns
                    .borrow()
                    .get(&transactional_id)
                    .filter(|_| code.is_none())
                    .map_or((-1, -1), |m| (m.producer_id, m.producer_epoch));
                let reply = TxnReply::Ended {
                    error_code: code,
                    producer_id: pid,
                    producer_epoch: epoch,
                };
                (reply, job.into_iter().collect())
            }
            TxnOp::Describe(ids) => (TxnReply::Described(self.describe(ids)), Vec::new()),
            TxnOp::List {
                states,
                producer_ids,
            } => (
                TxnReply::Listed(self.list(&states, &producer_ids)),
                Vec::new(),
            ),
        }
    }

    fn init_reply(code: ErrorCode) -> TxnReply {
        TxnReply::InitProducerId {
            error_code: code,
            producer_id: -1,
            producer_epoch: -1,
        }
    }

    /// Kafka's `handleInitProducerId` for a transactional id.
    async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected_pid: i64,
        expected_epoch: i16,
        fresh_pid: i64,
    ) -> (TxnReply, Vec<MarkerJob>) {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return (
                Self::init_reply(ErrorCode::INVALID_TRANSACTION_TIMEOUT),
                Vec::new(),
            );
        }
        let now = now_ms();
        let (next, job) = {
            let mut txns = self.txns.borrow_mut();
            match txns.get_mut(id) {
                None => {
                    let meta = TxnMeta {
                        producer_id: fresh_pid,
                        producer_epoch: 0,
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        last_update_ms: now,
                        start_ms: -1,
                        pending: true,
                    };
                    txns.insert(id.to_string(), meta.clone());
                    (meta, None)
                }
                Some(m) => {
                    if m.pending {
                        return (
                            Self::init_reply(ErrorCode::CONCURRENT_TRANSACTIONS),
                            Vec::new(),
                        );
                    }
                    // KIP-360: a producer that names its id and epoch must be the current one.
                    if expected_pid >= 0
                        && (expected_pid != m.producer_id || expected_epoch != m.producer_epoch)
                    {
                        return (Self::init_reply(ErrorCode::PRODUCER_FENCED), Vec::new());
                    }
                    match m.state {
                        TxnState::PrepareCommit
                        | TxnState::PrepareAbort
                        | TxnState::PrepareEpochFence => {
                            return (
                                Self::init_reply(ErrorCode::CONCURRENT_TRANSACTIONS),
                                Vec::new(),
                            )
                        }
                        TxnState::Ongoing => {
                            // Fence the old producer: abort its transaction with a bumped
                            // epoch; the client retries and gets the next epoch once done.
                            let mut next = m.clone();
                            next.producer_epoch = m.producer_epoch.saturating_add(1);
                            next.state = TxnState::PrepareAbort;
                            next.last_update_ms = now;
                            m.pending = true;
                            let job = MarkerJob {
                                transactional_id: id.to_string(),
                                producer_id: next.producer_id,
                                producer_epoch: next.producer_epoch,
                                commit: false,
                                partitions: next.partitions.iter().cloned().collect(),
                                v2: false,
                            };
                            (next, Some(job))
                        }
                        TxnState::Empty
                        | TxnState::CompleteCommit
                        | TxnState::CompleteAbort
                        | TxnState::Dead => {
                            let mut next = m.clone();
                            if m.producer_epoch >= i16::MAX - 1 {
                                // Epoch exhausted: a new producer id (KIP-360).
                                next.producer_id = fresh_pid;
                                next.producer_epoch = 0;
                            } else {
                                next.producer_epoch = m.producer_epoch + 1;
                            }
                            next.state = TxnState::Empty;
                            next.partitions.clear();
                            next.timeout_ms = timeout_ms;
                            next.last_update_ms = now;
                            next.start_ms = -1;
                            m.pending = true;
                            (next, None)
                        }
                    }
                }
            }
        };
        let fenced = job.is_some();
        if let Err(code) = self.write(id, next.clone()).await {
            if next.producer_epoch == 0 && next.producer_id == fresh_pid {
                // A new id whose first record failed: forget it.
                let mut txns = self.txns.borrow_mut();
                if txns
                    .get(id)
                    .is_some_and(|m| m.producer_id == fresh_pid && m.state == TxnState::Empty)
                {
                    txns.remove(id);
                }
            }
            return (Self::init_reply(code), Vec::new());
        }
        if fenced {
            tracing::info!(
                transactional_id = id,
                producer_id = next.producer_id,
                epoch = next.producer_epoch,
                "fencing the previous producer: aborting its ongoing transaction"
            );
            return (
                Self::init_reply(ErrorCode::CONCURRENT_TRANSACTIONS),
                job.into_iter().collect(),
            );
        }
        (
            TxnReply::InitProducerId {
                error_code: ErrorCode::NONE,
                producer_id: next.producer_id,
                producer_epoch: next.producer_epoch,
            },
            Vec::new(),
        )
    }

    /// Checks a request's producer id and epoch against the id's state.
    fn check_producer(m: &TxnMeta, producer_id: i64, producer_epoch: i16) -> Result<(), ErrorCode> {
        if m.producer_id != producer_id {
            return Err(ErrorCode::INVALID_PRODUCER_ID_MAPPING);
        }
        if m.producer_epoch != producer_epoch {
            return Err(ErrorCode::PRODUCER_FENCED);
        }
        if m.pending {
            return Err(ErrorCode::CONCURRENT_TRANSACTIONS);
        }
        Ok(())
    }

    /// Kafka's `handleVerifyPartitionsInTransaction`: whether each partition is in the
    /// producer's ongoing transaction, from the installed (durable) state. A state change in
    /// flight is not waited for, as in Kafka: the producer's other requests of the same
    /// transaction (AddOffsetsToTxn, another AddPartitionsToTxn) run concurrently with its
    /// Produce, and a partition's add is installed before the client is answered, so a
    /// Produce that follows it is verified. Only a decided transaction (Prepare*) answers
    /// CONCURRENT_TRANSACTIONS.
    fn verify(
        m: &TxnMeta,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<ErrorCode> {
        let whole = if m.producer_id != producer_id {
            Some(ErrorCode::INVALID_PRODUCER_ID_MAPPING)
        } else if m.producer_epoch != producer_epoch {
            Some(ErrorCode::PRODUCER_FENCED)
        } else if matches!(
            m.state,
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence
        ) {
            Some(ErrorCode::CONCURRENT_TRANSACTIONS)
        } else {
            None
        };
        partitions
            .iter()
            .map(|p| match whole {
                Some(code) => code,
                None if m.state == TxnState::Ongoing && m.partitions.contains(p) => ErrorCode::NONE,
                None => ErrorCode::INVALID_TXN_STATE,
            })
            .collect()
    }

    /// [`Coordinator::add_partitions`], waiting up to `settle_wait_ms` while it answers
    /// CONCURRENT_TRANSACTIONS (the previous transaction still completing, or a state change
    /// in flight): re-tried at every state change rather than after a fixed backoff, so the
    /// Produce that opens a producer's next transaction goes on as soon as the previous one
    /// is complete.
    async fn add_partitions_settling(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
        settle_wait_ms: u64,
    ) -> Vec<ErrorCode> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(settle_wait_ms);
        loop {
            let seen = self.changes.get();
            let codes = self
                .add_partitions(
                    id,
                    producer_id,
                    producer_epoch,
                    partitions.clone(),
                    verify_only,
                )
                .await;
            let now = std::time::Instant::now();
            if verify_only
                || now >= deadline
                || !codes.contains(&ErrorCode::CONCURRENT_TRANSACTIONS)
            {
                return codes;
            }
            futures_lite::future::or(
                self.changed_since(seen),
                glommio::timer::sleep(deadline - now),
            )
            .await;
        }
    }

    /// Kafka's `handleAddPartitionsToTransaction` (and its verification form).
    async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<(String, i32)>,
        verify_only: bool,
    ) -> Vec<ErrorCode> {
        let n = partitions.len();
        let next = {
            let mut txns = self.txns.borrow_mut();
            let Some(m) = txns.get_mut(id) else {
                return vec![ErrorCode::INVALID_PRODUCER_ID_MAPPING; n];
            };
            if verify_only {
                return Self::verify(m, producer_id, producer_epoch, &partitions);
            }
            if let Err(code) = Self::check_producer(m, producer_id, producer_epoch) {
                return vec![code; n];
            }
            match m.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                    return vec![ErrorCode::CONCURRENT_TRANSACTIONS; n];
                }
                TxnState::Dead => return vec![ErrorCode::INVALID_PRODUCER_ID_MAPPING; n],
                TxnState::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => {
                    return vec![ErrorCode::NONE; n];
                }
                _ => {}
            }
            let now = now_ms();
            let mut next = m.clone();
            if m.state != TxnState::Ongoing {
                next.partitions.clear();
                next.start_ms = now;
            }
            next.partitions.extend(partitions);
            next.state = TxnState::Ongoing;
            next.last_update_ms = now;
            m.pending = true;
            next
        };
        match self.write(id, next).await {
            Ok(()) => vec![ErrorCode::NONE; n],
            Err(code) => vec![code; n],
        }
    }

    /// Kafka's `handleEndTransaction`: the Prepare record is the commit point; the markers
    /// follow (the returned job). With `v2` (transactions v2) the Prepare record carries the
    /// epoch bumped, and so do the markers: a marker of this transaction can then never close
    /// the producer's next one.
    async fn end_txn(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        v2: bool,
    ) -> (ErrorCode, Option<MarkerJob>) {
        let next = {
            let mut txns = self.txns.borrow_mut();
            let Some(m) = txns.get_mut(id) else {
                return (ErrorCode::INVALID_PRODUCER_ID_MAPPING, None);
            };
            // v2: a retry of an EndTxn already applied comes with the epoch before the bump.
            if v2
                && m.producer_id == producer_id
                && producer_epoch.checked_add(1) == Some(m.producer_epoch)
            {
                return match (m.state, commit) {
                    (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                        (ErrorCode::NONE, None)
                    }
                    (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                        (ErrorCode::CONCURRENT_TRANSACTIONS, None)
                    }
                    _ => (ErrorCode::PRODUCER_FENCED, None),
                };
            }
            if let Err(code) = Self::check_producer(m, producer_id, producer_epoch) {
                return (code, None);
            }
            match (m.state, commit) {
                (TxnState::Ongoing, _) => {}
                // A retry of an EndTxn already done or under way.
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
                    return (ErrorCode::NONE, None)
                }
                (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                    return (ErrorCode::CONCURRENT_TRANSACTIONS, None)
                }
                _ => return (ErrorCode::INVALID_TXN_STATE, None),
            }
            let mut next = m.clone();
            next.state = if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            if v2 {
                if m.producer_epoch >= i16::MAX - 1 {
                    // Kafka rotates the producer id here; not yet (a note in the design).
                    return (ErrorCode::INVALID_TXN_STATE, None);
                }
                next.producer_epoch = m.producer_epoch + 1;
            }
            next.last_update_ms = now_ms();
            m.pending = true;
            next
        };
        let job = MarkerJob {
            transactional_id: id.to_string(),
            producer_id: next.producer_id,
            producer_epoch: next.producer_epoch,
            commit,
            partitions: next.partitions.iter().cloned().collect(),
            v2,
        };
        match self.write(id, next).await {
            Ok(()) => (ErrorCode::NONE, Some(job)),
            Err(code) => (code, None),
        }
    }

    /// Records that every marker of `job` is written: CompleteCommit / CompleteAbort. A job
    /// that no longer matches the id's state (an older epoch) changes nothing.
    pub async fn complete(&self, job: &MarkerJob) {
        let next = {
            let mut txns = self.txns.borrow_mut();
            let Some(m) = txns.get_mut(&job.transactional_id) else {
                return;
            };
            let want = if job.commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            };
            if m.pending
                || m.state != want
                || m.producer_id != job.producer_id
                || m.producer_epoch != job.producer_epoch
            {
                return;
            }
            let mut next = m.clone();
            next.state = if job.commit {
                TxnState::CompleteCommit
            } else {
                TxnState::CompleteAbort
            };
            next.partitions.clear();
            next.last_update_ms = now_ms();
            m.pending = true;
            next
        };
        let _ = self.write(&job.transactional_id, next).await;
    }

    /// Aborts every ongoing transaction older than its timeout (Kafka's
    /// `abortTimedOutTransactions`): the epoch is bumped (fencing the producer) and
    /// PrepareAbort written. Returns the markers to write.
    pub async fn expire(&self, now_ms: i64) -> Vec<MarkerJob> {
        let due: Vec<(String, TxnMeta)> = {
            let mut txns = self.txns.borrow_mut();
            txns.iter_mut()
                .filter(|(_, m)| {
                    m.state == TxnState::Ongoing
                        && !m.pending
                        && now_ms.saturating_sub(m.start_ms) > m.timeout_ms as i64
                })
                .map(|(id, m)| {
                    let mut next = m.clone();
                    next.producer_epoch = m.producer_epoch.saturating_add(1);
                    next.state = TxnState::PrepareAbort;
                    next.last_update_ms = now_ms;
                    m.pending = true;
                    (id.clone(), next)
                })
                .collect()
        };
        let mut jobs = Vec::with_capacity(due.len());
        for (id, next) in due {
            tracing::info!(
                transactional_id = %id,
                producer_id = next.producer_id,
                timeout_ms = next.timeout_ms,
                "transaction timed out: aborting it"
            );
            let job = MarkerJob {
                transactional_id: id.clone(),
                producer_id: next.producer_id,
                producer_epoch: next.producer_epoch,
                commit: false,
                partitions: next.partitions.iter().cloned().collect(),
                v2: false,
            };
            if self.write(&id, next).await.is_ok() {
                jobs.push(job);
            }
        }
        jobs
    }

    /// Forgets the ids past `transactional.id.expiration.ms` (Kafka's
    /// `removeExpiredTransactionalIds`): those with no transaction in progress (Empty,
    /// CompleteCommit, CompleteAbort) whose last state change is older than that. Each gets
    /// its tombstone in `__transaction_state` (state Dead, compacted away), durably, before
    /// it is removed. Returns how many were removed.
    pub async fn expire_ids(&self, now_ms: i64) -> usize {
        let expiration_ms = self.config.id_expiration_ms;
        let due: Vec<String> = {
            let mut txns = self.txns.borrow_mut();
            txns.iter_mut()
                .filter(|(_, m)| {
                    matches!(
                        m.state,
                        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                    ) && !m.pending
                        && now_ms.saturating_sub(m.last_update_ms) > expiration_ms
                })
                .map(|(id, m)| {
                    m.pending = true;
                    id.clone()
                })
                .collect()
        };
        let mut removed = 0;
        for id in due {
            let partition = self.partition_of(&id);
            match self.persist_value(partition, &id, None, now_ms).await {
                Ok(()) => {
                    self.txns.borrow_mut().remove(&id);
                    removed += 1;
                    tracing::info!(transactional_id = %id, "transactional id expired");
                }
                Err(e) => {
                    tracing::warn!(transactional_id = %id, error = %e, "expiration not durable; kept");
                    if let Some(m) = self.txns.borrow_mut().get_mut(&id) {
                        m.pending = false;
                    }
                }
            }
        }
        removed
    }

    fn describe(&self, ids: Vec<String>) -> Vec<DescribedTxn> {
        let txns = self.txns.borrow();
        ids.into_iter()
            .map(|id| match txns.get(&id) {
                Some(m) => DescribedTxn {
                    error_code: ErrorCode::NONE,
                    transactional_id: id,
                    state: m.state.name(),
                    timeout_ms: m.timeout_ms,
                    start_ms: m.start_ms,
                    producer_id: m.producer_id,
                    producer_epoch: m.producer_epoch,
                    partitions: m.partitions.iter().cloned().collect(),
                },
                None => DescribedTxn::failed(id, ErrorCode::TRANSACTIONAL_ID_NOT_FOUND),
            })
            .collect()
    }

    fn list(
        &self,
        states: &[String],
        producer_ids: &[i64],
    ) -> Vec<(String, i64, &'static str, i64)> {
        let txns = self.txns.borrow();
        let mut out: Vec<_> = txns
            .iter()
            .filter(|(_, m)| states.is_empty() || states.iter().any(|s| s == m.state.name()))
            .filter(|(_, m)| producer_ids.is_empty() || producer_ids.contains(&m.producer_id))
            .map(|(id, m)| (id.clone(), m.producer_id, m.state.name(), m.start_ms))
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ongoing(partitions: &[(&str, i32)], pending: bool) -> TxnMeta {
        TxnMeta {
            producer_id: 7,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: partitions
                .iter()
                .map(|(t, p)| (t.to_string(), *p))
                .collect(),
            last_update_ms: 1,
            start_ms: 1,
            pending,
        }
    }

    /// Verification (a Produce before v12) reads the installed state and, as Kafka's
    /// `handleVerifyPartitionsInTransaction`, does not refuse because another change of the
    /// same transaction (AddOffsetsToTxn, a second AddPartitionsToTxn) is being written:
    /// librdkafka sends those concurrently with its Produce.
    #[test]
    fn verification_ignores_a_state_change_in_flight() {
        let parts = vec![("out".to_string(), 0), ("out".to_string(), 1)];
        let none = vec![ErrorCode::NONE, ErrorCode::INVALID_TXN_STATE];
        assert_eq!(
            Coordinator::verify(&ongoing(&[("out", 0)], true), 7, 3, &parts),
            none
        );
        assert_eq!(
            Coordinator::verify(&ongoing(&[("out", 0)], false), 7, 3, &parts),
            none
        );
        // A decided transaction: retriable; a stale epoch or another producer: refused.
        let mut decided = ongoing(&[("out", 0), ("out", 1)], false);
        decided.state = TxnState::PrepareCommit;
        assert_eq!(
            Coordinator::verify(&decided, 7, 3, &parts),
            vec![ErrorCode::CONCURRENT_TRANSACTIONS; 2]
        );
        let m = ongoing(&[("out", 0), ("out", 1)], true);
        assert_eq!(
            Coordinator::verify(&m, 7, 2, &parts),
            vec![ErrorCode::PRODUCER_FENCED; 2]
        );
        assert_eq!(
            Coordinator::verify(&m, 8, 3, &parts),
            vec![ErrorCode::INVALID_PRODUCER_ID_MAPPING; 2]
        );
        // No transaction yet: nothing was added.
        let mut empty = ongoing(&[], false);
        empty.state = TxnState::Empty;
        assert_eq!(
            Coordinator::verify(&empty, 7, 3, &parts[..1]),
            vec![ErrorCode::INVALID_TXN_STATE]
        );
    }
}
