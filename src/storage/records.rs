//! Record-level view of a v2 batch, for what needs the records inside (the compacted topic's
//! key check at produce, the cleaner): decompression, parsing each record's offset delta, key
//! and value presence, and rebuilding a batch that keeps a subset of its records.
//!
//! Record layout (Kafka v2): length varint, attributes i8, timestamp delta varlong, offset
//! delta varint, key length varint (-1 = null) + key, value length varint (-1 = null) +
//! value, header count varint + headers.

use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{BatchHeader, BATCH_HEADER_BYTES, LOG_OVERHEAD_BYTES};

/// Attribute bits of the compression codec.
const ATTR_COMPRESSION_MASK: i16 = 0x07;

/// One record of a batch, as stored (after decompression).
#[derive(Clone, Debug)]
pub(crate) struct RecordRef {
    /// The record's offset minus the batch's base offset.
    pub offset_delta: i32,
    /// The key; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value is null: a tombstone.
    pub tombstone: bool,
    /// The whole record, its length varint included: copied as-is into a rebuilt batch.
    pub bytes: Bytes,
}

/// Why a batch's records cannot be read.
pub(crate) type RecordsError = &'static str;

fn varint(b: &[u8], at: &mut usize) -> Result<i64, RecordsError> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at).ok_or("record truncated in a varint")?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes")
}

/// The batch's records section, decompressed when the batch is compressed.
fn records_section(batch: &Bytes, h: &BatchHeader) -> Result<Bytes, RecordsError> {
    let body = batch.slice(BATCH_HEADER_BYTES..);
    let mut b = body;
    let out = match h.attributes & ATTR_COMPRESSION_MASK {
        0 => return Ok(b),
        1 => Gzip::decompress(&mut b, |d: &mut Bytes| Ok(std::mem::take(d))),
        2 => Snappy::decompress(&mut b, |d: &mut Bytes| Ok(std::mem::take(d))),
        3 => Lz4::decompress(&mut b, |d: &mut Bytes| Ok(std::mem::take(d))),
        4 => Zstd::decompress(&mut b, |d: &mut Bytes| Ok(std::mem::take(d))),
        _ => return Err("unknown compression codec"),
    };
    out.map_err(|_| "records do not decompress")
}

/// Every record of a (CRC-checked) batch, in order. Control batches are parsed like others.
pub(crate) fn batch_records(
    batch: &Bytes,
    h: &BatchHeader,
) -> Result<Vec<RecordRef>, RecordsError> {
    let section = records_section(batch, h)?;
    let count = h.records_count.max(0) as usize;
    let mut out = Vec::with_capacity(count.min(section.len()));
    let mut at = 0usize;
    for _ in 0..count {
        let start = at;
        let len = varint(&section, &mut at)?;
        if len < 0 || at + len as usize > section.len() {
            return Err("record length past the end of the batch");
        }
        let end = at + len as usize;
        let rec = &section[..end];
        at += 1; // attributes
        varint(rec, &mut at)?; // timestamp delta
        let offset_delta = varint(rec, &mut at)?;
        if !(0..=i32::MAX as i64).contains(&offset_delta) {
            return Err("record offset delta out of range");
        }
        let key_len = varint(rec, &mut at)?;
        let key = if key_len < 0 {
            None
        } else {
            let k_end = at + key_len as usize;
            if k_end > end {
                return Err("record key past the end of the record");
            }
            let k = section.slice(at..k_end);
            at = k_end;
            Some(k)
        };
        let value_len = varint(rec, &mut at)?;
        if value_len >= 0 && at + value_len as usize > end {
            return Err("record value past the end of the record");
        }
        out.push(RecordRef {
            offset_delta: offset_delta as i32,
            key,
            tombstone: value_len < 0,
            bytes: section.slice(start..end),
        });
        at = end;
    }
    if at != section.len() {
        return Err("bytes after the last record");
    }
    Ok(out)
}

