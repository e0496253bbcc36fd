package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

const (
	// MaxInflightBytes bounds the events a route holds for a possible retry (published,
	// not yet acknowledged); above it the source's read waits for acknowledgements.
	MaxInflightBytes = 32 << 20
	// publishRetries is how often the unacknowledged events of a batch are published
	// again (same Msg-Id) before the cycle gives up.
	publishRetries = 3
)

// ErrUnreadable marks a read error of a message that reading it again cannot mend (the
// server sent content it cannot have meant): the message goes to the dead letters rather
// than failing the cycle.
var ErrUnreadable = errors.New("unreadable message")

// Item is one message of a batch on its way: published and waiting for its
// acknowledgement, passed over, or to be dead-lettered. The source fills in what names
// the message; the engine the rest.
type Item struct {
	// ID is the event Id: <connection>/<mailbox>/<the message's own part>.
	ID string
	// UidValidity and UID name an IMAP message, ItemID an Exchange item.
	UidValidity, UID uint32
	ItemID           string
	// Received is when the server received the message; zero: unknown.
	Received time.Time
	// Skip: nothing is published and nothing done to the message, but the checkpoint
	// moves past it (passed over by the route's rules, or the connection check's probe).
	Skip bool
	// Pass is the source's reason for Skip, for its own counts and logs.
	Pass int
	// Later: the server would not give the message this time (a transient error of its
	// own); nothing is published, it is not done, and the source tries it again.
	Later bool
	// PublishedBefore: the route may have published the event before (a run that
	// crashed), so a duplicate acknowledgement of it is its own (see Batch.awaitAcks).
	PublishedBefore bool
	// DeadErr is why the message cannot become an event: it goes to the dead letters.
	DeadErr error
	// NoRaw: no raw copy of the message could be stored (the server returned no body),
	// so the after action neither deletes nor moves it: the mailbox is its only copy.
	NoRaw bool

	mapped  bool           // Map ran
	ev      *schemas.Event // mapped, not yet published
	isPart  bool           // ev keeps only part of the message (mapping.Result)
	partial *schemas.Event // held until its raw copy is stored after the read
	retried bool           // published more than once by this engine
	dup     bool           // the stream acknowledged it as a duplicate of a stored Msg-Id
	counted bool           // in the status and the metrics (tally)
	// msg is the event (or dead letter) held for a retry, and fut its publish (which
	// holds it too); both are let go of once it is acknowledged (release).
	msg  *nats.Msg
	fut  jetstream.PubAckFuture
	done bool         // fut has resolved (err holds how)
	err  error        // the publish's outcome once done
	note connlog.Note // for the connection log
	// objects are the event's objects on their way to the store, and held the event
	// waiting for them (Batch.send).
	objects []*bus.Pending
	held    *nats.Msg
}

// Mapped reports whether the message was read into the mapping.
func (it *Item) Mapped() bool { return it.mapped }

// Acked reports whether the item is done: its event (or dead letter) acknowledged, or
// nothing to publish.
func (it *Item) Acked() bool { return it.msg == nil && (it.Skip || it.done && it.err == nil) }

// name is how texts name the message: "message 42" or "item <event id>".
func (it *Item) name(noun string) string {
	if it.ItemID == "" {
		return fmt.Sprintf("%s %d", noun, it.UID)
	}
	return noun + " " + it.ID
}

// logArg is the key, value pair that names the message in a log entry.
func (it *Item) logArg() (string, any) {
	if it.ItemID == "" {
		return "uid", it.UID
	}
	return "id", it.ID
}

// result waits for the publish to resolve and remembers how, so it can be asked twice.
func (it *Item) result(ctx context.Context) error {
	if it.done {
		return it.err
	}
	select {
	case ack := <-it.fut.Ok():
		it.err, it.dup = nil, ack.Duplicate
	case it.err = <-it.fut.Err():
	case <-ctx.Done():
		return ctx.Err()
	}
	it.done = true
	return it.err
}

