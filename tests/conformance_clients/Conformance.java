// Issue 23 and issue 15 checks with the Java client (kafka-clients 4.3.1), driven by
// tests/conformance.rs as a single-file program:
//   java -cp 'tests/clients/java/target/lib/*' Conformance.java SCENARIO BOOTSTRAP [ARGS...]
// Each scenario asserts Apache Kafka 4.3's answer; exit 0 passed, 1 failed (a line starting
// with `FAIL:` says what differed). Every wait is bounded in time.

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.FencedInstanceIdException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidReplicaAssignmentException;
import org.apache.kafka.common.errors.RebalanceInProgressException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

public class Conformance {
    static final long TIMEOUT_S = 20;

    static void fail(String msg) {
        System.out.println("FAIL: " + msg);
        System.out.flush();
        System.exit(1);
    }

    static void check(boolean cond, String msg) {
        if (!cond) fail(msg);
    }

    public static void main(String[] args) throws Exception {
        String scenario = args[0], bootstrap = args[1];
        long started = System.nanoTime();
        switch (scenario) {
            case "incremental" -> incremental(bootstrap);
            case "static_fencing" -> staticFencing(bootstrap);
            case "revoke_commit" -> revokeCommit(bootstrap, args[2], Integer.parseInt(args[3]));
            default -> fail("unknown scenario " + scenario);
        }
        System.out.printf("ok: %s in %.1f s%n", scenario, (System.nanoTime() - started) / 1e9);
        System.exit(0);
    }

    static Admin admin(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "15000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        return Admin.create(p);
    }

    // ---- IncrementalAlterConfigs: APPEND and SUBTRACT on LIST configs, as Kafka ----

