#!/usr/bin/env python3
"""Tables for perf/compare (Python 3 standard library only).

    compare-report.py half-rate OUT BROKER     print 50 % of BROKER's median max-rate msg/s
    compare-report.py report OUT [--link-base DIR] [--kafka-skipped REASON]
                                               print RESULTS-compare.md for the runs in OUT

OUT/<workload>/<broker>-<rep>/RUN.json is the load generator's result, broker.json beside it
the broker's CPU time and peak RSS (written by perf/compare). For consume-from-disk, RUN.json is
the consume-existing run after the restart and produce.json the fixed-volume produce before it.
OUT/limits/ holds the raw outputs of the machine-limit tools (iperf3 -J, fio JSON, or
examples/machine_limits' text) and commands.tsv (figure, tool, command).
"""

import json
import os
import re
import statistics
import sys

WORKLOADS = [
    ("max-rate", "max-rate produce, 1 topic x 6 partitions, 1 KiB, acks=1"),
    ("max-rate-acks-all", "max-rate produce, 1 topic x 6 partitions, 1 KiB, acks=all"),
    ("acks-all", "acks=all at 50k msg/s (latency)"),
    ("half-rate", "acks=1 at 50 % of Kafka's max rate (latency)"),
    ("partitions-100", "100 partitions, keyed, 50k msg/s"),
    ("producers-1000", "1,000 producers x 10 msg/s"),
    ("consume-from-disk", "fixed volume at max rate, restart, consume from disk"),
]
BROKERS = ["shardlog", "kafka", "kafka-durable"]

# (key, label, unit, better): better = "high" or "low"
METRICS = [
    ("produce_msgs", "produce msg/s", "", "high"),
    ("produce_mb", "produce MB/s", "", "high"),
    ("consume_mb", "consume MB/s", "", "high"),
    ("consume_ratio", "consume rate / produce rate (target >= 1)", "", "high"),
    ("cache_hit", "batch cache hit ratio (shardlog's /metrics)", "", "high"),
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
    ("mem_mib", "broker peak memory incl. page cache (memory cgroup)", "MiB", "low"),
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


def cgroup_mib(broker):
    """Peak of the broker's own memory cgroup (page cache included), MiB; None if unmeasured."""
    kib = broker.get("cgroup_peak_kib") if broker else None
    return kib / 1024.0 if isinstance(kib, (int, float)) else None


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
        "consume_ratio": ratio(s.get("consume_mb_per_sec"), s.get("produce_mb_per_sec")),
        "cache_hit": broker.get("cache_hit") if broker else None,
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
        "mem_mib": cgroup_mib(broker),
        "failed": s.get("total_failed_msgs"),
        "unconsumed": (acked - consumed) if (acked or consumed) else None,
    }


# consume-from-disk: produce figures from the fixed-volume phase, the rest from the read after
# the restart.
DISK_METRICS = [
    ("produce_msgs", "produce msg/s", "", "high"),
    ("produce_mb", "produce MB/s", "", "high"),
    ("pub_p99", "publish p99 (produce phase)", "ms", "low"),
    ("failed", "failed sends (produce phase; not there to read)", "", "low"),
    ("restart_s", "restart until serving", "s", "low"),
    ("consume_msgs", "consume from disk msg/s", "", "high"),
    ("consume_mb", "consume from disk MB/s", "", "high"),
    ("read_s", "time to read it all", "s", "low"),
    ("existing", "messages there to read", "", "high"),
    ("missing", "messages not read (there - read)", "", "low"),
    ("cache_hit", "batch cache hit ratio (shardlog's /metrics; ~0: read from disk)", "", "high"),
    ("cpu_s", "broker CPU s (read only)", "s", "low"),
    ("cpu_per_gb", "broker CPU s per GB read", "s/GB", "low"),
    ("rss_mib", "broker peak RSS since the restart (VmHWM)", "MiB", "low"),
    ("mem_mib", "broker peak memory incl. page cache since the restart (memory cgroup)", "MiB", "low"),
]


