#!/usr/bin/env python3
"""Tables for perf/compare (Python 3 standard library only).

    compare-report.py half-rate OUT BROKER     print 50 % of BROKER's median max-rate msg/s
    compare-report.py report OUT [--link-base DIR] [--kafka-skipped REASON]
                                               print RESULTS-compare.md for the runs in OUT

OUT/<workload>/<broker>-<rep>/RUN.json is the load generator's result, broker.json beside it
the broker's CPU time and peak RSS (written by perf/compare).
"""

import json
import os
import statistics
import sys

WORKLOADS = [
    ("max-rate", "max-rate produce, 1 topic x 6 partitions, 1 KiB, acks=1"),
    ("max-rate-acks-all", "max-rate produce, 1 topic x 6 partitions, 1 KiB, acks=all"),
    ("acks-all", "acks=all at 50k msg/s (latency)"),
    ("half-rate", "acks=1 at 50 % of Kafka's max rate (latency)"),
    ("partitions-100", "100 partitions, keyed, 50k msg/s"),
    ("producers-1000", "1,000 producers x 10 msg/s"),
]
BROKERS = ["shardlog", "kafka", "kafka-durable"]

# (key, label, unit, better): better = "high" or "low"
METRICS = [
    ("produce_msgs", "produce msg/s", "", "high"),
    ("produce_mb", "produce MB/s", "", "high"),
    ("consume_mb", "consume MB/s", "", "high"),
    ("pub_p50", "publish p50", "ms", "low"),
    ("pub_p99", "publish p99", "ms", "low"),
    ("pub_p999", "publish p99.9", "ms", "low"),
    ("pub_p9999", "publish p99.99", "ms", "low"),
    ("e2e_p50", "end-to-end p50", "ms", "low"),
    ("e2e_p99", "end-to-end p99", "ms", "low"),
    ("e2e_p999", "end-to-end p99.9", "ms", "low"),
    ("e2e_p9999", "end-to-end p99.99", "ms", "low"),
    ("cpu_s", "broker CPU s (whole load command)", "s", "low"),
    ("cpu_per_gb", "broker CPU s per GB produced+consumed", "s/GB", "low"),
    ("rss_mib", "broker peak RSS (VmHWM)", "MiB", "low"),
    ("failed", "failed sends", "", "low"),
    ("unconsumed", "acked but not consumed", "", "low"),
]


def load_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pct(run, hist, p):
    """A percentile of one of RUN.json's histograms, in ms (None when missing)."""
    try:
        return run["histograms"][hist]["percentiles"][p] / 1000.0
    except (KeyError, TypeError):
        return None


def figures(run, broker):
    """The figures of one run, as a dict keyed like METRICS."""
    s = run.get("summary", {})
    w = run.get("workload", {})
    size = w.get("message_size", 0) or 0
    acked = s.get("total_acked_msgs", 0) or 0
    consumed = s.get("total_consumed_msgs", 0) or 0
    moved_gb = (acked + consumed) * size / 1e9
    cpu = broker.get("cpu_secs") if broker else None
    hwm = broker.get("vm_hwm_kib") if broker else None
    return {
        "produce_msgs": s.get("produce_msgs_per_sec"),
        "produce_mb": s.get("produce_mb_per_sec"),
        "consume_mb": s.get("consume_mb_per_sec"),
        "pub_p50": pct(run, "publish", "p50"),
        "pub_p99": pct(run, "publish", "p99"),
        "pub_p999": pct(run, "publish", "p99.9"),
        "pub_p9999": pct(run, "publish", "p99.99"),
        "e2e_p50": pct(run, "e2e", "p50"),
        "e2e_p99": pct(run, "e2e", "p99"),
        "e2e_p999": pct(run, "e2e", "p99.9"),
        "e2e_p9999": pct(run, "e2e", "p99.99"),
        "cpu_s": cpu,
        "cpu_per_gb": (cpu / moved_gb) if (cpu is not None and moved_gb > 0) else None,
        "rss_mib": (hwm / 1024.0) if hwm is not None else None,
        "failed": s.get("total_failed_msgs"),
        "unconsumed": (acked - consumed) if (acked or consumed) else None,
    }


def collect(out):
    """{workload: {broker: [figures per rep]}} plus {workload: {broker: [load failures]}}."""
    data, failures = {}, {}
    for w, _ in WORKLOADS:
        wdir = os.path.join(out, w)
        if not os.path.isdir(wdir):
            continue
        for entry in sorted(os.listdir(wdir)):
            path = os.path.join(wdir, entry)
            if not os.path.isdir(path) or "-" not in entry:
                continue
            broker, _, rep = entry.rpartition("-")
            if broker not in BROKERS or not rep.isdigit():
                continue
            b = load_json(os.path.join(path, "broker.json")) or {}
            run = load_json(os.path.join(path, "RUN.json"))
            if run is None or b.get("load_exit", 0) != 0:
                failures.setdefault(w, {}).setdefault(broker, []).append(int(rep))
                if run is None:
                    continue
            data.setdefault(w, {}).setdefault(broker, []).append(figures(run, b))
    return data, failures


