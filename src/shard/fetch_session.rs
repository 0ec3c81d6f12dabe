//! KIP-227 incremental fetch sessions: one [`FetchSessionCache`] per shard.
//!
//! A consumer or follower of thousands of partitions would otherwise send every partition in
//! every Fetch and get every partition back. With a session, the broker remembers the
//! partitions and their fetch positions: the client sends only what changed (new partitions,
//! moved offsets, forgotten partitions) and the response carries only the partitions with
//! something new (records, a moved high watermark or log start offset, an error).
//!
//! Kafka's rules, kept exactly (`FetchManager`, `FetchSession`, `FetchSessionCacheShard`):
//! - epoch 0 (`INITIAL`) or -1 (`FINAL`) is a *full* request: it closes the session it names;
//!   epoch 0 then tries to create a new one (answered with its id), -1 does not (id 0);
//! - any other epoch is *incremental*: the session must exist (else
//!   `FETCH_SESSION_ID_NOT_FOUND`), its epoch must be the one sent (else
//!   `INVALID_FETCH_SESSION_EPOCH`), and topic ids must be used from Fetch v13 on exactly when
//!   the session was created with them (else `FETCH_SESSION_TOPIC_ID_ERROR`); a session left
//!   with no partition is closed and the request answered sessionless;
//! - the cache holds at most `max.incremental.fetch.session.cache.slots` sessions; when full,
//!   a new session evicts the least recently used one if it has been idle for 120 s, else the
//!   least valuable evictable one (unprivileged before privileged, then fewer partitions) if
//!   the new one is worth more; a session is evictable by consumers only once older than
//!   120 s, by followers also while young if it is a consumer's; else no session (id 0).
//!
//! **Where a session lives: on the shard of the connection that created it.** Kafka shards its
//! cache too (`FetchSessionCacheShard`, each with `slots / shards` slots and its own range of
//! ids); here the shards are the cores. The session's state (which partitions, what was last
//! sent) is read and updated by the Fetch handler that builds the response, which runs on the
//! connection's shard, so keeping it there costs no cross-core message per Fetch: the
//! partitions' data still comes from their owners as for any Fetch. A connection stays on one
//! shard for its life and every client sends its fetches to a broker over one connection, so
//! a session is always found where it was made; after a reconnect that lands on another
//! shard, the client gets `FETCH_SESSION_ID_NOT_FOUND` and starts a new session with one full
//! fetch, as it does in Kafka after an eviction or a broker restart. Session ids carry their
//! shard (each shard draws from its own range, as Kafka's cache shards do), so such a request
//! is recognised and logged as what it is.
//!
//! Memory: at most `slots / shards` sessions per shard, and at most
//! [`CACHED_PARTITIONS_MAX`] partitions over all of one shard's sessions (about 100 bytes each
//! plus the topic name): a full fetch that would pass it gets no session, an incremental one
//! that would closes its session (both are answered without one, which every client handles).
//!
//! Single-threaded: lives on its shard's executor (`Rc`, `RefCell`), no locks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::error_code::ErrorCode;

/// The session id of "no session" (Kafka's `INVALID_SESSION_ID`).
pub const INVALID_SESSION_ID: i32 = 0;
/// The epoch of a full request that asks for a new session (Kafka's `INITIAL_EPOCH`).
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full request that closes its session and wants none (Kafka's `FINAL_EPOCH`).
pub const FINAL_EPOCH: i32 = -1;
/// A session unused this long may be evicted by any new one, and a session younger than this
/// is protected from eviction by size (Kafka's `MIN_INCREMENTAL_FETCH_SESSION_EVICTION_MS`).
pub const SESSION_EVICTION_MS: u64 = 120_000;
/// Most partitions held over all the sessions of one shard.
pub const CACHED_PARTITIONS_MAX: usize = 100_000;

/// The epoch after `epoch` (Kafka's `FetchMetadata.nextEpoch`): 1 after 0, wrapping from
/// `i32::MAX` to 1; a negative epoch stays final.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        FINAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

/// How a Fetch names a topic: by name up to v12, by id from v13.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    /// The topic name (Fetch v4–v12).
    Name(String),
    /// The topic id (Fetch v13+).
    Id([u8; 16]),
}

