package retry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/retry"
)

// TestPermanent: the mark survives wrapping, keeps the cause reachable and its words, and
// nil stays nil.
func TestPermanent(t *testing.T) {
	if err := retry.Permanent(nil); err != nil {
		t.Fatalf("Permanent(nil) = %v, want nil", err)
	}
	cause := errors.New("bad credentials")
	err := fmt.Errorf("login: %w", retry.Permanent(cause))
	if !retry.Marked(err) || !errors.Is(err, cause) || err.Error() != "login: bad credentials" {
		t.Fatalf("Marked(%v) = %v, Is(cause) = %v", err, retry.Marked(err), errors.Is(err, cause))
	}
	if retry.Marked(cause) || retry.Marked(nil) {
		t.Fatal("an unmarked error is marked")
	}
}

// TestSleep: Sleep reports whether the whole time passed, and ends with the context.
func TestSleep(t *testing.T) {
	if !retry.Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep(1ms) = false, want true")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if retry.Sleep(ctx, time.Hour) {
		t.Fatal("Sleep(cancelled, 1h) = true, want false")
	}
}

// TestBackoff: each wait is between half and all of 500ms doubled per attempt, capped at
// two minutes however many attempts failed.
func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempt int
		full    time.Duration
	}{{0, 500 * time.Millisecond}, {1, time.Second}, {3, 4 * time.Second}, {8, 2 * time.Minute}, {19, 2 * time.Minute}, {64, 2 * time.Minute}} {
		for range 50 {
			if d := retry.Backoff(tc.attempt); d < tc.full/2 || d > tc.full {
				t.Fatalf("Backoff(%d) = %s, want %s..%s", tc.attempt, d, tc.full/2, tc.full)
			}
		}
	}
}
