package connector_test

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/mailbus/mailbus/schemas"
)

func TestControlEndpoints(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	if r := s.ok("mail.control.connection.list", ""); len(r.Connections) != 0 {
		t.Fatalf("connection.list of an empty bucket = %+v", r.Connections)
	}
	if r := s.ok("mail.control.route.list", `{"status":true}`); len(r.Routes) != 0 {
		t.Fatalf("route.list of an empty bucket = %+v", r.Routes)
	}

	// connection.put fills the defaults and hides the password.
	r := s.ok("mail.control.connection.put", map[string]any{
		"name": "support_imap", "type": "imap", "host": "imap.example.com",
		"username": "bot@example.com", "password": "pw-support",
	})
	c := r.Connection
	if c == nil || c.Name != "support_imap" || c.Port != 993 || c.Encryption != "ssl" || c.Auth != "basic" ||
		c.LogLevel != "errors" || time.Duration(c.PollInterval) != time.Minute || c.Password != "" || !c.PasswordSet || c.Revision == 0 {
		t.Fatalf("connection.put reply = %+v", c)
	}
	s.ok("mail.control.connection.put", map[string]any{
		"name": "other", "type": "imap", "host": "10.0.0.1", "encryption": "tls", "auth": "none",
	})

	r = s.ok("mail.control.connection.get", map[string]string{"name": "support_imap"})
	if r.Connection == nil || r.Connection.Host != "imap.example.com" || r.Connection.Password != "" || !r.Connection.PasswordSet {
		t.Fatalf("connection.get = %+v", r.Connection)
	}
	r = s.ok("mail.control.connection.list", "")
	if len(r.Connections) != 2 || r.Connections[0].Name != "other" || r.Connections[0].Port != 143 || r.Connections[1].Name != "support_imap" {
		t.Fatalf("connection.list = %+v", r.Connections)
	}

	r = s.ok("mail.control.route.put", map[string]any{
		"name": "support_inbox", "connection": "support_imap", "bus": 2,
		"headers": []string{"X-Ticket-Id"}, "attributes": []map[string]string{{"name": "ticket", "from": "header:X-Ticket-Id", "regex": `(\d+)`}},
	})
	rt := r.Route
	if rt == nil || rt.Mailbox != "INBOX" || rt.Select != "all" || rt.Backlog != "unseen" || rt.After != "markRead" || rt.Bus != 2 || rt.Revision == 0 {
		t.Fatalf("route.put reply = %+v", rt)
	}
	s.ok("mail.control.route.put", map[string]any{"name": "archive", "connection": "other", "disabled": true, "after": "move", "moveTo": "Archive"})

	r = s.ok("mail.control.route.get", map[string]string{"name": "support_inbox"})
	if r.Route == nil || r.Route.Connection != "support_imap" || len(r.Route.Attributes) != 1 {
		t.Fatalf("route.get = %+v", r.Route)
	}
	st := s.waitStatus("support_inbox", time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateRunning })
	if st.Owner != "test" || st.Route != "support_inbox" {
		t.Errorf("route.status = %+v", st)
	}
	if st := s.status("archive"); st.State != schemas.StateDisabled {
		t.Errorf("route.status of a disabled route = %+v", st)
	}

	r = s.ok("mail.control.route.list", map[string]bool{"status": true})
	if len(r.Routes) != 2 || r.Routes[0].Name != "archive" || r.Routes[1].Name != "support_inbox" {
		t.Fatalf("route.list = %+v", r.Routes)
	}
	if len(r.Statuses) != 2 || r.Statuses[0].State != schemas.StateDisabled || r.Statuses[1].State != schemas.StateRunning {
		t.Fatalf("route.list statuses = %+v", r.Statuses)
	}
	if r := s.ok("mail.control.route.list", "{}"); r.Statuses != nil {
		t.Errorf("route.list without status: statuses %+v", r.Statuses)
	}

	s.fail("mail.control.connection.test", map[string]string{"name": "nope"}, "not_found", "name")
	s.fail("mail.control.connection.log", map[string]string{"name": "nope"}, "not_found", "name")
	s.fail("mail.control.connection.test", map[string]any{"name": "draft", "type": "imap", "host": "imap://x"}, "invalid", "host")

	// A connection in use cannot go; once its routes are gone it can.
	e := s.fail("mail.control.connection.delete", map[string]string{"name": "support_imap"}, "conflict", "name")
	if !strings.Contains(e.Message, "support_inbox") {
		t.Errorf("conflict message %q does not name the route", e.Message)
	}
	s.ok("mail.control.route.delete", map[string]string{"name": "support_inbox"})
	s.fail("mail.control.route.get", map[string]string{"name": "support_inbox"}, "not_found", "name")
	s.fail("mail.control.route.status", map[string]string{"name": "support_inbox"}, "not_found", "name")
	s.ok("mail.control.connection.delete", map[string]string{"name": "support_imap"})
	s.fail("mail.control.connection.get", map[string]string{"name": "support_imap"}, "not_found", "name")
	r = s.ok("mail.control.connection.list", "{}")
	if len(r.Connections) != 1 {
		t.Errorf("connection.list after delete = %+v", r.Connections)
	}

	// A deleted name can be used again.
	s.ok("mail.control.connection.put", imapConnection("support_imap"))
}

