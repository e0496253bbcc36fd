package connector

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

// TestSessionSlots: the budget is the open files limit less the reserve; a take over it
// is refused with an error naming the limit, and a release frees the slot once.
func TestSessionSlots(t *testing.T) {
	s := newSessionSlots(sessionReserveMin + 2)
	r1, err := s.take()
	if err != nil {
		t.Fatalf("take() 1 = %v", err)
	}
	if _, err := s.take(); err != nil {
		t.Fatalf("take() 2 = %v", err)
	}
	_, err = s.take()
	if !errors.Is(err, ErrNoSessionSlot) || !strings.Contains(err.Error(), "may open 258 files (ulimit -n)") || IsPermanent(err) {
		t.Fatalf("take() over the budget = %v", err)
	}
	r1()
	r1() // a second release frees nothing more
	if _, err := s.take(); err != nil {
		t.Fatalf("take() after a release = %v", err)
	}
	if _, err := s.take(); err == nil {
		t.Fatal("take() over the budget after a double release succeeded")
	}
	if big := newSessionSlots(100000); big.budget != 90000 {
		t.Errorf("budget of 100,000 files = %d, want 90,000 (a tenth kept)", big.budget)
	}
	var none *sessionSlots
	if _, err := none.take(); err != nil {
		t.Errorf("take() without a budget = %v", err)
	}
}

// TestExchangeWorkerWaitsForSessionSlot: an Exchange route finding no session slot waits
// in backoff, its status saying why, and runs once a slot is free.
func TestExchangeWorkerWaitsForSessionSlot(t *testing.T) {
	rt := EWSRuntime(t)
	rt.sessions = newSessionSlots(sessionReserveMin + 1) // one slot
	hold, err := rt.sessions.take()
	if err != nil {
		t.Fatal(err)
	}
	f := ewstest.New(t, false)
	f.Add(2)
	RunEWSWorker(t, rt, EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead))
	EWSWaitFor(t, "the route waiting for a slot", func() bool {
		st := EWSRouteStatus(rt, "exch_inbox")
		return st.State == schemas.StateBackoff && strings.Contains(st.LastError, ErrNoSessionSlot.Error())
	})
	if n := f.ReadCount(); n != 0 {
		t.Fatalf("%d messages marked read without a session slot", n)
	}
	hold()
	EWSWaitFor(t, "both messages marked read", func() bool { return f.ReadCount() == 2 })
	EWSWaitFor(t, "the route idle", func() bool { return EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	if _, err := rt.sessions.take(); !errors.Is(err, ErrNoSessionSlot) {
		t.Errorf("take() while the route runs = %v, want the slot held by it", err)
	}
}
