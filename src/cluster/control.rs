//! The active controller's decisions, as pure functions of the image: which records a request
//! or an event becomes. Placement of replicas, leader election on fencing and on controlled
//! shutdown, broker registration. Nothing here does I/O; the quorum proposes what it returns.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::image::{ClusterImage, Endpoint, MetadataRecord, NodeId, NO_LEADER};
use crate::error_code::ErrorCode;

/// A request the controller refused: Kafka's error code and a readable message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code}: {message}")]
pub struct ControlError {
    /// Kafka's error code for the client.
    #[serde(with = "code_on_the_wire")]
    pub code: ErrorCode,
    /// What was wrong.
    pub message: String,
}

/// An [`ErrorCode`] travels between controllers as its Kafka number.
mod code_on_the_wire {
    use super::ErrorCode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i16(c.code())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ErrorCode, D::Error> {
        Ok(ErrorCode::from_code(i16::deserialize(d)?))
    }
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> ControlError {
    ControlError {
        code,
        message: message.into(),
    }
}

/// A topic to create through the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRequest {
    /// Name (already checked against Kafka's naming rules).
    pub name: String,
    /// Topic id to give it.
    pub id: [u8; 16],
    /// Partition count; ignored when `assignments` is given.
    pub partitions: i32,
    /// Replication factor; -1 takes `default.replication.factor`.
    pub replication_factor: i16,
    /// Explicit replica sets, partition by partition (CreateTopics' `assignments`).
    pub assignments: Option<Vec<Vec<NodeId>>>,
    /// Config overrides (already validated).
    pub configs: BTreeMap<String, String>,
}

/// Kafka's striped placement. Usable brokers are interleaved by rack (one from each rack in
/// turn); partition `p`'s leader is the broker at `(start + p) % n` of that order, so leaders
/// walk over every broker; its followers are the next brokers in that order, preferring a rack
/// not yet used by the partition. Fails with `INVALID_REPLICATION_FACTOR` when there are fewer
/// usable brokers than `replication_factor`.
pub fn place_replicas(
    image: &ClusterImage,
    partitions: i32,
    replication_factor: i16,
    start: usize,
) -> Result<Vec<Vec<NodeId>>, ControlError> {
    if replication_factor < 1 {
        return Err(refuse(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!("replication factor must be at least 1, got {replication_factor}"),
        ));
    }
    if partitions < 1 {
        return Err(refuse(
            ErrorCode::INVALID_PARTITIONS,
            format!("number of partitions must be at least 1, got {partitions}"),
        ));
    }
    // Racks in order, each with its brokers in id order; a broker without a rack is its own.
    let mut racks: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
    for b in image.usable_brokers() {
        let rack = b.rack.clone().unwrap_or_else(|| format!("\0{}", b.id));
        racks.entry(rack).or_default().push(b.id);
    }
    let rack_of: BTreeMap<NodeId, String> = racks
        .iter()
        .flat_map(|(r, ids)| ids.iter().map(move |id| (*id, r.clone())))
        .collect();
    let mut order = Vec::new();
    let longest = racks.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for ids in racks.values() {
            if let Some(id) = ids.get(i) {
                order.push(*id);
            }
        }
    }
    let n = order.len();
    let rf = replication_factor as usize;
    if rf > n {
        return Err(refuse(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "Unable to replicate the partition {rf} time(s): the target replication factor \
                 of {rf} cannot be reached because only {n} broker(s) are registered"
            ),
        ));
    }
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions as usize {
        let first = (start + p) % n;
        let mut replicas = vec![order[first]];
        let mut used_racks: BTreeSet<&String> = BTreeSet::new();
        used_racks.insert(&rack_of[&order[first]]);
        // Followers: first pass takes brokers on unused racks, second pass fills up.
        for prefer_new_rack in [true, false] {
            for k in 1..n {
                if replicas.len() == rf {
                    break;
                }
                let id = order[(first + k) % n];
                if replicas.contains(&id) || (prefer_new_rack && used_racks.contains(&rack_of[&id]))
                {
                    continue;
                }
                used_racks.insert(&rack_of[&id]);
                replicas.push(id);
            }
        }
        debug_assert_eq!(replicas.len(), rf);
        out.push(replicas);
    }
    Ok(out)
}

