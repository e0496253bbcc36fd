package connector_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector"
	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/internal/testkit"
)

// natsFor starts a NATS server with JetStream of its own for the test, so that replicas
// can be stopped and started again on the same store, and returns its URL and a client.
func natsFor(t *testing.T) (string, jetstream.JetStream) {
	t.Helper()
	n := testkit.StartNATS(t)
	return n.Server.ClientURL(), n.JS
}

// streamConfig reads a stream's config.
func streamConfig(t *testing.T, js jetstream.JetStream, name string) jetstream.StreamConfig {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	if err != nil {
		t.Fatalf("Stream(%s) = %v", name, err)
	}
	return s.CachedInfo().Config
}

// envConfig is svcConfig with the retention variables read from the environment as
// cmd/mailbus reads them.
func envConfig(t *testing.T, url string) connector.Config {
	t.Helper()
	var env connector.Config
	if err := envconfig.Process(connector.EnvPrefix, &env); err != nil {
		t.Fatalf("envconfig.Process() = %v", err)
	}
	cfg := svcConfig(t)
	cfg.NATSURL = url
	cfg.EventsMaxAge, cfg.EventsMaxBytes, cfg.DeadMaxAge = env.EventsMaxAge, env.EventsMaxBytes, env.DeadMaxAge
	cfg.ManageStreams = env.ManageStreams
	return cfg
}

// TestStreamLimitsFromEnvironment: the bus streams, MAIL_DEAD and the object store carry
// the limits of MAILBUS_EVENTS_MAX_AGE, MAILBUS_EVENTS_MAX_BYTES and MAILBUS_DEAD_MAX_AGE;
// the object store keeps objects as long as the longer of the two (and a margin).
func TestStreamLimitsFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		env                        map[string]string
		eventsAge, deadAge, objAge time.Duration
		eventsBytes                int64
	}{
		{"defaults", nil, 168 * time.Hour, 720 * time.Hour, 721 * time.Hour, -1},
		{"set", map[string]string{
			"MAILBUS_EVENTS_MAX_AGE": "48h", "MAILBUS_EVENTS_MAX_BYTES": "2GiB", "MAILBUS_DEAD_MAX_AGE": "24h",
		}, 48 * time.Hour, 24 * time.Hour, 49 * time.Hour, 2 << 30},
		{"no age limit", map[string]string{"MAILBUS_EVENTS_MAX_AGE": "0s"}, 0, 720 * time.Hour, 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			url, js := natsFor(t)
			runService(t, envConfig(t, url), nil)
			for b := range bus.Buses {
				c := streamConfig(t, js, fmt.Sprintf("MAIL_BUS_%d", b))
				if c.MaxAge != tc.eventsAge || c.MaxBytes != tc.eventsBytes || c.Duplicates != time.Minute {
					t.Errorf("MAIL_BUS_%d: MaxAge %s MaxBytes %d Duplicates %s; want %s %d 1m", b, c.MaxAge, c.MaxBytes, c.Duplicates, tc.eventsAge, tc.eventsBytes)
				}
			}
			if c := streamConfig(t, js, "MAIL_DEAD"); c.MaxAge != tc.deadAge || c.MaxBytes != -1 {
				t.Errorf("MAIL_DEAD: MaxAge %s MaxBytes %d; want %s -1", c.MaxAge, c.MaxBytes, tc.deadAge)
			}
			if c := streamConfig(t, js, "OBJ_mail_attachments"); c.MaxAge != tc.objAge || c.MaxBytes != -1 {
				t.Errorf("object store: MaxAge %s MaxBytes %d; want %s -1", c.MaxAge, c.MaxBytes, tc.objAge)
			}
		})
	}
}

