//! Protocol hot paths: decoding a 1 MiB Produce request (records must stay a slice of the
//! request buffer) and encoding a Fetch response carrying 1 MiB of batches, with shardlog's
//! zero-copy encoder beside `kafka-protocol`'s own encoder as the baseline in the same run.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchResponse, ProduceRequest, TopicName};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shardlog::protocol::fetch_response::{encode_fetch_response, FetchPartitionOut, FetchTopicOut};

/// `count` records of `size` bytes each as v2 batches: one record per batch, because
/// kafka-protocol's encoder starts a new batch whenever offset - sequence changes (sequence is
/// -1 throughout). Both encoders measured here treat the records field as opaque bytes, so the
/// batch count does not change what they do; it adds ~60 bytes of header per record.
fn batch(count: usize, size: usize) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'x'; size])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn produce_decode(c: &mut Criterion) {
    let records = batch(1024, 1024);
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(records))])]);
    let version = 9;
    let mut buf = BytesMut::new();
    req.encode(&mut buf, version).expect("encode request");
    let frame = buf.freeze();
    let mut g = c.benchmark_group("produce_request");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode_1MiB_v9", |b| {
        b.iter(|| {
            let mut f = frame.clone();
            let r = ProduceRequest::decode(&mut f, version).expect("decode");
            let records = r.topic_data[0].partition_data[0]
                .records
                .as_ref()
                .expect("records");
            // The records are a view of the request buffer, not a copy.
            assert!(
                records.as_ptr() >= frame.as_ptr()
                    && records.as_ptr() < frame[frame.len()..].as_ptr()
            );
            r
        })
    });
    g.finish();
}

fn fetch_encode(c: &mut Criterion) {
    // 16 partitions × 64 KiB of batches = 1 MiB of records.
    let batches: Vec<Bytes> = (0..16).map(|_| batch(64, 1000)).collect();
    let total: usize = batches.iter().map(Bytes::len).sum();
    let version = 12;
    let mut g = c.benchmark_group("fetch_response_1MiB");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_with_input(
        BenchmarkId::new("encode", "zero_copy"),
        &batches,
        |b, batches| {
            b.iter(|| {
                let topics = vec![FetchTopicOut {
                    name: "bench".into(),
                    topic_id: [1; 16],
                    partitions: batches
                        .iter()
                        .enumerate()
                        .map(|(i, bt)| FetchPartitionOut {
                            partition: i as i32,
                            high_watermark: 1000,
                            last_stable_offset: 1000,
                            log_start_offset: 0,
                            records: vec![bt.clone()],
                            ..Default::default()
                        })
                        .collect(),
                }];
                encode_fetch_response(version, 1, 0, 0, &topics, &[]).expect("encode")
            })
        },
    );
    g.bench_with_input(
        BenchmarkId::new("encode", "kafka_protocol"),
        &batches,
        |b, batches| {
            b.iter(|| {
                let resp =
                    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default(
                    )
                    .with_topic(TopicName(StrBytes::from_static_str("bench")))
                    .with_partitions(
                        batches
                            .iter()
                            .enumerate()
                            .map(|(i, bt)| {
                                PartitionData::default()
                                    .with_partition_index(i as i32)
                                    .with_high_watermark(1000)
                                    .with_last_stable_offset(1000)
                                    .with_log_start_offset(0)
                                    .with_records(Some(bt.clone()))
                            })
                            .collect(),
                    )]);
                let mut buf = BytesMut::with_capacity(total + 1024);
                resp.encode(&mut buf, version).expect("encode");
                buf.freeze()
            })
        },
    );
    g.finish();
}

criterion_group!(benches, produce_decode, fetch_encode);
criterion_main!(benches);
