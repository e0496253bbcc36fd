package mapping_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

func mustMap(t *testing.T, msg string, opts *mapping.Options) *schemas.Event {
	t.Helper()
	ev, err := mapping.Map(strings.NewReader(msg), opts)
	if err != nil {
		t.Fatalf("Map() = %v", err)
	}
	return ev
}

func addr(name, address string) schemas.Address {
	return schemas.Address{Name: name, Address: address}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		header string
		want   []schemas.Address
		warn   bool
	}{
		{"a@example.com", []schemas.Address{addr("", "a@example.com")}, false},
		{`"Doe, Jane" <jane@example.com>, bob@example.com (Bob)`, []schemas.Address{addr("Doe, Jane", "jane@example.com"), addr("Bob", "bob@example.com")}, false},
		{"undisclosed-recipients:;", []schemas.Address{}, false},
		{"Team: a@x.org, b@y.org;, c@z.org", []schemas.Address{addr("", "a@x.org"), addr("", "b@y.org"), addr("", "c@z.org")}, false},
		{"Empty:;", []schemas.Address{}, false},
		{"=?utf-8?B?0JjQstCw0L0=?= <ivan@x.org>", []schemas.Address{addr("Иван", "ivan@x.org")}, false},
		{`"=?utf-8?B?0JjQstCw0L0=?=" <ivan@x.org>`, []schemas.Address{addr("Иван", "ivan@x.org")}, false},
		{"=?koi8-r?B?6dfBzg==?= <ivan@x.org>", []schemas.Address{addr("Иван", "ivan@x.org")}, false},
		{"Иван <ivan@x.org>", []schemas.Address{addr("Иван", "ivan@x.org")}, false},
		{"a@x.org,, b@y.org,", []schemas.Address{addr("", "a@x.org"), addr("", "b@y.org")}, false},
		{"Smith, John <js@x.org>", []schemas.Address{addr("John", "js@x.org")}, true},
		{"<broken@x.org", []schemas.Address{addr("", "broken@x.org")}, true},
		{"nobody", []schemas.Address{addr("", "nobody")}, true},
		{"foo, b@y.org", []schemas.Address{addr("", "foo"), addr("", "b@y.org")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			ev := mustMap(t, "To: "+tt.header+"\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\n\r\nbody\r\n", nil)
			if !reflect.DeepEqual(ev.To, tt.want) {
				t.Errorf("To = %+v, want %+v", ev.To, tt.want)
			}
			if got := len(ev.Warnings) > 0; got != tt.warn {
				t.Errorf("Warnings = %q, want some: %v", ev.Warnings, tt.warn)
			}
			if _, err := json.Marshal(ev); err != nil {
				t.Errorf("the event does not encode: %v", err)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	tests := []struct{ header, want string }{
		{"plain", "plain"},
		{"=?utf-8?B?0JfQsNGP0LLQutCw?= #42", "Заявка #42"},
		{"=?windows-1251?B?x+Dv8O7x?=", "Запрос"},
		{"a =?utf-8?q?b?= =?utf-8?q?c?= d", "a bc d"},
		{"=?utf-8?B?0JfQsNGP?= =?utf-8?B?0LLQutCw?=", "Заявка"},
		{"=?utf-8?B?!!!?= ok", "=?utf-8?B?!!!?= ok"},          // broken: kept
		{"=?UTF-8?B?0J?==?UTF-8?B?pw==?=", "=?UTF-8?B?0J?=§"}, // half broken: best effort
		{"=?x-unknown?Q?abc?= tail", "abc tail"},
		{"Fakturace – říjen", "Fakturace – říjen"},
		{"Caf\xe9", "Café"},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			ev := mustMap(t, "Subject: "+tt.header+"\nDate: Tue, 1 Dec 2026 10:00:00 +0000\n\n", nil)
			if ev.Subject != tt.want {
				t.Errorf("Subject = %q, want %q (warnings %q)", ev.Subject, tt.want, ev.Warnings)
			}
		})
	}
}

func TestDate(t *testing.T) {
	utc := func(s string) *time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			panic(err)
		}
		return &tm
	}
	tests := []struct {
		header string
		want   *time.Time
		warn   bool
	}{
		{"Tue, 1 Dec 2026 10:00:00 +0300", utc("2026-12-01T07:00:00Z"), false},
		{"1 Dec 2026 10:00:00 +0300", utc("2026-12-01T07:00:00Z"), false},
		{"Tue, 01 Dec 2026 10:00:00 +0300 (MSK)", utc("2026-12-01T07:00:00Z"), false},
		{"Tue, 1 Dec 2026 10:00:00 UT", utc("2026-12-01T10:00:00Z"), false},
		{"Tue, 1 Dec 2026 10:00:00 GMT", utc("2026-12-01T10:00:00Z"), false},
		{"Tue, 1 Dec 2026 10:00:00 PST", utc("2026-12-01T18:00:00Z"), false},
		{"Tue, 1 Dec 2026 10:00:00 msk", utc("2026-12-01T07:00:00Z"), false},
		{"Tue, 1 Dec 26 10:00:00 +0000", utc("2026-12-01T10:00:00Z"), false},
		{"Tue, 1 Dec 2026 10:00 +0000", utc("2026-12-01T10:00:00Z"), false},
		{"Tue, 1 Dec 2026 10:00:00 +03:00", utc("2026-12-01T07:00:00Z"), false},
		{"Tuesday, 1 December 2026 10:00:00 +0000", utc("2026-12-01T10:00:00Z"), false},
		{"2026-12-01T10:00:00+01:00", utc("2026-12-01T09:00:00Z"), false},
		{"Tue Dec  1 10:00:00 2026", utc("2026-12-01T10:00:00Z"), true},
		{"Tue, 1 Dec 2026 10:00:00", utc("2026-12-01T10:00:00Z"), true},
		{"Tue, 1 Dec 2026 10:00:00 XYZ", utc("2026-12-01T10:00:00Z"), true},
		{"next tuesday", nil, true},
		{"Tue, 32 Dec 2026 10:00:00 +0000", nil, true},
		{"", nil, true},
		// In year 10000 once in UTC, which JSON cannot write (the fast path, and the slow).
		{"Fri, 31 Dec 9999 23:59:59 -0100", nil, true},
		{"Fri, 31 Dec 9999 23:59:59 -01:00", nil, true},
		{"Fri, 31 Dec 9999 23:59:59 +0100", utc("9999-12-31T22:59:59Z"), false},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			ev := mustMap(t, "Subject: x\nDate: "+tt.header+"\n\n", nil)
			switch {
			case tt.want == nil && ev.Date != nil, tt.want != nil && (ev.Date == nil || !ev.Date.Equal(*tt.want)):
				t.Errorf("Date = %v, want %v", ev.Date, tt.want)
			case ev.Date != nil && ev.Date.Location() != time.UTC:
				t.Errorf("Date %v is not in UTC", ev.Date)
			}
			if got := len(ev.Warnings) > 0; got != tt.warn {
				t.Errorf("Warnings = %q, want some: %v", ev.Warnings, tt.warn)
			}
		})
	}
	if ev := mustMap(t, "Subject: no date\n\n", nil); ev.Date != nil || len(ev.Warnings) != 1 {
		t.Errorf("without Date: Date = %v, Warnings = %q; want nil and one warning", ev.Date, ev.Warnings)
	}
}

