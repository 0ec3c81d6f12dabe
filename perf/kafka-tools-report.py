#!/usr/bin/env python3
"""RESULTS-kafka-tools.md for perf/kafka-tools-compare (Python 3 standard library only).

    kafka-tools-report.py OUT [--link-base DIR]
"""

import json
import os
import re
import statistics
import sys

PRODUCER = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th"
)


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def producer(text):
    found = PRODUCER.findall(text)
    if not found:
        return {}
    m = found[-1]
    return {
        "prod_msgs": float(m[1]),
        "prod_mb": float(m[2]),
        "prod_avg": float(m[3]),
        "prod_p50": float(m[5]),
        "prod_p99": float(m[7]),
        "prod_p999": float(m[8]),
        "prod_max": float(m[4]),
    }


def consumer(text, prefix):
    """The CSV line after ConsumerPerformance's header."""
    lines = [l for l in text.splitlines() if l.strip()]
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            cols = [c.strip() for c in line.split(",")]
            vals = [v.strip() for v in lines[i + 1].split(",")]
            row = dict(zip(cols, vals))
            try:
                return {
                    prefix + "_msgs": float(row["nMsg.sec"]),
                    prefix + "_mb": float(row["MB.sec"]),
                    prefix + "_n": float(row["data.consumed.in.nMsg"]),
                    prefix + "_fetch_mb": float(row["fetch.MB.sec"]),
                    prefix + "_rebalance_ms": float(row["rebalance.time.ms"]),
                }
            except (KeyError, ValueError):
                return {}
    return {}


ROWS = [
    ("prod_msgs", "ProducerPerformance records/s", "high"),
    ("prod_mb", "ProducerPerformance MB/s", "high"),
    ("prod_p50", "producer latency p50 (ms)", "low"),
    ("prod_p99", "producer latency p99 (ms)", "low"),
    ("prod_p999", "producer latency p99.9 (ms)", "low"),
    ("prod_max", "producer latency max (ms)", "low"),
    ("cache_rebalance_ms", "  group join (rebalance.time.ms), recent data", "low"),
    ("cache_mb", "ConsumerPerformance MB/s, recent data", "high"),
    ("cache_fetch_mb", "  fetch MB/s (without group join), recent data", "high"),
    ("cache_n", "  records consumed, recent data", "high"),
    ("restart_rebalance_ms", "  group join (rebalance.time.ms), after restart", "low"),
    ("restart_mb", "ConsumerPerformance MB/s, after restart", "high"),
    ("restart_fetch_mb", "  fetch MB/s (without group join), after restart", "high"),
    ("restart_n", "  records consumed, after restart", "high"),
    ("cpu_produce_s", "broker CPU s, produce", "low"),
    ("cpu_per_gb_produce", "broker CPU s per GB produced", "low"),
    ("cpu_consume_cache_s", "broker CPU s, consume recent", "low"),
    ("cpu_consume_restart_s", "broker CPU s, consume after restart", "low"),
    ("rss_mib", "broker peak RSS MiB (produce + consume)", "low"),
]


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    link_base = argv[3] if len(argv) > 3 and argv[2] == "--link-base" else os.path.basename(os.path.normpath(out))
    per = {}
    for entry in sorted(os.listdir(out)):
        d = os.path.join(out, entry)
        if not os.path.isdir(d) or "-" not in entry:
            continue
        b, _, rep = entry.rpartition("-")
        fig = {}
        fig.update(producer(read(os.path.join(d, "producer.txt"))))
        fig.update(consumer(read(os.path.join(d, "consumer-cache.txt")), "cache"))
        fig.update(consumer(read(os.path.join(d, "consumer-restart.txt")), "restart"))
        try:
            bj = json.loads(read(os.path.join(d, "broker.json")))
        except ValueError:
            bj = {}
        for k in ("cpu_produce_s", "cpu_consume_cache_s", "cpu_consume_restart_s"):
            if k in bj:
                fig[k] = float(bj[k])
        if "cpu_produce_s" in fig and bj.get("records"):
            fig["cpu_per_gb_produce"] = fig["cpu_produce_s"] / (bj["records"] * 1024 / 1e9)
        if bj.get("vm_hwm_kib"):
            fig["rss_mib"] = float(bj["vm_hwm_kib"]) / 1024
        per.setdefault(b, []).append(fig)

    def med(b, k):
        vals = [f[k] for f in per.get(b, []) if k in f]
        return statistics.median(vals) if vals else None

    lines = [
        "# Second opinion: Kafka's own perf tools against shardlog and Kafka",
        "",
        "`org.apache.kafka.tools.ProducerPerformance` and `ConsumerPerformance` (kafka-tools, pinned",
        "in perf/peers/kafka/pom.xml) against each broker, medians over the repetitions, brokers",
        "alternating, fresh data dir per run; written by `perf/kafka-tools-compare`.",
        "Producer: 1 KiB records, max rate, acks=1, batch.size=131072, linger.ms=1, 6 partitions.",
        "",
        "```",
        read(os.path.join(out, "plan.txt")).rstrip(),
        "```",
        "",
        f"| figure | shardlog (n={len(per.get('shardlog', []))}) | kafka (n={len(per.get('kafka', []))}) | shardlog / kafka |",
        "|---|---|---|---|",
    ]
    for k, label, better in ROWS:
        a, b = med("shardlog", k), med("kafka", k)
        if a is None and b is None:
            continue
        r = (a / b) if (a is not None and b) else None
        good = r is not None and (r >= 1 if better == "high" else r <= 1)
        fa = "–" if a is None else f"{a:,.1f}"
        fb = "–" if b is None else f"{b:,.1f}"
        fr = "–" if r is None else f"{r:.2f}x" + (" ✓" if good else "")
        lines.append(f"| {label} | {fa} | {fb} | {fr} |")
    lines += ["", f"Raw tool output per run: `{link_base}/<broker>-<rep>/`.", ""]
    sys.stdout.write("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
