//! OffsetForLeaderEpoch v2–v4 (KIP-101, KIP-320): for each partition, the end offset of a
//! leader epoch in the leader's log, so a consumer (or a follower) that read data of that
//! epoch can tell whether the log it read from was truncated since. Answered by each
//! partition's owner shard from its leader-epoch cache.
//!
//! As Kafka: a request with a broker's `replica_id` (v3+) needs CLUSTER_ACTION on the cluster,
//! a consumer's DESCRIBE on the topic; `current_leader_epoch` is checked against the image
//! (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH); only the leader answers; an epoch the log
//! does not know is answered with epoch -1 and end offset -1, without an error.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::EpochQuery;

/// Answers OffsetForLeaderEpoch.
pub async fn handle(
    rq: &Request<'_>,
    req: OffsetForLeaderEpochRequest,
) -> Result<OffsetForLeaderEpochResponse, ProtocolError> {
    let shard = rq.shard;
    let meta = shard.metadata();
    let view = shard.cluster_view();
    let from_broker = rq.version >= 3 && req.replica_id.0 >= 0;
    let cluster_allowed = !from_broker || rq.authorized_cluster(AclOperation::ClusterAction);
    let mut queries = Vec::new();
    let mut layout = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let name = topic.topic.to_string();
        let count = meta.topics.get(&name).map_or(0, |t| t.partitions);
        let allowed = if from_broker {
            cluster_allowed
        } else {
            rq.authorized(AclOperation::Describe, ResourceType::Topic, &name)
        };
        let mut slots = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            let index = p.partition;
            let state = view.as_deref().and_then(|v| v.partition(&name, index));
            let epoch = state.map_or(crate::storage::LEADER_EPOCH, |st| st.leader_epoch);
            let refusal = if !allowed {
                Some(if from_broker {
                    ErrorCode::CLUSTER_AUTHORIZATION_FAILED
                } else {
                    ErrorCode::TOPIC_AUTHORIZATION_FAILED
                })
            } else if index < 0 || index >= count {
                Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION)
            } else if let Some(code) = super::leader_epoch_error(p.current_leader_epoch, epoch) {
                Some(code)
            } else if view.as_deref().is_some_and(|v| !v.leads(&name, index)) {
                Some(ErrorCode::NOT_LEADER_OR_FOLLOWER)
            } else {
                None
            };
            match refusal {
                Some(code) => slots.push((index, Err(code))),
                None => {
                    queries.push(EpochQuery {
                        topic: name.clone(),
                        partition: index,
                        leader_epoch: p.leader_epoch,
                    });
                    slots.push((index, Ok(queries.len() - 1)));
                }
            }
        }
        layout.push((topic.topic, slots));
    }
    let answers = if queries.is_empty() {
        Vec::new()
    } else {
        shard.epoch_end_offsets(queries).await
    };
    let topics = layout
        .into_iter()
        .map(|(name, slots)| {
            let partitions = slots
                .into_iter()
                .map(|(index, slot)| {
                    let answer = match slot {
                        Ok(i) => answers
                            .get(i)
                            .cloned()
                            .unwrap_or(Err(ErrorCode::NOT_LEADER_OR_FOLLOWER)),
                        Err(code) => Err(code),
                    };
                    let (code, (epoch, end)) = match answer {
                        Ok(found) => (ErrorCode::NONE, found),
                        Err(code) => (code, (-1, -1)),
                    };
                    EpochEndOffset::default()
                        .with_partition(index)
                        .with_error_code(code.code())
                        .with_leader_epoch(epoch)
                        .with_end_offset(end)
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(OffsetForLeaderEpochResponse::default().with_topics(topics))
}
