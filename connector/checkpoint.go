package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
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

// changeFrom says, in words, how src differs from the source old a checkpoint was written
// for; "" when it does not. A checkpoint written before sources were recorded (old nil)
// is taken as the route's own.
func (src CheckpointSource) changeFrom(old *CheckpointSource) string {
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

// checkpointStore reads and writes one route's checkpoint. Writes compare the revision they
// read, so a worker that lost its route to another replica cannot move the checkpoint back.
type checkpointStore struct {
	kv  jetstream.KeyValue
	key string
	rev uint64
}

func newCheckpointStore(kv jetstream.KeyValue, route string) *checkpointStore {
	return &checkpointStore{kv: kv, key: RouteKey(route)}
}

// Load reads the checkpoint; a route that never ran starts at the zero checkpoint.
func (s *checkpointStore) Load(ctx context.Context) (Checkpoint, error) {
	var cp Checkpoint
	e, err := s.kv.Get(ctx, s.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		s.rev = 0
		return cp, nil
	case err != nil:
		return cp, fmt.Errorf("load checkpoint %s: %w", s.key, err)
	}
	s.rev = e.Revision()
	if len(e.Value()) == 0 { // deleted: start over
		return cp, nil
	}
	if err := json.Unmarshal(e.Value(), &cp); err != nil {
		return cp, fmt.Errorf("load checkpoint %s: %w", s.key, err)
	}
	return cp, nil
}

// Save writes cp over the revision Load or the last Save saw.
func (s *checkpointStore) Save(ctx context.Context, cp Checkpoint) error {
	b, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	var rev uint64
	if s.rev == 0 {
		rev, err = s.kv.Create(ctx, s.key, b)
	} else {
		rev, err = s.kv.Update(ctx, s.key, b, s.rev)
	}
	if err != nil {
		return fmt.Errorf("save checkpoint %s: %w", s.key, err)
	}
	s.rev = rev
	return nil
}

// purgeCheckpoint removes a route's checkpoint (and its history) from the state bucket:
// a route deleted and created again starts afresh.
func purgeCheckpoint(ctx context.Context, kv jetstream.KeyValue, route string) error {
	err := kv.Purge(ctx, RouteKey(route))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("remove checkpoint of route %s: %w", route, err)
	}
	return nil
}