    static ConfigEntry entry(Admin a, String topic, String key) throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config c = a.describeConfigs(List.of(r)).all().get(TIMEOUT_S, TimeUnit.SECONDS).get(r);
        ConfigEntry e = c.get(key);
        check(e != null, "DescribeConfigs lacks " + key);
        return e;
    }

    static void alter(Admin a, String topic, AlterConfigOp.OpType op, String key, String value)
            throws Exception {
        ConfigResource r = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Map<ConfigResource, Collection<AlterConfigOp>> ops =
                Map.of(r, List.of(new AlterConfigOp(new ConfigEntry(key, value), op)));
        a.incrementalAlterConfigs(ops).all().get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    static void expectInvalidConfig(Admin a, String topic, AlterConfigOp.OpType op, String key,
            String value, String contains) throws Exception {
        try {
            alter(a, topic, op, key, value);
            fail(op + " " + key + "=" + value + " accepted");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof InvalidConfigurationException,
                    op + " " + key + ": " + e.getCause());
            check(e.getCause().getMessage().contains(contains),
                    op + " " + key + ": message '" + e.getCause().getMessage() + "' lacks '"
                            + contains + "'");
        }
    }

    static void incremental(String bootstrap) throws Exception {
        try (Admin a = admin(bootstrap)) {
            String t = "inc";
            var created = a.createTopics(List.of(new NewTopic(t, Optional.empty(), Optional.empty())
                    .configs(Map.of("compression.type", "zstd"))));
            created.all().get(TIMEOUT_S, TimeUnit.SECONDS);
            // CreateTopics v5+ reports the new topic's partitions and configs.
            check(created.numPartitions(t).get() == 4, "numPartitions " + created.numPartitions(t).get());
            Config createdConfig = created.config(t).get(TIMEOUT_S, TimeUnit.SECONDS);
            check(createdConfig.get("compression.type").value().equals("zstd"),
                    "created compression.type " + createdConfig.get("compression.type"));
            // The broker runs with log.retention.ms=86400000 (tests/conformance.rs).
            check(createdConfig.get("retention.ms").value().equals("86400000"),
                    "created retention.ms " + createdConfig.get("retention.ms"));
            // CreatePartitions: as many assignments as partitions added (Kafka's message).
            try {
                a.createPartitions(Map.of(t, NewPartitions.increaseTo(7, List.of(List.of(0)))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                fail("CreatePartitions with 1 assignment for 3 new partitions accepted");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidReplicaAssignmentException, "" + e.getCause());
                check(e.getCause().getMessage().equals("Attempted to add 3 additional partition(s), "
                        + "but only 1 assignment(s) were specified."), e.getCause().getMessage());
            }
            String key = "leader.replication.throttled.replicas";
            check(entry(a, t, key).value().isEmpty(), key + " default not empty");
            alter(a, t, AlterConfigOp.OpType.APPEND, key, "0:0");
            check(entry(a, t, key).value().equals("0:0"), "APPEND to the default: "
                    + entry(a, t, key).value());
            alter(a, t, AlterConfigOp.OpType.APPEND, key, "1:0,0:0");
            check(entry(a, t, key).value().equals("0:0,1:0"), "APPEND adds only new items: "
                    + entry(a, t, key).value());
            check(entry(a, t, key).source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    key + " source " + entry(a, t, key).source());
            alter(a, t, AlterConfigOp.OpType.SUBTRACT, key, "0:0");
            check(entry(a, t, key).value().equals("1:0"), "SUBTRACT: " + entry(a, t, key).value());
            alter(a, t, AlterConfigOp.OpType.SUBTRACT, key, "9:9");
            check(entry(a, t, key).value().equals("1:0"), "SUBTRACT of a missing item: "
                    + entry(a, t, key).value());
            // cleanup.policy: APPEND of an item present starts from the default and keeps one.
            alter(a, t, AlterConfigOp.OpType.APPEND, "cleanup.policy", "delete");
            check(entry(a, t, "cleanup.policy").value().equals("delete"), "cleanup.policy "
                    + entry(a, t, "cleanup.policy").value());
            // APPEND compact: the topic is compacted and deleted by retention.
            alter(a, t, AlterConfigOp.OpType.APPEND, "cleanup.policy", "compact");
            check(entry(a, t, "cleanup.policy").value().equals("delete,compact"),
                    "APPEND compact: " + entry(a, t, "cleanup.policy").value());
            alter(a, t, AlterConfigOp.OpType.SUBTRACT, "cleanup.policy", "compact");
            check(entry(a, t, "cleanup.policy").value().equals("delete"),
                    "SUBTRACT compact: " + entry(a, t, "cleanup.policy").value());
            // A non-LIST config: Kafka's message.
            expectInvalidConfig(a, t, AlterConfigOp.OpType.APPEND, "retention.ms", "5",
                    "Can't APPEND to key retention.ms because its type is not LIST.");
            expectInvalidConfig(a, t, AlterConfigOp.OpType.SUBTRACT, "segment.ms", "5",
                    "Can't SUBTRACT to key segment.ms because its type is not LIST.");
            expectInvalidConfig(a, t, AlterConfigOp.OpType.SET, "no.such.config", "5",
                    "Unknown topic config name: no.such.config");
            // SET then DELETE: back to the default, no longer an override.
            alter(a, t, AlterConfigOp.OpType.SET, "retention.ms", "123456");
            check(entry(a, t, "retention.ms").value().equals("123456"), "SET retention.ms");
            alter(a, t, AlterConfigOp.OpType.DELETE, "retention.ms", null);
            ConfigEntry r = entry(a, t, "retention.ms");
            check(r.value().equals("86400000"),
                    "DELETE retention.ms: " + r.value() + " " + r.source());
            check(r.source() == ConfigEntry.ConfigSource.STATIC_BROKER_CONFIG,
                    "retention.ms after DELETE: source " + r.source());
        }
    }

    // ---- Static membership: the replaced member is fenced ----

    static KafkaConsumer<String, String> consumer(String bootstrap, String group,
            String instance, String assignor) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        if (instance != null) p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "20");
        p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    static void produce(String bootstrap, String topic, int n) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        try (KafkaProducer<String, String> pr = new KafkaProducer<>(p)) {
            for (int i = 0; i < n; i++) pr.send(new ProducerRecord<>(topic, "k" + i, "" + i));
            pr.flush();
        }
    }

    static void staticFencing(String bootstrap) throws Exception {
        String topic = "static-t";
        try (Admin a = admin(bootstrap)) {
            a.createTopics(List.of(new NewTopic(topic, 2, (short) 1)))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
        produce(bootstrap, topic, 40);
        String range = "org.apache.kafka.clients.consumer.RangeAssignor";
        KafkaConsumer<String, String> first = consumer(bootstrap, "static-g", "instance-1", range);
        first.subscribe(List.of(topic));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        int got = 0;
        while (got == 0 && System.nanoTime() < deadline) got += first.poll(Duration.ofMillis(200)).count();
        check(got > 0, "the first static member consumed nothing");
        first.commitSync();

        // A second process with the same group.instance.id replaces it.
        KafkaConsumer<String, String> second = consumer(bootstrap, "static-g", "instance-1", range);
        second.subscribe(List.of(topic));
        deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
        while (second.assignment().isEmpty() && System.nanoTime() < deadline) {
            second.poll(Duration.ofMillis(200));
        }
        check(!second.assignment().isEmpty(), "the new static member got no assignment");

        // The old one is fenced (a fatal error) on its next heartbeat, poll or commit, within
        // its session timeout (10 s).
        long fencedBy = System.nanoTime() + TimeUnit.SECONDS.toNanos(12);
        Exception fenced = null;
        while (fenced == null && System.nanoTime() < fencedBy) {
            try {
                first.poll(Duration.ofMillis(200));
                first.commitSync(Duration.ofSeconds(5));
            } catch (FencedInstanceIdException e) {
                fenced = e;
            } catch (KafkaException e) {
                fail("the old member got " + e + " instead of FencedInstanceIdException");
            }
        }
        check(fenced != null, "the replaced static member was not fenced within 12 s");
        // The new member carries on: it commits.
        second.poll(Duration.ofMillis(200));
        second.commitSync(Duration.ofSeconds(10));
        try {
            first.close(Duration.ofSeconds(5));
        } catch (KafkaException e) {
            // Closing a fenced consumer may report the fencing again.
        }
        second.close(Duration.ofSeconds(10));
    }

    // ---- Commits in revoke callbacks during rebalances: no duplicates ----

    /** One group member in its own thread, committing what it consumed when partitions go. */
    static final class Member implements Runnable {
        final KafkaConsumer<String, String> c;
        final String topic;
        final ConcurrentHashMap<String, Integer> seen;
        final AtomicBoolean stop = new AtomicBoolean();
        final AtomicReference<Throwable> error = new AtomicReference<>();
        final AtomicLong commitsInRevoke = new AtomicLong();
        final AtomicLong refusedInRevoke = new AtomicLong();
        volatile boolean closing;
        final Thread thread;

        Member(String bootstrap, String topic, String assignor, ConcurrentHashMap<String, Integer> seen,
                String name) {
            this.c = consumer(bootstrap, "g-" + topic, null, assignor);
            this.topic = topic;
            this.seen = seen;
            this.thread = new Thread(this, name);
            this.thread.start();
        }

        public void run() {
            try {
                c.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    public void onPartitionsRevoked(Collection<TopicPartition> revoked) {
                        // Commit what was consumed of the partitions that go: the rule under test.
                        Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                        for (TopicPartition tp : revoked) {
                            offsets.put(tp, new OffsetAndMetadata(c.position(tp)));
                        }
                        if (offsets.isEmpty()) return;
                        try {
                            c.commitSync(offsets, Duration.ofSeconds(10));
                            commitsInRevoke.incrementAndGet();
                        } catch (RebalanceInProgressException e) {
                            // While closing this is the client's own check (it is itself
                            // mid-rebalance and does not send the commit): what it consumed
                            // was committed before close(), see run(). Otherwise the broker
                            // refused the commit: counted, and the records re-delivered.
                            if (!closing) {
                                refusedInRevoke.incrementAndGet();
                                System.out.println(thread.getName() + ": commit refused: " + e.getMessage());
                            }
                        }
                    }

                    public void onPartitionsAssigned(Collection<TopicPartition> assigned) {}
                });
                while (!stop.get()) {
                    consume(c.poll(Duration.ofMillis(100)));
                    // Slow consumption, so rebalances happen with work in flight.
                    Thread.sleep(20);
                }
                // Leaving: commit everything consumed, completing a rebalance the client is in
                // first if it must (bounded), then close, which revokes and leaves.
                long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
                while (true) {
                    try {
                        c.commitSync(Duration.ofSeconds(10));
                        break;
                    } catch (RebalanceInProgressException e) {
                        if (System.nanoTime() > until) throw e;
                        consume(c.poll(Duration.ofMillis(100)));
                    }
                }
                closing = true;
                c.close(Duration.ofSeconds(10));
            } catch (Throwable t) {
                error.set(t);
                try {
                    c.close(Duration.ofSeconds(5));
                } catch (Throwable ignored) {
                }
            }
        }

        void consume(ConsumerRecords<String, String> rs) {
            for (ConsumerRecord<String, String> r : rs) seen.merge(r.value(), 1, Integer::sum);
        }

        void leave() throws InterruptedException {
            stop.set(true);
            thread.join(TimeUnit.SECONDS.toMillis(TIMEOUT_S));
            check(!thread.isAlive(), thread.getName() + " did not stop");
        }
    }

    static void revokeCommit(String bootstrap, String assignor, int messages) throws Exception {
        String topic = "revoke-" + (assignor.contains("Cooperative") ? "coop" : "range") + "-"
                + System.currentTimeMillis();
        try (Admin a = admin(bootstrap)) {
            a.createTopics(List.of(new NewTopic(topic, 6, (short) 1)))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
        produce(bootstrap, topic, messages);
        ConcurrentHashMap<String, Integer> seen = new ConcurrentHashMap<>();
        List<Member> all = new ArrayList<>();
        List<Member> live = new ArrayList<>();
        // Churn, bounded: members join and leave while the topic is being consumed.
        String[] steps = {"join", "join", "join", "leave", "join", "leave", "join", "leave"};
        int n = 0;
        for (String step : steps) {
            if (step.equals("join")) {
                Member m = new Member(bootstrap, topic, assignor, seen, "member-" + n++);
                all.add(m);
                live.add(m);
            } else {
                live.remove(0).leave();
            }
            // Let the rebalance happen and some records be consumed (but not all).
            int before = seen.size();
            long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (seen.size() < before + messages / 20 && seen.size() < messages
                    && System.nanoTime() < until) {
                Thread.sleep(50);
            }
        }
        // Drain: the remaining members consume the rest.
        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (seen.size() < messages && System.nanoTime() < until) Thread.sleep(100);
        for (Member m : live) m.leave();
        for (Member m : all) {
            Throwable e = m.error.get();
            if (e != null) {
                e.printStackTrace(System.out);
                fail(m.thread.getName() + ": " + e + (e.getCause() != null ? " caused by " + e.getCause() : ""));
            }
        }
        long duplicates = seen.values().stream().mapToLong(v -> v - 1).sum();
        long revokeCommits = all.stream().mapToLong(m -> m.commitsInRevoke.get()).sum();
        long refused = all.stream().mapToLong(m -> m.refusedInRevoke.get()).sum();
        System.out.printf("assignor=%s messages=%d consumed=%d duplicates=%d commits_in_revoke=%d"
                + " refused_in_revoke=%d%n", assignor, messages, seen.size(), duplicates,
                revokeCommits, refused);
        check(seen.size() == messages, "consumed " + seen.size() + " of " + messages);
        check(revokeCommits > 0, "no commit in a revoke callback: nothing was tested");
        check(duplicates == 0 && refused == 0, duplicates + " records delivered twice, "
                + refused + " commits in revoke callbacks refused");
    }
}
