//! A Kafka "broker" that discards everything: it answers ApiVersions, Metadata, CreateTopics
//! and ListOffsets, acknowledges Produce at once without storing anything, and long-polls
//! Fetch with empty answers. It measures the load generator's own ceiling (perf/RESULTS.md):
//! against it, the generator's rate is limited by the generator and loopback only.
//!
//! `cargo run --release --example discard_broker -- 127.0.0.1:19093`
//!
//! Loopback only; one thread per connection with blocking I/O (a sink needs nothing more).

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

type Topics = Arc<Mutex<HashMap<String, i32>>>;

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:19093".into())
        .parse()
        .expect("address HOST:PORT");
    assert!(
        addr.ip().is_loopback(),
        "the discard broker listens on loopback only"
    );
    let listener = TcpListener::bind(addr).expect("bind");
    eprintln!("discard broker on {addr}");
    let topics: Topics = Arc::default();
    for stream in listener.incoming().flatten() {
        let topics = topics.clone();
        std::thread::spawn(move || {
            let _ = stream.set_nodelay(true);
            if let Err(e) = serve(stream, addr, &topics) {
                eprintln!("connection closed: {e}");
            }
        });
    }
}

fn serve(mut s: TcpStream, addr: SocketAddr, topics: &Topics) -> anyhow::Result<()> {
    let mut len = [0u8; 4];
    let mut out = BytesMut::with_capacity(64 * 1024);
    loop {
        if s.read_exact(&mut len).is_err() {
            return Ok(());
        }
        let n = usize::try_from(i32::from_be_bytes(len))?;
        anyhow::ensure!(n <= 256 << 20, "request frame of {n} bytes is too large");
        let mut body = vec![0u8; n];
        s.read_exact(&mut body)?;
        let Some(&[k0, k1, v0, v1]) = body.get(..4).and_then(|h| <&[u8; 4]>::try_from(h).ok())
        else {
            anyhow::bail!("request frame of {n} bytes is too short");
        };
        let mut buf = Bytes::from(body);
        let key = ApiKey::try_from(i16::from_be_bytes([k0, k1]))
            .map_err(|_| anyhow::anyhow!("unknown api key"))?;
        let version = i16::from_be_bytes([v0, v1]);
        let header = RequestHeader::decode(&mut buf, key.request_header_version(version))?;
        out.clear();
        out.extend_from_slice(&[0; 4]);
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut out, key.response_header_version(version))?;
        match key {
            ApiKey::ApiVersions => {
                let v = |k: ApiKey, min, max| {
                    ApiVersion::default()
                        .with_api_key(k as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                };
                ApiVersionsResponse::default()
                    .with_api_keys(vec![
                        v(ApiKey::Produce, 3, 9),
                        v(ApiKey::Fetch, 4, 12),
                        v(ApiKey::ListOffsets, 1, 7),
                        v(ApiKey::Metadata, 1, 12),
                        v(ApiKey::ApiVersions, 0, 3),
                        v(ApiKey::CreateTopics, 2, 7),
                    ])
                    .encode(&mut out, version)?;
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut buf, version)?;
                let mut t = topics.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let mut res = Vec::new();
                for ct in req.topics {
                    t.insert(ct.name.0.as_str().to_string(), ct.num_partitions.max(1));
                    res.push(
                        CreatableTopicResult::default()
                            .with_name(ct.name)
                            .with_num_partitions(ct.num_partitions),
                    );
                }
                CreateTopicsResponse::default()
                    .with_topics(res)
                    .encode(&mut out, version)?;
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut buf, version)?;
                let t = topics.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let mut res = Vec::new();
                for mt in req.topics.unwrap_or_default() {
                    let Some(name) = mt.name else { continue };
                    let n = t.get(name.0.as_str()).copied().unwrap_or(1);
                    res.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(name))
                            .with_partitions(
                                (0..n)
                                    .map(|p| {
                                        MetadataResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_leader_id(BrokerId(0))
                                            .with_replica_nodes(vec![BrokerId(0)])
                                            .with_isr_nodes(vec![BrokerId(0)])
                                    })
                                    .collect(),
                            ),
                    );
                }
                MetadataResponse::default()
                    .with_brokers(vec![MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(StrBytes::from_string(addr.ip().to_string()))
                        .with_port(i32::from(addr.port()))])
                    .with_controller_id(BrokerId(0))
                    .with_topics(res)
                    .encode(&mut out, version)?;
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut buf, version)?;
                ListOffsetsResponse::default()
                    .with_topics(
                        req.topics
                            .into_iter()
                            .map(|t| {
                                ListOffsetsTopicResponse::default()
                                    .with_name(t.name)
                                    .with_partitions(
                                        t.partitions
                                            .iter()
                                            .map(|p| {
                                                ListOffsetsPartitionResponse::default()
                                                    .with_partition_index(p.partition_index)
                                                    .with_offset(0)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                    .encode(&mut out, version)?;
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut buf, version)?;
                if req.acks == 0 {
                    continue; // acks=0: no response at all
                }
                ProduceResponse::default()
                    .with_responses(
                        req.topic_data
                            .into_iter()
                            .map(|t| {
                                TopicProduceResponse::default()
                                    .with_name(t.name)
                                    .with_partition_responses(
                                        t.partition_data
                                            .iter()
                                            .map(|p| {
                                                PartitionProduceResponse::default()
                                                    .with_index(p.index)
                                                    .with_base_offset(0)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                    .encode(&mut out, version)?;
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut buf, version)?;
                std::thread::sleep(std::time::Duration::from_millis(
                    req.max_wait_ms.clamp(0, 1000) as u64,
                ));
                FetchResponse::default().encode(&mut out, version)?;
            }
            other => anyhow::bail!("unsupported API {other:?}"),
        }
        let n = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&n.to_be_bytes());
        s.write_all(&out)?;
    }
}
