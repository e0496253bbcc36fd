package mapping_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

var update = flag.Bool("update", false, "rewrite testdata/mail/*.golden.json from the current output")

const corpusDir = "../testdata/mail"

// memSink is a real in-memory Sink: it keeps what it is given.
type memSink struct {
	mu      sync.Mutex
	objects map[string][]byte
	fail    error
}

func (s *memSink) PutAttachment(index int, a *schemas.Attachment, r io.Reader) (schemas.ObjectRef, error) {
	if s.fail != nil {
		return schemas.ObjectRef{}, s.fail
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return schemas.ObjectRef{}, err
	}
	name := fmt.Sprintf("att/%d/%s", index, a.Name)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.objects == nil {
		s.objects = map[string][]byte{}
	}
	s.objects[name] = b
	return schemas.ObjectRef{Bucket: "mail_attachments", Object: name}, nil
}

// goldenOptions are the route options every corpus message is mapped with: a small inline
// limit so the sink is exercised, and one rule of each source kind.
func goldenOptions(sink mapping.Sink) *mapping.Options {
	return &mapping.Options{
		MaxInlineBytes: 8192,
		Sink:           sink,
		Attributes: []schemas.AttributeRule{
			{Name: "ticket", From: "header:X-Ticket-Id"},
			{Name: "ticket", From: "subject", Regex: `#\s*(\d+)`},
			{Name: "domain", From: "from", Regex: `@(.+)$`},
			{Name: "order", From: "text", Regex: `ORD-\d+`},
			{Name: "list", From: "header:list-id"},
		},
	}
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 40 {
		t.Fatalf("corpus has %d messages, want at least 40", len(files))
	}
	schema := eventSchema(t)
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sink := &memSink{}
			ev, err := mapping.Map(bytes.NewReader(raw), goldenOptions(sink))
			if err != nil {
				t.Fatalf("Map() = %v", err)
			}
			if ev.Size != int64(len(raw)) {
				t.Errorf("Size = %d, want %d", ev.Size, len(raw))
			}
			for _, a := range ev.Attachments {
				if a.ContentRef != nil && int64(len(sink.objects[a.ContentRef.Object])) != a.Size {
					t.Errorf("sink holds %d bytes of %q, Size says %d", len(sink.objects[a.ContentRef.Object]), a.Name, a.Size)
				}
			}
			got, err := json.MarshalIndent(ev, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := strings.TrimSuffix(file, ".eml") + ".golden.json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("no golden file (run go test ./mapping -run Golden -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("event differs from %s (rerun with -update if the change is intended):\n%s", golden, firstDiff(want, got))
			}
			validate(t, schema, ev)
		})
	}
}

// firstDiff shows the first differing line, which is enough to find the change.
func firstDiff(want, got []byte) string {
	wl, gl := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			return fmt.Sprintf("line %d:\nwant %s\ngot  %s", i+1, w, g)
		}
	}
	return ""
}

// eventSchema compiles event.schema.json from schemas.Files, loading every schema file since
// they refer to each other by $id.
func eventSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	names, err := fs.Glob(schemas.Files, "*.schema.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no schema files in schemas.Files: %v", err)
	}
	for _, n := range names {
		f, err := schemas.Files.Open(n)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		if err := c.AddResource("https://mailbus.dev/schemas/"+n, doc); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	s, err := c.Compile("https://mailbus.dev/schemas/event.schema.json")
	if err != nil {
		t.Fatalf("compile event schema: %v", err)
	}
	return s
}

// validate checks ev against the schema once the connector's envelope fields are set, as
// they are on the bus.
func validate(t testing.TB, s *jsonschema.Schema, ev *schemas.Event) {
	t.Helper()
	e := *ev
	e.Id, e.Route, e.Connection, e.Mailbox, e.UidValidity, e.Uid = "test_conn/INBOX/1/1", "test_route", "test_conn", "INBOX", 1, 1
	b, err := json.Marshal(&e)
	if err != nil {
		t.Fatalf("marshal event: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(inst); err != nil {
		t.Errorf("event does not match event.schema.json: %v", err)
	}
}
