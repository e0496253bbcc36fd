package connector_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// TestExchangeWorkerOAuth2: an application token (client credentials) acts for the mailbox
// with ExchangeImpersonation and X-AnchorMailbox, as Exchange Online wants; a token the
// server stops accepting before its expiry is replaced once and the request sent again;
// no token or client secret shows in the log or the status.
func TestExchangeWorkerOAuth2(t *testing.T) {
	rt := connector.EWSRuntime(t)
	var logs testkit.LogBuffer
	rt.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := testkit.StartTokenServer(t, time.Hour, false)
	f := ewstest.New(t, false)
	f.Auth, f.ValidToken = "bearer", ts.Valid
	f.Add(3)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection = connector.EWSOAuthConn(f, ts)
	spec.Connection.PollInterval = schemas.Duration(100 * time.Millisecond)
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "3 messages marked read", func() bool { return f.ReadCount() == 3 })

	ts.Revoke() // the server refuses the token in use, an hour before its expiry
	f.Add(2)
	connector.EWSWaitFor(t, "5 messages marked read", func() bool { return f.ReadCount() == 5 })
	connector.EWSDistinctIDs(t, connector.EWSEvents(t, rt, "exch_inbox", 1), 5)
	if n := ts.Count("client_credentials"); n != 2 {
		t.Errorf("%d client_credentials grants, want 2 (the first token, then one after the refusal)", n)
	}
	f.Lock()
	for i, a := range f.Anchors {
		if a != "bot@example.com" {
			t.Errorf("request %d: X-AnchorMailbox %q, want bot@example.com", i, a)
		}
	}
	for i, m := range f.Impersonated {
		if m != "bot@example.com" {
			t.Errorf("request %d: impersonated %q, want bot@example.com", i, m)
		}
	}
	f.Unlock()
	st := connector.EWSRouteStatus(rt, "exch_inbox")
	text := logs.String() + st.LastError
	for _, s := range ts.Secrets() {
		if strings.Contains(text, s) {
			t.Errorf("the log or status holds secret %s", s)
		}
	}
}

// TestExchangeWorkerOAuth2Refused: a token refused as soon as it is issued (the grant
// lacks EWS access) parks the route with the reason, and nothing is published.
func TestExchangeWorkerOAuth2Refused(t *testing.T) {
	rt := connector.EWSRuntime(t)
	ts := testkit.StartTokenServer(t, time.Hour, false)
	f := ewstest.New(t, false)
	f.Auth, f.ValidToken = "bearer", func(string) bool { return false }
	f.Add(1)
	spec := connector.EWSSpec(f, schemas.SelectUnseen, schemas.AfterMarkRead)
	spec.Connection = connector.EWSOAuthConn(f, ts)
	connector.RunEWSWorker(t, rt, spec)
	connector.EWSWaitFor(t, "state error", func() bool { return connector.EWSRouteStatus(rt, "exch_inbox").State == schemas.StateError })
	if st := connector.EWSRouteStatus(rt, "exch_inbox"); !strings.Contains(st.LastError, "the server refused the access token just issued") {
		t.Errorf("lastError = %q", st.LastError)
	}
	if n := len(connector.EWSEvents(t, rt, "exch_inbox", 1)); n != 0 {
		t.Errorf("%d events published", n)
	}
	if n := ts.Count("client_credentials"); n != 1 {
		t.Errorf("%d token requests, want 1: a fresh token refused is not retried", n)
	}
}

// TestExchangeCheckOAuth2: the check gets a token in its own stage, then logs in with it. A
// user's token (refresh token grant) acts as that user: no impersonation.
func TestExchangeCheckOAuth2(t *testing.T) {
	ts := testkit.StartTokenServer(t, time.Hour, false)
	f := ewstest.New(t, false)
	f.Auth, f.ValidToken = "bearer", ts.Valid
	f.Add(2)
	c := connector.EWSOAuthConn(f, ts)
	c.OAuth2.RefreshToken = ts.NewRefresh()
	r := connector.CheckConnection(context.Background(), c, []string{"INBOX"})
	if !r.OK || checkStages(r) != "resolve dial token login select" || r.Mailbox == nil || r.Mailbox.Unseen != 2 {
		t.Fatalf("check = ok %t, stages %q, mailbox %+v, error %+v", r.OK, checkStages(r), r.Mailbox, r.Error)
	}
	if n := ts.Count("refresh_token"); n != 1 {
		t.Errorf("%d refresh_token grants, want 1", n)
	}
	f.Lock()
	for i, m := range f.Impersonated {
		if m != "" {
			t.Errorf("request %d impersonates %q with a user's token", i, m)
		}
	}
	f.Unlock()

	// An application without the right to act for the mailbox.
	f.Lock()
	f.DenyImpersonation = true
	f.Unlock()
	r = connector.CheckConnection(context.Background(), connector.EWSOAuthConn(f, ts), []string{"INBOX"})
	if r.OK || r.Error == nil || r.Error.Field != "username" || !strings.Contains(r.Error.Message, "may not act for this mailbox") {
		t.Errorf("impersonation denied: ok %t, stages %q, error %+v", r.OK, checkStages(r), r.Error)
	}

	f.Lock()
	f.ValidToken = func(string) bool { return false }
	f.Unlock()
	r = connector.CheckConnection(context.Background(), c, []string{"INBOX"})
	if r.OK || r.Error == nil || r.Error.Field != "oauth2" || checkStages(r) != "resolve dial token login" {
		t.Errorf("refused token: ok %t, stages %q, error %+v", r.OK, checkStages(r), r.Error)
	}
}

// checkStages lists the names of a check's stages.
func checkStages(r *schemas.Reply) string {
	var s []string
	for _, st := range r.Stages {
		s = append(s, st.Stage)
	}
	return strings.Join(s, " ")
}
