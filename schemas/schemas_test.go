package schemas_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/schemas"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

const baseURL = "https://mailbus.dev/schemas/"

// compile loads every embedded schema into one compiler, so the $refs between files resolve
// by $id without any network, and returns the schema at loc, a file name with an optional
// fragment ("control.schema.json#/$defs/NameRequest").
func compile(t *testing.T, loc string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	files, err := fs.Glob(schemas.Files, "*.schema.json")
	if err != nil {
		t.Fatalf("fs.Glob() = %v", err)
	}
	for _, f := range files {
		b, err := fs.ReadFile(schemas.Files, f)
		if err != nil {
			t.Fatalf("ReadFile(%s) = %v", f, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("UnmarshalJSON(%s) = %v", f, err)
		}
		if err := c.AddResource(baseURL+f, doc); err != nil {
			t.Fatalf("AddResource(%s) = %v", f, err)
		}
	}
	sch, err := c.Compile(baseURL + loc)
	if err != nil {
		t.Fatalf("Compile(%s) = %v", loc, err)
	}
	return sch
}

// instance turns a Go value or raw JSON into what the validator takes.
func instance(t *testing.T, v any) any {
	t.Helper()
	var b []byte
	switch v := v.(type) {
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatalf("json.Marshal() = %v", err)
		}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("UnmarshalJSON(%s) = %v", b, err)
	}
	return inst
}

func TestFiles(t *testing.T) {
	want := []string{"connection.schema.json", "control.schema.json", "event.schema.json", "route.schema.json"}
	files, err := fs.Glob(schemas.Files, "*.schema.json")
	if err != nil {
		t.Fatalf("fs.Glob() = %v", err)
	}
	if strings.Join(files, " ") != strings.Join(want, " ") {
		t.Fatalf("Files = %v, want %v", files, want)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			compile(t, f)
			b, err := fs.ReadFile(schemas.Files, f)
			if err != nil {
				t.Fatalf("ReadFile(%s) = %v", f, err)
			}
			var doc map[string]any
			if err := json.Unmarshal(b, &doc); err != nil {
				t.Fatalf("json.Unmarshal(%s) = %v", f, err)
			}
			if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("%s: $schema = %v", f, doc["$schema"])
			}
			if doc["$id"] != baseURL+f {
				t.Errorf("%s: $id = %v, want %s", f, doc["$id"], baseURL+f)
			}
			for _, k := range []string{"title", "description"} {
				if s, _ := doc[k].(string); s == "" {
					t.Errorf("%s: no %s", f, k)
				}
			}
			described(t, f, doc)
			defs, _ := doc["$defs"].(map[string]any)
			for name, d := range defs {
				if d, ok := d.(map[string]any); ok {
					described(t, f+"#/$defs/"+name, d)
				}
			}
		})
	}
}

// described reports every property of sch (and of the objects nested in it) that has no
// description, since a subscriber reading the schema has nothing else to go on.
func described(t *testing.T, where string, sch map[string]any) {
	t.Helper()
	props, _ := sch["properties"].(map[string]any)
	for name, p := range props {
		p, ok := p.(map[string]any)
		if !ok {
			continue // false: a forbidden property
		}
		if s, _ := p["description"].(string); s == "" {
			t.Errorf("%s: property %s has no description", where, name)
		}
		described(t, where+"."+name, p)
		if items, ok := p["items"].(map[string]any); ok {
			described(t, where+"."+name+"[]", items)
		}
	}
}

func ts(s string) *time.Time {
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &v
}

