package connector

import (
	"context"
	"io"

	"github.com/mailbus/mailbus/connector/engine"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/mapping"
)

// SetMapping replaces the mapping function of rt's workers, for tests that make it panic.
func SetMapping(rt *engine.Runtime, f func(io.Reader, *mapping.Options) (*mapping.Result, error)) {
	rt.Map = f
}

// SignedProbeValue is the X-Mailbus-Probe value the connection check of the deployment
// with secretKey (MAILBUS_SECRET_KEY, "" for none) and state bucket kv writes for id: what
// routes of that deployment take for a probe.
func SignedProbeValue(ctx context.Context, secretKey string, kv jetstream.KeyValue, id string) (string, error) {
	key, err := engine.NewProbeKeys(secretKey, kv).Get(ctx)
	if err != nil {
		return "", err
	}
	return engine.ProbeValue(key, id), nil
}

// RuntimeWithSecretKey makes rt sign and check probes as a deployment with
// MAILBUS_SECRET_KEY secretKey does.
func RuntimeWithSecretKey(rt *engine.Runtime, secretKey string) *engine.Runtime {
	rt.Probes = engine.NewProbeKeys(secretKey, rt.Storage.State)
	return rt
}

// EmbeddedServer is c's embedded NATS server, nil when c uses MAILBUS_NATS_URL.
func EmbeddedServer(c *Connector) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.srv
}
