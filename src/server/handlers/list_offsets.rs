//! ListOffsets v1–v8: earliest (-2), latest (-1: the high watermark, or the last stable offset
//! for read_committed), max timestamp (-3) or by time, answered by each partition's owner
//! shard.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::{OffsetAnswer, OffsetQuery};

/// Answers ListOffsets.
pub async fn handle(
    rq: &Request<'_>,
    req: ListOffsetsRequest,
) -> Result<ListOffsetsResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let meta = shard.metadata();
    let view = shard.cluster_view();
    let mut queries = Vec::new();
    let mut layout = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let name = topic.name.to_string();
        let count = meta.topics.get(&name).map_or(0, |t| t.partitions);
        let allowed = rq.authorized(AclOperation::Describe, ResourceType::Topic, &name);
        let mut slots = Vec::new();
        for p in topic.partitions {
            let epoch = view
                .as_deref()
                .and_then(|v| v.partition(&name, p.partition_index))
                .map_or(0, |st| st.leader_epoch);
            if !allowed {
                slots.push((
                    p.partition_index,
                    epoch,
                    Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED),
                ));
            } else if p.partition_index < 0 || p.partition_index >= count {
                slots.push((
                    p.partition_index,
                    epoch,
                    Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                ));
            } else if let Some(code) =
                super::leader_epoch_error(p.current_leader_epoch, epoch).filter(|_| version >= 4)
            {
                slots.push((p.partition_index, epoch, Err(code)));
            } else if view
                .as_deref()
                .is_some_and(|v| !v.leads(&name, p.partition_index))
            {
                slots.push((
                    p.partition_index,
                    epoch,
                    Err(ErrorCode::NOT_LEADER_OR_FOLLOWER),
                ));
            } else {
                queries.push(OffsetQuery {
                    topic: name.clone(),
                    partition: p.partition_index,
                    timestamp: p.timestamp,
                    read_committed: req.isolation_level == 1,
                });
                slots.push((p.partition_index, epoch, Ok(queries.len() - 1)));
            }
        }
        layout.push((topic.name, slots));
    }
    let answers = if queries.is_empty() {
        Vec::new()
    } else {
        shard.list_offsets(queries).await
    };
    let topics = layout
        .into_iter()
        .map(|(name, slots)| {
            let partitions = slots
                .into_iter()
                .map(|(index, epoch, slot)| {
                    let a = match slot {
                        Ok(i) => answers.get(i).cloned().unwrap_or_default(),
                        Err(error_code) => OffsetAnswer {
                            error_code,
                            offset: -1,
                            timestamp: -1,
                        },
                    };
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(index)
                        .with_error_code(a.error_code.code())
                        .with_offset(a.offset)
                        .with_timestamp(a.timestamp)
                        .with_leader_epoch(if version >= 4 { epoch } else { -1 })
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    let body = ListOffsetsResponse::default().with_topics(topics);
    Ok(body)
}
