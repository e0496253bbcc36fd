package connector_test

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/schemas"
)

// ntlmSession adds AUTHENTICATE NTLM to the memory server's session: it answers the
// NEGOTIATE with a CHALLENGE and accepts an AUTHENTICATE for CORP\alice (the NTLMv2 proof
// itself is go-ntlmssp's business and not checked here).
type ntlmSession struct {
	imapserver.Session
	users chan string // DOMAIN\user of each AUTHENTICATE message
}

func (s *ntlmSession) AuthenticateMechanisms() []string { return []string{"NTLM"} }

func (s *ntlmSession) Authenticate(mech string) (sasl.Server, error) {
	step := 0
	return serverFunc(func(resp []byte) ([]byte, bool, error) {
		step++
		if len(resp) < 12 || string(resp[:8]) != "NTLMSSP\x00" {
			return nil, false, errors.New("not NTLM")
		}
		switch typ := binary.LittleEndian.Uint32(resp[8:]); {
		case step == 1 && typ == 1:
			return ntlmChallenge(), false, nil
		case step == 2 && typ == 3:
			user := utf16Field(resp, 28) + `\` + utf16Field(resp, 36)
			s.users <- user
			if user != `CORP\alice` {
				return nil, false, imapserver.ErrAuthFailed
			}
			return nil, true, s.Session.Login("alice", "secret")
		}
		return nil, false, errors.New("unexpected NTLM message")
	}), nil
}

type serverFunc func([]byte) ([]byte, bool, error)

func (f serverFunc) Next(resp []byte) ([]byte, bool, error) { return f(resp) }

func utf16Field(msg []byte, at int) string {
	n, off := int(binary.LittleEndian.Uint16(msg[at:])), int(binary.LittleEndian.Uint32(msg[at+4:]))
	if off+n > len(msg) {
		return ""
	}
	u := make([]uint16, n/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(msg[off+2*i:])
	}
	return string(utf16.Decode(u))
}

// ntlmChallenge is a minimal CHALLENGE message (MS-NLMP 2.2.1.2): Unicode, NTLM, extended
// session security, a target info holding only MsvAvEOL.
func ntlmChallenge() []byte {
	b := make([]byte, 48, 52)
	copy(b, "NTLMSSP\x00")
	binary.LittleEndian.PutUint32(b[8:], 2)
	binary.LittleEndian.PutUint32(b[16:], 48)
	binary.LittleEndian.PutUint32(b[20:], 0x00000001|0x00000200|0x00080000|0x00800000)
	copy(b[24:], "8bytes!!")
	binary.LittleEndian.PutUint16(b[40:], 4)
	binary.LittleEndian.PutUint16(b[42:], 4)
	binary.LittleEndian.PutUint32(b[44:], 48)
	return append(b, 0, 0, 0, 0)
}

// TestIMAPWindowsAuth: auth windows logs in with AUTHENTICATE NTLM as DOMAIN\user.
func TestIMAPWindowsAuth(t *testing.T) {
	users := make(chan string, 10)
	srv := testkit.StartIMAP(t, &testkit.IMAPOptions{
		Caps: imap.CapSet{imap.CapIMAP4rev1: {}},
		Session: func(_ *imapserver.Conn, s imapserver.Session) imapserver.Session {
			return &ntlmSession{Session: s, users: users}
		},
	})

	n := startBusNATS(t)
	rt := newIMAPRuntime(t, n)
	conn := imapConn(srv.Addr, schemas.EncryptionNone)
	conn.Auth, conn.Domain = schemas.AuthWindows, "CORP"
	route := imapRoute("ntlm", schemas.SelectUnseen, schemas.AfterMarkRead)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	select {
	case u := <-users:
		if u != `CORP\alice` {
			t.Errorf("NTLM user %q, want CORP\\alice", u)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no AUTHENTICATE NTLM")
	}
	waitRouteIdle(t, rt, route.Name, 0)
}
