"""Scenarios for kafka-python (pure Python). See common.py for the contract."""

import threading
import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError

from common import (
    CODECS, OVER_VALUE_BYTES, UNDER_VALUE_BYTES, XC_BLOCK, XC_COUNT, check_kv, check_xc, fail,
    kv_messages, main, until, xc_message,
)


def producer(bootstrap, **extra):
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         request_timeout_ms=15000, **extra)


def consumer(bootstrap, group=None, **extra):
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                         enable_auto_commit=False, auto_offset_reset="earliest", **extra)


def admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap)


def produce_all(p, topic, messages, partition=None, timestamps=None):
    futures = []
    for i, (k, v, h) in enumerate(messages):
        futures.append(p.send(topic, value=v, key=k, headers=h, partition=partition,
                              timestamp_ms=timestamps[i] if timestamps else None))
    p.flush(20)
    for f in futures:
        f.get(20)


def consume_n(bootstrap, topic, n, partition=0, timeout_s=20):
    c = consumer(bootstrap)
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    end = time.time() + timeout_s
    while len(got) < n and time.time() < end:
        for recs in c.poll(timeout_ms=500).values():
            got.extend((r.key, r.value, list(r.headers or [])) for r in recs)
    c.close()
    return got


def create_topic(bootstrap, tag):
    a = admin(bootstrap)
    topic = f"t-{tag}-create"
    a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    desc = a.describe_topics([topic])
    if len(desc[0]["partitions"]) != 3:
        fail(f"describe_topics shows {len(desc[0]['partitions'])} partitions, expected 3")
    try:
        a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        fail("second create did not fail")
    except TopicAlreadyExistsError:
        pass
    a.close()


def produce_consume(bootstrap, tag, codec="none"):
    topic = f"t-{tag}-pc-{codec}"
    msgs = kv_messages()
    p = producer(bootstrap, compression_type=None if codec == "none" else codec)
    produce_all(p, topic, msgs, 0)
    p.close()
    check_kv(msgs, consume_n(bootstrap, topic, len(msgs)))


def codec_scenario(codec):
    return lambda bootstrap, tag: produce_consume(bootstrap, tag, codec)


class Tracker(ConsumerRebalanceListener):
    def __init__(self):
        self.parts = set()

    def on_partitions_revoked(self, revoked):
        self.parts -= {tp.partition for tp in revoked}

    def on_partitions_assigned(self, assigned):
        self.parts |= {tp.partition for tp in assigned}


class Member(threading.Thread):
    """Polls one group member in a thread of its own, the way applications run consumers.

    kafka-python 3.0.12 mishandles a JoinGroup/SyncGroup round that completes while no poll()
    of that consumer is waiting for it (`join_group_async` in kafka/coordinator/base.py):
    - if the member still needs to rejoin, it drops the round and sends a fresh JoinGroup on
      its next poll(); from the group leader that starts another rebalance (Kafka does the
      same). Two members polled in turn from one thread hit that on every rebalance under
      load and never settle;
    - if it no longer needs to rejoin (the leader's assignment already matched the metadata),
      the next poll() returns without completing the round: the assignment is never applied
      and heartbeats stay disabled until the session expires. A single member polled with
      sleeps between polls hit that in CI under load (the round ended during the sleep).
    So each member polls back to back in a thread of its own, as applications run consumers,
    with a poll timeout far longer than a JoinGroup/SyncGroup round: the second case above
    also happens to a member polled back to back when the round outlives one poll() (seen in
    CI under load with 200 ms polls: the leader's empty first assignment, made before its
    metadata knew the new topic's partitions, is followed by a rejoin whose round took 540 ms).
    poll() returns as soon as records arrive, so the long timeout costs nothing but the wait in
    finish(). The consumer is only touched by this thread until it stops.
    """

    POLL_TIMEOUT_MS = 5000

    def __init__(self, c):
        super().__init__(daemon=True)
        self.c, self.got, self.stop, self.error = c, 0, threading.Event(), None

    def run(self):
        try:
            while not self.stop.is_set():
                self.got += sum(len(r) for r in self.c.poll(timeout_ms=self.POLL_TIMEOUT_MS).values())
        except Exception as e:  # noqa: BLE001 - reported by the scenario
            self.error = e

    def finish(self):
        self.stop.set()
        self.join(self.POLL_TIMEOUT_MS / 1000 + 10)
        if self.is_alive() or self.error is not None:
            fail(f"member poll thread: alive={self.is_alive()} error={self.error!r}")


