//! One client core: its producers and consumers, driven by one glommio `LocalExecutor`.
//!
//! Nothing here is shared between cores except [`Shared`] (atomics and two mutexes touched
//! once a second). Latencies are recorded on the core that observes them into its own
//! histograms: an `interval` set handed to the progress line every second, and a `total` set
//! (measured window only) returned when the core finishes.

use super::batch::{walk_records, BatchBuilder};
use super::cluster::ClusterLayout;
use super::keys::{KeyChooser, Zipf};
use super::rate::RateSchedule;
use super::wire::{
    decode_response, error_name, with_timeout, FrameReader, FrameWriter, KafkaConn, WireError,
};
use super::workload::{Compression, KeyDistribution, Workload};
use crate::hist::LatencyHistogram;
use bytes::Bytes;
use futures_lite::FutureExt as _;
use glommio::sync::Semaphore;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{BrokerId, FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// Bytes at the start of each value written by the producer: intended send time (u64 LE),
/// producer id (u32 LE), sequence of that producer on that partition (u32 LE). Values shorter
/// than this carry only as much as fits (the time needs 8).
pub const STAMP_BYTES: usize = 16;
/// Record framing plus the longest key this client writes (`key-` and up to 20 digits).
const RECORD_OVERHEAD_BYTES_MAX: usize = 64;
/// Messages a producer may create in one go before it yields to its other tasks.
const CATCH_UP_MESSAGES_MAX: usize = 4096;
/// Longest a producer sleeps before looking at the stop flag again.
const IDLE_SLEEP_MAX: Duration = Duration::from_millis(50);
/// Time allowed for in-flight produce requests to be answered once producing stops.
pub const PRODUCE_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetch response size limit, bytes.
const FETCH_BYTES_MAX: i32 = 64 * 1024 * 1024;

/// The three latency histograms.
#[derive(Clone, Debug, Default)]
pub struct Hists {
    /// Intended send time to acknowledgement.
    pub publish: LatencyHistogram,
    /// Intended send time to consumption.
    pub e2e: LatencyHistogram,
    /// Intended send time to actual send (0 at max rate).
    pub delay: LatencyHistogram,
}

impl Hists {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Hists) {
        self.publish.add(&other.publish);
        self.e2e.add(&other.e2e);
        self.delay.add(&other.delay);
    }

    fn reset(&mut self) {
        self.publish.reset();
        self.e2e.reset();
        self.delay.reset();
    }
}

/// Counters read by the progress line (all phases).
#[derive(Debug, Default)]
pub struct Live {
    /// Messages acknowledged.
    pub produced_msgs: AtomicU64,
    /// Their payload bytes.
    pub produced_bytes: AtomicU64,
    /// Messages consumed.
    pub consumed_msgs: AtomicU64,
    /// Their payload bytes.
    pub consumed_bytes: AtomicU64,
    /// Errors.
    pub errors: AtomicU64,
}

/// State shared by the cores and the main thread.
pub struct Shared {
    /// Zero of every `*_ns` time in the run (a monotonic clock shared by all threads).
    pub epoch: Instant,
    /// Set when producing must stop (end of run or Ctrl-C).
    pub stop: AtomicBool,
    /// Set when consumers must stop even with a backlog (second deadline).
    pub hard_stop: AtomicBool,
    /// Start of the run (warm-up included), ns since `epoch`; set before the second barrier.
    pub start_ns: AtomicU64,
    /// Consumers give up draining at this time, ns since `epoch` (u64::MAX until stop).
    pub drain_deadline_ns: AtomicU64,
    /// Cores + the main thread meet here twice: all connected, then start.
    pub barrier: Barrier,
    /// Progress counters.
    pub live: Live,
    /// Histograms of the current second, from every core.
    pub interval: Mutex<Hists>,
    /// The first fatal error of a core.
    pub fatal: Mutex<Option<String>>,
    /// Producers not yet finished (drained).
    pub producers_running: AtomicUsize,
    /// Cores not yet finished.
    pub cores_running: AtomicUsize,
    /// Messages acknowledged (acks >= 1) or written (acks = 0), all phases.
    pub acked_all: AtomicU64,
    /// Messages consumed, all phases.
    pub consumed_all: AtomicU64,
    /// When the last core finished its producers and consumers, ns since `epoch` (0 until a
    /// core finishes): the end of a run that ends before its duration.
    pub finished_ns: AtomicU64,
}

