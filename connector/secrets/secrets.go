// Package secrets keeps connection secrets: sealed with MAILBUS_SECRET_KEY in KV, removed
// from replies, and read from passwordFrom only inside the fence of the process's settings.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/mailbus/mailbus/schemas"
)

// sealedPrefix marks a secret encrypted with MAILBUS_SECRET_KEY; the version lets a later
// key scheme live beside this one.
const sealedPrefix = "enc:v1:"

// Sealer encrypts connection secrets before they reach KV and decrypts them for workers.
// Without a key it stores them as they are (the connector warns once at start). The zero
// Sealer stores secrets as they are and reads passwordFrom inside the default fence.
type Sealer struct {
	aead  cipher.AEAD // nil: no MAILBUS_SECRET_KEY
	fence *Fence      // where passwordFrom may read; nil: the default fence
}

// NewSealer reads MAILBUS_SECRET_KEY: empty, or standard base64 of exactly 32 bytes. f is
// where passwordFrom may read; nil is the default fence. The error never contains the key.
func NewSealer(key string, f *Fence) (*Sealer, error) {
	if key == "" {
		return &Sealer{fence: f}, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil {
		return nil, errors.New("MAILBUS_SECRET_KEY: not standard base64 (make one with: openssl rand -base64 32)")
	}
	if len(raw) != 32 {
		return nil, fmt.Errorf("MAILBUS_SECRET_KEY: want 32 bytes, got %d (make one with: openssl rand -base64 32)", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("MAILBUS_SECRET_KEY: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("MAILBUS_SECRET_KEY: %w", err)
	}
	return &Sealer{aead: aead, fence: f}, nil
}

// Enabled reports whether secrets are encrypted at rest.
func (s *Sealer) Enabled() bool { return s.aead != nil }

// Seal encrypts one secret. The connection name is the additional data, so a ciphertext
// copied into another connection's definition does not decrypt.
func (s *Sealer) Seal(owner, plain string) (string, error) {
	if s.aead == nil || plain == "" {
		return plain, nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal secret: %w", err)
	}
	out := s.aead.Seal(nonce, nonce, []byte(plain), []byte(owner))
	return sealedPrefix + base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts what Seal made. A value without the prefix was stored before a key was set
// and is returned as it is.
func (s *Sealer) Open(owner, stored string) (string, error) {
	b64, ok := strings.CutPrefix(stored, sealedPrefix)
	if !ok {
		return stored, nil
	}
	if s.aead == nil {
		return "", errors.New("secret is encrypted but MAILBUS_SECRET_KEY is not set")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", errors.New("encrypted secret is damaged")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(owner))
	if err != nil {
		return "", errors.New("encrypted secret does not open with MAILBUS_SECRET_KEY (was the key changed?)")
	}
	return string(plain), nil
}

// Fields lists the secret fields of a connection, so seal, open and redact cannot miss
// one.
func Fields(c *schemas.Connection) []*string {
	f := []*string{&c.Password}
	if c.OAuth2 != nil {
		f = append(f, &c.OAuth2.AccessToken, &c.OAuth2.ClientSecret, &c.OAuth2.RefreshToken)
	}
	return f
}

// SealConnection encrypts every secret of c in place.
func (s *Sealer) SealConnection(c *schemas.Connection) error {
	for _, f := range Fields(c) {
		v, err := s.Seal(c.Name, *f)
		if err != nil {
			return err
		}
		*f = v
	}
	return nil
}

// OpenConnection decrypts every secret of c in place.
func (s *Sealer) OpenConnection(c *schemas.Connection) error {
	for _, f := range Fields(c) {
		v, err := s.Open(c.Name, *f)
		if err != nil {
			return err
		}
		*f = v
	}
	return nil
}

// Redact returns c as a reply shows it: secrets removed, the *Set flags saying which are
// stored. The OAuth2 object is copied, so the stored definition is left alone.
func Redact(c schemas.Connection) schemas.Connection {
	c.PasswordSet = c.Password != ""
	c.Password = ""
	if c.OAuth2 != nil {
		o := *c.OAuth2
		o.AccessTokenSet, o.AccessToken = o.AccessToken != "", ""
		o.ClientSecretSet, o.ClientSecret = o.ClientSecret != "", ""
		o.RefreshTokenSet, o.RefreshToken = o.RefreshToken != "", ""
		c.OAuth2 = &o
	}
	return c
}

// resolvePassword reads a passwordFrom source inside the fence. Errors name the variable
// or file, never a value.
func (f *Fence) resolvePassword(src *schemas.SecretSource) (string, error) {
	if f == nil {
		f = defaultFence
	}
	switch {
	case src.Env != "":
		return f.readEnv(src.Env)
	case src.File != "":
		return f.readFile(src.File)
	}
	return "", invalid("passwordFrom", "neither env nor file is set")
}

// Usable returns a copy of a stored connection as a worker or a check needs it: secrets
// decrypted and passwordFrom read. The fence is checked again, since the definition may
// be older than the process's settings. Errors name the connection, never a secret; a
// refusal of the fence wraps the *schemas.Error naming the field.
func (s *Sealer) Usable(c schemas.Connection) (schemas.Connection, error) {
	if c.OAuth2 != nil {
		o := *c.OAuth2
		c.OAuth2 = &o
	}
	if e := s.fence.check(&c); e != nil {
		return c, fmt.Errorf("connection %s: %w", c.Name, e)
	}
	if err := s.OpenConnection(&c); err != nil {
		return c, fmt.Errorf("connection %s: %w", c.Name, err)
	}
	if c.PasswordFrom != nil {
		p, err := s.fence.resolvePassword(c.PasswordFrom)
		if err != nil {
			return c, fmt.Errorf("connection %s: %w", c.Name, err)
		}
		c.Password = p
	}
	return c, nil
}

// Probe refuses at a put or a test a connection outside the sealer's fence: a
// passwordFrom outside it, a host outside MAILBUS_ALLOWED_HOSTS, or a passwordFrom.file
// that is there but is no one-line regular file. A missing file is let through.
func (s *Sealer) Probe(c *schemas.Connection) *schemas.Error {
	return s.fence.probe(c)
}

// Values lists the connection's secrets that must never be logged or replied.
func Values(c *schemas.Connection) []string {
	var s []string
	for _, f := range Fields(c) {
		if *f != "" {
			s = append(s, *f)
		}
	}
	return s
}

// Scrub replaces every secret in s with [redacted].
func Scrub(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret == "" { // would "replace" between every two characters
			continue
		}
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

// invalid is the error of a bad field, as the control plane replies it.
func invalid(field, format string, args ...any) *schemas.Error {
	return &schemas.Error{Code: schemas.CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}
