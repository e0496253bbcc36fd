package bus

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// objectChunk is the size of one chunk, nats.go's default (its Get reads chunks of any size).
const objectChunk = 128 << 10

// objectWindow bounds the chunks in flight of all puts together (8 MiB); a put waits for
// room up to objectStall, as long as a chunk's acknowledgement may take.
const (
	objectWindow = 64
	objectStall  = publishAckTimeout
)

// ObjectWriter stores objects without waiting for them. nats.go's Put waits at every
// object: for the previous version's info, then for every chunk's acknowledgement. An
// attachment's mapping stopped for it each time, and mixed mail's route spent 0.46 s of
// 3.1 s there (issue 20). Start publishes the chunks and the meta message and returns; the
// engine waits for them (Pending.Wait) only before it publishes the event that refers to the
// object, while it reads the next message.
//
// The objects are nats.go's own (the same subjects, meta and digest), read with its Get.
// A name stored again (a message read again after a failure or a crash, whose event may be
// stored already and refer to it) is put with replace: see Start.
type ObjectWriter struct {
	js     jetstream.JetStream
	store  jetstream.ObjectStore
	bucket string
}

// NewObjectWriter returns the writer of the object store bucket, publishing over nc.
func NewObjectWriter(nc *nats.Conn, store jetstream.ObjectStore, bucket string) (*ObjectWriter, error) {
	// A reconnect fails the chunks in flight (nats.go resets their futures); the timeout is
	// for an acknowledgement lost otherwise, as nats.go's Put and the bus publishers have.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(objectWindow),
		jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		return nil, fmt.Errorf("object writer: %w", err)
	}
	return &ObjectWriter{js: js, store: store, bucket: bucket}, nil
}

// chunkBufs are Start's chunk buffers, one a put. A raw copy of each small mail
// (includeRaw) allocated 128 KiB for a few KB: 20,000 small mails took 3.0 CPU s and
// 117 MiB that way, 2.2 s and 101 MiB with the buffers reused.
var chunkBufs = sync.Pool{New: func() any { return new([objectChunk]byte) }}

// Pending is an object on its way: the publishes of its chunks and meta message.
type Pending struct {
	w       *ObjectWriter
	name    string
	futs    []jetstream.PubAckFuture
	subject string    // of the chunks, purged if one fails
	meta    string    // of the meta message, once published: purged too
	replace *nats.Msg // the meta message, published by Wait (replace)
	acked   int       // of futs, the first not yet seen acknowledged
	err     error     // why the object was given up (abandon): every later Wait says so
}

// Start publishes what r yields as the object meta.Name, in chunks, then its meta message,
// and returns without waiting for them. The info it returns (size, digest) is what the
// object will be once Wait says it is stored.
//
// With replace, the name may be stored already and an event refer to it: the meta message
// waits until every chunk is stored (Wait publishes it), so that a failure leaves the
// earlier version whole, and once it is stored the earlier version's chunks are purged.
func (w *ObjectWriter) Start(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader, replace bool) (*jetstream.ObjectInfo, *Pending, error) {
	meta.Opts = &jetstream.ObjectMetaOptions{ChunkSize: objectChunk}
	info := &jetstream.ObjectInfo{ObjectMeta: meta, Bucket: w.bucket, NUID: nuid.Next()}
	p := &Pending{w: w, name: meta.Name, subject: "$O." + w.bucket + ".C." + info.NUID}
	sum := sha256.New()
	buf := chunkBufs.Get().(*[objectChunk]byte)
	defer chunkBufs.Put(buf)
	for {
		n, err := io.ReadFull(r, buf[:])
		if n > 0 {
			m := nats.NewMsg(p.subject)
			m.Data = buf[:n]
			sum.Write(m.Data)
			perr := p.publish(m)
			// Copied into the connection's buffer: its future holds m until it is waited
			// for, and must not hold buf, which is the next chunk's.
			m.Data = nil
			if perr != nil {
				return nil, nil, p.abandon(ctx, perr)
			}
			info.Size += uint64(n)
			info.Chunks++
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, nil, p.abandon(ctx, err)
		}
	}
	info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(sum.Sum(nil))
	info.ModTime = time.Now().UTC()
	mm := nats.NewMsg("$O." + w.bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(meta.Name)))
	mm.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	data, err := json.Marshal(info)
	if err != nil {
		return nil, nil, p.abandon(ctx, err)
	}
	mm.Data = data
	if replace {
		p.replace = mm
		return info, p, nil
	}
	if err := p.publish(mm); err != nil {
		return nil, nil, p.abandon(ctx, err)
	}
	p.meta = mm.Subject
	return info, p, nil
}

