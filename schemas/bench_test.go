package schemas_test

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/schemas"
)

// Encoding an event is on every message's path (the connector marshals it again while it
// moves content out of an event that is too large), so its cost is measured here: a
// typical event, and one carrying an attachment of MAILBUS_MAX_INLINE_BYTES (the default,
// the largest that stays inline) that base64 makes a third larger.
//
//	go test -run x -bench EventMarshal -count 10 ./schemas | tee new.txt; benchstat old.txt new.txt

func BenchmarkEventMarshalSmall(b *testing.B) {
	ev := fullEvent()
	ev.TextBody = strings.Repeat("Добрый день, заявка на поддержку. ", 40)
	ev.HtmlBody = "<p>" + ev.TextBody + "</p>"
	benchmarkMarshal(b, &ev)
}

func BenchmarkEventMarshalInline256KB(b *testing.B) {
	ev := fullEvent()
	content := make([]byte, 256<<10)
	rand.NewChaCha8([32]byte{1}).Read(content)
	ev.Attachments[0].Content, ev.Attachments[0].Size = content, int64(len(content))
	benchmarkMarshal(b, &ev)
}

func benchmarkMarshal(b *testing.B, ev *schemas.Event) {
	data, err := json.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}
