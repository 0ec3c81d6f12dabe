//! What the owner shard does with a [`ShardMsg`]: the only place partitions' logs are touched.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;

use super::{
    DeleteRecordsAnswer, FetchLimits, FetchPart, FetchResult, OffsetAnswer, OffsetQuery,
    ProduceResult, Shard, ShardMsg,
};
use crate::config::topic_log_config;
use crate::error_code::ErrorCode;
use crate::meta::Metadata;
use crate::metrics::{CommittedOffsetSnapshot, MetricsSnapshot};
use crate::storage::{split_batches, LogConfig, StorageError};

/// Longest a produce request waits for unwritten bytes to drain before KAFKA_STORAGE_ERROR.
const UNWRITTEN_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// Handles one message addressed to this shard.
pub(super) async fn handle(shard: &Rc<Shard>, msg: ShardMsg) {
    match msg {
        ShardMsg::Produce {
            acks,
            parts,
            reply,
            appended,
        } => {
            // Append every part first, then wait for durability: one group commit covers them
            // all instead of one fdatasync round per partition.
            let mut out = Vec::with_capacity(parts.len());
            let mut durable = Vec::new();
            // Backpressure: appended bytes that are not yet written cannot be evicted, so a
            // producer faster than the disk would otherwise grow memory without bound.
            let deadline = std::time::Instant::now() + UNWRITTEN_WAIT_MAX;
            if let Err(e) = shard
                .storage
                .wait_unwritten_below(shard.config.unwritten_bytes_max, deadline)
                .await
            {
                let failed = storage_failure(&e);
                for (i, _) in parts {
                    out.push((i, failed.clone()));
                }
                let _ = reply.send(out);
                return;
            }
            for (i, part) in parts {
                let (result, last_offset) =
                    append_part(shard, part.topic.as_str(), part.partition, &part.records);
                if let Some(last) = last_offset {
                    durable.push((out.len(), part.topic, part.partition, last));
                }
                out.push((i, result));
            }
            // The connection's next Produce may append now (acks=all waits below).
            let _ = appended.send(());
            if acks == -1 {
                for (at, topic, partition, last) in durable {
                    if let Err(e) = shard.storage.wait_durable(&topic, partition, last).await {
                        out[at].1 = storage_failure(&e);
                    } else if let Err(failed) =
                        wait_replicated(shard, &topic, partition, last).await
                    {
                        out[at].1 = failed;
                    }
                }
            }
            let _ = reply.send(out);
        }
        ShardMsg::Fetch {
            parts,
            limits,
            reply,
        } => {
            // In request order within the share; only the first partition with data may go
            // past it (by its first batch, if `min_one`), as Kafka's `minOneMessage`.
            let mut out = Vec::with_capacity(parts.len());
            let mut left = limits.bytes;
            let mut got_data = false;
            for (i, part) in parts {
                let limits = FetchLimits {
                    bytes: left,
                    min_one: limits.min_one && !got_data,
                    ..limits
                };
                let r = fetch_one(shard, part, limits).await;
                let n = r.bytes();
                got_data |= n > 0;
                left = left.saturating_sub(n);
                out.push((i, r));
            }
            let _ = reply.send(out);
        }
        ShardMsg::ListOffsets { parts, reply } => {
            let mut out = Vec::with_capacity(parts.len());
            for (i, q) in parts {
                out.push((i, list_offset(shard, q).await));
            }
            let _ = reply.send(out);
        }
        ShardMsg::EpochEndOffsets { parts, reply } => {
            let out = parts
                .into_iter()
                .map(|(i, q)| {
                    let r = shard
                        .storage
                        .end_offset_for_epoch(&q.topic, q.partition, q.leader_epoch)
                        .map_err(|e| e.kafka_error_code());
                    (i, r)
                })
                .collect();
            let _ = reply.send(out);
        }
        ShardMsg::DeleteRecords { parts, reply } => {
            let mut out = Vec::with_capacity(parts.len());
            for (i, p) in parts {
                let answer = match shard
                    .storage
                    .delete_records(&p.topic, p.partition, p.offset)
                    .await
                {
                    Ok(low_watermark) => DeleteRecordsAnswer {
                        error_code: ErrorCode::NONE,
                        low_watermark,
                        error_message: None,
                    },
                    Err(e) => DeleteRecordsAnswer {
                        error_code: e.kafka_error_code(),
                        low_watermark: -1,
                        error_message: Some(e.to_string()),
                    },
                };
                out.push((i, answer));
            }
            let _ = reply.send(out);
        }
        ShardMsg::WaitAppend { parts, wait, reply } => {
            wait_append(shard, parts, wait).await;
            let _ = reply.send(());
        }
        ShardMsg::Admin { op, reply } => {
            let out = super::controller::run(shard, op).await;
            let _ = reply.send(out);
        }
        ShardMsg::Metrics { reply } => {
            let _ = reply.send(metrics_snapshot(shard));
        }
        ShardMsg::Group { op, reply } => {
            let out = shard.groups.handle(*op).await;
            let _ = reply.send(out);
        }
        ShardMsg::Txn { op, reply } => shard.serve_txn(*op, reply).await,
        ShardMsg::Producers { parts, reply } => {
            let out = parts
                .into_iter()
                .map(|(i, (topic, partition))| {
                    let r = shard
                        .storage
                        .describe_producers(&topic, partition)
                        .map_err(|e| e.kafka_error_code());
                    (i, r)
                })
                .collect();
            let _ = reply.send(out);
        }
        ShardMsg::Markers { parts, reply } => {
            let out = shard.append_markers(parts).await;
            let _ = reply.send(out);
        }
        ShardMsg::ApplyMetadata { meta, view, reply } => {
            apply_metadata(shard, meta, view).await;
            let _ = reply.send(());
        }
    }
}

