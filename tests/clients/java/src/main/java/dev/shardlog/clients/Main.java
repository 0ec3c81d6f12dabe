package dev.shardlog.clients;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.AppInfoParser;

/**
 * Scenarios for the Java client (kafka-clients). Called as {@code Main SCENARIO BOOTSTRAP TAG
 * [ARGS...]}; exits 0 when the scenario passed, 2 when the client lacks what it needs, 1 when it
 * failed. {@code Main version} prints the client's version. The shared cross-client format and
 * the size limits are those of tests/clients/python/common.py.
 */
public final class Main {
  static final int UNSUPPORTED = 2;
  static final int XC_COUNT = 20;
  static final int XC_BLOCK = 4;
  static final String[] CODECS = {"none", "gzip", "snappy", "lz4", "zstd"};
  static final int MAX_MESSAGE_BYTES = 65536;

  record Msg(byte[] key, byte[] value, List<Header> headers) {}

  static final class Failure extends RuntimeException {
    Failure(String m) {
      super(m);
    }
  }

  static void fail(String m) {
    throw new Failure(m);
  }

  static byte[] b(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  static byte[] concat(byte[]... parts) {
    int n = 0;
    for (byte[] p : parts) n += p.length;
    byte[] out = new byte[n];
    int at = 0;
    for (byte[] p : parts) {
      System.arraycopy(p, 0, out, at, p.length);
      at += p.length;
    }
    return out;
  }

  static Msg xcMessage(String tag, int i) {
    byte[] key = i % 5 == 4 ? null : b("key-" + i);
    byte[] value =
        concat(
            b(tag + ":" + i + ":"),
            b("é€😀"),
            new byte[] {(byte) i, 0, (byte) 255},
            b("x".repeat(i * 7)));
    List<Header> h = new ArrayList<>();
    h.add(new RecordHeader("h-index", b(Integer.toString(i))));
    h.add(new RecordHeader("h-bin", new byte[] {0, (byte) i, (byte) 255}));
    if (i % 3 == 0) h.add(new RecordHeader("h-empty", new byte[0]));
    return new Msg(key, value, h);
  }

  static List<Msg> kvMessages(int n) {
    List<Msg> out = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      byte[] key = i % 3 == 2 ? null : b("k" + i);
      List<Header> h = new ArrayList<>();
      if (i % 2 == 0) {
        h.add(new RecordHeader("hk", b("hv" + i)));
        h.add(new RecordHeader("hk2", new byte[] {0, 1}));
      }
      out.add(new Msg(key, b("value-" + i), h));
    }
    return out;
  }

  static String show(Msg m) {
    StringBuilder sb = new StringBuilder();
    sb.append(m.key == null ? "null" : new String(m.key, StandardCharsets.UTF_8)).append('/');
    sb.append(m.value == null ? "null" : m.value.length + "B").append(" [");
    for (Header h : m.headers) {
      sb.append(h.key()).append('=').append(Arrays.toString(h.value())).append(' ');
    }
    return sb.append(']').toString();
  }

  static boolean same(Msg a, Msg b) {
    if (!Arrays.equals(a.key, b.key) || !Arrays.equals(a.value, b.value)) return false;
    if (a.headers.size() != b.headers.size()) return false;
    for (int i = 0; i < a.headers.size(); i++) {
      Header x = a.headers.get(i);
      Header y = b.headers.get(i);
      byte[] xv = x.value() == null ? new byte[0] : x.value();
      byte[] yv = y.value() == null ? new byte[0] : y.value();
      if (!x.key().equals(y.key()) || !Arrays.equals(xv, yv)) return false;
    }
    return true;
  }

  static void check(String what, List<Msg> expected, List<Msg> got) {
    if (expected.size() != got.size()) {
      fail(what + ": consumed " + got.size() + " messages, expected " + expected.size());
    }
    for (int i = 0; i < expected.size(); i++) {
      if (!same(expected.get(i), got.get(i))) {
        fail(what + " #" + i + ": got " + show(got.get(i)) + ", expected " + show(expected.get(i)));
      }
    }
  }

  static Properties common(String bootstrap) {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    return p;
  }

  static KafkaProducer<byte[], byte[]> producer(String bootstrap, Map<String, Object> extra) {
    Properties p = common(bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
    p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 20000);
    p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
    p.putAll(extra);
    return new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
  }

