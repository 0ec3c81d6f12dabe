//! `perf/compare --quick` runs end to end and writes a well-formed table.
//!
//! Bounded to about a minute: one short run per standard workload against the broker binary
//! of this build (debug) driven by the load generator example of this build. Apache Kafka takes
//! part only when its jars are already installed (`perf/peers/kafka/kafka.sh install`, a ~55 MB
//! download from Maven Central plus a JVM start per run, too slow for every CI run); otherwise the
//! script runs shardlog alone and the report says why Kafka was skipped, which this test checks.
//! The figures themselves are not checked: a timed assertion on a shared machine would be flaky.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A port nobody listens on now (the broker binds it a moment later).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

/// An example next to the broker binary (`cargo test --all-targets` builds them); built on
/// demand when this test runs alone. `load` drives the brokers; `machine_limits` measures
/// the limits where iperf3 or fio is missing.
fn example(shardlog: &Path, name: &str) -> PathBuf {
    let dir = shardlog.parent().expect("binary has a directory");
    let load = dir.join("examples").join(name);
    if !load.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", name, "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build --example load");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    load
}

fn kafka_installed(repo: &Path) -> bool {
    Command::new(repo.join("perf/peers/kafka/kafka.sh"))
        .arg("installed")
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn compare_quick_writes_a_well_formed_table() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shardlog = PathBuf::from(env!("CARGO_BIN_EXE_shardlog"));
    let load = example(&shardlog, "load");
    example(&shardlog, "machine_limits");
    let out = tempfile::tempdir().expect("temp dir");
    // Data dirs must accept O_DIRECT: the target dir's file system does (tmpfs would not).
    let work = tempfile::tempdir_in(shardlog.parent().expect("binary dir")).expect("work dir");
    let with_kafka = kafka_installed(&repo) && std::env::var_os("PERF_COMPARE_NO_KAFKA").is_none();
    if !with_kafka {
        eprintln!(
            "perf_compare: Apache Kafka's jars are not installed (perf/peers/kafka/kafka.sh install): \
             this test runs perf/compare --quick against shardlog only"
        );
    }
    let mut cmd = Command::new(repo.join("perf/compare"));
    cmd.arg("--quick").arg("--out").arg(out.path());
    if !with_kafka {
        // The same path a fresh machine takes: --quick without jars skips Kafka by itself.
        cmd.env("KAFKA_LIB", work.path().join("no-kafka-jars"));
    } else {
        // Kafka's JVM start dominates: the workloads that matter most, not all of them.
        cmd.args([
            "--workloads",
            "max-rate half-rate acks-all consume-from-disk",
        ]);
    }
    cmd.env("SHARDLOG", &shardlog)
        .env("LOAD", format!("{} load", load.display()))
        .env("HIST", format!("{} hist", load.display()))
        .env("WORK_DIR", work.path())
        .env("SHARDLOG_PORT", free_port().to_string())
        .env("METRICS_PORT", free_port().to_string())
        .env("KAFKA_PORT", free_port().to_string())
        // Tests share the machine with other test binaries: no pinning.
        .env("BROKER_CPUS", "")
        .env("CLIENT_ARGS", "--cores 1 --no-pin --quiet")
        .env("QUICK_DURATION", "2")
        .env("QUICK_WARMUP", "1");
    // A small volume for consume-from-disk, and the machine limits at their --quick length.
    cmd.args(["--disk-mib", "16"]);
    let started = Instant::now();
    let output = cmd.output().expect("run perf/compare");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // On a failed check below, what perf/compare logged (brokers' and loads' exits included).
    let compare_log = std::fs::read_to_string(out.path().join("compare.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "perf/compare --quick failed: {stderr}"
    );
    assert!(
        elapsed < Duration::from_secs(240),
        "perf/compare --quick took {elapsed:?}, more than its bound"
    );

    let report = std::fs::read_to_string(out.path().join("RESULTS-compare.md"))
        .expect("RESULTS-compare.md written");
    check_table(&report, with_kafka);
    if !with_kafka {
        assert!(
            report.contains("**Kafka was skipped**"),
            "the report says Kafka was skipped: {report}"
        );
    }
    check_disk_and_limits(&report, with_kafka, &compare_log);
    // One plot per workload, from `hist compare`.
    let workloads: &[&str] = if with_kafka {
        &["max-rate", "half-rate", "acks-all"]
    } else {
        &[
            "max-rate",
            "max-rate-acks-all",
            "acks-all",
            "half-rate",
            "partitions-100",
            "producers-1000",
        ]
    };
    for w in workloads {
        assert!(
            report.contains(&format!("## {w}:")),
            "section for {w}: {report}"
        );
        let svg = std::fs::read_to_string(out.path().join(w).join("publish.svg"))
            .unwrap_or_else(|e| panic!("{w}/publish.svg: {e}"));
        assert!(
            svg.contains("<svg") && svg.contains("</svg>"),
            "{w}: an SVG"
        );
    }
}

/// consume-from-disk ran (a read-back rate for shardlog, Kafka too when it took part), and the
/// machine limits were measured and set against shardlog's figures.
fn check_disk_and_limits(report: &str, with_kafka: bool, compare_log: &str) {
    assert!(
        report.contains("## consume-from-disk:"),
        "consume-from-disk section missing; compare.log:\n{compare_log}\nreport:\n{report}"
    );
    let row = report
        .lines()
        .find(|l| l.starts_with("| consume from disk MB/s |"))
        .unwrap_or_else(|| panic!("consume from disk row: {report}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let shardlog: f64 = cells[2]
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("shardlog read something back: {row:?}"));
    assert!(shardlog > 0.0, "{row:?}");
    if with_kafka {
        assert!(
            cells[3].replace(',', "").parse::<f64>().is_ok(),
            "Kafka read something back: {row:?}"
        );
    }
    let missing = report
        .lines()
        .find(|l| l.starts_with("| messages not read"))
        .unwrap_or_else(|| panic!("messages not read row: {report}"));
    assert_eq!(
        missing.split('|').nth(2).map(str::trim),
        Some("0.000"),
        "everything produced was read back: {missing:?}"
    );
    assert!(
        report.contains("## Consume rates: from the batch cache and from disk"),
        "{report}"
    );
    // Read from disk after the restart: shardlog's /metrics says where reads came from.
    let hits = report
        .lines()
        .find(|l| l.starts_with("| batch cache hit ratio (shardlog's /metrics; ~0"))
        .unwrap_or_else(|| panic!("hit ratio row: {report}"));
    let hit: f64 = hits
        .split('|')
        .nth(2)
        .map(str::trim)
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|_| panic!("a hit ratio for shardlog: {hits:?}"));
    assert!((0.0..=1.0).contains(&hit), "{hits:?}");
    assert!(report.contains("## Machine limits (this run)"), "{report}");
    for limit in ["loopback TCP", "O_DIRECT write", "fdatasync"] {
        let line = report
            .lines()
            .find(|l| l.starts_with("| ") && l.contains(limit) && l.contains('`'))
            .unwrap_or_else(|| panic!("limit {limit} in: {report}"));
        assert!(
            !line.contains("not measured") && !line.contains("no figure"),
            "{line}"
        );
    }
    assert!(
        report.contains("## Fraction of this machine's limits"),
        "{report}"
    );
}

/// Every table: a header, a separator with as many cells, rows with as many cells, and the
/// throughput row holding a number for shardlog (and a ratio when Kafka ran).
fn check_table(report: &str, with_kafka: bool) {
    let mut tables = 0;
    let mut lines = report.lines().peekable();
    while let Some(line) = lines.next() {
        if !(line.starts_with("| figure |")) {
            continue;
        }
        tables += 1;
        let cells = |l: &str| l.trim().trim_matches('|').split('|').count();
        let width = cells(line);
        let sep = lines.next().unwrap_or_default();
        assert!(sep.starts_with("|---"), "separator after {line:?}: {sep:?}");
        assert_eq!(
            sep.matches("---|").count(),
            width,
            "separator width for {line:?}"
        );
        if with_kafka {
            assert!(
                line.contains("shardlog / kafka"),
                "ratio column in {line:?}"
            );
        }
        let mut rows = 0;
        while let Some(row) = lines.peek().copied().filter(|l| l.starts_with('|')) {
            assert_eq!(cells(row), width, "row width in {row:?} under {line:?}");
            if row.starts_with("| produce msg/s |") {
                let shardlog = row
                    .split('|')
                    .nth(2)
                    .unwrap_or_default()
                    .trim()
                    .replace(',', "");
                let v: f64 = shardlog
                    .parse()
                    .unwrap_or_else(|_| panic!("shardlog's produce rate is a number: {row:?}"));
                assert!(v > 0.0, "shardlog produced something: {row:?}");
            }
            rows += 1;
            lines.next();
        }
        assert!(rows >= 10, "table under {line:?} has its rows ({rows})");
    }
    assert!(tables >= 1, "at least one table in: {report}");
}
