//! DeleteRecords v0–v2: moves each partition's log start offset (Kafka's low watermark) on
//! its owner shard; answered once the new start is durable. Errors as Kafka's: an unknown
//! topic or partition → UNKNOWN_TOPIC_OR_PARTITION, an offset above the high watermark →
//! OFFSET_OUT_OF_RANGE, a topic whose `cleanup.policy` lacks `delete` → POLICY_VIOLATION;
//! each refusal is logged once (the response has no message field).

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::super::refusal::log_refusal;
use super::Request;
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::{DeleteRecordsAnswer, DeleteRecordsPart};

/// Answers DeleteRecords.
pub async fn handle(
    rq: &Request<'_>,
    req: DeleteRecordsRequest,
) -> Result<DeleteRecordsResponse, ProtocolError> {
    let meta = rq.shard.metadata();
    let mut parts = Vec::new();
    let mut layout = Vec::with_capacity(req.topics.len());
    for topic in req.topics {
        let name = topic.name.to_string();
        // Kafka: DELETE on the topic; denied whether the topic exists or not.
        let allowed = rq.authorized(AclOperation::Delete, ResourceType::Topic, &name);
        let count = if allowed {
            meta.topics.get(&name).map_or(0, |t| t.partitions)
        } else {
            0
        };
        let mut slots = Vec::with_capacity(topic.partitions.len());
        for p in topic.partitions {
            if p.partition_index >= 0 && p.partition_index < count {
                parts.push(DeleteRecordsPart {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: p.offset,
                });
                slots.push((p.partition_index, Some(parts.len() - 1)));
            } else {
                slots.push((p.partition_index, None));
            }
        }
        layout.push((topic.name, allowed, slots));
    }
    let answers = if parts.is_empty() {
        Vec::new()
    } else {
        rq.shard.delete_records(parts).await
    };
    let topics = layout
        .into_iter()
        .map(|(name, allowed, slots)| {
            let partitions = slots
                .into_iter()
                .map(|(index, slot)| {
                    let a = match slot {
                        Some(i) => answers.get(i).cloned(),
                        None => None,
                    }
                    .unwrap_or_else(|| match allowed {
                        false => DeleteRecordsAnswer {
                            error_code: ErrorCode::TOPIC_AUTHORIZATION_FAILED,
                            low_watermark: -1,
                            error_message: Some("not authorized to delete records".into()),
                        },
                        true => DeleteRecordsAnswer {
                            error_code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            low_watermark: -1,
                            error_message: Some(format!(
                                "This server does not host this topic-partition: {}-{index}",
                                name.as_str()
                            )),
                        },
                    });
                    if a.error_code != ErrorCode::NONE {
                        let why = a.error_message.as_deref().unwrap_or("");
                        log_refusal(
                            rq.client_id,
                            "DeleteRecords",
                            &format_args!("{}-{index}: {:?} {why}", name.as_str(), a.error_code),
                        );
                    }
                    DeleteRecordsPartitionResult::default()
                        .with_partition_index(index)
                        .with_low_watermark(a.low_watermark)
                        .with_error_code(a.error_code.code())
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    Ok(DeleteRecordsResponse::default().with_topics(topics))
}
