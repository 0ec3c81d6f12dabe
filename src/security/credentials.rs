//! SCRAM credentials: one store for the whole broker (every shard reads it while
//! authenticating; AlterUserScramCredentials on any shard changes it), kept durably in
//! `DATA_DIR/meta/scram-credentials.json` through the `io` seam's atomic durable write.
//!
//! Why a file and not the metadata log: the one-node broker keeps its metadata in a snapshot
//! file, not a replicated log, and a credential change is rare and small; when the cluster's
//! metadata log serves brokers, the store's load/save are the two places to move onto it.
//!
//! The file holds, per user and mechanism, the salt, StoredKey, ServerKey and iteration count
//! (never a password). A change answers its request only after the file is durable; concurrent
//! changes from several shards are written newest-last (a generation number), so the file
//! never goes back to an older state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::durable::DurableFile;
use super::scram::ScramMechanism;

/// The stored form of one user's credential for one mechanism (RFC 5802).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScramCredential {
    /// The salt.
    pub salt: Vec<u8>,
    /// H(HMAC(SaltedPassword, "Client Key")).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: i32,
}

#[derive(Default)]
struct Inner {
    map: BTreeMap<(String, ScramMechanism), ScramCredential>,
    generation: u64,
}

/// Every user's SCRAM credentials; shared (`Arc`) by all shards.
pub struct CredentialStore {
    inner: RwLock<Inner>,
    /// The file.
    file: DurableFile,
}

impl std::fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys: they are secrets.
        f.debug_struct("CredentialStore")
            .field("file", &self.file.name())
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileEntry {
    user: String,
    mechanism: String,
    salt: String,
    stored_key: String,
    server_key: String,
    iterations: i32,
}

/// The credential file's path under a data dir.
pub fn file_path(data_dir: &Path) -> PathBuf {
    data_dir.join("meta").join("scram-credentials.json")
}

impl CredentialStore {
    /// An empty store that is never written (tests).
    pub fn in_memory() -> CredentialStore {
        CredentialStore {
            inner: RwLock::new(Inner::default()),
            file: DurableFile::new(None),
        }
    }

    /// Loads the store of `data_dir` (empty if the file does not exist yet); a damaged file
    /// is an error naming it.
    pub fn open(data_dir: &Path) -> Result<CredentialStore, String> {
        let path = file_path(data_dir);
        let file = DurableFile::new(Some(path.clone()));
        let bytes = file.read()?;
        let mut map = BTreeMap::new();
        if let Some(bytes) = bytes {
            let entries: Vec<FileEntry> =
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
            for e in entries {
                let bad = |what: &str| format!("{}: user {}: bad {what}", path.display(), e.user);
                let m = ScramMechanism::from_name(&e.mechanism).ok_or_else(|| bad("mechanism"))?;
                let cred = ScramCredential {
                    salt: B64.decode(&e.salt).map_err(|_| bad("salt"))?,
                    stored_key: B64.decode(&e.stored_key).map_err(|_| bad("stored_key"))?,
                    server_key: B64.decode(&e.server_key).map_err(|_| bad("server_key"))?,
                    iterations: e.iterations,
                };
                map.insert((e.user.clone(), m), cred);
            }
        }
        Ok(CredentialStore {
            inner: RwLock::new(Inner { map, generation: 0 }),
            file,
        })
    }

    /// The credential of `user` for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.map.get(&(user.to_string(), mechanism)).cloned()
    }

    /// Sets (adds or replaces) a credential in memory; [`CredentialStore::save`] makes it
    /// durable.
    pub fn put(&self, user: &str, mechanism: ScramMechanism, cred: ScramCredential) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        inner.map.insert((user.to_string(), mechanism), cred);
        inner.generation += 1;
    }

    /// Removes a credential in memory; false if there was none.
    pub fn remove(&self, user: &str, mechanism: ScramMechanism) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let had = inner.map.remove(&(user.to_string(), mechanism)).is_some();
        if had {
            inner.generation += 1;
        }
        had
    }

    /// Every user with their mechanisms and iteration counts (DescribeUserScramCredentials).
    pub fn describe(&self) -> BTreeMap<String, Vec<(ScramMechanism, i32)>> {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, Vec<(ScramMechanism, i32)>> = BTreeMap::new();
        for ((user, m), c) in &inner.map {
            out.entry(user.clone())
                .or_default()
                .push((*m, c.iterations));
        }
        out
    }

    fn serialize(map: &BTreeMap<(String, ScramMechanism), ScramCredential>) -> Vec<u8> {
        let entries: Vec<FileEntry> = map
            .iter()
            .map(|((user, m), c)| FileEntry {
                user: user.clone(),
                mechanism: m.name().to_string(),
                salt: B64.encode(&c.salt),
                stored_key: B64.encode(&c.stored_key),
                server_key: B64.encode(&c.server_key),
                iterations: c.iterations,
            })
            .collect();
        // A Vec of plain structs always serializes.
        serde_json::to_vec_pretty(&entries).unwrap_or_default()
    }

    /// Writes the current state durably (temp file, fsync, rename, directory fsync) on
    /// glommio's blocking pool, so the shard keeps serving. A state older than one already
    /// written is not written.
    pub async fn save(&self) -> std::io::Result<()> {
        let (generation, data) = {
            let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
            (inner.generation, Self::serialize(&inner.map))
        };
        self.file.save(generation, data).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trip_and_damage_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = CredentialStore::open(dir.path()).expect("empty");
        assert!(store.describe().is_empty());
        let cred = ScramCredential {
            salt: vec![1, 2, 3],
            stored_key: vec![4; 32],
            server_key: vec![5; 32],
            iterations: 8192,
        };
        store.put("alice", ScramMechanism::Sha512, cred.clone());
        let data = {
            let inner = store.inner.read().expect("lock");
            CredentialStore::serialize(&inner.map)
        };
        let path = file_path(dir.path());
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, data).expect("write");
        let again = CredentialStore::open(dir.path()).expect("loads");
        assert_eq!(again.get("alice", ScramMechanism::Sha512), Some(cred));
        assert_eq!(again.get("alice", ScramMechanism::Sha256), None);
        assert!(again.remove("alice", ScramMechanism::Sha512));
        assert!(!again.remove("alice", ScramMechanism::Sha512));
        std::fs::write(&path, b"{not json").expect("write");
        let e = CredentialStore::open(dir.path()).expect_err("damaged");
        assert!(e.contains("scram-credentials.json"), "{e}");
    }
}
