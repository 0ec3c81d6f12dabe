// Scenarios for franz-go (github.com/twmb/franz-go). See tests/clients/README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	c "shardlog.dev/clients/common"
)

func ctx(d time.Duration) context.Context {
	cx, _ := context.WithTimeout(context.Background(), d) //nolint:govet // process exits soon
	return cx
}

func codec(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	return kgo.NoCompression()
}

func client(bs string, opts ...kgo.Opt) *kgo.Client {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(bs), kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.AllowAutoTopicCreation(),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(5 * time.Millisecond), kgo.RecordDeliveryTimeout(20 * time.Second)}, opts...)...)
	c.Check2(err, "new client")
	return cl
}

func toRecords(topic string, part int32, msgs []c.Msg) []*kgo.Record {
	out := make([]*kgo.Record, 0, len(msgs))
	for _, m := range msgs {
		r := &kgo.Record{Topic: topic, Partition: part, Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
		}
		out = append(out, r)
	}
	return out
}

func produce(cl *kgo.Client, topic string, part int32, msgs []c.Msg) error {
	return cl.ProduceSync(ctx(25*time.Second), toRecords(topic, part, msgs)...).FirstErr()
}

func fromRecord(r *kgo.Record) c.Msg {
	m := c.Msg{Key: r.Key, Value: r.Value}
	for _, h := range r.Headers {
		m.Headers = append(m.Headers, c.Header{Key: h.Key, Value: h.Value})
	}
	return m
}

func consumeN(bs, topic string, n int) []c.Msg {
	cl := client(bs, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}))
	defer cl.Close()
	var got []c.Msg
	end := time.Now().Add(20 * time.Second)
	for len(got) < n && time.Now().Before(end) {
		fs := cl.PollFetches(ctx(time.Second))
		for _, e := range fs.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) {
				c.Fail("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
			}
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, fromRecord(r)) })
	}
	return got
}

func createTopic(bs, tag string, _ []string) {
	cl := client(bs)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := "t-" + tag + "-create"
	r, err := adm.CreateTopics(ctx(15*time.Second), 3, 1, nil, topic)
	c.Check2(err, "create")
	c.Check2(r[topic].Err, "create "+topic)
	td, err := adm.ListTopics(ctx(10*time.Second), topic)
	c.Check2(err, "list topics")
	if len(td[topic].Partitions) != 3 {
		c.Fail("metadata shows %d partitions, expected 3", len(td[topic].Partitions))
	}
	r, err = adm.CreateTopics(ctx(15*time.Second), 3, 1, nil, topic)
	c.Check2(err, "second create")
	if !errors.Is(r[topic].Err, kerr.TopicAlreadyExists) {
		c.Fail("second create: %v, expected TOPIC_ALREADY_EXISTS", r[topic].Err)
	}
}

func produceConsume(codecName string) func(bs, tag string, _ []string) {
	return func(bs, tag string, _ []string) {
		topic := "t-" + tag + "-pc-" + codecName
		msgs := c.KVMessages(12)
		cl := client(bs, kgo.ProducerBatchCompression(codec(codecName)))
		c.Check2(produce(cl, topic, 0, msgs), "produce")
		cl.Close()
		c.Check(topic, msgs, consumeN(bs, topic, len(msgs)))
	}
}

type tracker struct {
	mu    sync.Mutex
	parts map[int32]bool
}

func (t *tracker) opts() []kgo.Opt {
	add := func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
		t.mu.Lock()
		defer t.mu.Unlock()
		for _, ps := range m {
			for _, p := range ps {
				t.parts[p] = true
			}
		}
	}
	remove := func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
		t.mu.Lock()
		defer t.mu.Unlock()
		for _, ps := range m {
			for _, p := range ps {
				delete(t.parts, p)
			}
		}
	}
	return []kgo.Opt{kgo.OnPartitionsAssigned(add), kgo.OnPartitionsRevoked(remove), kgo.OnPartitionsLost(remove)}
}

func (t *tracker) n() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.parts)
}

