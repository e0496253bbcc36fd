package connector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Publishing defaults: how many events one bus may have in flight (published, not yet
// acknowledged) and how long an acknowledgement may take before the publish counts as
// failed and is retried.
const (
	DefaultPublishWindow = 256
	publishAckTimeout    = 30 * time.Second
	// stallWait is how long one attempt waits for a free slot in a full window; the
	// publisher retries until its ctx ends, so it only bounds how often ctx is looked at.
	stallWait = 250 * time.Millisecond
)

// Publishers are the data buses' publishing pipelines on this replica: one per bus, shared
// by every route of that bus. Each pipeline is its own JetStream context with its own async
// window, so a route that fills its bus's window (a slow stream, huge mail) makes the
// routes of that bus wait, never those of another bus.
//
// The pipelines share the process's NATS connection rather than opening one each: the
// window, not the socket, is where a bus would hold another up (a NATS connection writes
// from a buffer that is flushed continuously), and one connection keeps one set of
// credentials, TLS and permissions to set up and watch.
type Publishers struct {
	buses [Buses]*busPublisher
}

// NewPublishers makes the pipelines of every bus on nc. window is the number of events a
// bus may have in flight; 0 means DefaultPublishWindow.
func NewPublishers(nc *nats.Conn, window int) (*Publishers, error) {
	if window <= 0 {
		window = DefaultPublishWindow
	}
	var p Publishers
	for bus := range Buses {
		js, err := jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(window),
			jetstream.WithPublishAsyncTimeout(publishAckTimeout))
		if err != nil {
			return nil, fmt.Errorf("publisher of bus %d: %w", bus, err)
		}
		p.buses[bus] = &busPublisher{js: js}
	}
	return &p, nil
}

// bus returns the pipeline of a bus, nil for a bus out of range.
func (p *Publishers) bus(n int) *busPublisher {
	if p == nil || n < 0 || n >= Buses {
		return nil
	}
	return p.buses[n]
}

// busPublisher publishes on one bus.
type busPublisher struct {
	js jetstream.JetStream
}

// publish sends msg without waiting for its acknowledgement, waiting only (as long as ctx
// allows) while the bus has its whole window in flight. msg must carry its Nats-Msg-Id, so
// that publishing it again after a failure is deduplicated by the stream.
func (b *busPublisher) publish(ctx context.Context, msg *nats.Msg) (jetstream.PubAckFuture, error) {
	for {
		f, err := b.js.PublishMsgAsync(msg, jetstream.WithStallWait(stallWait))
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			if err != nil {
				return nil, fmt.Errorf("publish %s: %w", msg.Subject, err)
			}
			return f, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}
