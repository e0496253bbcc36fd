package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mailbus/mailbus/connector/bus"
)

// Checkpoint is where a route stands in its mailbox, kept in the state bucket under
// route.<name>: every message with a UID up to LastUid in the mailbox generation
// UidValidity of Source has been published and acknowledged, and its after action applied
// unless its UID is in Journal.
//
// The checkpoint is reset, and the connection log says why, when the route's source
// (connection, server, user, mailbox) is no longer the one it was written for, and when the
// server reports another UIDVALIDITY: the UIDs it holds mean nothing for another mailbox or
// generation. A new checkpoint notes in Backlog the highest UID the mailbox had when it began:
// the route's backlog rule decides which of those messages are published, its select rule
// which of the later ones.
//
// Events of another generation carry new Ids (the Id contains the UIDVALIDITY), so JetStream
// does not drop them as duplicates: subscribers see them again.
type Checkpoint struct {
	Source      *CheckpointSource `json:"source,omitempty"`
	UidValidity uint32            `json:"uidValidity"`
	LastUid     uint32            `json:"lastUid"`
	// Backlog is the highest UID in the mailbox when the checkpoint began (0: none).
	Backlog uint32 `json:"backlog,omitempty"`
	// PublishedTo is the highest UID whose event may have been published: it is written
	// before a batch is published. A duplicate acknowledgement for a UID above it, on the
	// first try, is for an event this route never published.
	PublishedTo uint32 `json:"publishedTo,omitempty"`
	// Journal holds the UIDs whose events were acknowledged but whose after action has not
	// run yet: a retry applies it to them without publishing them again.
	Journal []uint32 `json:"journal,omitempty"`
}

// CheckpointSource is what a checkpoint belongs to. Server is host:port for IMAP, the EWS
// URL for Exchange.
type CheckpointSource struct {
	Connection string `json:"connection"`
	Server     string `json:"server"`
	User       string `json:"user"`
	Mailbox    string `json:"mailbox"`
}

// ChangeFrom says, in words, how src differs from the source old a checkpoint was written
// for; "" when it does not. A checkpoint written before sources were recorded (old nil)
// is taken as the route's own.
func (src CheckpointSource) ChangeFrom(old *CheckpointSource) string {
	if old == nil {
		return ""
	}
	var d []string
	for _, f := range []struct{ name, was, is string }{
		{"connection", old.Connection, src.Connection},
		{"server", old.Server, src.Server},
		{"user", old.User, src.User},
		{"mailbox", old.Mailbox, src.Mailbox},
	} {
		if f.was != f.is {
			d = append(d, fmt.Sprintf("%s %q -> %q", f.name, f.was, f.is))
		}
	}
	return strings.Join(d, ", ")
}

// Record reads and writes one JSON value of type T under one key of a KV bucket: a route's
// checkpoint, an Exchange route's sync state. Writes compare the revision they read (PutRev),
// so a worker that lost its route to another replica cannot move the value back.
type Record[T any] struct {
	kv   jetstream.KeyValue
	key  string
	what string // what the value is, for errors: "checkpoint"
	rev  uint64
}

// NewRecord returns the record of key in kv; what names it in errors.
func NewRecord[T any](kv jetstream.KeyValue, key, what string) *Record[T] {
	return &Record[T]{kv: kv, key: key, what: what}
}

// Checkpoints returns the record of a route's checkpoint in the state bucket kv.
func Checkpoints(kv jetstream.KeyValue, route string) *Record[Checkpoint] {
	return NewRecord[Checkpoint](kv, bus.RouteKey(route), "checkpoint")
}

// Load reads the value; an absent or deleted one is the zero value (a route that never
// ran starts there).
func (r *Record[T]) Load(ctx context.Context) (T, error) {
	var v T
	e, err := r.kv.Get(ctx, r.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		r.rev = 0
		return v, nil
	case err != nil:
		return v, fmt.Errorf("load %s %s: %w", r.what, r.key, err)
	}
	r.rev = e.Revision()
	if len(e.Value()) == 0 { // deleted: start over
		return v, nil
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return v, fmt.Errorf("load %s %s: %w", r.what, r.key, err)
	}
	return v, nil
}

// Revision is the revision the last Load or Save saw; 0 when the key was absent.
func (r *Record[T]) Revision() uint64 { return r.rev }

// Save writes v over the revision Load or the last Save saw.
func (r *Record[T]) Save(ctx context.Context, v T) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	rev, err := PutRev(ctx, r.kv, r.key, b, r.rev)
	if err != nil {
		return fmt.Errorf("save %s %s: %w", r.what, r.key, err)
	}
	r.rev = rev
	return nil
}

// PurgeCheckpoint removes a route's checkpoint (and its history) from the state bucket:
// a route deleted and created again starts afresh.
func PurgeCheckpoint(ctx context.Context, kv jetstream.KeyValue, route string) error {
	err := kv.Purge(ctx, bus.RouteKey(route))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove checkpoint of route %s: %w", route, err)
	}
	return nil
}
