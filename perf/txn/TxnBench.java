// Transactional producer benchmark (issue 21), run against shardlog and Apache Kafka alike by
// perf/txn-compare with the Kafka jars pinned in perf/peers/kafka (Java's single-file launch:
// `java -cp 'perf/peers/kafka/lib/*' perf/txn/TxnBench.java ARGS`).
//
//   TxnBench BOOTSTRAP TOPIC PARTITIONS RECORDS_PER_TXN SECONDS RECORD_BYTES
//
// One transactional producer (acks=all, idempotent, linger.ms=5) runs transactions of
// RECORDS_PER_TXN records spread over the PARTITIONS partitions for SECONDS (after 1 s of
// warm-up transactions that are not counted). Per transaction it sends the records, flushes
// them, and times commitTransaction() alone: the commit latency (EndTxn; the records are
// already acknowledged). A read_committed consumer in the same JVM reads the topic from its end
// and records, per record, the time from send() to its arrival (records carry their send time
// from System.nanoTime, the same clock): the read_committed end-to-end latency, which includes
// the wait for the transaction's COMMIT marker. Prints one JSON line.
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnBench {
  /** Latencies in nanoseconds, kept whole (bounded by MAX) for exact percentiles. */
  static final class Samples {
    static final int MAX = 20_000_000;
    long[] v = new long[1 << 16];
    int n;

    synchronized void add(long x) {
      if (n == MAX) return;
      if (n == v.length) v = Arrays.copyOf(v, Math.min(MAX, v.length * 2));
      v[n++] = x;
    }

    synchronized double pctMs(double p) {
      if (n == 0) return -1;
      long[] s = Arrays.copyOf(v, n);
      Arrays.sort(s);
      int i = (int) Math.min(n - 1, Math.max(0, Math.ceil(p / 100.0 * n) - 1));
      return s[i] / 1e6;
    }
  }

  public static void main(String[] a) throws Exception {
    String bootstrap = a[0], topic = a[1];
    int partitions = Integer.parseInt(a[2]);
    int perTxn = Integer.parseInt(a[3]);
    int seconds = Integer.parseInt(a[4]);
    int recordBytes = Math.max(16, Integer.parseInt(a[5]));

    Properties pp = new Properties();
    pp.put("bootstrap.servers", bootstrap);
    pp.put("transactional.id", "txn-bench-" + System.nanoTime());
    pp.put("acks", "all");
    pp.put("linger.ms", "5");
    pp.put("batch.size", "65536");
    pp.put("transaction.timeout.ms", "60000");
    pp.put("key.serializer", ByteArraySerializer.class.getName());
    pp.put("value.serializer", ByteArraySerializer.class.getName());
    Properties cp = new Properties();
    cp.put("bootstrap.servers", bootstrap);
    cp.put("isolation.level", "read_committed");
    cp.put("enable.auto.commit", "false");
    cp.put("fetch.max.wait.ms", "100");
    cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
    cp.put("value.deserializer", ByteArrayDeserializer.class.getName());

    Samples commit = new Samples();
    Samples e2e = new Samples();
    AtomicBoolean measuring = new AtomicBoolean(false);
    AtomicBoolean stop = new AtomicBoolean(false);
    AtomicLong consumed = new AtomicLong();
    AtomicLong measuredFrom = new AtomicLong(Long.MAX_VALUE);

    List<TopicPartition> tps = new ArrayList<>();
    for (int p = 0; p < partitions; p++) tps.add(new TopicPartition(topic, p));
    KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
    consumer.assign(tps);
    consumer.seekToEnd(tps);
    for (TopicPartition tp : tps) consumer.position(tp);
    Thread reader =
        new Thread(
            () -> {
              while (!stop.get()) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(100))) {
                  long sent = ByteBuffer.wrap(r.value()).getLong();
                  if (sent >= measuredFrom.get()) {
                    e2e.add(System.nanoTime() - sent);
                    consumed.incrementAndGet();
                  }
                }
              }
              consumer.close();
            });
    reader.start();

    long records = 0, txns = 0, t0 = 0;
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
      producer.initTransactions();
      long start = System.nanoTime();
      long warmEnd = start + 1_000_000_000L;
      long end = warmEnd + seconds * 1_000_000_000L;
      byte[] key = new byte[8];
      while (true) {
        long now = System.nanoTime();
        if (now >= end) break;
        boolean measure = now >= warmEnd;
        if (measure && !measuring.get()) {
          measuring.set(true);
          measuredFrom.set(now);
          t0 = now;
        }
        producer.beginTransaction();
        for (int i = 0; i < perTxn; i++) {
          byte[] value = new byte[recordBytes];
          ByteBuffer.wrap(value).putLong(System.nanoTime());
          ByteBuffer.wrap(key).putLong(records + i);
          producer.send(new ProducerRecord<>(topic, (int) ((records + i) % partitions), key, value));
        }
        producer.flush();
        long c0 = System.nanoTime();
        producer.commitTransaction();
        long c1 = System.nanoTime();
        if (measure) {
          commit.add(c1 - c0);
          records += perTxn;
          txns++;
        }
      }
      long elapsed = System.nanoTime() - t0;
      long deadline = System.nanoTime() + 30_000_000_000L;
      while (consumed.get() < records && System.nanoTime() < deadline) Thread.sleep(20);
      stop.set(true);
      reader.join(10_000);
      double secs = elapsed / 1e9;
      System.out.printf(
          "{\"records_per_txn\": %d, \"txns\": %d, \"records\": %d, \"seconds\": %.3f,"
              + " \"records_per_s\": %.1f, \"commit_p50_ms\": %.3f, \"commit_p99_ms\": %.3f,"
              + " \"e2e_p50_ms\": %.3f, \"e2e_p99_ms\": %.3f, \"consumed\": %d}%n",
          perTxn, txns, records, secs, records / secs, commit.pctMs(50), commit.pctMs(99),
          e2e.pctMs(50), e2e.pctMs(99), consumed.get());
    }
  }
}
