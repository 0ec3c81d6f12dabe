//! Broker configuration: Kafka's property names, read from a TOML file and overridden by flags.
//!
//! The file is TOML whose keys are Kafka's dotted property names, written either quoted
//! (`"log.segment.bytes" = 1073741824`) or as TOML dotted keys (`log.segment.bytes = ...`);
//! both spellings flatten to the same name. Unknown keys and bad values are refused with a
//! message that names them: a typo must not silently fall back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::cluster::config::{ClusterConfig, ResolvedCluster};
use crate::group::coordinator::GroupConfig;
use crate::storage::{LogConfig, TimestampType};
use crate::txn::TxnConfig;

/// Why a configuration was refused; the message names the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file named by `--config`.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that shardlog does not know.
    #[error("unknown configuration key `{0}`")]
    UnknownKey(String),
    /// A known key with a value out of its range or of the wrong type.
    #[error("bad value for `{key}`: {value} ({why})")]
    BadValue {
        /// The property name.
        key: String,
        /// The value as given.
        value: String,
        /// What is expected instead.
        why: String,
    },
}

/// Everything the broker process needs to start; every field has Kafka's default unless noted.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// Address every shard listens on (SO_REUSEPORT); `listeners`.
    pub listen: SocketAddr,
    /// Host and port given to clients in Metadata; `advertised.listeners`. `None`: the listen
    /// address (see [`BrokerConfig::advertised`]).
    pub advertised: Option<(String, u16)>,
    /// Root of the partition directories; `log.dirs`.
    pub data_dir: PathBuf,
    /// Number of shards (pinned executors); defaults to all cores.
    pub cores: usize,
    /// Node id reported in Metadata; `node.id`.
    pub node_id: i32,
    /// The cluster id of this node's data dir (`meta.properties`), reported in Metadata and
    /// DescribeCluster. Not a property: set at start from the data dir's identity.
    pub cluster_id: String,
    /// Create a topic on first Metadata request for it; `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic; `num.partitions`.
    pub num_partitions: i32,
    /// Largest request frame accepted; a larger length prefix closes the connection;
    /// `socket.request.max.bytes`.
    pub socket_request_max_bytes: u32,
    /// Requests read ahead of their responses on one connection (clients pipeline up to 5).
    pub connection_inflight_requests_max: usize,
    /// Response bytes one connection may have queued but not yet sent before its next request
    /// is read (Kafka mutes a connection while a response is in flight); one response larger
    /// than this still goes out. `connection.response.buffer.bytes`.
    pub connection_response_buffer_bytes: usize,
    /// Largest Fetch response: a request's `max_bytes` and `partition_max_bytes` are capped to
    /// it (the first batch still goes out whole if larger, as in Kafka); `fetch.max.bytes`.
    pub fetch_max_bytes: usize,
    /// Memory for Fetch responses read from disk and not yet sent, split evenly over the
    /// shards (see `shard::fetch_memory`); `shard.fetch.memory.bytes`.
    pub fetch_memory_bytes: usize,
    /// Incremental fetch sessions (KIP-227) the broker keeps, split evenly over the shards
    /// (rounded up); 0 disables them; `max.incremental.fetch.session.cache.slots`.
    pub fetch_session_cache_slots: usize,
    /// Most partitions in one DescribeTopicPartitions response (KIP-966);
    /// `max.request.partition.size.limit`.
    pub request_partition_size_limit: i32,
    /// Open client connections per shard; further ones are closed at accept.
    pub shard_connections_max: usize,
    /// How often each shard deletes segments past retention and re-reads its partitions'
    /// allocated blocks; `log.retention.check.interval.ms`.
    pub log_retention_check_interval_ms: u64,
    /// Partitions this broker may host, all topics together (internal ones too): not a
    /// property, derived at start from the open-file limit (`server::fd_budget`). Creating
    /// topics or partitions past it is refused with INVALID_PARTITIONS.
    pub partitions_max: usize,
    /// A connection silent for this long is closed; `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// Memory cap of each shard's batch cache.
    pub batch_cache_bytes_max: usize,
    /// Bytes appended but not yet written that one shard may hold before produce requests
    /// wait for its disk (they cannot leave memory); `shard.unwritten.bytes.max`.
    pub unwritten_bytes_max: u64,
    /// Write with buffered I/O instead of O_DIRECT (for file systems that refuse O_DIRECT).
    pub buffered_io: bool,
    /// Largest step of segment space reserved ahead of the data (steps grow with the segment
    /// from 4 KiB); `log.preallocate.bytes`.
    pub preallocate_bytes: u64,
    /// Run the log cleaner on compacted topics; `log.cleaner.enable`.
    pub cleaner_enable: bool,
    /// Pause between the log cleaner's looks at a shard's logs; `log.cleaner.backoff.ms`.
    pub cleaner_backoff_ms: u64,
    /// Bytes of keys the cleaners map per pass, split over the shards;
    /// `log.cleaner.dedupe.buffer.size`.
    pub cleaner_dedupe_buffer_bytes: usize,
    /// Where shard 0 serves Prometheus metrics (`GET /metrics`); none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Consumer group settings.
    pub group: GroupConfig,
    /// Transaction coordinator settings.
    pub txn: TxnConfig,
    /// Defaults for every topic's log (`log.segment.bytes`, `message.max.bytes`, ...).
    pub log: LogConfig,
    /// The cluster's identity settings (`process.roles`, `controller.quorum.voters`, ...).
    pub cluster: ClusterConfig,
    /// Listener security: `listener.security.protocol.map`, `ssl.*`, `sasl.*` and their
    /// `listener.name.<l>.` overrides, checked when the listeners are resolved at start.
    pub security: crate::security::SecurityConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let listen: SocketAddr = ([127, 0, 0, 1], 9092).into();
        BrokerConfig {
            listen,
            advertised: None,
            data_dir: PathBuf::from("./shardlog-data"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            node_id: 0,
            cluster_id: String::new(),
            auto_create_topics: true,
            num_partitions: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            connection_inflight_requests_max: 32,
            connection_response_buffer_bytes: 4 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            fetch_memory_bytes: 256 * 1024 * 1024,
            fetch_session_cache_slots: 1000,
            request_partition_size_limit: 2000,
            shard_connections_max: 20_000,
            partitions_max: 100_000,
            log_retention_check_interval_ms: 30_000,
            connections_max_idle_ms: 600_000,
            batch_cache_bytes_max: 256 * 1024 * 1024,
            unwritten_bytes_max: 64 << 20,
            buffered_io: false,
            preallocate_bytes: 64 << 20,
            cleaner_enable: true,
            cleaner_backoff_ms: 15_000,
            cleaner_dedupe_buffer_bytes: 128 << 20,
            metrics_listen: None,
            group: GroupConfig::default(),
            txn: TxnConfig::default(),
            log: LogConfig::default(),
            cluster: ClusterConfig::new(),
            security: Default::default(),
        }
    }
}

