package connector_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/engine"
	"github.com/mailbus/mailbus/schemas"
)

// The engine does not wait for an attachment's chunks when it stores them: the event that
// refers to them waits, held in the batch, while the next messages are read
// (engine.Batch.send). These tests hold the guarantee on that path: no event is stored
// before its objects, and the events keep the mailbox's order.

// objectMail is mail n of a mailbox where most mail has attachments, of sizes around the
// object store's chunk (128 KiB), and every fifth mail none: events with objects and
// events without are held in one queue.
func objectMail(n int) []byte {
	if n%5 == 0 {
		return smallMail(n)
	}
	var parts []string
	for i, size := range []int{2000, (n % 3) * 100 << 10, 300<<10 + n} {
		parts = append(parts, attachmentPart(fmt.Sprintf("m%d-%d.bin", n, i), objectContent(n, i, size)))
	}
	return multipart(parts...)
}

// objectContent is attachment i of mail n: its own bytes, so that a chunk of another
// shows in the digest.
func objectContent(n, i, size int) []byte {
	b := make([]byte, size)
	for k := range b {
		b[k] = byte(k*7 + n*13 + i)
	}
	return b
}

// checkObjects fails the test for an event whose attachment objects cannot be read whole,
// with the digest the event gives, or (if ordered) that is stored out of the mailbox's
// order, and returns the number of events. (An event whose publish was lost to a NATS
// restart is published again after those that were not.)
func checkObjects(t *testing.T, n *busNATS, route string, ordered bool) int {
	t.Helper()
	ctx := context.Background()
	evs := busEvents(t, n, 1, route)
	for i, ev := range evs {
		if ordered && i > 0 && ev.Uid <= evs[i-1].Uid {
			t.Errorf("event of UID %d stored after the one of UID %d", ev.Uid, evs[i-1].Uid)
		}
		for _, a := range ev.Attachments {
			if a.ContentRef == nil {
				continue
			}
			got, err := n.st.Objects.GetBytes(ctx, a.ContentRef.Object)
			if err != nil {
				t.Errorf("event of UID %d: object %s: %v", ev.Uid, a.ContentRef.Object, err)
				continue
			}
			if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != a.Sha256 {
				t.Errorf("event of UID %d: object %s: %d bytes of another content", ev.Uid, a.ContentRef.Object, len(got))
			}
		}
		if ev.RawRef != nil { // includeRaw: mail n has UID n
			if got, err := n.st.Objects.GetBytes(ctx, ev.RawRef.Object); err != nil || !bytes.Equal(got, objectMail(int(ev.Uid))) {
				t.Errorf("event of UID %d: raw copy %s: %d bytes, %v; want the mail", ev.Uid, ev.RawRef.Object, len(got), err)
			}
		}
	}
	return len(evs)
}

// TestIMAPObjectStoreFull: the object store refuses chunks (an operator's byte limit is
// reached) in the middle of a batch. The route stores no event whose objects are not all
// there, and marks nothing it did not store. Once the limit is raised, every mail has its
// one event, in order, with its objects, and is read.
func TestIMAPObjectStoreFull(t *testing.T) {
	for _, raw := range []bool{false, true} {
		t.Run(fmt.Sprintf("includeRaw=%t", raw), func(t *testing.T) { objectStoreFull(t, raw) })
	}
}

func objectStoreFull(t *testing.T, includeRaw bool) {
	const mails = 60
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, mails, objectMail)
	ctx := context.Background()
	stream, err := n.js.Stream(ctx, "OBJ_mail_attachments")
	if err != nil {
		t.Fatal(err)
	}
	cfg := stream.CachedInfo().Config
	cfg.MaxBytes, cfg.Discard = 6<<20, jetstream.DiscardNew // about 15 mails' objects
	if _, err := n.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 1024
	route := imapRoute("objects_full", "", schemas.AfterMarkRead)
	route.IncludeRaw = includeRaw
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: imapConn(srv.addr, schemas.EncryptionNone)})

	waitUntil(t, 30*time.Second, "the store's refusal in the route's status", func() bool {
		st, _ := rt.Status.Get(route.Name)
		return st.LastError != "" && st.State == schemas.StateBackoff
	})
	stored := checkObjects(t, n, route.Name, true)
	if stored == 0 || stored >= mails {
		t.Fatalf("%d events stored while the object store was full; want some, not all", stored)
	}
	seen := 0
	for _, m := range listMailbox(t, dialPlain(srv.addr), "INBOX") {
		if hasIMAPFlag(m.flags, imap.FlagSeen) {
			seen++
		}
	}
	if seen > stored {
		t.Errorf("%d mails read, %d events stored", seen, stored)
	}

	cfg.MaxBytes = -1
	if _, err := n.js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 90*time.Second, "every mail read", func() bool { return countSeen(t, srv) == mails })
	if got := checkObjects(t, n, route.Name, true); got != mails {
		t.Errorf("%d events for %d mails", got, mails)
	}

	// Nothing is left behind: the object stream holds the chunks and meta message of each
	// object an event refers to, and no more (the refused object was purged, and the
	// batch read again replaced the versions its first read had stored).
	want := uint64(0)
	for _, ev := range busEvents(t, n, 1, route.Name) {
		names := []string{}
		for _, a := range ev.Attachments {
			if a.ContentRef != nil {
				names = append(names, a.ContentRef.Object)
			}
		}
		if ev.RawRef != nil {
			names = append(names, ev.RawRef.Object)
		}
		for _, name := range names {
			info, err := n.st.Objects.GetInfo(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			want += uint64(info.Chunks) + 1
		}
	}
	if si, err := stream.Info(ctx); err != nil || si.State.Msgs != want {
		t.Errorf("the object stream holds %d messages (%v); the objects of the events are %d", si.State.Msgs, err, want)
	}
}