// resolved is result without waiting: whether the publish has resolved yet.
func (it *Item) resolved() bool {
	if it.done {
		return true
	}
	select {
	case ack := <-it.fut.Ok():
		it.err, it.dup = nil, ack.Duplicate
	case it.err = <-it.fut.Err():
	default:
		return false
	}
	it.done = true
	return true
}

// Batch is one batch of a route's messages, from the source's read to its Ack.
type Batch struct {
	e         *Engine
	held      []*Item // events waiting for their objects, in order (send)
	heldBytes int     // their size
	// unsettled are the items mapped with objects on their way, until they are waited for
	// (dropObjects).
	unsettled []*Item
	items     []*Item
	inflight  int // bytes of events held for a retry
	oldest    int // of items, the first not yet known to be acknowledged (throttle)
	limit     int // the largest event payload; 0: not asked yet
}

// Add appends a message to the batch.
func (b *Batch) Add(it *Item) { b.items = append(b.items, it) }

// Items are the messages of the batch, in the order the source gave (or sorted) them.
func (b *Batch) Items() []*Item { return b.items }

// Sort orders the messages of the batch, as the source's checkpoint needs them.
func (b *Batch) Sort(cmp func(a, b *Item) int) { slices.SortStableFunc(b.items, cmp) }

// Map streams the raw message r of it into the mapping (and the object store), holding
// no more of it than the mapping does. An error is a failure to read the message or to
// store its parts (temporary: the cycle fails); a message the mapping rejects is marked
// for the dead letters. Publish then publishes the event.
func (b *Batch) Map(ctx context.Context, it *Item, r io.Reader) error {
	e := b.e
	it.mapped = true
	writer, bucket := e.RT.Storage.Writer, e.RT.Names.ObjectBucket()
	// A message published before may have its objects stored, and its event refer to them.
	replace := it.PublishedBefore
	sink := bus.NewObjectSink(ctx, writer, bucket, e.Route.Name, it.ID, replace)
	var tee *bus.RawTee
	if e.Route.IncludeRaw {
		tee = bus.NewRawTee(ctx, writer, bus.ObjectName(e.Route.Name, it.ID, "raw"), replace, r)
		r = tee
	}
	in := &TrackedReader{R: r, Size: -1}
	res, mapErr := e.RT.MapSafely(in, &mapping.Options{
		Headers:        e.headers(),
		Attributes:     e.Route.Attributes,
		MaxInlineBytes: e.RT.MaxInlineBytes,
		Sink:           sink,
	})
	if mapErr != nil {
		if tee != nil {
			tee.Abort()
		}
		// Settled whatever comes next: Wait purges what the store refused of them.
		bus.WaitAll(ctx, sink.Pending())
		if err := sink.Failed(); err != nil {
			return err
		}
		switch err := in.Failed(); {
		case errors.Is(err, ErrUnreadable):
			it.DeadErr = err
		case err != nil:
			return fmt.Errorf("read %s: %w", it.name(e.opts.Noun), err)
		default:
			it.DeadErr = mapErr
		}
		if err := sink.Drop(); err != nil {
			e.Logger.Warn("objects of a dead-lettered message not deleted", "err", err)
		}
		return nil
	}
	ev := res.Event
	it.objects = sink.Pending()
	if tee != nil {
		raw, err := tee.Finish()
		if raw != nil {
			it.objects = append(it.objects, raw)
		}
		if err != nil {
			bus.WaitAll(ctx, it.objects) // purges what the store refused of them
			it.objects = nil
			return err
		}
		ev.RawRef = &schemas.ObjectRef{Bucket: bucket, Object: bus.ObjectName(e.Route.Name, it.ID, "raw")}
	}
	if len(it.objects) > 0 {
		b.unsettled = append(b.unsettled, it)
	}
	it.ev, it.isPart = ev, res.Partial
	return nil
}

