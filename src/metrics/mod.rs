//! Per-shard metrics, rendered in Prometheus' text format.
//!
//! Each shard owns one [`ShardMetrics`] (behind an `Rc`): plain `Cell` counters and
//! fixed-bucket histograms, so recording on the data path is a few non-atomic adds, with no
//! lock, no atomic and no allocation. Only shard N touches shard N's `ShardMetrics`.
//!
//! A scrape asks every shard for a [`MetricsSnapshot`] (a `Send` copy of its values, carried
//! over the mesh), then [`render_prometheus`] turns the snapshots into the text exposition
//! format, and [`serve_http`] answers `GET /metrics` with it. Names follow Prometheus'
//! conventions: a `shardlog_` prefix, the unit last (`_bytes`, `_seconds`), `_total` on
//! counters, and every series labelled with its `shard`.
//!
//! Per-partition counters are reached through [`ShardMetrics::partition`], which hands out an
//! `Rc<PartitionMetrics>` that the partition's owner keeps, so the hot path does not look the
//! partition up by name.
//!
//! Two values are not recorded on the data path but read when a scrape asks: each partition's
//! disk usage and high watermark (set by the owner shard from its storage just before it takes
//! its snapshot), and the committed offsets of the groups a shard coordinates. The shard
//! serving the scrape combines them across shards with [`fill_consumer_group_lag`], so the
//! lag of a group on a partition owned by another shard costs no lock and no extra message.

mod http;
mod prometheus;

pub use http::{
    serve_http, GatherFuture, HTTP_CONNECTIONS_MAX, HTTP_REQUEST_BYTES_MAX, HTTP_TIMEOUT,
};
pub use prometheus::{render_prometheus, CONTENT_TYPE, FAMILIES};

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// Upper bounds, in seconds, of the latency histograms' buckets (`le` labels); a last,
/// implicit `+Inf` bucket catches everything above. 50 µs to 10 s: an fdatasync on NVMe
/// takes tens of microseconds, a long-polling Fetch up to its `max_wait_ms`.
pub const LATENCY_BUCKETS_SECONDS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The same bounds in nanoseconds, which is what `observe` compares against.
const LATENCY_BUCKETS_NANOS: [u64; 18] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
];

/// Number of request slots, indexed by Kafka API key; keys at or above it share the last slot.
pub const API_KEY_SLOTS: usize = 128;

/// A monotonically increasing count, for one shard only.
#[derive(Debug, Default)]
pub struct Counter(Cell<u64>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n` (wrapping, as Prometheus expects of a counter that overflows: never in practice).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get().wrapping_add(n));
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down (open connections, bytes on disk), for one shard only.
#[derive(Debug, Default)]
pub struct Gauge(Cell<i64>);

impl Gauge {
    /// Sets the value.
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }

    /// Adds `n` (negative to subtract).
    #[inline]
    pub fn add(&self, n: i64) {
        self.0.set(self.0.get().saturating_add(n));
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// A latency histogram with the fixed buckets of [`LATENCY_BUCKETS_SECONDS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative; the last one is `+Inf`.
    buckets: [Cell<u64>; LATENCY_BUCKETS_NANOS.len() + 1],
    sum_nanos: Cell<u64>,
}

impl Histogram {
    /// Records one duration: a binary search over 18 bounds and two adds.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        let b = &self.buckets[i];
        b.set(b.get().wrapping_add(1));
        self.sum_nanos.set(self.sum_nanos.get().wrapping_add(nanos));
    }

    /// A copy of the values with cumulative buckets, as Prometheus exposes them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS_NANOS.len());
        for b in &self.buckets[..LATENCY_BUCKETS_NANOS.len()] {
            running = running.wrapping_add(b.get());
            cumulative.push(running);
        }
        let count = running.wrapping_add(self.buckets[LATENCY_BUCKETS_NANOS.len()].get());
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_nanos.get() as f64 / 1e9,
        }
    }
}

