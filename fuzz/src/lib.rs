//! The fuzz harnesses, shared by the cargo-fuzz targets (`fuzz_targets/`, nightly + libFuzzer)
//! and the stable, bounded, seeded run in `tests/fuzz_smoke.rs` (which includes this file).
//!
//! - [`request_frame`]: a request frame (after the 4-byte size prefix) as the connection
//!   reader hands it on: `decode_request_header`, then the body decoder of that API and
//!   version, exactly as the handlers call it; for Produce, also the broker's split of each
//!   records field into batches and `validate_batch` on each.
//! - [`record_batch`]: `validate_batch` on arbitrary bytes, with its promises checked: an
//!   accepted batch is exactly one v2 batch whose CRC32C matches and whose counts agree.
//!
//! - [`offsets_record`]: the decoder of `__consumer_offsets` records, which are replayed at
//!   every start and which a client can write (Produce to the internal topic is accepted).
//!
//! All must return (never panic, never abort) on any input. [`seed_request_frames`] and
//! [`seed_record_batches`] are real encodings (the `kafka-protocol` crate's, for every API
//! and version shardlog supports) to start from.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use shardlog::group::records::{CommittedOffset, OffsetsRecord, StoredGroup, StoredMember};
use shardlog::protocol::{decode_body, decode_request_header};
use shardlog::server::SUPPORTED_APIS;
use shardlog::storage::{build_test_batch, split_batches, validate_batch};

/// Splits a Produce records field into batches as the broker does and validates each.
fn validate_records(records: &Bytes) {
    if let Ok(batches) = split_batches(records) {
        for batch in batches {
            let _ = record_batch_checked(&batch, 1_048_588);
        }
    }
}

/// One request frame, as the connection hands it to the handlers.
pub fn request_frame(data: &[u8]) {
    let mut frame = Bytes::copy_from_slice(data);
    let Ok(header) = decode_request_header(&mut frame, SUPPORTED_APIS) else {
        return;
    };
    let v = header.request_api_version;
    let Ok(key) = ApiKey::try_from(header.request_api_key) else {
        return;
    };
    let b = &mut frame;
    match key {
        ApiKey::Produce => {
            if let Ok(req) = decode_body::<ProduceRequest>(b, v) {
                for t in &req.topic_data {
                    for p in &t.partition_data {
                        if let Some(r) = &p.records {
                            validate_records(r);
                        }
                    }
                }
            }
        }
        ApiKey::Fetch => drop(decode_body::<FetchRequest>(b, v)),
        ApiKey::ListOffsets => drop(decode_body::<ListOffsetsRequest>(b, v)),
        ApiKey::Metadata => drop(decode_body::<MetadataRequest>(b, v)),
        ApiKey::ApiVersions => drop(decode_body::<ApiVersionsRequest>(b, v.min(4))),
        ApiKey::CreateTopics => drop(decode_body::<CreateTopicsRequest>(b, v)),
        ApiKey::DeleteTopics => drop(decode_body::<DeleteTopicsRequest>(b, v)),
        ApiKey::DescribeConfigs => drop(decode_body::<DescribeConfigsRequest>(b, v)),
        ApiKey::CreatePartitions => drop(decode_body::<CreatePartitionsRequest>(b, v)),
        ApiKey::IncrementalAlterConfigs => {
            drop(decode_body::<IncrementalAlterConfigsRequest>(b, v))
        }
        ApiKey::DescribeCluster => drop(decode_body::<DescribeClusterRequest>(b, v)),
        ApiKey::FindCoordinator => drop(decode_body::<FindCoordinatorRequest>(b, v)),
        ApiKey::JoinGroup => drop(decode_body::<JoinGroupRequest>(b, v)),
        ApiKey::SyncGroup => drop(decode_body::<SyncGroupRequest>(b, v)),
        ApiKey::Heartbeat => drop(decode_body::<HeartbeatRequest>(b, v)),
        ApiKey::LeaveGroup => drop(decode_body::<LeaveGroupRequest>(b, v)),
        ApiKey::ListGroups => drop(decode_body::<ListGroupsRequest>(b, v)),
        ApiKey::DescribeGroups => drop(decode_body::<DescribeGroupsRequest>(b, v)),
        ApiKey::DeleteGroups => drop(decode_body::<DeleteGroupsRequest>(b, v)),
        ApiKey::OffsetCommit => drop(decode_body::<OffsetCommitRequest>(b, v)),
        ApiKey::OffsetFetch => drop(decode_body::<OffsetFetchRequest>(b, v)),
        ApiKey::OffsetDelete => drop(decode_body::<OffsetDeleteRequest>(b, v)),
        ApiKey::InitProducerId => drop(decode_body::<InitProducerIdRequest>(b, v)),
        _ => {}
    }
}

