package connector_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/schemas"
)

// The supervisor must act on a definition change within a second.
const reactWithin = time.Second

func TestSupervisorLifecycle(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	rec := s.rec
	s.ok("mail.control.connection.put", imapConnection("c1"))

	s.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	rec.expect(t, "start r1", reactWithin)
	spec, ok := rec.spec("r1")
	if !ok || spec.Route.Mailbox != "INBOX" || spec.Connection.Password != "s3cret-c1" {
		t.Fatalf("worker spec = %+v", spec)
	}

	// A description is not worth a restart.
	s.ok("mail.control.route.put", map[string]any{"name": "r1", "connection": "c1", "description": "the inbox"})
	rec.quiet(t, 300*time.Millisecond)

	// Disable, enable.
	s.ok("mail.control.route.put", map[string]any{"name": "r1", "connection": "c1", "disabled": true})
	rec.expect(t, "stop r1", reactWithin)
	// The worker reports its stop before the supervisor releases the lease and parks it.
	s.waitStatus("r1", reactWithin, func(st schemas.RouteStatus) bool { return st.State == schemas.StateDisabled })
	s.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	rec.expect(t, "start r1", reactWithin)

	// A changed route restarts.
	s.ok("mail.control.route.put", map[string]any{"name": "r1", "connection": "c1", "mailbox": "Support"})
	rec.expect(t, "stop r1", reactWithin)
	rec.expect(t, "start r1", reactWithin)
	if spec, _ := rec.spec("r1"); spec.Route.Mailbox != "Support" {
		t.Errorf("restarted worker mailbox = %q", spec.Route.Mailbox)
	}

	// A changed connection restarts its routes, and only those.
	s.ok("mail.control.connection.put", imapConnection("c2"))
	s.ok("mail.control.route.put", inboxRoute("r2", "c2"))
	rec.expect(t, "start r2", reactWithin)
	c1 := imapConnection("c1")
	c1["pollInterval"] = "30s"
	delete(c1, "password") // kept: the server is the same
	s.ok("mail.control.connection.put", c1)
	rec.expect(t, "stop r1", reactWithin)
	rec.expect(t, "start r1", reactWithin)
	if spec, _ := rec.spec("r1"); time.Duration(spec.Connection.PollInterval) != 30*time.Second || spec.Connection.Password != "s3cret-c1" {
		t.Errorf("restarted worker connection = %+v", spec.Connection)
	}
	rec.quiet(t, 300*time.Millisecond)

	// A disabled connection stops its routes.
	c1["disabled"] = true
	s.ok("mail.control.connection.put", c1)
	rec.expect(t, "stop r1", reactWithin)
	s.waitStatus("r1", reactWithin, func(st schemas.RouteStatus) bool {
		return st.State == schemas.StateDisabled && strings.Contains(st.LastError, "c1")
	})
	c1["disabled"] = false
	s.ok("mail.control.connection.put", c1)
	rec.expect(t, "start r1", reactWithin)

	// Delete.
	s.ok("mail.control.route.delete", map[string]string{"name": "r1"})
	rec.expect(t, "stop r1", reactWithin)
	s.ok("mail.control.route.delete", map[string]string{"name": "r2"})
	rec.expect(t, "stop r2", reactWithin)
	rec.quiet(t, 200*time.Millisecond)
}

func TestSupervisorRestartsFailingWorker(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	rec := s.rec
	rec.mu.Lock()
	rec.fail["flaky"] = errors.New("imap.example.com: connection refused")
	rec.mu.Unlock()
	s.ok("mail.control.connection.put", imapConnection("c1"))
	s.ok("mail.control.route.put", inboxRoute("flaky", "c1"))

	rec.expect(t, "start flaky", reactWithin)
	rec.expect(t, "stop flaky", reactWithin)
	st := s.waitStatus("flaky", reactWithin, func(st schemas.RouteStatus) bool { return st.State == schemas.StateBackoff })
	if !strings.Contains(st.LastError, "connection refused") {
		t.Errorf("status = %+v, want the worker's error", st)
	}
	// The first retry comes after 0.5..1s, the second after 1..2s.
	start := time.Now()
	rec.expect(t, "start flaky", 2*time.Second)
	rec.expect(t, "stop flaky", reactWithin)
	first := time.Since(start)
	rec.expect(t, "start flaky", 3*time.Second)
	second := time.Since(start) - first
	if first < 400*time.Millisecond || second < 900*time.Millisecond {
		t.Errorf("restarts after %s and %s, want a growing backoff", first, second)
	}

	// Once it stops failing it runs, and the error is gone from the status.
	rec.mu.Lock()
	delete(rec.fail, "flaky")
	rec.mu.Unlock()
	rec.expect(t, "stop flaky", reactWithin)
	rec.expect(t, "start flaky", 5*time.Second)
	st = s.waitStatus("flaky", reactWithin, func(st schemas.RouteStatus) bool { return st.State == schemas.StateRunning })
	if st.LastError != "" {
		t.Errorf("status of the recovered route = %+v", st)
	}
}

func TestSupervisorParksUnbuiltType(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	s.ok("mail.control.connection.put", map[string]any{
		"name": "ews", "type": "exchange", "exchangeUrl": "mail.example.com/EWS/Exchange.asmx",
		"exchangeVersion": "Exchange2016", "auth": "windows", "username": `CORP\bot`, "password": "pw",
	})
	s.ok("mail.control.route.put", inboxRoute("ews_inbox", "ews"))
	st := s.waitStatus("ews_inbox", reactWithin, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if st.LastError != "exchange connections are not built yet" {
		t.Errorf("status = %+v", st)
	}
	s.rec.quiet(t, 200*time.Millisecond)
}

func TestSupervisorPasswordFrom(t *testing.T) {
	t.Setenv("MAILBUS_CRED_TEST_IMAP_PASSWORD", "from-the-env")
	dir := t.TempDir()
	log := &svcLog{}
	cfg := svcConfig(t)
	cfg.CredentialDir = dir
	s := startService(t, cfg, nil, log)

	c := imapConnection("c1")
	delete(c, "password")
	c["passwordFrom"] = map[string]string{"env": "MAILBUS_CRED_TEST_IMAP_PASSWORD"}
	r := s.ok("mail.control.connection.put", c)
	if r.Connection.PasswordFrom == nil || r.Connection.PasswordFrom.Env != "MAILBUS_CRED_TEST_IMAP_PASSWORD" {
		t.Errorf("reply passwordFrom = %+v", r.Connection.PasswordFrom)
	}
	s.ok("mail.control.route.put", inboxRoute("r1", "c1"))
	s.rec.expect(t, "start r1", reactWithin)
	if spec, _ := s.rec.spec("r1"); spec.Connection.Password != "from-the-env" {
		t.Errorf("worker password = %q", spec.Connection.Password)
	}

	// A missing file parks the route with an error that names the file.
	c["passwordFrom"] = map[string]string{"file": dir + "/missing"}
	s.ok("mail.control.connection.put", c)
	s.rec.expect(t, "stop r1", reactWithin)
	st := s.waitStatus("r1", reactWithin, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if !strings.Contains(st.LastError, "missing") {
		t.Errorf("status = %+v", st)
	}
	if strings.Contains(log.String(), "from-the-env") {
		t.Error("the log contains the password")
	}
}
