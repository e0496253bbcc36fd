package connector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/mailbus/mailbus/connector/bus"

	"github.com/emersion/go-imap/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/retry"
)

// Permanent marks err as permanent: a route failing with it is parked in state error and
// retried slowly instead of backing off quickly. Permanent(nil) is nil.
func Permanent(err error) error { return retry.Permanent(err) }

// IsPermanent reports whether err is a failure that retrying soon cannot fix: one marked by
// Permanent, an IMAP refusal of the credentials or the mailbox, or a certificate error.
// Everything else (network, BYE, timeouts, NATS) is temporary.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	if retry.Marked(err) {
		return true
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		switch ie.Code {
		case imap.ResponseCodeAuthenticationFailed, imap.ResponseCodeAuthorizationFailed,
			imap.ResponseCodeNonExistent, imap.ResponseCodeTryCreate, imap.ResponseCodeNoPerm,
			imap.ResponseCodePrivacyRequired, imap.ResponseCodeExpired, imap.ResponseCodeContactAdmin:
			return true
		}
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	return errors.As(err, &unknownCA) || errors.As(err, &invalid) ||
		errors.As(err, &hostname) || errors.As(err, &verify)
}

// countFailure counts a failed session or cycle in m by its kind; permanent is the
// worker's own verdict (the Exchange worker knows more permanent errors than IsPermanent).
func countFailure(m *metrics.RouteMetrics, err error, permanent bool) {
	if err != nil {
		m.Failed(errorKind(err, permanent))
	}
}

// errorKind sorts an error into one of the few kinds of mailbus_route_errors_total.
func errorKind(err error, permanent bool) string {
	var apiErr *jetstream.APIError
	var netErr net.Error
	switch {
	case permanent || IsPermanent(err):
		return metrics.KindPermanent
	case errors.As(err, &apiErr), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrNoResponders):
		return metrics.KindNATS
	case errors.Is(err, errIMAPTimeout), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &netErr) && netErr.Timeout():
		return metrics.KindTimeout
	}
	return metrics.KindMailbox
}

// How a route's status names an outage. The socket's own words ("write tcp 10.0.0.1:
// 51234->10.0.0.2:993: use of closed network connection") tell a user nothing; the
// connection log keeps them.
const (
	serverClosed = "the %s server closed the connection"
	serverDown   = "the %s server is unreachable"
)

// errClosedByServer is a connection's end seen without an error to tell it (imapclient's
// Closed while in IDLE).
var errClosedByServer = errors.New("the server closed the connection")

// statusError is what a route's status says of err, a failure of a worker talking to a
// mail server of the given kind ("IMAP", "Exchange"): while the NATS connection is down
// (natsUp false) every temporary failure is that outage's; a connection the server closed
// or one that could not be made is said in plain words; anything else as it is.
func statusError(err error, server string, natsUp bool) string {
	if IsPermanent(err) || errors.Is(err, errIMAPTimeout) {
		return err.Error()
	}
	if !natsUp || errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrNoServers) {
		return bus.NATSUnreachable
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		down := fmt.Sprintf(serverDown, server)
		addr := "the server"
		if op.Addr != nil {
			addr = op.Addr.String()
		}
		var errno syscall.Errno
		var dns *net.DNSError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return down + ": nothing listens on " + addr
		case errors.As(err, &dns):
			return down + ": " + dns.Name + ": " + dns.Err
		case op.Timeout():
			return down + ": " + addr + " does not answer"
		case errors.As(err, &errno):
			return down + ": " + errno.Error()
		}
		return down
	}
	if errors.Is(err, errClosedByServer) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) {
		return fmt.Sprintf(serverClosed, server)
	}
	return err.Error()
}
