package connector_test

import (
	"encoding/json"
	"testing"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

// TestExchangeOrphanObjectsDeleted: as TestIMAPOrphanObjectsDeleted, for an Exchange route:
// the objects of an item whose event is too large for NATS are deleted, but for the raw
// message of its dead letter.
func TestExchangeOrphanObjectsDeleted(t *testing.T) {
	n := startSmallNATS(t)
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 1000
	f := ewstest.New(t, false)
	f.Add(1)
	f.Items[0].MIME = oversizeMail()
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "the message marked read", func() bool { return f.ReadCount() == 1 })

	dead := connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject("exch_inbox"))
	var dl bus.DeadLetter
	if len(dead) != 1 || json.Unmarshal(dead[0].Data, &dl) != nil || dl.RawRef == nil {
		t.Fatalf("%d dead letters, want 1 with its raw message", len(dead))
	}
	got := objectNames(t, n.st.Objects)
	if len(got) != 1 || got[0] != dl.RawRef.Object {
		t.Errorf("objects %v, want only the dead letter's %s", got, dl.RawRef.Object)
	}
}
