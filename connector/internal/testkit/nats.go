// Package testkit is the shared test harness of the connector packages: real parts started
// in-process for a test and stopped when it ends.
package testkit

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/engine"
)

// NATS is an embedded NATS server with JetStream and a client connected to it.
type NATS struct {
	Server *server.Server
	NC     *nats.Conn
	JS     jetstream.JetStream
	// Names are the names of prefix mail; Storage is set by StartStorage.
	Names   bus.Names
	Storage *bus.Storage
}

// StartNATS starts an embedded NATS server with JetStream on a free loopback port, its
// store in a temporary directory, and connects to it. Both stop when t ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	srv, err := bus.StartEmbedded("127.0.0.1:-1", t.TempDir())
	if err != nil {
		t.Fatalf("StartEmbedded() = %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatalf("nats.Connect() = %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream.New() = %v", err)
	}
	return &NATS{Server: srv, NC: nc, JS: js, Names: bus.Names{Prefix: "mail"}}
}

// StartStorage is StartNATS with mailbus's streams and buckets made on the server: one
// replica, a ten-minute duplicate window (longer than any test).
func StartStorage(t testing.TB) *NATS {
	t.Helper()
	n := StartNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := bus.EnsureStorage(ctx, n.JS, n.Names, 1, 10*time.Minute)
	if err != nil {
		t.Fatalf("EnsureStorage() = %v", err)
	}
	n.Storage = st
	return n
}

// StartRuntime is StartStorage with the runtime a route's worker runs on: replica
// "test", a status board, the buses' publishers, and a debug log into the test's output.
func StartRuntime(t testing.TB) (*NATS, *engine.Runtime) {
	t.Helper()
	n := StartStorage(t)
	pubs, err := bus.NewPublishers(n.NC, 0)
	if err != nil {
		t.Fatalf("NewPublishers() = %v", err)
	}
	return n, &engine.Runtime{
		Names: n.Names, NC: n.NC, JS: n.JS, Storage: n.Storage, Instance: "test",
		Status: engine.NewStatusBoard(), Publishers: pubs,
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}
