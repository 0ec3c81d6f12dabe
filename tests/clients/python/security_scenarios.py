"""Security scenarios for confluent-kafka (librdkafka), driven by tests/security.rs.

`security_scenarios.py SCENARIO BOOTSTRAP TAG [ARGS...]`, exit 0 when it passed, 1 (with a line
starting FAIL:) when it did not. The security settings come as ARGS of the form KEY=VALUE,
librdkafka's own property names (security.protocol, sasl.mechanisms, sasl.username,
sasl.password, ssl.ca.location, ...).

- produce_consume: 20 messages with keys produced (acks=all) and read back identical.
- bulk: 20,000 messages of 1 KiB in large batches produced, then read back.
- consume COUNT: COUNT messages read from t-TAG (partition 0, no group protocol).
- consume_denied: reading t-TAG fails with TOPIC_AUTHORIZATION_FAILED.
- auth_fails: the client gets an authentication error (_AUTHENTICATION) within 10 s.
- scram_upsert USER PASSWORD MECHANISM: AlterUserScramCredentials through the admin API,
  then DescribeUserScramCredentials lists the user with that mechanism.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion,
)


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def settings(args):
    conf = {}
    for a in args:
        k, _, v = a.partition("=")
        conf[k] = v
    return conf


def produce_consume(bootstrap, tag, conf):
    topic = f"t-{tag}"
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 15000, "error_cb": errors.append, **conf})
    delivered = []

    def report(err, msg):
        if err is not None:
            fail(f"delivery failed: {err}")
        delivered.append(msg.offset())

    sent = [(f"k{i}".encode(), f"value-{i}-{tag}".encode() * (i + 1)) for i in range(20)]
    for k, v in sent:
        p.produce(topic, key=k, value=v, on_delivery=report)
    if p.flush(20):
        fail(f"messages not delivered within 20 s (errors: {errors})")
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{tag}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", **conf})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    end = time.time() + 20
    while len(got) < len(sent) and time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        got.append((m.key(), m.value()))
    c.close()
    if got != sent:
        fail(f"read back {len(got)} messages, not the {len(sent)} sent")


def bulk(bootstrap, tag, conf):
    """20,000 messages of 1 KiB in large batches (produce requests far over one TLS record),
    then read back by count."""
    topic = f"t-{tag}"
    n = 20000
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 20,
                  "batch.size": 262144, "message.timeout.ms": 30000, **conf})
    failed = []
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=b"%08d" % i + b"x" * 1016, partition=0,
                          on_delivery=lambda err, msg: err and failed.append(err))
                break
            except BufferError:
                p.poll(0.01)
    if p.flush(60):
        fail("bulk messages not delivered within 60 s")
    if failed:
        fail(f"{len(failed)} deliveries failed: {failed[0]}")
    consume(bootstrap, tag, conf, n)


def consume(bootstrap, tag, conf, count):
    """Reads `count` messages from t-TAG partition 0 (no group protocol)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{tag}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", **conf})
    c.assign([TopicPartition(f"t-{tag}", 0, 0)])
    got = 0
    end = time.time() + 20
    while got < count and time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            fail(f"consume error: {m.error()}")
        got += 1
    c.close()
    if got != count:
        fail(f"read {got} messages, expected {count}")


def consume_denied(bootstrap, tag, conf):
    """Reading t-TAG is refused: its metadata says TOPIC_AUTHORIZATION_FAILED, and a
    subscribed consumer gets that error (not messages) within 15 s."""
    topic = f"t-{tag}"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{tag}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest", **conf})
    md = c.list_topics(topic, timeout=10)
    err = md.topics[topic].error
    if err is None or err.code() != KafkaError.TOPIC_AUTHORIZATION_FAILED:
        fail(f"metadata of {topic}: error {err}, expected TOPIC_AUTHORIZATION_FAILED")
    c.subscribe([topic])
    end = time.time() + 15
    while time.time() < end:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error() and m.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            c.close()
            print(f"error: {m.error()}")
            return
        if m.error():
            continue  # e.g. a transient coordinator error while the group forms
        fail("read a message of a topic the principal may not read")
    fail("no TOPIC_AUTHORIZATION_FAILED for the subscription within 15 s")


def auth_fails(bootstrap, tag, conf):
    errors = []
    a = AdminClient({"bootstrap.servers": bootstrap, "error_cb": errors.append, **conf})
    end = time.time() + 10
    while not errors and time.time() < end:
        a.poll(0.2)
    if not errors:
        fail("no error within 10 s")
    if errors[0].code() != KafkaError._AUTHENTICATION:
        fail(f"first error {errors[0]}, expected _AUTHENTICATION")
    print(f"error: {errors[0].str()}")


def scram_upsert(bootstrap, tag, conf, user, password, mechanism):
    a = AdminClient({"bootstrap.servers": bootstrap, **conf})
    mech = getattr(ScramMechanism, mechanism.replace("-", "_"))
    up = UserScramCredentialUpsertion(user, ScramCredentialInfo(mech, 8192), password.encode())
    for u, f in a.alter_user_scram_credentials([up]).items():
        f.result(15)
    described = a.describe_user_scram_credentials([user])[user].result(15)
    infos = described.scram_credential_infos
    if not any(i.mechanism == mech and i.iterations == 8192 for i in infos):
        fail(f"describe after alter: {described}")


def main():
    if len(sys.argv) < 4:
        fail("usage: SCENARIO BOOTSTRAP TAG [ARGS...]")
    scenario, bootstrap, tag = sys.argv[1:4]
    rest = sys.argv[4:]
    if scenario == "produce_consume":
        produce_consume(bootstrap, tag, settings(rest))
    elif scenario == "bulk":
        bulk(bootstrap, tag, settings(rest))
    elif scenario == "consume":
        consume(bootstrap, tag, settings(rest[1:]), int(rest[0]))
    elif scenario == "consume_denied":
        consume_denied(bootstrap, tag, settings(rest))
    elif scenario == "auth_fails":
        auth_fails(bootstrap, tag, settings(rest))
    elif scenario == "scram_upsert":
        user, password, mechanism = rest[:3]
        scram_upsert(bootstrap, tag, settings(rest[3:]), user, password, mechanism)
    else:
        fail(f"unknown scenario {scenario}")


if __name__ == "__main__":
    main()
