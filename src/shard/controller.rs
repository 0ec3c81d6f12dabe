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
use crate::config::{list_items, topic_config, validate_topic_configs};
use crate::error_code::ErrorCode;
use crate::group::OFFSETS_TOPIC;
use crate::meta::{self, Metadata, TopicMeta};

/// A topic to create.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions; -1 takes `num.partitions`.
    pub partitions: i32,
    /// Replication factor; -1 or 1 on a single broker.
    pub replication_factor: i16,
    /// Config overrides by Kafka name.
    pub configs: BTreeMap<String, String>,
    /// Manual replica assignments, `(partition, broker ids)`; when given, their number is the
    /// partition count and `partitions` and `replication_factor` must be -1 (as in Kafka).
    pub assignments: Vec<(i32, Vec<i32>)>,
    /// Config names the request gave without a value (refused, as in Kafka).
    pub null_configs: Vec<String>,
}

/// One topic of a CreatePartitions: (topic, new total count, the broker ids of each added
/// partition when the request assigns them).
pub type PartitionGrowth = (String, i32, Option<Vec<Vec<i32>>>);

/// One change to a topic config override, with IncrementalAlterConfigs' semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set the value.
    Set(String),
    /// Remove the override (back to the default).
    Delete,
    /// Add comma-separated items missing from a LIST value (current, else default).
    Append(String),
    /// Remove comma-separated items from a LIST value (current, else default).
    Subtract(String),
}