// fullEvent is an event as the mapper builds it: every slice non-nil, one attachment inline
// and one in the object store.
func fullEvent() schemas.Event {
	return schemas.Event{
		Id:          "support_imap/INBOX/1700000000/42",
		Route:       "support_inbox",
		Connection:  "support_imap",
		Bus:         0,
		Mailbox:     "INBOX",
		UidValidity: 1700000000,
		Uid:         42,
		ReceivedAt:  ts("2026-11-25T19:00:00Z"),
		MessageId:   "<abc@example.org>",
		InReplyTo:   "<prev@example.org>",
		References:  []string{"<first@example.org>", "<prev@example.org>"},
		Date:        ts("2026-11-25T18:59:58+03:00"),
		Subject:     "Заявка #42",
		From:        &schemas.Address{Name: "Иван Петров", Address: "ivan@example.org"},
		ReplyTo:     []schemas.Address{},
		To:          []schemas.Address{{Name: "Support", Address: "support@example.com"}},
		Cc:          []schemas.Address{{Name: "", Address: "boss@example.com"}},
		Bcc:         []schemas.Address{},
		TextBody:    "Добрый день",
		HtmlBody:    "<p>Добрый день</p>",
		Attachments: []schemas.Attachment{
			{
				Name: "отчёт.pdf", Extension: "pdf", ContentType: "application/pdf", Size: 5,
				Sha256:  "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
				Content: []byte("hello"),
			},
			{
				Name: "scan.tiff", Extension: "tiff", ContentType: "image/tiff", Size: 10 << 20,
				Sha256:     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
				ContentId:  "scan@example.org",
				Inline:     true,
				ContentRef: &schemas.ObjectRef{Bucket: "mail_attachments", Object: "support_imap/INBOX/1700000000/42/1"},
			},
			{
				Name: "empty", Extension: "", ContentType: "application/octet-stream",
				Sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
			},
		},
		CustomHeaders: []schemas.CustomHeader{
			{Name: "X-Ticket-Id", Value: "42", ListValues: []string{"42"}},
			{Name: "Received", Value: "from a", ListValues: []string{"from a", "from b"}},
		},
		Attributes: map[string]string{"ticket": "42"},
		Size:       5678,
		RawRef:     &schemas.ObjectRef{Bucket: "mail_attachments", Object: "raw/support_imap/INBOX/1700000000/42"},
		Warnings:   []string{"part 3: unknown charset x-unknown, kept as is"},
	}
}

// eventMap is fullEvent as generic JSON, for mutations the Go types cannot express.
func eventMap(t *testing.T) map[string]any {
	t.Helper()
	b, err := json.Marshal(fullEvent())
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("json.Unmarshal() = %v", err)
	}
	return m
}

func TestEvent(t *testing.T) {
	sch := compile(t, "event.schema.json")

	valid := []struct {
		name string
		ev   func() schemas.Event
	}{
		{"full", fullEvent},
		{"null From Date ReceivedAt", func() schemas.Event {
			e := fullEvent()
			e.From, e.Date, e.ReceivedAt = nil, nil, nil
			return e
		}},
		{"no RawRef", func() schemas.Event {
			e := fullEvent()
			e.RawRef = nil
			return e
		}},
		{"empty", func() schemas.Event {
			return schemas.Event{
				Id: "c/INBOX/1/1", Route: "r", Connection: "c", Bus: 3, Mailbox: "INBOX",
				UidValidity: 1, Uid: 1, References: []string{}, ReplyTo: []schemas.Address{},
				To: []schemas.Address{}, Cc: []schemas.Address{}, Bcc: []schemas.Address{},
				Attachments: []schemas.Attachment{}, CustomHeaders: []schemas.CustomHeader{},
				Attributes: map[string]string{}, Warnings: []string{},
			}
		}},
	}
	for _, tc := range valid {
		if err := sch.Validate(instance(t, tc.ev())); err != nil {
			t.Fatalf("validate(%s) = %v", tc.name, err)
		}
	}

	invalid := []struct {
		name   string
		mutate func(m map[string]any)
	}{
		{"missing To", func(m map[string]any) { delete(m, "To") }},
		{"null To", func(m map[string]any) { m["To"] = nil }},
		{"To a string", func(m map[string]any) { m["To"] = "support@example.com" }},
		{"Uid a string", func(m map[string]any) { m["Uid"] = "42" }},
		{"Uid over uint32", func(m map[string]any) { m["Uid"] = 1 << 32 }},
		{"unknown property", func(m map[string]any) { m["Body"] = "x" }},
		{"Bus 7", func(m map[string]any) { m["Bus"] = 7 }},
		{"Date not a time", func(m map[string]any) { m["Date"] = "yesterday" }},
		{"Attributes not strings", func(m map[string]any) { m["Attributes"] = map[string]any{"n": 1} }},
		{"From unknown property", func(m map[string]any) {
			m["From"] = map[string]any{"Name": "", "Address": "a@b", "Email": "a@b"}
		}},
		{"address without Address", func(m map[string]any) { m["Cc"] = []any{map[string]any{"Name": "x"}} }},
		{"attachment Content and ContentRef", func(m map[string]any) {
			a := m["Attachments"].([]any)[0].(map[string]any)
			a["ContentRef"] = map[string]any{"Bucket": "mail_attachments", "Object": "x"}
		}},
		{"attachment Content not base64", func(m map[string]any) {
			m["Attachments"].([]any)[0].(map[string]any)["Content"] = "not base64!"
		}},
		{"attachment unknown property", func(m map[string]any) {
			m["Attachments"].([]any)[0].(map[string]any)["Data"] = "aGVsbG8="
		}},
		{"attachment Extension with dot", func(m map[string]any) {
			m["Attachments"].([]any)[0].(map[string]any)["Extension"] = ".pdf"
		}},
		{"attachment Extension upper-case", func(m map[string]any) {
			m["Attachments"].([]any)[0].(map[string]any)["Extension"] = "PDF"
		}},
		{"attachment missing Sha256", func(m map[string]any) {
			delete(m["Attachments"].([]any)[0].(map[string]any), "Sha256")
		}},
		{"CustomHeader without ListValues", func(m map[string]any) {
			delete(m["CustomHeaders"].([]any)[0].(map[string]any), "ListValues")
		}},
		{"RawRef without Object", func(m map[string]any) { m["RawRef"] = map[string]any{"Bucket": "mail_attachments"} }},
	}
	for _, tc := range invalid {
		m := eventMap(t)
		tc.mutate(m)
		if err := sch.Validate(instance(t, m)); err == nil {
			t.Fatalf("validate(%s) = nil, want an error", tc.name)
		}
	}
}

