//! DescribeConfigs v1–v4, IncrementalAlterConfigs v0–v1 (SET, DELETE, APPEND, SUBTRACT) and
//! the legacy AlterConfigs v0–v2 for topics (and broker describe). What each topic setting
//! means and how it is checked lives in `crate::config`; the change is made by shard 0.
//! On the BROKER resource (this broker's id) both alter APIs change the dynamic broker
//! properties, the listeners' TLS key material (`security::dynamic`), and DescribeConfigs
//! lists them as DYNAMIC_BROKER_CONFIG.

use std::collections::{BTreeMap, HashSet};

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    alter_configs_response, AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::{sb, Request};
use crate::config::{
    broker_sets_topic_default, broker_synonym, topic_config_value, topic_log_config,
    TopicConfigStatus, TOPIC_CONFIGS,
};
use crate::error_code::ErrorCode;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::security::dynamic::{self, AlterError, Change};
use crate::server::refusal::log_refusal;
use crate::shard::{AdminOp, AdminReply, ConfigOp, Shard};
use crate::storage::LogConfig;

/// Kafka's ConfigResource type of a topic.
const RESOURCE_TOPIC: i8 = 2;
/// Kafka's ConfigResource type of a broker.
const RESOURCE_BROKER: i8 = 4;
/// Config sources, as Kafka numbers them.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
/// Kafka's config types (DescribeConfigs v3+) of the dynamic broker properties.
const CONFIG_TYPE_STRING: i8 = 2;
const CONFIG_TYPE_PASSWORD: i8 = 9;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// Where a topic's value of `name` comes from, as Kafka reports it: the topic's override, the
/// broker's configuration (its `log.*` default was set to something else), or the default.
pub(super) fn config_source(shard: &Shard, overrides: &BTreeMap<String, String>, name: &str) -> i8 {
    if overrides.contains_key(name) {
        SOURCE_DYNAMIC_TOPIC
    } else if broker_sets_topic_default(&shard.config.log, name) {
        SOURCE_STATIC_BROKER
    } else {
        SOURCE_DEFAULT
    }
}

/// Kafka's synonyms of a topic setting, most specific first: the topic's override
/// (DYNAMIC_TOPIC_CONFIG), the broker's `log.*` setting when it differs from the default
/// (STATIC_BROKER_CONFIG), and the default under the broker's name (DEFAULT_CONFIG).
fn synonyms(
    shard: &Shard,
    overrides: &BTreeMap<String, String>,
    name: &str,
) -> Vec<DescribeConfigsSynonym> {
    let mut out = Vec::new();
    let none = BTreeMap::new();
    if let Some(v) = overrides.get(name) {
        out.push(
            DescribeConfigsSynonym::default()
                .with_name(sb(name))
                .with_value(Some(sb(v)))
                .with_source(SOURCE_DYNAMIC_TOPIC),
        );
    }
    if let Some(broker) = broker_synonym(name) {
        if broker_sets_topic_default(&shard.config.log, name) {
            let v = topic_config_value(&shard.config.log, &none, name);
            out.push(
                DescribeConfigsSynonym::default()
                    .with_name(sb(broker))
                    .with_value(v.map(|v| sb(&v)))
                    .with_source(SOURCE_STATIC_BROKER),
            );
        }
        let v = topic_config_value(&LogConfig::default(), &none, name);
        out.push(
            DescribeConfigsSynonym::default()
                .with_name(sb(broker))
                .with_value(v.map(|v| sb(&v)))
                .with_source(SOURCE_DEFAULT),
        );
    }
    out
}

