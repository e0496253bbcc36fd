package connector

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"time"

	"github.com/mailbus/mailbus/connector/bus"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/ews"
	"github.com/mailbus/mailbus/connector/filter"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/connector/validate"
	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

// ewsBatch is how many items one FindItem, SyncFolderItems and GetItem handle: the after
// action follows each batch, so it also bounds the work redone after a crash.
const ewsBatch = 50

// NewExchangeWorker makes the worker of a route on an exchange (EWS) connection. It refuses
// a definition it cannot run (permanent errors); what depends on the server (credentials,
// the folder) is found out by Run, which parks the route in state error when needed.
//
// What a route selects, and how it remembers what it published:
//   - select unseen with after markRead, delete or move: FindItem of the unread items; the
//     mailbox itself is the checkpoint, since nothing is left unread behind the route;
//   - select all, after none, or a backlog other than unseen: SyncFolderItems, whose
//     SyncState is the checkpoint; the first sync (from none, or after a reset) lists the
//     backlog, which the route's backlog rule filters; with select unseen, items already
//     read when they first show up are passed over and counted (skippedSeen).
//
// Both keep in the state bucket under route.<name> the source they belong to (a change
// resets them), the journal of items acknowledged but not yet acted upon, and the items
// whose events may have been published but were not acknowledged yet (see ack).
//
// Events are those of IMAP routes, with Id <connection>/<mailbox>/<item>, where <item> is
// the first 32 hex digits of the SHA-256 of the EWS ItemId (ItemIds are ~150 characters of
// base64, too long for an Id that is also an object name prefix); UidValidity and Uid are 0.
func NewExchangeWorker(rt *Runtime, spec RouteSpec) (Worker, error) {
	r, c := spec.Route, spec.Connection
	if c.Type != schemas.TypeExchange {
		return nil, Permanent(fmt.Errorf("connection %s is of type %q, not exchange", c.Name, c.Type))
	}
	switch r.Select {
	case "":
		r.Select = schemas.SelectAll
	case schemas.SelectUnseen, schemas.SelectAll:
	default:
		return nil, Permanent(fmt.Errorf("route %s: unknown select %q", r.Name, r.Select))
	}
	switch r.Backlog {
	case "":
		r.Backlog = schemas.BacklogUnseen
	case schemas.BacklogUnseen, schemas.BacklogAll, schemas.BacklogNone:
	default:
		return nil, Permanent(fmt.Errorf("route %s: unknown backlog %q", r.Name, r.Backlog))
	}
	switch r.After {
	case "":
		r.After = schemas.AfterMarkRead
	case schemas.AfterMarkRead, schemas.AfterNone, schemas.AfterDelete:
	case schemas.AfterMove:
		if r.MoveTo == "" {
			return nil, Permanent(fmt.Errorf("route %s: after move needs moveTo", r.Name))
		}
	default:
		return nil, Permanent(fmt.Errorf("route %s: unknown after %q", r.Name, r.After))
	}
	if r.Mailbox == "" {
		r.Mailbox = "INBOX"
	}
	pub := rt.Publishers.Bus(r.Bus)
	if pub == nil {
		return nil, fmt.Errorf("route %s: no publisher for bus %d (Runtime.Publishers not set?)", r.Name, r.Bus)
	}
	var tokens *oauth2.Source
	if c.Auth == schemas.AuthOAuth2 {
		// As for IMAP: bad settings park the route when the first request asks for a token.
		tokens = newTokenSource(&c, rt.defs)
	}
	client, err := ews.NewClient(&c, rt.TLSRootCAs, tokens)
	if err != nil {
		return nil, Permanent(fmt.Errorf("connection %s: %w", c.Name, err))
	}
	flt, err := filter.New(r.Filter)
	if err != nil {
		return nil, Permanent(fmt.Errorf("route %s: %w", r.Name, err))
	}
	idPfx := c.Name + "/" + r.Mailbox
	subject := rt.Names.BusSubject(r.Bus, r.Name)
	sync := r.Select == schemas.SelectAll || r.After == schemas.AfterNone || r.Backlog != schemas.BacklogUnseen
	w := &ewsWorker{
		rt: rt, route: r, conn: c, client: client, pub: pub,
		sync:    sync,
		filter:  ews.NewFilter(flt, sync),
		state:   store.NewRecord[ewsState](rt.Storage.State, RouteKey(r.Name), "sync state"),
		src:     store.CheckpointSource{Connection: c.Name, Server: c.ExchangeURL, User: c.Username, Mailbox: r.Mailbox},
		foreign: make(map[string]bool),
		idPfx:   idPfx,
		// The wire form (Msg-Id, CloudEvents headers) is the IMAP worker's, so that both
		// kinds of route publish exactly the same way.
		wire: &imapWorker{subject: subject, source: "mailbus/" + idPfx},
		log:  rt.logger().With("route", r.Name, "connection", c.Name),
		met:  rt.Metrics.Route(r.Name, r.Bus),
	}
	w.clog = connlog.NewRoute(rt.ConnLog, &w.conn, r.Name, w.log, tokens)
	client.Accepted = func() { w.clog.Reached(client.URL()) }
	return w, nil
}

