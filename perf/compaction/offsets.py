#!/usr/bin/env python3
"""`__consumer_offsets` on disk after N offset commits (issue 20): shardlog or Apache Kafka.

    tests/clients/python/.venv/bin/python perf/compaction/offsets.py \
        [--broker shardlog|kafka] [--binary target/release/shardlog] [--commits 1000000] \
        [--partitions 10] [--segment-bytes N]

Starts the broker as perf/compaction/bench.py does (loopback, temp data dir, cleaner backoff
1 s). One consumer group commits offsets for PARTITIONS partitions of one topic (librdkafka,
asynchronous commits with explicit offsets, no group membership), COMMITS / PARTITIONS
times: COMMITS offset records in `__consumer_offsets`, each a new offset of one of the same
PARTITIONS keys. Then it waits until the `.log` bytes stop shrinking (3 looks 3 s apart, at most
300 s) and
reports the bytes of the `__consumer_offsets-*` directories: of their `.log` files, of all
files (apparent: Kafka's preallocated sparse index files count 10 MiB each) and allocated (`du`). `--segment-bytes` sets `offsets.topic.segment.bytes` on both brokers
(default: each broker's default, 100 MiB on both, so 1 million commits may stay in one active
segment, which no cleaner touches).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def dir_bytes(root):
    apparent, logs, dirs = 0, 0, []
    for name in os.listdir(root):
        if name.startswith("__consumer_offsets-"):
            d = os.path.join(root, name)
            dirs.append(d)
            for f in os.listdir(d):
                p = os.path.join(d, f)
                if os.path.isfile(p):
                    apparent += os.path.getsize(p)
                    if f.endswith(".log"):
                        logs += os.path.getsize(p)
    allocated = 0
    if dirs:
        out = subprocess.run(["du", "-skc", *dirs], capture_output=True, text=True, check=True)
        allocated = int(out.stdout.strip().splitlines()[-1].split()[0]) * 1024
    return logs, apparent, allocated, len(dirs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", choices=["shardlog", "kafka"], default="shardlog")
    ap.add_argument("--binary", default=os.path.join(bench.ROOT, "target/release/shardlog"))
    ap.add_argument("--commits", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--segment-bytes", type=int, default=None)
    ap.add_argument("--in-flight", type=int, default=500)
    a = ap.parse_args()
    os.makedirs(os.path.join(bench.ROOT, "target/tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.join(bench.ROOT, "target/tmp"))
    broker = None
    try:
        extra = {"offsets.topic.segment.bytes": str(a.segment_bytes)} if a.segment_bytes else {}
        if a.broker == "shardlog":
            broker = bench.Shardlog(a.binary, tmp, extra)
        else:
            broker = bench.Kafka(tmp, extra)
        bootstrap = f"127.0.0.1:{broker.port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        broker.configure(admin)
        admin.create_topics([NewTopic("src", a.partitions, 1)])["src"].result(30)
        done = {"ok": 0, "err": 0}
        errors = {}

        def on_commit(err, _parts):
            done["err" if err else "ok"] += 1
            if err:
                errors[str(err)] = errors.get(str(err), 0) + 1

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "offsets-bench",
                      "enable.auto.commit": False, "on_commit": on_commit})
        rounds = a.commits // a.partitions
        # The group's coordinator first loads (or creates) its __consumer_offsets partition:
        # one synchronous commit, retried, before the measured ones.
        for attempt in range(120):
            try:
                c.commit(offsets=[TopicPartition("src", p, 0) for p in range(a.partitions)],
                         asynchronous=False)
                break
            except Exception as e:  # KafkaException while the coordinator loads
                if attempt == 119:
                    raise
                time.sleep(0.5)
        done["ok"] = done["err"] = 0
        errors.clear()
        t0 = time.time()
        deadline = t0 + 1800
        for r in range(rounds):
            while r - done["ok"] - done["err"] >= a.in_flight:
                c.poll(0.01)
                if time.time() > deadline:
                    raise RuntimeError("commits did not finish within 1800 s")
            c.commit(offsets=[TopicPartition("src", p, r + 1) for p in range(a.partitions)],
                     asynchronous=True)
        while done["ok"] + done["err"] < rounds and time.time() < deadline:
            c.poll(0.05)
        commit_s = time.time() - t0
        if done["err"] or done["ok"] < rounds:
            raise RuntimeError(f"commits: {done} of {rounds}: {errors}")
        committed = c.committed([TopicPartition("src", p) for p in range(a.partitions)], timeout=30)
        assert all(tp.offset == rounds for tp in committed), committed
        c.close()
        # The cleaner: until the .log bytes stopped shrinking for 3 looks 3 s apart (a pass on
        # a busy shard may take seconds; at most 300 s).
        start = time.time()
        sizes = []
        while time.time() - start < 300:
            sizes.append(dir_bytes(broker.data_dir)[0])
            if len(sizes) >= 4 and min(sizes[-4:-1]) <= sizes[-1]:
                break
            time.sleep(3)
        logs, apparent, allocated, dirs = dir_bytes(broker.data_dir)
        print(json.dumps({
            "broker": a.broker, "commits": rounds * a.partitions, "commit_requests": rounds,
            "partitions_per_commit": a.partitions, "commit_s": round(commit_s, 1),
            "offsets_segment_bytes": a.segment_bytes or "default",
            "consumer_offsets_dirs": dirs,
            "log_files_mb": round(logs / 2**20, 2),
            "apparent_mb": round(apparent / 2**20, 2), "allocated_mb": round(allocated / 2**20, 2),
            "load_avg_1m": round(os.getloadavg()[0], 1),
        }))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