/// Kafka's authorization of a config resource: `op` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on
/// the topic, or on the cluster for a broker; the error to answer when denied. Other resource
/// types are left to the handler's own refusal.
fn config_denied(
    rq: &Request<'_>,
    op: AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<(ErrorCode, String)> {
    let (ok, code) = match resource_type {
        RESOURCE_TOPIC => (
            rq.authorized(op, ResourceType::Topic, name),
            ErrorCode::TOPIC_AUTHORIZATION_FAILED,
        ),
        RESOURCE_BROKER => (
            rq.authorized_cluster(op),
            ErrorCode::CLUSTER_AUTHORIZATION_FAILED,
        ),
        _ => (true, ErrorCode::NONE),
    };
    (!ok).then(|| {
        (
            code,
            format!("not authorized to {} this resource", op.name()),
        )
    })
}

/// A dynamic broker property as DescribeConfigs shows it (DYNAMIC_BROKER_CONFIG; a
/// sensitive one, Kafka's PASSWORD type, without its value).
fn dynamic_entry(key: &str, value: String, version: i16) -> DescribeConfigsResourceResult {
    let sensitive = dynamic::is_sensitive(key);
    DescribeConfigsResourceResult::default()
        .with_name(sb(key))
        .with_value((!sensitive).then(|| sb(&value)))
        .with_config_source(SOURCE_DYNAMIC_BROKER)
        .with_is_sensitive(sensitive)
        .with_config_type(match (version >= 3, sensitive) {
            (false, _) => 0,
            (true, false) => CONFIG_TYPE_STRING,
            (true, true) => CONFIG_TYPE_PASSWORD,
        })
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
            if let Some((code, message)) = config_denied(
                rq,
                AclOperation::DescribeConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            ) {
                return base
                    .with_error_code(code.code())
                    .with_error_message(Some(sb(&message)));
            }
            let (log, overrides) = match r.resource_type {
                RESOURCE_TOPIC => match meta.topics.get(r.resource_name.as_str()) {
                    Some(t) => match topic_log_config(&shard.config.log, &t.configs) {
                        Ok(log) => (log, Some(t.configs.clone())),
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
                RESOURCE_BROKER => (shard.config.log.clone(), None),
                other => {
                    return base
                        .with_error_code(ErrorCode::INVALID_REQUEST.code())
                        .with_error_message(Some(sb(&format!(
                            "resource type {other} is not supported"
                        ))))
                }
            };
            let empty = Default::default();
            let configs = TOPIC_CONFIGS
                .iter()
                // The broker resource lists the log defaults shardlog applies.
                .filter(|d| overrides.is_some() || d.status == TopicConfigStatus::Implemented)
                .filter(|d| wanted(d.name))
                .map(|d| {
                    let source = match &overrides {
                        Some(o) => config_source(shard, o, d.name),
                        None => SOURCE_STATIC_BROKER,
                    };
                    let overrides = overrides.as_ref().unwrap_or(&empty);
                    let mut c = DescribeConfigsResourceResult::default()
                        .with_name(sb(d.name))
                        .with_value(topic_config_value(&log, overrides, d.name).map(|v| sb(&v)))
                        .with_config_source(source)
                        .with_config_type(if version >= 3 {
                            d.kind.kafka_type_id()
                        } else {
                            0
                        });
                    if req.include_synonyms {
                        c = c.with_synonyms(synonyms(shard, overrides, d.name));
                    }
                    if req.include_documentation && version >= 3 {
                        c = c.with_documentation(Some(sb(d.help)));
                    }
                    c
                })
                .collect::<Vec<_>>();
            let configs = if r.resource_type == RESOURCE_BROKER {
                let mut configs = configs;
                configs.extend(
                    rq.session
                        .dynamic
                        .overrides()
                        .into_iter()
                        .filter(|(k, _)| wanted(k))
                        .map(|(k, v)| dynamic_entry(&k, v, version)),
                );
                configs
            } else {
                configs
            };
            base.with_configs(configs)
        })
        .collect();
    Ok(DescribeConfigsResponse::default().with_results(results))
}

/// Changes this broker's dynamic properties (the TLS key material of its listeners): the
/// resource must name this broker; a refusal is logged and answered with Kafka's code.
async fn alter_broker(
    rq: &Request<'_>,
    name: &StrBytes,
    change: Result<Change, String>,
    validate_only: bool,
) -> (ErrorCode, Option<StrBytes>) {
    let refused = |code: ErrorCode, message: String| {
        log_refusal(
            rq.client_id,
            "AlterConfigs",
            &format_args!("broker `{name}`: {code}: {message}"),
        );
        (code, Some(sb(&message)))
    };
    if let Some((code, message)) = config_denied(
        rq,
        AclOperation::AlterConfigs,
        RESOURCE_BROKER,
        name.as_str(),
    ) {
        return refused(code, message);
    }
    let own = rq.shard.config.node_id.to_string();
    if name.as_str() != own {
        let why = if name.is_empty() {
            "Cannot update these configs at default cluster level, broker id must be specified"
                .to_string()
        } else {
            format!("broker {name} is not this broker ({own})")
        };
        return refused(ErrorCode::INVALID_REQUEST, why);
    }
    let change = match change {
        Ok(c) => c,
        Err(why) => return refused(ErrorCode::INVALID_REQUEST, why),
    };
    match rq.session.dynamic.alter(change, validate_only).await {
        Ok(()) => (ErrorCode::NONE, None),
        Err(AlterError::InvalidRequest(m)) => refused(ErrorCode::INVALID_REQUEST, m),
        Err(AlterError::InvalidConfig(m)) => refused(ErrorCode::INVALID_CONFIG, m),
        Err(AlterError::Storage(m)) => refused(ErrorCode::UNKNOWN_SERVER_ERROR, m),
    }
}

/// Kafka's numbers of IncrementalAlterConfigs' operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

/// Per resource of an alter request: the topic's changes, or why it is refused at once.
type Planned = Result<(String, Vec<(String, ConfigOp)>), (ErrorCode, String)>;

/// Checks shared by both alter APIs: a topic resource, no key twice, no null value.
fn plan_resource(
    resource_type: i8,
    name: &StrBytes,
    configs: impl Iterator<Item = (String, Result<ConfigOp, (ErrorCode, String)>)>,
) -> Planned {
    if resource_type != RESOURCE_TOPIC {
        return Err((
            ErrorCode::INVALID_REQUEST,
            "only topic configs can be altered".to_string(),
        ));
    }
    let mut keys = HashSet::new();
    let mut changes = Vec::new();
    for (key, op) in configs {
        if !keys.insert(key.clone()) {
            return Err((
                ErrorCode::INVALID_REQUEST,
                "Error due to duplicate config keys".to_string(),
            ));
        }
        changes.push((key, op?));
    }
    Ok((name.to_string(), changes))
}

/// Sends the planned changes to shard 0 and returns each resource's (code, message).
async fn apply(
    rq: &Request<'_>,
    planned: Vec<Planned>,
    replace: bool,
    validate_only: bool,
    api: &str,
) -> Vec<(ErrorCode, Option<StrBytes>)> {
    let topics: Vec<_> = planned
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let reply = if topics.is_empty() {
        None
    } else {
        Some(
            rq.shard
                .admin(AdminOp::AlterConfigs {
                    topics,
                    replace,
                    validate_only,
                })
                .await,
        )
    };
    let mut next = 0;
    planned
        .into_iter()
        .map(|p| {
            let outcome = match p {
                Ok((name, _)) => {
                    next += 1;
                    match reply.as_ref().map(|r: &AdminReply| r.result(next - 1)) {
                        Some(Err(e)) => Err((name, e.code, e.message)),
                        _ => Ok(()),
                    }
                }
                Err((code, m)) => Err((String::new(), code, m)),
            };
            match outcome {
                Ok(()) => (ErrorCode::NONE, None),
                Err((topic, code, message)) => {
                    log_refusal(
                        rq.client_id,
                        api,
                        &format_args!("topic `{topic}`: {code}: {message}"),
                    );
                    (code, Some(sb(&message)))
                }
            }
        })
        .collect()
}

/// Answers IncrementalAlterConfigs: SET, DELETE, APPEND and SUBTRACT on topic configs, with
/// Kafka's semantics (APPEND and SUBTRACT on LIST settings only, from the current value or
/// else the default).
pub async fn incremental_alter(
    rq: &Request<'_>,
    req: IncrementalAlterConfigsRequest,
) -> Result<IncrementalAlterConfigsResponse, ProtocolError> {
    let mut broker = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        broker.push(if r.resource_type == RESOURCE_BROKER {
            let ops = r.configs.iter().map(|c| {
                let key = c.name.to_string();
                match (c.config_operation, &c.value) {
                    (OP_SET, Some(v)) => Ok((key, Some(v.to_string()))),
                    (OP_DELETE, _) => Ok((key, None)),
                    (OP_SET, None) => Err(format!("Null value not supported for : {key}")),
                    (OP_APPEND | OP_SUBTRACT, _) => Err(format!(
                        "{key}: APPEND and SUBTRACT apply to list configs only"
                    )),
                    (other, _) => Err(format!("Unknown operations type {other}")),
                }
            });
            let change = ops
                .collect::<Result<Vec<_>, String>>()
                .map(Change::Incremental);
            Some(alter_broker(rq, &r.resource_name, change, req.validate_only).await)
        } else {
            None
        });
    }
    let planned: Vec<Planned> = req
        .resources
        .iter()
        .filter(|r| r.resource_type != RESOURCE_BROKER)
        .map(|r| {
            let configs = r.configs.iter().map(|c| {
                let key = c.name.to_string();
                let value = c.value.as_ref().map(|v| v.to_string());
                let op = match (c.config_operation, value) {
                    (OP_DELETE, _) => Ok(ConfigOp::Delete),
                    (OP_SET | OP_APPEND | OP_SUBTRACT, None) => Err((
                        ErrorCode::INVALID_REQUEST,
                        format!("Null value not supported for : {key}"),
                    )),
                    (OP_SET, Some(v)) => Ok(ConfigOp::Set(v)),
                    (OP_APPEND, Some(v)) => Ok(ConfigOp::Append(v)),
                    (OP_SUBTRACT, Some(v)) => Ok(ConfigOp::Subtract(v)),
                    (other, _) => Err((
                        ErrorCode::INVALID_REQUEST,
                        format!("Unknown operations type {other}"),
                    )),
                };
                (key, op)
            });
            if let Some(denied) = config_denied(
                rq,
                AclOperation::AlterConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            ) {
                return Err(denied);
            }
            plan_resource(r.resource_type, &r.resource_name, configs)
        })
        .collect();
    let outcomes = apply(
        rq,
        planned,
        false,
        req.validate_only,
        "IncrementalAlterConfigs",
    )
    .await;
    let mut topics = outcomes.into_iter();
    let responses = req
        .resources
        .iter()
        .zip(broker)
        .map(|(r, b)| {
            let (code, message) = b
                .or_else(|| topics.next())
                .unwrap_or((ErrorCode::UNKNOWN_SERVER_ERROR, Some(sb("no outcome"))));
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code.code())
                .with_error_message(message)
        })
        .collect();
    Ok(IncrementalAlterConfigsResponse::default().with_responses(responses))
}

