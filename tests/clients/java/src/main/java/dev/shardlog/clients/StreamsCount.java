package dev.shardlog.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;

/**
 * A stateful Kafka Streams application, at-least-once: counts the values of INPUT (words)
 * with a repartition (group by value) into a state store backed by a compacted changelog, and
 * writes each word's running count to OUTPUT. Runs until every one of WORDS words ("w0" ..)
 * has the count EXPECTED in OUTPUT (read back with a plain consumer), then closes.
 *
 * <p>Usage: {@code StreamsCount BOOTSTRAP APP_ID STATE_DIR INPUT OUTPUT WORDS EXPECTED
 * TIMEOUT_MS [GUARANTEE]}; GUARANTEE is {@code at_least_once} (default) or {@code
 * exactly_once_v2} (then OUTPUT is read with read_committed). Prints {@code restored N} (records restored from changelogs) and exits 0 once
 * the counts are reached; on failure prints a line starting with {@code FAIL:} and exits 1.
 */
public final class StreamsCount {
  public static void main(String[] args) throws Exception {
    String bootstrap = args[0];
    String appId = args[1];
    String stateDir = args[2];
    String input = args[3];
    String output = args[4];
    int words = Integer.parseInt(args[5]);
    long expected = Long.parseLong(args[6]);
    long timeoutMs = Long.parseLong(args[7]);
    String guarantee = args.length > 8 ? args[8] : StreamsConfig.AT_LEAST_ONCE;

    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
    p.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 100);
    p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    if (guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
      // The EOS test kills an instance: its member leaves the group after this, not 45 s.
      p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 6000);
    }

    StreamsBuilder b = new StreamsBuilder();
    b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
        .groupBy((k, v) -> v, Grouped.with("by-word", Serdes.String(), Serdes.String()))
        .count(Materialized.as("counts"))
        .toStream()
        .to(output, Produced.with(Serdes.String(), Serdes.Long()));

    AtomicLong restored = new AtomicLong();
    KafkaStreams streams = new KafkaStreams(b.build(), p);
    streams.setGlobalStateRestoreListener(
        new StateRestoreListener() {
          @Override
          public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

          @Override
          public void onBatchRestored(TopicPartition tp, String store, long end, long n) {}

          @Override
          public void onRestoreEnd(TopicPartition tp, String store, long total) {
            restored.addAndGet(total);
          }
        });
    String[] failure = new String[1];
    streams.setUncaughtExceptionHandler(
        e -> {
          failure[0] = e.toString();
          return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    streams.start();

    Properties c = new Properties();
    c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
    c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
    c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    if (guarantee.equals(StreamsConfig.EXACTLY_ONCE_V2)) {
      c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    }
    boolean ok = false;
    Map<String, Long> latest = new HashMap<>();
    long deadline = System.currentTimeMillis() + timeoutMs;
    try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(c)) {
      List<TopicPartition> parts = new ArrayList<>();
      for (PartitionInfo info : consumer.partitionsFor(output, Duration.ofSeconds(10))) {
        parts.add(new TopicPartition(output, info.partition()));
      }
      consumer.assign(parts);
      consumer.seekToBeginning(parts);
      while (System.currentTimeMillis() < deadline && failure[0] == null) {
        for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
          latest.put(r.key(), r.value());
        }
        boolean done = latest.size() == words;
        for (int i = 0; i < words && done; i++) {
          done = Long.valueOf(expected).equals(latest.get("w" + i));
        }
        if (done) {
          ok = true;
          break;
        }
        KafkaStreams.State s = streams.state();
        if (s == KafkaStreams.State.ERROR || s == KafkaStreams.State.NOT_RUNNING) {
          failure[0] = "streams state " + s;
        }
      }
    } finally {
      streams.close(Duration.ofSeconds(30));
    }
    System.out.println("restored " + restored.get());
    if (!ok) {
      System.out.println(
          "FAIL: counts not reached"
              + (failure[0] != null ? " (" + failure[0] + ")" : "")
              + "; latest "
              + latest);
      System.exit(1);
    }
    System.exit(0);
  }
}
