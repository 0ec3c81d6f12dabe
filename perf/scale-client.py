#!/usr/bin/env python3
"""The client side of perf/scale: one subcommand per step, each printing one JSON object.

  scale-client.py create   BOOTSTRAP PREFIX TOPICS PARTITIONS
  scale-client.py produce  BOOTSTRAP PREFIX TOPICS PARTITIONS
  scale-client.py serves   BOOTSTRAP PREFIX TOPICS PARTITIONS TIMEOUT_S [OFFSETS_JSON]
  scale-client.py offsets  BOOTSTRAP PREFIX TOPICS PARTITIONS
  scale-client.py metadata BOOTSTRAP COUNT
  scale-client.py idle     BOOTSTRAP COUNT READY_FILE RELEASE_FILE TIMEOUT_S
  scale-client.py group    BOOTSTRAP PREFIX READY_FILE RELEASE_FILE TIMEOUT_S

create: CreateTopics (confluent-kafka's AdminClient, 10 topics a request), then Metadata until
every partition has a leader; create_secs is the whole of it. produce: one record to every
partition with acks=all (librdkafka producer, partition given), all acknowledged or an error.
serves: ListOffsets (latest) for every partition, repeated until every partition answers
without error (and, given OFFSETS_JSON from `offsets`, with an end offset at least the one
recorded: nothing acknowledged lost), at most TIMEOUT_S. metadata: COUNT Metadata requests for
all topics (v4, raw socket, timed to the last byte of the answer). idle: COUNT connections,
each answered an ApiVersions, held until RELEASE_FILE exists (READY_FILE is written once they
are open). group: a consumer group (librdkafka, group.id PREFIXgroup, subscribed to ^PREFIX[0-9]+$, from
the earliest offsets, auto-commit every 5 s) reading until RELEASE_FILE exists; READY_FILE is
written once a record came from every assigned partition (each holds the one of `produce`).
Its latency is receipt time - the record's CreateTime (wall clock, ms resolution: the load
generator stamps the time it appended the record), over the records created from the time in
READY_FILE.from (wall-clock ms, written by the caller: the load's warm-up left out).

Loopback only: BOOTSTRAP must be 127.x.x.x:PORT.
"""

import json
import os
import resource
import socket
import struct
import sys
import time


def die(msg):
    print(f"scale-client: {msg}", file=sys.stderr)
    sys.exit(1)


def host_port(bootstrap):
    host, _, port = bootstrap.rpartition(":")
    if not host.startswith("127."):
        die(f"{bootstrap}: loopback only")
    return host, int(port)


def names(prefix, topics):
    return [f"{prefix}{i}" for i in range(topics)]


def admin(bootstrap):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 60000})


def out(obj):
    print(json.dumps(obj))


def leaders_ready(a, topics, partitions):
    md = a.list_topics(timeout=60)
    ready = 0
    for t in topics:
        tm = md.topics.get(t)
        if tm is None or tm.error is not None:
            continue
        ready += sum(1 for p in tm.partitions.values() if p.leader >= 0 and p.error is None)
    return ready


def cmd_create(bootstrap, prefix, topics, partitions):
    from confluent_kafka.admin import NewTopic

    topics, partitions = int(topics), int(partitions)
    a = admin(bootstrap)
    all_names = names(prefix, topics)
    t0 = time.monotonic()
    errors = {}
    for i in range(0, topics, 10):
        chunk = all_names[i : i + 10]
        futures = a.create_topics(
            [NewTopic(t, partitions, 1) for t in chunk], request_timeout=300, operation_timeout=300
        )
        for t, f in futures.items():
            try:
                f.result()
            except Exception as e:  # noqa: BLE001 - the broker's refusal is the result
                errors[t] = str(e)
    created_secs = time.monotonic() - t0
    want = (topics - len(errors)) * partitions
    ready = 0
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready = leaders_ready(a, all_names, partitions)
        if ready >= want:
            break
        time.sleep(0.2)
    out(
        {
            "create_secs": round(time.monotonic() - t0, 3),
            "create_requests_secs": round(created_secs, 3),
            "topics_refused": len(errors),
            "first_error": next(iter(errors.values()), None),
            "partitions_ready": ready,
            "partitions_wanted": topics * partitions,
        }
    )


