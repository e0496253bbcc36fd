package connector_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// defsYAML is a definitions file: two connections (a literal password taken from the
// environment, a passwordFrom) and two routes.
const defsYAML = `
connections:
  - name: support_imap
    type: imap
    host: imap.example.com
    username: bot@example.com
    password: ${SUPPORT_PASSWORD}
  - name: sales_imap
    type: imap
    host: imap.example.com
    encryption: tls
    username: sales@example.com
    passwordFrom: {env: MAILBUS_CRED_SALES_PASSWORD}
routes:
  - name: support_inbox
    connection: support_imap
    headers: [X-Ticket-Id]
  - name: sales_inbox
    connection: sales_imap
    bus: 2
    after: none
`

// applyReq turns a definitions file into an apply request.
func applyReq(t *testing.T, file string) *schemas.ApplyRequest {
	t.Helper()
	d, err := store.ParseDefinitions("defs.yaml", []byte(file), os.LookupEnv)
	if err != nil {
		t.Fatalf("ParseDefinitions() = %v", err)
	}
	return &schemas.ApplyRequest{Connections: d.Connections, Routes: d.Routes}
}

// actions sums up changes as "kind/name action" lines.
func actions(changes []schemas.Change) string {
	var b []string
	for _, c := range changes {
		s := c.Kind + "/" + c.Name + " " + c.Action
		if len(c.Fields) > 0 {
			s += " " + strings.Join(c.Fields, ",")
		}
		b = append(b, s)
	}
	return strings.Join(b, "\n")
}

// TestApplyIdempotent: applying the same definitions again changes nothing, not even a
// revision, with the secrets sealed (each sealing of a password differs).
func TestApplyIdempotent(t *testing.T) {
	t.Setenv("SUPPORT_PASSWORD", "s3cret")
	cfg := svcConfig(t)
	cfg.SecretKey = base64.StdEncoding.EncodeToString(make([]byte, 32))
	s := startService(t, cfg, nil, nil)
	req := applyReq(t, defsYAML)

	r := s.ok("mail.control.definitions.apply", req)
	if got, want := actions(r.Changes), "connection/support_imap create\nconnection/sales_imap create\nroute/support_inbox create\nroute/sales_inbox create"; got != want {
		t.Errorf("first apply:\n%s\nwant\n%s", got, want)
	}
	before := s.snapshot()
	r = s.ok("mail.control.definitions.apply", req)
	if got, want := actions(r.Changes), "connection/support_imap unchanged\nconnection/sales_imap unchanged\nroute/support_inbox unchanged\nroute/sales_inbox unchanged"; got != want {
		t.Errorf("second apply:\n%s\nwant\n%s", got, want)
	}
	if after := s.snapshot(); after != before {
		t.Errorf("second apply moved revisions:\n%s\n%s", before, after)
	}
	if raw := string(s.raw("connection.support_imap")); strings.Contains(raw, "s3cret") {
		t.Errorf("stored connection holds the password in clear: %s", raw)
	}

	// A changed password is a change, named by field only.
	t.Setenv("SUPPORT_PASSWORD", "n3w")
	r = s.ok("mail.control.definitions.apply", applyReq(t, defsYAML))
	if got := actions(r.Changes[:1]); got != "connection/support_imap update password" {
		t.Errorf("apply with a new password: %s", got)
	}
	if strings.Contains(fmt.Sprint(r), "n3w") {
		t.Errorf("reply holds the password: %+v", r)
	}
	// A file without the password keeps the stored one: unchanged.
	r = s.ok("mail.control.definitions.apply", applyReq(t, strings.Replace(defsYAML, "    password: ${SUPPORT_PASSWORD}\n", "", 1)))
	if got := actions(r.Changes[:1]); got != "connection/support_imap unchanged" {
		t.Errorf("apply without the password: %s", got)
	}
}

// TestApplyDryRunAndPrune: a dry run reports the changes and writes nothing; prune deletes
// what the definitions leave out, routes before their connections.
func TestApplyDryRunAndPrune(t *testing.T) {
	t.Setenv("SUPPORT_PASSWORD", "s3cret")
	s := startService(t, svcConfig(t), nil, nil)
	s.ok("mail.control.definitions.apply", applyReq(t, defsYAML))
	s.ok("mail.control.connection.put", imapConnection("extra_imap"))
	s.ok("mail.control.route.put", inboxRoute("extra_inbox", "extra_imap"))
	before := s.snapshot()

	changed := strings.Replace(defsYAML, "    bus: 2\n", "    bus: 3\n", 1)
	req := applyReq(t, changed)
	req.DryRun, req.Prune = true, true
	req.Declared = &schemas.DefinitionNames{Connections: []string{"support_imap", "sales_imap"}, Routes: []string{"support_inbox", "sales_inbox"}}
	r := s.ok("mail.control.definitions.apply", req)
	want := "connection/support_imap unchanged\nconnection/sales_imap unchanged\nroute/support_inbox unchanged\n" +
		"route/sales_inbox update bus\nroute/extra_inbox delete\nconnection/extra_imap delete"
	if got := actions(r.Changes); got != want {
		t.Errorf("dry run:\n%s\nwant\n%s", got, want)
	}
	if after := s.snapshot(); after != before {
		t.Errorf("dry run changed the store:\n%s\n%s", before, after)
	}

	req.DryRun = false
	if got := actions(s.ok("mail.control.definitions.apply", req).Changes); got != want {
		t.Errorf("apply --prune:\n%s\nwant\n%s", got, want)
	}
	snap := s.snapshot()
	if strings.Contains(snap, "extra") || !strings.Contains(snap, "route.sales_inbox@") {
		t.Errorf("after prune: %s", snap)
	}
	if r := s.ok("mail.control.route.get", map[string]string{"name": "sales_inbox"}); r.Route.Bus != 3 {
		t.Errorf("sales_inbox bus %d after apply, want 3", r.Route.Bus)
	}
}