/// `validate_batch`, with what it promises checked; panics if a promise is broken.
fn record_batch_checked(data: &[u8], max_message_bytes: u32) -> bool {
    let Ok(h) = validate_batch(data, max_message_bytes) else {
        return false;
    };
    assert_eq!(
        h.size_bytes(),
        data.len(),
        "accepted batch has the wrong size"
    );
    assert!(
        data.len() <= max_message_bytes as usize,
        "oversize batch accepted"
    );
    assert_eq!(h.magic, 2, "accepted batch is not v2");
    assert_eq!(
        crc32c::crc32c(&data[21..]),
        h.crc,
        "accepted batch fails its CRC"
    );
    assert!(h.records_count >= 1, "accepted batch without records");
    assert_eq!(h.last_offset_delta, h.records_count - 1);
    true
}

/// Arbitrary bytes as one record batch; the first 4 bytes pick `max.message.bytes`.
pub fn record_batch(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let max = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
    let batch = &data[4..];
    record_batch_checked(batch, max);
    record_batch_checked(batch, u32::MAX);
}

/// Arbitrary bytes as a `__consumer_offsets` record: 2 bytes of key length, the key, and the
/// rest as the value (none if empty: a tombstone).
pub fn offsets_record(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let klen = (u16::from_be_bytes([data[0], data[1]]) as usize).min(data.len() - 2);
    let key = Bytes::copy_from_slice(&data[2..2 + klen]);
    let rest = &data[2 + klen..];
    let value = (!rest.is_empty()).then(|| Bytes::copy_from_slice(rest));
    if let Ok(r) = OffsetsRecord::decode(key, value) {
        // What decodes must encode again (the coordinator rewrites what it replays).
        let _ = r.encode();
    }
}

/// (name, input) for the offsets-record target: real group and offset records.
pub fn seed_offsets_records() -> Vec<(String, Vec<u8>)> {
    let records = [
        OffsetsRecord::Offset {
            group: "g".into(),
            topic: "orders".into(),
            partition: 3,
            value: Some(CommittedOffset {
                offset: 42,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 1_700_000_000_000,
            }),
        },
        OffsetsRecord::Offset {
            group: "g".into(),
            topic: "orders".into(),
            partition: 3,
            value: None,
        },
        OffsetsRecord::Group {
            group: "g".into(),
            value: Some(StoredGroup {
                protocol_type: "consumer".into(),
                generation: 4,
                protocol: Some("range".into()),
                leader: Some("m-1".into()),
                members: vec![StoredMember {
                    member_id: "m-1".into(),
                    group_instance_id: None,
                    client_id: "c".into(),
                    client_host: "/127.0.0.1".into(),
                    rebalance_timeout_ms: 30_000,
                    session_timeout_ms: 10_000,
                    subscription: Bytes::from_static(b"\x00\x01"),
                    assignment: Bytes::from_static(b"\x00\x02"),
                }],
            }),
        },
    ];
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (k, v) = r.encode();
            let mut out = Vec::new();
            out.put_u16(k.len() as u16);
            out.extend_from_slice(&k);
            if let Some(v) = v {
                out.extend_from_slice(&v);
            }
            (format!("offsets-record-{i}"), out)
        })
        .collect()
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

fn frame<R: Encodable>(key: ApiKey, version: i16, body: &R) -> Option<Vec<u8>> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(42)
        .with_client_id(Some(s("seed")))
        .encode(&mut buf, key.request_header_version(version))
        .ok()?;
    body.encode(&mut buf, version).ok()?;
    Some(buf.to_vec())
}