impl Shared {
    /// Shared state for `cores` cores and `producers` producers.
    pub fn new(cores: usize, producers: usize) -> Self {
        Self {
            epoch: Instant::now(),
            stop: AtomicBool::new(false),
            hard_stop: AtomicBool::new(false),
            start_ns: AtomicU64::new(0),
            drain_deadline_ns: AtomicU64::new(u64::MAX),
            barrier: Barrier::new(cores + 1),
            live: Live::default(),
            interval: Mutex::new(Hists::default()),
            fatal: Mutex::new(None),
            producers_running: AtomicUsize::new(producers),
            cores_running: AtomicUsize::new(cores),
            acked_all: AtomicU64::new(0),
            consumed_all: AtomicU64::new(0),
            finished_ns: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `epoch`.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Records the first fatal error and stops the run.
    pub fn fail(&self, msg: String) {
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(msg);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.hard_stop.store(true, Ordering::SeqCst);
    }
}

/// One producer of the plan.
#[derive(Clone, Debug)]
pub struct ProducerSpec {
    /// Global producer number (seeds its keys).
    pub id: usize,
    /// Index into the layout's topics.
    pub topic: usize,
}

/// One consumer of the plan.
#[derive(Clone, Debug)]
pub struct ConsumerSpec {
    /// Global consumer number.
    pub id: usize,
    /// Index into the layout's topics.
    pub topic: usize,
    /// Indexes into the topic's partitions.
    pub partitions: Vec<usize>,
}

/// Everything a core needs, immutable during the run.
pub struct Plan {
    /// The workload, after overrides.
    pub workload: Workload,
    /// Topics, leaders, start offsets, versions.
    pub layout: ClusterLayout,
    /// Message value template.
    pub payload: Bytes,
    /// msg/s of each producer (0 = max).
    pub rate_per_producer: f64,
    /// Producers by core.
    pub producers: Vec<Vec<ProducerSpec>>,
    /// Consumers by core.
    pub consumers: Vec<Vec<ConsumerSpec>>,
    /// Total producers (for phase offsets).
    pub producers_total: usize,
    /// Wall-clock ms at `Shared::epoch`, for record timestamps.
    pub wall_epoch_ms: i64,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Consumers read existing topics from `start_offset` to `end_offset` and stop there;
    /// nothing is produced and no end-to-end latency is recorded.
    pub consume_existing: bool,
    /// Messages each producer sends before it stops (`None`: until the end of the run).
    pub message_quota: Option<u64>,
}

impl Plan {
    fn warmup_ns(&self) -> u64 {
        (self.workload.warmup_secs * 1e9) as u64
    }
    fn duration_ns(&self) -> u64 {
        (self.workload.duration_secs * 1e9) as u64
    }
}

/// Counts of the measured window.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Messages acknowledged within the window.
    pub produced_msgs: u64,
    /// Their payload bytes.
    pub produced_bytes: u64,
    /// Messages consumed within the window.
    pub consumed_msgs: u64,
    /// Their payload bytes.
    pub consumed_bytes: u64,
}

/// What a core hands back at the end.
#[derive(Clone, Debug, Default)]
pub struct CoreResult {
    /// Histograms of the measured window.
    pub total: Hists,
    /// Counts of the measured window.
    pub measured: Counts,
    /// Messages handed to the broker, all phases.
    pub sent_all: u64,
    /// Messages acknowledged, all phases.
    pub acked_all: u64,
    /// Messages failed, all phases.
    pub failed_all: u64,
    /// Messages consumed, all phases.
    pub consumed_all: u64,
    /// Messages consumed again (sequence at or below one already seen from its producer).
    pub duplicates: u64,
    /// Messages skipped over (sequence jumps) in what was consumed.
    pub gaps: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
}

/// Per-core recording state. Only this core touches it.
struct CoreStats {
    interval: Hists,
    result: CoreResult,
    window: (u64, u64),
}

impl CoreStats {
    #[inline]
    fn in_window(&self, t_ns: u64) -> bool {
        t_ns >= self.window.0 && t_ns < self.window.1
    }

