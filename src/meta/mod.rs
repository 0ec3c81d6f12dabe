//! Cluster metadata: topics, their ids, partition counts and config overrides.
//!
//! One writer (shard 0) changes it; every shard holds the current version as an immutable
//! `Arc<Metadata>` snapshot and answers Metadata requests from it without asking anyone.
//! The snapshot is persisted with rkyv in `DATA_DIR/meta/topics.rkyv`, framed by a magic,
//! a length and a CRC32C so that a damaged file is refused with a clear message instead of
//! being half-read: the broker never invents state it did not write.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One topic as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct TopicMeta {
    /// The topic name (Kafka's legal characters, at most 249 of them).
    pub name: String,
    /// The topic id (a UUID), stable for the topic's life, reported from Metadata v10.
    pub id: [u8; 16],
    /// Number of partitions; only grows (CreatePartitions).
    pub partitions: i32,
    /// Topic-level config overrides by Kafka name (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
}

/// A whole metadata snapshot; `version` grows by one with every change.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Metadata {
    /// Monotonic change counter.
    pub version: u64,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// First producer id of the next block handed out by InitProducerId.
    pub producer_id_next: i64,
}

impl Metadata {
    /// Finds a topic by its id.
    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&TopicMeta> {
        self.topics.values().find(|t| &t.id == id)
    }
}

/// Why the metadata snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Reading or writing the snapshot file failed.
    #[error("metadata snapshot {path}: {source}")]
    Io {
        /// The snapshot file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The snapshot exists but is damaged; the broker refuses to guess.
    #[error("metadata snapshot {path} is corrupt ({why}); refusing to start. Restore it from a backup or move it away to start with no topics")]
    Corrupt {
        /// The snapshot file.
        path: PathBuf,
        /// What check failed.
        why: String,
    },
}

const MAGIC: &[u8; 8] = b"SLMETA01";
const FILE_NAME: &str = "topics.rkyv";

/// The snapshot file's path under a data dir.
pub fn snapshot_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join(FILE_NAME)
}

/// Reads the snapshot; a missing file is an empty cluster, a damaged one is an error.
pub fn load(data_dir: &Path) -> Result<Metadata, MetaError> {
    let path = snapshot_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Metadata::default()),
        Err(source) => return Err(MetaError::Io { path, source }),
    };
    let corrupt = |why: &str| MetaError::Corrupt {
        path: path.clone(),
        why: why.to_string(),
    };
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().map_err(|_| corrupt("bad length"))?);
    let crc = u32::from_le_bytes(bytes[16..20].try_into().map_err(|_| corrupt("bad crc"))?);
    let body = &bytes[20..];
    if body.len() as u64 != len {
        return Err(corrupt("length does not match"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    // rkyv needs an aligned buffer; copy into one (the file is small and read once).
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    rkyv::from_bytes::<Metadata, rkyv::rancor::Error>(&aligned).map_err(|e| corrupt(&e.to_string()))
}

/// Writes the snapshot durably: temp file, fsync, rename, fsync of the directory.
pub fn save(data_dir: &Path, meta: &Metadata) -> Result<(), MetaError> {
    let dir = data_dir.join("meta");
    let path = dir.join(FILE_NAME);
    let io = |source| MetaError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let body = rkyv::to_bytes::<rkyv::rancor::Error>(meta).map_err(|e| MetaError::Io {
        path: path.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(MAGIC).map_err(io)?;
        f.write_all(&(body.len() as u64).to_le_bytes())
            .map_err(io)?;
        f.write_all(&crc32c::crc32c(&body).to_le_bytes())
            .map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

/// Checks a topic name against Kafka's rules; the error says which rule.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err("topic name cannot be `.` or `..`".into());
    }
    if name.len() > 249 {
        return Err("topic name is longer than 249 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '_' || *c == '-'))
    {
        return Err(format!("topic name contains illegal character {c:?}"));
    }
    Ok(())
}

/// A fresh random topic id (never all zeros, which Kafka reads as "no id").
pub fn new_topic_id() -> [u8; 16] {
    loop {
        let id = *uuid::Uuid::new_v4().as_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut m = Metadata {
            version: 3,
            ..Default::default()
        };
        m.topics.insert(
            "orders".into(),
            TopicMeta {
                name: "orders".into(),
                id: new_topic_id(),
                partitions: 6,
                configs: [("retention.ms".to_string(), "1000".to_string())].into(),
            },
        );
        m
    }

    #[test]
    fn snapshot_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("empty"), Metadata::default());
        let m = sample();
        save(dir.path(), &m).expect("save");
        assert_eq!(load(dir.path()).expect("load"), m);
    }

    #[test]
    fn damaged_snapshot_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        save(dir.path(), &sample()).expect("save");
        let path = snapshot_path(dir.path());
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let err = load(dir.path()).expect_err("corrupt");
        assert!(matches!(err, MetaError::Corrupt { .. }), "{err}");
        std::fs::write(&path, &bytes[..10]).expect("write");
        assert!(matches!(load(dir.path()), Err(MetaError::Corrupt { .. })));
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("a.b_c-9").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("bad/name").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
