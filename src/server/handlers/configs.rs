//! DescribeConfigs v1–v4 and IncrementalAlterConfigs v0–v1 for topics (and broker describe).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use super::sb;
use super::Request;
use crate::config::{topic_key_value, topic_log_config, TOPIC_KEYS};
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::shard::AdminOp;

/// Kafka's ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's ConfigResource type of a broker.
const RESOURCE_BROKER: i8 = 4;
/// Config sources, as Kafka numbers them.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn config_type(key: &str) -> i8 {
    match key {
        "message.timestamp.type" | "cleanup.policy" => 2, // STRING
        "max.message.bytes" | "index.interval.bytes" => 3, // INT
        _ => 5,                                           // LONG
    }
}

/// Answers DescribeConfigs.
pub async fn describe(
    rq: &Request<'_>,
    req: DescribeConfigsRequest,
) -> Result<DescribeConfigsResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let meta = shard.metadata();
    let results = req
        .resources
        .iter()
        .map(|r| {
            let wanted = |k: &str| {
                r.configuration_keys
                    .as_ref()
                    .is_none_or(|ks| ks.iter().any(|w| w.as_str() == k))
            };
            let base = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let (log, overrides, source_default) = match r.resource_type {
                RESOURCE_TOPIC => match meta.topics.get(r.resource_name.as_str()) {
                    Some(t) => match topic_log_config(&shard.config.log, &t.configs) {
                        Ok(log) => (log, Some(t.configs.clone()), SOURCE_DEFAULT),
                        Err(e) => {
                            return base
                                .with_error_code(ErrorCode::INVALID_CONFIG.code())
                                .with_error_message(Some(sb(&e.to_string())))
                        }
                    },
                    None => {
                        return base
                            .with_error_code(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code())
                            .with_error_message(Some(sb("unknown topic")))
                    }
                },
                RESOURCE_BROKER => (shard.config.log.clone(), None, SOURCE_STATIC_BROKER),
                other => {
                    return base
                        .with_error_code(ErrorCode::INVALID_REQUEST.code())
                        .with_error_message(Some(sb(&format!(
                            "resource type {other} is not supported"
                        ))))
                }
            };
            let configs = TOPIC_KEYS
                .iter()
                .filter(|(k, _)| wanted(k))
                .map(|(k, help)| {
                    let is_override = overrides.as_ref().is_some_and(|o| o.contains_key(*k));
                    let mut c = DescribeConfigsResourceResult::default()
                        .with_name(sb(k))
                        .with_value(topic_key_value(&log, k).map(|v| sb(&v)))
                        .with_config_source(if is_override {
                            SOURCE_DYNAMIC_TOPIC
                        } else {
                            source_default
                        })
                        .with_config_type(if version >= 3 { config_type(k) } else { 0 });
                    if req.include_documentation && version >= 3 {
                        c = c.with_documentation(Some(sb(help)));
                    }
                    c
                })
                .collect();
            base.with_configs(configs)
        })
        .collect();
    let body = DescribeConfigsResponse::default().with_results(results);
    Ok(body)
}

/// Answers IncrementalAlterConfigs: SET and DELETE on topic configs.
pub async fn incremental_alter(
    rq: &Request<'_>,
    req: IncrementalAlterConfigsRequest,
) -> Result<IncrementalAlterConfigsResponse, ProtocolError> {
    let shard = rq.shard;
    let mut changes = Vec::new();
    // Per resource: Ok(index into changes) or an immediate error.
    let mut slots = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        if r.resource_type != RESOURCE_TOPIC {
            slots.push(Err((
                ErrorCode::INVALID_REQUEST,
                "only topic configs can be altered".to_string(),
            )));
            continue;
        }
        let mut ops = Vec::new();
        let mut bad = None;
        for c in &r.configs {
            match c.config_operation {
                0 => ops.push((
                    c.name.to_string(),
                    Some(c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()),
                )),
                1 => ops.push((c.name.to_string(), None)),
                op => {
                    bad = Some(format!(
                        "config operation {op} on `{}` is not supported (only SET and DELETE)",
                        c.name.as_str()
                    ))
                }
            }
        }
        match bad {
            Some(m) => slots.push(Err((ErrorCode::INVALID_CONFIG, m))),
            None => {
                changes.push((r.resource_name.to_string(), ops));
                slots.push(Ok(changes.len() - 1));
            }
        }
    }
    let reply = if changes.is_empty() {
        None
    } else {
        Some(
            shard
                .admin(AdminOp::AlterConfigs {
                    topics: changes,
                    validate_only: req.validate_only,
                })
                .await,
        )
    };
    let responses = req
        .resources
        .iter()
        .zip(slots)
        .map(|(r, slot)| {
            let (code, message) = match slot {
                Ok(i) => match reply.as_ref().map(|rep| rep.result(i)) {
                    Some(Err(e)) => (e.code, Some(sb(&e.message))),
                    _ => (ErrorCode::NONE, None),
                },
                Err((code, m)) => (code, Some(sb(&m))),
            };
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code.code())
                .with_error_message(message)
        })
        .collect();
    let body = IncrementalAlterConfigsResponse::default().with_responses(responses);
    Ok(body)
}
