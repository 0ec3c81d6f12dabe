//! The node's identity on disk: Kafka's `meta.properties` in the data dir.
//!
//! Kafka (KRaft) writes `version=1`, `cluster.id`, `node.id` and `directory.id` there with
//! `kafka-storage format`; `shardlog format` does the same. At start the stored ids are checked
//! against the configuration before anything else is written, so a data dir of another node or
//! another cluster is refused instead of being silently adopted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;

/// The file name, as Kafka names it.
pub const META_PROPERTIES: &str = "meta.properties";

/// What `meta.properties` says about the data dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaProperties {
    /// The cluster the dir belongs to (a base64url UUID of 22 characters, as Kafka's).
    pub cluster_id: String,
    /// The node the dir belongs to.
    pub node_id: i32,
    /// This directory's own id (Kafka's `directory.id`, KIP-858).
    pub directory_id: String,
}

/// Why the data dir's identity was refused or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file exists but is not a `meta.properties` this version understands.
    #[error("{path} is not a valid meta.properties: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The dir belongs to another node.
    #[error("data dir {dir} belongs to node.id {stored}, but this node is node.id {configured}; refusing to start (use this node's own data dir)")]
    OtherNode {
        /// The data dir.
        dir: PathBuf,
        /// `node.id` in the file.
        stored: i32,
        /// `node.id` configured.
        configured: i32,
    },
    /// The dir belongs to another cluster.
    #[error(
        "data dir {dir} belongs to cluster {stored}, not to cluster {expected}; refusing to start"
    )]
    OtherCluster {
        /// The data dir.
        dir: PathBuf,
        /// `cluster.id` in the file.
        stored: String,
        /// The cluster id expected.
        expected: String,
    },
    /// A cluster node's dir has never been formatted.
    #[error("data dir {dir} is not formatted; a cluster node needs `shardlog format --cluster-id ID` first (one id for every node; `shardlog random-uuid` makes one)")]
    NotFormatted {
        /// The data dir.
        dir: PathBuf,
    },
    /// `format` on a dir that already has an identity.
    #[error("data dir {dir} is already formatted (cluster {cluster_id}, node.id {node_id}); pass --ignore-formatted to leave it as it is")]
    AlreadyFormatted {
        /// The data dir.
        dir: PathBuf,
        /// Its cluster.
        cluster_id: String,
        /// Its node.
        node_id: i32,
    },
    /// A cluster id that is not a base64url UUID.
    #[error("bad cluster id `{0}`: expected 22 characters of base64url encoding 16 bytes (`shardlog random-uuid` makes one)")]
    BadClusterId(String),
}

/// A fresh id in Kafka's form (`Uuid.randomUuid().toString()`: unpadded base64url of 16 bytes).
pub fn random_uuid() -> String {
    loop {
        let bytes = *uuid::Uuid::new_v4().as_bytes();
        // Kafka reserves the all-zero id and ids starting with '-' read badly on a command line.
        let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if bytes != [0; 16] && !s.starts_with('-') {
            return s;
        }
    }
}

/// Checks that `id` is a Kafka UUID string.
pub fn validate_cluster_id(id: &str) -> Result<(), IdentityError> {
    match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id) {
        Ok(b) if b.len() == 16 && b != [0; 16] => Ok(()),
        _ => Err(IdentityError::BadClusterId(id.to_string())),
    }
}

/// Reads `meta.properties`; `None` when the dir has none.
pub fn read(dir: &Path) -> Result<Option<MetaProperties>, IdentityError> {
    let path = dir.join(META_PROPERTIES);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IdentityError::Io { path, source }),
    };
    let invalid = |why: String| IdentityError::Invalid {
        path: path.clone(),
        why,
    };
    let mut props = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| invalid(format!("line `{line}` is not key=value")))?;
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    match props.get("version").map(String::as_str) {
        Some("1") => {}
        other => return Err(invalid(format!("version {other:?}, expected 1"))),
    }
    let cluster_id = props
        .get("cluster.id")
        .ok_or_else(|| invalid("no cluster.id".into()))?
        .clone();
    validate_cluster_id(&cluster_id).map_err(|e| invalid(e.to_string()))?;
    let node_id = props
        .get("node.id")
        .ok_or_else(|| invalid("no node.id".into()))?
        .parse::<i32>()
        .map_err(|_| invalid("node.id is not a number".into()))?;
    let directory_id = props.get("directory.id").cloned().unwrap_or_default();
    Ok(Some(MetaProperties {
        cluster_id,
        node_id,
        directory_id,
    }))
}

