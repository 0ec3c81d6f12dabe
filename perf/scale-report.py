#!/usr/bin/env python3
"""perf/scale's report: OUT/RESULTS-scale.md from OUT/<broker>-<rep>/steps.jsonl.

  scale-report.py OUT

Per broker, the median over its repetitions of every figure; then shardlog / Kafka for the
figures issue 16 sets targets for (disk <= 1x, RSS <= 0.1x, restart <= 0.25x, CPU per GB of
the low-rate consumer workload <= 0.3x). Standard library only.
"""

import gzip
import json
import re
import statistics
import sys
from pathlib import Path

TARGETS = {  # figure: (target ratio shardlog / Kafka, what it is)
    "disk_mib": (1.0, "disk allocated after one record per partition (du)"),
    "rss_mib": (0.1, "broker RSS after one record per partition (VmRSS)"),
    "hwm_mib": (0.1, "broker peak RSS over the run before the restarts (VmHWM)"),
    "restart_secs": (0.25, "restart after a clean stop, until every partition serves"),
    "kill9_restart_secs": (0.25, "restart after kill -9, until every partition serves"),
    "cpu_per_gb_secs": (0.3, "broker CPU seconds per GB of the low-rate workload"),
}


def load_runs(out):
    runs = {}
    for d in sorted(out.iterdir()):
        f = d / "steps.jsonl"
        if not d.is_dir() or not f.exists():
            continue
        broker, _, rep = d.name.rpartition("-")
        steps = {}
        for line in f.read_text().splitlines():
            if line.strip():
                try:
                    s = json.loads(line)
                except json.JSONDecodeError:
                    continue
                steps[s["step"]] = s
        lowrate = {}
        lf = d / "lowrate.json"
        if lf.exists():
            try:
                lowrate = json.loads(lf.read_text())
            except json.JSONDecodeError:
                pass
        runs.setdefault(broker, []).append(
            {"rep": rep, "steps": steps, "load": lowrate, "startups": shardlog_startups(d)}
        )
    return runs


TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def shardlog_startups(run_dir):
    """Per start of a shardlog broker (from its broker.log.gz): seconds from `shardlog starting`
    to the last partition opened, and from there to the last `replayed group state` (the
    __consumer_offsets replay), for the restart after the clean stop and the one after kill -9."""
    from datetime import datetime

    f = run_dir / "broker.log.gz"
    if not f.exists():
        return {}
    starts = []
    with gzip.open(f, "rt", errors="replace") as fh:
        for line in fh:
            line = ANSI.sub("", line)
            m = TS.match(line)
            if not m:
                continue
            t = datetime.fromisoformat(m.group(1)[:26]).timestamp()
            if "shardlog starting" in line:
                starts.append({"start": t, "opened": None, "replayed": None})
            elif starts and "opened partition log" in line:
                starts[-1]["opened"] = t
            elif starts and "replayed group state" in line:
                starts[-1]["replayed"] = t
    out = {}
    for name, st in zip(("first", "restart", "kill9"), starts):
        if name == "first" or st["opened"] is None:
            continue
        out[f"{name}_open_partitions_secs"] = st["opened"] - st["start"]
        if st["replayed"] is not None:
            out[f"{name}_replay_groups_secs"] = st["replayed"] - st["opened"]
    return out


def get(s, step, key):
    v = s.get(step, {}).get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def mib(kib):
    return None if kib is None else kib / 1024


