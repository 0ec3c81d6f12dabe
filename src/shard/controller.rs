//! The metadata writer. Runs on shard 0 only: validates an admin change, persists the new
//! snapshot (temp file, fsync, rename), broadcasts it to every shard and waits until each has
//! applied it (opened or deleted its partitions) before answering, so that a client that sees
//! "topic created" can produce to it at once.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use glommio::sync::Semaphore;

use super::{Shard, ShardMsg};
use crate::config::{apply_topic_key, topic_log_config};
use crate::error_code::ErrorCode;
use crate::group::OFFSETS_TOPIC;
use crate::meta::{self, Metadata, TopicMeta};

/// A topic to create.
#[derive(Debug, Clone)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions; -1 takes `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 or 1 on a single broker.
    pub replication_factor: i16,
    /// Config overrides by Kafka name.
    pub configs: BTreeMap<String, String>,
}

/// Config changes of one topic: set (`Some`) or delete (`None`) by key.
pub type ConfigChanges = Vec<(String, Option<String>)>;

/// An admin change, applied by shard 0.
#[derive(Debug, Clone)]
pub enum AdminOp {
    /// Create topics (each one succeeds or fails on its own).
    CreateTopics {
        /// The topics.
        topics: Vec<NewTopic>,
        /// Only validate; change nothing.
        validate_only: bool,
    },
    /// Delete topics by name.
    DeleteTopics {
        /// The names.
        names: Vec<String>,
    },
    /// Grow topics to a new partition count.
    CreatePartitions {
        /// (topic, new total count).
        topics: Vec<(String, i32)>,
        /// Only validate; change nothing.
        validate_only: bool,
    },
    /// Hand out one producer id (InitProducerId).
    AllocateProducerId,
    /// Set (`Some`) or delete (`None`) topic config overrides.
    AlterConfigs {
        /// (topic, [(key, value)]).
        topics: Vec<(String, ConfigChanges)>,
        /// Only validate; change nothing.
        validate_only: bool,
    },
}

/// Why one item of an admin change failed: a Kafka error code and a readable message.
#[derive(Debug, Clone)]
pub struct AdminError {
    /// Kafka error code.
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

/// The outcome of an admin change: one result per item, in request order.
#[derive(Debug, Clone)]
pub struct AdminReply {
    /// Per item.
    pub results: Vec<Result<(), AdminError>>,
    /// Set when the whole change could not be applied (e.g. the snapshot write failed).
    pub failure: Option<AdminError>,
    /// The producer id handed out by `AllocateProducerId`.
    pub allocated: Option<i64>,
}

impl AdminReply {
    /// The reply when shard 0 could not be reached.
    pub fn unavailable() -> Self {
        AdminReply {
            results: Vec::new(),
            failure: Some(AdminError {
                code: ErrorCode::KAFKA_STORAGE_ERROR,
                message: "controller unavailable".into(),
            }),
            allocated: None,
        }
    }