// TestOperatorSettingsSurviveRestart: what an operator changed on a stream or bucket that
// mailbus does not own (compression, other limits, description) is kept by the next start;
// what mailbus owns (the age limit, the subjects) is brought back to its configuration.
func TestOperatorSettingsSurviveRestart(t *testing.T) {
	url, js := natsFor(t)
	cfg := svcConfig(t)
	cfg.NATSURL = url
	cfg.EventsMaxAge, cfg.DeadMaxAge = 48*time.Hour, 72*time.Hour
	first := runService(t, cfg, nil)
	first.c.Close()

	ctx := context.Background()
	op := func(name string, change func(*jetstream.StreamConfig)) {
		c := streamConfig(t, js, name)
		change(&c)
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatalf("operator update of %s = %v", name, err)
		}
	}
	op("MAIL_BUS_2", func(c *jetstream.StreamConfig) {
		c.Compression = jetstream.S2Compression
		c.MaxMsgs = 100000
		c.Description = "tickets, compressed by ops"
		c.MaxAge = time.Hour                           // owned by mailbus
		c.Subjects = append(c.Subjects, "ops.extra.>") // owned by mailbus
	})
	op("OBJ_mail_attachments", func(c *jetstream.StreamConfig) { c.MaxBytes = 5 << 30 })
	op("KV_mail_config", func(c *jetstream.StreamConfig) { c.Compression = jetstream.S2Compression })

	runService(t, cfg, nil)
	bus := streamConfig(t, js, "MAIL_BUS_2")
	if bus.Compression != jetstream.S2Compression || bus.MaxMsgs != 100000 || bus.Description != "tickets, compressed by ops" {
		t.Errorf("MAIL_BUS_2 after restart: compression %v MaxMsgs %d description %q; want the operator's", bus.Compression, bus.MaxMsgs, bus.Description)
	}
	if bus.MaxAge != 48*time.Hour || strings.Join(bus.Subjects, " ") != "mail.bus.2.>" {
		t.Errorf("MAIL_BUS_2 after restart: MaxAge %s subjects %v; want mailbus's 48h [mail.bus.2.>]", bus.MaxAge, bus.Subjects)
	}
	if obj := streamConfig(t, js, "OBJ_mail_attachments"); obj.MaxBytes != 5<<30 || obj.MaxAge != 73*time.Hour {
		t.Errorf("object store after restart: MaxBytes %d MaxAge %s; want the operator's 5 GiB and mailbus's 73h", obj.MaxBytes, obj.MaxAge)
	}
	if kv := streamConfig(t, js, "KV_mail_config"); kv.Compression != jetstream.S2Compression || kv.MaxMsgsPerSubject != 5 {
		t.Errorf("KV_mail_config after restart: compression %v history %d; want s2 and 5", kv.Compression, kv.MaxMsgsPerSubject)
	}
}

// runUntilError runs a Connector that must refuse to start, and returns its error.
func runUntilError(t *testing.T, cfg connector.Config) error {
	t.Helper()
	c, err := connector.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connector.New() = %v", err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- c.Run(context.Background()) }()
	select {
	case err := <-runErr:
		return err
	case <-time.After(20 * time.Second):
		c.Close()
		t.Fatalf("Run() still running after 20s, want it to refuse to start")
		return nil
	}
}

// TestManageStreamsFalse: with MAILBUS_MANAGE_STREAMS=false mailbus creates nothing and
// refuses to start naming what is missing or takes other subjects; with everything in
// place it starts and changes nothing.
func TestManageStreamsFalse(t *testing.T) {
	t.Setenv("MAILBUS_MANAGE_STREAMS", "false")
	ctx := context.Background()

	t.Run("missing", func(t *testing.T) {
		url, js := natsFor(t)
		err := runUntilError(t, envConfig(t, url))
		if err == nil || !errors.Is(err, bus.ErrStorageCheck) || !strings.Contains(err.Error(), "stream MAIL_BUS_0") {
			t.Fatalf("Run() = %v; want a refusal naming stream MAIL_BUS_0", err)
		}
		for name := range js.StreamNames(ctx).Name() {
			t.Errorf("stream %s created with MAILBUS_MANAGE_STREAMS=false", name)
		}
	})

	t.Run("present", func(t *testing.T) {
		url, js := natsFor(t)
		managed := svcConfig(t)
		managed.NATSURL = url
		runService(t, managed, nil).c.Close()
		// An operator's own settings, including an owned one: left alone.
		c := streamConfig(t, js, "MAIL_BUS_0")
		c.MaxAge = 5 * time.Hour
		if _, err := js.UpdateStream(ctx, c); err != nil {
			t.Fatal(err)
		}
		s := runService(t, envConfig(t, url), nil)
		s.ok("mail.control.connection.put", imapConnection("checked"))
		if got := streamConfig(t, js, "MAIL_BUS_0").MaxAge; got != 5*time.Hour {
			t.Errorf("MAIL_BUS_0 MaxAge %s after a start with MANAGE_STREAMS=false, want the operator's 5h", got)
		}
	})

	for _, tc := range []struct {
		name, want string
		breakIt    func(t *testing.T, js jetstream.JetStream)
	}{
		{"dead letters elsewhere", "stream MAIL_DEAD takes subjects other.dead.>", func(t *testing.T, js jetstream.JetStream) {
			c := streamConfig(t, js, "MAIL_DEAD")
			c.Subjects = []string{"other.dead.>"}
			if _, err := js.UpdateStream(ctx, c); err != nil {
				t.Fatal(err)
			}
		}},
		{"no object store", "object store mail_attachments: missing", func(t *testing.T, js jetstream.JetStream) {
			if err := js.DeleteObjectStore(ctx, "mail_attachments"); err != nil {
				t.Fatal(err)
			}
		}},
		{"no leases", "kv mail_leases: missing", func(t *testing.T, js jetstream.JetStream) {
			if err := js.DeleteKeyValue(ctx, "mail_leases"); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, js := natsFor(t)
			managed := svcConfig(t)
			managed.NATSURL = url
			runService(t, managed, nil).c.Close()
			tc.breakIt(t, js)
			err := runUntilError(t, envConfig(t, url))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run() = %v; want an error with %q", err, tc.want)
			}
		})
	}
}
