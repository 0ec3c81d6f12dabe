#!/usr/bin/env python3
"""Log cleaner benchmark: cleaner throughput (MB/s of log cleaned) and produce latency on a
compacted topic while the cleaner runs, against the same broker idle; shardlog or Apache Kafka.

    tests/clients/python/.venv/bin/python perf/compaction/bench.py \
        [--broker shardlog|kafka] [--binary target/release/shardlog] [--mb 256] [--keys 50000]

Starts the broker itself (shardlog: one shard; Kafka: perf/peers/kafka/kafka.sh, installed
with `kafka.sh install`), on loopback, data dir under target/tmp (removed after). Both get
`log.cleaner.backoff.ms=1000` (Kafka: as a dynamic config of its broker 1) and a topic
`cmp` with `cleanup.policy=compact`, `segment.bytes=16777216`, other configs at their defaults
(`min.cleanable.dirty.ratio` 0.5). It fills the topic with MB megabytes of 1 KiB values over
KEYS keys (acks=1), then produces one 1 KiB record at a time with acks=all (librdkafka,
linger.ms=0) to the same partition, timing each, until the cleaner has been idle for
`--quiet-s` after its last pass (at most `--max-s`).

Cleaner passes come from the broker's log: shardlog's "log cleaner pass done" lines, Kafka's
"Log cleaner thread N cleaned log cmp-0" statistics. A pass spans [end - elapsed, end].
- cleaner MB/s: bytes the rewrite read (Kafka's "MB of log processed"; shardlog's
  bytes_read - map_bytes_read) over the passes' total elapsed time (map + rewrite, as Kafka's);
- produce while cleaning: the probes sent inside a pass; idle: the probes sent from 1 s after
  the last pass on.
Prints one JSON object.
"""
import argparse, calendar, json, os, re, shutil, socket, subprocess, sys, tempfile, time
from datetime import datetime

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KAFKA_SH = os.path.join(ROOT, "perf/peers/kafka/kafka.sh")
TOPIC = "cmp"
SEGMENT_BYTES = 16 << 20
BACKOFF_MS = 1000


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None


def wait_port(port, timeout_s=60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s} s")


