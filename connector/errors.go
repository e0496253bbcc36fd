package connector

import (
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/imap"
	"github.com/mailbus/mailbus/connector/retry"
)

// Permanent marks err as permanent: a route failing with it is parked in state error and
// retried slowly instead of backing off quickly. Permanent(nil) is nil.
func Permanent(err error) error { return retry.Permanent(err) }

// IsPermanent reports whether err is permanent whatever the mail server (see
// retry.IsPermanent): marked by Permanent, or a certificate that does not verify. Each
// source judges its own protocol's errors (imap.IsPermanent, ews.IsPermanent).
func IsPermanent(err error) bool { return retry.IsPermanent(err) }

// NewIMAPWorker makes the worker of a route on an IMAP connection (see imap.NewWorker).
func NewIMAPWorker(rt *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	return imap.NewWorker(rt, spec)
}

// NewExchangeWorker makes the worker of a route on an exchange (EWS) connection (see
// ews.NewWorker).
func NewExchangeWorker(rt *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	return ews.NewWorker(rt, spec)
}