// headers is the route's CustomHeaders allow-list, with the probe header added (when
// the engine looks for probes) so that a probe is recognised whatever the list.
func (e *Engine) headers() []string {
	if e.Route.Headers == nil || !e.opts.Probes {
		return e.Route.Headers
	}
	return append(slices.Clip(e.Route.Headers), ProbeHeader)
}

// Publish publishes the event Map made of it, without waiting for its acknowledgement,
// then throttles: it waits for acknowledgements while the route holds too many event
// bytes. The connection check's probe is passed over; an event that keeps only part of
// its message waits for its raw copy (after the read); one too large for NATS goes to
// the dead letters.
func (b *Batch) Publish(ctx context.Context, it *Item) error {
	e := b.e
	ev := it.ev
	it.ev = nil
	if ev != nil && e.opts.Probes && IsProbe(ev, e.probeKey) {
		it.Skip = true
		ev = nil
	}
	if ev != nil {
		ev.Id, ev.Route, ev.Connection, ev.Bus, ev.Mailbox = it.ID, e.Route.Name, e.Conn.Name, e.Route.Bus, e.Route.Mailbox
		ev.UidValidity, ev.Uid = it.UidValidity, it.UID
		if !it.Received.IsZero() {
			d := it.Received.UTC()
			ev.ReceivedAt = &d
		}
		if it.isPart && ev.RawRef == nil {
			it.partial = ev
		} else if err := b.publishEvent(ctx, it, ev); err != nil {
			return err
		}
	}
	return b.throttle(ctx)
}

// publishEvent publishes the event of it without waiting for its acknowledgement; an
// event too large for NATS marks it for the dead letters instead.
func (b *Batch) publishEvent(ctx context.Context, it *Item, ev *schemas.Event) error {
	e := b.e
	if b.limit == 0 {
		// Once a batch: the call takes the connection's lock, which its flusher and reader
		// hold often, and waiting for it cost small mail 70 ms in 20,000. A reconnect within
		// the batch to a server of a smaller limit fails the publish, which is retried.
		b.limit = max(int(e.RT.NC.MaxPayload())-bus.PayloadHeadroom, 1024)
	}
	limit := b.limit
	data, err := bus.FitPayload(ctx, e.RT.Storage.Objects, e.RT.Names.ObjectBucket(), ev, limit)
	if errors.Is(err, bus.ErrEventTooLarge) {
		bus.WaitAll(ctx, it.objects) // a delete before the chunks are stored would miss some
		it.objects = nil
		if derr := bus.DropObjects(ctx, e.RT.Storage.Objects, bus.EventObjects(ev)); derr != nil {
			e.Logger.Warn("objects of a dead-lettered message not deleted", "err", derr)
		}
		it.DeadErr = err
		return nil
	}
	if err != nil {
		return err
	}
	it.note = connlog.NoteOf(ev, it.ItemID)
	return b.send(ctx, it, e.eventMsg(ev, data))
}

// send publishes msg for it, in order: after the events held before it. Events are held
// and published a burst at a time: the NATS client writes a burst in one go, where an event
// at a time woke its flusher and the server's reader for each (20,000 small mails: 0.08 s
// less CPU of mailbus's 1.1 s). An event whose objects are still on their way is held, and
// those after it with it, until the objects are stored: no event may be stored before its
// objects, and the source reads the next messages meanwhile rather than waiting for their
// acknowledgements (one message of reading was not enough for a large attachment's
// chunks). The end of the read sends the rest (sendHeld).
func (b *Batch) send(ctx context.Context, it *Item, msg *nats.Msg) error {
	it.held = msg
	b.held = append(b.held, it)
	b.heldBytes += len(msg.Data)
	return b.sendHeld(ctx, false)
}

// Held events are bounded: beyond either bound the read waits for the oldest's objects.
// Below burst events nothing is published until the end of the read.
const (
	burst        = 32
	maxHeld      = 64
	maxHeldBytes = 8 << 20
)

