// Scenarios for sarama (github.com/IBM/sarama). See tests/clients/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"github.com/IBM/sarama"

	c "shardlog.dev/clients/common"
)

func config() *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Partitioner = sarama.NewManualPartitioner
	cfg.Producer.Timeout = 15 * time.Second
	cfg.Producer.Flush.Frequency = 5 * time.Millisecond
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Metadata.Retry.Backoff = 100 * time.Millisecond
	return cfg
}

func codec(name string) sarama.CompressionCodec {
	switch name {
	case "gzip":
		return sarama.CompressionGZIP
	case "snappy":
		return sarama.CompressionSnappy
	case "lz4":
		return sarama.CompressionLZ4
	case "zstd":
		return sarama.CompressionZSTD
	}
	return sarama.CompressionNone
}

func toMessages(topic string, part int32, msgs []c.Msg) []*sarama.ProducerMessage {
	out := make([]*sarama.ProducerMessage, 0, len(msgs))
	for _, m := range msgs {
		pm := &sarama.ProducerMessage{Topic: topic, Partition: part, Value: sarama.ByteEncoder(m.Value)}
		if m.Key != nil {
			pm.Key = sarama.ByteEncoder(m.Key)
		}
		for _, h := range m.Headers {
			pm.Headers = append(pm.Headers, sarama.RecordHeader{Key: []byte(h.Key), Value: h.Value})
		}
		out = append(out, pm)
	}
	return out
}

func produce(bs string, cfg *sarama.Config, pms []*sarama.ProducerMessage) error {
	p, err := sarama.NewSyncProducer([]string{bs}, cfg)
	c.Check2(err, "new producer")
	defer p.Close()
	return p.SendMessages(pms)
}

func fromMessage(m *sarama.ConsumerMessage) c.Msg {
	out := c.Msg{Key: m.Key, Value: m.Value}
	for _, h := range m.Headers {
		out.Headers = append(out.Headers, c.Header{Key: string(h.Key), Value: h.Value})
	}
	return out
}

func consumeN(bs, topic string, n int) []c.Msg {
	cons, err := sarama.NewConsumer([]string{bs}, config())
	c.Check2(err, "new consumer")
	defer cons.Close()
	pc, err := cons.ConsumePartition(topic, 0, 0)
	c.Check2(err, "consume partition")
	defer pc.Close()
	var got []c.Msg
	timeout := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case m := <-pc.Messages():
			got = append(got, fromMessage(m))
		case e := <-pc.Errors():
			c.Fail("consume: %v", e)
		case <-timeout:
			return got
		}
	}
	return got
}

func admin(bs string) sarama.ClusterAdmin {
	a, err := sarama.NewClusterAdmin([]string{bs}, config())
	c.Check2(err, "new cluster admin")
	return a
}

func createTopic(bs, tag string, _ []string) {
	a := admin(bs)
	defer a.Close()
	topic := "t-" + tag + "-create"
	c.Check2(a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false), "create")
	md, err := a.DescribeTopics([]string{topic})
	c.Check2(err, "describe topics")
	if len(md) != 1 || len(md[0].Partitions) != 3 {
		c.Fail("DescribeTopics: %+v, expected 3 partitions", md)
	}
	err = a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false)
	if !errors.Is(err, sarama.ErrTopicAlreadyExists) {
		c.Fail("second create: %v, expected TOPIC_ALREADY_EXISTS", err)
	}
}

func produceConsume(name string) func(bs, tag string, _ []string) {
	return func(bs, tag string, _ []string) {
		topic := "t-" + tag + "-pc-" + name
		msgs := c.KVMessages(12)
		cfg := config()
		cfg.Producer.Compression = codec(name)
		c.Check2(produce(bs, cfg, toMessages(topic, 0, msgs)), "produce")
		c.Check(topic, msgs, consumeN(bs, topic, len(msgs)))
	}
}

// handler counts records and tracks the member's claims.
type handler struct {
	mu    sync.Mutex
	parts int
	got   int
}

func (h *handler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.parts = 0
	for _, ps := range s.Claims() {
		h.parts += len(ps)
	}
	return nil
}

func (h *handler) Cleanup(s sarama.ConsumerGroupSession) error {
	s.Commit()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.parts = 0
	return nil
}

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, cl sarama.ConsumerGroupClaim) error {
	for m := range cl.Messages() {
		s.MarkMessage(m, "")
		s.Commit()
		h.mu.Lock()
		h.got++
		h.mu.Unlock()
	}
	return nil
}

func (h *handler) state() (int, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.parts, h.got
}

