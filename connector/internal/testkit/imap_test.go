package testkit_test

import (
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/mailbus/mailbus/connector/internal/testkit"
)

// TestMemIMAPAnnouncesMailQueuedBeforeIdle pins the cause of a flake of the IDLE tests:
// mail appended after a client's last command and before its IDLE must be announced as
// IDLE starts, as Dovecot does (see IdleAnnouncing).
func TestMemIMAPAnnouncesMailQueuedBeforeIdle(t *testing.T) {
	m := testkit.StartIMAP(t, nil)
	exists := make(chan uint32, 8)
	c, err := imapclient.DialInsecure(m.Addr, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatalf("DialInsecure() = %v", err)
	}
	defer c.Close()
	if err := c.Login("alice", "secret").Wait(); err != nil {
		t.Fatalf("Login().Wait() = %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("Select().Wait() = %v", err)
	}
	m.Append(t, "alice", "INBOX", []byte("Subject: between\r\n\r\nbody\r\n"))
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("Idle() = %v", err)
	}
	defer idle.Close()
	select {
	case n := <-exists:
		if n != 1 {
			t.Fatalf("EXISTS %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EXISTS in IDLE for mail appended before it")
	}
}
