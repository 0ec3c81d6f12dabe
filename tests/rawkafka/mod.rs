//! A tiny blocking Kafka client over a raw socket, built on the `kafka-protocol` crate, for the
//! durability tests: every acknowledgement it reports is the broker's own Produce response
//! (no client-side retries, no batching it does not show), and every batch it reads back is
//! checked for structure and CRC32C before its records are believed.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreateTopicsRequest};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsResponse, FetchResponse, ProduceRequest, ProduceResponse, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// Produce version used by the tests (flexible versions, error messages).
pub const PRODUCE_VERSION: i16 = 9;
/// Fetch version used by the tests (the last one addressing topics by name).
pub const FETCH_VERSION: i16 = 12;

/// A small seeded PRNG (SplitMix64): deterministic test input from one printed seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo);
        lo + self.next_u64() % (hi - lo)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A seed from the environment variable `var`, else from the clock; printed either way so a
/// failure can be replayed.
pub fn seed_from_env(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var} must be a u64, got {s:?}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    };
    eprintln!("seed: {seed} (replay with {var}={seed})");
    seed
}

/// Encodes one uncompressed v2 batch holding `values` (no keys), base offset 0, timestamped
/// now (old timestamps would let time-based retention delete what the tests check).
pub fn encode_batch(values: &[Bytes]) -> Bytes {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(1_700_000_000_000);
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder keeps records in one batch while offset - sequence stays constant;
            // the batch's base sequence is the first record's: -1, no idempotence.
            sequence: i as i32 - 1,
            timestamp: now_ms + i as i64,
            key: None,
            value: Some(v.clone()),
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

/// Splits a records field into whole batches, checks each one's length, magic and CRC32C
/// (here, independently of the decoder, and again by the decoder) and returns every record as
/// (offset, value). An error names the first bad batch: the broker served corrupt data.
pub fn decode_records(mut records: Bytes) -> Result<Vec<(i64, Bytes)>, String> {
    let mut out = Vec::new();
    while !records.is_empty() {
        if records.len() < 61 {
            return Err(format!(
                "{} trailing bytes, less than a batch header",
                records.len()
            ));
        }
        let base = i64::from_be_bytes(records[0..8].try_into().map_err(|_| "short")?);
        let len = i32::from_be_bytes(records[8..12].try_into().map_err(|_| "short")?);
        if len < 49 || 12 + len as usize > records.len() {
            return Err(format!(
                "batch at offset {base}: bad batch_length {len} ({} bytes left)",
                records.len()
            ));
        }
        let mut batch = records.split_to(12 + len as usize);
        if batch[16] != 2 {
            return Err(format!("batch at offset {base}: magic {}", batch[16]));
        }
        let crc = u32::from_be_bytes(batch[17..21].try_into().map_err(|_| "short")?);
        if crc32c::crc32c(&batch[21..]) != crc {
            return Err(format!("batch at offset {base}: CRC32C mismatch"));
        }
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| format!("batch at offset {base}: {e}"))?;
        for r in set.records {
            out.push((r.offset, r.value.unwrap_or_default()));
        }
    }
    Ok(out)
}

/// What one partition of a Fetch returned.
#[derive(Debug, Default)]
pub struct FetchedPartition {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// (offset, value) of every record in the returned batches (CRC-checked).
    pub records: Vec<(i64, Bytes)>,
}

/// One connection to the broker.
pub struct Client {
    pub stream: TcpStream,
    next_correlation_id: i32,
}

