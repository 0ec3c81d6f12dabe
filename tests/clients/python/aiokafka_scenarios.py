"""Scenarios for aiokafka (asyncio). See common.py for the contract."""

import asyncio
import time

import aiokafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError

from common import (
    CODECS, OVER_VALUE_BYTES, UNDER_VALUE_BYTES, XC_BLOCK, XC_COUNT, check_kv, check_xc, fail,
    kv_messages, main, xc_message,
)


async def producer(bootstrap, **extra):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         request_timeout_ms=15000, **extra)
    await p.start()
    return p


async def consumer(bootstrap, group=None, **extra):
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", **extra)
    await c.start()
    return c


async def admin(bootstrap):
    a = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await a.start()
    return a


async def produce_all(p, topic, messages, partition=None, timestamps=None):
    futs = []
    for i, (k, v, h) in enumerate(messages):
        futs.append(await p.send(topic, value=v, key=k, headers=h, partition=partition,
                                 timestamp_ms=timestamps[i] if timestamps else None))
    await asyncio.wait_for(asyncio.gather(*futs), 20)


async def consume_n(bootstrap, topic, n, partition=0, timeout_s=20):
    c = await consumer(bootstrap)
    tp = TopicPartition(topic, partition)
    c.assign([tp])
    c.seek(tp, 0)
    got = []
    end = time.time() + timeout_s
    while len(got) < n and time.time() < end:
        for recs in (await c.getmany(timeout_ms=500)).values():
            got.extend((r.key, r.value, list(r.headers or [])) for r in recs)
    await c.stop()
    return got


async def until(deadline_s, what, fn):
    end = time.time() + deadline_s
    while time.time() < end:
        if await fn():
            return
    fail(f"timed out waiting for {what}")


async def create_topic(bootstrap, tag):
    a = await admin(bootstrap)
    topic = f"t-{tag}-create"
    await a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    desc = await a.describe_topics([topic])
    if len(desc[0]["partitions"]) != 3:
        fail(f"describe_topics shows {len(desc[0]['partitions'])} partitions, expected 3")
    try:
        r = await a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
        codes = [e[1] for e in r.topic_errors]
        if codes != [TopicAlreadyExistsError.errno]:
            fail(f"second create answered {r.topic_errors}, expected TOPIC_ALREADY_EXISTS")
    except TopicAlreadyExistsError:
        pass
    await a.close()


async def produce_consume(bootstrap, tag, codec="none"):
    topic = f"t-{tag}-pc-{codec}"
    msgs = kv_messages()
    p = await producer(bootstrap, compression_type=None if codec == "none" else codec)
    await produce_all(p, topic, msgs, 0)
    await p.stop()
    check_kv(msgs, await consume_n(bootstrap, topic, len(msgs)))


def codec_scenario(codec):
    return lambda bootstrap, tag: produce_consume(bootstrap, tag, codec)


class Tracker(ConsumerRebalanceListener):
    def __init__(self):
        self.parts = set()

    async def on_partitions_revoked(self, revoked):
        self.parts -= {tp.partition for tp in revoked}

    async def on_partitions_assigned(self, assigned):
        self.parts |= {tp.partition for tp in assigned}


