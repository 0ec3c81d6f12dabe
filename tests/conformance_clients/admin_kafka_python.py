"""Issue 23's config alterations from a second client family, kafka-python (3.0.12), driven by
tests/conformance.rs: `python admin_kafka_python.py BOOTSTRAP`. The legacy AlterConfigs (key 33,
as older tools send it) sets a topic's overrides; IncrementalAlterConfigs APPEND and SUBTRACT
edit a LIST config. Exit 0 passed, 1 failed (a `FAIL:` line says what differed).
"""

import sys

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def configs(admin, topic):
    """{name: value} of every config of `topic`, as DescribeConfigs reports it."""
    res = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
    )
    return {k: v["value"] for k, v in res["topic"][topic].items()}


def main():
    bootstrap = sys.argv[1]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    topic = "kp-legacy"
    admin.create_topics(
        [NewTopic(topic, 1, 1, topic_configs={"compression.type": "gzip"})], timeout_ms=15000
    )
    # Legacy AlterConfigs. kafka-python sends the topic's other overrides along (the request
    # replaces them all: librdkafka's scenario checks that), so compression.type stays.
    admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "300000"})],
        incremental=False,
        raise_on_unknown=False,
    )
    c = configs(admin, topic)
    check(c.get("retention.ms") == "300000", f"retention.ms={c.get('retention.ms')}")
    check(c.get("compression.type") == "gzip", f"compression.type={c.get('compression.type')}")
    # IncrementalAlterConfigs APPEND then SUBTRACT on a LIST config.
    key = "follower.replication.throttled.replicas"
    for op, value, expected in [("APPEND", "0:0,1:0", "0:0,1:0"), ("SUBTRACT", "0:0", "1:0")]:
        admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={key: (op, value)})],
            incremental=True,
            raise_on_unknown=False,
        )
        c = configs(admin, topic)
        check(c.get(key) == expected, f"{op} {value}: {key}={c.get(key)}, expected {expected}")
    check(c.get("retention.ms") == "300000", "an incremental change dropped retention.ms")
    admin.close()
    print("ok: kafka-python alter configs", flush=True)


if __name__ == "__main__":
    main()
