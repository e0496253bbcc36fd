// Package retry is the vocabulary of failures shared by mailbus's parts: which failures
// retrying soon cannot fix, how long to back off from the others, and a sleep that ends
// with the context.
package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/rand/v2"
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
// failures may be permanent too by what they are (IsPermanent, and each source's own).
func Marked(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Retry pacing of a temporary failure.
const (
	backoffMin = 500 * time.Millisecond
	backoffMax = 2 * time.Minute
)

// Backoff is the wait before retry number attempt (0-based): exponential from 500ms,
// capped at 2 minutes, with jitter (between half and all of it) so that routes of one
// failed server do not come back in lockstep.
func Backoff(attempt int) time.Duration {
	d := backoffMax
	if attempt < 20 {
		d = min(backoffMax, backoffMin<<attempt)
	}
	return d/2 + rand.N(d/2+1)
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

// IsPermanent reports whether err is permanent whatever the server: marked by Permanent,
// or a certificate that does not verify. Each source adds what its protocol says is
// permanent (an IMAP NO [AUTHENTICATIONFAILED], an EWS ErrorAccessDenied).
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var (
		unknownCA *x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	return Marked(err) || errors.As(err, &unknownCA) || errors.As(err, &invalid) ||
		errors.As(err, &hostname) || errors.As(err, &verify)
}
