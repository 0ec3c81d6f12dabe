//! Fetch v4–v16: reads on the owner shards, long-polls for `min_bytes` up to `max_wait_ms`
//! (woken by appends on any shard), trims to the response `max_bytes`, and encodes the
//! response around the batch buffers (zero-copy; see `protocol::fetch_response`).
//!
//! Memory: `max_bytes` and every `partition_max_bytes` are capped at `fetch.max.bytes`, and
//! each read first reserves its bytes from this shard's `shard.fetch.memory.bytes` budget
//! (`shard::fetch_memory`). Under memory pressure the reservation is smaller than asked and
//! the response carries fewer bytes (at least one batch), never waits for memory. The
//! reservation travels with the response and is released when the connection has written it
//! (or dropped it).
//!
//! Fetch sessions (KIP-227): from v7 a client may open a session with a full request and then
//! send only what changed; the session lives on this connection's shard and decides which
//! partitions are read and which are answered (`shard::fetch_session`, with Kafka's rules).
//! The record batches still go out as the buffers they are.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;

use super::{ConnInfo, Request};
use crate::error_code::ErrorCode;
use crate::meta::TopicMeta;
use crate::protocol::decode_body;
use crate::protocol::fetch_response::{
    encode_fetch_response, FetchPartitionOut, FetchTopicOut, NodeEndpointOut,
};
use crate::security::acl::{AclOperation, ResourceType};
use crate::server::response::{Reply, Response};
use crate::shard::fetch_memory::FetchReservation;
use crate::shard::fetch_session::{
    FetchContext, PartitionKey, PartitionOutcome, PartitionRequest, SessionRequest, TopicKey,
};
use crate::shard::{FetchLimits, FetchPart, FetchResult, Shard};

/// Longest long-poll honoured, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

/// One partition of the response, in response order: how it is named, and where its read
/// went (index into the parts) or the error it gets without a read.
struct Slot {
    /// Topic name (empty for an unknown topic id).
    name: String,
    /// Topic id (as asked for an unknown one).
    topic_id: [u8; 16],
    partition: i32,
    target: Result<usize, ErrorCode>,
}

/// One read of every part of a Fetch, and the memory its disk reads hold.
struct Read {
    /// Per part, in request order.
    results: Vec<FetchResult>,
    /// Fetch memory reserved for the disk reads among `results`.
    hold: FetchReservation,
    /// The disk reads got less memory than they could have used.
    squeezed: bool,
}

/// Reads `parts` (up to `want` bytes in all) in two passes: first from the batch cache only,
/// at no charge (the cache holds those batches already, and a tailing consumer reads nothing
/// else); then, for the parts whose data is on disk only, within a reservation of what is left
/// of `want`, taken from this shard's fetch memory before the read.
async fn read_once(shard: &Rc<Shard>, conn: ConnInfo, parts: &[FetchPart], want: usize) -> Read {
    if parts.is_empty() {
        return Read {
            results: Vec::new(),
            hold: shard.fetch_memory.reserve(0),
            squeezed: false,
        };
    }
    let cache_only = FetchLimits {
        bytes: want,
        min_one: true,
        disk: false,
    };
    let mut results = shard.fetch(parts.to_vec(), cache_only).await;
    let cached: usize = results.iter().map(FetchResult::bytes).sum();
    let on_disk: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].needs_disk)
        .collect();
    let rest = want.saturating_sub(cached);
    if on_disk.is_empty() || (rest == 0 && cached > 0) {
        return Read {
            results,
            hold: shard.fetch_memory.reserve(0),
            squeezed: false,
        };
    }
    let hold = shard.fetch_memory.reserve(rest);
    let disk = FetchLimits {
        bytes: hold.bytes(),
        // A forced first batch only if nothing came from the cache, and past an exhausted
        // budget only for a connection that has taken all its earlier responses.
        min_one: cached == 0 && (conn.drained || hold.bytes() > 0),
        disk: true,
    };
    let disk_parts = on_disk.iter().map(|&i| parts[i].clone()).collect();
    let squeezed = hold.bytes() < rest;
    for (i, r) in on_disk.into_iter().zip(shard.fetch(disk_parts, disk).await) {
        results[i] = r;
    }
    Read {
        results,
        hold,
        squeezed,
    }
}

