//! OffsetCommit v2–v9, OffsetFetch v1–v9 (several groups per request from v8) and
//! OffsetDelete v0, routed to each group's coordinator shard. Commits are answered once the
//! records are durable in `__consumer_offsets`.

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::sb;
use super::Request;
use crate::error_code::ErrorCode;
use crate::group::records::CommittedOffset;
use crate::group::{GroupOp, GroupReply};
use crate::protocol::ProtocolError;
use crate::security::acl::{AclOperation, ResourceType};
use crate::shard::Shard;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Answers OffsetCommit.
pub async fn commit(
    rq: &Request<'_>,
    req: OffsetCommitRequest,
) -> Result<OffsetCommitResponse, ProtocolError> {
    let shard = rq.shard;
    let meta = shard.metadata();
    let ts = now_ms();
    let group_ok = rq.authorized(
        AclOperation::Read,
        ResourceType::Group,
        req.group_id.as_str(),
    );
    // Partitions of unknown topics fail on their own; the rest go to the coordinator.
    let mut offsets = Vec::new();
    let mut slots = Vec::new();
    for t in &req.topics {
        let name = t.name.to_string();
        let count = meta.topics.get(&name).map_or(0, |m| m.partitions);
        for p in &t.partitions {
            if !group_ok {
                slots.push(Err(ErrorCode::GROUP_AUTHORIZATION_FAILED));
            } else if !rq.authorized(AclOperation::Read, ResourceType::Topic, &name) {
                slots.push(Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED));
            } else if p.partition_index >= 0 && p.partition_index < count {
                offsets.push((
                    name.clone(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default(),
                        commit_timestamp: ts,
                    },
                ));
                slots.push(Ok(offsets.len() - 1));
            } else {
                slots.push(Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION));
            }
        }
    }
    let group = req.group_id.to_string();
    let n = offsets.len();
    let codes = if n == 0 {
        Vec::new()
    } else {
        let op = GroupOp::Commit {
            group: group.clone(),
            generation: req.generation_id_or_member_epoch,
            member_id: req.member_id.to_string(),
            instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            offsets,
        };
        match shard.group(&group, op).await {
            Some(GroupReply::Commit(c)) => c,
            _ => vec![ErrorCode::COORDINATOR_NOT_AVAILABLE.code(); n],
        }
    };
    let mut slot = slots.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = match slot.next() {
                        Some(Ok(i)) => codes
                            .get(i)
                            .copied()
                            .unwrap_or(ErrorCode::COORDINATOR_NOT_AVAILABLE.code()),
                        Some(Err(code)) => code.code(),
                        None => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.code(),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetCommitResponse::default().with_topics(topics);
    Ok(resp)
}

/// One group's offsets: the group error, (topic, partition, offset or none), and the
/// partitions whose offset is pending in an open transaction (with `require_stable` only).
type GroupOffsets = (
    ErrorCode,
    Vec<(String, i32, Option<CommittedOffset>)>,
    Vec<(String, i32)>,
);

