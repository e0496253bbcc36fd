package connector

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HealthServer serves /healthz (the process is alive), /readyz (NATS connected, streams and
// buckets ready) and /metrics (Prometheus) on MAILBUS_HTTP_ADDR.
type HealthServer struct {
	srv *http.Server
	mux *http.ServeMux
	ln  net.Listener
}

// NewHealthServer listens on addr. ready reports why the replica is not ready, or nil.
func NewHealthServer(addr string, ready func() error, reg *prometheus.Registry) (*HealthServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http listen %s: %w", addr, err)
	}
	return &HealthServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second},
		mux: mux,
		ln:  ln,
	}, nil
}

// Handle serves pattern with handler too (the admin console under /ui/). Call it before Run.
func (h *HealthServer) Handle(pattern string, handler http.Handler) { h.mux.Handle(pattern, handler) }

// Addr is the address the server listens on (useful with port 0).
func (h *HealthServer) Addr() string { return h.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully. Requests get a context that ends
// with ctx, so long-lived ones (the console's event streams) end with it too.
func (h *HealthServer) Run(ctx context.Context) error {
	h.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	stop := context.AfterFunc(ctx, func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(shutdown)
	})
	defer stop()
	if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// NewRegistry returns a Prometheus registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Healthcheck asks a running mailbus's /healthz, for the container HEALTHCHECK of an image
// that has no curl.
func Healthcheck(ctx context.Context, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("http addr %q: %w", addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthz: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}
