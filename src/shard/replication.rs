//! Partition replication on a broker of a cluster (issue 18, `docs/design/cluster.md`,
//! "Replication"): Kafka's model. Followers fetch from the leader; the leader records each
//! follower's fetch offset and moves the high watermark over the ISR.
//!
//! Everything here runs on the shard that owns the partition:
//! - **Leader side** ([`Replication::follower_fetched`]): a Fetch carrying a follower's
//!   `replica_id` records its fetch offset. A follower only fetches on once what it appended
//!   is fsynced, so that offset is on its disk. The partition's replica floor (the storage's
//!   bound on the high watermark) is the smallest fetch offset of the other ISR members; the
//!   high watermark is `min(durable log end here, floor)` and never moves back
//!   (`ShardStorage::set_replica_floor`). A follower not heard from since this broker became
//!   leader counts as nothing fetched: the high watermark waits for it (or for the
//!   controller to take it out of the ISR).
//! - **Follower side** ([`run_fetcher`]): one fetcher task per (shard, leader broker), as
//!   Kafka's replica fetcher threads, carrying every partition of this shard led there. Each
//!   round sends one sessionless Fetch v12 (`replica_id`, `current_leader_epoch`,
//!   `last_fetched_epoch`, from the log end) to the leader over the inter-broker channel,
//!   truncates a partition whose log diverges (`diverging_epoch`, KIP-320/595), appends the
//!   batches as the leader stored them (`append_replica`), waits for their fsync, and takes
//!   the leader's high watermark as its floor. Fetchers start and stop as images change roles
//!   ([`Replication::adopt`]).
//!
//! A partition with one replica (and every partition on one node) has no floor: its high
//! watermark is its log end, as before replication.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{ClusterView, Shard};
use crate::cluster::control::AlterPartitionRequest;
use crate::cluster::image::{NodeId, PartitionState};
use crate::cluster::transport::{ControllerReply, RpcBody};
use crate::error_code::ErrorCode;
use crate::storage::{split_batches, ShardStorage, StorageError};

/// The Fetch version followers send: v12 has `last_fetched_epoch` and `diverging_epoch`
/// and still names topics (v13+ uses topic ids).
pub const REPLICA_FETCH_VERSION: i16 = 12;

/// Longest a follower's fetch waits at the leader for new data (Kafka's
/// `replica.fetch.wait.max.ms` default).
pub const REPLICA_FETCH_WAIT_MAX_MS: i32 = 500;

/// Most bytes one follower fetch takes, in all (Kafka's `replica.fetch.response.max.bytes`).
pub const REPLICA_FETCH_RESPONSE_BYTES_MAX: i32 = 10 << 20;

/// Most bytes one follower fetch takes from one partition (Kafka's `replica.fetch.max.bytes`).
pub const REPLICA_FETCH_PARTITION_BYTES_MAX: i32 = 1 << 20;

/// Pause after a failed fetch round or a partition error before the next round (Kafka's
/// `replica.fetch.backoff.ms` is 1000; shorter here, so a failover resumes replication
/// quickly).
pub const REPLICA_FETCH_BACKOFF_MS: u64 = 100;

/// One led partition: the leader epoch it is led in and, per follower in that epoch, its
/// last fetch offset, when it was last caught up to the log end, and its last fetch.
///
/// The leader's replication decisions live here as plain methods (no I/O, no executor, time
/// passed in), so that the shard and the deterministic simulator (`crate::sim`) run the same
/// rules: [`Led::record_fetch`], [`Led::floor`], [`Led::wanted_isr`].
pub(crate) struct Led {
    pub(crate) epoch: i32,
    fetch_offsets: BTreeMap<NodeId, i64>,
    /// When this broker started leading in `epoch`: a follower never caught up since counts
    /// as caught up then (it gets `replica.lag.time.max.ms` from the start).
    since: Instant,
    caught_up: BTreeMap<NodeId, Instant>,
    /// (time, this log's end then) of each follower's last fetch.
    last_fetch: BTreeMap<NodeId, (Instant, i64)>,
    /// An AlterPartition for this partition is in flight.
    pub(crate) altering: bool,
}

impl Led {
    /// A leadership starting at `now` in leader epoch `epoch`: no follower heard from yet.
    pub(crate) fn new(epoch: i32, now: Instant) -> Led {
        Led {
            epoch,
            fetch_offsets: BTreeMap::new(),
            since: now,
            caught_up: BTreeMap::new(),
            last_fetch: BTreeMap::new(),
            altering: false,
        }
    }

