package mapping_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

const eventHashes = "testdata/event-hashes.txt"

// hashCorpus is every message TestEventHashes maps: the golden corpus (corpusgen's
// messages) and the benchmark corpora of gen_maildir.py's shapes.
func hashCorpus(t testing.TB) (names []string, msgs [][]byte) {
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	if err != nil || len(files) < 40 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, "mail/"+strings.TrimSuffix(filepath.Base(f), ".eml"))
		msgs = append(msgs, b)
	}
	for _, crlf := range []bool{false, true} {
		for i, m := range benchCorpus("small", 200, 1, 0, crlf) {
			names = append(names, fmt.Sprintf("small/crlf=%v/%03d", crlf, i))
			msgs = append(msgs, m)
		}
		for i, m := range benchCorpus("mixed", 40, 2, 300_000, crlf) {
			names = append(names, fmt.Sprintf("mixed/crlf=%v/%03d", crlf, i))
			msgs = append(msgs, m)
		}
	}
	for i, a := range mapping.AddressForms {
		names = append(names, fmt.Sprintf("address/%03d", i))
		msgs = append(msgs, []byte("From: "+a+"\r\nTo: "+a+"\r\nCc: x@example.com, "+a+"\r\nBcc: "+a+
			"\r\nDate: Thu, 5 Nov 2026 03:22:30 +0000\r\nSubject: address\r\n\r\nbody\r\n"))
	}
	for i, m := range mapping.HeaderForms {
		names = append(names, fmt.Sprintf("header/%03d", i))
		msgs = append(msgs, []byte(m))
	}
	for i, d := range mapping.DateForms {
		names = append(names, fmt.Sprintf("date/%03d", i))
		msgs = append(msgs, []byte("From: a@example.com\r\nDate: "+d+"\r\nSubject: date\r\n\r\nbody\r\n"))
	}
	return names, msgs
}

// hashOptions are the route options each message is mapped with.
var hashOptions = []struct {
	name string
	opts func(mapping.Sink) *mapping.Options
}{
	{"default", func(s mapping.Sink) *mapping.Options { return &mapping.Options{Sink: s} }},
	{"golden", goldenOptions},
	{"narrow", func(s mapping.Sink) *mapping.Options {
		return &mapping.Options{Sink: s, MaxInlineBytes: 64, Headers: []string{"X-Priority", " list-id", "received"},
			Attributes: []schemas.AttributeRule{{Name: "to", From: "header:To", Regex: `<([^>]*)>`},
				{Name: "bad", From: "subject", Regex: "("}, {Name: "bad2", From: "subject", Regex: "("},
				{Name: "prio", From: "header:x-priority", Regex: `^\d$`}, {Name: "where", From: "nowhere"}}}
	}},
}

// eventHash is the SHA-256 of everything the mapping gives for one message: the event's
// JSON, Partial, and what reached the sink.
func eventHash(t testing.TB, msg []byte, opts func(mapping.Sink) *mapping.Options) string {
	sink := &memSink{}
	res, err := mapping.MapMessage(bytes.NewReader(msg), opts(sink))
	h := sha256.New()
	if err != nil {
		fmt.Fprintf(h, "error %v\n", err)
		return hex.EncodeToString(h.Sum(nil))[:32]
	}
	b, err := json.Marshal(res.Event)
	if err != nil {
		t.Fatal(err)
	}
	h.Write(b)
	fmt.Fprintf(h, "\npartial=%v\n", res.Partial)
	var objects []string
	for name := range sink.objects {
		objects = append(objects, name)
	}
	sort.Strings(objects)
	for _, name := range objects {
		fmt.Fprintf(h, "%s %x\n", name, sha256.Sum256(sink.objects[name]))
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// TestEventHashes maps the golden corpus and the benchmark corpora with several option sets
// and compares a hash of each result with testdata/event-hashes.txt, written before the
// mapping was made faster: an optimisation must not change a single byte of any event.
// go test ./mapping -run EventHashes -update rewrites the file (only for a change meant to
// alter events).
func TestEventHashes(t *testing.T) {
	names, msgs := hashCorpus(t)
	var got strings.Builder
	for _, o := range hashOptions {
		for i, msg := range msgs {
			fmt.Fprintf(&got, "%s/%s %s\n", o.name, names[i], eventHash(t, msg, o.opts))
		}
	}
	if *update {
		if err := os.WriteFile(eventHashes, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(eventHashes)
	if err != nil {
		t.Fatalf("no %s (go test ./mapping -run EventHashes -update): %v", eventHashes, err)
	}
	wl, gl := strings.Split(string(want), "\n"), strings.Split(got.String(), "\n")
	if len(wl) != len(gl) {
		t.Fatalf("%d hashes, want %d", len(gl), len(wl))
	}
	bad := 0
	for i := range wl {
		if wl[i] != gl[i] {
			if bad++; bad <= 20 {
				t.Errorf("event changed: got %s, want %s", gl[i], wl[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d events changed", bad, len(wl)-1)
	}
}

// TestEventHashesConcurrent maps the corpus from several goroutines at once: the mapping
// reuses buffers across messages, and no message may see another's.
func TestEventHashesConcurrent(t *testing.T) {
	_, msgs := hashCorpus(t)
	want := make([]string, len(msgs))
	for i, msg := range msgs {
		want[i] = eventHash(t, msg, goldenOptions)
	}
	const workers = 4
	got := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		got[w] = make([]string, len(msgs))
		wg.Go(func() {
			// Each worker in its own order, so different messages meet.
			for k := range msgs {
				i := (k + w*len(msgs)/workers) % len(msgs)
				if w%2 == 1 {
					i = len(msgs) - 1 - i
				}
				got[w][i] = eventHash(t, msgs[i], goldenOptions)
			}
		})
	}
	wg.Wait()
	for w := range got {
		for i := range msgs {
			if got[w][i] != want[i] {
				t.Errorf("worker %d, message %d: event %s, mapped alone %s", w, i, got[w][i], want[i])
			}
		}
	}
}