def cmd_produce(bootstrap, prefix, topics, partitions):
    from confluent_kafka import Producer

    topics, partitions = int(topics), int(partitions)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200000,
            "message.timeout.ms": 300000,
        }
    )
    state = {"ok": 0, "err": 0, "first": None}

    def done(err, _msg):
        if err is None:
            state["ok"] += 1
        else:
            state["err"] += 1
            state["first"] = state["first"] or str(err)

    t0 = time.monotonic()
    for t in names(prefix, topics):
        for i in range(partitions):
            p.produce(t, value=f"{t}/{i}".encode(), partition=i, on_delivery=done)
        p.poll(0)
    left = p.flush(300)
    out(
        {
            "produce_secs": round(time.monotonic() - t0, 3),
            "acknowledged": state["ok"],
            "failed": state["err"],
            "unanswered": left,
            "first_error": state["first"],
        }
    )


def list_latest(a, tps):
    from confluent_kafka.admin import OffsetSpec

    futures = a.list_offsets({tp: OffsetSpec.latest() for tp in tps}, request_timeout=30)
    got, errors = {}, {}
    for tp, f in futures.items():
        try:
            got[(tp.topic, tp.partition)] = f.result().offset
        except Exception as e:  # noqa: BLE001 - not serving yet
            errors[(tp.topic, tp.partition)] = str(e)
    return got, errors


def partitions_of(prefix, topics, partitions):
    from confluent_kafka import TopicPartition

    return [TopicPartition(t, i) for t in names(prefix, int(topics)) for i in range(int(partitions))]


def cmd_offsets(bootstrap, prefix, topics, partitions):
    got, errors = list_latest(admin(bootstrap), partitions_of(prefix, topics, partitions))
    out({"offsets": {f"{t}/{p}": o for (t, p), o in got.items()}, "errors": len(errors)})


def answers(host, port):
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.sendall(frame(18, 0, 0, b""))
            read_frame(s)
            return True
    except OSError:
        return False


def cmd_serves(bootstrap, prefix, topics, partitions, timeout_s, offsets_json=None):
    # Started beside the broker: waits for the listener (raw ApiVersions every 50 ms), then
    # ListOffsets for every partition until all answer. `served_at` is the wall clock then, so
    # the caller times the restart from the broker's launch, without this process's start-up.
    host, port = host_port(bootstrap)
    want = {}
    if offsets_json:
        with open(offsets_json) as f:
            want = json.load(f).get("offsets", {})
    tps = partitions_of(prefix, topics, partitions)
    deadline = time.monotonic() + float(timeout_s)
    while not answers(host, port):
        if time.monotonic() > deadline:
            out({"serving": 0, "error": f"no ApiVersions answer within {timeout_s} s"})
            sys.exit(1)
        time.sleep(0.05)
    listening_at = time.time()
    a, tries, last = None, 0, None
    while time.monotonic() < deadline:
        tries += 1
        try:
            a = a or admin(bootstrap)
            got, errors = list_latest(a, tps)
        except Exception as e:  # noqa: BLE001 - not serving yet
            a, last = None, str(e)
            time.sleep(0.1)
            continue
        if not errors and len(got) == len(tps):
            lost = [k for k, o in want.items() if got.get(tuple_of(k), -1) < o]
            out(
                {
                    "listening_at": listening_at,
                    "served_at": time.time(),
                    "serving": len(got),
                    "tries": tries,
                    "lost_partitions": len(lost),
                    "checked_partitions": len(want),
                }
            )
            return
        last = next(iter(errors.values()), None)
        time.sleep(0.1)
    out({"serving": 0, "tries": tries, "error": f"not every partition served within {timeout_s} s: {last}"})
    sys.exit(1)


def tuple_of(key):
    t, _, p = key.rpartition("/")
    return (t, int(p))


def frame(api_key, version, corr, body):
    client = b"scale"
    hdr = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    payload = hdr + body
    return struct.pack(">i", len(payload)) + payload


def read_frame(s):
    size = b""
    while len(size) < 4:
        chunk = s.recv(4 - len(size))
        if not chunk:
            raise ConnectionError("closed")
        size += chunk
    (n,) = struct.unpack(">i", size)
    left = n
    while left:
        chunk = s.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("closed")
        left -= len(chunk)
    return n


