//! A broker in a multi-node cluster (`process.roles` has `broker`): how the shards learn the
//! cluster image and how admin changes reach the active controller.
//!
//! Shard 0 follows the images the broker agent receives ([`follow_images`]): each one becomes
//! the `meta::Metadata` the shards already use (every topic, its partition count and configs)
//! plus a [`ClusterView`] (brokers, leaders, replicas, ISR, epochs, the controller), broadcast
//! to every shard as today. A shard opens only the partitions it owns *and* this broker hosts
//! (is a replica of). Admin changes ([`run`]) are checked here with Kafka's rules and
//! messages, then sent to the active controller as one request; the answer waits (bounded)
//! until this broker has applied the image holding the change, so a client told "created"
//! can produce here at once. Nothing here runs on the one-node path.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_channel::oneshot;

use super::controller::{altered_configs, AdminError, AdminOp, AdminReply, NewTopic};
use super::{Shard, ShardMsg};
use crate::cluster::agent::CONTROLLER_REQUEST_TIMEOUT_MS;
use crate::cluster::control::{self, TopicRequest};
use crate::cluster::image::{ClusterImage, NodeId, PartitionState};
use crate::cluster::node::BrokerLink;
use crate::cluster::transport::{ControllerError, ControllerReply, RpcBody};
use crate::config::validate_topic_configs;
use crate::error_code::ErrorCode;
use crate::group::OFFSETS_TOPIC;
use crate::meta::{self, Metadata, TopicMeta};

/// How often shard 0 looks for a new image or a new active controller.
pub const IMAGE_POLL_INTERVAL_MS: u64 = 20;

/// What a shard knows of the cluster: this broker's id, the image it last applied and the
/// active controller. Immutable; replaced whole with every image.
#[derive(Debug)]
pub struct ClusterView {
    /// This broker's node id.
    pub node_id: NodeId,
    /// The image the shards' metadata was derived from.
    pub image: Arc<ClusterImage>,
    /// The active controller, as far as this broker knows.
    pub controller_id: Option<NodeId>,
}

impl ClusterView {
    /// A partition's state, if it exists.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        self.image.partition(topic, partition)
    }

    /// Whether this broker leads the partition.
    pub fn leads(&self, topic: &str, partition: i32) -> bool {
        self.partition(topic, partition)
            .is_some_and(|p| p.leader == self.node_id)
    }

    /// Whether this broker is a replica of the partition (holds its log).
    pub fn hosts(&self, topic: &str, partition: i32) -> bool {
        self.partition(topic, partition)
            .is_some_and(|p| p.replicas.contains(&self.node_id))
    }

    /// Host and port of a live broker, for Metadata and leader hints.
    pub fn endpoint(&self, id: NodeId) -> Option<(String, u16)> {
        self.image
            .brokers
            .get(&id)
            .filter(|b| !b.fenced)
            .and_then(|b| b.endpoints.first())
            .map(|e| (e.host.clone(), e.port))
    }
}

/// The shards' metadata for an image: every topic with its partition count and configs.
pub fn metadata_of(image: &ClusterImage) -> Metadata {
    Metadata {
        version: image.offset,
        topics: image
            .topics
            .values()
            .map(|t| {
                (
                    t.name.clone(),
                    TopicMeta {
                        name: t.name.clone(),
                        id: t.id,
                        partitions: t.partitions.len() as i32,
                        configs: t.configs.clone(),
                    },
                )
            })
            .collect(),
        producer_id_next: 0,
    }
}

