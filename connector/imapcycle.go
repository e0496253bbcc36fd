package connector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mailbus/mailbus/connector/bus"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/connlog"
	"github.com/mailbus/mailbus/connector/retry"
	"github.com/mailbus/mailbus/connector/store"
	"github.com/mailbus/mailbus/mapping"
	"github.com/mailbus/mailbus/schemas"
)

const (
	// fetchBatch is how many UIDs one FETCH asks for at first. Then a batch is sized to hold
	// about batchBytes of mail, from fetchBatch to maxFetchBatch UIDs: each batch ends with
	// a pause (the last acknowledgements, the after action, the checkpoint, the next FETCH's
	// round trip), which with 256 small messages a batch cost 20,000 of them about a
	// quarter of their time. The after action and the checkpoint follow each batch, so its
	// size also bounds the work redone after a crash.
	fetchBatch    = 256
	maxFetchBatch = 2048
	batchBytes    = 16 << 20
	// maxInflightBytes bounds the events a route holds for a possible retry (published,
	// not yet acknowledged); above it the FETCH waits for acknowledgements.
	maxInflightBytes = 32 << 20
	// publishRetries is how often the unacknowledged events of a batch are published
	// again (same Msg-Id) before the cycle gives up.
	publishRetries = 3
)

// imapSession is one connection's worth of cycles.
type imapSession struct {
	w          *imapWorker
	c          *imapclient.Client
	cp         store.Checkpoint
	wake       chan struct{} // EXISTS seen
	idle, move bool
	inflight   int // bytes of events held for a retry
	// renewAt ends the session between cycles, so that the next one logs in with a new
	// access token before the old one expires (Microsoft 365 drops a session whose token
	// expired); zero: never.
	renewAt  time.Time
	avgSize  int    // of the messages of the last batch, for the size of the next
	probeKey []byte // see isProbe
	legacy   bool   // cp was written by an earlier version, without PublishedTo
	// published is cp.PublishedTo before the current batch raised it: a duplicate
	// acknowledgement up to it may be of an event published before a crash.
	published uint32
	flt       imapFilterState
	// litFailed: a literal of the FETCH being given up failed to read (see quit).
	litFailed bool
}

// candidate is a UID the search found above the checkpoint, and whether the route passes it
// over rather than publishing it.
type candidate struct {
	uid  imap.UID
	pass int // passNone, passBacklog, passSeen
}

const (
	passNone    = iota
	passBacklog // already in the mailbox when the checkpoint began, and left out by backlog
	passSeen    // already read, and left out by select unseen (counted in skippedSeen)
)

// fetched is one message of a batch on its way: published and waiting for its
// acknowledgement, skipped, or to be dead-lettered.
type fetched struct {
	uid  imap.UID
	skip bool // a probe (ProbeHeader), or passed over (see candidate): nothing published,
	// no after action (the check removes its probe itself); the checkpoint moves past it
	// like past any message
	pass    int   // why skipped, for the count and the log
	retried bool  // published more than once by this worker
	dup     bool  // the stream acknowledged it as a duplicate of a stored Msg-Id
	counted bool  // in the status and the metrics (tally)
	deadErr error // why the mapping rejected it; dead-lettered once the FETCH is over
	// msg is the event (or dead letter) held for a retry, and fut its publish (which
	// holds it too); both are let go of once it is acknowledged (release).
	msg  *nats.Msg
	fut  jetstream.PubAckFuture
	done bool         // fut has resolved (err holds how)
	err  error        // the publish's outcome once done
	note connlog.Note // for the connection log
	// noRaw: no raw copy of the message could be stored (the server returned no body), so
	// the after action neither deletes nor moves it: the mailbox is its only copy.
	noRaw bool
	// partial is an event that keeps only part of its message, held until the raw copy is
	// stored after the FETCH (publishPartial); then it is published with RawRef.
	partial *schemas.Event
}

// result waits for the publish to resolve and remembers how, so it can be asked twice.
func (f *fetched) result(ctx context.Context) error {
	if f.done {
		return f.err
	}
	select {
	case ack := <-f.fut.Ok():
		f.err, f.dup = nil, ack.Duplicate
	case f.err = <-f.fut.Err():
	case <-ctx.Done():
		return ctx.Err()
	}
	f.done = true
	return f.err
}

// resolved is result without waiting: whether the publish has resolved yet.
func (f *fetched) resolved() bool {
	if f.done {
		return true
	}
	select {
	case ack := <-f.fut.Ok():
		f.err, f.dup = nil, ack.Duplicate
	case f.err = <-f.fut.Err():
	default:
		return false
	}
	f.done = true
	return true
}

