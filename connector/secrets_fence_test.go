package connector_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// The tests of issue 19: a person who may send control commands runs a server of their own
// that records what it receives, and tries to make mailbus send it the secrets it keeps.

const (
	cput  = "mail.control.connection.put"
	ctest = "mail.control.connection.test"
)

// at is a connection to an IMAP server of the tests, plain text, logging in as evil, with
// extra fields set (nil deletes one).
func at(name string, h *connector.HostileIMAP, extra map[string]any) map[string]any {
	c := map[string]any{
		"name": name, "type": "imap", "host": h.Host(), "port": h.Port(), "encryption": "none",
		"auth": "basic", "username": "evil",
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// noLeak fails the test when a server that was not given them received any of secrets.
func noLeak(t *testing.T, what string, leaked []string) {
	t.Helper()
	if len(leaked) > 0 {
		t.Errorf("%s received %d secret(s) it was not given for: %q", what, len(leaked), leaked)
	}
}

// refused sends a command that must be refused with code invalid and field, and returns
// the error (nil when it was not refused). Unlike s.fail it does not stop the test, so a
// test that finds a command accepted goes on to show where the secret went.
func refused(t *testing.T, s *testService, subject string, body any, field string) *schemas.Error {
	t.Helper()
	r, msg := s.request(subject, body)
	if r.OK || r.Error == nil || msg.Header.Get(micro.ErrorCodeHeader) != "400" {
		t.Errorf("%s %v: reply %.300s, want refused (invalid, %s)", subject, body, msg.Data, field)
		return nil
	}
	if r.Error.Code != "invalid" || r.Error.Field != field {
		t.Errorf("%s %v: error %+v, want invalid %s", subject, body, *r.Error, field)
	}
	return r.Error
}

// unchanged fails the test when the config bucket moved since before.
func unchanged(t *testing.T, s *testService, before string) {
	t.Helper()
	if after := s.snapshot(); after != before {
		t.Errorf("a refused command changed the bucket: %s, was %s", after, before)
	}
}

// TestPasswordFromEnvFenced is path 1: passwordFrom.env names mailbus's own settings
// (MAILBUS_SECRET_KEY, the NATS password, the console token) or any other variable of the
// process. Test and put are refused naming passwordFrom.env, the hostile server is never
// dialled, nothing is stored; a variable under MAILBUS_CREDENTIAL_ENV_PREFIX works.
func TestPasswordFromEnvFenced(t *testing.T) {
	raw := make([]byte, 32)
	rand.Read(raw)
	key := base64.StdEncoding.EncodeToString(raw)
	secrets := map[string]string{
		"MAILBUS_SECRET_KEY":    key,
		"MAILBUS_NATS_PASSWORD": "nats-pw-" + rand.Text(),
		"MAILBUS_NATS_TOKEN":    "nats-token-" + rand.Text(),
		"MAILBUS_ADMIN_TOKEN":   "admin-token-" + rand.Text(),
		"CLOUD_SECRET_KEY":      "cloud-" + rand.Text(),
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	cred := "cred-support-" + rand.Text()
	t.Setenv("MAILBUS_CRED_SUPPORT", cred)
	log := &svcLog{}
	cfg := svcConfig(t)
	cfg.SecretKey = key
	s := startService(t, cfg, nil, log)
	evil := connector.StartHostileIMAP(t)
	s.ok(cput, imapConnection("kept"))
	before := s.snapshot()

	names := append(slices.Collect(maps.Keys(secrets)), "mailbus_secret_key", "PATH", "HOME", "MAILBUS_CRED_", "MAILBUS_CRED_A-B")
	for _, name := range names {
		c := at("evil", evil, map[string]any{"passwordFrom": map[string]string{"env": name}})
		e := refused(t, s, ctest, c, "passwordFrom.env")
		if e != nil && !strings.Contains(e.Message, name) {
			t.Errorf("test with passwordFrom.env %s: message %q does not name it", name, e.Message)
		}
		refused(t, s, cput, c, "passwordFrom.env")
	}
	unchanged(t, s, before)
	if n := evil.Connections(); n != 0 {
		t.Errorf("the hostile server was dialled %d times", n)
	}
	all := slices.Collect(maps.Values(secrets))
	noLeak(t, "the hostile IMAP server", evil.Leaked(all...))
	for _, sec := range all {
		if strings.Contains(log.String(), sec) {
			t.Errorf("the log contains the value of a variable")
		}
	}

	// A variable under the prefix is read, and sent where the connection says: the server
	// records what it gets (the test would not notice a leak otherwise).
	r, _ := s.request(ctest, at("evil", evil, map[string]any{"passwordFrom": map[string]string{"env": "MAILBUS_CRED_SUPPORT"}}))
	if r.OK || r.Error == nil || r.Error.Field != "password" {
		t.Errorf("test with a credential variable = %+v, want a refused login", r.Error)
	}
	if got := evil.Leaked(cred); len(got) != 1 {
		t.Errorf("the server was not sent the credential variable: %q", evil.Received())
	}
	noLeak(t, "the hostile IMAP server", evil.Leaked(all...))
}

// TestPasswordFromEnvOwnSettingsWhateverPrefix: with MAILBUS_CREDENTIAL_ENV_PREFIX=MAILBUS_
// the settings of mailbus are still never read.
func TestPasswordFromEnvOwnSettingsWhateverPrefix(t *testing.T) {
	t.Setenv("MAILBUS_SECRET_KEY", "not-a-key-but-secret")
	t.Setenv("MAILBUS_SUPPORT_PW", "support-pw")
	cfg := svcConfig(t)
	cfg.CredentialEnvPrefix = "MAILBUS_"
	s := startService(t, cfg, nil, nil)
	evil := connector.StartHostileIMAP(t)
	for _, name := range []string{"MAILBUS_SECRET_KEY", "MAILBUS_NATS_PASSWORD", "MAILBUS_NATS_SOMETHING_NEW", "MAILBUS_ADMIN_TOKEN",
		"MAILBUS_DATA_DIR", "MAILBUS_CREDENTIAL_DIR", "MAILBUS_ALLOWED_HOSTS", "OTHER"} {
		refused(t, s, ctest, at("evil", evil, map[string]any{"passwordFrom": map[string]string{"env": name}}), "passwordFrom.env")
	}
	if n := evil.Connections(); n != 0 {
		t.Errorf("the hostile server was dialled %d times", n)
	}
	s.ok(cput, at("ok", evil, map[string]any{"passwordFrom": map[string]string{"env": "MAILBUS_SUPPORT_PW"}}))
}

// TestPasswordFromFileFenced is path 2: passwordFrom.file names a file outside
// MAILBUS_CREDENTIAL_DIR, reaches one through a link or .., or names something that is
// not a one-line regular file. Test and put are refused naming passwordFrom.file, the
// hostile server is never dialled, nothing is stored. A file that turns into a link
// leading out after the put is refused when it is read.
func TestPasswordFromFileFenced(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "secrets")
	outside := filepath.Join(base, "outside")
	outsideSecret := "outside-" + rand.Text()
	filePW := "file-pw-" + rand.Text()
	write := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(outside, outsideSecret+"\n")
	write(filepath.Join(dir, "imap"), filePW+"\n")
	write(filepath.Join(dir, "multi"), "line-one-"+rand.Text()+"\nline-two\n")
	write(filepath.Join(dir, "empty"), "\n")
	for link, target := range map[string]string{"passwd": "/etc/passwd", "out": "../outside", "up": ".."} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	fifo := mkfifo(t, filepath.Join(dir, "fifo"))
	passwd, _ := os.ReadFile("/etc/passwd")
	firstLine, _, _ := strings.Cut(string(passwd), "\n")

	cfg := svcConfig(t)
	cfg.CredentialDir = dir
	s := startService(t, cfg, nil, nil)
	evil := connector.StartHostileIMAP(t)
	s.ok(cput, imapConnection("kept"))
	before := s.snapshot()

	files := []string{"/etc/passwd", "/etc/hostname", "../outside", dir + "/../outside", outside, "passwd", "out", "up/outside",
		"up", "multi", "empty", "sub", dir, dir + "/", "."}
	if fifo {
		files = append(files, "fifo")
	}
	for _, f := range files {
		c := at("evil", evil, map[string]any{"passwordFrom": map[string]string{"file": f}})
		refused(t, s, ctest, c, "passwordFrom.file")
		refused(t, s, cput, c, "passwordFrom.file")
	}
	unchanged(t, s, before)
	if n := evil.Connections(); n != 0 {
		t.Errorf("the hostile server was dialled %d times", n)
	}
	leaks := []string{outsideSecret, "line-two"}
	if firstLine != "" {
		leaks = append(leaks, firstLine)
	}
	noLeak(t, "the hostile IMAP server", evil.Leaked(leaks...))

	// A file in the directory is read (by name or path), one line, its newline dropped.
	for _, f := range []string{"imap", filepath.Join(dir, "imap")} {
		s.request(ctest, at("evil", evil, map[string]any{"passwordFrom": map[string]string{"file": f}}))
	}
	if !strings.Contains(string(evil.Received()), `LOGIN "evil" "`+filePW+`"`) && !strings.Contains(string(evil.Received()), `LOGIN evil `+filePW) {
		t.Errorf("the server was not sent the credential file as one line: %q", evil.Received())
	}

	// A saved connection whose file becomes a link leading out is refused when read.
	s.ok(cput, at("saved", evil, map[string]any{"passwordFrom": map[string]string{"file": "imap"}}))
	os.Remove(filepath.Join(dir, "imap"))
	if err := os.Symlink("../outside", filepath.Join(dir, "imap")); err != nil {
		t.Fatal(err)
	}
	refused(t, s, ctest, map[string]string{"name": "saved"}, "passwordFrom.file")
	noLeak(t, "the hostile IMAP server", evil.Leaked(leaks...))
}

// TestPasswordFromCheckedWhenRouteStarts: a definition stored before the fence (written to
// KV as an older mailbus would have) is refused when its route starts and when tested by
// name; the real IMAP worker never dials the hostile server.
func TestPasswordFromCheckedWhenRouteStarts(t *testing.T) {
	raw := make([]byte, 32)
	rand.Read(raw)
	key := base64.StdEncoding.EncodeToString(raw)
	t.Setenv("MAILBUS_SECRET_KEY", key)
	cfg := svcConfig(t)
	cfg.SecretKey = key
	s := runService(t, cfg, nil)
	evil := connector.StartHostileIMAP(t)
	old := schemas.Connection{
		Name: "old", Type: "imap", Host: evil.Host(), Port: evil.Port(), Encryption: "none", Auth: "basic",
		Username: "evil", PasswordFrom: &schemas.SecretSource{Env: "MAILBUS_SECRET_KEY"}, LogLevel: "errors",
		PollInterval: schemas.Duration(time.Minute),
	}
	b, _ := json.Marshal(old)
	if _, err := s.kv.Put(context.Background(), "connection.old", b); err != nil {
		t.Fatal(err)
	}
	refused(t, s, ctest, map[string]string{"name": "old"}, "passwordFrom.env")
	s.ok("mail.control.route.put", inboxRoute("r_old", "old"))
	st := s.waitStatus("r_old", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if !strings.Contains(st.LastError, "passwordFrom.env") {
		t.Errorf("status = %+v, want an error naming passwordFrom.env", st)
	}
	if n := evil.Connections(); n != 0 {
		t.Errorf("the hostile server was dialled %d times", n)
	}
	noLeak(t, "the hostile IMAP server", evil.Leaked(key))
}

// TestStoredPasswordBoundToServer is path 3: a put that moves a connection to another
// server, user or weaker protection without the password is refused naming password (and
// saying why), nothing is stored, a draft test never takes the stored password, and a test
// of the saved connection still sends it only to the server it was given for.
func TestStoredPasswordBoundToServer(t *testing.T) {
	prod := connector.StartHostileIMAP(t) // the server the password was given for
	evil := connector.StartHostileIMAP(t)
	ews := connector.StartHostileTokenEndpoint(t) // records any HTTP request: a hostile EWS
	const pw = "S3cret-Prod-Pw"
	s := startService(t, svcConfig(t), nil, nil)
	s.ok(cput, map[string]any{
		"name": "prod", "type": "imap", "host": "localhost", "port": prod.Port(), "encryption": "none",
		"auth": "basic", "username": "bot@example.com", "password": pw,
	})
	s.ok(cput, map[string]any{
		"name": "tls", "type": "imap", "host": "imap.example.com", "encryption": "ssl",
		"auth": "basic", "username": "bot@example.com", "password": pw,
	})
	s.ok(cput, map[string]any{
		"name": "ex", "type": "exchange", "exchangeUrl": fmt.Sprintf("localhost:%d/EWS/Exchange.asmx", checkFreePort(t)), "exchangeVersion": "Exchange2016",
		"auth": "basic", "username": "bot@example.com", "password": pw,
	})
	before := s.snapshot()
	evilEWS := strings.TrimPrefix(ews.URL(), "http://")
	for _, tc := range []struct {
		name, why string
		c         map[string]any
	}{
		{"the issue's put", "host", map[string]any{"name": "prod", "type": "imap", "host": evil.Host(), "port": evil.Port(), "encryption": "none", "auth": "basic", "username": "bot@example.com"}},
		{"port", "port", map[string]any{"name": "prod", "type": "imap", "host": "localhost", "port": evil.Port(), "encryption": "none", "auth": "basic", "username": "bot@example.com"}},
		{"username", "username", map[string]any{"name": "prod", "type": "imap", "host": "localhost", "port": prod.Port(), "encryption": "none", "auth": "basic", "username": "evil"}},
		{"encryption none", "encryption", map[string]any{"name": "tls", "type": "imap", "host": "imap.example.com", "port": 993, "encryption": "none", "auth": "basic", "username": "bot@example.com"}},
		{"certificates unchecked", "tlsInsecureSkipVerify", map[string]any{"name": "tls", "type": "imap", "host": "imap.example.com", "encryption": "ssl", "auth": "basic", "username": "bot@example.com", "tlsInsecureSkipVerify": true}},
		{"auth windows", "auth", map[string]any{"name": "tls", "type": "imap", "host": "imap.example.com", "encryption": "ssl", "auth": "windows", "username": "bot@example.com", "domain": "CORP"}},
		{"type exchange", "type", map[string]any{"name": "tls", "type": "exchange", "exchangeUrl": evilEWS, "exchangeVersion": "Exchange2016", "auth": "basic", "username": "bot@example.com"}},
		{"exchangeUrl", "exchangeUrl", map[string]any{"name": "ex", "type": "exchange", "exchangeUrl": evilEWS, "encryption": "none", "exchangeVersion": "Exchange2016", "auth": "basic", "username": "bot@example.com"}},
	} {
		e := refused(t, s, cput, tc.c, "password")
		if e != nil && (!strings.Contains(e.Message, tc.why) || !strings.Contains(e.Message, "give the password again")) {
			t.Errorf("%s: message %q does not say that %s changed and the password is needed", tc.name, e.Message, tc.why)
		}
		unchanged(t, s, before)
		// The same as a draft: refused, the stored password is not taken.
		refused(t, s, ctest, tc.c, "password")
	}

	// The saved connections still send the password only where it was given for.
	s.request(ctest, map[string]string{"name": "prod"})
	s.request(ctest, map[string]string{"name": "ex"}) // nothing listens there
	if len(prod.Leaked(pw)) != 1 {
		t.Errorf("the saved connection did not send its password to its own server: %q", prod.Received())
	}
	if n := evil.Connections(); n != 0 {
		t.Errorf("the hostile server was dialled %d times", n)
	}
	noLeak(t, "the hostile IMAP server", evil.Leaked(pw))
	if n := ews.Requests(); n != 0 {
		t.Errorf("the hostile EWS endpoint got %d requests", n)
	}
	noLeak(t, "the hostile EWS endpoint", ews.Leaked(pw))

	// A put that keeps server and login keeps the password; one that carries the password
	// may move.
	r := s.ok(cput, map[string]any{"name": "prod", "type": "imap", "host": "LOCALHOST", "port": prod.Port(), "encryption": "none",
		"auth": "basic", "username": "bot@example.com", "description": "changed", "pollInterval": "5m"})
	if !r.Connection.PasswordSet {
		t.Error("a put that changes only the description dropped the password")
	}
	s.ok(cput, map[string]any{"name": "tls", "type": "imap", "host": "imap.example.com", "port": 993, "encryption": "tls", "auth": "basic", "username": "bot@example.com"})
	s.ok(cput, at("prod", evil, map[string]any{"password": "given-to-evil"}))
	s.request(ctest, map[string]string{"name": "prod"})
	if len(evil.Leaked("given-to-evil")) != 1 {
		t.Errorf("the server was not sent the password given for it: %q", evil.Received())
	}
	noLeak(t, "the hostile IMAP server", evil.Leaked(pw))
}

// TestOAuth2SecretsBoundToTokenEndpoint is the OAuth2 case of path 3: a put that changes
// the token URL, client, tenant, preset or the mail server without the client secret and
// refresh token is refused naming the secret; a draft never takes them; the saved
// connection still asks only its own token endpoint. The hostile endpoint receives nothing.
func TestOAuth2SecretsBoundToTokenEndpoint(t *testing.T) {
	ts := testkit.StartTokenServer(t, time.Hour, false)
	evilTokens := connector.StartHostileTokenEndpoint(t)
	mail := connector.StartHostileIMAP(t) // the mail server: refuses the token, records it
	evil := connector.StartHostileIMAP(t)
	rt := ts.NewRefresh()
	s := startService(t, svcConfig(t), nil, nil)
	conn := func(oauth map[string]any, extra map[string]any) map[string]any {
		c := map[string]any{"name": "oauth", "type": "imap", "host": "localhost", "port": mail.Port(), "encryption": "none",
			"auth": "oauth2", "username": "bot@example.com", "oauth2": oauth}
		maps.Copy(c, extra)
		return c
	}
	s.ok(cput, conn(map[string]any{"tokenUrl": ts.URL(), "clientId": ts.ClientID, "clientSecret": ts.ClientSecret, "refreshToken": rt}, nil))
	before := s.snapshot()
	secrets := []string{ts.ClientSecret, rt}
	for _, tc := range []struct {
		name, field string
		c           map[string]any
	}{
		{"tokenUrl", "oauth2.clientSecret", conn(map[string]any{"tokenUrl": evilTokens.URL(), "clientId": ts.ClientID}, nil)},
		{"tokenUrl with the client secret", "oauth2.refreshToken", conn(map[string]any{"tokenUrl": evilTokens.URL(), "clientId": ts.ClientID, "clientSecret": "cs"}, nil)},
		{"clientId", "oauth2.clientSecret", conn(map[string]any{"tokenUrl": ts.URL(), "clientId": "other"}, nil)},
		{"provider preset", "oauth2.clientSecret", conn(map[string]any{"provider": "google", "clientId": ts.ClientID}, nil)},
		{"tenant", "oauth2.clientSecret", conn(map[string]any{"provider": "microsoft", "tenant": "evil.example", "clientId": ts.ClientID}, nil)},
		{"mail server", "oauth2.clientSecret", conn(map[string]any{"tokenUrl": ts.URL(), "clientId": ts.ClientID}, map[string]any{"host": evil.Host(), "port": evil.Port()})},
	} {
		e := refused(t, s, cput, tc.c, tc.field)
		if e != nil && !strings.Contains(e.Message, "give it again") {
			t.Errorf("%s: message %q does not say the secret is needed again", tc.name, e.Message)
		}
		unchanged(t, s, before)
		if tc.field == "oauth2.clientSecret" { // a draft without any secret of its own
			refused(t, s, ctest, tc.c, "oauth2")
		}
	}
	// A draft with its own refresh token and the hostile endpoint: the stored client secret
	// is not taken, and the stored refresh token is not read for the refresh.
	d := conn(map[string]any{"tokenUrl": evilTokens.URL(), "clientId": ts.ClientID, "refreshToken": "rt-of-the-draft"}, nil)
	s.request(ctest, d)

	_, msg := s.request(ctest, map[string]string{"name": "oauth"})
	if ts.Count("refresh_token") == 0 {
		t.Errorf("the saved connection did not ask its own token endpoint: %s", msg.Data)
	}
	noLeak(t, "the hostile token endpoint", evilTokens.Leaked(secrets...))
	noLeak(t, "the hostile IMAP server", evil.Leaked(secrets...))
	if n := evil.Connections(); n != 0 {
		t.Errorf("the hostile IMAP server was dialled %d times", n)
	}
	if evilTokens.Requests() != 1 || len(evilTokens.Leaked("rt-of-the-draft")) != 1 {
		t.Errorf("the hostile token endpoint got %d requests, want only the draft's with its own token", evilTokens.Requests())
	}
}

// TestAllowedHosts: with MAILBUS_ALLOWED_HOSTS, hosts, Exchange URLs and token URLs outside
// the list are refused at put and test, and a stored definition outside it when its route
// starts.
func TestAllowedHosts(t *testing.T) {
	evil := connector.StartHostileIMAP(t)
	evilTokens := connector.StartHostileTokenEndpoint(t)
	cfg := svcConfig(t)
	cfg.AllowedHosts = "localhost, *.example.com,"
	s := startService(t, cfg, nil, nil)
	s.ok(cput, imapConnection("kept"))
	before := s.snapshot()
	tu, _ := url.Parse(evilTokens.URL())
	for _, tc := range []struct {
		name, field string
		c           map[string]any
	}{
		{"address", "host", at("a", evil, map[string]any{"password": "pw"})},
		{"the domain of a wildcard", "host", map[string]any{"name": "a", "type": "imap", "host": "example.com", "username": "u", "password": "pw"}},
		{"a suffix that is no subdomain", "host", map[string]any{"name": "a", "type": "imap", "host": "evilexample.com", "username": "u", "password": "pw"}},
		{"exchange", "exchangeUrl", map[string]any{"name": "a", "type": "exchange", "exchangeUrl": tu.Host + "/EWS/Exchange.asmx", "exchangeVersion": "Exchange2016", "username": "u", "password": "pw"}},
		{"token url", "oauth2.tokenUrl", map[string]any{"name": "a", "type": "imap", "host": "imap.example.com", "auth": "oauth2", "username": "u",
			"oauth2": map[string]any{"tokenUrl": evilTokens.URL(), "clientId": "id", "clientSecret": "cs"}}},
	} {
		refused(t, s, cput, tc.c, tc.field)
		refused(t, s, ctest, tc.c, tc.field)
	}
	unchanged(t, s, before)
	if evil.Connections() != 0 || evilTokens.Requests() != 0 {
		t.Errorf("a host outside the list was contacted: imap %d, http %d", evil.Connections(), evilTokens.Requests())
	}
	s.ok(cput, map[string]any{"name": "deep", "type": "imap", "host": "imap.eu.Example.COM.", "username": "u", "password": "pw"})
	s.ok(cput, map[string]any{"name": "local", "type": "imap", "host": "localhost", "username": "u", "password": "pw"})

	// Stored before the list was set: its route does not start.
	old, _ := json.Marshal(schemas.Connection{Name: "old", Type: "imap", Host: evil.Host(), Port: evil.Port(), Encryption: "none",
		Auth: "basic", Username: "u", Password: "pw", LogLevel: "errors", PollInterval: schemas.Duration(time.Minute)})
	if _, err := s.kv.Put(context.Background(), "connection.old", old); err != nil {
		t.Fatal(err)
	}
	s.ok("mail.control.route.put", inboxRoute("r_old", "old"))
	st := s.waitStatus("r_old", 10*time.Second, func(st schemas.RouteStatus) bool { return st.State == schemas.StateError })
	if !strings.Contains(st.LastError, "MAILBUS_ALLOWED_HOSTS") {
		t.Errorf("status = %+v", st)
	}
	if _, started := s.rec.spec("r_old"); started {
		t.Error("the route of a host outside the list started")
	}
}

// TestCredentialConfig: the settings of the fence are checked at start.
func TestCredentialConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*connector.Config)
		want string
	}{
		{"prefix with a dash", func(c *connector.Config) { c.CredentialEnvPrefix = "MY-CRED_" }, "MAILBUS_CREDENTIAL_ENV_PREFIX"},
		{"relative dir", func(c *connector.Config) { c.CredentialDir = "secrets" }, "MAILBUS_CREDENTIAL_DIR"},
		{"host with a path", func(c *connector.Config) { c.AllowedHosts = "example.com/x" }, "MAILBUS_ALLOWED_HOSTS"},
		{"inner wildcard", func(c *connector.Config) { c.AllowedHosts = "imap.example.com,imap.*.com" }, "MAILBUS_ALLOWED_HOSTS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := svcConfig(t)
			tc.set(&cfg)
			if _, err := connector.New(cfg, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New() = %v, want an error naming %s", err, tc.want)
			}
		})
	}
	cfg := svcConfig(t)
	if err := cfg.Check(); err != nil || cfg.CredentialEnvPrefix != "MAILBUS_CRED_" || cfg.CredentialDir != "/run/secrets" {
		t.Errorf("Check() = %v, defaults %q %q", err, cfg.CredentialEnvPrefix, cfg.CredentialDir)
	}
}