/// One histogram's values: cumulative counts per bucket of [`LATENCY_BUCKETS_SECONDS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `cumulative[i]` = observations `<=` `LATENCY_BUCKETS_SECONDS[i]`.
    pub cumulative: Vec<u64>,
    /// All observations (the `+Inf` bucket and `_count`).
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

/// Counters of one partition, kept by its owner shard.
#[derive(Debug, Default)]
pub struct PartitionMetrics {
    /// Record-batch bytes appended by Produce.
    pub produced_bytes: Counter,
    /// Records appended by Produce.
    pub produced_records: Counter,
    /// Record-batch bytes returned by Fetch.
    pub fetched_bytes: Counter,
    /// Records returned by Fetch.
    pub fetched_records: Counter,
    /// Bytes of record batches written to the partition's segment (`.log`) files; set by the
    /// owner shard when a scrape asks (index files and unwritten batches not counted).
    pub disk_usage_bytes: Gauge,
    /// Blocks allocated to the partition's directory and files (`du`'s figure), as the owner
    /// shard last sampled them; set when a scrape asks.
    pub disk_allocated_bytes: Gauge,
    /// Next offset to be assigned (the log end offset); set by the owner shard when a scrape
    /// asks, 0 until then. Not rendered: it is the minuend of the consumer-group lag.
    pub high_watermark: Gauge,
}

impl PartitionMetrics {
    /// Counts one appended batch.
    #[inline]
    pub fn record_produce(&self, bytes: u64, records: u64) {
        self.produced_bytes.add(bytes);
        self.produced_records.add(records);
    }

    /// Counts batches handed to a Fetch response.
    #[inline]
    pub fn record_fetch(&self, bytes: u64, records: u64) {
        self.fetched_bytes.add(bytes);
        self.fetched_records.add(records);
    }