/// This shard's metrics for a scrape. First the per-partition values the data path does not
/// record are read from storage (in memory, no I/O): every open partition's disk usage and
/// high watermark, and partitions no longer open here (deleted topics) are forgotten. Then
/// the committed offsets of the groups this shard coordinates are added, for the lag the
/// gathering shard computes with every shard's watermarks.
fn metrics_snapshot(shard: &Shard) -> MetricsSnapshot {
    shard
        .metrics
        .retain_partitions(|topic, partition| shard.storage.stats(topic, partition).is_ok());
    shard.storage.partition_stats(|topic, partition, stats| {
        let m = shard.metrics.partition(topic, partition);
        m.set_disk_usage(stats.disk_usage_bytes);
        m.set_disk_allocated(stats.disk_allocated_bytes);
        m.set_high_watermark(stats.high_watermark);
    });
    let mut snapshot = shard.metrics.snapshot();
    snapshot.batch_cache_bytes = shard.storage.cache_bytes() as u64;
    snapshot.unwritten_bytes = shard.storage.unwritten_bytes();
    {
        let sessions = shard.fetch_sessions.borrow();
        snapshot.fetch_sessions = sessions.len() as u64;
        snapshot.fetch_session_partitions = sessions.partitions_total() as u64;
        snapshot.fetch_session_evictions = sessions.evictions();
    }
    snapshot.committed_offsets = shard
        .groups
        .committed_offsets()
        .into_iter()
        .map(
            |(group, topic, partition, offset)| CommittedOffsetSnapshot {
                group,
                topic,
                partition,
                offset,
            },
        )
        .collect();
    snapshot
}

fn storage_failure(e: &StorageError) -> ProduceResult {
    ProduceResult {
        error_code: e.kafka_error_code(),
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
        error_message: Some(e.to_string()),
    }
}

/// The answer for a partition whose batches were refused; bad input is logged (one INFO line).
fn refused(topic: &str, partition: i32, e: &StorageError) -> (ProduceResult, Option<i64>) {
    if e.is_bad_input() {
        tracing::info!(topic, partition, error_code = e.kafka_error_code().name(), error = %e, "produce refused");
    }
    (storage_failure(e), None)
}