// TestTokenEndpointRedirectNotFollowed: a token endpoint that redirects does not get the
// form (client secret, refresh token) resent to the host it names.
func TestTokenEndpointRedirectNotFollowed(t *testing.T) {
	evilTokens := connector.StartHostileTokenEndpoint(t)
	redirect := httptest.NewServer(http.RedirectHandler(evilTokens.URL(), http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	mail := connector.StartHostileIMAP(t)
	s := startService(t, svcConfig(t), nil, nil)
	secrets := []string{"cs-" + rand.Text(), "rt-" + rand.Text()}
	r, msg := s.request(ctest, map[string]any{"name": "redir", "type": "imap", "host": mail.Host(), "port": mail.Port(),
		"encryption": "none", "auth": "oauth2", "username": "bot@example.com",
		"oauth2": map[string]any{"tokenUrl": redirect.URL + "/token", "clientId": "id", "clientSecret": secrets[0], "refreshToken": secrets[1]}})
	if r.OK {
		t.Errorf("connection.test through a redirecting token endpoint = %s", msg.Data)
	}
	if n := evilTokens.Requests(); n != 0 {
		t.Errorf("the redirect was followed: the endpoint it names got %d requests", n)
	}
	noLeak(t, "the endpoint a redirect names", evilTokens.Leaked(secrets...))
}
