//! The zero-copy Fetch response encoder.
//!
//! A Fetch response is mostly record bytes. `kafka-protocol` would encode it into one buffer,
//! copying every batch; this encoder writes only the fields around the batches into one small
//! buffer and returns the response as a list of buffers — slices of that buffer interleaved
//! with the batch buffers exactly as the storage engine handed them over (from its batch cache
//! or a disk read). The connection writes the list with one vectored `sendmsg`.
//!
//! Covers Fetch v4–v16: flexible encoding (compact arrays, tagged fields) from v12, topic ids
//! instead of names from v13. The tests decode the output with `kafka-protocol`'s decoder at
//! every version.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;

use super::{begin_response, finish_frame, ProtocolError};

/// One partition's part of a Fetch response.
#[derive(Debug, Default)]
pub struct FetchPartitionOut {
    /// The partition index.
    pub partition: i32,
    /// Kafka error code for this partition (0 = none).
    pub error_code: i16,
    /// Next offset to be written.
    pub high_watermark: i64,
    /// Last stable offset: the first offset of the oldest ongoing transaction, else the
    /// high watermark.
    pub last_stable_offset: i64,
    /// First offset still in the log.
    pub log_start_offset: i64,
    /// read_committed: the aborted transactions overlapping `records`, as
    /// `(producer id, first offset)`; `None` (null on the wire) for read_uncommitted.
    pub aborted_transactions: Option<Vec<(i64, i64)>>,
    /// The record batches, as buffers to send unchanged.
    pub records: Vec<Bytes>,
    /// KIP-951: the partition's leader and leader epoch, sent (v12+) with
    /// NOT_LEADER_OR_FOLLOWER so the client can move without a Metadata round trip.
    pub current_leader: Option<(i32, i32)>,
    /// KIP-320/595 (v12+): `(epoch, end offset)` where the fetcher's log diverges from this
    /// leader's: the fetcher sent a `last_fetched_epoch` whose end here is before its fetch
    /// offset (or an epoch this log does not have). Sent with no records.
    pub diverging_epoch: Option<(i32, i64)>,
}

/// A broker's endpoint in a Fetch response (v16+, KIP-951): the leaders named by
/// `current_leader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpointOut {
    /// Node id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
    /// Rack, if any.
    pub rack: Option<String>,
}

/// One topic's part of a Fetch response.
#[derive(Debug, Default)]
pub struct FetchTopicOut {
    /// Topic name (sent up to v12).
    pub name: String,
    /// Topic id (sent from v13).
    pub topic_id: [u8; 16],
    /// Its partitions, in request order.
    pub partitions: Vec<FetchPartitionOut>,
}

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn put_compact_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        None => put_uvarint(buf, 0),
        Some(s) => {
            put_uvarint(buf, s.len() as u64 + 1);
            buf.put_slice(s.as_bytes());
        }
    }
}

