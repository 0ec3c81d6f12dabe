//! The metadata log's records and the image they build: a pure, deterministic state machine.
//!
//! Every controller applies the same committed records in the same order to a
//! [`ClusterImage`], so every controller holds the same image; brokers receive it whole and
//! immutable. The records follow KRaft's (`RegisterBrokerRecord`, `TopicRecord`,
//! `PartitionRecord`, `PartitionChangeRecord`, `FenceBrokerRecord`, ...). A record that does
//! not apply (a partition of an unknown topic) is refused by [`ClusterImage::apply`] without
//! changing anything, on every node alike; the controller validates before it proposes, so
//! such a record means a bug, never a divergence.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Kafka node id (`node.id`, `broker_id` on the wire).
pub type NodeId = i32;

/// "No leader": the partition is offline.
pub const NO_LEADER: NodeId = -1;

/// One listener a broker advertises (`PLAINTEXT`, host, port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Listener name.
    pub name: String,
    /// Host clients connect to.
    pub host: String,
    /// Port clients connect to.
    pub port: u16,
}

/// One record of the metadata log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker (re)registers: a new incarnation replaces the old registration, fenced.
    RegisterBroker {
        /// Its node id.
        id: NodeId,
        /// A random id per process start (Kafka's `incarnation_id`).
        incarnation: [u8; 16],
        /// Where clients reach it.
        endpoints: Vec<Endpoint>,
        /// `broker.rack`.
        rack: Option<String>,
    },
    /// A broker leaves the cluster for good.
    UnregisterBroker {
        /// Its node id.
        id: NodeId,
    },
    /// A broker may not lead or be in an ISR (its session ran out, or it is new).
    FenceBroker {
        /// Its node id.
        id: NodeId,
    },
    /// A registered broker caught up and may serve.
    UnfenceBroker {
        /// Its node id.
        id: NodeId,
    },
    /// A broker asked to shut down: it leads nothing from now on and is fenced at the end.
    BrokerControlledShutdown {
        /// Its node id.
        id: NodeId,
    },
    /// A topic is created (its partitions follow as `Partition` records).
    Topic {
        /// Name.
        name: String,
        /// Topic id.
        id: [u8; 16],
    },
    /// A partition is created with its replica set and first leader (epoch 0).
    Partition {
        /// Topic id.
        topic_id: [u8; 16],
        /// Partition index; partitions are created in order 0, 1, ...
        partition: i32,
        /// Replica set; the first is the preferred leader.
        replicas: Vec<NodeId>,
        /// In-sync replicas.
        isr: Vec<NodeId>,
        /// Leader, or [`NO_LEADER`].
        leader: NodeId,
    },
    /// A partition's leader and/or ISR change. A new leader bumps the leader epoch.
    PartitionChange {
        /// Topic id.
        topic_id: [u8; 16],
        /// Partition index.
        partition: i32,
        /// New leader, if it changes.
        leader: Option<NodeId>,
        /// New ISR, if it changes.
        isr: Option<Vec<NodeId>>,
    },
    /// A topic and its partitions are deleted.
    RemoveTopic {
        /// Topic id.
        id: [u8; 16],
    },
    /// A topic-level config is set (`Some`) or deleted (`None`).
    Config {
        /// Topic name.
        topic: String,
        /// Kafka's name of the setting.
        key: String,
        /// New value.
        value: Option<String>,
    },
    /// A block of producer ids is handed to a broker: ids below `next_producer_id` are taken.
    ProducerIds {
        /// The broker given the block.
        broker_id: NodeId,
        /// First id of the next block.
        next_producer_id: i64,
    },
}

/// A registered broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Node id.
    pub id: NodeId,
    /// Kafka's broker epoch: the log index of its registration record.
    pub epoch: u64,
    /// The process incarnation that registered.
    pub incarnation: [u8; 16],
    /// Where clients reach it.
    pub endpoints: Vec<Endpoint>,
    /// `broker.rack`.
    pub rack: Option<String>,
    /// Fenced: leads nothing, listed in no Metadata response.
    pub fenced: bool,
    /// In controlled shutdown: leads nothing.
    pub in_controlled_shutdown: bool,
}

