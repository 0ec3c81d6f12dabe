//! Transaction APIs: AddPartitionsToTxn (the client form v0–v3 and the batched broker form
//! v4+), AddOffsetsToTxn, TxnOffsetCommit, EndTxn, WriteTxnMarkers, DescribeTransactions,
//! ListTransactions and DescribeProducers. Requests for a transactional id go to its
//! coordinator shard (`shard.txn`); offsets to the group's coordinator; markers and producer
//! state to each partition's owner.

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_transactions_response::{
    TopicData, TransactionState as DescribedState,
};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};

use super::{sb, Request};
use crate::error_code::ErrorCode;
use crate::group::records::CommittedOffset;
use crate::group::{GroupOp, GroupReply, OFFSETS_TOPIC};
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::MarkerPart;
use crate::txn::{TxnOp, TxnReply, TxnState};

/// Before these versions clients do not know PRODUCER_FENCED: Kafka answers
/// INVALID_PRODUCER_EPOCH instead (KIP-588).
pub(crate) fn fenced_for_version(
    code: ErrorCode,
    version: i16,
    first_with_fenced: i16,
) -> ErrorCode {
    if code == ErrorCode::PRODUCER_FENCED && version < first_with_fenced {
        ErrorCode::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

/// Logs a refused transactional request (bad input or a fenced producer): one INFO line.
fn log_refused(rq: &Request<'_>, api: &str, transactional_id: &str, code: ErrorCode) {
    if !code.is_none() && code != ErrorCode::CONCURRENT_TRANSACTIONS {
        tracing::info!(
            client_id = rq.client_id,
            api,
            transactional_id,
            error_code = code.name(),
            "transactional request refused"
        );
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Adds partitions of one transaction: checks the topics exist (unknown ones fail with
/// UNKNOWN_TOPIC_OR_PARTITION, the others with OPERATION_NOT_ATTEMPTED, as Kafka), then asks
/// the coordinator. Returns per-topic results.
async fn add_one(
    rq: &Request<'_>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let meta = rq.shard.metadata();
    // Kafka: the client form (v0–v3) needs WRITE on the transactional id and on each topic
    // (internal topics are never granted); the broker form was authorized as CLUSTER_ACTION.
    let client = rq.version <= 3;
    let id_denied = client
        && !rq.authorized(
            AclOperation::Write,
            ResourceType::TransactionalId,
            transactional_id,
        );
    let mut parts = Vec::new();
    let mut unknown = Vec::new();
    let mut denied = Vec::new();
    for t in topics {
        let name = t.name.as_str();
        let topic_denied = client
            && !id_denied
            && (name == OFFSETS_TOPIC
                || name == crate::txn::TRANSACTION_STATE_TOPIC
                || !rq.authorized(AclOperation::Write, ResourceType::Topic, name));
        let count = meta.topics.get(name).map_or(0, |m| m.partitions);
        for &p in &t.partitions {
            if id_denied || topic_denied {
                denied.push((t.name.to_string(), p));
            } else if p >= 0 && p < count {
                parts.push((t.name.to_string(), p));
            } else {
                unknown.push((t.name.to_string(), p));
            }
        }
    }
    let codes: Vec<((String, i32), ErrorCode)> = if id_denied {
        denied
            .into_iter()
            .map(|p| (p, ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED))
            .collect()
    } else if !unknown.is_empty() || !denied.is_empty() {
        log_refused(
            rq,
            "AddPartitionsToTxn",
            transactional_id,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        );
        denied
            .into_iter()
            .map(|p| (p, ErrorCode::TOPIC_AUTHORIZATION_FAILED))
            .chain(
                unknown
                    .into_iter()
                    .map(|p| (p, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)),
            )
            .chain(
                parts
                    .into_iter()
                    .map(|p| (p, ErrorCode::OPERATION_NOT_ATTEMPTED)),
            )
            .collect()
    } else {
        // The broker form's adds come from another broker's Produce (transactions v2) or
        // TxnOffsetCommit: they may wait for the previous transaction to complete, as that
        // broker's own coordinator would let them.
        let settle_wait_ms = if rq.version >= 4 && !verify_only {
            rq.shard.config.txn.add_partitions_wait_max_ms
        } else {
            0
        };
        let op = TxnOp::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            partitions: parts.clone(),
            verify_only,
            settle_wait_ms,
        };
        let codes = match rq.shard.txn(transactional_id, op).await {
            Some(TxnReply::Partitions(c)) if c.len() == parts.len() => c,
            _ => vec![ErrorCode::COORDINATOR_NOT_AVAILABLE; parts.len()],
        };
        if let Some(c) = codes.iter().find(|c| !c.is_none()) {
            log_refused(rq, "AddPartitionsToTxn", transactional_id, *c);
        }
        parts.into_iter().zip(codes).collect()
    };
    let mut out: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
    for ((topic, p), code) in codes {
        let code = fenced_for_version(code, rq.version, 2);
        let r = AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(p)
            .with_partition_error_code(code.code());
        match out.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.results_by_partition.push(r),
            None => out.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_results_by_partition(vec![r]),
            ),
        }
    }
    out
}

/// Answers AddPartitionsToTxn v0–v5 (v4+: several transactions, `verify_only`).
pub async fn add_partitions(
    rq: &Request<'_>,
    req: AddPartitionsToTxnRequest,
) -> Result<AddPartitionsToTxnResponse, ProtocolError> {
    if rq.version <= 3 {
        let results = add_one(
            rq,
            req.v3_and_below_transactional_id.as_str(),
            req.v3_and_below_producer_id.0,
            req.v3_and_below_producer_epoch,
            &req.v3_and_below_topics,
            false,
        )
        .await;
        return Ok(
            AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
        );
    }
    // The broker form (v4+) comes from brokers: CLUSTER_ACTION on the cluster, as Kafka.
    if !rq.authorized_cluster(AclOperation::ClusterAction) {
        return Ok(AddPartitionsToTxnResponse::default()
            .with_error_code(ErrorCode::CLUSTER_AUTHORIZATION_FAILED.code()));
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let results = add_one(
            rq,
            t.transactional_id.as_str(),
            t.producer_id.0,
            t.producer_epoch,
            &t.topics,
            t.verify_only,
        )
        .await;
        out.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results),
        );
    }
    Ok(AddPartitionsToTxnResponse::default().with_results_by_transaction(out))
}

