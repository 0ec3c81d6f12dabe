//! The records the coordinator writes to `__consumer_offsets`, in Kafka's own key and value
//! schemas (offset commit key v1 / value v3, group metadata key v2 / value v3), so Kafka tools
//! reading the internal topic recognise them. A record with a null value is a tombstone.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a stored record could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("bad __consumer_offsets record: {0}")]
pub struct RecordError(pub String);

/// A committed offset of one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group will consume.
    pub offset: i64,
    /// Leader epoch of the committed record (-1 if unknown).
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: String,
    /// When it was committed (ms since the epoch).
    pub commit_timestamp: i64,
}

/// One member of a stored group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    /// Member id.
    pub member_id: String,
    /// Static membership id (KIP-345).
    pub group_instance_id: Option<String>,
    /// Client id.
    pub client_id: String,
    /// Client host.
    pub client_host: String,
    /// Rebalance timeout (ms).
    pub rebalance_timeout_ms: i32,
    /// Session timeout (ms).
    pub session_timeout_ms: i32,
    /// The subscription (protocol metadata of the chosen protocol).
    pub subscription: Bytes,
    /// The assignment from the last completed rebalance.
    pub assignment: Bytes,
}

/// A stored group: what survives a broker restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredGroup {
    /// Protocol type (`consumer`).
    pub protocol_type: String,
    /// Generation.
    pub generation: i32,
    /// Chosen protocol (assignor).
    pub protocol: Option<String>,
    /// Leader member id.
    pub leader: Option<String>,
    /// Members.
    pub members: Vec<StoredMember>,
}

/// A decoded `__consumer_offsets` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OffsetsRecord {
    /// An offset commit, or its deletion (`None`).
    Offset {
        /// Group id.
        group: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The commit; `None` is a tombstone.
        value: Option<CommittedOffset>,
    },
    /// Group metadata, or its deletion (`None`).
    Group {
        /// Group id.
        group: String,
        /// The metadata; `None` is a tombstone.
        value: Option<StoredGroup>,
    },
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_nullable_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

fn need(b: &Bytes, n: usize) -> Result<(), RecordError> {
    if b.remaining() < n {
        return Err(RecordError("truncated".into()));
    }
    Ok(())
}

fn get_i16(b: &mut Bytes) -> Result<i16, RecordError> {
    need(b, 2)?;
    Ok(b.get_i16())
}

fn get_i32(b: &mut Bytes) -> Result<i32, RecordError> {
    need(b, 4)?;
    Ok(b.get_i32())
}

fn get_i64(b: &mut Bytes) -> Result<i64, RecordError> {
    need(b, 8)?;
    Ok(b.get_i64())
}

fn get_nullable_str(b: &mut Bytes) -> Result<Option<String>, RecordError> {
    let len = get_i16(b)?;
    if len < 0 {
        return Ok(None);
    }
    need(b, len as usize)?;
    let s = b.split_to(len as usize);
    String::from_utf8(s.to_vec())
        .map(Some)
        .map_err(|_| RecordError("string is not UTF-8".into()))
}

fn get_str(b: &mut Bytes) -> Result<String, RecordError> {
    get_nullable_str(b)?.ok_or_else(|| RecordError("null string".into()))
}

fn get_bytes(b: &mut Bytes) -> Result<Bytes, RecordError> {
    let len = get_i32(b)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    need(b, len as usize)?;
    Ok(b.split_to(len as usize))
}

