//! Raw-socket tests: exact frames, hostile frames, pipelining. The broker must answer what is
//! well-formed, close only the connection that sent garbage, and keep serving everyone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{read_frame, roundtrip, Broker};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

fn api_versions_request(version: i16, correlation_id: i32) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")))
        .encode(
            &mut buf,
            ApiKey::ApiVersions.request_header_version(version.min(4)),
        )
        .expect("header");
    let mut req = ApiVersionsRequest::default();
    if version >= 3 {
        req = req
            .with_client_software_name(StrBytes::from_static_str("raw"))
            .with_client_software_version(StrBytes::from_static_str("1"));
    }
    req.encode(&mut buf, version.min(4)).expect("body");
    buf.to_vec()
}

fn decode_api_versions(frame: Vec<u8>, version: i16) -> (i32, ApiVersionsResponse) {
    let mut b = Bytes::from(frame);
    let header = ResponseHeader::decode(&mut b, 0).expect("response header v0");
    let body = ApiVersionsResponse::decode(&mut b, version).expect("body");
    assert!(b.is_empty(), "no trailing bytes");
    (header.correlation_id, body)
}

fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", b.port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// The connection was closed by the broker: a read sees end-of-stream or a reset.
fn assert_closed(s: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected close, got {n} bytes"),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "expected close, got {e}"
        ),
    }
}

fn assert_serves(b: &Broker) {
    let mut s = connect(b);
    let (cid, resp) = decode_api_versions(
        roundtrip(&mut s, &api_versions_request(3, 9)).expect("roundtrip"),
        3,
    );
    assert_eq!(cid, 9);
    assert_eq!(resp.error_code, 0);
}

#[test]
fn api_versions_v0_and_v3_list_the_supported_table() {
    let b = Broker::start(2, &[]);
    for version in [0i16, 3] {
        let mut s = connect(&b);
        let (cid, resp) = decode_api_versions(
            roundtrip(&mut s, &api_versions_request(version, 42)).expect("roundtrip"),
            version,
        );
        assert_eq!(cid, 42);
        assert_eq!(resp.error_code, 0);
        let produce = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Produce as i16)
            .expect("produce listed");
        assert_eq!((produce.min_version, produce.max_version), (3, 12));
        let fetch = resp
            .api_keys
            .iter()
            .find(|k| k.api_key == ApiKey::Fetch as i16)
            .expect("fetch listed");
        assert_eq!((fetch.min_version, fetch.max_version), (4, 16));
    }
}

#[test]
fn too_new_api_versions_gets_v0_unsupported_version_with_the_table() {
    let b = Broker::start(1, &[]);
    let mut s = connect(&b);
    let (cid, resp) = decode_api_versions(
        roundtrip(&mut s, &api_versions_request(77, 5)).expect("roundtrip"),
        0,
    );
    assert_eq!(cid, 5);
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4));
}

#[test]
fn garbage_huge_and_truncated_frames_close_only_that_connection() {
    let b = Broker::start(2, &[]);
    let bystander = connect(&b);

    let mut s = connect(&b);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert_closed(&mut s);

    let mut s = connect(&b);
    s.write_all(&0x7fff_ffffi32.to_be_bytes())
        .expect("write 2 GiB prefix");
    assert_closed(&mut s);

    let mut s = connect(&b);
    s.write_all(&(-5i32).to_be_bytes())
        .expect("write negative prefix");
    assert_closed(&mut s);

    let mut s = connect(&b);
    let mut frame = 12i32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0x03, 0xe8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]); // api key 1000
    s.write_all(&frame).expect("write unknown api");
    assert_closed(&mut s);

    let mut s = connect(&b);
    s.write_all(&100i32.to_be_bytes()).expect("write");
    s.write_all(&[0u8; 10]).expect("write part");
    drop(s); // truncated: the client goes away mid-frame

    assert_serves(&b);
    let mut bystander = bystander;
    let (_, resp) = decode_api_versions(
        roundtrip(&mut bystander, &api_versions_request(3, 1)).expect("bystander"),
        3,
    );
    assert_eq!(resp.error_code, 0, "an open connection was not disturbed");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Broker::start(2, &[]);
    let mut s = connect(&b);
    let mut all = Vec::new();
    for cid in 0..200 {
        let req = api_versions_request(if cid % 2 == 0 { 3 } else { 0 }, cid);
        all.extend_from_slice(&(req.len() as i32).to_be_bytes());
        all.extend_from_slice(&req);
    }
    s.write_all(&all).expect("write pipeline");
    for cid in 0..200 {
        let (got, resp) = decode_api_versions(
            read_frame(&mut s).expect("frame"),
            if cid % 2 == 0 { 3 } else { 0 },
        );
        assert_eq!(got, cid, "responses in request order");
        assert_eq!(resp.error_code, 0);
    }
}