/// The records creating one topic: `Topic`, then one `Partition` per partition, then its
/// configs. Leaders are the first replica when usable, else the first usable replica.
pub fn create_topic(
    image: &ClusterImage,
    req: &TopicRequest,
    default_replication_factor: i16,
) -> Result<Vec<MetadataRecord>, ControlError> {
    if image.topics.contains_key(&req.name) {
        return Err(refuse(
            ErrorCode::TOPIC_ALREADY_EXISTS,
            format!("Topic '{}' already exists.", req.name),
        ));
    }
    let assignments = match &req.assignments {
        Some(a) => {
            check_assignments(image, a)?;
            a.clone()
        }
        None => {
            let rf = if req.replication_factor == -1 {
                default_replication_factor
            } else {
                req.replication_factor
            };
            // Start where the existing partitions leave off, so leaders of successive topics
            // spread over the brokers instead of all starting at the first.
            let start: usize = image.topics.values().map(|t| t.partitions.len()).sum();
            place_replicas(image, req.partitions, rf, start)?
        }
    };
    let usable: BTreeSet<NodeId> = image.usable_brokers().map(|b| b.id).collect();
    let mut records = vec![MetadataRecord::Topic {
        name: req.name.clone(),
        id: req.id,
    }];
    for (p, replicas) in assignments.iter().enumerate() {
        let isr: Vec<NodeId> = replicas
            .iter()
            .copied()
            .filter(|r| usable.contains(r))
            .collect();
        let leader = isr.first().copied().unwrap_or(NO_LEADER);
        records.push(MetadataRecord::Partition {
            topic_id: req.id,
            partition: p as i32,
            replicas: replicas.clone(),
            isr,
            leader,
        });
    }
    for (k, v) in &req.configs {
        records.push(MetadataRecord::Config {
            topic: req.name.clone(),
            key: k.clone(),
            value: Some(v.clone()),
        });
    }
    Ok(records)
}

/// Kafka's checks of a manual assignment: at least one partition, each with a non-empty
/// replica list of registered brokers and no duplicates, all of the same length.
fn check_assignments(image: &ClusterImage, a: &[Vec<NodeId>]) -> Result<(), ControlError> {
    let bad = |m: String| refuse(ErrorCode::INVALID_REPLICA_ASSIGNMENT, m);
    if a.is_empty() {
        return Err(bad("the manual partition assignment is empty".into()));
    }
    for (p, replicas) in a.iter().enumerate() {
        if replicas.is_empty() {
            return Err(bad(format!(
                "The manual partition assignment includes an empty replica list for partition {p}"
            )));
        }
        let distinct: BTreeSet<_> = replicas.iter().collect();
        if distinct.len() != replicas.len() {
            return Err(bad(format!(
                "The manual partition assignment includes the partition {p} with duplicate replicas {replicas:?}"
            )));
        }
        if let Some(r) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
            return Err(bad(format!(
                "The manual partition assignment includes broker {r}, which is not registered"
            )));
        }
        if replicas.len() != a[0].len() {
            return Err(bad(format!(
                "The manual partition assignment includes partition {p} with {} replicas, \
                 but partition 0 has {}",
                replicas.len(),
                a[0].len()
            )));
        }
    }
    Ok(())
}

/// The records deleting topic `name` (KRaft's `RemoveTopicRecord`); an unknown topic is
/// `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn delete_topic(image: &ClusterImage, name: &str) -> Result<Vec<MetadataRecord>, ControlError> {
    let t = image.topics.get(name).ok_or_else(|| {
        refuse(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic `{name}` does not exist"),
        )
    })?;
    Ok(vec![MetadataRecord::RemoveTopic { id: t.id }])
}

