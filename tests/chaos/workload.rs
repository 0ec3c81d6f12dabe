//! The workload of a chaos run, with librdkafka (the rdkafka crate): producers with acks=all
//! (idempotent and not) and consumers (assign and subscribe) that record every send, ack,
//! failure and poll in a [`History`]; and the final read of every partition after the faults.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::checker::Event;

/// The history of a run: JSON lines appended to a file as events happen.
pub struct History {
    start: Instant,
    out: Mutex<std::io::BufWriter<std::fs::File>>,
    acks: AtomicU64,
}

impl History {
    /// A new history written to `path` (created or truncated).
    pub fn create(path: &Path) -> Arc<History> {
        let f = std::fs::File::create(path).expect("history file");
        Arc::new(History {
            start: Instant::now(),
            out: Mutex::new(std::io::BufWriter::new(f)),
            acks: AtomicU64::new(0),
        })
    }

    /// Milliseconds since the history was created.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Appends `e`.
    pub fn record(&self, e: &Event) {
        if matches!(e, Event::Ack { .. }) {
            self.acks.fetch_add(1, Ordering::Relaxed);
        }
        let mut w = self.out.lock().expect("history lock");
        serde_json::to_writer(&mut *w, e).expect("history write");
        w.write_all(b"\n").expect("history write");
    }

    /// Records a fault (`action`) now.
    pub fn fault(&self, action: &str) {
        eprintln!("chaos: {:>7.1} s  {action}", self.now_ms() as f64 / 1000.0);
        self.record(&Event::Fault {
            t_ms: self.now_ms(),
            action: action.to_string(),
        });
    }

    /// Acknowledgements recorded so far.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::Relaxed)
    }

    /// Flushes to the file.
    pub fn flush(&self) {
        self.out
            .lock()
            .expect("history lock")
            .flush()
            .expect("history flush");
    }
}

/// What the workload runs against.
#[derive(Clone)]
pub struct Target {
    pub bootstrap: String,
    pub topic: String,
    pub partitions: i32,
}

/// Client properties every client of a chaos run shares: quick metadata refreshes (leaders
/// move), bounded timeouts.
fn base_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("topic.metadata.refresh.interval.ms", "1000")
        .set("metadata.max.age.ms", "3000")
        .set("socket.timeout.ms", "10000")
        .set("reconnect.backoff.max.ms", "1000");
    c
}

struct ProducerCtx {
    history: Arc<History>,
    name: String,
}

impl ClientContext for ProducerCtx {}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let t_ms = self.history.now_ms();
        let value = |m: &rdkafka::message::BorrowedMessage<'_>| {
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned()
        };
        let e = match result {
            Ok(m) => Event::Ack {
                t_ms,
                producer: self.name.clone(),
                partition: m.partition(),
                offset: m.offset(),
                value: value(m),
            },
            Err((err, m)) => Event::SendFailed {
                t_ms,
                producer: self.name.clone(),
                partition: m.partition(),
                value: value(m),
                error: err.to_string(),
            },
        };
        self.history.record(&e);
    }
}

struct ConsumerCtx {
    history: Arc<History>,
    name: String,
    session: AtomicU64,
}

impl ClientContext for ConsumerCtx {}

impl ConsumerContext for ConsumerCtx {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            let session = self.session.fetch_add(1, Ordering::SeqCst) + 1;
            self.history.record(&Event::Session {
                t_ms: self.history.now_ms(),
                consumer: self.name.clone(),
                session,
            });
        }
    }
}

/// The running producers and consumers; [`Workload::stop`] ends them.
pub struct Workload {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// How many clients of each kind, and the send interval of each producer.
pub struct Mix {
    pub idempotent_producers: usize,
    pub plain_producers: usize,
    pub assign_consumers: usize,
    pub subscribe_consumers: usize,
    pub send_interval: Duration,
}

impl Workload {
    /// Starts the clients of `mix` against `target`, recording into `history`.
    pub fn start(target: &Target, mix: &Mix, history: &Arc<History>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let producers = (0..mix.idempotent_producers)
            .map(|i| (format!("pi{i}"), true))
            .chain((0..mix.plain_producers).map(|i| (format!("pp{i}"), false)));
        for (name, idempotent) in producers {
            let (t, h, s) = (target.clone(), history.clone(), stop.clone());
            let interval = mix.send_interval;
            threads.push(std::thread::spawn(move || {
                produce_loop(&t, &name, idempotent, interval, &h, &s)
            }));
        }
        for i in 0..mix.assign_consumers {
            let (t, h, s) = (target.clone(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                consume_loop(&t, &format!("ca{i}"), false, &h, &s)
            }));
        }
        for i in 0..mix.subscribe_consumers {
            let (t, h, s) = (target.clone(), history.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                consume_loop(&t, &format!("cs{i}"), true, &h, &s)
            }));
        }
        Workload { stop, threads }
    }

    /// Stops the clients: producers flush what they hold (their delivery timeout bounds it).
    /// A client still closing after [`STOP_MAX`] is left behind (a group consumer's close waits
    /// for its coordinator, which a failed run may have left down); returns how many were.
    pub fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + STOP_MAX;
        while Instant::now() < deadline && !self.threads.iter().all(|t| t.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut left = 0;
        for t in self.threads {
            if t.is_finished() {
                t.join().expect("workload thread");
            } else {
                left += 1;
            }
        }
        left
    }
}

