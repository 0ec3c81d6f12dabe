//! The load generator: `shardlog load` ([`run_cli`]).
//!
//! It drives any Kafka-compatible broker with a workload file ([`workload`]), thread-per-core:
//! one glommio `LocalExecutor` per client core, each running its share of producers and
//! consumers over its own connections ([`worker`]). Producers build v2 record batches by hand
//! ([`batch`]) and keep up to `max_in_flight` Produce requests in flight per connection;
//! consumers fetch their partitions directly (no group protocol) and read the send time each
//! message carries in its first 8 bytes.
//!
//! At a fixed rate, every message has an intended send time ([`rate`]) and latency counts from
//! it, so a slow broker cannot hide behind a slower sender (no coordinated omission). Three
//! histograms are kept: publish latency (intended send to ack), end-to-end latency (intended
//! send to consumption) and publish delay (intended to actual send).
//!
//! Two variants end on their own before their duration: `--messages N` produces a fixed
//! volume, and `--consume-existing` produces nothing and reads existing topics from their
//! earliest offsets to the end offsets captured at the start (consume from disk after a broker
//! restart; no latency is recorded then, the send times belong to another run).
//!
//! The main thread runs the control plane ([`cluster`]: versions, topic creation, leaders,
//! end offsets), starts the cores, prints a progress line every second on stderr, stops them
//! at the end or on Ctrl-C, and writes RUN.json plus `.hgrm` files ([`crate::hist`]).

#![warn(missing_docs)]

pub mod batch;
pub mod cluster;
pub mod keys;
pub mod rate;
pub mod wire;
pub mod worker;
pub mod workload;

use crate::hist::{
    render_show, write_hgrm, HistError, HistogramRecord, LatencyHistogram, MachineInfo, RateSample,
    RunResult, RunSummary, RUN_FORMAT_VERSION,
};
use glommio::{LocalExecutorBuilder, Placement};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use worker::{ConsumerSpec, CoreResult, Hists, Plan, ProducerSpec, Shared};
use workload::{AcksValue, Workload, WorkloadError};

/// Consumers stop waiting for the last messages this long after producing stopped.
const CONSUMER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Cores are abandoned this long after producing stopped.
const RUN_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The `shardlog load` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Broker to bootstrap from, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Workload file (TOML), e.g. perf/workloads/max-rate.toml.
    #[arg(long)]
    pub workload: PathBuf,
    /// Where to write the result; `.hgrm` files go beside it (RUN.publish.hgrm, ...).
    #[arg(long, default_value = "RUN.json")]
    pub out: PathBuf,
    /// Override the measured duration, seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Override the warm-up, seconds.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Override the producer rate, msg/s over all producers (0 = max).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Override acks: 0, 1, -1 or all.
    #[arg(long)]
    pub acks: Option<String>,
    /// Client cores (executors) to use; default: all online CPUs.
    #[arg(long)]
    pub cores: Option<usize>,
    /// A max-rate RUN.json whose produce rate scales `producer_rate_fraction_of_max`.
    #[arg(long)]
    pub max_from: Option<PathBuf>,
    /// Topic name prefix; default: a fresh `shardlog-load-XXXXXX-` per run.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Pin client core i to CPU (first_cpu + i) mod CPUs, e.g. to keep off the broker's CPUs.
    #[arg(long, default_value_t = 0)]
    pub first_cpu: usize,
    /// Do not pin executors to CPUs (for shared machines).
    #[arg(long)]
    pub no_pin: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Connection timeout, ms: an unreachable broker fails this fast.
    #[arg(long, default_value_t = 3000)]
    pub connect_timeout_ms: u64,
    /// Override consumers per topic (0: produce only).
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Stop producing after this many messages over all producers (split evenly between them);
    /// the run then ends once they are acknowledged (and consumed), before `--duration` if
    /// sooner. For producing a fixed volume, e.g. before `--consume-existing`.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Produce nothing: the consumers read the existing topics named by `--topic-prefix`
    /// (PREFIX0, PREFIX1, ...) from their earliest offset to the end offsets captured at the
    /// start, and the run ends when all of it is read (or at `--duration`). No warm-up, and
    /// no end-to-end latency (the send times stamped in the messages belong to another run).
    #[arg(long, requires = "topic_prefix")]
    pub consume_existing: bool,
}

