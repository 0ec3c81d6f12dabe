//! The group coordinator of one shard: the classic group state machine
//! (Empty → PreparingRebalance → CompletingRebalance → Stable) and committed offsets.
//!
//! Only the owning shard touches a group. Every method runs its state changes synchronously
//! (no `RefCell` borrow is held across an `.await`); waiting JoinGroup and SyncGroup requests
//! park on oneshot channels that the state machine completes. A ticker expires members whose
//! session ran out and completes rebalances whose deadline passed, so no request hangs.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::records::{CommittedOffset, OffsetsRecord, StoredGroup, StoredMember};
use super::OFFSETS_TOPIC;
use crate::error_code::ErrorCode;
use crate::storage::ShardStorage;

/// Group settings (Kafka's names).
#[derive(Clone, Debug)]
pub struct GroupConfig {
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: u64,
    /// `offsets.topic.num.partitions`.
    pub offsets_partitions: i32,
    /// `offsets.topic.segment.bytes`: segment size of `__consumer_offsets` (compacted, so
    /// the cleaner can drop old commits only from rolled segments).
    pub offsets_segment_bytes: u64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            offsets_partitions: 8,
            offsets_segment_bytes: 104_857_600,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heartbeat: Instant,
    join_waiter: Option<(i16, oneshot::Sender<JoinGroupResponse>)>,
    sync_waiter: Option<oneshot::Sender<SyncGroupResponse>>,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

struct Group {
    state: State,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, with the time they expire.
    pending: HashMap<String, Instant>,
    /// When the current rebalance gives up on members that have not rejoined.
    rebalance_deadline: Option<Instant>,
    /// A rebalance that started from an empty group holds its join phase open until then
    /// (`group.initial.rebalance.delay.ms`), so members starting together join one generation.
    initial_delay_until: Option<Instant>,
    offsets: HashMap<(String, i32), CommittedOffset>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: State::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
            offsets: HashMap::new(),
        }
    }

    /// The member id a static member (`group.instance.id`) currently has.
    fn static_member(&self, instance_id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|(_, m)| m.group_instance_id.as_deref() == Some(instance_id))
            .map(|(id, _)| id.as_str())
    }

    /// Kafka's `validateMember`: a request naming a static member's instance id must carry
    /// that member's current id, else FENCED_INSTANCE_ID (another process took the instance
    /// id over and this one must stop); an unknown instance id or member id is
    /// UNKNOWN_MEMBER_ID.
    fn validate_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
        operation: &str,
        group: &str,
    ) -> Result<(), ErrorCode> {
        if let Some(iid) = instance_id {
            match self.static_member(iid) {
                None => return Err(ErrorCode::UNKNOWN_MEMBER_ID),
                Some(current) if current != member_id => {
                    tracing::info!(
                        group,
                        member = member_id,
                        instance = iid,
                        current,
                        operation,
                        "static member fenced by a newer member with its instance id"
                    );
                    return Err(ErrorCode::FENCED_INSTANCE_ID);
                }
                Some(_) => {}
            }
        }
        if self.members.contains_key(member_id) {
            Ok(())
        } else {
            Err(ErrorCode::UNKNOWN_MEMBER_ID)
        }
    }

    /// The protocol the next generation would use, chosen as Kafka chooses it
    /// (`ClassicGroup.selectProtocol`): among the protocols every member supports, each member
    /// votes for the first of its own list, and the most votes win (a tie, which Kafka leaves
    /// to hash order, goes to the earlier in the first member's list).
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let supported_by_all = |p: &str| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == p))
        };
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|p| supported_by_all(p))
            .collect();
        let votes = |p: &str| {
            self.members
                .values()
                .filter(|m| {
                    m.protocols
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .find(|n| candidates.contains(n))
                        == Some(p)
                })
                .count()
        };
        // max_by_key keeps the last of equal maxima: reverse, so the earliest wins a tie.
        candidates
            .iter()
            .rev()
            .max_by_key(|p| votes(p))
            .map(|p| p.to_string())
    }

    fn stored(&self) -> StoredGroup {
        let protocol = self.protocol.clone().unwrap_or_default();
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// A group request routed to the coordinator shard (decoded request structs are `Send`).
pub enum GroupOp {
    /// JoinGroup, with its version and the client's id and host.
    Join(JoinGroupRequest, i16, String, String),
    /// SyncGroup.
    Sync(SyncGroupRequest),
    /// Heartbeat.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup with its version.
    Leave(LeaveGroupRequest, i16),
    /// OffsetCommit: group, generation, member id, instance id, [(topic, partition, commit)].
    Commit {
        /// Group id.
        group: String,
        /// Generation (-1 for a commit outside group management).
        generation: i32,
        /// Member id ("" outside group management).
        member_id: String,
        /// Static instance id.
        instance_id: Option<String>,
        /// The offsets.
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// TxnOffsetCommit: offsets held pending until the transaction's marker reaches the
    /// group's offsets partition (committed on COMMIT, dropped on ABORT).
    TxnCommit {
        /// Group id.
        group: String,
        /// The transaction's producer id.
        producer_id: i64,
        /// The transaction's producer epoch.
        producer_epoch: i16,
        /// Generation (-1 when the client sent none).
        generation: i32,
        /// Member id ("" when the client sent none).
        member_id: String,
        /// Static instance id.
        instance_id: Option<String>,
        /// The offsets.
        offsets: Vec<(String, i32, CommittedOffset)>,
    },
    /// OffsetFetch of one group: `None` = every partition with a commit; `true` =
    /// `require_stable` (partitions with an offset pending in an open transaction are listed
    /// as unstable).
    FetchOffsets(String, Option<Vec<(String, Vec<i32>)>>, bool),
    /// ListGroups on this shard.
    List,
    /// DescribeGroups (one group).
    Describe(String),
    /// DeleteGroups (one group).
    Delete(String),
    /// OffsetDelete: group, partitions.
    OffsetDelete(String, Vec<(String, i32)>),
}

/// The coordinator's answer to a [`GroupOp`].
pub enum GroupReply {
    /// To Join.
    Join(JoinGroupResponse),
    /// To Sync.
    Sync(SyncGroupResponse),
    /// To Heartbeat: an error code.
    Heartbeat(ErrorCode),
    /// To Leave.
    Leave(LeaveGroupResponse),
    /// To Commit: the error code of each offset, in order.
    Commit(Vec<i16>),
    /// To FetchOffsets: group error, (topic, partition, offset or none), and with
    /// `require_stable` the partitions whose offset is pending in an open transaction
    /// (UNSTABLE_OFFSET_COMMIT).
    Offsets(
        ErrorCode,
        Vec<(String, i32, Option<CommittedOffset>)>,
        Vec<(String, i32)>,
    ),
    /// To List: (group, protocol type, state).
    List(Vec<(String, String, String)>),
    /// To Describe.
    Describe(DescribedGroup),
    /// To Delete or OffsetDelete: an error code per item (one for Delete).
    Codes(Vec<i16>),
}

/// An offset committed inside a transaction, waiting for the transaction's marker.
#[derive(Clone, Debug)]
struct PendingTxnOffset {
    group: String,
    topic: String,
    partition: i32,
    offset: CommittedOffset,
}

/// The group coordinator of one shard.
pub struct Coordinator {
    config: GroupConfig,
    /// Partitions of `__consumer_offsets` as created (may differ from the config default).
    partitions: std::cell::Cell<i32>,
    storage: Rc<ShardStorage>,
    groups: RefCell<HashMap<String, Group>>,
    /// Offsets committed inside open transactions, by producer id (in commit order).
    pending_txn: RefCell<HashMap<i64, Vec<PendingTxnOffset>>>,
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Coordinator {
    /// A coordinator with no groups, writing to `storage`.
    pub fn new(config: GroupConfig, storage: Rc<ShardStorage>) -> Rc<Self> {
        Rc::new(Coordinator {
            partitions: std::cell::Cell::new(config.offsets_partitions),
            config,
            storage,
            groups: RefCell::new(HashMap::new()),
            pending_txn: RefCell::new(HashMap::new()),
        })
    }

    /// The offsets partition of a group.
    pub fn partition_of(&self, group: &str) -> i32 {
        super::offsets_partition(group, self.partitions.get())
    }

    /// Sets the partition count of `__consumer_offsets` found at start.
    pub fn set_partitions(&self, n: i32) {
        self.partitions.set(n.max(1));
    }

    /// Replays one owned `__consumer_offsets` partition into memory (at start).
    pub async fn replay(&self, partition: i32) -> Result<usize, crate::storage::StorageError> {
        let (start, end) = self.storage.offsets(OFFSETS_TOPIC, partition)?;
        let mut next = start;
        let mut applied = 0;
        while next < end {
            let data = self
                .storage
                .read(OFFSETS_TOPIC, partition, next, 1 << 20)
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
                at += h.size_bytes();
            }
            let sets =
                kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf).map_err(|e| {
                    crate::storage::StorageError::CorruptLog {
                        path: format!("{OFFSETS_TOPIC}-{partition}").into(),
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
                if r.control {
                    // A transaction marker: its producer's pending offsets here are settled.
                    let commit = key.len() >= 4
                        && i16::from_be_bytes([key[2], key[3]]) == crate::storage::CONTROL_COMMIT;
                    self.settle_txn(partition, r.producer_id, commit);
                    continue;
                }
                match OffsetsRecord::decode(key, r.value) {
                    Ok(OffsetsRecord::Offset {
                        group,
                        topic,
                        partition: p,
                        value: Some(offset),
                    }) if r.transactional => {
                        self.pending_txn
                            .borrow_mut()
                            .entry(r.producer_id)
                            .or_default()
                            .push(PendingTxnOffset {
                                group,
                                topic,
                                partition: p,
                                offset,
                            });
                        applied += 1;
                    }
                    Ok(rec) => {
                        self.apply_record(rec);
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

    fn apply_record(&self, rec: OffsetsRecord) {
        let mut groups = self.groups.borrow_mut();
        match rec {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                let g = groups.entry(group).or_insert_with(Group::new);
                match value {
                    Some(v) => {
                        g.offsets.insert((topic, partition), v);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            OffsetsRecord::Group { group, value } => match value {
                None => {
                    groups.remove(&group);
                }
                Some(stored) => {
                    let g = groups.entry(group).or_insert_with(Group::new);
                    g.protocol_type = Some(stored.protocol_type);
                    g.generation = stored.generation;
                    g.protocol = stored.protocol.clone();
                    g.leader = stored.leader;
                    g.members.clear();
                    let protocol = stored.protocol.unwrap_or_default();
                    for m in stored.members {
                        g.members.insert(
                            m.member_id,
                            Member {
                                group_instance_id: m.group_instance_id,
                                client_id: m.client_id,
                                client_host: m.client_host,
                                session_timeout_ms: m.session_timeout_ms,
                                rebalance_timeout_ms: m.rebalance_timeout_ms,
                                protocols: vec![(protocol.clone(), m.subscription)],
                                assignment: m.assignment,
                                last_heartbeat: Instant::now(),
                                join_waiter: None,
                                sync_waiter: None,
                            },
                        );
                    }
                    g.state = if g.members.is_empty() {
                        State::Empty
                    } else {
                        State::Stable
                    };
                }
            },
        }
    }

    /// Settles the offsets a producer committed inside its transaction to groups of offsets
    /// partition `partition`: committed (COMMIT) or dropped (ABORT). Called once the
    /// transaction's marker is durable in that partition, and at replay.
    pub fn settle_txn(&self, partition: i32, producer_id: i64, commit: bool) {
        let mut pending = self.pending_txn.borrow_mut();
        let Some(list) = pending.get_mut(&producer_id) else {
            return;
        };
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(list)
            .into_iter()
            .partition(|o| self.partition_of(&o.group) == partition);
        if rest.is_empty() {
            pending.remove(&producer_id);
        } else {
            *list = rest;
        }
        if commit {
            let mut groups = self.groups.borrow_mut();
            for o in mine {
                groups
                    .entry(o.group)
                    .or_insert_with(Group::new)
                    .offsets
                    .insert((o.topic, o.partition), o.offset);
            }
        }
    }

    /// Whether an open transaction holds an offset of this group's partition.
    fn has_pending_txn_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.pending_txn
            .borrow()
            .values()
            .flatten()
            .any(|o| o.group == group && o.topic == topic && o.partition == partition)
    }

    /// Appends records for one group durably to its offsets partition.
    async fn persist(
        &self,
        group: &str,
        recs: &[OffsetsRecord],
    ) -> Result<(), crate::storage::StorageError> {
        self.persist_as(group, recs, None).await
    }

    /// [`Coordinator::persist`], as records of a transaction when `producer` (id, epoch) is
    /// given: transactional batches, appended as the coordinator's own writes (epoch checked).
    async fn persist_as(
        &self,
        group: &str,
        recs: &[OffsetsRecord],
        producer: Option<(i64, i16)>,
    ) -> Result<(), crate::storage::StorageError> {
        let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
        let ts = now_ms();
        let records: Vec<Record> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (key, value) = r.encode();
                Record {
                    transactional: producer.is_some(),
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id,
                    producer_epoch,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: -1,
                    timestamp: ts,
                    key: Some(key),
                    value,
                    headers: Default::default(),
                }
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| crate::storage::StorageError::Io(std::io::Error::other(e.to_string())))?;
        // The encoder starts a new batch whenever sequence numbers are not consecutive (they
        // are all -1 here), so the buffer may hold several batches: append each, in order,
        // with no await in between, then wait once for the last.
        let partition = self.partition_of(group);
        let mut last_offset = -1;
        for batch in crate::storage::split_batches(&buf.freeze())? {
            let info = if producer.is_some() {
                self.storage
                    .append_coordinator(OFFSETS_TOPIC, partition, batch)?
            } else {
                self.storage.append(OFFSETS_TOPIC, partition, batch)?
            };
            last_offset = info.last_offset;
        }
        self.storage
            .wait_durable(OFFSETS_TOPIC, partition, last_offset)
            .await
    }

    /// Handles one routed group operation.
    pub async fn handle(self: &Rc<Self>, op: GroupOp) -> GroupReply {
        match op {
            GroupOp::Join(req, version, client_id, client_host) => {
                let (group, member) = (req.group_id.to_string(), req.member_id.to_string());
                tracing::debug!(%group, %member, version, "join request");
                let resp = self.join(req, version, client_id, client_host).await;
                tracing::debug!(
                    %group,
                    member = %resp.member_id.as_str(),
                    error = resp.error_code,
                    generation = resp.generation_id,
                    leader = %resp.leader.as_str(),
                    "join answered"
                );
                GroupReply::Join(resp)
            }
            GroupOp::Sync(req) => {
                let (group, member) = (req.group_id.to_string(), req.member_id.to_string());
                let generation = req.generation_id;
                tracing::debug!(%group, %member, generation, "sync request");
                let resp = self.sync(req).await;
                tracing::debug!(%group, %member, error = resp.error_code, "sync answered");
                GroupReply::Sync(resp)
            }
            GroupOp::Heartbeat(req) => {
                let code = self.heartbeat(&req);
                tracing::debug!(
                    group = %req.group_id.as_str(),
                    member = %req.member_id.as_str(),
                    generation = req.generation_id,
                    error = %code,
                    "heartbeat"
                );
                GroupReply::Heartbeat(code)
            }
            GroupOp::Leave(req, version) => {
                let group = req.group_id.to_string();
                let resp = self.leave(req, version);
                tracing::debug!(%group, error = resp.error_code, "leave");
                GroupReply::Leave(resp)
            }
            GroupOp::Commit {
                group,
                generation,
                member_id,
                instance_id,
                offsets,
            } => GroupReply::Commit(
                self.commit(group, generation, member_id, instance_id, offsets)
                    .await,
            ),
            GroupOp::TxnCommit {
                group,
                producer_id,
                producer_epoch,
                generation,
                member_id,
                instance_id,
                offsets,
            } => GroupReply::Commit(
                self.txn_commit(
                    group,
                    (producer_id, producer_epoch),
                    generation,
                    member_id,
                    instance_id,
                    offsets,
                )
                .await,
            ),
            GroupOp::FetchOffsets(group, wanted, require_stable) => {
                let (code, list) = self.fetch_offsets(&group, wanted);
                let unstable = if require_stable {
                    list.iter()
                        .filter(|(t, p, _)| self.has_pending_txn_offset(&group, t, *p))
                        .map(|(t, p, _)| (t.clone(), *p))
                        .collect()
                } else {
                    Vec::new()
                };
                GroupReply::Offsets(code, list, unstable)
            }
            GroupOp::List => GroupReply::List(self.list()),
            GroupOp::Describe(group) => GroupReply::Describe(self.describe(&group)),
            GroupOp::Delete(group) => GroupReply::Codes(vec![self.delete(&group).await.code()]),
            GroupOp::OffsetDelete(group, parts) => {
                GroupReply::Codes(self.offset_delete(&group, parts).await)
            }
        }
    }

    fn join_error(code: ErrorCode, member_id: &str) -> JoinGroupResponse {
        JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            .with_member_id(sb(member_id))
    }

    async fn join(
        self: &Rc<Self>,
        req: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    ) -> JoinGroupResponse {
        let group_id = req.group_id.to_string();
        let member_id = req.member_id.to_string();
        if group_id.is_empty() {
            return Self::join_error(ErrorCode::INVALID_GROUP_ID, &member_id);
        }
        if req.session_timeout_ms < self.config.min_session_timeout_ms
            || req.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return Self::join_error(ErrorCode::INVALID_SESSION_TIMEOUT, &member_id);
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Self::join_error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &member_id);
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
        let rebalance_timeout_ms = if version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        };
        // A static member that took its place without a rebalance: its answer, and the group
        // to persist with the new member id (as Kafka does) before answering.
        let mut replaced: Option<(JoinGroupResponse, StoredGroup)> = None;
        let rx = 'rx: {
            let mut groups = self.groups.borrow_mut();
            let g = groups.entry(group_id.clone()).or_insert_with(Group::new);
            // Protocol compatibility with the current members.
            if g.state != State::Empty || !g.members.is_empty() {
                if g.protocol_type
                    .as_deref()
                    .is_some_and(|t| t != req.protocol_type.as_str())
                {
                    return Self::join_error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &member_id);
                }
                let shared = g.members.values().all(|m| {
                    m.protocols
                        .iter()
                        .any(|(n, _)| protocols.iter().any(|(p, _)| p == n))
                });
                if !shared {
                    return Self::join_error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, &member_id);
                }
            }
            let mut member_id = member_id;
            if member_id.is_empty() {
                // A static member rejoining under its instance id takes its old place.
                let static_prev = instance_id.as_ref().and_then(|iid| {
                    g.members
                        .iter()
                        .find(|(_, m)| m.group_instance_id.as_ref() == Some(iid))
                        .map(|(id, _)| id.clone())
                });
                let new_id = format!("{}-{}", client_id, uuid::Uuid::new_v4());
                if let Some(old) = static_prev {
                    // KIP-345: the newest process with an instance id replaces the member;
                    // the old one's parked requests, and every later one, get
                    // FENCED_INSTANCE_ID (see `Group::validate_member`).
                    tracing::info!(
                        group = %group_id,
                        instance = instance_id.as_deref().unwrap_or(""),
                        old = %old,
                        new = %new_id,
                        state = g.state.name(),
                        "static member replaced"
                    );
                    let mut m = g.members.remove(&old).expect("found above");
                    if let Some((_, w)) = m.join_waiter.take() {
                        let _ = w.send(Self::join_error(ErrorCode::FENCED_INSTANCE_ID, &old));
                    }
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(
                            SyncGroupResponse::default()
                                .with_error_code(ErrorCode::FENCED_INSTANCE_ID.code()),
                        );
                    }
                    m.last_heartbeat = Instant::now();
                    m.protocols = protocols.clone();
                    m.session_timeout_ms = req.session_timeout_ms;
                    m.rebalance_timeout_ms = rebalance_timeout_ms;
                    if g.leader.as_deref() == Some(old.as_str()) {
                        g.leader = Some(new_id.clone());
                    }
                    g.members.insert(new_id.clone(), m);
                    // Stable: no rebalance unless the group's protocol would change.
                    let assignment_kept =
                        g.state == State::Stable && g.select_protocol() == g.protocol;
                    if g.state == State::CompletingRebalance
                        || (g.state == State::Stable && !assignment_kept)
                    {
                        // The leader may be assigning to the old member id, or the protocol
                        // changes: start over, as Kafka does.
                        self.prepare_rebalance(g, false);
                    }
                    if assignment_kept {
                        // KIP-345: same subscription, stable group: no rebalance. The member
                        // gets the current generation and syncs to receive its assignment; a
                        // returning leader is told to skip the assignment (KIP-814, v9).
                        let is_leader = g.leader.as_deref() == Some(new_id.as_str());
                        let resp = Self::join_response(g, &new_id, version)
                            .with_skip_assignment(version >= 9 && is_leader);
                        replaced = Some((resp, g.stored()));
                        break 'rx None;
                    }
                    member_id = new_id;
                } else if version >= 4 && instance_id.is_none() {
                    let timeout = Duration::from_millis(req.session_timeout_ms as u64);
                    g.pending.insert(new_id.clone(), Instant::now() + timeout);
                    return Self::join_error(ErrorCode::MEMBER_ID_REQUIRED, &new_id);
                } else {
                    member_id = new_id;
                }
            } else if let Some(iid) = instance_id.as_deref() {
                if let Err(code) = g.validate_member(&member_id, Some(iid), "join-group", &group_id)
                {
                    return Self::join_error(code, &member_id);
                }
            } else if !g.members.contains_key(&member_id) && g.pending.remove(&member_id).is_none()
            {
                return Self::join_error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id);
            }

            let (tx, rx) = oneshot::channel();
            let existing = g.members.get_mut(&member_id);
            let changed = match existing {
                Some(m) => {
                    let changed = m.protocols != protocols;
                    m.protocols = protocols;
                    m.session_timeout_ms = req.session_timeout_ms;
                    m.rebalance_timeout_ms = rebalance_timeout_ms;
                    m.last_heartbeat = Instant::now();
                    if let Some((_, old)) = m.join_waiter.replace((version, tx)) {
                        drop(old);
                    }
                    changed
                }
                None => {
                    g.members.insert(
                        member_id.clone(),
                        Member {
                            group_instance_id: instance_id,
                            client_id,
                            client_host,
                            session_timeout_ms: req.session_timeout_ms,
                            rebalance_timeout_ms,
                            protocols,
                            assignment: Bytes::new(),
                            last_heartbeat: Instant::now(),
                            join_waiter: Some((version, tx)),
                            sync_waiter: None,
                        },
                    );
                    true
                }
            };
            if g.protocol_type.is_none() {
                g.protocol_type = Some(req.protocol_type.to_string());
            }
            let is_leader = g.leader.as_deref() == Some(member_id.as_str());
            // Kafka's rules for a member that rejoins with the same protocols: during
            // CompletingRebalance (it may have missed its JoinGroup answer) and, for a
            // follower, in Stable, it gets the current generation back; a leader rejoining a
            // stable group asks for a new assignment, so that starts a rebalance.
            let answer_current = !changed
                && match g.state {
                    State::CompletingRebalance => true,
                    State::Stable => !is_leader,
                    State::Empty | State::PreparingRebalance => false,
                };
            if g.state != State::PreparingRebalance && !answer_current {
                let initial = g.state == State::Empty;
                self.prepare_rebalance(g, initial);
            } else if answer_current {
                if let Some(m) = g.members.get_mut(&member_id) {
                    if let Some((v, w)) = m.join_waiter.take() {
                        let _ = w.send(Self::join_response(g, &member_id, v));
                    }
                }
            }
            Self::maybe_complete_join(g, Instant::now());
            Some(rx)
        };
        let Some(rx) = rx else {
            let (resp, stored) = replaced.expect("set where the block breaks with None");
            let rec = OffsetsRecord::Group {
                group: group_id.clone(),
                value: Some(stored),
            };
            if let Err(e) = self.persist(&group_id, &[rec]).await {
                tracing::warn!(group = %group_id, error = %e, "cannot persist group metadata");
            }
            return resp;
        };
        match rx.await {
            Ok(resp) => resp,
            Err(_) => Self::join_error(ErrorCode::UNKNOWN_MEMBER_ID, ""),
        }
    }

    fn prepare_rebalance(&self, g: &mut Group, initial: bool) {
        let max_rebalance = g
            .members
            .values()
            .map(|m| m.rebalance_timeout_ms.max(0) as u64)
            .max()
            .unwrap_or(0);
        let now = Instant::now();
        g.state = State::PreparingRebalance;
        g.rebalance_deadline = Some(now + Duration::from_millis(max_rebalance));
        g.initial_delay_until = initial.then(|| {
            now + Duration::from_millis(self.config.initial_rebalance_delay_ms.min(max_rebalance))
        });
        // Members parked in SyncGroup must rejoin.
        for m in g.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                let _ = w.send(
                    SyncGroupResponse::default()
                        .with_error_code(ErrorCode::REBALANCE_IN_PROGRESS.code()),
                );
            }
        }
    }

    /// Completes the join phase when every member has rejoined and no new member is pending
    /// (or the deadline passed, dropping the stragglers).
    fn maybe_complete_join(g: &mut Group, now: Instant) {
        if g.state != State::PreparingRebalance {
            return;
        }
        let deadline_passed = g.rebalance_deadline.is_none_or(|d| now >= d);
        let all_joined =
            g.members.values().all(|m| m.join_waiter.is_some()) && g.pending.is_empty();
        if g.initial_delay_until.is_some_and(|d| now < d) {
            return;
        }
        if !all_joined && !deadline_passed {
            return;
        }
        // Drop members that did not rejoin in time.
        g.members.retain(|_, m| m.join_waiter.is_some());
        g.pending.clear();
        g.rebalance_deadline = None;
        g.initial_delay_until = None;
        if g.members.is_empty() {
            g.state = State::Empty;
            g.generation += 1;
            g.leader = None;
            g.protocol = None;
            g.protocol_type = None;
            return;
        }
        g.generation += 1;
        g.protocol = g.select_protocol();
        if g.leader.as_ref().is_none_or(|l| !g.members.contains_key(l)) {
            g.leader = g.members.keys().next().cloned();
        }
        g.state = State::CompletingRebalance;
        let ids: Vec<String> = g.members.keys().cloned().collect();
        for id in ids {
            let waiter = g.members.get_mut(&id).and_then(|m| m.join_waiter.take());
            if let Some((v, w)) = waiter {
                let resp = Self::join_response(g, &id, v);
                let _ = w.send(resp);
            }
        }
    }

    fn join_response(g: &Group, member_id: &str, _version: i16) -> JoinGroupResponse {
        let protocol = g.protocol.clone().unwrap_or_default();
        let leader = g.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            g.members
                .iter()
                .map(|(id, m)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(sb(id))
                        .with_group_instance_id(m.group_instance_id.as_deref().map(sb))
                        .with_metadata(m.metadata_for(&protocol))
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .with_generation_id(g.generation)
            .with_protocol_type(g.protocol_type.as_deref().map(sb))
            .with_protocol_name(Some(sb(&protocol)))
            .with_leader(sb(&leader))
            .with_member_id(sb(member_id))
            .with_members(members)
    }

    async fn sync(self: &Rc<Self>, req: SyncGroupRequest) -> SyncGroupResponse {
        let group_id = req.group_id.to_string();
        let member_id = req.member_id.to_string();
        let err = |code| SyncGroupResponse::default().with_error_code(code);
        let (rx, persist) = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(&group_id) else {
                return err(ErrorCode::UNKNOWN_MEMBER_ID.code());
            };
            let instance_id = req.group_instance_id.as_ref().map(|s| s.as_str());
            if let Err(code) = g.validate_member(&member_id, instance_id, "sync-group", &group_id) {
                return err(code.code());
            }
            if req.generation_id != g.generation {
                return err(ErrorCode::ILLEGAL_GENERATION.code());
            }
            match g.state {
                State::Empty => return err(ErrorCode::UNKNOWN_MEMBER_ID.code()),
                State::PreparingRebalance => return err(ErrorCode::REBALANCE_IN_PROGRESS.code()),
                State::Stable => {
                    let m = &g.members[&member_id];
                    return SyncGroupResponse::default()
                        .with_protocol_type(g.protocol_type.as_deref().map(sb))
                        .with_protocol_name(g.protocol.as_deref().map(sb))
                        .with_assignment(m.assignment.clone());
                }
                State::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            if let Some(m) = g.members.get_mut(&member_id) {
                m.sync_waiter = Some(tx);
                m.last_heartbeat = Instant::now();
            }
            let mut persist = None;
            if g.leader.as_deref() == Some(member_id.as_str()) {
                let given: HashMap<String, Bytes> = req
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                    .collect();
                for (id, m) in g.members.iter_mut() {
                    m.assignment = given.get(id).cloned().unwrap_or_default();
                }
                g.state = State::Stable;
                let (pt, pn) = (g.protocol_type.clone(), g.protocol.clone());
                for m in g.members.values_mut() {
                    if let Some(w) = m.sync_waiter.take() {
                        let _ = w.send(
                            SyncGroupResponse::default()
                                .with_protocol_type(pt.as_deref().map(sb))
                                .with_protocol_name(pn.as_deref().map(sb))
                                .with_assignment(m.assignment.clone()),
                        );
                    }
                }
                persist = Some(g.stored());
            }
            (rx, persist)
        };
        if let Some(stored) = persist {
            let rec = OffsetsRecord::Group {
                group: group_id.clone(),
                value: Some(stored),
            };
            if let Err(e) = self.persist(&group_id, &[rec]).await {
                tracing::warn!(group = %group_id, error = %e, "cannot persist group metadata");
            }
        }
        rx.await
            .unwrap_or_else(|_| err(ErrorCode::REBALANCE_IN_PROGRESS.code()))
    }

    fn heartbeat(&self, req: &HeartbeatRequest) -> ErrorCode {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(req.group_id.as_str()) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        let instance_id = req.group_instance_id.as_ref().map(|s| s.as_str());
        if let Err(code) = g.validate_member(
            req.member_id.as_str(),
            instance_id,
            "heartbeat",
            req.group_id.as_str(),
        ) {
            return code;
        }
        let Some(m) = g.members.get_mut(req.member_id.as_str()) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        m.last_heartbeat = Instant::now();
        if req.generation_id != g.generation {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        match g.state {
            State::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
            State::Empty => ErrorCode::UNKNOWN_MEMBER_ID,
            _ => ErrorCode::NONE,
        }
    }

    fn leave(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(req.group_id.as_str()) else {
            return LeaveGroupResponse::default()
                .with_error_code(ErrorCode::UNKNOWN_MEMBER_ID.code());
        };
        let mut results = Vec::new();
        let mut removed_any = false;
        for (member_id, instance_id) in &leaving {
            // Kafka's rule: a static member leaves by its instance id; a member id given with
            // it must be the current one.
            let id = match instance_id.as_deref() {
                Some(iid) => match g.static_member(iid) {
                    Some(current) if !member_id.is_empty() && current != member_id => {
                        tracing::info!(
                            group = %req.group_id.as_str(),
                            member = %member_id,
                            instance = iid,
                            current,
                            "leave of a fenced static member refused"
                        );
                        results.push(
                            MemberResponse::default()
                                .with_member_id(sb(member_id))
                                .with_group_instance_id(Some(sb(iid)))
                                .with_error_code(ErrorCode::FENCED_INSTANCE_ID.code()),
                        );
                        continue;
                    }
                    current => current.map(str::to_string),
                },
                None => Some(member_id.clone()),
            };
            let code = match id.and_then(|id| g.members.remove(&id).map(|m| (id, m))) {
                Some((_, m)) => {
                    if let Some((_, w)) = m.join_waiter {
                        drop(w);
                    }
                    removed_any = true;
                    ErrorCode::NONE.code()
                }
                None => ErrorCode::UNKNOWN_MEMBER_ID.code(),
            };
            results.push(
                MemberResponse::default()
                    .with_member_id(sb(member_id))
                    .with_group_instance_id(instance_id.as_deref().map(sb))
                    .with_error_code(code),
            );
        }
        if removed_any {
            self.member_removed(g);
        }
        if version >= 3 {
            LeaveGroupResponse::default().with_members(results)
        } else {
            let code = results
                .first()
                .map_or(ErrorCode::NONE.code(), |r| r.error_code);
            LeaveGroupResponse::default().with_error_code(code)
        }
    }

    /// After members left or expired: rebalance the rest, or empty the group.
    fn member_removed(&self, g: &mut Group) {
        if g.members.is_empty() && g.pending.is_empty() {
            g.state = State::Empty;
            g.generation += 1;
            g.leader = None;
            g.protocol = None;
            g.protocol_type = None;
            g.rebalance_deadline = None;
            return;
        }
        match g.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(g, false),
            State::PreparingRebalance => Self::maybe_complete_join(g, Instant::now()),
            State::Empty => {}
        }
    }

    async fn commit(
        &self,
        group: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Vec<i16> {
        let fail = |code: i16| vec![code; offsets.len()];
        {
            let mut groups = self.groups.borrow_mut();
            if group.is_empty() {
                return fail(ErrorCode::INVALID_GROUP_ID.code());
            }
            let g = groups.entry(group.clone()).or_insert_with(Group::new);
            // Kafka's `validateOffsetCommit` (classic group).
            if generation < 0 && g.state == State::Empty {
                // Outside group management (admin client, assign()): into an empty group.
            } else if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
                if let Err(code) =
                    g.validate_member(&member_id, instance_id.as_deref(), "offset-commit", &group)
                {
                    return fail(code.code());
                }
                if let Some(m) = g.members.get_mut(&member_id) {
                    m.last_heartbeat = Instant::now();
                }
                if generation != g.generation {
                    return fail(ErrorCode::ILLEGAL_GENERATION.code());
                }
                // A member of the current generation may commit while the group prepares a
                // rebalance (consumers commit in their revoke callbacks exactly then); only
                // between the join and sync phases, when its assignment may already have
                // changed, is the commit refused.
                if g.state == State::CompletingRebalance {
                    return fail(ErrorCode::REBALANCE_IN_PROGRESS.code());
                }
            } else if g.state != State::Empty {
                // A commit outside group management into an active group.
                return fail(ErrorCode::UNKNOWN_MEMBER_ID.code());
            }
        }
        let n = offsets.len();
        let recs: Vec<OffsetsRecord> = offsets
            .iter()
            .map(|(t, p, c)| OffsetsRecord::Offset {
                group: group.clone(),
                topic: t.clone(),
                partition: *p,
                value: Some(c.clone()),
            })
            .collect();
        if recs.is_empty() {
            return Vec::new();
        }
        if let Err(e) = self.persist(&group, &recs).await {
            tracing::warn!(%group, error = %e, "offset commit not durable");
            return fail(ErrorCode::KAFKA_STORAGE_ERROR.code());
        }
        let mut groups = self.groups.borrow_mut();
        let g = groups.entry(group).or_insert_with(Group::new);
        for (t, p, c) in offsets {
            g.offsets.insert((t, p), c);
        }
        vec![ErrorCode::NONE.code(); n]
    }

    /// TxnOffsetCommit: Kafka's member and generation checks for a transactional commit
    /// (a client without group information is accepted; no REBALANCE_IN_PROGRESS), then the
    /// offsets written as records of the transaction and held pending until its marker.
    async fn txn_commit(
        &self,
        group: String,
        producer: (i64, i16),
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        offsets: Vec<(String, i32, CommittedOffset)>,
    ) -> Vec<i16> {
        let fail = |code: i16| vec![code; offsets.len()];
        if group.is_empty() {
            return fail(ErrorCode::INVALID_GROUP_ID.code());
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(&group) else {
                return fail(ErrorCode::ILLEGAL_GENERATION.code());
            };
            if let Err(code) = g.validate_member(
                &member_id,
                instance_id.as_deref(),
                "txn-offset-commit",
                &group,
            ) {
                return fail(code.code());
            }
            if generation != g.generation {
                return fail(ErrorCode::ILLEGAL_GENERATION.code());
            }
        }
        if offsets.is_empty() {
            return Vec::new();
        }
        let n = offsets.len();
        let recs: Vec<OffsetsRecord> = offsets
            .iter()
            .map(|(t, p, c)| OffsetsRecord::Offset {
                group: group.clone(),
                topic: t.clone(),
                partition: *p,
                value: Some(c.clone()),
            })
            .collect();
        if let Err(e) = self.persist_as(&group, &recs, Some(producer)).await {
            tracing::info!(%group, producer_id = producer.0, error = %e, "transactional offset commit refused");
            return fail(e.kafka_error_code().code());
        }
        let mut pending = self.pending_txn.borrow_mut();
        let list = pending.entry(producer.0).or_default();
        for (topic, partition, offset) in offsets {
            list.push(PendingTxnOffset {
                group: group.clone(),
                topic,
                partition,
                offset,
            });
        }
        vec![ErrorCode::NONE.code(); n]
    }

    fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> (ErrorCode, Vec<(String, i32, Option<CommittedOffset>)>) {
        let groups = self.groups.borrow();
        let g = groups.get(group);
        let list = match wanted {
            Some(topics) => topics
                .into_iter()
                .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                .map(|(t, p)| {
                    let c = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                    (t, p, c)
                })
                .collect(),
            None => {
                let mut all: Vec<_> = g
                    .map(|g| {
                        g.offsets
                            .iter()
                            .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                            .collect()
                    })
                    .unwrap_or_default();
                all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                all
            }
        };
        (ErrorCode::NONE, list)
    }

    /// Every offset committed to the groups this shard coordinates, as
    /// `(group, topic, partition, offset)`, sorted. A copy for metrics (consumer-group lag):
    /// O(committed offsets), no I/O, no borrow kept.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.borrow();
        let mut out: Vec<(String, String, i32, i64)> = groups
            .iter()
            .flat_map(|(id, g)| {
                g.offsets
                    .iter()
                    .map(move |((t, p), c)| (id.clone(), t.clone(), *p, c.offset))
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn list(&self) -> Vec<(String, String, String)> {
        let groups = self.groups.borrow();
        let mut out: Vec<_> = groups
            .iter()
            .filter(|(_, g)| !g.members.is_empty() || !g.offsets.is_empty())
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_else(|| "consumer".into()),
                    g.state.name().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn describe(&self, group: &str) -> DescribedGroup {
        let groups = self.groups.borrow();
        let base = DescribedGroup::default().with_group_id(GroupId(sb(group)));
        let Some(g) = groups.get(group) else {
            return base.with_group_state(sb("Dead"));
        };
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = g
            .members
            .iter()
            .map(|(id, m)| {
                DescribedGroupMember::default()
                    .with_member_id(sb(id))
                    .with_group_instance_id(m.group_instance_id.as_deref().map(sb))
                    .with_client_id(sb(&m.client_id))
                    .with_client_host(sb(&m.client_host))
                    .with_member_metadata(m.metadata_for(&protocol))
                    .with_member_assignment(m.assignment.clone())
            })
            .collect();
        base.with_group_state(sb(g.state.name()))
            .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
            .with_protocol_data(sb(&protocol))
            .with_members(members)
    }

    async fn delete(&self, group: &str) -> ErrorCode {
        let offsets: Vec<(String, i32)> = {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(group) else {
                return ErrorCode::GROUP_ID_NOT_FOUND;
            };
            if !g.members.is_empty() || g.state != State::Empty {
                return ErrorCode::NON_EMPTY_GROUP;
            }
            g.offsets.keys().cloned().collect()
        };
        let mut recs: Vec<OffsetsRecord> = offsets
            .into_iter()
            .map(|(topic, partition)| OffsetsRecord::Offset {
                group: group.to_string(),
                topic,
                partition,
                value: None,
            })
            .collect();
        recs.push(OffsetsRecord::Group {
            group: group.to_string(),
            value: None,
        });
        if let Err(e) = self.persist(group, &recs).await {
            tracing::warn!(group, error = %e, "group delete not durable");
            return ErrorCode::KAFKA_STORAGE_ERROR;
        }
        self.groups.borrow_mut().remove(group);
        ErrorCode::NONE
    }

    async fn offset_delete(&self, group: &str, parts: Vec<(String, i32)>) -> Vec<i16> {
        let codes_out: Vec<i16> = {
            let groups = self.groups.borrow();
            let Some(g) = groups.get(group) else {
                return vec![ErrorCode::GROUP_ID_NOT_FOUND.code(); parts.len()];
            };
            // Offsets of topics the active group still subscribes to cannot be deleted; we
            // cannot read subscriptions (client-side format), so refuse while members exist.
            parts
                .iter()
                .map(|_| {
                    if g.members.is_empty() {
                        ErrorCode::NONE.code()
                    } else {
                        ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC.code()
                    }
                })
                .collect()
        };
        let recs: Vec<OffsetsRecord> = parts
            .iter()
            .zip(&codes_out)
            .filter(|(_, c)| **c == ErrorCode::NONE.code())
            .map(|((topic, partition), _)| OffsetsRecord::Offset {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
                value: None,
            })
            .collect();
        if !recs.is_empty() {
            if let Err(e) = self.persist(group, &recs).await {
                tracing::warn!(group, error = %e, "offset delete not durable");
                return vec![ErrorCode::KAFKA_STORAGE_ERROR.code(); parts.len()];
            }
            let mut groups = self.groups.borrow_mut();
            if let Some(g) = groups.get_mut(group) {
                for (p, c) in parts.iter().zip(&codes_out) {
                    if *c == ErrorCode::NONE.code() {
                        g.offsets.remove(p);
                    }
                }
            }
        }
        codes_out
    }

    /// One tick of the timers: expire members whose session ran out and pending member ids,
    /// and complete rebalances whose deadline passed. Run every ~100 ms by the shard.
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.groups.borrow_mut();
        for (id, g) in groups.iter_mut() {
            g.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| {
                    // A member parked in JoinGroup during a rebalance is alive.
                    m.join_waiter.is_none()
                        && now.duration_since(m.last_heartbeat)
                            > Duration::from_millis(m.session_timeout_ms.max(0) as u64)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for m in &expired {
                tracing::info!(group = %id, member = %m, "session expired");
                g.members.remove(m);
            }
            if !expired.is_empty() {
                self.member_removed(g);
            }
            Self::maybe_complete_join(g, now);
        }
    }

    /// Answers for a group whose coordinator is not this shard (should not happen: routing
    /// sends every group request to its coordinator).
    pub fn not_available() -> ErrorCode {
        ErrorCode::COORDINATOR_NOT_AVAILABLE
    }

    /// Error code for an unknown topic in an offset request.
    pub fn unknown_topic() -> ErrorCode {
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(protocols: &[&str], instance: Option<&str>) -> Member {
        Member {
            group_instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            last_heartbeat: Instant::now(),
            join_waiter: None,
            sync_waiter: None,
        }
    }

    fn group(members: &[(&str, &[&str], Option<&str>)]) -> Group {
        let mut g = Group::new();
        for (id, protocols, instance) in members {
            g.members
                .insert(id.to_string(), member(protocols, *instance));
        }
        g
    }

    #[test]
    fn the_protocol_is_chosen_by_the_members_votes() {
        // Only protocols every member supports count; each member votes for its first one.
        let g = group(&[
            ("a", &["range", "cooperative-sticky"], None),
            ("b", &["cooperative-sticky", "range"], None),
            ("c", &["cooperative-sticky", "range", "roundrobin"], None),
        ]);
        assert_eq!(g.select_protocol().as_deref(), Some("cooperative-sticky"));
        // A rolling upgrade's first step: the old members only know range.
        let g = group(&[
            ("a", &["range"], None),
            ("b", &["cooperative-sticky", "range"], None),
        ]);
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
        let g = group(&[("a", &["x"], None), ("b", &["y"], None)]);
        assert_eq!(g.select_protocol(), None);
    }

    #[test]
    fn static_members_are_validated_as_kafka_does() {
        let g = group(&[("m-new", &["range"], Some("i1")), ("d", &["range"], None)]);
        let check =
            |member: &str, instance: Option<&str>| g.validate_member(member, instance, "test", "g");
        assert_eq!(check("m-new", Some("i1")), Ok(()));
        assert_eq!(
            check("m-old", Some("i1")),
            Err(ErrorCode::FENCED_INSTANCE_ID)
        );
        assert_eq!(
            check("m-new", Some("i2")),
            Err(ErrorCode::UNKNOWN_MEMBER_ID)
        );
        assert_eq!(check("d", None), Ok(()));
        assert_eq!(check("gone", None), Err(ErrorCode::UNKNOWN_MEMBER_ID));
    }
}