func TestControlServiceDiscovery(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)

	msg, err := s.nc.Request("$SRV.PING.mailbus", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("Request($SRV.PING.mailbus) = %v", err)
	}
	var ping micro.Ping
	if err := json.Unmarshal(msg.Data, &ping); err != nil || ping.Name != "mailbus" || ping.Version != "1.2.3" {
		t.Fatalf("PING = %s (%v)", msg.Data, err)
	}

	msg, err = s.nc.Request("$SRV.INFO.mailbus", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("Request($SRV.INFO.mailbus) = %v", err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatalf("INFO = %s: %v", msg.Data, err)
	}
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	slices.Sort(subjects)
	want := []string{
		"mail.control.connection.delete", "mail.control.connection.get", "mail.control.connection.list",
		"mail.control.connection.log", "mail.control.connection.put", "mail.control.connection.test",
		"mail.control.definitions.apply", "mail.control.route.delete", "mail.control.route.get", "mail.control.route.list",
		"mail.control.route.put", "mail.control.route.status",
	}
	if !slices.Equal(subjects, want) {
		t.Errorf("INFO endpoints = %v, want %v", subjects, want)
	}

	s.ok("mail.control.connection.list", "")
	msg, err = s.nc.Request("$SRV.STATS.mailbus", nil, 5*time.Second)
	if err != nil {
		t.Fatalf("Request($SRV.STATS.mailbus) = %v", err)
	}
	var stats micro.Stats
	if err := json.Unmarshal(msg.Data, &stats); err != nil || len(stats.Endpoints) != len(want) {
		t.Fatalf("STATS = %s (%v)", msg.Data, err)
	}
}