func member(bs, gid, topic string, h *handler) (sarama.ConsumerGroup, context.CancelFunc, *sync.WaitGroup) {
	g, err := sarama.NewConsumerGroup([]string{bs}, gid, config())
	c.Check2(err, "new consumer group")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil && ctx.Err() == nil {
				fmt.Printf("consume: %v\n", err)
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	go func() {
		for e := range g.Errors() {
			fmt.Printf("group error: %v\n", e)
		}
	}()
	return g, cancel, &wg
}

func group(bs, tag string, _ []string) {
	topic := "t-" + tag + "-group"
	gid := "g-" + tag
	a := admin(bs)
	defer a.Close()
	c.Check2(a.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 4, ReplicationFactor: 1}, false), "create")
	ha, hb := &handler{}, &handler{}
	ga, cancelA, wa := member(bs, gid, topic, ha)
	c.Until(20*time.Second, "first member to get 4 partitions", func() bool {
		p, _ := ha.state()
		time.Sleep(50 * time.Millisecond)
		return p == 4
	})
	gb, cancelB, wb := member(bs, gid, topic, hb)
	c.Until(30*time.Second, "rebalance to 2+2 partitions", func() bool {
		pa, _ := ha.state()
		pb, _ := hb.state()
		time.Sleep(50 * time.Millisecond)
		return pa == 2 && pb == 2
	})
	var pms []*sarama.ProducerMessage
	for p := int32(0); p < 4; p++ {
		pms = append(pms, toMessages(topic, p, []c.Msg{{Key: []byte("k"), Value: []byte("v0")}, {Key: []byte("k"), Value: []byte("v1")}})...)
	}
	c.Check2(produce(bs, config(), pms), "produce")
	c.Until(30*time.Second, "8 messages across the two members", func() bool {
		_, a := ha.state()
		_, b := hb.state()
		time.Sleep(50 * time.Millisecond)
		return a+b >= 8
	})
	_, na := ha.state()
	_, nb := hb.state()
	if na != 4 || nb != 4 {
		c.Fail("members consumed %d+%d, expected 4 each", na, nb)
	}
	offs, err := a.ListConsumerGroupOffsets(gid, nil)
	c.Check2(err, "list consumer group offsets")
	var vals []int64
	for _, b := range offs.Blocks[topic] {
		vals = append(vals, b.Offset)
	}
	sort.Slice(vals, func(i, j int) bool { return vals[i] < vals[j] })
	if fmt.Sprint(vals) != "[2 2 2 2]" {
		c.Fail("committed offsets %v, expected 2 on each partition", vals)
	}
	gd, err := a.DescribeConsumerGroups([]string{gid})
	c.Check2(err, "describe consumer groups")
	if len(gd) != 1 || len(gd[0].Members) != 2 {
		c.Fail("DescribeConsumerGroups: %+v, expected 2 members", gd)
	}
	cancelA()
	cancelB()
	wa.Wait()
	wb.Wait()
	ga.Close()
	gb.Close()
}

func listOffsets(bs, tag string, _ []string) {
	topic := "t-" + tag + "-offsets"
	t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var pms []*sarama.ProducerMessage
	for i := 0; i < 3; i++ {
		pms = append(pms, &sarama.ProducerMessage{Topic: topic, Partition: 0, Value: sarama.StringEncoder("v"),
			Timestamp: t0.Add(time.Duration(i) * time.Second)})
	}
	c.Check2(produce(bs, config(), pms), "produce")
	cl, err := sarama.NewClient([]string{bs}, config())
	c.Check2(err, "new client")
	defer cl.Close()
	lo, err := cl.GetOffset(topic, 0, sarama.OffsetOldest)
	c.Check2(err, "earliest")
	hi, err := cl.GetOffset(topic, 0, sarama.OffsetNewest)
	c.Check2(err, "latest")
	if lo != 0 || hi != 3 {
		c.Fail("earliest/latest %d/%d, expected 0/3", lo, hi)
	}
	at, err := cl.GetOffset(topic, 0, t0.Add(500*time.Millisecond).UnixMilli())
	c.Check2(err, "by timestamp")
	if at != 1 {
		c.Fail("offset for t0+500: %d, expected 1", at)
	}
	at, err = cl.GetOffset(topic, 0, t0.Add(5*time.Second).UnixMilli())
	c.Check2(err, "by timestamp after the last record")
	if at != -1 {
		c.Fail("offset for a timestamp after the last record: %d, expected -1", at)
	}
}

func idempotent(bs, tag string, _ []string) {
	topic := "t-" + tag + "-idem"
	msgs := c.KVMessages(50)
	cfg := config()
	cfg.Producer.Idempotent = true
	cfg.Net.MaxOpenRequests = 1
	c.Check2(produce(bs, cfg, toMessages(topic, 0, msgs)), "produce")
	c.Check(topic, msgs, consumeN(bs, topic, len(msgs)))
}

func maxMessage(size int, wantErr bool) func(bs, tag string, _ []string) {
	return func(bs, tag string, _ []string) {
		topic := fmt.Sprintf("t-%s-max-%d", tag, size)
		m := c.Msg{Key: []byte("k"), Value: make([]byte, size)}
		for i := range m.Value {
			m.Value[i] = 'm'
		}
		cfg := config()
		cfg.Producer.MaxMessageBytes = 4 * size
		cfg.Producer.Retry.Max = 0
		err := produce(bs, cfg, toMessages(topic, 0, []c.Msg{m}))
		var perrs sarama.ProducerErrors
		if errors.As(err, &perrs) && len(perrs) > 0 {
			err = perrs[0].Err
		}
		if wantErr {
			if !errors.Is(err, sarama.ErrMessageSizeTooLarge) {
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
		cfg := config()
		cfg.Producer.Compression = codec(name)
		c.Check2(produce(bs, cfg, toMessages(topic, 0, msgs)), name)
	}
}

func xconsume(bs, _ string, producers []string) {
	for _, p := range producers {
		c.Check("xc-"+p, c.XCWant(p), consumeN(bs, "xc-"+p, c.XCCount))
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/IBM/sarama" {
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
	}
	for _, name := range c.Codecs[1:] {
		s[name] = produceConsume(name)
	}
	c.Main(version(), s)
}
