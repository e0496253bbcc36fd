package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/schemas"
)

// listSource is a Source over a list of raw messages held in memory: what the engine
// needs of a mailbox, with none of a protocol. noBody names the messages whose raw copy
// the "server" no longer gives (Raw returns false). Each Ack records, when it is called,
// which messages it was given and how many events the bus stream held at that moment.
type listSource struct {
	js     jetstream.JetStream
	msgs   [][]byte
	noBody map[int]bool
	read   bool

	mu     sync.Mutex
	acks   [][]*engine.Item
	stored []uint64 // events in the bus stream when each Ack ran
	cycled chan struct{}
}

func (s *listSource) Connect(context.Context) error          { return nil }
func (s *listSource) Close() error                           { return nil }
func (s *listSource) Judge(error) engine.Verdict             { return engine.Verdict{} }
func (s *listSource) Poll(context.Context, bool) error       { s.read = false; return nil }
func (s *listSource) Wait(ctx context.Context) (bool, error) { <-ctx.Done(); return false, ctx.Err() }

func (s *listSource) ReadBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	if s.read {
		return nil, nil
	}
	s.read = true
	for i, raw := range s.msgs {
		it := &engine.Item{ID: fmt.Sprintf("c/INBOX/1/%d", i+1), UidValidity: 1, UID: uint32(i + 1)}
		b.Add(it)
		if err := b.Map(ctx, it, bytes.NewReader(raw)); err != nil {
			return nil, err
		}
		if err := b.Publish(ctx, it); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, done int, failed error) error {
		info, err := s.js.Stream(ctx, "MAIL_BUS_0")
		if err != nil {
			return err
		}
		st, err := info.Info(ctx)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.acks = append(s.acks, slices.Clone(b.Items()[:done]))
		s.stored = append(s.stored, st.State.Msgs)
		s.mu.Unlock()
		close(s.cycled)
		return nil
	}, nil
}

func (s *listSource) Raw(_ context.Context, it *engine.Item, put func(io.Reader) error) (bool, error) {
	i := int(it.UID) - 1
	if s.noBody[i] {
		return false, nil
	}
	return true, put(bytes.NewReader(s.msgs[i]))
}

// startBus starts an embedded NATS with mailbus's streams and buckets, and a runtime on it.
func startBus(t *testing.T) (*engine.Runtime, jetstream.JetStream) {
	t.Helper()
	n := testkit.StartStorage(t)
	pubs, err := bus.NewPublishers(n.NC, 0)
	if err != nil {
		t.Fatalf("NewPublishers() = %v", err)
	}
	return &engine.Runtime{
		Names: n.Names, NC: n.NC, JS: n.JS, Storage: n.Storage, Publishers: pubs,
		Status: engine.NewStatusBoard(), MaxInlineBytes: 1 << 20,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}, n.JS
}

func mail(n int) []byte {
	return fmt.Appendf(nil, "From: a@example.org\r\nTo: b@example.com\r\nSubject: test %d\r\nMessage-ID: <m%d@example.org>\r\n\r\nbody %d\r\n", n, n, n)
}

// newEngine is the engine of route r on connection c, reading src.
func newEngine(t *testing.T, rt *engine.Runtime, src engine.Source) *engine.Engine {
	t.Helper()
	r := schemas.Route{Name: "r", Connection: "c"}
	if err := engine.Defaults(&r); err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(rt, r, schemas.Connection{Name: "c"}, engine.Options{Server: "test", Noun: "message"})
	if err != nil {
		t.Fatalf("engine.New() = %v", err)
	}
	e.SetSource(src)
	return e
}

// runOneCycle runs the engine over src until its first Ack, and returns the route's status.
func runOneCycle(t *testing.T, rt *engine.Runtime, src *listSource) schemas.RouteStatus {
	t.Helper()
	e := newEngine(t, rt, src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case <-src.cycled:
	case <-time.After(30 * time.Second):
		t.Fatal("no Ack within 30s")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run() = %v", err)
	}
	st, _ := rt.Status.Get("r")
	return st
}