/// Answers Fetch. The response holds a reservation of this shard's fetch memory for the disk
/// read buffers it carries, released when it is dropped. Its first batch goes out whatever
/// its size (KIP-74) unless the budget is used up and the connection still has earlier
/// responses unsent: a client that has not taken its last response needs no forced progress,
/// and the overdraft stays at one batch per connection.
pub async fn handle(rq: &Request<'_>, mut body: Bytes) -> Reply {
    let (shard, conn, version) = (rq.shard, rq.conn, rq.version);
    let req: FetchRequest = decode_body(&mut body, version)?;
    // `fetch.max.bytes`: what a client may ask, per response and per partition (less under a
    // `consumer_byte_rate`, as Kafka).
    let cap = shard.config.fetch_max_bytes.min(conn.fetch_quota_bytes);
    let meta = shard.metadata();

    // The session decides what is read: the request's partitions, or all of its session's.
    let uses_ids = version >= 13;
    let key = |name: &str, id: &uuid::Uuid| {
        if uses_ids {
            TopicKey::Id(*id.as_bytes())
        } else {
            TopicKey::Name(name.to_string())
        }
    };
    let mut wanted = Vec::with_capacity(req.topics.iter().map(|t| t.partitions.len()).sum());
    let view = shard.cluster_view();
    // Partitions whose `current_leader_epoch` (v9+) is not the leader's: rare, so a list.
    let mut epoch_errors: Vec<(PartitionKey, ErrorCode)> = Vec::new();
    for t in &req.topics {
        for p in &t.partitions {
            let pkey = PartitionKey {
                topic: key(&t.topic, &t.topic_id),
                partition: p.partition,
            };
            if version >= 9 && p.current_leader_epoch != -1 {
                let current = match view.as_deref() {
                    None => Some(0),
                    Some(v) => {
                        let name = if uses_ids {
                            meta.topic_by_id(t.topic_id.as_bytes())
                                .map(|m| m.name.as_str())
                        } else {
                            Some(t.topic.as_str())
                        };
                        name.and_then(|n| v.partition(n, p.partition))
                            .map(|st| st.leader_epoch)
                    }
                };
                if let Some(code) =
                    current.and_then(|c| super::leader_epoch_error(p.current_leader_epoch, c))
                {
                    epoch_errors.push((pkey.clone(), code));
                }
            }
            wanted.push(PartitionRequest {
                key: pkey,
                fetch_offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                last_fetched_epoch: if version >= 12 {
                    p.last_fetched_epoch
                } else {
                    -1
                },
            });
        }
    }
    let mut forget = Vec::new();
    for t in &req.forgotten_topics_data {
        for &partition in &t.partitions {
            forget.push(PartitionKey {
                topic: key(&t.topic, &t.topic_id),
                partition,
            });
        }
    }
    // A follower (a broker's replica fetcher) names itself; its session is privileged in
    // the cache (Kafka's rule). As Kafka, it needs CLUSTER_ACTION on the cluster, and only in
    // a cluster is it a follower (one node has no other replicas).
    let replica_id = if version >= 15 {
        *req.replica_state.replica_id
    } else {
        *req.replica_id
    };
    let privileged = replica_id >= 0;
    let replica_id = if view.is_some() {
        replica_id.max(-1)
    } else {
        -1
    };
    let replica_allowed = replica_id < 0 || rq.authorized_cluster(AclOperation::ClusterAction);
    let session_rq = SessionRequest {
        version,
        session_id: req.session_id,
        epoch: req.session_epoch,
        privileged,
    };
    let ctx =
        shard
            .fetch_sessions
            .borrow_mut()
            .new_context(session_rq, wanted, &forget, Instant::now());
    if let FetchContext::Error(code) = ctx {
        tracing::info!(
            session_id = req.session_id,
            session_epoch = req.session_epoch,
            error = %code,
            "fetch session refused"
        );
        let parts = encode_fetch_response(version, rq.correlation_id, code.code(), 0, &[], &[])?;
        return Ok(Some(Response::from(parts)));
    }

    // Resolve each partition's topic once per topic.
    let mut topics_by_key: HashMap<&TopicKey, Option<&TopicMeta>> = HashMap::new();
    let unknown = if uses_ids {
        ErrorCode::UNKNOWN_TOPIC_ID
    } else {
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    };
    let mut parts: Vec<FetchPart> = Vec::new();
    // read_committed (isolation level 1): up to the last stable offset, with the aborted list.
    let read_committed = req.isolation_level == 1;
    let mut slots: Vec<Slot> = Vec::with_capacity(ctx.partitions().len());
    for p in ctx.partitions() {
        let found = *topics_by_key
            .entry(&p.key.topic)
            .or_insert_with(|| match &p.key.topic {
                TopicKey::Id(id) => meta.topic_by_id(id),
                TopicKey::Name(name) => meta.topics.get(name.as_str()),
            });
        let (name, topic_id) = match (found, &p.key.topic) {
            (Some(t), _) => (t.name.clone(), t.id),
            (None, TopicKey::Name(name)) => (name.clone(), [0; 16]),
            (None, TopicKey::Id(id)) => (String::new(), *id),
        };
        let partition = p.key.partition;
        let epoch_error = epoch_errors
            .iter()
            .find(|(k, _)| *k == p.key)
            .map(|(_, code)| *code);
        let target = match (found, epoch_error) {
            // Kafka answers an unauthorized topic so whether it exists or not.
            _ if !replica_allowed => Err(ErrorCode::CLUSTER_AUTHORIZATION_FAILED),
            _ if replica_id < 0
                && !name.is_empty()
                && !rq.authorized(AclOperation::Read, ResourceType::Topic, &name) =>
            {
                Err(ErrorCode::TOPIC_AUTHORIZATION_FAILED)
            }
            (Some(_), Some(code)) => Err(code),
            (found, _) => match found {
                // In a cluster, only the leader serves reads, to consumers and followers alike
                // (KIP-392's fetching from followers is not built).
                Some(t)
                    if partition >= 0
                        && partition < t.partitions
                        && view
                            .as_deref()
                            .is_some_and(|v| !v.leads(&t.name, partition)) =>
                {
                    Err(ErrorCode::NOT_LEADER_OR_FOLLOWER)
                }
                Some(t) if partition >= 0 && partition < t.partitions => {
                    parts.push(FetchPart {
                        topic: t.name.clone(),
                        partition,
                        fetch_offset: p.fetch_offset,
                        read_committed,
                        max_bytes: (p.max_bytes.max(0) as usize).min(cap),
                        // On one node every batch has epoch 0: no log to diverge from.
                        last_fetched_epoch: if view.is_some() {
                            p.last_fetched_epoch
                        } else {
                            -1
                        },
                        replica_id,
                    });
                    Ok(parts.len() - 1)
                }
                Some(_) => Err(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION),
                None => Err(unknown),
            },
        };
        slots.push(Slot {
            name,
            topic_id,
            partition,
            target,
        });
    }
    drop(topics_by_key);

    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = (req.max_bytes.max(0) as usize).min(cap);
    // The most this response can hold (beyond one obligatory batch).
    let want = max_bytes.min(parts.iter().map(|p| p.max_bytes).sum());
    let mut read: Read;
    loop {
        read = read_once(shard, conn, &parts, want).await;
        let total: usize = read.results.iter().map(FetchResult::bytes).sum();
        let any_error = read
            .results
            .iter()
            .any(|r| r.error_code != ErrorCode::NONE || r.diverging_epoch.is_some());
        // Short of memory: what fitted goes out now rather than waiting for `min_bytes`.
        if total >= min_bytes.max(1)
            || (total > 0 && read.squeezed)
            || any_error
            || parts.is_empty()
            || Instant::now() >= deadline
        {
            break;
        }
        // Nothing (or too little) yet: wait for an append past what each partition has.
        let watch = parts
            .iter()
            .zip(&read.results)
            .map(|(p, r)| {
                if p.replica_id >= 0 {
                    // A follower waits for the leader's log end to pass its fetch offset.
                    (p.topic.clone(), p.partition, p.fetch_offset, true)
                } else {
                    (
                        p.topic.clone(),
                        p.partition,
                        r.high_watermark.max(p.fetch_offset),
                        false,
                    )
                }
            })
            .collect();
        // Nothing kept from this read: its buffers and their memory go back before the wait.
        drop(read);
        shard.wait_any_append(watch, deadline).await;
        if Instant::now() >= deadline {
            read = read_once(shard, conn, &parts, want).await;
            break;
        }
    }
    let Read {
        results,
        mut hold,
        squeezed: _,
    } = read;

    // Trim to the response max_bytes: the first non-empty partition always goes out whole.
    // (Disk reads already stayed within the reservation, but for one first batch.)
    let mut budget = want;
    let mut sent_any = false;
    let mut results: Vec<Option<FetchResult>> = results.into_iter().map(Some).collect();
    // The leaders named in NOT_LEADER_OR_FOLLOWER answers (KIP-951).
    let mut leaders_named = std::collections::BTreeSet::new();
    // Per slot: the partition's answer and the disk read bytes it holds.
    let mut answers: Vec<(FetchPartitionOut, usize)> = Vec::with_capacity(slots.len());
    for slot in &slots {
        let answer = match slot.target {
            Ok(i) => {
                let mut r = results
                    .get_mut(i)
                    .and_then(Option::take)
                    .unwrap_or_default();
                let size = r.bytes();
                let mut allocated = 0;
                if size > 0 {
                    if sent_any && size > budget {
                        r.batches.clear();
                    } else {
                        budget = budget.saturating_sub(size);
                        allocated = r.allocated;
                        sent_any = true;
                    }
                }
                let out = FetchPartitionOut {
                    partition: slot.partition,
                    error_code: r.error_code.code(),
                    high_watermark: r.high_watermark,
                    last_stable_offset: r.last_stable_offset,
                    log_start_offset: r.log_start_offset,
                    aborted_transactions: read_committed.then_some(r.aborted),
                    records: r.batches,
                    current_leader: None,
                    diverging_epoch: r.diverging_epoch.filter(|_| version >= 12),
                };
                (out, allocated)
            }
            Err(code) => {
                // KIP-951: who leads, and in which epoch (the endpoint follows at the response
                // level).
                let current_leader = match view.as_deref() {
                    Some(v)
                        if version >= 12
                            && (code == ErrorCode::NOT_LEADER_OR_FOLLOWER
                                || code == ErrorCode::FENCED_LEADER_EPOCH) =>
                    {
                        v.partition(&slot.name, slot.partition)
                            .map(|p| (p.leader, p.leader_epoch))
                    }
                    _ => None,
                };
                if let Some((leader, _)) = current_leader.filter(|(l, _)| *l >= 0) {
                    leaders_named.insert(leader);
                }
                let out = FetchPartitionOut {
                    partition: slot.partition,
                    error_code: code.code(),
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    aborted_transactions: None,
                    records: Vec::new(),
                    current_leader,
                    diverging_epoch: None,
                };
                (out, 0)
            }
        };
        answers.push(answer);
    }

    // The session keeps what changed: an incremental response leaves the rest out.
    let outcomes: Vec<PartitionOutcome> = answers
        .iter()
        .map(|(p, _)| PartitionOutcome {
            error_code: ErrorCode::from_code(p.error_code),
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records_bytes: p.records.iter().map(Bytes::len).sum(),
            diverging: p.diverging_epoch.is_some(),
        })
        .collect();
    let session = shard
        .fetch_sessions
        .borrow_mut()
        .respond(&ctx, &outcomes, Instant::now());
    if !session.error_code.is_none() {
        tracing::info!(
            session_id = session.session_id,
            error = %session.error_code,
            "fetch session moved by another request meanwhile"
        );
    }
    // Topics in response order, consecutive partitions of one topic together (as Kafka does).
    let mut held = 0usize;
    let mut topics: Vec<FetchTopicOut> = Vec::new();
    for ((slot, (out, allocated)), include) in slots.iter().zip(answers).zip(&session.include) {
        if !include {
            continue;
        }
        held += allocated;
        match topics.last_mut() {
            Some(t) if t.name == slot.name && t.topic_id == slot.topic_id => t.partitions.push(out),
            _ => topics.push(FetchTopicOut {
                name: slot.name.clone(),
                topic_id: slot.topic_id,
                partitions: vec![out],
            }),
        }
    }
    // Charge what the response really holds: disk read buffers (cached batches are counted by
    // the batch cache), possibly past the reservation by the obligatory first batch.
    hold.settle(held);
    tracing::debug!(
        want,
        held,
        in_use = shard.fetch_memory.in_use(),
        "fetch memory"
    );
    let node_endpoints: Vec<NodeEndpointOut> = match view.as_deref() {
        Some(v) if version >= 16 => leaders_named
            .into_iter()
            .filter_map(|id| {
                v.endpoint(id).map(|(host, port)| NodeEndpointOut {
                    node_id: id,
                    host,
                    port: i32::from(port),
                    rack: v.image.brokers.get(&id).and_then(|b| b.rack.clone()),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    let parts = encode_fetch_response(
        version,
        rq.correlation_id,
        session.error_code.code(),
        session.session_id,
        &topics,
        &node_endpoints,
    )?;
    Ok(Some(Response {
        parts,
        hold: Some(hold),
    }))
}