func group(bs, tag string, _ []string) {
	topic := "t-" + tag + "-group"
	gid := "g-" + tag
	admc := client(bs)
	defer admc.Close()
	adm := kadm.NewClient(admc)
	r, err := adm.CreateTopics(ctx(15*time.Second), 4, 1, nil, topic)
	c.Check2(err, "create")
	c.Check2(r[topic].Err, "create "+topic)
	member := func(t *tracker) *kgo.Client {
		return client(bs, append(t.opts(), kgo.ConsumerGroup(gid), kgo.ConsumeTopics(topic),
			kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	}
	ta, tb := &tracker{parts: map[int32]bool{}}, &tracker{parts: map[int32]bool{}}
	got := [2]int{}
	ca := member(ta)
	members := []*kgo.Client{ca}
	poll := func() bool {
		for i, m := range members {
			fs := m.PollFetches(ctx(100 * time.Millisecond))
			got[i] += fs.NumRecords()
		}
		return true
	}
	c.Until(20*time.Second, "first member to get 4 partitions", func() bool { return poll() && ta.n() == 4 })
	cb := member(tb)
	members = append(members, cb)
	c.Until(30*time.Second, "rebalance to 2+2 partitions", func() bool { return poll() && ta.n() == 2 && tb.n() == 2 })
	pc := client(bs)
	for p := int32(0); p < 4; p++ {
		c.Check2(produce(pc, topic, p, []c.Msg{{Key: []byte("k"), Value: []byte(fmt.Sprint(p, "-0"))},
			{Key: []byte("k"), Value: []byte(fmt.Sprint(p, "-1"))}}), "produce")
	}
	pc.Close()
	c.Until(30*time.Second, "8 messages across the two members", func() bool { return poll() && got[0]+got[1] >= 8 })
	if got[0] != 4 || got[1] != 4 {
		c.Fail("members consumed %v, expected 4 each", got)
	}
	c.Check2(ca.CommitUncommittedOffsets(ctx(10*time.Second)), "commit a")
	c.Check2(cb.CommitUncommittedOffsets(ctx(10*time.Second)), "commit b")
	offs, err := adm.FetchOffsets(ctx(10*time.Second), gid)
	c.Check2(err, "fetch offsets")
	var vals []int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			vals = append(vals, o.At)
		}
	})
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	if fmt.Sprint(vals) != "[2 2 2 2]" {
		c.Fail("committed offsets %v, expected 2 on each partition", vals)
	}
	dg, err := adm.DescribeGroups(ctx(10*time.Second), gid)
	c.Check2(err, "describe groups")
	if len(dg[gid].Members) != 2 {
		c.Fail("DescribeGroups shows %d members, expected 2", len(dg[gid].Members))
	}
	ca.Close()
	cb.Close()
}

func listOffsets(bs, tag string, _ []string) {
	topic := "t-" + tag + "-offsets"
	// franz-go times a record out from its timestamp: keep them within the delivery timeout.
	t0 := time.Now().Add(-5 * time.Second).Truncate(time.Millisecond)
	cl := client(bs)
	defer cl.Close()
	var recs []*kgo.Record
	for i := 0; i < 3; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Value: []byte("v"),
			Timestamp: t0.Add(time.Duration(i) * time.Second)})
	}
	c.Check2(cl.ProduceSync(ctx(20*time.Second), recs...).FirstErr(), "produce")
	adm := kadm.NewClient(cl)
	start, err := adm.ListStartOffsets(ctx(10*time.Second), topic)
	c.Check2(err, "list start offsets")
	end, err := adm.ListEndOffsets(ctx(10*time.Second), topic)
	c.Check2(err, "list end offsets")
	s, _ := start.Lookup(topic, 0)
	e, _ := end.Lookup(topic, 0)
	if s.Offset != 0 || e.Offset != 3 || s.Err != nil || e.Err != nil {
		c.Fail("start/end offsets %d/%d (%v/%v), expected 0/3", s.Offset, e.Offset, s.Err, e.Err)
	}
	at, err := adm.ListOffsetsAfterMilli(ctx(10*time.Second), t0.Add(500*time.Millisecond).UnixMilli(), topic)
	c.Check2(err, "list offsets after milli")
	a, _ := at.Lookup(topic, 0)
	if a.Offset != 1 || a.Err != nil {
		c.Fail("offset for t0+500: %d (%v), expected 1", a.Offset, a.Err)
	}
	at, err = adm.ListOffsetsAfterMilli(ctx(10*time.Second), t0.Add(5*time.Second).UnixMilli(), topic)
	c.Check2(err, "list offsets after milli")
	a, _ = at.Lookup(topic, 0)
	if (a.Offset != 3 && a.Offset != -1) || a.Err != nil {
		c.Fail("offset for a timestamp after the last record: %d (%v), expected the end", a.Offset, a.Err)
	}
}

