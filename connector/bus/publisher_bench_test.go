package bus

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishing to the embedded JetStream with file storage, as mailbus runs it: one event
// per op, stored and acknowledged, with the headers and unique Nats-Msg-Id of a real event
// (so the stream's duplicate tracking is paid as in production).
//
//	sync   one publish waits for its ack before the next (the floor of a naive publisher)
//	async  the bus pipeline (BusPublisher.Publish) with its window of DefaultPublishWindow
//
//	go test -run x -bench Publish -count 10 ./connector | tee new.txt; benchstat old.txt new.txt
func BenchmarkPublish(b *testing.B) {
	for _, size := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("sync/%dKB", size>>10), func(b *testing.B) {
			_, js, _ := startStorage(b)
			ctx := context.Background()
			benchPublish(b, size, func(m *nats.Msg) error {
				_, err := js.PublishMsg(ctx, m)
				return err
			}, func() error { return nil })
		})
		b.Run(fmt.Sprintf("async/%dKB", size>>10), func(b *testing.B) {
			nc, _, _ := startStorage(b)
			pubs, err := NewPublishers(nc, 0)
			if err != nil {
				b.Fatal(err)
			}
			bp := pubs.Bus(0)
			ctx := context.Background()
			benchPublish(b, size, func(m *nats.Msg) error {
				_, err := bp.Publish(ctx, m)
				return err
			}, func() error {
				select {
				case <-bp.js.PublishAsyncComplete():
					return nil
				case <-time.After(time.Minute):
					return fmt.Errorf("%d acks still pending after a minute", bp.js.PublishAsyncPending())
				}
			})
		})
	}
}

// benchPublish publishes b.N events of size bytes with publish, then waits with drain until
// every one is acknowledged.
func benchPublish(b *testing.B, size int, publish func(*nats.Msg) error, drain func() error) {
	data := make([]byte, size)
	for i := range data {
		data[i] = 'a' + byte(i%26)
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		id := "bench/INBOX/1700000000/" + strconv.Itoa(i)
		m := nats.NewMsg("mail.bus.0.bench")
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, id)
		m.Header.Set("Content-Type", "application/json")
		m.Header.Set("ce-specversion", "1.0")
		m.Header.Set("ce-id", id)
		m.Header.Set("ce-type", "mail.received")
		m.Header.Set("ce-source", "imap://bench@127.0.0.1/INBOX")
		m.Header.Set("ce-time", "2026-11-25T19:00:00Z")
		if err := publish(m); err != nil {
			b.Fatal(err)
		}
	}
	if err := drain(); err != nil {
		b.Fatal(err)
	}
}

// startStorage starts the embedded server (file storage in a temp dir) with mailbus's
// streams and buckets, and connects to it.
func startStorage(tb testing.TB) (*nats.Conn, jetstream.JetStream, *Storage) {
	tb.Helper()
	srv, err := StartEmbedded("127.0.0.1:-1", tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		nc.Close()
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := EnsureStorage(ctx, js, Names{Prefix: "mail"}, 1, 10*time.Minute)
	if err != nil {
		tb.Fatal(err)
	}
	return nc, js, st
}
