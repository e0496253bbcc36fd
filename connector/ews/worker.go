package ews

import (
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
	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/connector/filter"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/metrics"
	"github.com/mailbus/mailbus/connector/oauth2"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/schemas"
)

// batchSize is how many items one FindItem, SyncFolderItems and GetItem handle: the after
// action follows each batch, so it also bounds the work redone after a crash.
const batchSize = 50

// NewWorker makes the worker of a route on an exchange (EWS) connection. It refuses
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
func NewWorker(rt *engine.Runtime, spec engine.RouteSpec) (engine.Worker, error) {
	r, c := spec.Route, spec.Connection
	if c.Type != schemas.TypeExchange {
		return nil, retry.Permanent(fmt.Errorf("connection %s is of type %q, not exchange", c.Name, c.Type))
	}
	if err := engine.Defaults(&r); err != nil {
		return nil, err
	}
	var tokens *oauth2.Source
	if c.Auth == schemas.AuthOAuth2 {
		// As for IMAP: bad settings park the route when the first request asks for a token.
		tokens = oauth2.NewSource(&c, rt.Tokens)
	}
	client, err := NewClient(&c, rt.TLSRootCAs, tokens)
	if err != nil {
		return nil, retry.Permanent(fmt.Errorf("connection %s: %w", c.Name, err))
	}
	flt, err := filter.New(r.Filter)
	if err != nil {
		return nil, retry.Permanent(fmt.Errorf("route %s: %w", r.Name, err))
	}
	e, err := engine.New(rt, r, c, engine.Options{Server: "Exchange", Noun: "item", Tokens: tokens})
	if err != nil {
		return nil, err
	}
	sync := r.Select == schemas.SelectAll || r.After == schemas.AfterNone || r.Backlog != schemas.BacklogUnseen
	w := &worker{
		e: e, rt: rt, route: r, conn: c, client: client,
		sync:   sync,
		filter: NewFilter(flt, sync),
		state:  store.NewRecord[syncState](rt.Storage.State, bus.RouteKey(r.Name), "sync state"),
		src:    store.CheckpointSource{Connection: c.Name, Server: c.ExchangeURL, User: c.Username, Mailbox: r.Mailbox},
		idPfx:  e.IDPrefix,
		log:    e.Logger,
		met:    e.Metrics,
		clog:   e.ConnLog,
	}
	e.SetSource(w)
	client.Accepted = func() { w.clog.Reached(client.URL()) }
	return w, nil
}

// worker is the Exchange source of a route (engine.Source), and its worker: the engine
// runs a cycle every poll interval over it until ctx ends, with backoff after failures.
type worker struct {
	e      *engine.Engine
	rt     *engine.Runtime
	route  schemas.Route
	conn   schemas.Connection
	client *Client
	sync   bool // SyncFolderItems rather than FindItem of the unread
	state  *store.Record[syncState]
	idPfx  string
	log    *slog.Logger
	met    *metrics.RouteMetrics
	clog   *connlog.Route
	filter *Filter

	release        func()  // frees its session slot (see engine.SessionSlots); nil: holds none
	folder, moveTo *Folder // resolved on the first cycle

	src    store.CheckpointSource
	st     syncState // loaded at the start of each cycle
	legacy bool      // st was written by an earlier version

	// The cycle under way: the offset of the next page of unread items, and whether the
	// last page was read.
	offset int
	done   bool
}

// Run implements Worker: the engine runs the route; the client's connections and the
// session slot are let go of when it ends.
func (w *worker) Run(ctx context.Context) error {
	defer w.client.Close()
	defer func() {
		if w.release != nil {
			w.release()
		}
	}()
	return w.e.Run(ctx)
}

func (w *worker) status(f func(s *schemas.RouteStatus)) { w.e.Status(f) }

// connLog writes to the process log and to the connection log (see connlog.Route). args are
// key, value pairs.
func (w *worker) connLog(level slog.Level, event, msg string, args ...any) {
	w.clog.Log(level, event, msg, args...)
}

// filterItems keeps the items whose headers meet the route's filter, and returns how many
// it passed over (those passed over in an earlier cycle included).
func (w *worker) filterItems(ctx context.Context, items []Item) ([]Item, int, error) {
	return w.filter.Items(ctx, w.client, items, func(n, of int) {
		w.connLog(slog.LevelDebug, connlog.EventPoll, fmt.Sprintf("filter: passed over %d of %d items", n, of))
		w.status(func(s *schemas.RouteStatus) { s.Filtered += uint64(n) })
	})
}

