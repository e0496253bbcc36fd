// Command barefetch is the baseline of the side-by-side benchmark (bench/run.sh): the
// least any IMAP client must do to read a mailbox, one `UID FETCH 1:* BODY.PEEK[]` whose
// bytes are read and thrown away. No parsing, no storage, no flags.
//
//	barefetch -addr 127.0.0.1:10993 -encryption ssl -ca ca.pem -user alice -pass secret
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:993", "IMAP server host:port")
	encryption := flag.String("encryption", "ssl", "ssl (TLS from the first byte) or none")
	caFile := flag.String("ca", "", "PEM file of the CA that signed the server certificate (empty: system pool)")
	user := flag.String("user", "alice", "user name")
	pass := flag.String("pass", "secret", "password")
	mailbox := flag.String("mailbox", "INBOX", "mailbox to read")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("barefetch: ")

	start := time.Now()
	c, err := dial(*addr, *encryption, *caFile)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(*user, *pass).Wait(); err != nil {
		log.Fatalf("login: %v", err)
	}
	// Read-only, as BODY.PEEK[] is: the baseline must leave the mailbox as it found it.
	if _, err := c.Select(*mailbox, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		log.Fatalf("select %s: %v", *mailbox, err)
	}
	n, size, err := fetchAll(c)
	if err != nil {
		log.Fatal(err)
	}
	elapsed := time.Since(start)
	if err := c.Logout().Wait(); err != nil {
		log.Fatalf("logout: %v", err)
	}
	fmt.Printf("barefetch: %d messages, %.1f MB in %.3fs\n", n, float64(size)/1e6, elapsed.Seconds())
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

// fetchAll reads every message's body and discards it, returning the count and bytes.
func fetchAll(c *imapclient.Client) (n int, size int64, err error) {
	all := imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}} // 1:*
	cmd := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			body, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || body.Literal == nil {
				continue
			}
			m, err := io.Copy(io.Discard, body.Literal)
			if err != nil {
				return n, size, fmt.Errorf("read message: %w", err)
			}
			size += m
			n++
		}
	}
	if err := cmd.Close(); err != nil {
		return n, size, fmt.Errorf("fetch: %w", err)
	}
	if n == 0 {
		return 0, 0, errors.New("fetch: the mailbox is empty")
	}
	return n, size, nil
}
