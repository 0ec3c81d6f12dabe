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

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
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
    /// Where consumers start: the log end offset before the run, or the earliest offset
    /// when reading existing topics.
    pub start_offset: i64,
    /// The log end offset before the run: where consumers of existing topics stop.
    pub end_offset: i64,
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
/// and reads end offsets. With `existing`, the topics must already exist (nothing is created)
/// and their earliest offsets are read too.
pub async fn prepare(
    bootstrap: &str,
    topic_names: &[String],
    partitions: u32,
    existing: bool,
    connect_timeout: Duration,
) -> Result<ClusterLayout, WireError> {
    let mut conn = KafkaConn::connect(bootstrap, connect_timeout).await?;
    let call_timeout = Duration::from_secs(10);
    let av = with_timeout("ApiVersions", bootstrap, call_timeout, conn.api_versions()).await?;
    let versions = Versions::negotiate(&av)?;
    tracing::debug!(?versions, "negotiated API versions");

    if let Some(v) = versions.create_topics.filter(|_| !existing) {
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
            .with_allow_auto_topic_creation(!existing);
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
            if existing && t.error_code == UNKNOWN_TOPIC_OR_PARTITION {
                // Nothing will create it: waiting for it cannot help.
                return Err(WireError::Broker {
                    api: ApiKey::Metadata,
                    error: format!("topic {name} does not exist (nothing to consume)"),
                });
            }
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
                        end_offset: 0,
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
        // Latest (-1) everywhere: where a producing run's consumers start and, for existing
        // topics, where reading stops. Earliest (-2) is where reading existing topics starts.
        // A leader named in Metadata may not lead the partition yet (Kafka answers
        // NOT_LEADER_OR_FOLLOWER to Produce and ListOffsets alike for a moment after
        // CreateTopics), so this also waits until every leader answers for its partitions:
        // otherwise the run's first sends fail and are counted as failures.
        let total: usize = topics.iter().map(|t| t.partitions.len()).sum();
        let latest = loop {
            let answers =
                list_offsets(&mut conn, bootstrap, &topics, v, -1, connect_timeout).await?;
            let ready = answers.iter().filter(|(_, _, r)| r.is_ok()).count() == total;
            if ready || Instant::now() >= deadline {
                break answers;
            }
            glommio::timer::sleep(Duration::from_millis(200)).await;
        };
        for (ti, pi, off) in offsets_or_warn(&topics, latest, -1) {
            let p = &mut topics[ti].partitions[pi];
            p.start_offset = off;
            p.end_offset = off;
        }
        if existing {
            let earliest =
                list_offsets(&mut conn, bootstrap, &topics, v, -2, connect_timeout).await?;
            for (ti, pi, off) in offsets_or_warn(&topics, earliest, -2) {
                topics[ti].partitions[pi].start_offset = off;
            }
        }
    } else if existing {
        return Err(WireError::Broker {
            api: ApiKey::ListOffsets,
            error: "the broker does not support ListOffsets: cannot read existing topics".into(),
        });
    }
    Ok(ClusterLayout { versions, topics })
}

/// The offsets of the partitions that answered; the others are logged and left out (they
/// start at 0).
fn offsets_or_warn(
    topics: &[TopicLayout],
    answers: Vec<(usize, usize, Result<i64, i16>)>,
    timestamp: i64,
) -> Vec<(usize, usize, i64)> {
    answers
        .into_iter()
        .filter_map(|(ti, pi, r)| match r {
            Ok(off) => Some((ti, pi, off)),
            Err(code) => {
                tracing::warn!(
                    topic = topics[ti].name.as_str(),
                    partition = topics[ti].partitions[pi].index,
                    timestamp,
                    error = error_name(code),
                    "ListOffsets failed; that partition starts at 0"
                );
                None
            }
        })
        .collect()
}

/// Asks each partition's leader for the offset at `timestamp` (-1 latest, -2 earliest), one
/// ListOffsets per leader. Returns (topic index, partition index, offset or error code) for
/// every partition in the answers.
async fn list_offsets(
    conn: &mut KafkaConn,
    bootstrap: &str,
    topics: &[TopicLayout],
    version: i16,
    timestamp: i64,
    connect_timeout: Duration,
) -> Result<Vec<(usize, usize, Result<i64, i16>)>, WireError> {
    let call_timeout = Duration::from_secs(10);
    let mut by_leader: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for (ti, t) in topics.iter().enumerate() {
        for (pi, p) in t.partitions.iter().enumerate() {
            by_leader
                .entry(p.leader.clone())
                .or_default()
                .push((ti, pi));
        }
    }
    let mut out = Vec::new();
    for (leader, parts) in by_leader {
        let mut lconn = if leader == bootstrap {
            None
        } else {
            Some(KafkaConn::connect(&leader, connect_timeout).await?)
        };
        let c = lconn.as_mut().unwrap_or(conn);
        let mut req_topics: BTreeMap<usize, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for (ti, pi) in &parts {
            req_topics.entry(*ti).or_default().push(
                ListOffsetsPartition::default()
                    .with_partition_index(topics[*ti].partitions[*pi].index)
                    .with_timestamp(timestamp),
            );
        }
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                req_topics
                    .into_iter()
                    .map(|(ti, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(topics[ti].name.clone())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp =
            with_timeout("ListOffsets", &leader, call_timeout, c.call(&req, version)).await?;
        for rt in resp.topics {
            let Some(ti) = topics.iter().position(|t| t.name == rt.name.as_str()) else {
                continue;
            };
            for rp in rt.partitions {
                let Some(pi) = topics[ti]
                    .partitions
                    .iter()
                    .position(|p| p.index == rp.partition_index)
                else {
                    continue;
                };
                let answer = if rp.error_code == 0 && rp.offset >= 0 {
                    Ok(rp.offset)
                } else {
                    Err(rp.error_code)
                };
                out.push((ti, pi, answer));
            }
        }
    }
    Ok(out)
}