    fn error(&mut self, shared: &Shared, kind: String, n: u64) {
        *self.result.errors.entry(kind).or_default() += n;
        shared.live.errors.fetch_add(n, Ordering::Relaxed);
    }
}

type Stats = Rc<RefCell<CoreStats>>;

/// Runs one core to completion: connect, meet at the barriers, run, drain.
pub async fn run_core(core: usize, plan: Arc<Plan>, shared: Arc<Shared>) -> CoreResult {
    let producers = plan.producers.get(core).cloned().unwrap_or_default();
    let consumers = plan.consumers.get(core).cloned().unwrap_or_default();

    // Connect everything before the start, so connection set-up is not measured.
    let setup = connect_all(&plan, &producers, &consumers).await;
    if let Err(e) = &setup {
        shared.fail(e.to_string());
    }
    shared.barrier.wait(); // all connected (or failed)
    shared.barrier.wait(); // main has set start_ns
    let start_ns = shared.start_ns.load(Ordering::SeqCst);
    let warm_end = start_ns + plan.warmup_ns();
    let stats: Stats = Rc::new(RefCell::new(CoreStats {
        interval: Hists::default(),
        result: CoreResult::default(),
        window: (warm_end, warm_end + plan.duration_ns()),
    }));
    let Ok((pconns, cconns)) = setup else {
        // Nothing was started for this core's producers: count them as done.
        shared
            .producers_running
            .fetch_sub(producers.len(), Ordering::SeqCst);
        shared.cores_running.fetch_sub(1, Ordering::SeqCst);
        return CoreResult::default();
    };

    let ticker = glommio::spawn_local(ticker(shared.clone(), stats.clone()));
    let zipf = (plan.workload.key_distribution == KeyDistribution::Zipf).then(|| {
        Rc::new(Zipf::new(
            plan.workload.key_count as usize,
            plan.workload.zipf_exponent,
        ))
    });
    let mut tasks = Vec::new();
    for (spec, conns) in producers.into_iter().zip(pconns) {
        let p = Producer::new(&plan, &shared, &stats, spec, conns, zipf.clone(), start_ns);
        tasks.push(glommio::spawn_local(p.run()));
    }
    for (spec, conns) in consumers.into_iter().zip(cconns) {
        for (conn, parts) in conns {
            let c = Consumer {
                plan: plan.clone(),
                shared: shared.clone(),
                stats: stats.clone(),
                topic: spec.topic,
                conn,
                parts,
            };
            tasks.push(glommio::spawn_local(c.run()));
        }
    }
    for t in tasks {
        t.await;
    }
    drop(ticker);
    flush_interval(&shared, &stats);
    shared
        .finished_ns
        .fetch_max(shared.now_ns(), Ordering::SeqCst);
    let result = stats.borrow().result.clone();
    shared.cores_running.fetch_sub(1, Ordering::SeqCst);
    result
}

/// Connections of one producer (one per leader) and, for each consumer, (connection,
/// partition indexes) per leader.
type Connections = (
    Vec<Vec<(String, KafkaConn)>>,
    Vec<Vec<(KafkaConn, Vec<usize>)>>,
);

async fn connect_all(
    plan: &Plan,
    producers: &[ProducerSpec],
    consumers: &[ConsumerSpec],
) -> Result<Connections, WireError> {
    let mut p_out = Vec::with_capacity(producers.len());
    for spec in producers {
        let topic = &plan.layout.topics[spec.topic];
        let mut leaders: Vec<String> = topic.partitions.iter().map(|p| p.leader.clone()).collect();
        leaders.sort();
        leaders.dedup();
        let mut conns = Vec::with_capacity(leaders.len());
        for l in leaders {
            let c = KafkaConn::connect(&l, plan.connect_timeout).await?;
            conns.push((l, c));
        }
        p_out.push(conns);
    }
    let mut c_out = Vec::with_capacity(consumers.len());
    for spec in consumers {
        let topic = &plan.layout.topics[spec.topic];
        let mut by_leader: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &pi in &spec.partitions {
            by_leader
                .entry(topic.partitions[pi].leader.clone())
                .or_default()
                .push(pi);
        }
        let mut conns = Vec::with_capacity(by_leader.len());
        for (l, parts) in by_leader {
            conns.push((KafkaConn::connect(&l, plan.connect_timeout).await?, parts));
        }
        c_out.push(conns);
    }
    Ok((p_out, c_out))
}

/// Hands this core's interval histograms to the progress line every second.
async fn ticker(shared: Arc<Shared>, stats: Stats) {
    loop {
        glommio::timer::sleep(Duration::from_millis(250)).await;
        flush_interval(&shared, &stats);
    }
}

fn flush_interval(shared: &Shared, stats: &Stats) {
    let mut s = stats.borrow_mut();
    if let Ok(mut agg) = shared.interval.lock() {
        agg.add(&s.interval);
    }
    s.interval.reset();
}

/// A batch that was sent and awaits its acknowledgement.
struct SentBatch {
    partition: i32,
    intended_ns: Vec<u64>,
    payload_bytes: u64,
}

/// A Produce request in flight.
struct InFlight {
    correlation: i32,
    batches: Vec<SentBatch>,
}

/// The producer's side of one connection.
struct ProducerConn {
    writer: FrameWriter,
    pending: Rc<RefCell<VecDeque<InFlight>>>,
    permits: Rc<Semaphore>,
    broken: Rc<Cell<bool>>,
}

/// One partition's open batch.
struct Slot {
    conn: usize,
    index: i32,
    batch: BatchBuilder,
    intended_ns: Vec<u64>,
    opened_ns: u64,
    /// Sequence number of the next message of this producer to this partition.
    next_seq: u32,
}

struct Producer {
    id: u32,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    stats: Stats,
    topic_name: TopicName,
    conns: Vec<ProducerConn>,
    slots: Vec<Slot>,
    keys: KeyChooser,
    schedule: Option<RateSchedule>,
    end_ns: u64,
    linger_ns: u64,
    batch_bytes: usize,
    /// Upper bound of one encoded record (value, key, varints): a batch is full when the
    /// next record might not fit in `batch_bytes`.
    record_bytes_max: usize,
    acks: i16,
    compression: Compression,
    /// Messages this producer may still create (`None`: no limit).
    left: Option<u64>,
}

impl Producer {
    fn new(
        plan: &Arc<Plan>,
        shared: &Arc<Shared>,
        stats: &Stats,
        spec: ProducerSpec,
        conns: Vec<(String, KafkaConn)>,
        zipf: Option<Rc<Zipf>>,
        start_ns: u64,
    ) -> Self {
        let w = &plan.workload;
        let topic = &plan.layout.topics[spec.topic];
        let max_in_flight = u64::from(w.max_in_flight);
        let mut pconns = Vec::with_capacity(conns.len());
        let mut leaders = Vec::with_capacity(conns.len());
        for (leader, conn) in conns {
            let (writer, reader) = conn.split();
            let pc = ProducerConn {
                writer,
                pending: Rc::new(RefCell::new(VecDeque::new())),
                permits: Rc::new(Semaphore::new(max_in_flight)),
                broken: Rc::new(Cell::new(false)),
            };
            if w.acks_wire() != 0 {
                let r = AckReader {
                    reader,
                    plan: plan.clone(),
                    shared: shared.clone(),
                    stats: stats.clone(),
                    pending: pc.pending.clone(),
                    permits: pc.permits.clone(),
                    broken: pc.broken.clone(),
                };
                glommio::spawn_local(r.run()).detach();
            }
            pconns.push(pc);
            leaders.push(leader);
        }
        let batch_bytes = w.batch_size as usize;
        let slots = topic
            .partitions
            .iter()
            .map(|p| Slot {
                conn: leaders.iter().position(|l| *l == p.leader).unwrap_or(0),
                index: p.index,
                batch: BatchBuilder::new(0),
                intended_ns: Vec::new(),
                opened_ns: 0,
                next_seq: 0,
            })
            .collect::<Vec<_>>();
        let keys = KeyChooser::new(
            w.key_distribution,
            slots.len(),
            w.key_count,
            zipf,
            spec.id as u64 + 1,
        );
        let schedule = (plan.rate_per_producer > 0.0).then(|| {
            // Stagger producers over one interval so they do not all fire at once.
            let phase = (1e9 / plan.rate_per_producer) * spec.id as f64
                / plan.producers_total.max(1) as f64;
            RateSchedule::new(start_ns + phase as u64, plan.rate_per_producer)
        });
        Self {
            id: spec.id as u32,
            topic_name: TopicName(StrBytes::from_string(topic.name.clone())),
            end_ns: start_ns + plan.warmup_ns() + plan.duration_ns(),
            linger_ns: (w.linger_ms * 1e6) as u64,
            batch_bytes,
            record_bytes_max: plan.payload.len() + RECORD_OVERHEAD_BYTES_MAX,
            acks: w.acks_wire(),
            compression: w.compression,
            plan: plan.clone(),
            shared: shared.clone(),
            stats: stats.clone(),
            conns: pconns,
            slots,
            keys,
            schedule,
            left: plan.message_quota,
        }
    }

