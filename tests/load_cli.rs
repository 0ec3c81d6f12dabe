//! The load generator against the real broker binary: short runs on loopback, checked for
//! exact counts (every acknowledged message consumed once), sane percentiles, readable
//! RUN.json and `.hgrm` files, and a valid comparison SVG.

mod common;

use common::{free_port, Broker};
use shardlog_tools::hist::{self, HistArgs, HistCommand, RunResult};
use shardlog_tools::load::{self, LoadArgs, LoadError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn workload_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, body).expect("write workload");
    p
}

fn args(bootstrap: String, workload: PathBuf, out: PathBuf) -> LoadArgs {
    common::load_args(bootstrap, workload, out)
}

fn check_run(run: &RunResult, what: &str) {
    let s = &run.summary;
    assert!(!run.interrupted, "{what}: interrupted");
    assert!(run.errors.is_empty(), "{what}: errors {:?}", run.errors);
    assert!(s.produced_msgs > 0 && s.consumed_msgs > 0, "{what}: {s:?}");
    assert_eq!(s.total_failed_msgs, 0, "{what}: {s:?}");
    assert_eq!(
        s.total_acked_msgs, s.total_sent_msgs,
        "{what}: every message acknowledged"
    );
    assert_eq!(
        s.total_consumed_msgs, s.total_acked_msgs,
        "{what}: every acknowledged message consumed exactly once"
    );
    assert_eq!(s.duplicate_msgs, 0, "{what}: duplicates");
    assert_eq!(s.skipped_msgs, 0, "{what}: gaps in producer sequences");
    for name in ["publish", "e2e"] {
        let h = run
            .histograms
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"));
        assert!(h.count > 0, "{what}: empty {name}");
        let v = h.percentiles.values();
        assert!(
            v.windows(2).all(|w| w[0] <= w[1]),
            "{what}: {name} not monotone: {v:?}"
        );
        assert!(
            v[0] > 0 && v[7] < 10_000_000,
            "{what}: {name} out of range: {v:?}"
        );
        let decoded = h.decode(name).expect("histogram decodes");
        assert_eq!(decoded.len(), h.count);
    }
    assert!(!run.rates.is_empty(), "{what}: per-second samples");
}

