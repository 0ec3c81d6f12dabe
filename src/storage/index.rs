//! Sparse per-segment indexes in Kafka's file formats, kept in memory and persisted at roll and
//! clean shutdown.
//!
//! - `.index` ([`OffsetIndex`]): 8-byte entries, relative offset (i32 BE) + file position (i32 BE).
//!   Entries point at the *start of a batch* and are keyed by that batch's base offset, one every
//!   `index.interval.bytes`. (Kafka keys them by the batch's last offset; both give a correct
//!   floor lookup, base offsets make the invariant "entry = batch start" literal.)
//! - `.timeindex` ([`TimeIndex`]): 12-byte entries, timestamp (i64 BE) + relative offset (i32 BE)
//!   of the last record of the batch carrying that max timestamp so far, strictly increasing in
//!   timestamp, as Kafka writes them.

/// Offset → position index of one segment. Invariant: entries strictly increase in both fields.
#[derive(Clone, Debug, Default)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends an entry. Panics if it does not strictly increase (a broken index would send
    /// readers to the wrong bytes).
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(o, p)) = self.entries.last() {
            assert!(
                relative_offset > o && position > p,
                "offset index must increase: ({o},{p}) then ({relative_offset},{position})"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// The entry with the largest relative offset `<= relative_offset`, or `(0, 0)` (segment
    /// start) if there is none. Binary search, no allocation.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let idx = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if idx == 0 {
            (0, 0)
        } else {
            self.entries[idx - 1]
        }
    }

    /// Last entry, if any.
    pub fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Drops entries at or after `position` (log truncated there).
    pub fn truncate_to_position(&mut self, position: u32) {
        self.entries.retain(|&(_, p)| p < position);
    }

    /// Kafka `.index` file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&(o as i32).to_be_bytes());
            out.extend_from_slice(&(p as i32).to_be_bytes());
        }
        out
    }

    /// Parses a `.index` file; `None` if malformed or pointing past `segment_size`.
    pub fn from_bytes(bytes: &[u8], segment_size: u64) -> Option<Self> {
        if bytes.len() % 8 != 0 {
            return None;
        }
        let mut idx = OffsetIndex::new();
        for e in bytes.chunks_exact(8) {
            let o = i32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            let p = i32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if o < 0 || p < 0 || p as u64 >= segment_size {
                return None;
            }
            if let Some(&(lo, lp)) = idx.entries.last() {
                if o as u32 <= lo || p as u32 <= lp {
                    return None;
                }
            }
            idx.entries.push((o as u32, p as u32));
        }
        Some(idx)
    }
}

/// Timestamp → offset index of one segment. Invariant: timestamps strictly increase.
#[derive(Clone, Debug, Default)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `(timestamp, relative_offset)` if `timestamp` is larger than the last entry's;
    /// otherwise does nothing (Kafka's rule).
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(t, _)) if timestamp <= t => {}
            _ => self.entries.push((timestamp, relative_offset)),
        }
    }

    /// Largest timestamp recorded, if any.
    pub fn last_timestamp(&self) -> Option<i64> {
        self.entries.last().map(|&(t, _)| t)
    }

    /// Relative offset from which a scan for the first batch with `max_timestamp >= timestamp`
    /// may start: the offset of the last entry whose timestamp is `< timestamp` (every batch up
    /// to and including it has a smaller max timestamp), or 0.
    pub fn lookup_scan_start(&self, timestamp: i64) -> u32 {
        let idx = self.entries.partition_point(|&(t, _)| t < timestamp);
        if idx == 0 {
            0
        } else {
            self.entries[idx - 1].1
        }
    }

    /// Drops entries for relative offsets `>= relative_offset`.
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        self.entries.retain(|&(_, o)| o < relative_offset);
    }

    /// Kafka `.timeindex` file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&(o as i32).to_be_bytes());
        }
        out
    }

    /// Parses a `.timeindex` file; `None` if malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() % 12 != 0 {
            return None;
        }
        let mut idx = TimeIndex::new();
        for e in bytes.chunks_exact(12) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&e[..8]);
            let t = i64::from_be_bytes(t);
            let o = i32::from_be_bytes([e[8], e[9], e[10], e[11]]);
            if o < 0 {
                return None;
            }
            if let Some(&(lt, _)) = idx.entries.last() {
                if t <= lt {
                    return None;
                }
            }
            idx.entries.push((t, o as u32));
        }
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_index_floor_lookup_and_roundtrip() {
        let mut idx = OffsetIndex::new();
        assert_eq!(idx.lookup(5), (0, 0));
        idx.append(10, 4096);
        idx.append(20, 8192);
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 4096));
        assert_eq!(idx.lookup(19), (10, 4096));
        assert_eq!(idx.lookup(1000), (20, 8192));
        let back = OffsetIndex::from_bytes(&idx.to_bytes(), 10_000).unwrap();
        assert_eq!(back.lookup(25), (20, 8192));
        assert!(OffsetIndex::from_bytes(&idx.to_bytes(), 8192).is_none());
        assert!(OffsetIndex::from_bytes(&[0; 7], 10).is_none());
    }

    #[test]
    fn time_index_scan_start() {
        let mut t = TimeIndex::new();
        t.maybe_append(100, 3);
        t.maybe_append(90, 4); // ignored
        t.maybe_append(200, 9);
        assert_eq!(t.lookup_scan_start(50), 0);
        assert_eq!(t.lookup_scan_start(100), 0);
        assert_eq!(t.lookup_scan_start(101), 3);
        assert_eq!(t.lookup_scan_start(1000), 9);
        let back = TimeIndex::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!(back.last_timestamp(), Some(200));
    }
}
