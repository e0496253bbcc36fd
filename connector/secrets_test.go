package connector_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/schemas"
)

func TestSecretsEncryptedAndRedacted(t *testing.T) {
	secrets := []string{"pw-Very-Secret-1", "at-Very-Secret-2", "cs-Very-Secret-3", "rt-Very-Secret-4"}
	key := make([]byte, 32)
	rand.Read(key)
	log := &svcLog{}
	// Registered before the service, so it runs after the service stopped: the whole log.
	t.Cleanup(func() {
		for _, sec := range secrets {
			if strings.Contains(log.String(), sec) {
				t.Errorf("the log contains secret %s", sec)
			}
		}
		if strings.Contains(log.String(), "MAILBUS_SECRET_KEY is not set") {
			t.Error("warned about a missing key that is set")
		}
	})
	cfg := svcConfig(t)
	cfg.SecretKey = base64.StdEncoding.EncodeToString(key)
	s := startService(t, cfg, nil, log)

	noSecret := func(what string, data []byte) {
		t.Helper()
		for _, sec := range secrets {
			if bytes.Contains(data, []byte(sec)) {
				t.Errorf("%s contains secret %s: %s", what, sec, data)
			}
		}
	}
	request := func(subject string, body any) schemas.Reply {
		t.Helper()
		r, msg := s.request(subject, body)
		if !r.OK {
			t.Fatalf("%s: %s", subject, msg.Data)
		}
		noSecret(subject+" reply", msg.Data)
		return r
	}

	basic := imapConnection("basic")
	basic["password"] = secrets[0]
	request("mail.control.connection.put", basic)
	oauth := map[string]any{
		"name": "oauth", "type": "imap", "host": "imap.gmail.com", "auth": "oauth2", "username": "bot@gmail.com",
		"oauth2": map[string]any{"provider": "google", "accessToken": secrets[1], "clientId": "id", "clientSecret": secrets[2], "refreshToken": secrets[3]},
	}
	request("mail.control.connection.put", oauth)

	for _, k := range []string{"connection.basic", "connection.oauth"} {
		raw := s.raw(k)
		noSecret("stored "+k, raw)
		if !bytes.Contains(raw, []byte(`"enc:v1:`)) {
			t.Errorf("stored %s has no encrypted secret: %s", k, raw)
		}
	}

	// A put without the secrets keeps them.
	delete(basic, "password")
	basic["description"] = "changed"
	r := request("mail.control.connection.put", basic)
	if !r.Connection.PasswordSet {
		t.Error("put without password: passwordSet false")
	}
	oauth["oauth2"] = map[string]any{"provider": "google", "clientId": "id", "scopes": []string{"https://mail.google.com/"}}
	r = request("mail.control.connection.put", oauth)
	if o := r.Connection.OAuth2; o == nil || !o.AccessTokenSet || !o.ClientSecretSet || !o.RefreshTokenSet || len(o.Scopes) != 1 {
		t.Errorf("put without oauth2 secrets: reply oauth2 = %+v", o)
	}
	r = request("mail.control.connection.get", map[string]string{"name": "oauth"})
	if o := r.Connection.OAuth2; o == nil || !o.AccessTokenSet {
		t.Errorf("get oauth2 = %+v", o)
	}
	request("mail.control.connection.list", "{}")

	// Workers get them in clear.
	request("mail.control.route.put", inboxRoute("r_basic", "basic"))
	request("mail.control.route.put", inboxRoute("r_oauth", "oauth"))
	s.rec.expect(t, "start r_basic", reactWithin)
	s.rec.expect(t, "start r_oauth", reactWithin)
	if spec, _ := s.rec.spec("r_basic"); spec.Connection.Password != secrets[0] {
		t.Errorf("worker password = %q", spec.Connection.Password)
	}
	if spec, _ := s.rec.spec("r_oauth"); spec.Connection.OAuth2 == nil ||
		spec.Connection.OAuth2.AccessToken != secrets[1] || spec.Connection.OAuth2.ClientSecret != secrets[2] || spec.Connection.OAuth2.RefreshToken != secrets[3] {
		t.Errorf("worker oauth2 = %+v", spec.Connection.OAuth2)
	}
}

func TestSecretsWithoutKey(t *testing.T) {
	log := &svcLog{}
	s := startService(t, svcConfig(t), nil, log)
	s.ok("mail.control.connection.put", imapConnection("c1"))
	if !bytes.Contains(s.raw("connection.c1"), []byte("s3cret-c1")) {
		t.Error("without a key the password is not stored as is")
	}
	if n := strings.Count(log.String(), "MAILBUS_SECRET_KEY is not set"); n != 1 {
		t.Errorf("%d warnings about the missing key, want 1", n)
	}
}
