//! Raw-bytes checks of the handshakes Kafka clients differ on (ApiVersions v0 and v3 are in
//! tests/raw_protocol.rs): Metadata by name and by topic id at every version, SASL rejected
//! cleanly while SASL is not configured, and the request shapes the client matrix
//! (tests/clients.rs) found broken: an OffsetCommit of several partitions, a ListOffsets by
//! time that lands inside a batch.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{roundtrip, Broker};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    GroupId, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Kafka's ILLEGAL_SASL_STATE.
const ILLEGAL_SASL_STATE: i16 = 34;

fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Sends `req` as `key` at `version` and decodes the response (correlation id checked).
fn call<Req: Encodable, Resp: Decodable>(
    s: &mut TcpStream,
    key: ApiKey,
    version: i16,
    req: &Req,
) -> Resp {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(sb("handshakes")))
        .encode(&mut buf, key.request_header_version(version))
        .expect("header");
    req.encode(&mut buf, version).expect("body");
    let mut frame = Bytes::from(roundtrip(s, &buf).expect("roundtrip"));
    let header = ResponseHeader::decode(&mut frame, key.response_header_version(version))
        .expect("response header");
    assert_eq!(header.correlation_id, 7);
    let resp = Resp::decode(&mut frame, version).expect("response body");
    assert!(frame.is_empty(), "{key:?} v{version}: trailing bytes");
    resp
}

fn create_topic(s: &mut TcpStream, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(sb(name)))
            .with_num_partitions(partitions)
            .with_replication_factor(1)])
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = call(s, ApiKey::CreateTopics, 5, &req);
    assert_eq!(resp.topics[0].error_code, 0, "create {name}");
}

#[test]
fn metadata_by_name_and_by_topic_id_at_every_version() {
    let b = Broker::start(1, &["log.preallocate.bytes=1048576"]);
    let mut s = connect(&b);
    create_topic(&mut s, "md-a", 3);
    create_topic(&mut s, "md-b", 1);
    let mut id = None;
    for version in 0..=12i16 {
        // By name (every version; v0 has no "all topics" null, v1+ does).
        let topics = vec![MetadataRequestTopic::default().with_name(Some(TopicName(sb("md-a"))))];
        let req = MetadataRequest::default()
            .with_topics(Some(topics))
            .with_allow_auto_topic_creation(version < 4);
        let resp: MetadataResponse = call(&mut s, ApiKey::Metadata, version, &req);
        assert_eq!(resp.brokers.len(), 1, "v{version}");
        assert_eq!(resp.brokers[0].port, b.port as i32, "v{version}");
        let t = &resp.topics[0];
        assert_eq!(t.error_code, 0, "v{version}");
        assert_eq!(t.partitions.len(), 3, "v{version}");
        if version >= 10 {
            assert!(!t.topic_id.is_nil(), "v{version} carries the topic id");
            id = Some(t.topic_id);
        }
        if version >= 1 {
            let all: MetadataResponse = call(
                &mut s,
                ApiKey::Metadata,
                version,
                &MetadataRequest::default().with_topics(None),
            );
            let mut names: Vec<&str> = all
                .topics
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.as_str()))
                .collect();
            names.sort_unstable();
            assert!(names.ends_with(&["md-a", "md-b"]), "v{version}: {names:?}");
            for t in &all.topics {
                let internal = t.name.as_ref().is_some_and(|n| n.starts_with("__"));
                assert_eq!(
                    t.is_internal, internal,
                    "v{version}: {:?} is_internal",
                    t.name
                );
            }
        }
    }
    let id = id.expect("topic id seen");
    // By topic id (v10+: the name is null in the request).
    for version in 10..=12i16 {
        let req = MetadataRequest::default().with_topics(Some(vec![
            // kafka-protocol's default name is "", not null: null it as clients do.
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(id),
            MetadataRequestTopic::default()
                .with_name(None)
                .with_topic_id(uuid::Uuid::from_u128(42)),
        ]));
        let resp: MetadataResponse = call(&mut s, ApiKey::Metadata, version, &req);
        assert_eq!(resp.topics[0].error_code, 0, "v{version}: {resp:?}");
        assert_eq!(
            resp.topics[0].name.as_ref().map(|n| n.as_str()),
            Some("md-a"),
            "v{version}"
        );
        assert_eq!(resp.topics[0].partitions.len(), 3);
        assert_eq!(
            resp.topics[1].error_code, 100,
            "v{version}: UNKNOWN_TOPIC_ID"
        );
    }
}