func idempotent(bs, tag string, _ []string) {
	topic := "t-" + tag + "-idem"
	msgs := c.KVMessages(50)
	cl := client(bs) // franz-go produces idempotently by default
	c.Check2(produce(cl, topic, 0, msgs), "produce")
	cl.Close()
	c.Check(topic, msgs, consumeN(bs, topic, len(msgs)))
}

func maxMessage(size int, wantErr bool) func(bs, tag string, _ []string) {
	return func(bs, tag string, _ []string) {
		topic := fmt.Sprintf("t-%s-max-%d", tag, size)
		m := c.Msg{Key: []byte("k"), Value: make([]byte, size)}
		for i := range m.Value {
			m.Value[i] = 'm'
		}
		cl := client(bs, kgo.ProducerBatchMaxBytes(int32(4*size)))
		err := produce(cl, topic, 0, []c.Msg{m})
		cl.Close()
		if wantErr {
			if !errors.Is(err, kerr.MessageTooLarge) {
				c.Fail("%d-byte value: %v, expected MESSAGE_TOO_LARGE", size, err)
			}
			return
		}
		c.Check2(err, "produce")
		c.Check(topic, []c.Msg{m}, consumeN(bs, topic, 1))
	}
}

func xproduce(bs, tag string, _ []string) {
	topic := "xc-" + tag
	for block, name := range c.Codecs {
		var msgs []c.Msg
		for i := block * c.XCBlock; i < (block+1)*c.XCBlock; i++ {
			msgs = append(msgs, c.XCMessage(tag, i))
		}
		cl := client(bs, kgo.ProducerBatchCompression(codec(name)))
		c.Check2(produce(cl, topic, 0, msgs), name)
		cl.Close()
	}
}

func xconsume(bs, _ string, producers []string) {
	for _, p := range producers {
		c.Check("xc-"+p, c.XCWant(p), consumeN(bs, "xc-"+p, c.XCCount))
	}
}

// ctpNames are the topics, group and transactional id of a consume-transform-produce run.
func ctpNames(tag string) (in, out, group, txid string) {
	return "t-" + tag + "-ctp-in", "t-" + tag + "-ctp-out", "g-" + tag + "-ctp", "tx-" + tag + "-ctp"
}

// ctpLoop reads the input in the group, writes "out-<value>" for each record and commits the
// consumed offsets in the same transaction (GroupTransactSession). With crashAfter >= 0 it
// commits that many transactions, then writes the next one's outputs, prints OPEN and waits
// to be killed; otherwise it runs until the input has been idle for 10 s (longer than the
// 6 s session timeout, after which a killed member's partitions are reassigned).
func ctpLoop(bs, tag string, crashAfter int) {
	in, out, group, txid := ctpNames(tag)
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(bs), kgo.TransactionalID(txid), kgo.TransactionTimeout(10*time.Second),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(), kgo.SessionTimeout(6*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(5*time.Millisecond), kgo.RecordDeliveryTimeout(20*time.Second))
	c.Check2(err, "new transact session")
	defer sess.Close()
	batches := 0
	idle := time.Now()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		recs := sess.PollRecords(ctx(time.Second), 25).Records()
		if len(recs) == 0 {
			if batches > 0 && time.Since(idle) > 10*time.Second {
				return
			}
			continue
		}
		idle = time.Now()
		c.Check2(sess.Begin(), "begin")
		var failed error
		var mu sync.Mutex
		for _, r := range recs {
			o := &kgo.Record{Topic: out, Partition: r.Partition, Value: []byte("out-" + string(r.Value))}
			sess.Produce(ctx(20*time.Second), o, func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			})
		}
		if crashAfter >= 0 && batches == crashAfter {
			c.Check2(sess.Client().Flush(ctx(20*time.Second)), "flush")
			fmt.Println("OPEN")
			time.Sleep(60 * time.Second)
			c.Fail("the worker was not killed")
		}
		committed, err := sess.End(ctx(30*time.Second), kgo.TryCommit)
		c.Check2(err, "end transaction")
		mu.Lock()
		c.Check2(failed, "transactional produce")
		mu.Unlock()
		if committed {
			batches++
		}
	}
	c.Fail("the loop did not finish within 60 s")
}

