// Command corpusgen writes the mapping test corpus, testdata/mail/*.eml: real-world-shaped
// messages (Gmail, Outlook, Thunderbird, Apple Mail, lists, bounces, invites, legacy charsets,
// S/MIME) and broken ones. A program rather than hand-written files because legacy charsets,
// base64 and exact byte damage are easier to get right in code.
//
//	go run ./mapping/internal/corpusgen -out testdata/mail
//
// The output is deterministic; the goldens are then made with
// go test ./mapping -run Golden -update, and read by a human.
package main

import (
	"bytes"
	"encoding/base64"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/text/encoding"
)

func main() {
	out := flag.String("out", "testdata/mail", "directory to write the .eml files to")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, m := range corpus() {
		s := m.text
		if m.crlf {
			s = strings.ReplaceAll(s, "\n", "\r\n")
		}
		if err := os.WriteFile(filepath.Join(*out, m.name+".eml"), []byte(s), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

type message struct {
	name string
	crlf bool
	text string
}

// b64 is base64 in 76-column lines, as mailers write it.
func b64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var sb strings.Builder
	for len(s) > 76 {
		sb.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	sb.WriteString(s)
	return sb.String()
}

func qp(b []byte) string {
	var buf bytes.Buffer
	w := quotedprintable.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return strings.ReplaceAll(buf.String(), "\r\n", "\n")
}

// in encodes s in a legacy charset.
func in(e encoding.Encoding, s string) []byte {
	b, err := e.NewEncoder().Bytes([]byte(s))
	if err != nil {
		log.Fatalf("encode %q: %v", s, err)
	}
	return b
}

// word is an RFC 2047 B encoded-word.
func word(cs string, b []byte) string {
	return "=?" + cs + "?B?" + base64.StdEncoding.EncodeToString(b) + "?="
}

// qword is an RFC 2047 Q encoded-word.
func qword(cs string, b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == ' ':
			sb.WriteByte('_')
		case c > 32 && c < 127 && c != '=' && c != '?' && c != '_':
			sb.WriteByte(c)
		default:
			fmt.Fprintf(&sb, "=%02X", c)
		}
	}
	return "=?" + cs + "?Q?" + sb.String() + "?="
}

func pct(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c < 128 && (c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

// png1x1 is a valid 1x1 PNG.
var png1x1 = []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99=\x1d\x00\x00\x00\x00IEND\xaeB`\x82")

// jpegish starts like a JFIF file; its content does not matter to the mapper.
var jpegish = append([]byte("\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"), bytes.Repeat([]byte{0x42, 0x17, 0x99}, 200)...)

var pdf = []byte("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")

// random returns n deterministic pseudo-random bytes.
func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

const ics = `BEGIN:VCALENDAR
PRODID:-//Google Inc//Google Calendar 70.9054//EN
VERSION:2.0
CALSCALE:GREGORIAN
METHOD:REQUEST
BEGIN:VEVENT
DTSTART:20261201T100000Z
DTEND:20261201T110000Z
DTSTAMP:20261125T120000Z
ORGANIZER;CN=Alice Example:mailto:alice@example.com
UID:7kq2o1d4mg5s0c3v8b9n6p@google.com
ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE;CN=support@example.com:mailto:support@example.com
SUMMARY:Quarterly review
LOCATION:Room 4
SEQUENCE:0
STATUS:CONFIRMED
END:VEVENT
END:VCALENDAR
`