/// One partition as a Fetch names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    /// The topic.
    pub topic: TopicKey,
    /// The partition index.
    pub partition: i32,
}

/// What a Fetch asks of one partition (the request fields a session remembers).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionRequest {
    /// The partition.
    pub key: PartitionKey,
    /// First offset wanted.
    pub fetch_offset: i64,
    /// Most bytes wanted from it (`partition_max_bytes`).
    pub max_bytes: i32,
    /// The epoch of the fetcher's last fetched batch (v12+; -1: none).
    pub last_fetched_epoch: i32,
}

/// What a response says of one partition: what the session compares with what it last sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionOutcome {
    /// The partition's error code.
    pub error_code: ErrorCode,
    /// The high watermark sent.
    pub high_watermark: i64,
    /// The log start offset sent.
    pub log_start_offset: i64,
    /// Bytes of records sent.
    pub records_bytes: usize,
    /// A diverging epoch was sent (the fetcher must truncate: always sent).
    pub diverging: bool,
}

/// One partition of a session: the request as last updated, and what was last sent of it.
#[derive(Clone, Debug)]
struct CachedPartition {
    req: PartitionRequest,
    high_watermark: i64,
    log_start_offset: i64,
}

impl CachedPartition {
    /// Kafka's `maybeUpdateResponseData`: whether the response must carry this partition,
    /// remembering what it carries. Records, a changed high watermark or log start offset and
    /// errors always go out; an error resets the remembered high watermark so that the
    /// partition is sent again once the error is gone.
    fn must_respond(&mut self, out: &PartitionOutcome) -> bool {
        let mut must = out.records_bytes > 0 || out.diverging;
        if self.high_watermark != out.high_watermark {
            must = true;
            self.high_watermark = out.high_watermark;
        }
        if self.log_start_offset != out.log_start_offset {
            must = true;
            self.log_start_offset = out.log_start_offset;
        }
        if out.error_code != ErrorCode::NONE {
            self.high_watermark = -1;
            must = true;
        }
        must
    }
}

/// One incremental fetch session.
#[derive(Debug)]
pub struct FetchSession {
    id: i32,
    /// Created by a follower (replica id >= 0): may evict consumers' sessions.
    privileged: bool,
    /// Created by Fetch v13+: partitions are keyed by topic id.
    uses_topic_ids: bool,
    created: Instant,
    last_used: Instant,
    /// The epoch the next request must carry.
    epoch: i32,
    /// In fetch order; partitions that returned records move to the end (fairness).
    partitions: Vec<CachedPartition>,
    /// Position of each partition in `partitions`.
    index: HashMap<PartitionKey, usize>,
    /// The size last counted by the cache (for its partition total and eviction order).
    cached_size: usize,
    /// Evictable by a consumer's new session (older than the eviction time at last use).
    evictable_by_all: bool,
    /// Evictable by a follower's new session (a consumer's, or old enough).
    evictable_by_privileged: bool,
}

impl FetchSession {
    /// The session id.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The epoch the next incremental request must carry.
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// Number of partitions in the session.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// The session has no partition.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// The partitions in fetch order, as their requests.
    pub fn requests(&self) -> Vec<PartitionRequest> {
        self.partitions.iter().map(|p| p.req.clone()).collect()
    }

    /// Kafka's `FetchSession.update`: adds or updates the request's partitions, then removes
    /// the forgotten ones.
    fn update(&mut self, fetch: &[PartitionRequest], forget: &[PartitionKey]) {
        for req in fetch {
            match self.index.get(&req.key) {
                Some(&i) => self.partitions[i].req = req.clone(),
                None => {
                    self.index.insert(req.key.clone(), self.partitions.len());
                    self.partitions.push(CachedPartition {
                        req: req.clone(),
                        high_watermark: -1,
                        log_start_offset: -1,
                    });
                }
            }
        }
        if forget.iter().any(|k| self.index.contains_key(k)) {
            for k in forget {
                self.index.remove(k);
            }
            let index = &self.index;
            self.partitions.retain(|p| index.contains_key(&p.req.key));
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, p) in self.partitions.iter().enumerate() {
            self.index.insert(p.req.key.clone(), i);
        }
        assert_eq!(
            self.index.len(),
            self.partitions.len(),
            "a fetch session holds each partition once"
        );
    }

