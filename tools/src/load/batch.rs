//! Kafka v2 record batches, built and read by hand.
//!
//! `kafka_protocol::records::RecordBatchEncoder` wants one `Record` (with an `IndexMap` of
//! headers and owned key/value `Bytes`) per message; the load generator appends straight into
//! the batch buffer instead, one varint-framed record at a time, and fills the 61-byte batch
//! header (CRC32C from `attributes` to the end) when the batch closes. Compressed codecs reuse
//! the crate's compressors on the records section. Tests check every batch against the crate's
//! `RecordBatchDecoder`.
//!
//! The consumer side walks fetched batches without building `Record`s either: it needs each
//! record's offset and the first 8 bytes of its value (the intended send time).

use super::workload::Compression;
use bytes::{BufMut, Bytes, BytesMut};

/// Size of the v2 batch header up to and including the record count.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Offset of `attributes`, where the CRC32C's coverage starts.
const ATTRIBUTES_OFFSET: usize = 21;
/// Offset of the CRC32C field.
const CRC_OFFSET: usize = 17;
/// Offset of the magic byte.
const MAGIC_OFFSET: usize = 16;

/// Errors reading fetched batches.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    /// A batch or record was cut short or had impossible lengths.
    #[error("malformed record batch: {0}")]
    Malformed(&'static str),
    /// Not a v2 batch.
    #[error("unsupported record batch magic {0}")]
    Magic(i8),
    /// Compressed with a codec this build cannot read, or the data did not decompress.
    #[error("cannot decompress record batch: {0}")]
    Decompress(String),
    /// Compression failed when building a batch.
    #[error("cannot compress record batch: {0}")]
    Compress(String),
}

/// Appends zigzag varints (Kafka's `varint`).
#[inline]
fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

/// Bytes a zigzag varint takes.
#[inline]
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a zigzag varint from `buf[*pos..]`.
#[inline]
fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    let mut shift = 0;
    loop {
        let b = *buf
            .get(*pos)
            .ok_or(BatchError::Malformed("varint runs past the end"))?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(BatchError::Malformed("varint longer than 10 bytes"));
        }
    }
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// One open batch for one partition: records are appended in place; [`Self::finish`] seals it.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    records: i32,
    base_timestamp_ms: i64,
    max_timestamp_ms: i64,
    payload_bytes: u64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new(0)
    }
}

