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
use crate::cluster::image::NO_LEADER;
use crate::error_code::ErrorCode;
use crate::meta::TopicMeta;
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType, CLUSTER_NAME};
use crate::shard::{AdminOp, ClusterView, NewTopic, Shard};

/// One partition's leadership as Metadata and DescribeTopicPartitions report it.
pub(super) struct PartitionInfo {
    /// LEADER_NOT_AVAILABLE when the partition has no leader (offline).
    pub error: ErrorCode,
    /// The leader, or -1.
    pub leader: i32,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// The replica set.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas.
    pub isr: Vec<BrokerId>,
    /// Replicas on brokers that are not live (fenced).
    pub offline: Vec<BrokerId>,
}

/// A partition's leadership: this broker with epoch 0 on one node; from the image in a
/// cluster (`view`).
pub(super) fn partition_info(
    shard: &Shard,
    view: Option<&ClusterView>,
    topic: &str,
    partition: i32,
) -> PartitionInfo {
    let ids = |v: &[i32]| v.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let Some(v) = view else {
        let me = vec![BrokerId(shard.config.node_id)];
        return PartitionInfo {
            error: ErrorCode::NONE,
            leader: shard.config.node_id,
            leader_epoch: 0,
            replicas: me.clone(),
            isr: me,
            offline: Vec::new(),
        };
    };
    let Some(st) = v.partition(topic, partition) else {
        return PartitionInfo {
            error: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            leader: NO_LEADER,
            leader_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            offline: Vec::new(),
        };
    };
    let offline: Vec<i32> = st
        .replicas
        .iter()
        .copied()
        .filter(|id| v.image.brokers.get(id).is_none_or(|b| b.fenced))
        .collect();
    PartitionInfo {
        error: if st.leader == NO_LEADER {
            ErrorCode::LEADER_NOT_AVAILABLE
        } else {
            ErrorCode::NONE
        },
        leader: st.leader,
        leader_epoch: st.leader_epoch,
        replicas: ids(&st.replicas),
        isr: ids(&st.isr),
        offline: ids(&offline),
    }
}

/// The brokers clients are told of: this one on one node (at the address of the listener the
/// request came in on); every live broker in a cluster.
fn brokers(
    rq: &Request<'_>,
    view: Option<&ClusterView>,
) -> Vec<(i32, String, u16, Option<String>)> {
    let shard = rq.shard;
    match view {
        None => {
            let (host, port) = rq.session.listener.advertised.clone();
            vec![(shard.config.node_id, host, port, None)]
        }
        Some(v) => v
            .image
            .live_brokers()
            .filter_map(|b| {
                b.endpoints
                    .first()
                    .map(|e| (b.id, e.host.clone(), e.port, b.rack.clone()))
            })
            .collect(),
    }
}

/// The controller clients are told of: this broker on one node; the active controller (or
/// -1 when none is known) in a cluster.
fn controller_id(shard: &Shard, view: Option<&ClusterView>) -> i32 {
    match view {
        None => shard.config.node_id,
        Some(v) => v.controller_id.unwrap_or(-1),
    }
}

/// Kafka's internal topics, flagged `is_internal` (v1+): clients leave them out of pattern
/// subscriptions and listings (`exclude.internal.topics`, `kafka-topics --exclude-internal`).
pub(super) const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Whether the principal may create topic `name` (CREATE on the cluster or on the topic).
pub(super) fn may_create(rq: &Request<'_>, name: &str) -> bool {
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
    let view = shard.cluster_view();
    let view = view.as_deref();
    let describe = |t: &TopicMeta| {
        let partitions = (0..t.partitions)
            .map(|p| {
                let info = partition_info(shard, view, &t.name, p);
                MetadataResponsePartition::default()
                    .with_error_code(info.error.code())
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(info.leader))
                    .with_leader_epoch(if version >= 7 { info.leader_epoch } else { -1 })
                    .with_replica_nodes(info.replicas)
                    .with_isr_nodes(info.isr)
                    .with_offline_replicas(if version >= 5 {
                        info.offline
                    } else {
                        Vec::new()
                    })
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
    let brokers = brokers(rq, view)
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(sb(&host))
                .with_port(port as i32)
                .with_rack(rack.filter(|_| version >= 1).as_deref().map(sb))
        })
        .collect();
    let body = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(&shard.config.cluster_id)))
        .with_controller_id(BrokerId(controller_id(shard, view)))
        .with_topics(topics)
        .with_cluster_authorized_operations(i32::MIN);
    Ok(body)
}

/// Answers DescribeCluster v0–v1: on one node this broker is the whole cluster and its
/// controller; in a cluster, every live broker and the active controller.
pub async fn describe_cluster(
    rq: &Request<'_>,
    _req: DescribeClusterRequest,
) -> Result<DescribeClusterResponse, ProtocolError> {
    let shard = rq.shard;
    let view = shard.cluster_view();
    let view = view.as_deref();
    let brokers = brokers(rq, view)
        .into_iter()
        .map(|(id, host, port, rack)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(sb(&host))
                .with_port(port as i32)
                .with_rack(rack.as_deref().map(sb))
        })
        .collect();
    let body = DescribeClusterResponse::default()
        .with_cluster_id(sb(&shard.config.cluster_id))
        .with_controller_id(BrokerId(controller_id(shard, view)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(i32::MIN);
    Ok(body)
}
