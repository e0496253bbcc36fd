package bus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// objectStores is startStorage's object store, its writer, and the JetStream context.
func objectStores(tb testing.TB) (jetstream.ObjectStore, *ObjectWriter, jetstream.JetStream) {
	_, js, st := startStorage(tb)
	return st.Objects, st.Writer, js
}

// limitObjects sets an operator's byte limit on the object stream (refusing what is over
// it; -1: none) and returns the stream.
func limitObjects(t *testing.T, js jetstream.JetStream, maxBytes int64) jetstream.Stream {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, "OBJ_mail_attachments")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxBytes, cfg.Discard = maxBytes, jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return stream
}

// pattern is size bytes that differ from chunk to chunk, so that a chunk stored twice or
// out of order shows in the digest and the content.
func pattern(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i/objectChunk)
	}
	return b
}

// put is Start then Wait.
func put(ctx context.Context, w *ObjectWriter, name string, r io.Reader) (*jetstream.ObjectInfo, error) {
	info, p, err := w.Start(ctx, jetstream.ObjectMeta{Name: name, Description: "a.pdf"}, r, false)
	if err != nil {
		return nil, err
	}
	return info, p.Wait(ctx)
}

// The writer's objects are nats.go's: Get reads them back whole (checking the digest),
// GetInfo tells their size and digest, Delete removes them, and a name put again reads as
// its new content. Sizes around the chunk size and the empty object are the edges; all are
// started before any is waited for, as the engine does.
func TestObjectWriterReadByNATSGet(t *testing.T) {
	store, w, _ := objectStores(t)
	ctx := context.Background()
	sizes := []int{0, 1, objectChunk - 1, objectChunk, objectChunk + 1, 3*objectChunk + 17, 5 << 20}
	infos := make([]*jetstream.ObjectInfo, len(sizes))
	var pending []*Pending
	for i, size := range sizes {
		// A reader returning little at a time, like a base64 decoder.
		info, p, err := w.Start(ctx, jetstream.ObjectMeta{Name: fmt.Sprintf("ev/%d/att-0", size), Description: "a.pdf"},
			&slowReader{r: bytes.NewReader(pattern(size))}, false)
		if err != nil {
			t.Fatalf("Start(%d bytes) = %v", size, err)
		}
		infos[i] = info
		pending = append(pending, p)
	}
	if err := WaitAll(ctx, pending); err != nil {
		t.Fatalf("WaitAll = %v", err)
	}
	if !AllStored(pending) {
		t.Error("AllStored = false after WaitAll")
	}
	for i, size := range sizes {
		name, want, info := fmt.Sprintf("ev/%d/att-0", size), pattern(size), infos[i]
		sum := sha256.Sum256(want)
		if got, err := jetstream.DecodeObjectDigest(info.Digest); err != nil || hex.EncodeToString(got) != hex.EncodeToString(sum[:]) {
			t.Errorf("Start(%d bytes) digest %s (%v), want the SHA-256 of the content", size, info.Digest, err)
		}
		got, err := store.GetBytes(ctx, name)
		if err != nil {
			t.Fatalf("nats.go GetBytes(%s) = %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("GetBytes(%s): %d bytes, want the %d put", name, len(got), size)
		}
		stored, err := store.GetInfo(ctx, name)
		if err != nil || stored.Size != uint64(size) || stored.Digest != info.Digest || stored.Description != "a.pdf" {
			t.Errorf("GetInfo(%s) = %+v, %v; want size %d, digest %s", name, stored, err, size, info.Digest)
		}
	}

	// Put again under the same name (a message read again after a failure).
	name := "ev/again/att-0"
	for _, content := range []string{"first version, longer than the second", "second"} {
		if _, err := put(ctx, w, name, bytes.NewReader([]byte(content))); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := store.GetString(ctx, name); err != nil || got != "second" {
		t.Errorf("GetString after a second put = %q, %v; want the second", got, err)
	}
	if err := store.Delete(ctx, name); err != nil {
		t.Fatalf("Delete = %v", err)
	}
	if _, err := store.GetInfo(ctx, name); err == nil {
		t.Errorf("GetInfo after Delete found the object")
	}
}

// A reader that fails in the middle leaves no object: no reader finds a meta message
// whose chunks are not all there.
func TestObjectWriterFailedReaderLeavesNoObject(t *testing.T) {
	store, w, _ := objectStores(t)
	ctx := context.Background()
	r := io.MultiReader(bytes.NewReader(pattern(2*objectChunk+5)), &failingReader{})
	if _, err := put(ctx, w, "ev/broken/att-0", r); err == nil {
		t.Fatal("a put of a failing reader succeeded")
	}
	if info, err := store.GetInfo(ctx, "ev/broken/att-0"); err == nil {
		t.Errorf("GetInfo found %+v after a failed put", info)
	}
}

// A store that refuses a chunk (its byte limit, set by an operator, is reached after the
// first chunks) fails the object at Wait, and leaves no meta message naming chunks that are
// not all there, nor the chunks that were stored.
func TestObjectWriterStoreFull(t *testing.T) {
	store, w, js := objectStores(t)
	ctx := context.Background()
	stream := limitObjects(t, js, 3*objectChunk)
	_, p, err := w.Start(ctx, jetstream.ObjectMeta{Name: "ev/full/att-0"}, bytes.NewReader(pattern(6*objectChunk)), false)
	if err != nil {
		t.Fatalf("Start = %v; want the refusal at Wait", err) // nothing waits for the chunks before Wait
	}
	if AllStored([]*Pending{p}) {
		t.Error("AllStored = true for a refused object")
	}
	if err := p.Wait(ctx); err == nil {
		t.Fatal("Wait = nil for an object the store refused")
	}
	// Asked again (a batch that failed settles its objects once more), the answer stays:
	// an event published on a second Wait's nil would name purged chunks.
	if err := WaitAll(ctx, []*Pending{p}); err == nil {
		t.Error("a second Wait = nil for an object the store refused")
	}
	if AllStored([]*Pending{p}) {
		t.Error("AllStored = true after Wait failed")
	}
	if info, err := store.GetInfo(ctx, "ev/full/att-0"); err == nil {
		t.Errorf("GetInfo found %+v after a refused put", info)
	}
	if si, err := stream.Info(ctx); err != nil || si.State.Msgs != 0 {
		t.Errorf("the object stream keeps %d messages (%v) after a refused put; want them purged", si.State.Msgs, err)
	}
}

// An object stored again with replace (a message read again, whose event may refer to the
// object) reads as the new version once Wait returns, and the old version's chunks are
// gone; one the store refuses leaves the old version whole, and nothing of the new.
func TestObjectWriterReplace(t *testing.T) {
	store, w, js := objectStores(t)
	ctx := context.Background()
	stream := limitObjects(t, js, -1)
	msgs := func() uint64 {
		si, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return si.State.Msgs
	}
	name := "ev/replace/att-0"
	v1, v2, v3 := pattern(3*objectChunk), pattern(2*objectChunk + 1)[1:], pattern(5*objectChunk)
	if _, err := put(ctx, w, name, bytes.NewReader(v1)); err != nil {
		t.Fatal(err)
	}
	replace := func(content []byte) error {
		_, p, err := w.Start(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(content), true)
		if err != nil {
			return err
		}
		if AllStored([]*Pending{p}) {
			t.Error("AllStored = true before the replacing meta message is published")
		}
		return p.Wait(ctx)
	}
	if err := replace(v2); err != nil {
		t.Fatal(err)
	}
	if got, err := store.GetBytes(ctx, name); err != nil || !bytes.Equal(got, v2) {
		t.Fatalf("GetBytes after the replace: %d bytes, %v; want the %d of the new version", len(got), err, len(v2))
	}
	if n := msgs(); n != 2+1 {
		t.Errorf("the stream holds %d messages after the replace; want the new version's 2 chunks and meta", n)
	}

	limitObjects(t, js, 6*objectChunk)
	if err := replace(v3); err == nil {
		t.Fatal("a replace the store refused succeeded")
	}
	if got, err := store.GetBytes(ctx, name); err != nil || !bytes.Equal(got, v2) {
		t.Errorf("GetBytes after a refused replace: %d bytes, %v; want the version before, whole", len(got), err)
	}
	if n := msgs(); n != 2+1 {
		t.Errorf("the stream holds %d messages after a refused replace; want the version before's 2 chunks and meta", n)
	}
}

// While NATS is gone, a put fails (within its context) instead of storing a meta message.
func TestObjectWriterNATSClosed(t *testing.T) {
	_, w, js := objectStores(t)
	js.Conn().Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := put(ctx, w, "ev/closed/att-0", bytes.NewReader(pattern(1000))); err == nil {
		t.Fatal("a put on a closed connection succeeded")
	}
}

type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 57)]) }

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, fmt.Errorf("connection reset") }