/// One partition's replica state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Replica set; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas (a subset of `replicas`).
    pub isr: Vec<NodeId>,
    /// Leader, or [`NO_LEADER`].
    pub leader: NodeId,
    /// Grows by one with every leader change (Kafka's leader epoch).
    pub leader_epoch: i32,
    /// Grows by one with every change of the partition (Kafka's partition epoch).
    pub partition_epoch: i32,
}

/// One topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    /// Name.
    pub name: String,
    /// Topic id.
    pub id: [u8; 16],
    /// Partitions by index.
    pub partitions: Vec<PartitionState>,
    /// Topic-level config overrides by Kafka name.
    pub configs: BTreeMap<String, String>,
}

/// The whole cluster metadata at one log index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    /// Index of the last record applied (0: none).
    pub offset: u64,
    /// Registered brokers by id.
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicImage>,
    /// First producer id not yet handed out.
    pub producer_id_next: i64,
}

/// Why a record did not apply (the image is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata record at {offset} does not apply: {why}")]
pub struct ApplyError {
    /// The record's log index.
    pub offset: u64,
    /// What is wrong.
    pub why: String,
}

impl ClusterImage {
    /// A topic by id.
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicImage> {
        self.topics.values().find(|t| &t.id == id)
    }

    fn topic_by_id_mut(&mut self, id: &[u8; 16]) -> Option<&mut TopicImage> {
        self.topics.values_mut().find(|t| &t.id == id)
    }