    /// Compares each partition's outcome with what was last sent (`outcomes` in the session's
    /// order), remembers it, and moves the partitions that returned records to the end so that
    /// the others are read first next time. Returns which partitions the response carries.
    fn respond(&mut self, outcomes: &[PartitionOutcome]) -> Vec<bool> {
        assert_eq!(
            outcomes.len(),
            self.partitions.len(),
            "one outcome per session partition, in session order"
        );
        let include: Vec<bool> = self
            .partitions
            .iter_mut()
            .zip(outcomes)
            .map(|(p, o)| p.must_respond(o))
            .collect();
        if outcomes.iter().any(|o| o.records_bytes > 0) {
            let (stay, moved): (Vec<_>, Vec<_>) = std::mem::take(&mut self.partitions)
                .into_iter()
                .zip(outcomes)
                .partition(|(_, o)| o.records_bytes == 0);
            self.partitions = stay.into_iter().chain(moved).map(|(p, _)| p).collect();
            self.reindex();
        }
        include
    }
}

/// How one Fetch request is served, decided before its read (Kafka's `FetchContext`).
#[derive(Debug)]
pub enum FetchContext {
    /// A session error: the response carries this error and no partition.
    Error(ErrorCode),
    /// No session: every requested partition is read and answered; session id 0.
    Sessionless(Vec<PartitionRequest>),
    /// A full request: every requested partition is read and answered, and a session is
    /// created for them if the cache has room.
    Full {
        /// The requested partitions, each once, in request order.
        partitions: Vec<PartitionRequest>,
        /// From a follower.
        privileged: bool,
        /// Fetch v13+.
        uses_topic_ids: bool,
    },
    /// An incremental request: every partition of the session is read, and only what changed
    /// is answered.
    Incremental {
        /// The session (held even if evicted meanwhile, as Kafka does).
        session: Rc<RefCell<FetchSession>>,
        /// The session's epoch after this request: another request that moved it meanwhile
        /// makes this one's answer `INVALID_FETCH_SESSION_EPOCH`.
        epoch: i32,
        /// The session's partitions in fetch order, as they were when the request arrived.
        partitions: Vec<PartitionRequest>,
    },
}

impl FetchContext {
    /// The partitions to read, in response order.
    pub fn partitions(&self) -> &[PartitionRequest] {
        match self {
            FetchContext::Error(_) => &[],
            FetchContext::Sessionless(p) => p,
            FetchContext::Full { partitions, .. } => partitions,
            FetchContext::Incremental { partitions, .. } => partitions,
        }
    }
}

/// The session fields of a Fetch request, and who sent it (Kafka's `FetchMetadata` and more).
#[derive(Clone, Copy, Debug)]
pub struct SessionRequest {
    /// The Fetch version (topic ids from v13).
    pub version: i16,
    /// The session named (0: none).
    pub session_id: i32,
    /// The session epoch sent: 0 or -1 full, else incremental.
    pub epoch: i32,
    /// From a follower (replica id >= 0).
    pub privileged: bool,
}

/// The session fields of a response, and which partitions it carries.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionResponse {
    /// Top-level error code.
    pub error_code: ErrorCode,
    /// The session id to send (0: none).
    pub session_id: i32,
    /// Per partition of the context, in its order: carried by the response.
    pub include: Vec<bool>,
}

/// The fetch sessions of one shard.
#[derive(Debug)]
pub struct FetchSessionCache {
    /// Most sessions held (this shard's share of `max.incremental.fetch.session.cache.slots`).
    slots: usize,
    /// This shard's session ids are in `[max(1, shard * id_range), (shard + 1) * id_range)`.
    shard: usize,
    id_range: i32,
    sessions: HashMap<i32, Rc<RefCell<FetchSession>>>,
    /// Sum of the sessions' `cached_size`.
    partitions_total: usize,
    evictions: u64,
    rng: u64,
}

impl FetchSessionCache {
    /// The cache of shard `shard` of `nr_shards`, holding its share of `slots_total` sessions
    /// (rounded up, so any non-zero total gives every shard a slot; zero disables sessions).
    /// `seed` seeds the session id generator.
    pub fn new(slots_total: usize, shard: usize, nr_shards: usize, seed: u64) -> Self {
        let nr_shards = nr_shards.max(1);
        assert!(shard < nr_shards, "shard {shard} of {nr_shards}");
        FetchSessionCache {
            slots: slots_total.div_ceil(nr_shards),
            shard,
            id_range: i32::MAX / nr_shards as i32,
            sessions: HashMap::new(),
            partitions_total: 0,
            evictions: 0,
            rng: seed | 1,
        }
    }