    /// Records a follower's fetch at `fetch_offset` (what it has on disk) while this log ends
    /// at `log_end`. Kafka's rule: caught up now if at the log end; else caught up at the
    /// previous fetch if this one reaches the log end of then.
    pub(crate) fn record_fetch(
        &mut self,
        replica: NodeId,
        fetch_offset: i64,
        log_end: i64,
        now: Instant,
    ) {
        self.fetch_offsets.insert(replica, fetch_offset);
        if fetch_offset >= log_end {
            self.caught_up.insert(replica, now);
        } else if let Some(&(then, end_then)) = self.last_fetch.get(&replica) {
            if fetch_offset >= end_then {
                let at = self.caught_up.entry(replica).or_insert(then);
                *at = (*at).max(then);
            }
        }
        self.last_fetch.insert(replica, (now, log_end));
    }

    /// The replica floor (the storage's bound on the high watermark): the smallest fetch
    /// offset of the ISR members other than `me` (`i64::MIN` for one not heard from),
    /// `i64::MAX` when `me` is alone.
    pub(crate) fn floor(&self, me: NodeId, isr: &[NodeId]) -> i64 {
        isr.iter()
            .filter(|&&r| r != me)
            .map(|r| self.fetch_offsets.get(r).copied().unwrap_or(i64::MIN))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The ISR `me` should ask the controller for at `now`, if it differs from `st.isr`
    /// (`None` too while a request is in flight or `st` is not this leadership): members not
    /// caught up for `lag` leave; replicas on live brokers (`live`) that fetched up to the
    /// high watermark `hw` and are caught up join.
    pub(crate) fn wanted_isr(
        &self,
        me: NodeId,
        st: &PartitionState,
        hw: i64,
        live: impl Fn(NodeId) -> bool,
        now: Instant,
        lag: Duration,
    ) -> Option<Vec<NodeId>> {
        if self.altering || st.leader != me || st.leader_epoch != self.epoch {
            return None;
        }
        let caught_up = |r: &NodeId| {
            now.duration_since(self.caught_up.get(r).copied().unwrap_or(self.since)) < lag
        };
        let mut isr: Vec<NodeId> = st
            .isr
            .iter()
            .copied()
            .filter(|r| *r == me || caught_up(r))
            .collect();
        for r in &st.replicas {
            let reached = self.fetch_offsets.get(r).is_some_and(|&o| o >= hw);
            if !isr.contains(r)
                && live(*r)
                && reached
                && self.caught_up.contains_key(r)
                && caught_up(r)
            {
                isr.push(*r);
            }
        }
        (isr != st.isr).then_some(isr)
    }
}

/// The leader's side of a follower fetch whose `last_fetched_epoch` is set (KIP-320): the
/// `(epoch, end offset)` to answer as `diverging_epoch` when the follower's log diverges
/// from this one (it fetched an epoch this log does not end where it thinks), else `None`.
pub(crate) fn diverging_epoch(
    storage: &ShardStorage,
    topic: &str,
    partition: i32,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    let (epoch, end) = storage
        .end_offset_for_epoch(topic, partition, last_fetched_epoch)
        .ok()?;
    (epoch < last_fetched_epoch || end < fetch_offset).then_some((epoch, end))
}

/// The follower's side of a `diverging_epoch` answer `(epoch, end_offset)`: the offset to
/// truncate its log to (the longest common prefix by epochs, never below its log start),
/// or `None` when nothing past it is held.
pub(crate) fn divergence_cut(
    storage: &ShardStorage,
    topic: &str,
    partition: i32,
    epoch: i32,
    end_offset: i64,
) -> Result<Option<i64>, StorageError> {
    let (start, end) = storage.offsets(topic, partition)?;
    let cut = if epoch < 0 || end_offset < 0 {
        // The leader knows none of our epochs: keep what is below the high watermark.
        storage.high_watermark(topic, partition)?
    } else {
        // Our own end of that epoch (or of the newest one before it), capped at the
        // leader's: the longest common prefix by epochs.
        let (_, own_end) = storage.end_offset_for_epoch(topic, partition, epoch)?;
        if own_end < 0 {
            end_offset
        } else {
            own_end.min(end_offset)
        }
    };
    let cut = cut.max(start);
    Ok((cut < end).then_some(cut))
}

/// The fetcher of one leader broker on this shard: the partitions it carries, by
/// `(topic, partition)`, with the leader epoch each is followed in.
pub(super) struct Fetcher {
    leader: NodeId,
    parts: RefCell<BTreeMap<(String, i32), i32>>,
    stopped: Cell<bool>,
}

/// A shard's replication state: the partitions it leads (followers' fetch offsets) and its
/// fetchers (the partitions it follows, by leader).
#[derive(Default)]
pub struct Replication {
    led: RefCell<HashMap<(String, i32), Led>>,
    fetchers: RefCell<HashMap<NodeId, Rc<Fetcher>>>,
}

impl Replication {
    /// Adopts the roles of `view` for the partitions this shard owns and hosts: leaders get
    /// a floor from their followers (reset when the leader epoch changed), followers join
    /// the fetcher of their leader, and fetchers left without partitions stop.
    pub(super) fn adopt(&self, shard: &Rc<Shard>, view: &ClusterView) {
        let me = view.node_id;
        let mut wanted: HashMap<NodeId, BTreeMap<(String, i32), i32>> = HashMap::new();
        let mut led = self.led.borrow_mut();
        let mut still_led = Vec::new();
        for t in view.image.topics.values() {
            for (p, st) in t.partitions.iter().enumerate() {
                let p = p as i32;
                if shard.owner_of(&t.name, p) != shard.id || !st.replicas.contains(&me) {
                    continue;
                }
                let key = (t.name.clone(), p);
                if st.replicas.len() <= 1 {
                    shard.storage.set_replica_floor(&t.name, p, None);
                    continue;
                }
                if st.leader == me {
                    let entry = led
                        .entry(key.clone())
                        .or_insert_with(|| Led::new(st.leader_epoch, Instant::now()));
                    if entry.epoch != st.leader_epoch {
                        // A new leadership: what followers fetched before is not known to
                        // be this epoch's log.
                        *entry = Led::new(st.leader_epoch, Instant::now());
                    }
                    let floor = entry.floor(me, &st.isr);
                    shard.storage.set_replica_floor(&t.name, p, Some(floor));
                    still_led.push(key);
                    continue;
                }
                // A follower (or offline): the high watermark stays until the leader says more.
                let was = self
                    .fetchers
                    .borrow()
                    .get(&st.leader)
                    .and_then(|f| f.parts.borrow().get(&key).copied());
                if was != Some(st.leader_epoch) {
                    shard.storage.set_replica_floor(&t.name, p, Some(i64::MIN));
                }
                if st.leader >= 0 {
                    wanted
                        .entry(st.leader)
                        .or_default()
                        .insert(key, st.leader_epoch);
                }
            }
        }
        led.retain(|k, _| still_led.contains(k));
        drop(led);
        let mut fetchers = self.fetchers.borrow_mut();
        fetchers.retain(|leader, f| {
            let keep = wanted.contains_key(leader);
            if !keep {
                f.stopped.set(true);
                f.parts.borrow_mut().clear();
            }
            keep
        });
        for (leader, parts) in wanted {
            match fetchers.get(&leader) {
                Some(f) => *f.parts.borrow_mut() = parts,
                None => {
                    let f = Rc::new(Fetcher {
                        leader,
                        parts: RefCell::new(parts),
                        stopped: Cell::new(false),
                    });
                    fetchers.insert(leader, f.clone());
                    tracing::info!(shard = shard.id, leader, "replica fetcher started");
                    glommio::spawn_local(run_fetcher(shard.clone(), f)).detach();
                }
            }
        }
    }

