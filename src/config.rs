//! Broker configuration: Kafka's property names, read from a TOML file and overridden by flags.
//!
//! The file is TOML whose keys are Kafka's dotted property names, written either quoted
//! (`"log.segment.bytes" = 1073741824`) or as TOML dotted keys (`log.segment.bytes = ...`);
//! both spellings flatten to the same name. Unknown keys and bad values are refused with a
//! message that names them: a typo must not silently fall back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub mod cluster;

use crate::group::coordinator::GroupConfig;
use crate::storage::{LogConfig, TimestampType};
use cluster::{ClusterConfig, ResolvedCluster};

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
    /// Open client connections per shard; further ones are closed at accept.
    pub shard_connections_max: usize,
    /// A connection silent for this long is closed; `connections.max.idle.ms`.
    pub connections_max_idle_ms: u64,
    /// Memory cap of each shard's batch cache.
    pub batch_cache_bytes_max: usize,
    /// Bytes appended but not yet written that one shard may hold before produce requests
    /// wait for its disk (they cannot leave memory); `shard.unwritten.bytes.max`.
    pub unwritten_bytes_max: u64,
    /// Write with buffered I/O instead of O_DIRECT (for file systems that refuse O_DIRECT).
    pub buffered_io: bool,
    /// Segment space reserved per fallocate, so a flush is not a metadata update.
    pub preallocate_bytes: u64,
    /// Where shard 0 serves Prometheus metrics (`GET /metrics`); none by default.
    pub metrics_listen: Option<SocketAddr>,
    /// Consumer group settings.
    pub group: GroupConfig,
    /// Defaults for every topic's log (`log.segment.bytes`, `message.max.bytes`, ...).
    pub log: LogConfig,
    /// The cluster's identity settings (`process.roles`, `controller.quorum.voters`, ...).
    pub cluster: ClusterConfig,
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
            auto_create_topics: true,
            num_partitions: 1,
            socket_request_max_bytes: 100 * 1024 * 1024,
            connection_inflight_requests_max: 32,
            connection_response_buffer_bytes: 4 * 1024 * 1024,
            fetch_max_bytes: 55 * 1024 * 1024,
            fetch_memory_bytes: 256 * 1024 * 1024,
            shard_connections_max: 20_000,
            connections_max_idle_ms: 600_000,
            batch_cache_bytes_max: 256 * 1024 * 1024,
            unwritten_bytes_max: 64 << 20,
            buffered_io: false,
            preallocate_bytes: 64 << 20,
            metrics_listen: None,
            group: GroupConfig::default(),
            log: LogConfig::default(),
            cluster: ClusterConfig::new(),
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
                let listeners = cluster::parse_listeners(v)?;
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
            Ok(())
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
        name: "shard.unwritten.bytes.max",
        help: "Bytes appended but not yet written to disk that one shard may hold; past it, produce requests wait for the disk (KAFKA_STORAGE_ERROR after 30 s or once a write failed). Per shard. Default 67108864.",
        apply: |c, v| {
            c.unwritten_bytes_max = parse_positive(v)?;
            Ok(())
        },
    },
    BrokerKey {
        name: "shard.connections.max",
        help: "Client connections per shard; further ones are closed at accept. Default 20000.",
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
        help: "Segment space reserved per fallocate, so a flush is not a metadata update. Default 67108864.",
        apply: |c, v| {
            c.preallocate_bytes = parse_positive(v)?;
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
];

/// The topic-level settings shardlog understands, with their help text.
pub const TOPIC_KEYS: &[(&str, &str)] = &[
    ("segment.bytes", "Roll the active segment at this size. Default 1073741824."),
    ("segment.ms", "Roll the active segment after this age. Default 604800000."),
    ("index.interval.bytes", "Bytes of log between offset index entries. Default 4096."),
    ("flush.messages", "Batches between fdatasyncs; 1 = every acks=all batch (and offset commit) is durable before its ack (group commit), acks=0/1 data within flush.ms. Default 1."),
    ("flush.ms", "Longest time written data stays not fdatasynced, in ms. Default 100 (Kafka: never, left to the OS)."),
    ("retention.ms", "Delete whole segments older than this; -1 keeps forever. Default 604800000."),
    ("retention.bytes", "Delete oldest segments beyond this size per partition; -1 = no limit. Default -1."),
    ("max.message.bytes", "Largest record batch accepted. Default 1048588."),
    ("message.timestamp.type", "CreateTime or LogAppendTime. Default CreateTime."),
    ("cleanup.policy", "Only `delete` is supported."),
];

/// Applies one topic-level property to a log config; the error says what is expected.
pub fn apply_topic_key(log: &mut LogConfig, key: &str, v: &str) -> Result<(), String> {
    match key {
        "segment.bytes" => {
            let n: u64 = parse_positive(v)?;
            if n < 14 * 1024 {
                return Err("must be at least 14336".into());
            }
            log.segment_bytes = n;
        }
        "segment.ms" => log.segment_ms = parse_positive(v)?,
        "index.interval.bytes" => log.index_interval_bytes = parse_positive(v)?,
        "flush.messages" => log.flush_messages = parse_positive(v)?,
        "flush.ms" => log.flush_ms = parse_num(v)?,
        "retention.ms" => {
            let n: i64 = parse_num(v)?;
            if n < -1 {
                return Err("must be -1 or more".into());
            }
            log.retention_ms = n;
        }
        "retention.bytes" => {
            let n: i64 = parse_num(v)?;
            if n < -1 {
                return Err("must be -1 or more".into());
            }
            log.retention_bytes = n;
        }
        "max.message.bytes" => log.max_message_bytes = parse_positive(v)?,
        "message.timestamp.type" => {
            log.timestamp_type = match v.trim() {
                "CreateTime" => TimestampType::CreateTime,
                "LogAppendTime" => TimestampType::LogAppendTime,
                _ => return Err("expected CreateTime or LogAppendTime".into()),
            }
        }
        "cleanup.policy" => {
            if v.trim() != "delete" {
                return Err("only `delete` is supported".into());
            }
        }
        _ => return Err("unknown topic configuration".into()),
    }
    Ok(())
}

/// The value of one topic-level property in a log config, as Kafka prints it.
pub fn topic_key_value(log: &LogConfig, key: &str) -> Option<String> {
    Some(match key {
        "segment.bytes" => log.segment_bytes.to_string(),
        "segment.ms" => log.segment_ms.to_string(),
        "index.interval.bytes" => log.index_interval_bytes.to_string(),
        "flush.messages" => log.flush_messages.to_string(),
        "flush.ms" => log.flush_ms.to_string(),
        "retention.ms" => log.retention_ms.to_string(),
        "retention.bytes" => log.retention_bytes.to_string(),
        "max.message.bytes" => log.max_message_bytes.to_string(),
        "message.timestamp.type" => match log.timestamp_type {
            TimestampType::CreateTime => "CreateTime".into(),
            TimestampType::LogAppendTime => "LogAppendTime".into(),
        },
        "cleanup.policy" => "delete".into(),
        _ => return None,
    })
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
            let help = TOPIC_KEYS
                .iter()
                .find(|(n, _)| n == topic)
                .map_or("", |(_, h)| h);
            out.push_str(&format!("| `{broker}` (topic: `{topic}`) | {help} |\n"));
        }
        for (name, help) in cluster::CLUSTER_KEYS {
            out.push_str(&format!("| `{name}` | {help} |\n"));
        }
        out
    }
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
}