/// Appends one partition's batches (synchronously: no other request interleaves). Returns the
/// result and, on success, the last offset to wait on for durability.
fn append_part(
    shard: &Shard,
    topic: &str,
    partition: i32,
    records: &Bytes,
) -> (ProduceResult, Option<i64>) {
    let batches = match split_batches(records) {
        Ok(b) => b,
        Err(e) => return refused(topic, partition, &e),
    };
    // (first offset, log append time, log start offset) of the first batch.
    let mut first: Option<(i64, i64, i64)> = None;
    let mut last_offset = -1;
    for batch in batches {
        let size = batch.len() as u64;
        // Validation, the idempotence check and the append happen in one synchronous call:
        // no other request can interleave.
        match shard.storage.append(topic, partition, batch) {
            Ok(info) => {
                if !info.duplicate {
                    shard
                        .metrics
                        .partition(topic, partition)
                        .record_produce(size, info.record_count as u64);
                }
                last_offset = last_offset.max(info.last_offset);
                first.get_or_insert((
                    info.first_offset,
                    info.log_append_time,
                    info.log_start_offset,
                ));
            }
            // Batches already appended stay appended (as in Kafka, a request is not atomic
            // across batches); the error is reported for the partition.
            Err(e) => return refused(topic, partition, &e),
        }
    }
    let Some((first_offset, log_append_time, log_start_offset)) = first else {
        return (
            storage_failure(&StorageError::CorruptMessage("no record batch")),
            None,
        );
    };
    let result = ProduceResult {
        error_code: ErrorCode::NONE,
        base_offset: first_offset,
        log_append_time,
        log_start_offset,
        error_message: None,
    };
    (result, Some(last_offset))
}

/// Longest an acks=all produce waits for the ISR after its batch is durable here, before
/// REQUEST_TIMED_OUT (the producer's default `request.timeout.ms`).
const REPLICATION_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a waiting acks=all produce checks that this broker still leads the partition.
const LEADERSHIP_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// acks=all on a replicated partition: waits until the high watermark passes `last` (fsynced
/// on every ISR member). Answers NOT_LEADER_OR_FOLLOWER when this broker stops leading the
/// partition in the epoch the batch was appended in, or the offset was truncated away;
/// REQUEST_TIMED_OUT after [`REPLICATION_WAIT_MAX`]. One replica (or one node): no wait.
async fn wait_replicated(
    shard: &Rc<Shard>,
    topic: &str,
    partition: i32,
    last: i64,
) -> Result<(), ProduceResult> {
    let Some(view) = shard.cluster_view() else {
        return Ok(());
    };
    let Some(epoch) = view
        .partition(topic, partition)
        .filter(|st| st.replicas.len() > 1)
        .map(|st| st.leader_epoch)
    else {
        return Ok(());
    };
    let failed = |code: ErrorCode, message: String| ProduceResult {
        error_code: code,
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
        error_message: Some(message),
    };
    let deadline = std::time::Instant::now() + REPLICATION_WAIT_MAX;
    loop {
        let wait = shard.storage.wait_high_watermark(topic, partition, last);
        let tick = async {
            glommio::timer::sleep(LEADERSHIP_CHECK_INTERVAL).await;
            Err(StorageError::ShuttingDown)
        };
        match futures_lite::future::or(wait, tick).await {
            Ok(()) => return enough_in_sync(shard, topic, partition),
            Err(StorageError::ShuttingDown) => {}
            Err(e) => return Err(storage_failure(&e)),
        }
        let still = shard.cluster_view().is_some_and(|v| {
            v.partition(topic, partition)
                .is_some_and(|st| st.leader == v.node_id && st.leader_epoch == epoch)
        });
        if !still {
            return Err(failed(
                ErrorCode::NOT_LEADER_OR_FOLLOWER,
                format!("this broker no longer leads {topic}-{partition} in epoch {epoch}"),
            ));
        }
        if std::time::Instant::now() >= deadline {
            return Err(failed(
                ErrorCode::REQUEST_TIMED_OUT,
                format!(
                    "the in-sync replicas of {topic}-{partition} did not reach offset {last} within {} ms",
                    REPLICATION_WAIT_MAX.as_millis()
                ),
            ));
        }
    }
}