    /// The leader side of a follower's fetch: records `replica`'s fetch offset (what it has
    /// on disk) for a partition this broker leads, and moves the replica floor. Ignored when
    /// this broker does not lead the partition or `replica` is not one of its replicas.
    pub(super) fn follower_fetched(
        &self,
        shard: &Shard,
        topic: &str,
        partition: i32,
        replica: NodeId,
        fetch_offset: i64,
    ) {
        let Some(view) = shard.cluster_view() else {
            return;
        };
        let Some(st) = view.partition(topic, partition) else {
            return;
        };
        if st.leader != view.node_id || !st.replicas.contains(&replica) || st.replicas.len() <= 1 {
            return;
        }
        let mut led = self.led.borrow_mut();
        let entry = led
            .entry((topic.to_string(), partition))
            .or_insert_with(|| Led::new(st.leader_epoch, Instant::now()));
        if entry.epoch != st.leader_epoch {
            *entry = Led::new(st.leader_epoch, Instant::now());
        }
        let end = shard
            .storage
            .offsets(topic, partition)
            .map_or(i64::MAX, |o| o.1);
        entry.record_fetch(replica, fetch_offset, end, Instant::now());
        let floor = entry.floor(view.node_id, &st.isr);
        shard
            .storage
            .set_replica_floor(topic, partition, Some(floor));
    }
}

/// How often a leader looks for ISR changes to ask for: half of `replica.lag.time.max.ms`
/// (Kafka's `isr-expiration` interval), within these bounds.
const ISR_CHECK_INTERVAL_MS_MIN: u64 = 50;
/// See [`ISR_CHECK_INTERVAL_MS_MIN`].
const ISR_CHECK_INTERVAL_MS_MAX: u64 = 5_000;

/// A leader's ISR upkeep, for as long as the shard runs (cluster only): every half
/// `replica.lag.time.max.ms`, each partition this shard leads is checked, and an
/// AlterPartition is sent to the active controller when the ISR should change: members not
/// caught up to the log end for `replica.lag.time.max.ms` leave; replicas on live brokers
/// that fetched up to the high watermark and are caught up join. One request per partition
/// at a time; the new ISR is used once the image holding it arrives (until then the HW is
/// computed over the old one).
pub(super) async fn keep_isr(shard: Rc<Shard>) {
    let Some(link) = shard.cluster.clone() else {
        return;
    };
    let lag = Duration::from_millis(shard.config.cluster.replica_lag_time_max_ms);
    let every = Duration::from_millis(
        (shard.config.cluster.replica_lag_time_max_ms / 2)
            .clamp(ISR_CHECK_INTERVAL_MS_MIN, ISR_CHECK_INTERVAL_MS_MAX),
    );
    loop {
        glommio::timer::sleep(every).await;
        let Some(view) = shard.cluster_view() else {
            continue;
        };
        let wanted = shard.replication.isr_changes(&shard, &view, lag);
        for req in wanted {
            let shard = shard.clone();
            let link = link.clone();
            glommio::spawn_local(async move {
                let key = (req.topic.clone(), req.partition);
                tracing::info!(topic = %req.topic, partition = req.partition, isr = ?req.isr, "asking the controller for an ISR change");
                let r = link.call(RpcBody::AlterPartition(req)).await;
                match r {
                    Ok(ControllerReply::Applied { results, .. })
                        if results.iter().all(Result::is_ok) => {}
                    other => tracing::info!(topic = %key.0, partition = key.1, answer = ?other, "ISR change not made"),
                }
                if let Some(l) = shard.replication.led.borrow_mut().get_mut(&key) {
                    l.altering = false;
                }
            })
            .detach();
        }
    }
}

impl Replication {
    /// The AlterPartition requests due now for the partitions this shard leads (each marked
    /// as in flight).
    fn isr_changes(
        &self,
        shard: &Shard,
        view: &ClusterView,
        lag: Duration,
    ) -> Vec<AlterPartitionRequest> {
        let now = Instant::now();
        let mut out = Vec::new();
        for ((topic, p), l) in self.led.borrow_mut().iter_mut() {
            let Some(st) = view.partition(topic, *p) else {
                continue;
            };
            let Ok(hw) = shard.storage.high_watermark(topic, *p) else {
                continue;
            };
            let live = |r: NodeId| view.image.brokers.get(&r).is_some_and(|b| !b.fenced);
            if let Some(isr) = l.wanted_isr(view.node_id, st, hw, live, now, lag) {
                l.altering = true;
                out.push(AlterPartitionRequest {
                    broker_id: view.node_id,
                    topic: topic.clone(),
                    partition: *p,
                    leader_epoch: st.leader_epoch,
                    partition_epoch: st.partition_epoch,
                    isr,
                });
            }
        }
        out
    }
}

/// One follower fetcher: fetch rounds from `f.leader` until it is stopped.
async fn run_fetcher(shard: Rc<Shard>, f: Rc<Fetcher>) {
    let Some(link) = shard.cluster.clone() else {
        return;
    };
    let backoff = || glommio::timer::sleep(Duration::from_millis(REPLICA_FETCH_BACKOFF_MS));
    while !f.stopped.get() {
        let Some(view) = shard.cluster_view() else {
            backoff().await;
            continue;
        };
        let Some((host, port)) = view.endpoint(f.leader) else {
            backoff().await;
            continue;
        };
        let parts: Vec<((String, i32), i32)> = f
            .parts
            .borrow()
            .iter()
            .map(|(k, e)| (k.clone(), *e))
            .collect();
        let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
        let mut unsynced = false;
        for ((topic, p), epoch) in &parts {
            let Ok((last_epoch, end)) = shard.storage.last_epoch_and_end(topic, *p) else {
                continue; // not open (yet)
            };
            // The fetch offset tells the leader what is on this disk: a log end whose sync
            // failed (a full disk) is not fetched from until it is durable.
            if end > 0 {
                if let Err(e) = shard.storage.wait_durable(topic, *p, end - 1).await {
                    tracing::debug!(topic = %topic, partition = p, error = %e, "follower log end not durable; not fetching");
                    unsynced = true;
                    continue;
                }
            }
            let start = shard.storage.offsets(topic, *p).map_or(-1, |o| o.0);
            topics.entry(topic).or_default().push(
                FetchPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(*epoch)
                    .with_fetch_offset(end)
                    .with_last_fetched_epoch(last_epoch)
                    .with_log_start_offset(start)
                    .with_partition_max_bytes(REPLICA_FETCH_PARTITION_BYTES_MAX),
            );
        }
        if topics.is_empty() || unsynced {
            backoff().await;
        }
        if topics.is_empty() {
            continue;
        }
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(view.node_id))
            .with_max_wait_ms(REPLICA_FETCH_WAIT_MAX_MS)
            .with_min_bytes(1)
            .with_max_bytes(REPLICA_FETCH_RESPONSE_BYTES_MAX)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
        let resp = match link
            .call_broker(host, port, REPLICA_FETCH_VERSION, req)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(leader = f.leader, error = %e, "replica fetch failed");
                backoff().await;
                continue;
            }
        };
        let mut failed = resp.error_code != 0;
        for t in resp.responses {
            let topic = t.topic.to_string();
            for pd in t.partitions {
                let key = (topic.clone(), pd.partition_index);
                let epoch = parts.iter().find(|(k, _)| *k == key).map(|(_, e)| *e);
                // Only a partition still followed here, in the epoch it was fetched in.
                if f.stopped.get()
                    || epoch.is_none()
                    || f.parts.borrow().get(&key) != epoch.as_ref()
                {
                    continue;
                }
                if let Err(e) = follow_partition(&shard, &topic, pd).await {
                    tracing::debug!(leader = f.leader, topic = %topic, partition = key.1, error = %e, "replica fetch of a partition failed");
                    failed = true;
                }
            }
        }
        if failed {
            backoff().await;
        }
    }
    tracing::info!(
        shard = shard.id,
        leader = f.leader,
        "replica fetcher stopped"
    );
}