// cycle runs once over the mailbox: every message the route selects above the checkpoint
// is published, acknowledged, acted upon and checkpointed, in batches. With reselect the
// mailbox is selected again first (a full resynchronisation, and the UIDVALIDITY check);
// without, the cycle trusts the mailbox the session still has selected, whose news (EXISTS)
// IDLE just delivered: on Dovecot with 5,000 messages a SELECT per new message adds about
// 0.13 s to its delay. The poll reselects.
func (s *imapSession) cycle(ctx context.Context, reselect bool) error {
	w := s.w
	now := time.Now().UTC()
	w.status(func(st *schemas.RouteStatus) { st.State, st.LastPollAt = schemas.StateRunning, &now })
	w.met.Poll()
	if reselect || s.c.Mailbox() == nil {
		if err := s.selectMailbox(ctx); err != nil {
			return err
		}
	}
	if len(s.cp.Journal) > 0 {
		if err := s.settle(ctx); err != nil {
			return err
		}
	}

	// An EXISTS from here on may be mail this search misses: keep it for the next wait.
	select {
	case <-s.wake:
	default:
	}
	uids, err := s.search(ctx)
	if err != nil {
		return err
	}
	if uids, err = s.filterCandidates(ctx, uids); err != nil {
		return err
	}
	w.clog.Listed(countPublish(uids))
	for len(uids) > 0 {
		w.status(func(st *schemas.RouteStatus) { st.Pending = int64(countPublish(uids)) })
		n := min(len(uids), s.batchSize())
		if err := s.batch(ctx, uids[:n]); err != nil {
			return err
		}
		uids = uids[n:]
	}
	if err := s.pass(ctx); err != nil {
		return err
	}
	end := time.Now().UTC()
	w.status(func(st *schemas.RouteStatus) { st.Pending, st.LastSuccessAt, st.LastError = 0, &end, "" })
	w.log.Debug("cycle done", "took", end.Sub(now), "reselect", reselect, "lastUid", s.cp.LastUid)
	w.clog.Polled(w.route.Mailbox)
	return nil
}

// batchSize is how many UIDs the next FETCH asks for.
func (s *imapSession) batchSize() int {
	if s.avgSize <= 0 {
		return fetchBatch
	}
	return min(max(batchBytes/s.avgSize, fetchBatch), maxFetchBatch)
}

// selectMailbox selects the route's mailbox and checks its UIDVALIDITY against the
// checkpoint (see Checkpoint for what a change means).
func (s *imapSession) selectMailbox(ctx context.Context) error {
	w := s.w
	var sel *imap.SelectData
	// EXAMINE where the route never changes the mailbox: then it provably cannot.
	readOnly := w.route.After == schemas.AfterNone
	err := within(ctx, imapCommandTimeout, s.c, func() (err error) {
		sel, err = s.c.Select(w.route.Mailbox, &imap.SelectOptions{ReadOnly: readOnly}).Wait()
		return err
	})
	if err != nil {
		return fmt.Errorf("select %q: %w", w.route.Mailbox, err)
	}
	if sel.UIDValidity != s.cp.UidValidity {
		if s.cp.UidValidity != 0 {
			w.connLog(slog.LevelWarn, connlog.EventUIDValidity, fmt.Sprintf(
				"mailbox %q: UIDVALIDITY changed from %d to %d: checkpoint reset, backlog %s publishes its messages again under new Ids",
				w.route.Mailbox, s.cp.UidValidity, sel.UIDValidity, w.route.Backlog),
				"oldUidValidity", s.cp.UidValidity, "uidValidity", sel.UIDValidity)
		}
		// The mail in the mailbox now is the backlog; UIDNEXT says where it ends.
		top := uint32(sel.UIDNext) - 1
		if sel.UIDNext == 0 {
			var err error
			if top, err = s.highestUID(ctx); err != nil {
				return err
			}
		}
		s.cp = store.Checkpoint{Source: &w.src, UidValidity: sel.UIDValidity, Backlog: top}
		if w.route.Backlog == schemas.BacklogNone {
			s.cp.LastUid = top
		}
		if err := w.cps.Save(ctx, s.cp); err != nil {
			return err
		}
	} else if s.legacy {
		// Its events may all have been published, up to the last mail there now.
		s.cp.PublishedTo = max(s.cp.PublishedTo, uint32(max(sel.UIDNext, 1)-1))
	}
	s.legacy = false
	w.status(func(st *schemas.RouteStatus) { st.UidValidity, st.LastUid = s.cp.UidValidity, s.cp.LastUid })
	return nil
}

// search returns, in UID order, the UIDs above the checkpoint: those the route publishes,
// and those it passes over (read ones left out by backlog or select unseen), so that the
// checkpoint moves past them too. Up to cp.Backlog the route's backlog rule applies,
// above it its select rule.
func (s *imapSession) search(ctx context.Context) ([]candidate, error) {
	r := s.w.route
	last := s.cp.LastUid
	var out []candidate
	if last < s.cp.Backlog && r.Backlog != schemas.BacklogNone {
		c, err := s.searchRange(ctx, last+1, s.cp.Backlog, r.Backlog == schemas.BacklogUnseen, passBacklog)
		if err != nil {
			return nil, err
		}
		// Of the read ones left out, only the last is kept: the checkpoint moves past it,
		// and so past the others, which are neither counted nor logged.
		for i, x := range c {
			if x.pass == passNone || i == len(c)-1 {
				out = append(out, x)
			}
		}
		last = s.cp.Backlog
	}
	c, err := s.searchRange(ctx, max(last, s.cp.Backlog)+1, 0, r.Select == schemas.SelectUnseen, passSeen)
	if err != nil {
		return nil, err
	}
	return append(out, c...), nil
}