// The examples of CONTRACT.md.
const (
	contractConnection = `{"name":"support_imap", "disabled":false, "description":"",
 "type":"imap", "host":"imap.example.com", "port":993, "encryption":"ssl",
 "auth":"basic", "username":"bot@example.com", "password":"...", "domain":"",
 "pollInterval":"60s", "idle":true, "logLevel":"errors",
 "verifyWithoutSending":true, "testRecipients":[], "tlsInsecureSkipVerify":false}`

	contractRoute = `{"name":"support_inbox", "connection":"support_imap", "disabled":false, "description":"",
 "bus":0, "mailbox":"INBOX", "select":"all", "backlog":"unseen", "after":"markRead", "moveTo":"",
 "headers":["X-Ticket-Id"], "attributes":[{"name":"ticket","from":"header:X-Ticket-Id"}],
 "includeRaw":false}`
)

// roundTrip reads raw JSON into a Go value of type T and writes it back, so the test sees
// what the Go types produce.
func roundTrip[T any](t *testing.T, raw string) []byte {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", raw, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	return b
}

// with returns raw with the properties of patch set (null deletes one).
// mustJSON marshals v.
func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	return b
}

func with(t *testing.T, raw, patch string) string {
	t.Helper()
	var m, p map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", raw, err)
	}
	if err := json.Unmarshal([]byte(patch), &p); err != nil {
		t.Fatalf("json.Unmarshal(%s) = %v", patch, err)
	}
	for k, v := range p {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	return string(b)
}