    /// One partition's state, if the topic and partition exist.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let t = self.topics.get(topic)?;
        usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
    }

    /// Where clients reach broker `id` (its first endpoint), if it is registered.
    pub fn endpoint(&self, id: NodeId) -> Option<&Endpoint> {
        self.brokers.get(&id).and_then(|b| b.endpoints.first())
    }

    /// Brokers that may lead and be in an ISR: registered, not fenced, not shutting down.
    pub fn usable_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers
            .values()
            .filter(|b| !b.fenced && !b.in_controlled_shutdown)
    }

    /// Brokers listed in Metadata: registered and not fenced (Kafka lists a broker in
    /// controlled shutdown until it is fenced).
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Applies the record at log index `offset`; on error nothing changed.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        let fail = |why: String| ApplyError { offset, why };
        match record {
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                endpoints,
                rack,
            } => {
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        epoch: offset,
                        incarnation: *incarnation,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: true,
                        in_controlled_shutdown: false,
                    },
                );
            }
            MetadataRecord::UnregisterBroker { id } => {
                self.brokers
                    .remove(id)
                    .ok_or_else(|| fail(format!("broker {id} is not registered")))?;
            }
            MetadataRecord::FenceBroker { id } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .ok_or_else(|| fail(format!("broker {id} is not registered")))?;
                b.fenced = true;
                b.in_controlled_shutdown = false;
            }
            MetadataRecord::UnfenceBroker { id } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .ok_or_else(|| fail(format!("broker {id} is not registered")))?;
                b.fenced = false;
                b.in_controlled_shutdown = false;
            }
            MetadataRecord::BrokerControlledShutdown { id } => {
                let b = self
                    .brokers
                    .get_mut(id)
                    .ok_or_else(|| fail(format!("broker {id} is not registered")))?;
                b.in_controlled_shutdown = true;
            }
            MetadataRecord::Topic { name, id } => {
                if self.topics.contains_key(name) || self.topic_by_id(id).is_some() {
                    return Err(fail(format!("topic {name} already exists")));
                }
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        partitions: Vec::new(),
                        configs: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::Partition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
            } => {
                check_replicas(replicas, isr, *leader).map_err(&fail)?;
                let t = self
                    .topic_by_id_mut(topic_id)
                    .ok_or_else(|| fail("partition of an unknown topic".into()))?;
                if *partition as usize != t.partitions.len() {
                    return Err(fail(format!(
                        "partition {partition} of {} out of order ({} exist)",
                        t.name,
                        t.partitions.len()
                    )));
                }
                t.partitions.push(PartitionState {
                    replicas: replicas.clone(),
                    isr: isr.clone(),
                    leader: *leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                });
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                isr,
            } => {
                let t = self
                    .topic_by_id_mut(topic_id)
                    .ok_or_else(|| fail("change of an unknown topic".into()))?;
                let name = t.name.clone();
                let p = usize::try_from(*partition)
                    .ok()
                    .and_then(|i| t.partitions.get_mut(i))
                    .ok_or_else(|| fail(format!("{name} has no partition {partition}")))?;
                let new_isr = isr.clone().unwrap_or_else(|| p.isr.clone());
                let new_leader = leader.unwrap_or(p.leader);
                check_replicas(&p.replicas, &new_isr, new_leader).map_err(&fail)?;
                if new_leader != p.leader {
                    p.leader_epoch += 1;
                }
                p.leader = new_leader;
                p.isr = new_isr;
                p.partition_epoch += 1;
            }
            MetadataRecord::RemoveTopic { id } => {
                let name = self
                    .topic_by_id(id)
                    .map(|t| t.name.clone())
                    .ok_or_else(|| fail("removal of an unknown topic".into()))?;
                self.topics.remove(&name);
            }
            MetadataRecord::Config { topic, key, value } => {
                let t = self
                    .topics
                    .get_mut(topic)
                    .ok_or_else(|| fail(format!("config of unknown topic {topic}")))?;
                match value {
                    Some(v) => t.configs.insert(key.clone(), v.clone()),
                    None => t.configs.remove(key),
                };
            }
            MetadataRecord::ProducerIds {
                next_producer_id, ..
            } => {
                if *next_producer_id <= self.producer_id_next {
                    return Err(fail(format!(
                        "producer id block ends at {next_producer_id}, below {}",
                        self.producer_id_next
                    )));
                }
                self.producer_id_next = *next_producer_id;
            }
        }
        assert!(offset >= self.offset, "records apply in log order");
        self.offset = offset;
        Ok(())
    }

    /// Applies the records of one log entry (at index `offset`) all or none: a topic and its
    /// partitions appear together. On error the image is unchanged.
    pub fn apply_batch(
        &mut self,
        offset: u64,
        records: &[MetadataRecord],
    ) -> Result<(), ApplyError> {
        let mut next = self.clone();
        for r in records {
            next.apply(offset, r)?;
        }
        next.offset = offset;
        *self = next;
        Ok(())
    }
}

