"""Scenarios for confluent-kafka (Python, librdkafka inside). See common.py for the contract."""

import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from common import (
    CODECS, OVER_VALUE_BYTES, UNDER_VALUE_BYTES, XC_BLOCK, XC_COUNT, check_kv, check_xc, fail,
    kv_messages, main, until, xc_message,
)


def producer(bootstrap, **extra):
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 15000}
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return Producer(conf)


def consumer(bootstrap, group=None, **extra):
    conf = {"bootstrap.servers": bootstrap, "group.id": group or f"g-{uuid.uuid4()}",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return Consumer(conf)


def produce_all(p, topic, messages, partition=None, timestamps=None):
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(err)

    for i, (k, v, h) in enumerate(messages):
        kw = {"key": k, "value": v, "headers": h or None, "on_delivery": report}
        if partition is not None:
            kw["partition"] = partition
        if timestamps:
            kw["timestamp"] = timestamps[i]
        p.produce(topic, **kw)
    left = p.flush(20)
    if left:
        fail(f"{left} messages not delivered within 20 s")
    return errors


def consume_n(bootstrap, topic, n, partition=0, timeout_s=20):
    c = consumer(bootstrap)
    c.assign([TopicPartition(topic, partition, 0)])
    got = []
    end = time.time() + timeout_s
    while len(got) < n and time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        got.append((m.key(), m.value(), m.headers() or []))
    c.close()
    return got


def create_topic(bootstrap, tag):
    a = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"t-{tag}-create"
    for f in a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        f.result(15)
    md = a.list_topics(topic, timeout=10)
    if len(md.topics[topic].partitions) != 3:
        fail(f"metadata shows {len(md.topics[topic].partitions)} partitions, expected 3")
    try:
        for f in a.create_topics([NewTopic(topic, 3, 1)]).values():
            f.result(15)
        fail("second create did not fail")
    except KafkaException as e:
        if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            fail(f"second create: {e}")


def produce_consume(bootstrap, tag, codec="none"):
    topic = f"t-{tag}-pc-{codec}"
    msgs = kv_messages()
    errors = produce_all(producer(bootstrap, compression_type=codec), topic, msgs, partition=0)
    if errors:
        fail(f"delivery errors: {errors}")
    check_kv(msgs, consume_n(bootstrap, topic, len(msgs)))


def codec_scenario(codec):
    return lambda bootstrap, tag: produce_consume(bootstrap, tag, codec)


def group(bootstrap, tag):
    topic = f"t-{tag}-group"
    a = AdminClient({"bootstrap.servers": bootstrap})
    for f in a.create_topics([NewTopic(topic, 4, 1)]).values():
        f.result(15)
    gid = f"g-{tag}"
    assigned = {"a": set(), "b": set()}

    def tracker(name):
        def on_assign(c, parts):
            assigned[name] = {p.partition for p in parts}

        def on_revoke(c, parts):
            assigned[name] = set()
        return on_assign, on_revoke

    ca = consumer(bootstrap, gid, session_timeout_ms=10000)
    oa, ra = tracker("a")
    ca.subscribe([topic], on_assign=oa, on_revoke=ra)
    until(20, "first member to get 4 partitions",
          lambda: (ca.poll(0.2), len(assigned["a"]) == 4)[1])
    cb = consumer(bootstrap, gid, session_timeout_ms=10000)
    ob, rb = tracker("b")
    cb.subscribe([topic], on_assign=ob, on_revoke=rb)

    def balanced():
        ca.poll(0.1)
        cb.poll(0.1)
        return len(assigned["a"]) == 2 and len(assigned["b"]) == 2 and \
            assigned["a"] | assigned["b"] == {0, 1, 2, 3}
    until(30, "rebalance to 2+2 partitions", balanced, interval=0)
    p = producer(bootstrap)
    for part in range(4):
        produce_all(p, topic, [(b"k", f"v{part}-{j}".encode(), []) for j in range(2)], part)
    got = {"a": 0, "b": 0}

    def consumed_all():
        for name, c in (("a", ca), ("b", cb)):
            m = c.poll(0.1)
            if m is not None and not m.error():
                got[name] += 1
        return got["a"] + got["b"] >= 8
    until(30, "8 messages across the two members", consumed_all, interval=0)
    if got["a"] != 4 or got["b"] != 4:
        fail(f"members consumed {got}, expected 4 each")
    ca.commit(asynchronous=False)
    cb.commit(asynchronous=False)
    committed = ca.committed([TopicPartition(topic, i) for i in range(4)], timeout=10)
    offs = sorted(tp.offset for tp in committed)
    if offs != [2, 2, 2, 2]:
        fail(f"committed offsets {offs}, expected 2 on each partition")
    ca.close()
    cb.close()
    # After both left, a new member of the group resumes at the committed offsets.
    cc = consumer(bootstrap, gid)
    cc.subscribe([topic])
    extra = []
    end = time.time() + 8
    while time.time() < end:
        m = cc.poll(0.2)
        if m is not None and not m.error():
            extra.append(m)
    cc.close()
    if extra:
        fail(f"resumed member re-read {len(extra)} committed messages")


def list_offsets(bootstrap, tag):
    topic = f"t-{tag}-offsets"
    t0 = int(time.time() * 1000) - 60000
    ts = [t0, t0 + 1000, t0 + 2000]
    errors = produce_all(producer(bootstrap), topic, [(b"k", b"v", [])] * 3, 0, ts)
    if errors:
        fail(f"delivery errors: {errors}")
    c = consumer(bootstrap)
    lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    if (lo, hi) != (0, 3):
        fail(f"watermarks {(lo, hi)}, expected (0, 3)")
    r = c.offsets_for_times([TopicPartition(topic, 0, t0 + 500)], timeout=10)
    if r[0].offset != 1:
        fail(f"offset for timestamp t0+500 is {r[0].offset}, expected 1")
    r = c.offsets_for_times([TopicPartition(topic, 0, t0 + 5000)], timeout=10)
    if r[0].offset != -1:
        fail(f"offset for a timestamp after the last record is {r[0].offset}, expected -1 (end)")
    c.close()
    a = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    for spec, want in ((OffsetSpec.earliest(), 0), (OffsetSpec.latest(), 3),
                       (OffsetSpec.for_timestamp(t0 + 1000), 1)):
        got = a.list_offsets({tp: spec})[tp].result(10).offset
        if got != want:
            fail(f"AdminClient.list_offsets {spec}: {got}, expected {want}")


def idempotent(bootstrap, tag):
    topic = f"t-{tag}-idem"
    msgs = kv_messages(50)
    p = producer(bootstrap, enable_idempotence=True)
    errors = produce_all(p, topic, msgs, 0)
    if errors:
        fail(f"delivery errors: {errors}")
    check_kv(msgs, consume_n(bootstrap, topic, len(msgs)))


def max_message(bootstrap, tag, size, want_error):
    topic = f"t-{tag}-max-{size}"
    p = producer(bootstrap, message_max_bytes=4 * size)
    errors = produce_all(p, topic, [(b"k", b"m" * size, [])], 0)
    if not want_error:
        if errors:
            fail(f"{size}-byte value rejected: {errors}")
        got = consume_n(bootstrap, topic, 1)
        if len(got) != 1 or len(got[0][1]) != size:
            fail("the large message did not come back intact")
    else:
        if not errors:
            fail(f"{size}-byte value accepted, expected MESSAGE_TOO_LARGE")
        if errors[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
            fail(f"error {errors[0]}, expected MSG_SIZE_TOO_LARGE")


def sasl_rejected(bootstrap, tag):
    """A client configured for SASL gets an authentication error at once, not a hang."""
    errors = []
    a = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
                     "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "p",
                     "error_cb": errors.append})
    until(10, "an authentication error", lambda: (a.poll(0.2), errors)[1])
    if errors[0].code() != KafkaError._AUTHENTICATION:
        fail(f"first error {errors[0]}, expected _AUTHENTICATION")