/// Answers AddOffsetsToTxn v0–v4: adds the group's `__consumer_offsets` partition.
pub async fn add_offsets(
    rq: &Request<'_>,
    req: AddOffsetsToTxnRequest,
) -> Result<AddOffsetsToTxnResponse, ProtocolError> {
    let id = req.transactional_id.to_string();
    // Kafka: WRITE on the transactional id, then READ on the group.
    let code = if !rq.authorized(AclOperation::Write, ResourceType::TransactionalId, &id) {
        ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else if !rq.authorized(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.as_str(),
    ) {
        ErrorCode::GROUP_AUTHORIZATION_FAILED
    } else if req.group_id.is_empty() {
        ErrorCode::INVALID_GROUP_ID
    } else {
        let partition = rq.shard.groups.partition_of(req.group_id.as_str());
        let op = TxnOp::AddPartitions {
            transactional_id: id.clone(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            partitions: vec![(OFFSETS_TOPIC.to_string(), partition)],
            verify_only: false,
            settle_wait_ms: 0,
        };
        match rq.shard.txn(&id, op).await {
            Some(TxnReply::Partitions(c)) => c.first().copied().unwrap_or(ErrorCode::NONE),
            _ => ErrorCode::COORDINATOR_NOT_AVAILABLE,
        }
    };
    log_refused(rq, "AddOffsetsToTxn", &id, code);
    let code = fenced_for_version(code, rq.version, 2);
    Ok(AddOffsetsToTxnResponse::default().with_error_code(code.code()))
}

/// Answers TxnOffsetCommit v0–v5: the offsets go to the group's coordinator, held there
/// until the transaction's marker (generation and member checked as Kafka does from v3).
pub async fn txn_offset_commit(
    rq: &Request<'_>,
    req: TxnOffsetCommitRequest,
) -> Result<TxnOffsetCommitResponse, ProtocolError> {
    let shard = rq.shard;
    let meta = shard.metadata();
    let ts = now_ms();
    // Kafka: WRITE on the transactional id, READ on the group (each failing every partition),
    // then READ on each topic.
    let whole = if !rq.authorized(
        AclOperation::Write,
        ResourceType::TransactionalId,
        req.transactional_id.as_str(),
    ) {
        Some(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    } else if !rq.authorized(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.as_str(),
    ) {
        Some(ErrorCode::GROUP_AUTHORIZATION_FAILED)
    } else {
        None
    };
    let mut offsets = Vec::new();
    let mut slots = Vec::new();
    for t in &req.topics {
        let denied = whole.or_else(|| {
            (!rq.authorized(AclOperation::Read, ResourceType::Topic, t.name.as_str()))
                .then_some(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
        });
        let count = meta.topics.get(t.name.as_str()).map_or(0, |m| m.partitions);
        for p in &t.partitions {
            if let Some(code) = denied {
                slots.push(Err(code));
            } else if p.partition_index >= 0 && p.partition_index < count {
                offsets.push((
                    t.name.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        commit_timestamp: ts,
                    },
                ));
                slots.push(Ok(offsets.len() - 1));
            } else {
                slots.push(Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
            }
        }
    }
    let group = req.group_id.to_string();
    let n = offsets.len();
    // Transactions v2 (v5+): no AddOffsetsToTxn before; the offsets partition is added here.
    // In a cluster the transaction's coordinator may be another broker (asked with
    // AddPartitionsToTxn v5, as Kafka's group coordinator does).
    let added = if rq.version >= 5 && n > 0 {
        shard
            .add_partitions_anywhere(
                req.transactional_id.as_str(),
                req.producer_id.0,
                req.producer_epoch,
                vec![(OFFSETS_TOPIC.to_string(), shard.groups.partition_of(&group))],
                false,
            )
            .await
            .first()
            .copied()
            .unwrap_or(ErrorCode::NONE)
    } else {
        ErrorCode::NONE
    };
    let codes = if n == 0 {
        Vec::new()
    } else if !added.is_none() {
        vec![added.code(); n]
    } else {
        let op = GroupOp::TxnCommit {
            group: group.clone(),
            producer_id: req.producer_id.0,
            producer_epoch: req.producer_epoch,
            generation: req.generation_id,
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            offsets,
        };
        match shard.group(&group, op).await {
            Some(GroupReply::Commit(c)) => c,
            _ => vec![ErrorCode::COORDINATOR_NOT_AVAILABLE.code(); n],
        }
    };
    if let Some(c) = codes.iter().find(|c| **c != 0) {
        log_refused(
            rq,
            "TxnOffsetCommit",
            req.transactional_id.as_str(),
            ErrorCode::from_code(*c),
        );
    }
    let mut slot = slots.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = match slot.next() {
                        Some(Ok(i)) => codes
                            .get(i)
                            .copied()
                            .map(ErrorCode::from_code)
                            .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE),
                        Some(Err(code)) => code,
                        None => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(fenced_for_version(code, rq.version, 2).code())
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    Ok(TxnOffsetCommitResponse::default().with_topics(topics))
}

/// Answers EndTxn v0–v5: the outcome is durable (Prepare record) before the answer; the
/// markers follow. v5 is transactions v2: the epoch is bumped, and answered.
pub async fn end_txn(
    rq: &Request<'_>,
    req: EndTxnRequest,
) -> Result<EndTxnResponse, ProtocolError> {
    let id = req.transactional_id.to_string();
    // Kafka: WRITE on the transactional id.
    if !rq.authorized(AclOperation::Write, ResourceType::TransactionalId, &id) {
        return Ok(EndTxnResponse::default()
            .with_error_code(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1));
    }
    let op = TxnOp::EndTxn {
        transactional_id: id.clone(),
        producer_id: req.producer_id.0,
        producer_epoch: req.producer_epoch,
        commit: req.committed,
        v2: rq.version >= 5,
    };
    let (code, pid, epoch) = match rq.shard.txn(&id, op).await {
        Some(TxnReply::Ended {
            error_code,
            producer_id,
            producer_epoch,
        }) => (error_code, producer_id, producer_epoch),
        _ => (ErrorCode::COORDINATOR_NOT_AVAILABLE, -1, -1),
    };
    log_refused(rq, "EndTxn", &id, code);
    let code = fenced_for_version(code, rq.version, 2);
    Ok(EndTxnResponse::default()
        .with_error_code(code.code())
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch))
}

/// Answers WriteTxnMarkers v1: each marker is a control batch appended (durably) to each of
/// its partitions (in a cluster: those this broker leads; the others are
/// NOT_LEADER_OR_FOLLOWER, and the coordinator retries them at their leader).
pub async fn write_txn_markers(
    rq: &Request<'_>,
    req: WriteTxnMarkersRequest,
) -> Result<WriteTxnMarkersResponse, ProtocolError> {
    let meta = rq.shard.metadata();
    // Kafka: CLUSTER_ACTION on the cluster, or every partition is CLUSTER_AUTHORIZATION_FAILED.
    let cluster_ok = rq.authorized_cluster(AclOperation::ClusterAction);
    let mut results = Vec::with_capacity(req.markers.len());
    for m in &req.markers {
        let mut parts = Vec::new();
        for t in &m.topics {
            for &p in &t.partition_indexes {
                parts.push(MarkerPart {
                    topic: t.name.to_string(),
                    partition: p,
                    producer_id: m.producer_id.0,
                    producer_epoch: m.producer_epoch,
                    commit: m.transaction_result,
                    coordinator_epoch: m.coordinator_epoch,
                    // WriteTxnMarkers v1 carries no transaction version: not strict, as
                    // Kafka's admin abort (`kafka-transactions abort`), unless a shardlog
                    // coordinator tagged it as the end of a transactions-v2 transaction.
                    transaction_v2: crate::shard::marker_is_v2(m),
                });
            }
        }
        let known: Vec<bool> = parts
            .iter()
            .map(|p| {
                cluster_ok
                    && meta
                        .topics
                        .get(&p.topic)
                        .is_some_and(|t| p.partition >= 0 && p.partition < t.partitions)
            })
            .collect();
        let to_write: Vec<MarkerPart> = parts
            .iter()
            .zip(&known)
            .filter(|(_, k)| **k)
            .map(|(p, _)| p.clone())
            .collect();
        let mut written = rq.shard.write_markers(to_write).await.into_iter();
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for (p, k) in parts.iter().zip(known) {
            let code = if k {
                written.next().unwrap_or(ErrorCode::NOT_LEADER_OR_FOLLOWER)
            } else if !cluster_ok {
                ErrorCode::CLUSTER_AUTHORIZATION_FAILED
            } else {
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
            };
            if !code.is_none() {
                tracing::info!(topic = %p.topic, partition = p.partition, producer_id = p.producer_id, error_code = code.name(), "transaction marker refused");
            }
            let r = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(p.partition)
                .with_error_code(code.code());
            match topics.iter_mut().find(|t| t.name.as_str() == p.topic) {
                Some(t) => t.partitions.push(r),
                None => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(TopicName(sb(&p.topic)))
                        .with_partitions(vec![r]),
                ),
            }
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    Ok(WriteTxnMarkersResponse::default().with_markers(results))
}

/// Answers DescribeTransactions v0.
pub async fn describe_transactions(
    rq: &Request<'_>,
    req: DescribeTransactionsRequest,
) -> Result<DescribeTransactionsResponse, ProtocolError> {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in &req.transactional_ids {
        // Kafka: DESCRIBE on the transactional id; topics without DESCRIBE are left out.
        if !rq.authorized(
            AclOperation::Describe,
            ResourceType::TransactionalId,
            id.as_str(),
        ) {
            states.push(
                DescribedState::default()
                    .with_error_code(ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED.code())
                    .with_transactional_id(id.clone()),
            );
            continue;
        }
        let d = match rq
            .shard
            .txn(id.as_str(), TxnOp::Describe(vec![id.to_string()]))
            .await
        {
            Some(TxnReply::Described(mut d)) if d.len() == 1 => d.pop(),
            _ => None,
        };
        let s = match d {
            Some(d) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (t, p) in d.partitions {
                    if !rq.authorized_quiet(AclOperation::Describe, ResourceType::Topic, &t) {
                        continue;
                    }
                    match topics.iter_mut().find(|x| x.topic.as_str() == t) {
                        Some(x) => x.partitions.push(p),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(sb(&t)))
                                .with_partitions(vec![p]),
                        ),
                    }
                }
                DescribedState::default()
                    .with_error_code(d.error_code.code())
                    .with_transactional_id(id.clone())
                    .with_transaction_state(sb(d.state))
                    .with_transaction_timeout_ms(d.timeout_ms)
                    .with_transaction_start_time_ms(d.start_ms)
                    .with_producer_id(ProducerId(d.producer_id))
                    .with_producer_epoch(d.producer_epoch)
                    .with_topics(topics)
            }
            None => DescribedState::default()
                .with_error_code(ErrorCode::COORDINATOR_NOT_AVAILABLE.code())
                .with_transactional_id(id.clone()),
        };
        states.push(s);
    }
    Ok(DescribeTransactionsResponse::default().with_transaction_states(states))
}

/// Kafka's transaction state names (ListTransactions filters).
const STATE_NAMES: &[TxnState] = &[
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
    TxnState::Dead,
    TxnState::PrepareEpochFence,
];

/// Answers ListTransactions v0–v2 (state and producer id filters; the v1 duration filter and
/// the v2 id pattern are applied here).
pub async fn list_transactions(
    rq: &Request<'_>,
    req: ListTransactionsRequest,
) -> Result<ListTransactionsResponse, ProtocolError> {
    let states: Vec<String> = req.state_filters.iter().map(|s| s.to_string()).collect();
    let unknown: Vec<_> = req
        .state_filters
        .iter()
        .filter(|s| !STATE_NAMES.iter().any(|k| k.name() == s.as_str()))
        .cloned()
        .collect();
    let pids: Vec<i64> = req.producer_id_filters.iter().map(|p| p.0).collect();
    let pattern = match req
        .transactional_id_pattern
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::info!(client_id = rq.client_id, pattern = p, error = %e, "ListTransactions refused: bad pattern");
                return Ok(ListTransactionsResponse::default()
                    .with_error_code(ErrorCode::INVALID_REQUEST.code()));
            }
        },
        None => None,
    };
    let replies = rq
        .shard
        .txn_everywhere(|| TxnOp::List {
            states: states.clone(),
            producer_ids: pids.clone(),
        })
        .await;
    let now = now_ms();
    let mut listed = Vec::new();
    for r in replies {
        if let TxnReply::Listed(l) = r {
            for (id, pid, state, start_ms) in l {
                if pattern.as_ref().is_some_and(|re| !re.is_match(&id)) {
                    continue;
                }
                // Kafka: only the ids the principal may DESCRIBE.
                if !rq.authorized_quiet(AclOperation::Describe, ResourceType::TransactionalId, &id)
                {
                    continue;
                }
                if req.duration_filter >= 0
                    && (start_ms < 0 || now.saturating_sub(start_ms) < req.duration_filter)
                {
                    continue;
                }
                listed.push(
                    ListedState::default()
                        .with_transactional_id(TransactionalId(sb(&id)))
                        .with_producer_id(ProducerId(pid))
                        .with_transaction_state(sb(state)),
                );
            }
        }
    }
    Ok(ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed))
}

