package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
)

// clearEnv removes every MAILBUS_ variable for the test.
func clearEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "MAILBUS_") {
			t.Setenv(k, "") // restores the value after the test
			os.Unsetenv(k)
		}
	}
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out); err != nil {
		t.Fatalf("run(version) = %v", err)
	}
	if !strings.HasPrefix(out.String(), "mailbus ") || len(strings.TrimSpace(out.String())) <= len("mailbus") {
		t.Errorf("version printed %q", out.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"demo", "-nope"}, {"demo", "-every", "0s"}, {"serv"}} {
		err := run(context.Background(), args, &bytes.Buffer{})
		if !errors.As(err, new(usageError)) {
			t.Errorf("run(%v) = %v, want a usage error (exit 2)", args, err)
		}
	}
}

// TestConfigDefaults checks the defaults against the environment table of CONTRACT.md.
func TestConfigDefaults(t *testing.T) {
	clearEnv(t)
	cfg, err := loadConfig()
	if err != nil {
		t.Fatalf("loadConfig() = %v", err)
	}
	want := connector.Config{
		EmbeddedListen: "127.0.0.1:4222",
		DataDir:        "./mailbus-data",
		SubjectPrefix:  "mail",
		StreamReplicas: 1,
		DedupWindow:    10 * time.Minute,
		MaxInlineBytes: 262144,
		HTTPAddr:       ":8080",
		LogLevel:       "info",
		LogFormat:      "json",

		CredentialEnvPrefix: "MAILBUS_CRED_",
		CredentialDir:       "/run/secrets",
		EventsMaxAge:        168 * time.Hour,
		EventsMaxBytes:      bus.Unlimited,
		DeadMaxAge:          720 * time.Hour,
	}
	if cfg.ManageStreams == nil || !*cfg.ManageStreams {
		t.Errorf("MAILBUS_MANAGE_STREAMS default %v, want true", cfg.ManageStreams)
	}
	cfg.ManageStreams = nil
	if cfg != want {
		t.Errorf("defaults = %+v\nwant       %+v", cfg, want)
	}
	if err := cfg.Check(); err != nil || cfg.Instance == "" {
		t.Errorf("Check() = %v, Instance %q: want the host name", err, cfg.Instance)
	}

	t.Setenv("MAILBUS_NATS_URL", "nats://a:4222,nats://b:4222")
	t.Setenv("MAILBUS_DEDUP_WINDOW", "2m")
	if cfg, err = loadConfig(); err != nil || cfg.NATSURL != "nats://a:4222,nats://b:4222" || cfg.DedupWindow != 2*time.Minute {
		t.Errorf("loadConfig() = %+v, %v", cfg, err)
	}
}

func TestLogger(t *testing.T) {
	var out bytes.Buffer
	l, err := newLogger(connector.Config{LogLevel: "warn", LogFormat: "text"}, &out)
	if err != nil {
		t.Fatalf("newLogger() = %v", err)
	}
	l.Info("hidden")
	l.Warn("shown")
	if s := out.String(); strings.Contains(s, "hidden") || !strings.Contains(s, "level=WARN msg=shown") {
		t.Errorf("text log = %q", s)
	}
	for _, cfg := range []connector.Config{{LogLevel: "loud", LogFormat: "json"}, {LogLevel: "info", LogFormat: "xml"}} {
		if _, err := newLogger(cfg, &out); err == nil {
			t.Errorf("newLogger(%+v) = nil error", cfg)
		}
	}
}

// TestServe runs the program as `mailbus` runs it and stops it as SIGTERM would.
func TestServe(t *testing.T) {
	clearEnv(t)
	t.Setenv("MAILBUS_EMBEDDED_LISTEN", "127.0.0.1:-1")
	t.Setenv("MAILBUS_DATA_DIR", t.TempDir())
	t.Setenv("MAILBUS_HTTP_ADDR", "127.0.0.1:0")
	t.Setenv("MAILBUS_LOG_LEVEL", "error")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := run(ctx, nil, &bytes.Buffer{}); err != nil {
		t.Fatalf("run() = %v", err)
	}
}

// TestHealthcheck runs mailbus, then the healthcheck subcommand the image's HEALTHCHECK
// uses, against it and against nothing.
func TestHealthcheck(t *testing.T) {
	clearEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	t.Setenv("MAILBUS_EMBEDDED_LISTEN", "127.0.0.1:-1")
	t.Setenv("MAILBUS_DATA_DIR", t.TempDir())
	t.Setenv("MAILBUS_HTTP_ADDR", addr)
	t.Setenv("MAILBUS_LOG_LEVEL", "error")
	if err := run(context.Background(), []string{"healthcheck"}, &bytes.Buffer{}); err == nil {
		t.Fatal("healthcheck with no mailbus running = nil")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, &bytes.Buffer{}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run() = %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := run(context.Background(), []string{"healthcheck"}, &bytes.Buffer{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthcheck of a running mailbus = %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