def median(values):
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 10000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r, better):
    if r is None:
        return "–"
    good = r >= 1 if better == "high" else r <= 1
    return f"{r:.2f}x" + (" ✓" if good else "")


def half_rate(out, broker):
    data, _ = collect(out)
    runs = data.get("max-rate", {}).get(broker, [])
    m = median([r["produce_msgs"] for r in runs])
    if not m:
        sys.exit(1)
    print(int(m * 0.5))


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\n")
    except OSError:
        return ""


def report(out, link_base, kafka_skipped):
    data, failures = collect(out)
    lines = ["# shardlog vs Apache Kafka, same machine, same run", ""]
    lines += [
        "Written by `perf/compare` (perf/compare-report.py). Each figure is the **median over the",
        "repetitions** of one workload; the brokers ran one after the other, alternating order",
        "between repetitions, each on a fresh data dir. Ratio = shardlog / Kafka (✓ where shardlog",
        "is better: higher for rates, lower for latency, CPU and memory). Latency in ms from the",
        "*intended* send time. Broker CPU = utime+stime(+children) from /proc/PID/stat over the",
        "whole load command (warm-up included); per GB = that over (acked + consumed) x message size.",
        "",
    ]
    if kafka_skipped:
        lines += [f"**Kafka was skipped**: {kafka_skipped}.", ""]
    plan = read_text(os.path.join(out, "plan.txt"))
    if plan:
        lines += ["## Run", "", "```", plan, "```", ""]

    summary = []
    for w, title in WORKLOADS:
        per = data.get(w)
        if not per:
            continue
        brokers = [b for b in BROKERS if b in per]
        lines += [f"## {w}: {title}", ""]
        head = ["figure"]
        for b in brokers:
            head.append(f"{b} (n={len(per[b])})")
            if b != "shardlog" and "shardlog" in per:
                head.append(f"shardlog / {b}")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for key, label, unit, better in METRICS:
            meds = {b: median([r[key] for r in per[b]]) for b in brokers}
            if all(v is None for v in meds.values()):
                continue
            row = [label + (f" ({unit})" if unit else "")]
            for b in brokers:
                row.append(fmt(meds[b]))
                if b != "shardlog" and "shardlog" in per:
                    r = ratio(meds.get("shardlog"), meds[b])
                    row.append(fmt_ratio(r, better))
                    if b == "kafka" and key in (
                        "produce_mb", "pub_p99", "e2e_p99", "e2e_p9999", "cpu_per_gb", "rss_mib"
                    ):
                        summary.append((w, label, r, better))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        base = f"{link_base}/{w}" if link_base else w
        svgs = [m for m in ("publish", "e2e") if os.path.exists(os.path.join(out, w, f"{m}.svg"))]
        if svgs:
            lines.append(
                "Percentile plots (repetitions merged per broker): "
                + ", ".join(f"[{m}]({base}/{m}.svg)" for m in svgs)
                + f"; per-rep RUN.json and broker.json under `{base}/`."
            )
            lines.append("")
        if w in failures:
            bad = "; ".join(f"{b}: rep {', '.join(map(str, reps))}" for b, reps in failures[w].items())
            lines += [f"**Load runs that failed or were cut short**: {bad} (see load.log there).", ""]

    if summary:
        lines += ["## Summary: shardlog / Kafka (default flush policy)", ""]
        lines += ["| workload | figure | ratio |", "|---|---|---|"]
        for w, label, r, better in summary:
            lines.append(f"| {w} | {label} | {fmt_ratio(r, better)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) >= 4 and argv[1] == "half-rate":
        half_rate(argv[2], argv[3])
        return 0
    if len(argv) >= 3 and argv[1] == "report":
        out = argv[2]
        link_base, skipped = "", ""
        rest = argv[3:]
        while rest:
            if rest[0] == "--link-base" and len(rest) > 1:
                link_base = rest[1]
            elif rest[0] == "--kafka-skipped" and len(rest) > 1:
                skipped = rest[1]
            else:
                print(f"compare-report.py: unknown argument {rest[0]}", file=sys.stderr)
                return 2
            rest = rest[2:]
        sys.stdout.write(report(out, link_base, skipped))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