def read_all(bootstrap, topic, isolation):
    """Every value of partition 0 read with `isolation`, until none came for 1 s."""
    c = consumer(bootstrap, isolation_level=isolation)
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    end = time.time() + 20
    quiet_since = time.time()
    while time.time() < end and time.time() - quiet_since < (1 if got else 5):
        m = c.poll(0.2)
        if m is None or (m.error() and m.error().code() == KafkaError._PARTITION_EOF):
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        got.append(m.value().decode())
        quiet_since = time.time()
    c.close()
    return got


def txn(bootstrap, tag):
    """A transactional producer commits, aborts, commits: read_committed sees exactly the
    committed records, read_uncommitted all of them; a second producer with the same
    transactional id fences the first (its commit fails, its records stay invisible)."""
    topic = f"t-{tag}-txn"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(20)
    conf = {"transactional_id": f"tx-{tag}"}

    def send(p, prefix, n):
        for i in range(n):
            p.produce(topic, key=f"k{i}".encode(), value=f"{prefix}{i}".encode(), partition=0)
        if p.flush(20):
            fail("transactional records not delivered within 20 s")

    p = producer(bootstrap, **conf)
    p.init_transactions(20)
    for prefix, commit in (("c1-", True), ("ab-", False), ("c2-", True)):
        p.begin_transaction()
        send(p, prefix, 5)
        if commit:
            p.commit_transaction(20)
        else:
            p.abort_transaction(20)
    committed = [f"c1-{i}" for i in range(5)] + [f"c2-{i}" for i in range(5)]
    everything = ([f"c1-{i}" for i in range(5)] + [f"ab-{i}" for i in range(5)]
                  + [f"c2-{i}" for i in range(5)])
    got = read_all(bootstrap, topic, "read_committed")
    if got != committed:
        fail(f"read_committed read {got}, expected {committed}")
    got = read_all(bootstrap, topic, "read_uncommitted")
    if got != everything:
        fail(f"read_uncommitted read {got}, expected {everything}")

    zombie = producer(bootstrap, **conf)
    zombie.init_transactions(20)
    zombie.begin_transaction()
    send(zombie, "zombie-", 2)
    fresh = producer(bootstrap, **conf)
    fresh.init_transactions(20)
    try:
        zombie.commit_transaction(20)
        fail("the fenced producer committed")
    except KafkaException as e:
        err = e.args[0]
        if err.code() not in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                              KafkaError.INVALID_PRODUCER_EPOCH):
            fail(f"fenced producer's commit failed with {err}, expected PRODUCER_FENCED")
    fresh.begin_transaction()
    send(fresh, "fresh-", 2)
    fresh.commit_transaction(20)
    got = read_all(bootstrap, topic, "read_committed")
    if got != committed + ["fresh-0", "fresh-1"]:
        fail(f"after fencing, read_committed read {got}")


