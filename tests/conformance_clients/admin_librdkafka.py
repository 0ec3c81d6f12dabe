"""Issue 23's admin checks with librdkafka's admin API (confluent-kafka), driven by
tests/conformance.rs: `python admin_librdkafka.py SCENARIO BOOTSTRAP NODE_ID`.

Each scenario asserts Apache Kafka 4.3's answer; exit 0 passed, 1 failed (a line starting with
`FAIL:` says what differed). Every call has a timeout, so a scenario cannot hang.
"""

import sys
import time
import warnings

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

TIMEOUT_S = 15

# Every topic-level config of Kafka 4.3 (LogConfig), which DescribeConfigs must list.
KAFKA_TOPIC_CONFIGS = {
    "cleanup.policy", "compression.gzip.level", "compression.lz4.level", "compression.type",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.log.copy.disable",
    "remote.log.delete.on.disable", "remote.storage.enable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
}


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def create(admin, topics, validate_only=False):
    """Creates topics; returns {name: None or KafkaError}."""
    fs = admin.create_topics(
        topics, operation_timeout=10, request_timeout=TIMEOUT_S, validate_only=validate_only
    )
    out = {}
    for name, f in fs.items():
        try:
            f.result(timeout=TIMEOUT_S)
            out[name] = None
        except KafkaException as e:
            out[name] = e.args[0]
    return out


def expect_error(result, code, name, contains=None):
    err = result[name]
    check(err is not None, f"{name}: created, expected {code}")
    check(err.code() == code, f"{name}: {err.name()} ({err.str()}), expected {code}")
    if contains is not None:
        check(contains in err.str(), f"{name}: message {err.str()!r} lacks {contains!r}")


def partitions(admin, topic):
    md = admin.list_topics(topic=topic, timeout=TIMEOUT_S)
    t = md.topics.get(topic)
    check(t is not None and t.error is None, f"{topic}: not in metadata ({t and t.error})")
    return len(t.partitions)


def describe(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=TIMEOUT_S)[res].result(timeout=TIMEOUT_S)


def scenario_manual_assignment(admin, node_id):
    # The number of assignments is the partition count (Kafka), not num.partitions.
    r = create(admin, [
        # librdkafka sends num_partitions and replication_factor as -1 with an assignment.
        NewTopic("manual-1", 1, replica_assignment=[[node_id]]),
        NewTopic("manual-3", 3, replica_assignment=[[node_id], [node_id], [node_id]]),
        NewTopic("manual-other-broker", 1, replica_assignment=[[node_id + 7]]),
    ])
    check(r["manual-1"] is None, f"manual-1: {r['manual-1']}")
    check(r["manual-3"] is None, f"manual-3: {r['manual-3']}")
    check(partitions(admin, "manual-1") == 1, "manual-1 has %d partitions, expected 1"
          % partitions(admin, "manual-1"))
    check(partitions(admin, "manual-3") == 3, "manual-3 has %d partitions, expected 3"
          % partitions(admin, "manual-3"))
    expect_error(r, KafkaError.INVALID_REPLICA_ASSIGNMENT, "manual-other-broker",
                 f"includes broker {node_id + 7}, but no such broker is registered")

    # CreatePartitions with assignments for the added partitions: Kafka's checks.
    def grow(new_parts):
        fs = admin.create_partitions(new_parts, operation_timeout=10, request_timeout=TIMEOUT_S)
        out = {}
        for name, f in fs.items():
            try:
                f.result(timeout=TIMEOUT_S)
                out[name] = None
            except KafkaException as e:
                out[name] = e.args[0]
        return out

    r = grow([NewPartitions("manual-1", 3, replica_assignment=[[node_id], [node_id]])])
    check(r["manual-1"] is None, f"grow manual-1: {r['manual-1']}")
    check(partitions(admin, "manual-1") == 3, "manual-1 did not grow to 3")
    r = grow([NewPartitions("manual-1", 4, replica_assignment=[[node_id + 7]])])
    expect_error(r, KafkaError.INVALID_REPLICA_ASSIGNMENT, "manual-1",
                 f"includes broker {node_id + 7}, but no such broker is registered")
    r = grow([NewPartitions("manual-3", 3)])
    expect_error(r, KafkaError.INVALID_PARTITIONS, "manual-3", "Topic already has 3 partition(s).")
    r = grow([NewPartitions("manual-3", 2)])
    expect_error(r, KafkaError.INVALID_PARTITIONS, "manual-3",
                 "The topic manual-3 currently has 3 partition(s); 2 would not be an increase.")
    check(partitions(admin, "manual-1") == 3, "a refused CreatePartitions changed manual-1")


