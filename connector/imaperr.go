package connector

import (
	"crypto/tls"
	"crypto/x509"
	"errors"

	"github.com/emersion/go-imap/v2"

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