/// Answers the legacy AlterConfigs (v0–v2): each topic's overrides become exactly the ones
/// given, every other override is removed (back to its default), as in Kafka.
pub async fn alter(
    rq: &Request<'_>,
    req: AlterConfigsRequest,
) -> Result<AlterConfigsResponse, ProtocolError> {
    let mut broker = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        broker.push(if r.resource_type == RESOURCE_BROKER {
            let change = r
                .configs
                .iter()
                .map(|c| match &c.value {
                    Some(v) => Ok((c.name.to_string(), v.to_string())),
                    None => Err(format!("Null value not supported for : {}", c.name)),
                })
                .collect::<Result<Vec<_>, String>>()
                .map(Change::Replace);
            Some(alter_broker(rq, &r.resource_name, change, req.validate_only).await)
        } else {
            None
        });
    }
    let planned: Vec<Planned> = req
        .resources
        .iter()
        .filter(|r| r.resource_type != RESOURCE_BROKER)
        .map(|r| {
            let configs = r.configs.iter().map(|c| {
                let key = c.name.to_string();
                let op = match &c.value {
                    Some(v) => Ok(ConfigOp::Set(v.to_string())),
                    None => Err((
                        ErrorCode::INVALID_REQUEST,
                        format!("Null value not supported for : {key}"),
                    )),
                };
                (key, op)
            });
            if let Some(denied) = config_denied(
                rq,
                AclOperation::AlterConfigs,
                r.resource_type,
                r.resource_name.as_str(),
            ) {
                return Err(denied);
            }
            plan_resource(r.resource_type, &r.resource_name, configs)
        })
        .collect();
    let outcomes = apply(rq, planned, true, req.validate_only, "AlterConfigs").await;
    let mut topics = outcomes.into_iter();
    let responses = req
        .resources
        .iter()
        .zip(broker)
        .map(|(r, b)| {
            let (code, message) = b
                .or_else(|| topics.next())
                .unwrap_or((ErrorCode::UNKNOWN_SERVER_ERROR, Some(sb("no outcome"))));
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code.code())
                .with_error_message(message)
        })
        .collect();
    Ok(AlterConfigsResponse::default().with_responses(responses))
}
