package store_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mailbus/mailbus/connector/bus"
	"github.com/mailbus/mailbus/connector/internal/testkit"
	"github.com/mailbus/mailbus/connector/store"
)

// TestCheckpointLostRoute: a worker that lost its route to another replica cannot move the
// checkpoint back: its write, over the revision it read, fails as a lost race and leaves
// the other's checkpoint; once it reads again it writes over the new revision.
func TestCheckpointLostRoute(t *testing.T) {
	storage := testkit.StartStorage(t).Storage
	ctx := context.Background()
	a, b := store.Checkpoints(storage.State, "r"), store.Checkpoints(storage.State, "r")
	for _, r := range []*store.Record[store.Checkpoint]{a, b} {
		if cp, err := r.Load(ctx); err != nil || cp.LastUid != 0 || r.Revision() != 0 {
			t.Fatalf("Load() of a route that never ran = %+v, %v, revision %d; want the zero checkpoint", cp, err, r.Revision())
		}
	}
	src := &store.CheckpointSource{Connection: "c", Server: "imap.example.com:993", User: "bot", Mailbox: "INBOX"}
	if err := a.Save(ctx, store.Checkpoint{Source: src, UidValidity: 7, LastUid: 5}); err != nil {
		t.Fatalf("Save() = %v", err)
	}
	err := b.Save(ctx, store.Checkpoint{Source: src, UidValidity: 7, LastUid: 3})
	if !store.LostRace(err) {
		t.Fatalf("Save() over a revision another wrote since = %v; want a lost race", err)
	}
	if cp, err := b.Load(ctx); err != nil || cp.LastUid != 5 || *cp.Source != *src {
		t.Fatalf("Load() = %+v, %v; want the first writer's LastUid 5", cp, err)
	}
	if err := b.Save(ctx, store.Checkpoint{Source: src, UidValidity: 7, LastUid: 8}); err != nil {
		t.Fatalf("Save() after Load() = %v", err)
	}
	if err := a.Save(ctx, store.Checkpoint{UidValidity: 7, LastUid: 6}); !store.LostRace(err) {
		t.Fatalf("Save() of the replica that lost the route = %v; want a lost race", err)
	}

	// A route deleted and created again starts afresh, and its worker can write again.
	if err := store.PurgeCheckpoint(ctx, storage.State, "r"); err != nil {
		t.Fatalf("PurgeCheckpoint() = %v", err)
	}
	if err := store.PurgeCheckpoint(ctx, storage.State, "never_ran"); err != nil {
		t.Fatalf("PurgeCheckpoint() of a route without a checkpoint = %v", err)
	}
	c := store.Checkpoints(storage.State, "r")
	if cp, err := c.Load(ctx); err != nil || cp.LastUid != 0 || cp.Source != nil {
		t.Fatalf("Load() after the purge = %+v, %v; want the zero checkpoint", cp, err)
	}
	if err := c.Save(ctx, store.Checkpoint{UidValidity: 9, LastUid: 1}); err != nil {
		t.Fatalf("Save() after the purge = %v", err)
	}
	if _, err := storage.State.Get(ctx, bus.RouteKey("r")); err != nil {
		t.Fatalf("the checkpoint is not under %s: %v", bus.RouteKey("r"), err)
	}
}

// TestCheckpointSourceChange: a checkpoint belongs to one connection, server, user and
// mailbox; ChangeFrom names what changed, and takes a checkpoint that records no source
// (written by an earlier version) as the route's own.
func TestCheckpointSourceChange(t *testing.T) {
	src := store.CheckpointSource{Connection: "c", Server: "imap.example.com:993", User: "bot", Mailbox: "INBOX"}
	for _, tc := range []struct {
		name string
		old  *store.CheckpointSource
		want string
	}{
		{"legacy", nil, ""},
		{"same", &store.CheckpointSource{Connection: "c", Server: "imap.example.com:993", User: "bot", Mailbox: "INBOX"}, ""},
		{"server", &store.CheckpointSource{Connection: "c", Server: "old.example.com:993", User: "bot", Mailbox: "INBOX"},
			`server "old.example.com:993" -> "imap.example.com:993"`},
		{"user and mailbox", &store.CheckpointSource{Connection: "c", Server: "imap.example.com:993", User: "other", Mailbox: "Archive"},
			`user "other" -> "bot", mailbox "Archive" -> "INBOX"`},
	} {
		if got := src.ChangeFrom(tc.old); got != tc.want {
			t.Errorf("%s: ChangeFrom() = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestRecordSyncState: a record holds any JSON value (an Exchange route's sync state); a
// deleted one reads as the zero value and can be written again; a broken one is an error
// naming the record.
func TestRecordSyncState(t *testing.T) {
	storage := testkit.StartStorage(t).Storage
	ctx := context.Background()
	type syncState struct {
		SyncState string   `json:"syncState"`
		Journal   []string `json:"journal,omitempty"`
	}
	r := store.NewRecord[syncState](storage.State, bus.RouteKey("ews"), "sync state")
	if err := r.Save(ctx, syncState{SyncState: "H4sI", Journal: []string{"AAMk1"}}); err != nil {
		t.Fatalf("Save() = %v", err)
	}
	if err := storage.State.Delete(ctx, bus.RouteKey("ews")); err != nil {
		t.Fatalf("Delete() = %v", err)
	}
	st, err := r.Load(ctx)
	if err != nil || st.SyncState != "" || st.Journal != nil {
		t.Fatalf("Load() of a deleted state = %+v, %v; want the zero value", st, err)
	}
	if err := r.Save(ctx, syncState{SyncState: "next"}); err != nil {
		t.Fatalf("Save() over the delete = %v", err)
	}
	if st, err := store.NewRecord[syncState](storage.State, bus.RouteKey("ews"), "sync state").Load(ctx); err != nil || st.SyncState != "next" {
		t.Fatalf("Load() = %+v, %v; want the saved state", st, err)
	}
	if _, err := storage.State.Put(ctx, bus.RouteKey("bad"), []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewRecord[syncState](storage.State, bus.RouteKey("bad"), "sync state").Load(ctx); err == nil || !strings.Contains(err.Error(), "load sync state route.bad") {
		t.Fatalf("Load() of a broken value = %v; want an error naming the record", err)
	}
}
