package connector

import "errors"

// NewIMAPWorker makes the worker of a route on an IMAP connection.
// Placeholder until the IMAP worker lands (issue "IMAP routes").
func NewIMAPWorker(rt *Runtime, spec RouteSpec) (Worker, error) {
	return nil, errors.New("imap worker not built yet")
}