/// The records growing topic `name` to `count` partitions, with Kafka's checks and messages
/// (`ReplicationControlManager.createPartitions`): the new partitions get the replication
/// factor of partition 0, placed like a new topic's (or as `assignments` say, one replica
/// list per added partition).
pub fn create_partitions(
    image: &ClusterImage,
    name: &str,
    count: i32,
    assignments: Option<&[Vec<NodeId>]>,
) -> Result<Vec<MetadataRecord>, ControlError> {
    let t = image.topics.get(name).ok_or_else(|| {
        refuse(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("topic `{name}` does not exist"),
        )
    })?;
    let have = t.partitions.len() as i32;
    if count == have {
        return Err(refuse(
            ErrorCode::INVALID_PARTITIONS,
            format!("Topic already has {count} partition(s)."),
        ));
    }
    if count < have {
        return Err(refuse(
            ErrorCode::INVALID_PARTITIONS,
            format!(
                "The topic {name} currently has {have} partition(s); {count} would not be an increase."
            ),
        ));
    }
    let added = count - have;
    let placed = match assignments {
        Some(a) => {
            if a.len() != added as usize {
                return Err(refuse(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "Attempted to add {added} additional partition(s), but only {} assignment(s) were specified.",
                        a.len()
                    ),
                ));
            }
            check_assignments(image, a)?;
            a.to_vec()
        }
        None => {
            let rf = t.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
            let start: usize = image.topics.values().map(|t| t.partitions.len()).sum();
            place_replicas(image, added, rf, start)?
        }
    };
    let usable: BTreeSet<NodeId> = image.usable_brokers().map(|b| b.id).collect();
    Ok(placed
        .into_iter()
        .enumerate()
        .map(|(i, replicas)| {
            let isr: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|r| usable.contains(r))
                .collect();
            MetadataRecord::Partition {
                topic_id: t.id,
                partition: have + i as i32,
                leader: isr.first().copied().unwrap_or(NO_LEADER),
                replicas,
                isr,
            }
        })
        .collect())
}

/// The records turning topic `name`'s config overrides into `configs` (set what changed,
/// delete what is gone; the values were validated by the broker).
pub fn set_topic_configs(
    image: &ClusterImage,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, ControlError> {
    let t = image.topics.get(name).ok_or_else(|| {
        refuse(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("The topic '{name}' does not exist."),
        )
    })?;
    let mut out = Vec::new();
    for k in t.configs.keys().filter(|k| !configs.contains_key(*k)) {
        out.push(MetadataRecord::Config {
            topic: name.to_string(),
            key: k.clone(),
            value: None,
        });
    }
    for (k, v) in configs
        .iter()
        .filter(|(k, v)| t.configs.get(*k) != Some(*v))
    {
        out.push(MetadataRecord::Config {
            topic: name.to_string(),
            key: k.clone(),
            value: Some(v.clone()),
        });
    }
    Ok(out)
}

/// Producer ids are handed to brokers in blocks of this many (Kafka's
/// `ProducerIdsRecord` blocks are 1000 as well).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// The record handing the next block of producer ids to `broker_id`: ids from
/// `image.producer_id_next` up to, not including, the record's `next_producer_id`.
pub fn allocate_producer_ids(image: &ClusterImage, broker_id: NodeId) -> MetadataRecord {
    MetadataRecord::ProducerIds {
        broker_id,
        next_producer_id: image.producer_id_next + PRODUCER_ID_BLOCK_SIZE,
    }
}

/// A partition leader's request for a new ISR (Kafka's AlterPartition, KIP-497): made on
/// the leader epoch and partition epoch it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartitionRequest {
    /// The leader asking.
    pub broker_id: NodeId,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The leader epoch the leader holds.
    pub leader_epoch: i32,
    /// The partition epoch the leader holds.
    pub partition_epoch: i32,
    /// The ISR it asks for.
    pub isr: Vec<NodeId>,
}

