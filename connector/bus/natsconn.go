package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/schemas"
)

// NATS client reconnection: forever, every reconnectWait plus up to reconnectJitter, so a
// fleet of replicas does not reconnect in step after a server restart.
const (
	reconnectWait      = 2 * time.Second
	reconnectJitter    = time.Second
	reconnectJitterTLS = 2 * time.Second
)

// ConnConfig is what a NATS connection of mailbus is made with: the MAILBUS_NATS_*
// settings, the replica's name, and the embedded server's address for a client of it.
type ConnConfig struct {
	URL, Creds, NKey, User, Password, Token string
	TLSCA, TLSCert, TLSKey                  string
	// Instance names the connection ("mailbus <instance>").
	Instance string
	// EmbeddedListen is the embedded server's client address, dialled by Dial without URL.
	EmbeddedListen string
}

// natsOptions are the client options of the connector's NATS connection: name, auth, TLS,
// endless reconnects and handlers that log connection changes. The logs name servers only
// in redacted form and never any credential. reconnected is called after every reconnect,
// closed once the connection is closed for good.
func natsOptions(cfg ConnConfig, logger *slog.Logger, reconnected, closed func()) ([]nats.Option, error) {
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
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.NKey != "":
		o, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			// The error may quote the file; it never holds the seed itself.
			return nil, fmt.Errorf("MAILBUS_NATS_NKEY: %w", err)
		}
		opts = append(opts, o)
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("MAILBUS_NATS_TLS_CERT and MAILBUS_NATS_TLS_KEY go together")
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts, nil
}

// Connect connects to the servers of cfg.URL (MAILBUS_NATS_URL, or the embedded server's
// client URL, reached through extra's nats.InProcessServer), retrying the first
// connection until ctx ends: at start the servers may still be coming up. reconnected is
// called after every reconnect.
func Connect(ctx context.Context, cfg ConnConfig, logger *slog.Logger, reconnected func(), extra ...nats.Option) (nc *nats.Conn, closed <-chan struct{}, err error) {
	for attempt := 0; ; attempt++ {
		done := make(chan struct{})
		var once sync.Once
		opts, err := natsOptions(cfg, logger, reconnected, func() { once.Do(func() { close(done) }) })
		if err != nil {
			return nil, nil, err
		}
		nc, err := nats.Connect(cfg.URL, append(opts, extra...)...)
		if err == nil {
			logger.Info("nats connected", "server", nc.ConnectedUrlRedacted())
			return nc, done, nil
		}
		logger.Warn("nats connect failed; retrying", "servers", RedactURLs(cfg.URL), "err", err)
		if !retry.Sleep(ctx, retry.Backoff(min(attempt, 3)+1)) {
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

// Dial connects a client of a running mailbus (the mailbus CLI) with the same
// MAILBUS_NATS_* settings: the servers of MAILBUS_NATS_URL, else the embedded server's
// MAILBUS_EMBEDDED_LISTEN. It tries once and does not reconnect.
func Dial(cfg ConnConfig) (*nats.Conn, error) {
	url := cfg.URL
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

// NATSUnreachable is the status of a route while the NATS server is unreachable.
const NATSUnreachable = "the NATS server is unreachable"

// AwaitNATS returns once the NATS connection nc is up: at once when it is (or nc is nil),
// else when the client has reconnected, or with an error when ctx ends or the connection is
// closed for good. Meanwhile the route's status (status is its writer) shows the outage in
// plain words. Workers call it before they publish, so that a message is not handed to the
// client's reconnect buffer, and before they publish again what a reconnect failed.
func AwaitNATS(ctx context.Context, nc *nats.Conn, status func(func(*schemas.RouteStatus))) error {
	if Up(nc) {
		return nil
	}
	status(func(st *schemas.RouteStatus) { st.State, st.LastError = schemas.StateBackoff, NATSUnreachable })
	t := time.NewTicker(natsPoll)
	defer t.Stop()
	for !nc.IsConnected() {
		if nc.IsClosed() {
			return fmt.Errorf("%s: %w", NATSUnreachable, nats.ErrConnectionClosed)
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

// Up reports whether the NATS connection nc is up (true without one).
func Up(nc *nats.Conn) bool {
	return nc == nil || nc.IsConnected()
}