func TestConnection(t *testing.T) {
	sch := compile(t, "connection.schema.json")

	exchange := schemas.Connection{
		Name: "hr_exchange", Type: schemas.TypeExchange, Encryption: schemas.EncryptionSSL,
		ExchangeURL: "mail.example.com/EWS/Exchange.asmx", ExchangeVersion: "Exchange2016",
		Auth: schemas.AuthWindows, Username: "bot", Domain: "CORP",
		PasswordFrom: &schemas.SecretSource{File: "/run/secrets/hr"},
		PollInterval: schemas.Duration(90 * time.Second), LogLevel: schemas.LogFull,
	}
	oauth := schemas.Connection{
		Name: "gmail", Type: schemas.TypeIMAP, Host: "imap.gmail.com", Port: 993,
		Encryption: schemas.EncryptionSSL, Auth: schemas.AuthOAuth2, Username: "bot@example.com",
		OAuth2: &schemas.OAuth2{
			Provider: "google", TokenURL: "https://oauth2.googleapis.com/token", ClientID: "id",
			Scopes: []string{"https://mail.google.com/"}, ClientSecretSet: true, RefreshTokenSet: true,
		},
		LogLevel: schemas.LogOff, Revision: 7,
	}
	valid := []struct {
		name string
		conn any
	}{
		{"contract example", contractConnection},
		{"contract example via Go", roundTrip[schemas.Connection](t, contractConnection)},
		{"exchange", exchange},
		{"oauth2", oauth},
		{"oauth2 microsoft app", with(t, string(mustJSON(t, oauth)), `{"oauth2":{"provider":"microsoft","tenant":"contoso.onmicrosoft.com","clientId":"id","clientSecret":"x","scopes":["https://outlook.office365.com/.default"]}}`)},
		{"minimal", `{"name":"a","type":"imap","host":"h"}`},
		{"pollInterval 1m30s", with(t, contractConnection, `{"pollInterval":"1m30s"}`)},
		{"pollInterval 1.5h", with(t, contractConnection, `{"pollInterval":"1.5h"}`)},
		{"passwordFrom env", with(t, contractConnection, `{"password":null,"passwordFrom":{"env":"PW"}}`)},
	}
	for _, tc := range valid {
		if err := sch.Validate(instance(t, tc.conn)); err != nil {
			t.Fatalf("validate(%s) = %v", tc.name, err)
		}
	}

	invalid := []struct{ name, patch string }{
		{"bad name", `{"name":"support-imap"}`},
		{"empty name", `{"name":""}`},
		{"long name", `{"name":"` + strings.Repeat("a", 65) + `"}`},
		{"no name", `{"name":null}`},
		{"port 0", `{"port":0}`},
		{"port 65536", `{"port":65536}`},
		{"port a string", `{"port":"993"}`},
		{"encryption SSL", `{"encryption":"SSL"}`},
		{"type pop3", `{"type":"pop3"}`},
		{"auth ntlm", `{"auth":"ntlm"}`},
		{"logLevel debug", `{"logLevel":"debug"}`},
		{"host with scheme", `{"host":"imaps://imap.example.com"}`},
		{"imap without host", `{"host":null}`},
		{"pollInterval a number", `{"pollInterval":60}`},
		{"pollInterval without unit", `{"pollInterval":"60"}`},
		{"pollInterval negative", `{"pollInterval":"-1s"}`},
		{"passwordFrom both", `{"passwordFrom":{"env":"PW","file":"/pw"}}`},
		{"passwordFrom empty", `{"passwordFrom":{}}`},
		{"passwordFrom other", `{"passwordFrom":{"vault":"x"}}`},
		{"oauth2 without settings", `{"auth":"oauth2"}`},
		{"oauth2 unknown property", `{"auth":"oauth2","oauth2":{"secret":"x"}}`},
		{"oauth2 unknown provider", `{"auth":"oauth2","oauth2":{"provider":"yahoo","accessToken":"t"}}`},
		{"oauth2 tenant with a slash", `{"auth":"oauth2","oauth2":{"provider":"microsoft","tenant":"a/b"}}`},
		{"oauth2 empty scope", `{"auth":"oauth2","oauth2":{"accessToken":"t","scopes":[""]}}`},
		{"oauth2 scope with a space", `{"auth":"oauth2","oauth2":{"accessToken":"t","scopes":["a b"]}}`},
		{"oauth2 token url without scheme", `{"auth":"oauth2","oauth2":{"accessToken":"t","tokenUrl":"idp.example.com/token"}}`},
		{"exchange without url", `{"type":"exchange","host":null,"exchangeVersion":"Exchange2016"}`},
		{"exchange url with scheme", `{"type":"exchange","exchangeUrl":"https://mail.example.com/EWS/Exchange.asmx","exchangeVersion":"Exchange2016"}`},
		{"exchange version 2020", `{"type":"exchange","exchangeUrl":"mail.example.com","exchangeVersion":"Exchange2020"}`},
		{"unknown property", `{"server":"imap.example.com"}`},
	}
	for _, tc := range invalid {
		if err := sch.Validate(instance(t, with(t, contractConnection, tc.patch))); err == nil {
			t.Fatalf("validate(%s) = nil, want an error", tc.name)
		}
	}
}