// searchRange finds the UIDs from..to (to 0: the highest); with unseen, the read ones are
// marked pass.
func (s *imapSession) searchRange(ctx context.Context, from, to uint32, unseen bool, pass int) ([]candidate, error) {
	crit := &imap.SearchCriteria{UID: []imap.UIDSet{{{Start: imap.UID(from), Stop: imap.UID(to)}}}}
	var data *imap.SearchData
	var seen map[imap.UID]bool
	err := within(ctx, imapCommandTimeout, s.c, func() (err error) {
		if data, err = s.c.UIDSearch(crit, nil).Wait(); err != nil || !unseen {
			return err
		}
		// The read ones, in a search of their own: the server tells the flags, so a
		// message read between two searches is at worst published, never missed.
		read, err := s.c.UIDSearch(&imap.SearchCriteria{UID: crit.UID, Flag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
		if err != nil {
			return err
		}
		seen = make(map[imap.UID]bool)
		for _, u := range read.AllUIDs() {
			seen[u] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("uid search: %w", err)
	}
	// "n:*" always matches the highest UID, even below n: drop what is not above from.
	uids := slices.DeleteFunc(data.AllUIDs(), func(u imap.UID) bool {
		return u < imap.UID(from) || (to != 0 && u > imap.UID(to))
	})
	slices.Sort(uids)
	out := make([]candidate, len(uids))
	for i, u := range uids {
		out[i] = candidate{uid: u}
		if seen[u] {
			out[i].pass = pass
		}
	}
	return out, nil
}

// filterCandidates keeps, of the candidates to publish, those the route's filter matches
// (see filter); the ones passed over for being read stay, for the checkpoint.
func (s *imapSession) filterCandidates(ctx context.Context, c []candidate) ([]candidate, error) {
	var pub []imap.UID
	for _, x := range c {
		if x.pass == passNone {
			pub = append(pub, x.uid)
		}
	}
	matched, err := s.filter(ctx, pub)
	if err != nil || len(matched) == len(pub) {
		return c, err
	}
	keep := make(map[imap.UID]bool, len(matched))
	for _, u := range matched {
		keep[u] = true
	}
	return slices.DeleteFunc(c, func(x candidate) bool { return x.pass == passNone && !keep[x.uid] }), nil
}

// highestUID is the highest UID in the selected mailbox, for a server that did not tell
// UIDNEXT; 0 when the mailbox is empty.
func (s *imapSession) highestUID(ctx context.Context) (uint32, error) {
	var data *imap.SearchData
	err := within(ctx, imapCommandTimeout, s.c, func() (err error) {
		data, err = s.c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("uid search: %w", err)
	}
	var top imap.UID
	for _, u := range data.AllUIDs() {
		top = max(top, u)
	}
	return uint32(top), nil
}

func countPublish(c []candidate) int {
	n := 0
	for _, x := range c {
		if x.pass == passNone {
			n++
		}
	}
	return n
}

// batch fetches, maps and publishes the messages uids, then waits for the acknowledgements
// and, for the acknowledged run of UIDs from the lowest, applies the after action and
// only then moves the checkpoint. A crash anywhere leaves the checkpoint at or below what
// the mailbox shows; republishing uses the same Msg-Ids, which the stream deduplicates.
func (s *imapSession) batch(ctx context.Context, cands []candidate) (err error) {
	var uids []imap.UID
	var got []*fetched
	defer func() {
		if err != nil {
			s.tallyStored(got)
		}
	}()
	for _, c := range cands {
		if c.pass == passNone {
			uids = append(uids, c.uid)
		} else {
			got = append(got, &fetched{uid: c.uid, skip: true, pass: c.pass})
		}
	}
	if len(uids) == 0 {
		return s.apply(ctx, got)
	}
	// Written before publishing: after a crash, a duplicate acknowledgement up to here may
	// be of an event published before it (see awaitAcks).
	s.published = s.cp.PublishedTo
	if top := uint32(slices.Max(uids)); top > s.cp.PublishedTo {
		s.cp.PublishedTo = top
		if err := s.w.cps.Save(ctx, s.cp); err != nil {
			return err
		}
	}
	start := time.Now()
	fetch := s.c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{
		UID: true, RFC822Size: true, InternalDate: true,
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	})
	watch := newProgressWatch(s.c, imapCommandTimeout)
	defer watch.stop()
	var size, sized int // bytes and number of the literals, for avgSize
	oldest := 0         // of got, the first not yet known to be acknowledged (throttle)
	for {
		watch.arm()
		m := fetch.Next()
		watch.disarm()
		if m == nil {
			break
		}
		f, err := s.message(ctx, m, watch, &size)
		if err != nil {
			s.quit(fetch) // the session ends
			return watch.explain(err)
		}
		if f != nil {
			got = append(got, f)
			sized++
		}
		if err := s.throttle(ctx, got, &oldest); err != nil {
			s.quit(fetch)
			return err
		}
	}
	watch.arm()
	err = fetch.Close()
	watch.disarm()
	if err != nil {
		return watch.explain(fmt.Errorf("uid fetch: %w", err))
	}
	s.w.met.Fetched(start)
	if sized > 0 {
		s.avgSize = max(size/sized, 1)
	}

	slices.SortFunc(got, func(a, b *fetched) int { return int(a.uid) - int(b.uid) })
	for _, f := range got {
		if f.partial != nil {
			if err := s.publishPartial(ctx, f); err != nil {
				return err
			}
		}
		if f.deadErr != nil {
			if err := s.deadLetter(ctx, f); err != nil {
				return err
			}
		}
	}
	n, ackErr := s.awaitAcks(ctx, got)
	if err := s.apply(ctx, got[:n]); err != nil {
		return err
	}
	return ackErr
}

// message reads one message of the FETCH: its literal streams through the mapping (and
// the object store) without being held in memory, then the event is published.
// An error is the connection's or the storage's (temporary); a message the mapping rejects
// is returned for the dead letters.
func (s *imapSession) message(ctx context.Context, m *imapclient.FetchMessageData, watch *progressWatch, size *int) (*fetched, error) {
	var (
		uid     imap.UID
		date    time.Time
		ev      *schemas.Event
		partial bool
		mapErr  error
		seen    bool
	)
	for {
		watch.arm()
		item := m.Next()
		watch.disarm()
		if item == nil {
			break
		}
		switch it := item.(type) {
		case imapclient.FetchItemDataUID:
			uid = it.UID
		case imapclient.FetchItemDataInternalDate:
			date = it.Time
		case imapclient.FetchItemDataBodySection:
			if uid == 0 {
				return nil, errors.New("uid fetch: the server sent a body before the UID")
			}
			if it.Literal == nil {
				mapErr = errors.New("the server returned no body (NIL)")
				break
			}
			seen = true
			*size += int(it.Literal.Size())
			lit := literalReader(it.Literal, watch)
			var err error
			ev, partial, mapErr, err = s.mapMessage(ctx, uid, lit)
			if err == nil {
				// Read what the mapping left here, not in imapclient: see abandon.
				if _, err = io.Copy(io.Discard, lit); err != nil {
					err = fmt.Errorf("read message %d: %w", uid, err)
				}
			}
			if err != nil {
				s.abandon(lit)
				return nil, err
			}
		}
	}
	if uid == 0 {
		return nil, nil // not one of ours (a flag change pushed by the server)
	}
	f := &fetched{uid: uid}
	switch {
	case mapErr != nil:
		f.deadErr = mapErr
		return f, nil
	case !seen:
		f.deadErr = errors.New("the server returned no body")
		return f, nil
	case isProbe(ev, s.probeKey):
		f.skip = true
		return f, nil
	}

	w := s.w
	ev.Id = s.eventID(uid)
	ev.Route, ev.Connection, ev.Bus, ev.Mailbox = w.route.Name, w.conn.Name, w.route.Bus, w.route.Mailbox
	ev.UidValidity, ev.Uid = s.cp.UidValidity, uint32(uid)
	if !date.IsZero() {
		d := date.UTC()
		ev.ReceivedAt = &d
	}
	if partial && ev.RawRef == nil {
		f.partial = ev
		return f, nil
	}
	if err := s.publishEvent(ctx, f, ev); err != nil {
		return nil, err
	}
	return f, nil
}

// publishEvent publishes the event of f without waiting for its acknowledgement; an event
// too large for NATS marks f for the dead letters instead.
func (s *imapSession) publishEvent(ctx context.Context, f *fetched, ev *schemas.Event) error {
	w := s.w
	data, err := bus.FitPayload(ctx, w.rt.Storage.Objects, w.rt.Names.ObjectBucket(), ev, w.maxPayload())
	if errors.Is(err, bus.ErrEventTooLarge) {
		if derr := bus.DropObjects(ctx, w.rt.Storage.Objects, bus.EventObjects(ev)); derr != nil {
			w.rt.Logger.Warn("objects of a dead-lettered message not deleted", "route", w.route.Name, "err", derr)
		}
		f.deadErr = err
		return nil
	}
	if err != nil {
		return err
	}
	f.msg, f.note = w.eventMsg(ev, data), connlog.NoteOf(ev, "")
	// Not into the client's reconnect buffer: an outage shows in the status, and the
	// FETCH waits for NATS rather than filling memory.
	if err := bus.AwaitNATS(ctx, w.rt.NC, w.status); err != nil {
		return err
	}
	if f.fut, err = w.pub.Publish(ctx, f.msg); err != nil {
		return err
	}
	s.inflight += len(f.msg.Data)
	return nil
}

// publishPartial stores the raw copy of a message the mapping kept only part of (fetched
// again: the first read went into the mapping) and publishes its event with RawRef to it,
// whatever includeRaw says, so that what the event lacks is not lost.
func (s *imapSession) publishPartial(ctx context.Context, f *fetched) error {
	ev := f.partial
	f.partial = nil
	ref, err := s.storeRaw(ctx, f.uid)
	if err != nil {
		return err
	}
	if ref == nil {
		f.noRaw = true
		s.w.connLog(slog.LevelWarn, connlog.EventError, fmt.Sprintf(
			"message %d keeps only part of it in its event and the server returned no body for its raw copy: it is neither deleted nor moved", f.uid), "uid", f.uid)
	}
	ev.RawRef = ref
	return s.publishEvent(ctx, f, ev)
}

// abandon gives up the FETCH in the middle of a literal: the session ends. The connection
// is closed and the literal read (through lit, which never reads again after an error) to
// its end or its error; the caller then lets go of the FETCH with quit.
func (s *imapSession) abandon(lit *trackedReader) {
	s.closeConn()
	io.Copy(io.Discard, lit)
	s.litFailed = lit.failed() != nil
}

// quit lets go of a FETCH the session gives up before its end. imapclient's reader
// goroutine hands the FETCH over message by message and waits until each literal is
// read; Close waits for that goroutine, so a FETCH left unread made the session's Close
// wait forever (a NATS outage stopping the worker in the middle of a FETCH stalled its
// route for good). So the connection is closed and the FETCH read to its end, which comes
// soon on the closed connection. After a literal failed, nothing of the FETCH is read
// again: reading a literal again after an error races with that goroutine, which went on
// past it and fails on the closed connection by itself.
func (s *imapSession) quit(fetch *imapclient.FetchCommand) {
	s.closeConn()
	if !s.litFailed {
		fetch.Close()
	}
}

// closeConn closes the connection without waiting for imapclient's reader goroutine,
// which Close does: the caller may be what that goroutine waits for.
func (s *imapSession) closeConn() {
	go s.c.Close()
}

// mapMessage turns the literal into an event. err is a failure to read the message or to
// store its parts (temporary); mapErr is the mapping rejecting the message (dead letter);
// partial says that the event keeps only part of the message (mapping.Result).
func (s *imapSession) mapMessage(ctx context.Context, uid imap.UID, lit *trackedReader) (ev *schemas.Event, partial bool, mapErr, err error) {
	w := s.w
	var r io.Reader = lit
	id := s.eventID(uid)
	sink := bus.NewObjectSink(ctx, w.rt.Storage.Objects, w.rt.Names.ObjectBucket(), id)
	var tee *bus.RawTee
	if w.route.IncludeRaw {
		tee = bus.NewRawTee(ctx, w.rt.Storage.Objects, bus.ObjectName(id, "raw"), r)
		r = tee
	}
	in := &trackedReader{r: r, size: -1}
	res, mapErr := w.rt.mapSafely(in, &mapping.Options{
		Headers:        w.headers(),
		Attributes:     w.route.Attributes,
		MaxInlineBytes: w.rt.MaxInlineBytes,
		Sink:           sink,
	})
	if mapErr != nil {
		if tee != nil {
			tee.Abort()
		}
		if err := sink.Failed(); err != nil {
			return nil, false, nil, err
		}
		if err := lit.failed(); err != nil {
			return nil, false, nil, fmt.Errorf("read message %d: %w", uid, err)
		}
		if err := in.failed(); err != nil {
			return nil, false, nil, fmt.Errorf("read message %d: %w", uid, err)
		}
		if err := sink.Drop(); err != nil {
			w.rt.Logger.Warn("objects of a dead-lettered message not deleted", "route", w.route.Name, "err", err)
		}
		return nil, false, mapErr, nil
	}
	ev = res.Event
	if tee != nil {
		if err := tee.Finish(); err != nil {
			return nil, false, nil, err
		}
		ev.RawRef = &schemas.ObjectRef{Bucket: w.rt.Names.ObjectBucket(), Object: bus.ObjectName(id, "raw")}
	}
	return ev, res.Partial, nil, nil
}

// headers is the route's CustomHeaders allow-list, with the probe header added so that a
// probe is recognised whatever the list.
func (w *imapWorker) headers() []string {
	if w.route.Headers == nil {
		return nil
	}
	return append(slices.Clip(w.route.Headers), ProbeHeader)
}

// isProbe reports whether ev is the connection check's probe: its ProbeHeader carries a
// value signed with key. Any other message with the header is ordinary mail.
func isProbe(ev *schemas.Event, key []byte) bool {
	for _, h := range ev.CustomHeaders {
		if strings.EqualFold(h.Name, ProbeHeader) && slices.ContainsFunc(h.ListValues, func(v string) bool { return probeSigned(key, v) }) {
			return true
		}
	}
	return false
}

// eventID is <connection>/<mailbox>/<uidvalidity>/<uid>: the Id of the event (its Msg-Id
// is <route>/<Id>).
func (s *imapSession) eventID(uid imap.UID) string {
	return s.w.idPfx + "/" + strconv.FormatUint(uint64(s.cp.UidValidity), 10) + "/" + strconv.FormatUint(uint64(uid), 10)
}

func (w *imapWorker) maxPayload() int {
	limit := int(w.rt.NC.MaxPayload()) - bus.PayloadHeadroom
	return max(limit, 1024)
}

// eventMsg is the wire form of an event: JSON body, Msg-Id and CloudEvents binary-mode
// headers.
func (w *imapWorker) eventMsg(ev *schemas.Event, data []byte) *nats.Msg {
	m := nats.NewMsg(w.subject)
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
	h.Set("ce-source", w.source)
	h.Set("ce-time", t.Format(time.RFC3339))
	return m
}

// throttle lets go of the events acknowledged so far, then waits for acknowledgements
// while the route still holds too many event bytes. Without the first step a batch (about
// batchBytes of mail) kept every event it published until its end, acknowledged or not:
// about 10 MB of mixed mail's events, which the garbage collector's headroom doubles.
// *oldest is the first of got not yet seen acknowledged: acknowledgements come in
// publish order, so each call looks at the few published since the last.
func (s *imapSession) throttle(ctx context.Context, got []*fetched, oldest *int) error {
	for ; *oldest < len(got); *oldest++ {
		f := got[*oldest]
		if f.msg == nil { // skipped, released, or a dead letter (published after the FETCH)
			continue
		}
		if !f.resolved() {
			break
		}
		if f.err == nil {
			s.release(f)
		} // else awaitAcks publishes it again
	}
	for _, f := range got[*oldest:] {
		if s.inflight <= maxInflightBytes {
			return nil
		}
		if f.msg == nil || f.done {
			continue
		}
		if err := f.result(ctx); err == nil {
			s.release(f)
		} else if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if s.inflight > maxInflightBytes {
		return errors.New("publish: events are not being acknowledged")
	}
	return nil
}

// release lets go of an acknowledged event: nothing publishes it again.
func (s *imapSession) release(f *fetched) {
	s.inflight -= len(f.msg.Data)
	f.msg, f.fut = nil, nil
}

// awaitAcks waits for the acknowledgement of every event of got. The failed ones are
// published again (same Msg-Id: the stream drops what it has already) all together, once
// NATS is connected, up to publishRetries times: a reconnect fails every publish in
// flight at once, and publishing them again one by one, each after its own pause, stalled
// a route for minutes. It returns how many of got, from the first, are done (acknowledged
// or skipped).
//
// A duplicate acknowledgement is success when this route may have published the event
// before: a retry here, or a UID up to the PublishedTo of an earlier run. Otherwise the
// stream holds an event of this route's Msg-Id that the route never published (a route
// deleted and created again, a connection pointed at another server whose UIDs happen to
// match, or another deployment on the same stream): the mail would be lost, so it counts
// as not acknowledged, and is published again once the duplicate window is over.
func (s *imapSession) awaitAcks(ctx context.Context, got []*fetched) (int, error) {
	n := 0 // of got, the first not yet counted
	for round := 1; ; round++ {
		var failed []*fetched
		var err error
		for _, f := range got {
			if f.msg == nil { // skipped, or acknowledged while throttling
				continue
			}
			if ferr := f.result(ctx); ferr == nil {
				s.release(f)
			} else if ctx.Err() != nil {
				break
			} else {
				failed = append(failed, f)
				err = cmp.Or(err, ferr)
			}
		}
		var foreign error
		n, foreign = s.count(got, n)
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
		if err := bus.AwaitNATS(ctx, s.w.rt.NC, s.w.status); err != nil {
			return n, err
		}
		// One pause for the round: a stream that lost its leader needs a moment.
		if !retry.Sleep(ctx, time.Duration(round)*250*time.Millisecond) {
			return n, ctx.Err()
		}
		for _, f := range failed {
			fut, err := s.w.pub.Publish(ctx, f.msg)
			if err != nil {
				return n, err
			}
			f.fut, f.done, f.retried = fut, false, true
		}
	}
}

// count records the events of got from n on that are done, up to the first one still
// waiting for its acknowledgement, and returns the index of that one. It stops with an
// error at an acknowledgement that is a duplicate of an event this route never published
// (see awaitAcks), which is not done.
func (s *imapSession) count(got []*fetched, n int) (int, error) {
	w := s.w
	for ; n < len(got) && got[n].msg == nil; n++ {
		f := got[n]
		if f.skip {
			continue
		}
		id := w.route.Name + "/" + s.eventID(f.uid)
		if f.deadErr != nil {
			id = "dead/" + id
		}
		if s.foreign(f, id) {
			w.foreign[id] = true
			w.met.Duplicate()
			w.status(func(st *schemas.RouteStatus) { st.Duplicates++ })
			f.counted = true
			w.connLog(slog.LevelWarn, connlog.EventError, "the stream already holds an event with Msg-Id "+id+
				" that this route did not publish; the message is left as it is and published again once the duplicate window is over", "uid", f.uid)
			return n, fmt.Errorf("publish %s: the stream holds this Msg-Id from an event this route did not publish: waiting for the duplicate window to pass", id)
		}
		if !f.dup {
			delete(w.foreign, id)
			if f.deadErr == nil && !f.counted {
				w.clog.Published(f.note)
			}
		}
		s.tally(f)
	}
	return n, nil
}

// foreign reports whether f's acknowledgement is a duplicate of an event this route never
// published (see awaitAcks).
func (s *imapSession) foreign(f *fetched, id string) bool {
	return f.dup && (s.w.foreign[id] || !f.retried && uint32(f.uid) > s.published)
}

// tally counts f's acknowledgement, once: stored (published or dead-lettered) or dropped
// as a duplicate.
func (s *imapSession) tally(f *fetched) {
	if f.counted {
		return
	}
	f.counted = true
	w := s.w
	if f.dup {
		w.met.Duplicate()
	} else {
		w.met.Done(f.deadErr != nil)
	}
	w.status(func(st *schemas.RouteStatus) {
		switch {
		case f.dup:
			st.Duplicates++
		case f.deadErr != nil:
			st.DeadLettered++
		default:
			st.Published++
		}
	})
}

// tallyStored counts, when a batch failed before its end, the events of got the stream
// acknowledged all the same (waiting a little for those in flight): they are stored, and
// published again by the next try, which the stream drops as duplicates. Without it,
// published counted fewer events than the stream held, and duplicates more.
func (s *imapSession) tallyStored(got []*fetched) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, f := range got {
		if f.skip || f.counted || (f.msg == nil && !f.done) {
			continue // passed over, counted, or never published
		}
		if !f.done && f.result(ctx) != nil || f.err != nil {
			continue
		}
		id := s.w.route.Name + "/" + s.eventID(f.uid)
		if f.deadErr != nil {
			id = "dead/" + id
		}
		if s.foreign(f, id) {
			continue // judged when it is published again
		}
		if !f.dup && f.deadErr == nil {
			s.w.clog.Published(f.note)
		}
		s.tally(f)
	}
}

// apply moves the checkpoint past the acknowledged messages done (in UID order) and the
// ones passed over, with the UIDs to act on in its journal, then runs the after action on
// them (settle). Nothing here runs for a message whose event was not acknowledged. Should
// the action fail, or the process die before it ran, the next cycle runs it on the
// journal's UIDs without publishing them again.
func (s *imapSession) apply(ctx context.Context, done []*fetched) error {
	if len(done) == 0 {
		return nil
	}
	w := s.w
	var seen int
	var left []imap.UID
	for _, f := range done {
		switch {
		case f.pass == passSeen:
			seen++
			w.connLog(slog.LevelDebug, connlog.EventPoll, fmt.Sprintf("UID %d skipped: already read, and the route selects unseen mail", f.uid), "uid", f.uid)
		case f.skip || w.route.After == schemas.AfterNone:
		case f.noRaw && (w.route.After == schemas.AfterDelete || w.route.After == schemas.AfterMove):
			// The mailbox holds its only copy. (markRead still applies: it loses nothing.)
			left = append(left, f.uid)
		default:
			s.cp.Journal = append(s.cp.Journal, uint32(f.uid))
		}
	}
	if len(left) > 0 {
		w.connLog(slog.LevelWarn, connlog.EventAction, fmt.Sprintf(
			"after %s not applied to %d messages (UIDs %v): no raw copy of them could be stored (the server returned no body), so the mailbox keeps them as they are",
			w.route.After, len(left), left), "uids", fmt.Sprint(left))
	}
	s.cp.LastUid = uint32(done[len(done)-1].uid)
	if err := w.cps.Save(ctx, s.cp); err != nil {
		return err
	}
	w.status(func(st *schemas.RouteStatus) { st.LastUid, st.SkippedSeen = s.cp.LastUid, st.SkippedSeen+uint64(seen) })
	if len(s.cp.Journal) == 0 {
		return nil
	}
	return s.settle(ctx)
}

// settle runs the after action on the UIDs of the checkpoint's journal, then empties it.
func (s *imapSession) settle(ctx context.Context) error {
	var set imap.UIDSet
	for _, u := range s.cp.Journal {
		set.AddNum(imap.UID(u))
	}
	if err := within(ctx, imapCommandTimeout, s.c, func() error { return s.after(set) }); err != nil {
		return fmt.Errorf("after %s: %w", s.w.route.After, err)
	}
	s.w.clog.Acted(s.w.route.After, s.w.route.MoveTo, len(s.cp.Journal), "UIDs "+set.String())
	s.cp.Journal = nil
	return s.w.cps.Save(ctx, s.cp)
}

func (s *imapSession) after(set imap.UIDSet) error {
	flags := func(f imap.Flag) error {
		return s.c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{f}}, nil).Close()
	}
	switch s.w.route.After {
	case schemas.AfterMarkRead:
		return flags(imap.FlagSeen)
	case schemas.AfterDelete:
		if err := flags(imap.FlagDeleted); err != nil {
			return err
		}
		return s.c.UIDExpunge(set).Close()
	case schemas.AfterMove:
		if s.move {
			_, err := s.c.Move(set, s.w.route.MoveTo).Wait()
			return moveToErr(s.w.route.MoveTo, err)
		}
		// Not imapclient's own fallback: it sends STORE \Deleted and EXPUNGE without
		// waiting for the COPY's answer, so a failed COPY (a missing folder) lost the mail.
		// Here nothing is flagged before the COPY said OK, and UID EXPUNGE (checkCaps made
		// sure of UIDPLUS) removes only the UIDs copied, not what others flagged \Deleted.
		if _, err := s.c.Copy(set, s.w.route.MoveTo).Wait(); err != nil {
			return moveToErr(s.w.route.MoveTo, err)
		}
		if err := flags(imap.FlagDeleted); err != nil {
			return err
		}
		return s.c.UIDExpunge(set).Close()
	}
	return nil
}

// moveToErr names the folder in a refused MOVE or COPY: the route's status then says which
// folder is missing, and IsPermanent sees the server's TRYCREATE through it.
func moveToErr(folder string, err error) error {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return fmt.Errorf("moveTo folder %q: %w", folder, err)
	}
	return err
}

// deadLetter stores the raw message of f (fetched again: the first read went into the
// mapping) and publishes its dead letter; awaitAcks then waits for it like for an event.
// Without a raw copy (the server returned no body) the message is marked noRaw: the after
// action leaves it alone.
func (s *imapSession) deadLetter(ctx context.Context, f *fetched) error {
	w := s.w
	id := s.eventID(f.uid)
	ref, err := s.storeRaw(ctx, f.uid)
	if err != nil {
		return err
	}
	why := f.deadErr
	if ref == nil {
		f.noRaw = true
		why = fmt.Errorf("%w (and no raw copy could be stored: the message is neither deleted nor moved)", why)
	}
	msg, err := bus.DeadLetterMsg(w.rt.Names.DeadSubject(w.route.Name), id, &DeadLetter{
		Route: w.route.Name, Connection: w.conn.Name, Mailbox: w.route.Mailbox,
		UidValidity: s.cp.UidValidity, Uid: uint32(f.uid), Error: why.Error(), RawRef: ref,
	})
	if err != nil {
		return err
	}
	w.clog.DeadLettered(connlog.Note{UID: uint32(f.uid), EventID: id}, why)
	f.msg = msg
	if err := bus.AwaitNATS(ctx, w.rt.NC, w.status); err != nil {
		return err
	}
	if f.fut, err = w.pub.Publish(ctx, msg); err != nil {
		return err
	}
	s.inflight += len(msg.Data)
	return nil
}

// storeRaw fetches the message uid again and stores it whole as the object <event id>/raw.
// It returns nil (and no error) when the server returned no body for it.
func (s *imapSession) storeRaw(ctx context.Context, uid imap.UID) (*schemas.ObjectRef, error) {
	w := s.w
	name := bus.ObjectName(s.eventID(uid), "raw")
	var ref *schemas.ObjectRef
	fetch := s.c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	})
	watch := newProgressWatch(s.c, imapCommandTimeout)
	defer watch.stop()
	for {
		watch.arm()
		m := fetch.Next()
		watch.disarm()
		if m == nil {
			break
		}
		for {
			watch.arm()
			item := m.Next()
			watch.disarm()
			if item == nil {
				break
			}
			body, ok := item.(imapclient.FetchItemDataBodySection)
			if !ok || body.Literal == nil {
				continue
			}
			lit := literalReader(body.Literal, watch)
			_, err := bus.PutObject(ctx, w.rt.Storage.Objects, jetstream.ObjectMeta{Name: name, Description: "raw message"}, lit)
			if err == nil {
				_, err = io.Copy(io.Discard, lit)
			}
			if err != nil {
				s.abandon(lit)
				s.quit(fetch)
				if err := lit.failed(); err != nil {
					return nil, watch.explain(fmt.Errorf("read message %d: %w", uid, err))
				}
				return nil, fmt.Errorf("store raw message %s: %w", name, err)
			}
			ref = &schemas.ObjectRef{Bucket: w.rt.Names.ObjectBucket(), Object: name}
		}
	}
	watch.arm()
	err := fetch.Close()
	watch.disarm()
	if err != nil {
		return nil, watch.explain(fmt.Errorf("uid fetch %d: %w", uid, err))
	}
	return ref, nil
}

