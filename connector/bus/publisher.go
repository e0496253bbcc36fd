package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/metrics"
)

// Publishing defaults: how many events one bus may have in flight (published, not yet
// acknowledged) and how long an acknowledgement may take before the publish counts as
// failed and is retried. The timeout is also how long a route stalls when the stream lost
// its leader (a NATS node went down) and the publishes in flight were never answered; a
// retry is safe, the stream drops it as a duplicate, so it is kept short.
const (
	DefaultPublishWindow = 256
	publishAckTimeout    = 10 * time.Second
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
	buses [Buses]*BusPublisher
}

// NewPublishers makes the pipelines of every bus on nc. window is the number of events a
// bus may have in flight; 0 means DefaultPublishWindow.
func NewPublishers(nc *nats.Conn, window int) (*Publishers, error) {
	if window <= 0 {
		window = DefaultPublishWindow
	}
	var p Publishers
	for bus := range Buses {
		b := &BusPublisher{bus: bus}
		js, err := jetstream.New(nc,
			jetstream.WithPublishAsyncMaxPending(window),
			jetstream.WithPublishAsyncTimeout(publishAckTimeout),
			jetstream.WithPublishAsyncAckHandler(b.acked),
			jetstream.WithPublishAsyncErrHandler(b.failed))
		if err != nil {
			return nil, fmt.Errorf("publisher of bus %d: %w", bus, err)
		}
		b.js = js
		p.buses[bus] = b
	}
	return &p, nil
}

// Measure makes the pipelines count into m: publish latency and stored bytes. Call it
// before the first publish.
func (p *Publishers) Measure(m *metrics.Metrics) {
	for _, b := range p.buses {
		b.mu.Lock()
		b.metrics, b.sent = m, make(map[*nats.Msg]time.Time)
		b.mu.Unlock()
	}
}

// Bus returns the pipeline of a bus, nil for a bus out of range.
func (p *Publishers) Bus(n int) *BusPublisher {
	if p == nil || n < 0 || n >= Buses {
		return nil
	}
	return p.buses[n]
}

// BusPublisher publishes on one bus.
type BusPublisher struct {
	js  jetstream.JetStream
	bus int

	// With metrics, sent holds when each message in flight was published: the
	// acknowledgement handler gets the message, not its future.
	mu      sync.Mutex
	metrics *metrics.Metrics
	sent    map[*nats.Msg]time.Time
}

// track records that msg is being published now, if publishes are measured.
func (b *BusPublisher) track(msg *nats.Msg) {
	b.mu.Lock()
	if b.sent != nil {
		b.sent[msg] = time.Now()
	}
	b.mu.Unlock()
}

// untrack forgets msg and tells when it was published, and where to count it.
func (b *BusPublisher) untrack(msg *nats.Msg) (time.Time, *metrics.Metrics, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	at, ok := b.sent[msg]
	delete(b.sent, msg)
	return at, b.metrics, ok
}

// acked is the JetStream acknowledgement handler: it runs on the client's ack goroutine
// and must not block.
func (b *BusPublisher) acked(_ jetstream.JetStream, msg *nats.Msg, ack *jetstream.PubAck) {
	if at, m, ok := b.untrack(msg); ok {
		m.Stored(b.bus, msg, ack, time.Since(at))
	}
}

// failed is the handler of a failed publish (refused, timed out, lost in a reconnect).
// The worker publishes the message again; should it do so before this runs, that
// attempt goes unmeasured, which is rare enough not to matter.
func (b *BusPublisher) failed(_ jetstream.JetStream, msg *nats.Msg, _ error) {
	b.untrack(msg)
}

// Publish sends msg without waiting for its acknowledgement, waiting only (as long as ctx
// allows) while the bus has its whole window in flight. msg must carry its Nats-Msg-Id, so
// that publishing it again after a failure is deduplicated by the stream.
func (b *BusPublisher) Publish(ctx context.Context, msg *nats.Msg) (jetstream.PubAckFuture, error) {
	for {
		// Tracked before the publish: its acknowledgement may come before it returns.
		b.track(msg)
		f, err := b.js.PublishMsgAsync(msg, jetstream.WithStallWait(stallWait))
		if err == nil {
			return f, nil
		}
		b.untrack(msg) // not sent
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return nil, fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}