    /// The result of item `i` (the whole-change failure wins).
    pub fn result(&self, i: usize) -> Result<(), AdminError> {
        if let Some(f) = &self.failure {
            return Err(f.clone());
        }
        self.results.get(i).cloned().unwrap_or(Ok(()))
    }
}

/// Shard 0's admin state: one change at a time.
pub struct Controller {
    lock: Semaphore,
    /// The current block of producer ids: (next to hand out, end of the block).
    producer_ids: std::cell::Cell<(i64, i64)>,
}

/// Producer ids are persisted in blocks of this many: one snapshot write per block.
const PRODUCER_ID_BLOCK: i64 = 1000;

impl Controller {
    /// A controller with no change in flight.
    pub fn new() -> Self {
        Controller {
            lock: Semaphore::new(1),
            producer_ids: std::cell::Cell::new((0, 0)),
        }
    }
}

impl Default for Controller {
    fn default() -> Self {
        Self::new()
    }
}

/// The refusal to delete or repartition an internal topic.
fn internal_topic(name: &str) -> AdminError {
    err(
        ErrorCode::INVALID_TOPIC_EXCEPTION,
        format!("`{name}` is an internal topic and cannot be changed this way"),
    )
}

fn err(code: ErrorCode, message: impl Into<String>) -> AdminError {
    AdminError {
        code,
        message: message.into(),
    }
}

/// Runs an admin change on shard 0.
pub(super) async fn run(shard: &Rc<Shard>, op: AdminOp) -> AdminReply {
    assert_eq!(shard.id, 0, "admin changes run on shard 0 only");
    let Ok(_permit) = shard.controller.lock.acquire_permit(1).await else {
        return AdminReply::unavailable();
    };
    if let AdminOp::AllocateProducerId = op {
        return allocate_producer_id(shard).await;
    }
    let mut next: Metadata = (*shard.metadata()).clone();
    let (results, validate_only) = plan(shard, &mut next, op);
    let changed = results.iter().any(Result::is_ok) && !validate_only;
    if !changed {
        return AdminReply {
            results,
            failure: None,
            allocated: None,
        };
    }
    next.version += 1;
    if let Err(e) = meta::save(&shard.config.data_dir, &next) {
        tracing::error!(error = %e, "cannot persist metadata");
        return AdminReply {
            results,
            failure: Some(err(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string())),
            allocated: None,
        };
    }
    let next = Arc::new(next);
    let mut acks = Vec::with_capacity(shard.nr_shards);
    for to in 0..shard.nr_shards {
        let (reply, rx) = oneshot::channel();
        shard
            .send(
                to,
                ShardMsg::ApplyMetadata {
                    meta: next.clone(),
                    reply,
                },
            )
            .await;
        acks.push(rx);
    }
    for rx in acks {
        let _ = rx.await;
    }
    AdminReply {
        results,
        failure: None,
        allocated: None,
    }
}

/// Hands out the next producer id, persisting a new block first when the current one is used
/// up, so ids stay unique across restarts (a restart skips the rest of the block).
async fn allocate_producer_id(shard: &Rc<Shard>) -> AdminReply {
    let (next_id, end) = shard.controller.producer_ids.get();
    if next_id < end {
        shard.controller.producer_ids.set((next_id + 1, end));
        return AdminReply {
            results: vec![Ok(())],
            failure: None,
            allocated: Some(next_id),
        };
    }
    let mut next: Metadata = (*shard.metadata()).clone();
    let start = next.producer_id_next;
    next.producer_id_next = start + PRODUCER_ID_BLOCK;
    next.version += 1;
    if let Err(e) = meta::save(&shard.config.data_dir, &next) {
        return AdminReply {
            results: Vec::new(),
            failure: Some(err(ErrorCode::KAFKA_STORAGE_ERROR, e.to_string())),
            allocated: None,
        };
    }
    // Only shard 0 reads `producer_id_next`; the other shards get it with the next change.
    *shard.meta.borrow_mut() = Arc::new(next);
    shard
        .controller
        .producer_ids
        .set((start + 1, start + PRODUCER_ID_BLOCK));
    AdminReply {
        results: vec![Ok(())],
        failure: None,
        allocated: Some(start),
    }
}

/// Applies the change to `next` item by item; returns per-item results and validate_only.
fn plan(shard: &Shard, next: &mut Metadata, op: AdminOp) -> (Vec<Result<(), AdminError>>, bool) {
    match op {
        AdminOp::AllocateProducerId => (Vec::new(), true),
        AdminOp::CreateTopics {
            topics,
            validate_only,
        } => {
            let results = topics
                .into_iter()
                .map(|t| create_topic(shard, next, t, validate_only))
                .collect();
            (results, validate_only)
        }
        AdminOp::DeleteTopics { names } => {
            let results = names
                .into_iter()
                .map(|n| {
                    if n == OFFSETS_TOPIC {
                        return Err(internal_topic(&n));
                    }
                    next.topics.remove(&n).map(|_| ()).ok_or_else(|| {
                        err(
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("topic `{n}` does not exist"),
                        )
                    })
                })
                .collect();
            (results, false)
        }
        AdminOp::CreatePartitions {
            topics,
            validate_only,
        } => {
            let results = topics
                .into_iter()
                .map(|(name, count)| {
                    if name == OFFSETS_TOPIC {
                        // Groups are placed by hash modulo this count.
                        return Err(internal_topic(&name));
                    }
                    let t = next.topics.get_mut(&name).ok_or_else(|| {
                        err(
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("topic `{name}` does not exist"),
                        )
                    })?;
                    if count <= t.partitions {
                        return Err(err(
                            ErrorCode::INVALID_PARTITIONS,
                            format!(
                                "topic `{name}` has {} partitions; the new count must be larger",
                                t.partitions
                            ),
                        ));
                    }
                    if count > 100_000 {
                        return Err(err(
                            ErrorCode::INVALID_PARTITIONS,
                            "at most 100000 partitions",
                        ));
                    }
                    if !validate_only {
                        t.partitions = count;
                    }
                    Ok(())
                })
                .collect();
            (results, validate_only)
        }
        AdminOp::AlterConfigs {
            topics,
            validate_only,
        } => {
            let results = topics
                .into_iter()
                .map(|(name, changes)| {
                    let t = next.topics.get_mut(&name).ok_or_else(|| {
                        err(
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("topic `{name}` does not exist"),
                        )
                    })?;
                    let mut configs = t.configs.clone();
                    for (k, v) in changes {
                        match v {
                            Some(v) => {
                                configs.insert(k, v);
                            }
                            None => {
                                configs.remove(&k);
                            }
                        }
                    }
                    topic_log_config(&shard.config.log, &configs)
                        .map_err(|e| err(ErrorCode::INVALID_CONFIG, e.to_string()))?;
                    if !validate_only {
                        t.configs = configs;
                    }
                    Ok(())
                })
                .collect();
            (results, validate_only)
        }
    }
}

fn create_topic(
    shard: &Shard,
    next: &mut Metadata,
    t: NewTopic,
    validate_only: bool,
) -> Result<(), AdminError> {
    meta::validate_topic_name(&t.name).map_err(|m| err(ErrorCode::INVALID_TOPIC_EXCEPTION, m))?;
    if next.topics.contains_key(&t.name) {
        return Err(err(
            ErrorCode::TOPIC_ALREADY_EXISTS,
            format!("topic `{}` already exists", t.name),
        ));
    }
    let partitions = if t.partitions == -1 {
        shard.config.num_partitions
    } else {
        t.partitions
    };
    if !(1..=100_000).contains(&partitions) {
        return Err(err(
            ErrorCode::INVALID_PARTITIONS,
            "partitions must be between 1 and 100000",
        ));
    }
    if t.replication_factor != -1 && t.replication_factor != 1 {
        return Err(err(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {} is larger than the 1 available broker",
                t.replication_factor
            ),
        ));
    }
    let mut probe = shard.config.log.clone();
    for (k, v) in &t.configs {
        apply_topic_key(&mut probe, k, v)
            .map_err(|why| err(ErrorCode::INVALID_CONFIG, format!("{k}={v}: {why}")))?;
    }
    if !validate_only {
        next.topics.insert(
            t.name.clone(),
            TopicMeta {
                name: t.name,
                id: meta::new_topic_id(),
                partitions,
                configs: t.configs,
            },
        );
    }
    Ok(())
}