#[test]
fn metadata_v0_empty_list_means_all_topics_and_v12_reports_topic_ids() {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
    let b = Broker::start(2, &["log.preallocate.bytes=1048576"]);
    let mut s = connect(&b);
    // Auto-create one topic (v12, by name), which reports its id.
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("md-t"))))]));
    let mut r = common::request(&mut s, ApiKey::Metadata, 12, &req);
    let resp = MetadataResponse::decode(&mut r, 12).expect("v12");
    assert_eq!(resp.topics[0].error_code, 0);
    let id = resp.topics[0].topic_id;
    assert!(!id.is_nil(), "topic id reported");
    // v12 by topic id only (no name).
    let req = MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
        .with_name(None)
        .with_topic_id(id)]));
    let mut r = common::request(&mut s, ApiKey::Metadata, 12, &req);
    let resp = MetadataResponse::decode(&mut r, 12).expect("v12 by id");
    assert_eq!(
        resp.topics[0].name.as_ref().map(|n| n.to_string()),
        Some("md-t".to_string())
    );
    // v0: an empty topic list means every topic.
    let req = MetadataRequest::default().with_topics(Some(vec![]));
    let mut r = common::request(&mut s, ApiKey::Metadata, 0, &req);
    let resp = MetadataResponse::decode(&mut r, 0).expect("v0");
    assert!(resp
        .topics
        .iter()
        .any(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "md-t")));
}

#[test]
fn idle_connections_are_closed_and_a_bare_length_prefix_reserves_little() {
    let b = Broker::start(1, &["connections.max.idle.ms=500"]);
    let mut idle = connect(&b);
    let started = std::time::Instant::now();
    assert_closed(&mut idle);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "closed too early: {:?}",
        started.elapsed()
    );

    // 200 connections each announce a 90 MiB request and send nothing more: the broker must
    // not reserve 90 MiB for each (RSS stays far below 200 × 90 MiB).
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = connect(&b);
        s.write_all(&(90i32 * 1024 * 1024).to_be_bytes())
            .expect("prefix");
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", b.pid())).expect("status");
    let rss_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    assert!(
        rss_kib < 512 * 1024,
        "RSS {rss_kib} KiB with 200 half-announced requests"
    );
    assert_serves(&b);
}

/// Metadata and DescribeCluster report the cluster id of the data dir (`meta.properties`, as
/// Kafka's `kafka-storage format` writes it), not a constant.
#[test]
fn cluster_id_is_the_data_dirs() {
    use kafka_protocol::messages::{
        DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    };
    let b = Broker::start(1, &[]);
    let props =
        std::fs::read_to_string(b.data_dir.join("meta.properties")).expect("meta.properties");
    let stored = props
        .lines()
        .find_map(|l| l.strip_prefix("cluster.id="))
        .expect("cluster.id in meta.properties")
        .to_string();
    assert!(!stored.is_empty());
    let mut s = connect(&b);
    let mut body = common::request(&mut s, ApiKey::Metadata, 12, &MetadataRequest::default());
    let meta = MetadataResponse::decode(&mut body, 12).expect("metadata");
    assert_eq!(meta.cluster_id.as_deref(), Some(stored.as_str()));
    let mut body = common::request(
        &mut s,
        ApiKey::DescribeCluster,
        1,
        &DescribeClusterRequest::default(),
    );
    let described = DescribeClusterResponse::decode(&mut body, 1).expect("describe cluster");
    assert_eq!(described.cluster_id.as_str(), stored);
}
