package ews_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/ewstest"
	"github.com/mailbus/mailbus/schemas"
)

func TestEWSEndpoint(t *testing.T) {
	for _, tc := range []struct {
		url, enc, want string
	}{
		{"mail.example.com", "ssl", "https://mail.example.com/EWS/Exchange.asmx"},
		{"mail.example.com/", "tls", "https://mail.example.com/EWS/Exchange.asmx"},
		{"mail.example.com:8443/ews/exchange.asmx", "ssl", "https://mail.example.com:8443/ews/exchange.asmx"},
		{"10.0.0.5", "none", "http://10.0.0.5/EWS/Exchange.asmx"},
		{"https://mail.example.com", "ssl", ""},
		{"http://mail.example.com/EWS/Exchange.asmx", "none", ""},
		{"", "ssl", ""},
		{"user@mail.example.com", "ssl", ""},
	} {
		got, err := ews.Endpoint(&schemas.Connection{ExchangeURL: tc.url, Encryption: tc.enc})
		if tc.want == "" {
			if err == nil {
				t.Errorf("ews.Endpoint(%q) = %q, want an error", tc.url, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ews.Endpoint(%q, %s) = %q, %v, want %q", tc.url, tc.enc, got, err, tc.want)
		}
	}
}

func TestEWSServerVersion(t *testing.T) {
	for in, want := range map[string]string{
		"Exchange2007_SP1": "Exchange2007_SP1", "Exchange2010_SP2": "Exchange2010_SP2",
		"Exchange2013": "Exchange2013", "Exchange2013_SP1": "Exchange2013_SP1",
		"Exchange2016": "Exchange2013_SP1", "Exchange2019": "Exchange2013_SP1", "": "Exchange2013_SP1",
	} {
		if got, err := ews.ServerVersion(in); err != nil || got != want {
			t.Errorf("ews.ServerVersion(%q) = %q, %v, want %q", in, got, err, want)
		}
	}
	if _, err := ews.ServerVersion("Exchange2003"); err == nil {
		t.Errorf("ews.ServerVersion(Exchange2003) = nil error")
	}
}

func newClient(t *testing.T, c schemas.Connection, roots *x509.CertPool) *ews.Client {
	t.Helper()
	cl, err := ews.NewClient(&c, roots, nil)
	if err != nil {
		t.Fatalf("ews.NewClient() = %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestEWSClientCycle(t *testing.T) {
	f := ewstest.New(t, false)
	f.Auth, f.User, f.Password = "basic", `CORP\bot`, "s3cret!"
	ids := f.Add(120)
	cl := newClient(t, f.Connection(), nil)
	ctx := context.Background()
	inbox, err := cl.ResolveFolder(ctx, "INBOX")
	if err != nil {
		t.Fatalf("resolveFolder() = %v", err)
	}

	items, more, err := cl.FindUnread(ctx, inbox, 0, 50, nil)
	page := itemIDs(items)
	if err != nil || len(page) != 50 || !more || page[0].ID != ids[0] || page[49].ID != ids[49] ||
		items[0].Received != "2026-11-25T19:00:01Z" {
		t.Fatalf("findUnread(0, 50) = %d items, more %t, %v", len(page), more, err)
	}
	last, more, err := cl.FindUnread(ctx, inbox, 100, 50, nil)
	if err != nil || len(last) != 20 || more || last[19].ID.ID != ids[119] {
		t.Fatalf("findUnread(100, 50) = %d items, more %t, %v", len(last), more, err)
	}

	var mimes [][]byte
	got, err := cl.GetItems(ctx, page[:3], func(i int, r io.Reader) error {
		b, err := io.ReadAll(r)
		if i != len(mimes) {
			t.Errorf("mime called for item %d, want %d", i, len(mimes))
		}
		mimes = append(mimes, b)
		return err
	})
	if err != nil || len(got) != 3 {
		t.Fatalf("getItems() = %d, %v", len(got), err)
	}
	for i, g := range got {
		if g.Err != nil || g.ID.ID != ids[i] || !bytes.Equal(mimes[i], ewstest.MIME(i+1)) ||
			g.Size != int64(len(mimes[i])) || !g.Received.Equal(time.Date(2026, 11, 25, 19, 0, i+1, 0, time.UTC)) {
			t.Errorf("item %d = %+v, mime %q", i, g, mimes[i])
		}
	}

	errs, err := cl.MarkRead(ctx, page[:3])
	if err != nil || len(errs) != 3 || errors.Join(errs...) != nil {
		t.Fatalf("markRead() = %v, %v", errs, err)
	}
	if page, _, _ := cl.FindUnread(ctx, inbox, 0, 50, nil); page[0].ID.ID != ids[3] {
		t.Errorf("after markRead the first unread is %s, want %s", page[0].ID.ID, ids[3])
	}
	for _, v := range f.Versions {
		if v != "Exchange2013_SP1" {
			t.Errorf("RequestServerVersion %q for Exchange2016, want Exchange2013_SP1", v)
		}
	}
	if len(f.Suppress) != 1 || f.Suppress[0] != "true" {
		t.Errorf("SuppressReadReceipts = %q, want true", f.Suppress)
	}
}

func itemIDs(items []ews.Item) []ews.ID {
	ids := make([]ews.ID, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	return ids
}

func TestEWSClientVersions(t *testing.T) {
	for _, tc := range []struct{ version, sent, suppress string }{
		{"Exchange2010_SP2", "Exchange2010_SP2", ""},
		{"Exchange2013", "Exchange2013", ""},
		{"Exchange2013_SP1", "Exchange2013_SP1", "true"},
		{"Exchange2019", "Exchange2013_SP1", "true"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			f := ewstest.New(t, false)
			ids := f.Add(1)
			c := f.Connection()
			c.Auth, c.ExchangeVersion = schemas.AuthNone, tc.version
			cl := newClient(t, c, nil)
			if _, err := cl.MarkRead(context.Background(), []ews.ID{{ID: ids[0]}}); err != nil {
				t.Fatalf("markRead() = %v", err)
			}
			if f.Versions[0] != tc.sent || f.Suppress[0] != tc.suppress {
				t.Errorf("version %q, SuppressReadReceipts %q; want %q, %q", f.Versions[0], f.Suppress[0], tc.sent, tc.suppress)
			}
		})
	}
}

func TestEWSClientBadCredentials(t *testing.T) {
	for _, auth := range []string{"basic", "ntlm"} {
		t.Run(auth, func(t *testing.T) {
			f := ewstest.New(t, false)
			f.Auth, f.User, f.Password = auth, `CORP\bot`, "right"
			c := f.Connection()
			c.Password = "wrong-Pa55"
			if auth == "ntlm" {
				c.Auth = schemas.AuthWindows
			}
			cl := newClient(t, c, nil)
			_, _, err := cl.FindUnread(context.Background(), ews.DistinguishedFolder("inbox"), 0, 1, nil)
			if !errors.Is(err, ews.ErrAuth) || !ews.IsPermanent(err) {
				t.Fatalf("findUnread() = %v, want ews.ErrAuth", err)
			}
			if strings.Contains(err.Error(), "wrong-Pa55") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestEWSClientNTLM(t *testing.T) {
	f := ewstest.New(t, false)
	f.Auth, f.User, f.Password = "ntlm", `CORP\bot`, "s3cret!"
	ids := f.Add(3)
	c := f.Connection()
	c.Auth = schemas.AuthWindows
	cl := newClient(t, c, nil)
	ctx := context.Background()
	page, _, err := cl.FindUnread(ctx, ews.DistinguishedFolder("inbox"), 0, 10, nil)
	if err != nil || len(page) != 3 {
		t.Fatalf("findUnread() = %d, %v", len(page), err)
	}
	if _, err := cl.MarkRead(ctx, itemIDs(page)); err != nil {
		t.Fatalf("markRead() = %v", err)
	}
	// One handshake: the second request rides on the authenticated keep-alive connection.
	if f.NTLMNegotiations != 1 || len(f.NTLMUsers) != 1 || f.NTLMUsers[0] != `CORP\bot` {
		t.Errorf("NTLM negotiations %d, users %q; want 1, [CORP\\bot]", f.NTLMNegotiations, f.NTLMUsers)
	}
	if f.Item(ids[2]).Read != true {
		t.Errorf("item not marked read")
	}
}

func TestEWSClientTLS(t *testing.T) {
	f := ewstest.New(t, true)
	f.Add(1)
	c := f.Connection()
	c.Auth, c.Encryption = schemas.AuthNone, schemas.EncryptionSSL
	ctx := context.Background()
	inbox := ews.DistinguishedFolder("inbox")

	if _, _, err := newClient(t, c, nil).FindUnread(ctx, inbox, 0, 1, nil); !errors.As(err, new(*tls.CertificateVerificationError)) {
		t.Errorf("findUnread() without the CA = %v, want a certificate error", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(f.Certificate())
	if _, _, err := newClient(t, c, roots).FindUnread(ctx, inbox, 0, 1, nil); err != nil {
		t.Errorf("findUnread() with the CA = %v", err)
	}
	c.TLSInsecureSkipVerify = true
	if _, _, err := newClient(t, c, nil).FindUnread(ctx, inbox, 0, 1, nil); err != nil {
		t.Errorf("findUnread() with tlsInsecureSkipVerify = %v", err)
	}
}

func TestEWSClientFaults(t *testing.T) {
	f := ewstest.New(t, false)
	f.Add(1)
	c := f.Connection()
	c.Auth = schemas.AuthNone
	cl := newClient(t, c, nil)
	ctx := context.Background()
	inbox := ews.DistinguishedFolder("inbox")

	f.Busy = 1500 * time.Millisecond
	_, _, err := cl.FindUnread(ctx, inbox, 0, 1, nil)
	var ee *ews.Error
	if !errors.As(err, &ee) || ee.Code != "ErrorServerBusy" || ews.BackOff(err) != 1500*time.Millisecond || ews.IsPermanent(err) {
		t.Errorf("busy: findUnread() = %v (back-off %s), want ErrorServerBusy with 1.5s", err, ews.BackOff(err))
	}
	f.Fail500 = 1
	_, _, err = cl.FindUnread(ctx, inbox, 0, 1, nil)
	var he *ews.HTTPError
	if !errors.As(err, &he) || he.Code != 500 || ews.IsPermanent(err) {
		t.Errorf("500: findUnread() = %v, want a temporary HTTP error", err)
	}
	if _, _, err := cl.FindUnread(ctx, inbox, 0, 1, nil); err != nil {
		t.Errorf("findUnread() after the faults = %v", err)
	}
}

func TestEWSClientItemError(t *testing.T) {
	f := ewstest.New(t, false)
	ids := f.Add(3)
	f.BadItems[ids[1]] = "ErrorMimeContentConversionFailed"
	c := f.Connection()
	c.Auth = schemas.AuthNone
	cl := newClient(t, c, nil)
	var called []int
	got, err := cl.GetItems(context.Background(), []ews.ID{{ID: ids[0]}, {ID: ids[1]}, {ID: ids[2]}}, func(i int, r io.Reader) error {
		called = append(called, i)
		return nil // leaves the MIME unread: the reader skips it
	})
	if err != nil {
		t.Fatalf("getItems() = %v", err)
	}
	var ee *ews.Error
	if got[0].Err != nil || got[2].Err != nil || !errors.As(got[1].Err, &ee) || ee.Code != "ErrorMimeContentConversionFailed" {
		t.Errorf("item errors = %v, %v, %v", got[0].Err, got[1].Err, got[2].Err)
	}
	if len(called) != 2 || called[0] != 0 || called[1] != 2 || got[2].ID.ID != ids[2] {
		t.Errorf("mime called for %v, want [0 2]", called)
	}
}

func TestEWSClientLargeMIME(t *testing.T) {
	f := ewstest.New(t, false)
	ids := f.Add(2)
	big := append(ewstest.MIME(1), bytes.Repeat([]byte("0123456789abcdef\r\n"), 300_000)...) // ~5 MB
	f.Items[0].MIME = big
	c := f.Connection()
	c.Auth = schemas.AuthNone
	cl := newClient(t, c, nil)
	var sizes []int
	_, err := cl.GetItems(context.Background(), []ews.ID{{ID: ids[0]}, {ID: ids[1]}}, func(i int, r io.Reader) error {
		b, err := io.ReadAll(r)
		if i == 0 && !bytes.Equal(b, big) {
			t.Errorf("large MIME differs: %d bytes, want %d", len(b), len(big))
		}
		sizes = append(sizes, len(b))
		return err
	})
	if err != nil || len(sizes) != 2 || sizes[1] != len(ewstest.MIME(2)) {
		t.Fatalf("getItems() = %v, sizes %v", err, sizes)
	}
}

func TestEWSClientSyncAndFolders(t *testing.T) {
	f := ewstest.New(t, false)
	ids := f.Add(5)
	c := f.Connection()
	c.Auth = schemas.AuthNone
	cl := newClient(t, c, nil)
	ctx := context.Background()
	inbox := ews.DistinguishedFolder("inbox")

	items, state, last, err := cl.SyncItems(ctx, inbox, "", 3)
	if err != nil || len(items) != 3 || last || state == "" || items[0].ID.ID != ids[0] || items[0].IsRead || items[0].Received == "" {
		t.Fatalf("syncItems(\"\") = %d, %q, %t, %v", len(items), state, last, err)
	}
	items, state, last, err = cl.SyncItems(ctx, inbox, state, 3)
	if err != nil || len(items) != 2 || !last || items[1].ID.ID != ids[4] {
		t.Fatalf("syncItems(state) = %d, %q, %t, %v", len(items), state, last, err)
	}
	if _, _, _, err := cl.SyncItems(ctx, inbox, "bm9wZQ==", 3); !ews.IsPermanent(err) {
		t.Errorf("syncItems(bad state) = %v, want a permanent error", err)
	}

	archive, err := cl.ResolveFolder(ctx, "Archive")
	if err != nil || archive.Folder == nil || archive.Folder.ID != "AAMkFolderArchive=" {
		t.Fatalf("resolveFolder(Archive) = %+v, %v", archive, err)
	}
	if _, err := cl.ResolveFolder(ctx, "Nope"); !ews.IsPermanent(err) {
		t.Errorf("resolveFolder(Nope) = %v, want a permanent error", err)
	}
	if junk, err := cl.ResolveFolder(ctx, "JunkEmail"); err != nil || junk.Distinguished.ID != "junkemail" {
		t.Errorf("resolveFolder(JunkEmail) = %+v, %v", junk, err)
	}
	if _, err := cl.MoveItems(ctx, []ews.ID{{ID: ids[0]}}, archive); err != nil || f.Item(ids[0]).Folder != "AAMkFolderArchive=" {
		t.Errorf("moveItems() = %v, folder %q", err, f.Item(ids[0]).Folder)
	}
	if _, err := cl.DeleteItems(ctx, []ews.ID{{ID: ids[1]}}); err != nil || f.Item(ids[1]).Folder != "deleteditems" {
		t.Errorf("deleteItems() = %v, folder %q", err, f.Item(ids[1]).Folder)
	}
}
