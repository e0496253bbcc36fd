package bus

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/schemas"
)

// Objects of a message are named after its route and event Id (its event's Nats-Msg-Id),
// so that a message processed again (after a crash, or a retried cycle) replaces its
// objects instead of adding copies, and two routes on one mailbox, whose events share an
// Id, never write (or purge) each other's:
//
//	<route>/<event id>/att-<index>   an attachment too large for the event
//	<route>/<event id>/raw           the raw message (includeRaw, dead letters)
//	<route>/<event id>/text, /html   a body moved out of an event above the NATS max payload
func ObjectName(route, eventID, part string) string { return route + "/" + eventID + "/" + part }

// ObjectSink is the mapping.Sink of one message: it streams attachments over the inline
// limit into the object store. It remembers its first error, so that the worker can tell a
// storage failure (temporary: retry the cycle) from a message the mapping rejects.
//
// It does not wait for its objects (ObjectWriter): Pending has them, and the engine waits
// for them before it publishes the event.
type ObjectSink struct {
	ctx     context.Context
	writer  *ObjectWriter
	bucket  string
	route   string
	eventID string
	replace bool

	mu      sync.Mutex
	err     error
	stored  []string   // names of the objects put
	pending []*Pending // of the writer's puts, not yet waited for
}

// NewObjectSink returns the sink of route's message whose event is eventID: its objects go
// through writer, named in bucket; replace if they may be stored already (ObjectWriter.Start).
func NewObjectSink(ctx context.Context, writer *ObjectWriter, bucket, route, eventID string, replace bool) *ObjectSink {
	return &ObjectSink{ctx: ctx, writer: writer, bucket: bucket, route: route, eventID: eventID, replace: replace}
}

// PutAttachment implements mapping.Sink.
func (s *ObjectSink) PutAttachment(index int, a *schemas.Attachment, r io.Reader) (schemas.ObjectRef, error) {
	name := ObjectName(s.route, s.eventID, "att-"+strconv.Itoa(index))
	info, p, err := s.writer.Start(s.ctx, jetstream.ObjectMeta{Name: name, Description: a.Name}, r, s.replace)
	var sum []byte
	if err == nil {
		sum, err = jetstream.DecodeObjectDigest(info.Digest)
	}
	if err != nil {
		err = fmt.Errorf("store attachment %s: %w", name, err)
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
		return schemas.ObjectRef{}, err
	}
	a.Sha256 = hex.EncodeToString(sum)
	s.mu.Lock()
	s.stored = append(s.stored, name)
	s.pending = append(s.pending, p)
	s.mu.Unlock()
	return schemas.ObjectRef{Bucket: s.bucket, Object: name}, nil
}

// Pending are the objects put and not yet known to be stored; the sink forgets them.
func (s *ObjectSink) Pending() []*Pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// SumsContent implements mapping.SummingSink: the object store hashes what it stores (the
// attachment's Sha256 is its object's digest), so the mapping does not hash it again.
func (s *ObjectSink) SumsContent() {}

// Drop deletes the objects the sink stored, for a message the mapping rejected: no event
// will refer to them.
func (s *ObjectSink) Drop() error {
	WaitAll(s.ctx, s.Pending()) // a delete before the chunks are stored would miss some
	s.mu.Lock()
	names := s.stored
	s.stored = nil
	s.mu.Unlock()
	return DropObjects(s.ctx, s.writer.store, names)
}

// EventObjects names the objects an event that will not be published was given, but for
// its raw message, which its dead letter refers to: the attachments moved out of it and
// the bodies FitPayload may have moved.
func EventObjects(ev *schemas.Event) []string {
	var names []string
	for _, a := range ev.Attachments {
		if a.ContentRef != nil {
			names = append(names, a.ContentRef.Object)
		}
	}
	return append(names, ObjectName(ev.Route, ev.Id, "html"), ObjectName(ev.Route, ev.Id, "text"))
}

