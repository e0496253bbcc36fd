package connector_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

// TestExchangeOrphanObjectsDeleted: as TestIMAPOrphanObjectsDeleted, for an Exchange route:
// the objects of an item whose event is too large for NATS are deleted, but for the raw
// message of its dead letter.
func TestExchangeOrphanObjectsDeleted(t *testing.T) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, MaxPayload: 256 << 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	names := connector.Names{Prefix: "mail"}
	st, err := connector.EnsureStorage(context.Background(), js, names, 1, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	pubs, err := connector.NewPublishers(nc, 0)
	if err != nil {
		t.Fatal(err)
	}
	rt := &connector.Runtime{
		Names: names, NC: nc, JS: js, Storage: st, Instance: "test", Status: connector.NewStatusBoard(),
		Publishers: pubs, MaxInlineBytes: 1000, Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
	}

	var b strings.Builder
	b.WriteString("From: a@example.org\r\nTo: b@example.org\r\nSubject: too large\r\nMIME-Version: 1.0\r\n")
	for i := range 600 {
		fmt.Fprintf(&b, "X-Trace-%d: %s\r\n", i, strings.Repeat("t", 1000))
	}
	b.WriteString("Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n" +
		"--XYZ\r\nContent-Type: text/html\r\n\r\n<p>" + strings.Repeat("html ", 20000) + "</p>\r\n" +
		"--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"big.bin\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(make([]byte, 4000)) + "\r\n--XYZ--\r\n")
	f := ewstest.New(t, false)
	f.Add(1)
	f.Items[0].MIME = []byte(b.String())
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection.Auth = schemas.AuthNone
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "the message marked read", func() bool { return f.ReadCount() == 1 })

	dead := connector.EWSStored(t, rt, rt.Names.DeadStream(), rt.Names.DeadSubject("exch_inbox"))
	var dl connector.DeadLetter
	if len(dead) != 1 || json.Unmarshal(dead[0].Data, &dl) != nil || dl.RawRef == nil {
		t.Fatalf("%d dead letters, want 1 with its raw message", len(dead))
	}
	infos, _ := st.Objects.List(context.Background())
	var got []string
	for _, i := range infos {
		got = append(got, i.Name)
	}
	if len(got) != 1 || got[0] != dl.RawRef.Object {
		t.Errorf("objects %v, want only the dead letter's %s", got, dl.RawRef.Object)
	}
}
