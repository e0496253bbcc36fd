package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Checkpoint is where a route stands in its mailbox, kept in the state bucket under
// route.<name>: every message with a UID up to LastUid in the mailbox generation
// UidValidity has been published and acknowledged (and its after action applied).
//
// When the server reports another UIDVALIDITY, the UIDs of the old generation mean nothing
// any more and the checkpoint restarts at 0 for the new one. What is published again then
// depends on the route's select:
//   - unseen: every message currently unseen in the mailbox (with after markRead, that is
//     mail that arrived since the last cycle plus mail someone marked unread again);
//   - all: every message in the mailbox.
//
// Their events carry new Ids (the Id contains the UIDVALIDITY), so JetStream does not
// drop them as duplicates: subscribers see them again.
type Checkpoint struct {
	UidValidity uint32 `json:"uidValidity"`
	LastUid     uint32 `json:"lastUid"`
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