/// Shard 0: applies every new image (or a change of the active controller) on all shards,
/// in order, for as long as the shard runs.
pub async fn follow_images(shard: Rc<Shard>, link: BrokerLink) {
    assert_eq!(shard.id, 0, "shard 0 follows the images");
    let mut images = link.images();
    let mut controller = shard.cluster_view().and_then(|v| v.controller_id);
    loop {
        glommio::timer::sleep(Duration::from_millis(IMAGE_POLL_INTERVAL_MS)).await;
        let now = link.status().controller.map(|c| c as NodeId);
        let changed = images.has_changed().unwrap_or(false);
        if !changed && now == controller {
            continue;
        }
        controller = now;
        let image = images.borrow_and_update().clone();
        let view = Arc::new(ClusterView {
            node_id: link.node_id(),
            image,
            controller_id: controller,
        });
        broadcast(&shard, view).await;
    }
}

/// Sends the metadata and view of `view`'s image to every shard and waits until each has
/// applied it.
async fn broadcast(shard: &Rc<Shard>, view: Arc<ClusterView>) {
    let meta = Arc::new(metadata_of(&view.image));
    let offset = view.image.offset;
    let mut acks = Vec::with_capacity(shard.nr_shards);
    for to in 0..shard.nr_shards {
        let (reply, rx) = oneshot::channel();
        shard
            .send(
                to,
                ShardMsg::ApplyMetadata {
                    meta: meta.clone(),
                    view: Some(view.clone()),
                    reply,
                },
            )
            .await;
        acks.push(rx);
    }
    for rx in acks {
        let _ = rx.await;
    }
    shard.applied_image_offset.set(offset);
}

/// Waits (at most the controller request timeout) until every shard has applied an image at
/// `offset` or later.
async fn wait_applied(shard: &Shard, offset: u64) {
    let deadline = Instant::now() + Duration::from_millis(CONTROLLER_REQUEST_TIMEOUT_MS);
    while shard.applied_image_offset.get() < offset && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(IMAGE_POLL_INTERVAL_MS / 2)).await;
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> AdminError {
    AdminError {
        code,
        message: message.into(),
    }
}

fn from_control(e: control::ControlError) -> AdminError {
    err(e.code, e.message)
}

/// An admin change in a cluster: checked here, applied by the active controller.
pub(super) async fn run(shard: &Rc<Shard>, link: &BrokerLink, op: AdminOp) -> AdminReply {
    let image = shard
        .cluster_view()
        .map(|v| v.image.clone())
        .unwrap_or_default();
    let results = match op {
        AdminOp::CreateTopics {
            topics,
            validate_only,
        } => {
            let default_rf = shard.config.cluster.default_replication_factor;
            let planned = topics
                .into_iter()
                .map(|t| {
                    let req = topic_request(shard, &image, t)?;
                    if validate_only {
                        control::create_topic(&image, &req, default_rf).map_err(from_control)?;
                    }
                    Ok(req)
                })
                .collect();
            if validate_only {
                done(planned)
            } else {
                apply(shard, link, planned, RpcBody::CreateTopics).await
            }
        }
        AdminOp::DeleteTopics { names } => {
            let planned = names
                .into_iter()
                .map(|n| {
                    if n == OFFSETS_TOPIC {
                        return Err(internal_topic(&n));
                    }
                    Ok(n)
                })
                .collect();
            apply(shard, link, planned, RpcBody::DeleteTopics).await
        }
        AdminOp::CreatePartitions {
            topics,
            validate_only,
        } => {
            let planned = topics
                .into_iter()
                .map(|(name, count, assignments)| {
                    if name == OFFSETS_TOPIC {
                        // Groups are placed by hash modulo this count.
                        return Err(internal_topic(&name));
                    }
                    if validate_only {
                        control::create_partitions(&image, &name, count, assignments.as_deref())
                            .map_err(from_control)?;
                    }
                    Ok((name, count, assignments))
                })
                .collect();
            if validate_only {
                done(planned)
            } else {
                apply(shard, link, planned, RpcBody::CreatePartitions).await
            }
        }
        AdminOp::AlterConfigs {
            topics,
            replace,
            validate_only,
        } => {
            let planned = topics
                .into_iter()
                .map(|(name, changes)| {
                    let t = image.topics.get(&name).ok_or_else(|| {
                        err(
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("The topic '{name}' does not exist."),
                        )
                    })?;
                    let current = if replace {
                        BTreeMap::new()
                    } else {
                        t.configs.clone()
                    };
                    let configs = altered_configs(current, changes)
                        .map_err(|m| err(ErrorCode::INVALID_CONFIG, m))?;
                    validate_topic_configs(&configs)
                        .map_err(|m| err(ErrorCode::INVALID_CONFIG, m))?;
                    Ok((name, configs))
                })
                .collect();
            if validate_only {
                done(planned)
            } else {
                apply(shard, link, planned, RpcBody::SetTopicConfigs).await
            }
        }
        AdminOp::AllocateProducerId => return allocate_producer_id(shard, link).await,
    };
    AdminReply {
        results,
        failure: None,
        allocated: None,
    }
}