// TestIMAPObjectsNATSRestart: NATS restarts three times while a route stores mail with
// attachments and their raw copies, so that chunks are in flight, and their
// acknowledgements lost, at each restart. The route goes on within seconds of each, and in
// the end every mail has its one event, with its objects whole, and is read.
func TestIMAPObjectsNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const mails = 150
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, mails, objectMail)
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 1024
	route := imapRoute("objects_restart", "", schemas.AfterMarkRead)
	route.IncludeRaw = true // a raw copy of every mail too
	conn := imapConn(srv.addr, schemas.EncryptionNone)
	conn.PollInterval = schemas.Duration(time.Second)
	runIMAPWorker(t, rt, engine.RouteSpec{Route: route, Connection: conn})
	restartWhilePublishing(t, n, route.Name, 5, 300*time.Millisecond)
	waitUntil(t, 120*time.Second, "every mail read", func() bool { return countSeen(t, srv) == mails })
	if got := checkObjects(t, n, route.Name, false); got != mails {
		t.Errorf("%d events for %d mails", got, mails)
	}
}

// TestIMAPObjectsTwoRoutes: two routes on one mailbox (different buses) store the same
// mail, whose events share their Ids. Each route's events refer to objects of its own, and
// the object stream holds exactly those of both routes' events: with one name for both,
// the second put replaced the first's meta message and left its chunks behind, and a
// second put that failed would have purged the object the first route's event refers to.
func TestIMAPObjectsTwoRoutes(t *testing.T) {
	const mails = 30
	n := startBusNATS(t)
	srv := startMemIMAPMail(t, mails, objectMail)
	rt := newIMAPRuntime(t, n)
	rt.MaxInlineBytes = 1024
	conn := imapConn(srv.addr, schemas.EncryptionNone)
	first := imapRoute("objects_first", "", schemas.AfterNone)
	second := imapRoute("objects_second", "", schemas.AfterNone)
	second.Bus = 2
	runIMAPWorker(t, rt, engine.RouteSpec{Route: first, Connection: conn})
	runIMAPWorker(t, rt, engine.RouteSpec{Route: second, Connection: conn})
	waitRouteIdle(t, rt, first.Name, mails)
	waitRouteIdle(t, rt, second.Name, mails)

	ctx := context.Background()
	want := uint64(0)
	for bus, route := range map[int]string{1: first.Name, 2: second.Name} {
		evs := busEvents(t, n, bus, route)
		if len(evs) != mails {
			t.Fatalf("route %s: %d events for %d mails", route, len(evs), mails)
		}
		for _, ev := range evs {
			for _, a := range ev.Attachments {
				if a.ContentRef == nil {
					continue
				}
				got, err := n.st.Objects.GetBytes(ctx, a.ContentRef.Object)
				if err != nil {
					t.Fatalf("route %s, UID %d: object %s: %v", route, ev.Uid, a.ContentRef.Object, err)
				}
				if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != a.Sha256 {
					t.Errorf("route %s, UID %d: object %s of another content", route, ev.Uid, a.ContentRef.Object)
				}
				info, err := n.st.Objects.GetInfo(ctx, a.ContentRef.Object)
				if err != nil {
					t.Fatal(err)
				}
				want += uint64(info.Chunks) + 1
			}
		}
	}
	stream, err := n.js.Stream(ctx, "OBJ_mail_attachments")
	if err != nil {
		t.Fatal(err)
	}
	if si, err := stream.Info(ctx); err != nil || si.State.Msgs != want {
		t.Errorf("the object stream holds %d messages (%v); the objects of both routes' events are %d", si.State.Msgs, err, want)
	}
}