/// Kafka's check once the high watermark passed an acks=all batch: the ISR it passed over
/// must still have `min.insync.replicas` members, else NOT_ENOUGH_REPLICAS_AFTER_APPEND (the
/// batch is stored, but on fewer brokers than asked).
fn enough_in_sync(shard: &Shard, topic: &str, partition: i32) -> Result<(), ProduceResult> {
    let wanted = shard
        .metadata()
        .topics
        .get(topic)
        .and_then(|t| t.configs.get("min.insync.replicas"))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(shard.config.cluster.min_insync_replicas.max(1) as usize);
    let in_sync = shard
        .cluster_view()
        .and_then(|v| v.partition(topic, partition).map(|st| st.isr.len()))
        .unwrap_or(1);
    if in_sync >= wanted {
        return Ok(());
    }
    Err(ProduceResult {
        error_code: ErrorCode::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        base_offset: -1,
        log_append_time: -1,
        log_start_offset: -1,
        error_message: Some(format!(
            "{topic}-{partition} has {in_sync} in-sync replicas, fewer than min.insync.replicas {wanted}, after the append"
        )),
    })
}

/// Reads one partition: up to `min(part.max_bytes, limits.bytes)` bytes, or its first batch
/// whatever its size when `limits.min_one`; from the cache only unless `limits.disk`.
async fn fetch_one(shard: &Rc<Shard>, part: FetchPart, limits: FetchLimits) -> FetchResult {
    if part.last_fetched_epoch >= 0 {
        if let Some(diverging) = diverging_epoch(shard, &part) {
            return FetchResult {
                diverging_epoch: Some(diverging),
                ..without_records(shard, &part, ErrorCode::NONE)
            };
        }
    }
    let follower = part.replica_id >= 0;
    if follower {
        // Its fetch offset is its log end, fsynced: the ISR's part of the high watermark.
        shard.replication.follower_fetched(
            shard,
            &part.topic,
            part.partition,
            part.replica_id,
            part.fetch_offset,
        );
    }
    match shard
        .storage
        .read_limited(
            &part.topic,
            part.partition,
            part.fetch_offset,
            part.max_bytes.min(limits.bytes),
            limits.min_one,
            limits.disk,
            part.read_committed && !follower,
            follower,
        )
        .await
    {
        Ok(data) => {
            shard
                .metrics
                .partition(&part.topic, part.partition)
                .record_fetch(data.total_bytes() as u64, data.records);
            FetchResult {
                error_code: ErrorCode::NONE,
                high_watermark: data.high_watermark,
                last_stable_offset: data.last_stable_offset,
                aborted: data.aborted,
                log_start_offset: data.log_start_offset,
                batches: data.batches,
                allocated: data.allocated,
                needs_disk: data.needs_disk,
                diverging_epoch: None,
            }
        }
        Err(e) => without_records(shard, &part, e.kafka_error_code()),
    }
}

/// A partition's fetch answer with no records: `error_code` and its current offsets.
fn without_records(shard: &Shard, part: &FetchPart, error_code: ErrorCode) -> FetchResult {
    let start = shard
        .storage
        .offsets(&part.topic, part.partition)
        .map_or(-1, |o| o.0);
    let hw = shard
        .storage
        .high_watermark(&part.topic, part.partition)
        .unwrap_or(-1);
    FetchResult {
        error_code,
        high_watermark: hw,
        last_stable_offset: hw,
        log_start_offset: start,
        ..FetchResult::default()
    }
}

/// Kafka's `validateFetchOffsetAndMaybeGetDivergingEpoch`: the end here of the fetcher's last
/// fetched epoch; when that epoch is unknown here (the answer names an older one) or ends
/// before the fetch offset, the fetcher's log diverges and must be cut at the answer.
fn diverging_epoch(shard: &Shard, part: &FetchPart) -> Option<(i32, i64)> {
    super::replication::diverging_epoch(
        &shard.storage,
        &part.topic,
        part.partition,
        part.last_fetched_epoch,
        part.fetch_offset,
    )
}