impl Client {
    /// Connects to the broker on loopback `port`; reads time out after `timeout`.
    pub fn connect(port: u16, timeout: Duration) -> io::Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            next_correlation_id: 1,
        })
    }

    /// A client over an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Encodes a whole request frame (size prefix included).
    pub fn frame<R: Encodable>(&mut self, key: ApiKey, version: i16, body: &R) -> (i32, Vec<u8>) {
        let cid = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 0]);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(cid)
            .with_client_id(Some(StrBytes::from_static_str("durability-test")))
            .encode(&mut buf, key.request_header_version(version))
            .expect("encode header");
        body.encode(&mut buf, version).expect("encode body");
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        (cid, buf.to_vec())
    }

    /// Reads one response frame and decodes it; checks the correlation id.
    pub fn read_response<T: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        cid: i32,
    ) -> io::Result<T> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(4..=256 << 20).contains(&len) {
            return Err(io::Error::other(format!("bad response size {len}")));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        let mut b = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut b, key.response_header_version(version))
            .map_err(|e| io::Error::other(format!("response header: {e}")))?;
        if header.correlation_id != cid {
            return Err(io::Error::other(format!(
                "correlation id {} for request {cid}",
                header.correlation_id
            )));
        }
        T::decode(&mut b, version).map_err(|e| io::Error::other(format!("{key:?} response: {e}")))
    }

    /// One request, one response.
    pub fn call<R: Encodable, T: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        body: &R,
    ) -> io::Result<T> {
        let (cid, frame) = self.frame(key, version, body);
        self.stream.write_all(&frame)?;
        self.read_response(key, version, cid)
    }

    /// Creates a topic; returns the error code (0, or 36 if it exists).
    pub fn create_topic(&mut self, name: &str, partitions: i32) -> io::Result<i16> {
        let req = CreateTopicsRequest::default()
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_string())))
                .with_num_partitions(partitions)
                .with_replication_factor(1)])
            .with_timeout_ms(10_000);
        let resp: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 5, &req)?;
        Ok(resp.topics.first().map(|t| t.error_code).unwrap_or(-1))
    }

    /// A Produce request body: one batch per (partition, values).
    pub fn produce_request(topic: &str, parts: &[(i32, Bytes)], acks: i16) -> ProduceRequest {
        ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(
                    parts
                        .iter()
                        .map(|(p, batch)| {
                            PartitionProduceData::default()
                                .with_index(*p)
                                .with_records(Some(batch.clone()))
                        })
                        .collect(),
                )])
    }

    /// Produces pre-encoded batches; returns (partition, error code, base offset) per partition.
    pub fn produce(
        &mut self,
        topic: &str,
        parts: &[(i32, Bytes)],
        acks: i16,
    ) -> io::Result<Vec<(i32, i16, i64)>> {
        let req = Self::produce_request(topic, parts, acks);
        let resp: ProduceResponse = self.call(ApiKey::Produce, PRODUCE_VERSION, &req)?;
        Ok(resp
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .map(|p| (p.index, p.error_code, p.base_offset))
            })
            .collect())
    }

    /// A Fetch request body for one partition.
    pub fn fetch_request(
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        max_wait_ms: i32,
    ) -> FetchRequest {
        FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(max_bytes)])])
    }

    /// Fetches one partition from `offset`; the records are CRC-checked (an error if not).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> io::Result<FetchedPartition> {
        let req = Self::fetch_request(topic, partition, offset, max_bytes, 0);
        let resp: FetchResponse = self.call(ApiKey::Fetch, FETCH_VERSION, &req)?;
        if resp.error_code != 0 {
            return Ok(FetchedPartition {
                error_code: resp.error_code,
                ..Default::default()
            });
        }
        let p = resp
            .responses
            .into_iter()
            .flat_map(|t| t.partitions)
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| io::Error::other("partition missing from fetch response"))?;
        let records = match p.records {
            Some(r) => decode_records(r).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("partition {partition}: corrupt batch served: {e}"),
                )
            })?,
            None => Vec::new(),
        };
        Ok(FetchedPartition {
            error_code: p.error_code,
            high_watermark: p.high_watermark,
            log_start_offset: p.log_start_offset,
            records,
        })
    }

    /// Reads a whole partition from offset 0 up to its high watermark. Fails on any fetch error,
    /// corrupt batch, hole or out-of-order offset.
    pub fn read_all(&mut self, topic: &str, partition: i32) -> io::Result<Vec<(i64, Bytes)>> {
        let mut out: Vec<(i64, Bytes)> = Vec::new();
        let mut next = 0i64;
        loop {
            let f = self.fetch(topic, partition, next, 4 << 20)?;
            if f.error_code != 0 {
                return Err(io::Error::other(format!(
                    "partition {partition}: fetch at {next} failed with error {}",
                    f.error_code
                )));
            }
            for (off, v) in f.records {
                if off < next {
                    continue; // a batch starting before the fetch offset
                }
                if off != next {
                    return Err(io::Error::other(format!(
                        "partition {partition}: hole: expected offset {next}, got {off}"
                    )));
                }
                out.push((off, v));
                next += 1;
            }
            if next >= f.high_watermark {
                if next > f.high_watermark {
                    return Err(io::Error::other(format!(
                        "partition {partition}: records past the high watermark {}",
                        f.high_watermark
                    )));
                }
                return Ok(out);
            }
        }
    }
}

/// Raises this process's soft fd limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// Resident set size of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Sleeps `ms` milliseconds.
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