    /// Sets the bytes the partition's segment files hold (saturating at `i64::MAX`).
    #[inline]
    pub fn set_disk_usage(&self, bytes: u64) {
        self.disk_usage_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the blocks allocated to the partition's files (saturating at `i64::MAX`).
    #[inline]
    pub fn set_disk_allocated(&self, bytes: u64) {
        self.disk_allocated_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the partition's high watermark (the next offset to be assigned).
    #[inline]
    pub fn set_high_watermark(&self, offset: i64) {
        self.high_watermark.set(offset);
    }
}

/// Request counters and latency of one Kafka API on one shard.
#[derive(Debug, Default)]
pub struct ApiMetrics {
    /// Requests handled.
    pub requests: Counter,
    /// Requests answered with a top-level or per-partition error code.
    pub errors: Counter,
    /// From the request frame read to the response handed to the socket.
    pub latency: Histogram,
}

/// Partition counters by topic, then partition: looked up by `&str` without allocating.
type PartitionMap = BTreeMap<Rc<str>, BTreeMap<i32, Rc<PartitionMetrics>>>;

/// Every metric one shard records. Not `Send`: it lives in its shard, behind an `Rc`.
#[derive(Debug)]
pub struct ShardMetrics {
    shard: usize,
    /// Invariant: only the shard that owns a partition has an entry for it.
    partitions: RefCell<PartitionMap>,
    /// Indexed by API key; keys `>= API_KEY_SLOTS` land in the last slot.
    apis: Box<[ApiMetrics]>,
    /// Duration of each fdatasync of a segment or index.
    pub fsync: Histogram,
    /// Fetch reads served from the batch cache.
    pub batch_cache_hits: Counter,
    /// Fetch reads that went to disk.
    pub batch_cache_misses: Counter,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections accepted since start.
    pub connections_accepted: Counter,
    /// Client connections closed at accept because the shard was at its limit.
    pub connections_rejected: Counter,
}

impl ShardMetrics {
    /// Empty metrics for shard `shard`.
    pub fn new(shard: usize) -> Self {
        ShardMetrics {
            shard,
            partitions: RefCell::new(BTreeMap::new()),
            apis: (0..API_KEY_SLOTS).map(|_| ApiMetrics::default()).collect(),
            fsync: Histogram::default(),
            batch_cache_hits: Counter::default(),
            batch_cache_misses: Counter::default(),
            connections_open: Gauge::default(),
            connections_accepted: Counter::default(),
            connections_rejected: Counter::default(),
        }
    }

    /// The shard these metrics belong to.
    pub fn shard(&self) -> usize {
        self.shard
    }

    /// The counters of one partition, created at zero on first use. Keep the `Rc` next to the
    /// partition's state: recording through it costs no lookup.
    /// A lookup of an existing partition allocates nothing.
    pub fn partition(&self, topic: &str, partition: i32) -> Rc<PartitionMetrics> {
        let mut map = self.partitions.borrow_mut();
        if let Some(m) = map.get(topic).and_then(|t| t.get(&partition)) {
            return m.clone();
        }
        let m = Rc::new(PartitionMetrics::default());
        match map.get_mut(topic) {
            Some(t) => {
                t.insert(partition, m.clone());
            }
            None => {
                map.insert(Rc::from(topic), BTreeMap::from([(partition, m.clone())]));
            }
        }
        m
    }

    /// Forgets every partition for which `keep(topic, partition)` is false (those no longer
    /// open on this shard), so they leave the next snapshot. Allocates nothing.
    pub fn retain_partitions(&self, mut keep: impl FnMut(&str, i32) -> bool) {
        let mut map = self.partitions.borrow_mut();
        map.retain(|topic, parts| {
            parts.retain(|&p, _| keep(topic, p));
            !parts.is_empty()
        });
    }

    /// Forgets a partition (deleted topic, or moved to another shard).
    pub fn remove_partition(&self, topic: &str, partition: i32) {
        let mut map = self.partitions.borrow_mut();
        if let Some(t) = map.get_mut(topic) {
            t.remove(&partition);
            if t.is_empty() {
                map.remove(topic);
            }
        }
    }

    /// The counters of one Kafka API.
    #[inline]
    pub fn api(&self, api_key: i16) -> &ApiMetrics {
        let slot = usize::try_from(api_key).map_or(API_KEY_SLOTS - 1, |k| k.min(API_KEY_SLOTS - 1));
        &self.apis[slot]
    }

    /// Records one handled request: its API key, its latency and whether it failed.
    #[inline]
    pub fn observe_request(&self, api_key: i16, elapsed: Duration, failed: bool) {
        let api = self.api(api_key);
        api.requests.inc();
        if failed {
            api.errors.inc();
        }
        api.latency.observe(elapsed);
    }

    /// Records one fdatasync's duration.
    #[inline]
    pub fn observe_fsync(&self, elapsed: Duration) {
        self.fsync.observe(elapsed);
    }

    /// Counts one batch-cache lookup.
    #[inline]
    pub fn batch_cache_lookup(&self, hit: bool) {
        if hit {
            self.batch_cache_hits.inc();
        } else {
            self.batch_cache_misses.inc();
        }
    }

    /// Counts a connection accepted (and now open).
    #[inline]
    pub fn connection_opened(&self) {
        self.connections_accepted.inc();
        self.connections_open.add(1);
    }

    /// Counts a connection closed.
    #[inline]
    pub fn connection_closed(&self) {
        self.connections_open.add(-1);
    }

    /// Counts a connection refused at the shard's connection limit.
    #[inline]
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// A `Send` copy of every value, to carry to the shard that renders the scrape.
    /// `committed_offsets` is left empty (the owner shard adds its coordinator's) and
    /// `consumer_group_lag` `None` ([`fill_consumer_group_lag`] computes it).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let partitions = self
            .partitions
            .borrow()
            .iter()
            .flat_map(|(topic, parts)| parts.iter().map(move |(p, m)| (topic, p, m)))
            .map(|(topic, partition, m)| PartitionSnapshot {
                topic: topic.to_string(),
                partition: *partition,
                produced_bytes: m.produced_bytes.get(),
                produced_records: m.produced_records.get(),
                fetched_bytes: m.fetched_bytes.get(),
                fetched_records: m.fetched_records.get(),
                disk_usage_bytes: u64::try_from(m.disk_usage_bytes.get()).unwrap_or(0),
                disk_allocated_bytes: u64::try_from(m.disk_allocated_bytes.get()).unwrap_or(0),
                high_watermark: m.high_watermark.get(),
            })
            .collect();
        let requests = self
            .apis
            .iter()
            .enumerate()
            .filter(|(_, a)| a.requests.get() > 0)
            .map(|(key, a)| ApiSnapshot {
                api: api_name(key),
                requests: a.requests.get(),
                errors: a.errors.get(),
                latency: a.latency.snapshot(),
            })
            .collect();
        MetricsSnapshot {
            shard: self.shard,
            partitions,
            requests,
            fsync: self.fsync.snapshot(),
            batch_cache_hits: self.batch_cache_hits.get(),
            batch_cache_misses: self.batch_cache_misses.get(),
            batch_cache_bytes: 0,
            unwritten_bytes: 0,
            fetch_sessions: 0,
            fetch_session_partitions: 0,
            fetch_session_evictions: 0,
            connections_open: u64::try_from(self.connections_open.get()).unwrap_or(0),
            connections_accepted: self.connections_accepted.get(),
            connections_rejected: self.connections_rejected.get(),
            committed_offsets: Vec::new(),
            consumer_group_lag: None,
        }
    }
}

/// The Kafka name of an API key slot (`Produce`, `Fetch`, ...), `Unknown` when it has none.
fn api_name(slot: usize) -> String {
    let known = i16::try_from(slot)
        .ok()
        .filter(|_| slot < API_KEY_SLOTS - 1)
        .and_then(|k| kafka_protocol::messages::ApiKey::try_from(k).ok());
    match known {
        Some(k) => format!("{k:?}"),
        None => "Unknown".to_string(),
    }
}

/// One shard's values at one instant, with their labels; `Send`, so it crosses the mesh.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// The shard's index (the `shard` label).
    pub shard: usize,
    /// The partitions this shard owns, sorted by (topic, partition).
    pub partitions: Vec<PartitionSnapshot>,
    /// The APIs this shard has answered at least once, by API key.
    pub requests: Vec<ApiSnapshot>,
    /// fdatasync latency.
    pub fsync: HistogramSnapshot,
    /// Fetch reads served from the batch cache.
    pub batch_cache_hits: u64,
    /// Fetch reads that went to disk.
    pub batch_cache_misses: u64,
    /// Bytes the batch cache holds now (filled in by the owner shard when scraped).
    pub batch_cache_bytes: u64,
    /// Bytes appended but not yet written to disk now (filled in when scraped).
    pub unwritten_bytes: u64,
    /// Incremental fetch sessions cached now (filled in when scraped).
    pub fetch_sessions: u64,
    /// Partitions cached across those sessions now (filled in when scraped).
    pub fetch_session_partitions: u64,
    /// Fetch sessions evicted since start (filled in when scraped).
    pub fetch_session_evictions: u64,
    /// Client connections open now.
    pub connections_open: u64,
    /// Client connections accepted since start.
    pub connections_accepted: u64,
    /// Client connections refused at the connection limit since start.
    pub connections_rejected: u64,
    /// Committed offsets of the consumer groups this shard coordinates (the input of the lag).
    pub committed_offsets: Vec<CommittedOffsetSnapshot>,
    /// Lag of the consumer groups this shard coordinates, once [`fill_consumer_group_lag`]
    /// has combined `committed_offsets` with every shard's high watermarks.
    pub consumer_group_lag: Option<Vec<GroupLagSnapshot>>,
}

