package validate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/schemas"
)

// TestConnectionDefaults: a connection that leaves things out gets the defaults a put
// stores, and a port of 0 counts as absent.
func TestConnectionDefaults(t *testing.T) {
	c := schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot"}
	if e := validate.Connection(&c); e != nil {
		t.Fatalf("Connection() = %v", e)
	}
	if c.Port != 993 || c.Encryption != schemas.EncryptionSSL || c.Auth != schemas.AuthBasic ||
		c.LogLevel != schemas.LogErrors || time.Duration(c.PollInterval) != validate.DefaultPollInterval {
		t.Errorf("Connection() filled %+v; want port 993, ssl, basic, errors, 60s", c)
	}
	tls := schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot", Encryption: schemas.EncryptionTLS}
	if e := validate.Connection(&tls); e != nil || tls.Port != 143 {
		t.Errorf("Connection(tls) = %v, port %d; want port 143", e, tls.Port)
	}
}

// TestConnectionRefused: each refusal names the field, with a message that says what to
// write instead.
func TestConnectionRefused(t *testing.T) {
	imap := func(change func(*schemas.Connection)) schemas.Connection {
		c := schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot"}
		change(&c)
		return c
	}
	for _, tc := range []struct {
		name, field, message string
		c                    schemas.Connection
	}{
		{"name", "name", "letters, digits or _", imap(func(c *schemas.Connection) { c.Name = "a.b" })},
		{"type", "type", "want one of imap, exchange", imap(func(c *schemas.Connection) { c.Type = "pop3" })},
		{"protocol in host", "host", `drop "imaps://"`, imap(func(c *schemas.Connection) { c.Host = "imaps://imap.example.com" })},
		{"port in host", "host", "set port instead", imap(func(c *schemas.Connection) { c.Host = "imap.example.com:993" })},
		{"port", "port", "want 1..65535", imap(func(c *schemas.Connection) { c.Port = 70000 })},
		{"no username", "username", "required for auth basic", imap(func(c *schemas.Connection) { c.Username = "" })},
		{"windows without domain", "domain", "DOMAIN\\user", imap(func(c *schemas.Connection) { c.Auth = schemas.AuthWindows })},
		{"password and passwordFrom", "passwordFrom", "not both", imap(func(c *schemas.Connection) {
			c.Password, c.PasswordFrom = "pw", &schemas.SecretSource{Env: "PW"}
		})},
		{"poll interval", "pollInterval", "at least 1s", imap(func(c *schemas.Connection) { c.PollInterval = schemas.Duration(time.Millisecond) })},
		{"test recipient", "testRecipients[1]", "bare e-mail address", imap(func(c *schemas.Connection) {
			c.TestRecipients = []string{"bot@example.com", "Bot <bot@example.com>"}
		})},
		{"exchange version", "exchangeVersion", "Exchange2016", schemas.Connection{Name: "c", Type: schemas.TypeExchange, ExchangeURL: "mail.example.com/EWS/Exchange.asmx", Username: "bot"}},
	} {
		c := tc.c
		e := validate.Connection(&c)
		if e == nil || e.Code != schemas.CodeInvalid || e.Field != tc.field || !strings.Contains(e.Message, tc.message) {
			t.Errorf("%s: Connection() = %+v; want invalid %s saying %q", tc.name, e, tc.field, tc.message)
		}
	}
}

// TestCredentials: a connection that logs in needs a password or passwordFrom.
func TestCredentials(t *testing.T) {
	c := schemas.Connection{Name: "c", Type: schemas.TypeIMAP, Host: "imap.example.com", Username: "bot"}
	if e := validate.Connection(&c); e != nil {
		t.Fatal(e)
	}
	if e := validate.Credentials(&c); e == nil || e.Field != "password" {
		t.Errorf("Credentials() without a password = %v; want invalid password", e)
	}
	c.PasswordFrom = &schemas.SecretSource{File: "/run/secrets/pw"}
	if e := validate.Credentials(&c); e != nil {
		t.Errorf("Credentials() with passwordFrom = %v", e)
	}
}

// TestRoute: a route gets its defaults; each refusal names the field.
func TestRoute(t *testing.T) {
	r := schemas.Route{Name: "r", Connection: "c"}
	if e := validate.Route(&r); e != nil {
		t.Fatalf("Route() = %v", e)
	}
	if r.Mailbox != validate.DefaultMailbox || r.Select != schemas.SelectAll || r.Backlog != schemas.BacklogUnseen || r.After != schemas.AfterMarkRead || r.Filter != nil {
		t.Errorf("Route() filled %+v; want INBOX, all, unseen, markRead, no filter", r)
	}
	for _, tc := range []struct {
		name, field, message string
		r                    schemas.Route
	}{
		{"bus", "bus", "want 0..3", schemas.Route{Name: "r", Connection: "c", Bus: 4}},
		{"move without moveTo", "moveTo", "required for after move", schemas.Route{Name: "r", Connection: "c", After: schemas.AfterMove}},
		{"moveTo without move", "moveTo", "only used with after move", schemas.Route{Name: "r", Connection: "c", MoveTo: "Done"}},
		{"header", "headers[0]", "printable ASCII", schemas.Route{Name: "r", Connection: "c", Headers: []string{"X Ticket"}}},
		{"attribute twice", "attributes[1].name", "defined twice", schemas.Route{Name: "r", Connection: "c", Attributes: []schemas.AttributeRule{
			{Name: "a", From: "subject"}, {Name: "a", From: "from"},
		}}},
		{"attribute regex", "attributes[0].regex", "does not compile", schemas.Route{Name: "r", Connection: "c", Attributes: []schemas.AttributeRule{
			{Name: "a", From: "subject", Regex: "("},
		}}},
		{"filter", "filter.since", "YYYY-MM-DD", schemas.Route{Name: "r", Connection: "c", Filter: &schemas.RouteFilter{Since: "yesterday"}}},
	} {
		r := tc.r
		e := validate.Route(&r)
		if e == nil || e.Code != schemas.CodeInvalid || e.Field != tc.field || !strings.Contains(e.Message, tc.message) {
			t.Errorf("%s: Route() = %+v; want invalid %s saying %q", tc.name, e, tc.field, tc.message)
		}
	}
}

// TestDecode: a request is decoded strictly, and a refusal names the field by its JSON
// path, also for an unknown field deep inside and for a bad duration.
func TestDecode(t *testing.T) {
	var c schemas.Connection
	if e := validate.Decode([]byte("  "), &c); e != nil {
		t.Errorf("Decode(empty) = %v; want it read as {}", e)
	}
	for _, tc := range []struct{ name, data, field, message string }{
		{"unknown nested", `{"oauth2":{"secret":"x"}}`, "oauth2.secret", "unknown field"},
		{"type", `{"port":"993"}`, "port", "want a whole number"},
		{"duration", `{"pollInterval":"soon"}`, "pollInterval", "pollInterval"},
		{"trailing", `{} {}`, "", "after the JSON value"},
		{"syntax", `{"name":`, "", "ends too early"},
	} {
		var c schemas.Connection
		e := validate.Decode([]byte(tc.data), &c)
		if e == nil || e.Code != schemas.CodeInvalid || e.Field != tc.field || !strings.Contains(e.Message, tc.message) {
			t.Errorf("%s: Decode(%s) = %+v; want invalid %q saying %q", tc.name, tc.data, e, tc.field, tc.message)
		}
	}
}
