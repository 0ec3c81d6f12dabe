//! Metadata and DescribeCluster: answered from this shard's snapshot; a Metadata request for
//! a missing topic creates it first when `auto.create.topics.enable` and the client allow it.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::meta::TopicMeta;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::shard::{AdminOp, NewTopic};

/// Kafka's internal topics, flagged `is_internal` (v1+): clients leave them out of pattern
/// subscriptions and listings (`exclude.internal.topics`, `kafka-topics --exclude-internal`).
pub(super) const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Whether the principal may create topic `name` (CREATE on the cluster or on the topic).
fn may_create(rq: &Request<'_>, name: &str) -> bool {
    !rq.session.authorizer.enabled
        || rq.authorized_quiet(AclOperation::Create, ResourceType::Cluster, CLUSTER_NAME)
        || rq.authorized(AclOperation::Create, ResourceType::Topic, name)
}

/// Answers Metadata v0–v12.
pub async fn handle(
    rq: &Request<'_>,
    req: MetadataRequest,
) -> Result<MetadataResponse, ProtocolError> {
    let (shard, version) = (rq.shard, rq.version);
    let allow_create =
        shard.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut meta = shard.metadata();
    if allow_create {
        if let Some(topics) = &req.topics {
            let missing: Vec<NewTopic> = topics
                .iter()
                .filter_map(|t| t.name.as_ref())
                .filter(|n| {
                    !meta.topics.contains_key(n.as_str())
                        && crate::meta::validate_topic_name(n.as_str()).is_ok()
                        && may_create(rq, n.as_str())
                })
                .map(|n| NewTopic {
                    name: n.to_string(),
                    partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                    ..Default::default()
                })
                .collect();
            if !missing.is_empty() {
                let reply = shard
                    .admin(AdminOp::CreateTopics {
                        topics: missing,
                        validate_only: false,
                    })
                    .await;
                if let Some(f) = reply.failure {
                    tracing::warn!(error = %f.message, "auto-create failed");
                }
                meta = shard.metadata();
            }
        }
    }
    let node_id = shard.config.node_id;
    let describe = |t: &TopicMeta| {
        let partitions = (0..t.partitions)
            .map(|p| {
                MetadataResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(node_id))
                    .with_leader_epoch(if version >= 7 { 0 } else { -1 })
                    .with_replica_nodes(vec![BrokerId(node_id)])
                    .with_isr_nodes(vec![BrokerId(node_id)])
            })
            .collect();
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(sb(&t.name))))
            .with_topic_id(uuid::Uuid::from_bytes(t.id))
            .with_is_internal(INTERNAL_TOPICS.contains(&t.name.as_str()))
            .with_partitions(partitions)
            .with_topic_authorized_operations(i32::MIN)
    };
    // v0 has no null: an empty list there asks for every topic.
    let all =
        req.topics.is_none() || (version == 0 && req.topics.as_ref().is_some_and(Vec::is_empty));
    // Unauthorized topics: left out of "all topics", TOPIC_AUTHORIZATION_FAILED when named
    // (whether they exist or not), as Kafka.
    let may_describe =
        |name: &str| rq.authorized(AclOperation::Describe, ResourceType::Topic, name);
    let topics: Vec<MetadataResponseTopic> = match &req.topics {
        _ if all => meta
            .topics
            .values()
            .filter(|t| may_describe(&t.name))
            .map(describe)
            .collect(),
        None => Vec::new(),
        Some(wanted) => wanted
            .iter()
            .map(|w| {
                let found = match &w.name {
                    Some(n) => meta.topics.get(n.as_str()),
                    None => meta.topic_by_id(w.topic_id.as_bytes()),
                };
                let name = w
                    .name
                    .as_ref()
                    .map(|n| n.to_string())
                    .or(found.map(|t| t.name.clone()));
                if name.as_deref().is_some_and(|n| !may_describe(n)) {
                    return MetadataResponseTopic::default()
                        .with_error_code(ErrorCode::TOPIC_AUTHORIZATION_FAILED.code())
                        .with_name(w.name.clone())
                        .with_topic_id(w.topic_id);
                }
                match found {
                    Some(t) => describe(t),
                    None => {
                        let code = match &w.name {
                            Some(n) if crate::meta::validate_topic_name(n.as_str()).is_err() => {
                                ErrorCode::INVALID_TOPIC_EXCEPTION.code()
                            }
                            Some(_) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                            None => ErrorCode::UNKNOWN_TOPIC_ID.code(),
                        };
                        MetadataResponseTopic::default()
                            .with_error_code(code)
                            .with_name(w.name.clone())
                            .with_topic_id(w.topic_id)
                    }
                }
            })
            .collect(),
    };
    let (host, port) = &rq.session.listener.advertised;
    let body = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(node_id))
            .with_host(sb(host))
            .with_port(*port as i32)])
        .with_cluster_id(Some(sb(&shard.config.cluster_id)))
        .with_controller_id(BrokerId(node_id))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN);
    Ok(body)
}

/// Answers DescribeCluster v0–v1: this one broker is the whole cluster and its controller.
pub async fn describe_cluster(
    rq: &Request<'_>,
    _req: DescribeClusterRequest,
) -> Result<DescribeClusterResponse, ProtocolError> {
    let shard = rq.shard;
    let (host, port) = &rq.session.listener.advertised;
    let node_id = shard.config.node_id;
    let body = DescribeClusterResponse::default()
        .with_cluster_id(sb(&shard.config.cluster_id))
        .with_controller_id(BrokerId(node_id))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(node_id))
            .with_host(sb(host))
            .with_port(*port as i32)])
        .with_cluster_authorized_operations(i32::MIN);
    Ok(body)
}
