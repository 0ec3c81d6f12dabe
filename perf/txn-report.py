#!/usr/bin/env python3
"""The table of a perf/txn-compare run: medians over the repetitions per broker and
transaction size, and shardlog's figures as ratios to Kafka's (same run).

    perf/txn-report.py RUN_DIR
"""
import json
import statistics
import sys
from pathlib import Path

METRICS = [
    ("records_per_s", "committed records/s", "higher is better"),
    ("commit_p50_ms", "commit latency p50 (ms)", "lower is better"),
    ("commit_p99_ms", "commit latency p99 (ms)", "lower is better"),
    ("e2e_p50_ms", "read_committed e2e p50 (ms)", "lower is better"),
    ("e2e_p99_ms", "read_committed e2e p99 (ms)", "lower is better"),
]


def main() -> None:
    run = Path(sys.argv[1])
    runs: dict[tuple[str, int], list[dict]] = {}
    for d in sorted(run.iterdir()):
        if not d.is_dir() or "-" not in d.name:
            continue
        broker = d.name.rsplit("-", 1)[0]
        for n in (100, 10000):
            f = d / f"txn{n}.json"
            try:
                line = f.read_text().strip().splitlines()[-1]
                runs.setdefault((broker, n), []).append(json.loads(line))
            except (OSError, IndexError, json.JSONDecodeError):
                print(f"<!-- {f}: no result -->")
    plan = (run / "plan.txt").read_text() if (run / "plan.txt").exists() else ""
    print("```")
    print(plan.rstrip())
    print("```")
    print()
    for n in (100, 10000):
        sl, kf = runs.get(("shardlog", n), []), runs.get(("kafka", n), [])
        print(f"**{n:,}-record transactions** (reps: shardlog {len(sl)}, Kafka {len(kf)})")
        print()
        print("| metric | shardlog (median) | Kafka (median) | ratio shardlog/Kafka | shardlog reps | Kafka reps |")
        print("|---|---|---|---|---|---|")
        for key, name, _ in METRICS:
            a = [r[key] for r in sl if r.get(key, -1) >= 0]
            b = [r[key] for r in kf if r.get(key, -1) >= 0]
            ma = statistics.median(a) if a else None
            mb = statistics.median(b) if b else None
            ratio = f"{ma / mb:.2f}x" if ma is not None and mb else "n/a"
            fmt = lambda v: "n/a" if v is None else (f"{v:,.0f}" if key == "records_per_s" else f"{v:.2f}")
            reps = lambda xs: ", ".join(fmt(x) for x in xs)
            print(f"| {name} | {fmt(ma)} | {fmt(mb)} | {ratio} | {reps(a)} | {reps(b)} |")
        print()
        lost = [r for r in sl + kf if r.get("consumed", 0) < r.get("records", 0)]
        if lost:
            print(f"Runs whose read_committed consumer did not see every committed record within 30 s: {len(lost)}")
            print()


if __name__ == "__main__":
    main()