/// Fetches one group's offsets.
async fn fetch_group(
    shard: &Rc<Shard>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> GroupOffsets {
    let op = GroupOp::FetchOffsets(group.to_string(), wanted, require_stable);
    match shard.group(group, op).await {
        Some(GroupReply::Offsets(code, list, unstable)) => (code, list, unstable),
        _ => (ErrorCode::COORDINATOR_NOT_AVAILABLE, Vec::new(), Vec::new()),
    }
}

/// [`fetch_group`] if the principal may DESCRIBE the group, else GROUP_AUTHORIZATION_FAILED.
async fn fetch_authorized(
    rq: &Request<'_>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> GroupOffsets {
    if !rq.authorized(AclOperation::Describe, ResourceType::Group, group) {
        return (
            ErrorCode::GROUP_AUTHORIZATION_FAILED,
            Vec::new(),
            Vec::new(),
        );
    }
    fetch_group(rq.shard, group, wanted, require_stable).await
}

/// A partition's error: UNSTABLE_OFFSET_COMMIT while an open transaction holds its offset
/// (the client retries until the transaction ends), else none.
fn stability(unstable: &[(String, i32)], topic: &str, partition: i32) -> ErrorCode {
    if unstable.iter().any(|(t, p)| t == topic && *p == partition) {
        ErrorCode::UNSTABLE_OFFSET_COMMIT
    } else {
        ErrorCode::NONE
    }
}

/// One topic's committed offsets: (topic, [(partition, offset or none)]).
type TopicOffsets = (String, Vec<(i32, Option<CommittedOffset>)>);

/// Groups a flat (topic, partition, offset) list by topic, keeping first-seen order.
fn by_topic(list: Vec<(String, i32, Option<CommittedOffset>)>) -> Vec<TopicOffsets> {
    let mut out: Vec<TopicOffsets> = Vec::new();
    for (t, p, c) in list {
        match out.iter_mut().find(|(name, _)| *name == t) {
            Some((_, v)) => v.push((p, c)),
            None => out.push((t, vec![(p, c)])),
        }
    }
    out
}

/// Answers OffsetFetch.
pub async fn fetch(
    rq: &Request<'_>,
    req: OffsetFetchRequest,
) -> Result<OffsetFetchResponse, ProtocolError> {
    let version = rq.version;
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in &req.groups {
            let wanted = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (code, list, unstable) =
                fetch_authorized(rq, g.group_id.as_str(), wanted, req.require_stable).await;
            let topics = by_topic(list)
                .into_iter()
                .map(|(t, parts)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(sb(&t)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, c)| {
                                    let error = stability(&unstable, &t, p);
                                    let c = c.filter(|_| error.is_none());
                                    let (off, epoch, md) = c.map_or((-1, -1, String::new()), |c| {
                                        (c.offset, c.leader_epoch, c.metadata)
                                    });
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_error_code(error.code())
                                        .with_committed_offset(off)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(sb(&md)))
                                })
                                .collect(),
                        )
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code.code())
                    .with_topics(topics),
            );
        }
        let resp = OffsetFetchResponse::default().with_groups(groups);
        return Ok(resp);
    }
    let wanted = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let require_stable = version >= 7 && req.require_stable;
    let (code, list, unstable) =
        fetch_authorized(rq, req.group_id.as_str(), wanted, require_stable).await;
    let topics = by_topic(list)
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(sb(&t)))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            let error = stability(&unstable, &t, p);
                            let c = c.filter(|_| error.is_none());
                            let (off, epoch, md) = c.map_or((-1, -1, String::new()), |c| {
                                (c.offset, c.leader_epoch, c.metadata)
                            });
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(error.code())
                                .with_committed_offset(off)
                                .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                                .with_metadata(Some(sb(&md)))
                        })
                        .collect(),
                )
        })
        .collect();
    let mut resp = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        resp = resp.with_error_code(code.code());
    }
    Ok(resp)
}

/// Answers OffsetDelete v0.
pub async fn delete(
    rq: &Request<'_>,
    req: OffsetDeleteRequest,
) -> Result<OffsetDeleteResponse, ProtocolError> {
    let shard = rq.shard;
    let group = req.group_id.to_string();
    // Kafka: DELETE on the group, then READ on each topic (denied topics are not asked).
    if !rq.authorized(AclOperation::Delete, ResourceType::Group, &group) {
        return Ok(OffsetDeleteResponse::default()
            .with_error_code(ErrorCode::GROUP_AUTHORIZATION_FAILED.code()));
    }
    let topic_ok: Vec<bool> = req
        .topics
        .iter()
        .map(|t| rq.authorized(AclOperation::Read, ResourceType::Topic, t.name.as_str()))
        .collect();
    let parts: Vec<(String, i32)> = req
        .topics
        .iter()
        .zip(&topic_ok)
        .filter(|(_, ok)| **ok)
        .map(|(t, _)| t)
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let n = parts.len();
    let (group_code, codes) = match shard
        .group(&group, GroupOp::OffsetDelete(group.clone(), parts))
        .await
    {
        Some(GroupReply::Codes(c)) if c.len() == n => (0, c),
        Some(GroupReply::Codes(c)) => (c.first().copied().unwrap_or(0), vec![0; n]),
        _ => (ErrorCode::COORDINATOR_NOT_AVAILABLE.code(), vec![0; n]),
    };
    // A missing group is a whole-request error, as in Kafka.
    let group_missing = codes
        .iter()
        .all(|c| *c == ErrorCode::GROUP_ID_NOT_FOUND.code())
        && n > 0;
    let mut it = codes.into_iter();
    let topics = req
        .topics
        .iter()
        .zip(topic_ok)
        .map(|(t, ok)| {
            OffsetDeleteResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let c = if ok {
                                it.next().unwrap_or(0)
                            } else {
                                ErrorCode::TOPIC_AUTHORIZATION_FAILED.code()
                            };
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(if group_missing { 0 } else { c })
                        })
                        .collect(),
                )
        })
        .collect();
    let resp = OffsetDeleteResponse::default()
        .with_error_code(if group_missing {
            ErrorCode::GROUP_ID_NOT_FOUND.code()
        } else {
            group_code
        })
        .with_topics(if group_missing { Vec::new() } else { topics });
    Ok(resp)
}
