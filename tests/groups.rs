//! Consumer groups and committed offsets, driven by librdkafka (the `rdkafka` crate).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const GROUP_SETTINGS: &[&str] = &[
    "group.initial.rebalance.delay.ms=0",
    "log.preallocate.bytes=1048576",
];

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .create()
        .expect("admin");
    let r = futures_lite::future::block_on(admin.create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new(),
    ))
    .expect("create");
    r.into_iter().for_each(|r| {
        r.expect("created");
    });
}

fn produce(b: &Broker, topic: &str, n: usize) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("v{i}");
        loop {
            match p.send(BaseRecord::to(topic).key(&key).payload(&value)) {
                Ok(()) => break,
                Err(_) => {
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn group_consumer(b: &Broker, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

/// Polls every consumer until `done` holds over their assignments, or panics after `limit`.
fn poll_until(
    consumers: &[&BaseConsumer],
    limit: Duration,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + limit;
    loop {
        for c in consumers {
            if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
                panic!("consumer error: {e}");
            }
        }
        let sets: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&sets) {
            return sets;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached; assignments {sets:?}"
        );
    }
}

#[test]
fn two_consumers_split_partitions_and_the_survivor_takes_all_after_a_leave() {
    let b = Broker::start(2, GROUP_SETTINGS);
    create_topic(&b, "g4", 4);
    produce(&b, "g4", 40);
    let c1 = group_consumer(&b, "split");
    let c2 = group_consumer(&b, "split");
    c1.subscribe(&["g4"]).expect("subscribe");
    c2.subscribe(&["g4"]).expect("subscribe");
    let sets = poll_until(&[&c1, &c2], Duration::from_secs(30), |s| {
        !s[0].is_empty() && !s[1].is_empty() && s[0].len() + s[1].len() == 4
    });
    assert!(sets[0].is_disjoint(&sets[1]), "no overlap: {sets:?}");
    let all: BTreeSet<i32> = sets[0].union(&sets[1]).copied().collect();
    assert_eq!(all, (0..4).collect(), "full coverage");

    // c2 leaves (close sends LeaveGroup); c1 must own everything well within the session timeout.
    let left = Instant::now();
    drop(c2);
    poll_until(&[&c1], Duration::from_secs(6), |s| s[0].len() == 4);
    assert!(
        left.elapsed() < Duration::from_secs(6),
        "took {:?}",
        left.elapsed()
    );
}

fn consume_and_commit(b: &Broker, group: &str, topic: &str, count: usize) -> Vec<(i32, i64)> {
    let c = group_consumer(b, group);
    c.subscribe(&[topic]).expect("subscribe");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "read only {} of {count}",
            got.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            got.push((m.partition(), m.offset()));
            if got.len() == count {
                c.commit_message(&m, CommitMode::Sync).expect("commit");
            }
        }
    }
    got
}

fn committed(b: &Broker, group: &str, topic: &str) -> Vec<(i32, Offset)> {
    let c = group_consumer(b, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| (e.partition(), e.offset()))
        .collect()
}