// TestInvalidCommands sends commands that must be refused, each with its code and field,
// and checks that the config bucket did not change at all.
func TestInvalidCommands(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	s.ok("mail.control.connection.put", imapConnection("used"))
	s.ok("mail.control.route.put", inboxRoute("uses", "used"))

	const (
		cput = "mail.control.connection.put"
		rput = "mail.control.route.put"
	)
	conn := func(change map[string]any) map[string]any {
		c := imapConnection("c1")
		for k, v := range change {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	route := func(change map[string]any) map[string]any {
		r := inboxRoute("r1", "used")
		for k, v := range change {
			r[k] = v
		}
		return r
	}
	tests := []struct {
		name, subject string
		body          any
		code, field   string
		message       string // a part the message must contain
	}{
		// Bad JSON.
		{"syntax", cput, `{"name":`, "invalid", "", "ends too early"},
		{"syntax comma", cput, `{"name":"x",}`, "invalid", "", "offset"},
		{"trailing garbage", cput, `{"name":"x"} {"name":"y"}`, "invalid", "", "after the JSON value"},
		{"trailing junk", rput, `{"name":"x"}]`, "invalid", "", "after the JSON value"},
		{"not an object", cput, `["x"]`, "invalid", "", "JSON object"},
		{"a string", "mail.control.route.get", `"x"`, "invalid", "", "JSON object"},
		// Unknown fields and wrong types.
		{"unknown field", cput, conn(map[string]any{"hots": "x"}), "invalid", "hots", "unknown field"},
		{"unknown nested field", cput, conn(map[string]any{"auth": "oauth2", "oauth2": map[string]any{"accessToken": "t", "secret": "x"}}), "invalid", "oauth2.secret", "unknown field"},
		{"unknown field in array", rput, route(map[string]any{"attributes": []any{map[string]any{"name": "a", "from": "subject", "rgx": "x"}}}), "invalid", "attributes[0].rgx", "unknown field"},
		{"unknown field in get", "mail.control.connection.get", `{"nam":"x"}`, "invalid", "nam", "unknown field"},
		{"port as string", cput, conn(map[string]any{"port": "993"}), "invalid", "port", "whole number"},
		{"port fraction", cput, conn(map[string]any{"port": 99.5}), "invalid", "port", "whole number"},
		{"disabled as string", rput, route(map[string]any{"disabled": "yes"}), "invalid", "disabled", "true or false"},
		{"recipients as string", cput, conn(map[string]any{"testRecipients": "a@b.c"}), "invalid", "testRecipients", "array"},
		{"bad duration", cput, conn(map[string]any{"pollInterval": "soon"}), "invalid", "pollInterval", "duration"},
		{"duration as number", cput, conn(map[string]any{"pollInterval": 60}), "invalid", "pollInterval", "duration"},
		{"name as number", "mail.control.route.delete", `{"name":1}`, "invalid", "name", "string"},
		// Connection rules.
		{"no name", cput, conn(map[string]any{"name": nil}), "invalid", "name", "required"},
		{"bad name", cput, conn(map[string]any{"name": "support-imap"}), "invalid", "name", "letters, digits or _"},
		{"long name", cput, conn(map[string]any{"name": strings.Repeat("a", 65)}), "invalid", "name", "1 to 64"},
		{"no type", cput, conn(map[string]any{"type": nil}), "invalid", "type", "required"},
		{"bad type", cput, conn(map[string]any{"type": "pop3"}), "invalid", "type", "imap, exchange"},
		{"no host", cput, conn(map[string]any{"host": nil}), "invalid", "host", "required"},
		{"host with imap://", cput, conn(map[string]any{"host": "imap://imap.example.com"}), "invalid", "host", `drop "imap://"`},
		{"host with https://", cput, conn(map[string]any{"host": "https://imap.example.com"}), "invalid", "host", `drop "https://"`},
		{"host with path", cput, conn(map[string]any{"host": "imap.example.com/inbox"}), "invalid", "host", "without a path"},
		{"host with space", cput, conn(map[string]any{"host": "imap example.com"}), "invalid", "host", "spaces"},
		{"host with port", cput, conn(map[string]any{"host": "imap.example.com:993"}), "invalid", "host", "port"},
		{"port too big", cput, conn(map[string]any{"port": 65536}), "invalid", "port", "1..65535"},
		{"port negative", cput, conn(map[string]any{"port": -1}), "invalid", "port", "1..65535"},
		{"bad encryption", cput, conn(map[string]any{"encryption": "starttls"}), "invalid", "encryption", "none, ssl, tls"},
		{"bad auth", cput, conn(map[string]any{"auth": "kerberos"}), "invalid", "auth", "want one of"},
		{"basic without username", cput, conn(map[string]any{"username": nil}), "invalid", "username", "required"},
		{"basic without password", cput, conn(map[string]any{"password": nil}), "invalid", "password", "required"},
		{"windows without domain", cput, conn(map[string]any{"auth": "windows", "username": "bot"}), "invalid", "domain", "domain"},
		{"oauth2 without object", cput, conn(map[string]any{"auth": "oauth2"}), "invalid", "oauth2", "oauth2 object"},
		{"oauth2 without token", cput, conn(map[string]any{"auth": "oauth2", "oauth2": map[string]any{"clientId": "x"}}), "invalid", "oauth2", "refreshToken"},
		{"oauth2 bad token url", cput, conn(map[string]any{"auth": "oauth2", "oauth2": map[string]any{"accessToken": "t", "tokenUrl": "login.example.com"}}), "invalid", "oauth2.tokenUrl", "URL"},
		{"password and passwordFrom", cput, conn(map[string]any{"passwordFrom": map[string]any{"env": "PW"}}), "invalid", "passwordFrom", "not both"},
		{"passwordFrom env and file", cput, conn(map[string]any{"password": nil, "passwordFrom": map[string]any{"env": "PW", "file": "/pw"}}), "invalid", "passwordFrom", "exactly one"},
		{"passwordFrom empty", cput, conn(map[string]any{"password": nil, "passwordFrom": map[string]any{}}), "invalid", "passwordFrom", "exactly one"},
		{"bad logLevel", cput, conn(map[string]any{"logLevel": "debug"}), "invalid", "logLevel", "full, errors, off"},
		{"short pollInterval", cput, conn(map[string]any{"pollInterval": "500ms"}), "invalid", "pollInterval", "at least 1s"},
		{"negative pollInterval", cput, conn(map[string]any{"pollInterval": "-5s"}), "invalid", "pollInterval", "at least 1s"},
		{"bad recipient", cput, conn(map[string]any{"testRecipients": []string{"ok@example.com", "not an address"}}), "invalid", "testRecipients[1]", "e-mail"},
		{"named recipient", cput, conn(map[string]any{"testRecipients": []string{"Bot <bot@example.com>"}}), "invalid", "testRecipients[0]", "bare"},
		{"exchange without url", cput, conn(map[string]any{"type": "exchange", "host": nil, "exchangeVersion": "Exchange2016"}), "invalid", "exchangeUrl", "required"},
		{"exchange url with scheme", cput, conn(map[string]any{"type": "exchange", "exchangeUrl": "https://mail.example.com/EWS/Exchange.asmx", "exchangeVersion": "Exchange2016"}), "invalid", "exchangeUrl", `drop "https://"`},
		{"exchange without version", cput, conn(map[string]any{"type": "exchange", "exchangeUrl": "mail.example.com/EWS/Exchange.asmx"}), "invalid", "exchangeVersion", "required"},
		{"exchange bad version", cput, conn(map[string]any{"type": "exchange", "exchangeUrl": "mail.example.com/EWS/Exchange.asmx", "exchangeVersion": "Exchange2003"}), "invalid", "exchangeVersion", "Exchange2019"},
		{"stale connection revision", cput, conn(map[string]any{"name": "used", "revision": 999}), "conflict", "revision", "revision"},
		// Route rules.
		{"route bad name", rput, route(map[string]any{"name": "my route"}), "invalid", "name", "letters"},
		{"route without connection", rput, route(map[string]any{"connection": ""}), "invalid", "connection", "required"},
		{"route unknown connection", rput, route(map[string]any{"connection": "nope"}), "invalid", "connection", "no connection named nope"},
		{"bus 4", rput, route(map[string]any{"bus": 4}), "invalid", "bus", "0..3"},
		{"bus -1", rput, route(map[string]any{"bus": -1}), "invalid", "bus", "0..3"},
		{"bad select", rput, route(map[string]any{"select": "new"}), "invalid", "select", "unseen, all"},
		{"bad after", rput, route(map[string]any{"after": "archive"}), "invalid", "after", "markRead"},
		{"move without moveTo", rput, route(map[string]any{"after": "move"}), "invalid", "moveTo", "required"},
		{"moveTo without move", rput, route(map[string]any{"moveTo": "Archive"}), "invalid", "moveTo", "only"},
		{"bad header", rput, route(map[string]any{"headers": []string{"X-Ok", "X Bad"}}), "invalid", "headers[1]", "header name"},
		{"attribute without name", rput, route(map[string]any{"attributes": []any{map[string]any{"from": "subject"}}}), "invalid", "attributes[0].name", "required"},
		{"attribute twice", rput, route(map[string]any{"attributes": []any{map[string]any{"name": "a", "from": "subject"}, map[string]any{"name": "a", "from": "text"}}}), "invalid", "attributes[1].name", "twice"},
		{"attribute bad from", rput, route(map[string]any{"attributes": []any{map[string]any{"name": "a", "from": "body"}}}), "invalid", "attributes[0].from", "header:<Name>"},
		{"attribute bad header", rput, route(map[string]any{"attributes": []any{map[string]any{"name": "a", "from": "header:X Y"}}}), "invalid", "attributes[0].from", "header name"},
		{"attribute bad regex", rput, route(map[string]any{"attributes": []any{map[string]any{"name": "a", "from": "subject", "regex": "(["}}}), "invalid", "attributes[0].regex", "compile"},
		{"stale route revision", rput, map[string]any{"name": "uses", "connection": "used", "revision": 1}, "conflict", "revision", "revision"},
		// Names and existence.
		{"get without name", "mail.control.connection.get", "{}", "invalid", "name", "required"},
		{"get bad name", "mail.control.route.get", `{"name":"a.b"}`, "invalid", "name", "letters"},
		{"get unknown connection", "mail.control.connection.get", `{"name":"nope"}`, "not_found", "name", "no connection named nope"},
		{"delete unknown connection", "mail.control.connection.delete", `{"name":"nope"}`, "not_found", "name", "nope"},
		{"delete unknown route", "mail.control.route.delete", `{"name":"nope"}`, "not_found", "name", "nope"},
		{"status unknown route", "mail.control.route.status", `{"name":"nope"}`, "not_found", "name", "nope"},
		{"delete used connection", "mail.control.connection.delete", `{"name":"used"}`, "conflict", "name", "uses"},
		{"list unknown field", "mail.control.route.list", `{"statuses":true}`, "invalid", "statuses", "unknown field"},
	}
	if len(tests) < 30 {
		t.Fatalf("only %d cases", len(tests))
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.snapshot()
			e := s.fail(tc.subject, tc.body, tc.code, tc.field)
			if !strings.Contains(e.Message, tc.message) {
				t.Errorf("message %q does not contain %q", e.Message, tc.message)
			}
			if after := s.snapshot(); after != before {
				t.Errorf("config bucket changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestConnectionTestsInParallel: a check waiting for a silent server does not hold up the
// check of another connection sent after it. The silent server greets only once the second
// check has answered: one at a time, the first check would have given up on its greeting
// (after 5 s) before the second could start.
func TestConnectionTestsInParallel(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	release := make(chan struct{})
	go func() {
		c, err := silent.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-release
		c.Write([]byte("* OK [CAPABILITY IMAP4rev1] late\r\n")) // then the connection closes
	}()
	draft := func(port int) []byte {
		c := imapConnection("draft")
		c["host"], c["port"], c["encryption"] = "127.0.0.1", port, "none"
		b, _ := json.Marshal(c)
		return b
	}
	slow := make(chan *nats.Msg, 1)
	go func() {
		m, err := s.nc.Request("mail.control.connection.test", draft(silent.Addr().(*net.TCPAddr).Port), 30*time.Second)
		if err != nil {
			t.Errorf("slow connection.test = %v", err)
		}
		slow <- m
	}()
	time.Sleep(200 * time.Millisecond) // the slow check is waiting for its greeting
	r, msg := s.request("mail.control.connection.test", draft(checkFreePort(t)))
	close(release)
	if r.OK || !strings.Contains(string(msg.Data), "nothing listens") {
		t.Fatalf("fast connection.test = %s, want nothing listens", msg.Data)
	}
	m := <-slow
	if m == nil {
		return // reported by the goroutine
	}
	if !strings.Contains(string(m.Data), `"stage":"greeting","ok":true`) {
		t.Errorf("slow connection.test = %s, want its greeting received after the fast check answered", m.Data)
	}
}

// TestListPages: with limit, connection.list and route.list come in pages in name order,
// each with next while more follow; after need not name an existing definition; without
// limit the list is one reply, as before paging.
func TestListPages(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	for _, n := range []string{"c", "a", "b"} {
		s.ok("mail.control.connection.put", imapConnection(n))
		s.ok("mail.control.route.put", map[string]any{"name": "r" + n, "connection": n, "disabled": true})
	}
	names := func(r schemas.Reply) string {
		var out []string
		for _, c := range r.Connections {
			out = append(out, c.Name)
		}
		for i, rt := range r.Routes {
			out = append(out, rt.Name)
			if i < len(r.Statuses) {
				out = append(out, r.Statuses[i].State)
			}
		}
		return strings.Join(out, ",") + " next=" + r.Next
	}
	for _, tc := range []struct {
		subject, req, want string
	}{
		{"connection.list", `{}`, "a,b,c next="},
		{"connection.list", `{"limit":2}`, "a,b next=b"},
		{"connection.list", `{"limit":2,"after":"b"}`, "c next="},
		{"connection.list", `{"limit":1,"after":"b"}`, "c next="},
		{"connection.list", `{"after":"a"}`, "b,c next="},
		{"connection.list", `{"limit":5,"after":"aa"}`, "b,c next="},
		{"connection.list", `{"limit":2,"after":"c"}`, " next="},
		{"route.list", `{"status":true,"limit":2}`, "ra,disabled,rb,disabled next=rb"},
		{"route.list", `{"status":true,"limit":2,"after":"rb"}`, "rc,disabled next="},
	} {
		if got := names(s.ok("mail.control."+tc.subject, tc.req)); got != tc.want {
			t.Errorf("%s %s = %s, want %s", tc.subject, tc.req, got, tc.want)
		}
	}
	s.fail("mail.control.route.list", `{"limit":-1}`, schemas.CodeInvalid, "limit")
	s.fail("mail.control.connection.list", `{"limit":"ten"}`, schemas.CodeInvalid, "limit")
}