class Shardlog:
    def __init__(self, binary, tmp, extra=None):
        self.port = free_port()
        self.log_path = os.path.join(tmp, "broker.log")
        self.log = open(self.log_path, "w")
        sets = [x for k, v in (extra or {}).items() for x in ("--set", f"{k}={v}")]
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir",
             os.path.join(tmp, "data"), "--cores", "1",
             "--set", f"log.cleaner.backoff.ms={BACKOFF_MS}", *sets],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port)
        self.data_dir = os.path.join(tmp, "data")

    def configure(self, admin):
        pass

    def passes(self, topic_partition):
        """(end epoch s, elapsed s, rewrite bytes or None, bytes before, bytes after) per pass."""
        text = re.sub(r"\x1b\[[0-9;]*m", "", open(self.log_path).read())
        topic, part = topic_partition.rsplit("-", 1)
        out = []
        for line in text.splitlines():
            if "log cleaner pass done" not in line:
                continue
            f = dict(re.findall(r"(\w+)=(\S+)", line))
            if f.get("topic") != topic or f.get("partition") != part:
                continue
            ts = line.split()[0].rstrip("Z")
            end = calendar.timegm(datetime.strptime(ts[:26], "%Y-%m-%dT%H:%M:%S.%f").timetuple()) \
                + float("0." + ts[20:26])
            rewrite = None
            if "map_bytes_read" in f:
                rewrite = int(f["bytes_read"]) - int(f["map_bytes_read"])
            out.append((end, int(f["elapsed_ms"]) / 1000, rewrite,
                        int(f["bytes_before"]), int(f["bytes_after"])))
        return out

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Kafka:
    def __init__(self, tmp, extra=None):
        self.port = free_port()
        self.data = os.path.join(tmp, "kafka")
        self.env = dict(os.environ, KAFKA_PORT=str(self.port),
                        KAFKA_EXTRA_PROPERTIES="\n".join(f"{k}={v}" for k, v in (extra or {}).items()))
        subprocess.run([KAFKA_SH, "start", self.data], env=self.env, check=True,
                       stdout=subprocess.DEVNULL)
        self.log_path = os.path.join(self.data, "server.log")
        self.data_dir = os.path.join(self.data, "logs")

    def configure(self, admin):
        # log.cleaner.backoff.ms is one of the cleaner configs Kafka updates dynamically.
        res = ConfigResource(ConfigResource.Type.BROKER, "1", incremental_configs=[
            ConfigEntry("log.cleaner.backoff.ms", str(BACKOFF_MS),
                        incremental_operation=AlterConfigOpType.SET)])
        for f in admin.incremental_alter_configs([res]).values():
            f.result(30)

    def passes(self, topic_partition):
        text = open(self.log_path).read()
        out = []
        pat = re.compile(
            r"Log cleaner thread \d+ cleaned log " + re.escape(topic_partition) +
            r" \(dirty section = \[\d+, \d+\]\)\s*\n\s*([\d,.]+) MB of log processed in ([\d,.]+) seconds"
            r".*?Start size: ([\d,.]+) MB.*?End size: ([\d,.]+) MB", re.S)
        for m in pat.finditer(text):
            head = text.rfind("\n[", 0, m.start()) + 1
            ts = text[head + 1:head + 24]  # 2026-12-03 15:50:01,123 (local time)
            end = time.mktime(datetime.strptime(ts[:19], "%Y-%m-%d %H:%M:%S").timetuple()) \
                + int(ts[20:23]) / 1000
            num = lambda s: float(s.replace(",", ""))
            out.append((end, num(m.group(2)), num(m.group(1)) * 2**20,
                        num(m.group(3)) * 2**20, num(m.group(4)) * 2**20))
        return out

    def stop(self):
        subprocess.run([KAFKA_SH, "stop", self.data], env=self.env, check=False,
                       stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", choices=["shardlog", "kafka"], default="shardlog")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/shardlog"))
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--keys", type=int, default=50000)
    ap.add_argument("--quiet-s", type=float, default=6.0)
    ap.add_argument("--idle-probes", type=int, default=1500)
    ap.add_argument("--max-s", type=float, default=300.0)
    a = ap.parse_args()
    os.makedirs(os.path.join(ROOT, "target/tmp"), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.join(ROOT, "target/tmp"))
    broker = None
    try:
        broker = Shardlog(a.binary, tmp) if a.broker == "shardlog" else Kafka(tmp)
        bootstrap = f"127.0.0.1:{broker.port}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        broker.configure(admin)
        admin.create_topics([NewTopic(TOPIC, 1, 1, config={
            "cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES)})])[TOPIC].result(30)
        fill = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5,
                         "queue.buffering.max.kbytes": 65536})
        value = b"v" * 1024
        t0 = time.time()
        for i in range(a.mb * 1024):
            for _ in range(100000):
                try:
                    fill.produce(TOPIC, key=f"key-{i % a.keys}", value=value)
                    break
                except BufferError:
                    fill.poll(0.01)
        if fill.flush(300) != 0:
            raise RuntimeError("the fill was not acknowledged within 300 s")
        fill_s = time.time() - t0
        probe = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
        samples = []  # (send epoch s, latency ms)
        tp = f"{TOPIC}-0"
        start = time.time()
        i = 0
        while time.time() - start < a.max_s:
            s = time.time()
            t = time.perf_counter()
            probe.produce(TOPIC, key=f"key-{i % a.keys}", value=value)
            if probe.flush(10) != 0:
                raise RuntimeError("a probe was not acknowledged within 10 s")
            samples.append((s, (time.perf_counter() - t) * 1000))
            i += 1
            if i % 200 == 0:
                passes = broker.passes(tp)
                if passes:
                    last_end = max(p[0] for p in passes)
                    idle = sum(1 for (st, _) in samples if st > last_end + 1.0)
                    if time.time() - last_end > a.quiet_s and idle >= a.idle_probes:
                        break
        passes = broker.passes(tp)
        windows = [(end - el, end) for (end, el, *_rest) in passes]
        during = [l for (st, l) in samples if any(lo <= st <= hi for lo, hi in windows)]
        last_end = max((hi for _, hi in windows), default=float("inf"))
        idle = [l for (st, l) in samples if st > last_end + 1.0]
        elapsed = sum(el for (_, el, *_r) in passes)
        rewrite = [p[2] for p in passes]
        rewrite_bytes = sum(rewrite) if passes and None not in rewrite else None
        q = lambda xs: {"n": len(xs), "p50": round(pct(xs, .5), 2) if xs else None,
                        "p99": round(pct(xs, .99), 2) if xs else None}
        out = {
            "broker": a.broker, "binary": a.binary if a.broker == "shardlog" else "kafka.sh",
            "filled_mb": a.mb, "fill_s": round(fill_s, 1), "keys": a.keys,
            "cleaner_passes": len(passes),
            "cleaner_elapsed_s": round(elapsed, 2),
            "cleaner_rewrite_mb": round(rewrite_bytes / 2**20, 1) if rewrite_bytes is not None else None,
            "cleaner_mb_per_s": round(rewrite_bytes / 2**20 / elapsed, 1)
            if rewrite_bytes is not None and elapsed > 0 else None,
            "bytes_before_mb": round(sum(p[3] for p in passes) / 2**20, 1),
            "bytes_after_mb": round(sum(p[4] for p in passes) / 2**20, 1),
            "produce_ms_while_cleaning": q(during),
            "produce_ms_idle": q(idle),
            "load_avg_1m": round(os.getloadavg()[0], 1),
        }
        print(json.dumps(out))
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