/// Why one partition of a follower's fetch did not advance.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("the leader answered {0}")]
    Leader(ErrorCode),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Applies one partition of the leader's answer: truncate where the logs diverge, else
/// append the batches, wait for their fsync (a follower's next fetch offset is on its disk),
/// and take the leader's high watermark as the floor.
async fn follow_partition(
    shard: &Shard,
    topic: &str,
    pd: kafka_protocol::messages::fetch_response::PartitionData,
) -> Result<(), FollowError> {
    let p = pd.partition_index;
    let code = ErrorCode::from_code(pd.error_code);
    if code != ErrorCode::NONE {
        return Err(FollowError::Leader(code));
    }
    let storage = &shard.storage;
    let div = &pd.diverging_epoch;
    if div.epoch >= 0 || div.end_offset >= 0 {
        if let Some(cut) = divergence_cut(storage, topic, p, div.epoch, div.end_offset)? {
            tracing::info!(
                topic,
                partition = p,
                epoch = div.epoch,
                leader_end = div.end_offset,
                cut,
                "follower log diverges from the leader's: truncating"
            );
            storage.truncate_to(topic, p, cut).await?;
        }
        return Ok(());
    }
    let mut last = None;
    if let Some(records) = pd.records.filter(|r| !r.is_empty()) {
        for batch in split_batches(&records)? {
            let info = storage.append_replica(topic, p, batch)?;
            last = Some(info.last_offset);
        }
    }
    if let Some(last) = last {
        storage.wait_durable(topic, p, last).await?;
    }
    storage.set_replica_floor(topic, p, Some(pd.high_watermark));
    Ok(())
}
