//! Fetch v4–v16: reads on the owner shards, long-polls for `min_bytes` up to `max_wait_ms`
//! (woken by appends on any shard), trims to the response `max_bytes`, and encodes the
//! response around the batch buffers (zero-copy; see `protocol::fetch_response`).
//!
//! Fetch sessions (KIP-227) are not kept: every response carries session id 0, which tells
//! clients to send full fetch requests.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::FetchRequest;

use crate::protocol::fetch_response::{encode_fetch_response, FetchPartitionOut, FetchTopicOut};
use crate::protocol::{decode_body, error_codes, ProtocolError};
use crate::shard::{FetchPart, FetchResult, Shard};

/// Longest long-poll honoured, whatever the client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

/// Per partition of a topic: its index, and where its read went (index into the parts) or
/// the error it gets without a read.
type PartitionSlots = Vec<(i32, Result<usize, i16>)>;

/// Answers Fetch.
pub async fn handle(
    shard: &Rc<Shard>,
    version: i16,
    correlation_id: i32,
    mut body: Bytes,
) -> Result<Vec<Bytes>, ProtocolError> {
    let req: FetchRequest = decode_body(&mut body, version)?;
    let meta = shard.metadata();
    let mut parts: Vec<FetchPart> = Vec::new();
    // (topic out, per partition: index into parts or an error code)
    let mut layout: Vec<(FetchTopicOut, PartitionSlots)> = Vec::with_capacity(req.topics.len());
    for topic in &req.topics {
        let found = if version >= 13 {
            meta.topic_by_id(topic.topic_id.as_bytes())
        } else {
            meta.topics.get(topic.topic.as_str())
        };
        let unknown = if version >= 13 {
            error_codes::UNKNOWN_TOPIC_ID
        } else {
            error_codes::UNKNOWN_TOPIC_OR_PARTITION
        };
        let out = FetchTopicOut {
            name: found.map_or_else(|| topic.topic.to_string(), |t| t.name.clone()),
            topic_id: found.map_or(*topic.topic_id.as_bytes(), |t| t.id),
            partitions: Vec::new(),
        };
        let mut slots = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            match found {
                Some(t) if p.partition >= 0 && p.partition < t.partitions => {
                    parts.push(FetchPart {
                        topic: t.name.clone(),
                        partition: p.partition,
                        fetch_offset: p.fetch_offset,
                        max_bytes: p.partition_max_bytes.max(0) as usize,
                    });
                    slots.push((p.partition, Ok(parts.len() - 1)));
                }
                Some(_) => slots.push((p.partition, Err(error_codes::UNKNOWN_TOPIC_OR_PARTITION))),
                None => slots.push((p.partition, Err(unknown))),
            }
        }
        layout.push((out, slots));
    }

    let deadline =
        Instant::now() + Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let mut results: Vec<FetchResult>;
    loop {
        results = if parts.is_empty() {
            Vec::new()
        } else {
            shard.fetch(parts.clone()).await
        };
        let total: usize = results.iter().map(FetchResult::bytes).sum();
        let any_error = results.iter().any(|r| r.error_code != error_codes::NONE);
        if total >= min_bytes.max(1) || any_error || parts.is_empty() || Instant::now() >= deadline
        {
            break;
        }
        // Nothing (or too little) yet: wait for an append past what each partition has.
        let watch = parts
            .iter()
            .zip(&results)
            .map(|(p, r)| {
                (
                    p.topic.clone(),
                    p.partition,
                    r.high_watermark.max(p.fetch_offset),
                )
            })
            .collect();
        shard.wait_any_append(watch, deadline).await;
        if Instant::now() >= deadline {
            results = shard.fetch(parts.clone()).await;
            break;
        }
    }

    // Trim to the response max_bytes: the first non-empty partition always goes out whole.
    let mut budget = req.max_bytes.max(0) as usize;
    let mut sent_any = false;
    let mut results: Vec<Option<FetchResult>> = results.into_iter().map(Some).collect();
    let mut topics = Vec::with_capacity(layout.len());
    for (mut out, slots) in layout {
        for (partition, slot) in slots {
            let part = match slot {
                Ok(i) => {
                    let mut r = results
                        .get_mut(i)
                        .and_then(Option::take)
                        .unwrap_or_default();
                    let size = r.bytes();
                    if size > 0 {
                        if sent_any && size > budget {
                            r.batches.clear();
                        } else {
                            budget = budget.saturating_sub(size);
                            sent_any = true;
                        }
                    }
                    FetchPartitionOut {
                        partition,
                        error_code: r.error_code,
                        high_watermark: r.high_watermark,
                        last_stable_offset: r.high_watermark,
                        log_start_offset: r.log_start_offset,
                        records: r.batches,
                    }
                }
                Err(code) => FetchPartitionOut {
                    partition,
                    error_code: code,
                    high_watermark: -1,
                    last_stable_offset: -1,
                    log_start_offset: -1,
                    records: Vec::new(),
                },
            };
            out.partitions.push(part);
        }
        topics.push(out);
    }
    encode_fetch_response(version, correlation_id, error_codes::NONE, 0, &topics)
}
