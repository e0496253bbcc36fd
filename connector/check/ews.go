package check

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/schemas"
)

// runExchange runs the stages of the check of an exchange connection: resolve, dial, tls
// (for https), login (a FindItem of one item of the inbox, which is where the credentials
// are tried) and a select of each mailbox (its folder found and its unread items counted).
func (k *checker) runExchange(ctx context.Context, mailboxes []string) {
	endpoint, err := ews.Endpoint(k.c)
	if err != nil {
		k.fail("resolve", invalid("exchangeUrl", "%v", err))
		return
	}
	u, _ := url.Parse(endpoint)
	k.host = u.Hostname()
	k.port, _ = strconv.Atoi(u.Port())
	if k.port == 0 {
		k.port = map[string]int{"http": 80, "https": 443}[u.Scheme]
	}

	raw := k.connect(ctx, func(hostport string) *checkFailure {
		return invalid("exchangeUrl", "nothing listens on %s: check the host and port of exchangeUrl, and the encryption (none is http, port 80)", hostport)
	})
	if raw == nil {
		return
	}
	defer raw.Close()
	defer context.AfterFunc(ctx, func() { raw.Close() })()
	if u.Scheme == "https" {
		if !k.stage("tls", func() (string, error) {
			tc := tls.Client(raw, k.tlsConfig(nil))
			if err := tc.HandshakeContext(ctx); err != nil {
				if errors.As(err, new(tls.RecordHeaderError)) {
					return "", invalid("encryption", "port %d does not speak TLS: use encryption none for http", k.port)
				}
				return certDetail(err, nil), k.tlsFailure(ctx, err)
			}
			st := tc.ConnectionState()
			return certDetail(nil, &st), nil
		}) {
			return
		}
	}
	raw.Close() // the EWS client makes its own connection

	client, err := ews.NewClient(k.c, nil, k.tokens)
	if err != nil {
		k.fail("login", invalid("exchangeVersion", "%v", err))
		return
	}
	defer client.Close()
	if k.tokens != nil && !k.stage("token", func() (string, error) { return k.token(ctx) }) {
		return
	}
	if !k.stage("login", func() (string, error) {
		if _, err := client.CountUnread(ctx, ews.DistinguishedFolder("inbox")); err != nil {
			return "", ewsCheckFailure(err, endpoint)
		}
		return "EWS answered at " + endpoint + " as " + client.Version(), nil
	}) {
		return
	}
	for _, name := range mailboxes {
		if !k.stage("select", func() (string, error) {
			folder, err := client.ResolveFolder(ctx, name)
			if err != nil {
				return "", ewsCheckFailure(err, endpoint)
			}
			n, err := client.CountUnread(ctx, folder)
			if err != nil {
				return "", ewsCheckFailure(err, endpoint)
			}
			if k.reply.Mailbox == nil {
				k.reply.Mailbox = &schemas.MailboxCheck{Name: name, Unseen: uint32(n)}
			}
			return fmt.Sprintf("%s: %d unread", name, n), nil
		}) {
			return
		}
	}
}

// ewsCheckFailure says what an EWS error means for the person fixing the connection.
func ewsCheckFailure(err error, endpoint string) *checkFailure {
	var he *ews.HTTPError
	var ee *ews.Error
	switch {
	case errors.Is(err, ews.ErrAuth):
		return invalid("password", "the server refused the user name or password (auth, username, domain and password)")
	case errors.As(err, &he) && he.Code == http.StatusNotFound:
		return invalid("exchangeUrl", "no EWS at %s (404): the usual path is %s", endpoint, ews.DefaultPath)
	case errors.As(err, &ee) && ee.Code == "ErrorFolderNotFound":
		return invalid("mailbox", "%s", ee.Message)
	case errors.As(err, &ee) && ee.Code == "ErrorInvalidServerVersion":
		return invalid("exchangeVersion", "the server does not speak this exchangeVersion: %s", ee.Message)
	case errors.As(err, &ee) && ee.Code == "ErrorImpersonateUserDenied":
		return invalid("username", "the application may not act for this mailbox (it needs full_access_as_app or ApplicationImpersonation): %s", ee.Message)
	case retry.IsPermanent(err): // an oauth2 token refused
		return invalid("oauth2", "%v", err)
	}
	return unavailable("%v", err)
}
