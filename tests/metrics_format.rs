//! The metrics rendering parses with a real Prometheus parser (the `prometheus_client`
//! Python package, pinned in tests/tools/requirements.txt), and the parsed values are the
//! ones recorded.

mod ops_support;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use shardlog::metrics::{render_prometheus, GroupLagSnapshot, ShardMetrics, FAMILIES};

fn example() -> String {
    let s0 = Rc::new(ShardMetrics::new(0));
    let orders = s0.partition("orders", 0);
    for _ in 0..3 {
        orders.record_produce(1000, 10);
    }
    orders.record_fetch(2000, 20);
    orders.set_disk_usage(1 << 20);
    s0.observe_request(0, Duration::from_micros(300), false);
    s0.observe_request(1, Duration::from_millis(500), false);
    s0.observe_request(18, Duration::from_micros(20), false);
    s0.observe_fsync(Duration::from_micros(90));
    s0.observe_fsync(Duration::from_millis(4));
    s0.batch_cache_lookup(true);
    s0.batch_cache_lookup(false);
    s0.connection_opened();
    let s1 = ShardMetrics::new(1);
    s1.partition("orders", 1).record_produce(7, 1);
    s1.connection_rejected();
    let mut snap1 = s1.snapshot();
    snap1.consumer_group_lag = Some(vec![GroupLagSnapshot {
        group: "g \"1\"\\x\n".into(),
        topic: "orders".into(),
        partition: 1,
        lag_records: 5,
    }]);
    let mut snap0 = s0.snapshot();
    snap0.batch_cache_bytes = 4096;
    snap0.unwritten_bytes = 123;
    render_prometheus(&[snap0, snap1])
}

#[test]
fn prometheus_client_parses_the_rendering() {
    let Some(python) = ops_support::venv_python() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, example()).expect("write");
    let out = std::process::Command::new(python)
        .arg(ops_support::repo().join("tests/tools/parse_prometheus.py"))
        .arg(&file)
        .output()
        .expect("run parser");
    assert!(
        out.status.success(),
        "prometheus_client refused the rendering: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("parser JSON");

    // Every family, with its type (prometheus_client drops the `_total` of counter families).
    let families = parsed["families"].as_object().expect("families");
    for (name, kind, _) in FAMILIES {
        let key = name.strip_suffix("_total").unwrap_or(name);
        assert_eq!(
            families.get(key).and_then(|v| v.as_str()),
            Some(*kind),
            "{name}"
        );
    }

    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let hits: Vec<f64> = parsed["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .filter(|s| {
                s[0] == name
                    && serde_json::from_value::<BTreeMap<String, String>>(s[1].clone())
                        .is_ok_and(|l| l == want)
            })
            .filter_map(|s| s[2].as_f64())
            .collect();
        assert_eq!(hits.len(), 1, "{name} {labels:?}: {hits:?}");
        hits[0]
    };
    let p0 = [("shard", "0"), ("topic", "orders"), ("partition", "0")];
    assert_eq!(
        value("shardlog_partition_produced_bytes_total", &p0),
        3000.0
    );
    assert_eq!(
        value("shardlog_partition_produced_records_total", &p0),
        30.0
    );
    assert_eq!(value("shardlog_partition_fetched_bytes_total", &p0), 2000.0);
    assert_eq!(value("shardlog_partition_disk_usage_bytes", &p0), 1048576.0);
    assert_eq!(
        value("shardlog_batch_cache_bytes", &[("shard", "0")]),
        4096.0
    );
    assert_eq!(value("shardlog_unwritten_bytes", &[("shard", "0")]), 123.0);
    assert_eq!(value("shardlog_unwritten_bytes", &[("shard", "1")]), 0.0);
    let p1 = [("shard", "1"), ("topic", "orders"), ("partition", "1")];
    assert_eq!(value("shardlog_partition_produced_bytes_total", &p1), 7.0);
    let fetch = [("shard", "0"), ("api", "Fetch")];
    assert_eq!(value("shardlog_requests_total", &fetch), 1.0);
    assert_eq!(
        value("shardlog_request_duration_seconds_count", &fetch),
        1.0
    );
    assert_eq!(value("shardlog_request_duration_seconds_sum", &fetch), 0.5);
    assert_eq!(
        value(
            "shardlog_request_duration_seconds_bucket",
            &[("shard", "0"), ("api", "Fetch"), ("le", "0.25")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "shardlog_request_duration_seconds_bucket",
            &[("shard", "0"), ("api", "Fetch"), ("le", "0.5")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "shardlog_requests_total",
            &[("shard", "0"), ("api", "ApiVersions")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "shardlog_fsync_duration_seconds_bucket",
            &[("shard", "0"), ("le", "0.0001")]
        ),
        1.0
    );
    assert_eq!(
        value("shardlog_fsync_duration_seconds_count", &[("shard", "0")]),
        2.0
    );
    assert_eq!(
        value("shardlog_batch_cache_misses_total", &[("shard", "0")]),
        1.0
    );
    assert_eq!(
        value("shardlog_connections_rejected_total", &[("shard", "1")]),
        1.0
    );
    assert_eq!(
        value(
            "shardlog_consumer_group_lag_records",
            &[
                ("shard", "1"),
                ("group", "g \"1\"\\x\n"),
                ("topic", "orders"),
                ("partition", "1")
            ]
        ),
        5.0
    );
}
