//! `perf/scale --quick` runs end to end (so the script cannot rot): 2 topics x 10 partitions
//! against the broker binary of this build, shardlog only, every step recorded, a report
//! written. The figures are not checked against bounds (a timed assertion on a shared machine
//! would be flaky), but what the steps must have done is: every partition created and written,
//! the low-rate load acknowledged and read by the consumer group, the idle connections
//! answered, and nothing acknowledged missing after the clean restart and after kill -9.
//!
//! Needs the Python client venv (tests/clients/python/.venv with confluent-kafka, made by
//! scripts/install-clients), as tests/clients.rs does.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The whole of `--quick`, broker starts and Python imports included (about 15 s here).
const QUICK_BOUND: Duration = Duration::from_secs(90);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

fn steps(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn scale_quick_runs_every_step_and_loses_nothing() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = repo.join("tests/clients/python/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-clients (perf/scale drives the brokers with confluent-kafka)",
        python.display()
    );
    let shardlog = PathBuf::from(env!("CARGO_BIN_EXE_shardlog"));
    let out = tempfile::tempdir().expect("temp dir");
    // Data dirs must accept O_DIRECT: the target dir's file system does (tmpfs would not).
    let work = tempfile::tempdir_in(shardlog.parent().expect("binary dir")).expect("work dir");
    let started = Instant::now();
    let output = Command::new(repo.join("perf/scale"))
        .args(["--quick", "--out"])
        .arg(out.path())
        .env("SHARDLOG", &shardlog)
        .env("LOAD", format!("{} load", shardlog.display()))
        .env("WORK_DIR", work.path())
        .env("SHARDLOG_PORT", free_port().to_string())
        // Tests share the machine with other test binaries: no pinning.
        .env("BROKER_CPUS", "")
        .env("CLIENT_CPU", "")
        .output()
        .expect("run perf/scale");
    let elapsed = started.elapsed();
    let log = std::fs::read_to_string(out.path().join("scale.log")).unwrap_or_default();
    assert!(
        output.status.success(),
        "perf/scale --quick failed: {}\n{log}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(elapsed < QUICK_BOUND, "perf/scale --quick took {elapsed:?}");

    let s = steps(&out.path().join("shardlog-1/steps.jsonl"));
    let names: Vec<&str> = s.iter().filter_map(|v| v["step"].as_str()).collect();
    assert_eq!(
        names,
        [
            "start",
            "create",
            "produce",
            "metadata",
            "lowrate",
            "idle-20-held",
            "idle-20",
            "restart",
            "kill9",
            "end"
        ]
    );
    let step = |name: &str| {
        s.iter()
            .find(|v| v["step"] == name)
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    // Every step while the broker ran has its resource figures.
    for v in &s[..s.len() - 1] {
        for k in ["du_kib", "vm_rss_kib", "vm_hwm_kib", "fds", "cpu_secs"] {
            assert!(
                v[k].as_u64().is_some() || v[k].as_f64().is_some(),
                "{k} in {v}"
            );
        }
    }
    assert_eq!(step("create")["partitions_ready"], 20, "{}", step("create"));
    assert_eq!(step("produce")["acknowledged"], 20, "{}", step("produce"));
    assert_eq!(step("produce")["failed"], 0);
    assert_eq!(
        step("metadata")["metadata_ms"].as_array().map(Vec::len),
        Some(3)
    );
    let low = step("lowrate");
    assert_eq!(low["load_exit"], 0, "{low}");
    assert!(low["group_consumed"].as_u64() > Some(0), "{low}");
    assert!(low["group_p99_ms"].as_f64().is_some(), "{low}");
    assert_eq!(step("idle-20")["answered"], 20, "{}", step("idle-20"));
    assert_eq!(step("idle-20")["alive_at_end"], 20);
    for name in ["restart", "kill9"] {
        let r = step(name);
        assert_eq!(r["serving"], 20, "{r}");
        assert_eq!(r["checked_partitions"], 20, "{r}");
        assert_eq!(r["lost_partitions"], 0, "{r}");
        assert!(r["restart_secs"].as_f64().is_some(), "{r}");
    }
    assert_eq!(step("restart")["stop"], "clean");

    let report =
        std::fs::read_to_string(out.path().join("RESULTS-scale.md")).expect("RESULTS-scale.md");
    for row in [
        "| disk allocated after that (du), MiB |",
        "| low-rate load: broker CPU s per GB |",
        "| low-rate load: produce->consume p99 (group), ms |",
        "| restart after kill -9 until every partition serves, s |",
        "| 20 idle connections: answered | 20 |",
    ] {
        assert!(
            report.contains(row),
            "{row} missing from the report:\n{report}"
        );
    }
    // The data dirs are gone.
    let left: Vec<_> = std::fs::read_dir(work.path())
        .expect("work dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "perf/scale left {left:?}");
}