def ctp_loop(bootstrap, tag, crash_after):
    """A consume-transform-produce loop: reads the input in a group (read_committed), writes
    `out-<value>` and commits the consumed offsets in the same transaction. With
    crash_after >= 0 it commits that many transactions, writes the next one's outputs, prints
    OPEN and waits to be killed; otherwise it runs until the input was idle for 10 s (longer
    than the 6 s session timeout after which a killed member's partitions move)."""
    src, dst = f"t-{tag}-ctp-in", f"t-{tag}-ctp-out"
    c = consumer(bootstrap, group=f"g-{tag}-ctp", isolation_level="read_committed",
                 session_timeout_ms=6000)
    c.subscribe([src])
    p = producer(bootstrap, transactional_id=f"tx-{tag}-ctp", transaction_timeout_ms=10000,
                 message_timeout_ms=10000)
    p.init_transactions(30)
    batches, idle, deadline = 0, time.time(), time.time() + 60
    while time.time() < deadline:
        msgs = [m for m in c.consume(25, 1.0) if not m.error()]
        if not msgs:
            if batches > 0 and time.time() - idle > 10:
                c.close()
                return
            continue
        idle = time.time()
        p.begin_transaction()
        for m in msgs:
            p.produce(dst, value=b"out-" + m.value(), partition=m.partition())
        p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 20)
        if crash_after >= 0 and batches == crash_after:
            if p.flush(20):
                fail("outputs not delivered within 20 s")
            print("OPEN", flush=True)
            time.sleep(60)
            fail("the worker was not killed")
        p.commit_transaction(30)
        batches += 1
    fail("the loop did not finish within 60 s")


