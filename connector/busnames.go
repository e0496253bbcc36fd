package connector

import (
	"context"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
)

// The NATS runtime lives in connector/bus; these names keep the connector's API as it was.

// Buses is the number of data buses; a route's bus is 0..Buses-1.
const Buses = bus.Buses

// Names derives every subject, stream and bucket name from the subject prefix.
type Names = bus.Names

// Storage is every JetStream resource mailbus uses.
type Storage = bus.Storage

// StorageConfig says what the streams and buckets look like and who owns them.
type StorageConfig = bus.StorageConfig

// DeadLetter is published on <prefix>.dead.<route> for a message that could not become an
// event.
type DeadLetter = bus.DeadLetter

// Publishers are the data buses' publishing pipelines on this replica.
type Publishers = bus.Publishers

// Unlimited is the value of a byte limit without a limit (JetStream's -1).
const Unlimited = bus.Unlimited

// LeaseTTL is how long a replica's heartbeat key lives without renewal.
const LeaseTTL = bus.LeaseTTL

// DefaultPublishWindow is the number of events one bus may have in flight by default.
const DefaultPublishWindow = bus.DefaultPublishWindow

// ErrStorageCheck is the error of a missing or different stream or bucket with
// MAILBUS_MANAGE_STREAMS=false.
var ErrStorageCheck = bus.ErrStorageCheck

// ConnectionKey is the key of a connection's definition.
func ConnectionKey(name string) string { return bus.ConnectionKey(name) }

// RouteKey is the key of a route's definition and of its checkpoint.
func RouteKey(name string) string { return bus.RouteKey(name) }

// DefaultStorageConfig is the storage of the default environment, with replicas and dedup.
func DefaultStorageConfig(replicas int, dedup time.Duration) StorageConfig {
	return bus.DefaultStorageConfig(replicas, dedup)
}

// EnsureStorage is OpenStorage with the default limits and mailbus owning the streams.
func EnsureStorage(ctx context.Context, js jetstream.JetStream, n Names, replicas int, dedup time.Duration) (*Storage, error) {
	return bus.EnsureStorage(ctx, js, n, replicas, dedup)
}

// OpenStorage creates or checks every stream and bucket of sc (see bus.OpenStorage).
func OpenStorage(ctx context.Context, js jetstream.JetStream, n Names, sc StorageConfig) (*Storage, error) {
	return bus.OpenStorage(ctx, js, n, sc)
}

// NewPublishers makes the pipelines of every bus on nc (see bus.NewPublishers).
func NewPublishers(nc *nats.Conn, window int) (*Publishers, error) {
	return bus.NewPublishers(nc, window)
}

// StartEmbedded starts an in-process NATS server with JetStream (see bus.StartEmbedded).
func StartEmbedded(listen, dataDir string) (*server.Server, error) {
	return bus.StartEmbedded(listen, dataDir)
}

// RedactURLs returns a comma list of server URLs with any user info replaced, for logs.
func RedactURLs(list string) string { return bus.RedactURLs(list) }

// DialNATS connects a client of a running mailbus (the mailbus CLI) with the same
// MAILBUS_NATS_* settings; it tries once and does not reconnect.
func DialNATS(cfg Config) (*nats.Conn, error) { return bus.Dial(cfg.natsConn()) }

// natsConn is the NATS part of the configuration.
func (c Config) natsConn() bus.ConnConfig {
	return bus.ConnConfig{
		URL: c.NATSURL, Creds: c.NATSCreds, NKey: c.NATSNKey, User: c.NATSUser,
		Password: c.NATSPassword, Token: c.NATSToken,
		TLSCA: c.NATSTLSCA, TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey,
		Instance: c.Instance, EmbeddedListen: c.EmbeddedListen,
	}
}