// DropObjects deletes the named objects, those of a message that never becomes an event:
// nothing would ever refer to them. Absent ones are no error. What cannot be deleted now
// ages out with the object store's age limit.
func DropObjects(ctx context.Context, store jetstream.ObjectStore, names []string) error {
	var errs []error
	for _, name := range names {
		if err := store.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			errs = append(errs, fmt.Errorf("delete object %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Failed is the first error the sink met storing an attachment, nil if none.
func (s *ObjectSink) Failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// PutObject stores what r yields as one object. The object store makes one chunk (one
// JetStream message, with its own acknowledgement) of each Read, and the readers it gets
// here return little at a time (a base64 decoder, a pipe, a FETCH literal): a 1.5 MB
// attachment made about a thousand chunks. Reads are gathered into whole chunks first.
func PutObject(ctx context.Context, store jetstream.ObjectStore, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	return store.Put(ctx, meta, &fullReader{r: r})
}

// fullReader fills each buffer it is given, unless the input ends or fails first.
type fullReader struct {
	r   io.Reader
	err error // sticky, returned once the bytes read before it are
}

func (f *fullReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && f.err == nil {
		var k int
		k, f.err = f.r.Read(p[n:])
		n += k
	}
	if n > 0 {
		return n, nil
	}
	return 0, f.err
}

// RawTee stores a copy of everything read through it as one object, streaming, so that
// includeRaw costs no memory whatever the message size.
type RawTee struct {
	io.Reader
	pw   *io.PipeWriter
	done chan rawStored
}

type rawStored struct {
	p   *Pending
	err error
}

// NewRawTee starts storing what is read through the returned tee as the object name,
// through writer (replace: see ObjectWriter.Start).
func NewRawTee(ctx context.Context, writer *ObjectWriter, name string, replace bool, r io.Reader) *RawTee {
	pr, pw := io.Pipe()
	t := &RawTee{Reader: io.TeeReader(r, pw), pw: pw, done: make(chan rawStored, 1)}
	go func() {
		var s rawStored
		_, s.p, s.err = writer.Start(ctx, jetstream.ObjectMeta{Name: name, Description: "raw message"}, pr, replace)
		pr.CloseWithError(s.err) // unblocks the tee if the store gave up early
		t.done <- s
	}()
	return t
}

// Finish reads what the mapping left and ends the object, which it returns on its way: the
// event waits for it.
func (t *RawTee) Finish() (*Pending, error) {
	_, err := io.Copy(io.Discard, t.Reader)
	t.pw.CloseWithError(err) // a read that failed fails the object too
	s := <-t.done
	if s.err != nil {
		return nil, fmt.Errorf("store raw message: %w", s.err)
	}
	return s.p, err
}

// Abort gives the object up (the message goes to the dead letters, which store it again):
// the put fails, and purges what it stored.
func (t *RawTee) Abort() {
	t.pw.CloseWithError(io.ErrClosedPipe)
	<-t.done
}

// ErrEventTooLarge is a message whose event cannot fit a NATS message: it is dead-lettered.
var ErrEventTooLarge = errors.New("event above the NATS max payload")

// PayloadHeadroom is kept under the max payload for the NATS headers of the event.
const PayloadHeadroom = 4 << 10

// FitPayload returns the event's JSON, first moving inline content to the object store
// while the JSON is above limit bytes: the largest inline attachments first, then the
// bodies (each named in a warning). It fails only when even that is not enough.
func FitPayload(ctx context.Context, store jetstream.ObjectStore, bucket string, ev *schemas.Event, limit int) ([]byte, error) {
	b, err := MarshalEvent(ev)
	if err != nil || len(b) <= limit {
		return b, err
	}
	inline := make([]int, 0, len(ev.Attachments))
	for i, a := range ev.Attachments {
		if len(a.Content) > 0 {
			inline = append(inline, i)
		}
	}
	sort.SliceStable(inline, func(x, y int) bool {
		return len(ev.Attachments[inline[x]].Content) > len(ev.Attachments[inline[y]].Content)
	})
	for _, i := range inline {
		a := &ev.Attachments[i]
		name := ObjectName(ev.Route, ev.Id, "att-"+strconv.Itoa(i))
		if _, err := store.PutBytes(ctx, name, a.Content); err != nil {
			return nil, fmt.Errorf("store attachment %s: %w", name, err)
		}
		a.Content, a.ContentRef = nil, &schemas.ObjectRef{Bucket: bucket, Object: name}
		if b, err = MarshalEvent(ev); err != nil || len(b) <= limit {
			return b, err
		}
	}
	for _, body := range []struct {
		field, part string
		text        *string
	}{{"HtmlBody", "html", &ev.HtmlBody}, {"TextBody", "text", &ev.TextBody}} {
		if *body.text == "" {
			continue
		}
		name := ObjectName(ev.Route, ev.Id, body.part)
		if _, err := store.PutString(ctx, name, *body.text); err != nil {
			return nil, fmt.Errorf("store %s: %w", name, err)
		}
		ev.Warnings = append(ev.Warnings, fmt.Sprintf(
			"%s (%d bytes) moved to object %s/%s: the event was above the NATS max payload",
			body.field, len(*body.text), bucket, name))
		*body.text = ""
		if b, err = MarshalEvent(ev); err != nil || len(b) <= limit {
			return b, err
		}
	}
	return nil, fmt.Errorf("%w: %d bytes even without content, limit %d", ErrEventTooLarge, len(b), limit)
}
