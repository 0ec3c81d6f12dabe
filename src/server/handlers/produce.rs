//! Produce v3–v12: batches stay `Bytes` slices of the request frame all the way to the owner
//! shard's storage engine; acks=0 gets no response, acks=1 an answer once appended, acks=-1
//! once the group commit covering the batch was fdatasynced. acks=-1 is refused with
//! NOT_ENOUGH_REPLICAS, before the append, when the partition has fewer in-sync replicas than
//! `min.insync.replicas`.

use bytes::Bytes;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, BrokerId, ProduceRequest, ProduceResponse};

use super::{sb, Request};
use crate::error_code::ErrorCode;
use crate::protocol::{decode_body, encode_response};
use crate::security::acl::{AclOperation, ResourceType};
use crate::server::response::Reply;
use crate::shard::{ProducePart, ProduceResult, ProduceTurn};

/// Where one partition of the request goes: to a shard (index into the parts sent) or
/// straight to an error.
enum Slot {
    Sent(usize),
    Failed(ErrorCode, &'static str),
    /// In a cluster, another broker leads the partition: (leader, leader epoch).
    NotLeader(i32, i32),
}

/// Kafka's `min.insync.replicas` check of an acks=all produce, before the append: the
/// partition's in-sync replicas (the image's ISR in a cluster; the one replica on one node)
/// against the topic's setting, else the broker's. A topic without overrides costs an empty
/// map lookup.
fn too_few_in_sync(
    rq: &Request<'_>,
    view: Option<&crate::shard::ClusterView>,
    topic: &crate::meta::TopicMeta,
    partition: i32,
) -> bool {
    let wanted = topic
        .configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(rq.shard.config.cluster.min_insync_replicas);
    if wanted <= 1 {
        return false;
    }
    let in_sync = view
        .and_then(|v| v.partition(&topic.name, partition))
        .map_or(1, |st| st.isr.len());
    (in_sync as i32) < wanted
}

/// Whether a transactional Produce's verification failed for now rather than for good: the
/// errors Kafka turns into NOT_ENOUGH_REPLICAS for the client to retry (`ReplicaManager`'s
/// post-verification callback), so that clients which do not retry them on a Produce (all
/// but the Java client) do not fail the transaction.
fn verification_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::CONCURRENT_TRANSACTIONS
            | ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
            | ErrorCode::COORDINATOR_NOT_AVAILABLE
            | ErrorCode::NOT_COORDINATOR
    )
}

