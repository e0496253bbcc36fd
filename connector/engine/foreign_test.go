package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
)

// repointedSource is a mailbox whose UIDs match events another server's mail left in the
// stream (a connection pointed at another server). Its first cycle lists UIDs 1 to 3 as
// never published; the later ones list UIDs 2 and 3 as the IMAP source does after a failed
// batch: PublishedBefore, since the checkpoint's PublishedTo was raised before that batch
// was published.
type repointedSource struct {
	// failRead: the first cycle's read fails after publishing (a connection cut in the
	// middle of the FETCH), so no Ack comes; the later ones list UIDs 1 to 3 again, all
	// PublishedBefore.
	failRead bool
	mu       sync.Mutex
	cycles   int
	read     bool
	acked    []uint32
}

func (s *repointedSource) Connect(context.Context) error { return nil }
func (s *repointedSource) Close() error                  { return nil }
func (s *repointedSource) Judge(error) engine.Verdict    { return engine.Verdict{} }
func (s *repointedSource) Wait(ctx context.Context) (bool, error) {
	<-ctx.Done()
	return false, ctx.Err()
}

func (s *repointedSource) Poll(context.Context, bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cycles++
	s.read = false
	return nil
}

func (s *repointedSource) ReadBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	s.mu.Lock()
	first, read := s.cycles == 1, s.read
	s.read = true
	s.mu.Unlock()
	if read {
		return nil, nil
	}
	uids := []uint32{2, 3}
	if first || s.failRead {
		uids = []uint32{1, 2, 3}
	}
	for _, uid := range uids {
		it := &engine.Item{ID: fmt.Sprintf("c/INBOX/1/%d", uid), UidValidity: 1, UID: uid, PublishedBefore: !first}
		b.Add(it)
		if err := b.Map(ctx, it, bytes.NewReader(mail(int(uid)))); err != nil {
			return nil, err
		}
		if err := b.Publish(ctx, it); err != nil {
			return nil, err
		}
	}
	if first && s.failRead {
		return nil, errors.New("read: connection reset by peer")
	}
	return func(_ context.Context, done int, _ error) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, it := range b.Items()[:done] {
			s.acked = append(s.acked, it.UID)
		}
		return nil
	}, nil
}

func (s *repointedSource) Raw(context.Context, *engine.Item, func(io.Reader) error) (bool, error) {
	return false, nil
}

func (s *repointedSource) state() (cycles int, acked []uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cycles, append([]uint32(nil), s.acked...)
}

// TestEngineForeignAfterFailedBatch is TestEngineForeignDuplicatesRemembered without
// timing: the foreign events stay in the duplicate window, and the later tries list only
// the messages after the first, as PublishedBefore. When a batch stops at an event of
// another's Msg-Id, the duplicates acknowledged after it are foreign too, and stay so on
// the next try. Taking them for this route's own lost the mail: the route acted on it and
// moved its checkpoint past it, and its events were never stored
// (TestIMAPRepointedConnection failed so under load).
func TestEngineForeignAfterFailedBatch(t *testing.T) {
	testForeignAfterFailure(t, &repointedSource{})
}

// TestEngineForeignAfterFailedRead: the same when the batch fails in the middle of the
// read, before its acknowledgements are awaited: the acknowledgements counted on the way
// out (tallyStored) that are duplicates of another's events stay foreign on the next try,
// where the source lists them as PublishedBefore.
func TestEngineForeignAfterFailedRead(t *testing.T) {
	testForeignAfterFailure(t, &repointedSource{failRead: true})
}

func testForeignAfterFailure(t *testing.T, src *repointedSource) {
	rt, js := startBus(t)
	ctx := context.Background()
	for uid := 1; uid <= 3; uid++ {
		m := nats.NewMsg("mail.bus.0.r")
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("r/c/INBOX/1/%d", uid))
		m.Data = []byte(`{"from":"the other server"}`)
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatalf("publish the other server's event %d: %v", uid, err)
		}
	}
	e := newEngine(t, rt, src)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(runCtx) }()
	// The third cycle begins once the second (UIDs 2 and 3, PublishedBefore) has ended.
	if !testkit.WaitFor(30*time.Second, func() bool { c, a := src.state(); return c >= 3 || len(a) > 0 }) {
		t.Fatal("the engine did not try the mailbox again")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	if _, acked := src.state(); len(acked) > 0 {
		t.Fatalf("Ack given UIDs %v as done; their events are the other server's, none of this mailbox's is stored", acked)
	}
}