// TestEngineAckAfterStored: the source's Ack, where it may touch the mailbox, runs only
// once every event it is given is stored in the bus stream, and is given every message,
// in order; the status counts them.
func TestEngineAckAfterStored(t *testing.T) {
	rt, js := startBus(t)
	src := &listSource{js: js, msgs: [][]byte{mail(1), mail(2), mail(3)}, cycled: make(chan struct{})}
	st := runOneCycle(t, rt, src)
	if len(src.acks) != 1 || len(src.acks[0]) != 3 {
		t.Fatalf("Acks %v, want one of 3 messages", src.acks)
	}
	for i, it := range src.acks[0] {
		if it.UID != uint32(i+1) || !it.Acked() {
			t.Errorf("Ack's message %d: UID %d, acked %t", i, it.UID, it.Acked())
		}
	}
	if src.stored[0] != 3 {
		t.Errorf("the stream held %d events when the Ack ran, want 3", src.stored[0])
	}
	if st.Published != 3 || st.DeadLettered != 0 {
		t.Errorf("status %+v, want 3 published", st)
	}
	stream, err := js.Stream(context.Background(), "MAIL_BUS_0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := stream.GetLastMsgForSubject(context.Background(), "mail.bus.0.r")
	if err != nil {
		t.Fatalf("GetLastMsgForSubject() = %v", err)
	}
	if id, ce := m.Header.Get(jetstream.MsgIDHeader), m.Header.Get("ce-id"); id != "r/c/INBOX/1/3" || ce != "c/INBOX/1/3" {
		t.Errorf("last event: Msg-Id %q, ce-id %q; want r/c/INBOX/1/3 and c/INBOX/1/3", id, ce)
	}
	var ev schemas.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Subject != "test 3" || ev.Uid != 3 || ev.Route != "r" {
		t.Errorf("last event %+v (%v), want test 3 of route r, UID 3", ev, err)
	}
}

// TestEngineDeadLetters: a message the mapping rejects goes to the dead letters with the
// raw copy the source fetched again; one whose raw copy the source cannot give goes there
// without, and the Ack is told (NoRaw) so that the mailbox keeps its only copy. Both count
// as done, and do not hold up the message after them.
func TestEngineDeadLetters(t *testing.T) {
	rt, js := startBus(t)
	bad := []byte("this is not a mail message at all\r\nno header here\r\n")
	src := &listSource{js: js, msgs: [][]byte{bad, bad, mail(3)}, noBody: map[int]bool{1: true}, cycled: make(chan struct{})}
	st := runOneCycle(t, rt, src)
	if len(src.acks) != 1 || len(src.acks[0]) != 3 {
		t.Fatalf("Acks %v, want one of 3 messages", src.acks)
	}
	got := src.acks[0]
	if got[0].DeadErr == nil || got[0].NoRaw || got[1].DeadErr == nil || !got[1].NoRaw || got[2].DeadErr != nil {
		t.Errorf("Ack's messages: dead %v/%v/%v, noRaw %t/%t/%t; want the first two dead, only the second without raw copy",
			got[0].DeadErr, got[1].DeadErr, got[2].DeadErr, got[0].NoRaw, got[1].NoRaw, got[2].NoRaw)
	}
	if st.Published != 1 || st.DeadLettered != 2 {
		t.Errorf("status %+v, want 1 published and 2 dead-lettered", st)
	}
	stream, err := js.Stream(context.Background(), "MAIL_DEAD")
	if err != nil {
		t.Fatal(err)
	}
	for uid, wantRaw := range map[uint32]bool{1: true, 2: false} {
		m, err := stream.GetMsg(context.Background(), uint64(uid))
		if err != nil {
			t.Fatalf("dead letter %d: %v", uid, err)
		}
		var d bus.DeadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Uid != uid || (d.RawRef != nil) != wantRaw {
			t.Errorf("dead letter %+v: want UID %d, a raw copy %t", d, uid, wantRaw)
		}
		if d.RawRef != nil {
			raw, err := rt.Storage.Objects.GetBytes(context.Background(), d.RawRef.Object)
			if err != nil || !bytes.Equal(raw, bad) {
				t.Errorf("raw copy %s = %q (%v), want the message", d.RawRef.Object, raw, err)
			}
		}
	}
}

// foreignSource reads the same two messages on every attempt. From the second attempt on,
// it says they may have been published before (as a source whose checkpoint recorded the
// first attempt's publishing does), and it starts that attempt only at second: once the
// foreign event of message 1 has left the duplicate window, that of message 2 not yet.
type foreignSource struct {
	listSource
	attempt int
	second  time.Time
	done    chan []*engine.Item // the messages of the Ack that stored message 1
}

func (s *foreignSource) Poll(ctx context.Context, _ bool) error {
	s.attempt++
	s.read = false
	if s.attempt > 1 {
		if !retry.Sleep(ctx, time.Until(s.second)) {
			return ctx.Err()
		}
	}
	return nil
}

func (s *foreignSource) ReadBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	if s.read {
		return nil, nil
	}
	s.read = true
	for i, raw := range s.msgs {
		it := &engine.Item{ID: fmt.Sprintf("c/INBOX/1/%d", i+1), UidValidity: 1, UID: uint32(i + 1), PublishedBefore: s.attempt > 1}
		b.Add(it)
		if err := b.Map(ctx, it, bytes.NewReader(raw)); err != nil {
			return nil, err
		}
		if err := b.Publish(ctx, it); err != nil {
			return nil, err
		}
	}
	return func(_ context.Context, done int, _ error) error {
		if done > 0 {
			select {
			case s.done <- slices.Clone(b.Items()[:done]):
			default:
			}
		}
		return nil
	}, nil
}

