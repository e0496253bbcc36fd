package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/retry"
)

// TestSessionSlots: the budget is the open files limit less the reserve; a take over it
// is refused with an error naming the limit, and a release frees the slot once.
func TestSessionSlots(t *testing.T) {
	s := NewSessionSlots(SessionReserveMin + 2)
	r1, err := s.Take()
	if err != nil {
		t.Fatalf("take() 1 = %v", err)
	}
	if _, err := s.Take(); err != nil {
		t.Fatalf("take() 2 = %v", err)
	}
	_, err = s.Take()
	if !errors.Is(err, ErrNoSessionSlot) || !strings.Contains(err.Error(), "may open 258 files (ulimit -n)") || retry.Marked(err) {
		t.Fatalf("take() over the budget = %v", err)
	}
	r1()
	r1() // a second release frees nothing more
	if _, err := s.Take(); err != nil {
		t.Fatalf("take() after a release = %v", err)
	}
	if _, err := s.Take(); err == nil {
		t.Fatal("take() over the budget after a double release succeeded")
	}
	if big := NewSessionSlots(100000); big.budget != 90000 {
		t.Errorf("budget of 100,000 files = %d, want 90,000 (a tenth kept)", big.budget)
	}
	var none *SessionSlots
	if _, err := none.Take(); err != nil {
		t.Errorf("take() without a budget = %v", err)
	}
}