// txnCTPWorker is txnCTP's first instance, run as a child process that is killed with
// SIGKILL in the middle of a transaction.
func txnCTPWorker(bs, tag string, _ []string) {
	ctpLoop(bs, tag, 3)
}

// txnCTP: a consume-transform-produce loop with its offsets inside its transactions, killed
// (SIGKILL) in the middle of a transaction and restarted: every input's output is read
// exactly once by a read_committed consumer.
func txnCTP(bs, tag string, _ []string) {
	in, out, _, _ := ctpNames(tag)
	const n = 200
	adm := kadm.NewClient(client(bs))
	_, err := adm.CreateTopics(ctx(10*time.Second), 2, 1, nil, in, out)
	c.Check2(err, "create topics")
	cl := client(bs)
	var recs []*kgo.Record
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("v-%d", i)
		recs = append(recs, &kgo.Record{Topic: in, Partition: int32(i % 2), Value: []byte(v)})
		want["out-"+v] = true
	}
	c.Check2(cl.ProduceSync(ctx(25*time.Second), recs...).FirstErr(), "produce input")
	cl.Close()

	worker := exec.Command(os.Args[0], "txn_ctp_worker", bs, tag)
	stdout, err := worker.StdoutPipe()
	c.Check2(err, "worker stdout")
	c.Check2(worker.Start(), "start worker")
	opened := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "OPEN" {
				opened <- true
				return
			}
		}
		opened <- false
	}()
	select {
	case ok := <-opened:
		if !ok {
			_ = worker.Wait()
			c.Fail("the worker ended before opening its transaction")
		}
	case <-time.After(60 * time.Second):
		_ = worker.Process.Kill()
		c.Fail("the worker did not open its transaction within 60 s")
	}
	c.Check2(worker.Process.Kill(), "kill worker")
	_ = worker.Wait()

	ctpLoop(bs, tag, -1)

	rc := client(bs, kgo.ConsumeTopics(out), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer rc.Close()
	seen := map[string]int{}
	total := 0
	end := time.Now().Add(20 * time.Second)
	for total < n && time.Now().Before(end) {
		rc.PollRecords(ctx(time.Second), 100).EachRecord(func(r *kgo.Record) {
			seen[string(r.Value)]++
			total++
		})
	}
	// Anything beyond n would be a duplicate: wait a little more for one.
	rc.PollRecords(ctx(2*time.Second), 100).EachRecord(func(r *kgo.Record) {
		seen[string(r.Value)]++
		total++
	})
	for v, k := range seen {
		if k != 1 || !want[v] {
			c.Fail("output %q read %d times", v, k)
		}
	}
	if total != n || len(seen) != n {
		c.Fail("read %d outputs (%d distinct), expected %d exactly once", total, len(seen), n)
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/twmb/franz-go" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func main() {
	s := map[string]func(string, string, []string){
		"create_topic":    createTopic,
		"produce_consume": produceConsume("none"),
		"group":           group,
		"list_offsets":    listOffsets,
		"idempotent":      idempotent,
		"max_under":       maxMessage(c.UnderValueBytes, false),
		"max_over":        maxMessage(c.OverValueBytes, true),
		"xproduce":        xproduce,
		"xconsume":        xconsume,
		"txn_ctp":         txnCTP,
		"txn_ctp_worker":  txnCTPWorker,
	}
	for _, name := range c.Codecs[1:] {
		s[name] = produceConsume(name)
	}
	c.Main(version(), s)
}