/// Answers DescribeProducers v0: every producer with state on each partition.
pub async fn describe_producers(
    rq: &Request<'_>,
    req: DescribeProducersRequest,
) -> Result<DescribeProducersResponse, ProtocolError> {
    let meta = rq.shard.metadata();
    let mut asked = Vec::new();
    for t in &req.topics {
        // Kafka: READ on the topic, whether it exists or not.
        let allowed = rq.authorized(AclOperation::Read, ResourceType::Topic, t.name.as_str());
        let count = meta.topics.get(t.name.as_str()).map_or(0, |m| m.partitions);
        for &p in &t.partition_indexes {
            let state = match allowed {
                false => Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED),
                true if p >= 0 && p < count => Ok(()),
                true => Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
            };
            asked.push((t.name.to_string(), p, state));
        }
    }
    let known: Vec<(String, i32)> = asked
        .iter()
        .filter(|a| a.2.is_ok())
        .map(|a| (a.0.clone(), a.1))
        .collect();
    let mut found = rq.shard.describe_producers(known).await.into_iter();
    let mut topics: Vec<TopicResponse> = Vec::new();
    for (topic, p, state) in asked {
        let result = match state {
            Ok(()) => found
                .next()
                .unwrap_or(Err(ErrorCode::NOT_LEADER_OR_FOLLOWER)),
            Err(code) => Err(code),
        };
        let r = match result {
            Ok(producers) => PartitionResponse::default()
                .with_partition_index(p)
                .with_active_producers(
                    producers
                        .into_iter()
                        .map(|d| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(d.producer_id))
                                .with_producer_epoch(d.producer_epoch as i32)
                                .with_last_sequence(d.last_sequence)
                                .with_last_timestamp(-1)
                                .with_coordinator_epoch(-1)
                                .with_current_txn_start_offset(d.current_txn_start_offset)
                        })
                        .collect(),
                ),
            Err(code) => PartitionResponse::default()
                .with_partition_index(p)
                .with_error_code(code.code()),
        };
        match topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(r),
            None => topics.push(
                TopicResponse::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_partitions(vec![r]),
            ),
        }
    }
    Ok(DescribeProducersResponse::default().with_topics(topics))
}
