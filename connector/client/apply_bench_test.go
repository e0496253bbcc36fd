package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/client"
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// idleWorker is a route's worker that does nothing until it is stopped: the benchmark
// measures the definitions, not the mail.
type idleWorker struct{}

func (idleWorker) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// startMailbus runs a replica with an embedded NATS server and returns a client of it.
func startMailbus(b *testing.B) *client.Client {
	b.Helper()
	c, err := connector.New(connector.Config{
		EmbeddedListen: "127.0.0.1:-1", DataDir: b.TempDir(), SubjectPrefix: "mail", StreamReplicas: 1,
		DedupWindow: time.Minute, MaxInlineBytes: 1 << 18, Instance: "bench",
	}, nil, connector.WithWorkers(map[string]engine.WorkerFactory{
		schemas.TypeIMAP: func(*engine.Runtime, engine.RouteSpec) (engine.Worker, error) { return idleWorker{}, nil },
	}))
	if err != nil {
		b.Fatal(err)
	}
	testkit.RunService(b, c)
	nc, err := nats.Connect(c.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return client.New(nc, "mail")
}

// manyDefinitions is n connections and a route of each.
func manyDefinitions(b *testing.B, n int) *store.Definitions {
	d := &store.Definitions{}
	for i := range n {
		d.Connections = append(d.Connections, schemas.Connection{
			Name: fmt.Sprintf("conn_%05d", i), Type: schemas.TypeIMAP, Host: fmt.Sprintf("imap%d.example.com", i),
			Username: fmt.Sprintf("user%d@example.com", i), Password: "s3cret",
		})
		d.Routes = append(d.Routes, schemas.Route{
			Name: fmt.Sprintf("route_%05d", i), Connection: fmt.Sprintf("conn_%05d", i), Headers: []string{"X-Ticket-Id"},
		})
	}
	if err := d.Check(); err != nil {
		b.Fatal(err)
	}
	return d
}

// BenchmarkApply10k: mailbus apply of 10,000 connections and 10,000 routes against a
// replica with its embedded server: first into an empty store (create), then the same
// again (unchanged: read and compared, nothing written).
func BenchmarkApply10k(b *testing.B) {
	const n = 10000
	defs := manyDefinitions(b, n)
	ctx := context.Background()
	b.Run("create", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			c := startMailbus(b)
			b.StartTimer()
			changes, err := c.Apply(ctx, defs, client.ApplyOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if len(changes) != 2*n || changes[0].Action != schemas.ActionCreate {
				b.Fatalf("%d changes, first %+v", len(changes), changes[0])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/apply")
	})
	// What apply replaces: one put request per definition, one after the other, as with
	// nats req.
	b.Run("put-each", func(b *testing.B) {
		for range b.N {
			b.StopTimer()
			c := startMailbus(b)
			b.StartTimer()
			for _, d := range defs.Connections {
				if _, err := c.Do(ctx, "connection", "put", d, 0); err != nil {
					b.Fatal(err)
				}
			}
			for _, d := range defs.Routes {
				if _, err := c.Do(ctx, "route", "put", d, 0); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/apply")
	})
	b.Run("unchanged", func(b *testing.B) {
		c := startMailbus(b)
		if _, err := c.Apply(ctx, defs, client.ApplyOptions{}); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for range b.N {
			changes, err := c.Apply(ctx, defs, client.ApplyOptions{})
			if err != nil {
				b.Fatal(err)
			}
			if changes[2*n-1].Action != schemas.ActionUnchanged {
				b.Fatalf("last change %+v", changes[2*n-1])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/apply")
	})
}