/// Decides an AlterPartition, with Kafka's checks: the asker leads the partition
/// (NOT_LEADER_OR_FOLLOWER) in the current leader epoch (FENCED_LEADER_EPOCH) and saw the
/// current partition epoch (INVALID_UPDATE_VERSION: an ISR change it did not see happened);
/// the new ISR holds the leader, only replicas, no duplicates (INVALID_REQUEST), and adds only
/// unfenced brokers (INELIGIBLE_REPLICA). An unchanged ISR gives no record.
pub fn alter_partition(
    image: &ClusterImage,
    req: &AlterPartitionRequest,
) -> Result<Vec<MetadataRecord>, ControlError> {
    let t = image.topics.get(&req.topic).ok_or_else(|| {
        refuse(
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            format!("The topic '{}' does not exist.", req.topic),
        )
    })?;
    let st = usize::try_from(req.partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
        .ok_or_else(|| {
            refuse(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("{} has no partition {}", req.topic, req.partition),
            )
        })?;
    if st.leader != req.broker_id {
        return Err(refuse(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!(
                "broker {} does not lead {}-{}",
                req.broker_id, req.topic, req.partition
            ),
        ));
    }
    if st.leader_epoch != req.leader_epoch {
        return Err(refuse(
            ErrorCode::FENCED_LEADER_EPOCH,
            format!(
                "leader epoch {} is not the current {}",
                req.leader_epoch, st.leader_epoch
            ),
        ));
    }
    if st.partition_epoch != req.partition_epoch {
        return Err(refuse(
            ErrorCode::INVALID_UPDATE_VERSION,
            format!(
                "partition epoch {} is not the current {}",
                req.partition_epoch, st.partition_epoch
            ),
        ));
    }
    let unique: BTreeSet<NodeId> = req.isr.iter().copied().collect();
    if unique.len() != req.isr.len()
        || !unique.contains(&st.leader)
        || !unique.iter().all(|r| st.replicas.contains(r))
    {
        return Err(refuse(
            ErrorCode::INVALID_REQUEST,
            format!(
                "ISR {:?} must hold the leader {} and only replicas of {:?}, once each",
                req.isr, st.leader, st.replicas
            ),
        ));
    }
    let usable: BTreeSet<NodeId> = image.usable_brokers().map(|b| b.id).collect();
    if let Some(r) = req
        .isr
        .iter()
        .find(|r| !st.isr.contains(r) && !usable.contains(r))
    {
        return Err(refuse(
            ErrorCode::INELIGIBLE_REPLICA,
            format!("broker {r} is fenced or shutting down and cannot join the ISR"),
        ));
    }
    if req.isr == st.isr {
        return Ok(Vec::new());
    }
    Ok(vec![MetadataRecord::PartitionChange {
        topic_id: t.id,
        partition: req.partition,
        leader: None,
        isr: Some(req.isr.clone()),
    }])
}

/// Until partition data is replicated (issue 18), a partition with more than one replica
/// would list followers that hold no data: such records are refused with
/// `INVALID_REPLICATION_FACTOR`.
pub fn refuse_unreplicated_followers(records: &[MetadataRecord]) -> Result<(), ControlError> {
    let wide = records.iter().find_map(|r| match r {
        MetadataRecord::Partition { replicas, .. } if replicas.len() > 1 => Some(replicas.len()),
        _ => None,
    });
    match wide {
        Some(rf) => Err(refuse(
            ErrorCode::INVALID_REPLICATION_FACTOR,
            format!(
                "replication factor {rf} refused: replication is not built yet, so every \
                 partition has exactly one replica (use replication factor 1)"
            ),
        )),
        None => Ok(()),
    }
}

/// A broker's registration, with Kafka's rules (`ClusterControlManager.registerBroker`):
/// - another incarnation holding the id while its session is alive (`holder_alive`, and not
///   fenced) is `DUPLICATE_BROKER_REGISTRATION` (the broker retries until that session runs
///   out);
/// - the same incarnation again (a retried request whose answer was lost) with the same
///   endpoints and rack amends nothing: no records, the registration and its epoch stand;
/// - otherwise the registration record (the broker starts fenced and is unfenced once it
///   heartbeats). A new incarnation replacing one that is not fenced yet (its session ran out
///   a moment ago) is first handled as that incarnation's unclean shutdown, as Kafka's
///   `BrokerUncleanShutdownHandler`: it is fenced and its leaderships move away (leader
///   epochs bumped), so nothing the dead process led keeps its epoch.
pub fn register_broker(
    image: &ClusterImage,
    id: NodeId,
    incarnation: [u8; 16],
    endpoints: Vec<Endpoint>,
    rack: Option<String>,
    holder_alive: bool,
) -> Result<Vec<MetadataRecord>, ControlError> {
    let mut out = Vec::new();
    if let Some(b) = image.brokers.get(&id) {
        if b.incarnation == incarnation {
            if b.endpoints == endpoints && b.rack == rack {
                return Ok(out);
            }
        } else if !b.fenced {
            if holder_alive {
                return Err(refuse(
                    ErrorCode::DUPLICATE_BROKER_REGISTRATION,
                    format!(
                        "Another broker is registered with node.id {id} and its session is \
                         still alive (a restarted broker is accepted once the old session \
                         runs out; two live nodes must not share a node.id)"
                    ),
                ));
            }
            out = fence_broker(image, id);
        }
    }
    out.push(MetadataRecord::RegisterBroker {
        id,
        incarnation,
        endpoints,
        rack,
    });
    Ok(out)
}

/// Leadership and ISR changes that take `leaving` out of every partition: it leads nothing
/// and leaves every ISR it is in, unless it is the last member (then the partition is offline,
/// leader -1, and the ISR keeps it: no unclean election). A new leader is the first ISR member
/// that is usable.
fn move_away(image: &ClusterImage, leaving: NodeId) -> Vec<MetadataRecord> {
    let usable: BTreeSet<NodeId> = image
        .usable_brokers()
        .map(|b| b.id)
        .filter(|id| *id != leaving)
        .collect();
    let mut out = Vec::new();
    for t in image.topics.values() {
        for (p, st) in t.partitions.iter().enumerate() {
            if !st.isr.contains(&leaving) && st.leader != leaving {
                continue;
            }
            let isr: Vec<NodeId> = if st.isr.len() > 1 {
                st.isr.iter().copied().filter(|r| *r != leaving).collect()
            } else {
                st.isr.clone()
            };
            let leader = if st.leader == leaving || st.leader == NO_LEADER {
                isr.iter()
                    .copied()
                    .find(|r| usable.contains(r))
                    .unwrap_or(NO_LEADER)
            } else {
                st.leader
            };
            if leader == st.leader && isr == st.isr {
                continue;
            }
            out.push(MetadataRecord::PartitionChange {
                topic_id: t.id,
                partition: p as i32,
                leader: (leader != st.leader).then_some(leader),
                isr: (isr != st.isr).then_some(isr),
            });
        }
    }
    out
}

/// A broker whose session ran out: its leaderships move, then it is fenced.
pub fn fence_broker(image: &ClusterImage, id: NodeId) -> Vec<MetadataRecord> {
    let mut out = move_away(image, id);
    out.push(MetadataRecord::FenceBroker { id });
    out
}

/// A broker asking to shut down (SIGTERM): it is marked, its leaderships move away first.
/// It is fenced once it stops heartbeating.
pub fn controlled_shutdown(image: &ClusterImage, id: NodeId) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::BrokerControlledShutdown { id }];
    out.extend(move_away(image, id));
    out
}

