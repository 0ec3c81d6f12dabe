//! Batches pipelined on one connection are appended in request order, also when the requests
//! wait (here: for the unwritten-bytes backpressure, set to its smallest value so that every
//! request waits for the disk) and when their partitions live on other shards.

mod common;
mod rawkafka;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use common::Broker;
use kafka_protocol::messages::{ApiKey, ProduceResponse};
use rawkafka::{encode_batch, Client, PRODUCE_VERSION};

const PARTITIONS: i32 = 4;
const REQUESTS: usize = 400;

#[test]
fn pipelined_produces_append_in_request_order() {
    let b = Broker::start(
        2,
        &[
            "shard.unwritten.bytes.max=1",
            "log.preallocate.bytes=1048576",
        ],
    );
    let mut c = Client::connect(b.port, Duration::from_secs(20)).expect("connect");
    assert_eq!(c.create_topic("ordered", PARTITIONS).expect("create"), 0);

    // All requests written before any response is read; acks alternate 1 and -1.
    let mut sent = Vec::with_capacity(REQUESTS);
    let mut wire = Vec::new();
    for i in 0..REQUESTS {
        let partition = (i % PARTITIONS as usize) as i32;
        let acks = if i % 2 == 0 { 1 } else { -1 };
        let value = Bytes::from(format!("request-{i:05}-{}", "x".repeat(2000)));
        let req = Client::produce_request("ordered", &[(partition, encode_batch(&[value]))], acks);
        let (cid, frame) = c.frame(ApiKey::Produce, PRODUCE_VERSION, &req);
        wire.extend_from_slice(&frame);
        sent.push((cid, partition));
    }
    c.stream.write_all(&wire).expect("send the pipeline");
    let mut acked: Vec<Vec<(i64, usize)>> = vec![Vec::new(); PARTITIONS as usize];
    for (i, (cid, partition)) in sent.iter().enumerate() {
        let resp: ProduceResponse = c
            .read_response(ApiKey::Produce, PRODUCE_VERSION, *cid)
            .expect("produce response");
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "request {i}");
        acked[*partition as usize].push((p.base_offset, i));
    }

    for partition in 0..PARTITIONS {
        // Offsets handed out in request order...
        let offsets: Vec<i64> = acked[partition as usize].iter().map(|(o, _)| *o).collect();
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition}: offsets by request"
        );
        // ...and the log holds the records in that order.
        let stored = c.read_all("ordered", partition).expect("read back");
        let order: Vec<usize> = stored
            .iter()
            .map(|(_, v)| {
                std::str::from_utf8(&v[8..13])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .expect("request number")
            })
            .collect();
        let requests: Vec<usize> = acked[partition as usize].iter().map(|(_, i)| *i).collect();
        assert_eq!(order, requests, "partition {partition}: stored order");
    }
}