def figures(run):
    s, load = run["steps"], run["load"]
    f = {}
    f["partitions_created"] = get(s, "create", "partitions_ready")
    f["create_secs"] = get(s, "create", "create_secs")
    f["produce_one_secs"] = get(s, "produce", "produce_secs")
    f["disk_mib"] = mib(get(s, "produce", "du_kib"))
    f["disk_after_load_mib"] = mib(get(s, "lowrate", "du_kib"))
    f["rss_mib"] = mib(get(s, "produce", "vm_rss_kib"))
    f["fds_after_create"] = get(s, "produce", "fds")
    f["metadata_ms"] = get(s, "metadata", "median_ms")
    f["metadata_bytes"] = get(s, "metadata", "response_bytes")
    hwm = [get(s, k, "vm_hwm_kib") for k in s if not k.startswith(("restart", "kill9", "end"))]
    hwm = [h for h in hwm if h is not None]
    f["hwm_mib"] = mib(max(hwm)) if hwm else None
    f["rss_after_load_mib"] = mib(get(s, "lowrate", "vm_rss_kib"))
    cpu = get(s, "lowrate", "cpu_step_secs")
    summary = load.get("summary", {}) if isinstance(load, dict) else {}
    size = (load.get("workload") or {}).get("message_size") or 1024
    acked = summary.get("total_acked_msgs")
    gb = acked * size / 1e9 if acked else None
    f["lowrate_gb"] = gb
    f["lowrate_cpu_secs"] = cpu
    f["cpu_per_gb_secs"] = cpu / gb if cpu is not None and gb else None
    pub = ((load.get("histograms") or {}).get("publish") or {}).get("percentiles") or {}
    f["publish_p99_ms"] = pub["p99"] / 1000 if "p99" in pub else None
    f["e2e_p50_ms"] = get(s, "lowrate", "group_p50_ms")
    f["e2e_p99_ms"] = get(s, "lowrate", "group_p99_ms")
    f["group_ready_secs"] = get(s, "lowrate", "group_ready_secs")
    f["group_consumed"] = get(s, "lowrate", "group_consumed")
    f["group_measured"] = get(s, "lowrate", "group_measured")
    f["load_acked"] = acked
    f["load_failed"] = summary.get("total_failed_msgs")
    for k in s:
        if k.startswith("idle-") and k.endswith("-held"):
            n = k[len("idle-") : -len("-held")]
            f[f"idle{n}_answered"] = get(s, f"idle-{n}", "answered")
            f[f"idle{n}_alive"] = get(s, f"idle-{n}", "alive_at_end")
            f[f"idle{n}_rss_mib"] = mib(get(s, k, "vm_rss_kib"))
            f[f"idle{n}_fds"] = get(s, k, "fds")
            f[f"idle{n}_cpu_secs"] = get(s, k, "cpu_step_secs")
            f[f"idle{n}_metadata_ms"] = get(s, k, "median_ms")
    f["stop_secs"] = get(s, "restart", "stop_secs")
    f["restart_secs"] = get(s, "restart", "restart_secs")
    f["restart_listening_secs"] = get(s, "restart", "listening_secs")
    f["restart_lost_partitions"] = get(s, "restart", "lost_partitions")
    f["restart_rss_mib"] = mib(get(s, "restart", "vm_rss_kib"))
    f["kill9_restart_secs"] = get(s, "kill9", "restart_secs")
    f["kill9_listening_secs"] = get(s, "kill9", "listening_secs")
    f["kill9_lost_partitions"] = get(s, "kill9", "lost_partitions")
    f["disk_end_mib"] = mib(get(s, "end", "du_kib"))
    f.update(run.get("startups", {}))
    return f