def cmd_metadata(bootstrap, count):
    host, port = host_port(bootstrap)
    s = socket.create_connection((host, port), timeout=60)
    # Metadata v4: topics = null (all), allow_auto_topic_creation = false.
    body = struct.pack(">ib", -1, 0)
    times, size = [], 0
    for i in range(int(count)):
        t0 = time.monotonic()
        s.sendall(frame(3, 4, i, body))
        size = read_frame(s)
        times.append((time.monotonic() - t0) * 1000)
    s.close()
    times.sort()
    out({"metadata_ms": [round(x, 3) for x in times], "median_ms": round(times[len(times) // 2], 3), "response_bytes": size})


def cmd_idle(bootstrap, count, ready_file, release_file, timeout_s):
    host, port = host_port(bootstrap)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    count = int(count)
    socks, refused, first_error = [], 0, None
    t0 = time.monotonic()
    for i in range(count):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(frame(18, 0, i, b""))  # ApiVersions v0: an established Kafka client
            read_frame(s)
            socks.append(s)
        except OSError as e:
            refused += 1
            first_error = first_error or f"connection {i}: {e}"
            if refused >= 50:
                break
    open_secs = time.monotonic() - t0
    result = {"wanted": count, "answered": len(socks), "refused": refused, "first_error": first_error, "open_secs": round(open_secs, 3)}
    with open(ready_file + ".tmp", "w") as f:
        json.dump(result, f)
    os.rename(ready_file + ".tmp", ready_file)
    deadline = time.monotonic() + float(timeout_s)
    while not os.path.exists(release_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    # Still open at the end? (a broker closing idle connections early would show here)
    alive = 0
    for s in socks:
        try:
            s.setblocking(False)
            try:
                alive += 0 if s.recv(1) == b"" else 1
            except BlockingIOError:
                alive += 1
        except OSError:
            pass
        s.close()
    result["alive_at_end"] = alive
    out(result)


def cmd_group(bootstrap, prefix, ready_file, release_file, timeout_s):
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"{prefix}group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
            "auto.commit.interval.ms": 5000,
        }
    )
    c.subscribe([f"^{prefix}[0-9]+$"])
    deadline = time.monotonic() + float(timeout_s)
    recs, n, nbytes, errors = [], 0, 0, 0
    t0, ready_secs, seen = time.monotonic(), None, set()
    while time.monotonic() < deadline and not os.path.exists(release_file):
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            errors += 1
            continue
        n += 1
        nbytes += len(m.value() or b"")
        kind, ts = m.timestamp()
        if kind != 0:
            recs.append((ts, time.time() * 1000 - ts))
        # Ready once a record came from every assigned partition (each holds one from the
        # produce step, read from the earliest offset): the group fetches from all of them.
        if ready_secs is None:
            seen.add((m.topic(), m.partition()))
            if len(seen) >= len(c.assignment()) > 0:
                ready_secs = round(time.monotonic() - t0, 3)
                with open(ready_file, "w") as f:
                    f.write(f"{len(seen)} partitions read\n")
    # Latency of the records created in the measured window only (the caller writes its start,
    # wall-clock ms, to READY_FILE.from: the load's warm-up is left out).
    measure_from = 0
    try:
        with open(ready_file + ".from") as f:
            measure_from = float(f.read().strip())
    except (OSError, ValueError):
        pass
    lat = sorted(d for ts, d in recs if ts >= measure_from)
    assignment = len(c.assignment())
    c.close()
    lat.sort()

    def q(x):
        return round(lat[min(len(lat) - 1, int(x * len(lat)))], 1) if lat else None

    out(
        {
            "group_ready_secs": ready_secs,
            "group_assigned_partitions": assignment,
            "group_consumed": n,
            "group_measured": len(lat),
            "group_bytes": nbytes,
            "group_errors": errors,
            "group_p50_ms": q(0.5),
            "group_p99_ms": q(0.99),
            "group_max_ms": round(lat[-1], 1) if lat else None,
        }
    )


def main():
    if len(sys.argv) < 2:
        die(__doc__)
    cmd, args = sys.argv[1], sys.argv[2:]
    fn = {
        "create": cmd_create,
        "produce": cmd_produce,
        "serves": cmd_serves,
        "offsets": cmd_offsets,
        "metadata": cmd_metadata,
        "idle": cmd_idle,
        "group": cmd_group,
    }.get(cmd)
    if fn is None:
        die(f"unknown step {cmd!r}\n{__doc__}")
    host_port(args[0])
    fn(*args)


if __name__ == "__main__":
    main()