impl BatchBuilder {
    /// An empty batch with room for about `capacity` bytes of records.
    pub fn new(capacity: usize) -> Self {
        let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + capacity);
        buf.put_bytes(0, BATCH_HEADER_BYTES);
        Self {
            buf,
            records: 0,
            base_timestamp_ms: 0,
            max_timestamp_ms: 0,
            payload_bytes: 0,
        }
    }

    /// Number of records appended.
    pub fn len(&self) -> usize {
        self.records as usize
    }

    /// True when no record was appended.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Encoded size so far (header included, before compression).
    pub fn size_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Bytes the buffer can hold before it grows.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Sum of key and value lengths appended.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Appends one record. The value is `stamp` followed by `rest` (so the send time can be
    /// written without copying the payload first).
    pub fn append(&mut self, timestamp_ms: i64, key: Option<&[u8]>, stamp: &[u8], rest: &[u8]) {
        if self.records == 0 {
            self.base_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.base_timestamp_ms;
        let offset_delta = i64::from(self.records);
        let key_len = key.map_or(-1, |k| k.len() as i64);
        let value_len = (stamp.len() + rest.len()) as i64;
        let body = 1
            + varint_len(ts_delta)
            + varint_len(offset_delta)
            + varint_len(key_len)
            + key.map_or(0, <[u8]>::len)
            + varint_len(value_len)
            + value_len as usize
            + 1;
        self.buf.reserve(body + 5);
        put_varint(&mut self.buf, body as i64);
        self.buf.put_u8(0); // record attributes
        put_varint(&mut self.buf, ts_delta);
        put_varint(&mut self.buf, offset_delta);
        put_varint(&mut self.buf, key_len);
        if let Some(k) = key {
            self.buf.put_slice(k);
        }
        put_varint(&mut self.buf, value_len);
        self.buf.put_slice(stamp);
        self.buf.put_slice(rest);
        put_varint(&mut self.buf, 0); // no headers
        self.records += 1;
        self.payload_bytes += value_len as u64 + key.map_or(0, |k| k.len() as u64);
    }

    /// Seals the batch (compressing the records if asked) and leaves the builder empty.
    pub fn finish(&mut self, compression: Compression) -> Result<Bytes, BatchError> {
        debug_assert!(self.records > 0, "an empty batch is never sent");
        // The next batch gets room for a little more than this one held (no more than the
        // buffer had), so batches cut by linger at low rates do not each allocate batch_size.
        let capacity = self
            .buf
            .capacity()
            .min(self.buf.len() + self.buf.len() / 4 + 64);
        let mut buf = std::mem::replace(&mut self.buf, BytesMut::new());
        if compression != Compression::None {
            buf = compress(&buf, compression)?;
        }
        let batch_length = (buf.len() - 12) as i32;
        let h = &mut buf[..BATCH_HEADER_BYTES];
        h[0..8].copy_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        h[8..12].copy_from_slice(&batch_length.to_be_bytes());
        h[12..16].copy_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        h[MAGIC_OFFSET] = 2;
        h[21..23].copy_from_slice(&(compression.codec() as i16).to_be_bytes());
        h[23..27].copy_from_slice(&(self.records - 1).to_be_bytes()); // last offset delta
        h[27..35].copy_from_slice(&self.base_timestamp_ms.to_be_bytes());
        h[35..43].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        h[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
        h[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        h[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
        h[57..61].copy_from_slice(&self.records.to_be_bytes());
        let crc = crc32c::crc32c(&buf[ATTRIBUTES_OFFSET..]);
        buf[CRC_OFFSET..ATTRIBUTES_OFFSET].copy_from_slice(&crc.to_be_bytes());
        // Start the next batch with the same capacity.
        *self = Self::new(capacity.saturating_sub(BATCH_HEADER_BYTES));
        Ok(buf.freeze())
    }
}

/// Header bytes followed by the compressed records section of `batch`.
fn compress(batch: &BytesMut, compression: Compression) -> Result<BytesMut, BatchError> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let records = &batch[BATCH_HEADER_BYTES..];
    let mut out = BytesMut::with_capacity(batch.len());
    out.put_slice(&batch[..BATCH_HEADER_BYTES]);
    let fill = |tmp: &mut BytesMut| {
        tmp.put_slice(records);
        Ok(())
    };
    let r = match compression {
        Compression::None => Ok(()),
        Compression::Gzip => Gzip::compress(&mut out, fill),
        Compression::Snappy => Snappy::compress(&mut out, fill),
        Compression::Lz4 => Lz4::compress(&mut out, fill),
        Compression::Zstd => Zstd::compress(&mut out, fill),
    };
    r.map_err(|e| BatchError::Compress(e.to_string()))?;
    Ok(out)
}

/// What a walk over fetched batches found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WalkSummary {
    /// Records at or past the fetch offset.
    pub records: u64,
    /// Key + value bytes of those records.
    pub payload_bytes: u64,
    /// The offset to fetch next (unchanged when no whole batch was present).
    pub next_offset: i64,
}

/// Walks the record batches of a fetch response partition, calling `on_value` with each value
/// at or past `fetch_offset`. A partial batch at the end (Kafka may cut one) is ignored.
pub fn walk_records(
    data: &Bytes,
    fetch_offset: i64,
    mut on_value: impl FnMut(&[u8]),
) -> Result<WalkSummary, BatchError> {
    let mut sum = WalkSummary {
        next_offset: fetch_offset,
        ..Default::default()
    };
    let mut pos = 0usize;
    while data.len() - pos >= 12 {
        let base_offset = i64::from_be_bytes(slice8(data, pos)?);
        let batch_len = i32::from_be_bytes(slice4(data, pos + 8)?);
        if batch_len < (BATCH_HEADER_BYTES - 12) as i32 {
            return Err(BatchError::Malformed(
                "batch length shorter than its header",
            ));
        }
        let end = pos + 12 + batch_len as usize;
        if end > data.len() {
            break; // partial batch: fetch it again from next_offset
        }
        let magic = data[pos + MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        let attributes = i16::from_be_bytes([data[pos + 21], data[pos + 22]]);
        let last_offset_delta = i32::from_be_bytes(slice4(data, pos + 23)?);
        let count = i32::from_be_bytes(slice4(data, pos + 57)?);
        let is_control = attributes & 0x20 != 0;
        let records = data.slice(pos + BATCH_HEADER_BYTES..end);
        if !is_control {
            let mut visit = |buf: &[u8]| {
                walk_batch_records(
                    buf,
                    count,
                    base_offset,
                    fetch_offset,
                    &mut sum,
                    &mut on_value,
                )
            };
            match Compression::from_codec(attributes & 0x7) {
                Some(Compression::None) => visit(&records)?,
                Some(c) => {
                    let plain = decompress(records, c)?;
                    visit(&plain)?;
                }
                None => return Err(BatchError::Decompress(format!("codec {}", attributes & 7))),
            }
        }
        sum.next_offset = sum
            .next_offset
            .max(base_offset + i64::from(last_offset_delta) + 1);
        pos = end;
    }
    Ok(sum)
}

/// Walks the `count` records of one (uncompressed) records section.
fn walk_batch_records(
    buf: &[u8],
    count: i32,
    base_offset: i64,
    fetch_offset: i64,
    sum: &mut WalkSummary,
    on_value: &mut impl FnMut(&[u8]),
) -> Result<(), BatchError> {
    let mut pos = 0usize;
    for _ in 0..count {
        let len = get_varint(buf, &mut pos)?;
        let end = pos
            .checked_add(
                usize::try_from(len)
                    .map_err(|_| BatchError::Malformed("negative record length"))?,
            )
            .filter(|e| *e <= buf.len())
            .ok_or(BatchError::Malformed("record runs past its batch"))?;
        let mut p = pos + 1; // attributes
        let _ts_delta = get_varint(buf, &mut p)?;
        let offset_delta = get_varint(buf, &mut p)?;
        let key_len = get_varint(buf, &mut p)?;
        let mut key_bytes = 0u64;
        if key_len > 0 {
            p += key_len as usize;
            key_bytes = key_len as u64;
        }
        let value_len = get_varint(buf, &mut p)?;
        if base_offset + offset_delta >= fetch_offset {
            if value_len >= 0 {
                let v_end = p + value_len as usize;
                if v_end > end {
                    return Err(BatchError::Malformed("value runs past its record"));
                }
                on_value(&buf[p..v_end]);
                sum.payload_bytes += value_len as u64;
            }
            sum.records += 1;
            sum.payload_bytes += key_bytes;
        }
        pos = end;
    }
    Ok(())
}

fn decompress(mut data: Bytes, c: Compression) -> Result<Bytes, BatchError> {
    use bytes::Buf;
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    fn take<B: Buf>(b: &mut B) -> anyhow::Result<Bytes> {
        Ok(b.copy_to_bytes(b.remaining()))
    }
    let r = match c {
        Compression::None => Ok(data),
        Compression::Gzip => Gzip::decompress(&mut data, take),
        Compression::Snappy => Snappy::decompress(&mut data, take),
        Compression::Lz4 => Lz4::decompress(&mut data, take),
        Compression::Zstd => Zstd::decompress(&mut data, take),
    };
    r.map_err(|e| BatchError::Decompress(e.to_string()))
}

fn slice8(d: &[u8], at: usize) -> Result<[u8; 8], BatchError> {
    d.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .ok_or(BatchError::Malformed("short batch header"))
}

fn slice4(d: &[u8], at: usize) -> Result<[u8; 4], BatchError> {
    d.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(BatchError::Malformed("short batch header"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn build(compression: Compression, n: usize, keyed: bool) -> Bytes {
        let mut b = BatchBuilder::new(4096);
        for i in 0..n {
            let stamp = (i as u64).to_le_bytes();
            let key = format!("k{i}");
            b.append(
                1_700_000_000_000 + i as i64,
                keyed.then_some(key.as_bytes()),
                &stamp,
                &[7u8; 100],
            );
        }
        b.finish(compression).expect("finish")
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), Ok(v));
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn batches_decode_with_kafka_protocol_and_crc_verifies() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            for keyed in [false, true] {
                let batch = build(c, 50, keyed);
                let crc = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
                assert_eq!(crc, crc32c::crc32c(&batch[21..]), "{c:?}");
                // The crate's decoder checks the CRC itself and parses every record.
                let mut buf = batch.clone();
                let set = RecordBatchDecoder::decode(&mut buf).expect("decodes");
                assert_eq!(set.records.len(), 50, "{c:?}");
                for (i, r) in set.records.iter().enumerate() {
                    assert_eq!(r.offset, i as i64);
                    assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                    let v = r.value.as_ref().expect("value");
                    assert_eq!(&v[..8], &(i as u64).to_le_bytes());
                    assert_eq!(v.len(), 108);
                    assert_eq!(r.key.is_some(), keyed);
                }
            }
        }
    }

    #[test]
    fn walk_reads_our_batches_and_skips_below_fetch_offset() {
        let mut data = BytesMut::new();
        for (base, c) in [(0i64, Compression::None), (50, Compression::Lz4)] {
            let b = build(c, 50, false);
            let mut b = BytesMut::from(&b[..]);
            b[0..8].copy_from_slice(&base.to_be_bytes());
            data.extend_from_slice(&b);
        }
        let data = data.freeze();
        let mut stamps = Vec::new();
        let sum = walk_records(&data, 10, |v| {
            stamps.push(u64::from_le_bytes(v[..8].try_into().expect("8 bytes")))
        })
        .expect("walks");
        assert_eq!(sum.records, 90);
        assert_eq!(sum.next_offset, 100);
        assert_eq!(sum.payload_bytes, 90 * 108);
        assert_eq!(stamps[0], 10);
        // A truncated tail is left for the next fetch.
        let cut = data.slice(..data.len() - 5);
        let sum = walk_records(&cut, 0, |_| {}).expect("walks");
        assert_eq!((sum.records, sum.next_offset), (50, 50));
    }

    #[test]
    fn walk_rejects_garbage_without_panicking() {
        let mut junk = vec![0u8; 12];
        junk[8..12].copy_from_slice(&10i32.to_be_bytes());
        assert!(walk_records(&Bytes::from(junk), 0, |_| {}).is_err());
        let mut b = BytesMut::from(&build(Compression::None, 3, true)[..]);
        b[MAGIC_OFFSET] = 1;
        assert_eq!(
            walk_records(&b.freeze(), 0, |_| {}),
            Err(BatchError::Magic(1))
        );
        // Every truncation of a record section is an error or a clean partial result.
        let good = build(Compression::None, 5, true);
        for cut in 0..good.len() {
            let mut v = good[..].to_vec();
            v.truncate(cut);
            let _ = walk_records(&Bytes::from(v), 0, |_| {});
        }
    }
}