/// The refusal to delete or repartition an internal topic.
fn internal_topic(name: &str) -> AdminError {
    err(
        ErrorCode::INVALID_TOPIC_EXCEPTION,
        format!("`{name}` is an internal topic and cannot be changed this way"),
    )
}

/// Results of a change checked only (validate_only).
fn done<T>(planned: Vec<Result<T, AdminError>>) -> Vec<Result<(), AdminError>> {
    planned.into_iter().map(|r| r.map(|_| ())).collect()
}

/// Sends the items that passed the checks to the controller in one request (`make`), waits
/// for this broker to apply the image with the change, and merges the answers back into
/// item order.
async fn apply<T>(
    shard: &Shard,
    link: &BrokerLink,
    planned: Vec<Result<T, AdminError>>,
    make: impl FnOnce(Vec<T>) -> RpcBody,
) -> Vec<Result<(), AdminError>> {
    let mut results: Vec<Option<Result<(), AdminError>>> = Vec::with_capacity(planned.len());
    let mut send = Vec::new();
    for p in planned {
        match p {
            Ok(item) => {
                send.push(item);
                results.push(None);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let n = send.len();
    let mut answers: Vec<Result<(), AdminError>> = if n == 0 {
        Vec::new()
    } else {
        match link.call(make(send)).await {
            Ok(ControllerReply::Applied { results, offset }) if results.len() == n => {
                wait_applied(shard, offset).await;
                results
                    .into_iter()
                    .map(|r| r.map_err(from_control))
                    .collect()
            }
            Ok(other) => vec![
                Err(err(
                    ErrorCode::UNKNOWN_SERVER_ERROR,
                    format!("unexpected answer from the controller: {other:?}"),
                ));
                n
            ],
            Err(ControllerError::Refused(e)) => vec![Err(from_control(e)); n],
            Err(e) => vec![Err(err(ErrorCode::REQUEST_TIMED_OUT, e.to_string())); n],
        }
    };
    answers.reverse();
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                answers
                    .pop()
                    .unwrap_or_else(|| Err(err(ErrorCode::UNKNOWN_SERVER_ERROR, "no answer")))
            })
        })
        .collect()
}