/// One broker-level setting: its Kafka name, its help text and how to apply a value.
struct BrokerKey {
    name: &'static str,
    help: &'static str,
    apply: fn(&mut BrokerConfig, &str) -> Result<(), String>,
}

fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse::<T>()
        .map_err(|_| "expected a number".to_string())
}

fn parse_positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    let n: T = parse_num(v)?;
    if n <= T::default() {
        return Err("must be greater than zero".into());
    }
    Ok(n)
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Parses `HOST:PORT`, also accepting Kafka's `PLAINTEXT://HOST:PORT` listener form.
pub fn parse_host_port(v: &str) -> Result<(String, u16), String> {
    let v = v.trim();
    let v = v.split_once("://").map_or(v, |(_, rest)| rest);
    let (host, port) = v
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_string())?;
    let port: u16 = port.parse().map_err(|_| "bad port".to_string())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("empty host".into());
    }
    Ok((host.to_string(), port))
}

/// Parses a listen address; the host must be an IP address.
pub fn parse_listen(v: &str) -> Result<SocketAddr, String> {
    let (host, port) = parse_host_port(v)?;
    let ip: std::net::IpAddr = if host == "localhost" {
        [127, 0, 0, 1].into()
    } else {
        host.parse()
            .map_err(|_| format!("`{host}` is not an IP address"))?
    };
    Ok(SocketAddr::new(ip, port))
}