def txn_ctp_worker(bootstrap, tag):
    ctp_loop(bootstrap, tag, 3)


def txn_ctp(bootstrap, tag):
    """A consume-transform-produce loop with its offsets in its transactions, killed (SIGKILL)
    in the middle of a transaction and restarted: every input's output is read exactly once
    by a read_committed consumer."""
    import subprocess
    import sys
    src, dst, n = f"t-{tag}-ctp-in", f"t-{tag}-ctp-out", 200
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(src, 2, 1), NewTopic(dst, 2, 1)]).values():
        f.result(20)
    p = producer(bootstrap)
    for i in range(n):
        p.produce(src, value=f"v-{i}".encode(), partition=i % 2)
    if p.flush(20):
        fail("input not delivered within 20 s")
    worker = subprocess.Popen([sys.executable, __file__, "txn_ctp_worker", bootstrap, tag],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        end = time.time() + 60
        while time.time() < end and line.strip() not in ("OPEN",) and worker.poll() is None:
            line = worker.stdout.readline()
        if line.strip() != "OPEN":
            fail(f"the worker did not open its transaction (last line {line!r})")
    finally:
        worker.kill()
        worker.wait(10)
    ctp_loop(bootstrap, tag, -1)
    c = consumer(bootstrap, isolation_level="read_committed")
    c.assign([TopicPartition(dst, 0, 0), TopicPartition(dst, 1, 0)])
    seen = {}
    end = time.time() + 20
    quiet = time.time()
    while time.time() < end and time.time() - quiet < 3:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        seen[m.value()] = seen.get(m.value(), 0) + 1
        quiet = time.time()
    c.close()
    want = {f"out-v-{i}".encode() for i in range(n)}
    dup = {k: v for k, v in seen.items() if v != 1 or k not in want}
    if dup or set(seen) != want:
        fail(f"{len(seen)} distinct outputs of {n}; duplicates or strays: {list(dup.items())[:5]}")


def xproduce(bootstrap, tag):
    topic = f"xc-{tag}"
    for block, codec in enumerate(CODECS):
        p = producer(bootstrap, compression_type=codec)
        msgs = [xc_message(tag, i) for i in range(block * XC_BLOCK, (block + 1) * XC_BLOCK)]
        errors = produce_all(p, topic, msgs, 0)
        if errors:
            fail(f"{codec}: delivery errors {errors}")


def xconsume(bootstrap, tag, *producers):
    for ptag in producers:
        check_xc(ptag, consume_n(bootstrap, f"xc-{ptag}", XC_COUNT))


SCENARIOS = {
    "create_topic": create_topic,
    "produce_consume": produce_consume,
    **{c: codec_scenario(c) for c in CODECS[1:]},
    "group": group,
    "list_offsets": list_offsets,
    "idempotent": idempotent,
    "max_under": lambda b, t: max_message(b, t, UNDER_VALUE_BYTES, False),
    "max_over": lambda b, t: max_message(b, t, OVER_VALUE_BYTES, True),
    "sasl_rejected": sasl_rejected,
    "txn": txn,
    "txn_ctp": txn_ctp,
    "txn_ctp_worker": txn_ctp_worker,
    "xproduce": xproduce,
    "xconsume": xconsume,
}

if __name__ == "__main__":
    main(SCENARIOS, f"{confluent_kafka.__version__} (librdkafka {confluent_kafka.libversion()[0]})")
