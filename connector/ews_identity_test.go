package connector_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// Issue 21, part B, for exchange routes: identity, what a route takes, the state bound to
// its source. (The publish journal: TestExchangeWorkerCrashBeforeMarkRead.)

func ewsSubjects(evs []schemas.Event) []string {
	var out []string
	for _, ev := range evs {
		out = append(out, ev.Subject)
	}
	return out
}

// TestExchangeSharedFolder (path 2): two routes on one folder and one bus both get every
// item. They used the same Nats-Msg-Id, and the stream dropped the second route's events.
func TestExchangeSharedFolder(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(3)
	a := connector.EWSSpec(f, "", schemas.AfterNone)
	a.Connection.Auth = schemas.AuthNone
	b := a
	b.Route.Name = "exch_other"
	connector.RunEWSWorker(t, rt, a)
	connector.RunEWSWorker(t, rt, b)
	for _, r := range []string{a.Route.Name, b.Route.Name} {
		connector.EWSWaitFor(t, "the route idle after its 3 events", func() bool {
			st := connector.EWSRouteStatus(rt, r)
			return st.State == schemas.StateIdle && st.Published == 3
		})
		if evs := connector.EWSEvents(t, rt, r, 1); len(evs) != 3 {
			t.Errorf("route %s: %d events, want 3", r, len(evs))
		}
	}
}

// TestExchangeSelectAndBacklog (path 5): under the default select (all), an item read in
// another client before the route saw it is published; backlog decides what of the items
// already in the folder at the first start is.
func TestExchangeSelectAndBacklog(t *testing.T) {
	for _, tc := range []struct {
		backlog string
		want    []string
	}{
		{"", []string{"message 2", "message 3", "message 4"}},
		{schemas.BacklogAll, []string{"message 1", "message 2", "message 3", "message 4"}},
		{schemas.BacklogNone, []string{"message 4"}},
	} {
		t.Run("backlog "+tc.backlog, func(t *testing.T) {
			rt := connector.EWSRuntime(t)
			f := ewstest.New(t, false)
			f.Add(3)
			f.Items[0].Read = true
			spec := connector.EWSSpec(f, "", schemas.AfterMarkRead)
			spec.Connection.Auth = schemas.AuthNone
			spec.Route.Backlog = tc.backlog
			connector.RunEWSWorker(t, rt, spec)
			connector.EWSWaitFor(t, "the first cycle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
			f.Lock()
			f.AddLocked(1)
			f.Items[3].Read = true // opened elsewhere before the route saw it
			f.Unlock()
			connector.EWSWaitFor(t, "its event", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == len(tc.want) })
			connector.EWSWaitFor(t, "the route idle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
			if got := ewsSubjects(connector.EWSEvents(t, rt, "exch_inbox", 1)); !slices.Equal(got, tc.want) {
				t.Errorf("events %q, want %q", got, tc.want)
			}
		})
	}
}

// TestExchangeSkippedSeen (path 5): select unseen passes over the items already read when
// they arrive, counts them once each, and publishes the others.
func TestExchangeSkippedSeen(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterNone)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "the first cycle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	f.Lock()
	f.AddLocked(3)
	f.Items[0].Read = true
	f.Items[2].Read = true
	n := len(f.SyncStates)
	f.Unlock()
	connector.EWSWaitFor(t, "its event", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == 1 })
	// A few more polls: the skipped are not counted again.
	connector.EWSWaitFor(t, "more polls", func() bool {
		f.Lock()
		defer f.Unlock()
		return len(f.SyncStates) > n+3
	})
	st := connector.EWSRouteStatus(rt, "exch_inbox")
	if st.SkippedSeen != 2 || st.Published != 1 {
		t.Errorf("status %+v: want skippedSeen 2, published 1", st)
	}
	if got := ewsSubjects(connector.EWSEvents(t, rt, "exch_inbox", 1)); !slices.Equal(got, []string{"message 2"}) {
		t.Errorf("events %q, want message 2", got)
	}
}

// TestExchangeRepointedFolder (path 4): the SyncState of a route is bound to its folder. A
// route pointed at another folder syncs that one from the start (its backlog), and says
// why; before, it went on from the old folder's SyncState, skipping what the new folder
// held.
func TestExchangeRepointedFolder(t *testing.T) {
	rt := connector.EWSRuntime(t)
	var log testkit.LogBuffer
	rt.Logger = slog.New(slog.NewTextHandler(&log, nil))
	f := ewstest.New(t, false)
	f.Add(1)
	f.Items[0].Folder = f.Folders["Archive"]
	f.Add(2)
	spec := connector.EWSSpec(f, "", schemas.AfterNone)
	spec.Connection.Auth = schemas.AuthNone
	stop := connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "the inbox's 2 events", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == 2 })
	connector.EWSWaitFor(t, "the route idle", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })
	stop()

	spec.Route.Mailbox = "Archive"
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "the archive's event", func() bool { return len(connector.EWSEvents(t, rt, "exch_inbox", 1)) == 3 })
	evs := connector.EWSEvents(t, rt, "exch_inbox", 1)
	if evs[2].Subject != "message 1" || evs[2].Mailbox != "Archive" {
		t.Errorf("third event %q in %q, want message 1 in Archive", evs[2].Subject, evs[2].Mailbox)
	}
	if !strings.Contains(log.String(), `checkpoint reset: the route's source changed (mailbox \"INBOX\" -> \"Archive\")`) {
		t.Errorf("the log does not say the checkpoint was reset:\n%s", log.String())
	}
}
