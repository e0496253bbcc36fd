package connector

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

// TestExchangeWorkerWaitsForSessionSlot: an Exchange route finding no session slot waits
// in backoff, its status saying why, and runs once a slot is free.
func TestExchangeWorkerWaitsForSessionSlot(t *testing.T) {
	rt := EWSRuntime(t)
	rt.Sessions = engine.NewSessionSlots(engine.SessionReserveMin + 1) // one slot
	hold, err := rt.Sessions.Take()
	if err != nil {
		t.Fatal(err)
	}
	f := ewstest.New(t, false)
	f.Add(2)
	RunEWSWorker(t, rt, EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead))
	EWSWaitFor(t, "the route waiting for a slot", func() bool {
		st := EWSRouteStatus(rt, "exch_inbox")
		return st.State == schemas.StateBackoff && strings.Contains(st.LastError, engine.ErrNoSessionSlot.Error())
	})
	if n := f.ReadCount(); n != 0 {
		t.Fatalf("%d messages marked read without a session slot", n)
	}
	hold()
	EWSWaitFor(t, "both messages marked read", func() bool { return f.ReadCount() == 2 })
	EWSWaitFor(t, "the route idle", func() bool { return EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	if _, err := rt.Sessions.Take(); !errors.Is(err, engine.ErrNoSessionSlot) {
		t.Errorf("take() while the route runs = %v, want the slot held by it", err)
	}
}
