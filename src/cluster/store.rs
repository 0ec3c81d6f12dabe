//! The quorum's durable state: the Raft log, the vote and the snapshot, for openraft.
//!
//! Files in the quorum dir (`DATA_DIR/__cluster_metadata-0/`, Kafka's name):
//! - `log`: frames `u32 length, u32 CRC32C, JSON entry`, appended and `fdatasync`ed before
//!   openraft is told the append is durable. On open, the first torn or corrupt frame and
//!   everything after it is cut off (never acknowledged, or never durable).
//! - `vote`, `purged`, `snapshot`: one frame each, replaced durably (temp file, fsync, rename,
//!   directory fsync).
//!
//! A purge (after a snapshot) first records the purged log id, then drops the entries from
//! memory; once the dead prefix of `log` is large, the file is rewritten without it. The image
//! is not stored apart from snapshots: on open it is the snapshot's, and openraft re-applies
//! the committed entries after it.
//!
//! Both stores are driven only by the quorum thread; the mutex makes them `Send + Sync` for
//! openraft, it is never contended.

// openraft's traits fix the error type (`StorageError`, 200+ bytes); our helpers return it too.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership,
    Vote,
};
use serde::{Deserialize, Serialize};

use super::image::{ClusterImage, MetadataRecord};

openraft::declare_raft_types!(
    /// The quorum's openraft types: each entry carries one batch of metadata records.
    pub TypeConfig:
        D = Proposal,
        R = ProposalReply,
);

/// openraft's node id (a Kafka `node.id`, never negative for a voter).
pub type RaftNodeId = u64;

/// What the active controller proposes: records applied together at one log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The records, applied all or none.
    pub records: Vec<MetadataRecord>,
}

/// The outcome of applying one proposal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalReply {
    /// The log index it was applied at.
    pub index: u64,
    /// Why it did not apply (the image is unchanged), if it did not.
    pub error: Option<String>,
}

/// Largest frame accepted when reading the log or a snapshot back (a bigger length is
/// corruption, not data).
pub const STORE_FRAME_BYTES_MAX: u32 = 256 << 20;

/// The dead prefix of `log` is rewritten away once it exceeds this and half the file.
pub const LOG_COMPACT_BYTES_MIN: u64 = 1 << 20;

type StorageResult<T> = Result<T, StorageError<RaftNodeId>>;

fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one frame at the start of `bytes`: `Ok(Some((body, frame length)))`, `Ok(None)` at a
/// clean end, `Err(why)` for a torn or corrupt frame.
fn decode_frame(bytes: &[u8]) -> Result<Option<(&[u8], usize)>, String> {
    if bytes.is_empty() {
        return Ok(None);
    }
    if bytes.len() < 8 {
        return Err("torn frame header".into());
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > STORE_FRAME_BYTES_MAX {
        return Err(format!("frame length {len} is too large"));
    }
    let end = 8 + len as usize;
    let body = bytes.get(8..end).ok_or("torn frame body")?;
    if crc32c::crc32c(body) != crc {
        return Err("frame checksum mismatch".into());
    }
    Ok(Some((body, end)))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with one frame of `body`, durably.
fn write_file_durably(dir: &Path, name: &str, body: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&encode_frame(body))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Reads a file written by [`write_file_durably`]; `None` when absent.
fn read_file(dir: &Path, name: &str) -> std::io::Result<Option<Vec<u8>>> {
    let bytes = match std::fs::read(dir.join(name)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match decode_frame(&bytes) {
        Ok(Some((body, _))) => Ok(Some(body.to_vec())),
        Ok(None) => Ok(None),
        Err(why) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {why}", dir.join(name).display()),
        )),
    }
}

fn json<T: Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(std::io::Error::other)
}

