// Package retry is the vocabulary of failures shared by mailbus's parts: which failures
// retrying soon cannot fix, and a sleep that ends with the context.
package retry

import (
	"context"
	"errors"
	"time"
)

// permanentError marks a failure that retrying soon cannot fix: bad credentials, a missing
// mailbox, a certificate that does not verify, a definition the server cannot serve.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as permanent: a route failing with it is parked in state error and
// retried slowly instead of backing off quickly. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// Marked reports whether err, or an error it wraps, was marked by Permanent. Other
// failures may be permanent too by what they are (connector.IsPermanent knows them).
func Marked(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Sleep waits d or until ctx is done; it reports whether the whole d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