fn put_array_len(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

/// Encodes a whole Fetch response frame (size prefix included) as a list of buffers whose
/// concatenation is the frame. Record batch buffers appear in the list as given: not copied.
/// `node_endpoints` go out from v16 (KIP-951).
pub fn encode_fetch_response(
    version: i16,
    correlation_id: i32,
    error_code: i16,
    session_id: i32,
    topics: &[FetchTopicOut],
    node_endpoints: &[NodeEndpointOut],
) -> Result<Vec<Bytes>, ProtocolError> {
    if !(4..=16).contains(&version) {
        return Err(ProtocolError::Encode(format!(
            "fetch v{version} not supported"
        )));
    }
    let flexible = version >= 12;
    let mut meta = begin_response(ApiKey::Fetch, version, correlation_id, 256)?;
    // Split points in `meta`, each followed by the batches of one partition.
    let mut splits: Vec<(usize, &[Bytes])> = Vec::new();
    let mut records_bytes = 0usize;

    meta.put_i32(0); // throttle_time_ms
    if version >= 7 {
        meta.put_i16(error_code);
        meta.put_i32(session_id);
    }
    put_array_len(&mut meta, flexible, topics.len());
    for topic in topics {
        if version >= 13 {
            meta.put_slice(&topic.topic_id);
        } else if flexible {
            put_uvarint(&mut meta, topic.name.len() as u64 + 1);
            meta.put_slice(topic.name.as_bytes());
        } else {
            meta.put_i16(topic.name.len() as i16);
            meta.put_slice(topic.name.as_bytes());
        }
        put_array_len(&mut meta, flexible, topic.partitions.len());
        for p in &topic.partitions {
            meta.put_i32(p.partition);
            meta.put_i16(p.error_code);
            meta.put_i64(p.high_watermark);
            meta.put_i64(p.last_stable_offset);
            if version >= 5 {
                meta.put_i64(p.log_start_offset);
            }
            match &p.aborted_transactions {
                None if flexible => put_uvarint(&mut meta, 0),
                None => meta.put_i32(-1),
                Some(list) => {
                    put_array_len(&mut meta, flexible, list.len());
                    for &(producer_id, first_offset) in list {
                        meta.put_i64(producer_id);
                        meta.put_i64(first_offset);
                        if flexible {
                            meta.put_u8(0); // tagged fields
                        }
                    }
                }
            }
            if version >= 11 {
                meta.put_i32(-1); // preferred_read_replica
            }
            let len: usize = p.records.iter().map(Bytes::len).sum();
            if flexible {
                put_uvarint(&mut meta, len as u64 + 1);
            } else {
                meta.put_i32(len as i32);
            }
            if len > 0 {
                splits.push((meta.len(), &p.records));
                records_bytes += len;
            }
            if flexible {
                // Partition tagged fields, by tag: DivergingEpoch is tag 0 (EpochEndOffset:
                // epoch, end offset, its own empty tagged fields: 13 bytes), CurrentLeader
                // tag 1 (LeaderIdAndEpoch: leader id, leader epoch, empty tagged fields: 9).
                let tags =
                    u8::from(p.diverging_epoch.is_some()) + u8::from(p.current_leader.is_some());
                meta.put_u8(tags);
                if let Some((epoch, end_offset)) = p.diverging_epoch {
                    put_uvarint(&mut meta, 0); // tag
                    put_uvarint(&mut meta, 13); // size
                    meta.put_i32(epoch);
                    meta.put_i64(end_offset);
                    meta.put_u8(0);
                }
                if let Some((leader, epoch)) = p.current_leader {
                    put_uvarint(&mut meta, 1); // tag
                    put_uvarint(&mut meta, 9); // size
                    meta.put_i32(leader);
                    meta.put_i32(epoch);
                    meta.put_u8(0);
                }
            }
        }
        if flexible {
            meta.put_u8(0); // topic tagged fields
        }
    }
    if version >= 16 && !node_endpoints.is_empty() {
        // Response tagged field NodeEndpoints, tag 0: a compact array of endpoints.
        let mut field = BytesMut::new();
        put_uvarint(&mut field, node_endpoints.len() as u64 + 1);
        for e in node_endpoints {
            field.put_i32(e.node_id);
            put_compact_string(&mut field, Some(&e.host));
            field.put_i32(e.port);
            put_compact_string(&mut field, e.rack.as_deref());
            field.put_u8(0); // tagged fields
        }
        meta.put_u8(1); // one tagged field
        put_uvarint(&mut meta, 0); // tag
        put_uvarint(&mut meta, field.len() as u64);
        meta.put_slice(&field);
    } else if flexible {
        meta.put_u8(0); // response tagged fields
    }
    finish_frame(&mut meta, records_bytes);

    let meta = meta.freeze();
    let mut parts =
        Vec::with_capacity(1 + splits.len() * 2 + splits.iter().map(|s| s.1.len()).sum::<usize>());
    let mut from = 0;
    for (at, batches) in splits {
        parts.push(meta.slice(from..at));
        parts.extend(batches.iter().filter(|b| !b.is_empty()).cloned());
        from = at;
    }
    parts.push(meta.slice(from..));
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{FetchResponse, ResponseHeader};
    use kafka_protocol::protocol::Decodable;

    fn sample() -> Vec<FetchTopicOut> {
        vec![
            FetchTopicOut {
                name: "orders".into(),
                topic_id: [7; 16],
                partitions: vec![
                    FetchPartitionOut {
                        partition: 0,
                        high_watermark: 42,
                        last_stable_offset: 40,
                        log_start_offset: 3,
                        aborted_transactions: Some(vec![(5, 10), (6, 20)]),
                        records: vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")],
                        ..Default::default()
                    },
                    FetchPartitionOut {
                        partition: 4,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted_transactions: None,
                        records: vec![],
                        current_leader: Some((3, 7)),
                        diverging_epoch: Some((2, 17)),
                    },
                ],
            },
            FetchTopicOut {
                name: "x".into(),
                topic_id: [9; 16],
                partitions: vec![FetchPartitionOut {
                    partition: 1,
                    records: vec![Bytes::from(vec![1u8; 300])],
                    ..Default::default()
                }],
            },
        ]
    }

    #[test]
    fn decodes_with_kafka_protocol_at_every_version() {
        let topics = sample();
        for version in 4..=16i16 {
            let endpoints = [NodeEndpointOut {
                node_id: 3,
                host: "broker3".into(),
                port: 9094,
                rack: Some("r1".into()),
            }];
            let parts =
                encode_fetch_response(version, 99, 0, 0, &topics, &endpoints).expect("encode");
            let mut frame = BytesMut::new();
            for p in &parts {
                frame.extend_from_slice(p);
            }
            let mut frame = frame.freeze();
            let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            assert_eq!(size, frame.len() - 4, "v{version} size prefix");
            let _ = frame.split_to(4);
            let header =
                ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(version))
                    .expect("header");
            assert_eq!(header.correlation_id, 99);
            let resp = FetchResponse::decode(&mut frame, version).expect("body decodes");
            assert!(frame.is_empty(), "v{version}: trailing bytes");
            assert_eq!(resp.responses.len(), 2);
            let t0 = &resp.responses[0];
            if version >= 13 {
                assert_eq!(t0.topic_id.as_bytes(), &[7; 16]);
            } else {
                assert_eq!(t0.topic.as_str(), "orders");
            }
            let p0 = &t0.partitions[0];
            assert_eq!(p0.records.as_deref(), Some(&b"abcdefgh"[..]));
            assert_eq!(p0.high_watermark, 42);
            assert_eq!(p0.last_stable_offset, 40);
            let aborted: Vec<(i64, i64)> = p0
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| (a.producer_id.0, a.first_offset))
                .collect();
            assert_eq!(aborted, vec![(5, 10), (6, 20)], "v{version}");
            assert!(t0.partitions[1].aborted_transactions.is_none());
            if version >= 5 {
                assert_eq!(p0.log_start_offset, 3);
            }
            assert_eq!(t0.partitions[1].error_code, 1);
            let leader = &t0.partitions[1].current_leader;
            if version >= 12 {
                assert_eq!(
                    (leader.leader_id.0, leader.leader_epoch),
                    (3, 7),
                    "v{version}"
                );
                let d = &t0.partitions[1].diverging_epoch;
                assert_eq!((d.epoch, d.end_offset), (2, 17), "v{version}");
                assert_eq!(t0.partitions[0].diverging_epoch.epoch, -1);
            }
            assert_eq!(t0.partitions[0].current_leader.leader_id.0, -1);
            if version >= 16 {
                let e = &resp.node_endpoints;
                assert_eq!(e.len(), 1);
                assert_eq!(
                    (e[0].node_id.0, e[0].host.as_str(), e[0].port),
                    (3, "broker3", 9094)
                );
                assert_eq!(e[0].rack.as_deref(), Some("r1"));
            }
            assert_eq!(
                resp.responses[1].partitions[0]
                    .records
                    .as_ref()
                    .map(|r| r.len()),
                Some(300)
            );
        }
    }

    #[test]
    fn batches_are_not_copied() {
        let topics = sample();
        let parts = encode_fetch_response(12, 1, 0, 0, &topics, &[]).expect("encode");
        let batch = &topics[1].partitions[0].records[0];
        assert!(
            parts
                .iter()
                .any(|p| p.as_ptr() == batch.as_ptr() && p.len() == batch.len()),
            "the batch buffer itself is one of the parts"
        );
    }
}
