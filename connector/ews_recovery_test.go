//go:build unix

package connector_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

// TestExchangeFaultNATSRestart: a NATS server that stops answering and is killed while
// a batch of 50 events waits for its acknowledgements fails all 50 publishes at once.
// They go out again together once NATS is back, so ingest resumes within seconds;
// published again one by one, each after its own pause, they held the route for 12 s
// and more. At the end every item has exactly one event and is marked read.
func TestExchangeFaultNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	p := connector.StartNATSProcess(t)
	nc, err := nats.Connect(p.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	names := bus.Names{Prefix: "mail"}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := bus.EnsureStorage(ctx, js, names, 1, 10*time.Minute)
	if err != nil {
		t.Fatalf("EnsureStorage() = %v", err)
	}
	pubs, _ := bus.NewPublishers(nc, 0)
	rt := &engine.Runtime{
		Names: names, NC: nc, JS: js, Storage: st, Instance: "test", Status: engine.NewStatusBoard(),
		Publishers: pubs, Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
	}

	f := ewstest.New(t, false)
	const total = 300 // 6 batches
	f.Add(total)
	frozen := make(chan struct{})
	f.OnGetItem = func(n int) {
		if n == 3 { // the third batch is published to a server that no longer answers
			p.Freeze()
			close(frozen)
		}
	}
	connector.RunEWSWorker(t, rt, connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead))
	subject := names.BusSubject(1, "exch_inbox")
	stored := func() int {
		s, err := js.Stream(context.Background(), names.BusStream(1))
		if err != nil {
			return 0
		}
		info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subject))
		if err != nil {
			return 0
		}
		return int(info.State.Subjects[subject])
	}
	select {
	case <-frozen:
	case <-time.After(30 * time.Second):
		t.Fatal("no third GetItem in 30s")
	}
	time.Sleep(500 * time.Millisecond) // the batch is published, nothing answers
	p.Kill()
	p.Start()
	back := time.Now()
	// A correctness bound, not a speed measure: the client reconnects within 50 ms.
	for stored() < 150 {
		if time.Since(back) > 5*time.Second {
			t.Fatalf("%d events 5s after NATS was back, want the third batch's 150: the batch is stuck", stored())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("third batch stored %.1fs after NATS was back", time.Since(back).Seconds())
	connector.EWSWaitFor(t, "every item marked read", func() bool { return f.ReadCount() == total })
	connector.EWSWaitFor(t, "the route idle without error", func() bool {
		s := connector.EWSRouteStatus(rt, "exch_inbox")
		return s.State == schemas.StateIdle && s.LastError == ""
	})
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), total)
}