/// Writes `meta.properties` durably (temp file, fsync, rename, dir fsync), creating `dir`.
fn write(dir: &Path, m: &MetaProperties) -> Result<(), IdentityError> {
    let path = dir.join(META_PROPERTIES);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{META_PROPERTIES}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        write!(
            f,
            "#\n#Written by shardlog\ncluster.id={}\ndirectory.id={}\nnode.id={}\nversion=1\n",
            m.cluster_id, m.directory_id, m.node_id
        )
        .map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

/// `shardlog format`: gives an empty (or missing) data dir its identity. An already formatted
/// dir is refused unless `ignore_formatted`, in which case it is left as it is (Kafka's
/// `--ignore-formatted`) — but never re-labelled with another cluster or node.
pub fn format(
    dir: &Path,
    cluster_id: &str,
    node_id: i32,
    ignore_formatted: bool,
) -> Result<MetaProperties, IdentityError> {
    validate_cluster_id(cluster_id)?;
    if let Some(m) = read(dir)? {
        if !ignore_formatted {
            return Err(IdentityError::AlreadyFormatted {
                dir: dir.to_path_buf(),
                cluster_id: m.cluster_id,
                node_id: m.node_id,
            });
        }
        check(dir, &m, node_id, Some(cluster_id))?;
        return Ok(m);
    }
    let m = MetaProperties {
        cluster_id: cluster_id.to_string(),
        node_id,
        directory_id: random_uuid(),
    };
    write(dir, &m)?;
    Ok(m)
}

fn check(
    dir: &Path,
    m: &MetaProperties,
    node_id: i32,
    cluster_id: Option<&str>,
) -> Result<(), IdentityError> {
    if m.node_id != node_id {
        return Err(IdentityError::OtherNode {
            dir: dir.to_path_buf(),
            stored: m.node_id,
            configured: node_id,
        });
    }
    if let Some(expected) = cluster_id {
        if m.cluster_id != expected {
            return Err(IdentityError::OtherCluster {
                dir: dir.to_path_buf(),
                stored: m.cluster_id.clone(),
                expected: expected.to_string(),
            });
        }
    }
    Ok(())
}

/// At start: the data dir's identity, checked against the configured `node.id` before
/// anything is written. A cluster node's dir must have been formatted; the embedded one-node
/// default formats its own dir at first start (zero configuration), including a dir that
/// holds data from before `meta.properties` existed.
pub fn load_at_start(
    dir: &Path,
    node_id: i32,
    cluster_mode: bool,
) -> Result<MetaProperties, IdentityError> {
    match read(dir)? {
        Some(m) => {
            check(dir, &m, node_id, None)?;
            Ok(m)
        }
        None if cluster_mode => Err(IdentityError::NotFormatted {
            dir: dir.to_path_buf(),
        }),
        None => format(dir, &random_uuid(), node_id, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_kafka_uuids() {
        for _ in 0..100 {
            let id = random_uuid();
            assert_eq!(id.len(), 22);
            validate_cluster_id(&id).expect("valid");
        }
        assert!(validate_cluster_id("short").is_err());
        assert!(validate_cluster_id("AAAAAAAAAAAAAAAAAAAAAA").is_err()); // all zeros
                                                                         // One Kafka printed (kafka-storage random-uuid).
        validate_cluster_id("MkU3OEVBNTcwNTJENDM2Qg").expect("kafka's");
    }

    #[test]
    fn format_then_start_and_refusals() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let id = random_uuid();
        let m = format(&dir, &id, 3, false).expect("format");
        assert_eq!(read(&dir).expect("read"), Some(m.clone()));
        assert_eq!(load_at_start(&dir, 3, true).expect("start"), m);
        let e = load_at_start(&dir, 4, true).expect_err("other node");
        assert!(
            matches!(e, IdentityError::OtherNode { stored: 3, .. }),
            "{e}"
        );
        let e = format(&dir, &id, 3, false).expect_err("formatted twice");
        assert!(matches!(e, IdentityError::AlreadyFormatted { .. }), "{e}");
        assert_eq!(format(&dir, &id, 3, true).expect("ignore"), m);
        let e = format(&dir, &random_uuid(), 3, true).expect_err("another cluster");
        assert!(matches!(e, IdentityError::OtherCluster { .. }), "{e}");
        assert!(matches!(
            format(&dir, "nope", 3, false),
            Err(IdentityError::BadClusterId(_))
        ));
    }

    #[test]
    fn unformatted_dir_refused_in_a_cluster_and_nothing_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("data");
        let e = load_at_start(&dir, 1, true).expect_err("not formatted");
        assert!(matches!(e, IdentityError::NotFormatted { .. }), "{e}");
        assert!(!dir.exists(), "nothing may be written");
        let m = load_at_start(&dir, 0, false).expect("embedded formats itself");
        assert_eq!(load_at_start(&dir, 0, false).expect("again"), m);
    }

    #[test]
    fn kafka_written_file_is_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            tmp.path().join(META_PROPERTIES),
            "#\n#Tue Dec 01 10:00:00 UTC 2026\nnode.id=1\ndirectory.id=J8aAPcfLQt2bqs1JT_rMgQ\nversion=1\ncluster.id=MkU3OEVBNTcwNTJENDM2Qg\n",
        )
        .expect("write");
        let m = read(tmp.path()).expect("read").expect("present");
        assert_eq!(m.node_id, 1);
        assert_eq!(m.cluster_id, "MkU3OEVBNTcwNTJENDM2Qg");
        std::fs::write(tmp.path().join(META_PROPERTIES), "version=0\n").expect("write");
        assert!(matches!(
            read(tmp.path()),
            Err(IdentityError::Invalid { .. })
        ));
    }
}