const BROKER_KEYS: &[BrokerKey] = &[
    BrokerKey {
        name: "listeners",
        help: "HOST:PORT every shard listens on (SO_REUSEPORT), or Kafka's list `PLAINTEXT://HOST:PORT,CONTROLLER://HOST:PORT` (the controller listener carries quorum traffic). Default 127.0.0.1:9092.",
        apply: |c, v| {
            if v.contains("://") {
                let listeners = crate::cluster::config::parse_listeners(v)?;
                let names = c.cluster.controller_names();
                if let Some(l) = listeners.iter().find(|l| !names.contains(&l.name)) {
                    c.listen = l.addr;
                }
                c.cluster.listeners = listeners;
            } else {
                c.listen = parse_listen(v)?;
                c.cluster.listeners.clear();
            }
            Ok(())
        },
    },
    BrokerKey {
        name: "advertised.listeners",
        help: "HOST:PORT given to clients in Metadata (or Kafka's `PLAINTEXT://HOST:PORT,...`: the first entry that is not a controller listener). Default: the listen address.",
        apply: |c, v| {
            let names = c.cluster.controller_names();
            let entry = v
                .split(',')
                .map(str::trim)
                .find(|e| {
                    let name = e.split_once("://").map(|(n, _)| n.to_ascii_uppercase());
                    !name.is_some_and(|n| names.contains(&n))
                })
                .ok_or_else(|| "no entry that is not a controller listener".to_string())?;
            c.advertised = Some(parse_host_port(entry)?);
            c.security.set_advertised(v)
        },
    },
    BrokerKey {
        name: "log.dirs",
        help: "Data directory. Default ./shardlog-data.",
        apply: |c, v| {
            c.data_dir = PathBuf::from(v);
            Ok(())
        },
    },
    BrokerKey {
        name: "node.id",
        help: "Node id reported in Metadata. Default 0.",
        apply: |c, v| {
            c.node_id = parse_num(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "auto.create.topics.enable",
        help: "Create a topic when a client asks Metadata for it. Default true.",
        apply: |c, v| {
            c.auto_create_topics = parse_bool(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "num.partitions",
        help: "Partitions of an auto-created topic. Default 1.",
        apply: |c, v| {
            c.num_partitions = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "socket.request.max.bytes",
        help: "Largest request frame; a larger length prefix closes the connection. Default 104857600.",
        apply: |c, v| {
            c.socket_request_max_bytes = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "connection.inflight.requests.max",
        help: "Requests read ahead of their responses per connection. Default 32.",
        apply: |c, v| {
            c.connection_inflight_requests_max = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "connection.response.buffer.bytes",
        help: "Response bytes a connection may have queued unsent before its next request is read (a client that stops reading stops being read); one larger response still goes out. Default 4194304.",
        apply: |c, v| {
            c.connection_response_buffer_bytes = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "fetch.max.bytes",
        help: "Largest Fetch response: caps each request's max_bytes and partition_max_bytes (the first batch still goes out whole if larger). Default 57671680.",
        apply: |c, v| {
            c.fetch_max_bytes = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "shard.fetch.memory.bytes",
        help: "Memory for Fetch responses read from disk and not yet sent, split evenly over the shards; when used up a fetch gets fewer bytes (at least one batch), never a wait. Default 268435456.",
        apply: |c, v| {
            c.fetch_memory_bytes = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "max.incremental.fetch.session.cache.slots",
        help: "Incremental fetch sessions (KIP-227) kept, split evenly over the shards; 0 disables them. Default 1000.",
        apply: |c, v| {
            c.fetch_session_cache_slots = parse_num(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "max.request.partition.size.limit",
        help: "Most partitions in one DescribeTopicPartitions response (KIP-966); the rest follow by cursor. Default 2000.",
        apply: |c, v| {
            c.request_partition_size_limit = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "shard.unwritten.bytes.max",
        help: "Bytes appended but not yet written to disk that one shard may hold; past it, produce requests wait for the disk (KAFKA_STORAGE_ERROR after 30 s or once a write failed). Per shard. Default 67108864.",
        apply: |c, v| {
            c.unwritten_bytes_max = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "log.retention.check.interval.ms",
        help: "How often each shard deletes segments past retention.ms/retention.bytes and re-reads its partitions' allocated disk blocks (the disk_allocated_bytes metric). Default 30000 (Kafka's is 300000).",
        apply: |c, v| {
            c.log_retention_check_interval_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "shard.connections.max",
        help: "Client connections per shard; further ones are closed at accept. Lowered at start to fit a third of the open-file limit (ulimit -n, raised to its hard limit at start), which also bounds the partitions the broker hosts. Default 20000.",
        apply: |c, v| {
            c.shard_connections_max = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "connections.max.idle.ms",
        help: "Close a connection that sends nothing for this long. Default 600000.",
        apply: |c, v| {
            c.connections_max_idle_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "shard.batch.cache.bytes",
        help: "Memory cap of the batch cache, split evenly over the shards. Default 268435456.",
        apply: |c, v| {
            c.batch_cache_bytes_max = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "metrics.listen",
        help: "HOST:PORT where shard 0 serves Prometheus metrics at /metrics. Default: off.",
        apply: |c, v| {
            c.metrics_listen = Some(parse_listen(v)?);
            Ok(())
        },
    },
    BrokerKey {
        name: "log.preallocate.bytes",
        help: "Largest step of segment space reserved ahead of the data (fallocate), so a flush is not a block allocation; steps grow with the segment from one 4 KiB page (as much again as it holds), so an idle partition reserves 4 KiB. Default 67108864.",
        apply: |c, v| {
            c.preallocate_bytes = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "log.cleaner.enable",
        help: "Run the log cleaner (compaction of topics with `cleanup.policy` containing `compact`). Default true.",
        apply: |c, v| {
            c.cleaner_enable = parse_bool(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "log.cleaner.backoff.ms",
        help: "Pause between the log cleaner's looks at each shard's compacted logs. Default 15000.",
        apply: |c, v| {
            c.cleaner_backoff_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "log.cleaner.dedupe.buffer.size",
        help: "Bytes of keys the log cleaners map in one pass, split over the shards (a pass cleans as many whole dirty segments as fit). Default 134217728.",
        apply: |c, v| {
            c.cleaner_dedupe_buffer_bytes = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "group.min.session.timeout.ms",
        help: "Smallest session timeout a consumer may ask for. Default 6000.",
        apply: |c, v| {
            c.group.min_session_timeout_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "group.max.session.timeout.ms",
        help: "Largest session timeout a consumer may ask for. Default 1800000.",
        apply: |c, v| {
            c.group.max_session_timeout_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "group.initial.rebalance.delay.ms",
        help: "How long the first rebalance of an empty group waits for more members. Default 3000.",
        apply: |c, v| {
            c.group.initial_rebalance_delay_ms = parse_num(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "transaction.state.log.num.partitions",
        help: "Partitions of __transaction_state (fixed once created; it is created at the first transactional request). Default 50.",
        apply: |c, v| {
            c.txn.state_partitions = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "transaction.max.timeout.ms",
        help: "Largest transaction.timeout.ms a producer may ask for (else INVALID_TRANSACTION_TIMEOUT). Default 900000.",
        apply: |c, v| {
            c.txn.max_timeout_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "transaction.version",
        help: "The transaction.version feature level finalized for clients: 2 (transactions v2, KIP-890: a partition is added by the produce itself and verified, the epoch is bumped at every transaction's end) or 1. Default 2.",
        apply: |c, v| {
            let level: i16 = parse_num(v)?;
            if !(1..=2).contains(&level) {
                return Err("must be 1 or 2".into());
            }
            c.txn.transaction_version = level;
            Ok(())
        },
    },
    BrokerKey {
        name: "add.partitions.to.txn.retry.backoff.max.ms",
        help: "How long a transactional produce that adds its partition to the transaction (transactions v2) may wait on the broker for the producer's previous transaction to complete (its markers written) before the client is told to retry. Woken by the completion itself, not polled. Default 100.",
        apply: |c, v| {
            c.txn.add_partitions_wait_max_ms = parse_num(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        help: "How often ongoing transactions are checked against their timeout (a timed-out one is aborted). Default 10000.",
        apply: |c, v| {
            c.txn.abort_check_interval_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "transactional.id.expiration.ms",
        help: "A transactional id with no transaction in progress and no state change for this long is forgotten (a tombstone in __transaction_state; its next InitProducerId starts afresh). Default 604800000 (7 days).",
        apply: |c, v| {
            c.txn.id_expiration_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "transaction.remove.expired.transaction.cleanup.interval.ms",
        help: "How often transactional ids are checked against transactional.id.expiration.ms. Default 3600000.",
        apply: |c, v| {
            c.txn.remove_expired_interval_ms = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "offsets.topic.segment.bytes",
        help: "Segment size of __consumer_offsets when it is created (it is compacted: old commits go from rolled segments). Default 104857600.",
        apply: |c, v| {
            let n: u64 = parse_positive(v)?;
            if n < 1_048_576 {
                return Err("must be at least 1048576 (the topic-level segment.bytes minimum)".into());
            }
            c.group.offsets_segment_bytes = n;
            Ok(())
        },
    },
    BrokerKey {
        name: "offsets.topic.num.partitions",
        help: "Partitions of __consumer_offsets (fixed once created). Default 8 (Kafka: 50; fewer files on one node).",
        apply: |c, v| {
            c.group.offsets_partitions = parse_positive(v)?;
            Ok(())
        },
    },
];

/// Maps a broker-level log property (`log.segment.bytes`) to its topic-level name
/// (`segment.bytes`), as Kafka does.
const LOG_KEY_ALIASES: &[(&str, &str)] = &[
    ("log.segment.bytes", "segment.bytes"),
    ("log.roll.ms", "segment.ms"),
    ("log.index.interval.bytes", "index.interval.bytes"),
    ("log.flush.interval.messages", "flush.messages"),
    ("log.flush.interval.ms", "flush.ms"),
    ("log.retention.ms", "retention.ms"),
    ("log.retention.bytes", "retention.bytes"),
    ("message.max.bytes", "max.message.bytes"),
    ("log.message.timestamp.type", "message.timestamp.type"),
    ("log.cleanup.policy", "cleanup.policy"),
    (
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
    ),
    ("log.cleaner.min.compaction.lag.ms", "min.compaction.lag.ms"),
    ("log.cleaner.max.compaction.lag.ms", "max.compaction.lag.ms"),
    ("log.cleaner.delete.retention.ms", "delete.retention.ms"),
];

/// What shardlog does with a topic-level setting (listed in docs/configuration.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicConfigStatus {
    /// Applied: the broker behaves as the setting says.
    Implemented,
    /// Validated as Kafka validates it, stored with the topic and reported by DescribeConfigs,
    /// but without effect yet; the help text says what shardlog does instead.
    Stored,
}

/// Kafka's value type of a topic-level setting, with its valid values.
#[derive(Clone, Copy, Debug)]
pub enum TopicConfigType {
    /// Kafka's INT, in `min..=max`.
    Int {
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// Kafka's LONG, in `min..=max`.
    Long {
        /// Smallest valid value.
        min: i64,
        /// Largest valid value.
        max: i64,
    },
    /// Kafka's DOUBLE, in `min..=max`.
    Double {
        /// Smallest valid value.
        min: f64,
        /// Largest valid value.
        max: f64,
    },
    /// Kafka's BOOLEAN (`true` or `false`, any case).
    Boolean,
    /// Kafka's STRING, one of these (case-sensitive, as Kafka).
    Choice(&'static [&'static str]),
    /// Kafka's LIST: comma-separated items, each one of these.
    List(&'static [&'static str]),
    /// Kafka's LIST of throttled replicas: `*` or `partition:broker` pairs.
    ThrottledReplicas,
    /// `compression.gzip.level`: 1 to 9, or -1.
    GzipLevel,
}

impl TopicConfigType {
    /// The type id DescribeConfigs (v3+) reports, as Kafka numbers them.
    pub fn kafka_type_id(self) -> i8 {
        match self {
            TopicConfigType::Boolean => 1,
            TopicConfigType::Choice(_) => 2,
            TopicConfigType::Int { .. } | TopicConfigType::GzipLevel => 3,
            TopicConfigType::Long { .. } => 5,
            TopicConfigType::Double { .. } => 6,
            TopicConfigType::List(_) | TopicConfigType::ThrottledReplicas => 7,
        }
    }

    /// True for Kafka's LIST type (IncrementalAlterConfigs APPEND and SUBTRACT apply).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            TopicConfigType::List(_) | TopicConfigType::ThrottledReplicas
        )
    }
}

/// One topic-level setting of Kafka 4.x.
#[derive(Clone, Copy, Debug)]
pub struct TopicConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// Kafka's type and valid values.
    pub kind: TopicConfigType,
    /// Kafka's default, as Kafka prints it.
    pub kafka_default: &'static str,
    /// Whether shardlog applies it.
    pub status: TopicConfigStatus,
    /// What it means here.
    pub help: &'static str,
}

const I32_MAX: i64 = i32::MAX as i64;
const INT_AT_LEAST_0: TopicConfigType = TopicConfigType::Int {
    min: 0,
    max: I32_MAX,
};
const LONG_AT_LEAST_0: TopicConfigType = TopicConfigType::Long {
    min: 0,
    max: i64::MAX,
};
const LONG_MAX: &str = "9223372036854775807";
const COMPRESSION_TYPES: &[&str] = &["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"];
const CLEANUP_POLICIES: &[&str] = &["compact", "delete"];

/// Every topic-level setting Kafka 4.3 defines (its `LogConfig`), with Kafka's type, valid
/// values and default, and what shardlog does with it. Unknown names are refused.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        kind: TopicConfigType::List(CLEANUP_POLICIES),
        kafka_default: "delete",
        status: TopicConfigStatus::Implemented,
        help: "`delete` (retention deletes old segments), `compact` (the log cleaner keeps the latest record of every key; records without a key are refused with INVALID_RECORD), or both. Default delete. An empty list is refused until shardlog has infinite retention without a policy.",
    },
    TopicConfigDef {
        name: "compression.gzip.level",
        kind: TopicConfigType::GzipLevel,
        kafka_default: "-1",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: shardlog does not recompress (see `compression.type`).",
    },
    TopicConfigDef {
        name: "compression.lz4.level",
        kind: TopicConfigType::Int { min: 1, max: 17 },
        kafka_default: "9",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: shardlog does not recompress (see `compression.type`).",
    },
    TopicConfigDef {
        name: "compression.type",
        kind: TopicConfigType::Choice(COMPRESSION_TYPES),
        kafka_default: "producer",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect yet: batches are kept as the producer compressed them (Kafka recompresses to this codec unless it is `producer`). Consumers decode either way.",
    },
    TopicConfigDef {
        name: "compression.zstd.level",
        kind: TopicConfigType::Int {
            min: -131_072,
            max: 22,
        },
        kafka_default: "3",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: shardlog does not recompress (see `compression.type`).",
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: "86400000",
        status: TopicConfigStatus::Implemented,
        help: "How long a tombstone (null value) of a compacted topic stays after the newest record of its segment, in ms. Default 86400000.",
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: "60000",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: shardlog removes a deleted segment's files at once.",
    },
    TopicConfigDef {
        name: "flush.messages",
        kind: TopicConfigType::Long { min: 1, max: i64::MAX },
        kafka_default: LONG_MAX,
        status: TopicConfigStatus::Implemented,
        help: "Batches between fdatasyncs; 1 = every acks=all batch (and offset commit) is durable before its ack (group commit), acks=0/1 data within flush.ms. Default 1 (Kafka: never, left to the OS).",
    },
    TopicConfigDef {
        name: "flush.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: LONG_MAX,
        status: TopicConfigStatus::Implemented,
        help: "Longest time written data stays not fdatasynced, in ms. Default 100 (Kafka: never, left to the OS).",
    },
    TopicConfigDef {
        name: "follower.replication.throttled.replicas",
        kind: TopicConfigType::ThrottledReplicas,
        kafka_default: "",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: one node has no replication to throttle.",
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        kind: INT_AT_LEAST_0,
        kafka_default: "4096",
        status: TopicConfigStatus::Implemented,
        help: "Bytes of log between offset index entries. Default 4096.",
    },
    TopicConfigDef {
        name: "leader.replication.throttled.replicas",
        kind: TopicConfigType::ThrottledReplicas,
        kafka_default: "",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: one node has no replication to throttle.",
    },
    TopicConfigDef {
        name: "local.retention.bytes",
        kind: TopicConfigType::Long {
            min: -2,
            max: i64::MAX,
        },
        kafka_default: "-2",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: tiered storage is not available (`remote.storage.enable=true` is refused, as by a Kafka broker without it).",
    },
    TopicConfigDef {
        name: "local.retention.ms",
        kind: TopicConfigType::Long {
            min: -2,
            max: i64::MAX,
        },
        kafka_default: "-2",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: tiered storage is not available.",
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        kind: TopicConfigType::Long { min: 1, max: i64::MAX },
        kafka_default: LONG_MAX,
        status: TopicConfigStatus::Implemented,
        help: "A compacted topic's dirty segment older than this is cleaned whatever the dirty ratio. Default 9223372036854775807.",
    },
    TopicConfigDef {
        name: "max.message.bytes",
        kind: INT_AT_LEAST_0,
        kafka_default: "1048588",
        status: TopicConfigStatus::Implemented,
        help: "Largest record batch accepted. Default 1048588.",
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: "3600000",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, not enforced yet: shardlog accepts records whatever their timestamp (Kafka refuses, with INVALID_TIMESTAMP, CreateTime records more than this ahead of the broker's clock).",
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: LONG_MAX,
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, not enforced yet: shardlog accepts records whatever their timestamp.",
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        kind: TopicConfigType::Choice(&["CreateTime", "LogAppendTime"]),
        kafka_default: "CreateTime",
        status: TopicConfigStatus::Implemented,
        help: "CreateTime or LogAppendTime. Default CreateTime.",
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: TopicConfigType::Double { min: 0.0, max: 1.0 },
        kafka_default: "0.5",
        status: TopicConfigStatus::Implemented,
        help: "The log cleaner cleans a compacted log once its dirty (never cleaned) bytes are at least this share of its cleanable bytes. Default 0.5.",
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: "0",
        status: TopicConfigStatus::Implemented,
        help: "A record stays uncompacted at least this long (by its segment's newest timestamp); at most `max.compaction.lag.ms`. Default 0.",
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        kind: TopicConfigType::Int { min: 1, max: I32_MAX },
        kafka_default: "1",
        status: TopicConfigStatus::Implemented,
        help: "An acks=all produce to a partition with fewer in-sync replicas is refused with NOT_ENOUGH_REPLICAS before the append (on one node a partition has one replica; in a cluster the ISR of the image counts); one that waits for the ISR while it shrinks below this gets NOT_ENOUGH_REPLICAS_AFTER_APPEND. Default: the broker's `min.insync.replicas` (1).",
    },
    TopicConfigDef {
        name: "preallocate",
        kind: TopicConfigType::Boolean,
        kafka_default: "false",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: shardlog always reserves segment space in `log.preallocate.bytes` steps.",
    },
    TopicConfigDef {
        name: "remote.log.copy.disable",
        kind: TopicConfigType::Boolean,
        kafka_default: "false",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: tiered storage is not available.",
    },
    TopicConfigDef {
        name: "remote.log.delete.on.disable",
        kind: TopicConfigType::Boolean,
        kafka_default: "false",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: tiered storage is not available.",
    },
    TopicConfigDef {
        name: "remote.storage.enable",
        kind: TopicConfigType::Boolean,
        kafka_default: "false",
        status: TopicConfigStatus::Implemented,
        help: "`false` only: `true` is refused with INVALID_CONFIG, as by a Kafka broker without tiered storage.",
    },
    TopicConfigDef {
        name: "retention.bytes",
        kind: TopicConfigType::Long {
            min: i64::MIN,
            max: i64::MAX,
        },
        kafka_default: "-1",
        status: TopicConfigStatus::Implemented,
        help: "Delete oldest segments beyond this size per partition; negative = no limit. Default -1.",
    },
    TopicConfigDef {
        name: "retention.ms",
        kind: TopicConfigType::Long {
            min: -1,
            max: i64::MAX,
        },
        kafka_default: "604800000",
        status: TopicConfigStatus::Implemented,
        help: "Delete whole segments older than this; -1 keeps forever. Default 604800000.",
    },
    TopicConfigDef {
        name: "segment.bytes",
        kind: TopicConfigType::Int {
            min: 1_048_576,
            max: I32_MAX,
        },
        kafka_default: "1073741824",
        status: TopicConfigStatus::Implemented,
        help: "Roll the active segment at this size. Default 1073741824. At least 1048576 per topic, as in Kafka (the broker-level `log.segment.bytes` also takes 14336 and more, for tests).",
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        kind: TopicConfigType::Int { min: 4, max: I32_MAX },
        kafka_default: "10485760",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: shardlog's offset index grows with its segment.",
    },
    TopicConfigDef {
        name: "segment.jitter.ms",
        kind: LONG_AT_LEAST_0,
        kafka_default: "0",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: segments roll at `segment.ms` exactly.",
    },
    TopicConfigDef {
        name: "segment.ms",
        kind: TopicConfigType::Long { min: 1, max: i64::MAX },
        kafka_default: "604800000",
        status: TopicConfigStatus::Implemented,
        help: "Roll the active segment after this age. Default 604800000.",
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        kind: TopicConfigType::Boolean,
        kafka_default: "false",
        status: TopicConfigStatus::Stored,
        help: "Accepted and stored, no effect: one node has no other replica to elect.",
    },
];

/// The definition of a topic-level setting by its Kafka name.
pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The items of a Kafka LIST value: split on commas, trimmed, empty items dropped.
pub fn list_items(value: &str) -> Vec<&str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn check_range<T: PartialOrd + std::fmt::Display>(n: T, min: T, max: T) -> Result<(), String> {
    if n < min {
        return Err(format!("Value must be at least {min}"));
    }
    if n > max {
        return Err(format!("Value must be no more than {max}"));
    }
    Ok(())
}

/// Checks one value against Kafka's type and validator of its setting; the message is
/// Kafka's ("Invalid value V for configuration K: ...", "Unknown topic config name: K").
pub fn validate_topic_value(key: &str, value: &str) -> Result<(), String> {
    let def = topic_config(key).ok_or_else(|| format!("Unknown topic config name: {key}"))?;
    let v = value.trim();
    let why = match def.kind {
        TopicConfigType::Int { min, max } => match v.parse::<i32>() {
            Ok(n) => check_range(i64::from(n), min, max),
            Err(_) => Err("Not a number of type INT".to_string()),
        },
        TopicConfigType::GzipLevel => match v.parse::<i32>() {
            Ok(n) if n == -1 || (1..=9).contains(&n) => Ok(()),
            Ok(_) => Err("Value must be between 1 and 9 or equal to -1".to_string()),
            Err(_) => Err("Not a number of type INT".to_string()),
        },
        TopicConfigType::Long { min, max } => match v.parse::<i64>() {
            Ok(n) => check_range(n, min, max),
            Err(_) => Err("Not a number of type LONG".to_string()),
        },
        TopicConfigType::Double { min, max } => match v.parse::<f64>() {
            Ok(n) if n.is_finite() => check_range(n, min, max),
            _ => Err("Not a number of type DOUBLE".to_string()),
        },
        TopicConfigType::Boolean => {
            if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
                Ok(())
            } else {
                Err("Expected value to be either true or false".to_string())
            }
        }
        TopicConfigType::Choice(allowed) => {
            if allowed.contains(&v) {
                Ok(())
            } else {
                Err(format!("String must be one of: {}", allowed.join(", ")))
            }
        }
        TopicConfigType::List(allowed) => match list_items(v)
            .into_iter()
            .find(|item| !allowed.contains(item))
        {
            None => Ok(()),
            Some(bad) => {
                return Err(format!(
                    "Invalid value {bad} for configuration {key}: String must be one of: {}",
                    allowed.join(", ")
                ))
            }
        },
        TopicConfigType::ThrottledReplicas => {
            let items = list_items(v);
            let pair_ok = |s: &str| {
                s.split_once(':').is_some_and(|(p, b)| {
                    p.trim().parse::<i32>().is_ok() && b.trim().parse::<i32>().is_ok()
                })
            };
            if items == ["*"] || items.iter().all(|s| pair_ok(s)) {
                Ok(())
            } else {
                return Err(format!(
                    "Invalid value [{}] for configuration {key}: {key} must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...",
                    items.join(", ")
                ));
            }
        }
    };
    why.map_err(|why| format!("Invalid value {value} for configuration {key}: {why}"))
}

/// Checks a topic's whole set of overrides as Kafka does (each value, then the rules between
/// values), then what shardlog cannot honour yet; the message says which and why.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in configs {
        validate_topic_value(k, v)?;
    }
    let long = |k: &str| {
        configs
            .get(k)
            .map(String::as_str)
            .or_else(|| topic_config(k).map(|d| d.kafka_default))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    if let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms")) {
        if min > max {
            return Err(format!(
                "conflict topic config setting min.compaction.lag.ms ({min}) > max.compaction.lag.ms ({max})"
            ));
        }
    }
    if configs
        .get("remote.storage.enable")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Err("Tiered Storage functionality is disabled in the broker. Topic cannot be configured with remote log storage.".into());
    }
    if let Some(policy) = configs.get("cleanup.policy") {
        if list_items(policy).is_empty() {
            return Err("cleanup.policy= (no cleanup) is not supported yet: use `delete`, `compact` or `compact,delete`".into());
        }
    }
    Ok(())
}

/// Applies one topic-level property to a log config; the error says what is expected.
/// Lenient where the broker's own defaults need it (`log.segment.bytes` from 14336 bytes);
/// the admin APIs check values with [`validate_topic_configs`] first. Settings shardlog
/// stores without applying are only checked.
pub fn apply_topic_key(log: &mut LogConfig, key: &str, v: &str) -> Result<(), String> {
    let v = v.trim();
    match key {
        "segment.bytes" => {
            let n: u64 = parse_positive(v)?;
            if n < 14 * 1024 {
                return Err("must be at least 14336".into());
            }
            log.segment_bytes = n;
        }
        "segment.ms" => log.segment_ms = parse_positive(v)?,
        "index.interval.bytes" => log.index_interval_bytes = parse_num(v)?,
        "flush.messages" => log.flush_messages = parse_positive(v)?,
        "flush.ms" => log.flush_ms = parse_num(v)?,
        "retention.ms" => {
            let n: i64 = parse_num(v)?;
            if n < -1 {
                return Err("must be -1 or more".into());
            }
            log.retention_ms = n;
        }
        "retention.bytes" => log.retention_bytes = parse_num(v)?,
        "max.message.bytes" => log.max_message_bytes = parse_num(v)?,
        "message.timestamp.type" => {
            log.timestamp_type = match v {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err("expected CreateTime or LogAppendTime".into()),
            }
        }
        "cleanup.policy" => {
            let items = list_items(v);
            if items.is_empty() || items.iter().any(|p| !CLEANUP_POLICIES.contains(p)) {
                return Err("expected `delete`, `compact` or both".into());
            }
            log.cleanup_delete = items.contains(&"delete");
            log.cleanup_compact = items.contains(&"compact");
        }
        "min.cleanable.dirty.ratio" => {
            let r: f64 = v.parse().map_err(|_| "expected a number".to_string())?;
            if !(0.0..=1.0).contains(&r) {
                return Err("must be between 0 and 1".into());
            }
            log.min_cleanable_dirty_ratio = r;
        }
        "min.compaction.lag.ms" => {
            log.min_compaction_lag_ms = parse_num::<u64>(v)?.min(i64::MAX as u64) as i64
        }
        "max.compaction.lag.ms" => {
            log.max_compaction_lag_ms = parse_positive::<u64>(v)?.min(i64::MAX as u64) as i64
        }
        "delete.retention.ms" => {
            log.delete_retention_ms = parse_num::<u64>(v)?.min(i64::MAX as u64) as i64
        }
        "remote.storage.enable" => {
            if !v.eq_ignore_ascii_case("false") {
                return Err("tiered storage is not available".into());
            }
        }
        _ => {
            // Stored, not applied: check it like Kafka.
            validate_topic_value(key, v).map_err(|e| {
                if topic_config(key).is_none() {
                    "unknown topic configuration".to_string()
                } else {
                    e
                }
            })?;
        }
    }
    Ok(())
}

/// The value of one topic-level property as Kafka prints it: for an applied setting, its
/// effective value in `log` (the broker default or the override); for a stored one, the
/// override or Kafka's default. `None` for an unknown name.
pub fn topic_config_value(
    log: &LogConfig,
    overrides: &BTreeMap<String, String>,
    key: &str,
) -> Option<String> {
    let def = topic_config(key)?;
    Some(match key {
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "flush.messages" => log.flush_messages.to_string(),
        "flush.ms" => log.flush_ms.to_string(),
        "retention.ms" => log.retention_ms.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "max.message.bytes" => log.max_message_bytes.to_string(),
        // The override as stored (Kafka prints the list as given), else the broker's default.
        "cleanup.policy" => match overrides.get(key) {
            Some(v) => v.clone(),
            None => match (log.cleanup_compact, log.cleanup_delete) {
                (true, true) => "compact,delete".into(),
                (true, false) => "compact".into(),
                _ => "delete".into(),
            },
        },
        "min.cleanable.dirty.ratio" => log.min_cleanable_dirty_ratio.to_string(),
        "min.compaction.lag.ms" => log.min_compaction_lag_ms.to_string(),
        "max.compaction.lag.ms" => log.max_compaction_lag_ms.to_string(),
        "delete.retention.ms" => log.delete_retention_ms.to_string(),
        "message.timestamp.type" => match log.timestamp_type {
            TimestampType::CreateTime => "CreateTime".into(),
            TimestampType::LogAppendTime => "LogAppendTime".into(),
        },
        _ => overrides
            .get(key)
            .cloned()
            .unwrap_or_else(|| def.kafka_default.to_string()),
    })
}

/// True when the broker's default of a topic setting differs from shardlog's built-in one:
/// it was set in the broker's configuration (`log.retention.ms`, ...), which DescribeConfigs
/// reports as the value's source.
pub fn broker_sets_topic_default(broker: &LogConfig, key: &str) -> bool {
    let none = BTreeMap::new();
    topic_config_value(broker, &none, key) != topic_config_value(&LogConfig::default(), &none, key)
}

/// The broker-level name of a topic-level log setting (`segment.bytes` → `log.segment.bytes`),
/// Kafka's synonym, if it has one.
pub fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    LOG_KEY_ALIASES
        .iter()
        .find(|(_, t)| *t == topic_key)
        .map(|(b, _)| *b)
}

/// Builds a topic's effective log config: broker defaults, then the topic's overrides.
pub fn topic_log_config(
    defaults: &LogConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<LogConfig, ConfigError> {
    let mut log = defaults.clone();
    for (k, v) in overrides {
        apply_topic_key(&mut log, k, v).map_err(|why| ConfigError::BadValue {
            key: k.clone(),
            value: v.clone(),
            why,
        })?;
    }
    Ok(log)
}

impl BrokerConfig {
    /// The host and port clients are told to connect to.
    pub fn advertised(&self) -> (String, u16) {
        self.advertised
            .clone()
            .unwrap_or_else(|| (self.listen.ip().to_string(), self.listen.port()))
    }

    /// Applies one property by its Kafka name (broker-level or `log.*` default).
    pub fn apply(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            why,
        };
        if let Some(k) = BROKER_KEYS.iter().find(|k| k.name == key) {
            return (k.apply)(self, value).map_err(bad);
        }
        if let Some((_, topic_key)) = LOG_KEY_ALIASES.iter().find(|(b, _)| *b == key) {
            return apply_topic_key(&mut self.log, topic_key, value).map_err(bad);
        }
        if let Some(result) = self.cluster.apply(key, value) {
            return result.map_err(bad);
        }
        if let Some(result) = self.security.apply(key, value) {
            return result.map_err(bad);
        }
        Err(ConfigError::UnknownKey(key.to_string()))
    }

    /// The cross-key checks of the cluster settings, once every key is read: `None` for the
    /// embedded one-node default (no `process.roles`), else what the node is and where it
    /// listens (its client listener becomes [`BrokerConfig::listen`]).
    pub fn resolve_cluster(&mut self) -> Result<Option<ResolvedCluster>, ConfigError> {
        if !self.cluster.is_cluster_mode() {
            return Ok(None);
        }
        let resolved = self
            .cluster
            .resolve(self.node_id, self.listen)
            .map_err(|(key, value, why)| ConfigError::BadValue { key, value, why })?;
        if let Some(l) = resolved.client_listen {
            self.listen = l;
        }
        Ok(Some(resolved))
    }

    /// Reads a TOML file of Kafka properties on top of the defaults.
    pub fn load_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat);
        for (k, v) in flat {
            self.apply(&k, &v)?;
        }
        Ok(())
    }

    /// The reference of every setting with its help text (for `shardlog config-reference`).
    pub fn reference() -> String {
        let mut out = String::from("| property | meaning |\n|---|---|\n");
        for k in BROKER_KEYS {
            out.push_str(&format!("| `{}` | {} |\n", k.name, k.help));
        }
        for (broker, topic) in LOG_KEY_ALIASES {
            let help = topic_config(topic).map_or("", |d| d.help);
            out.push_str(&format!("| `{broker}` (topic: `{topic}`) | {help} |\n"));
        }
        for (name, help) in crate::cluster::config::CLUSTER_KEYS {
            out.push_str(&format!("| `{name}` | {help} |\n"));
        }
        for (name, help) in crate::security::REFERENCE_KEYS {
            out.push_str(&format!("| `{name}` | {help} |\n"));
        }
        for (name, help) in crate::security::LISTENER_KEYS {
            out.push_str(&format!(
                "| `{name}` (or `listener.name.<listener>.{name}`) | {help} |\n"
            ));
        }
        out
    }
}

/// The reference of every topic-level setting with its Kafka default and status (for
/// `shardlog config-reference`, after [`BrokerConfig::reference`]).
pub fn topic_reference() -> String {
    let mut out = String::new();
    out.push_str(
        "\n### Topic-level settings\n\n\
         Every topic-level setting of Kafka 4.3, set with CreateTopics, IncrementalAlterConfigs \
         or AlterConfigs and validated as Kafka validates it; any other name is refused with \
         INVALID_CONFIG. *implemented*: the broker behaves as the setting says. *accepted and \
         stored*: kept with the topic and reported by DescribeConfigs, without effect yet.\n\n\
         | topic property | Kafka default | status | meaning |\n|---|---|---|---|\n",
    );
    for d in TOPIC_CONFIGS {
        let status = match d.status {
            TopicConfigStatus::Implemented => "implemented",
            TopicConfigStatus::Stored => "accepted and stored",
        };
        let default = if d.kafka_default.is_empty() {
            "(empty)"
        } else {
            d.kafka_default
        };
        out.push_str(&format!(
            "| `{}` | {default} | {status} | {} |\n",
            d.name, d.help
        ));
    }
    out
}

/// Flattens nested TOML tables into dotted Kafka names with string values.
fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let name = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&name, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<BrokerConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).expect("write");
        let mut c = BrokerConfig::default();
        c.load_file(&path)?;
        Ok(c)
    }

    #[test]
    fn dotted_and_quoted_keys_flatten_to_kafka_names() {
        let c =
            load("log.segment.bytes = 1048576\n\"message.max.bytes\" = 2000\nnum.partitions = 3\n")
                .expect("valid");
        assert_eq!(c.log.segment_bytes, 1_048_576);
        assert_eq!(c.log.max_message_bytes, 2000);
        assert_eq!(c.num_partitions, 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = load("log.segmnt.bytes = 5\n").expect_err("typo refused");
        assert!(e.to_string().contains("log.segmnt.bytes"), "{e}");
        let e = load("num.partitions = 0\n").expect_err("zero refused");
        assert!(e.to_string().contains("num.partitions"), "{e}");
        let e = load("auto.create.topics.enable = \"maybe\"\n").expect_err("bad bool");
        assert!(e.to_string().contains("auto.create.topics.enable"), "{e}");
    }

    #[test]
    fn kafka_listener_lists_and_cluster_keys() {
        let c = load(
            "listeners = \"PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\"\n\
             advertised.listeners = \"CONTROLLER://h:1,PLAINTEXT://broker1:19092\"\n\
             process.roles = \"broker,controller\"\nnode.id = 1\n\
             controller.quorum.voters = \"1@127.0.0.1:19093\"\nbroker.rack = \"r1\"\n",
        )
        .expect("valid");
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.advertised(), ("broker1".to_string(), 19092));
        let mut c = c;
        let r = c
            .resolve_cluster()
            .expect("resolves")
            .expect("cluster mode");
        assert_eq!(r.controller_listen.map(|a| a.port()), Some(19093));
        let e = load("controller.quorum.voters = \"1@a:1,1@b:2\"\n").expect_err("dup");
        assert!(e.to_string().contains("controller.quorum.voters"), "{e}");
        let mut plain = load("listeners = \"127.0.0.1:9092\"\n").expect("plain");
        assert!(plain.resolve_cluster().expect("embedded").is_none());
    }

    #[test]
    fn listener_forms() {
        assert_eq!(
            parse_host_port("PLAINTEXT://broker1:9093").expect("ok"),
            ("broker1".to_string(), 9093)
        );
        assert!(parse_listen("localhost:1").is_ok());
        assert!(parse_listen("nohost").is_err());
    }

    #[test]
    fn every_topic_config_default_is_valid_and_unknown_names_are_refused() {
        assert_eq!(
            TOPIC_CONFIGS.len(),
            33,
            "Kafka 4.3's LogConfig has 33 public topic configs"
        );
        for d in TOPIC_CONFIGS {
            validate_topic_value(d.name, d.kafka_default)
                .unwrap_or_else(|e| panic!("{}: default refused: {e}", d.name));
        }
        assert_eq!(
            validate_topic_value("no.such", "1").expect_err("unknown"),
            "Unknown topic config name: no.such"
        );
    }

    #[test]
    fn topic_values_get_kafkas_messages() {
        let msg = |k: &str, v: &str| validate_topic_value(k, v).expect_err("invalid");
        assert_eq!(
            msg("segment.bytes", "1000"),
            "Invalid value 1000 for configuration segment.bytes: Value must be at least 1048576"
        );
        assert_eq!(
            msg("segment.bytes", "abc"),
            "Invalid value abc for configuration segment.bytes: Not a number of type INT"
        );
        assert_eq!(
            msg("compression.type", "LZ4"),
            "Invalid value LZ4 for configuration compression.type: String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer"
        );
        assert_eq!(
            msg("compression.gzip.level", "0"),
            "Invalid value 0 for configuration compression.gzip.level: Value must be between 1 and 9 or equal to -1"
        );
        assert_eq!(
            msg("min.cleanable.dirty.ratio", "1.5"),
            "Invalid value 1.5 for configuration min.cleanable.dirty.ratio: Value must be no more than 1"
        );
        assert_eq!(
            msg("preallocate", "yes"),
            "Invalid value yes for configuration preallocate: Expected value to be either true or false"
        );
        assert_eq!(
            msg("cleanup.policy", "Delete"),
            "Invalid value Delete for configuration cleanup.policy: String must be one of: compact, delete"
        );
        for (k, v) in [
            ("preallocate", "TRUE"),
            ("segment.bytes", " 2000000 "),
            ("retention.bytes", "-5"),
            ("leader.replication.throttled.replicas", "*"),
            ("leader.replication.throttled.replicas", "0:1,1:2"),
            ("cleanup.policy", "delete,delete"),
        ] {
            assert!(validate_topic_value(k, v).is_ok(), "{k}={v}");
        }
        let configs = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            validate_topic_configs(&configs(&[
                ("min.compaction.lag.ms", "10"),
                ("max.compaction.lag.ms", "5")
            ]))
            .expect_err("conflict"),
            "conflict topic config setting min.compaction.lag.ms (10) > max.compaction.lag.ms (5)"
        );
        for policy in ["compact", "compact,delete", "delete, compact"] {
            assert!(validate_topic_configs(&configs(&[("cleanup.policy", policy)])).is_ok());
            let mut log = LogConfig::default();
            apply_topic_key(&mut log, "cleanup.policy", policy).expect(policy);
            assert!(log.cleanup_compact);
            assert_eq!(log.cleanup_delete, policy.contains("delete"));
        }
        assert_eq!(
            validate_topic_configs(&configs(&[("cleanup.policy", "compact,purge")]))
                .expect_err("unknown policy"),
            "Invalid value purge for configuration cleanup.policy: String must be one of: compact, delete"
        );
        assert_eq!(
            validate_topic_configs(&configs(&[("min.compaction.lag.ms", "-1")]))
                .expect_err("negative lag"),
            "Invalid value -1 for configuration min.compaction.lag.ms: Value must be at least 0"
        );
        assert_eq!(
            validate_topic_configs(&configs(&[("delete.retention.ms", "-5")]))
                .expect_err("negative retention"),
            "Invalid value -5 for configuration delete.retention.ms: Value must be at least 0"
        );
        assert!(validate_topic_configs(&configs(&[("compression.type", "lz4")])).is_ok());
    }
}
