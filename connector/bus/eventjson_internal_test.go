package bus

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// inlineEvent has attachments of every kind: inline content small and large, in the
// object store, empty; and a subject that spells the key MarshalEvent looks for.
func inlineEvent() *schemas.Event {
	content := make([]byte, 150<<10)
	rand.NewChaCha8([32]byte{1}).Read(content)
	return &schemas.Event{
		Id: "c/INBOX/1/2", Subject: `say "Attachments":[] <b>`, TextBody: "hello",
		References: []string{}, To: []schemas.Address{}, CustomHeaders: []schemas.CustomHeader{},
		Attachments: []schemas.Attachment{
			{Name: "a.pdf", Size: int64(len(content)), Content: content},
			{Name: "b.bin", Size: 3, Content: []byte{1, 2, 3}},
			{Name: "c.bin", Size: 1 << 20, ContentRef: &schemas.ObjectRef{Bucket: "b", Object: "o"}},
			{Name: "empty"},
			{Name: "d.png", Size: 5000, Content: content[:5000]},
			// more text than MarshalEvent guessed, and both content and reference
			{Name: "e.txt", ContentId: strings.Repeat("<&>", 2000), Content: content[:2000]},
			{Name: "f.txt", Content: content[:2000], ContentRef: &schemas.ObjectRef{Bucket: "b", Object: "f"}},
		},
		Warnings: []string{},
	}
}

// TestMarshalEvent: MarshalEvent (spliceEvent, whatever the content) writes what
// json.Marshal writes, for the events of the mail corpus and for one with large inline
// content.
func TestMarshalEvent(t *testing.T) {
	events := map[string]*schemas.Event{"inlineEvent": inlineEvent()}
	files, _ := filepath.Glob("../../testdata/mail/*.eml")
	if len(files) == 0 {
		t.Fatal("no mail in ../../testdata/mail")
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := mapping.Map(bytes.NewReader(raw), nil)
		if err != nil {
			continue // a dead letter has no event
		}
		events[filepath.Base(f)] = ev
	}
	for name, ev := range events {
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []func(*schemas.Event) ([]byte, error){MarshalEvent, spliceEvent} {
			got, err := f(ev)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: got %.300q, %v; want %.300q", name, got, err, want)
			}
		}
	}
}

func BenchmarkMarshalEvent(b *testing.B) {
	ev := inlineEvent()
	for _, f := range []struct {
		name string
		f    func(*schemas.Event) ([]byte, error)
	}{{"json", func(ev *schemas.Event) ([]byte, error) { return json.Marshal(ev) }}, {"spliced", MarshalEvent}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(150 << 10)
			for b.Loop() {
				f.f(ev)
			}
		})
	}
}