/// One partition's counters (the `topic` and `partition` labels).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionSnapshot {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Record-batch bytes appended by Produce.
    pub produced_bytes: u64,
    /// Records appended by Produce.
    pub produced_records: u64,
    /// Record-batch bytes returned by Fetch.
    pub fetched_bytes: u64,
    /// Records returned by Fetch.
    pub fetched_records: u64,
    /// Bytes of record batches written to the partition's segment (`.log`) files.
    pub disk_usage_bytes: u64,
    /// Blocks allocated to the partition's directory and files (`du`'s figure).
    pub disk_allocated_bytes: u64,
    /// Next offset to be assigned, as last set by the owner (0 if never set).
    pub high_watermark: i64,
}

/// One API's request count, error count and latency (the `api` label).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiSnapshot {
    /// Kafka's name of the API (`Produce`, `Fetch`, ...).
    pub api: String,
    /// Requests handled.
    pub requests: u64,
    /// Requests answered with an error code.
    pub errors: u64,
    /// Request latency.
    pub latency: HistogramSnapshot,
}

/// One group's committed offset on one partition, as its coordinator holds it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommittedOffsetSnapshot {
    /// The group id.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// The next offset the group will consume (negative: no position).
    pub offset: i64,
}

/// Fills every snapshot's `consumer_group_lag` from the `committed_offsets` it carries and the
/// high watermarks of the partitions in all `shards`: lag = high watermark − committed offset,
/// per (group, topic, partition), in the order of `committed_offsets`.
///
/// Guarantees: never negative (a commit read after the watermark was, or a commit beyond the
/// log end, gives 0); commits on a partition no snapshot lists (deleted topic, partition index
/// out of range, owner shard that did not answer) and negative commits are left out. Every
/// snapshot gets `Some`, possibly empty.
pub fn fill_consumer_group_lag(shards: &mut [MetricsSnapshot]) {
    let lags: Vec<Vec<GroupLagSnapshot>> = {
        let watermarks: std::collections::HashMap<(&str, i32), i64> = shards
            .iter()
            .flat_map(|s| s.partitions.iter())
            .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
            .collect();
        shards
            .iter()
            .map(|s| {
                s.committed_offsets
                    .iter()
                    .filter(|c| c.offset >= 0)
                    .filter_map(|c| {
                        let hw = *watermarks.get(&(c.topic.as_str(), c.partition))?;
                        Some(GroupLagSnapshot {
                            group: c.group.clone(),
                            topic: c.topic.clone(),
                            partition: c.partition,
                            lag_records: hw.saturating_sub(c.offset).max(0),
                        })
                    })
                    .collect()
            })
            .collect()
    };
    for (s, lag) in shards.iter_mut().zip(lags) {
        s.consumer_group_lag = Some(lag);
    }
}