impl OffsetsRecord {
    /// The record's key and value bytes (value `None` for a tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let mut key = BytesMut::new();
        match self {
            OffsetsRecord::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                key.put_i16(1);
                put_str(&mut key, group);
                put_str(&mut key, topic);
                key.put_i32(*partition);
                let value = value.as_ref().map(|v| {
                    let mut b = BytesMut::new();
                    b.put_i16(3);
                    b.put_i64(v.offset);
                    b.put_i32(v.leader_epoch);
                    put_str(&mut b, &v.metadata);
                    b.put_i64(v.commit_timestamp);
                    b.freeze()
                });
                (key.freeze(), value)
            }
            OffsetsRecord::Group { group, value } => {
                key.put_i16(2);
                put_str(&mut key, group);
                let value = value.as_ref().map(|g| {
                    let mut b = BytesMut::new();
                    b.put_i16(3);
                    put_str(&mut b, &g.protocol_type);
                    b.put_i32(g.generation);
                    put_nullable_str(&mut b, g.protocol.as_deref());
                    put_nullable_str(&mut b, g.leader.as_deref());
                    b.put_i64(0); // current_state_timestamp
                    b.put_i32(g.members.len() as i32);
                    for m in &g.members {
                        put_str(&mut b, &m.member_id);
                        put_nullable_str(&mut b, m.group_instance_id.as_deref());
                        put_str(&mut b, &m.client_id);
                        put_str(&mut b, &m.client_host);
                        b.put_i32(m.rebalance_timeout_ms);
                        b.put_i32(m.session_timeout_ms);
                        put_bytes(&mut b, &m.subscription);
                        put_bytes(&mut b, &m.assignment);
                    }
                    b.freeze()
                });
                (key.freeze(), value)
            }
        }
    }

    /// Parses a record's key and value.
    pub fn decode(mut key: Bytes, value: Option<Bytes>) -> Result<OffsetsRecord, RecordError> {
        match get_i16(&mut key)? {
            0 | 1 => {
                let group = get_str(&mut key)?;
                let topic = get_str(&mut key)?;
                let partition = get_i32(&mut key)?;
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        let version = get_i16(&mut v)?;
                        let offset = get_i64(&mut v)?;
                        let leader_epoch = if version >= 3 { get_i32(&mut v)? } else { -1 };
                        let metadata = get_str(&mut v)?;
                        let commit_timestamp = get_i64(&mut v)?;
                        Some(CommittedOffset {
                            offset,
                            leader_epoch,
                            metadata,
                            commit_timestamp,
                        })
                    }
                };
                Ok(OffsetsRecord::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            2 => {
                let group = get_str(&mut key)?;
                let value = match value {
                    None => None,
                    Some(mut v) => {
                        let version = get_i16(&mut v)?;
                        if version != 3 {
                            return Err(RecordError(format!("group metadata value v{version}")));
                        }
                        let protocol_type = get_str(&mut v)?;
                        let generation = get_i32(&mut v)?;
                        let protocol = get_nullable_str(&mut v)?;
                        let leader = get_nullable_str(&mut v)?;
                        let _state_ts = get_i64(&mut v)?;
                        let n = get_i32(&mut v)?;
                        let mut members = Vec::with_capacity(n.clamp(0, 1024) as usize);
                        for _ in 0..n.max(0) {
                            members.push(StoredMember {
                                member_id: get_str(&mut v)?,
                                group_instance_id: get_nullable_str(&mut v)?,
                                client_id: get_str(&mut v)?,
                                client_host: get_str(&mut v)?,
                                rebalance_timeout_ms: get_i32(&mut v)?,
                                session_timeout_ms: get_i32(&mut v)?,
                                subscription: get_bytes(&mut v)?,
                                assignment: get_bytes(&mut v)?,
                            });
                        }
                        Some(StoredGroup {
                            protocol_type,
                            generation,
                            protocol,
                            leader,
                            members,
                        })
                    }
                };
                Ok(OffsetsRecord::Group { group, value })
            }
            v => Err(RecordError(format!("unknown key version {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = vec![
            OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: Some(CommittedOffset {
                    offset: 42,
                    leader_epoch: 0,
                    metadata: "m".into(),
                    commit_timestamp: 7,
                }),
            },
            OffsetsRecord::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3,
                value: None,
            },
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(StoredGroup {
                    protocol_type: "consumer".into(),
                    generation: 5,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    members: vec![StoredMember {
                        member_id: "m1".into(),
                        group_instance_id: Some("i1".into()),
                        client_id: "c".into(),
                        client_host: "/127.0.0.1".into(),
                        rebalance_timeout_ms: 1000,
                        session_timeout_ms: 6000,
                        subscription: Bytes::from_static(b"sub"),
                        assignment: Bytes::from_static(b"asg"),
                    }],
                }),
            },
        ];
        for r in recs {
            let (k, v) = r.encode();
            assert_eq!(OffsetsRecord::decode(k, v).expect("decode"), r);
        }
        assert!(OffsetsRecord::decode(Bytes::from_static(&[0, 9]), None).is_err());
        assert!(OffsetsRecord::decode(Bytes::from_static(&[0, 1, 0, 5, b'a']), None).is_err());
    }
}

#[cfg(test)]
mod batch_tests {
    #[test]
    fn several_records_make_a_valid_batch() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..4)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: -1,
                timestamp: 5,
                key: Some(bytes::Bytes::from_static(b"k")),
                value: Some(bytes::Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .expect("encode");
        // The encoder writes one batch per record when sequences are not consecutive: the
        // coordinator must append every batch of the buffer (it did not, once).
        let batches = crate::storage::split_batches(&buf.freeze()).expect("whole batches");
        for batch in &batches {
            crate::storage::validate_batch(batch, 1 << 20).expect("each batch is valid");
        }
        assert!(!batches.is_empty());
    }
}