/// A fenced broker heartbeating again: unfenced, and it leads the offline partitions whose
/// ISR holds it.
pub fn unfence_broker(image: &ClusterImage, id: NodeId) -> Vec<MetadataRecord> {
    let mut out = vec![MetadataRecord::UnfenceBroker { id }];
    for t in image.topics.values() {
        for (p, st) in t.partitions.iter().enumerate() {
            if st.leader == NO_LEADER && st.isr.contains(&id) {
                out.push(MetadataRecord::PartitionChange {
                    topic_id: t.id,
                    partition: p as i32,
                    leader: Some(id),
                    isr: None,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: NodeId, rack: Option<&str>) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            incarnation: [id as u8; 16],
            endpoints: Vec::new(),
            rack: rack.map(str::to_string),
        }
    }

    fn apply(img: &mut ClusterImage, records: Vec<MetadataRecord>) {
        for r in records {
            let next = img.offset + 1;
            img.apply(next, &r).expect("applies");
        }
    }

    fn cluster(racks: &[(NodeId, Option<&str>)]) -> ClusterImage {
        let mut img = ClusterImage::default();
        for (id, rack) in racks {
            apply(
                &mut img,
                vec![reg(*id, *rack), MetadataRecord::UnfenceBroker { id: *id }],
            );
        }
        img
    }

    fn topic(name: &str, partitions: i32, rf: i16) -> TopicRequest {
        TopicRequest {
            name: name.into(),
            id: [name.len() as u8 + 1; 16],
            partitions,
            replication_factor: rf,
            assignments: None,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn replicas_spread_over_racks_and_leaders_balance() {
        let img = cluster(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
        ]);
        let placed = place_replicas(&img, 8, 2, 0).expect("placed");
        let rack = |id: NodeId| if id <= 2 { "a" } else { "b" };
        let mut leaders = BTreeMap::new();
        for replicas in &placed {
            assert_eq!(replicas.len(), 2);
            assert_ne!(rack(replicas[0]), rack(replicas[1]), "{replicas:?}");
            *leaders.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(leaders.values().collect::<Vec<_>>(), vec![&2, &2, &2, &2]);
        let e = place_replicas(&img, 1, 5, 0).expect_err("too many");
        assert_eq!(e.code, ErrorCode::INVALID_REPLICATION_FACTOR);
        assert!(e.message.contains("only 4 broker(s)"), "{}", e.message);
    }

    #[test]
    fn alter_partition_checks_epochs_members_and_liveness() {
        let mut img = cluster(&[(1, None), (2, None), (3, None)]);
        let recs = create_topic(&img, &topic("t", 1, 3), 1).expect("created");
        apply(&mut img, recs);
        let st = img.topics["t"].partitions[0].clone();
        let leader = st.leader;
        let others: Vec<NodeId> = st
            .replicas
            .iter()
            .copied()
            .filter(|r| *r != leader)
            .collect();
        let ask =
            |isr: Vec<NodeId>, leader_epoch: i32, partition_epoch: i32| AlterPartitionRequest {
                broker_id: leader,
                topic: "t".into(),
                partition: 0,
                leader_epoch,
                partition_epoch,
                isr,
            };
        let shrunk = vec![leader, others[0]];
        let code = |r: Result<Vec<MetadataRecord>, ControlError>| r.expect_err("refused").code;
        assert_eq!(
            code(alter_partition(
                &img,
                &ask(shrunk.clone(), st.leader_epoch + 1, st.partition_epoch)
            )),
            ErrorCode::FENCED_LEADER_EPOCH
        );
        assert_eq!(
            code(alter_partition(
                &img,
                &ask(shrunk.clone(), st.leader_epoch, st.partition_epoch + 1)
            )),
            ErrorCode::INVALID_UPDATE_VERSION
        );
        assert_eq!(
            code(alter_partition(
                &img,
                &ask(others.clone(), st.leader_epoch, st.partition_epoch)
            )),
            ErrorCode::INVALID_REQUEST,
            "an ISR without the leader"
        );
        let mut not_leader = ask(shrunk.clone(), st.leader_epoch, st.partition_epoch);
        not_leader.broker_id = others[0];
        assert_eq!(
            code(alter_partition(&img, &not_leader)),
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        );
        let recs = alter_partition(
            &img,
            &ask(shrunk.clone(), st.leader_epoch, st.partition_epoch),
        )
        .expect("shrink");
        apply(&mut img, recs);
        let after = img.topics["t"].partitions[0].clone();
        assert_eq!(
            (after.isr.clone(), after.leader, after.leader_epoch),
            (shrunk, leader, st.leader_epoch)
        );
        assert!(after.partition_epoch > st.partition_epoch);
        // A fenced broker cannot rejoin; once unfenced it can.
        apply(
            &mut img,
            vec![MetadataRecord::FenceBroker { id: others[1] }],
        );
        let mut whole = after.isr.clone();
        whole.push(others[1]);
        assert_eq!(
            code(alter_partition(
                &img,
                &ask(whole.clone(), after.leader_epoch, after.partition_epoch)
            )),
            ErrorCode::INELIGIBLE_REPLICA
        );
        apply(
            &mut img,
            vec![MetadataRecord::UnfenceBroker { id: others[1] }],
        );
        let recs = alter_partition(
            &img,
            &ask(whole.clone(), after.leader_epoch, after.partition_epoch),
        )
        .expect("expand");
        apply(&mut img, recs);
        assert_eq!(img.topics["t"].partitions[0].isr, whole);
    }

    #[test]
    fn create_topic_records_and_refusals() {
        let mut img = cluster(&[(1, None), (2, None), (3, None)]);
        let recs = create_topic(&img, &topic("t", 3, 3), 1).expect("created");
        apply(&mut img, recs);
        let t = &img.topics["t"];
        let leaders: BTreeSet<_> = t.partitions.iter().map(|p| p.leader).collect();
        assert_eq!(leaders.len(), 3, "three partitions, three leaders");
        assert!(t.partitions.iter().all(|p| p.isr.len() == 3));
        let e = create_topic(&img, &topic("t", 1, 1), 1).expect_err("exists");
        assert_eq!(e.code, ErrorCode::TOPIC_ALREADY_EXISTS);
        let e = create_topic(&img, &topic("u", 1, 4), 1).expect_err("rf 4 > 3 brokers");
        assert_eq!(e.code, ErrorCode::INVALID_REPLICATION_FACTOR);
        let e = create_topic(&img, &topic("u", 0, 1), 1).expect_err("no partitions");
        assert_eq!(e.code, ErrorCode::INVALID_PARTITIONS);
        // -1 takes default.replication.factor.
        let recs = create_topic(&img, &topic("dflt", 1, -1), 2).expect("created");
        apply(&mut img, recs);
        assert_eq!(img.topics["dflt"].partitions[0].replicas.len(), 2);
        // Explicit assignments.
        let mut manual = topic("manual", 0, -1);
        manual.assignments = Some(vec![vec![3, 1], vec![2, 3]]);
        let recs = create_topic(&img, &manual, 1).expect("manual");
        apply(&mut img, recs);
        let m = &img.topics["manual"].partitions;
        assert_eq!((m[0].leader, m[1].leader), (3, 2));
        for bad in [
            vec![vec![1, 1]],
            vec![vec![9]],
            vec![vec![]],
            vec![vec![1], vec![1, 2]],
        ] {
            let mut t = topic("bad", 0, -1);
            t.assignments = Some(bad.clone());
            let e = create_topic(&img, &t, 1).expect_err("bad assignment");
            assert_eq!(e.code, ErrorCode::INVALID_REPLICA_ASSIGNMENT, "{bad:?}");
        }
    }

    #[test]
    fn fencing_moves_leaders_and_bumps_epochs_and_unfencing_restores_offline() {
        let mut img = cluster(&[(1, None), (2, None)]);
        let mut t = topic("t", 0, -1);
        t.assignments = Some(vec![vec![1, 2]]);
        let recs = create_topic(&img, &t, 1).expect("created");
        apply(&mut img, recs);
        let mut solo = topic("solo", 0, -1);
        solo.assignments = Some(vec![vec![1]]);
        let recs = create_topic(&img, &solo, 1).expect("created");
        apply(&mut img, recs);
        let recs = fence_broker(&img, 1);
        apply(&mut img, recs);
        let p = &img.topics["t"].partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.isr.clone()), (2, 1, vec![2]));
        let s = &img.topics["solo"].partitions[0];
        assert_eq!(
            (s.leader, s.isr.clone()),
            (NO_LEADER, vec![1]),
            "no unclean election"
        );
        assert!(img.brokers[&1].fenced);
        let recs = unfence_broker(&img, 1);
        apply(&mut img, recs);
        let s = &img.topics["solo"].partitions[0];
        assert_eq!((s.leader, s.leader_epoch), (1, 2));
        assert_eq!(
            img.topics["t"].partitions[0].leader, 2,
            "a led partition keeps its leader"
        );
    }

    #[test]
    fn controlled_shutdown_moves_leadership_first() {
        let mut img = cluster(&[(1, None), (2, None), (3, None)]);
        let recs = create_topic(&img, &topic("t", 6, 2), 1).expect("created");
        apply(&mut img, recs);
        let recs = controlled_shutdown(&img, 2);
        apply(&mut img, recs);
        for p in &img.topics["t"].partitions {
            assert_ne!(p.leader, 2);
            assert!(!p.isr.contains(&2) || p.isr.len() == 1);
        }
        assert_eq!(img.usable_brokers().count(), 2);
        assert_eq!(img.live_brokers().count(), 3, "listed until fenced");
        let e = place_replicas(&img, 1, 3, 0).expect_err("2 is shutting down");
        assert_eq!(e.code, ErrorCode::INVALID_REPLICATION_FACTOR);
    }

    #[test]
    fn duplicate_live_node_id_is_refused() {
        let img = cluster(&[(1, None)]);
        let e = register_broker(&img, 1, [9; 16], Vec::new(), None, true).expect_err("dup");
        assert_eq!(e.code, ErrorCode::DUPLICATE_BROKER_REGISTRATION);
        // A dead holder (a restart): accepted.
        assert!(register_broker(&img, 1, [9; 16], Vec::new(), None, false).is_ok());
    }

    #[test]
    fn the_same_incarnation_again_amends_nothing() {
        let img = cluster(&[(1, None)]);
        let b = &img.brokers[&1];
        let again = register_broker(&img, 1, b.incarnation, b.endpoints.clone(), None, true)
            .expect("a retry of the same incarnation is accepted");
        assert!(again.is_empty(), "{again:?}");
        // Other endpoints: registered anew.
        let moved = register_broker(&img, 1, b.incarnation, Vec::new(), Some("r".into()), true)
            .expect("accepted");
        assert!(
            matches!(moved[..], [MetadataRecord::RegisterBroker { .. }]),
            "{moved:?}"
        );
    }

    #[test]
    fn a_new_incarnation_after_the_session_ran_out_fences_the_old_one_first() {
        let mut img = cluster(&[(1, None), (2, None)]);
        let recs = create_topic(&img, &topic("t", 2, 1), 1).expect("created");
        apply(&mut img, recs);
        let led: Vec<(i32, i32)> = img.topics["t"]
            .partitions
            .iter()
            .map(|p| (p.leader, p.leader_epoch))
            .collect();
        let p = led.iter().position(|(l, _)| *l == 1).expect("1 leads one");
        let recs = register_broker(&img, 1, [7; 16], Vec::new(), None, false).expect("accepted");
        apply(&mut img, recs);
        let b = &img.brokers[&1];
        assert!(b.fenced && b.incarnation == [7; 16]);
        let st = &img.topics["t"].partitions[p];
        assert_eq!(
            st.leader, NO_LEADER,
            "offline until the new incarnation is unfenced"
        );
        assert!(
            st.leader_epoch > led[p].1,
            "the dead incarnation's epoch is over"
        );
    }
}