def disk_figures(run, produce, broker):
    """The figures of one consume-from-disk run (RUN.json after the restart, produce.json)."""
    s = run.get("summary", {})
    p = (produce or {}).get("summary", {})
    size = run.get("workload", {}).get("message_size", 0) or 0
    read = s.get("total_consumed_msgs", 0) or 0
    there = s.get("existing_msgs")
    read_gb = read * size / 1e9
    cpu = broker.get("cpu_secs") if broker else None
    hwm = broker.get("vm_hwm_kib") if broker else None
    return {
        "produce_msgs": p.get("produce_msgs_per_sec"),
        "produce_mb": p.get("produce_mb_per_sec"),
        "pub_p99": pct(produce or {}, "publish", "p99"),
        "failed": p.get("total_failed_msgs"),
        "restart_s": broker.get("restart_secs") if broker else None,
        "cache_hit": broker.get("cache_hit") if broker else None,
        "consume_msgs": s.get("consume_msgs_per_sec"),
        "consume_mb": s.get("consume_mb_per_sec"),
        "read_s": s.get("measured_secs"),
        "existing": there,
        "missing": (there - read) if there is not None else None,
        "cpu_s": cpu,
        "cpu_per_gb": (cpu / read_gb) if (cpu is not None and read_gb > 0) else None,
        "rss_mib": (hwm / 1024.0) if hwm is not None else None,
        "mem_mib": cgroup_mib(broker),
        "caches_dropped": broker.get("caches_dropped") if broker else None,
    }