// Judge implements engine.Source: besides what is marked permanent, the Exchange errors
// that retrying cannot fix are permanent; ErrorServerBusy says how long to wait.
func (w *worker) Judge(err error) engine.Verdict {
	return engine.Verdict{Permanent: retry.IsPermanent(err) || IsPermanent(err), Wait: BackOff(err)}
}

// Connect implements engine.Source: it takes the session slot of the connection the
// client keeps open between polls (held until Run ends) and resolves the folders.
func (w *worker) Connect(ctx context.Context) error {
	if w.release == nil {
		release, err := w.rt.Sessions.Take()
		if err != nil {
			return err
		}
		w.release = release
	}
	return w.resolve(ctx)
}

// Close implements engine.Source: the client and the slot are kept for the next session.
func (w *worker) Close() error { return nil }

// Wait implements engine.Source: the next cycle is due after the poll interval.
func (w *worker) Wait(ctx context.Context) (bool, error) {
	w.status(func(s *schemas.RouteStatus) { s.State = schemas.StateIdle })
	if !retry.Sleep(ctx, w.e.PollInterval()) {
		return false, ctx.Err()
	}
	return true, nil
}

// Poll implements engine.Source: it loads the state and runs the after action the last
// cycle left in the journal; ReadBatch then pages through the items.
func (w *worker) Poll(ctx context.Context, _ bool) error {
	if err := w.loadState(ctx); err != nil {
		return err
	}
	if len(w.st.Journal) > 0 {
		if err := w.settle(ctx); err != nil {
			return err
		}
	}
	w.offset, w.done = 0, false
	if w.sync {
		if w.st.SyncState == "" {
			// The first sync lists what is in the folder: the backlog.
			w.st.InBacklog = true
		}
	} else {
		w.filter.NewCycle()
	}
	return nil
}

// ReadBatch implements engine.Source.
func (w *worker) ReadBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	if w.done {
		return nil, nil
	}
	if w.sync {
		return w.syncBatch(ctx, b)
	}
	return w.unreadBatch(ctx, b)
}

// Raw implements engine.Source: it fetches the MIME of the item again.
func (w *worker) Raw(ctx context.Context, it *engine.Item, put func(io.Reader) error) (bool, error) {
	found := false
	_, err := w.client.GetItems(ctx, []ID{{ID: it.ItemID}}, func(_ int, r io.Reader) error {
		found = true
		return put(r)
	})
	return found, err
}

// resolve finds the route's folder and moveTo folder, once.
func (w *worker) resolve(ctx context.Context) error {
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

// unreadBatch reads the next page of the unread items. It pages by asking again after
// each batch: the batch leaves the unread set (read, deleted or moved), so the next page
// starts where the items still unread behind the route (failed ones) end.
func (w *worker) unreadBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	for {
		items, more, err := w.client.FindUnread(ctx, *w.folder, w.offset, batchSize, w.filter)
		if err != nil || len(items) == 0 {
			return nil, err
		}
		// Published already, their action still to be done: not published again.
		n := len(items)
		items = slices.DeleteFunc(items, func(it Item) bool { return slices.Contains(w.st.Journal, it.ID.ID) })
		w.offset += n - len(items)
		items, passed, err := w.filterItems(ctx, items)
		if err != nil {
			return nil, err
		}
		w.offset += passed // they stay unread
		w.status(func(s *schemas.RouteStatus) { s.Pending = int64(len(items)) })
		if len(items) == 0 {
			if !more {
				return nil, nil
			}
			continue
		}
		return w.batch(ctx, b, items, func(_ context.Context, left int) error {
			// Left unread: not acknowledged, or the server refused the action (journal).
			w.offset += left
			for _, it := range items {
				if slices.Contains(w.st.Journal, it.ID.ID) {
					w.offset++
				}
			}
			w.done = !more
			return nil
		})
	}
}

