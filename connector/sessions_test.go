//go:build unix

package connector_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// TestRoutesWithinOpenFiles: more routes than the process may open files. The routes
// over the budget wait in backoff, their status naming the limit, while the others reach
// IDLE and NATS with its store keeps working: a definition is written, new mail becomes
// its event. Without the budget the sessions took every file: the store could not open
// its own, checkpoint and lease writes timed out, and every route stopped.
func TestRoutesWithinOpenFiles(t *testing.T) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	// The IMAP server, a child process, keeps the limit it started with.
	n := len(fds) + 600
	srv := startMemIMAPUsers(t, n)

	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	if old.Cur < uint64(2*n) {
		t.Skipf("the open files limit %d is too low to lower", old.Cur)
	}
	// As many routes as files: were they all connected, nothing else could open one.
	lim := old
	lim.Cur = uint64(n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })

	nc, stop := startScaleConnector(t)
	defer stop()
	defs := srv.definitions(n)
	cl := client.New(nc, "mail")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := cl.Apply(ctx, defs, client.ApplyOptions{}); err != nil {
		t.Fatalf("Apply() = %v", err)
	}

	// Settled: every route idle, or waiting for a slot.
	var idle []string
	for {
		all, err := cl.Statuses(ctx)
		if err != nil {
			t.Fatalf("Statuses() = %v", err)
		}
		idle = idle[:0]
		waiting, other := 0, map[string]int{}
		for _, st := range all {
			switch {
			case st.State == schemas.StateIdle:
				idle = append(idle, st.Route)
			case st.State == schemas.StateBackoff && strings.Contains(st.LastError, engine.ErrNoSessionSlot.Error()):
				waiting++
			default:
				other[st.State+": "+st.LastError]++
			}
		}
		if len(all) == n && len(other) == 0 && len(idle) > 0 && waiting > 0 {
			t.Logf("%d routes under a limit of %d open files: %d idle, %d waiting for a slot", n, n, len(idle), waiting)
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d routes: %d idle, %d waiting for a slot, others: %v", len(all), len(idle), waiting, other)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// NATS and its store still work.
	if _, err := cl.Do(ctx, "connection", "put", schemas.Connection{Name: "late", Type: "imap", Host: defs.Connections[0].Host, Port: defs.Connections[0].Port, Encryption: "none", Auth: "none"}, 0); err != nil {
		t.Fatalf("connection.put = %v", err)
	}
	route := idle[len(idle)/2]
	i, _ := strconv.Atoi(strings.TrimPrefix(route, "r"))
	sub, err := nc.SubscribeSync(busNames.BusSubject(0, route))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := srv.Append(i); err != nil {
		t.Fatalf("Append() = %v", err)
	}
	msg, err := sub.NextMsg(30 * time.Second)
	if err != nil {
		t.Fatalf("no event from idle route %s: %v", route, err)
	}
	var ev schemas.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil || ev.Route != route {
		t.Fatalf("event = %+v (%v)", ev, err)
	}
}
