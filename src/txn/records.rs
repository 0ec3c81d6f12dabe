//! The records the transaction coordinator writes to `__transaction_state`, in Kafka's own
//! schemas: key `TransactionLogKey` v0 (the transactional id), value `TransactionLogValue` v0
//! (producer id and epoch, timeout, status, partitions, last update and start times). Each
//! is prefixed with its schema version (i16), as Kafka's coordinator records are, so Kafka's
//! tools reading the topic recognise them. A null value is a tombstone (an expired id).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::TxnState;

/// Why a stored record could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("bad __transaction_state record: {0}")]
pub struct RecordError(pub String);

/// One transactional id's state as stored (Kafka's `TransactionLogValue`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTxn {
    /// The producer id in use by the transactional id.
    pub producer_id: i64,
    /// Its epoch.
    pub producer_epoch: i16,
    /// `transaction.timeout.ms` of the producer.
    pub timeout_ms: i32,
    /// The transaction's state.
    pub state: TxnState,
    /// The partitions of the ongoing (or completing) transaction, sorted.
    pub partitions: Vec<(String, i32)>,
    /// When the state last changed (ms since the epoch).
    pub last_update_ms: i64,
    /// When the transaction started (ms since the epoch; -1 when none).
    pub start_ms: i64,
}

fn need(b: &Bytes, n: usize) -> Result<(), RecordError> {
    if b.remaining() < n {
        return Err(RecordError("truncated".into()));
    }
    Ok(())
}

fn get_str(b: &mut Bytes) -> Result<String, RecordError> {
    need(b, 2)?;
    let len = b.get_i16();
    if len < 0 {
        return Err(RecordError("null string".into()));
    }
    need(b, len as usize)?;
    String::from_utf8(b.split_to(len as usize).to_vec())
        .map_err(|_| RecordError("string is not UTF-8".into()))
}

fn put_str(b: &mut BytesMut, s: &str) {
    debug_assert!(s.len() <= i16::MAX as usize);
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

/// The key of a transactional id's records: version 0, the id.
pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut k = BytesMut::with_capacity(4 + transactional_id.len());
    k.put_i16(0);
    put_str(&mut k, transactional_id);
    k.freeze()
}

/// The value of a transactional id's record, version 0.
pub fn encode_value(t: &StoredTxn) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(0);
    b.put_i64(t.producer_id);
    b.put_i16(t.producer_epoch);
    b.put_i32(t.timeout_ms);
    b.put_i8(t.state.id());
    // Partitions grouped by topic, as Kafka writes them.
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, p) in &t.partitions {
        match topics.last_mut() {
            Some((name, ps)) if *name == topic.as_str() => ps.push(*p),
            _ => topics.push((topic.as_str(), vec![*p])),
        }
    }
    b.put_i32(topics.len() as i32);
    for (topic, ps) in topics {
        put_str(&mut b, topic);
        b.put_i32(ps.len() as i32);
        for p in ps {
            b.put_i32(p);
        }
    }
    b.put_i64(t.last_update_ms);
    b.put_i64(t.start_ms);
    b.freeze()
}

/// Decodes a key into the transactional id.
pub fn decode_key(mut key: Bytes) -> Result<String, RecordError> {
    need(&key, 2)?;
    let version = key.get_i16();
    if version != 0 {
        return Err(RecordError(format!("key version {version}")));
    }
    get_str(&mut key)
}

/// Decodes a value (v0, or v1 with its tagged fields ignored); `None` for a tombstone.
pub fn decode_value(value: Option<Bytes>) -> Result<Option<StoredTxn>, RecordError> {
    let Some(mut b) = value else {
        return Ok(None);
    };
    need(&b, 2)?;
    let version = b.get_i16();
    if version != 0 {
        // v1 is flexible (compact strings and arrays); shardlog writes v0 only.
        return Err(RecordError(format!("value version {version}")));
    }
    need(&b, 8 + 2 + 4 + 1 + 4)?;
    let producer_id = b.get_i64();
    let producer_epoch = b.get_i16();
    let timeout_ms = b.get_i32();
    let state = TxnState::from_id(b.get_i8())
        .ok_or_else(|| RecordError("unknown transaction status".into()))?;
    let topics = b.get_i32();
    let mut partitions = Vec::new();
    for _ in 0..topics.max(0) {
        let topic = get_str(&mut b)?;
        need(&b, 4)?;
        let n = b.get_i32();
        if n < 0 || b.remaining() < n as usize * 4 {
            return Err(RecordError("truncated partitions".into()));
        }
        for _ in 0..n {
            partitions.push((topic.clone(), b.get_i32()));
        }
    }
    need(&b, 16)?;
    let last_update_ms = b.get_i64();
    let start_ms = b.get_i64();
    Ok(Some(StoredTxn {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let t = StoredTxn {
            producer_id: 4001,
            producer_epoch: 7,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: vec![("a".into(), 0), ("a".into(), 2), ("b".into(), 1)],
            last_update_ms: 1_700_000_000_000,
            start_ms: 1_699_999_999_000,
        };
        let v = encode_value(&t);
        assert_eq!(decode_value(Some(v.clone())).unwrap(), Some(t));
        assert_eq!(decode_key(encode_key("tx-1")).unwrap(), "tx-1");
        assert_eq!(decode_value(None).unwrap(), None);
        for cut in 0..v.len() {
            assert!(decode_value(Some(v.slice(..cut))).is_err(), "cut at {cut}");
        }
        // Kafka's layout: version 0, then producer id.
        assert_eq!(&v[..2], &[0, 0]);
        assert_eq!(&v[2..10], &4001i64.to_be_bytes());
    }
}