// publish sends m without waiting for its acknowledgement. Never again on its own: a chunk's
// buffer is reused as soon as it is sent, so a retry by nats.go would send the next chunk's
// bytes in its place. A failed publish fails the object, and the engine reads the message
// again.
func (p *Pending) publish(m *nats.Msg) error {
	f, err := p.w.js.PublishMsgAsync(m, jetstream.WithStallWait(objectStall), jetstream.WithRetryAttempts(0))
	if err != nil {
		return err
	}
	p.futs = append(p.futs, f)
	return nil
}

// Wait waits until the object is stored. On a failure it purges the chunks stored (best
// effort: what stays ages out) and returns why.
func (p *Pending) Wait(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	if err := p.await(ctx); err != nil {
		return p.abandon(ctx, err)
	}
	if p.replace == nil {
		return nil
	}
	mm := p.replace
	p.replace = nil
	old, err := p.w.store.GetInfo(ctx, p.name, jetstream.GetObjectInfoShowDeleted())
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return p.abandon(ctx, err)
	}
	if err := p.publish(mm); err != nil {
		return p.abandon(ctx, err)
	}
	if err := p.await(ctx); err != nil {
		return p.abandon(ctx, err)
	}
	if old != nil && !old.Deleted {
		if s, err := p.w.js.Stream(ctx, "OBJ_"+p.w.bucket); err == nil {
			s.Purge(ctx, jetstream.WithPurgeSubject("$O."+p.w.bucket+".C."+old.NUID))
		}
	}
	return nil
}

// Stored reports, without waiting, whether every publish has been acknowledged. A failed
// one counts as not stored: Wait says why; so does a meta message still to publish.
func (p *Pending) Stored() bool {
	if p.replace != nil || p.err != nil {
		return false
	}
	for ; p.acked < len(p.futs); p.acked++ {
		select {
		case <-p.futs[p.acked].Ok():
		default:
			return false
		}
	}
	return true
}

// AllStored reports, without waiting, whether every object of pending is stored.
func AllStored(pending []*Pending) bool {
	for _, p := range pending {
		if !p.Stored() {
			return false
		}
	}
	return true
}

// WaitAll waits until every object of pending is stored, returning the first failure.
func WaitAll(ctx context.Context, pending []*Pending) error {
	var errs []error
	for _, p := range pending {
		if err := p.Wait(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// await waits for every publish, returning the first failure.
func (p *Pending) await(ctx context.Context) error {
	var first error
	for ; p.acked < len(p.futs); p.acked++ {
		f := p.futs[p.acked]
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if first == nil {
				first = err
			}
		case <-ctx.Done():
			return errors.Join(first, ctx.Err())
		}
	}
	if first != nil {
		return fmt.Errorf("object chunk: %w", first)
	}
	return nil
}

// abandon gives the object up: it waits for the publishes in flight, then purges what was
// stored of it, so that no meta message names chunks that are not all there, and returns
// err. The message is read again. (With replace the meta message was not stored, and the
// one there is the earlier version's, whole: it stays.)
func (p *Pending) abandon(ctx context.Context, err error) error {
	p.err = err
	p.await(ctx)
	if s, serr := p.w.js.Stream(ctx, "OBJ_"+p.w.bucket); serr == nil {
		s.Purge(ctx, jetstream.WithPurgeSubject(p.subject))
		if p.meta != "" {
			s.Purge(ctx, jetstream.WithPurgeSubject(p.meta))
		}
	}
	return err
}
