//! DescribeTopicPartitions v0 (KIP-966): the topics and partitions of Metadata, paginated, as
//! Kafka 4.x's admin client (`kafka-topics --describe`) asks first.
//!
//! Kafka's rules: an empty topic list means every topic; the topics go out sorted by name,
//! starting at the cursor's topic and, within it, at the cursor's partition; at most
//! `response_partition_limit` partitions (capped by `max.request.partition.size.limit`) go out,
//! and `next_cursor` names the first partition left out (null when none is). A topic that does
//! not exist is answered with UNKNOWN_TOPIC_OR_PARTITION and no partitions; a cursor that names
//! a topic outside the requested list or a negative partition is INVALID_REQUEST on every
//! requested topic.

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::metadata::{partition_info, INTERNAL_TOPICS};
use super::{sb, Request};
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};

/// Answers DescribeTopicPartitions v0 from this shard's metadata snapshot.
pub async fn handle(
    rq: &Request<'_>,
    req: DescribeTopicPartitionsRequest,
) -> Result<DescribeTopicPartitionsResponse, ProtocolError> {
    let shard = rq.shard;
    let meta = shard.metadata();
    let view = shard.cluster_view();
    let view = view.as_deref();
    let limit = req
        .response_partition_limit
        .clamp(1, shard.config.request_partition_size_limit) as usize;
    // The topics asked, sorted by name and each once (all of them for an empty list).
    // Kafka: DESCRIBE on each topic; unauthorized topics are left out of "all topics" and
    // answered TOPIC_AUTHORIZATION_FAILED when named.
    let mut names: Vec<String> = if req.topics.is_empty() {
        meta.topics
            .keys()
            .filter(|n| rq.authorized_quiet(AclOperation::Describe, ResourceType::Topic, n))
            .cloned()
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.to_string()).collect()
    };
    names.sort_unstable();
    names.dedup();
    let (start_topic, start_partition) = match &req.cursor {
        Some(c) => (c.topic_name.to_string(), c.partition_index),
        None => (String::new(), 0),
    };
    if req.cursor.is_some() && (start_partition < 0 || names.binary_search(&start_topic).is_err()) {
        tracing::info!(
            client_id = rq.client_id,
            cursor_topic = %start_topic,
            cursor_partition = start_partition,
            "DescribeTopicPartitions refused: invalid cursor"
        );
        let topics = names
            .into_iter()
            .map(|n| {
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::INVALID_REQUEST.code())
                    .with_name(Some(TopicName(sb(&n))))
                    .with_topic_authorized_operations(i32::MIN)
            })
            .collect();
        return Ok(DescribeTopicPartitionsResponse::default().with_topics(topics));
    }

    let mut topics = Vec::new();
    let mut left = limit;
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= start_topic) {
        if !req.topics.is_empty()
            && !rq.authorized(AclOperation::Describe, ResourceType::Topic, &name)
        {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::TOPIC_AUTHORIZATION_FAILED.code())
                    .with_name(Some(TopicName(sb(&name))))
                    .with_topic_authorized_operations(i32::MIN),
            );
            continue;
        }
        let Some(t) = meta.topics.get(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code())
                    .with_name(Some(TopicName(sb(&name))))
                    .with_topic_authorized_operations(i32::MIN),
            );
            continue;
        };
        let first = if name == start_topic {
            start_partition
        } else {
            0
        };
        if left == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(sb(&name)))
                    .with_partition_index(first),
            );
            break;
        }
        let last = t.partitions.min(first.saturating_add(left as i32));
        let partitions: Vec<DescribeTopicPartitionsResponsePartition> = (first..last)
            .map(|p| {
                let info = partition_info(shard, view, &t.name, p);
                DescribeTopicPartitionsResponsePartition::default()
                    .with_error_code(info.error.code())
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(info.leader))
                    .with_leader_epoch(info.leader_epoch)
                    .with_replica_nodes(info.replicas)
                    .with_isr_nodes(info.isr)
                    .with_offline_replicas(info.offline)
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new()))
            })
            .collect();
        left -= partitions.len();
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(sb(&t.name))))
                .with_topic_id(uuid::Uuid::from_bytes(t.id))
                .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
                .with_partitions(partitions)
                .with_topic_authorized_operations(i32::MIN),
        );
        if last < t.partitions {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(sb(&t.name)))
                    .with_partition_index(last),
            );
            break;
        }
    }
    Ok(DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor))
}