LABELS = [
    ("partitions_created", "partitions created (every leader shown)"),
    ("create_secs", "create all partitions (until every leader shows), s"),
    ("produce_one_secs", "one record to each partition, acks=all, s"),
    ("disk_mib", "disk allocated after that (du), MiB"),
    ("rss_mib", "RSS after that (VmRSS), MiB"),
    ("fds_after_create", "open fds after that"),
    ("metadata_ms", "Metadata, all topics (median), ms"),
    ("metadata_bytes", "Metadata answer, bytes"),
    ("lowrate_cpu_secs", "low-rate load: broker CPU, s"),
    ("lowrate_gb", "low-rate load: GB produced (acknowledged)"),
    ("cpu_per_gb_secs", "low-rate load: broker CPU s per GB"),
    ("publish_p99_ms", "low-rate load: publish p99 (acks=all), ms"),
    ("e2e_p50_ms", "low-rate load: produce->consume p50 (group), ms"),
    ("e2e_p99_ms", "low-rate load: produce->consume p99 (group), ms"),
    ("group_ready_secs", "consumer group: join until it read from every partition, s"),
    ("group_consumed", "low-rate load: records the group read (all)"),
    ("group_measured", "low-rate load: records in the group's latency (after warm-up)"),
    ("load_acked", "low-rate load: records acknowledged"),
    ("load_failed", "low-rate load: records not acknowledged (failed or unanswered at the end)"),
    ("disk_after_load_mib", "disk after the load, MiB"),
    ("rss_after_load_mib", "RSS after the load, MiB"),
    ("hwm_mib", "peak RSS before the restarts (VmHWM), MiB"),
    ("stop_secs", "clean stop (SIGTERM until exit), s"),
    ("restart_secs", "restart after clean stop until every partition serves, s"),
    ("restart_listening_secs", "  of which until the listener answers, s"),
    ("restart_lost_partitions", "  partitions behind their end offset before the stop"),
    ("restart_open_partitions_secs", "  shardlog log: start to the last partition opened, s"),
    ("restart_replay_groups_secs", "  shardlog log: then replaying __consumer_offsets, s"),
    ("restart_rss_mib", "RSS after the restart, MiB"),
    ("kill9_restart_secs", "restart after kill -9 until every partition serves, s"),
    ("kill9_listening_secs", "  of which until the listener answers, s"),
    ("kill9_lost_partitions", "  partitions behind their end offset before the kill"),
    ("kill9_open_partitions_secs", "  shardlog log: start to the last partition opened, s"),
    ("kill9_replay_groups_secs", "  shardlog log: then replaying __consumer_offsets, s"),
    ("disk_end_mib", "disk at the end, MiB"),
]


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return f"{v:,}"


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    runs = load_runs(out)
    brokers = [b for b in ("shardlog", "kafka") if b in runs]
    per = {b: [figures(r) for r in runs[b]] for b in brokers}
    present = dict.fromkeys(k for b in brokers for f in per[b] for k in f)
    idle_keys = [k for k in present if k.startswith("idle")]
    ordered = [k for k, _ in LABELS if k in present]
    # The idle-connection rows go after the low-rate load's, the rest in LABELS' order.
    cut = next((i for i, k in enumerate(ordered) if k == "stop_secs"), len(ordered))
    keys = ordered[:cut] + idle_keys + ordered[cut:]
    keys += [k for k in present if k not in keys]
    labels = dict(LABELS)
    for k in keys:
        if k.startswith("idle") and k not in labels:
            n, _, what = k[len("idle") :].partition("_")
            labels[k] = {
                "answered": f"{n} idle connections: answered",
                "alive": f"{n} idle connections: still open after the hold",
                "rss_mib": f"{n} idle connections: RSS, MiB",
                "fds": f"{n} idle connections: open fds",
                "cpu_secs": f"{n} idle connections: broker CPU over the hold, s",
                "metadata_ms": f"{n} idle connections: Metadata (median), ms",
            }.get(what, k)
    med = {b: {k: median([f.get(k) for f in per[b]]) for k in keys} for b in brokers}
    lines = ["# perf/scale: many partitions, shardlog vs Apache Kafka", ""]
    run_txt = out / "run.txt"
    if run_txt.exists():
        lines += ["```", run_txt.read_text().rstrip(), "```", ""]
    lines += ["Repetitions: " + ", ".join(f"{b} {len(per[b])}" for b in brokers) + ". Medians.", ""]
    if "kafka" in brokers and "shardlog" in brokers:
        lines += ["## Against issue 16's targets (shardlog / Kafka, medians)", ""]
        lines += ["| figure | shardlog | Kafka | ratio | target | met |", "|---|---|---|---|---|---|"]
        for k, (target, what) in TARGETS.items():
            a, b = med["shardlog"].get(k), med["kafka"].get(k)
            ratio = a / b if a is not None and b else None
            met = "-" if ratio is None else ("yes" if ratio <= target else "**no**")
            lines.append(f"| {what} | {fmt(a)} | {fmt(b)} | {fmt(ratio)} | <= {target}x | {met} |")
        lines.append("")
    lines += ["## Every figure (medians)", ""]
    head = "| figure | " + " | ".join(brokers) + (" | shardlog / Kafka |" if len(brokers) == 2 else " |")
    lines += [head, "|---" * (len(brokers) + 1 + (len(brokers) == 2)) + "|"]
    for k in keys:
        vals = [med[b].get(k) for b in brokers]
        row = f"| {labels.get(k, k)} | " + " | ".join(fmt(v) for v in vals)
        if len(brokers) == 2:
            a, b = vals
            row += f" | {fmt(a / b) if a is not None and b else '-'}"
        lines.append(row + " |")
    lines += ["", "## Per repetition", ""]
    for b in brokers:
        for r, f in zip(runs[b], per[b]):
            picks = ["create_secs", "disk_mib", "rss_mib", "cpu_per_gb_secs", "e2e_p99_ms", "restart_secs", "kill9_restart_secs"]
            lines.append(f"- {b} rep {r['rep']}: " + ", ".join(f"{k} {fmt(f.get(k))}" for k in picks))
            refused = r["steps"].get("create", {}).get("first_error")
            if refused:
                lines.append(f"  - create refused: {refused}")
    lines.append("")
    (out / "RESULTS-scale.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
