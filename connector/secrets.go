package connector

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

// sealer encrypts connection secrets before they reach KV and decrypts them for workers.
// Without a key it stores them as they are (the connector warns once at start).
type sealer struct {
	aead  cipher.AEAD // nil: no MAILBUS_SECRET_KEY
	fence *fence      // where passwordFrom may read; nil: the default fence
}

// newSealer reads MAILBUS_SECRET_KEY: empty, or standard base64 of exactly 32 bytes.
// The error never contains the key.
func newSealer(key string) (*sealer, error) {
	if key == "" {
		return &sealer{}, nil
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
	return &sealer{aead: aead}, nil
}

// enabled reports whether secrets are encrypted at rest.
func (s *sealer) enabled() bool { return s.aead != nil }

// seal encrypts one secret. The connection name is the additional data, so a ciphertext
// copied into another connection's definition does not decrypt.
func (s *sealer) seal(owner, plain string) (string, error) {
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

// open decrypts what seal made. A value without the prefix was stored before a key was set
// and is returned as it is.
func (s *sealer) open(owner, stored string) (string, error) {
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

// secretFields lists the secret fields of a connection, so seal, open and redact cannot miss
// one.
func secretFields(c *schemas.Connection) []*string {
	f := []*string{&c.Password}
	if c.OAuth2 != nil {
		f = append(f, &c.OAuth2.AccessToken, &c.OAuth2.ClientSecret, &c.OAuth2.RefreshToken)
	}
	return f
}

// sealConnection encrypts every secret of c in place.
func (s *sealer) sealConnection(c *schemas.Connection) error {
	for _, f := range secretFields(c) {
		v, err := s.seal(c.Name, *f)
		if err != nil {
			return err
		}
		*f = v
	}
	return nil
}

// openConnection decrypts every secret of c in place.
func (s *sealer) openConnection(c *schemas.Connection) error {
	for _, f := range secretFields(c) {
		v, err := s.open(c.Name, *f)
		if err != nil {
			return err
		}
		*f = v
	}
	return nil
}

// redact returns c as a reply shows it: secrets removed, the *Set flags saying which are
// stored. The OAuth2 object is copied, so the stored definition is left alone.
func redact(c schemas.Connection) schemas.Connection {
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
func (f *fence) resolvePassword(src *schemas.SecretSource) (string, error) {
	if f == nil {
		f = defaultFence
	}
	switch {
	case src.Env != "":
		return f.readEnv(src.Env)
	case src.File != "":
		return f.readFile(src.File)
	}
	return "", errInvalid("passwordFrom", "neither env nor file is set")
}

// usable returns a copy of a stored connection as a worker or a check needs it: secrets
// decrypted and passwordFrom read. The fence is checked again, since the definition may
// be older than the process's settings. Errors name the connection, never a secret; a
// refusal of the fence wraps the *schemas.Error naming the field.
func (s *sealer) usable(c schemas.Connection) (schemas.Connection, error) {
	if c.OAuth2 != nil {
		o := *c.OAuth2
		c.OAuth2 = &o
	}
	if e := s.fence.check(&c); e != nil {
		return c, fmt.Errorf("connection %s: %w", c.Name, e)
	}
	if err := s.openConnection(&c); err != nil {
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