// TestApplyBadFile: a request the store refuses (a route without its connection, a
// connection without a password) changes nothing, not even the definitions before the bad
// one. (A file refused before anything is sent: TestParseDefinitionsRefuses in
// connector/store.)
func TestApplyBadFile(t *testing.T) {
	t.Setenv("SUPPORT_PASSWORD", "s3cret")
	s := startService(t, svcConfig(t), nil, nil)
	before := s.snapshot()
	req := applyReq(t, defsYAML)
	req.Routes = append(req.Routes, schemas.Route{Name: "orphan", Connection: "nowhere", Mailbox: "INBOX"})
	e := s.fail("mail.control.definitions.apply", req, "invalid", "routes[2].connection")
	if !strings.Contains(e.Message, "route orphan: no connection named nowhere") {
		t.Errorf("refusal %q", e.Message)
	}
	req = applyReq(t, defsYAML)
	req.Connections[1].PasswordFrom = nil // nothing stored to keep either
	s.fail("mail.control.definitions.apply", req, "invalid", "connections[1].password")
	if after := s.snapshot(); after != before {
		t.Errorf("refused applies changed the store:\n%s\n%s", before, after)
	}
}

// TestDefinitionsAtStart: three replicas started together with the same
// MAILBUS_DEFINITIONS converge on one revision per definition, and starting again changes
// nothing.
func TestDefinitionsAtStart(t *testing.T) {
	t.Setenv("SUPPORT_PASSWORD", "s3cret")
	t.Setenv("MAILBUS_CRED_SALES_PASSWORD", "s3cret-sales")
	url, js := natsFor(t)
	file := filepath.Join(t.TempDir(), "defs.yaml")
	if err := os.WriteFile(file, []byte(defsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	start := func(i int) *testService {
		cfg := svcConfig(t)
		cfg.NATSURL, cfg.Definitions, cfg.Instance = url, file, fmt.Sprintf("replica-%d", i)
		cfg.SecretKey = base64.StdEncoding.EncodeToString(make([]byte, 32))
		return startService(t, cfg, rec, nil)
	}
	var wg sync.WaitGroup
	replicas := make([]*testService, 3)
	for i := range replicas {
		wg.Go(func() { replicas[i] = start(i) })
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ctx := context.Background()
	kv, _ := js.KeyValue(ctx, "mail_config")
	history := func() string {
		var b []string
		for _, k := range []string{"connection.support_imap", "connection.sales_imap", "route.support_inbox", "route.sales_inbox"} {
			h, err := kv.History(ctx, k)
			if err != nil {
				t.Fatalf("History(%s) = %v", k, err)
			}
			b = append(b, fmt.Sprintf("%s:%d", k, len(h)))
		}
		st, _ := kv.Status(ctx)
		return strings.Join(b, " ") + fmt.Sprintf(" last=%d", st.(*jetstream.KeyValueBucketStatus).StreamInfo().State.LastSeq)
	}
	want := "connection.support_imap:1 connection.sales_imap:1 route.support_inbox:1 route.sales_inbox:1 last=4"
	if got := history(); got != want {
		t.Errorf("after three replicas started: %s, want %s", got, want)
	}
	// The routes run, once each.
	waitFor := time.Now().Add(10 * time.Second)
	for {
		_, a := rec.spec("support_inbox")
		_, b := rec.spec("sales_inbox")
		if a && b {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatalf("routes not started")
		}
		time.Sleep(20 * time.Millisecond)
	}

	replicas[0].c.Close()
	start(3)
	if got := history(); got != want {
		t.Errorf("after a replica restarted: %s, want %s", got, want)
	}
}

// TestDefinitionsAtStartRefused: a bad MAILBUS_DEFINITIONS file stops the start, naming
// the file and the field.
func TestDefinitionsAtStartRefused(t *testing.T) {
	t.Setenv("SUPPORT_PASSWORD", "s3cret")
	file := filepath.Join(t.TempDir(), "defs.yaml")
	os.WriteFile(file, []byte(strings.Replace(defsYAML, "after: none", "after: sometimes", 1)), 0o600)
	cfg := svcConfig(t)
	cfg.Definitions = file
	err := runUntilError(t, cfg)
	if err == nil || !strings.Contains(err.Error(), file+": route sales_inbox (routes[1]): field after:") {
		t.Fatalf("Run() = %v; want the file, route and field named", err)
	}
}