/// A realistic body for `key` (defaults, plus a topic/partition or a batch where that matters).
fn seed_body(key: ApiKey, version: i16) -> Option<Vec<u8>> {
    let topic = TopicName(s("orders"));
    match key {
        ApiKey::Produce => frame(
            key,
            version,
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(30_000)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(topic)
                    .with_partition_data(vec![PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(build_test_batch(3, 20, 1_700_000_000_000)))])]),
        ),
        ApiKey::Fetch => frame(
            key,
            version,
            &FetchRequest::default()
                .with_max_wait_ms(500)
                .with_min_bytes(1)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic)
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(7)
                        .with_partition_max_bytes(1 << 20)])]),
        ),
        ApiKey::Metadata => frame(
            key,
            version,
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic)),
            ])),
        ),
        ApiKey::ListOffsets => frame(
            key,
            version,
            &ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic)
                    .with_partitions(vec![
                        list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1)
                    ]),
            ]),
        ),
        ApiKey::CreateTopics => frame(
            key,
            version,
            &CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic)
                    .with_num_partitions(3)
                    .with_replication_factor(1),
            ]),
        ),
        ApiKey::JoinGroup => frame(
            key,
            version,
            &JoinGroupRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_session_timeout_ms(10_000)
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(
                    b"\x00\x01\x00\x00\x00\x01\x00\x06orders",
                ))]),
        ),
        ApiKey::OffsetCommit => frame(
            key,
            version,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic)
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_offset(12),
                        ]),
                ]),
        ),
        ApiKey::ApiVersions => frame(key, version, &ApiVersionsRequest::default()),
        ApiKey::DeleteTopics => frame(key, version, &DeleteTopicsRequest::default()),
        ApiKey::DescribeConfigs => frame(key, version, &DescribeConfigsRequest::default()),
        ApiKey::CreatePartitions => frame(key, version, &CreatePartitionsRequest::default()),
        ApiKey::IncrementalAlterConfigs => {
            frame(key, version, &IncrementalAlterConfigsRequest::default())
        }
        ApiKey::DescribeCluster => frame(key, version, &DescribeClusterRequest::default()),
        ApiKey::FindCoordinator => frame(key, version, &FindCoordinatorRequest::default()),
        ApiKey::SyncGroup => frame(key, version, &SyncGroupRequest::default()),
        ApiKey::Heartbeat => frame(key, version, &HeartbeatRequest::default()),
        ApiKey::LeaveGroup => frame(key, version, &LeaveGroupRequest::default()),
        ApiKey::ListGroups => frame(key, version, &ListGroupsRequest::default()),
        ApiKey::DescribeGroups => frame(key, version, &DescribeGroupsRequest::default()),
        ApiKey::DeleteGroups => frame(key, version, &DeleteGroupsRequest::default()),
        ApiKey::OffsetFetch => frame(key, version, &OffsetFetchRequest::default()),
        ApiKey::OffsetDelete => frame(key, version, &OffsetDeleteRequest::default()),
        ApiKey::InitProducerId => frame(key, version, &InitProducerIdRequest::default()),
        _ => None,
    }
}

/// (name, frame) for every supported API at every supported version.
pub fn seed_request_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for &shardlog::protocol::ApiSpec {
        key,
        min_version: min,
        max_version: max,
    } in SUPPORTED_APIS
    {
        for version in min..=max {
            if let Some(f) = seed_body(key, version) {
                out.push((format!("{key:?}-v{version}"), f));
            }
        }
    }
    out
}

/// (name, input) for the batch target: `max.message.bytes` then a batch.
pub fn seed_record_batches() -> Vec<(String, Vec<u8>)> {
    [(1, 0), (3, 20), (10, 200), (1, 5000)]
        .iter()
        .map(|&(count, len)| {
            let mut v = Vec::new();
            v.put_u32(1_048_588);
            v.extend_from_slice(&build_test_batch(count, len, 1_700_000_000_000));
            (format!("batch-{count}x{len}"), v)
        })
        .collect()
}