// progressWatch closes the connection when an IMAP read makes no progress for d: a FETCH
// of large mail may take long as a whole, but not stall.
type progressWatch struct {
	d     time.Duration
	t     *time.Timer
	fired atomic.Bool
}

func newProgressWatch(c io.Closer, d time.Duration) *progressWatch {
	p := &progressWatch{d: d}
	p.t = time.AfterFunc(d, func() {
		p.fired.Store(true)
		c.Close()
	})
	p.t.Stop()
	return p
}

func (p *progressWatch) arm()    { p.t.Reset(p.d) }
func (p *progressWatch) disarm() { p.t.Stop() }
func (p *progressWatch) stop()   { p.t.Stop() }

// explain names the stall as the cause of err when the watch cut the connection.
func (p *progressWatch) explain(err error) error {
	if p.fired.Load() {
		return fmt.Errorf("no progress in %s: %w (%w)", p.d, errIMAPTimeout, err)
	}
	return err
}

// progressReader arms the watch around every read of a literal.
type progressReader struct {
	r io.Reader
	w *progressWatch
}

func (r *progressReader) Read(p []byte) (int, error) {
	r.w.arm()
	n, err := r.r.Read(p)
	r.w.disarm()
	return n, err
}

// trackedReader remembers the first read error, so that a failure to read the message is
// not taken for the mapping rejecting it, and returns it (or EOF) from then on without
// reading again (see abandon). With size >= 0, an EOF before size bytes is an error: a
// connection cut in the middle of a literal ends it with a plain EOF, and a truncated
// message must never become an event.
type trackedReader struct {
	r    io.Reader
	size int64 // -1: unknown
	n    int64
	err  error // sticky; io.EOF once the end was reached
}

// literalReader tracks a FETCH literal of known size.
func literalReader(lit imap.LiteralReader, w *progressWatch) *trackedReader {
	return &trackedReader{r: &progressReader{r: lit, w: w}, size: lit.Size()}
}

func (t *trackedReader) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	t.n += int64(n)
	if err == io.EOF && t.size >= 0 && t.n < t.size {
		err = fmt.Errorf("literal ends after %d of %d bytes: %w", t.n, t.size, io.ErrUnexpectedEOF)
	}
	t.err = err
	return n, err
}

// failed is the read error, nil when there was none (EOF is not one).
func (t *trackedReader) failed() error {
	if t.err == io.EOF {
		return nil
	}
	return t.err
}
