package imap

import (
	"errors"

	"github.com/emersion/go-imap/v2"

	"github.com/mailbus/mailbus/connector/retry"
)

// IsPermanent reports whether err is a failure that retrying soon cannot fix: what
// retry.IsPermanent knows (marked by retry.Permanent, a certificate that does not verify),
// or an IMAP refusal of the credentials or the mailbox. Everything else (network, BYE,
// timeouts, NATS) is temporary.
func IsPermanent(err error) bool {
	if retry.IsPermanent(err) {
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
	return false
}