#[test]
fn a_new_consumer_resumes_after_the_last_commit_across_restart_and_kill9() {
    let mut b = Broker::start(2, GROUP_SETTINGS);
    create_topic(&b, "resume", 1);
    produce(&b, "resume", 100);
    let first = consume_and_commit(&b, "resumers", "resume", 30);
    assert_eq!(first.last(), Some(&(0, 29)));
    assert_eq!(
        committed(&b, "resumers", "resume"),
        vec![(0, Offset::Offset(30))]
    );

    // A third consumer joining later resumes exactly after the commit.
    let c = group_consumer(&b, "resumers");
    c.subscribe(&["resume"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let next = loop {
        assert!(Instant::now() < deadline, "no message after rejoin");
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            break m.expect("message").offset();
        }
    };
    assert_eq!(next, 30, "resumes after the last committed offset");
    drop(c);

    assert_eq!(b.stop(), Some(0));
    b.restart();
    assert_eq!(
        committed(&b, "resumers", "resume"),
        vec![(0, Offset::Offset(30))],
        "after restart"
    );

    let _ = consume_and_commit(&b, "resumers", "resume", 10);
    assert_eq!(
        committed(&b, "resumers", "resume"),
        vec![(0, Offset::Offset(40))]
    );
    b.kill9();
    b.restart();
    assert_eq!(
        committed(&b, "resumers", "resume"),
        vec![(0, Offset::Offset(40))],
        "after kill -9"
    );
}

/// Counts rebalance callbacks of a consumer.
#[derive(Default, Clone)]
struct RebalanceCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl rdkafka::ClientContext for RebalanceCounter {}

impl rdkafka::consumer::ConsumerContext for RebalanceCounter {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &rdkafka::consumer::Rebalance<'_>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn static_consumer(
    b: &Broker,
    instance: &str,
    ctx: RebalanceCounter,
) -> BaseConsumer<RebalanceCounter> {
    ClientConfig::new()
        .set("bootstrap.servers", b.bootstrap())
        .set("group.id", "statics")
        .set("group.instance.id", instance)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(ctx)
        .expect("consumer")
}

fn assigned_ctx(c: &BaseConsumer<RebalanceCounter>) -> BTreeSet<i32> {
    c.assignment()
        .map(|a| a.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

#[test]
fn a_restarted_static_member_gets_its_partitions_back_without_a_rebalance() {
    let b = Broker::start(2, GROUP_SETTINGS);
    create_topic(&b, "st", 4);
    let other_ctx = RebalanceCounter::default();
    let a = static_consumer(&b, "inst-a", RebalanceCounter::default());
    let other = static_consumer(&b, "inst-b", other_ctx.clone());
    a.subscribe(&["st"]).expect("subscribe");
    other.subscribe(&["st"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mine, theirs) = loop {
        let _ = a.poll(Duration::from_millis(50));
        let _ = other.poll(Duration::from_millis(50));
        let (x, y) = (assigned_ctx(&a), assigned_ctx(&other));
        if x.len() + y.len() == 4 && !x.is_empty() && !y.is_empty() {
            break (x, y);
        }
        assert!(Instant::now() < deadline, "no split: {x:?} {y:?}");
    };
    // Let the group settle, then note how many rebalances the other member has seen.
    for _ in 0..20 {
        let _ = a.poll(Duration::from_millis(50));
        let _ = other.poll(Duration::from_millis(50));
    }
    let rebalances_before = other_ctx.0.load(std::sync::atomic::Ordering::SeqCst);

    // A static member does not leave on close; it comes back under the same instance id.
    drop(a);
    let a2 = static_consumer(&b, "inst-a", RebalanceCounter::default());
    a2.subscribe(&["st"]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let _ = a2.poll(Duration::from_millis(50));
        let _ = other.poll(Duration::from_millis(50));
        if assigned_ctx(&a2) == mine {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "static member did not get {mine:?} back: {:?}",
            assigned_ctx(&a2)
        );
    }
    for _ in 0..20 {
        let _ = a2.poll(Duration::from_millis(50));
        let _ = other.poll(Duration::from_millis(50));
    }
    assert_eq!(
        assigned_ctx(&other),
        theirs,
        "the other member kept its partitions"
    );
    assert_eq!(
        other_ctx.0.load(std::sync::atomic::Ordering::SeqCst),
        rebalances_before,
        "no rebalance for the other member"
    );
}

#[test]
fn one_commit_of_several_partitions_is_stored_for_each() {
    let b = Broker::start(2, GROUP_SETTINGS);
    create_topic(&b, "multi", 4);
    let c = group_consumer(&b, "multi-commit");
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset("multi", p, Offset::Offset(10 + p as i64))
            .expect("tpl");
    }
    c.commit(&tpl, CommitMode::Sync)
        .expect("commit of four partitions");
    let mut want = TopicPartitionList::new();
    for p in 0..4 {
        want.add_partition("multi", p);
    }
    let got = c
        .committed_offsets(want, Duration::from_secs(10))
        .expect("committed");
    let offsets: Vec<Offset> = got.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(
        offsets,
        (0..4).map(|p| Offset::Offset(10 + p)).collect::<Vec<_>>()
    );
}
