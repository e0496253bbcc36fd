package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// After-actions that cannot destroy mail, on the Exchange source (docs/after-actions.md).

func ewsDeadLetters(t *testing.T, rt *engine.Runtime, route string) []bus.DeadLetter {
	t.Helper()
	var out []bus.DeadLetter
	for _, m := range connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject(route)) {
		var d bus.DeadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatalf("dead letter %s: %v", m.Data, err)
		}
		out = append(out, d)
	}
	return out
}

// TestExchangeMoveToMissingFolder: a route whose moveTo does not exist is parked in state
// error naming the folder before it publishes anything; the items stay in the inbox.
func TestExchangeMoveToMissingFolder(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	f.Add(3)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMove)
	spec.Connection.Auth, spec.Route.MoveTo = schemas.AuthNone, "Processed"
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "state error", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateError })
	if st := connector.EWSRouteStatus(rt, "exch_inbox"); !strings.Contains(st.LastError, `"Processed"`) || st.Published != 0 {
		t.Errorf("status %+v, want lastError naming the folder and nothing published", st)
	}
	if evs := connector.EWSEvents(t, rt, "exch_inbox", 1); len(evs) != 0 {
		t.Errorf("%d events, want 0", len(evs))
	}
	if n := f.FolderCount("inbox"); n != 3 {
		t.Errorf("inbox holds %d items, want 3", n)
	}
	if f.CountOps("GetItem") != 0 {
		t.Errorf("the items were read (GetItem) before the folder was checked")
	}
}

// TestExchangeNoMIMELeftAlone: an item the server returns without MIME content becomes a
// dead letter without a raw copy, and after delete leaves it in the inbox (it used to be
// deleted); the others are deleted as usual.
func TestExchangeNoMIMELeftAlone(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	ids := f.Add(3)
	f.NoMIME[ids[1]] = true
	spec := connector.EWSSpec(f, schemas.SelectAll, schemas.AfterDelete)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "two items deleted", func() bool { return f.FolderCount("deleteditems") == 2 })
	connector.EWSWaitFor(t, "a dead letter", func() bool { return len(ewsDeadLetters(t, rt, "exch_inbox")) == 1 })
	connector.EWSWaitFor(t, "a cycle done", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateIdle })

	dead := ewsDeadLetters(t, rt, "exch_inbox")
	if dead[0].RawRef != nil || !strings.Contains(dead[0].Error, "neither deleted nor moved") {
		t.Errorf("dead letter %+v, want no RawRef and the reason it is left", dead[0])
	}
	f.Lock()
	defer f.Unlock()
	if it := f.Item(ids[1]); it.Folder != "inbox" || it.Read {
		t.Errorf("item without MIME: folder %q, read %v; want it in the inbox, unread", it.Folder, it.Read)
	}
}

// TestExchangePanicDeadLetter: an item whose mapping panics becomes a dead letter with its
// raw copy, and no event.
func TestExchangePanicDeadLetter(t *testing.T) {
	rt := connector.EWSRuntime(t)
	connector.SetMapping(rt, func(r io.Reader, opts *mapping.Options) (*mapping.Result, error) {
		raw, err := io.ReadAll(r)
		if err != nil {
			return nil, err
		}
		if bytes.Contains(raw, []byte("Subject: message 2\r\n")) {
			var m map[string]int
			m["boom"]++
		}
		return mapping.MapMessage(bytes.NewReader(raw), opts)
	})
	f := ewstest.New(t, false)
	f.Add(3)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all items read", func() bool { return f.ReadCount() == 3 })

	if evs := connector.EWSEvents(t, rt, "exch_inbox", 1); len(evs) != 2 || evs[0].Subject != "message 1" || evs[1].Subject != "message 3" {
		t.Errorf("events %+v, want messages 1 and 3", evs)
	}
	dead := ewsDeadLetters(t, rt, "exch_inbox")
	if len(dead) != 1 || !strings.Contains(dead[0].Error, "internal error") || dead[0].RawRef == nil {
		t.Fatalf("dead letters %+v, want one with RawRef naming the internal error", dead)
	}
	raw, err := rt.Storage.Objects.GetBytes(context.Background(), dead[0].RawRef.Object)
	if err != nil || !bytes.Equal(raw, ewstest.MIME(2)) {
		t.Errorf("raw copy %q, %v; want message 2", raw, err)
	}
}

// TestExchangePartialRawRef: an event that keeps only part of its item carries RawRef to
// the whole MIME, although the route does not ask for includeRaw.
func TestExchangePartialRawRef(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	ids := f.Add(2)
	// Cut in the middle of a base64 attachment: the structure ends without its delimiter.
	cut := []byte("From: a@example.org\r\nSubject: cut\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\nJVBER")
	f.Lock()
	f.Item(ids[1]).MIME = cut
	f.Unlock()
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "all items read", func() bool { return f.ReadCount() == 2 })

	evs := connector.EWSEvents(t, rt, "exch_inbox", 1)
	if len(evs) != 2 || evs[0].RawRef != nil || evs[1].RawRef == nil {
		t.Fatalf("events %+v, want the second alone with RawRef", evs)
	}
	raw, err := rt.Storage.Objects.GetBytes(context.Background(), evs[1].RawRef.Object)
	if err != nil || !bytes.Equal(raw, cut) {
		t.Errorf("raw copy %q, %v; want the whole item", raw, err)
	}
}

// TestExchangeMoveFolderGone: a folder removed after the route checked it makes MoveItem
// fail for each item; the items stay in the inbox, unread, and are moved once the folder is
// back (each published once).
func TestExchangeMoveFolderGone(t *testing.T) {
	rt := connector.EWSRuntime(t)
	f := ewstest.New(t, false)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMove)
	spec.Connection.Auth, spec.Route.MoveTo = schemas.AuthNone, "Archive"
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "a first cycle", func() bool { return f.CountOps("FindItem") > 0 })
	f.Lock()
	delete(f.Folders, "Archive")
	f.Unlock()
	f.Add(3)
	connector.EWSWaitFor(t, "moves refused", func() bool { return f.CountOps("MoveItem") >= 2 })
	if n := f.FolderCount("inbox"); n != 3 || f.ReadCount() != 0 {
		t.Fatalf("inbox holds %d items (%d read), want 3 unread", n, f.ReadCount())
	}
	f.Lock()
	f.Folders["Archive"] = "AAMkFolderArchive="
	f.Unlock()
	connector.EWSWaitFor(t, "the items moved", func() bool { return f.FolderCount("AAMkFolderArchive=") == 3 })
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 3)
}