def scenario_topic_configs(admin, node_id):
    stored = {
        "compression.type": "lz4",
        "compression.lz4.level": "12",
        "min.insync.replicas": "2",
        "preallocate": "true",
        "segment.jitter.ms": "100",
        "unclean.leader.election.enable": "true",
        "min.compaction.lag.ms": "5",
        "leader.replication.throttled.replicas": "0:%d" % node_id,
    }
    r = create(admin, [
        NewTopic("cfg-lz4", 1, config={"compression.type": "lz4"}),
        NewTopic("cfg-stored", 1, config=stored),
        NewTopic("cfg-unknown", 1, config={"no.such.config": "1"}),
        NewTopic("cfg-compact", 1, config={"cleanup.policy": "compact"}),
        NewTopic("cfg-bad-policy", 1, config={"cleanup.policy": "compact,purge"}),
        NewTopic("cfg-negative-lag", 1, config={"min.compaction.lag.ms": "-1"}),
        NewTopic("cfg-small-segment", 1, config={"segment.bytes": "1000"}),
        NewTopic("cfg-bad-codec", 1, config={"compression.type": "LZ4"}),
        NewTopic("cfg-lags", 1, config={"min.compaction.lag.ms": "10",
                                         "max.compaction.lag.ms": "5"}),
        NewTopic("cfg-remote", 1, config={"remote.storage.enable": "true"}),
    ])
    check(r["cfg-lz4"] is None, f"cfg-lz4: {r['cfg-lz4']}")
    check(r["cfg-stored"] is None, f"cfg-stored: {r['cfg-stored']}")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-unknown",
                 "Unknown topic config name: no.such.config")
    check(r["cfg-compact"] is None, f"cfg-compact: {r['cfg-compact']}")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-bad-policy",
                 "Invalid value purge for configuration cleanup.policy: "
                 "String must be one of: compact, delete")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-negative-lag",
                 "Invalid value -1 for configuration min.compaction.lag.ms: "
                 "Value must be at least 0")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-small-segment",
                 "Invalid value 1000 for configuration segment.bytes: "
                 "Value must be at least 1048576")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-bad-codec",
                 "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-lags",
                 "conflict topic config setting min.compaction.lag.ms (10) > "
                 "max.compaction.lag.ms (5)")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-remote", "Tiered Storage")

    d = describe(admin, "cfg-lz4")
    missing = KAFKA_TOPIC_CONFIGS - set(d)
    check(not missing, f"DescribeConfigs lacks {sorted(missing)}")
    check(d["compression.type"].value == "lz4", f"compression.type={d['compression.type'].value}")
    check(d["compression.type"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
          f"compression.type source {d['compression.type'].source}")
    check(d["min.insync.replicas"].value == "1", "min.insync.replicas default")
    check(d["message.timestamp.after.max.ms"].value == "3600000",
          f"message.timestamp.after.max.ms={d['message.timestamp.after.max.ms'].value}")
    check(d["cleanup.policy"].value == "delete", "cleanup.policy default")
    check(d["cleanup.policy"].source == ConfigSource.DEFAULT_CONFIG.value,
          f"cleanup.policy source {d['cleanup.policy'].source}")
    # The broker runs with log.retention.ms=86400000 (tests/conformance.rs).
    check(d["retention.ms"].value == "86400000", f"retention.ms={d['retention.ms'].value}")
    check(d["retention.ms"].source == ConfigSource.STATIC_BROKER_CONFIG.value,
          f"retention.ms source {d['retention.ms'].source}")
    d = describe(admin, "cfg-stored")
    for k, v in stored.items():
        check(d[k].value == v, f"cfg-stored {k}={d[k].value}, expected {v}")
        check(d[k].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, f"{k} source")

    # validate_only: checked, nothing created.
    r = create(admin, [NewTopic("cfg-validate", 1, config={"compression.type": "zstd"}),
                       NewTopic("cfg-validate-bad", 1, config={"preallocate": "yes"})],
               validate_only=True)
    check(r["cfg-validate"] is None, f"cfg-validate: {r['cfg-validate']}")
    expect_error(r, KafkaError.INVALID_CONFIG, "cfg-validate-bad",
                 "Expected value to be either true or false")
    md = admin.list_topics(timeout=TIMEOUT_S)
    check("cfg-validate" not in md.topics, "validate_only created the topic")

    # Incremental SET and DELETE (APPEND/SUBTRACT: the Java AdminClient's scenario).
    res = ConfigResource(ResourceType.TOPIC, "cfg-lz4", incremental_configs=[
        ConfigEntry("compression.type", "gzip", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    admin.incremental_alter_configs([res], request_timeout=TIMEOUT_S)[res].result(
        timeout=TIMEOUT_S)
    check(describe(admin, "cfg-lz4")["compression.type"].value == "gzip", "incremental SET")


def scenario_legacy_alter(admin, node_id):
    r = create(admin, [NewTopic("legacy", 1, config={"compression.type": "lz4",
                                                      "retention.ms": "100000"})])
    check(r["legacy"] is None, f"legacy: {r['legacy']}")
    # The legacy AlterConfigs (key 33) replaces the topic's whole set of overrides.
    res = ConfigResource(ResourceType.TOPIC, "legacy",
                         set_config={"retention.ms": "200000", "segment.jitter.ms": "7"})
    admin.alter_configs([res], request_timeout=TIMEOUT_S)[res].result(timeout=TIMEOUT_S)
    d = describe(admin, "legacy")
    check(d["retention.ms"].value == "200000", f"retention.ms={d['retention.ms'].value}")
    check(d["segment.jitter.ms"].value == "7", f"segment.jitter.ms={d['segment.jitter.ms'].value}")
    check(d["compression.type"].value == "producer",
          f"compression.type={d['compression.type'].value}: an override not named must go")
    check(d["compression.type"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
          "compression.type still an override")
    bad = ConfigResource(ResourceType.TOPIC, "legacy", set_config={"retention.ms": "-7"})
    try:
        admin.alter_configs([bad], request_timeout=TIMEOUT_S)[bad].result(timeout=TIMEOUT_S)
        fail("retention.ms=-7 accepted")
    except KafkaException as e:
        err = e.args[0]
        check(err.code() == KafkaError.INVALID_CONFIG, f"retention.ms=-7: {err.name()}")
        check("Value must be at least -1" in err.str(), f"message {err.str()!r}")
    missing = ConfigResource(ResourceType.TOPIC, "no-such-topic", set_config={"retention.ms": "1"})
    try:
        admin.alter_configs([missing], request_timeout=TIMEOUT_S)[missing].result(
            timeout=TIMEOUT_S)
        fail("AlterConfigs of a missing topic accepted")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, f"{e.args[0].name()}")


def scenario_default_partitions(admin, node_id):
    """The broker runs with num.partitions=4: a create without a count, and an auto-created
    topic, get 4 partitions."""
    r = create(admin, [NewTopic("np-default")])
    check(r["np-default"] is None, f"np-default: {r['np-default']}")
    check(partitions(admin, "np-default") == 4,
          "np-default has %d partitions, expected 4" % partitions(admin, "np-default"))
    p = Producer({"bootstrap.servers": sys.argv[2], "message.timeout.ms": 10000})
    errors = []
    for i in range(8):
        p.produce("np-auto", key=str(i), value=b"v",
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
    left = p.flush(TIMEOUT_S)
    check(left == 0 and not errors, f"produce to an auto-created topic: {left} left, {errors}")
    check(partitions(admin, "np-auto") == 4,
          "np-auto has %d partitions, expected 4" % partitions(admin, "np-auto"))


SCENARIOS = {
    "manual_assignment": scenario_manual_assignment,
    "topic_configs": scenario_topic_configs,
    "legacy_alter": scenario_legacy_alter,
    "default_partitions": scenario_default_partitions,
}


def main():
    # alter_configs (the legacy API, key 33) is deprecated in the client: that is the point.
    warnings.simplefilter("ignore", DeprecationWarning)
    scenario, bootstrap, node_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    started = time.monotonic()
    SCENARIOS[scenario](admin, node_id)
    print(f"ok: {scenario} in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