/// Why a load run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The workload file.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// Talking to the broker before the run (unreachable, unsupported, ...).
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// Writing the result.
    #[error(transparent)]
    Hist(#[from] HistError),
    /// The runtime could not start.
    #[error("runtime: {0}")]
    Runtime(String),
    /// A bad command-line value.
    #[error("{0}")]
    Usage(String),
    /// A core failed during the run (the partial result was still written).
    #[error("run failed: {0}")]
    Failed(String),
}

/// Set by SIGINT; reset at the start of each run.
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn interrupt_flag() -> Arc<AtomicBool> {
    INTERRUPTED
        .get_or_init(|| {
            let flag = Arc::new(AtomicBool::new(false));
            // A second Ctrl-C while the first is being handled exits at once.
            let _ = signal_hook::flag::register_conditional_shutdown(
                signal_hook::consts::SIGINT,
                130,
                flag.clone(),
            );
            if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone()) {
                tracing::warn!("cannot handle Ctrl-C: {e}");
            }
            flag
        })
        .clone()
}

/// Applies the command-line overrides to a workload.
pub fn apply_overrides(w: &mut Workload, args: &LoadArgs) -> Result<(), LoadError> {
    if let Some(d) = args.duration {
        w.duration_secs = d;
    }
    if let Some(d) = args.warmup {
        w.warmup_secs = d;
    }
    if let Some(r) = args.rate {
        w.producer_rate = r;
        w.producer_rate_fraction_of_max = None;
    }
    if let Some(a) = &args.acks {
        w.acks = AcksValue::Text(a.clone());
    }
    if let Some(c) = args.consumers {
        w.consumers_per_topic = c;
    }
    if args.messages == Some(0) {
        return Err(LoadError::Usage("--messages must be at least 1".into()));
    }
    if args.consume_existing {
        if args.topic_prefix.is_none() {
            return Err(LoadError::Usage(
                "--consume-existing reads the topics of an earlier run: give their --topic-prefix"
                    .into(),
            ));
        }
        if w.consumers_per_topic == 0 {
            return Err(LoadError::Usage(format!(
                "--consume-existing needs consumers, and workload {} has consumers_per_topic = 0 (give --consumers N)",
                w.name
            )));
        }
        // Nothing is produced: no rate to scale, no warm-up (the whole read is measured).
        w.producer_rate = 0.0;
        w.producer_rate_fraction_of_max = None;
        w.warmup_secs = 0.0;
    }
    if let Some(f) = w.producer_rate_fraction_of_max {
        let Some(path) = &args.max_from else {
            return Err(LoadError::Usage(format!(
                "workload {} sets producer_rate_fraction_of_max = {f}: give --max-from MAX_RUN.json (a max-rate run) or --rate",
                w.name
            )));
        };
        let max = RunResult::read(path)?;
        w.producer_rate = (max.summary.produce_msgs_per_sec * f).round().max(1.0);
        tracing::info!(rate = w.producer_rate, "rate from {} x {f}", path.display());
    }
    w.validate(&args.workload)?;
    Ok(())
}