func TestRoute(t *testing.T) {
	sch := compile(t, "route.schema.json")

	valid := []struct {
		name  string
		route any
	}{
		{"contract example", contractRoute},
		{"contract example via Go", roundTrip[schemas.Route](t, contractRoute)},
		{"all headers", with(t, contractRoute, `{"headers":null}`)},
		{"Go nil slices", schemas.Route{
			Name: "r", Connection: "c", Bus: 3, Mailbox: "INBOX",
			Select: schemas.SelectAll, Backlog: schemas.BacklogNone, After: schemas.AfterMove, MoveTo: "Done",
		}},
		{"regex rule", with(t, contractRoute, `{"attributes":[{"name":"n","from":"subject","regex":"#(\\d+)"}]}`)},
		{"minimal", `{"name":"r","connection":"c"}`},
		{"filter", with(t, contractRoute, `{"filter":{"from":"@example.org","subject":"Заявка","headers":[{"name":"X-Ticket-Id","contains":""}],"since":"2026-11-01","before":"","minSize":0,"maxSize":1048576}}`)},
		{"filter via Go", roundTrip[schemas.Route](t, with(t, contractRoute, `{"filter":{"to":"support@","headers":[{"name":"X-Prio"}]}}`))},
		{"null filter", with(t, contractRoute, `{"filter":null}`)},
	}
	for _, tc := range valid {
		if err := sch.Validate(instance(t, tc.route)); err != nil {
			t.Fatalf("validate(%s) = %v", tc.name, err)
		}
	}

	invalid := []struct{ name, patch string }{
		{"bad name", `{"name":"support inbox"}`},
		{"bad connection", `{"connection":"support.imap"}`},
		{"bus 4", `{"bus":4}`},
		{"bus -1", `{"bus":-1}`},
		{"select unread", `{"select":"unread"}`},
		{"after read", `{"after":"read"}`},
		{"move without moveTo", `{"after":"move"}`},
		{"header with colon", `{"headers":["X-Ticket-Id:"]}`},
		{"rule from body", `{"attributes":[{"name":"n","from":"body"}]}`},
		{"rule without name", `{"attributes":[{"from":"subject"}]}`},
		{"rule bad regex", `{"attributes":[{"name":"n","from":"subject","regex":"("}]}`},
		{"unknown property", `{"flags":["\\Seen"]}`},
		{"filter unknown condition", `{"filter":{"body":"x"}}`},
		{"filter date with time", `{"filter":{"since":"2026-11-01T00:00:00Z"}}`},
		{"filter header without name", `{"filter":{"headers":[{"contains":"x"}]}}`},
		{"filter line break", `{"filter":{"subject":"a\r\nb"}}`},
		{"filter negative size", `{"filter":{"minSize":-1}}`},
	}
	for _, tc := range invalid {
		if err := sch.Validate(instance(t, with(t, contractRoute, tc.patch))); err == nil {
			t.Fatalf("validate(%s) = nil, want an error", tc.name)
		}
	}
}