// syncBatch takes the next items created since the stored SyncState, and stores the new
// state only once the batch is published and acted upon.
func (w *worker) syncBatch(ctx context.Context, b *engine.Batch) (engine.Ack, error) {
	items, next, last, err := w.client.SyncItems(ctx, *w.folder, w.st.SyncState, batchSize)
	if err != nil {
		return nil, err
	}
	skipped := 0
	switch {
	case w.st.InBacklog && w.route.Backlog == schemas.BacklogNone:
		items = nil
	case w.st.InBacklog && w.route.Backlog == schemas.BacklogUnseen:
		items = slices.DeleteFunc(items, func(it Item) bool { return it.IsRead })
	case !w.st.InBacklog && w.route.Select == schemas.SelectUnseen:
		n := len(items)
		items = slices.DeleteFunc(items, func(it Item) bool {
			if it.IsRead {
				w.connLog(slog.LevelDebug, connlog.EventPoll, "item skipped: already read, and the route selects unseen mail", "id", w.EventID(it.ID))
			}
			return it.IsRead
		})
		skipped = n - len(items)
	}
	if items, _, err = w.filterItems(ctx, items); err != nil {
		return nil, err
	}
	w.status(func(s *schemas.RouteStatus) { s.Pending = int64(len(items)) })
	return w.batch(ctx, b, items, func(ctx context.Context, _ int) error {
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
		w.done = last
		return nil
	})
}

// loadState reads the route's state, and resets it when it belongs to another source.
func (w *worker) loadState(ctx context.Context) error {
	st, err := w.state.Load(ctx)
	if err != nil {
		return err
	}
	if change := w.src.ChangeFrom(st.Source); change != "" {
		w.e.SourceChanged(change)
		st = syncState{}
	}
	// A state of an earlier version records no source and no Publishing: any of its items
	// may have been published.
	w.legacy = st.Source == nil && w.state.Revision() != 0
	st.Source = &w.src
	w.st = st
	return nil
}

// transientItem are per-item errors worth retrying on the next cycle rather than
// dead-lettering the item.
var transientItem = []string{
	"ErrorServerBusy", "ErrorInternalServerTransientError", "ErrorTimeoutExpired",
	"ErrorConnectionFailed", "ErrorMailboxStoreUnavailable", "ErrorMailboxMoveInProgress",
}

// batch fetches the MIME of items in one GetItem into b, each mapped (and its event
// published by the engine) as it streams in; what cannot become an event is marked for
// the dead letters. The Ack the engine calls once it has the acknowledgements applies,
// with them in the journal, the after action to the acknowledged items (settle), then
// then(left), left being how many items it did not publish and left in the folder;
// those the server refused to change stay in the journal. A transient error on one item
// does not hold the others up: the Ack returns it once they are done, so the cycle backs
// off and retries.
func (w *worker) batch(ctx context.Context, b *engine.Batch, items []Item, then func(ctx context.Context, left int) error) (engine.Ack, error) {
	if len(items) == 0 { // all passed over
		return func(ctx context.Context, _ int, _ error) error { return then(ctx, 0) }, nil
	}
	w.clog.Listed(len(items))
	pend := make([]*engine.Item, len(items))
	ids := make([]ID, len(items))
	// Written before publishing: after a crash, a duplicate acknowledgement for one of
	// these may be of an event published before it (see engine.Batch).
	published := make(map[string]bool, len(w.st.Publishing))
	for _, id := range w.st.Publishing {
		published[id] = true
	}
	for i, it := range items {
		pend[i] = &engine.Item{ID: w.EventID(it.ID), ItemID: it.ID.ID, PublishedBefore: w.legacy || published[it.ID.ID]}
		if t, err := time.Parse(time.RFC3339, it.Received); err == nil {
			pend[i].Received = t
		}
		b.Add(pend[i])
		ids[i] = it.ID
		if !published[it.ID.ID] {
			w.st.Publishing = append(w.st.Publishing, it.ID.ID)
		}
	}
	if err := w.state.Save(ctx, w.st); err != nil {
		return nil, err
	}
	start := time.Now()
	got, err := w.client.GetItems(ctx, ids, func(i int, r io.Reader) error {
		if err := b.Map(ctx, pend[i], &mimeReader{r: r}); err != nil {
			return err
		}
		return b.Publish(ctx, pend[i])
	})
	if err != nil {
		return nil, err // what was published is published again next time, deduplicated
	}
	w.met.Fetched(start)
	var retryErr error
	gone := make([]bool, len(items))
	for i, g := range got {
		p := pend[i]
		var ee *Error
		switch {
		// Not read into the mapping: nothing was published for the item.
		case g.Err == nil && !p.Mapped():
			p.DeadErr, p.NoRaw = errors.New("the server returned no MIME content"), true
		case g.Err == nil:
		case errors.As(g.Err, &ee) && ee.Code == "ErrorItemNotFound":
			gone[i], p.Skip = true, true // nothing to do
		case errors.As(g.Err, &ee) && slices.Contains(transientItem, ee.Code):
			p.Later = true
			retryErr = fmt.Errorf("ews GetItem: item %s: %w", p.ID, g.Err)
		default:
			p.DeadErr, p.NoRaw = fmt.Errorf("ews GetItem: %w", g.Err), true
		}
	}
	return func(ctx context.Context, _ int, failed error) error {
		if failed != nil {
			return failed
		}
		left, err := w.acked(ctx, pend, gone)
		if err != nil {
			return err
		}
		if retryErr != nil {
			return retryErr
		}
		return then(ctx, left)
	}, nil
}

