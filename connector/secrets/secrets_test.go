package secrets_test

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/secrets"
	"github.com/mailbus/mailbus/schemas"
)

// TestSealOpen: a sealed secret opens only for the connection it was sealed for, a value
// stored before the key was set reads as it is, and no key means no sealing.
func TestSealOpen(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	s, err := secrets.NewSealer(base64.StdEncoding.EncodeToString(key), nil)
	if err != nil || !s.Enabled() {
		t.Fatalf("NewSealer() = %v, enabled %v", err, s != nil && s.Enabled())
	}
	sealed, err := s.Seal("a", "pw-1")
	if err != nil || !strings.HasPrefix(sealed, "enc:v1:") || strings.Contains(sealed, "pw-1") {
		t.Fatalf("Seal() = %q, %v", sealed, err)
	}
	if got, err := s.Open("a", sealed); err != nil || got != "pw-1" {
		t.Fatalf("Open(a) = %q, %v; want pw-1", got, err)
	}
	if got, err := s.Open("b", sealed); err == nil || got != "" {
		t.Fatalf("Open(b) = %q, %v; want refused: sealed for a", got, err)
	}
	if got, err := s.Open("a", "plain"); err != nil || got != "plain" {
		t.Fatalf("Open(plain) = %q, %v", got, err)
	}
	var none secrets.Sealer
	if got, err := none.Seal("a", "pw-1"); err != nil || got != "pw-1" || none.Enabled() {
		t.Fatalf("zero Sealer: Seal() = %q, %v", got, err)
	}
	if _, err := none.Open("a", sealed); err == nil || strings.Contains(err.Error(), "pw-1") {
		t.Fatalf("zero Sealer: Open(sealed) = %v, want refused", err)
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString(key[:16])} {
		if _, err := secrets.NewSealer(bad, nil); err == nil || !strings.Contains(err.Error(), "MAILBUS_SECRET_KEY") {
			t.Errorf("NewSealer(%q) = %v, want an error naming MAILBUS_SECRET_KEY", bad, err)
		}
	}
}

// TestRedactScrub: a reply shows which secrets are set, never them, and leaves the stored
// definition alone; Scrub hides every secret Values lists.
func TestRedactScrub(t *testing.T) {
	c := schemas.Connection{Name: "c", Password: "pw-1",
		OAuth2: &schemas.OAuth2{AccessToken: "at-2", ClientSecret: "cs-3", RefreshToken: ""}}
	r := secrets.Redact(c)
	if r.Password != "" || !r.PasswordSet || r.OAuth2.AccessToken != "" || !r.OAuth2.AccessTokenSet ||
		r.OAuth2.ClientSecret != "" || !r.OAuth2.ClientSecretSet || r.OAuth2.RefreshTokenSet {
		t.Fatalf("Redact() = %+v, %+v", r, *r.OAuth2)
	}
	if c.Password != "pw-1" || c.OAuth2.AccessToken != "at-2" {
		t.Fatal("Redact changed the stored definition")
	}
	v := secrets.Values(&c)
	if len(v) != 3 {
		t.Fatalf("Values() = %d secrets, want 3 (an empty one is no secret)", len(v))
	}
	got := secrets.Scrub("login pw-1 with at-2 and cs-3", v)
	if got != "login [redacted] with [redacted] and [redacted]" {
		t.Fatalf("Scrub() = %q", got)
	}
}
