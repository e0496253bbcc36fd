package console_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/schemas"
)

// TestListsLargerThanAMessage: the connections and routes pages list every definition
// even when the list is larger than one NATS message, by following the list's pages (a
// list asked for in one piece is refused when it does not fit).
func TestListsLargerThanAMessage(t *testing.T) {
	const n = 300 // about 80 KB of connections, and as much of routes
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	m := startMailbusWith(t, "tok-"+t.Name(), nil, func(c *connector.Config) {
		c.NATSURL = srv.ClientURL()
		c.MaxInlineBytes = 16 << 10
	})
	for i := range n {
		c := schemas.Connection{Name: fmt.Sprintf("conn_%04d", i), Type: "imap", Host: "127.0.0.1", Port: 1,
			Encryption: "none", Username: "u", Password: "p", Disabled: true,
			Description: "a connection with a description long enough to make the list large"}
		if r := m.control(t, "connection.put", c); !r.OK {
			t.Fatalf("connection.put %s: %+v", c.Name, r.Error)
		}
		r := schemas.Route{Name: fmt.Sprintf("route_%04d", i), Connection: c.Name, Disabled: true,
			Description: "a route with a description long enough to make the list large"}
		if r := m.control(t, "route.put", r); !r.OK {
			t.Fatalf("route.put: %+v", r.Error)
		}
	}

	hc := client(t)
	if resp := postLogin(t, hc, m, loginForm(t, hc, m), m.token, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login = %s", resp.Status)
	}
	for _, page := range []struct{ path, prefix string }{{"/ui/connections", "conn_"}, {"/ui/routes", "route_"}} {
		resp, err := hc.Get(m.url + page.path)
		if err != nil {
			t.Fatalf("GET %s: %v", page.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s = %s:\n%s", page.path, resp.Status, clip(string(body)))
		}
		for i := range n {
			if name := fmt.Sprintf("%s%04d", page.prefix, i); !strings.Contains(string(body), ">"+name+"<") {
				t.Fatalf("GET %s: %s is missing", page.path, name)
			}
		}
	}
}