fn from_json<T: for<'a> Deserialize<'a>>(b: &[u8]) -> std::io::Result<T> {
    serde_json::from_slice(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

struct LogInner {
    dir: PathBuf,
    file: File,
    /// Length of the valid frames in `file`.
    end: u64,
    /// Live entries by index, with the file offset of their frame.
    entries: BTreeMap<u64, (u64, Entry<TypeConfig>)>,
    vote: Option<Vote<RaftNodeId>>,
    last_purged: Option<LogId<RaftNodeId>>,
    compact_bytes_min: u64,
}

/// The Raft log and vote on disk (see the module doc).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

fn poisoned() -> StorageError<RaftNodeId> {
    StorageIOError::write_logs(&std::io::Error::other("log store lock poisoned")).into()
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting off a torn or corrupt tail.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        Self::open_with(dir, LOG_COMPACT_BYTES_MIN)
    }

    /// [`LogStore::open`] with the compaction threshold given (tests use a small one).
    pub fn open_with(dir: &Path, compact_bytes_min: u64) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir)?;
        let _ = std::fs::remove_file(dir.join("log.tmp")); // an interrupted rewrite
        let vote = read_file(dir, "vote")?.map(|b| from_json(&b)).transpose()?;
        let last_purged: Option<LogId<RaftNodeId>> = read_file(dir, "purged")?
            .map(|b| from_json(&b))
            .transpose()?;
        let path = dir.join("log");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut entries = BTreeMap::new();
        let mut pos = 0usize;
        let mut prev: Option<u64> = last_purged.map(|l| l.index);
        loop {
            let frame = match decode_frame(&bytes[pos..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(why) => {
                    tracing::warn!(path = %path.display(), at = pos, %why, "quorum log: cutting off a torn or corrupt tail");
                    break;
                }
            };
            let entry: Entry<TypeConfig> = match from_json(frame.0) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(path = %path.display(), at = pos, error = %e, "quorum log: undecodable entry; cutting off from here");
                    break;
                }
            };
            let index = entry.log_id.index;
            let purged = last_purged.is_some_and(|p| index <= p.index);
            if !purged {
                if prev.is_some_and(|p| index != p + 1) {
                    tracing::warn!(path = %path.display(), index, ?prev, "quorum log: entries not consecutive; cutting off from here");
                    break;
                }
                entries.insert(index, (pos as u64, entry));
                prev = Some(index);
            }
            pos += frame.1;
        }
        if pos < bytes.len() {
            file.set_len(pos as u64)?;
            file.sync_all()?;
        }
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                end: pos as u64,
                entries,
                vote,
                last_purged,
                compact_bytes_min,
            })),
        })
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, LogInner>> {
        self.inner.lock().map_err(|_| poisoned())
    }

    /// Size of the `log` file (for tests of compaction).
    pub fn file_bytes(&self) -> u64 {
        self.inner.lock().map_or(0, |i| i.end)
    }
}

impl LogInner {
    fn append(&mut self, entries: Vec<Entry<TypeConfig>>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in &entries {
            offsets.push(self.end + buf.len() as u64);
            buf.extend_from_slice(&encode_frame(&json(e)?));
        }
        self.file.seek(SeekFrom::Start(self.end))?;
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.end += buf.len() as u64;
        for (e, off) in entries.into_iter().zip(offsets) {
            if let Some((last, _)) = self.entries.last_key_value() {
                assert_eq!(
                    e.log_id.index,
                    last + 1,
                    "log entries are appended in order"
                );
            }
            self.entries.insert(e.log_id.index, (off, e));
        }
        Ok(())
    }

