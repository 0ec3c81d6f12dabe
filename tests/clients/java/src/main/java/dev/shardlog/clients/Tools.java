package dev.shardlog.clients;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Scenarios for Kafka's own command-line tools (the kafka-tools artifact), each run as its own
 * JVM the way bin/kafka-*.sh runs them: TopicCommand, the console producer and consumer, and
 * ConsumerGroupCommand.
 */
final class Tools {
  private Tools() {}

  record Result(int code, String out) {}

  static Result run(String stdin, long timeoutS, String mainClass, String... args)
      throws Exception {
    List<String> cmd = new ArrayList<>();
    cmd.add(System.getProperty("java.home") + File.separator + "bin" + File.separator + "java");
    cmd.add("-Xshare:auto");
    cmd.add("-cp");
    cmd.add(System.getProperty("java.class.path"));
    cmd.add(mainClass);
    cmd.addAll(List.of(args));
    Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
    try (OutputStream in = p.getOutputStream()) {
      if (stdin != null) in.write(stdin.getBytes(StandardCharsets.UTF_8));
    }
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    Thread reader =
        new Thread(
            () -> {
              try (InputStream is = p.getInputStream()) {
                is.transferTo(out);
              } catch (Exception ignored) {
                // the process ended
              }
            });
    reader.start();
    if (!p.waitFor(timeoutS, TimeUnit.SECONDS)) {
      p.destroyForcibly();
      reader.join(2000);
      Main.fail(mainClass + " " + String.join(" ", args) + " timed out: " + out);
    }
    reader.join(2000);
    return new Result(p.exitValue(), out.toString(StandardCharsets.UTF_8));
  }

  static String ok(String stdin, String mainClass, String... args) throws Exception {
    Result r = run(stdin, 60, mainClass, args);
    if (r.code != 0) {
      Main.fail(mainClass + " " + String.join(" ", args) + " exited " + r.code + ": " + r.out);
    }
    return r.out;
  }

  static final String TOPIC_COMMAND = "org.apache.kafka.tools.TopicCommand";
  static final String PRODUCER = "org.apache.kafka.tools.ConsoleProducer";
  static final String CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer";
  static final String GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
  static final String TRANSACTIONS = "org.apache.kafka.tools.TransactionsCommand";

