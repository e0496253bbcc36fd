package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/metrics"
)

// countFailure counts a failed session or cycle in m by its kind, as its source judged it.
func countFailure(m *metrics.RouteMetrics, err error, v Verdict) {
	if err != nil {
		m.Failed(errorKind(err, v))
	}
}

// errorKind sorts an error into one of the few kinds of mailbus_route_errors_total.
func errorKind(err error, v Verdict) string {
	var apiErr *jetstream.APIError
	var netErr net.Error
	switch {
	case v.Permanent:
		return metrics.KindPermanent
	case errors.As(err, &apiErr), errors.Is(err, jetstream.ErrAsyncPublishTimeout),
		errors.Is(err, nats.ErrTimeout), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrNoResponders):
		return metrics.KindNATS
	case v.Timeout, errors.Is(err, context.DeadlineExceeded),
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

// ErrClosedByServer is a connection's end seen without an error to tell it (imapclient's
// Closed while in IDLE).
var ErrClosedByServer = errors.New("the server closed the connection")

// statusError is what a route's status says of err, a failure of a worker talking to a
// mail server of the given kind ("IMAP", "Exchange"), as its source judged it (v): while
// the NATS connection is down (natsUp false) every temporary failure is that outage's; a
// connection the server closed or one that could not be made is said in plain words;
// anything else as it is.
func statusError(err error, server string, v Verdict, natsUp bool) string {
	if v.Permanent || v.Timeout {
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
	if errors.Is(err, ErrClosedByServer) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNABORTED) {
		return fmt.Sprintf(serverClosed, server)
	}
	return err.Error()
}