/// Raises the open-file soft limit to the hard limit (a producer holds one socket per leader).
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Runs `shardlog load ...`: the workload against the broker, progress on stderr, the result
/// written to `args.out` (and returned). Ctrl-C stops early and still writes a partial result.
pub fn run_cli(args: LoadArgs) -> Result<RunResult, LoadError> {
    let mut w = Workload::load(&args.workload)?;
    apply_overrides(&mut w, &args)?;
    raise_nofile_limit();
    let payload = bytes::Bytes::from(w.payload()?);

    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cores = args.cores.unwrap_or(online).max(1);
    if cores > 1024 {
        return Err(LoadError::Usage(format!(
            "--cores {cores} is more than 1024"
        )));
    }
    let prefix = args.topic_prefix.clone().unwrap_or_else(|| {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        format!(
            "shardlog-load-{:06x}-",
            keys::Rng::new(seed).next_u64() & 0xff_ffff
        )
    });
    let topic_names: Vec<String> = (0..w.topics).map(|i| format!("{prefix}{i}")).collect();
    let connect_timeout = Duration::from_millis(args.connect_timeout_ms.max(1));

    // Control plane on a short-lived executor on this thread.
    let layout = {
        let ex = LocalExecutorBuilder::default()
            .name("load-control")
            .make()
            .map_err(|e| LoadError::Runtime(e.to_string()))?;
        let bootstrap = args.bootstrap.clone();
        let names = topic_names.clone();
        let parts = w.partitions_per_topic;
        let existing = args.consume_existing;
        ex.run(async move {
            cluster::prepare(&bootstrap, &names, parts, existing, connect_timeout).await
        })?
    };

    // Deal producers and consumers over the cores, round-robin.
    let mut producers: Vec<Vec<ProducerSpec>> = vec![Vec::new(); cores];
    let mut consumers: Vec<Vec<ConsumerSpec>> = vec![Vec::new(); cores];
    let mut n = 0usize;
    let producers_per_topic = if args.consume_existing {
        0
    } else {
        w.producers_per_topic
    };
    for t in 0..layout.topics.len() {
        for _ in 0..producers_per_topic {
            producers[n % cores].push(ProducerSpec { id: n, topic: t });
            n += 1;
        }
    }
    let producers_total = n;
    let mut cid = 0usize;
    for (t, topic) in layout.topics.iter().enumerate() {
        let c = w.consumers_per_topic as usize;
        for k in 0..c {
            let parts: Vec<usize> = (0..topic.partitions.len()).filter(|p| p % c == k).collect();
            if parts.is_empty() {
                continue;
            }
            consumers[n % cores].push(ConsumerSpec {
                id: cid,
                topic: t,
                partitions: parts,
            });
            n += 1;
            cid += 1;
        }
    }
    let existing_msgs: u64 = if args.consume_existing {
        layout
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| p.end_offset.saturating_sub(p.start_offset).max(0) as u64)
            .sum()
    } else {
        0
    };
    let message_quota = args
        .messages
        .map(|m| m.div_ceil(producers_total.max(1) as u64));
    let rate_per_producer = if w.producer_rate > 0.0 && producers_total > 0 {
        w.producer_rate / producers_total as f64
    } else {
        0.0
    };
    let shared = Arc::new(Shared::new(cores, producers_total));
    let wall_epoch_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - shared.epoch.elapsed().as_millis() as i64;
    let plan = Arc::new(Plan {
        workload: w.clone(),
        layout,
        payload,
        rate_per_producer,
        producers,
        consumers,
        producers_total,
        wall_epoch_ms,
        connect_timeout,
        consume_existing: args.consume_existing,
        message_quota,
    });

    let interrupted = interrupt_flag();
    interrupted.store(false, Ordering::SeqCst);

    let mut handles = Vec::with_capacity(cores);
    for core in 0..cores {
        let placement = if args.no_pin {
            Placement::Unbound
        } else {
            Placement::Fixed((args.first_cpu + core) % online)
        };
        let plan = plan.clone();
        let shared2 = shared.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("load-{core}"))
            .spawn(move || async move { worker::run_core(core, plan, shared2).await });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                // The barrier expects every core: fail the run and release the others.
                shared.fail(format!("cannot start core {core}: {e}"));
                for _ in core..cores {
                    shared.cores_running.fetch_sub(1, Ordering::SeqCst);
                }
                return Err(LoadError::Runtime(format!("cannot start core {core}: {e}")));
            }
        }
    }

    shared.barrier.wait(); // every core connected (or failed)
    let setup_failed = shared.fatal.lock().ok().and_then(|f| f.clone());
    let start_ns = shared.now_ns();
    shared.start_ns.store(start_ns, Ordering::SeqCst);
    let started_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    shared.barrier.wait(); // go
    if let Some(msg) = setup_failed {
        for h in handles {
            let _ = h.join();
        }
        return Err(LoadError::Failed(msg));
    }

    let warm_ns = (w.warmup_secs * 1e9) as u64;
    let end_ns = start_ns + warm_ns + (w.duration_secs * 1e9) as u64;
    let mut progress = Progress::new(&shared, start_ns, warm_ns, args.quiet);
    let mut stopped_ns = end_ns;
    let mut was_interrupted = false;
    // The run: one progress sample per second until the end or Ctrl-C.
    loop {
        let next = progress.next_tick_ns().min(end_ns);
        while shared.now_ns() < next {
            if interrupted.load(Ordering::SeqCst)
                || shared.stop.load(Ordering::SeqCst)
                || shared.cores_running.load(Ordering::SeqCst) == 0
            {
                break;
            }
            let left = next.saturating_sub(shared.now_ns());
            std::thread::sleep(Duration::from_nanos(left).min(Duration::from_millis(20)));
        }
        let now = shared.now_ns();
        if interrupted.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
            was_interrupted = true;
            stopped_ns = now.min(end_ns);
            progress.sample(&shared, now, "stopping");
            break;
        }
        progress.sample(&shared, now, "");
        if now >= end_ns {
            break;
        }
        if shared.cores_running.load(Ordering::SeqCst) == 0 {
            // Everything finished early: a fixed volume produced, or existing topics read.
            let finished = shared.finished_ns.load(Ordering::SeqCst);
            stopped_ns = if finished > 0 { finished.min(now) } else { now };
            break;
        }
    }
    // Drain: producers stop, in-flight requests are answered, consumers catch up.
    shared.stop.store(true, Ordering::SeqCst);
    let drain_start = shared.now_ns();
    shared.drain_deadline_ns.store(
        drain_start + CONSUMER_DRAIN_TIMEOUT.as_nanos() as u64,
        Ordering::SeqCst,
    );
    let give_up = Instant::now() + RUN_DRAIN_TIMEOUT;
    while shared.cores_running.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= give_up
            || (was_interrupted && interrupted.load(Ordering::SeqCst) && Instant::now() >= give_up)
        {
            shared.hard_stop.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(20));
        if progress.next_tick_ns() <= shared.now_ns() {
            let now = shared.now_ns();
            progress.sample(&shared, now, "draining");
        }
        if Instant::now() >= give_up + Duration::from_secs(5) {
            break;
        }
    }
    let mut merged = CoreResult::default();
    let mut join_errors = Vec::new();
    if shared.cores_running.load(Ordering::SeqCst) == 0 {
        for h in handles {
            match h.join() {
                Ok(r) => merge_core(&mut merged, r),
                Err(e) => join_errors.push(e.to_string()),
            }
        }
    } else {
        join_errors.push("a core did not finish draining in time; its results are lost".into());
    }
    for e in &join_errors {
        *merged.errors.entry(format!("core: {e}")).or_default() += 1;
    }
    let fatal = shared.fatal.lock().ok().and_then(|f| f.clone());
    let interrupted_run = was_interrupted || fatal.is_some() || !join_errors.is_empty();

    let measured_ns = stopped_ns.saturating_sub(start_ns + warm_ns);
    let result = build_result(BuildInput {
        args: &args,
        workload: &w,
        cores,
        started_at_unix_ms,
        measured_secs: measured_ns as f64 / 1e9,
        interrupted: interrupted_run,
        merged,
        rates: progress.samples,
        existing_msgs,
    });
    write_outputs(&result, &args.out)?;
    print!("{}", render_show(&result));
    let _ = std::io::stdout().flush();
    if let Some(msg) = fatal {
        return Err(LoadError::Failed(msg));
    }
    Ok(result)
}