  /**
   * kafka-transactions: list, describe and describe-producers show an open transaction (left
   * open by a producer that stops answering) and a committed one; abort closes the open one
   * with a marker, after which read_committed reads only the committed record.
   */
  static void transactions(String bs, String tag, String topic) throws Exception {
    ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--create", "--topic", topic,
        "--partitions", "1", "--replication-factor", "1");
    String open = "tx-" + tag + "-open";
    String done = "tx-" + tag + "-done";
    org.apache.kafka.clients.producer.KafkaProducer<byte[], byte[]> hanging =
        Main.producer(
            bs,
            java.util.Map.of(
                org.apache.kafka.clients.producer.ProducerConfig.TRANSACTIONAL_ID_CONFIG, open,
                org.apache.kafka.clients.producer.ProducerConfig.TRANSACTION_TIMEOUT_CONFIG,
                600000));
    hanging.initTransactions();
    hanging.beginTransaction();
    Main.sendAll(hanging, topic, "open-", 3);
    try (org.apache.kafka.clients.producer.KafkaProducer<byte[], byte[]> p =
        Main.producer(
            bs,
            java.util.Map.of(
                org.apache.kafka.clients.producer.ProducerConfig.TRANSACTIONAL_ID_CONFIG, done))) {
      p.initTransactions();
      p.beginTransaction();
      Main.sendAll(p, topic, "done-", 1);
      p.commitTransaction();
    }
    hanging.close(java.time.Duration.ZERO);
    String list = ok(null, TRANSACTIONS, "--bootstrap-server", bs, "list");
    if (!list.matches("(?s).*" + open + "\\s+0\\s+\\d+\\s+Ongoing.*")
        || !list.matches("(?s).*" + done + "\\s+0\\s+\\d+\\s+CompleteCommit.*")) {
      Main.fail("list: " + list);
    }
    String desc = ok(null, TRANSACTIONS, "--bootstrap-server", bs, "describe",
        "--transactional-id", open);
    if (!desc.contains("Ongoing") || !desc.contains(topic + "-0")) Main.fail("describe: " + desc);
    String producers = ok(null, TRANSACTIONS, "--bootstrap-server", bs, "describe-producers",
        "--topic", topic, "--partition", "0");
    if (!producers.matches("(?s).*\\s0\\s*\\n.*")) {
      Main.fail("describe-producers (a transaction starting at offset 0): " + producers);
    }
    ok(null, TRANSACTIONS, "--bootstrap-server", bs, "abort", "--topic", topic, "--partition",
        "0", "--start-offset", "0");
    producers = ok(null, TRANSACTIONS, "--bootstrap-server", bs, "describe-producers",
        "--topic", topic, "--partition", "0");
    if (producers.matches("(?s).*\\s0\\s*\\n.*")) {
      Main.fail("describe-producers after abort still shows the transaction: " + producers);
    }
    List<String> rc = Main.readAll(bs, topic, "read_committed");
    if (!rc.equals(List.of("done-0"))) Main.fail("read_committed after abort read " + rc);
  }

  /** Runs a tools scenario; false when `scenario` is not one. */
  static boolean run(String scenario, String bs, String tag) throws Exception {
    String topic = "t-" + tag + "-" + scenario;
    switch (scenario) {
      case "tools_topic" -> {
        ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--create", "--topic", topic,
            "--partitions", "3", "--replication-factor", "1");
        String list = ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--list");
        if (!list.contains(topic)) Main.fail("--list lacks " + topic + ": " + list);
        String desc = ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--describe", "--topic",
            topic);
        if (!desc.contains("PartitionCount: 3")) Main.fail("--describe: " + desc);
        ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--alter", "--topic", topic,
            "--partitions", "5");
        desc = ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--describe", "--topic", topic);
        if (!desc.contains("PartitionCount: 5")) Main.fail("--describe after --alter: " + desc);
        ok(null, TOPIC_COMMAND, "--bootstrap-server", bs, "--delete", "--topic", topic);
      }
      case "tools_console" -> {
        ok("k1:v1\nk2:v2\nk3:v3\n", PRODUCER, "--bootstrap-server", bs, "--topic", topic,
            "--property", "parse.key=true", "--property", "key.separator=:");
        String out = ok(null, CONSUMER, "--bootstrap-server", bs, "--topic", topic,
            "--from-beginning", "--max-messages", "3", "--timeout-ms", "20000",
            "--property", "print.key=true", "--property", "key.separator=:");
        if (!out.contains("k1:v1") || !out.contains("k2:v2") || !out.contains("k3:v3")) {
          Main.fail("console consumer printed: " + out);
        }
      }
      case "tools_groups" -> {
        String group = "g-" + tag + "-tools";
        ok("a\nb\nc\nd\n", PRODUCER, "--bootstrap-server", bs, "--topic", topic);
        ok(null, CONSUMER, "--bootstrap-server", bs, "--topic", topic, "--group", group,
            "--from-beginning", "--max-messages", "4", "--timeout-ms", "20000");
        String list = ok(null, GROUPS, "--bootstrap-server", bs, "--list");
        if (!list.contains(group)) Main.fail("--list lacks " + group + ": " + list);
        String desc = ok(null, GROUPS, "--bootstrap-server", bs, "--describe", "--group", group);
        if (!desc.matches("(?s).*" + topic + "\\s+0\\s+4\\s+4\\s+0.*")) {
          Main.fail("--describe (expected offset 4, end 4, lag 0): " + desc);
        }
        String reset = ok(null, GROUPS, "--bootstrap-server", bs, "--reset-offsets", "--group",
            group, "--topic", topic, "--to-earliest", "--execute");
        if (!reset.matches("(?s).*" + topic + "\\s+0\\s+0.*")) Main.fail("--reset-offsets: " + reset);
        desc = ok(null, GROUPS, "--bootstrap-server", bs, "--describe", "--group", group);
        if (!desc.matches("(?s).*" + topic + "\\s+0\\s+0\\s+4\\s+4.*")) {
          Main.fail("--describe after reset (expected offset 0, lag 4): " + desc);
        }
        ok(null, GROUPS, "--bootstrap-server", bs, "--delete", "--group", group);
      }
      case "tools_transactions" -> transactions(bs, tag, topic);
      default -> {
        return false;
      }
    }
    return true;
  }
}