#[test]
fn sasl_handshake_is_rejected_with_illegal_sasl_state_and_the_connection_stays_open() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    // Kafka's brokers list the SASL APIs on every listener; a client that wants SASL learns
    // from the answer (not from a closed socket) that this listener does not do it.
    let versions: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(sb("handshakes"))
            .with_client_software_version(sb("1")),
    );
    for key in [ApiKey::SaslHandshake, ApiKey::SaslAuthenticate] {
        assert!(
            versions.api_keys.iter().any(|k| k.api_key == key as i16),
            "{key:?} advertised"
        );
    }
    for version in 0..=1i16 {
        let req = SaslHandshakeRequest::default().with_mechanism(sb("PLAIN"));
        let resp: SaslHandshakeResponse = call(&mut s, ApiKey::SaslHandshake, version, &req);
        assert_eq!(resp.error_code, ILLEGAL_SASL_STATE, "v{version}");
        assert!(resp.mechanisms.is_empty(), "no mechanism is enabled");
    }
    for version in 0..=2i16 {
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from_static(b"\0u\0p"));
        let resp: SaslAuthenticateResponse = call(&mut s, ApiKey::SaslAuthenticate, version, &req);
        assert_eq!(resp.error_code, ILLEGAL_SASL_STATE, "v{version}");
    }
    // Still served.
    let again: ApiVersionsResponse = call(
        &mut s,
        ApiKey::ApiVersions,
        0,
        &ApiVersionsRequest::default(),
    );
    assert_eq!(again.error_code, 0);
}

#[test]
fn offset_commit_of_several_partitions_in_one_request() {
    let b = Broker::start(2, &["log.preallocate.bytes=1048576"]);
    let mut s = connect(&b);
    create_topic(&mut s, "oc", 4);
    // A commit outside group management (generation -1), as admin tools and assign() users do.
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(sb("oc-group")))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(sb("oc")))
            .with_partitions(
                (0..4)
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(10 + p as i64)
                    })
                    .collect(),
            )]);
    let resp: OffsetCommitResponse = call(&mut s, ApiKey::OffsetCommit, 8, &req);
    let codes: Vec<i16> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![0; 4], "every partition committed: {}", b.log());
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(sb("oc-group")))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(TopicName(sb("oc")))
            .with_partition_indexes(vec![0, 1, 2, 3])]));
    let resp: OffsetFetchResponse = call(&mut s, ApiKey::OffsetFetch, 7, &req);
    let offsets: Vec<i64> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offsets, vec![10, 11, 12, 13]);
}

#[test]
fn list_offsets_by_time_finds_the_record_inside_a_batch() {
    let b = Broker::start(1, &["log.preallocate.bytes=1048576"]);
    let mut s = connect(&b);
    create_topic(&mut s, "lo", 1);
    let t0 = 1_700_000_000_000i64;
    // One batch of three records, one second apart (what every client sends when it batches).
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            // kafka-protocol starts a new batch unless offset - sequence stays constant.
            sequence: i as i32 - 1,
            timestamp: t0 + 1000 * i,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        })
        .collect();
    let mut batch = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut batch,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("batch");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(sb("lo")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch.freeze()))])]);
    let resp: ProduceResponse = call(&mut s, ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(
        (p.error_code, p.base_offset),
        (0, 0),
        "one batch at offset 0"
    );
    for (ts, want_offset, want_ts) in [
        (t0 - 5, 0, t0),
        (t0 + 500, 1, t0 + 1000),
        (t0 + 1000, 1, t0 + 1000),
        (t0 + 1001, 2, t0 + 2000),
        (t0 + 9000, -1, -1),
    ] {
        let req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(sb("lo")))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])]);
        let resp: ListOffsetsResponse = call(&mut s, ApiKey::ListOffsets, 7, &req);
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(
            (p.offset, p.timestamp),
            (want_offset, want_ts),
            "ListOffsets at t0{:+}: Kafka answers the first record with timestamp >= target",
            ts - t0
        );
    }
}