    fn stopping(&self, now: u64) -> bool {
        now >= self.end_ns || self.shared.stop.load(Ordering::Relaxed) || self.left == Some(0)
    }

    async fn run(mut self) {
        loop {
            let now = self.shared.now_ns();
            if self.stopping(now) || self.conns.iter().all(|c| c.broken.get()) {
                break;
            }
            if self.schedule.is_some() {
                let mut n = 0;
                while n < CATCH_UP_MESSAGES_MAX && self.left != Some(0) {
                    let Some(intended) = self.schedule.as_mut().and_then(|s| s.take_due(now))
                    else {
                        break;
                    };
                    n += 1;
                    if self.append(intended, now) {
                        break; // a batch is full: send it before appending more
                    }
                }
                self.send_ready(false).await;
                let mut wake = self
                    .schedule
                    .as_ref()
                    .map_or(u64::MAX, RateSchedule::next_intended_ns);
                for s in &self.slots {
                    if !s.batch.is_empty() {
                        wake = wake.min(s.opened_ns + self.linger_ns);
                    }
                }
                let now = self.shared.now_ns();
                if wake > now {
                    let d = Duration::from_nanos(wake - now).min(IDLE_SLEEP_MAX);
                    glommio::timer::sleep(d).await;
                } else if n == CATCH_UP_MESSAGES_MAX {
                    glommio::executor().yield_task_queue_now().await;
                }
            } else {
                for _ in 0..256 {
                    if self.left == Some(0) || self.append(now, now) {
                        break; // a batch is full: send it before appending more
                    }
                }
                self.send_ready(false).await;
                // Writes that complete at once never yield: let the other producers, the
                // ack readers and the ticker of this core run.
                glommio::yield_if_needed().await;
            }
        }
        // Send what is left, then wait for the answers.
        self.send_ready(true).await;
        let deadline = Instant::now() + PRODUCE_DRAIN_TIMEOUT;
        for c in &self.conns {
            let all = u64::from(self.plan.workload.max_in_flight);
            while !c.broken.get() && c.permits.available() < all && Instant::now() < deadline {
                glommio::timer::sleep(Duration::from_millis(2)).await;
            }
        }
        let unanswered: u64 = self
            .conns
            .iter()
            .flat_map(|c| {
                c.pending
                    .borrow()
                    .iter()
                    .map(|f| {
                        f.batches
                            .iter()
                            .map(|b| b.intended_ns.len() as u64)
                            .sum::<u64>()
                    })
                    .collect::<Vec<_>>()
            })
            .sum();
        if unanswered > 0 {
            let mut s = self.stats.borrow_mut();
            s.result.failed_all += unanswered;
            s.error(&self.shared, "produce:unanswered".into(), unanswered);
        }
        self.shared.producers_running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Creates one message intended at `intended` (ns), appended at `now`. Returns true when
    /// its batch reached `batch_size` and must be sent before more messages are appended
    /// (brokers refuse batches over their `message.max.bytes`).
    #[inline]
    fn append(&mut self, intended: u64, now: u64) -> bool {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(1);
        }
        let (p, key) = self.keys.choose();
        let slot = &mut self.slots[p];
        if slot.batch.is_empty() {
            slot.opened_ns = now;
            // Slots start without a buffer, so thousands of idle partitions cost nothing.
            let one_message = super::batch::BATCH_HEADER_BYTES + self.plan.payload.len() + 64;
            if slot.batch.capacity() < one_message {
                slot.batch = BatchBuilder::new((self.batch_bytes + one_message).min(64 * 1024));
            }
        }
        // The value starts with the stamp (intended time, then producer id and sequence when
        // the message is long enough), followed by the payload template.
        let mut stamp = [0u8; STAMP_BYTES];
        stamp[..8].copy_from_slice(&intended.to_le_bytes());
        stamp[8..12].copy_from_slice(&self.id.to_le_bytes());
        stamp[12..16].copy_from_slice(&slot.next_seq.to_le_bytes());
        slot.next_seq = slot.next_seq.wrapping_add(1);
        let stamp_len = STAMP_BYTES.min(self.plan.payload.len());
        let ts_ms = self.plan.wall_epoch_ms + (now / 1_000_000) as i64;
        slot.batch.append(
            ts_ms,
            key,
            &stamp[..stamp_len],
            &self.plan.payload[stamp_len..],
        );
        slot.intended_ns.push(intended);
        let full = slot.batch.size_bytes() + self.record_bytes_max > self.batch_bytes;
        let mut s = self.stats.borrow_mut();
        s.result.sent_all += 1;
        if self.schedule.is_some() {
            let delay = now.saturating_sub(intended);
            s.interval.delay.record_ns(delay);
            if s.in_window(intended) {
                s.result.total.delay.record_ns(delay);
            }
        }
        full
    }