async fn list_offset(shard: &Rc<Shard>, q: OffsetQuery) -> OffsetAnswer {
    let offsets = shard
        .storage
        .offsets(&q.topic, q.partition)
        .and_then(|(start, _)| {
            shard
                .storage
                .high_watermark(&q.topic, q.partition)
                .map(|hw| (start, hw))
        });
    let (start, hw) = match offsets {
        Ok(o) => o,
        Err(e) => {
            return OffsetAnswer {
                error_code: e.kafka_error_code(),
                offset: -1,
                timestamp: -1,
            }
        }
    };
    let found = match q.timestamp {
        -2 => Ok(Some((start, -1))),
        -1 if q.read_committed => shard
            .storage
            .last_stable_offset(&q.topic, q.partition)
            .map(|lso| Some((lso, -1))),
        -1 => Ok(Some((hw, -1))),
        ts => {
            // -3 (max timestamp) is answered as "latest" with its time unknown.
            if ts == -3 {
                Ok(Some((hw.saturating_sub(1).max(start), -1)))
            } else {
                match shard
                    .storage
                    .offset_for_timestamp(&q.topic, q.partition, ts)
                    .await
                {
                    Ok(Some((base, batch_ts))) => Ok(Some(
                        record_at_time(shard, &q.topic, q.partition, base, ts)
                            .await
                            .unwrap_or((base, batch_ts)),
                    )),
                    other => other,
                }
            }
        }
    };
    match found {
        Ok(Some((offset, timestamp))) => OffsetAnswer {
            error_code: ErrorCode::NONE,
            offset,
            timestamp,
        },
        Ok(None) => OffsetAnswer {
            error_code: ErrorCode::NONE,
            offset: -1,
            timestamp: -1,
        },
        Err(e) => OffsetAnswer {
            error_code: e.kafka_error_code(),
            offset: -1,
            timestamp: -1,
        },
    }
}

async fn wait_append(
    shard: &Rc<Shard>,
    parts: Vec<(String, i32, i64, bool)>,
    wait: std::time::Duration,
) {
    let (tx, mut rx) = futures_channel::mpsc::channel::<()>(1);
    let mut waiters = Vec::with_capacity(parts.len());
    for (topic, partition, offset, to_log_end) in parts {
        let storage = shard.storage.clone();
        let mut tx = tx.clone();
        waiters.push(glommio::spawn_local(async move {
            storage
                .appended(&topic, partition, offset, to_log_end)
                .await;
            let _ = tx.try_send(());
        }));
    }
    drop(tx);
    let first = async {
        use futures_lite::StreamExt;
        rx.next().await;
    };
    futures_lite::future::or(first, glommio::timer::sleep(wait)).await;
    // Dropping the task handles cancels the waits still pending.
    drop(waiters);
}

/// The first record at or after `ts` inside the batch at `base` (the storage finds the batch by
/// its max timestamp; Kafka answers with the record). Decodes that one batch, compressed or not:
/// ListOffsets by time is rare, and this keeps the produce and fetch paths free of record work.
async fn record_at_time(
    shard: &Shard,
    topic: &str,
    partition: i32,
    base: i64,
    ts: i64,
) -> Option<(i64, i64)> {
    let data = shard.storage.read(topic, partition, base, 1).await.ok()?;
    let mut joined = bytes::BytesMut::new();
    for b in &data.batches {
        joined.extend_from_slice(b);
    }
    let mut buf = joined.freeze();
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).ok()?;
    set.records
        .iter()
        .filter(|r| r.offset >= base)
        .find(|r| r.timestamp >= ts)
        .map(|r| (r.offset, r.timestamp))
}

/// The partition's leader epoch in this broker's cluster image (`None` on one node, where
/// logs keep [`crate::storage::LEADER_EPOCH`]).
fn leader_epoch_in_view(shard: &Shard, topic: &str, partition: i32) -> Option<i32> {
    let view = shard.cluster_view()?;
    view.partition(topic, partition).map(|st| st.leader_epoch)
}

/// Partitions one shard opens at once (at start, or when topics appear): their file
/// operations overlap in the shard's ring instead of waiting for each other.
const PARTITION_OPENS_IN_FLIGHT_MAX: usize = 32;

