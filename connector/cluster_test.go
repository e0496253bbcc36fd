package connector_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mailbus/mailbus/connector/bus"
)

// freePorts finds n free TCP ports on the loopback. A port could be taken again before
// it is used; the cluster's servers listen on theirs right after.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startNATSCluster starts an in-process NATS cluster of n servers with JetStream, each
// with its own store, routed to each other on the loopback, and waits for its JetStream
// meta leader.
func startNATSCluster(t *testing.T, n int) []*server.Server {
	t.Helper()
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	var servers []*server.Server
	for i, p := range ports {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			MaxPayload: 8 << 20,
			Cluster:    server.ClusterOpts{Name: "mailbus-test", Host: "127.0.0.1", Port: p},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("server %d: %v", i+1, err)
		}
		go s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		servers = append(servers, s)
	}
	for _, s := range servers {
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready", s.Name())
		}
	}
	waitUntil(t, 30*time.Second, "a JetStream meta leader and all servers current", func() bool {
		leader := false
		for _, s := range servers {
			if !s.JetStreamIsCurrent() {
				return false
			}
			leader = leader || s.JetStreamIsLeader()
		}
		return leader
	})
	return servers
}

// clientOf returns the server of servers where a client connection named name is.
func clientOf(t *testing.T, servers []*server.Server, name string) *server.Server {
	t.Helper()
	for _, s := range servers {
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			continue
		}
		for _, c := range cz.Conns {
			if c.Name == name {
				return s
			}
		}
	}
	t.Fatalf("no server has a client %q", name)
	return nil
}

// TestClusterR3 runs mailbus with MAILBUS_STREAM_REPLICAS=3 on a three-server NATS cluster:
// every stream, bucket and the object store it creates has three replicas. Mid-ingest the
// server mailbus is connected to stops for good; mailbus reconnects to another (it was given
// all three), the streams elect new leaders on the two left, and every message ends up in
// the stream exactly once and marked read.
func TestClusterR3(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	start := time.Now()
	servers := startNATSCluster(t, 3)
	t.Logf("cluster up after %s", time.Since(start).Round(time.Millisecond))
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.ClientURL())
	}
	const initial, more = 300, 60
	srv := startMemIMAPMail(t, initial, bigMail)

	cfg := svcConfig(t)
	cfg.NATSURL = strings.Join(urls, ",")
	cfg.StreamReplicas = 3
	log := &svcLog{}
	s := runService(t, cfg, log)
	t.Logf("mailbus ready after %s", time.Since(start).Round(time.Millisecond))
	defer func() {
		if t.Failed() {
			l := log.String()
			t.Logf("log (end):\n%s", l[max(0, len(l)-8000):])
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for b := range bus.Buses {
		names = append(names, busNames.BusStream(b))
	}
	names = append(names, busNames.DeadStream(), busNames.LogStream(),
		"KV_"+busNames.ConfigBucket(), "KV_"+busNames.StateBucket(), "KV_"+busNames.LeasesBucket(),
		"OBJ_"+busNames.ObjectBucket())
	for _, name := range names {
		st, err := s.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("Stream(%s) = %v", name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatalf("Info(%s) = %v", name, err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas configured, cluster %+v; want 3 (a leader and 2 more)", name, info.Config.Replicas, info.Cluster)
		}
	}

	host, port, _ := net.SplitHostPort(srv.addr)
	s.ok("mail.control.connection.put", map[string]any{
		"name": "mem", "type": "imap", "host": host, "port": json.Number(port), "encryption": "none",
		"username": "alice", "password": "secret", "pollInterval": "1s",
	})
	const route = "clustered"
	s.ok("mail.control.route.put", map[string]any{"name": route, "connection": "mem", "bus": 1})
	done := trickle(t, srv, initial+1, more, 30*time.Millisecond)
	subject := busNames.BusSubject(1, route)
	waitUntil(t, 60*time.Second, "events being published", func() bool {
		return storedCount(t, s.js, busNames.BusStream(1), subject) > 20
	})

	// Stop the server mailbus is connected to: the most demanding one to lose.
	victim := clientOf(t, servers, "mailbus "+cfg.Instance)
	t.Logf("stopping %s with %d events stored", victim.Name(), storedCount(t, s.js, busNames.BusStream(1), subject))
	victim.Shutdown()
	victim.WaitForShutdown()
	stopped := time.Now()
	done()
	// Events published while their stream had no leader are not answered: the worker
	// publishes them again after the acknowledgement timeout (30 s).
	waitUntil(t, 120*time.Second, "events past the initial mail", func() bool {
		return storedCount(t, s.js, busNames.BusStream(1), subject) > initial
	})
	t.Logf("events past the initial mail %s after the stop", time.Since(stopped).Round(time.Millisecond))
	verifyExact(t, &busNATS{js: s.js}, srv, route, initial+more, 120*time.Second)
	if !strings.Contains(log.String(), "nats reconnected") {
		t.Error("mailbus did not log a NATS reconnect")
	}
}