    /// Sends every batch that is full or has lingered long enough (all non-empty ones if
    /// `force`), one Produce request per connection.
    async fn send_ready(&mut self, force: bool) {
        let now = self.shared.now_ns();
        for ci in 0..self.conns.len() {
            let mut parts = Vec::new();
            let mut sent = Vec::new();
            for si in 0..self.slots.len() {
                let slot = &mut self.slots[si];
                if slot.conn != ci || slot.batch.is_empty() {
                    continue;
                }
                let ready = force
                    || slot.batch.size_bytes() + self.record_bytes_max > self.batch_bytes
                    || now.saturating_sub(slot.opened_ns) >= self.linger_ns;
                if !ready {
                    continue;
                }
                let payload_bytes = slot.batch.payload_bytes();
                let n = slot.intended_ns.len();
                let intended = std::mem::replace(&mut slot.intended_ns, Vec::with_capacity(n));
                let index = slot.index;
                match slot.batch.finish(self.compression) {
                    Ok(records) => {
                        parts.push(
                            PartitionProduceData::default()
                                .with_index(index)
                                .with_records(Some(records)),
                        );
                        sent.push(SentBatch {
                            partition: index,
                            intended_ns: intended,
                            payload_bytes,
                        });
                    }
                    Err(e) => {
                        let mut s = self.stats.borrow_mut();
                        s.result.failed_all += intended.len() as u64;
                        s.error(&self.shared, format!("produce:{e}"), 1);
                    }
                }
                self.keys.batch_sent(si);
            }
            if parts.is_empty() {
                continue;
            }
            self.send_request(ci, parts, sent).await;
        }
    }