/// Opens (creating or recovering) the given partitions on this shard,
/// [`PARTITION_OPENS_IN_FLIGHT_MAX`] at a time; returns each one's outcome in order.
async fn open_partitions(
    shard: &Shard,
    opens: Vec<(String, i32, LogConfig)>,
) -> Vec<(String, i32, Result<(), StorageError>)> {
    let mut outcomes = Vec::with_capacity(opens.len());
    let mut opens = opens.into_iter().peekable();
    while opens.peek().is_some() {
        let wave: Vec<_> = opens
            .by_ref()
            .take(PARTITION_OPENS_IN_FLIGHT_MAX)
            .map(|(topic, p, log)| {
                let storage = shard.storage.clone();
                let name = topic.clone();
                let epoch = leader_epoch_in_view(shard, &topic, p);
                let task = glommio::spawn_local(async move {
                    storage.open_partition(&name, p, log).await?;
                    // In the same poll as the open's end: no append comes between.
                    if let Some(e) = epoch {
                        storage.set_leader_epoch(&name, p, e);
                    }
                    Ok(())
                });
                (topic, p, task)
            })
            .collect();
        for (topic, p, task) in wave {
            let result = task.await;
            outcomes.push((topic, p, result));
        }
    }
    outcomes
}

/// Opens every partition of `meta` owned by this shard; the first failure is returned (after
/// every open has finished).
pub(super) async fn open_owned(shard: &Shard, meta: &Metadata) -> Result<(), StorageError> {
    let mut opens = Vec::new();
    for topic in meta.topics.values() {
        let log = topic_log_config(&shard.config.log, &topic.configs).unwrap_or_else(|e| {
            tracing::warn!(topic = %topic.name, error = %e, "bad stored topic config; using broker defaults");
            shard.config.log.clone()
        });
        for p in 0..topic.partitions {
            if shard.owner_of(&topic.name, p) == shard.id && shard.hosts(&topic.name, p) {
                opens.push((topic.name.clone(), p, log.clone()));
            }
        }
    }
    let mut first_err = None;
    for (_, _, result) in open_partitions(shard, opens).await {
        if let Err(e) = result {
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Adopts a new snapshot: opens new owned partitions, deletes removed ones, applies config
/// changes, then swaps the snapshot in. In a cluster (`view`), only the partitions this
/// broker hosts are opened or deleted.
async fn apply_metadata(
    shard: &Rc<Shard>,
    meta: Arc<Metadata>,
    view: Option<Arc<super::ClusterView>>,
) {
    let old = shard.metadata();
    for topic in old.topics.values() {
        let gone = meta
            .topics
            .get(&topic.name)
            .is_none_or(|t| t.id != topic.id);
        if gone {
            for p in 0..topic.partitions {
                if shard.owner_of(&topic.name, p) == shard.id && shard.hosts(&topic.name, p) {
                    if let Err(e) = shard.storage.delete_partition(&topic.name, p).await {
                        tracing::warn!(topic = %topic.name, partition = p, error = %e, "delete failed");
                    }
                }
            }
        }
    }
    if view.is_some() {
        *shard.view.borrow_mut() = view;
        // The partitions open here stamp the new image's epochs from the next append on.
        shard
            .storage
            .set_leader_epochs(|topic, p| leader_epoch_in_view(shard, topic, p));
    }
    let mut opens = Vec::new();
    for topic in meta.topics.values() {
        let log = topic_log_config(&shard.config.log, &topic.configs)
            .unwrap_or_else(|_| shard.config.log.clone());
        let before = old.topics.get(&topic.name).filter(|t| t.id == topic.id);
        if topic.name == crate::group::OFFSETS_TOPIC
            && before.is_none_or(|b| b.partitions != topic.partitions)
        {
            shard.groups.set_partitions(topic.partitions);
        }
        for p in 0..topic.partitions {
            if shard.owner_of(&topic.name, p) != shard.id || !shard.hosts(&topic.name, p) {
                continue;
            }
            match before {
                Some(b) if p < b.partitions => {
                    if b.configs != topic.configs {
                        shard.storage.set_config(&topic.name, p, log.clone());
                    }
                }
                _ => opens.push((topic.name.clone(), p, log.clone())),
            }
        }
    }
    for (topic, p, result) in open_partitions(shard, opens).await {
        if let Err(e) = result {
            tracing::error!(topic = %topic, partition = p, error = %e, "cannot open partition");
        }
    }
    if let Some(view) = shard.cluster_view() {
        // Leaders take their floors, followers their fetchers: after the opens, so every
        // hosted partition is open.
        shard.replication.adopt(shard, &view);
    }
    *shard.meta.borrow_mut() = meta;
}
