// Command rawpipe is the second floor of the side-by-side benchmark (bench/run.sh): the
// least a connector must do to move a mailbox into JetStream. One
// `UID FETCH 1:* BODY.PEEK[]`, every raw message published unparsed and asynchronously to a
// JetStream file stream, then every acknowledgement awaited. No parsing, no mapping, no
// flags, no checkpoint. A message larger than the server's maximum payload goes as
// successive chunks of that size (the corpora's largest fit in one).
//
//	rawpipe -addr 127.0.0.1:10143 -encryption none -user alice -pass secret -nats nats://127.0.0.1:4222
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/bench/internal/benchimap"
)

func main() {
	mail := benchimap.AddFlags()
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "NATS server with JetStream")
	stream := flag.String("stream", "RAWPIPE", "stream to create (file storage) and fill; subjects STREAM.>")
	window := flag.Int("window", 256, "publishes in flight at most (mailbus's bus pipeline holds 256)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("rawpipe: ")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	nc, err := nats.Connect(*natsURL, nats.Name("rawpipe"))
	if err != nil {
		log.Fatalf("nats: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(*window))
	if err != nil {
		log.Fatal(err)
	}
	subject := *stream + ".inbox"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     *stream,
		Subjects: []string{*stream + ".>"},
		Storage:  jetstream.FileStorage,
	}); err != nil {
		log.Fatalf("stream %s: %v", *stream, err)
	}

	start := time.Now()
	c, err := mail.Open()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	n, size, pubs, err := pipeAll(ctx, c, js, subject, int(nc.MaxPayload()))
	if err != nil {
		log.Fatal(err)
	}
	elapsed := time.Since(start)
	if err := c.Logout().Wait(); err != nil {
		log.Fatalf("logout: %v", err)
	}
	info, err := js.Stream(ctx, *stream)
	if err != nil {
		log.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != uint64(pubs) {
		log.Fatalf("stream holds %d messages, published %d", got, pubs)
	}
	fmt.Printf("rawpipe: %d messages (%d publishes), %.1f MB in %.3fs\n", n, pubs, float64(size)/1e6, elapsed.Seconds())
}

// pipeAll reads every message's body and publishes it asynchronously (the buffer is the
// message's own: the future keeps it until the ack), then waits for every ack.
func pipeAll(ctx context.Context, c *imapclient.Client, js jetstream.JetStream, subject string, maxPayload int) (n int, size int64, pubs int, err error) {
	cmd := benchimap.FetchAll(c)
	// Acks are checked as they come, so that an acknowledged message is let go of.
	futures := make(chan jetstream.PubAckFuture, 4096)
	acked := make(chan error, 1)
	go func() {
		var first error
		for f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				if first == nil {
					first = err
				}
			}
		}
		acked <- first
	}()
	defer func() {
		if futures != nil {
			close(futures)
		}
	}()
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			body, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || body.Literal == nil {
				continue
			}
			raw := make([]byte, body.Literal.Size())
			if _, err := io.ReadFull(body.Literal, raw); err != nil {
				return n, size, pubs, fmt.Errorf("read message: %w", err)
			}
			for off := 0; off == 0 || off < len(raw); off += maxPayload {
				// A full window waits for room (as mailbus's publisher does), not 200 ms.
				f, err := js.PublishAsync(subject, raw[off:min(off+maxPayload, len(raw))], jetstream.WithStallWait(time.Minute))
				if err != nil {
					return n, size, pubs, fmt.Errorf("publish: %w", err)
				}
				futures <- f
				pubs++
			}
			size += int64(len(raw))
			n++
		}
	}
	if err := cmd.Close(); err != nil {
		return n, size, pubs, fmt.Errorf("fetch: %w", err)
	}
	if n == 0 {
		return 0, 0, 0, errors.New("fetch: the mailbox is empty")
	}
	close(futures)
	futures = nil
	select {
	case err := <-acked:
		if err != nil {
			return n, size, pubs, fmt.Errorf("publish: %w", err)
		}
	case <-ctx.Done():
		return n, size, pubs, fmt.Errorf("acks: %w", ctx.Err())
	}
	return n, size, pubs, nil
}
