package engine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mailbus/mailbus/schemas"
	"github.com/nats-io/nats.go/jetstream"
)

// ProbeHeader marks the message a connection check appends for its round trip. Routes skip
// a message whose header carries a value signed with the deployment's probe key (see
// ProbeKeys), so a probe never becomes an event; any other message with the header is
// ordinary mail.
const ProbeHeader = "X-Mailbus-Probe"

// IsProbe reports whether ev is the connection check's probe: its ProbeHeader carries a
// value signed with key. Any other message with the header is ordinary mail.
func IsProbe(ev *schemas.Event, key []byte) bool {
	for _, h := range ev.CustomHeaders {
		if strings.EqualFold(h.Name, ProbeHeader) && slices.ContainsFunc(h.ListValues, func(v string) bool { return ProbeSigned(key, v) }) {
			return true
		}
	}
	return false
}

// probeKeyName is the key of the deployment's probe key in the state bucket, used when
// MAILBUS_SECRET_KEY is not set.
const probeKeyName = "probe.key"

// ProbeKeys hands out the key that signs the connection check's probe (ProbeHeader). A
// route passes over only a message whose ProbeHeader carries a value signed with it:
// anybody can write the header into a mail, nobody outside the deployment can sign it, so
// a mail from outside cannot hide itself. The key is derived from MAILBUS_SECRET_KEY when
// that is set; otherwise it is a random key created once in the state bucket (Create is a
// compare-and-set, so replicas starting together agree on one).
type ProbeKeys struct {
	secret []byte             // from MAILBUS_SECRET_KEY; nil without
	kv     jetstream.KeyValue // where the key is kept without a secret key

	mu  sync.Mutex
	key []byte
}

// NewProbeKeys makes the probe keys of a deployment. secretKey is MAILBUS_SECRET_KEY as
// configured (already checked by secrets.NewSealer); "" keeps the key in kv.
func NewProbeKeys(secretKey string, kv jetstream.KeyValue) *ProbeKeys {
	p := &ProbeKeys{kv: kv}
	if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(secretKey)); err == nil && len(raw) > 0 {
		// A key of its own, so that the probe's MAC says nothing about the encryption key.
		m := hmac.New(sha256.New, raw)
		m.Write([]byte("mailbus probe key v1"))
		p.secret = m.Sum(nil)
	}
	return p
}

// Get returns the key, creating it in the bucket the first time.
func (p *ProbeKeys) Get(ctx context.Context) ([]byte, error) {
	if p.secret != nil {
		return p.secret, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.key != nil {
		return p.key, nil
	}
	if p.kv == nil {
		return nil, errors.New("probe key: no state bucket")
	}
	for range 3 {
		e, err := p.kv.Get(ctx, probeKeyName)
		if err == nil && len(e.Value()) >= 32 {
			p.key = e.Value()
			return p.key, nil
		}
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("probe key: %w", err)
		}
		k := make([]byte, 32)
		rand.Read(k)
		if _, err := p.kv.Create(ctx, probeKeyName, k); err == nil {
			p.key = k
			return k, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("probe key: %w", err)
		}
		// Another replica created it first: read theirs.
	}
	return nil, errors.New("probe key: could not be read or created")
}

// ProbeValue is the ProbeHeader value of the probe id: id.MAC. Without a key (a check run
// outside a deployment) it is id alone, which no route takes for a probe.
func ProbeValue(key []byte, id string) string {
	if key == nil {
		return id
	}
	return id + "." + probeMAC(key, id)
}

func probeMAC(key []byte, id string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("mailbus probe v1\x00" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// ProbeSigned reports whether v, a ProbeHeader value, was signed with key.
func ProbeSigned(key []byte, v string) bool {
	id, mac, ok := strings.Cut(strings.TrimSpace(v), ".")
	if !ok || id == "" || key == nil {
		return false
	}
	return hmac.Equal([]byte(mac), []byte(probeMAC(key, id)))
}

// ProbeKeys returns the runtime's probe keys; a Runtime made outside a Connector keeps its
// key in its state bucket.
func (rt *Runtime) ProbeKeys() *ProbeKeys {
	rt.probeOnce.Do(func() {
		if rt.Probes == nil {
			rt.Probes = NewProbeKeys("", rt.Storage.State)
		}
	})
	return rt.Probes
}
