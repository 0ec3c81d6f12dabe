// Package common holds what the Go scenario programs share: the command-line contract, the
// cross-client message format and the size limits (the same as tests/clients/python/common.py).
package common

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"
)

// Unsupported is the exit code of a scenario the client lacks.
const Unsupported = 2

const (
	XCCount         = 20
	XCBlock         = 4
	MaxMessageBytes = 65536
	UnderValueBytes = MaxMessageBytes - 512
	OverValueBytes  = MaxMessageBytes + 512
)

// Codecs in the order of the cross-client blocks.
var Codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

type Header struct {
	Key   string
	Value []byte
}

type Msg struct {
	Key     []byte // nil: a null key
	Value   []byte
	Headers []Header
}

// XCMessage is message i of the cross-client topic written by tag.
func XCMessage(tag string, i int) Msg {
	var key []byte
	if i%5 != 4 {
		key = []byte(fmt.Sprintf("key-%d", i))
	}
	v := []byte(fmt.Sprintf("%s:%d:", tag, i))
	v = append(v, []byte("é€😀")...)
	v = append(v, byte(i), 0, 255)
	v = append(v, bytes.Repeat([]byte("x"), i*7)...)
	h := []Header{{"h-index", []byte(fmt.Sprint(i))}, {"h-bin", []byte{0, byte(i), 255}}}
	if i%3 == 0 {
		h = append(h, Header{"h-empty", []byte{}})
	}
	return Msg{key, v, h}
}

// KVMessages are the produce_consume messages: null keys every 3rd, headers every 2nd.
func KVMessages(n int) []Msg {
	out := make([]Msg, 0, n)
	for i := 0; i < n; i++ {
		var key []byte
		if i%3 != 2 {
			key = []byte(fmt.Sprintf("k%d", i))
		}
		var h []Header
		if i%2 == 0 {
			h = []Header{{"hk", []byte(fmt.Sprintf("hv%d", i))}, {"hk2", []byte{0, 1}}}
		}
		out = append(out, Msg{key, []byte(fmt.Sprintf("value-%d", i)), h})
	}
	return out
}

func same(a, b Msg) bool {
	if (a.Key == nil) != (b.Key == nil) || !bytes.Equal(a.Key, b.Key) || !bytes.Equal(a.Value, b.Value) {
		return false
	}
	if len(a.Headers) != len(b.Headers) {
		return false
	}
	for i := range a.Headers {
		if a.Headers[i].Key != b.Headers[i].Key || !bytes.Equal(a.Headers[i].Value, b.Headers[i].Value) {
			return false
		}
	}
	return true
}

func show(m Msg) string {
	k := "null"
	if m.Key != nil {
		k = string(m.Key)
	}
	var hs []string
	for _, h := range m.Headers {
		hs = append(hs, fmt.Sprintf("%s=%v", h.Key, h.Value))
	}
	return fmt.Sprintf("%s/%dB [%s]", k, len(m.Value), strings.Join(hs, " "))
}

// Check fails unless got equals want message by message.
func Check(what string, want, got []Msg) {
	if len(want) != len(got) {
		Fail("%s: consumed %d messages, expected %d", what, len(got), len(want))
	}
	for i := range want {
		if !same(want[i], got[i]) {
			Fail("%s #%d: got %s, expected %s", what, i, show(got[i]), show(want[i]))
		}
	}
}

// XCWant is the whole cross-client topic written by tag.
func XCWant(tag string) []Msg {
	out := make([]Msg, XCCount)
	for i := range out {
		out[i] = XCMessage(tag, i)
	}
	return out
}

func Fail(format string, args ...any) {
	fmt.Printf("FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func Check2(err error, what string) {
	if err != nil {
		Fail("%s: %v", what, err)
	}
}

// Until calls fn until it returns true or d passes.
func Until(d time.Duration, what string, fn func() bool) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if fn() {
			return
		}
	}
	Fail("timed out waiting for %s", what)
}

// Main dispatches os.Args to the scenarios.
func Main(version string, scenarios map[string]func(bootstrap, tag string, args []string)) {
	if len(os.Args) >= 2 && os.Args[1] == "version" {
		fmt.Println(version)
		return
	}
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: PROGRAM SCENARIO BOOTSTRAP TAG [ARGS...]")
		os.Exit(64)
	}
	fn, ok := scenarios[os.Args[1]]
	if !ok {
		fmt.Printf("no scenario %s for this client\n", os.Args[1])
		os.Exit(Unsupported)
	}
	fn(os.Args[2], os.Args[3], os.Args[4:])
	fmt.Println("ok")
}