// ewsWorker runs one route of an exchange connection: a cycle every poll interval until
// ctx ends, with backoff after failures.
type ewsWorker struct {
	rt     *Runtime
	route  schemas.Route
	conn   schemas.Connection
	client *ews.Client
	pub    *bus.BusPublisher
	sync   bool // SyncFolderItems rather than FindItem of the unread
	state  *store.Record[ewsState]
	idPfx  string
	wire   *imapWorker
	log    *slog.Logger
	met    *metrics.RouteMetrics
	clog   *connlog.Route
	filter *ews.Filter

	release        func()      // frees its session slot (see sessionSlots); nil: holds none
	folder, moveTo *ews.Folder // resolved on the first cycle
	inflight       int         // bytes of published, unacknowledged events

	src store.CheckpointSource
	st  ewsState // loaded at the start of each cycle
	// published is st.Publishing as it was before the current batch: a duplicate
	// acknowledgement for one of these may be of an event published before a crash.
	published map[string]bool
	foreign   map[string]bool // as imapWorker.foreign
	legacy    bool            // st was written by an earlier version
}

// Run implements Worker. It returns only when ctx ends: failures are retried here, with
// the route's state telling what happens.
func (w *ewsWorker) Run(ctx context.Context) error {
	defer w.client.Close()
	defer func() {
		if w.release != nil {
			w.release()
		}
	}()
	w.status(func(s *schemas.RouteStatus) {
		s.State, s.Owner, s.LastError = schemas.StateStarting, w.rt.Instance, ""
	})
	defer w.status(func(s *schemas.RouteStatus) { s.State = schemas.StateStopped })
	attempt := 0
	for {
		err := w.cycle(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wait, state := w.pollInterval(), schemas.StateIdle
		switch {
		case err == nil:
			attempt = 0
		case IsPermanent(err) || ews.IsPermanent(err):
			countFailure(w.met, err, true)
			state, wait = schemas.StateError, max(permanentRetry, 5*w.pollInterval())
			w.clog.Failed(state, wait, err)
		default:
			countFailure(w.met, err, false)
			// The server's own figure wins: ErrorServerBusy says how long it wants.
			state, wait = schemas.StateBackoff, ews.BackOff(err)
			if wait == 0 {
				wait = retry.Backoff(attempt)
				attempt++
			}
			w.clog.Failed(state, wait, err)
		}
		w.status(func(s *schemas.RouteStatus) {
			s.State = state
			if err != nil {
				s.LastError = statusError(err, "Exchange", bus.Up(w.rt.NC))
			}
		})
		if !retry.Sleep(ctx, wait) {
			return nil
		}
	}
}

func (w *ewsWorker) pollInterval() time.Duration {
	if d := time.Duration(w.conn.PollInterval); d > 0 {
		return d
	}
	return validate.DefaultPollInterval
}

func (w *ewsWorker) status(f func(s *schemas.RouteStatus)) {
	if w.rt.Status != nil {
		w.rt.Status.Update(w.route.Name, f)
	}
}

// connLog writes to the process log and to the connection log (see connlog.Route). args are
// key, value pairs.
func (w *ewsWorker) connLog(level slog.Level, event, msg string, args ...any) {
	w.clog.Log(level, event, msg, args...)
}

// filterItems keeps the items whose headers meet the route's filter, and returns how many
// it passed over (those passed over in an earlier cycle included).
func (w *ewsWorker) filterItems(ctx context.Context, items []ews.Item) ([]ews.Item, int, error) {
	return w.filter.Items(ctx, w.client, items, func(n, of int) {
		w.connLog(slog.LevelDebug, connlog.EventPoll, fmt.Sprintf("filter: passed over %d of %d items", n, of))
		w.status(func(s *schemas.RouteStatus) { s.Filtered += uint64(n) })
	})
}

// cycle publishes everything the route selects, batch by batch.
func (w *ewsWorker) cycle(ctx context.Context) error {
	now := time.Now().UTC()
	w.status(func(s *schemas.RouteStatus) { s.State, s.LastPollAt = schemas.StateRunning, &now })
	w.met.Poll()
	if w.release == nil {
		// The slot of the connection the client keeps open between polls, held until Run ends.
		release, err := w.rt.sessions.take()
		if err != nil {
			return err
		}
		w.release = release
	}
	if err := w.resolve(ctx); err != nil {
		return err
	}
	if err := w.loadState(ctx); err != nil {
		return err
	}
	if len(w.st.Journal) > 0 {
		if err := w.settle(ctx); err != nil {
			return err
		}
	}
	var err error
	if w.sync {
		err = w.syncCycle(ctx)
	} else {
		err = w.unreadCycle(ctx)
	}
	if err != nil {
		return err
	}
	now = time.Now().UTC()
	w.status(func(s *schemas.RouteStatus) { s.Pending, s.LastSuccessAt, s.LastError = 0, &now, "" })
	w.clog.Polled(w.route.Mailbox)
	return nil
}

// resolve finds the route's folder and moveTo folder, once.
func (w *ewsWorker) resolve(ctx context.Context) error {
	if w.folder == nil {
		f, err := w.client.ResolveFolder(ctx, w.route.Mailbox)
		if err != nil {
			return fmt.Errorf("mailbox %q: %w", w.route.Mailbox, err)
		}
		w.folder = &f
	}
	if w.route.After == schemas.AfterMove && w.moveTo == nil {
		f, err := w.client.ResolveFolder(ctx, w.route.MoveTo)
		if err != nil {
			return fmt.Errorf("moveTo %q: %w", w.route.MoveTo, err)
		}
		w.moveTo = &f
	}
	return nil
}

// unreadCycle pages through the unread items by asking again after each batch: the batch
// leaves the unread set (read, deleted or moved), so the next page starts where the items
// still unread behind the route (failed ones) end.
func (w *ewsWorker) unreadCycle(ctx context.Context) error {
	offset := 0
	w.filter.NewCycle()
	for {
		items, more, err := w.client.FindUnread(ctx, *w.folder, offset, ewsBatch, w.filter)
		if err != nil || len(items) == 0 {
			return err
		}
		// Published already, their action still to be done: not published again.
		n := len(items)
		items = slices.DeleteFunc(items, func(it ews.Item) bool { return slices.Contains(w.st.Journal, it.ID.ID) })
		offset += n - len(items)
		items, passed, err := w.filterItems(ctx, items)
		if err != nil {
			return err
		}
		offset += passed // they stay unread
		w.status(func(s *schemas.RouteStatus) { s.Pending = int64(len(items)) })
		if len(items) == 0 {
			if !more {
				return nil
			}
			continue
		}
		left, err := w.batch(ctx, items)
		if err != nil {
			return err
		}
		// Left unread: not acknowledged, or the server refused the action (journal).
		offset += left
		for _, it := range items {
			if slices.Contains(w.st.Journal, it.ID.ID) {
				offset++
			}
		}
		if !more {
			return nil
		}
	}
}

// syncCycle takes the items created since the stored SyncState, and stores the new state
// only once the batch is published and acted upon.
func (w *ewsWorker) syncCycle(ctx context.Context) error {
	if w.st.SyncState == "" {
		// The first sync lists what is in the folder: the backlog.
		w.st.InBacklog = true
	}
	for {
		items, next, last, err := w.client.SyncItems(ctx, *w.folder, w.st.SyncState, ewsBatch)
		if err != nil {
			return err
		}
		skipped := 0
		switch {
		case w.st.InBacklog && w.route.Backlog == schemas.BacklogNone:
			items = nil
		case w.st.InBacklog && w.route.Backlog == schemas.BacklogUnseen:
			items = slices.DeleteFunc(items, func(it ews.Item) bool { return it.IsRead })
		case !w.st.InBacklog && w.route.Select == schemas.SelectUnseen:
			n := len(items)
			items = slices.DeleteFunc(items, func(it ews.Item) bool {
				if it.IsRead {
					w.connLog(slog.LevelDebug, connlog.EventPoll, "item skipped: already read, and the route selects unseen mail", "id", w.eventID(it.ID))
				}
				return it.IsRead
			})
			skipped = n - len(items)
		}
		if items, _, err = w.filterItems(ctx, items); err != nil {
			return err
		}
		w.status(func(s *schemas.RouteStatus) { s.Pending = int64(len(items)) })
		if len(items) > 0 {
			if _, err := w.batch(ctx, items); err != nil {
				return err
			}
		}
		if next != w.st.SyncState || last && w.st.InBacklog {
			w.st.SyncState = next
			w.st.InBacklog = w.st.InBacklog && !last
			if err := w.state.Save(ctx, w.st); err != nil {
				return err
			}
		}
		if skipped > 0 {
			w.status(func(s *schemas.RouteStatus) { s.SkippedSeen += uint64(skipped) })
		}
		if last {
			return nil
		}
	}
}

// loadState reads the route's state, and resets it when it belongs to another source.
func (w *ewsWorker) loadState(ctx context.Context) error {
	st, err := w.state.Load(ctx)
	if err != nil {
		return err
	}
	if change := w.src.ChangeFrom(st.Source); change != "" {
		w.connLog(slog.LevelWarn, connlog.EventState, fmt.Sprintf(
			"checkpoint reset: the route's source changed (%s); backlog %s decides what of the mail in the mailbox is published",
			change, w.route.Backlog))
		st = ewsState{}
	}
	// A state of an earlier version records no source and no Publishing: any of its items
	// may have been published.
	w.legacy = st.Source == nil && w.state.Revision() != 0
	st.Source = &w.src
	w.st = st
	return nil
}

// ewsPending is one item of a batch on its way: published and waiting for its
// acknowledgement, to be dead-lettered, or skipped.
type ewsPending struct {
	item    ews.Item
	id      string // event Id
	gone    bool   // deleted or moved since it was listed
	deadErr error  // why it cannot become an event
	noRaw   bool   // no raw copy stored (the server would not give its MIME): left alone by after
	// partial is an event that keeps only part of its message, held until the raw copy is
	// stored after the GetItem (publishPartial); then it is published with RawRef.
	partial *schemas.Event
	msg     *nats.Msg
	fut     jetstream.PubAckFuture
	acked   bool
	retried bool         // published more than once
	note    connlog.Note // for the connection log
	err     error        // fut failed: published again by awaitAcks
}

// ewsTransientItem are per-item errors worth retrying on the next cycle rather than
// dead-lettering the item.
var ewsTransientItem = []string{
	"ErrorServerBusy", "ErrorInternalServerTransientError", "ErrorTimeoutExpired",
	"ErrorConnectionFailed", "ErrorMailboxStoreUnavailable", "ErrorMailboxMoveInProgress",
}

// batch fetches the MIME of items in one GetItem, mapping and publishing each as it
// streams in, dead-letters what cannot become an event, waits for the acknowledgements and
// only then, with them in the journal, applies the after action to the acknowledged
// items (settle). It returns how many items it did not publish and left in the folder;
// those the server refused to change stay in the journal. A transient error on one item does not hold the others up:
// it is returned once they are done, so the cycle backs off and retries.
func (w *ewsWorker) batch(ctx context.Context, items []ews.Item) (left int, err error) {
	if len(items) == 0 { // all passed over by the filter
		return 0, nil
	}
	// Whatever an earlier, failed batch left in flight is no longer waited for.
	w.inflight = 0
	w.clog.Listed(len(items))
	pend := make([]*ewsPending, len(items))
	defer func() {
		if err != nil {
			w.tallyStored(pend)
		}
	}()
	ids := make([]ews.ID, len(items))
	for i, it := range items {
		pend[i] = &ewsPending{item: it, id: w.eventID(it.ID)}
		ids[i] = it.ID
	}
	// Written before publishing: after a crash, a duplicate acknowledgement for one of
	// these may be of an event published before it (see ack).
	w.published = make(map[string]bool, len(w.st.Publishing))
	for _, id := range w.st.Publishing {
		w.published[id] = true
	}
	for _, it := range items {
		if !w.published[it.ID.ID] {
			w.st.Publishing = append(w.st.Publishing, it.ID.ID)
		}
	}
	if err := w.state.Save(ctx, w.st); err != nil {
		return 0, err
	}
	start := time.Now()
	got, err := w.client.GetItems(ctx, ids, func(i int, r io.Reader) error {
		return w.publish(ctx, pend[i], r, pend[:i])
	})
	if err != nil {
		return 0, err // what was published is published again next time, deduplicated
	}
	w.met.Fetched(start)
	var retry error
	for i, g := range got {
		p := pend[i]
		var ee *ews.Error
		switch {
		// No message and not acknowledged (throttle lets go of acknowledged ones early):
		// nothing was published for the item.
		case g.Err == nil && p.msg == nil && !p.acked && p.deadErr == nil && p.partial == nil:
			p.deadErr, p.noRaw = errors.New("the server returned no MIME content"), true
		case g.Err == nil:
		case errors.As(g.Err, &ee) && ee.Code == "ErrorItemNotFound":
			p.gone = true // nothing to do
		case errors.As(g.Err, &ee) && slices.Contains(ewsTransientItem, ee.Code):
			retry = fmt.Errorf("ews GetItem: item %s: %w", p.id, g.Err)
		default:
			p.deadErr, p.noRaw = fmt.Errorf("ews GetItem: %w", g.Err), true
		}
		if p.partial != nil {
			if err := w.publishPartial(ctx, p); err != nil {
				return 0, err
			}
		}
		if p.deadErr != nil {
			if err := w.deadLetter(ctx, p); err != nil {
				return 0, err
			}
		}
	}
	if err := w.awaitAcks(ctx, pend); err != nil {
		return 0, err
	}
	// The journal: acknowledged, not published again, to be acted upon (settle).
	destroys := w.route.After == schemas.AfterDelete || w.route.After == schemas.AfterMove
	var kept []ews.ID
	for _, p := range pend {
		if p.acked || p.gone {
			w.st.Publishing = slices.DeleteFunc(w.st.Publishing, func(id string) bool { return id == p.item.ID.ID })
		}
		switch {
		case !p.acked || w.route.After == schemas.AfterNone:
		case p.noRaw && destroys:
			kept = append(kept, p.item.ID)
		default:
			w.st.Journal = append(w.st.Journal, p.item.ID.ID)
		}
	}
	if err := w.state.Save(ctx, w.st); err != nil {
		return 0, err
	}
	left = 0
	for _, p := range pend {
		if !p.acked && !p.gone {
			left++
		}
	}
	if len(kept) > 0 {
		// Neither deleted nor moved: the folder holds the only copy. Read from unread items,
		// the route marks them read instead, or every poll would read them again; a sync
		// route's SyncState passes them by.
		how := "left as they are"
		if !w.sync {
			how = "only marked read"
			errs, err := w.client.MarkRead(ctx, kept)
			if err != nil {
				return 0, fmt.Errorf("after %s: mark read the items without a raw copy: %w", w.route.After, err)
			}
			for _, e := range errs {
				if e != nil {
					left++
				}
			}
		}
		w.connLog(slog.LevelWarn, connlog.EventAction, fmt.Sprintf(
			"after %s not applied to %d items: no raw copy of them could be stored (the server returned no MIME), so they stay in the folder, %s",
			w.route.After, len(kept), how))
	}
	if len(w.st.Journal) > 0 {
		if err := w.settle(ctx); err != nil {
			return 0, err
		}
	}
	return left, retry
}

// publish maps the MIME of p from r and publishes its event without waiting for the
// acknowledgement. An error is the reading's or the storage's (temporary); a message the
// mapping rejects is marked for the dead letters.
func (w *ewsWorker) publish(ctx context.Context, p *ewsPending, r io.Reader, earlier []*ewsPending) error {
	sink := bus.NewObjectSink(ctx, w.rt.Storage.Objects, w.rt.Names.ObjectBucket(), p.id)
	var tee *bus.RawTee
	if w.route.IncludeRaw {
		tee = bus.NewRawTee(ctx, w.rt.Storage.Objects, bus.ObjectName(p.id, "raw"), r)
		r = tee
	}
	in := &trackedReader{r: r}
	res, mapErr := w.rt.mapSafely(in, &mapping.Options{
		Headers:        w.route.Headers,
		Attributes:     w.route.Attributes,
		MaxInlineBytes: w.rt.MaxInlineBytes,
		Sink:           sink,
	})
	if mapErr != nil {
		if tee != nil {
			tee.Abort()
		}
		var corrupt base64.CorruptInputError
		switch {
		case sink.Failed() != nil:
			return sink.Failed()
		case errors.As(in.err, &corrupt):
			p.deadErr = fmt.Errorf("the server sent MIME content that is not base64: %w", in.err)
		case in.failed() != nil:
			return fmt.Errorf("read item %s: %w", p.id, in.err)
		default:
			p.deadErr = mapErr
		}
		if err := sink.Drop(); err != nil {
			w.rt.Logger.Warn("objects of a dead-lettered message not deleted", "route", w.route.Name, "err", err)
		}
		return nil
	}
	ev := res.Event
	if tee != nil {
		if err := tee.Finish(); err != nil {
			return err
		}
		ev.RawRef = &schemas.ObjectRef{Bucket: w.rt.Names.ObjectBucket(), Object: bus.ObjectName(p.id, "raw")}
	}
	ev.Id, ev.Route, ev.Connection, ev.Bus, ev.Mailbox = p.id, w.route.Name, w.conn.Name, w.route.Bus, w.route.Mailbox
	if t, err := time.Parse(time.RFC3339, p.item.Received); err == nil {
		t = t.UTC()
		ev.ReceivedAt = &t
	}
	if res.Partial && ev.RawRef == nil {
		p.partial = ev
		return nil
	}
	if err := w.publishEvent(ctx, p, ev); err != nil {
		return err
	}
	return w.throttle(ctx, earlier)
}

// publishEvent publishes the event of p without waiting for its acknowledgement; an event
// too large for NATS marks p for the dead letters instead.
func (w *ewsWorker) publishEvent(ctx context.Context, p *ewsPending, ev *schemas.Event) error {
	limit := max(int(w.rt.NC.MaxPayload())-bus.PayloadHeadroom, 1024)
	data, err := bus.FitPayload(ctx, w.rt.Storage.Objects, w.rt.Names.ObjectBucket(), ev, limit)
	if errors.Is(err, bus.ErrEventTooLarge) {
		if derr := bus.DropObjects(ctx, w.rt.Storage.Objects, bus.EventObjects(ev)); derr != nil {
			w.rt.Logger.Warn("objects of a dead-lettered message not deleted", "route", w.route.Name, "err", derr)
		}
		p.deadErr = err
		return nil
	}
	if err != nil {
		return err
	}
	p.msg, p.note = w.wire.eventMsg(ev, data), connlog.NoteOf(ev, p.item.ID.ID)
	if err := bus.AwaitNATS(ctx, w.rt.NC, w.status); err != nil {
		return err
	}
	if p.fut, err = w.pub.Publish(ctx, p.msg); err != nil {
		return err
	}
	w.inflight += len(p.msg.Data)
	return nil
}

// publishPartial stores the raw copy of an item the mapping kept only part of (fetched
// again: the first read went into the mapping) and publishes its event with RawRef to it,
// whatever includeRaw says.
func (w *ewsWorker) publishPartial(ctx context.Context, p *ewsPending) error {
	ev := p.partial
	p.partial = nil
	ref, err := w.storeRaw(ctx, p)
	if err != nil {
		return err
	}
	if ref == nil {
		p.noRaw = true
		w.connLog(slog.LevelWarn, connlog.EventError, "item keeps only part of it in its event and the server returned no MIME for its raw copy: it is neither deleted nor moved", "id", p.id)
	}
	ev.RawRef = ref
	return w.publishEvent(ctx, p, ev)
}

// throttle waits for acknowledgements while the route holds too many event bytes. A
// failed publish is left to awaitAcks.
func (w *ewsWorker) throttle(ctx context.Context, pend []*ewsPending) error {
	for _, p := range pend {
		if w.inflight <= maxInflightBytes {
			return nil
		}
		if err := w.result(ctx, p); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if w.inflight > maxInflightBytes {
		return errors.New("publish: events are not being acknowledged")
	}
	return nil
}

// errForeign is the acknowledgement of a duplicate of an event this route never published.
var errForeign = errors.New("the stream holds this Msg-Id from an event this route did not publish: waiting for the duplicate window to pass")

// result waits for the publish of p to resolve. Once it is acknowledged, its message is let
// go of and it is counted; a failure is returned, and remembered (a future tells it once)
// until awaitAcks publishes p again.
//
// As for IMAP (imapSession.awaitAcks), a duplicate of an event this route never published
// is not taken for its own: it is errForeign, which awaitAcks does not publish again.
func (w *ewsWorker) result(ctx context.Context, p *ewsPending) error {
	if p.fut == nil || p.acked || p.err != nil {
		return p.err
	}
	var dup bool
	select {
	case ack := <-p.fut.Ok():
		dup = ack.Duplicate
	case p.err = <-p.fut.Err():
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
	id := p.msg.Header.Get(jetstream.MsgIDHeader)
	if dup && (w.foreign[id] || !p.retried && !w.legacy && !w.published[p.item.ID.ID]) {
		w.foreign[id] = true
		p.fut = nil // counted here
		p.err = fmt.Errorf("publish %s: %w", id, errForeign)
		w.met.Duplicate()
		w.status(func(s *schemas.RouteStatus) { s.Duplicates++ })
		w.connLog(slog.LevelWarn, connlog.EventError, "the stream already holds an event with Msg-Id "+id+
			" that this route did not publish; the item is left as it is and published again once the duplicate window is over", "id", p.id)
		return p.err
	}
	if !dup {
		delete(w.foreign, id)
	}
	p.acked = true
	w.inflight -= len(p.msg.Data)
	p.msg, p.fut = nil, nil // the future holds the message too
	if dup {
		w.met.Duplicate()
	} else {
		if p.deadErr == nil {
			w.clog.Published(p.note)
		}
		w.met.Done(p.deadErr != nil)
	}
	w.status(func(s *schemas.RouteStatus) {
		switch {
		case dup:
			s.Duplicates++
		case p.deadErr != nil:
			s.DeadLettered++
		default:
			s.Published++
		}
	})
	return nil
}

// tallyStored counts, when a batch failed before its end, the events of pend the stream
// acknowledged all the same (waiting a little for those in flight), as imapSession's does.
func (w *ewsWorker) tallyStored(pend []*ewsPending) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, p := range pend {
		if p == nil || p.fut == nil || p.acked || p.err != nil {
			continue
		}
		var ack *jetstream.PubAck
		select {
		case ack = <-p.fut.Ok():
		case <-p.fut.Err():
		case <-ctx.Done():
		}
		if ack == nil {
			continue
		}
		dup := ack.Duplicate
		if dup && !p.retried && !w.legacy && !w.published[p.item.ID.ID] {
			continue // judged when it is published again
		}
		p.fut = nil
		if dup {
			w.met.Duplicate()
		} else {
			w.met.Done(p.deadErr != nil)
			if p.deadErr == nil {
				w.clog.Published(p.note)
			}
		}
		w.status(func(s *schemas.RouteStatus) {
			switch {
			case dup:
				s.Duplicates++
			case p.deadErr != nil:
				s.DeadLettered++
			default:
				s.Published++
			}
		})
	}
}

// awaitAcks waits for the acknowledgement of every item of pend. The failed ones are
// published again all together (same Msg-Id), once NATS is connected, up to
// publishRetries times: as for IMAP (see imapSession.awaitAcks), not one by one.
func (w *ewsWorker) awaitAcks(ctx context.Context, pend []*ewsPending) error {
	for round := 1; ; round++ {
		var failed []*ewsPending
		var err error
		for _, p := range pend {
			if ferr := w.result(ctx, p); ferr != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(ferr, errForeign) {
					return ferr
				}
				failed = append(failed, p)
				err = cmp.Or(err, ferr)
			}
		}
		if len(failed) == 0 {
			return nil
		}
		if round > publishRetries {
			return fmt.Errorf("publish %s: not acknowledged after %d tries: %w", failed[0].id, round, err)
		}
		if err := bus.AwaitNATS(ctx, w.rt.NC, w.status); err != nil {
			return err
		}
		if !retry.Sleep(ctx, time.Duration(round)*250*time.Millisecond) {
			return ctx.Err()
		}
		for _, p := range failed {
			fut, err := w.pub.Publish(ctx, p.msg)
			if err != nil {
				return err
			}
			p.fut, p.err, p.retried = fut, nil, true
		}
	}
}

// deadLetter publishes the dead letter of p, with its raw message in the object store
// (fetched again: the first read went into the mapping) unless the server would not give it.
func (w *ewsWorker) deadLetter(ctx context.Context, p *ewsPending) error {
	var ref *schemas.ObjectRef
	if !p.noRaw {
		var err error
		if ref, err = w.storeRaw(ctx, p); err != nil {
			return err
		}
	}
	why := p.deadErr
	if ref == nil {
		// The after action leaves it: the folder holds its only copy.
		p.noRaw = true
		why = fmt.Errorf("%w (and no raw copy could be stored: the item is neither deleted nor moved)", why)
	}
	msg, err := bus.DeadLetterMsg(w.rt.Names.DeadSubject(w.route.Name), p.id, &DeadLetter{
		Route: w.route.Name, Connection: w.conn.Name, Mailbox: w.route.Mailbox,
		Error: why.Error(), RawRef: ref,
	})
	if err != nil {
		return err
	}
	w.clog.DeadLettered(connlog.Note{Item: p.item.ID.ID, EventID: p.id}, why)
	p.msg = msg
	if err := bus.AwaitNATS(ctx, w.rt.NC, w.status); err != nil {
		return err
	}
	if p.fut, err = w.pub.Publish(ctx, msg); err != nil {
		return err
	}
	w.inflight += len(msg.Data)
	return nil
}

// storeRaw fetches the MIME of p again and stores it as the object <event id>/raw. It
// returns nil (and no error) when the server gave no MIME for it.
func (w *ewsWorker) storeRaw(ctx context.Context, p *ewsPending) (*schemas.ObjectRef, error) {
	var ref *schemas.ObjectRef
	name := bus.ObjectName(p.id, "raw")
	_, err := w.client.GetItems(ctx, []ews.ID{p.item.ID}, func(_ int, r io.Reader) error {
		if _, err := bus.PutObject(ctx, w.rt.Storage.Objects, jetstream.ObjectMeta{Name: name, Description: "raw message"}, r); err != nil {
			return fmt.Errorf("store raw message %s: %w", name, err)
		}
		ref = &schemas.ObjectRef{Bucket: w.rt.Names.ObjectBucket(), Object: name}
		return nil
	})
	return ref, err
}

// settle applies the route's after action, in one request, to the items of the journal,
// and keeps in it those the server refused to change (logged): the next cycle tries them
// again, without publishing them again. Items gone from the folder leave the journal.
func (w *ewsWorker) settle(ctx context.Context) error {
	if w.route.After == schemas.AfterNone {
		w.st.Journal = nil
		return w.state.Save(ctx, w.st)
	}
	done := make([]ews.ID, len(w.st.Journal))
	for i, id := range w.st.Journal {
		done[i] = ews.ID{ID: id}
	}
	var errs []error
	var err error
	switch w.route.After {
	case schemas.AfterMarkRead:
		errs, err = w.client.MarkRead(ctx, done)
	case schemas.AfterDelete:
		errs, err = w.client.DeleteItems(ctx, done)
	case schemas.AfterMove:
		errs, err = w.client.MoveItems(ctx, done, *w.moveTo)
	}
	if err != nil {
		return fmt.Errorf("after %s: %w", w.route.After, err)
	}
	var keep []string
	for i, e := range errs {
		var ee *ews.Error
		switch {
		case e == nil:
		case errors.As(e, &ee) && ee.Code == "ErrorItemNotFound":
		default:
			keep = append(keep, done[i].ID)
			w.clog.ActionFailed(w.route.After, connlog.Note{Item: done[i].ID, EventID: w.eventID(done[i])}, e)
		}
	}
	w.clog.Acted(w.route.After, w.route.MoveTo, len(done)-len(keep), "")
	w.st.Journal = keep
	return w.state.Save(ctx, w.st)
}

// eventID is <connection>/<mailbox>/<first 32 hex digits of SHA-256(ItemId)>.
func (w *ewsWorker) eventID(id ews.ID) string {
	sum := sha256.Sum256([]byte(id.ID))
	return w.idPfx + "/" + hex.EncodeToString(sum[:16])
}

// ewsState is an exchange route's checkpoint.
type ewsState struct {
	Source    *store.CheckpointSource `json:"source,omitempty"`
	SyncState string                  `json:"syncState"`
	// InBacklog: the first sync (of the backlog) has not reached its end yet.
	InBacklog bool `json:"inBacklog,omitempty"`
	// Journal holds the ItemIds whose events were acknowledged but whose after action has
	// not run yet.
	Journal []string `json:"journal,omitempty"`
	// Publishing holds the ItemIds whose events may have been published and were not
	// acknowledged yet.
	Publishing []string `json:"publishing,omitempty"`
}