// acked puts the acknowledged items of pend in the journal, and applies the after action
// to them (settle). It returns how many items it left in the folder.
func (w *worker) acked(ctx context.Context, pend []*engine.Item, gone []bool) (int, error) {
	destroys := w.route.After == schemas.AfterDelete || w.route.After == schemas.AfterMove
	var kept []ID
	left := 0
	for i, p := range pend {
		acked := p.Acked() && !gone[i]
		if acked || gone[i] {
			w.st.Publishing = slices.DeleteFunc(w.st.Publishing, func(id string) bool { return id == p.ItemID })
		}
		if !acked && !gone[i] {
			left++
		}
		switch {
		case !acked || w.route.After == schemas.AfterNone:
		case p.NoRaw && destroys:
			kept = append(kept, ID{ID: p.ItemID})
		default:
			w.st.Journal = append(w.st.Journal, p.ItemID)
		}
	}
	if err := w.state.Save(ctx, w.st); err != nil {
		return 0, err
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
	return left, nil
}

// mimeReader is the MIME of an item as the mapping reads it: content the server sent
// that is not base64 cannot be mended by reading it again, so the item goes to the dead
// letters (engine.ErrUnreadable) rather than failing the cycle.
type mimeReader struct{ r io.Reader }

func (m *mimeReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	var corrupt base64.CorruptInputError
	if errors.As(err, &corrupt) {
		err = notBase64{err}
	}
	return n, err
}

// notBase64 is the read error of MIME content that is not base64.
type notBase64 struct{ err error }

func (e notBase64) Error() string {
	return "the server sent MIME content that is not base64: " + e.err.Error()
}

func (e notBase64) Unwrap() []error { return []error{e.err, engine.ErrUnreadable} }

// settle applies the route's after action, in one request, to the items of the journal,
// and keeps in it those the server refused to change (logged): the next cycle tries them
// again, without publishing them again. Items gone from the folder leave the journal.
func (w *worker) settle(ctx context.Context) error {
	if w.route.After == schemas.AfterNone {
		w.st.Journal = nil
		return w.state.Save(ctx, w.st)
	}
	done := make([]ID, len(w.st.Journal))
	for i, id := range w.st.Journal {
		done[i] = ID{ID: id}
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
		var ee *Error
		switch {
		case e == nil:
		case errors.As(e, &ee) && ee.Code == "ErrorItemNotFound":
		default:
			keep = append(keep, done[i].ID)
			w.clog.ActionFailed(w.route.After, connlog.Note{Item: done[i].ID, EventID: w.EventID(done[i])}, e)
		}
	}
	w.clog.Acted(w.route.After, w.route.MoveTo, len(done)-len(keep), "")
	w.st.Journal = keep
	return w.state.Save(ctx, w.st)
}

// EventID is the event Id of an item: <connection>/<mailbox>/<first 32 hex digits of SHA-256(ItemId)>.
func (w *worker) EventID(id ID) string {
	sum := sha256.Sum256([]byte(id.ID))
	return w.idPfx + "/" + hex.EncodeToString(sum[:16])
}

// syncState is an exchange route's checkpoint.
type syncState struct {
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
