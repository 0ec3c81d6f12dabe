//! Kafka's error codes: the one place in the broker where their numbers are written down.
//!
//! Every layer reports failures to clients through [`ErrorCode`], named exactly as Kafka names
//! them (`ErrorCode::CORRUPT_MESSAGE` is Kafka's `CORRUPT_MESSAGE`), so the code reads like
//! Kafka's documentation and a number never appears twice. This module imports nothing from the
//! crate: storage, groups, the shard layer and the handlers may all use it.

/// A Kafka error code as sent on the wire. [`ErrorCode::NONE`] is success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ErrorCode(i16);

macro_rules! kafka_error_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal,)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($code);)*

            /// Kafka's name for this code (`"UNKNOWN_SERVER_ERROR"` for one not listed here).
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($code => stringify!($name),)*
                    _ => "UNKNOWN_SERVER_ERROR",
                }
            }

            /// Every code listed here (for tests).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];
        }
    };
}

kafka_error_codes! {
    /// An unexpected server error.
    UNKNOWN_SERVER_ERROR = -1,
    /// No error.
    NONE = 0,
    /// The requested offset is outside the log.
    OFFSET_OUT_OF_RANGE = 1,
    /// A batch failed its CRC or structure check.
    CORRUPT_MESSAGE = 2,
    /// The topic or partition does not exist.
    UNKNOWN_TOPIC_OR_PARTITION = 3,
    /// The partition has no leader now (offline, or an election is in progress).
    LEADER_NOT_AVAILABLE = 5,
    /// This broker does not lead the partition.
    NOT_LEADER_OR_FOLLOWER = 6,
    /// The request timed out.
    REQUEST_TIMED_OUT = 7,
    /// A batch is larger than `max.message.bytes`.
    MESSAGE_TOO_LARGE = 10,
    /// The coordinator is loading its state; clients retry.
    COORDINATOR_LOAD_IN_PROGRESS = 14,
    /// The coordinator cannot answer now; clients retry.
    COORDINATOR_NOT_AVAILABLE = 15,
    /// This broker is not the coordinator of the group or transactional id.
    NOT_COORDINATOR = 16,
    /// The topic name is not legal, or the topic is internal.
    INVALID_TOPIC_EXCEPTION = 17,
    /// Fewer in-sync replicas than `min.insync.replicas`: the batch was not appended.
    NOT_ENOUGH_REPLICAS = 19,
    /// Appended, but the in-sync replicas fell below `min.insync.replicas` meanwhile.
    NOT_ENOUGH_REPLICAS_AFTER_APPEND = 20,
    /// The request's acks value is not 0, 1 or -1.
    INVALID_REQUIRED_ACKS = 21,
    /// The generation id is not the group's current one.
    ILLEGAL_GENERATION = 22,
    /// The member's protocol type or protocols do not match the group's.
    INCONSISTENT_GROUP_PROTOCOL = 23,
    /// The group id is empty or not valid.
    INVALID_GROUP_ID = 24,
    /// The member id is not a member of the group.
    UNKNOWN_MEMBER_ID = 25,
    /// The session timeout is outside the broker's allowed range.
    INVALID_SESSION_TIMEOUT = 26,
    /// The group is rebalancing; the member should rejoin.
    REBALANCE_IN_PROGRESS = 27,
    /// The committed offset's metadata is too large.
    OFFSET_METADATA_TOO_LARGE = 12,
    /// Not authorized for the topic.
    TOPIC_AUTHORIZATION_FAILED = 29,
    /// Not authorized for the group.
    GROUP_AUTHORIZATION_FAILED = 30,
    /// Not authorized for the cluster.
    CLUSTER_AUTHORIZATION_FAILED = 31,
    /// The timestamp of a record is outside the allowed range.
    INVALID_TIMESTAMP = 32,
    /// The SASL mechanism is not enabled.
    UNSUPPORTED_SASL_MECHANISM = 33,
    /// A SASL request arrived where SASL is not expected.
    ILLEGAL_SASL_STATE = 34,
    /// The request version is not supported.
    UNSUPPORTED_VERSION = 35,
    /// The topic exists already.
    TOPIC_ALREADY_EXISTS = 36,
    /// The partition count is not valid.
    INVALID_PARTITIONS = 37,
    /// The replication factor is not valid for this cluster.
    INVALID_REPLICATION_FACTOR = 38,
    /// The replica assignment is not valid.
    INVALID_REPLICA_ASSIGNMENT = 39,
    /// A config name or value is not valid.
    INVALID_CONFIG = 40,
    /// This broker is not the active controller.
    NOT_CONTROLLER = 41,
    /// The request is not valid.
    INVALID_REQUEST = 42,
    /// The message format version does not support the request.
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43,
    /// A create or alter policy refused the request.
    POLICY_VIOLATION = 44,
    /// The producer's sequence number is not the next expected one.
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45,
    /// The producer's epoch is older than the partition's.
    INVALID_PRODUCER_EPOCH = 47,
    /// The transactional request is not valid in the transaction's state.
    INVALID_TXN_STATE = 48,
    /// The producer id is not known to the transaction coordinator.
    INVALID_PRODUCER_ID_MAPPING = 49,
    /// The transaction timeout is larger than `transaction.max.timeout.ms`.
    INVALID_TRANSACTION_TIMEOUT = 50,
    /// Another transactional request of this producer is in progress.
    CONCURRENT_TRANSACTIONS = 51,
    /// A newer transaction coordinator wrote to the partition (a stale marker).
    TRANSACTION_COORDINATOR_FENCED = 52,
    /// Not authorized for the transactional id.
    TRANSACTIONAL_ID_AUTHORIZATION_FAILED = 53,
    /// Not attempted because another part of the request failed.
    OPERATION_NOT_ATTEMPTED = 55,
    /// No authorizer is configured (`authorizer.class.name`): ACL requests are refused.
    SECURITY_DISABLED = 54,
    /// The SASL authentication failed.
    SASL_AUTHENTICATION_FAILED = 58,
    /// The producer id is not known for the partition.
    UNKNOWN_PRODUCER_ID = 59,
    /// The disk failed the operation.
    KAFKA_STORAGE_ERROR = 56,
    /// The log directory was not found.
    LOG_DIR_NOT_FOUND = 57,
    /// The request's leader epoch is older than the partition's.
    FENCED_LEADER_EPOCH = 74,
    /// The request's leader epoch is newer than the partition's.
    UNKNOWN_LEADER_EPOCH = 75,
    /// The compression type is not supported for the request.
    UNSUPPORTED_COMPRESSION_TYPE = 76,
    /// The broker's epoch is stale.
    STALE_BROKER_EPOCH = 77,
    /// The offset is not available (a leader's high watermark is not known yet).
    OFFSET_NOT_AVAILABLE = 78,
    /// The member must rejoin with the member id given in the response (KIP-394).
    MEMBER_ID_REQUIRED = 79,
    /// A preferred leader is not available.
    PREFERRED_LEADER_NOT_AVAILABLE = 80,
    /// The group has reached `group.max.size`.
    GROUP_MAX_SIZE_REACHED = 81,
    /// A newer member with the same `group.instance.id` replaced this one.
    FENCED_INSTANCE_ID = 82,
    /// No leader could be elected.
    ELIGIBLE_LEADERS_NOT_AVAILABLE = 83,
    /// The leader election is not needed.
    ELECTION_NOT_NEEDED = 84,
    /// No partition reassignment is in progress.
    NO_REASSIGNMENT_IN_PROGRESS = 85,
    /// The group still has committed offsets for the topic and is subscribed to it.
    GROUP_SUBSCRIBED_TO_TOPIC = 86,
    /// A record inside a batch is not valid.
    INVALID_RECORD = 87,
    /// There are unstable offsets that need to be cleared.
    UNSTABLE_OFFSET_COMMIT = 88,
    /// The throttling quota was exceeded.
    THROTTLING_QUOTA_EXCEEDED = 89,
    /// A newer producer with the same transactional id fenced this one.
    PRODUCER_FENCED = 90,
    /// A resource the request names does not exist (a user's SCRAM credential).
    RESOURCE_NOT_FOUND = 91,
    /// The request names the same resource twice (a user and mechanism altered twice).
    DUPLICATE_RESOURCE = 92,
    /// The credential is not acceptable (an empty user, too few SCRAM iterations).
    UNACCEPTABLE_CREDENTIAL = 93,
    /// An AlterPartition carried a partition epoch that is not the current one.
    INVALID_UPDATE_VERSION = 95,
    /// The group is not empty (DeleteGroups).
    NON_EMPTY_GROUP = 68,
    /// The group does not exist.
    GROUP_ID_NOT_FOUND = 69,
    /// The fetch session id is not known.
    FETCH_SESSION_ID_NOT_FOUND = 70,
    /// The fetch session epoch is not the expected one.
    INVALID_FETCH_SESSION_EPOCH = 71,
    /// The listener is not known on this broker.
    LISTENER_NOT_FOUND = 72,
    /// The topic is being deleted.
    TOPIC_DELETION_DISABLED = 73,
    /// The topic id is not known.
    UNKNOWN_TOPIC_ID = 100,
    /// A live broker with this node id is already registered (another incarnation).
    DUPLICATE_BROKER_REGISTRATION = 101,
    /// The broker is not registered with the controller.
    BROKER_ID_NOT_REGISTERED = 102,
    /// The request came from a node of another cluster.
    INCONSISTENT_CLUSTER_ID = 104,
    /// The transactional id is not known to its coordinator.
    TRANSACTIONAL_ID_NOT_FOUND = 105,
    /// The fetch session's topic id does not match.
    FETCH_SESSION_TOPIC_ID_ERROR = 106,
    /// The broker is not registered or is fenced.
    INELIGIBLE_REPLICA = 107,
    /// The leader epoch is not the one expected.
    NEW_LEADER_ELECTED = 108,
    /// The transaction was aborted by the coordinator (e.g. by a timeout).
    TRANSACTION_ABORTABLE = 120,
}

impl ErrorCode {
    /// The code as sent on the wire.
    pub const fn code(self) -> i16 {
        self.0
    }

    /// The code for a number read from the wire (any number, listed here or not).
    pub const fn from_code(code: i16) -> ErrorCode {
        ErrorCode(code)
    }

    /// True for [`ErrorCode::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl From<ErrorCode> for i16 {
    fn from(code: ErrorCode) -> i16 {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;
    use std::collections::HashSet;

    #[test]
    fn every_code_has_one_name_and_one_number() {
        let numbers: HashSet<i16> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(numbers.len(), ErrorCode::ALL.len(), "a number listed twice");
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()).name(), code.name());
        }
        assert_eq!(ErrorCode::CORRUPT_MESSAGE.name(), "CORRUPT_MESSAGE");
        assert_eq!(ErrorCode::FENCED_INSTANCE_ID.code(), 82);
        assert_eq!(ErrorCode::from_code(-99).name(), "UNKNOWN_SERVER_ERROR");
    }
}