fn merge_core(into: &mut CoreResult, r: CoreResult) {
    into.total.add(&r.total);
    into.measured.produced_msgs += r.measured.produced_msgs;
    into.measured.produced_bytes += r.measured.produced_bytes;
    into.measured.consumed_msgs += r.measured.consumed_msgs;
    into.measured.consumed_bytes += r.measured.consumed_bytes;
    into.sent_all += r.sent_all;
    into.acked_all += r.acked_all;
    into.failed_all += r.failed_all;
    into.consumed_all += r.consumed_all;
    into.duplicates += r.duplicates;
    into.gaps += r.gaps;
    for (k, v) in r.errors {
        *into.errors.entry(k).or_default() += v;
    }
}

struct BuildInput<'a> {
    args: &'a LoadArgs,
    workload: &'a Workload,
    cores: usize,
    started_at_unix_ms: u64,
    measured_secs: f64,
    interrupted: bool,
    merged: CoreResult,
    rates: Vec<RateSample>,
    existing_msgs: u64,
}

fn build_result(b: BuildInput<'_>) -> RunResult {
    let m = &b.merged;
    let secs = b.measured_secs;
    let per = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };
    let summary = RunSummary {
        measured_secs: secs,
        produced_msgs: m.measured.produced_msgs,
        produced_bytes: m.measured.produced_bytes,
        produce_msgs_per_sec: per(m.measured.produced_msgs),
        produce_mb_per_sec: per(m.measured.produced_bytes) / 1e6,
        consumed_msgs: m.measured.consumed_msgs,
        consumed_bytes: m.measured.consumed_bytes,
        consume_msgs_per_sec: per(m.measured.consumed_msgs),
        consume_mb_per_sec: per(m.measured.consumed_bytes) / 1e6,
        total_sent_msgs: m.sent_all,
        total_acked_msgs: m.acked_all,
        total_failed_msgs: m.failed_all,
        total_consumed_msgs: m.consumed_all,
        duplicate_msgs: m.duplicates,
        skipped_msgs: m.gaps,
        target_rate: b.workload.producer_rate,
        existing_msgs: b.existing_msgs,
    };
    let mut histograms = BTreeMap::new();
    if !b.args.consume_existing {
        histograms.insert("publish".to_string(), HistogramRecord::of(&m.total.publish));
    }
    if b.workload.consumers_per_topic > 0 && !b.args.consume_existing {
        histograms.insert("e2e".to_string(), HistogramRecord::of(&m.total.e2e));
    }
    if b.workload.producer_rate > 0.0 {
        histograms.insert("delay".to_string(), HistogramRecord::of(&m.total.delay));
    }
    RunResult {
        format_version: RUN_FORMAT_VERSION,
        tool: format!("shardlog-load {}", env!("CARGO_PKG_VERSION")),
        started_at_unix_ms: b.started_at_unix_ms,
        workload_name: b.workload.name.clone(),
        workload: serde_json::to_value(b.workload).unwrap_or(serde_json::Value::Null),
        broker: b.args.bootstrap.clone(),
        machine: MachineInfo::detect(),
        client_cores: b.cores,
        interrupted: b.interrupted,
        summary,
        errors: m.errors.clone(),
        rates: b.rates,
        histograms,
    }
}