func TestAttachmentNames(t *testing.T) {
	tests := []struct {
		name, headers string
		wantName      string
		wantExt       string
	}{
		{"plain", `Content-Disposition: attachment; filename="report.PDF"`, "report.PDF", "pdf"},
		{"rfc2047", `Content-Disposition: attachment; filename="=?utf-8?B?0L7RgtGH0ZHRgi5wZGY=?="`, "отчёт.pdf", "pdf"},
		{"rfc2231", `Content-Disposition: attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.pdf`, "отчёт.pdf", "pdf"},
		{"rfc2231 windows-1251", `Content-Disposition: attachment; filename*=windows-1251''%EE%F2%F7%B8%F2.pdf`, "отчёт.pdf", "pdf"},
		{"rfc2231 continuations", "Content-Disposition: attachment;\n filename*0*=UTF-8''%D0%BE%D1%82;\n filename*1*=%D1%87%D1%91%D1%82;\n filename*2=\".tar.gz\"", "отчёт.tar.gz", "gz"},
		{"rfc2231 out of order", "Content-Disposition: attachment; filename*1=\"b.txt\"; filename*0=\"a\"", "ab.txt", "txt"},
		{"name param", `Content-Type: application/pdf; name="scan.pdf"`, "scan.pdf", "pdf"},
		{"disposition wins", "Content-Type: application/pdf; name=\"a.pdf\"\nContent-Disposition: attachment; filename=\"b.pdf\"", "b.pdf", "pdf"},
		{"path stripped", `Content-Disposition: attachment; filename="../../etc/passwd"`, "passwd", ""},
		{"generated pdf", "Content-Type: application/pdf", "attachment-1.pdf", "pdf"},
		{"generated jpeg", "Content-Type: image/jpeg", "attachment-1.jpg", "jpg"},
		{"generated calendar", "Content-Type: text/calendar; method=REQUEST", "attachment-1.ics", "ics"},
		{"generated unknown", "Content-Type: application/x-nothing-known", "attachment-1.bin", "bin"},
		{"no extension", `Content-Disposition: attachment; filename="README"`, "README", ""},
		{"odd extension", `Content-Disposition: attachment; filename="v1.2 final"`, "v1.2 final", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := "Subject: x\nDate: Tue, 1 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n--B\n" +
				tt.headers + "\n\ncontent\n--B--\n"
			ev := mustMap(t, msg, nil)
			if len(ev.Attachments) != 1 {
				t.Fatalf("Attachments = %+v, want one", ev.Attachments)
			}
			a := ev.Attachments[0]
			if a.Name != tt.wantName || a.Extension != tt.wantExt {
				t.Errorf("Name, Extension = %q, %q; want %q, %q", a.Name, a.Extension, tt.wantName, tt.wantExt)
			}
			sum := sha256.Sum256([]byte("content"))
			if a.Size != 7 || a.Sha256 != hex.EncodeToString(sum[:]) || string(a.Content) != "content" {
				t.Errorf("Size, Sha256, Content = %d, %s, %q; want 7, sha256 and content", a.Size, a.Sha256, a.Content)
			}
		})
	}
}