    fn truncate(&mut self, index: u64) -> std::io::Result<()> {
        let Some((&first, &(off, _))) = self.entries.range(index..).next() else {
            return Ok(());
        };
        debug_assert_eq!(first, index);
        self.file.set_len(off)?;
        self.file.sync_all()?;
        self.end = off;
        self.entries.split_off(&index);
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<RaftNodeId>) -> std::io::Result<()> {
        write_file_durably(&self.dir, "purged", &json(&log_id)?)?;
        self.last_purged = Some(log_id);
        self.entries = self.entries.split_off(&(log_id.index + 1));
        let dead = self
            .entries
            .values()
            .next()
            .map_or(self.end, |(off, _)| *off);
        if dead > self.compact_bytes_min && dead * 2 > self.end {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Rewrites `log` with only the live entries (temp file, fsync, rename, dir fsync).
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join("log.tmp");
        let mut buf = Vec::new();
        let mut offsets = Vec::new();
        for (index, (_, e)) in &self.entries {
            offsets.push((*index, buf.len() as u64));
            buf.extend_from_slice(&encode_frame(&json(e)?));
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join("log"))?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.dir.join("log"))?;
        self.end = buf.len() as u64;
        for (index, off) in offsets {
            if let Some(slot) = self.entries.get_mut(&index) {
                slot.0 = off;
            }
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let inner = self.lock()?;
        Ok(inner
            .entries
            .range(range)
            .map(|(_, (_, e))| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.lock()?;
        let last = inner
            .entries
            .values()
            .next_back()
            .map(|(_, e)| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftNodeId>) -> StorageResult<()> {
        let mut inner = self.lock()?;
        json(vote)
            .and_then(|b| write_file_durably(&inner.dir, "vote", &b))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<RaftNodeId>>> {
        Ok(self.lock()?.vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock()?;
        let result = inner.append(entries.into_iter().collect());
        let err = result.as_ref().err().map(StorageIOError::write_logs);
        callback.log_io_completed(result);
        match err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        self.lock()?
            .truncate(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<RaftNodeId>) -> StorageResult<()> {
        self.lock()?
            .purge(log_id)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// What a snapshot holds: the image and where in the log it stands.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    meta: SnapshotMeta<RaftNodeId, BasicNode>,
    image: ClusterImage,
}

struct SmInner {
    dir: PathBuf,
    image: ClusterImage,
    last_applied: Option<LogId<RaftNodeId>>,
    membership: StoredMembership<RaftNodeId, BasicNode>,
    /// The current snapshot: its meta and its bytes (a JSON [`SnapshotBody`]).
    snapshot: Option<(SnapshotMeta<RaftNodeId, BasicNode>, Vec<u8>)>,
    publish: tokio::sync::watch::Sender<Arc<ClusterImage>>,
}

/// The state machine: the [`ClusterImage`], published to watchers after every apply.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
}

impl StateMachineStore {
    /// Opens the state machine in `dir`: the snapshot's image, or an empty one.
    pub fn open(dir: &Path) -> std::io::Result<StateMachineStore> {
        std::fs::create_dir_all(dir)?;
        let (image, last_applied, membership, snapshot) = match read_file(dir, "snapshot")? {
            Some(bytes) => {
                let body: SnapshotBody = from_json(&bytes)?;
                (
                    body.image,
                    body.meta.last_log_id,
                    body.meta.last_membership.clone(),
                    Some((body.meta, bytes)),
                )
            }
            None => (
                ClusterImage::default(),
                None,
                StoredMembership::default(),
                None,
            ),
        };
        let (publish, _) = tokio::sync::watch::channel(Arc::new(image.clone()));
        Ok(StateMachineStore {
            inner: Arc::new(Mutex::new(SmInner {
                dir: dir.to_path_buf(),
                image,
                last_applied,
                membership,
                snapshot,
                publish,
            })),
        })
    }

    fn lock(&self) -> StorageResult<MutexGuard<'_, SmInner>> {
        self.inner.lock().map_err(|_| {
            StorageIOError::write_state_machine(&std::io::Error::other("poisoned")).into()
        })
    }

    /// A receiver of every new image (the current one first).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<ClusterImage>> {
        match self.inner.lock() {
            Ok(i) => i.publish.subscribe(),
            Err(p) => p.into_inner().publish.subscribe(),
        }
    }
}

impl SmInner {
    fn persist_snapshot(
        &mut self,
        meta: SnapshotMeta<RaftNodeId, BasicNode>,
    ) -> std::io::Result<Vec<u8>> {
        let body = json(&SnapshotBody {
            meta: meta.clone(),
            image: self.image.clone(),
        })?;
        write_file_durably(&self.dir, "snapshot", &body)?;
        self.snapshot = Some((meta, body.clone()));
        Ok(body)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let mut inner = self.lock()?;
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: inner.last_applied,
            last_membership: inner.membership.clone(),
            snapshot_id,
        };
        let data = inner
            .persist_snapshot(meta.clone())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(
        Option<LogId<RaftNodeId>>,
        StoredMembership<RaftNodeId, BasicNode>,
    )> {
        let inner = self.lock()?;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ProposalReply>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut inner = self.lock()?;
        let mut replies = Vec::new();
        let mut changed = false;
        for entry in entries {
            let index = entry.log_id.index;
            inner.last_applied = Some(entry.log_id);
            let mut reply = ProposalReply { index, error: None };
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(p) => match inner.image.apply_batch(index, &p.records) {
                    Ok(()) => changed = true,
                    Err(e) => {
                        tracing::warn!(error = %e, "metadata records refused by the state machine");
                        reply.error = Some(e.to_string());
                    }
                },
                EntryPayload::Membership(m) => {
                    inner.membership = StoredMembership::new(Some(entry.log_id), m);
                }
            }
            replies.push(reply);
        }
        if changed {
            let image = Arc::new(inner.image.clone());
            inner.publish.send_replace(image);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftNodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let bytes = snapshot.into_inner();
        let body: SnapshotBody = from_json(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut inner = self.lock()?;
        inner.image = body.image;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner
            .persist_snapshot(meta.clone())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let image = Arc::new(inner.image.clone());
        inner.publish.send_replace(image);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let inner = self.lock()?;
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, RaftLogId};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachineStore)> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write_logs(&e))?;
            let log =
                LogStore::open_with(dir.path(), 64).map_err(|e| StorageIOError::write_logs(&e))?;
            let sm =
                StateMachineStore::open(dir.path()).map_err(|e| StorageIOError::write_logs(&e))?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for log and state-machine storage.
    #[test]
    fn openraft_storage_suite() {
        Suite::test_all(Builder).expect("suite passes");
    }

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Proposal {
                records: vec![MetadataRecord::FenceBroker { id: index as i32 }],
            }),
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    fn indexes(log: &mut LogStore) -> Vec<u64> {
        block_on(log.try_get_log_entries(..))
            .expect("read")
            .iter()
            .map(|e| e.get_log_id().index)
            .collect()
    }

    fn append(log: &LogStore, entries: Vec<Entry<TypeConfig>>) {
        log.inner
            .lock()
            .expect("lock")
            .append(entries)
            .expect("append");
    }

    #[test]
    fn recovery_cuts_a_torn_tail_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = LogStore::open(dir.path()).expect("open");
        append(&log, (1..=5).map(|i| entry(1, i)).collect());
        let full = log.file_bytes();
        drop(log);
        // Tear the last frame: its last 3 bytes never reached the disk.
        let path = dir.path().join("log");
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.set_len(full - 3).expect("tear");
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut log), vec![1, 2, 3, 4]);
        assert!(
            std::fs::metadata(&path).expect("stat").len() < full - 3,
            "tail cut off"
        );
        // A flipped bit in entry 3 cuts 3 and 4.
        drop(log);
        let mut bytes = std::fs::read(&path).expect("read");
        let third = {
            let mut pos = 0;
            for _ in 0..2 {
                pos += decode_frame(&bytes[pos..]).expect("ok").expect("frame").1;
            }
            pos
        };
        bytes[third + 12] ^= 0x20;
        std::fs::write(&path, &bytes).expect("write");
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut log), vec![1, 2]);
        // Appending after recovery continues the log.
        append(&log, vec![entry(2, 3)]);
        drop(log);
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut log), vec![1, 2, 3]);
    }

    #[test]
    fn truncate_purge_and_compaction_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogStore::open_with(dir.path(), 256).expect("open");
        append(&log, (1..=20).map(|i| entry(1, i)).collect());
        block_on(log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 18))).expect("truncate");
        let before = log.file_bytes();
        block_on(log.purge(LogId::new(CommittedLeaderId::new(1, 1), 15))).expect("purge");
        assert!(log.file_bytes() < before / 2, "dead prefix rewritten away");
        let vote = Vote::new(3, 2);
        block_on(log.save_vote(&vote)).expect("vote");
        drop(log);
        let mut log = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(indexes(&mut log), vec![16, 17]);
        let state = block_on(log.get_log_state()).expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(15));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(17));
        assert_eq!(block_on(log.read_vote()).expect("vote"), Some(vote));
    }

    #[test]
    fn state_machine_applies_publishes_and_restores_from_its_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sm = StateMachineStore::open(dir.path()).expect("open");
        let mut rx = sm.subscribe();
        let reg = MetadataRecord::RegisterBroker {
            id: 1,
            incarnation: [1; 16],
            endpoints: Vec::new(),
            rack: None,
        };
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Proposal {
                records: vec![reg, MetadataRecord::UnfenceBroker { id: 1 }],
            }),
        };
        let bad = entry(1, 2); // fences broker 2, which is not registered
        let replies = block_on(sm.apply(vec![e, bad])).expect("apply");
        assert_eq!(replies[0].error, None);
        assert!(replies[1].error.is_some());
        assert!(rx.has_changed().expect("open"));
        assert_eq!(rx.borrow_and_update().live_brokers().count(), 1);
        block_on(sm.build_snapshot()).expect("snapshot");
        drop(sm);
        let mut sm = StateMachineStore::open(dir.path()).expect("reopen");
        let (applied, _) = block_on(sm.applied_state()).expect("state");
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert_eq!(sm.subscribe().borrow().brokers.len(), 1);
    }
}