def group(bootstrap, tag):
    topic = f"t-{tag}-group"
    a = admin(bootstrap)
    a.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    gid = f"g-{tag}"
    ca, ta = consumer(bootstrap, gid), Tracker()
    ca.subscribe([topic], listener=ta)
    ma = Member(ca)
    ma.start()
    mb = None
    try:
        until(20, "first member to get 4 partitions", lambda: len(ta.parts) == 4)
        cb, tb = consumer(bootstrap, gid), Tracker()
        cb.subscribe([topic], listener=tb)
        mb = Member(cb)
        mb.start()
        until(45, "rebalance to 2+2 partitions",
              lambda: len(ta.parts) == 2 and len(tb.parts) == 2)
        p = producer(bootstrap)
        for part in range(4):
            produce_all(p, topic, [(b"k", f"v{part}-{j}".encode(), []) for j in range(2)], part)
        p.close()
        until(30, "8 messages across the two members", lambda: ma.got + mb.got >= 8)
    finally:
        ma.finish()
        if mb is not None:
            mb.finish()
    if ma.got != 4 or mb.got != 4:
        fail(f"members consumed a={ma.got} b={mb.got}, expected 4 each")
    ca.commit()
    cb.commit()
    # kafka-python 3 renamed list_consumer_group_offsets to list_group_offsets.
    offs = a.list_group_offsets({gid: None})[gid]
    vals = sorted(v.offset for tp, v in offs.items() if tp.topic == topic)
    if vals != [2, 2, 2, 2]:
        fail(f"committed offsets {offs}, expected 2 on each partition")
    ca.close()
    cb.close()
    a.close()


def list_offsets(bootstrap, tag):
    topic = f"t-{tag}-offsets"
    t0 = int(time.time() * 1000) - 60000
    p = producer(bootstrap)
    produce_all(p, topic, [(b"k", b"v", [])] * 3, 0, [t0, t0 + 1000, t0 + 2000])
    c = consumer(bootstrap)
    tp = TopicPartition(topic, 0)
    lo, hi = c.beginning_offsets([tp])[tp], c.end_offsets([tp])[tp]
    if (lo, hi) != (0, 3):
        fail(f"beginning/end offsets {(lo, hi)}, expected (0, 3)")
    r = c.offsets_for_times({tp: t0 + 500})[tp]
    if r is None or r.offset != 1:
        fail(f"offset for timestamp t0+500 is {r}, expected 1")
    r = c.offsets_for_times({tp: t0 + 5000})[tp]
    if r is not None:
        fail(f"offset for a timestamp after the last record is {r}, expected None")
    c.close()


def idempotent(bootstrap, tag):
    topic = f"t-{tag}-idem"
    msgs = kv_messages(50)
    p = producer(bootstrap, enable_idempotence=True)
    produce_all(p, topic, msgs, 0)
    p.close()
    check_kv(msgs, consume_n(bootstrap, topic, len(msgs)))


def max_message(bootstrap, tag, size, want_error):
    topic = f"t-{tag}-max-{size}"
    p = producer(bootstrap, max_request_size=4 * size, retries=0)
    try:
        produce_all(p, topic, [(b"k", b"m" * size, [])], 0)
        if want_error:
            fail(f"{size}-byte value accepted, expected MESSAGE_TOO_LARGE")
    except MessageSizeTooLargeError:
        if not want_error:
            fail(f"{size}-byte value rejected with MESSAGE_TOO_LARGE")
        return
    got = consume_n(bootstrap, topic, 1)
    if len(got) != 1 or len(got[0][1]) != size:
        fail("the large message did not come back intact")


def xproduce(bootstrap, tag):
    topic = f"xc-{tag}"
    for block, codec in enumerate(CODECS):
        p = producer(bootstrap, compression_type=None if codec == "none" else codec)
        produce_all(p, topic, [xc_message(tag, i) for i in
                               range(block * XC_BLOCK, (block + 1) * XC_BLOCK)], 0)
        p.close()


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
    "xproduce": xproduce,
    "xconsume": xconsume,
}

if __name__ == "__main__":
    main(SCENARIOS, kafka.__version__)