#[test]
fn short_runs_count_exactly_and_compare_renders() {
    // Batches over the broker's limit are refused (MESSAGE_TOO_LARGE): the generator must
    // close a batch at batch_size even when many messages are created at once.
    let broker = Broker::start(1, &["message.max.bytes=40000"]);
    let dir = tempfile::tempdir().expect("tempdir");

    // Fixed rate, keyed, acks=1, lz4.
    let w1 = workload_file(
        dir.path(),
        "fixed",
        r#"
        topics = 1
        partitions_per_topic = 3
        message_size = 200
        key_distribution = "round-robin"
        producers_per_topic = 2
        consumers_per_topic = 2
        producer_rate = 2000
        acks = 1
        linger_ms = 1
        compression = "lz4"
        warmup_secs = 0.5
        duration_secs = 2
        "#,
    );
    let out1 = dir.path().join("a/RUN.json");
    let run1 = load::run_cli(args(broker.bootstrap(), w1, out1.clone()))
        .unwrap_or_else(|e| panic!("run 1: {e}\nbroker log:\n{}", broker.log()));
    check_run(&run1, "fixed rate");
    // 2000 msg/s over 2 s measured, give or take scheduling at the edges.
    let rate = run1.summary.produce_msgs_per_sec;
    assert!((1500.0..2500.0).contains(&rate), "rate {rate}");
    assert!(run1.histograms.contains_key("delay"));

    // The written file is the same run, and the .hgrm files are beside it.
    let back = RunResult::read(&out1).expect("RUN.json parses");
    assert_eq!(back.summary, run1.summary);
    for name in ["publish", "e2e", "delay"] {
        let hgrm = std::fs::read_to_string(dir.path().join(format!("a/RUN.{name}.hgrm")))
            .expect(".hgrm written");
        assert!(hgrm.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert!(hgrm.contains("#[Max     ="));
    }

    // Max rate, keyless, acks=all, via the overrides; 32 KiB batches under the broker's 40000.
    let w2 = workload_file(
        dir.path(),
        "max",
        r#"
        topics = 1
        partitions_per_topic = 2
        message_size = 512
        producers_per_topic = 1
        consumers_per_topic = 1
        producer_rate = 1000
        compression = "none"
        batch_size = 32768
        warmup_secs = 0
        duration_secs = 5
        "#,
    );
    let out2 = dir.path().join("b/RUN.json");
    let mut a2 = args(broker.bootstrap(), w2, out2.clone());
    a2.rate = Some(0.0);
    a2.duration = Some(1.5);
    a2.acks = Some("all".into());
    let run2 =
        load::run_cli(a2).unwrap_or_else(|e| panic!("run 2: {e}\nbroker log:\n{}", broker.log()));
    check_run(&run2, "max rate");
    assert_eq!(run2.workload["acks"], serde_json::json!("all"));
    assert!(
        !run2.histograms.contains_key("delay"),
        "no publish delay at max rate"
    );

    let svg = dir.path().join("cmp.svg");
    hist::run_cli(HistArgs {
        command: HistCommand::Compare {
            runs: vec![out1, out2],
            svg: Some(svg.clone()),
            metric: "publish".into(),
            markdown: false,
        },
    })
    .expect("compare");
    let text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(text.starts_with("<svg"), "{}", &text[..60.min(text.len())]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(
        text.contains(">\na\n</text>") && text.contains(">\nb\n</text>"),
        "one legend entry per run"
    );
}

/// A fixed volume produced (`messages`), the broker restarted on the same data, then
/// `consume_existing` reads exactly that volume back from disk and ends on its own.
#[test]
fn consume_existing_reads_a_fixed_volume_after_a_restart() {
    let mut broker = Broker::start(1, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload_file(
        dir.path(),
        "volume",
        r#"
        topics = 1
        partitions_per_topic = 3
        message_size = 512
        producers_per_topic = 2
        consumers_per_topic = 2
        producer_rate = 0
        acks = 1
        warmup_secs = 0
        duration_secs = 60
        "#,
    );
    let total = 20_001u64;
    let mut a = args(
        broker.bootstrap(),
        w.clone(),
        dir.path().join("produce.json"),
    );
    a.topic_prefix = Some("volume-".into());
    a.messages = Some(total);
    a.consumers = Some(0);
    let started = Instant::now();
    let produced = load::run_cli(a).unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "a fixed volume ends the run before its duration"
    );
    let s = &produced.summary;
    // The quota is split evenly: ceil(total / producers) each.
    assert_eq!(s.total_sent_msgs, 20_002, "{s:?}");
    assert_eq!(s.total_acked_msgs, s.total_sent_msgs, "{s:?}");
    assert_eq!(s.total_consumed_msgs, 0, "--consumers 0: {s:?}");

    broker.stop();
    broker.restart();
    let mut a = args(broker.bootstrap(), w, dir.path().join("consume.json"));
    a.topic_prefix = Some("volume-".into());
    a.consume_existing = true;
    let started = Instant::now();
    let run = load::run_cli(a).unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "reading to the end offsets ends the run"
    );
    let s = &run.summary;
    assert!(
        !run.interrupted && run.errors.is_empty(),
        "{:?}",
        run.errors
    );
    assert_eq!(s.existing_msgs, 20_002, "{s:?}");
    assert_eq!(s.total_consumed_msgs, 20_002, "{s:?}");
    assert_eq!(
        s.consumed_msgs, 20_002,
        "all of it in the measured window: {s:?}"
    );
    assert_eq!((s.duplicate_msgs, s.skipped_msgs), (0, 0), "{s:?}");
    assert_eq!(s.total_sent_msgs, 0, "nothing produced: {s:?}");
    assert!(s.consume_mb_per_sec > 0.0 && s.measured_secs > 0.0, "{s:?}");
    assert!(
        !run.histograms.contains_key("e2e") && !run.histograms.contains_key("publish"),
        "no latency from another run's send times"
    );

    // Topics that do not exist are refused, not created empty.
    let mut a = args(
        broker.bootstrap(),
        dir.path().join("volume.toml"),
        dir.path().join("none.json"),
    );
    a.topic_prefix = Some("absent-".into());
    a.consume_existing = true;
    assert!(load::run_cli(a).is_err(), "absent topics are an error");
}

#[test]
fn unreachable_broker_fails_fast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload_file(dir.path(), "w", "message_size = 100\nduration_secs = 1\n");
    let port = free_port(); // nothing listens there
    let started = Instant::now();
    let err = load::run_cli(args(
        format!("127.0.0.1:{port}"),
        w,
        dir.path().join("RUN.json"),
    ))
    .expect_err("no broker");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, LoadError::Wire(_)), "{err:?}");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(!dir.path().join("RUN.json").exists());
}

#[test]
fn bad_workload_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = workload_file(dir.path(), "w", "message_size = 100\nproducers = 3\n");
    let err = load::run_cli(args("127.0.0.1:1".into(), w, dir.path().join("RUN.json")))
        .expect_err("unknown key");
    assert!(err.to_string().contains("`producers`"), "{err}");
}
