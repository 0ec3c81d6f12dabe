//! Control plane before a run: negotiate versions, create the topics, find partition leaders,
//! and read each partition's end offset (where consumers start).

use super::wire::{error_name, with_timeout, KafkaConn, Versions, WireError};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, ListOffsetsRequest, MetadataRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Kafka's TOPIC_ALREADY_EXISTS.
const TOPIC_ALREADY_EXISTS: i16 = 36;
/// Time allowed for created topics to show up with leaders.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// One partition of a run: its leader and its end offset before the run.
#[derive(Clone, Debug)]
pub struct PartitionLayout {
    /// Partition index.
    pub index: i32,
    /// The leader's `host:port`.
    pub leader: String,
    /// Log end offset before the run: consumers start here.
    pub start_offset: i64,
}

/// One topic of a run.
#[derive(Clone, Debug)]
pub struct TopicLayout {
    /// Topic name.
    pub name: String,
    /// Its partitions, by index.
    pub partitions: Vec<PartitionLayout>,
}

/// What the control plane found.
#[derive(Clone, Debug)]
pub struct ClusterLayout {
    /// Versions to use with these brokers.
    pub versions: Versions,
    /// The run's topics.
    pub topics: Vec<TopicLayout>,
}

/// Connects to `bootstrap`, creates the topics (or relies on auto-creation), waits for leaders
/// and reads end offsets.
pub async fn prepare(
    bootstrap: &str,
    topic_names: &[String],
    partitions: u32,
    connect_timeout: Duration,
) -> Result<ClusterLayout, WireError> {
    let mut conn = KafkaConn::connect(bootstrap, connect_timeout).await?;
    let call_timeout = Duration::from_secs(10);
    let av = with_timeout("ApiVersions", bootstrap, call_timeout, conn.api_versions()).await?;
    let versions = Versions::negotiate(&av)?;
    tracing::debug!(?versions, "negotiated API versions");

    if let Some(v) = versions.create_topics {
        let topics = topic_names
            .iter()
            .map(|name| {
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.clone())))
                    .with_num_partitions(partitions as i32)
                    // -1: the broker's default replication factor (v4+).
                    .with_replication_factor(if v >= 4 { -1 } else { 1 })
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(10_000);
        let resp =
            with_timeout("CreateTopics", bootstrap, call_timeout, conn.call(&req, v)).await?;
        for t in resp.topics {
            if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                tracing::warn!(
                    topic = t.name.as_str(),
                    error = error_name(t.error_code),
                    "CreateTopics failed; relying on auto-creation"
                );
            }
        }
    }

    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let (brokers, leaders) = loop {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topic_names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(true);
        let resp = with_timeout(
            "Metadata",
            bootstrap,
            call_timeout,
            conn.call(&req, versions.metadata),
        )
        .await?;
        let brokers: HashMap<BrokerId, String> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let mut leaders: BTreeMap<String, Vec<(i32, String)>> = BTreeMap::new();
        let mut problem: Option<String> = None;
        for t in &resp.topics {
            let name = t
                .name
                .as_ref()
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            if t.error_code != 0 {
                problem = Some(format!("topic {name}: {}", error_name(t.error_code)));
                continue;
            }
            if t.partitions.len() < partitions as usize {
                problem = Some(format!(
                    "topic {name} has {} partitions, the workload needs {partitions}",
                    t.partitions.len()
                ));
                continue;
            }
            let mut ps = Vec::new();
            for p in &t.partitions {
                match brokers.get(&p.leader_id) {
                    Some(addr) if p.error_code == 0 => ps.push((p.partition_index, addr.clone())),
                    _ => {
                        problem = Some(format!(
                            "topic {name} partition {} has no leader yet ({})",
                            p.partition_index,
                            error_name(p.error_code)
                        ))
                    }
                }
            }
            leaders.insert(name, ps);
        }
        let complete = problem.is_none() && topic_names.iter().all(|n| leaders.contains_key(n));
        if complete {
            break (brokers, leaders);
        }
        if Instant::now() >= deadline {
            return Err(WireError::Broker {
                api: ApiKey::Metadata,
                error: problem.unwrap_or_else(|| "topics did not appear in metadata".into()),
            });
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    };
    tracing::debug!(brokers = brokers.len(), "metadata ready");

    let mut topics = Vec::with_capacity(topic_names.len());
    for name in topic_names {
        let mut parts: Vec<PartitionLayout> = leaders
            .get(name)
            .map(|v| {
                v.iter()
                    .filter(|(i, _)| (*i as u32) < partitions)
                    .map(|(i, leader)| PartitionLayout {
                        index: *i,
                        leader: leader.clone(),
                        start_offset: 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        parts.sort_by_key(|p| p.index);
        topics.push(TopicLayout {
            name: name.clone(),
            partitions: parts,
        });
    }

    if let Some(v) = versions.list_offsets {
        // One ListOffsets per leader, asking for the latest offset (-1) of its partitions.
        let mut by_leader: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
        for (ti, t) in topics.iter().enumerate() {
            for (pi, p) in t.partitions.iter().enumerate() {
                by_leader
                    .entry(p.leader.clone())
                    .or_default()
                    .push((ti, pi));
            }
        }
        for (leader, parts) in by_leader {
            let mut lconn = if leader == bootstrap {
                None
            } else {
                Some(KafkaConn::connect(&leader, connect_timeout).await?)
            };
            let c = lconn.as_mut().unwrap_or(&mut conn);
            let mut req_topics: BTreeMap<usize, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for (ti, pi) in &parts {
                req_topics.entry(*ti).or_default().push(
                    ListOffsetsPartition::default()
                        .with_partition_index(topics[*ti].partitions[*pi].index)
                        .with_timestamp(-1),
                );
            }
            let req = ListOffsetsRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_topics(
                    req_topics
                        .into_iter()
                        .map(|(ti, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(
                                    topics[ti].name.clone(),
                                )))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            let resp = with_timeout("ListOffsets", &leader, call_timeout, c.call(&req, v)).await?;
            for rt in resp.topics {
                let Some(t) = topics.iter_mut().find(|t| t.name == rt.name.as_str()) else {
                    continue;
                };
                for rp in rt.partitions {
                    if let Some(p) = t
                        .partitions
                        .iter_mut()
                        .find(|p| p.index == rp.partition_index)
                    {
                        if rp.error_code == 0 && rp.offset >= 0 {
                            p.start_offset = rp.offset;
                        } else {
                            tracing::warn!(
                                topic = t.name.as_str(),
                                partition = p.index,
                                error = error_name(rp.error_code),
                                "ListOffsets failed; consumers start at 0"
                            );
                        }
                    }
                }
            }
        }
    }
    Ok(ClusterLayout { versions, topics })
}