/// Answers Produce; no response for acks=0.
pub async fn handle(rq: &Request<'_>, mut body: Bytes) -> Reply {
    let (shard, version) = (rq.shard, rq.version);
    let turn = rq.produce_turn.take().unwrap_or_else(ProduceTurn::first);
    let req: ProduceRequest = decode_body(&mut body, version)?;
    let acks = req.acks;
    let transactional_id = req.transactional_id.as_ref().map(|s| s.to_string());
    // Kafka: a transactional produce needs WRITE on its transactional id.
    let txn_denied = transactional_id.as_deref().is_some_and(|id| {
        !id.is_empty() && !rq.authorized(AclOperation::Write, ResourceType::TransactionalId, id)
    });
    let meta = shard.metadata();
    let view = shard.cluster_view();
    let mut parts = Vec::new();
    let mut layout: Vec<(kafka_protocol::messages::TopicName, Vec<(i32, Slot)>)> =
        Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.to_string();
        let known = meta.topics.get(&name);
        let mut slots = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let slot = if !(-1..=1).contains(&acks) {
                Slot::Failed(ErrorCode::INVALID_REQUIRED_ACKS, "acks must be 0, 1 or -1")
            } else if txn_denied {
                Slot::Failed(
                    ErrorCode::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    "not authorized for the transactional id",
                )
            } else if !rq.authorized(AclOperation::Write, ResourceType::Topic, &name) {
                Slot::Failed(
                    ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                    "not authorized to write to the topic",
                )
            } else if name == crate::group::OFFSETS_TOPIC
                || name == crate::txn::TRANSACTION_STATE_TOPIC
            {
                Slot::Failed(
                    ErrorCode::INVALID_TOPIC_EXCEPTION,
                    "cannot produce to an internal topic",
                )
            } else {
                let elsewhere = view
                    .as_deref()
                    .filter(|v| !v.leads(&name, p.index))
                    .and_then(|v| v.partition(&name, p.index))
                    .map(|st| (st.leader, st.leader_epoch));
                match (known, p.records) {
                    (Some(_), _) if elsewhere.is_some() => {
                        let (leader, epoch) = elsewhere.unwrap_or((-1, -1));
                        Slot::NotLeader(leader, epoch)
                    }
                    (Some(t), Some(_))
                        if acks == -1
                            && p.index >= 0
                            && p.index < t.partitions
                            && too_few_in_sync(rq, view.as_deref(), t, p.index) =>
                    {
                        Slot::Failed(
                            ErrorCode::NOT_ENOUGH_REPLICAS,
                            "the partition has fewer in-sync replicas than min.insync.replicas",
                        )
                    }
                    (Some(t), Some(records)) if p.index >= 0 && p.index < t.partitions => {
                        parts.push(ProducePart {
                            topic: name.clone(),
                            partition: p.index,
                            records,
                        });
                        Slot::Sent(parts.len() - 1)
                    }
                    (Some(t), None) if p.index >= 0 && p.index < t.partitions => {
                        Slot::Failed(ErrorCode::CORRUPT_MESSAGE, "no records")
                    }
                    _ => Slot::Failed(
                        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                        "unknown topic or partition",
                    ),
                }
            };
            slots.push((p.index, slot));
        }
        layout.push((topic.name, slots));
    }
    // Transactional batches: checked with their coordinator first (and, from v12, added to
    // their transaction); a refused part is answered with its error and not appended.
    if let Some(id) = transactional_id.as_deref().filter(|id| !id.is_empty()) {
        let verdicts = shard.verify_transactional(id, &parts, version >= 12).await;
        if verdicts.iter().any(Option::is_some) {
            let mut kept = Vec::with_capacity(parts.len());
            let mut moved: Vec<Result<usize, ErrorCode>> = Vec::with_capacity(parts.len());
            for (part, verdict) in parts.into_iter().zip(verdicts) {
                match verdict {
                    None => {
                        kept.push(part);
                        moved.push(Ok(kept.len() - 1));
                    }
                    // Not verified for now (a transaction still completing, a coordinator
                    // moving or unreachable): Kafka answers NOT_ENOUGH_REPLICAS, which every
                    // client retries without a metadata refresh. librdkafka fails the
                    // transaction on a CONCURRENT_TRANSACTIONS Produce answer.
                    Some(code) if verification_retriable(code) => {
                        tracing::debug!(client_id = rq.client_id, transactional_id = id, topic = %part.topic, partition = part.partition, error_code = code.name(), "transactional produce not verified yet; the client retries");
                        moved.push(Err(ErrorCode::NOT_ENOUGH_REPLICAS));
                    }
                    Some(code) => {
                        tracing::info!(client_id = rq.client_id, transactional_id = id, topic = %part.topic, partition = part.partition, error_code = code.name(), "transactional produce refused by its coordinator");
                        moved.push(Err(code));
                    }
                }
            }
            parts = kept;
            for (_, slots) in &mut layout {
                for (_, slot) in slots.iter_mut() {
                    if let Slot::Sent(i) = *slot {
                        *slot = match moved[i] {
                            Ok(j) => Slot::Sent(j),
                            Err(ErrorCode::NOT_ENOUGH_REPLICAS) => Slot::Failed(
                                ErrorCode::NOT_ENOUGH_REPLICAS,
                                "unable to verify the partition has been added to the transaction yet",
                            ),
                            Err(code) => Slot::Failed(
                                code,
                                "the transaction's coordinator refused this partition",
                            ),
                        };
                    }
                }
            }
        }
    }
    let sent = parts.len();
    let results = if parts.is_empty() {
        Vec::new()
    } else {
        shard.produce(acks, parts, turn).await
    };
    // Every part sent has its own result (`Shard::produce` answers an unreachable owner with an
    // error): a missing one must never turn into an acknowledgement at some offset.
    assert_eq!(
        results.len(),
        sent,
        "Shard::produce returned {} results for {sent} parts",
        results.len()
    );
    if acks == 0 {
        return Ok(None);
    }
    // KIP-951: the endpoints of the leaders named in NOT_LEADER_OR_FOLLOWER answers.
    let mut leaders_named = std::collections::BTreeSet::new();
    let responses = layout
        .into_iter()
        .map(|(name, slots)| {
            let partition_responses = slots
                .into_iter()
                .map(|(index, slot)| {
                    let mut current_leader = LeaderIdAndEpoch::default();
                    let r = match slot {
                        Slot::Sent(i) => results[i].clone(),
                        Slot::NotLeader(leader, epoch) => {
                            if leader >= 0 {
                                leaders_named.insert(leader);
                            }
                            if version >= 10 {
                                current_leader = current_leader
                                    .with_leader_id(BrokerId(leader))
                                    .with_leader_epoch(epoch);
                            }
                            ProduceResult {
                                error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
                                base_offset: -1,
                                log_append_time: -1,
                                log_start_offset: -1,
                                error_message: Some(format!(
                                    "this broker does not lead the partition (leader: {leader})"
                                )),
                            }
                        }
                        Slot::Failed(code, msg) => ProduceResult {
                            error_code: code,
                            base_offset: -1,
                            log_append_time: -1,
                            log_start_offset: -1,
                            error_message: Some(msg.to_string()),
                        },
                    };
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(r.error_code.code())
                        .with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time)
                        .with_log_start_offset(if version >= 5 { r.log_start_offset } else { -1 })
                        .with_error_message(if version >= 8 {
                            r.error_message.as_deref().map(sb)
                        } else {
                            None
                        })
                        .with_current_leader(current_leader)
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partition_responses)
        })
        .collect();
    let node_endpoints = match view.as_deref() {
        Some(v) if version >= 10 => leaders_named
            .into_iter()
            .filter_map(|id| {
                v.endpoint(id).map(|(host, port)| {
                    NodeEndpoint::default()
                        .with_node_id(BrokerId(id))
                        .with_host(sb(&host))
                        .with_port(port as i32)
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let body = ProduceResponse::default()
        .with_responses(responses)
        .with_throttle_time_ms(rq.conn.throttle_time_ms)
        .with_node_endpoints(node_endpoints);
    let frame = encode_response(ApiKey::Produce, version, rq.correlation_id, &body)?;
    Ok(Some(vec![frame].into()))
}