// sendHeld publishes the held events whose objects are stored, in order, once there are a
// burst of them; the first one's objects are waited for while the held events are over a
// bound, and all of them if all (the end of the read). An object that failed fails the
// cycle: the message is read again.
func (b *Batch) sendHeld(ctx context.Context, all bool) error {
	if !all && len(b.held) < burst && b.heldBytes <= maxHeldBytes {
		return nil
	}
	return b.publishHeld(ctx, all)
}

// sendReady publishes, when the read failed, the held events whose objects are stored:
// held for the burst only, they would have been published an event at a time. Their
// acknowledgements are what tallyStored counts, and what tells on the next try that an
// event of the same Msg-Id stored before is another's (TestEngineForeignAfterFailedRead).
func (b *Batch) sendReady(ctx context.Context) {
	// Not waiting for NATS (publish would) when it is the failure.
	if bus.Up(b.e.RT.NC) && len(b.held) <= maxHeld && b.heldBytes <= maxHeldBytes {
		b.publishHeld(ctx, false) // a failure leaves the rest unpublished, as the read's did
	}
}

// publishHeld is sendHeld without waiting for a burst.
func (b *Batch) publishHeld(ctx context.Context, all bool) error {
	for len(b.held) > 0 {
		it := b.held[0]
		over := len(b.held) > maxHeld || b.heldBytes > maxHeldBytes
		if !all && !over && !bus.AllStored(it.objects) {
			return nil
		}
		if err := bus.WaitAll(ctx, it.objects); err != nil {
			return fmt.Errorf("%s: %w", it.name(b.e.opts.Noun), err)
		}
		msg := it.held
		it.held, it.objects = nil, nil
		b.held = b.held[1:]
		b.heldBytes -= len(msg.Data)
		if err := b.publish(ctx, it, msg); err != nil {
			return err
		}
	}
	return nil
}

// dropObjects settles the objects of a batch that failed, whose messages are read again:
// it waits for those still on their way, as a store that refused one may refuse others,
// and Pending.Wait purges what was stored of those, so that no chunks are left behind.
// (What was stored whole is replaced when the message is read again.)
func (b *Batch) dropObjects(ctx context.Context) {
	for _, it := range b.unsettled {
		bus.WaitAll(ctx, it.objects)
		it.held, it.objects = nil, nil
	}
	b.unsettled, b.held, b.heldBytes = nil, nil, 0
}

// publish publishes msg for it. Not into the client's reconnect buffer: an outage shows in
// the status, and the read waits for NATS rather than filling memory.
func (b *Batch) publish(ctx context.Context, it *Item, msg *nats.Msg) error {
	if err := b.e.AwaitNATS(ctx); err != nil {
		return err
	}
	fut, err := b.e.pub.Publish(ctx, msg)
	if err != nil {
		return err
	}
	it.msg, it.fut = msg, fut
	b.inflight += len(msg.Data)
	return nil
}

// eventMsg is the wire form of an event: JSON body, Msg-Id and CloudEvents binary-mode
// headers.
func (e *Engine) eventMsg(ev *schemas.Event, data []byte) *nats.Msg {
	m := nats.NewMsg(e.subject)
	m.Data = data
	t := time.Now().UTC()
	if ev.ReceivedAt != nil {
		t = *ev.ReceivedAt
	}
	h := m.Header
	// Unique per route and mail: two routes on one mailbox and one bus each store theirs.
	h.Set(jetstream.MsgIDHeader, ev.Route+"/"+ev.Id)
	h.Set("Content-Type", "application/json")
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", ev.Id)
	h.Set("ce-type", schemas.EventType)
	h.Set("ce-source", e.source)
	h.Set("ce-time", t.Format(time.RFC3339))
	return m
}

