package connector_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mailbus/mailbus/connector"
)

// TestEmbeddedInProcess: with the embedded server, mailbus's own connection to it is in
// process (bus.InProcess), not over loopback TCP; other clients, this test's among them,
// reach it at its address.
func TestEmbeddedInProcess(t *testing.T) {
	s := startService(t, svcConfig(t), nil, nil)
	connz, err := connector.EmbeddedServer(s.c).Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mailbus, others int
	for _, c := range connz.Conns {
		switch {
		case c.Name == "mailbus test" && c.IP == "" && c.Port == 0:
			mailbus++
		case c.Name == "mailbus test":
			t.Errorf("mailbus's connection comes from %s:%d, want in process", c.IP, c.Port)
		case c.IP == "127.0.0.1":
			others++
		}
	}
	if mailbus != 1 || others != 1 {
		t.Errorf("%d in-process connections of mailbus and %d other clients over TCP, want 1 and 1 (the test's)", mailbus, others)
	}
}
