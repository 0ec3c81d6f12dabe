//! The load generator's batch building: its hand-rolled v2 batch builder against
//! `kafka_protocol::records::RecordBatchEncoder` for the same records (100 x 1 KiB, keyless),
//! and the consumer-side walk over a fetched batch.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records::{
    Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use shardlog_tools::load::batch::{walk_records, BatchBuilder};
use shardlog_tools::load::workload::Compression;
use std::hint::black_box;

const RECORDS: usize = 100;
const VALUE_BYTES: usize = 1024;

fn bench(c: &mut Criterion) {
    let payload = vec![0xabu8; VALUE_BYTES];
    let mut g = c.benchmark_group("load_batch_100x1KiB");
    g.throughput(Throughput::Elements(RECORDS as u64));

    g.bench_function("shardlog BatchBuilder", |b| {
        let mut builder = BatchBuilder::new(RECORDS * (VALUE_BYTES + 16));
        b.iter(|| {
            for i in 0..RECORDS {
                let stamp = (i as u64).to_le_bytes();
                builder.append(1_700_000_000_000, None, &stamp, &payload[8..]);
            }
            black_box(builder.finish(Compression::None).expect("finish"))
        })
    });

    g.bench_function("kafka-protocol RecordBatchEncoder", |b| {
        let opts = RecordEncodeOptions {
            version: 2,
            compression: KpCompression::None,
        };
        b.iter_batched(
            || {
                // The records a client would have to build per message (value copied in).
                (0..RECORDS)
                    .map(|i| {
                        let mut v = BytesMut::with_capacity(VALUE_BYTES);
                        v.extend_from_slice(&(i as u64).to_le_bytes());
                        v.extend_from_slice(&payload[8..]);
                        Record {
                            transactional: false,
                            control: false,
                            delete_horizon: false,
                            partition_leader_epoch: -1,
                            producer_id: -1,
                            producer_epoch: -1,
                            timestamp_type: TimestampType::Creation,
                            offset: i as i64,
                            sequence: -1,
                            timestamp: 1_700_000_000_000,
                            key: None,
                            value: Some(v.freeze()),
                            headers: IndexMap::new(),
                        }
                    })
                    .collect::<Vec<_>>()
            },
            |records| {
                let mut buf = BytesMut::with_capacity(RECORDS * (VALUE_BYTES + 16));
                RecordBatchEncoder::encode(&mut buf, records.iter(), &opts).expect("encode");
                black_box(buf.freeze())
            },
            BatchSize::SmallInput,
        )
    });

    let mut builder = BatchBuilder::new(0);
    for i in 0..RECORDS {
        builder.append(0, None, &(i as u64).to_le_bytes(), &payload[8..]);
    }
    let batch: Bytes = builder.finish(Compression::None).expect("finish");
    g.bench_function("walk_records (consumer)", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            let w = walk_records(&batch, 0, |v| sum += u64::from(v[0])).expect("walk");
            black_box((w, sum))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