/// A compacted topic needs a key on every record (Kafka: INVALID_RECORD, "Compacted topic
/// cannot accept message without key"). Control batches are exempt.
pub(crate) fn check_keys(batch: &Bytes, h: &BatchHeader) -> Result<(), RecordsError> {
    if h.is_control() {
        return Ok(());
    }
    if batch_records(batch, h)?.iter().any(|r| r.key.is_none()) {
        return Err("Compacted topic cannot accept message without key");
    }
    Ok(())
}

/// A batch keeping only `kept` (records of `batch`, in order; none leaves an empty batch, which
/// only the cleaner writes, for a producer's last batch): the header's
/// base offset, last offset delta (so the batch still ends at its original last offset, as
/// Kafka's cleaner keeps it), timestamps and producer fields stay; the records are written
/// uncompressed (the codec bits cleared), the count, length and CRC are recomputed.
pub(crate) fn rebuild_batch(
    batch: &Bytes,
    h: &BatchHeader,
    kept: &[RecordRef],
) -> (Bytes, BatchHeader) {
    let body: usize = kept.iter().map(|r| r.bytes.len()).sum();
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + body);
    b.extend_from_slice(&batch[..BATCH_HEADER_BYTES]);
    for r in kept {
        b.extend_from_slice(&r.bytes);
    }
    let mut nh = *h;
    nh.batch_length = (b.len() - LOG_OVERHEAD_BYTES) as i32;
    nh.attributes = h.attributes & !ATTR_COMPRESSION_MASK;
    nh.records_count = kept.len() as i32;
    b[8..12].copy_from_slice(&nh.batch_length.to_be_bytes());
    b[21..23].copy_from_slice(&nh.attributes.to_be_bytes());
    b[57..61].copy_from_slice(&nh.records_count.to_be_bytes());
    nh.crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&nh.crc.to_be_bytes());
    (Bytes::from(b), nh)
}

/// Test helper: one record's key and value (`None` = null).
#[cfg(test)]
pub(crate) type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// Test helper: an uncompressed v2 batch of `(key, value)` records (`None` = null) with
/// offset deltas 0, 1, ...
#[cfg(test)]
pub(crate) fn build_keyed_batch(records: &[TestRecord<'_>], timestamp: i64) -> Bytes {
    fn put(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8 & 0x7f) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut recs = Vec::new();
    for (i, (k, v)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        put(&mut r, 0);
        put(&mut r, i as i64);
        for part in [k, v] {
            match part {
                Some(p) => {
                    put(&mut r, p.len() as i64);
                    r.extend_from_slice(p);
                }
                None => put(&mut r, -1),
            }
        }
        put(&mut r, 0);
        put(&mut recs, r.len() as i64);
        recs.extend_from_slice(&r);
    }
    let n = records.len() as i32;
    let mut b = Vec::new();
    b.extend_from_slice(&0i64.to_be_bytes());
    b.extend_from_slice(
        &((BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + recs.len()) as i32).to_be_bytes(),
    );
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(n - 1).to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&n.to_be_bytes());
    b.extend_from_slice(&recs);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::validate_batch;

    #[test]
    fn records_parse_and_a_rebuilt_batch_keeps_its_offsets() {
        let b = build_keyed_batch(
            &[
                (Some(b"a"), Some(b"1")),
                (Some(b"b"), None),
                (None, Some(b"3")),
            ],
            7,
        );
        let h = validate_batch(&b, u32::MAX).unwrap();
        let recs = batch_records(&b, &h).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1].key.as_deref(), Some(&b"b"[..]));
        assert!(recs[1].tombstone && !recs[0].tombstone);
        assert!(recs[2].key.is_none());
        assert!(check_keys(&b, &h).is_err());
        let (nb, nh) = rebuild_batch(&b, &h, &recs[1..2]);
        assert_eq!((nh.records_count, nh.last_offset_delta), (1, 2));
        assert_eq!(crc32c::crc32c(&nb[21..]), nh.crc);
        let again = batch_records(&nb, &nh).unwrap();
        assert_eq!(again[0].offset_delta, 1);
        assert_eq!(again[0].key.as_deref(), Some(&b"b"[..]));
    }
}