  static KafkaConsumer<byte[], byte[]> consumer(String bootstrap, String group) {
    Properties p = common(bootstrap);
    if (group != null) p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    return new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer());
  }

  static Admin admin(String bootstrap) {
    return Admin.create(common(bootstrap));
  }

  static List<RecordMetadata> produceAll(
      KafkaProducer<byte[], byte[]> p, String topic, List<Msg> msgs, Integer partition, long[] ts)
      throws Exception {
    List<Future<RecordMetadata>> fs = new ArrayList<>();
    for (int i = 0; i < msgs.size(); i++) {
      Msg m = msgs.get(i);
      fs.add(
          p.send(
              new ProducerRecord<>(
                  topic, partition, ts == null ? null : ts[i], m.key, m.value, m.headers)));
    }
    p.flush();
    List<RecordMetadata> out = new ArrayList<>();
    for (Future<RecordMetadata> f : fs) out.add(f.get());
    return out;
  }

  static List<Msg> consumeN(String bootstrap, String topic, int n) {
    try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, null)) {
      TopicPartition tp = new TopicPartition(topic, 0);
      c.assign(List.of(tp));
      c.seek(tp, 0);
      List<Msg> got = new ArrayList<>();
      long end = System.currentTimeMillis() + 20000;
      while (got.size() < n && System.currentTimeMillis() < end) {
        for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(500))) {
          got.add(new Msg(r.key(), r.value(), Arrays.asList(r.headers().toArray())));
        }
      }
      return got;
    }
  }

  static void createTopic(String bootstrap, String tag) throws Exception {
    String topic = "t-" + tag + "-create";
    try (Admin a = admin(bootstrap)) {
      a.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all().get();
      TopicDescription d = a.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
      if (d.partitions().size() != 3) fail("describeTopics shows " + d.partitions().size());
      try {
        a.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all().get();
        fail("second create did not fail");
      } catch (ExecutionException e) {
        if (!(e.getCause() instanceof TopicExistsException)) throw e;
      }
      if (!a.listTopics().names().get().contains(topic)) fail("listTopics lacks " + topic);
    }
  }

  static void produceConsume(String bootstrap, String tag, String codec) throws Exception {
    String topic = "t-" + tag + "-pc-" + codec;
    List<Msg> msgs = kvMessages(12);
    try (KafkaProducer<byte[], byte[]> p =
        producer(bootstrap, Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec))) {
      produceAll(p, topic, msgs, 0, null);
    }
    check(topic, msgs, consumeN(bootstrap, topic, msgs.size()));
  }

  interface Check {
    boolean ok() throws Exception;
  }

  static void until(long ms, String what, Check c) throws Exception {
    long end = System.currentTimeMillis() + ms;
    while (System.currentTimeMillis() < end) {
      if (c.ok()) return;
    }
    fail("timed out waiting for " + what);
  }

  static ConsumerRebalanceListener tracker(Set<Integer> parts) {
    return new ConsumerRebalanceListener() {
      @Override
      public void onPartitionsRevoked(Collection<TopicPartition> ps) {
        for (TopicPartition tp : ps) parts.remove(tp.partition());
      }

      @Override
      public void onPartitionsAssigned(Collection<TopicPartition> ps) {
        for (TopicPartition tp : ps) parts.add(tp.partition());
      }
    };
  }

  static void group(String bootstrap, String tag) throws Exception {
    String topic = "t-" + tag + "-group";
    String gid = "g-" + tag;
    try (Admin a = admin(bootstrap);
        KafkaConsumer<byte[], byte[]> ca = consumer(bootstrap, gid);
        KafkaConsumer<byte[], byte[]> cb = consumer(bootstrap, gid)) {
      a.createTopics(List.of(new NewTopic(topic, 4, (short) 1))).all().get();
      Set<Integer> pa = new HashSet<>();
      Set<Integer> pb = new HashSet<>();
      int[] got = {0, 0};
      ca.subscribe(List.of(topic), tracker(pa));
      until(
          20000,
          "first member to get 4 partitions",
          () -> {
            got[0] += ca.poll(Duration.ofMillis(200)).count();
            return pa.size() == 4;
          });
      cb.subscribe(List.of(topic), tracker(pb));
      Check pollBoth =
          () -> {
            got[0] += ca.poll(Duration.ofMillis(100)).count();
            got[1] += cb.poll(Duration.ofMillis(100)).count();
            return true;
          };
      until(
          30000,
          "rebalance to 2+2 partitions",
          () -> pollBoth.ok() && pa.size() == 2 && pb.size() == 2);
      try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, Map.of())) {
        for (int part = 0; part < 4; part++) {
          List<Msg> ms = new ArrayList<>();
          for (int j = 0; j < 2; j++) ms.add(new Msg(b("k"), b("v" + part + "-" + j), List.of()));
          produceAll(p, topic, ms, part, null);
        }
      }
      until(30000, "8 messages across the two members", () -> pollBoth.ok() && got[0] + got[1] >= 8);
      if (got[0] != 4 || got[1] != 4) fail("members consumed " + got[0] + "+" + got[1]);
      ca.commitSync();
      cb.commitSync();
      Map<TopicPartition, OffsetAndMetadata> offs =
          a.listConsumerGroupOffsets(gid).partitionsToOffsetAndMetadata().get();
      List<Long> vals = new ArrayList<>();
      for (var e : offs.entrySet()) if (e.getKey().topic().equals(topic)) vals.add(e.getValue().offset());
      if (!vals.equals(List.of(2L, 2L, 2L, 2L))) fail("committed offsets " + offs);
      var groups = a.describeConsumerGroups(List.of(gid)).all().get();
      if (groups.get(gid).members().size() != 2) fail("describeConsumerGroups: " + groups);
    }
  }

  static void listOffsets(String bootstrap, String tag) throws Exception {
    String topic = "t-" + tag + "-offsets";
    long t0 = System.currentTimeMillis() - 60000;
    try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, Map.of())) {
      Msg m = new Msg(b("k"), b("v"), List.of());
      produceAll(p, topic, List.of(m, m, m), 0, new long[] {t0, t0 + 1000, t0 + 2000});
    }
    TopicPartition tp = new TopicPartition(topic, 0);
    try (KafkaConsumer<byte[], byte[]> c = consumer(bootstrap, null)) {
      long lo = c.beginningOffsets(List.of(tp)).get(tp);
      long hi = c.endOffsets(List.of(tp)).get(tp);
      if (lo != 0 || hi != 3) fail("beginning/end offsets " + lo + "/" + hi + ", expected 0/3");
      OffsetAndTimestamp r = c.offsetsForTimes(Map.of(tp, t0 + 500)).get(tp);
      if (r == null || r.offset() != 1) fail("offset for t0+500: " + r + ", expected 1");
      r = c.offsetsForTimes(Map.of(tp, t0 + 5000)).get(tp);
      if (r != null) fail("offset for a timestamp after the last record: " + r + ", expected null");
    }
    try (Admin a = admin(bootstrap)) {
      Map<OffsetSpec, Long> want = new HashMap<>();
      want.put(OffsetSpec.earliest(), 0L);
      want.put(OffsetSpec.latest(), 3L);
      want.put(OffsetSpec.forTimestamp(t0 + 1000), 1L);
      want.put(OffsetSpec.maxTimestamp(), 2L);
      for (var e : want.entrySet()) {
        long got = a.listOffsets(Map.of(tp, e.getKey())).partitionResult(tp).get().offset();
        if (got != e.getValue()) {
          fail("Admin.listOffsets " + e.getKey().getClass().getSimpleName() + ": " + got);
        }
      }
    }
  }

  static void idempotent(String bootstrap, String tag) throws Exception {
    String topic = "t-" + tag + "-idem";
    List<Msg> msgs = kvMessages(50);
    try (KafkaProducer<byte[], byte[]> p =
        producer(bootstrap, Map.of(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true))) {
      produceAll(p, topic, msgs, 0, null);
    }
    check(topic, msgs, consumeN(bootstrap, topic, msgs.size()));
  }

  static void maxMessage(String bootstrap, String tag, int size, boolean wantError)
      throws Exception {
    String topic = "t-" + tag + "-max-" + size;
    Msg m = new Msg(b("k"), b("m".repeat(size)), List.of());
    try (KafkaProducer<byte[], byte[]> p =
        producer(bootstrap, Map.of(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 4 * size))) {
      produceAll(p, topic, List.of(m), 0, null);
      if (wantError) fail(size + "-byte value accepted, expected MESSAGE_TOO_LARGE");
    } catch (ExecutionException e) {
      if (!(e.getCause() instanceof RecordTooLargeException)) throw e;
      if (!wantError) fail(size + "-byte value rejected: " + e.getCause());
      return;
    }
    List<Msg> got = consumeN(bootstrap, topic, 1);
    check(topic, List.of(m), got);
  }

  /** A client configured for SASL fails at once with an authentication error, not a hang. */
  static void saslRejected(String bootstrap) throws Exception {
    Properties p = common(bootstrap);
    p.put("security.protocol", "SASL_PLAINTEXT");
    p.put("sasl.mechanism", "PLAIN");
    p.put(
        "sasl.jaas.config",
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
            + " username=\"u\" password=\"p\";");
    p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 15000);
    p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 20000);
    long start = System.currentTimeMillis();
    try (Admin a = Admin.create(p)) {
      a.listTopics().names().get();
      fail("listTopics succeeded over SASL on a listener without SASL");
    } catch (ExecutionException e) {
      if (!(e.getCause() instanceof org.apache.kafka.common.errors.AuthenticationException)) {
        fail("expected an AuthenticationException, got " + e.getCause());
      }
      long ms = System.currentTimeMillis() - start;
      if (ms > 10000) fail("the authentication error took " + ms + " ms");
    }
  }

  /**
   * Until the broker has transactions, a transactional producer fails at once with a fatal
   * authorization error instead of retrying a coordinator lookup forever.
   */
  /** Every value in partition 0 of `topic` read with `isolation`, until none came for 1 s. */
  static List<String> readAll(String bootstrap, String topic, String isolation) {
    Properties p = common(bootstrap);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
    try (KafkaConsumer<byte[], byte[]> c =
        new KafkaConsumer<>(p, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      TopicPartition tp = new TopicPartition(topic, 0);
      c.assign(List.of(tp));
      c.seek(tp, 0);
      List<String> got = new ArrayList<>();
      long end = System.currentTimeMillis() + 20000;
      long quietSince = System.currentTimeMillis();
      while (System.currentTimeMillis() < end
          && System.currentTimeMillis() - quietSince < (got.isEmpty() ? 5000 : 1000)) {
        for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
          got.add(new String(r.value(), StandardCharsets.UTF_8));
          quietSince = System.currentTimeMillis();
        }
      }
      return got;
    }
  }

  static void sendAll(KafkaProducer<byte[], byte[]> p, String topic, String prefix, int n)
      throws Exception {
    List<Future<RecordMetadata>> fs = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      fs.add(p.send(new ProducerRecord<>(topic, 0, b("k" + i), b(prefix + i))));
    }
    p.flush();
    for (Future<RecordMetadata> f : fs) f.get();
  }

  static List<String> values(String prefix, int n) {
    List<String> out = new ArrayList<>();
    for (int i = 0; i < n; i++) out.add(prefix + i);
    return out;
  }

  /**
   * A transactional producer commits, aborts, commits: read_committed sees exactly the
   * committed records, read_uncommitted all of them; then a second producer with the same
   * transactional id fences the first, whose commit fails and whose records stay invisible.
   */
  static void txn(String bootstrap, String tag) throws Exception {
    String topic = "t-" + tag + "-txn";
    try (Admin a = admin(bootstrap)) {
      a.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
    }
    Map<String, Object> tx =
        Map.of(
            ProducerConfig.TRANSACTIONAL_ID_CONFIG, "tx-" + tag,
            ProducerConfig.MAX_BLOCK_MS_CONFIG, 20000);
    try (KafkaProducer<byte[], byte[]> p = producer(bootstrap, tx)) {
      p.initTransactions();
      p.beginTransaction();
      sendAll(p, topic, "c1-", 5);
      p.commitTransaction();
      p.beginTransaction();
      sendAll(p, topic, "ab-", 5);
      p.abortTransaction();
      p.beginTransaction();
      sendAll(p, topic, "c2-", 5);
      p.commitTransaction();
    }
    List<String> committed = new ArrayList<>(values("c1-", 5));
    committed.addAll(values("c2-", 5));
    List<String> all = new ArrayList<>(values("c1-", 5));
    all.addAll(values("ab-", 5));
    all.addAll(values("c2-", 5));
    List<String> rc = readAll(bootstrap, topic, "read_committed");
    if (!rc.equals(committed)) fail("read_committed read " + rc + ", expected " + committed);
    List<String> ru = readAll(bootstrap, topic, "read_uncommitted");
    if (!ru.equals(all)) fail("read_uncommitted read " + ru + ", expected " + all);

    // Zombie fencing.
    KafkaProducer<byte[], byte[]> zombie = producer(bootstrap, tx);
    zombie.initTransactions();
    zombie.beginTransaction();
    sendAll(zombie, topic, "zombie-", 2);
    try (KafkaProducer<byte[], byte[]> fresh = producer(bootstrap, tx)) {
      fresh.initTransactions();
      try {
        zombie.commitTransaction();
        fail("the fenced producer committed");
      } catch (org.apache.kafka.common.errors.ProducerFencedException
          | org.apache.kafka.common.errors.InvalidProducerEpochException e) {
        // Expected: the newer producer fenced it.
      } finally {
        zombie.close(Duration.ZERO);
      }
      fresh.beginTransaction();
      sendAll(fresh, topic, "fresh-", 2);
      fresh.commitTransaction();
    }
    committed.addAll(values("fresh-", 2));
    rc = readAll(bootstrap, topic, "read_committed");
    if (!rc.equals(committed)) fail("after fencing, read_committed read " + rc);
  }

  static void xproduce(String bootstrap, String tag) throws Exception {
    String topic = "xc-" + tag;
    for (int block = 0; block < CODECS.length; block++) {
      List<Msg> msgs = new ArrayList<>();
      for (int i = block * XC_BLOCK; i < (block + 1) * XC_BLOCK; i++) msgs.add(xcMessage(tag, i));
      try (KafkaProducer<byte[], byte[]> p =
          producer(bootstrap, Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, CODECS[block]))) {
        produceAll(p, topic, msgs, 0, null);
      }
    }
  }

  static void xconsume(String bootstrap, String[] producers) {
    for (String ptag : producers) {
      List<Msg> want = new ArrayList<>();
      for (int i = 0; i < XC_COUNT; i++) want.add(xcMessage(ptag, i));
      check("xc-" + ptag, want, consumeN(bootstrap, "xc-" + ptag, XC_COUNT));
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length >= 1 && args[0].equals("version")) {
      System.out.println(AppInfoParser.getVersion());
      return;
    }
    if (args.length < 3) {
      System.err.println("usage: Main SCENARIO BOOTSTRAP TAG [ARGS...]");
      System.exit(64);
    }
    String s = args[0];
    String bs = args[1];
    String tag = args[2];
    try {
      switch (s) {
        case "create_topic" -> createTopic(bs, tag);
        case "produce_consume" -> produceConsume(bs, tag, "none");
        case "gzip", "snappy", "lz4", "zstd" -> produceConsume(bs, tag, s);
        case "group" -> group(bs, tag);
        case "list_offsets" -> listOffsets(bs, tag);
        case "idempotent" -> idempotent(bs, tag);
        case "max_under" -> maxMessage(bs, tag, MAX_MESSAGE_BYTES - 512, false);
        case "max_over" -> maxMessage(bs, tag, MAX_MESSAGE_BYTES + 512, true);
        case "sasl_rejected" -> saslRejected(bs);
        case "txn" -> txn(bs, tag);
        case "xproduce" -> xproduce(bs, tag);
        case "xconsume" -> xconsume(bs, Arrays.copyOfRange(args, 3, args.length));
        default -> {
          if (Tools.run(s, bs, tag)) break;
          System.out.println("no scenario " + s + " for this client");
          System.exit(UNSUPPORTED);
        }
      }
    } catch (Failure f) {
      System.out.println("FAIL: " + f.getMessage());
      System.exit(1);
    } catch (Throwable t) {
      StringBuilder why = new StringBuilder();
      for (Throwable c = t; c != null; c = c.getCause()) {
        why.append(why.length() == 0 ? "" : " <- ").append(c);
      }
      t.printStackTrace();
      System.out.println("FAIL: " + why);
      System.exit(1);
    }
    System.out.println("ok");
    System.exit(0);
  }
}
