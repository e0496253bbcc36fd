package bus

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

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

// TestMarshalEvent: MarshalEvent writes what json.Marshal writes, for the events of the mail corpus and for one with large inline
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
		got, err := MarshalEvent(ev)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: got %.300q, %v; want %.300q", name, got, err, want)
		}
	}
}

func BenchmarkMarshalEvent(b *testing.B) {
	ev := inlineEvent()
	for _, f := range []struct {
		name string
		f    func(*schemas.Event) ([]byte, error)
	}{{"json", func(ev *schemas.Event) ([]byte, error) { return json.Marshal(ev) }}, {"MarshalEvent", MarshalEvent}} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(150 << 10)
			for b.Loop() {
				f.f(ev)
			}
		})
	}
}

// randomEvent fills every field of an event, found by reflection (so that a field added to
// schemas.Event is filled too), from r: strings cut from material (with the characters
// JSON escapes), pointers, slices and maps nil, empty or not, times at the edges of what
// JSON can hold.
func randomEvent(r *rand.Rand, material []byte) *schemas.Event {
	var ev schemas.Event
	fill(r, material, reflect.ValueOf(&ev).Elem())
	return &ev
}

var specials = []string{"\"", "\\", "<", ">", "&", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
	"\u2028", "\u2029", "\xff", "\xc3", "é", "договор", "😀", "\xed\xa0\x80", "\ufffd", "/"}

func fill(r *rand.Rand, material []byte, v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		var s strings.Builder
		for range r.IntN(6) {
			if len(material) > 0 && r.IntN(2) == 0 {
				i := r.IntN(len(material))
				s.Write(material[i : i+r.IntN(len(material)-i+1)])
			} else {
				s.WriteString(specials[r.IntN(len(specials))])
			}
		}
		v.SetString(s.String())
	case reflect.Int, reflect.Int64:
		v.SetInt(r.Int64() >> r.IntN(64))
		if r.IntN(2) == 0 {
			v.SetInt(-v.Int())
		}
	case reflect.Uint32:
		v.SetUint(uint64(r.Uint32()))
	case reflect.Bool:
		v.SetBool(r.IntN(2) == 0)
	case reflect.Pointer:
		if r.IntN(4) == 0 {
			return // nil
		}
		p := reflect.New(v.Type().Elem())
		fill(r, material, p.Elem())
		v.Set(p)
	case reflect.Slice:
		switch r.IntN(4) {
		case 0:
			return // nil
		case 1:
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
			return
		}
		n := 1 + r.IntN(3)
		if v.Type().Elem().Kind() == reflect.Uint8 {
			n = r.IntN(3000) // []byte: content, long enough for the vectorised base64
		}
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(r, material, s.Index(i))
		}
		v.Set(s)
	case reflect.Uint8:
		v.SetUint(uint64(r.Uint32() & 0xff))
	case reflect.Map:
		if r.IntN(4) == 0 {
			return
		}
		m := reflect.MakeMap(v.Type())
		for range r.IntN(4) {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(r, material, k)
			fill(r, material, e)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			years := []int{0, 1, 1970, 2026, 9999, -1, 10000}
			zone := time.FixedZone("", (r.IntN(49)-24)*1800)
			t := time.Date(years[r.IntN(len(years))], time.Month(1+r.IntN(12)), 1+r.IntN(31),
				r.IntN(24), r.IntN(60), r.IntN(60), r.IntN(2)*r.IntN(1e9), zone)
			v.Set(reflect.ValueOf(t))
			return
		}
		for i := range v.NumField() {
			fill(r, material, v.Field(i))
		}
	default:
		panic("randomEvent cannot fill a " + v.Type().String() + ": teach fill it")
	}
}

// sameAsJSON fails t unless MarshalEvent(ev) is json.Marshal(ev), or both fail.
func sameAsJSON(t *testing.T, ev *schemas.Event) {
	t.Helper()
	want, werr := json.Marshal(ev)
	got, err := MarshalEvent(ev)
	if (err != nil) != (werr != nil) || !bytes.Equal(got, want) {
		t.Fatalf("MarshalEvent = %.400q, %v;\njson.Marshal = %.400q, %v", got, err, want, werr)
	}
}

// TestMarshalEventRandom: 20,000 random events, each written as json.Marshal writes it.
func TestMarshalEventRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	material := []byte("Subject: =?utf-8?q?caf=C3=A9?= <a@b.c> \"quoted\" \\ \x00\x01\xfe & </script>")
	for range 20000 {
		sameAsJSON(t, randomEvent(r, material))
	}
}

// FuzzMarshalEvent: MarshalEvent writes what json.Marshal writes, whatever the event.
//
//	go test -run x -fuzz FuzzMarshalEvent ./connector/bus
func FuzzMarshalEvent(f *testing.F) {
	f.Add(uint64(1), []byte("plain"))
	f.Add(uint64(2), []byte("<&>\"\\\x00\xff\u2028"))
	f.Fuzz(func(t *testing.T, seed uint64, material []byte) {
		sameAsJSON(t, randomEvent(rand.New(rand.NewPCG(seed, 0)), material))
	})
}
