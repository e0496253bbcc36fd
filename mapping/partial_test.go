package mapping_test

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// TestMapMessagePartial: Result.Partial says whether the event keeps only part of the
// message, so that the connector keeps the raw copy (RawRef) of exactly those.
func TestMapMessagePartial(t *testing.T) {
	crlf := func(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
	big := strings.Repeat("x", 300)
	tests := []struct {
		name    string
		msg     string
		opts    *mapping.Options
		partial bool
	}{
		{"plain", "From: a@x.org\nSubject: s\n\nbody\n", nil, false},
		{"multipart", "From: a@x.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b\nContent-Type: application/pdf\n\nPDF\n--b--\n", nil, false},
		{"boundary line in text", "From: a@x.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b not a delimiter\n--b--\n", nil, false},
		{"no close delimiter", "From: a@x.org\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\ntext\n--b\nContent-Type: application/pdf\n\nPD", nil, true},
		{"broken base64", "From: a@x.org\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBE*Ri0x\n", nil, true},
		{"over the limit, no sink", "From: a@x.org\nContent-Type: application/pdf\n\n" + big + "\n", &mapping.Options{MaxInlineBytes: 100}, true},
		{"over the limit, sink", "From: a@x.org\nContent-Type: application/pdf\n\n" + big + "\n", &mapping.Options{MaxInlineBytes: 100, Sink: &memSink{}}, false},
		{"header starts folded", " folded\nFrom: a@x.org\n\nbody\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := mapping.MapMessage(strings.NewReader(crlf(tt.msg)), tt.opts)
			if err != nil {
				t.Fatalf("MapMessage() = %v", err)
			}
			if res.Partial != tt.partial {
				t.Errorf("Partial = %v, want %v (warnings %q)", res.Partial, tt.partial, res.Event.Warnings)
			}
			if tt.partial && len(res.Event.Warnings) == 0 {
				t.Errorf("partial without a warning saying why")
			}
		})
	}
}

// TestMapBoundaryLines: a line that starts like an enclosing boundary but has text after
// the blank is part of the text (RFC 2046 5.1.1: a delimiter line is the boundary, optional
// blanks and the line end); the mapping used to end the message there, losing the rest. A
// real delimiter with trailing blanks inside a nested part does end the nested multiparts,
// and then the rest of the message is still read, and the event is marked partial.
func TestMapBoundaryLines(t *testing.T) {
	read := func(name string) *mapping.Result {
		raw, err := os.ReadFile(filepath.Join(corpusDir, name+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := mapping.MapMessage(bytes.NewReader(raw), nil)
		if err != nil {
			t.Fatalf("MapMessage(%s) = %v", name, err)
		}
		return res
	}
	res := read("boundary-line-in-text")
	ev := res.Event
	if want := "Hello,\n--outer see the report below\nafter the line"; ev.TextBody != want || ev.HtmlBody != "<p>Hello</p>" {
		t.Errorf("TextBody %q, HtmlBody %q; want %q and the HTML", ev.TextBody, ev.HtmlBody, want)
	}
	if len(ev.Attachments) != 1 || ev.Attachments[0].Name != "report.pdf" || res.Partial {
		t.Errorf("attachments %+v, partial %v; want report.pdf and a whole message", ev.Attachments, res.Partial)
	}
	for _, w := range ev.Warnings {
		if strings.Contains(w, "truncated") {
			t.Errorf("warning %q", w)
		}
	}

	res = read("boundary-padding-cuts-nested")
	ev = res.Event
	var names []string
	for _, a := range ev.Attachments {
		names = append(names, a.Name)
	}
	if !res.Partial || ev.TextBody != "Hello," || strings.Join(names, " ") != "attachment-1.txt report.pdf" {
		t.Errorf("partial %v, TextBody %q, attachments %q; want partial, Hello, and the rest kept", res.Partial, ev.TextBody, names)
	}
	if len(ev.Attachments) == 2 && !strings.Contains(string(ev.Attachments[0].Content), "<p>Hello</p>") {
		t.Errorf("the text after the delimiter is not kept: %q", ev.Attachments[0].Content)
	}
}

// TestMapBareFrom: "From: foo" (a local part, as cron writes) is kept as written, with a
// warning; it used to become no address at all.
func TestMapBareFrom(t *testing.T) {
	ev := mustMap(t, "From: foo\r\nTo: a@x.org\r\nSubject: s\r\n\r\nbody\r\n", nil)
	if ev.From == nil || *ev.From != (schemas.Address{Address: "foo"}) {
		t.Fatalf("From = %+v, want Address foo", ev.From)
	}
	found := false
	for _, w := range ev.Warnings {
		found = found || strings.Contains(w, `"foo"`) && strings.Contains(w, "no domain")
	}
	if !found {
		t.Errorf("warnings %q, want one naming the address without a domain", ev.Warnings)
	}
}

// panicSink panics when asked to store an attachment, as a bug in a sink would.
type panicSink struct{}

func (panicSink) PutAttachment(int, *schemas.Attachment, io.Reader) (schemas.ObjectRef, error) {
	panic("sink bug")
}

// TestMapPanic: a panic during the mapping is an error (ErrPanic) and no event; it used to
// be an event with a warning, which the connector then acted upon.
func TestMapPanic(t *testing.T) {
	msg := "From: a@x.org\r\nContent-Type: application/pdf\r\n\r\n" + strings.Repeat("x", 200) + "\r\n"
	ev, err := mapping.Map(strings.NewReader(msg), &mapping.Options{MaxInlineBytes: 10, Sink: panicSink{}})
	if !errors.Is(err, mapping.ErrPanic) || ev != nil || !strings.Contains(err.Error(), "sink bug") {
		t.Fatalf("Map() = %v, %v; want no event and ErrPanic naming the panic", ev, err)
	}
}