// TestEngineForeignDuplicatesRemembered: when the stream holds events of this route's
// Msg-Ids that the route never published (another deployment, a route made again), every
// such message of the batch is remembered as foreign, not only the first the engine
// stopped at. Otherwise, on the next attempt, a source that recorded the failed attempt as
// "may have been published" (IMAP's PublishedTo) had a message whose foreign event was
// still in the duplicate window counted as its own duplicate, and acted upon: its mail was
// never published.
func TestEngineForeignDuplicatesRemembered(t *testing.T) {
	rt, js := startBus(t)
	ctx := context.Background()
	stream, err := js.Stream(ctx, "MAIL_BUS_0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.Duplicates = time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatalf("UpdateStream() = %v", err)
	}
	// The foreign events: message 1's now, message 2's 700ms later.
	for i, wait := range []time.Duration{0, 700 * time.Millisecond} {
		time.Sleep(wait)
		m := nats.NewMsg("mail.bus.0.r")
		m.Data = []byte(`{"foreign":true}`)
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("r/c/INBOX/1/%d", i+1))
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	src := &foreignSource{
		listSource: listSource{js: js, msgs: [][]byte{mail(1), mail(2)}},
		second:     time.Now().Add(450 * time.Millisecond), // message 1's window over, message 2's not
		done:       make(chan []*engine.Item, 1),
	}
	e := newEngine(t, rt, src)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go e.Run(runCtx)
	var done []*engine.Item
	select {
	case done = <-src.done:
	case <-time.After(30 * time.Second):
		t.Fatal("no Ack with a message done within 30s")
	}
	// Every message handed to the Ack as done has its own event in the stream, not the
	// foreign one of the same Msg-Id.
	ours := map[string]bool{}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			continue
		}
		var ev schemas.Event
		if json.Unmarshal(m.Data, &ev) == nil && ev.Id != "" {
			ours[ev.Id] = true
		}
	}
	for _, it := range done {
		if !ours[it.ID] {
			t.Errorf("message %d handed to the Ack as done, but the stream holds only the foreign event of its Msg-Id", it.UID)
		}
	}
}
