// Command barefetch is the baseline of the side-by-side benchmark (bench/run.sh): the
// least any IMAP client must do to read a mailbox, one `UID FETCH 1:* BODY.PEEK[]` whose
// bytes are read and thrown away. No parsing, no storage, no flags.
//
//	barefetch -addr 127.0.0.1:10993 -encryption ssl -ca ca.pem -user alice -pass secret
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/bench/internal/benchimap"
)

func main() {
	mail := benchimap.AddFlags()
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("barefetch: ")

	start := time.Now()
	c, err := mail.Open()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
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

// fetchAll reads every message's body and discards it, returning the count and bytes.
func fetchAll(c *imapclient.Client) (n int, size int64, err error) {
	cmd := benchimap.FetchAll(c)
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
