// Package benchimap is what the bench floors (barefetch, rawpipe) share: their IMAP flags,
// and a session logged in with the mailbox selected read-only, so that both floors read the
// mailbox exactly the same way.
package benchimap

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Flags are the IMAP flags of a bench program.
type Flags struct {
	addr, encryption, ca, user, pass, mailbox *string
}

// AddFlags defines the IMAP flags on the command line (flag.Parse reads them).
func AddFlags() *Flags {
	return &Flags{
		addr:       flag.String("addr", "127.0.0.1:993", "IMAP server host:port"),
		encryption: flag.String("encryption", "ssl", "ssl (TLS from the first byte) or none"),
		ca:         flag.String("ca", "", "PEM file of the CA that signed the server certificate (empty: system pool)"),
		user:       flag.String("user", "alice", "user name"),
		pass:       flag.String("pass", "secret", "password"),
		mailbox:    flag.String("mailbox", "INBOX", "mailbox to read"),
	}
}

// Open dials, logs in and selects the mailbox read-only, as BODY.PEEK[] reads it: a floor
// must leave the mailbox as it found it.
func (f *Flags) Open() (*imapclient.Client, error) {
	c, err := dial(*f.addr, *f.encryption, *f.ca)
	if err != nil {
		return nil, err
	}
	if err := c.Login(*f.user, *f.pass).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("login: %w", err)
	}
	if _, err := c.Select(*f.mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		c.Close()
		return nil, fmt.Errorf("select %s: %w", *f.mailbox, err)
	}
	return c, nil
}

func dial(addr, encryption, caFile string) (*imapclient.Client, error) {
	switch encryption {
	case "none":
		return imapclient.DialInsecure(addr, nil)
	case "ssl":
		cfg := &tls.Config{}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, err
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: no certificate", caFile)
			}
		}
		return imapclient.DialTLS(addr, &imapclient.Options{TLSConfig: cfg})
	}
	return nil, fmt.Errorf("encryption %q: want ssl or none", encryption)
}

// FetchAll is the FETCH both floors send: every message's whole body, unflagged.
func FetchAll(c *imapclient.Client) *imapclient.FetchCommand {
	all := imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}} // 1:*
	return c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
}