def cache_hit_ratio(path):
    """hits / (hits + misses) of shardlog's batch cache, from a /metrics scrape (None if absent)."""
    text = read_text(path)
    totals = {"hits": 0.0, "misses": 0.0}
    seen = False
    for line in text.splitlines():
        m = re.match(r"shardlog_batch_cache_(hits|misses)_total(?:\{[^}]*\})?\s+([0-9.eE+]+)", line)
        if m:
            totals[m.group(1)] += float(m.group(2))
            seen = True
    lookups = totals["hits"] + totals["misses"]
    return totals["hits"] / lookups if seen and lookups > 0 else None


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
            b["cache_hit"] = cache_hit_ratio(os.path.join(path, "metrics.txt"))
            run = load_json(os.path.join(path, "RUN.json"))
            if run is None or b.get("load_exit", 0) != 0:
                failures.setdefault(w, {}).setdefault(broker, []).append(int(rep))
                if run is None:
                    continue
            if w == "consume-from-disk":
                produce = load_json(os.path.join(path, "produce.json"))
                data.setdefault(w, {}).setdefault(broker, []).append(disk_figures(run, produce, b))
            else:
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
        metrics = METRICS
        if w == "consume-from-disk":
            metrics = DISK_METRICS
            lines += disk_notes(per)
        head = ["figure"]
        for b in brokers:
            head.append(f"{b} (n={len(per[b])})")
            if b != "shardlog" and "shardlog" in per:
                head.append(f"shardlog / {b}")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for key, label, unit, better in metrics:
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
                        "produce_mb", "consume_mb", "pub_p99", "e2e_p99", "e2e_p9999",
                        "cpu_per_gb", "rss_mib"
                    ):
                        if key != "consume_mb" or w in ("max-rate", "consume-from-disk"):
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

    lines += consume_section(data)
    limits = read_limits(out)
    lines += limits_section(limits)
    lines += fraction_section(data, limits)

    if summary:
        lines += ["## Summary: shardlog / Kafka (default flush policy)", ""]
        lines += ["| workload | figure | ratio |", "|---|---|---|"]
        for w, label, r, better in summary:
            lines.append(f"| {w} | {label} | {fmt_ratio(r, better)} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def disk_notes(per):
    """What a reader must know before reading the consume-from-disk table."""
    dropped = {b: {r.get("caches_dropped") for r in runs} for b, runs in per.items()}
    all_dropped = all(v == {True} for v in dropped.values())
    lines = [
        "A fresh broker takes a fixed volume at max rate (produce figures below), is stopped and",
        "started again on the same data dir, then the generator's consumers "
        "(`load --consume-existing`)",
        "read every partition from its earliest offset to the end offset captured when they start.",
        "Consume rate = messages read / time until the last consumer reached its end offset;",
        "broker CPU and RSS cover that read only. There is no end-to-end latency here: the send",
        "times in the messages belong to the producing run.",
        "",
    ]
    if all_dropped:
        lines += [
            "**Page cache dropped** before every restart (`sync; echo 1 > "
            "/proc/sys/vm/drop_caches`), for both brokers: the reads come from the device.",
            "",
        ]
    else:
        lines += [
            "**Page cache not dropped** before the restart (--no-drop-caches, --quick without "
            "--drop-caches, or not root): Kafka's reads may come from a page cache still warm from the "
            "produce phase, while shardlog reads its segments with O_DIRECT (no page cache), "
            "so this table favours Kafka.",
            "",
        ]
    return lines


def consume_section(data):
    """Consume rates side by side: while producing (batch cache) and from disk after a restart."""
    rows = []
    for w, what in (
        ("max-rate", "while producing, acks=1: shardlog from its batch cache (Kafka: page cache)"),
        ("max-rate-acks-all", "while producing, acks=all: shardlog from its batch cache"),
        ("consume-from-disk", "after a restart, from disk"),
    ):
        per = data.get(w)
        if not per:
            continue
        for b in BROKERS:
            if b not in per:
                continue
            c = median([r["consume_mb"] for r in per[b]])
            p = median([r["produce_mb"] for r in per[b]])
            hit = median([r.get("cache_hit") for r in per[b]])
            rows.append(
                f"| {w} | {what} | {b} | {fmt(c)} | {fmt(p)} | "
                f"{fmt_ratio(ratio(c, p), 'high')} | {fmt(hit)} |"
            )
    if not rows:
        return []
    return [
        "## Consume rates: from the batch cache and from disk",
        "",
        "Target: consuming from the batch cache keeps up with producing (consume / produce >= 1).",
        "For consume-from-disk the produce rate is that of the fixed-volume phase before the restart.",
        "Batch cache hit ratio: shardlog's fetch reads served from its batch cache / all fetch reads",
        "(`shardlog_batch_cache_{hits,misses}_total` scraped after the load), which shows where the",
        "reads came from; Kafka has no such counter.",
        "",
        "| workload | consumed | broker | consume MB/s | produce MB/s | consume / produce "
        "| batch cache hit ratio |",
        "|---|---|---|---|---|---|---|",
    ] + rows + [""]


LIMITS = [
    ("loopback", "loopback TCP bandwidth, one stream, 1 MiB writes"),
    ("odirect", "sequential O_DIRECT write, 1 MiB blocks"),
    ("fdatasync", "fdatasync after a 4 KiB append"),
]


def read_limits(out):
    """{figure: {"tool", "command", and "mb_s" or "p50_ms"/"p99_ms"/"max_ms"/"n"}}."""
    d = os.path.join(out, "limits")
    res = {}
    try:
        with open(os.path.join(d, "commands.tsv"), encoding="utf-8") as f:
            cmds = [line.rstrip("\n").split("\t", 2) for line in f if line.strip()]
    except OSError:
        return res
    ml = read_text(os.path.join(d, "machine_limits.txt"))
    for fig, tool, cmd in (c for c in cmds if len(c) == 3):
        v = {"tool": tool, "command": cmd}
        if tool == "iperf3":
            j = load_json(os.path.join(d, "loopback.iperf3.json")) or {}
            bps = j.get("end", {}).get("sum_received", {}).get("bits_per_second")
            if bps:
                v["mb_s"] = bps / 8 / 1e6
        elif tool == "fio" and fig == "odirect":
            j = load_json(os.path.join(d, "odirect.fio.json")) or {}
            try:
                v["mb_s"] = j["jobs"][0]["write"]["bw_bytes"] / 1e6
            except (KeyError, IndexError, TypeError):
                pass
        elif tool == "fio" and fig == "fdatasync":
            j = load_json(os.path.join(d, "fdatasync.fio.json")) or {}
            try:
                lat = j["jobs"][0]["sync"]["lat_ns"]
                v["p50_ms"] = lat["percentile"]["50.000000"] / 1e6
                v["p99_ms"] = lat["percentile"]["99.000000"] / 1e6
                v["max_ms"] = lat["max"] / 1e6
                v["n"] = lat.get("N") or j["jobs"][0]["sync"].get("total_ios")
            except (KeyError, IndexError, TypeError):
                pass
        elif tool == "machine_limits":
            pat = {"loopback": r"loopback TCP[^:]*:\s*([\d.]+) MB/s",
                   "odirect": r"O_DIRECT sequential[^:]*:\s*([\d.]+) MB/s"}.get(fig)
            if pat:
                m = re.search(pat, ml)
                if m:
                    v["mb_s"] = float(m.group(1))
            else:
                m = re.search(r"\((\d+) calls\): p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms", ml)
                if m:
                    v.update(n=int(m.group(1)), p50_ms=float(m.group(2)),
                             p99_ms=float(m.group(3)), max_ms=float(m.group(4)))
        res[fig] = v
    return res


def limits_section(limits):
    if not limits:
        return []
    lines = [
        "## Machine limits (this run)",
        "",
        "Measured by `perf/compare` before the workloads, files on WORK_DIR's file system (where",
        "the brokers' data dirs are). Each figure names the tool that produced it.",
        "",
        "| limit | measured | tool | command |",
        "|---|---|---|---|",
    ]
    for fig, label in LIMITS:
        v = limits.get(fig)
        if not v:
            lines.append(f"| {label} | not measured | – | – |")
            continue
        if "mb_s" in v:
            val = f"{v['mb_s']:,.0f} MB/s"
        elif "p50_ms" in v:
            val = (f"p50 {fmt(v['p50_ms'])} ms, p99 {fmt(v['p99_ms'])} ms, "
                   f"max {fmt(v['max_ms'])} ms ({v.get('n') or '?'} calls)")
        else:
            val = "no figure (see limits/)"
        lines.append(f"| {label} | {val} | {v['tool']} | `{v['command']}` |")
    return lines + [""]


def fraction_section(data, limits):
    """shardlog's (and Kafka's) headline figures as a fraction of the limit bounding them."""
    def med(w, b, key):
        return median([r[key] for r in data.get(w, {}).get(b, [])])

    lo = limits.get("loopback", {}).get("mb_s")
    od = limits.get("odirect", {}).get("mb_s")
    fs = limits.get("fdatasync", {}).get("p50_ms")
    rows = [
        ("max-rate", "produce_mb", "produce MB/s, acks=1", od, "O_DIRECT write MB/s"),
        ("max-rate", "produce_mb", "produce MB/s, acks=1", lo, "loopback MB/s"),
        ("max-rate", "consume_mb", "consume MB/s while producing", lo, "loopback MB/s"),
        ("max-rate-acks-all", "produce_mb", "produce MB/s, acks=all", od, "O_DIRECT write MB/s"),
        ("acks-all", "pub_p50", "publish p50 ms, acks=all at 50k msg/s", fs, "fdatasync p50 ms"),
        ("max-rate-acks-all", "pub_p50", "publish p50 ms, acks=all at max rate", fs,
         "fdatasync p50 ms"),
        ("consume-from-disk", "consume_mb", "consume from disk MB/s", lo, "loopback MB/s"),
    ]
    brokers = [b for b in ("shardlog", "kafka") if any(b in per for per in data.values())]
    out = []
    for w, key, label, limit, limit_label in rows:
        if limit is None or w not in data:
            continue
        cells = []
        for b in brokers:
            v = med(w, b, key)
            cells += [fmt(v), (f"{v / limit:.2f}" if v is not None and limit else "–")]
        out.append(f"| {w}: {label} | {limit_label}: {fmt(limit)} | " + " | ".join(cells) + " |")
    if not out:
        return []
    head = "| figure | bounded by | " + " | ".join(f"{b} | {b} / limit" for b in brokers) + " |"
    return [
        "## Fraction of this machine's limits",
        "",
        "Each headline figure divided by the limit that bounds it (Machine limits above, same run):",
        "for rates the share of the limit reached, for acks=all latency how many fdatasync p50s an",
        "acknowledgement takes (>= 1 is expected: the ack waits for one). Reads from disk have no",
        "read limit measured here; they are set against loopback, which every byte crosses.",
        "",
        head.replace("| figure |", "| headline figure |"),
        "|" + "---|" * (2 + 2 * len(brokers)),
    ] + out + [""]


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