async def group(bootstrap, tag):
    topic = f"t-{tag}-group"
    a = await admin(bootstrap)
    await a.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    gid = f"g-{tag}"
    got = {"a": 0, "b": 0}
    ca, ta = await consumer(bootstrap, gid), Tracker()
    ca.subscribe([topic], listener=ta)
    members = [("a", ca)]

    async def poll():
        for name, c in members:
            got[name] += sum(len(r) for r in (await c.getmany(timeout_ms=100)).values())
        return True

    await until(20, "first member to get 4 partitions",
                lambda: poll_then(poll, lambda: len(ta.parts) == 4))
    cb, tb = await consumer(bootstrap, gid), Tracker()
    cb.subscribe([topic], listener=tb)
    members.append(("b", cb))
    await until(30, "rebalance to 2+2 partitions",
                lambda: poll_then(poll, lambda: len(ta.parts) == 2 and len(tb.parts) == 2))
    p = await producer(bootstrap)
    for part in range(4):
        await produce_all(p, topic, [(b"k", f"v{part}-{j}".encode(), []) for j in range(2)], part)
    await p.stop()
    await until(30, "8 messages across the two members",
                lambda: poll_then(poll, lambda: got["a"] + got["b"] >= 8))
    if got["a"] != 4 or got["b"] != 4:
        fail(f"members consumed {got}, expected 4 each")
    await ca.commit()
    await cb.commit()
    offs = await a.list_consumer_group_offsets(gid)
    vals = sorted(v.offset for tp, v in offs.items() if tp.topic == topic)
    if vals != [2, 2, 2, 2]:
        fail(f"committed offsets {offs}, expected 2 on each partition")
    await ca.stop()
    await cb.stop()
    await a.close()


async def poll_then(poll, check):
    await poll()
    return check()


async def list_offsets(bootstrap, tag):
    topic = f"t-{tag}-offsets"
    t0 = int(time.time() * 1000) - 60000
    p = await producer(bootstrap)
    await produce_all(p, topic, [(b"k", b"v", [])] * 3, 0, [t0, t0 + 1000, t0 + 2000])
    await p.stop()
    c = await consumer(bootstrap)
    tp = TopicPartition(topic, 0)
    lo, hi = (await c.beginning_offsets([tp]))[tp], (await c.end_offsets([tp]))[tp]
    if (lo, hi) != (0, 3):
        fail(f"beginning/end offsets {(lo, hi)}, expected (0, 3)")
    r = (await c.offsets_for_times({tp: t0 + 500}))[tp]
    if r is None or r.offset != 1:
        fail(f"offset for timestamp t0+500 is {r}, expected 1")
    r = (await c.offsets_for_times({tp: t0 + 5000}))[tp]
    if r is not None:
        fail(f"offset for a timestamp after the last record is {r}, expected None")
    await c.stop()


async def idempotent(bootstrap, tag):
    topic = f"t-{tag}-idem"
    msgs = kv_messages(50)
    p = await producer(bootstrap, enable_idempotence=True)
    await produce_all(p, topic, msgs, 0)
    await p.stop()
    check_kv(msgs, await consume_n(bootstrap, topic, len(msgs)))


async def max_message(bootstrap, tag, size, want_error):
    topic = f"t-{tag}-max-{size}"
    p = await producer(bootstrap, max_request_size=4 * size)
    try:
        await produce_all(p, topic, [(b"k", b"m" * size, [])], 0)
        if want_error:
            fail(f"{size}-byte value accepted, expected MESSAGE_TOO_LARGE")
    except MessageSizeTooLargeError:
        if not want_error:
            fail(f"{size}-byte value rejected with MESSAGE_TOO_LARGE")
        return
    finally:
        await p.stop()
    got = await consume_n(bootstrap, topic, 1)
    if len(got) != 1 or len(got[0][1]) != size:
        fail("the large message did not come back intact")


async def xproduce(bootstrap, tag):
    topic = f"xc-{tag}"
    for block, codec in enumerate(CODECS):
        p = await producer(bootstrap, compression_type=None if codec == "none" else codec)
        await produce_all(p, topic, [xc_message(tag, i) for i in
                                     range(block * XC_BLOCK, (block + 1) * XC_BLOCK)], 0)
        await p.stop()


async def xconsume(bootstrap, tag, *producers):
    for ptag in producers:
        check_xc(ptag, await consume_n(bootstrap, f"xc-{ptag}", XC_COUNT))


ASYNC_SCENARIOS = {
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

SCENARIOS = {name: (lambda f: lambda *a: asyncio.run(f(*a)))(f)
             for name, f in ASYNC_SCENARIOS.items()}

if __name__ == "__main__":
    main(SCENARIOS, aiokafka.__version__)