/// Writes RUN.json and one `.hgrm` per histogram beside it (`RUN.publish.hgrm`, ...).
pub fn write_outputs(result: &RunResult, out: &Path) -> Result<(), HistError> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| HistError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    result.write(out)?;
    let stem = out
        .file_stem()
        .map_or_else(|| "RUN".into(), |s| s.to_string_lossy().into_owned());
    for (name, rec) in &result.histograms {
        let h = rec.decode(name)?;
        let path = out.with_file_name(format!("{stem}.{name}.hgrm"));
        std::fs::write(&path, write_hgrm(&h)).map_err(|source| HistError::Io { path, source })?;
    }
    Ok(())
}

/// The per-second progress line and samples.
struct Progress {
    start_ns: u64,
    warm_end_ns: u64,
    tick: u64,
    last: [u64; 5],
    last_ns: u64,
    so_far: Hists,
    quiet: bool,
    samples: Vec<RateSample>,
}

impl Progress {
    fn new(shared: &Shared, start_ns: u64, warm_ns: u64, quiet: bool) -> Self {
        if let Ok(mut agg) = shared.interval.lock() {
            *agg = Hists::default();
        }
        Self {
            start_ns,
            warm_end_ns: start_ns + warm_ns,
            tick: 1,
            last: [0; 5],
            last_ns: start_ns,
            so_far: Hists::default(),
            quiet,
            samples: Vec::new(),
        }
    }

    fn next_tick_ns(&self) -> u64 {
        self.start_ns + self.tick * 1_000_000_000
    }