const allowMsg = "From: a@example.com\r\nX-Ticket-Id: 1\r\nX-TICKET-ID: 2\r\nReceived: r1\r\nreceived: r2\r\n" +
	"X-Enc: =?utf-8?Q?caf=C3=A9?=\r\nSubject: s\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody\r\n"

func TestCustomHeaders(t *testing.T) {
	all := []schemas.CustomHeader{
		{Name: "X-Ticket-Id", Value: "1", ListValues: []string{"1", "2"}},
		{Name: "Received", Value: "r1", ListValues: []string{"r1", "r2"}},
		{Name: "X-Enc", Value: "café", ListValues: []string{"café"}},
	}
	tests := []struct {
		name  string
		allow []string
		want  []schemas.CustomHeader
	}{
		{"nil allows all", nil, all},
		{"empty allows none", []string{}, []schemas.CustomHeader{}},
		{"case-insensitive", []string{"x-ticket-ID", "x-enc"}, []schemas.CustomHeader{all[0], all[2]}},
		{"mapped headers stay out", []string{"Subject", "Content-Type", "From"}, []schemas.CustomHeader{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mustMap(t, allowMsg, &mapping.Options{Headers: tt.allow})
			if !reflect.DeepEqual(ev.CustomHeaders, tt.want) {
				t.Errorf("CustomHeaders = %+v, want %+v", ev.CustomHeaders, tt.want)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	msg := "From: Bot <bot@tickets.example.com>\nSubject: [ticket #1234] help\nX-Ticket-Id: T-9\n" +
		"Date: Tue, 1 Dec 2026 10:00:00 +0000\n\nOrder ORD-77 please\n"
	tests := []struct {
		name string
		rule schemas.AttributeRule
		want string // "" means absent
		warn bool
	}{
		{"header", schemas.AttributeRule{Name: "a", From: "header:X-Ticket-Id"}, "T-9", false},
		{"header any case", schemas.AttributeRule{Name: "a", From: "Header:x-ticket-id"}, "T-9", false},
		{"header regex group", schemas.AttributeRule{Name: "a", From: "header:X-Ticket-Id", Regex: `T-(\d+)`}, "9", false},
		{"missing header", schemas.AttributeRule{Name: "a", From: "header:X-None"}, "", false},
		{"subject group", schemas.AttributeRule{Name: "a", From: "subject", Regex: `#(\d+)`}, "1234", false},
		{"subject whole match", schemas.AttributeRule{Name: "a", From: "subject", Regex: `#\d+`}, "#1234", false},
		{"from domain", schemas.AttributeRule{Name: "a", From: "from", Regex: `@(.+)$`}, "tickets.example.com", false},
		{"text", schemas.AttributeRule{Name: "a", From: "text", Regex: `ORD-\d+`}, "ORD-77", false},
		{"no match", schemas.AttributeRule{Name: "a", From: "subject", Regex: `nothing(\d)`}, "", false},
		{"bad regex", schemas.AttributeRule{Name: "a", From: "subject", Regex: `(`}, "", true},
		{"bad source", schemas.AttributeRule{Name: "a", From: "body"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := mustMap(t, msg, &mapping.Options{Attributes: []schemas.AttributeRule{tt.rule}})
			got, ok := ev.Attributes["a"]
			if got != tt.want || ok != (tt.want != "") {
				t.Errorf("Attributes = %q, want a=%q", ev.Attributes, tt.want)
			}
			if (len(ev.Warnings) > 0) != tt.warn {
				t.Errorf("Warnings = %q, want some: %v", ev.Warnings, tt.warn)
			}
		})
	}
	// The first rule that yields a value wins; later ones with the same name are fallbacks.
	ev := mustMap(t, msg, &mapping.Options{Attributes: []schemas.AttributeRule{
		{Name: "t", From: "header:X-None"},
		{Name: "t", From: "subject", Regex: `#(\d+)`},
		{Name: "t", From: "header:X-Ticket-Id"},
	}})
	if ev.Attributes["t"] != "1234" {
		t.Errorf("fallback rules: Attributes = %q, want t=1234", ev.Attributes)
	}
}

// attachmentMsg is a message with one base64 attachment of n bytes of content.
func attachmentMsg(content []byte) string {
	return "From: a@example.com\nSubject: big\nDate: Tue, 1 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain\n\nsee attached\n" +
		"--B\nContent-Type: application/octet-stream; name=data.bin\nContent-Transfer-Encoding: base64\n\n" +
		wrap76(content) + "\n--B--\n"
}

func wrap76(b []byte) string {
	var sb strings.Builder
	w := lineWriter{w: &sb}
	enc := newBase64(&w)
	enc.Write(b)
	enc.Close()
	return sb.String()
}

func TestInlineLimit(t *testing.T) {
	content := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes
	sum := sha256.Sum256(content)
	tests := []struct {
		name   string
		limit  int64
		sink   bool
		inline bool
		warn   bool
	}{
		{"fits", 1000, true, true, false},
		{"one over", 999, true, false, false},
		{"over without sink", 999, false, false, true},
		{"default limit", 0, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &memSink{}
			opts := &mapping.Options{MaxInlineBytes: tt.limit}
			if tt.sink {
				opts.Sink = sink
			}
			ev := mustMap(t, attachmentMsg(content), opts)
			if len(ev.Attachments) != 1 {
				t.Fatalf("Attachments = %+v", ev.Attachments)
			}
			a := ev.Attachments[0]
			if a.Size != 1000 || a.Sha256 != hex.EncodeToString(sum[:]) {
				t.Errorf("Size, Sha256 = %d, %s; want 1000, %x", a.Size, a.Sha256, sum)
			}
			if tt.inline {
				if !bytes.Equal(a.Content, content) || a.ContentRef != nil {
					t.Errorf("want inline content, got %d bytes and ref %v", len(a.Content), a.ContentRef)
				}
			} else {
				if a.Content != nil {
					t.Errorf("Content has %d bytes, want none", len(a.Content))
				}
				if tt.sink {
					if a.ContentRef == nil || !bytes.Equal(sink.objects[a.ContentRef.Object], content) {
						t.Errorf("ContentRef = %v; sink holds %d bytes, want the content", a.ContentRef, len(sink.objects["att/0/data.bin"]))
					}
				} else if a.ContentRef != nil {
					t.Errorf("ContentRef = %v without a sink", a.ContentRef)
				}
			}
			if (len(ev.Warnings) > 0) != tt.warn {
				t.Errorf("Warnings = %q, want some: %v", ev.Warnings, tt.warn)
			}
		})
	}
}

// TestInlineBufferReuse: the buffer an attachment is read into is reused by the next
// one; what an event keeps, and what a sink got, must not change with it.
func TestInlineBufferReuse(t *testing.T) {
	sink := &memSink{}
	opts := &mapping.Options{MaxInlineBytes: 1500, Sink: sink}
	a := bytes.Repeat([]byte("a"), 1000)
	b := bytes.Repeat([]byte("b"), 2000) // over the limit: to the sink
	c := bytes.Repeat([]byte("c"), 1200)
	evA := mustMap(t, attachmentMsg(a), opts)
	evB := mustMap(t, attachmentMsg(b), opts)
	evC := mustMap(t, attachmentMsg(c), opts)
	if got := evA.Attachments[0].Content; !bytes.Equal(got, a) {
		t.Errorf("first event's content changed: %.20q...", got)
	}
	if ref := evB.Attachments[0].ContentRef; ref == nil || !bytes.Equal(sink.objects[ref.Object], b) {
		t.Errorf("sink did not get the second attachment: ref %v", ref)
	}
	if got := evC.Attachments[0].Content; !bytes.Equal(got, c) || cap(got) > 2*len(c) {
		t.Errorf("third event's content: %d bytes, cap %d", len(got), cap(got))
	}
}

// lazySink reads only a little of what it is given: Map must still hash all of it.
type lazySink struct{}

func (lazySink) PutAttachment(int, *schemas.Attachment, io.Reader) (schemas.ObjectRef, error) {
	return schemas.ObjectRef{Bucket: "b", Object: "o"}, nil
}

func TestSinkReadsPart(t *testing.T) {
	content := bytes.Repeat([]byte{1, 2, 3}, 1000)
	ev := mustMap(t, attachmentMsg(content), &mapping.Options{MaxInlineBytes: 10, Sink: lazySink{}})
	if a := ev.Attachments[0]; a.Size != int64(len(content)) {
		t.Errorf("Size = %d, want %d", a.Size, len(content))
	}
}

func TestErrors(t *testing.T) {
	errSink := errors.New("object store down")
	_, err := mapping.Map(strings.NewReader(attachmentMsg(make([]byte, 100))), &mapping.Options{MaxInlineBytes: 10, Sink: &memSink{fail: errSink}})
	if !errors.Is(err, errSink) {
		t.Errorf("Map() with a failing sink = %v, want it to wrap %v", err, errSink)
	}

	errRead := errors.New("connection reset")
	r := io.MultiReader(strings.NewReader(attachmentMsg(make([]byte, 100))[:150]), iotest.ErrReader(errRead))
	if _, err := mapping.Map(r, nil); !errors.Is(err, errRead) {
		t.Errorf("Map() with a failing reader = %v, want it to wrap %v", err, errRead)
	}

	for _, msg := range []string{"", "\r\n\r\nbody", "no header here\nat all\n", "\x00\x01\x02", " folded: x\n\n"} {
		if _, err := mapping.Map(strings.NewReader(msg), nil); !errors.Is(err, mapping.ErrNoHeader) {
			t.Errorf("Map(%q) = %v, want ErrNoHeader", msg, err)
		}
	}
}

func TestTruncatedAttachmentToSink(t *testing.T) {
	// Truncation is damage, not a sink failure: the sink gets what there is and Map succeeds.
	msg := attachmentMsg(bytes.Repeat([]byte("x"), 3000))
	msg = msg[:len(msg)-500]
	ev := mustMap(t, msg, &mapping.Options{MaxInlineBytes: 100, Sink: &memSink{}})
	if len(ev.Attachments) != 1 || ev.Attachments[0].ContentRef == nil || len(ev.Warnings) == 0 ||
		!strings.HasPrefix(ev.Warnings[0], "message truncated in part 2") {
		t.Errorf("Attachments = %+v, Warnings = %q; want one stored attachment and a truncation warning", ev.Attachments, ev.Warnings)
	}
}

func TestShape(t *testing.T) {
	ev := mustMap(t, "Subject: x\n\n", nil)
	if ev.References == nil || ev.ReplyTo == nil || ev.To == nil || ev.Cc == nil || ev.Bcc == nil ||
		ev.Attachments == nil || ev.CustomHeaders == nil || ev.Attributes == nil || ev.Warnings == nil {
		t.Errorf("some collection is nil: %+v", ev)
	}
	if ev.From != nil {
		t.Errorf("From = %+v, want nil", ev.From)
	}
}