func TestControl(t *testing.T) {
	sch := compile(t, "control.schema.json")

	var c schemas.Connection
	if err := json.Unmarshal([]byte(contractConnection), &c); err != nil {
		t.Fatalf("json.Unmarshal() = %v", err)
	}
	c.Password, c.PasswordSet, c.Revision = "", true, 3
	var r schemas.Route
	if err := json.Unmarshal([]byte(contractRoute), &r); err != nil {
		t.Fatalf("json.Unmarshal() = %v", err)
	}

	valid := []struct {
		name  string
		reply any
	}{
		{"connection.put", schemas.Reply{OK: true, Connection: &c}},
		{"connection.list", schemas.Reply{OK: true, Connections: []schemas.Connection{c}}},
		{"connection.list empty", `{"ok":true,"connections":[]}`},
		{"route.get", schemas.Reply{OK: true, Route: &r}},
		{"route.list with status", schemas.Reply{
			OK: true, Routes: []schemas.Route{r},
			Statuses: []schemas.RouteStatus{{Route: r.Name, State: schemas.StateStarting}},
		}},
		{"route.status", schemas.Reply{OK: true, Status: &schemas.RouteStatus{
			State: schemas.StateRunning, Owner: "mailbus-0", LastPollAt: ts("2026-11-25T19:00:00Z"),
			LastSuccessAt: ts("2026-11-25T19:00:00Z"), Published: 12, UidValidity: 1700000000,
			LastUid: 42, Pending: 3,
		}}},
		{"connection.test failed", schemas.Reply{
			OK: false,
			Stages: []schemas.Stage{
				{Stage: "dial", OK: true, MS: 3},
				{Stage: "login", OK: false, MS: 40, Error: "authentication failed"},
			},
			Capabilities: []string{"IMAP4rev1", "IDLE", "UIDPLUS"},
			Error:        &schemas.Error{Code: schemas.CodeInvalid, Message: "authentication failed", Field: "password"},
		}},
		{"connection.test ok", schemas.Reply{
			OK:      true,
			Stages:  []schemas.Stage{{Stage: "select", OK: true, MS: 2, Detail: "INBOX"}},
			Mailbox: &schemas.MailboxCheck{Name: "INBOX", Messages: 10, Unseen: 2, UidValidity: 1, UidNext: 11},
		}},
		{"connection.log", schemas.Reply{OK: true, Entries: []schemas.LogEntry{{
			Time: time.Date(2026, 11, 25, 19, 0, 0, 0, time.UTC), Level: "error", Route: "support_inbox",
			Event: "fetch", Message: "connection reset", Fields: map[string]any{"uid": 42},
		}}}},
		{"connection.log text", schemas.Reply{OK: true, Text: "2026-11-25T19:00:00Z error fetch\n"}},
		{"not found", schemas.Reply{Error: &schemas.Error{Code: schemas.CodeNotFound, Message: "no connection x"}}},
		{"contract error", `{"ok":false,"error":{"code":"invalid","message":"want 1..65535","field":"imap.host"}}`},
	}
	for _, tc := range valid {
		if err := sch.Validate(instance(t, tc.reply)); err != nil {
			t.Fatalf("validate(%s) = %v", tc.name, err)
		}
	}

	leaky := c
	leaky.Password = "hunter2"
	leakyOAuth := c
	leakyOAuth.Auth, leakyOAuth.OAuth2 = schemas.AuthOAuth2, &schemas.OAuth2{RefreshToken: "secret"}
	invalid := []struct {
		name  string
		reply any
	}{
		{"no ok", `{"connections":[]}`},
		{"ok false without error", `{"ok":false}`},
		{"error code unknown", `{"ok":false,"error":{"code":"forbidden","message":"no"}}`},
		{"error without message", `{"ok":false,"error":{"code":"internal"}}`},
		{"password in reply", schemas.Reply{OK: true, Connection: &leaky}},
		{"password in list", schemas.Reply{OK: true, Connections: []schemas.Connection{leaky}}},
		{"oauth2 secret in reply", schemas.Reply{OK: true, Connection: &leakyOAuth}},
		{"bad route in reply", `{"ok":true,"route":{"name":"r","connection":"c","bus":9}}`},
		{"status state unknown", `{"ok":true,"status":{"state":"sleeping","owner":"","lastPollAt":null,"lastSuccessAt":null,"lastError":"","published":0,"deadLettered":0,"uidValidity":0,"lastUid":0,"pending":0}}`},
		{"status missing lastUid", `{"ok":true,"status":{"state":"idle","owner":"","lastPollAt":null,"lastSuccessAt":null,"lastError":"","published":0,"deadLettered":0,"uidValidity":0,"pending":0}}`},
		{"stage ms a string", `{"ok":true,"stages":[{"stage":"dial","ok":true,"ms":"3"}]}`},
		{"unknown property", `{"ok":true,"result":{}}`},
	}
	for _, tc := range invalid {
		if err := sch.Validate(instance(t, tc.reply)); err == nil {
			t.Fatalf("validate(%s) = nil, want an error", tc.name)
		}
	}
}

func TestControlRequests(t *testing.T) {
	tests := []struct {
		def, name string
		req       any
		ok        bool
	}{
		{"NameRequest", "go", schemas.NameRequest{Name: "support_imap"}, true},
		{"NameRequest", "empty", `{}`, false},
		{"NameRequest", "bad name", `{"name":"a.b"}`, false},
		{"ListRequest", "empty", `{}`, true},
		{"ListRequest", "go", schemas.ListRequest{Status: true}, true},
		{"ListRequest", "unknown", `{"all":true}`, false},
		{"ListRequest", "page", `{"status":true,"limit":1000,"after":"support_inbox"}`, true},
		{"ListRequest", "go page", schemas.ListRequest{Limit: 2, After: "a"}, true},
		{"ListRequest", "limit negative", `{"limit":-1}`, false},
		{"LogRequest", "contract", `{"name":"x","limit":1000,"since":"2026-11-25T19:00:00Z"}`, true},
		{"LogRequest", "go", schemas.LogRequest{Name: "x", Since: ts("2026-11-25T19:00:00Z"), Format: "text"}, true},
		{"LogRequest", "since not a time", `{"name":"x","since":"yesterday"}`, false},
		{"LogRequest", "limit negative", `{"name":"x","limit":-1}`, false},
		{"LogRequest", "format csv", `{"name":"x","format":"csv"}`, false},
	}
	for _, tc := range tests {
		err := compile(t, "control.schema.json#/$defs/"+tc.def).Validate(instance(t, tc.req))
		if (err == nil) != tc.ok {
			t.Fatalf("validate(%s %s) = %v, want ok %v", tc.def, tc.name, err, tc.ok)
		}
	}
}
