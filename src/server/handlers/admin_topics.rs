//! CreateTopics, DeleteTopics and CreatePartitions: validated and applied by shard 0, which
//! answers only once every shard has opened (or deleted) its partitions.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};

use super::configs::config_source;
use super::sb;
use super::Request;
use crate::config::{topic_config_value, topic_log_config, TOPIC_CONFIGS};
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::server::refusal::log_refusal;
use crate::shard::controller::PartitionGrowth;
use crate::shard::{AdminError, AdminOp, NewTopic};

use super::metadata::may_create;

fn code_and_message(
    r: &Result<(), AdminError>,
) -> (ErrorCode, Option<kafka_protocol::protocol::StrBytes>) {
    match r {
        Ok(()) => (ErrorCode::NONE, None),
        Err(e) => (e.code, Some(sb(&e.message))),
    }
}

/// The answer for each item of a request, in request order: TOPIC_AUTHORIZATION_FAILED for a
/// denied one, else `result(k)` for the k-th allowed one (only those went to the controller).
fn with_denials(
    allowed: &[bool],
    result: impl Fn(usize) -> Result<(), AdminError>,
) -> Vec<Result<(), AdminError>> {
    let mut next = 0;
    allowed
        .iter()
        .map(|&ok| {
            if ok {
                next += 1;
                result(next - 1)
            } else {
                Err(topic_authorization_failed())
            }
        })
        .collect()
}

fn topic_authorization_failed() -> AdminError {
    AdminError {
        code: ErrorCode::TOPIC_AUTHORIZATION_FAILED,
        message: "not authorized for this topic".into(),
    }
}

/// Answers CreateTopics v2–v7.
pub async fn create_topics(
    rq: &Request<'_>,
    req: CreateTopicsRequest,
) -> Result<CreateTopicsResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let topics: Vec<NewTopic> = req
        .topics
        .iter()
        .map(|t| NewTopic {
            name: t.name.to_string(),
            partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs: t
                .configs
                .iter()
                .filter_map(|c| {
                    c.value
                        .as_ref()
                        .map(|v| (c.name.to_string(), v.to_string()))
                })
                .collect(),
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            null_configs: t
                .configs
                .iter()
                .filter(|c| c.value.is_none())
                .map(|c| c.name.to_string())
                .collect(),
        })
        .collect();
    let allowed: Vec<bool> = topics.iter().map(|t| may_create(rq, &t.name)).collect();
    let reply = shard
        .admin(AdminOp::CreateTopics {
            topics: topics
                .iter()
                .zip(&allowed)
                .filter(|(_, &ok)| ok)
                .map(|(t, _)| t.clone())
                .collect(),
            validate_only: req.validate_only,
        })
        .await;
    let answers = with_denials(&allowed, |k| reply.result(k));
    let meta = shard.metadata();
    let results = topics
        .iter()
        .zip(answers)
        .map(|(t, r)| {
            if let Err(e) = &r {
                log_refusal(
                    rq.client_id,
                    "CreateTopics",
                    &format_args!("topic `{}`: {}: {}", t.name, e.code, e.message),
                );
            }
            let (code, message) = code_and_message(&r);
            let mut out = CreatableTopicResult::default()
                .with_name(TopicName(sb(&t.name)))
                .with_error_code(code.code())
                .with_error_message(message);
            if r.is_ok() && version >= 5 {
                // The created topic's count; with validate_only, the count it would have.
                let partitions = match meta.topics.get(&t.name) {
                    Some(m) if !req.validate_only => m.partitions,
                    _ if !t.assignments.is_empty() => t.assignments.len() as i32,
                    _ if t.partitions == -1 => shard.config.num_partitions,
                    _ => t.partitions,
                };
                out = out
                    .with_num_partitions(partitions)
                    .with_replication_factor(1)
                    .with_configs(Some(created_configs(shard, &t.configs)))
                    .with_topic_id(match (version >= 7, meta.topics.get(&t.name)) {
                        (true, Some(m)) => uuid::Uuid::from_bytes(m.id),
                        _ => uuid::Uuid::nil(),
                    });
            } else if version >= 5 {
                out = out.with_num_partitions(-1).with_replication_factor(-1);
            }
            out
        })
        .collect();
    let body = CreateTopicsResponse::default().with_topics(results);
    Ok(body)
}

