package connector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// startSmallNATS is startBusNATS with a 256 KiB max payload, so that an event can be too
// large for a NATS message even with its content moved to the object store.
func startSmallNATS(t *testing.T) *busNATS {
	t.Helper()
	n := &busNATS{dir: t.TempDir()}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: n.dir, NoSigs: true, MaxPayload: 256 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	n.srv, n.addr = srv, srv.Addr().String()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if n.nc, err = nats.Connect(srv.ClientURL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.nc.Close)
	n.js, _ = jetstream.New(n.nc)
	if n.st, err = bus.EnsureStorage(context.Background(), n.js, busNames, 1, 10*time.Minute); err != nil {
		t.Fatalf("EnsureStorage() = %v", err)
	}
	return n
}

// oversizeMail is a message whose event cannot fit 256 KiB whatever is moved out of it:
// 600 KB of headers, kept in CustomHeaders. It has an attachment over a 1000-byte inline
// limit and an HTML body, which go to the object store before that is found out.
func oversizeMail() []byte {
	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: b@example.org\r\nSubject: too large\r\nMIME-Version: 1.0\r\n")
	for i := range 600 {
		fmt.Fprintf(&b, "X-Trace-%d: %s\r\n", i, strings.Repeat("t", 1000))
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n" +
		"--XYZ\r\nContent-Type: text/html\r\n\r\n<p>" + strings.Repeat("html ", 20000) + "</p>\r\n")
	b.WriteString("--XYZ\r\n" + attachmentPart("big.bin", make([]byte, 4000)) + "\r\n--XYZ--\r\n")
	return []byte(b.String())
}

// objectNames lists the object store.
func objectNames(t *testing.T, st jetstream.ObjectStore) []string {
	t.Helper()
	infos, err := st.List(context.Background())
	if err != nil && err != jetstream.ErrNoObjectsFound {
		t.Fatalf("List() = %v", err)
	}
	var names []string
	for _, i := range infos {
		names = append(names, i.Name)
	}
	return names
}

// TestIMAPOrphanObjectsDeleted: the attachment and body stored for a message whose event
// turned out too large are deleted when it goes to the dead letters; only the raw message
// its dead letter refers to is kept.
func TestIMAPOrphanObjectsDeleted(t *testing.T) {
	n := startSmallNATS(t)
	srv := startMemIMAP(t, memCaps...)
	srv.append(t, "INBOX", oversizeMail())
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 1000
	route := imapRoute("orphans", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})
	st := waitRouteIdle(t, rt, route.Name, 1)
	if st.DeadLettered != 1 || st.Published != 0 {
		t.Fatalf("status %+v, want 1 dead letter", st)
	}
	var dl bus.DeadLetter
	dead := storedMsgs(t, n.js, "MAIL_DEAD", "mail.dead.orphans")
	if len(dead) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dead))
	}
	if err := json.Unmarshal(dead[0].Data, &dl); err != nil || dl.RawRef == nil || !strings.Contains(dl.Error, "max payload") {
		t.Fatalf("dead letter %s (%v)", dead[0].Data, err)
	}
	if got := objectNames(t, n.st.Objects); len(got) != 1 || got[0] != dl.RawRef.Object {
		t.Errorf("objects %v, want only the dead letter's %s", got, dl.RawRef.Object)
	}
}
