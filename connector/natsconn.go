package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/schemas"
)

// NATS client reconnection: forever, every reconnectWait plus up to reconnectJitter, so a
// fleet of replicas does not reconnect in step after a server restart.
const (
	reconnectWait      = 2 * time.Second
	reconnectJitter    = time.Second
	reconnectJitterTLS = 2 * time.Second
)

// natsOptions are the client options of the connector's NATS connection: name, auth, TLS,
// endless reconnects and handlers that log connection changes. The logs name servers only
// in redacted form and never any credential. reconnected is called after every reconnect,
// closed once the connection is closed for good.
func natsOptions(cfg Config, logger *slog.Logger, reconnected, closed func()) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name("mailbus " + cfg.Instance),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.ReconnectJitter(reconnectJitter, reconnectJitterTLS),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "server", nc.ConnectedUrlRedacted())
			reconnected()
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			logger.Info("nats connection closed")
			closed()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			logger.Error("nats error", "subject", subject, "err", err)
		}),
	}
	switch {
	case cfg.NATSCreds != "":
		opts = append(opts, nats.UserCredentials(cfg.NATSCreds))
	case cfg.NATSNKey != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NATSNKey)
		if err != nil {
			// The error may quote the file; it never holds the seed itself.
			return nil, fmt.Errorf("MAILBUS_NATS_NKEY: %w", err)
		}
		opts = append(opts, o)
	case cfg.NATSUser != "":
		opts = append(opts, nats.UserInfo(cfg.NATSUser, cfg.NATSPassword))
	case cfg.NATSToken != "":
		opts = append(opts, nats.Token(cfg.NATSToken))
	}
	if cfg.NATSTLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.NATSTLSCA))
	}
	if (cfg.NATSTLSCert == "") != (cfg.NATSTLSKey == "") {
		return nil, errors.New("MAILBUS_NATS_TLS_CERT and MAILBUS_NATS_TLS_KEY go together")
	}
	if cfg.NATSTLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.NATSTLSCert, cfg.NATSTLSKey))
	}
	return opts, nil
}

// connectNATS connects to the servers of MAILBUS_NATS_URL (or, with extra options such as
// nats.InProcessServer, to an embedded server), retrying the first connection until ctx
// ends: at start the servers may still be coming up. reconnected is called after every
// reconnect.
func connectNATS(ctx context.Context, cfg Config, logger *slog.Logger, reconnected func(), extra ...nats.Option) (nc *nats.Conn, closed <-chan struct{}, err error) {
	for attempt := 0; ; attempt++ {
		done := make(chan struct{})
		var once sync.Once
		opts, err := natsOptions(cfg, logger, reconnected, func() { once.Do(func() { close(done) }) })
		if err != nil {
			return nil, nil, err
		}
		nc, err := nats.Connect(cfg.NATSURL, append(opts, extra...)...)
		if err == nil {
			server := nc.ConnectedUrlRedacted()
			if cfg.NATSURL == "" {
				server = "embedded, in-process"
			}
			logger.Info("nats connected", "server", server)
			return nc, done, nil
		}
		logger.Warn("nats connect failed; retrying", "servers", RedactURLs(cfg.NATSURL), "err", err)
		if !sleepUntil(ctx, restartDelay(min(attempt, 3))) {
			return nil, nil, fmt.Errorf("nats connect: %w", ctx.Err())
		}
	}
}

// RedactURLs returns a comma list of server URLs with any user info (user, password,
// token) replaced, for logs. It works on text, so entries without a scheme are covered too.
func RedactURLs(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		scheme, rest, ok := strings.Cut(p, "://")
		if !ok {
			scheme, rest = "", p
		}
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = "redacted@" + rest[at+1:]
		}
		if scheme != "" {
			rest = scheme + "://" + rest
		}
		parts[i] = rest
	}
	return strings.Join(parts, ",")
}

// DialNATS connects a client of a running mailbus (the mailbus CLI) with the same
// MAILBUS_NATS_* settings: the servers of MAILBUS_NATS_URL, else the embedded server's
// MAILBUS_EMBEDDED_LISTEN. It tries once and does not reconnect.
func DialNATS(cfg Config) (*nats.Conn, error) {
	url := cfg.NATSURL
	if url == "" {
		url = "nats://" + cfg.EmbeddedListen
	}
	opts, err := natsOptions(cfg, slog.New(slog.DiscardHandler), func() {}, func() {})
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Name("mailbus cli"), nats.NoReconnect(), nats.Timeout(5*time.Second))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", RedactURLs(url), err)
	}
	return nc, nil
}

// natsPoll is how often a worker waiting for NATS to come back looks at the connection.
const natsPoll = 100 * time.Millisecond

// awaitNATS returns once the NATS connection is up: at once when it is, else when the
// client has reconnected, or with an error when ctx ends or the connection is closed for
// good. Meanwhile the route's status (status is its writer) shows the outage in plain
// words. Workers call it before they publish, so that a message is not handed to the
// client's reconnect buffer, and before they publish again what a reconnect failed.
func (rt *Runtime) awaitNATS(ctx context.Context, status func(func(*schemas.RouteStatus))) error {
	if rt.natsUp() {
		return nil
	}
	nc := rt.NC
	status(func(st *schemas.RouteStatus) { st.State, st.LastError = schemas.StateBackoff, natsUnreachable })
	t := time.NewTicker(natsPoll)
	defer t.Stop()
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return fmt.Errorf("%s: %w", natsUnreachable, nats.ErrConnectionClosed)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	status(func(st *schemas.RouteStatus) { st.State, st.LastError = schemas.StateRunning, "" })
	return nil
}

// natsUp reports whether the NATS connection is up (true without one).
func (rt *Runtime) natsUp() bool {
	return rt.NC == nil || rt.NC.IsConnected()
}
