// Security scenarios for franz-go, driven by tests/security.rs:
//
//	security produce_consume BOOTSTRAP TAG CA_PEM MECHANISM USER PASSWORD
//
// connects over SASL_SSL (TLS trusting CA_PEM, SASL with MECHANISM: PLAIN, SCRAM-SHA-256 or
// SCRAM-SHA-512), produces 20 keyed records to t-TAG and reads them back identical. Exit 0:
// passed; otherwise a line starting FAIL:.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

func fail(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func mechanism(name, user, password string) sasl.Mechanism {
	switch name {
	case "PLAIN":
		return plain.Auth{User: user, Pass: password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism()
	}
	fail("unknown mechanism %s", name)
	return nil
}

func main() {
	if len(os.Args) != 8 || os.Args[1] != "produce_consume" {
		fail("usage: produce_consume BOOTSTRAP TAG CA_PEM MECHANISM USER PASSWORD")
	}
	bootstrap, tag, caFile, mech, user, password := os.Args[2], os.Args[3], os.Args[4], os.Args[5], os.Args[6], os.Args[7]
	ca, err := os.ReadFile(caFile)
	if err != nil {
		fail("read CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		fail("no CA certificate in %s", caFile)
	}
	topic := "t-" + tag
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.DialTLSConfig(&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}),
		kgo.SASL(mechanism(mech, user, password)),
		kgo.AllowAutoTopicCreation(),
		kgo.RecordDeliveryTimeout(20 * time.Second),
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fail("new client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	var sent []*kgo.Record
	for i := 0; i < 20; i++ {
		sent = append(sent, &kgo.Record{Topic: topic, Partition: 0,
			Key: []byte(fmt.Sprintf("k%d", i)), Value: bytes.Repeat([]byte(fmt.Sprintf("v%d-%s", i, tag)), i+1)})
	}
	if err := cl.ProduceSync(ctx, sent...).FirstErr(); err != nil {
		fail("produce: %v", err)
	}
	cl.Close()
	opts = append(opts, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	cl, err = kgo.NewClient(opts...)
	if err != nil {
		fail("new consumer: %v", err)
	}
	defer cl.Close()
	var got []*kgo.Record
	for len(got) < len(sent) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			fail("read %d of %d records before the deadline", len(got), len(sent))
		}
		for _, e := range fetches.Errors() {
			fail("fetch: %v", e.Err)
		}
		got = append(got, fetches.Records()...)
	}
	for i, r := range sent {
		if !bytes.Equal(got[i].Key, r.Key) || !bytes.Equal(got[i].Value, r.Value) {
			fail("record %d differs", i)
		}
	}
}
