//! Transactions: the transaction coordinator (Kafka's `TransactionCoordinator`).
//!
//! A transactional id lives on the shard that owns its `__transaction_state` partition
//! (`abs(java_hash(transactional.id)) % transaction.state.log.num.partitions`, Kafka's
//! placement), so its state and its durable log are touched by one thread only. The
//! [`Coordinator`] keeps each id's producer id, epoch, state and partitions in memory, writes
//! every state change to that partition in Kafka's record schemas (`records.rs`) and answers
//! only once the record is durable, and replays the partitions when the shard starts.
//!
//! The coordinator decides; it does not write markers itself. A decided outcome (EndTxn, a
//! fence, a timeout, a Prepare state found at replay) comes back as a [`MarkerJob`] that the
//! shard layer carries to each partition's owner (control batches appended there) and then
//! reports with [`Coordinator::complete`], which writes CompleteCommit / CompleteAbort.
//!
//! May call: `storage` (its `__transaction_state` partitions), `error_code`.

mod coordinator;
pub mod records;

pub use coordinator::{Coordinator, DescribedTxn, MarkerJob, TxnOp, TxnReply};

/// The internal topic holding the transaction coordinator's state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// Transaction coordinator settings, by Kafka's names.
#[derive(Clone, Debug)]
pub struct TxnConfig {
    /// `transaction.state.log.num.partitions` (default 50, Kafka's).
    pub state_partitions: i32,
    /// `transaction.max.timeout.ms`: the largest `transaction.timeout.ms` a producer may ask
    /// for (default 900000).
    pub max_timeout_ms: i32,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often ongoing
    /// transactions are checked for their timeout (default 10000).
    pub abort_check_interval_ms: u64,
    /// `transactional.id.expiration.ms`: a transactional id whose transaction is complete (or
    /// that never began one) and that had no state change for this long is forgotten (a
    /// tombstone in `__transaction_state`; default 604800000, 7 days).
    pub id_expiration_ms: i64,
    /// `transaction.remove.expired.transaction.cleanup.interval.ms`: how often ids are
    /// checked for expiration (default 3600000).
    pub remove_expired_interval_ms: u64,
    /// The `transaction.version` feature level finalized in ApiVersions (Kafka's feature,
    /// set there with `kafka-features`): 2 (default) lets clients use transactions v2
    /// (KIP-890), 1 keeps them on v1.
    pub transaction_version: i16,
    /// `add.partitions.to.txn.retry.backoff.max.ms`: how long the add a Produce makes
    /// (transactions v2) may wait on the broker for the producer's previous transaction to
    /// complete, instead of the client retrying after its `retry.backoff.ms` (default 100,
    /// Kafka's).
    pub add_partitions_wait_max_ms: u64,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            state_partitions: 50,
            max_timeout_ms: 900_000,
            abort_check_interval_ms: 10_000,
            id_expiration_ms: 604_800_000,
            remove_expired_interval_ms: 3_600_000,
            transaction_version: 2,
            add_partitions_wait_max_ms: 100,
        }
    }
}

/// A transaction's state, with Kafka's ids (`TransactionState`), as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxnState {
    /// No transaction yet (after InitProducerId).
    Empty,
    /// Partitions were added; records may be written.
    Ongoing,
    /// The commit is decided; markers are being written.
    PrepareCommit,
    /// The abort is decided; markers are being written.
    PrepareAbort,
    /// Every marker of the commit is written.
    CompleteCommit,
    /// Every marker of the abort is written.
    CompleteAbort,
    /// Expired: the id is forgotten.
    Dead,
    /// An ongoing transaction is being aborted to fence its producer.
    PrepareEpochFence,
}

impl TxnState {
    /// Kafka's id of the state (the stored `TransactionStatus`).
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    /// The state of a stored id.
    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name of the state (DescribeTransactions, ListTransactions filters).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// Java's `String.hashCode`.
fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The `__transaction_state` partition of a transactional id (Kafka's placement:
/// `Utils.abs(hashCode) % partitions`, where `Utils.abs(i32::MIN)` is 0).
pub fn state_partition(transactional_id: &str, partitions: i32) -> i32 {
    let h = java_string_hash(transactional_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_kafka() {
        // "hello".hashCode() = 99162322; "polygenelubricants".hashCode() = i32::MIN.
        assert_eq!(state_partition("hello", 50), 99_162_322 % 50);
        assert_eq!(state_partition("polygenelubricants", 50), 0);
        // A negative hash: Math.abs (Kafka's Utils.abs), not a mask.
        let (id, h) = (0..1000)
            .map(|i| format!("transactional-id-{i}"))
            .map(|id| {
                let h = java_string_hash(&id);
                (id, h)
            })
            .find(|(_, h)| *h < 0 && *h != i32::MIN)
            .expect("some id hashes below zero");
        assert_eq!(state_partition(&id, 50), (-h) % 50);
        for id in 0..8 {
            assert_eq!(TxnState::from_id(id).map(TxnState::id), Some(id));
        }
        assert_eq!(TxnState::from_id(8), None);
    }
}