    async fn send_request(
        &mut self,
        ci: usize,
        parts: Vec<PartitionProduceData>,
        sent: Vec<SentBatch>,
    ) {
        let req = ProduceRequest::default()
            .with_acks(self.acks)
            .with_timeout_ms(self.plan.workload.request_timeout_ms as i32)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(self.topic_name.clone())
                .with_partition_data(parts)]);
        let version = self.plan.layout.versions.produce;
        let conn = &mut self.conns[ci];
        let fail = |stats: &Stats, shared: &Shared, sent: &[SentBatch], kind: String| {
            let n: u64 = sent.iter().map(|b| b.intended_ns.len() as u64).sum();
            let mut s = stats.borrow_mut();
            s.result.failed_all += n;
            s.error(shared, kind, 1);
        };
        if self.acks == 0 {
            if let Err(e) = conn.writer.send(&req, version).await {
                conn.broken.set(true);
                fail(
                    &self.stats,
                    &self.shared,
                    &sent,
                    format!("produce:io: {}", short(&e)),
                );
                return;
            }
            // acks=0: "acknowledged" once written to the socket.
            let now = self.shared.now_ns();
            let mut s = self.stats.borrow_mut();
            record_acked(&mut s, &self.shared, now, &sent);
            return;
        }
        // Wait for a free in-flight slot, unless the run is abandoned (a broker that stopped
        // answering must not hang the client).
        let permit = async { conn.permits.acquire(1).await.is_ok() }
            .or(hard_stopped(&self.shared))
            .await;
        if !permit || conn.broken.get() {
            fail(
                &self.stats,
                &self.shared,
                &sent,
                "produce:connection-lost".into(),
            );
            return;
        }
        let correlation = conn.writer.next_correlation();
        conn.pending.borrow_mut().push_back(InFlight {
            correlation,
            batches: sent,
        });
        if let Err(e) = conn.writer.send(&req, version).await {
            conn.broken.set(true);
            let ours = conn.pending.borrow_mut().pop_back();
            if let Some(f) = ours {
                fail(
                    &self.stats,
                    &self.shared,
                    &f.batches,
                    format!("produce:io: {}", short(&e)),
                );
            }
            conn.permits.signal(1);
        }
    }
}

