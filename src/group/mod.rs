//! Consumer groups: the classic group protocol and committed offsets.
//!
//! A group lives on the shard that owns its `__consumer_offsets` partition
//! (`java_hash(group) % offsets.topic.num.partitions`, as in Kafka), so its state and its
//! durable log are touched by one thread only. The [`Coordinator`] keeps each group's members,
//! generation and assignments in memory, writes offset commits and group metadata to that
//! partition through the storage engine (answering only once they are durable), and replays
//! the partition when the shard starts.
//!
//! Assignors stay client-side (range, roundrobin, cooperative-sticky): the coordinator hands
//! the leader every member's subscription and relays the leader's assignment.

pub mod coordinator;
pub mod records;

pub use coordinator::{Coordinator, GroupOp, GroupReply};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Java's `String.hashCode`, which Kafka uses to place a group on an offsets partition.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__consumer_offsets` partition of a group (Kafka's placement).
pub fn offsets_partition(group: &str, partitions: i32) -> i32 {
    // Kafka's Utils.abs maps i32::MIN to 0 via masking.
    (java_string_hash(group) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // Values computed by java.lang.String#hashCode.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("my-consumer-group"), 1_513_705_513);
        assert_eq!(java_string_hash("grüße"), 98_768_023);
        assert_eq!(offsets_partition("my-consumer-group", 50), 13);
        assert_eq!(offsets_partition("hello", 50), 22);
    }
}