/// One consumer group's lag on one partition: high watermark minus committed offset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupLagSnapshot {
    /// The group id.
    pub group: String,
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: i32,
    /// Records between the group's committed offset and the high watermark (never negative).
    pub lag_records: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_in_both_units() {
        for (s, ns) in LATENCY_BUCKETS_SECONDS.iter().zip(LATENCY_BUCKETS_NANOS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(LATENCY_BUCKETS_NANOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_le_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // exactly on the first bound: counts in it
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60)); // +Inf only
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], 1);
        assert_eq!(s.cumulative[1], 2);
        assert_eq!(s.cumulative[5], 2); // le 0.0025
        assert_eq!(s.cumulative[6], 3); // le 0.005
        assert_eq!(*s.cumulative.last().expect("buckets"), 3);
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            (s.sum_seconds - 60.003_101).abs() < 1e-9,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn snapshot_carries_partitions_apis_and_gauges() {
        let m = ShardMetrics::new(3);
        let p = m.partition("orders", 1);
        p.record_produce(1000, 10);
        m.partition("orders", 1).record_produce(24, 1); // same Rc
        p.record_fetch(500, 5);
        p.set_disk_usage(4096);
        m.partition("audit", 0);
        m.observe_request(0, Duration::from_millis(2), false);
        m.observe_request(1, Duration::from_millis(1), true);
        m.observe_request(-5, Duration::from_millis(1), false);
        m.observe_fsync(Duration::from_micros(80));
        m.batch_cache_lookup(true);
        m.batch_cache_lookup(false);
        m.batch_cache_lookup(true);
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_rejected();
        let s = m.snapshot();
        assert_eq!(s.shard, 3);
        assert_eq!(s.partitions.len(), 2);
        assert_eq!(s.partitions[0].topic, "audit");
        let orders = &s.partitions[1];
        assert_eq!((orders.produced_bytes, orders.produced_records), (1024, 11));
        assert_eq!((orders.fetched_bytes, orders.fetched_records), (500, 5));
        assert_eq!(orders.disk_usage_bytes, 4096);
        let names: Vec<&str> = s.requests.iter().map(|a| a.api.as_str()).collect();
        assert_eq!(names, ["Produce", "Fetch", "Unknown"]);
        assert_eq!(s.requests[1].errors, 1);
        assert_eq!(s.fsync.count, 1);
        assert_eq!((s.batch_cache_hits, s.batch_cache_misses), (2, 1));
        assert_eq!(
            (
                s.connections_open,
                s.connections_accepted,
                s.connections_rejected
            ),
            (1, 2, 1)
        );
        m.remove_partition("audit", 0);
        assert_eq!(m.snapshot().partitions.len(), 1);
    }

    #[test]
    fn retain_partitions_forgets_the_others() {
        let m = ShardMetrics::new(0);
        m.partition("a", 0).set_disk_usage(1);
        m.partition("a", 1).set_high_watermark(7);
        m.partition("b", 0);
        m.retain_partitions(|t, p| t == "a" && p == 1);
        let s = m.snapshot();
        assert_eq!(s.partitions.len(), 1);
        assert_eq!(
            (s.partitions[0].partition, s.partitions[0].high_watermark),
            (1, 7)
        );
    }

    fn commit(group: &str, topic: &str, partition: i32, offset: i64) -> CommittedOffsetSnapshot {
        CommittedOffsetSnapshot {
            group: group.into(),
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn lag_combines_commits_with_watermarks_of_every_shard() {
        let a = ShardMetrics::new(0);
        a.partition("orders", 0).set_high_watermark(100);
        let b = ShardMetrics::new(1);
        b.partition("orders", 1).set_high_watermark(40);
        let mut shards = vec![a.snapshot(), b.snapshot()];
        // Shard 0 coordinates "g": one commit per data partition, one on each shard.
        shards[0].committed_offsets = vec![
            commit("g", "orders", 0, 75),
            commit("g", "orders", 1, 40),
            commit("g", "gone", 0, 5),    // topic deleted: skipped
            commit("g", "orders", 9, 5),  // no such partition: skipped
            commit("h", "orders", 0, -1), // no position: skipped
            commit("h", "orders", 1, 45), // ahead of the watermark read: 0, not -5
        ];
        fill_consumer_group_lag(&mut shards);
        let lag: Vec<(&str, &str, i32, i64)> = shards[0]
            .consumer_group_lag
            .iter()
            .flatten()
            .map(|l| {
                (
                    l.group.as_str(),
                    l.topic.as_str(),
                    l.partition,
                    l.lag_records,
                )
            })
            .collect();
        assert_eq!(
            lag,
            [
                ("g", "orders", 0, 25),
                ("g", "orders", 1, 0),
                ("h", "orders", 1, 0)
            ]
        );
        assert_eq!(shards[1].consumer_group_lag, Some(Vec::new()));
    }

    #[test]
    fn snapshot_is_send() {
        fn assert_send<T: Send + 'static>() {}
        assert_send::<MetricsSnapshot>();
    }
}