/// A CreateTopics item checked with Kafka's rules (`ReplicationControlManager.createTopic`)
/// and turned into the controller's request; placement is the controller's.
fn topic_request(
    shard: &Shard,
    image: &ClusterImage,
    t: NewTopic,
) -> Result<TopicRequest, AdminError> {
    meta::validate_topic_name(&t.name).map_err(|m| err(ErrorCode::INVALID_TOPIC_EXCEPTION, m))?;
    if image.topics.contains_key(&t.name) {
        return Err(err(
            ErrorCode::TOPIC_ALREADY_EXISTS,
            format!("Topic '{}' already exists.", t.name),
        ));
    }
    if !t.null_configs.is_empty() {
        return Err(err(
            ErrorCode::INVALID_CONFIG,
            format!(
                "Null value not supported for topic configs: {}",
                t.null_configs.join(",")
            ),
        ));
    }
    validate_topic_configs(&t.configs).map_err(|m| err(ErrorCode::INVALID_CONFIG, m))?;
    let (partitions, assignments) = if !t.assignments.is_empty() {
        if t.replication_factor != -1 {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                "A manual partition assignment was specified, but replication factor was not set to -1.",
            ));
        }
        if t.partitions != -1 {
            return Err(err(
                ErrorCode::INVALID_REQUEST,
                "A manual partition assignment was specified, but numPartitions was not set to -1.",
            ));
        }
        let by_partition: BTreeMap<i32, Vec<NodeId>> = t.assignments.iter().cloned().collect();
        let count = by_partition.len() as i32;
        if by_partition.len() != t.assignments.len() || !by_partition.keys().copied().eq(0..count) {
            return Err(err(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                "partitions should be a consecutive 0-based integer sequence",
            ));
        }
        (count, Some(by_partition.into_values().collect()))
    } else {
        if t.partitions == 0 || t.partitions < -1 {
            return Err(err(
                ErrorCode::INVALID_PARTITIONS,
                "Number of partitions was set to an invalid non-positive value.",
            ));
        }
        if t.replication_factor == 0 || t.replication_factor < -1 {
            return Err(err(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                "Replication factor must be larger than 0, or -1 to use the default value.",
            ));
        }
        let partitions = if t.partitions == -1 {
            shard.config.num_partitions
        } else {
            t.partitions
        };
        (partitions, None)
    };
    Ok(TopicRequest {
        name: t.name,
        id: meta::new_topic_id(),
        partitions,
        replication_factor: t.replication_factor,
        assignments,
        configs: t.configs,
    })
}

/// Hands out the next producer id from this broker's block, asking the controller for a new
/// block (KRaft's `AllocateProducerIds`) when it is used up: ids are unique across brokers.
async fn allocate_producer_id(shard: &Rc<Shard>, link: &BrokerLink) -> AdminReply {
    let failed = |e: AdminError| AdminReply {
        results: Vec::new(),
        failure: Some(e),
        allocated: None,
    };
    let Ok(_permit) = shard.controller.lock.acquire_permit(1).await else {
        return AdminReply::unavailable();
    };
    let (next_id, end) = shard.controller.producer_ids.get();
    if next_id < end {
        shard.controller.producer_ids.set((next_id + 1, end));
    } else {
        let broker_id = link.node_id();
        match link.call(RpcBody::AllocateProducerIds { broker_id }).await {
            Ok(ControllerReply::ProducerIds { first, end }) if first < end => {
                shard.controller.producer_ids.set((first + 1, end));
                return AdminReply {
                    results: vec![Ok(())],
                    failure: None,
                    allocated: Some(first),
                };
            }
            Ok(other) => {
                return failed(err(
                    ErrorCode::UNKNOWN_SERVER_ERROR,
                    format!("unexpected answer from the controller: {other:?}"),
                ))
            }
            Err(e) => return failed(err(ErrorCode::COORDINATOR_NOT_AVAILABLE, e.to_string())),
        }
    }
    AdminReply {
        results: vec![Ok(())],
        failure: None,
        allocated: Some(next_id),
    }
}

/// Creates `__consumer_offsets` through the controller if the cluster has none yet (Kafka
/// does so on the first FindCoordinator); its partitions are spread over the brokers.
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) {
    if shard.metadata().topics.contains_key(OFFSETS_TOPIC) {
        return;
    }
    let reply = shard
        .admin(AdminOp::CreateTopics {
            topics: vec![shard.offsets_topic()],
            validate_only: false,
        })
        .await;
    match reply.result(0) {
        Ok(()) => tracing::info!("created {OFFSETS_TOPIC}"),
        Err(e) if e.code == ErrorCode::TOPIC_ALREADY_EXISTS => {}
        Err(e) => tracing::warn!(error = %e.message, "cannot create {OFFSETS_TOPIC} yet"),
    }
}
