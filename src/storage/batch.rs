//! Kafka v2 record batch framing, the one place the broker reads or writes it: splitting a
//! Produce records field into batches, parsing and validating a batch header, the broker's
//! header patch, and counting the records of batches handed out by a read.
//!
//! A batch is validated once, on its way in ([`validate_batch`], which parses its header once);
//! the parsed [`BatchHeader`] then travels with it (into the batch cache, out of reads) so no
//! other layer reads the header bytes again.
//!
//! Layout (big-endian): base_offset i64 @0, batch_length i32 @8 (bytes after this field),
//! partition_leader_epoch i32 @12, magic i8 @16, crc u32 @17 (CRC32C of bytes 21..end),
//! attributes i16 @21, last_offset_delta i32 @23, base_timestamp i64 @27, max_timestamp i64 @35,
//! producer_id i64 @43, producer_epoch i16 @51, base_sequence i32 @53, records_count i32 @57,
//! records @61.

use bytes::Bytes;

use super::StorageError;

/// Size of the fixed v2 batch header in bytes.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before the `batch_length` payload starts (base_offset + batch_length).
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Smallest legal `batch_length` (the header after the first 12 bytes).
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32;
/// Attribute bit: timestamps are the broker's log-append time.
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: the batch is a control batch (a transaction marker).
pub const ATTR_CONTROL: i16 = 0x20;
/// Control record type of an ABORT marker (Kafka's `ControlRecordType.ABORT`).
pub const CONTROL_ABORT: i16 = 0;
/// Control record type of a COMMIT marker (Kafka's `ControlRecordType.COMMIT`).
pub const CONTROL_COMMIT: i16 = 1;
/// Leader epoch a log stamps into its batches until its broker is told another one (a
/// single node's partitions keep it: always 0).
pub const LEADER_EPOCH: i32 = 0;

/// The fields of a v2 record batch header, as read from the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record (as in the bytes: the producer's value before assignment).
    pub base_offset: i64,
    /// Bytes after the `batch_length` field; the whole batch is `batch_length + 12` bytes.
    pub batch_length: i32,
    /// Leader epoch stamped by the broker.
    pub partition_leader_epoch: i32,
    /// Always 2 after validation.
    pub magic: i8,
    /// CRC32C of the bytes from `attributes` to the end.
    pub crc: u32,
    /// Compression (bits 0-2), timestamp type (bit 3), transactional (4), control (5).
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp of the first record.
    pub base_timestamp: i64,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent/transactional producer id, -1 if none.
    pub producer_id: i64,
    /// Producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records in the batch.
    pub records_count: i32,
}

impl BatchHeader {
    /// Total size of the batch in bytes (`batch_length + 12`).
    pub fn size_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD_BYTES
    }
    /// Offset of the last record, given the header's `base_offset`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }
    /// Whether the batch belongs to a transaction (data or marker).
    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }
    /// Whether the batch is a control batch (a transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

fn read_varint(b: &[u8], at: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        z |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Some((z >> 1) as i64 ^ -((z & 1) as i64));
        }
    }
    None
}

/// The control record type (ABORT 0, COMMIT 1) of a control batch, from the key of its first
/// record; `records` are the batch's bytes after the 61-byte header (uncompressed: Kafka never
/// compresses control batches). `None` when the key is not a control key.
pub fn control_type(records: &[u8]) -> Option<i16> {
    let mut at = 0;
    let _len = read_varint(records, &mut at)?;
    at += 1; // record attributes
    read_varint(records, &mut at)?; // timestamp delta
    read_varint(records, &mut at)?; // offset delta
    let key_len = read_varint(records, &mut at)?;
    if key_len < 4 {
        return None;
    }
    let key = records.get(at..at + 4)?;
    Some(be_i16(key, 2))
}