/// How long [`Workload::stop`] waits for the clients to end.
const STOP_MAX: Duration = Duration::from_millis(DELIVERY_TIMEOUT_MS + 30_000);

/// The delivery timeout of the producers: a send not acknowledged by then fails for good.
const DELIVERY_TIMEOUT_MS: u64 = 30_000;

fn produce_loop(
    t: &Target,
    name: &str,
    idempotent: bool,
    interval: Duration,
    history: &Arc<History>,
    stop: &AtomicBool,
) {
    let ctx = ProducerCtx {
        history: history.clone(),
        name: name.to_string(),
    };
    let producer: ThreadedProducer<ProducerCtx> = base_config(&t.bootstrap)
        .set("acks", "all")
        .set(
            "enable.idempotence",
            if idempotent { "true" } else { "false" },
        )
        .set("message.timeout.ms", DELIVERY_TIMEOUT_MS.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("linger.ms", "2")
        .create_with_context(ctx)
        .expect("producer");
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        let value = format!("{name}-{n}");
        let partition = (n % t.partitions as u64) as i32;
        let record = BaseRecord::<(), String>::to(&t.topic)
            .partition(partition)
            .payload(&value);
        match producer.send(record) {
            Ok(()) => {
                history.record(&Event::Send {
                    t_ms: history.now_ms(),
                    producer: name.to_string(),
                    idempotent,
                    partition,
                    value,
                });
                n += 1;
            }
            // Queue full (the cluster is slow): try again after the interval.
            Err((e, _)) => {
                if !matches!(
                    e.rdkafka_error_code(),
                    Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                ) {
                    eprintln!("chaos: {name}: send refused: {e}");
                }
            }
        }
        std::thread::sleep(interval);
    }
    // Whatever is still queued gets its delivery report (ack or failure) within the timeout.
    let _ = producer.flush(Duration::from_millis(DELIVERY_TIMEOUT_MS + 5_000));
}

fn consume_loop(
    t: &Target,
    name: &str,
    subscribe: bool,
    history: &Arc<History>,
    stop: &AtomicBool,
) {
    let ctx = ConsumerCtx {
        history: history.clone(),
        name: name.to_string(),
        session: AtomicU64::new(0),
    };
    let mut cfg = base_config(&t.bootstrap);
    cfg.set("fetch.wait.max.ms", "100")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    if subscribe {
        cfg.set("group.id", "chaos-subscribers")
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000");
    } else {
        cfg.set("group.id", format!("chaos-{name}"))
            .set("enable.auto.commit", "false");
    }
    let consumer: BaseConsumer<ConsumerCtx> = cfg.create_with_context(ctx).expect("consumer");
    if subscribe {
        consumer.subscribe(&[&t.topic]).expect("subscribe");
    } else {
        let mut tpl = TopicPartitionList::new();
        for p in 0..t.partitions {
            tpl.add_partition_offset(&t.topic, p, Offset::Beginning)
                .expect("partition list");
        }
        consumer.assign(&tpl).expect("assign");
        consumer.context().session.store(1, Ordering::SeqCst);
        history.record(&Event::Session {
            t_ms: history.now_ms(),
            consumer: name.to_string(),
            session: 1,
        });
    }
    while !stop.load(Ordering::SeqCst) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            history.record(&Event::Read {
                t_ms: history.now_ms(),
                consumer: name.to_string(),
                session: consumer.context().session.load(Ordering::SeqCst),
                partition: m.partition(),
                offset: m.offset(),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            });
        }
    }
}

/// Reads every partition of `t` from its start up to its high watermark (taken once the
/// faults have healed), recording `FinalRead`s and one `FinalEnd` per partition. Bounded by
/// `within`; a partition not read to its end is recorded with the end it reached.
pub fn final_read(t: &Target, history: &Arc<History>, within: Duration) {
    let deadline = Instant::now() + within;
    let consumer: BaseConsumer = base_config(&t.bootstrap)
        .set("group.id", "chaos-final")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for p in 0..t.partitions {
        while Instant::now() < deadline {
            match consumer.fetch_watermarks(&t.topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => {
                    ends.insert(p, high);
                    break;
                }
                Err(e) => {
                    eprintln!("chaos: final read: watermarks of partition {p}: {e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..t.partitions {
        tpl.add_partition_offset(&t.topic, p, Offset::Beginning)
            .expect("partition list");
    }
    consumer.assign(&tpl).expect("assign");
    let mut next: BTreeMap<i32, i64> = (0..t.partitions).map(|p| (p, 0)).collect();
    let done = |next: &BTreeMap<i32, i64>| {
        ends.iter()
            .all(|(p, end)| next.get(p).is_some_and(|n| n >= end))
            && ends.len() == t.partitions as usize
    };
    while !done(&next) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            history.record(&Event::FinalRead {
                t_ms: history.now_ms(),
                partition: m.partition(),
                offset: m.offset(),
                value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            });
            next.insert(m.partition(), m.offset() + 1);
        }
    }
    for p in 0..t.partitions {
        let reached = next.get(&p).copied().unwrap_or(0);
        // No high watermark known: the read cannot be called complete.
        let high = ends.get(&p).copied().unwrap_or(i64::MAX);
        history.record(&Event::FinalEnd {
            t_ms: history.now_ms(),
            partition: p,
            high_watermark: high,
            reached: reached.min(high),
        });
    }
    history.flush();
}