/// Config changes of one topic, by key, applied in order.
pub type ConfigChanges = Vec<(String, ConfigOp)>;

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
        /// The topics to grow.
        topics: Vec<PartitionGrowth>,
        /// Only validate; change nothing.
        validate_only: bool,
    },
    /// Hand out one producer id (InitProducerId).
    AllocateProducerId,
    /// Change topic config overrides (IncrementalAlterConfigs), or replace them all (the
    /// legacy AlterConfigs: `replace`, every change a `Set`, every other override removed).
    AlterConfigs {
        /// (topic, changes).
        topics: Vec<(String, ConfigChanges)>,
        /// Remove every override the changes do not name.
        replace: bool,
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
    pub(super) lock: Semaphore,
    /// The current block of producer ids: (next to hand out, end of the block).
    pub(super) producer_ids: std::cell::Cell<(i64, i64)>,
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
    if let Some(link) = &shard.cluster {
        // A broker of a multi-node cluster: the active controller applies the change.
        return super::cluster::run(shard, link, op).await;
    }
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
                    view: None,
                    reply,
                },
            )
            .await;
        acks.push(rx);
    }
    let mut unapplied = Vec::new();
    for (to, rx) in acks.into_iter().enumerate() {
        if rx.await.is_err() {
            unapplied.push(to);
        }
    }
    if !unapplied.is_empty() {
        // The change is saved (it holds after a restart) but a shard did not confirm it has
        // it: answering success could let a client act on a shard that does not know it yet.
        tracing::error!(
            version = next.version,
            shards = ?unapplied,
            "a metadata change is saved but not confirmed applied by every shard"
        );
        return AdminReply {
            results,
            failure: Some(err(
                ErrorCode::REQUEST_TIMED_OUT,
                format!(
                    "metadata version {} is saved but shards {unapplied:?} did not confirm it",
                    next.version
                ),
            )),
            allocated: None,
        };
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
                .map(|(name, count, assignments)| {
                    if name == OFFSETS_TOPIC {
                        // Groups are placed by hash modulo this count.
                        return Err(internal_topic(&name));
                    }
                    let hosted = hosted_partitions(next);
                    let t = next.topics.get_mut(&name).ok_or_else(|| {
                        err(
                            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            format!("topic `{name}` does not exist"),
                        )
                    })?;
                    // Kafka's checks and messages (`ReplicationControlManager`).
                    if count == t.partitions {
                        return Err(err(
                            ErrorCode::INVALID_PARTITIONS,
                            format!("Topic already has {count} partition(s)."),
                        ));
                    }
                    if count < t.partitions {
                        return Err(err(
                            ErrorCode::INVALID_PARTITIONS,
                            format!(
                                "The topic {name} currently has {} partition(s); {count} would not be an increase.",
                                t.partitions
                            ),
                        ));
                    }
                    if let Some(lists) = assignments {
                        let added = count - t.partitions;
                        if lists.len() != added as usize {
                            return Err(err(
                                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                                format!(
                                    "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                                    lists.len()
                                ),
                            ));
                        }
                        // Every partition here has one replica.
                        for brokers in &lists {
                            check_replicas(brokers, shard.config.node_id, Some(1))?;
                        }
                    }
                    let added = count - t.partitions;
                    check_partitions_max(hosted, added, shard.config.partitions_max)?;
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
            replace,
            validate_only,
        } => {
            let results = topics
                .into_iter()
                .map(|(name, changes)| {
                    let t = next.topics.get_mut(&name).ok_or_else(|| {
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

/// Applies IncrementalAlterConfigs' operations to a topic's overrides, as Kafka's controller
/// does: APPEND and SUBTRACT only on LIST settings, starting from the override or else the
/// default, adding only items not yet there. Values are checked afterwards, all together.
pub fn altered_configs(
    mut configs: BTreeMap<String, String>,
    changes: ConfigChanges,
) -> Result<BTreeMap<String, String>, String> {
    for (key, op) in changes {
        let (items, append) = match op {
            ConfigOp::Set(v) => {
                configs.insert(key, v);
                continue;
            }
            ConfigOp::Delete => {
                configs.remove(&key);
                continue;
            }
            ConfigOp::Append(items) => (items, true),
            ConfigOp::Subtract(items) => (items, false),
        };
        let def = topic_config(&key).filter(|d| d.kind.is_list());
        let Some(def) = def else {
            let op = if append { "APPEND" } else { "SUBTRACT" };
            return Err(format!(
                "Can't {op} to key {key} because its type is not LIST."
            ));
        };
        let current = configs
            .get(&key)
            .map_or(def.kafka_default.to_string(), Clone::clone);
        let mut list: Vec<String> = list_items(&current).into_iter().map(String::from).collect();
        for item in items.split(',') {
            if append {
                if !list.iter().any(|x| x == item) {
                    list.push(item.to_string());
                }
            } else if let Some(i) = list.iter().position(|x| x == item) {
                list.remove(i);
            }
        }
        configs.insert(key, list.join(","));
    }
    Ok(configs)
}

/// Kafka's `validateManualPartitionAssignment` on one broker, `node_id`: a non-empty list of
/// registered brokers, none twice, as many as the other partitions have (`replication_factor`);
/// returns the list's length.
fn check_replicas(
    brokers: &[i32],
    node_id: i32,
    replication_factor: Option<usize>,
) -> Result<usize, AdminError> {
    let invalid = |m: String| err(ErrorCode::INVALID_REPLICA_ASSIGNMENT, m);
    if brokers.is_empty() {
        return Err(invalid(
            "The manual partition assignment includes an empty replica list.".into(),
        ));
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    for (i, b) in sorted.iter().enumerate() {
        if *b != node_id {
            return Err(invalid(format!(
                "The manual partition assignment includes broker {b}, but no such broker is registered."
            )));
        }
        if i > 0 && sorted[i - 1] == *b {
            return Err(invalid(format!(
                "The manual partition assignment includes the broker {b} more than once."
            )));
        }
    }
    if let Some(rf) = replication_factor.filter(|rf| *rf != sorted.len()) {
        return Err(invalid(format!(
            "The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {rf} replica(s).",
            sorted.len()
        )));
    }
    Ok(sorted.len())
}

/// The partition count of a topic created with manual replica assignments, after Kafka's
/// checks (`ReplicationControlManager.createTopic`), on one broker, `node_id`.
fn manual_partitions(t: &NewTopic, node_id: i32) -> Result<i32, AdminError> {
    let invalid = |m: String| err(ErrorCode::INVALID_REPLICA_ASSIGNMENT, m);
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
    let mut seen = std::collections::BTreeSet::new();
    let mut replication_factor = None;
    for (partition, brokers) in &t.assignments {
        if !seen.insert(*partition) {
            return Err(invalid(format!(
                "Found multiple manual partition assignments for partition {partition}"
            )));
        }
        replication_factor = Some(check_replicas(brokers, node_id, replication_factor)?);
    }
    let count = i32::try_from(seen.len()).unwrap_or(i32::MAX);
    if !seen.iter().copied().eq(0..count) {
        return Err(invalid(
            "partitions should be a consecutive 0-based integer sequence".into(),
        ));
    }
    Ok(count)
}

/// Partitions of every topic in `meta`, internal ones included: what this broker hosts.
fn hosted_partitions(meta: &Metadata) -> u64 {
    meta.topics
        .values()
        .map(|t| t.partitions.max(0) as u64)
        .sum()
}

/// Refuses adding `added` partitions to the `hosted` ones when the total would pass
/// `partitions_max` (the open-file budget, `server::fd_budget`).
fn check_partitions_max(hosted: u64, added: i32, partitions_max: usize) -> Result<(), AdminError> {
    let total = hosted + added.max(0) as u64;
    if total > partitions_max as u64 {
        return Err(err(
            ErrorCode::INVALID_PARTITIONS,
            format!(
                "This broker hosts {hosted} partition(s); {added} more would exceed its limit of \
                 {partitions_max}, which the open-file limit (ulimit -n, systemd LimitNOFILE) sets. \
                 Raise that limit and restart the broker."
            ),
        ));
    }
    Ok(())
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
    let partitions = if !t.assignments.is_empty() {
        manual_partitions(&t, shard.config.node_id)?
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
        if t.replication_factor > 1 {
            return Err(err(
                ErrorCode::INVALID_REPLICATION_FACTOR,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only 1 broker(s) are registered.",
                    rf = t.replication_factor
                ),
            ));
        }
        if t.partitions == -1 {
            shard.config.num_partitions
        } else {
            t.partitions
        }
    };
    check_partitions_max(
        hosted_partitions(next),
        partitions,
        shard.config.partitions_max,
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(list: &[(&str, ConfigOp)]) -> ConfigChanges {
        list.iter()
            .map(|(k, op)| (k.to_string(), op.clone()))
            .collect()
    }

    #[test]
    fn append_and_subtract_follow_kafka() {
        let key = "leader.replication.throttled.replicas";
        // APPEND starts from the default (empty here) and adds only missing items.
        let c = altered_configs(
            BTreeMap::new(),
            changes(&[
                (key, ConfigOp::Append("0:0".into())),
                (key, ConfigOp::Append("1:0,0:0".into())),
            ]),
        )
        .expect("list config");
        assert_eq!(c[key], "0:0,1:0");
        let c = altered_configs(c, changes(&[(key, ConfigOp::Subtract("0:0,7:7".into()))]))
            .expect("list config");
        assert_eq!(c[key], "1:0");
        // cleanup.policy starts from its default, `delete`.
        let c = altered_configs(
            BTreeMap::new(),
            changes(&[("cleanup.policy", ConfigOp::Subtract("delete".into()))]),
        )
        .expect("list config");
        assert_eq!(c["cleanup.policy"], "");
        // Not a LIST: Kafka's message.
        let e = altered_configs(
            BTreeMap::new(),
            changes(&[("retention.ms", ConfigOp::Append("1".into()))]),
        )
        .expect_err("not a list");
        assert_eq!(
            e,
            "Can't APPEND to key retention.ms because its type is not LIST."
        );
        // SET and DELETE.
        let c = altered_configs(
            BTreeMap::new(),
            changes(&[
                ("retention.ms", ConfigOp::Set("5".into())),
                ("segment.ms", ConfigOp::Set("9".into())),
                ("retention.ms", ConfigOp::Delete),
            ]),
        )
        .expect("set and delete");
        assert_eq!(c.len(), 1);
        assert_eq!(c["segment.ms"], "9");
    }

    fn manual(partitions: i32, rf: i16, assignments: &[(i32, &[i32])]) -> NewTopic {
        NewTopic {
            name: "t".into(),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
            assignments: assignments.iter().map(|(p, b)| (*p, b.to_vec())).collect(),
            null_configs: Vec::new(),
        }
    }

    #[test]
    fn manual_assignments_are_checked_as_kafka_does() {
        let code = |t: &NewTopic| manual_partitions(t, 3).map_err(|e| e.code);
        assert_eq!(code(&manual(-1, -1, &[(0, &[3])])), Ok(1));
        assert_eq!(code(&manual(-1, -1, &[(1, &[3]), (0, &[3])])), Ok(2));
        assert_eq!(
            code(&manual(1, -1, &[(0, &[3])])),
            Err(ErrorCode::INVALID_REQUEST)
        );
        assert_eq!(
            code(&manual(-1, 1, &[(0, &[3])])),
            Err(ErrorCode::INVALID_REQUEST)
        );
        for bad in [
            manual(-1, -1, &[(0, &[4])]),
            manual(-1, -1, &[(0, &[])]),
            manual(-1, -1, &[(0, &[3, 3])]),
            manual(-1, -1, &[(0, &[3]), (0, &[3])]),
            manual(-1, -1, &[(1, &[3])]),
        ] {
            assert_eq!(
                code(&bad),
                Err(ErrorCode::INVALID_REPLICA_ASSIGNMENT),
                "{bad:?}"
            );
        }
    }
}
