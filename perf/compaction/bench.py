#!/usr/bin/env python3
"""Log cleaner benchmark: cleaner throughput (MB/s of log cleaned) and produce p99 on a
compacted topic while the cleaner runs, against an idle baseline.

    tests/clients/python/.venv/bin/python perf/compaction/bench.py [--mb 256] [--keys 50000]

Starts target/release/shardlog itself (one shard, data dir under target/tmp, loopback), fills a
compacted topic with MB megabytes of 1 KiB values over KEYS keys (every key overwritten many
times), then measures, one message at a time with acks=all, the produce latency on the same
topic while the cleaner works, and again once it is idle. Cleaner figures come from the
broker's "log cleaner pass done" log lines (bytes read, bytes before/after, elapsed ms).
"""
import argparse, json, os, re, shutil, socket, subprocess, sys, tempfile, time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def p(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def probe(producer, topic, n, keys):
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        producer.produce(topic, key=f"k{i % keys}", value=b"x" * 1024)
        producer.flush(10)
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--keys", type=int, default=50000)
    ap.add_argument("--probe", type=int, default=2000)
    a = ap.parse_args()
    binary = os.path.join(ROOT, "target/release/shardlog")
    tmp = tempfile.mkdtemp(dir=os.path.join(ROOT, "target/tmp"))
    port = free_port()
    log = open(os.path.join(tmp, "broker.log"), "w")
    broker = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "data"),
         "--cores", "1", "--set", "log.segment.bytes=16777216", "--set", "log.cleaner.backoff.ms=1000"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        bootstrap = f"127.0.0.1:{port}"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic("cmp", 1, 1, config={"cleanup.policy": "compact"})])["cmp"].result(10)
        fill = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                         "queue.buffering.max.kbytes": 65536})
        value = b"v" * 1024
        n = a.mb * 1024
        t0 = time.time()
        for i in range(n):
            while True:
                try:
                    fill.produce("cmp", key=f"key-{i % a.keys}", value=value)
                    break
                except BufferError:
                    fill.poll(0.01)
        fill.flush(120)
        fill_s = time.time() - t0
        lat_p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        during = probe(lat_p, "cmp", a.probe, a.keys)
        # Wait for the cleaner to go idle (no pass for 3 backoffs), then the baseline.
        last = None
        deadline = time.time() + 600
        while time.time() < deadline:
            text = open(os.path.join(tmp, "broker.log")).read()
            passes = text.count("log cleaner pass done")
            if passes and passes == last:
                break
            last = passes
            time.sleep(3)
        idle = probe(lat_p, "cmp", a.probe, a.keys)
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(os.path.join(tmp, "broker.log")).read())
        runs = []
        for line in text.splitlines():
            if "log cleaner pass done" in line:
                f = dict(re.findall(r"(\w+)=(\d+)", line))
                runs.append({k: int(v) for k, v in f.items() if k in
                             ("bytes_read", "bytes_before", "bytes_after", "elapsed_ms", "segments")})
        read = sum(r.get("bytes_read", 0) for r in runs)
        ms = sum(r.get("elapsed_ms", 0) for r in runs)
        out = {
            "filled_mb": a.mb, "fill_s": round(fill_s, 1), "keys": a.keys,
            "cleaner_passes": len(runs),
            "cleaner_bytes_read_mb": round(read / 2**20, 1),
            "cleaner_mb_per_s": round(read / 2**20 / (ms / 1000), 1) if ms else None,
            "bytes_before_mb": round(sum(r.get("bytes_before", 0) for r in runs) / 2**20, 1),
            "bytes_after_mb": round(sum(r.get("bytes_after", 0) for r in runs) / 2**20, 1),
            "produce_ms_while_cleaning": {"p50": round(p(during, .5), 2), "p99": round(p(during, .99), 2)},
            "produce_ms_idle": {"p50": round(p(idle, .5), 2), "p99": round(p(idle, .99), 2)},
        }
        print(json.dumps(out, indent=2))
    finally:
        broker.terminate()
        try:
            broker.wait(30)
        except subprocess.TimeoutExpired:
            broker.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