/// A replica set is non-empty and without duplicates; the ISR is a subset; the leader, if any,
/// is in the ISR.
fn check_replicas(replicas: &[NodeId], isr: &[NodeId], leader: NodeId) -> Result<(), String> {
    if replicas.is_empty() {
        return Err("empty replica set".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != replicas.len() {
        return Err(format!("duplicate replica in {replicas:?}"));
    }
    if let Some(x) = isr.iter().find(|x| !replicas.contains(x)) {
        return Err(format!("ISR member {x} is not a replica of {replicas:?}"));
    }
    if leader != NO_LEADER && !isr.contains(&leader) {
        return Err(format!("leader {leader} is not in the ISR {isr:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn register(id: NodeId, rack: Option<&str>) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            incarnation: [id as u8; 16],
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
            }],
            rack: rack.map(str::to_string),
        }
    }

    fn apply_all(image: &mut ClusterImage, records: &[MetadataRecord]) {
        for r in records {
            let next = image.offset + 1;
            image.apply(next, r).expect("applies");
        }
    }

    #[test]
    fn brokers_register_fenced_then_unfence_and_fence() {
        let mut img = ClusterImage::default();
        apply_all(&mut img, &[register(1, None), register(2, Some("r"))]);
        assert_eq!(
            img.live_brokers().count(),
            0,
            "registered brokers start fenced"
        );
        apply_all(&mut img, &[MetadataRecord::UnfenceBroker { id: 1 }]);
        assert_eq!(
            img.live_brokers().map(|b| b.id).collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(
            img.brokers[&1].epoch, 1,
            "broker epoch = its registration's offset"
        );
        apply_all(
            &mut img,
            &[MetadataRecord::BrokerControlledShutdown { id: 1 }],
        );
        assert_eq!(img.usable_brokers().count(), 0);
        assert_eq!(img.live_brokers().count(), 1);
        apply_all(&mut img, &[MetadataRecord::FenceBroker { id: 1 }]);
        assert_eq!(img.live_brokers().count(), 0);
        // A batch applies all or nothing.
        let before = img.clone();
        let bad = [
            MetadataRecord::UnfenceBroker { id: 2 },
            MetadataRecord::UnfenceBroker { id: 99 },
        ];
        img.apply_batch(5, &bad).expect_err("99 unknown");
        assert_eq!(img, before);
        // Re-registration (a restart) replaces the old one with a new epoch, fenced.
        apply_all(&mut img, &[register(1, None)]);
        assert_eq!(img.brokers[&1].epoch, 6);
        let before = img.clone();
        let e = img
            .apply(7, &MetadataRecord::FenceBroker { id: 9 })
            .expect_err("unknown broker");
        assert!(e.why.contains("broker 9"), "{e}");
        assert_eq!(img, before, "a refused record changes nothing");
    }

    #[test]
    fn partitions_and_leader_epochs() {
        let mut img = ClusterImage::default();
        let id = [7; 16];
        apply_all(
            &mut img,
            &[
                MetadataRecord::Topic {
                    name: "t".into(),
                    id,
                },
                MetadataRecord::Partition {
                    topic_id: id,
                    partition: 0,
                    replicas: vec![1, 2, 3],
                    isr: vec![1, 2, 3],
                    leader: 1,
                },
            ],
        );
        let p = |img: &ClusterImage| img.topics["t"].partitions[0].clone();
        assert_eq!((p(&img).leader, p(&img).leader_epoch), (1, 0));
        apply_all(
            &mut img,
            &[MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: None,
                isr: Some(vec![1, 2]),
            }],
        );
        assert_eq!(
            p(&img).leader_epoch,
            0,
            "an ISR change keeps the leader epoch"
        );
        assert_eq!(p(&img).partition_epoch, 1);
        apply_all(
            &mut img,
            &[MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: Some(2),
                isr: None,
            }],
        );
        assert_eq!((p(&img).leader, p(&img).leader_epoch), (2, 1));
        // A leader outside the ISR, a gap in partition indexes, a duplicate replica: refused.
        let next = img.offset + 1;
        for bad in [
            MetadataRecord::PartitionChange {
                topic_id: id,
                partition: 0,
                leader: Some(3),
                isr: None,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 5,
                replicas: vec![1],
                isr: vec![1],
                leader: 1,
            },
            MetadataRecord::Partition {
                topic_id: id,
                partition: 1,
                replicas: vec![1, 1],
                isr: vec![1],
                leader: 1,
            },
        ] {
            img.apply(next, &bad).expect_err("refused");
        }
        apply_all(
            &mut img,
            &[
                MetadataRecord::Config {
                    topic: "t".into(),
                    key: "retention.ms".into(),
                    value: Some("1".into()),
                },
                MetadataRecord::ProducerIds {
                    broker_id: 1,
                    next_producer_id: 1000,
                },
                MetadataRecord::RemoveTopic { id },
            ],
        );
        assert!(img.topics.is_empty());
        assert_eq!(img.producer_id_next, 1000);
    }

    #[test]
    fn records_round_trip_through_json() {
        let r = register(3, Some("rack-a"));
        let text = serde_json::to_string(&r).expect("encode");
        assert_eq!(
            serde_json::from_str::<MetadataRecord>(&text).expect("decode"),
            r
        );
    }
}