// throttle lets go of the events acknowledged so far, then waits for acknowledgements
// while the route still holds too many event bytes. Without the first step a batch (about
// 16 MB of mail) kept every event it published until its end, acknowledged or not:
// about 10 MB of mixed mail's events, which the garbage collector's headroom doubles.
// b.oldest is the first item not yet seen acknowledged: acknowledgements come in publish
// order, so each call looks at the few published since the last.
func (b *Batch) throttle(ctx context.Context) error {
	for ; b.oldest < len(b.items); b.oldest++ {
		it := b.items[b.oldest]
		if it.held != nil { // not published yet
			break
		}
		if it.msg == nil { // skipped, released, or a dead letter (published after the read)
			continue
		}
		if !it.resolved() {
			break
		}
		if it.err == nil {
			b.release(it)
		} // else awaitAcks publishes it again
	}
	for _, it := range b.items[b.oldest:] {
		if b.inflight <= MaxInflightBytes {
			return nil
		}
		if it.msg == nil || it.done {
			continue
		}
		if err := it.result(ctx); err == nil {
			b.release(it)
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if b.inflight > MaxInflightBytes {
		return errors.New("publish: events are not being acknowledged")
	}
	return nil
}

// release lets go of an acknowledged event: nothing publishes it again.
func (b *Batch) release(it *Item) {
	b.inflight -= len(it.msg.Data)
	it.msg, it.fut = nil, nil
}

// finish completes a batch the source has read: the partial events get their raw copy
// and are published, the messages that cannot become events are dead-lettered, the
// acknowledgements are waited for, and ack acts on the done ones.
func (b *Batch) finish(ctx context.Context, ack Ack) error {
	if err := b.sendHeld(ctx, true); err != nil {
		return err
	}
	for _, it := range b.items {
		if it.partial != nil {
			if err := b.publishPartial(ctx, it); err != nil {
				return err
			}
		}
		if it.DeadErr != nil {
			if err := b.deadLetter(ctx, it); err != nil {
				return err
			}
		}
	}
	if err := b.sendHeld(ctx, true); err != nil {
		return err
	}
	n, failed := b.awaitAcks(ctx)
	if err := ack(ctx, n, failed); err != nil {
		return err
	}
	return failed
}

// publishPartial stores the raw copy of a message the mapping kept only part of (fetched
// again: the first read went into the mapping) and publishes its event with RawRef to it,
// whatever includeRaw says, so that what the event lacks is not lost.
func (b *Batch) publishPartial(ctx context.Context, it *Item) error {
	ev := it.partial
	it.partial = nil
	ref, err := b.storeRaw(ctx, it)
	if err != nil {
		return err
	}
	if ref == nil {
		it.NoRaw = true
		key, val := it.logArg()
		b.e.Log(slog.LevelWarn, connlog.EventError, fmt.Sprintf(
			"%s keeps only part of it in its event and the server returned no body for its raw copy: it is neither deleted nor moved",
			it.name(b.e.opts.Noun)), key, val)
	}
	ev.RawRef = ref
	return b.publishEvent(ctx, it, ev)
}

// deadLetter stores the raw message of it (fetched again: the first read went into the
// mapping) and publishes its dead letter; awaitAcks then waits for it like for an event.
// Without a raw copy (the server returned no body) the message is marked NoRaw: the
// after action leaves it alone.
func (b *Batch) deadLetter(ctx context.Context, it *Item) error {
	e := b.e
	var ref *schemas.ObjectRef
	if !it.NoRaw {
		var err error
		if ref, err = b.storeRaw(ctx, it); err != nil {
			return err
		}
	}
	why := it.DeadErr
	if ref == nil {
		it.NoRaw = true
		why = fmt.Errorf("%w (and no raw copy could be stored: the %s is neither deleted nor moved)", why, e.opts.Noun)
	}
	msg, err := bus.DeadLetterMsg(e.RT.Names.DeadSubject(e.Route.Name), it.ID, &bus.DeadLetter{
		Route: e.Route.Name, Connection: e.Conn.Name, Mailbox: e.Route.Mailbox,
		UidValidity: it.UidValidity, Uid: it.UID, Error: why.Error(), RawRef: ref,
	})
	if err != nil {
		return err
	}
	e.ConnLog.DeadLettered(connlog.Note{UID: it.UID, Item: it.ItemID, EventID: it.ID}, why)
	return b.send(ctx, it, msg)
}

// storeRaw has the source fetch the message again and stores it whole as the object
// <route>/<event id>/raw. It returns nil (and no error) when the server returned no body for it.
func (b *Batch) storeRaw(ctx context.Context, it *Item) (*schemas.ObjectRef, error) {
	e := b.e
	name := bus.ObjectName(e.Route.Name, it.ID, "raw")
	ok, err := e.src.Raw(ctx, it, func(r io.Reader) error {
		if _, err := bus.PutObject(ctx, e.RT.Storage.Objects, jetstream.ObjectMeta{Name: name, Description: "raw message"}, r); err != nil {
			return fmt.Errorf("store raw message %s: %w", name, err)
		}
		return nil
	})
	if err != nil || !ok {
		return nil, err
	}
	return &schemas.ObjectRef{Bucket: e.RT.Names.ObjectBucket(), Object: name}, nil
}

// awaitAcks waits for the acknowledgement of every event of the batch. The failed ones
// are published again (same Msg-Id: the stream drops what it has already) all together,
// once NATS is connected, up to publishRetries times: a reconnect fails every publish in
// flight at once, and publishing them again one by one, each after its own pause, stalled
// a route for minutes. It returns how many items, from the first, are done (acknowledged
// or skipped).
//
// A duplicate acknowledgement is success when this route may have published the event
// before: a retry here, or an item the source says was PublishedBefore. Otherwise the
// stream holds an event of this route's Msg-Id that the route never published (a route
// deleted and created again, a connection pointed at another server whose UIDs happen to
// match, or another deployment on the same stream): the mail would be lost, so it counts
// as not acknowledged, and is published again once the duplicate window is over.
func (b *Batch) awaitAcks(ctx context.Context) (int, error) {
	n := 0 // of the items, the first not yet counted
	for round := 1; ; round++ {
		var failed []*Item
		var err error
		for _, it := range b.items {
			if it.msg == nil { // skipped, or acknowledged while throttling
				continue
			}
			if ferr := it.result(ctx); ferr == nil {
				b.release(it)
			} else if ctx.Err() != nil {
				break
			} else {
				failed = append(failed, it)
				err = cmp.Or(err, ferr)
			}
		}
		var foreign error
		n, foreign = b.count(n)
		switch {
		case foreign != nil:
			return n, foreign
		case ctx.Err() != nil:
			return n, ctx.Err()
		case len(failed) == 0:
			return n, nil
		case round > publishRetries:
			return n, fmt.Errorf("publish %s: not acknowledged after %d tries: %w",
				failed[0].msg.Header.Get(jetstream.MsgIDHeader), round, err)
		}
		if err := b.e.AwaitNATS(ctx); err != nil {
			return n, err
		}
		// One pause for the round: a stream that lost its leader needs a moment.
		if !retry.Sleep(ctx, time.Duration(round)*250*time.Millisecond) {
			return n, ctx.Err()
		}
		for _, it := range failed {
			fut, err := b.e.pub.Publish(ctx, it.msg)
			if err != nil {
				return n, err
			}
			it.fut, it.done, it.retried = fut, false, true
		}
	}
}

// msgID is the Msg-Id of what is published for it: its event's, or its dead letter's.
func (b *Batch) msgID(it *Item) string {
	id := b.e.Route.Name + "/" + it.ID
	if it.DeadErr != nil {
		id = "dead/" + id
	}
	return id
}

// count records the items from n on that are done, up to the first one still waiting
// for its acknowledgement, and returns the index of that one. It stops with an error at
// an acknowledgement that is a duplicate of an event this route never published (see
// awaitAcks), which is not done.
func (b *Batch) count(n int) (int, error) {
	e := b.e
	for ; n < len(b.items) && b.items[n].msg == nil; n++ {
		it := b.items[n]
		if it.Skip || it.Later {
			continue
		}
		id := b.msgID(it)
		if b.isForeign(it, id) {
			e.foreign[id] = true
			e.Metrics.Duplicate()
			e.Status(func(st *schemas.RouteStatus) { st.Duplicates++ })
			it.counted = true
			key, val := it.logArg()
			e.Log(slog.LevelWarn, connlog.EventError, "the stream already holds an event with Msg-Id "+id+
				" that this route did not publish; the "+e.opts.Noun+" is left as it is and published again once the duplicate window is over", key, val)
			return n, fmt.Errorf("publish %s: the stream holds this Msg-Id from an event this route did not publish: waiting for the duplicate window to pass", id)
		}
		if !it.dup {
			delete(e.foreign, id)
			if it.DeadErr == nil && !it.counted {
				e.ConnLog.Published(it.note)
			}
		}
		b.tally(it)
	}
	return n, nil
}

// isForeign reports whether the acknowledgement of it is a duplicate of an event this
// route never published (see awaitAcks).
func (b *Batch) isForeign(it *Item, id string) bool {
	return it.dup && (b.e.foreign[id] || !it.retried && !it.PublishedBefore)
}

// tally counts the acknowledgement of it, once: stored (published or dead-lettered) or
// dropped as a duplicate.
func (b *Batch) tally(it *Item) {
	if it.counted {
		return
	}
	it.counted = true
	e := b.e
	if it.dup {
		e.Metrics.Duplicate()
	} else {
		e.Metrics.Done(it.DeadErr != nil)
	}
	e.Status(func(st *schemas.RouteStatus) {
		switch {
		case it.dup:
			st.Duplicates++
		case it.DeadErr != nil:
			st.DeadLettered++
		default:
			st.Published++
		}
	})
}

// tallyStored counts, when a batch failed before its end, the events the stream
// acknowledged all the same (waiting a little for those in flight): they are stored, and
// published again by the next try, which the stream drops as duplicates. Without it,
// published counted fewer events than the stream held, and duplicates more.
func (b *Batch) tallyStored() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, it := range b.items {
		if it.Skip || it.counted || (it.msg == nil && !it.done) {
			continue // passed over, counted, or never published
		}
		if !it.done && it.result(ctx) != nil || it.err != nil {
			continue
		}
		id := b.msgID(it)
		if b.isForeign(it, id) {
			// Foreign on the next try too, where the source may say the route published it
			// before (its checkpoint was raised before this batch): taken for the route's
			// own, the mail would be acted upon and never published. This runs for every
			// failed batch, whether its read failed or awaitAcks stopped at a foreign one.
			b.e.foreign[id] = true
			continue
		}
		if !it.dup && it.DeadErr == nil {
			b.e.ConnLog.Published(it.note)
		}
		b.tally(it)
	}
}

// TrackedReader remembers the first read error, so that a failure to read the message
// is not taken for the mapping rejecting it, and returns it (or EOF) from then on without
// reading again. With Size >= 0, an EOF before Size bytes is an error: a connection cut in
// the middle of a message ends it with a plain EOF, and a truncated message must never
// become an event.
type TrackedReader struct {
	R    io.Reader
	Size int64 // -1: unknown
	n    int64
	err  error // sticky; io.EOF once the end was reached
}

func (t *TrackedReader) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.R.Read(p)
	t.n += int64(n)
	if err == io.EOF && t.Size >= 0 && t.n < t.Size {
		err = fmt.Errorf("literal ends after %d of %d bytes: %w", t.n, t.Size, io.ErrUnexpectedEOF)
	}
	t.err = err
	return n, err
}

// Failed is the read error, nil when there was none (EOF is not one).
func (t *TrackedReader) Failed() error {
	if t.err == io.EOF {
		return nil
	}
	return t.err
}