/// Resolves (to `false`) once the main thread abandons the run.
async fn hard_stopped(shared: &Shared) -> bool {
    while !shared.hard_stop.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Shortens an error for use as an error-count key.
fn short(e: &WireError) -> String {
    match e {
        WireError::Io { source, .. } => source.kind().to_string(),
        WireError::Timeout { what, .. } => format!("{what} timeout"),
        other => {
            let s = other.to_string();
            s.chars().take(80).collect()
        }
    }
}

/// Records acknowledged batches: publish latency per message, counts.
fn record_acked(s: &mut CoreStats, shared: &Shared, now: u64, batches: &[SentBatch]) {
    let mut msgs = 0u64;
    let mut bytes = 0u64;
    for b in batches {
        for &t in &b.intended_ns {
            let lat = now.saturating_sub(t);
            s.interval.publish.record_ns(lat);
            if s.in_window(t) {
                s.result.total.publish.record_ns(lat);
            }
        }
        msgs += b.intended_ns.len() as u64;
        bytes += b.payload_bytes;
    }
    s.result.acked_all += msgs;
    if s.in_window(now) {
        s.result.measured.produced_msgs += msgs;
        s.result.measured.produced_bytes += bytes;
    }
    shared.acked_all.fetch_add(msgs, Ordering::Relaxed);
    shared.live.produced_msgs.fetch_add(msgs, Ordering::Relaxed);
    shared
        .live
        .produced_bytes
        .fetch_add(bytes, Ordering::Relaxed);
}

/// Reads Produce responses of one connection, in order.
struct AckReader {
    reader: FrameReader,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    stats: Stats,
    pending: Rc<RefCell<VecDeque<InFlight>>>,
    permits: Rc<Semaphore>,
    broken: Rc<Cell<bool>>,
}

impl AckReader {
    async fn run(mut self) {
        let version = self.plan.layout.versions.produce;
        loop {
            let frame = match self.reader.next_frame().await {
                Ok(f) => f,
                Err(e) => {
                    self.broken.set(true);
                    let lost: Vec<InFlight> = self.pending.borrow_mut().drain(..).collect();
                    let n: u64 = lost
                        .iter()
                        .flat_map(|f| &f.batches)
                        .map(|b| b.intended_ns.len() as u64)
                        .sum();
                    let mut s = self.stats.borrow_mut();
                    s.result.failed_all += n;
                    if !self.shared.stop.load(Ordering::Relaxed) || n > 0 {
                        s.error(&self.shared, format!("produce:io: {}", short(&e)), 1);
                    }
                    self.permits.close();
                    return;
                }
            };
            let now = self.shared.now_ns();
            let Some(inflight) = self.pending.borrow_mut().pop_front() else {
                let mut s = self.stats.borrow_mut();
                s.error(&self.shared, "produce:unexpected-response".into(), 1);
                continue;
            };
            let decoded = decode_response::<ProduceRequest>(
                frame,
                inflight.correlation,
                version,
                self.reader.addr(),
            );
            let mut s = self.stats.borrow_mut();
            match decoded {
                Err(e) => {
                    let n: u64 = inflight
                        .batches
                        .iter()
                        .map(|b| b.intended_ns.len() as u64)
                        .sum();
                    s.result.failed_all += n;
                    s.error(&self.shared, format!("produce:{}", short(&e)), 1);
                }
                Ok(resp) => {
                    let mut answered = vec![false; inflight.batches.len()];
                    let mut ok = Vec::with_capacity(inflight.batches.len());
                    let mut batches: Vec<Option<SentBatch>> =
                        inflight.batches.into_iter().map(Some).collect();
                    for t in resp.responses {
                        for p in t.partition_responses {
                            let Some(i) = batches
                                .iter()
                                .position(|b| b.as_ref().is_some_and(|b| b.partition == p.index))
                            else {
                                continue;
                            };
                            answered[i] = true;
                            let Some(b) = batches[i].take() else { continue };
                            if p.error_code == 0 {
                                ok.push(b);
                            } else {
                                s.result.failed_all += b.intended_ns.len() as u64;
                                s.error(
                                    &self.shared,
                                    format!("produce:{}", error_name(p.error_code)),
                                    1,
                                );
                            }
                        }
                    }
                    let missing: u64 = batches
                        .iter()
                        .flatten()
                        .map(|b| b.intended_ns.len() as u64)
                        .sum();
                    if missing > 0 {
                        s.result.failed_all += missing;
                        s.error(
                            &self.shared,
                            "produce:partition-missing-in-response".into(),
                            1,
                        );
                    }
                    record_acked(&mut s, &self.shared, now, &ok);
                }
            }
            drop(s);
            self.permits.signal(1);
        }
    }
}

/// What one consumed message's sequence says.
#[derive(Debug, PartialEq, Eq)]
enum SeqCheck {
    /// The next expected message of its producer on this partition.
    InOrder,
    /// At or below one already seen: consumed twice (or reordered).
    Duplicate,
    /// This many messages of its producer were skipped before it.
    Skipped(u64),
}

/// Checks `seq` of `producer` against the next expected sequence (per partition map).
fn observe_seq(next: &mut HashMap<u32, u32>, producer: u32, seq: u32) -> SeqCheck {
    let expected = next.entry(producer).or_insert(0);
    if seq < *expected {
        SeqCheck::Duplicate
    } else {
        let skipped = u64::from(seq - *expected);
        *expected = seq.wrapping_add(1);
        if skipped == 0 {
            SeqCheck::InOrder
        } else {
            SeqCheck::Skipped(skipped)
        }
    }
}

/// One consumer's fetch loop against one leader.
struct Consumer {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    stats: Stats,
    topic: usize,
    conn: KafkaConn,
    parts: Vec<usize>,
}

impl Consumer {
    /// Whether to stop fetching; `offsets` are the next offsets to fetch, by partition.
    fn done(&self, offsets: &[(i32, i64)]) -> bool {
        let sh = &self.shared;
        if sh.hard_stop.load(Ordering::Relaxed) {
            return true;
        }
        if self.plan.consume_existing {
            let topic = &self.plan.layout.topics[self.topic];
            let read_all = self.parts.iter().zip(offsets).all(|(&pi, &(_, next))| {
                topic
                    .partitions
                    .get(pi)
                    .is_none_or(|p| next >= p.end_offset)
            });
            return read_all || sh.stop.load(Ordering::Relaxed);
        }
        if sh.producers_running.load(Ordering::SeqCst) > 0 {
            return false;
        }
        sh.consumed_all.load(Ordering::SeqCst) >= sh.acked_all.load(Ordering::SeqCst)
            || sh.now_ns() >= sh.drain_deadline_ns.load(Ordering::SeqCst)
    }

    async fn run(mut self) {
        let topic = &self.plan.layout.topics[self.topic];
        let name = TopicName(StrBytes::from_string(topic.name.clone()));
        // Next expected sequence by partition, then by producer: duplicates and gaps.
        let mut next_seq: HashMap<i32, HashMap<u32, u32>> = HashMap::new();
        let mut offsets: Vec<(i32, i64)> = self
            .parts
            .iter()
            .map(|&pi| {
                (
                    topic.partitions[pi].index,
                    topic.partitions[pi].start_offset,
                )
            })
            .collect();
        let version = self.plan.layout.versions.fetch;
        let w = &self.plan.workload;
        let partition_max = (w.batch_size as i32).max(1 << 20);
        let max_wait = w.fetch_max_wait_ms as i32;
        let timeout = Duration::from_millis(u64::from(w.fetch_max_wait_ms) + 10_000);
        // Send times stamped by another run (consume-existing) are on another clock.
        let record_e2e = !self.plan.consume_existing;
        while !self.done(&offsets) {
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(max_wait)
                .with_min_bytes(1)
                .with_max_bytes(FETCH_BYTES_MAX)
                .with_isolation_level(0)
                .with_session_id(0)
                .with_session_epoch(-1)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(name.clone())
                    .with_partitions(
                        offsets
                            .iter()
                            .map(|&(p, off)| {
                                FetchPartition::default()
                                    .with_partition(p)
                                    .with_fetch_offset(off)
                                    .with_partition_max_bytes(partition_max)
                                    .with_current_leader_epoch(-1)
                                    .with_log_start_offset(-1)
                                    .with_last_fetched_epoch(-1)
                            })
                            .collect(),
                    )]);
            let addr = self.conn.addr().to_string();
            let resp =
                match with_timeout("Fetch", &addr, timeout, self.conn.call(&req, version)).await {
                    Ok(r) => r,
                    Err(e) => {
                        let mut s = self.stats.borrow_mut();
                        s.error(&self.shared, format!("fetch:{}", short(&e)), 1);
                        return;
                    }
                };
            if resp.error_code != 0 {
                self.stats.borrow_mut().error(
                    &self.shared,
                    format!("fetch:{}", error_name(resp.error_code)),
                    1,
                );
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let now = self.shared.now_ns();
            let (got, got_bytes, backoff) = {
                let mut s = self.stats.borrow_mut();
                let mut got = 0u64;
                let mut got_bytes = 0u64;
                let mut backoff = false;
                for t in resp.responses {
                    for p in t.partitions {
                        let Some(slot) = offsets.iter_mut().find(|(i, _)| *i == p.partition_index)
                        else {
                            continue;
                        };
                        if p.error_code != 0 {
                            s.error(
                                &self.shared,
                                format!("fetch:{}", error_name(p.error_code)),
                                1,
                            );
                            backoff = true;
                            continue;
                        }
                        let Some(records) = p.records else { continue };
                        let window = s.window;
                        let CoreStats {
                            interval, result, ..
                        } = &mut *s;
                        let seqs = next_seq.entry(p.partition_index).or_default();
                        let walked = walk_records(&records, slot.1, |v| {
                            let Some(stamp) = v.get(..8) else { return };
                            let mut b = [0u8; 8];
                            b.copy_from_slice(stamp);
                            let intended = u64::from_le_bytes(b);
                            if let Some(ps) = v.get(8..STAMP_BYTES) {
                                let producer = u32::from_le_bytes([ps[0], ps[1], ps[2], ps[3]]);
                                let seq = u32::from_le_bytes([ps[4], ps[5], ps[6], ps[7]]);
                                match observe_seq(seqs, producer, seq) {
                                    SeqCheck::InOrder => {}
                                    SeqCheck::Duplicate => result.duplicates += 1,
                                    SeqCheck::Skipped(n) => result.gaps += n,
                                }
                            }
                            if !record_e2e || intended > now {
                                return; // not one of ours (or a clock we cannot compare)
                            }
                            let lat = now - intended;
                            interval.e2e.record_ns(lat);
                            if intended >= window.0 && intended < window.1 {
                                result.total.e2e.record_ns(lat);
                            }
                        });
                        match walked {
                            Ok(w) => {
                                slot.1 = w.next_offset;
                                got += w.records;
                                got_bytes += w.payload_bytes;
                            }
                            Err(e) => {
                                s.error(&self.shared, format!("fetch:{e}"), 1);
                                backoff = true;
                            }
                        }
                    }
                }
                s.result.consumed_all += got;
                if s.in_window(now) {
                    s.result.measured.consumed_msgs += got;
                    s.result.measured.consumed_bytes += got_bytes;
                }
                (got, got_bytes, backoff)
            };
            self.shared.consumed_all.fetch_add(got, Ordering::SeqCst);
            self.shared
                .live
                .consumed_msgs
                .fetch_add(got, Ordering::Relaxed);
            self.shared
                .live
                .consumed_bytes
                .fetch_add(got_bytes, Ordering::Relaxed);
            if backoff {
                glommio::timer::sleep(Duration::from_millis(100)).await;
            }
            glommio::yield_if_needed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_find_duplicates_and_gaps_per_producer() {
        let mut next = HashMap::new();
        assert_eq!(observe_seq(&mut next, 1, 0), SeqCheck::InOrder);
        assert_eq!(observe_seq(&mut next, 2, 0), SeqCheck::InOrder);
        assert_eq!(observe_seq(&mut next, 1, 1), SeqCheck::InOrder);
        assert_eq!(observe_seq(&mut next, 1, 1), SeqCheck::Duplicate);
        assert_eq!(observe_seq(&mut next, 1, 0), SeqCheck::Duplicate);
        assert_eq!(observe_seq(&mut next, 1, 5), SeqCheck::Skipped(3));
        assert_eq!(observe_seq(&mut next, 1, 6), SeqCheck::InOrder);
        assert_eq!(observe_seq(&mut next, 2, 1), SeqCheck::InOrder);
    }
}