    /// The shard whose cache issued `session_id` (its id range), for a shard count.
    pub fn shard_of_session(session_id: i32, nr_shards: usize) -> usize {
        let range = i32::MAX / nr_shards.max(1) as i32;
        (session_id.max(0) / range) as usize
    }

    /// Number of sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// No session is held.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Partitions held over all sessions.
    pub fn partitions_total(&self) -> usize {
        self.partitions_total
    }

    /// Sessions evicted so far to make room for new ones.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The session with this id, if held.
    pub fn get(&self, session_id: i32) -> Option<Rc<RefCell<FetchSession>>> {
        self.sessions.get(&session_id).cloned()
    }

    /// Kafka's `FetchManager.newContext`: how to serve a request with these session fields
    /// (`fetch` in request order, partitions named once each; `forget` the forgotten ones).
    /// An incremental request updates its session and moves its epoch here, before the read.
    pub fn new_context(
        &mut self,
        rq: SessionRequest,
        fetch: Vec<PartitionRequest>,
        forget: &[PartitionKey],
        now: Instant,
    ) -> FetchContext {
        let SessionRequest {
            version,
            session_id,
            epoch,
            privileged,
        } = rq;
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != INVALID_SESSION_ID {
                // Any session named by a full request is closed.
                self.remove(session_id);
            }
            let fetch = dedup(fetch);
            if epoch == FINAL_EPOCH {
                return FetchContext::Sessionless(fetch);
            }
            return FetchContext::Full {
                partitions: fetch,
                privileged,
                uses_topic_ids: version >= 13,
            };
        }
        let Some(session) = self.get(session_id) else {
            let owner = Self::shard_of_session(session_id, self.nr_shards());
            tracing::debug!(
                session_id,
                shard = self.shard,
                issued_by_shard = owner,
                "fetch session not found"
            );
            return FetchContext::Error(ErrorCode::FETCH_SESSION_ID_NOT_FOUND);
        };
        let mut s = session.borrow_mut();
        if s.epoch != epoch {
            tracing::debug!(
                session_id,
                expected = s.epoch,
                got = epoch,
                "fetch session epoch mismatch"
            );
            return FetchContext::Error(ErrorCode::INVALID_FETCH_SESSION_EPOCH);
        }
        if s.uses_topic_ids != (version >= 13) {
            return FetchContext::Error(ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR);
        }
        s.update(&fetch, forget);
        let over = self.partitions_total - s.cached_size + s.len() > CACHED_PARTITIONS_MAX;
        if s.is_empty() || over {
            if over {
                tracing::info!(
                    session_id,
                    partitions = s.len(),
                    limit = CACHED_PARTITIONS_MAX,
                    "fetch session closed: the shard's sessions would hold too many partitions"
                );
            }
            drop(s);
            self.remove(session_id);
            return FetchContext::Sessionless(dedup(fetch));
        }
        drop(s);
        self.touch(&session, now);
        let mut s = session.borrow_mut();
        s.epoch = next_epoch(s.epoch);
        let partitions = s.requests();
        let epoch = s.epoch;
        drop(s);
        FetchContext::Incremental {
            session,
            epoch,
            partitions,
        }
    }

    /// Kafka's `updateAndGenerateResponseData`: the session fields of the response to a
    /// request served with `ctx`, given what was read of each of its partitions (in
    /// `ctx.partitions()` order). A full request gets a new session here if there is room.
    pub fn respond(
        &mut self,
        ctx: &FetchContext,
        outcomes: &[PartitionOutcome],
        now: Instant,
    ) -> SessionResponse {
        let all = || vec![true; outcomes.len()];
        match ctx {
            FetchContext::Error(code) => SessionResponse {
                error_code: *code,
                session_id: INVALID_SESSION_ID,
                include: Vec::new(),
            },
            FetchContext::Sessionless(_) => SessionResponse {
                error_code: ErrorCode::NONE,
                session_id: INVALID_SESSION_ID,
                include: all(),
            },
            FetchContext::Full {
                partitions,
                privileged,
                uses_topic_ids,
            } => {
                let session_id = self.maybe_create_session(
                    now,
                    *privileged,
                    *uses_topic_ids,
                    partitions,
                    outcomes,
                );
                SessionResponse {
                    error_code: ErrorCode::NONE,
                    session_id,
                    include: all(),
                }
            }
            FetchContext::Incremental { session, epoch, .. } => {
                let mut s = session.borrow_mut();
                if s.epoch != *epoch {
                    // Another request on the same session moved it meanwhile.
                    return SessionResponse {
                        error_code: ErrorCode::INVALID_FETCH_SESSION_EPOCH,
                        session_id: s.id,
                        include: Vec::new(),
                    };
                }
                SessionResponse {
                    error_code: ErrorCode::NONE,
                    session_id: s.id,
                    include: s.respond(outcomes),
                }
            }
        }
    }

    fn nr_shards(&self) -> usize {
        (i32::MAX / self.id_range) as usize
    }

    /// Kafka's `maybeCreateSession`: a new session of these partitions if a slot is free or
    /// can be freed by eviction; its id, or 0.
    fn maybe_create_session(
        &mut self,
        now: Instant,
        privileged: bool,
        uses_topic_ids: bool,
        partitions: &[PartitionRequest],
        outcomes: &[PartitionOutcome],
    ) -> i32 {
        let size = partitions.len();
        if self.slots == 0 || size > CACHED_PARTITIONS_MAX.saturating_sub(self.partitions_total) {
            return INVALID_SESSION_ID;
        }
        if self.sessions.len() >= self.slots && !self.try_evict(privileged, size, now) {
            return INVALID_SESSION_ID;
        }
        let mut s = FetchSession {
            id: self.new_session_id(),
            privileged,
            uses_topic_ids,
            created: now,
            last_used: now,
            epoch: next_epoch(INITIAL_EPOCH),
            partitions: partitions
                .iter()
                .zip(outcomes)
                .map(|(req, out)| CachedPartition {
                    req: req.clone(),
                    high_watermark: out.high_watermark,
                    log_start_offset: out.log_start_offset,
                })
                .collect(),
            index: HashMap::new(),
            cached_size: 0,
            evictable_by_all: false,
            evictable_by_privileged: false,
        };
        s.reindex();
        let id = s.id;
        let session = Rc::new(RefCell::new(s));
        self.sessions.insert(id, session.clone());
        self.touch(&session, now);
        id
    }

    /// Kafka's `tryEvict`: frees one slot for a new session of `size` partitions, if some
    /// session is stale (unused for [`SESSION_EVICTION_MS`]) or worth less than the new one.
    fn try_evict(&mut self, privileged: bool, size: usize, now: Instant) -> bool {
        let stale_after = Duration::from_millis(SESSION_EVICTION_MS);
        let lru = self
            .sessions
            .values()
            .map(|s| {
                let s = s.borrow();
                (s.last_used, s.id)
            })
            .min();
        let Some((last_used, lru_id)) = lru else {
            return false;
        };
        if now.saturating_duration_since(last_used) > stale_after {
            self.remove(lru_id);
            self.evictions += 1;
            return true;
        }
        // The least valuable evictable session: (privileged, size, id) ascending.
        let least = self
            .sessions
            .values()
            .filter_map(|s| {
                let s = s.borrow();
                let evictable = if privileged {
                    s.evictable_by_privileged
                } else {
                    s.evictable_by_all
                };
                evictable.then_some((s.privileged, s.cached_size, s.id))
            })
            .min();
        match least {
            // The new session's key is (privileged, size, 0): it wins only if strictly greater.
            Some(key) if (privileged, size, 0) >= key => {
                self.remove(key.2);
                self.evictions += 1;
                true
            }
            _ => false,
        }
    }

    /// Kafka's `touch`: records a use of the session and recounts its size.
    fn touch(&mut self, session: &Rc<RefCell<FetchSession>>, now: Instant) {
        let mut s = session.borrow_mut();
        s.last_used = now;
        self.partitions_total -= s.cached_size;
        s.cached_size = s.len();
        self.partitions_total += s.cached_size;
        let old =
            now.saturating_duration_since(s.created) > Duration::from_millis(SESSION_EVICTION_MS);
        s.evictable_by_privileged = !s.privileged || old;
        s.evictable_by_all = old;
    }

    /// Removes a session; false if there was none with this id.
    pub fn remove(&mut self, session_id: i32) -> bool {
        match self.sessions.remove(&session_id) {
            Some(s) => {
                let mut s = s.borrow_mut();
                self.partitions_total -= s.cached_size;
                s.cached_size = 0;
                true
            }
            None => false,
        }
    }

    /// A random id from this shard's range, not 0 and not in use.
    fn new_session_id(&mut self) -> i32 {
        let low = (self.shard as i64 * self.id_range as i64).max(1);
        let high = (self.shard as i64 + 1) * self.id_range as i64;
        loop {
            // splitmix64
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let id = (low + (z % (high - low) as u64) as i64) as i32;
            if id != INVALID_SESSION_ID && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The partitions named once each, in the order of their first mention; a later mention's
/// fields win (Kafka builds the request's partition map the same way).
fn dedup(fetch: Vec<PartitionRequest>) -> Vec<PartitionRequest> {
    let mut seen: HashMap<PartitionKey, usize> = HashMap::with_capacity(fetch.len());
    let mut out: Vec<PartitionRequest> = Vec::with_capacity(fetch.len());
    for req in fetch {
        match seen.get(&req.key) {
            Some(&i) => out[i] = req,
            None => {
                seen.insert(req.key.clone(), out.len());
                out.push(req);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sr(version: i16, session_id: i32, epoch: i32, privileged: bool) -> SessionRequest {
        SessionRequest {
            version,
            session_id,
            epoch,
            privileged,
        }
    }

    fn req(topic: &str, partition: i32, fetch_offset: i64) -> PartitionRequest {
        PartitionRequest {
            key: PartitionKey {
                topic: TopicKey::Name(topic.into()),
                partition,
            },
            fetch_offset,
            max_bytes: 1 << 20,
            last_fetched_epoch: -1,
        }
    }

    fn out(hw: i64, records_bytes: usize) -> PartitionOutcome {
        PartitionOutcome {
            error_code: ErrorCode::NONE,
            high_watermark: hw,
            log_start_offset: 0,
            records_bytes,
            diverging: false,
        }
    }

    /// A full request at `now` answered with `outcomes`; the new session's id.
    fn open(
        cache: &mut FetchSessionCache,
        parts: Vec<PartitionRequest>,
        privileged: bool,
        now: Instant,
    ) -> i32 {
        let n = parts.len();
        let ctx = cache.new_context(sr(12, 0, INITIAL_EPOCH, privileged), parts, &[], now);
        let outcomes = vec![out(0, 0); n];
        cache.respond(&ctx, &outcomes, now).session_id
    }

    #[test]
    fn epochs_follow_kafka() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(-1), FINAL_EPOCH);
    }

    #[test]
    fn full_then_incremental_answers_only_what_changed() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(1000, 0, 1, 7);
        let id = open(
            &mut c,
            vec![req("a", 0, 0), req("a", 1, 0), req("b", 0, 5)],
            false,
            t,
        );
        assert_ne!(id, INVALID_SESSION_ID);
        assert_eq!((c.len(), c.partitions_total()), (1, 3));

        // Epoch 1: nothing sent; a-1 got records, b-0's high watermark moved.
        let ctx = c.new_context(sr(12, id, 1, false), vec![], &[], t);
        let keys: Vec<i32> = ctx.partitions().iter().map(|p| p.key.partition).collect();
        assert_eq!(keys, vec![0, 1, 0], "every session partition is read");
        let r = c.respond(&ctx, &[out(0, 0), out(3, 100), out(9, 0)], t);
        assert_eq!(r.error_code, ErrorCode::NONE);
        assert_eq!(r.session_id, id);
        assert_eq!(r.include, vec![false, true, true]);

        // Epoch 2: a-1 moved to the end (it returned records); the client advanced it.
        let ctx = c.new_context(sr(12, id, 2, false), vec![req("a", 1, 3)], &[], t);
        let order: Vec<(TopicKey, i32, i64)> = ctx
            .partitions()
            .iter()
            .map(|p| (p.key.topic.clone(), p.key.partition, p.fetch_offset))
            .collect();
        assert_eq!(
            order,
            vec![
                (TopicKey::Name("a".into()), 0, 0),
                (TopicKey::Name("b".into()), 0, 5),
                (TopicKey::Name("a".into()), 1, 3),
            ]
        );
        let r = c.respond(&ctx, &[out(0, 0), out(9, 0), out(3, 0)], t);
        assert_eq!(r.include, vec![false, false, false], "nothing changed");
    }

    #[test]
    fn errors_always_answered_and_resent_when_gone() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(10, 0, 1, 1);
        let id = open(&mut c, vec![req("a", 0, 0)], false, t);
        let failed = PartitionOutcome {
            error_code: ErrorCode::NOT_LEADER_OR_FOLLOWER,
            high_watermark: -1,
            log_start_offset: -1,
            records_bytes: 0,
            diverging: false,
        };
        for epoch in 1..=2 {
            let ctx = c.new_context(sr(12, id, epoch, false), vec![], &[], t);
            assert_eq!(c.respond(&ctx, &[failed], t).include, vec![true]);
        }
        let ctx = c.new_context(sr(12, id, 3, false), vec![], &[], t);
        assert_eq!(
            c.respond(&ctx, &[out(0, 0)], t).include,
            vec![true],
            "sent again once the error is gone"
        );
    }

    #[test]
    fn session_errors() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(10, 0, 1, 3);
        let ctx = c.new_context(sr(12, 12345, 1, false), vec![], &[], t);
        assert!(matches!(
            ctx,
            FetchContext::Error(ErrorCode::FETCH_SESSION_ID_NOT_FOUND)
        ));
        assert_eq!(
            c.respond(&ctx, &[], t),
            SessionResponse {
                error_code: ErrorCode::FETCH_SESSION_ID_NOT_FOUND,
                session_id: 0,
                include: vec![],
            }
        );
        let id = open(&mut c, vec![req("a", 0, 0)], false, t);
        let ctx = c.new_context(sr(12, id, 5, false), vec![], &[], t);
        assert!(matches!(
            ctx,
            FetchContext::Error(ErrorCode::INVALID_FETCH_SESSION_EPOCH)
        ));
        let ctx = c.new_context(sr(13, id, 1, false), vec![], &[], t);
        assert!(matches!(
            ctx,
            FetchContext::Error(ErrorCode::FETCH_SESSION_TOPIC_ID_ERROR)
        ));
        // An error does not move the epoch: 1 is still the one expected.
        let ctx = c.new_context(sr(12, id, 1, false), vec![], &[], t);
        assert!(matches!(ctx, FetchContext::Incremental { epoch: 2, .. }));
    }

    #[test]
    fn concurrent_use_of_one_session_fails_the_slower_request() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(10, 0, 1, 3);
        let id = open(&mut c, vec![req("a", 0, 0)], false, t);
        let first = c.new_context(sr(12, id, 1, false), vec![], &[], t);
        let second = c.new_context(sr(12, id, 2, false), vec![], &[], t);
        let r = c.respond(&first, &[out(0, 0)], t);
        assert_eq!(r.error_code, ErrorCode::INVALID_FETCH_SESSION_EPOCH);
        assert_eq!(r.session_id, id);
        assert!(r.include.is_empty());
        assert_eq!(
            c.respond(&second, &[out(0, 0)], t).error_code,
            ErrorCode::NONE
        );
    }

    #[test]
    fn full_requests_close_sessions_and_final_epoch_opens_none() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(10, 0, 1, 3);
        let id = open(&mut c, vec![req("a", 0, 0)], false, t);
        let ctx = c.new_context(sr(12, id, FINAL_EPOCH, false), vec![req("a", 0, 0)], &[], t);
        assert!(matches!(ctx, FetchContext::Sessionless(_)));
        assert_eq!(c.respond(&ctx, &[out(0, 0)], t).session_id, 0);
        assert!(c.is_empty(), "the named session is closed");
        let id = open(&mut c, vec![req("a", 0, 0)], false, t);
        let ctx = c.new_context(
            sr(12, id, INITIAL_EPOCH, false),
            vec![req("a", 0, 0)],
            &[],
            t,
        );
        let new = c.respond(&ctx, &[out(0, 0)], t).session_id;
        assert_ne!(new, id);
        assert_eq!(c.len(), 1, "the old session is gone, the new one in");
    }

    #[test]
    fn forgetting_every_partition_closes_the_session() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(10, 0, 1, 3);
        let id = open(&mut c, vec![req("a", 0, 0), req("a", 1, 0)], false, t);
        let ctx = c.new_context(sr(12, id, 1, false), vec![], &[req("a", 0, 0).key], t);
        assert_eq!(ctx.partitions().len(), 1);
        assert_eq!(c.partitions_total(), 1);
        let _ = c.respond(&ctx, &[out(0, 0)], t);
        let ctx = c.new_context(sr(12, id, 2, false), vec![], &[req("a", 1, 0).key], t);
        assert!(matches!(ctx, FetchContext::Sessionless(ref p) if p.is_empty()));
        assert!(c.is_empty());
        assert_eq!(c.partitions_total(), 0);
    }

    #[test]
    fn eviction_prefers_stale_then_small_and_spares_the_young() {
        let t = Instant::now();
        let old = t + Duration::from_millis(SESSION_EVICTION_MS + 1);
        let mut c = FetchSessionCache::new(2, 0, 1, 3);
        let small = open(&mut c, vec![req("a", 0, 0)], false, t);
        let big = open(&mut c, vec![req("b", 0, 0), req("b", 1, 0)], false, t);
        // Full, and both sessions are young: a consumer's new session gets none.
        assert_eq!(open(&mut c, vec![req("c", 0, 0); 1], false, t), 0);
        // A follower may evict a consumer's young session, the smallest first.
        let f = open(&mut c, vec![req("f", 0, 0)], true, t);
        assert_ne!(f, 0);
        assert!(c.get(small).is_none() && c.get(big).is_some());
        assert_eq!(c.evictions(), 1);
        // Keep the follower's session in use; the consumer's goes stale.
        let ctx = c.new_context(sr(12, f, 1, true), vec![], &[], old);
        let _ = c.respond(&ctx, &[out(0, 0)], old);
        let late = open(&mut c, vec![req("d", 0, 0)], false, old);
        assert_ne!(late, 0, "a stale session is evicted by anyone");
        assert!(c.get(big).is_none() && c.get(f).is_some());
        // Neither is stale. A consumer may evict only sessions older than the eviction time,
        // and by value, which a follower's session outranks: no session.
        let three = || vec![req("e", 0, 0), req("e", 1, 0), req("e", 2, 0)];
        assert_eq!(open(&mut c, three(), false, old), 0);
        // A follower may evict the young consumer session `late`, being worth more.
        let f2 = open(&mut c, three(), true, old);
        assert_ne!(f2, 0);
        assert!(c.get(late).is_none() && c.get(f).is_some());
        assert_eq!(c.evictions(), 3);
    }

    #[test]
    fn session_ids_are_in_the_shards_range() {
        let t = Instant::now();
        for shard in 0..4 {
            let mut c = FetchSessionCache::new(100, shard, 4, shard as u64);
            for i in 0..20 {
                let id = open(&mut c, vec![req("a", i, 0)], false, t);
                assert!(id > 0);
                assert_eq!(FetchSessionCache::shard_of_session(id, 4), shard);
            }
            assert_eq!(c.len(), 20);
        }
    }

    #[test]
    fn slots_zero_disables_sessions_and_partition_cap_holds() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(0, 0, 1, 3);
        assert_eq!(open(&mut c, vec![req("a", 0, 0)], false, t), 0);
        let mut c = FetchSessionCache::new(10, 0, 1, 3);
        let many: Vec<PartitionRequest> = (0..CACHED_PARTITIONS_MAX as i32 + 1)
            .map(|p| req("a", p, 0))
            .collect();
        assert_eq!(
            open(&mut c, many, false, t),
            0,
            "too many partitions: no session"
        );
        assert_eq!(c.partitions_total(), 0);
    }

    #[test]
    fn duplicates_in_a_full_request_are_one_partition() {
        let t = Instant::now();
        let mut c = FetchSessionCache::new(10, 0, 1, 3);
        let ctx = c.new_context(
            sr(12, 0, 0, false),
            vec![req("a", 0, 1), req("a", 0, 2)],
            &[],
            t,
        );
        assert_eq!(ctx.partitions(), &[req("a", 0, 2)]);
    }
}
