package mapping_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// FuzzMap checks that any input either maps to an event that matches the schema or is
// refused with ErrNoHeader, and never panics (Map's recover would return ErrPanic).
func FuzzMap(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"))
	f.Add([]byte("Content-Type: message/rfc822\n\nSubject: =?utf-8?q?=FF?=\n"))
	schema := eventSchema(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		opts := goldenOptions(&memSink{})
		opts.MaxInlineBytes = 64
		opts.Attributes = append(opts.Attributes, schemas.AttributeRule{Name: "bad", From: "subject", Regex: "("})
		ev, err := mapping.Map(bytes.NewReader(data), opts)
		if err != nil {
			if !errors.Is(err, mapping.ErrNoHeader) {
				t.Fatalf("Map() = %v, want an event or ErrNoHeader", err)
			}
			return
		}
		if ev.Size != int64(len(data)) {
			t.Errorf("Size = %d, want %d", ev.Size, len(data))
		}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("json.Marshal(event) = %v", err)
		}
		if !utf8.Valid(b) {
			t.Errorf("event JSON is not valid UTF-8")
		}
		for _, s := range []string{ev.Subject, ev.TextBody, ev.HtmlBody, ev.MessageId} {
			if !utf8.ValidString(s) {
				t.Errorf("invalid UTF-8 in %q", s)
			}
		}
		validate(t, schema, ev)
	})
}
