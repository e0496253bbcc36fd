package mapping_test

import (
	"bytes"
	"encoding/base64"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// discardSink stores nothing, as fast as it can read.
type discardSink struct{}

func (discardSink) PutAttachment(index int, a *schemas.Attachment, r io.Reader) (schemas.ObjectRef, error) {
	_, err := io.Copy(io.Discard, r)
	return schemas.ObjectRef{Bucket: "mail_attachments", Object: "discarded"}, err
}

func BenchmarkMapSmall(b *testing.B) {
	msg, err := os.ReadFile(filepath.Join(corpusDir, "outlook-related-inline-image.eml"))
	if err != nil {
		b.Fatal(err)
	}
	benchmarkMap(b, msg)
}

func BenchmarkMap10MB(b *testing.B) {
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, bigMessage(10<<20)); err != nil {
		b.Fatal(err)
	}
	benchmarkMap(b, buf.Bytes())
}

func benchmarkMap(b *testing.B, msg []byte) {
	opts := &mapping.Options{Sink: discardSink{}}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := mapping.Map(bytes.NewReader(msg), opts); err != nil {
			b.Fatal(err)
		}
	}
}

// bigMessage streams a message with one base64 attachment of n pseudo-random bytes; the
// attachment is generated as it is read, never held in memory.
func bigMessage(n int64) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		io.WriteString(pw, "From: Big <big@example.com>\r\nTo: support@example.com\r\nSubject: big\r\n"+
			"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/mixed; boundary=BIG\r\n\r\n--BIG\r\nContent-Type: text/plain\r\n\r\n"+
			"A big one.\r\n--BIG\r\nContent-Type: application/octet-stream; name=big.bin\r\n"+
			"Content-Transfer-Encoding: base64\r\n\r\n")
		enc := base64.NewEncoder(base64.StdEncoding, &lineWriter{w: pw})
		rng := rand.NewChaCha8([32]byte{1})
		if _, err := io.Copy(enc, io.LimitReader(rng, n)); err != nil {
			pw.CloseWithError(err)
			return
		}
		enc.Close()
		io.WriteString(pw, "\r\n--BIG--\r\n")
		pw.Close()
	}()
	return pr
}

// TestMap100MBHeap maps a 100 MB attachment through a sink and checks that the heap stays
// small: memory must not grow with attachment size.
func TestMap100MBHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("maps 100 MB")
	}
	const size = 100 << 20
	const limit = 32 << 20

	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			if v := sample[0].Value.Uint64(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	start := time.Now()
	ev, err := mapping.Map(bigMessage(size), &mapping.Options{Sink: discardSink{}})
	elapsed := time.Since(start)
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("Map() = %v", err)
	}
	if len(ev.Attachments) != 1 || ev.Attachments[0].Size != size || ev.Attachments[0].ContentRef == nil {
		t.Fatalf("Attachments = %+v, want one stored attachment of %d bytes", ev.Attachments, size)
	}
	t.Logf("mapped a %d MB attachment (%d MB message) in %v: peak heap %.1f MB",
		size>>20, ev.Size>>20, elapsed.Round(time.Millisecond), float64(peak.Load())/(1<<20))
	if p := peak.Load(); p > limit {
		t.Errorf("peak heap %d MB, want under %d MB", p>>20, limit>>20)
	}
}

// BenchmarkMapCorpus maps the messages of bench/run.sh's corpora (benchCorpus, the shapes
// of gen_maildir.py, with the "\r\n" line ends IMAP delivers), one message an operation, so ns/op, B/op and allocs/op are per
// message. Large attachments go to a sink that discards them, as they would go to the
// object store. cpu-ns/op is the process's CPU time per message (garbage collection
// included), steadier than ns/op on a shared machine.
func BenchmarkMapCorpus(b *testing.B) {
	for _, c := range []struct {
		name, profile string
		n             int
		opts          *mapping.Options
	}{
		{"small", "small", 2000, &mapping.Options{Sink: discardSink{}}},
		{"small-rules", "small", 2000, goldenOptions(discardSink{})}, // attribute rules, 8 KB inline limit
		{"mixed", "mixed", 200, &mapping.Options{Sink: discardSink{}}},
	} {
		msgs := benchCorpus(c.profile, c.n, 42, 1_500_000, true)
		var total int64
		for _, m := range msgs {
			total += int64(len(m))
		}
		b.Run(c.name, func(b *testing.B) {
			opts := c.opts
			b.SetBytes(total / int64(len(msgs)))
			b.ReportAllocs()
			i, n := 0, 0
			cpu := processCPU()
			for b.Loop() {
				if _, err := mapping.MapMessage(bytes.NewReader(msgs[i]), opts); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(msgs) {
					i = 0
				}
				n++
			}
			if used := processCPU() - cpu; used > 0 {
				b.ReportMetric(float64(used.Nanoseconds())/float64(n), "cpu-ns/op")
			}
		})
	}
}