/// The configs a created topic has, as CreateTopics v5+ reports them (Kafka lists every
/// topic config with its value and source).
fn created_configs(
    shard: &crate::shard::Shard,
    overrides: &std::collections::BTreeMap<String, String>,
) -> Vec<CreatableTopicConfigs> {
    let log = topic_log_config(&shard.config.log, overrides).unwrap_or_else(|_| {
        // Checked by the controller before the topic was created.
        shard.config.log.clone()
    });
    TOPIC_CONFIGS
        .iter()
        .map(|d| {
            CreatableTopicConfigs::default()
                .with_name(sb(d.name))
                .with_value(topic_config_value(&log, overrides, d.name).map(|v| sb(&v)))
                .with_config_source(config_source(shard, overrides, d.name))
        })
        .collect()
}

/// Answers DeleteTopics v1–v6 (by name, or by topic id from v6).
pub async fn delete_topics(
    rq: &Request<'_>,
    req: DeleteTopicsRequest,
) -> Result<DeleteTopicsResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let meta = shard.metadata();
    // (name if resolvable, topic id as asked)
    let wanted: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
        req.topics
            .iter()
            .map(|t| match &t.name {
                Some(n) => (Some(n.to_string()), t.topic_id),
                None => (
                    meta.topic_by_id(t.topic_id.as_bytes())
                        .map(|m| m.name.clone()),
                    t.topic_id,
                ),
            })
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    // Kafka answers an unauthorized topic so whether it exists or not.
    let allowed: Vec<bool> = wanted
        .iter()
        .map(|(n, _)| match n {
            Some(n) => rq.authorized(AclOperation::Delete, ResourceType::Topic, n),
            None => true,
        })
        .collect();
    let names: Vec<String> = wanted
        .iter()
        .zip(&allowed)
        .filter_map(|((n, _), &ok)| n.clone().filter(|_| ok))
        .collect();
    let reply = shard.admin(AdminOp::DeleteTopics { names }).await;
    let resolved: Vec<bool> = wanted
        .iter()
        .zip(&allowed)
        .map(|((n, _), &ok)| ok && n.is_some())
        .collect();
    let mut answers = with_denials(&resolved, |k| reply.result(k));
    for ((n, _), (r, &ok)) in wanted.iter().zip(answers.iter_mut().zip(&allowed)) {
        if ok && n.is_none() {
            *r = Err(AdminError {
                code: ErrorCode::UNKNOWN_TOPIC_ID,
                message: "unknown topic id".into(),
            });
        }
    }
    let responses = wanted
        .iter()
        .zip(answers)
        .map(|((name, id), r)| {
            let (code, message) = code_and_message(&r);
            DeletableTopicResult::default()
                .with_name(name.as_deref().map(|n| TopicName(sb(n))))
                .with_topic_id(if version >= 6 { *id } else { uuid::Uuid::nil() })
                .with_error_code(code.code())
                .with_error_message(if version >= 5 { message } else { None })
        })
        .collect();
    let body = DeleteTopicsResponse::default().with_responses(responses);
    Ok(body)
}

/// Answers CreatePartitions v0–v3.
pub async fn create_partitions(
    rq: &Request<'_>,
    req: CreatePartitionsRequest,
) -> Result<CreatePartitionsResponse, ProtocolError> {
    let shard = rq.shard;
    let topics: Vec<PartitionGrowth> = req
        .topics
        .iter()
        .map(|t| {
            let assignments = t.assignments.as_ref().map(|lists| {
                lists
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            });
            (t.name.to_string(), t.count, assignments)
        })
        .collect();
    let allowed: Vec<bool> = topics
        .iter()
        .map(|(name, _, _)| rq.authorized(AclOperation::Alter, ResourceType::Topic, name))
        .collect();
    let reply = shard
        .admin(AdminOp::CreatePartitions {
            topics: topics
                .iter()
                .zip(&allowed)
                .filter(|(_, &ok)| ok)
                .map(|(t, _)| t.clone())
                .collect(),
            validate_only: req.validate_only,
        })
        .await;
    let answers = with_denials(&allowed, |k| reply.result(k));
    let results = topics
        .iter()
        .zip(answers)
        .map(|((name, _, _), r)| {
            if let Err(e) = &r {
                log_refusal(
                    rq.client_id,
                    "CreatePartitions",
                    &format_args!("topic `{name}`: {}: {}", e.code, e.message),
                );
            }
            let (code, message) = code_and_message(&r);
            CreatePartitionsTopicResult::default()
                .with_name(TopicName(sb(name)))
                .with_error_code(code.code())
                .with_error_message(message)
        })
        .collect();
    let body = CreatePartitionsResponse::default().with_results(results);
    Ok(body)
}