/// Builds a transaction marker: a control batch of one record whose key is
/// `(version 0, type)` and value `(version 0, coordinator_epoch)`, transactional, with the
/// producer's id and epoch, no sequence (-1), and its CRC.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Bytes {
    let kind = if commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    };
    let mut rec = Vec::with_capacity(24);
    rec.push(0u8); // attributes
    put_varlong(&mut rec, 0); // timestamp delta
    put_varlong(&mut rec, 0); // offset delta
    put_varlong(&mut rec, 4);
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&kind.to_be_bytes());
    put_varlong(&mut rec, 6);
    rec.extend_from_slice(&0i16.to_be_bytes());
    rec.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varlong(&mut rec, 0); // headers
    let mut records = Vec::with_capacity(rec.len() + 2);
    put_varlong(&mut records, rec.len() as i64);
    records.extend_from_slice(&rec);
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&(ATTR_TRANSACTIONAL | ATTR_CONTROL).to_be_bytes());
    b.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&timestamp.to_be_bytes());
    b.extend_from_slice(&producer_id.to_be_bytes());
    b.extend_from_slice(&producer_epoch.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Splits a Produce records field into its v2 batches (each is 12 bytes of base offset and
/// `batch_length`, then `batch_length` bytes), as slices of `records` (no copy). Only the
/// framing is checked here ([`validate_batch`] checks each batch): a field whose lengths do
/// not add up, or that holds no batch, is corrupt as a whole.
pub fn split_batches(records: &Bytes) -> Result<Vec<Bytes>, StorageError> {
    let mut out = Vec::with_capacity(1);
    let mut at = 0usize;
    while at < records.len() {
        if records.len() - at < LOG_OVERHEAD_BYTES {
            return Err(StorageError::CorruptMessage("truncated batch header"));
        }
        let len = be_i32(records, at + 8);
        if len < 0 || at + LOG_OVERHEAD_BYTES + len as usize > records.len() {
            return Err(StorageError::CorruptMessage(
                "batch length past the end of the records",
            ));
        }
        let end = at + LOG_OVERHEAD_BYTES + len as usize;
        out.push(records.slice(at..end));
        at = end;
    }
    if out.is_empty() {
        return Err(StorageError::CorruptMessage("no record batch"));
    }
    Ok(out)
}

/// Reads the header fields from the first 61 bytes without any check beyond the length.
pub fn parse_header(b: &[u8]) -> Result<BatchHeader, StorageError> {
    if b.len() < BATCH_HEADER_BYTES {
        return Err(StorageError::CorruptMessage(
            "batch shorter than the v2 header",
        ));
    }
    Ok(BatchHeader {
        base_offset: be_i64(b, 0),
        batch_length: be_i32(b, 8),
        partition_leader_epoch: be_i32(b, 12),
        magic: b[16] as i8,
        crc: be_i32(b, 17) as u32,
        attributes: be_i16(b, 21),
        last_offset_delta: be_i32(b, 23),
        base_timestamp: be_i64(b, 27),
        max_timestamp: be_i64(b, 35),
        producer_id: be_i64(b, 43),
        producer_epoch: be_i16(b, 51),
        base_sequence: be_i32(b, 53),
        records_count: be_i32(b, 57),
    })
}

/// Validates one complete v2 batch (exactly one: `batch.len()` must equal `batch_length + 12`)
/// without allocating: magic 2, length, size against `max_message_bytes`, CRC32C over
/// attributes..end, `records_count >= 1` and `last_offset_delta == records_count - 1`.
pub fn validate_batch(batch: &[u8], max_message_bytes: u32) -> Result<BatchHeader, StorageError> {
    let h = parse_header(batch)?;
    check_batch(batch, &h, max_message_bytes, false)?;
    Ok(h)
}

/// [`validate_batch`]'s checks for a batch whose header `h` was already parsed from `batch`
/// (the disk scanner parses it first to learn the batch's length). `stored`: the batch comes
/// from the log, where a cleaned batch may hold fewer records than its offset range.
pub(crate) fn check_batch(
    batch: &[u8],
    h: &BatchHeader,
    max_message_bytes: u32,
    stored: bool,
) -> Result<(), StorageError> {
    if h.batch_length < MIN_BATCH_LENGTH {
        return Err(StorageError::CorruptMessage(
            "batch_length below the header size",
        ));
    }
    if h.size_bytes() != batch.len() {
        return Err(StorageError::CorruptMessage(
            "batch_length does not match the batch bytes",
        ));
    }
    if h.magic != 2 {
        return Err(StorageError::CorruptMessage("unsupported magic (only v2)"));
    }
    if batch.len() > max_message_bytes as usize {
        return Err(StorageError::MessageTooLarge {
            size: batch.len(),
            max: max_message_bytes,
        });
    }
    if crc32c::crc32c(&batch[21..]) != h.crc {
        return Err(StorageError::CorruptMessage("CRC32C mismatch"));
    }
    if stored && (0..=h.last_offset_delta.saturating_add(1)).contains(&h.records_count) {
        // The cleaner keeps a batch's base and last offsets and drops records between (a
        // producer's last batch may be left empty, as Kafka's cleaner leaves it).
        return Ok(());
    }
    if h.records_count < 1 {
        return Err(StorageError::InvalidRecord("batch without records"));
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(StorageError::InvalidRecord(
            "last_offset_delta != records_count - 1",
        ));
    }
    Ok(())
}

/// Builds the broker's copy of the 61-byte header of `batch` (whose validated header is `h`):
/// assigned `base_offset`, `leader_epoch`, and for log-append time the timestamp-type bit,
/// `max_timestamp = append_time` and the recomputed CRC. Returns the bytes and the patched
/// header's fields (so nobody parses them again). The records are untouched; log-append time
/// costs a second CRC pass over them (cheaper than `crc32c_combine`, which costs ~10 µs per
/// call in crc32c 0.6).
pub(crate) fn patched_header(
    batch: &[u8],
    h: &BatchHeader,
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> (Bytes, BatchHeader) {
    let mut patched = *h;
    let mut b = [0u8; BATCH_HEADER_BYTES];
    b.copy_from_slice(&batch[..BATCH_HEADER_BYTES]);
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    patched.base_offset = base_offset;
    patched.partition_leader_epoch = leader_epoch;
    if let Some(t) = log_append_time {
        patched.attributes = h.attributes | ATTR_LOG_APPEND_TIME;
        patched.max_timestamp = t;
        b[21..23].copy_from_slice(&patched.attributes.to_be_bytes());
        b[35..43].copy_from_slice(&t.to_be_bytes());
        let head_crc = crc32c::crc32c(&b[21..BATCH_HEADER_BYTES]);
        patched.crc = crc32c::crc32c_append(head_crc, &batch[BATCH_HEADER_BYTES..]);
        b[17..21].copy_from_slice(&patched.crc.to_be_bytes());
    }
    debug_assert_eq!(parse_header(&b).ok(), Some(patched));
    (Bytes::copy_from_slice(&b), patched)
}

/// Records in a sequence of batch headers (each validated: `records_count >= 1`).
pub(crate) fn count_records<'a>(headers: impl IntoIterator<Item = &'a BatchHeader>) -> u64 {
    headers
        .into_iter()
        .map(|h| h.records_count.max(0) as u64)
        .sum()
}

/// Test and benchmark helper: builds a valid uncompressed v2 batch of `count` records whose
/// values are `value_len` bytes each (record framing included), with CRC.
pub fn build_test_batch(count: i32, value_len: usize, base_timestamp: i64) -> Bytes {
    assert!(count >= 1);
    let mut records = Vec::with_capacity(count as usize * (value_len + 16));
    for i in 0..count {
        let mut rec = Vec::with_capacity(value_len + 16);
        rec.push(0u8); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varlong(&mut rec, i as i64); // offset delta
        put_varlong(&mut rec, -1); // key length: null
        put_varlong(&mut rec, value_len as i64);
        rec.extend((0..value_len).map(|j| (j as u8).wrapping_add(i as u8)));
        put_varlong(&mut rec, 0); // headers
        put_varlong(&mut records, rec.len() as i64);
        records.extend_from_slice(&rec);
    }
    let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + records.len());
    b.extend_from_slice(&0i64.to_be_bytes());
    let batch_length = (BATCH_HEADER_BYTES - LOG_OVERHEAD_BYTES + records.len()) as i32;
    b.extend_from_slice(&batch_length.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.push(2);
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(count - 1).to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&base_timestamp.to_be_bytes());
    b.extend_from_slice(&(-1i64).to_be_bytes());
    b.extend_from_slice(&(-1i16).to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&count.to_be_bytes());
    b.extend_from_slice(&records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_batch_passes_and_fields_read_back() {
        let b = build_test_batch(3, 10, 1234);
        let h = validate_batch(&b, 1 << 20).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.max_timestamp, 1234);
        assert_eq!(h.size_bytes(), b.len());
    }

    #[test]
    fn every_flipped_byte_is_rejected_or_harmless() {
        let b = build_test_batch(2, 20, 5).to_vec();
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            let r = validate_batch(&c, 1 << 20);
            // Only base_offset (0..8) and leader epoch (12..16) are outside the CRC and checks.
            if (0..8).contains(&i) || (12..16).contains(&i) {
                assert!(r.is_ok(), "byte {i}");
            } else {
                assert!(r.is_err(), "byte {i} flip accepted");
            }
        }
    }

    #[test]
    fn size_and_count_rules() {
        let b = build_test_batch(1, 100, 0);
        assert!(matches!(
            validate_batch(&b, 50),
            Err(StorageError::MessageTooLarge { .. })
        ));
        assert!(validate_batch(&b[..b.len() - 1], 1 << 20).is_err());
        assert!(validate_batch(&b[..30], 1 << 20).is_err());
    }

    #[test]
    fn split_finds_each_batch_and_refuses_bad_framing() {
        let a = build_test_batch(2, 10, 1);
        let b = build_test_batch(1, 30, 2);
        let mut both = a.to_vec();
        both.extend_from_slice(&b);
        let both = Bytes::from(both);
        let parts = split_batches(&both).unwrap();
        assert_eq!(parts, vec![a.clone(), b.clone()]);
        assert!(split_batches(&Bytes::new()).is_err());
        assert!(split_batches(&both.slice(..both.len() - 1)).is_err());
        assert!(split_batches(&both.slice(..a.len() + 5)).is_err());
    }

    #[test]
    fn control_batches_round_trip() {
        for commit in [false, true] {
            let b = build_control_batch(77, 3, commit, 5, 1000);
            let h = validate_batch(&b, 1 << 20).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.records_count),
                (77, 3, 1)
            );
            let want = if commit {
                CONTROL_COMMIT
            } else {
                CONTROL_ABORT
            };
            assert_eq!(control_type(&b[BATCH_HEADER_BYTES..]), Some(want));
            // The crate's decoder reads it as Kafka's control record.
            let mut buf = b.clone();
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            assert!(set.records[0].control && set.records[0].transactional);
        }
        assert_eq!(control_type(&[]), None);
        let data = build_test_batch(1, 3, 0);
        assert_eq!(control_type(&data[BATCH_HEADER_BYTES..]), None);
    }

    #[test]
    fn log_append_time_patch_keeps_crc_valid() {
        let b = build_test_batch(4, 33, 77);
        let hb = validate_batch(&b, 1 << 20).unwrap();
        let (h, parsed) = patched_header(&b, &hb, 42, LEADER_EPOCH, Some(999));
        let mut full = h.to_vec();
        full.extend_from_slice(&b[BATCH_HEADER_BYTES..]);
        let ph = validate_batch(&full, 1 << 20).unwrap();
        assert_eq!(ph, parsed);
        assert_eq!(ph.base_offset, 42);
        assert_eq!(ph.max_timestamp, 999);
        assert_eq!(ph.attributes & ATTR_LOG_APPEND_TIME, ATTR_LOG_APPEND_TIME);
    }
}