    fn sample(&mut self, shared: &Shared, now: u64, note: &str) {
        let l = &shared.live;
        let cur = [
            l.produced_msgs.load(Ordering::Relaxed),
            l.produced_bytes.load(Ordering::Relaxed),
            l.consumed_msgs.load(Ordering::Relaxed),
            l.consumed_bytes.load(Ordering::Relaxed),
            l.errors.load(Ordering::Relaxed),
        ];
        let d: Vec<u64> = cur
            .iter()
            .zip(&self.last)
            .map(|(c, p)| c.saturating_sub(*p))
            .collect();
        self.last = cur;
        let secs = (now.saturating_sub(self.last_ns) as f64 / 1e9).max(1e-3);
        // A sample belongs to the warm-up if its second began before the warm-up ended.
        let warmup = self.last_ns < self.warm_end_ns;
        self.last_ns = now;
        let interval = shared
            .interval
            .lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        if !warmup {
            self.so_far.add(&interval);
        }
        let p99 = |h: &LatencyHistogram| h.value_at_quantile(0.99);
        let sample = RateSample {
            t_secs: (now - self.start_ns) as f64 / 1e9,
            warmup,
            produced_msgs: d[0],
            produced_bytes: d[1],
            consumed_msgs: d[2],
            consumed_bytes: d[3],
            errors: d[4],
            publish_p99_us: p99(&interval.publish),
            e2e_p99_us: p99(&interval.e2e),
        };
        if !self.quiet {
            let ms = |us: u64| us as f64 / 1000.0;
            eprintln!(
                "[{:6.1}s] produce {:>9.0} msg/s {:>8.2} MB/s | consume {:>9.0} msg/s | publish p99 {:>8.3} ms (run {:>8.3}) | e2e p99 {:>8.3} ms | errors {}{}{}",
                sample.t_secs,
                d[0] as f64 / secs,
                d[1] as f64 / secs / 1e6,
                d[2] as f64 / secs,
                ms(sample.publish_p99_us),
                ms(p99(&self.so_far.publish)),
                ms(sample.e2e_p99_us),
                cur[4],
                if warmup { " [warm-up]" } else { "" },
                if note.is_empty() { String::new() } else { format!(" [{note}]") },
            );
        }
        self.samples.push(sample);
        self.tick = ((now - self.start_ns) / 1_000_000_000) + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(workload: PathBuf) -> LoadArgs {
        LoadArgs {
            bootstrap: "127.0.0.1:9092".into(),
            workload,
            out: PathBuf::from("RUN.json"),
            duration: None,
            warmup: None,
            rate: None,
            acks: None,
            cores: None,
            max_from: None,
            topic_prefix: None,
            first_cpu: 0,
            no_pin: true,
            quiet: true,
            connect_timeout_ms: 1000,
            consumers: None,
            messages: None,
            consume_existing: false,
        }
    }

    #[test]
    fn overrides_replace_the_file_values_and_are_validated() {
        let path = PathBuf::from("w.toml");
        let mut w = Workload::parse(&path, "message_size = 100\nacks = 1\n").expect("parses");
        let mut a = args(path.clone());
        a.duration = Some(3.0);
        a.warmup = Some(0.0);
        a.rate = Some(500.0);
        a.acks = Some("all".into());
        apply_overrides(&mut w, &a).expect("valid");
        assert_eq!(
            (w.duration_secs, w.warmup_secs, w.producer_rate),
            (3.0, 0.0, 500.0)
        );
        assert_eq!(w.acks_wire(), -1);
        a.acks = Some("most".into());
        let err = apply_overrides(&mut w, &a).unwrap_err().to_string();
        assert!(err.contains("`acks`"), "{err}");
    }

    #[test]
    fn fraction_of_max_needs_and_uses_a_max_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("half.toml");
        let text = "message_size = 100\nproducer_rate_fraction_of_max = 0.5\n";
        let mut w = Workload::parse(&path, text).expect("parses");
        let err = apply_overrides(&mut w, &args(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--max-from"), "{err}");

        let mut max: RunResult = serde_json::from_str(&sample_run_json()).expect("sample");
        max.summary.produce_msgs_per_sec = 40_000.0;
        let max_path = dir.path().join("max.json");
        max.write(&max_path).expect("write");
        let mut a = args(path.clone());
        a.max_from = Some(max_path);
        apply_overrides(&mut w, &a).expect("valid");
        assert_eq!(w.producer_rate, 20_000.0);
    }

    /// A minimal RUN.json.
    fn sample_run_json() -> String {
        let r = RunResult {
            format_version: RUN_FORMAT_VERSION,
            tool: "t".into(),
            started_at_unix_ms: 0,
            workload_name: "max".into(),
            workload: serde_json::Value::Null,
            broker: "b".into(),
            machine: MachineInfo::default(),
            client_cores: 1,
            interrupted: false,
            summary: RunSummary::default(),
            errors: BTreeMap::new(),
            rates: Vec::new(),
            histograms: BTreeMap::new(),
        };
        serde_json::to_string(&r).expect("serializes")
    }

    #[test]
    fn outputs_are_run_json_and_one_hgrm_per_histogram() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r: RunResult = serde_json::from_str(&sample_run_json()).expect("sample");
        let mut h = LatencyHistogram::new();
        h.record_us(1500);
        r.histograms
            .insert("publish".into(), HistogramRecord::of(&h));
        let out = dir.path().join("runs/x/max.json");
        write_outputs(&r, &out).expect("written");
        assert!(out.exists());
        let hgrm =
            std::fs::read_to_string(dir.path().join("runs/x/max.publish.hgrm")).expect("hgrm");
        assert!(hgrm.contains("1.500"), "{hgrm}");
    }
}
