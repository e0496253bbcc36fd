package connector_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailbus/mailbus/connector"
)

func TestHealthServer(t *testing.T) {
	var notReady atomic.Bool
	notReady.Store(true)
	ready := func() error {
		if notReady.Load() {
			return errors.New("nats disconnected")
		}
		return nil
	}
	h, err := connector.NewHealthServer("127.0.0.1:0", ready, connector.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	}()

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + h.Addr() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "nats disconnected") {
		t.Fatalf("/readyz while not ready = %d %q", code, body)
	}
	notReady.Store(false)
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz when ready = %d", code)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("/metrics = %d, no go_goroutines", code)
	}
	if err := connector.Healthcheck(ctx, h.Addr()); err != nil {
		t.Fatalf("Healthcheck() = %v", err)
	}
	if err := connector.Healthcheck(ctx, "127.0.0.1:1"); err == nil {
		t.Fatal("Healthcheck() of a closed port = nil")
	}
}
